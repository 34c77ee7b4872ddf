//! STUB: the `docker` binary backend is being written.
use std::path::PathBuf;

/// The Docker CLI backend.
#[derive(Debug, Clone)]
pub struct DockerCli {
    #[allow(dead_code)]
    binary: PathBuf,
}
