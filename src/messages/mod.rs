//! Every message of the actor system, grouped by the actor that handles it.
//!
//! - [`dispatcher`]: `Start`, `Resume`, `Stop`, `List`, `ListRuns`,
//!   `Shutdown`, `Preflight` — what callers send to the
//!   [`DispatcherActor`](crate::actors::DispatcherActor);
//! - [`session`]: `Subscribe`, `Unsubscribe`, `StopSession`, `Wait`,
//!   `GetStatus` — what callers send to one
//!   [`SessionActor`](crate::actors::SessionActor);
//!
//! What the actors send one another (admission, builds, a runner's
//! reports, signals to a runner) is crate-private: a caller holding a
//! session's address cannot skip admission or feed it made-up output.
//!
//! ```compile_fail
//! // Not part of the API: only the dispatcher admits a run.
//! use cldpd::messages::session::Admit;
//! ```
//!
//! ```compile_fail
//! // Not part of the API: only a session's runner reports its output.
//! use cldpd::messages::session::RunnerReport;
//! ```
//!
//! ```compile_fail
//! // Not part of the API: only a session tells its dispatcher it ended.
//! use cldpd::messages::dispatcher::SessionEnded;
//! ```
//!
//! ```compile_fail
//! // Not part of the API: only the dispatcher tells a session it is queued.
//! use cldpd::messages::session::Enqueued;
//! ```
//!
//! ```compile_fail
//! // Not part of the API: only a session asks its dispatcher for a build.
//! use cldpd::messages::dispatcher::RequestBuild;
//! ```
//!
//! ```compile_fail
//! // Not part of the API: only a session records an image it found.
//! use cldpd::messages::dispatcher::ImageFound;
//! ```
//!
//! ```compile_fail
//! // Not part of the API: only a session forgets an image it lost.
//! use cldpd::messages::dispatcher::ForgetImage;
//! ```
//!
//! Events themselves ([`Event`](crate::Event)) are messages too: subscriber
//! actors implement `Handler<Event>`.

pub mod dispatcher;
pub(crate) mod runner;
pub mod session;
