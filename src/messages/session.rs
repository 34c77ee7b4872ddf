//! Messages handled by a [`SessionActor`](crate::actors::SessionActor).
//!
//! Public ones: [`Subscribe`], [`Unsubscribe`], [`StopSession`], [`Wait`],
//! [`GetStatus`]. The rest are sent by the dispatcher and the runner and are
//! crate-private; the fault-injection messages (`InjectPanic`,
//! `InjectRunnerPanic`) exist only with the cargo feature
//! `fault-injection`.

use std::time::Duration;

use actix::Message;

use crate::actors::fanout::{Subscriber, SubscriptionId};
use crate::error::Error;
use crate::runtime::ProcessEvent;

/// Add a subscriber to a live session. It receives every event with
/// `seq >= from_seq`, in order, then nothing after the terminal event.
/// `from_seq: 1` replays the run from its first event (from the session log
/// when needed); `from_seq: u64::MAX` means "only what happens from now".
#[derive(Debug, Message)]
#[rtype(result = "Result<SubscriptionId, Error>")]
pub struct Subscribe {
    /// Who receives the events.
    pub subscriber: Subscriber,
    /// First seq to deliver.
    pub from_seq: u64,
}

/// Remove a subscriber.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub SubscriptionId);

/// Stop the run: SIGTERM, wait `grace` (default: the pod's `stopGraceSecs`,
/// else 10 s), then SIGKILL. Idempotent: a second stop joins the first and
/// may only shorten the grace (grace 0 kills at once). Resolves with the
/// run's outcome once it has ended; a container that will not die gives
/// [`Error::StopFailed`], never a hang.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "Result<i32, Error>")]
pub struct StopSession {
    /// Grace period for this call.
    pub grace: Option<Duration>,
}

/// Resolve with the container's exit code when the run ends, or its error.
/// Works whether or not anyone reads the events.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<i32, Error>")]
pub struct Wait;

/// Send a follow-up prompt to the session's long-lived agent
/// (`agentInput: "stream-json"`): written to its stdin as a stream-json
/// user message, while it works (Claude Code queues it as the next turn)
/// or while it is [`SessionState::Idle`] (it starts at once). Answers the
/// prompt's id, which the run's [`EventKind::AgentPrompt`] and
/// [`EventKind::AgentTurn`] events carry. A run whose agent does not read
/// stdin, or that is not running, refuses it
/// ([`Error::InputUnavailable`]).
///
/// [`EventKind::AgentPrompt`]: crate::event::EventKind::AgentPrompt
/// [`EventKind::AgentTurn`]: crate::event::EventKind::AgentTurn
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<String, Error>")]
pub struct FollowUp {
    /// The prompt.
    pub prompt: String,
}

/// End a long-lived agent's conversation as its keep-alive running out
/// would: the agent is ended (TERM, grace, KILL) once its current turn is
/// done — at once when idle — and the run's outcome is its last result's
/// (exit 0 for a success), not the signal's. For `cldpd start -i` at
/// Ctrl-D. A run without a long-lived agent is stopped as by
/// [`StopSession`]. Answers the run's outcome.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<i32, Error>")]
pub struct EndConversation;

/// Snapshot of the session.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "SessionStatus")]
pub struct GetStatus;

/// Where a run is in its life.
#[derive(Debug, Clone)]
pub enum SessionState {
    /// Created, not yet admitted or queued.
    Created,
    /// Waiting for a free slot; position 1 is next.
    Queued {
        /// FIFO position.
        position: usize,
    },
    /// Its image is being built (or a shared build awaited).
    Building,
    /// Its container (or exec process) is being created and started:
    /// the name is chosen, the runtime has not yet reported it started.
    Starting {
        /// Container name.
        container: String,
        /// Restart attempt (0 first).
        attempt: u32,
    },
    /// A container (or exec process) is running: the runtime reported it
    /// started (the `container_started` event).
    Running {
        /// Container name.
        container: String,
        /// Restart attempt (0 first).
        attempt: u32,
    },
    /// A long-lived agent (`agentInput: "stream-json"`) answered every
    /// prompt and waits for a follow-up ([`FollowUp`]) for its
    /// `keepAliveSecs`.
    Idle {
        /// Container name.
        container: String,
        /// Turns answered so far.
        turns: u32,
    },
    /// Waiting out a restart back-off.
    Restarting {
        /// The attempt about to start.
        attempt: u32,
    },
    /// A stop is in progress.
    Stopping,
    /// Ended: the container exited with this code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Ended: the run failed.
    Failed(Error),
}

impl SessionState {
    /// True for `Exited` and `Failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, SessionState::Exited { .. } | SessionState::Failed(_))
    }

    /// The outcome, once terminal.
    pub fn outcome(&self) -> Option<Result<i32, Error>> {
        match self {
            SessionState::Exited { code } => Some(Ok(*code)),
            SessionState::Failed(e) => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// One word: `created`, `queued`, `building`, `starting`, `running`,
    /// `idle`, `restarting`, `stopping`, `exited`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Created => "created",
            SessionState::Queued { .. } => "queued",
            SessionState::Building => "building",
            SessionState::Starting { .. } => "starting",
            SessionState::Running { .. } => "running",
            SessionState::Idle { .. } => "idle",
            SessionState::Restarting { .. } => "restarting",
            SessionState::Stopping => "stopping",
            SessionState::Exited { .. } => "exited",
            SessionState::Failed(_) => "failed",
        }
    }
}

/// Answer to [`GetStatus`].
#[derive(Debug, Clone)]
pub struct SessionStatus {
    /// Current state.
    pub state: SessionState,
    /// Last seq published.
    pub last_seq: u64,
    /// Restarts so far.
    pub restarts: u32,
    /// Fan-out statistics (memory held for subscribers).
    pub fanout: crate::actors::fanout::FanoutStats,
}

// ----- internal ------------------------------------------------------------
//
// Crate-private: sent by the dispatcher and the runner. Anyone able to send
// them could skip admission (`Admit`) or feed a session made-up output.

/// From the dispatcher: a slot is free, go (build, then run).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Admit;

/// From the dispatcher: wait in the queue at this position.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Enqueued {
    pub(crate) position: usize,
}

/// From the dispatcher: progress of the (shared) image build.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) enum BuildNotice {
    /// Build output lines.
    Lines(Vec<String>),
    /// The build ended.
    Done(Result<BuildDone, Error>),
}

/// A build a run can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildDone {
    /// This run reused a build instead of causing one.
    pub(crate) cached: bool,
    /// What to run: the image id when known, else the tag.
    pub(crate) image: String,
    /// The build was recorded by another process and not yet checked in
    /// this one: the session checks the image still exists (while its
    /// container already starts) before it reports the build complete.
    pub(crate) verify: bool,
}

/// From the runner: what its container did.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct RunnerReport {
    /// Which of the session's runners sent it (the session numbers them).
    pub(crate) generation: u32,
    /// What happened.
    pub(crate) event: RunnerEvent,
}

/// The body of a [`RunnerReport`].
#[derive(Debug)]
pub(crate) enum RunnerEvent {
    /// A process event, in stream order.
    Process(ProcessEvent),
    /// The runner actor died without reporting an end (panic).
    Lost,
}

// ----- fault injection (feature `fault-injection`) -------------------------

/// Fault injection: make the session actor panic inside its handler, as a
/// bug in cldpd would. The run must still end cleanly: an `error` event
/// (code `internal`) to its subscribers, its container removed, and the
/// dispatcher serving other runs. For supervision tests; compiled only
/// with the cargo feature `fault-injection`.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

/// Fault injection: make the session's current runner actor panic (the
/// runner dies; the session must end the run with an `error` event and the
/// container removed). For supervision tests; compiled only with the cargo
/// feature `fault-injection`.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct InjectRunnerPanic;
