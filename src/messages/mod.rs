//! Every message of the actor system, grouped by the actor that handles it.
//!
//! - [`dispatcher`]: `Start`, `Resume`, `Stop`, `List`, `ListRuns`,
//!   `Shutdown`, `Preflight` — what callers send to the
//!   [`DispatcherActor`](crate::actors::DispatcherActor);
//! - [`session`]: `Subscribe`, `Unsubscribe`, `StopSession`, `Wait`,
//!   `GetStatus` — what callers send to one
//!   [`SessionActor`](crate::actors::SessionActor);
//! - [`runner`]: the signals a session sends to its
//!   [`RunnerActor`](crate::actors::RunnerActor) and the reports it gets back.
//!
//! Events themselves ([`Event`](crate::Event)) are messages too: subscriber
//! actors implement `Handler<Event>`.

pub mod dispatcher;
pub mod runner;
pub mod session;
