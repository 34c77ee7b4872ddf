//! cldpd: dispatch Claude Code agents into Docker containers.
#![warn(missing_docs)]

pub mod actors;
pub mod agent;
pub mod batch;
pub mod error;
pub mod event;
mod facade;
pub mod log;
pub mod messages;
pub mod model_server;
pub mod owner;
pub mod pod;
pub mod runtime;
mod settings;
pub mod state;
pub mod workspace;

pub use actors::fanout::{FanoutLimits, FanoutStats, Subscriber, SubscriptionId};
pub use actors::supervisor::Policy;
pub use actors::{DispatcherActor, RunnerActor, SessionActor};
pub use error::{Error, RepoProblem, Result, TimeoutKind};
pub use event::{
    AgentApiError, AgentInit, AgentResult, Event, EventBatch, EventData, EventKind, OutputStream,
    ToolUse,
};
pub use facade::{Dispatcher, EventStream, Session, EVENT_STREAM_CAPACITY};
/// `next()` and the other combinators of [`Session::events`] and
/// [`batch::Batch::events`], so that a caller needs no `futures-util` of
/// its own: `use cldpd::StreamExt;`.
pub use futures_util::StreamExt;
pub use messages::dispatcher::{RunInfo, SessionInfo, StartRequest, StopReport, Task};
pub use messages::session::{SessionState, SessionStatus};
pub use pod::{Mount, Pod, PodConfig, RestartPolicy};
pub use settings::{EnvLookup, Settings, DEFAULT_LAG_BUDGET};

/// The README's Rust examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
