//! Messages handled by a [`RunnerActor`](crate::actors::RunnerActor).

use actix::Message;

use crate::runtime::StopSignal;

/// Deliver a signal to the runner's container. Failures come back to the
/// session as a `RunnerEvent::SignalFailed` report.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Signal(pub StopSignal);

/// Stop the runner actor without touching its container (the session has
/// ended and cleans up through the dispatcher).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Release;

/// Force-remove the runner's container, then stop (its run is void: the
/// session found the image it was started with gone). Resolves once the
/// container is removed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Abandon;

/// Fault injection: make the runner actor panic inside its handler (see
/// [`crate::messages::session::InjectPanic`]; sent through
/// [`crate::messages::session::InjectRunnerPanic`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct InjectPanic;
