//! Messages handled by a [`RunnerActor`](crate::actors::RunnerActor): all
//! sent by its session, all crate-private.

use actix::Message;

use crate::runtime::StopSignal;

/// Deliver a signal to the runner's container (or exec process); answers
/// whether it was delivered (a process already gone counts as delivered).
/// Sent by the session's stop escalation (`runtime::escalation`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), crate::error::Error>")]
pub(crate) struct Signal(pub(crate) StopSignal);

/// Stop the runner actor without touching its container (the session has
/// ended and cleans up through the dispatcher).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Release;

/// Force-remove the runner's container, then stop (its run is void: the
/// session found the image it was started with gone). Resolves once the
/// container is removed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Abandon;

/// Fault injection: make the runner actor panic inside its handler (sent
/// by a session on `InjectRunnerPanic`; feature `fault-injection`).
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct InjectPanic;
