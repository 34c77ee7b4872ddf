//! What an agent run has done so far, from its events: turns, cost, the
//! last result's subtype. For `cldpd ps` (a live run, read from its session
//! log) and the batch report (per job and in total).
//!
//! Claude Code reports turns and cost in its `result` lines only: one per
//! prompt, whose `num_turns` counts that prompt's turns and whose
//! `total_cost_usd` is what the agent process has cost so far (a
//! long-lived agent's results grow: measured on Claude Code 2.1.332). A
//! run's tally therefore adds up the turns of every result, the cost of
//! each attempt's last result (restarts start from zero), and counts the
//! turns of a prompt still going from its raw stream-json lines: one turn per distinct
//! assistant message id (Claude Code prints one `assistant` line per
//! content block, all with the message's id). The cost of a turn is not
//! known before its attempt's result.
//!
//! ```
//! use cldpd::agent::AgentTally;
//! use cldpd::{EventKind, OutputStream};
//! let mut t = AgentTally::default();
//! for id in ["msg_1", "msg_1", "msg_2"] {
//!     t.observe(&EventKind::Output {
//!         stream: OutputStream::Stdout,
//!         line: format!(r#"{{"type":"assistant","message":{{"id":"{id}","content":[]}}}}"#),
//!         partial: false,
//!     });
//! }
//! assert_eq!(t.turns(), 2);
//! assert_eq!(t.cost_usd(), None);
//! ```

use std::collections::HashSet;

use crate::event::{EventKind, OutputStream};

/// Running totals of one agent run. Feed it every event in order
/// ([`AgentTally::observe`]).
#[derive(Debug, Clone, Default)]
pub struct AgentTally {
    /// Turns of the results seen.
    done_turns: u32,
    /// Cost of the attempts before the current one.
    cost_usd: f64,
    /// Cost of the current attempt so far (its last result's).
    attempt_cost: f64,
    /// A long-lived agent waits for a follow-up (its last `idle` event is
    /// later than its last prompt).
    idle: bool,
    /// How many results were seen.
    results: u32,
    /// The last result's subtype, and whether it was an error.
    last: Option<(String, bool)>,
    /// Assistant message ids of the attempt still going.
    current: HashSet<String>,
}

impl AgentTally {
    /// Account for one event.
    pub fn observe(&mut self, kind: &EventKind) {
        match kind {
            EventKind::ContainerStarted { .. } => {
                self.current.clear();
                self.cost_usd += std::mem::take(&mut self.attempt_cost);
                self.idle = false;
            }
            EventKind::Idle { .. } => self.idle = true,
            EventKind::AgentPrompt { .. } | EventKind::AgentTurn { .. } => self.idle = false,
            kind if kind.is_terminal() => self.idle = false,
            EventKind::Output {
                stream: OutputStream::Stdout,
                line,
                partial: false,
            } => {
                if let Some(id) = assistant_message_id(line) {
                    self.current.insert(id);
                }
            }
            EventKind::AgentResult(r) => {
                self.done_turns += r.turns;
                self.attempt_cost = r.cost_usd.0;
                self.results += 1;
                self.last = Some((r.subtype.clone(), r.is_error));
                self.current.clear();
            }
            _ => {}
        }
    }

    /// Turns so far: those of the finished attempts plus the assistant
    /// messages of the one still going.
    pub fn turns(&self) -> u32 {
        self.done_turns + self.current.len() as u32
    }

    /// What the finished attempts cost; `None` before any result.
    pub fn cost_usd(&self) -> Option<f64> {
        (self.results > 0).then_some(self.cost_usd + self.attempt_cost)
    }

    /// True while a long-lived agent waits for a follow-up.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// The last result's subtype (`success`, `error_max_turns`, …), when
    /// one was seen.
    pub fn subtype(&self) -> Option<&str> {
        self.last.as_ref().map(|(s, _)| s.as_str())
    }

    /// True when the last result was an error (also under `success`).
    pub fn last_is_error(&self) -> bool {
        self.last.as_ref().is_some_and(|(_, e)| *e)
    }

    /// True when anything agent-like was seen (a result or an assistant
    /// message): a plain-text run has nothing to tally.
    pub fn is_agent(&self) -> bool {
        self.results > 0 || !self.current.is_empty()
    }
}

/// The message id of a stream-json `assistant` line, without parsing any
/// other line.
fn assistant_message_id(line: &str) -> Option<String> {
    if !line.starts_with('{') || !line.contains("\"assistant\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["type"] != "assistant" {
        return None;
    }
    v["message"]["id"].as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentResult, AgentUsage, Usd};

    fn out(line: &str) -> EventKind {
        EventKind::Output {
            stream: OutputStream::Stdout,
            line: line.into(),
            partial: false,
        }
    }

    fn result(turns: u32, cost: f64, subtype: &str, is_error: bool) -> EventKind {
        EventKind::AgentResult(Box::new(AgentResult {
            subtype: subtype.into(),
            is_error,
            turns,
            cost_usd: Usd(cost),
            duration_ms: 1,
            usage: AgentUsage::default(),
            result: None,
            terminal_reason: None,
            api_error_status: None,
        }))
    }

    #[test]
    fn attempts_add_up_and_the_live_one_counts_its_messages() {
        let mut t = AgentTally::default();
        assert!(!t.is_agent());
        t.observe(&EventKind::ContainerStarted {
            container: "c".into(),
            attempt: 0,
        });
        t.observe(&out(r#"{"type":"assistant","message":{"id":"m1"}}"#));
        t.observe(&out(r#"{"type":"assistant","message":{"id":"m1"}}"#));
        t.observe(&out(r#"{"type":"user","message":{"id":"m1"}}"#));
        t.observe(&out("plain text mentioning \"assistant\""));
        assert_eq!((t.turns(), t.cost_usd()), (1, None));
        t.observe(&result(2, 0.25, "success", true));
        assert_eq!(t.turns(), 2);
        assert!(t.last_is_error());
        // A restart: its messages count until its own result.
        t.observe(&EventKind::ContainerStarted {
            container: "c".into(),
            attempt: 1,
        });
        t.observe(&out(r#"{"type":"assistant","message":{"id":"m1"}}"#));
        assert_eq!((t.turns(), t.cost_usd()), (3, Some(0.25)));
        t.observe(&result(1, 0.5, "success", false));
        assert_eq!((t.turns(), t.cost_usd()), (3, Some(0.75)));
        assert_eq!(t.subtype(), Some("success"));
        assert!(!t.last_is_error());
        // A long-lived agent: results per prompt, cost growing.
        t.observe(&EventKind::ContainerStarted {
            container: "c".into(),
            attempt: 2,
        });
        t.observe(&result(1, 0.1, "success", false));
        t.observe(&EventKind::Idle {
            turns: 1,
            keep_alive_ms: 0,
        });
        assert!(t.is_idle());
        t.observe(&EventKind::AgentTurn {
            command: "u".into(),
            state: "started".into(),
        });
        assert!(!t.is_idle());
        t.observe(&result(2, 0.3, "success", false));
        assert_eq!((t.turns(), t.cost_usd()), (6, Some(1.05)));
        // stderr and partial lines are not the agent's messages.
        t.observe(&EventKind::Output {
            stream: OutputStream::Stderr,
            line: r#"{"type":"assistant","message":{"id":"m9"}}"#.into(),
            partial: false,
        });
        assert_eq!(t.turns(), 6);
    }
}
