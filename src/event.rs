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
//! - a run stopped before its container started ends with `Error` (code
//!   `stopped`)
//!
//! There is exactly one terminal event (`ContainerExited` or `Error`), and
//! nothing follows it.

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

fn is_false(b: &bool) -> bool {
    !*b
}

impl EventKind {
    /// True for `ContainerExited` and `Error`.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::ContainerExited { .. } | EventKind::Error { .. }
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
