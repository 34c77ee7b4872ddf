//! What cldpd knows of agents.
//!
//! For a Claude Code agent (`"agentOutput": "stream-json"`, the default)
//! cldpd runs `<agentCommand> -p --output-format stream-json --verbose
//! --session-id <uuid> [--max-turns N] [--max-budget-usd X]`, gives the
//! prompt on stdin (never in argv: see [`crate::runtime::Stdin`]), and turns
//! each JSON line of its stdout into typed events ([`StreamJsonParser`]).
//! A pod whose agent is something else says `"agentOutput": "text"`: its
//! argv is `<agentCommand> -p --session-id <uuid>`, the prompt still comes
//! on stdin, and its output stays plain `output` events.
//!
//! # The raw line stays
//!
//! Every line the agent writes is an `output` event, as for any container
//! (the lossless invariant does not depend on parsing). The typed events a
//! stream-json line yields follow right after its `output` event(s), in the
//! same gapless `seq`. So the session log holds the exact bytes the agent
//! wrote, and a consumer that wants only the typed view skips stdout
//! `output` events of a stream-json run that start with `{`. The typed
//! events are small summaries (a tool result keeps its size and first line,
//! not its 5 MiB of content).
//!
//! # How a run ends
//!
//! The last `result` line decides: `is_error: true` — including under
//! `subtype: "success"`, which is how Claude Code reports a failed API call
//! — ends the run with [`Error::AgentFailed`](crate::Error::AgentFailed)
//! whatever the exit code, with its own error code (`agent_max_turns`,
//! `agent_max_budget`, `rate_limited`, `api_error`, `agent_error`).

pub mod follow_up;
mod stream_json;
mod tally;

pub use stream_json::{AgentOutcome, StreamJsonParser, MAX_FIRST_LINE, MAX_LINE, MAX_TEXT};
pub use tally::AgentTally;

use serde::{Deserialize, Serialize};

/// What the agent prints (`pod.json` `agentOutput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentOutput {
    /// Claude Code's `--output-format stream-json --verbose`, parsed into
    /// typed events (the default).
    #[default]
    StreamJson,
    /// Plain text, passed through as `output` events (an agent that is not
    /// Claude Code).
    Text,
}

/// How prompts reach the agent (`pod.json` `agentInput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentInput {
    /// The prompt as text on stdin, then end of input: the agent answers
    /// and exits (the default). A follow-up runs a second agent process
    /// in the container (`--resume`).
    #[default]
    Text,
    /// Claude Code's `--input-format stream-json`: one long-lived agent per
    /// run; the prompt and every follow-up are user messages
    /// ([`user_message`]) written to its stdin, which stays open; it prints
    /// a `result` after each turn. Needs `agentOutput: "stream-json"`.
    StreamJson,
}

/// One stream-json user message, as Claude Code reads it on stdin with
/// `--input-format stream-json`: a JSON object on one line (the prompt's
/// newlines are escaped), ending in `\n`. `command` is the message's
/// `uuid`: Claude Code queues each message as a turn of its own (messages
/// without one that arrive during a turn are merged into one), echoes it
/// back (`--replay-user-messages`) and reports its progress as
/// `command_lifecycle` lines naming it (`queued`, `started`, `completed`),
/// which become [`EventKind::AgentTurn`](crate::event::EventKind::AgentTurn)
/// events.
///
/// ```
/// let line = cldpd::agent::user_message("fix it\nplease", "c0ffee", "u-1");
/// let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
/// assert_eq!(v["type"], "user");
/// assert_eq!(v["message"]["content"], "fix it\nplease");
/// assert_eq!(v["session_id"], "c0ffee");
/// assert_eq!(v["uuid"], "u-1");
/// assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
/// ```
pub fn user_message(prompt: &str, conversation: &str, command: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": prompt},
        "parent_tool_use_id": null,
        "session_id": conversation,
        "uuid": command,
    }))
    .expect("a JSON value serialises");
    line.push(b'\n');
    line
}

/// Limits passed to Claude Code.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AgentLimits {
    /// `--max-turns`.
    pub max_turns: Option<u32>,
    /// `--max-budget-usd`.
    pub max_budget_usd: Option<f64>,
}

/// The arguments cldpd appends to the agent command on start (the prompt
/// goes on stdin).
pub fn start_args(
    output: AgentOutput,
    input: AgentInput,
    conversation: &str,
    limits: &AgentLimits,
) -> Vec<String> {
    let mut args = vec!["-p".to_string()];
    if input == AgentInput::StreamJson {
        args.extend(["--input-format".to_string(), "stream-json".to_string()]);
    }
    args.extend(output_args(output));
    if input == AgentInput::StreamJson {
        // Each prompt echoed as it starts: the log records the whole
        // conversation, prompts from other processes included.
        args.push("--replay-user-messages".to_string());
    }
    args.extend(["--session-id".to_string(), conversation.to_string()]);
    if let Some(n) = limits.max_turns {
        args.extend(["--max-turns".to_string(), n.to_string()]);
    }
    if let Some(usd) = limits.max_budget_usd {
        args.extend(["--max-budget-usd".to_string(), usd.to_string()]);
    }
    args
}

/// The arguments cldpd appends on resume (the follow-up goes on stdin).
pub fn resume_args(output: AgentOutput, conversation: &str) -> Vec<String> {
    let mut args = vec!["-p".to_string()];
    args.extend(output_args(output));
    args.extend(["--resume".to_string(), conversation.to_string()]);
    args
}

fn output_args(output: AgentOutput) -> Vec<String> {
    match output {
        AgentOutput::StreamJson => ["--output-format", "stream-json", "--verbose"]
            .map(String::from)
            .to_vec(),
        AgentOutput::Text => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_never_holds_the_prompt() {
        let limits = AgentLimits {
            max_turns: Some(3),
            max_budget_usd: Some(0.5),
        };
        assert_eq!(
            start_args(AgentOutput::StreamJson, AgentInput::Text, "u-1", &limits),
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--session-id",
                "u-1",
                "--max-turns",
                "3",
                "--max-budget-usd",
                "0.5"
            ]
        );
        assert_eq!(
            start_args(
                AgentOutput::Text,
                AgentInput::Text,
                "u-1",
                &AgentLimits::default()
            ),
            ["-p", "--session-id", "u-1"]
        );
        assert_eq!(
            start_args(
                AgentOutput::StreamJson,
                AgentInput::StreamJson,
                "u-1",
                &AgentLimits::default()
            ),
            [
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
                "--replay-user-messages",
                "--session-id",
                "u-1"
            ]
        );
        assert_eq!(
            resume_args(AgentOutput::StreamJson, "u-1"),
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--resume",
                "u-1"
            ]
        );
    }
}
