//! The actors: [`DispatcherActor`] → one [`SessionActor`] per run → one
//! [`RunnerActor`] per container. See ARCHITECTURE.md for the picture.

pub(crate) mod build;
pub mod dispatcher;
pub mod fanout;
pub mod runner;
pub mod session;
pub mod supervisor;

pub use dispatcher::DispatcherActor;
pub use runner::RunnerActor;
pub use session::SessionActor;
