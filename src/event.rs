//! Typed events: everything a run reports, in order.
//!
//! An [`Event`] is cheap to clone (one reference count), so one event can be
//! handed to any number of subscribers. It dereferences to [`EventData`],
//! whose fields are public:
//!
//! ```
//! use cldpd::{Event, EventKind, OutputStream};
//! let ev = Event::new("web-0a1b2c3d", 7, EventKind::Output {
//!     stream: OutputStream::Stderr,
//!     line: "warning: x".into(),
//!     partial: false,
//! });
//! assert_eq!(ev.seq, 7);
//! assert!(!ev.is_terminal());
//! let json = serde_json::to_string(&ev).unwrap();
//! assert!(json.starts_with(r#"{"type":"output","session":"web-0a1b2c3d","seq":7,"time":""#));
//! let back: Event = serde_json::from_str(&json).unwrap();
//! assert_eq!(back, ev);
//! ```
//!
//! # Ordering guarantees
//!
//! Every session numbers its events `1, 2, 3, …` with no gaps (`seq`), and
//! every subscriber receives them in that order, all of them:
//!
//! - start: `Queued? → BuildStarted → BuildOutput* → BuildComplete →
//!   ContainerStarted → Output* → ContainerExited`
//! - build failure: `Queued? → BuildStarted → BuildOutput* → Error`
//! - runtime failure: `… → ContainerStarted → Output* → Error`
//! - resume: `ContainerStarted → Output* → ContainerExited | Error`
//! - each restart inserts `Restarting → ContainerStarted → Output*` before
//!   the terminal event
//! - a run stopped before its container started, or while it waits to
//!   restart (back-off), ends with `Error` (code `stopped`)
//!
//! There is exactly one terminal event (`ContainerExited` or `Error`), and
//! nothing follows it.
//!
//! For a Claude Code agent (stream-json, see [`crate::agent`]) each stdout
//! line is still an `Output` event, and the agent events it yields
//! (`AgentInit`, `AgentText`, `ToolUse`, `ToolResult`, `AgentResult`,
//! `AgentApiError`, `AgentUnknown`) follow it directly, in the same `seq`. A run whose
//! `AgentResult` is an error ends with `Error` (code `agent_max_turns`,
//! `agent_max_budget`, `rate_limited`, `api_error` or `agent_error`), not
//! `ContainerExited`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Which pipe of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

/// What happened. Serialised with a `type` tag in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run waits for a free slot (admission control); `position` 1 is next.
    Queued {
        /// Place in the FIFO queue, 1-based.
        position: usize,
    },
    /// The image build begins.
    BuildStarted {
        /// Image tag.
        image: String,
    },
    /// One line of `docker build` output.
    BuildOutput {
        /// The line, without its newline.
        line: String,
    },
    /// The image is ready.
    BuildComplete {
        /// Image tag.
        image: String,
        /// True when this run reused a build instead of causing one: an
        /// identical earlier build of this tag in this dispatcher, or one in
        /// flight for another run (exactly one run per real build reports
        /// `false`).
        #[serde(default)]
        cached: bool,
    },
    /// A container (or, on resume, an `exec` process) began running.
    ContainerStarted {
        /// Container name.
        container: String,
        /// 0 for the first container of a run, n for the n-th restart.
        #[serde(default)]
        attempt: u32,
    },
    /// One line the container wrote.
    Output {
        /// stdout or stderr.
        stream: OutputStream,
        /// The line, without its newline, decoded as UTF-8 (invalid bytes
        /// become U+FFFD).
        line: String,
        /// True when the line was longer than the line cap and continues in
        /// the next `Output` event of the same stream.
        #[serde(default, skip_serializing_if = "is_false")]
        partial: bool,
    },
    /// The restart policy starts the run again after `delay_ms`.
    Restarting {
        /// The restart about to happen, 1-based.
        attempt: u32,
        /// Back-off before the new container starts.
        delay_ms: u64,
        /// Why the previous container ended.
        reason: String,
    },
    /// The agent started (stream-json `system`/`init`).
    AgentInit(Box<AgentInit>),
    /// Text the agent wrote (an assistant `text` block; cut at
    /// [`crate::agent::MAX_TEXT`] bytes).
    AgentText {
        /// The text.
        text: String,
    },
    /// The agent calls a tool.
    ToolUse(Box<ToolUse>),
    /// What a tool call returned, summarised (never its whole content).
    ToolResult {
        /// The call's id.
        id: String,
        /// True when the tool failed.
        is_error: bool,
        /// Size of the content in bytes.
        size: u64,
        /// Its first line (at most [`crate::agent::MAX_FIRST_LINE`] bytes).
        first_line: String,
    },
    /// The agent's final result (stream-json `result`).
    AgentResult(Box<AgentResult>),
    /// The agent hit an API error or a rate limit (stream-json
    /// `system`/`api_retry`, an assistant message with an `error`, a
    /// `rate_limit_event` whose status is `rejected`). Not terminal: Claude
    /// Code retries on its own (`retry_in_ms`), and the run's end is decided
    /// by its `AgentResult`. A batch slows its admissions while these say
    /// `rate_limited` or the API is overloaded (529).
    AgentApiError(Box<AgentApiError>),
    /// A stream-json message of a type cldpd does not interpret
    /// (`system/compact_boundary`, an allowed `rate_limit_event`, …); its raw line is
    /// the `output` event before it.
    AgentUnknown {
        /// `type`, or `type/subtype`.
        message_type: String,
    },
    /// A prompt reached a long-lived agent (`agentInput: "stream-json"`):
    /// the agent echoed it as its turn began (the first prompt, or a
    /// follow-up from any process).
    AgentPrompt {
        /// The prompt's id (its stream-json `uuid`, cldpd's choice).
        command: String,
        /// The prompt (cut at [`crate::agent::MAX_TEXT`] bytes).
        text: String,
    },
    /// A prompt's turn changed state (`queued`, `started`, `completed`;
    /// stream-json `command_lifecycle`). A turn's `agent_result` comes
    /// before its `completed`.
    AgentTurn {
        /// The prompt's id.
        command: String,
        /// `queued`, `started` or `completed`.
        state: String,
    },
    /// The long-lived agent answered every prompt and waits for a
    /// follow-up, for at most `keep_alive_ms` (then the run ends).
    Idle {
        /// Turns answered so far.
        turns: u32,
        /// How long it waits.
        keep_alive_ms: u64,
    },
    /// The session's work came back into its repository (pod.json `repo`)
    /// as a branch: once the run's container has ended, right before the
    /// terminal event; with `checkpoint`, also after each turn.
    Branch {
        /// `cldpd/<session>`.
        name: String,
        /// The commit it points at.
        head: String,
        /// Commits on it that the base has not.
        commits: usize,
    },
    /// Terminal: the container exited with this code.
    ContainerExited {
        /// Exit code (128 + n when killed by signal n).
        code: i32,
    },
    /// Terminal: the run failed.
    Error {
        /// Stable name of the failure, [`crate::Error::code`].
        code: String,
        /// Human-readable description.
        message: String,
    },
}

/// What an [`EventKind::AgentInit`] says: the agent started (stream-json `system`/`init`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInit {
    /// The conversation id (`claude --session-id`/`--resume`).
    pub conversation: String,
    /// The model it talks to.
    pub model: String,
    /// The tools it may use.
    pub tools: Vec<String>,
    /// Claude Code's version.
    pub version: String,
    /// Its permission mode (`bypassPermissions`, `default`, …).
    pub permission_mode: String,
}

/// What an [`EventKind::ToolUse`] says: the agent calls a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolUse {
    /// The call's id (matches its `ToolResult`).
    pub id: String,
    /// The tool (`Bash`, `Write`, `Edit`, …).
    pub tool: String,
    /// Its input (long strings cut).
    pub input: serde_json::Value,
}

/// What an [`EventKind::AgentResult`] says: the agent's final result (stream-json `result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResult {
    /// `success`, `error_max_turns`, `error_during_execution`,
    /// `error_max_budget_usd`, …
    pub subtype: String,
    /// True when the run failed (also possible under `success`).
    pub is_error: bool,
    /// Turns taken.
    pub turns: u32,
    /// What it cost, in US dollars.
    pub cost_usd: Usd,
    /// Wall time the agent reports.
    pub duration_ms: u64,
    /// Token counts.
    pub usage: AgentUsage,
    /// The result text (cut), when there is one.
    #[serde(default)]
    pub result: Option<String>,
    /// Why it stopped (`completed`, `max_turns`, …), when given.
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// HTTP status of the API error that ended it, when one did.
    #[serde(default)]
    pub api_error_status: Option<u16>,
}

/// What an [`EventKind::AgentApiError`] says: an API error or a rate limit the agent hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentApiError {
    /// `rate_limited` (HTTP 429 or a rejected rate limit) or
    /// `api_error` (any other status, e.g. 529 overloaded) — the codes
    /// of [`crate::Error::AgentFailed`].
    pub code: String,
    /// HTTP status, when known.
    #[serde(default)]
    pub status: Option<u16>,
    /// What the agent said (`rate_limit`, `API Error: …`, …).
    pub message: String,
    /// When the agent retries by itself: in how long.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
    /// When the agent retries by itself: which attempt that is.
    #[serde(default)]
    pub attempt: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An amount in US dollars. Compared by bit pattern, so that events stay
/// `Eq`; serialised as a plain number.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usd(pub f64);

impl PartialEq for Usd {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Usd {}

/// Token counts of an agent's run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUsage {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
}

impl EventKind {
    /// True for `ContainerExited` and `Error`.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::ContainerExited { .. } | EventKind::Error { .. }
        )
    }

    /// True for the kinds parsed from an agent's stream-json output (they
    /// follow the `output` line that completed them).
    pub fn is_agent(&self) -> bool {
        matches!(
            self,
            EventKind::AgentInit(_)
                | EventKind::AgentText { .. }
                | EventKind::ToolUse(_)
                | EventKind::ToolResult { .. }
                | EventKind::AgentResult(_)
                | EventKind::AgentApiError(_)
                | EventKind::AgentUnknown { .. }
                | EventKind::AgentPrompt { .. }
                | EventKind::AgentTurn { .. }
        )
    }

    /// The error event for `err`.
    pub fn error(err: &crate::Error) -> Self {
        EventKind::Error {
            code: err.code().to_string(),
            message: err.to_string(),
        }
    }

    /// The `type` tag of this kind, as serialised.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Queued { .. } => "queued",
            EventKind::BuildStarted { .. } => "build_started",
            EventKind::BuildOutput { .. } => "build_output",
            EventKind::BuildComplete { .. } => "build_complete",
            EventKind::ContainerStarted { .. } => "container_started",
            EventKind::Output { .. } => "output",
            EventKind::Restarting { .. } => "restarting",
            EventKind::AgentInit(_) => "agent_init",
            EventKind::AgentText { .. } => "agent_text",
            EventKind::ToolUse(_) => "tool_use",
            EventKind::ToolResult { .. } => "tool_result",
            EventKind::AgentResult(_) => "agent_result",
            EventKind::AgentApiError(_) => "agent_api_error",
            EventKind::AgentUnknown { .. } => "agent_unknown",
            EventKind::AgentPrompt { .. } => "agent_prompt",
            EventKind::AgentTurn { .. } => "agent_turn",
            EventKind::Idle { .. } => "idle",
            EventKind::Branch { .. } => "branch",
            EventKind::ContainerExited { .. } => "container_exited",
            EventKind::Error { .. } => "error",
        }
    }
}

/// The fields of an event. Reach them through [`Event`]'s `Deref`.
///
/// Serialised flat, `type` first: `{"type":"output","session":"web-0a1b2c3d",
/// "seq":7,"time":"2026-11-29T10:00:00.000000Z","stream":"stdout","line":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventData {
    /// The session (run) it belongs to: `<pod>-<hex8>`.
    pub session: Arc<str>,
    /// Position in the session's stream, from 1, without gaps.
    pub seq: u64,
    /// When cldpd observed it (RFC 3339, UTC, microseconds).
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

// Every event is one `Arc<EventData>` allocation, allocated on the session's
// thread and freed on whichever subscriber's thread drops the last clone. The
// Arc block (two counters + this struct) must stay at or under 120 bytes: a
// glibc chunk of at most 128 bytes is a fastbin chunk, freed from another
// thread without taking the allocating arena's lock. At 176 bytes (agent
// variants inline) that lock was the largest single cost of one busy session
// (BENCHMARKS.md, "EventKind's agent variants boxed"). Rare, large variants
// are boxed to keep it so.
const _: () = assert!(2 * std::mem::size_of::<usize>() + std::mem::size_of::<EventData>() <= 120);

impl Serialize for EventData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.kind.name())?;
        m.serialize_entry("session", &*self.session)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("time", &rfc3339::Display(self.time))?;
        match &self.kind {
            EventKind::Queued { position } => m.serialize_entry("position", position)?,
            EventKind::BuildStarted { image } => m.serialize_entry("image", image)?,
            EventKind::BuildOutput { line } => m.serialize_entry("line", line)?,
            EventKind::BuildComplete { image, cached } => {
                m.serialize_entry("image", image)?;
                m.serialize_entry("cached", cached)?;
            }
            EventKind::ContainerStarted { container, attempt } => {
                m.serialize_entry("container", container)?;
                m.serialize_entry("attempt", attempt)?;
            }
            EventKind::Output {
                stream,
                line,
                partial,
            } => {
                m.serialize_entry("stream", stream)?;
                m.serialize_entry("line", line)?;
                if *partial {
                    m.serialize_entry("partial", partial)?;
                }
            }
            EventKind::Restarting {
                attempt,
                delay_ms,
                reason,
            } => {
                m.serialize_entry("attempt", attempt)?;
                m.serialize_entry("delay_ms", delay_ms)?;
                m.serialize_entry("reason", reason)?;
            }
            EventKind::AgentInit(init) => {
                m.serialize_entry("conversation", &init.conversation)?;
                m.serialize_entry("model", &init.model)?;
                m.serialize_entry("tools", &init.tools)?;
                m.serialize_entry("version", &init.version)?;
                m.serialize_entry("permission_mode", &init.permission_mode)?;
            }
            EventKind::AgentText { text } => m.serialize_entry("text", text)?,
            EventKind::ToolUse(call) => {
                m.serialize_entry("id", &call.id)?;
                m.serialize_entry("tool", &call.tool)?;
                m.serialize_entry("input", &call.input)?;
            }
            EventKind::ToolResult {
                id,
                is_error,
                size,
                first_line,
            } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("is_error", is_error)?;
                m.serialize_entry("size", size)?;
                m.serialize_entry("first_line", first_line)?;
            }
            EventKind::AgentResult(result) => {
                m.serialize_entry("subtype", &result.subtype)?;
                m.serialize_entry("is_error", &result.is_error)?;
                m.serialize_entry("turns", &result.turns)?;
                m.serialize_entry("cost_usd", &result.cost_usd)?;
                m.serialize_entry("duration_ms", &result.duration_ms)?;
                m.serialize_entry("usage", &result.usage)?;
                m.serialize_entry("result", &result.result)?;
                m.serialize_entry("terminal_reason", &result.terminal_reason)?;
                m.serialize_entry("api_error_status", &result.api_error_status)?;
            }
            EventKind::AgentApiError(api) => {
                m.serialize_entry("code", &api.code)?;
                m.serialize_entry("status", &api.status)?;
                m.serialize_entry("message", &api.message)?;
                m.serialize_entry("retry_in_ms", &api.retry_in_ms)?;
                m.serialize_entry("attempt", &api.attempt)?;
            }
            EventKind::AgentUnknown { message_type } => {
                m.serialize_entry("message_type", message_type)?
            }
            EventKind::AgentPrompt { command, text } => {
                m.serialize_entry("command", command)?;
                m.serialize_entry("text", text)?;
            }
            EventKind::AgentTurn { command, state } => {
                m.serialize_entry("command", command)?;
                m.serialize_entry("state", state)?;
            }
            EventKind::Idle {
                turns,
                keep_alive_ms,
            } => {
                m.serialize_entry("turns", turns)?;
                m.serialize_entry("keep_alive_ms", keep_alive_ms)?;
            }
            EventKind::Branch {
                name,
                head,
                commits,
            } => {
                m.serialize_entry("name", name)?;
                m.serialize_entry("head", head)?;
                m.serialize_entry("commits", commits)?;
            }
            EventKind::ContainerExited { code } => m.serialize_entry("code", code)?,
            EventKind::Error { code, message } => {
                m.serialize_entry("code", code)?;
                m.serialize_entry("message", message)?;
            }
        }
        m.end()
    }
}

/// One event of one session; see the [module docs](self) for the ordering.
///
/// This is an actix [`Message`](actix::Message): subscriber actors implement
/// `Handler<Event>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Event(Arc<EventData>);

impl Event {
    /// A new event stamped with the current time.
    pub fn new(session: impl Into<Arc<str>>, seq: u64, kind: EventKind) -> Self {
        Event(Arc::new(EventData {
            session: session.into(),
            seq,
            time: now_micros(),
            kind,
        }))
    }

    /// Wrap fully specified data (for replays and tests).
    pub fn from_data(data: EventData) -> Self {
        Event(Arc::new(data))
    }

    /// True for the terminal kinds (`ContainerExited`, `Error`).
    pub fn is_terminal(&self) -> bool {
        self.0.kind.is_terminal()
    }

    /// The output line, for `Output` and `BuildOutput` events.
    pub fn line(&self) -> Option<&str> {
        match &self.0.kind {
            EventKind::Output { line, .. } | EventKind::BuildOutput { line } => Some(line),
            _ => None,
        }
    }
}

impl Deref for Event {
    type Target = EventData;
    fn deref(&self) -> &EventData {
        &self.0
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventData::deserialize(d).map(Event::from_data)
    }
}

impl actix::Message for Event {
    type Result = ();
}

/// Consecutive events of one session, in `seq` order, delivered as one
/// actix message: what a subscriber registered as
/// [`Subscriber::Batches`](crate::Subscriber::Batches) (or its weak and
/// channel forms) receives instead of one [`Event`] message each.
///
/// The events and their order are exactly those an [`Event`] subscriber
/// gets (every event, `seq` without gaps, the terminal one last); only the
/// packaging differs. A fast run hands an actor a few hundred events per
/// message, which saves the message envelope, the mailbox slot and the
/// wake-up of each (see BENCHMARKS.md, "Batched delivery"). A batch is
/// never empty.
///
/// ```
/// use actix::prelude::*;
/// use cldpd::{EventBatch, EventKind};
///
/// struct Lines(u64);
/// impl Actor for Lines {
///     type Context = Context<Self>;
/// }
/// impl Handler<EventBatch> for Lines {
///     type Result = ();
///     fn handle(&mut self, batch: EventBatch, _: &mut Context<Self>) {
///         for ev in &batch.0 {
///             if let EventKind::Output { .. } = &ev.kind {
///                 self.0 += 1;
///             }
///         }
///     }
/// }
/// // Subscribe with `Subscriber::Batches(addr.recipient())`.
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch(pub Vec<Event>);

impl actix::Message for EventBatch {
    type Result = ();
}

/// The current time truncated to whole microseconds, the precision events
/// are serialised with, so that an event read back from a log equals the
/// event that was written.
pub(crate) fn now_micros() -> SystemTime {
    let now = SystemTime::now();
    match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(d.as_micros() as u64),
        Err(_) => now,
    }
}

/// The serde form of events for the session log, written without serde for
/// the hot kinds: exactly the bytes `serde_json::to_writer(out, event)`
/// writes (a test holds them equal).
///
/// Output lines are most of a session's events. Through serde each one
/// escaped every string byte by byte and formatted its timestamp from
/// scratch; here a string that needs no escaping (the common case, checked
/// eight bytes at a time) is copied as is, and the date part of the
/// timestamp is formatted once per second per thread.
pub(crate) mod fast_json {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{Event, EventData, EventKind, OutputStream};

    /// Append `ev` as one JSON object (no newline).
    pub(crate) fn write(ev: &EventData, out: &mut Vec<u8>) {
        let (line, stream, partial) = match &ev.kind {
            EventKind::Output {
                stream,
                line,
                partial,
            } => (line, Some(*stream), *partial),
            EventKind::BuildOutput { line } => (line, None, false),
            _ => {
                // Rare kinds: through serde (cannot fail into a Vec).
                let _ = serde_json::to_writer(out, ev);
                return;
            }
        };
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ev.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"session\":");
        string(out, &ev.session);
        out.extend_from_slice(b",\"seq\":");
        uint(out, ev.seq);
        out.extend_from_slice(b",\"time\":\"");
        time(out, ev.time);
        out.push(b'"');
        if let Some(stream) = stream {
            out.extend_from_slice(match stream {
                OutputStream::Stdout => b",\"stream\":\"stdout\"",
                OutputStream::Stderr => b",\"stream\":\"stderr\"",
            });
        }
        out.extend_from_slice(b",\"line\":");
        string(out, line);
        if partial {
            out.extend_from_slice(b",\"partial\":true");
        }
        out.push(b'}');
    }

    /// A JSON string, escaped exactly as serde_json escapes it: runs of
    /// bytes that need no escape are found eight at a time and copied
    /// whole (agent output is JSON itself, full of quotes, and escaping it
    /// byte by byte through serde_json was the largest single cost of a
    /// fan-out of stream-json lines; BENCHMARKS.md, "Batched delivery").
    fn string(out: &mut Vec<u8>, s: &str) {
        let b = s.as_bytes();
        out.reserve(b.len() + 2);
        out.push(b'"');
        let mut copied = 0;
        let mut i = 0;
        while i < b.len() {
            if i + 8 <= b.len() {
                let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                if special_in(x) == 0 {
                    i += 8;
                    continue;
                }
            }
            let c = b[i];
            if c < 0x20 || c == b'"' || c == b'\\' {
                out.extend_from_slice(&b[copied..i]);
                escape(out, c);
                copied = i + 1;
            }
            i += 1;
        }
        out.extend_from_slice(&b[copied..]);
        out.push(b'"');
    }

    /// Non-zero when the eight bytes of `x` hold one that JSON escapes: a
    /// control character (< 0x20), `"` or `\`. Exact per word: "some byte
    /// is below n" for n <= 128 is (x - n*ONES) & !x & HIGH != 0.
    #[inline]
    fn special_in(x: u64) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        #[inline]
        fn below(x: u64, n: u64) -> u64 {
            x.wrapping_sub(n * ONES) & !x & HIGH
        }
        below(x, 0x20) | below(x ^ (0x22 * ONES), 1) | below(x ^ (0x5c * ONES), 1)
    }

    /// True when `b` holds a byte serde_json escapes: a control character
    /// (< 0x20), `"` or `\`.
    fn needs_escape(b: &[u8]) -> bool {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            if special_in(u64::from_le_bytes(c.try_into().expect("8 bytes"))) != 0 {
                return true;
            }
        }
        chunks
            .remainder()
            .iter()
            .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
    }

    /// serde_json's escape of one byte that needs it.
    fn escape(out: &mut Vec<u8>, c: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
    }

    fn uint(out: &mut Vec<u8>, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[i..]);
    }

    /// The last time formatted on this thread: its seconds since the epoch,
    /// microseconds, and `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`. The events of one
    /// batch share their time, so most events copy it whole.
    struct DateCache {
        secs: u64,
        micros: u32,
        text: [u8; 27],
    }

    thread_local! {
        static DATE: RefCell<Option<DateCache>> = const { RefCell::new(None) };
    }

    /// `humantime::format_rfc3339_micros(t)`, cached.
    fn time(out: &mut Vec<u8>, t: SystemTime) {
        let Ok(since) = t.duration_since(UNIX_EPOCH) else {
            return slow_time(out, t);
        };
        let secs = since.as_secs();
        let micros = since.subsec_micros();
        let cached = DATE.with(|d| {
            let mut d = d.borrow_mut();
            if d.as_ref().is_none_or(|c| c.secs != secs) {
                let whole = UNIX_EPOCH + Duration::from_secs(secs);
                let text = humantime::format_rfc3339_micros(whole).to_string();
                let bytes = text.as_bytes();
                // Four-digit years only (`YYYY-MM-DDTHH:MM:SS.uuuuuuZ`).
                if bytes.len() != 27 || bytes[19] != b'.' {
                    return false;
                }
                let mut text = [0u8; 27];
                text.copy_from_slice(bytes);
                *d = Some(DateCache {
                    secs,
                    micros: 0,
                    text,
                });
            }
            let c = d.as_mut().expect("cached");
            if c.micros != micros {
                let mut m = micros;
                for digit in c.text[20..26].iter_mut().rev() {
                    *digit = b'0' + (m % 10) as u8;
                    m /= 10;
                }
                c.micros = micros;
            }
            out.extend_from_slice(&c.text);
            true
        });
        if !cached {
            slow_time(out, t);
        }
    }

    fn slow_time(out: &mut Vec<u8>, t: SystemTime) {
        use std::io::Write;
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(t));
    }

    /// Parse a log line written by [`write`] for an `output` or
    /// `build_output` event (the bulk of a log), as serde would, much
    /// faster: `None` for anything else or anything unusual (escapes,
    /// another field order, `partial: false`), which the caller then
    /// parses with serde. `session` is reused when the line names it.
    pub(crate) fn read(line: &str, session: &mut Option<Arc<str>>) -> Option<Event> {
        let mut p = Parser(line.strip_suffix('\n')?.as_bytes());
        let output = if p.eat(b"{\"type\":\"output\",\"session\":") {
            true
        } else if p.eat(b"{\"type\":\"build_output\",\"session\":") {
            false
        } else {
            return None;
        };
        let name = p.plain_string()?;
        let session = match session {
            Some(s) if s.as_bytes() == name => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(std::str::from_utf8(name).ok()?);
                *session = Some(s.clone());
                s
            }
        };
        if !p.eat(b",\"seq\":") {
            return None;
        }
        let seq = p.uint()?;
        if !p.eat(b",\"time\":\"") {
            return None;
        }
        let time = p.time()?;
        let stream = if !output {
            None
        } else if p.eat(b"\",\"stream\":\"stdout\"") {
            Some(OutputStream::Stdout)
        } else if p.eat(b"\",\"stream\":\"stderr\"") {
            Some(OutputStream::Stderr)
        } else {
            return None;
        };
        let ok = if output {
            p.eat(b",\"line\":")
        } else {
            p.eat(b"\",\"line\":")
        };
        if !ok {
            return None;
        }
        let text = std::str::from_utf8(p.plain_string()?).ok()?.to_owned();
        let partial = p.eat(b",\"partial\":true");
        if p.0 != b"}" {
            return None;
        }
        let kind = match stream {
            Some(stream) => EventKind::Output {
                stream,
                line: text,
                partial,
            },
            None if !partial => EventKind::BuildOutput { line: text },
            None => return None,
        };
        Some(Event::from_data(EventData {
            session,
            seq,
            time,
            kind,
        }))
    }

    struct Parser<'a>(&'a [u8]);

    impl<'a> Parser<'a> {
        fn eat(&mut self, lit: &[u8]) -> bool {
            match self.0.strip_prefix(lit) {
                Some(rest) => {
                    self.0 = rest;
                    true
                }
                None => false,
            }
        }

        /// A string without escapes or control characters (else `None`).
        fn plain_string(&mut self) -> Option<&'a [u8]> {
            let rest = self.0.strip_prefix(b"\"")?;
            let end = memchr::memchr(b'"', rest)?;
            let body = &rest[..end];
            if needs_escape(body) {
                return None;
            }
            self.0 = &rest[end + 1..];
            Some(body)
        }

        /// Decimal digits, as serde reads a `u64` (no sign, no leading
        /// zero unless alone, no overflow).
        fn uint(&mut self) -> Option<u64> {
            let len = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
            let digits = &self.0[..len];
            if len == 0 || len > 19 || (len > 1 && digits[0] == b'0') {
                return None;
            }
            let n = digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            self.0 = &self.0[len..];
            Some(n)
        }

        /// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (as [`time`] writes it), the date
        /// part parsed once per second per thread.
        fn time(&mut self) -> Option<SystemTime> {
            let t = self.0.get(..27)?;
            if t[19] != b'.' || t[26] != b'Z' || !t[20..26].iter().all(u8::is_ascii_digit) {
                return None;
            }
            let prefix: [u8; 20] = t[..20].try_into().ok()?;
            let secs = PARSED.with(|c| {
                let mut c = c.borrow_mut();
                if let Some((p, secs)) = *c {
                    if p == prefix {
                        return Some(secs);
                    }
                }
                // Check it the way serde's path does, for the whole second.
                let mut whole = String::from(std::str::from_utf8(&prefix).ok()?);
                whole.push_str("000000Z");
                let at = humantime::parse_rfc3339_weak(&whole).ok()?;
                let secs = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
                // Only a canonical date is cached (it formats back the same).
                let mut back = Vec::with_capacity(27);
                super::fast_json::time(&mut back, at);
                if back[..20] != prefix {
                    return None;
                }
                *c = Some((prefix, secs));
                Some(secs)
            })?;
            let micros = t[20..26]
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            self.0 = &self.0[27..];
            Some(UNIX_EPOCH + Duration::new(secs, micros * 1000))
        }
    }

    thread_local! {
        /// The last date prefix parsed and its seconds since the epoch.
        static PARSED: RefCell<Option<([u8; 20], u64)>> = const { RefCell::new(None) };
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::event::{Event, EventKind, OutputStream};

        fn same_as_serde(ev: &Event) {
            let mut fast = Vec::new();
            write(ev, &mut fast);
            let serde = serde_json::to_vec(ev).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&serde)
            );
            // Read back: the fast reader agrees with serde or declines.
            let mut line = String::from_utf8(fast).unwrap();
            line.push('\n');
            let mut session = None;
            let by_serde: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(&by_serde, ev);
            if let Some(fast) = read(&line, &mut session) {
                assert_eq!(&fast, ev, "{line}");
            } else {
                let plain = |s: &str| !needs_escape(s.as_bytes());
                let common = ev.time.duration_since(UNIX_EPOCH).is_ok()
                    && plain(&ev.session)
                    && ev.line().is_some_and(plain);
                let kind_ok = matches!(
                    ev.kind,
                    EventKind::Output { .. } | EventKind::BuildOutput { .. }
                );
                assert!(
                    !(common
                        && kind_ok
                        && ev.time < UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
                    "the fast reader declined a plain line: {line}"
                );
            }
        }

        #[test]
        fn the_reader_declines_what_it_does_not_know() {
            let mut s = None;
            for line in [
                "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\",\"partial\":false}\n",
                "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":01,\"time\":\"2026-01-01T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\"}\n",
                "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-01-01T00:00:00Z\",\"stream\":\"stdout\",\"line\":\"x\"}\n",
                "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-02-30T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\"}\n",
                "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\"} \n",
                "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\"}",
                "{\"type\":\"build_output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000Z\",\"line\":\"x\",\"partial\":true}\n",
                "{\"seq\":1,\"type\":\"output\",\"session\":\"a-1\",\"time\":\"2026-01-01T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\"}\n",
            ] {
                assert!(read(line, &mut s).is_none(), "{line}");
            }
            let ok = "{\"type\":\"output\",\"session\":\"a-1\",\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000Z\",\"stream\":\"stdout\",\"line\":\"x\"}\n";
            assert_eq!(
                read(ok, &mut s).unwrap(),
                serde_json::from_str::<Event>(ok).unwrap()
            );
        }

        #[test]
        fn writes_exactly_the_serde_form() {
            let lines = [
                String::new(),
                "out 1".to_string(),
                "x".repeat(80),
                "quote \" and backslash \\ in the middle of a longer line".into(),
                "tab\tnewline\ncr\r\u{1}\u{1f}\u{7f} del and controls".into(),
                "unicode é ü 日本 \u{2028} \u{fffd} emoji 🎉".into(),
                "1234567\"".into(),
                "\\".into(),
                "a\u{0}b".into(),
            ];
            let times = [
                UNIX_EPOCH,
                UNIX_EPOCH + Duration::from_micros(1),
                UNIX_EPOCH + Duration::from_micros(1_781_234_567_890_123),
                UNIX_EPOCH + Duration::from_secs(253_402_300_799),
                crate::event::now_micros(),
            ];
            let mut seq = 0;
            for line in &lines {
                for &time in &times {
                    for session in ["web-0a1b2c3d", "we\"ird-1"] {
                        seq += 7919;
                        for kind in [
                            EventKind::Output {
                                stream: OutputStream::Stdout,
                                line: line.clone(),
                                partial: false,
                            },
                            EventKind::Output {
                                stream: OutputStream::Stderr,
                                line: line.clone(),
                                partial: true,
                            },
                            EventKind::BuildOutput { line: line.clone() },
                            EventKind::ContainerExited { code: -3 },
                            EventKind::Error {
                                code: "x".into(),
                                message: line.clone(),
                            },
                        ] {
                            same_as_serde(&Event::from_data(EventData {
                                session: session.into(),
                                seq,
                                time,
                                kind,
                            }));
                        }
                    }
                }
            }
        }

        #[test]
        fn escape_check_finds_every_special_byte_anywhere() {
            for special in (0u8..0x20).chain([b'"', b'\\']) {
                for len in 1..20 {
                    for at in 0..len {
                        let mut b = vec![b'a'; len];
                        b[at] = special;
                        assert!(needs_escape(&b), "{special:#x} at {at} of {len}");
                    }
                }
            }
            for c in 0x20u8..=0xff {
                if c != b'"' && c != b'\\' {
                    assert!(!needs_escape(&[c; 17]), "{c:#x}");
                }
            }
        }

        /// The log encoder's strings are byte for byte serde_json's: every
        /// byte that needs an escape, alone and among others at every
        /// offset of a word, beside multi-byte characters.
        #[test]
        fn strings_are_escaped_exactly_as_serde_json_does() {
            let mut cases: Vec<String> = vec![
                String::new(),
                "plain text of some length, no escapes at all".into(),
                r#"{"type":"assistant","message":{"content":[{"text":"a \"quoted\" word"}]}}"#
                    .into(),
                "tab\tnew\nline\r\u{8}\u{c}\u{1}\u{1f}\u{7f} é 日本 🦀 \\ end".into(),
            ];
            for c in (0u8..0x20).chain([b'"', b'\\', 0x7f]) {
                for len in 1..20 {
                    for at in 0..len {
                        let mut b = vec![b'a'; len];
                        b[at] = c;
                        cases.push(String::from_utf8(b).unwrap());
                    }
                }
            }
            for case in &cases {
                let mut out = Vec::new();
                string(&mut out, case);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(case).unwrap(),
                    "{case:?}"
                );
            }
        }
    }
}

/// RFC 3339 (UTC, microsecond) timestamps for serde.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as the RFC 3339 string.
    pub struct Display(pub SystemTime);

    impl serde::Serialize for Display {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&humantime::format_rfc3339_micros(self.0))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event of each agent kind.
    fn agent_kinds() -> Vec<EventKind> {
        vec![
            EventKind::AgentInit(Box::new(AgentInit {
                conversation: "f6a692dc-741b-4ecf-a64c-843b2be980c7".into(),
                model: "claude-opus-5-5".into(),
                tools: vec!["Bash".into(), "Write".into()],
                version: "2.1.332".into(),
                permission_mode: "bypassPermissions".into(),
            })),
            EventKind::AgentText {
                text: "Done \"quoted\"\nnext".into(),
            },
            EventKind::ToolUse(Box::new(ToolUse {
                id: "toolu_1".into(),
                tool: "Bash".into(),
                input: serde_json::json!({"command": "echo hi > out.txt", "n": [1, 2.5, null]}),
            })),
            EventKind::ToolResult {
                id: "toolu_1".into(),
                is_error: true,
                size: 5 * 1024 * 1024,
                first_line: "first".into(),
            },
            EventKind::AgentResult(Box::new(AgentResult {
                subtype: "success".into(),
                is_error: false,
                turns: 4,
                cost_usd: Usd(0.00028000000000000003),
                duration_ms: 1805,
                usage: AgentUsage {
                    input_tokens: 20,
                    output_tokens: 10,
                    cache_read_input_tokens: 1,
                    cache_creation_input_tokens: 2,
                },
                result: Some("All done.".into()),
                terminal_reason: Some("completed".into()),
                api_error_status: Some(529),
            })),
            EventKind::AgentResult(Box::new(AgentResult {
                subtype: "error_max_turns".into(),
                is_error: true,
                turns: 2,
                cost_usd: Usd(0.0),
                duration_ms: 0,
                usage: AgentUsage::default(),
                result: None,
                terminal_reason: None,
                api_error_status: None,
            })),
            EventKind::AgentApiError(Box::new(AgentApiError {
                code: "rate_limited".into(),
                status: Some(429),
                message: "rate_limit".into(),
                retry_in_ms: Some(1025),
                attempt: Some(1),
            })),
            EventKind::AgentApiError(Box::new(AgentApiError {
                code: "api_error".into(),
                status: None,
                message: "API Error: \"x\"".into(),
                retry_in_ms: None,
                attempt: None,
            })),
            EventKind::AgentUnknown {
                message_type: "rate_limit_event".into(),
            },
        ]
    }

    #[test]
    fn agent_events_round_trip_through_serde_and_the_log_encoder() {
        for (i, kind) in agent_kinds().into_iter().enumerate() {
            let ev = Event::new("p-00000001", i as u64 + 1, kind);
            let json = serde_json::to_string(&ev).unwrap();
            assert!(
                json.starts_with(&format!("{{\"type\":\"{}\",\"session\"", ev.kind.name())),
                "{json}"
            );
            let back: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(back, ev, "{json}");
            let mut fast = Vec::new();
            fast_json::write(&ev, &mut fast);
            assert_eq!(String::from_utf8(fast).unwrap(), json);
            assert!(!ev.is_terminal());
        }
    }

    #[test]
    fn serde_form_is_flat_and_tagged() {
        let ev = Event::new("p-00000001", 1, EventKind::ContainerExited { code: 7 });
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "container_exited");
        assert_eq!(v["session"], "p-00000001");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["code"], 7);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(ev.is_terminal());
    }

    #[test]
    fn partial_is_omitted_when_false_and_read_back_when_absent() {
        let ev = Event::new(
            "p-1",
            2,
            EventKind::Output {
                stream: OutputStream::Stdout,
                line: "a\u{fffd}b".into(),
                partial: false,
            },
        );
        let s = serde_json::to_string(&ev).unwrap();
        assert!(!s.contains("partial"));
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ev);
    }
}
