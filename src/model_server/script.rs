//! The script of a [`ModelServer`](super::ModelServer): what it answers,
//! turn by turn, read from JSON.
//!
//! ```json
//! {
//!   "model": "claude-scripted",
//!   "turns": [
//!     {"content": [{"type": "tool_use", "name": "Bash",
//!                   "input": {"command": "echo hi > out.txt"}}]},
//!     {"delayMs": 500, "content": [{"type": "text", "text": "Done."}],
//!      "usage": {"inputTokens": 100, "outputTokens": 20}},
//!     {"error": {"status": 529}, "times": 2},
//!     {"content": [{"type": "text", "text": "partial"}], "cutAfter": 3}
//!   ]
//! }
//! ```
//!
//! Each request to `POST /v1/messages` takes the next turn of *its*
//! conversation (Claude Code names it in the `X-Claude-Code-Session-Id`
//! header), so concurrent agents each walk the script from the start, and a
//! resumed conversation goes on where it stopped (`"perConversation": false`
//! gives all requests one cursor instead: a retried run goes on where the
//! failed one stopped). When a conversation has
//! used every turn it is answered with a short text and `end_turn`.
//!
//! A turn (all fields optional):
//!
//! | field | meaning |
//! |---|---|
//! | `content` | blocks: `{"type":"text","text":…}`, `{"type":"tool_use","name":…,"input":{…}}` (`Bash`, `Write`, `Edit`, … — any tool of the agent) |
//! | `stopReason` | default `tool_use` when a block is a tool call, else `end_turn` |
//! | `usage` | `{"inputTokens": N, "outputTokens": N}` reported for the turn (default 10 / 5) |
//! | `delayMs` | wait before answering (a slow model) |
//! | `eventDelayMs` | wait between server-sent events |
//! | `error` | answer with an HTTP error instead: `{"status": 429, "retryAfter": 1, "type": "rate_limit_error", "message": "…"}` (type defaults by status: 429 `rate_limit_error`, 529 `overloaded_error`, 401 `authentication_error`, else `api_error`) |
//! | `cutAfter` | close the connection after this many events (a stream cut mid-way) |
//! | `malformed` | send an event whose data is not JSON after `message_start` |
//! | `times` | serve this turn N times in a row (default 1; 0 = for ever) |

use serde::Deserialize;

use crate::error::{Error, Result};

/// A whole script: what the server answers, turn by turn ([`Script::from_json`]
/// reads it; the fields of [`Turn`] are the format).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Script {
    /// The model name reported in answers (default: the one asked for).
    #[serde(default)]
    pub model: Option<String>,
    /// The turns, in order.
    #[serde(default)]
    pub turns: Vec<Turn>,
    /// `true` (default): each conversation walks the turns from the start.
    /// `false`: one cursor for every request, so a retried run (a new
    /// container, a new conversation) goes on where the last one stopped —
    /// how a script says "the API recovers".
    #[serde(default = "yes")]
    pub per_conversation: bool,
}

fn yes() -> bool {
    true
}

/// One answer of the model.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Turn {
    /// The content blocks.
    #[serde(default)]
    pub content: Vec<Block>,
    /// `end_turn`, `tool_use`, `max_tokens`, …
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Token counts reported for this turn.
    #[serde(default)]
    pub usage: Usage,
    /// Milliseconds to wait before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// Milliseconds to wait between events.
    #[serde(default)]
    pub event_delay_ms: u64,
    /// Answer with this HTTP error instead of a message.
    #[serde(default)]
    pub error: Option<HttpError>,
    /// Cut the connection after this many events.
    #[serde(default)]
    pub cut_after: Option<usize>,
    /// Send one event whose data is not JSON after `message_start`.
    #[serde(default)]
    pub malformed: bool,
    /// Serve this turn this many times in a row (0 = for ever).
    #[serde(default)]
    pub times: Option<u32>,
}

impl Turn {
    /// A turn that answers with text and ends the agent's turn.
    pub fn text(text: impl Into<String>) -> Self {
        Turn {
            content: vec![Block::Text { text: text.into() }],
            ..Turn::default()
        }
    }

    /// A turn that calls one tool (`Bash`, `Write`, `Edit`, …).
    pub fn tool(name: impl Into<String>, input: serde_json::Value) -> Self {
        Turn {
            content: vec![Block::ToolUse {
                name: name.into(),
                input,
            }],
            ..Turn::default()
        }
    }

    /// A turn that calls the Bash tool with `command`.
    pub fn bash(command: impl Into<String>) -> Self {
        Turn::tool("Bash", serde_json::json!({ "command": command.into() }))
    }

    /// A turn that answers with an HTTP error.
    pub fn error(status: u16) -> Self {
        Turn {
            error: Some(HttpError {
                status,
                ..HttpError::default()
            }),
            ..Turn::default()
        }
    }

    /// Serve it `n` times (0 = for ever).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Wait this long before answering.
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Report these token counts.
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Usage {
            input_tokens,
            output_tokens,
        };
        self
    }

    /// The stop reason sent: the scripted one, else `tool_use` when a block
    /// calls a tool, else `end_turn`.
    pub fn stop_reason(&self) -> &str {
        match &self.stop_reason {
            Some(s) => s,
            None if self
                .content
                .iter()
                .any(|b| matches!(b, Block::ToolUse { .. })) =>
            {
                "tool_use"
            }
            None => "end_turn",
        }
    }
}

/// A content block of a scripted answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call; its id is made by the server (unique).
    ToolUse {
        /// The tool (`Bash`, `Write`, `Edit`, …).
        name: String,
        /// Its input object.
        input: serde_json::Value,
    },
}

/// Token counts of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Usage {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            input_tokens: 10,
            output_tokens: 5,
        }
    }
}

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpError {
    /// Status code (429, 529, 500, 401, …).
    pub status: u16,
    /// `retry-after` header, in seconds.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// The error's `type` (defaults by status).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The error's message.
    #[serde(default)]
    pub message: Option<String>,
}

impl HttpError {
    /// The error type sent: the scripted one or the API's name for the status.
    pub fn kind(&self) -> &str {
        match (&self.kind, self.status) {
            (Some(k), _) => k,
            (None, 429) => "rate_limit_error",
            (None, 529) => "overloaded_error",
            (None, 401) => "authentication_error",
            (None, 400) => "invalid_request_error",
            (None, _) => "api_error",
        }
    }
}

impl Default for Script {
    fn default() -> Self {
        Script::new([])
    }
}

impl Script {
    /// A script of these turns, walked per conversation.
    pub fn new(turns: impl IntoIterator<Item = Turn>) -> Self {
        Script {
            model: None,
            turns: turns.into_iter().collect(),
            per_conversation: true,
        }
    }

    /// One cursor for all requests (see [`Script::per_conversation`]).
    pub fn shared(mut self) -> Self {
        self.per_conversation = false;
        self
    }

    /// Parse a script; errors name the field (`turns[2].error.status`).
    pub fn from_json(json: &str) -> Result<Script> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let script: Script = serde_path_to_error_lite(de)?;
        for (i, turn) in script.turns.iter().enumerate() {
            if let Some(e) = &turn.error {
                if !(400..=599).contains(&e.status) {
                    return Err(invalid(format!(
                        "turns[{i}].error.status: {} is not an HTTP error status (400-599)",
                        e.status
                    )));
                }
            }
            for (j, block) in turn.content.iter().enumerate() {
                if let Block::ToolUse { input, .. } = block {
                    if !input.is_object() {
                        return Err(invalid(format!(
                            "turns[{i}].content[{j}].input: a tool's input must be a JSON object"
                        )));
                    }
                }
            }
        }
        Ok(script)
    }

    /// Read and parse a script file.
    pub fn from_file(path: &std::path::Path) -> Result<Script> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read the script {}: {e}", path.display())))?;
        Script::from_json(&text)
            .map_err(|e| invalid(format!("{}: {}", path.display(), strip_prefix(&e))))
    }
}

fn strip_prefix(e: &Error) -> String {
    match e {
        Error::InvalidOption { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidOption {
        option: "model server script".into(),
        message,
    }
}

/// serde_json's own error carries line and column, which is enough to
/// find the field in a small script file.
fn serde_path_to_error_lite<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
) -> Result<T> {
    let value = T::deserialize(&mut *de).map_err(|e| invalid(e.to_string()))?;
    de.end().map_err(|e| invalid(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let json = r#"{
          "model": "claude-scripted",
          "turns": [
            {"content": [{"type": "tool_use", "name": "Bash",
                          "input": {"command": "echo hi > out.txt"}}]},
            {"delayMs": 500, "content": [{"type": "text", "text": "Done."}],
             "usage": {"inputTokens": 100, "outputTokens": 20}},
            {"error": {"status": 529}, "times": 2},
            {"content": [{"type": "text", "text": "partial"}], "cutAfter": 3}
          ]
        }"#;
        let s = Script::from_json(json).unwrap();
        assert_eq!(s.turns.len(), 4);
        assert_eq!(s.turns[0], Turn::bash("echo hi > out.txt"));
        assert_eq!(s.turns[0].stop_reason(), "tool_use");
        assert_eq!(s.turns[1].stop_reason(), "end_turn");
        assert_eq!(s.turns[1].usage.input_tokens, 100);
        assert_eq!(
            s.turns[2].error.as_ref().unwrap().kind(),
            "overloaded_error"
        );
        assert_eq!(s.turns[3].cut_after, Some(3));
    }

    #[test]
    fn bad_scripts_say_what_is_wrong() {
        for (json, needle) in [
            (r#"{"turns": [{"contnet": []}]}"#, "contnet"),
            (
                r#"{"turns": [{"error": {"status": 200}}]}"#,
                "turns[0].error.status",
            ),
            (
                r#"{"turns": [{"content": [{"type": "tool_use", "name": "Bash", "input": "ls"}]}]}"#,
                "turns[0].content[0].input",
            ),
            (r#"{"turns": [{"content": [{"type": "image"}]}]}"#, "image"),
            (r#"{"turns": []} x"#, "trailing"),
        ] {
            let err = Script::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
