//! cldpd: dispatch Claude Code agents into Docker containers.
#![warn(missing_docs)]

pub mod error;
pub mod event;
pub mod pod;
pub mod runtime;

pub use error::{Error, Result, TimeoutKind};
pub use event::{Event, EventData, EventKind, OutputStream};
pub use pod::{Mount, Pod, PodConfig, RestartPolicy};
