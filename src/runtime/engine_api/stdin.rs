//! A run's or exec's standard input over the Engine API: the input half of
//! the hijacked attach (or exec start) connection.
//!
//! The container is created with `OpenStdin` and `StdinOnce` (an exec with
//! `AttachStdin`), and attached with `stdin=true` before it starts. Once
//! it has started, [`feed`] writes the bytes and then shuts the write half
//! down: the engine sees the half-close, and (`StdinOnce`; an exec always)
//! closes the process's stdin, so the process reads the bytes and EOF
//! (the [`Stdin`] contract). The output half goes on being read beside the
//! write, so a process that writes a lot before it reads cannot deadlock
//! the run.
//!
//! Kept as its own task over an [`Input`] so that a long-lived agent
//! (issue 13: follow-ups written to the stdin of one live agent) can hold
//! the same half open and write more later instead of closing it at once.

use std::pin::Pin;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::runtime::Stdin;

/// The write half of an attach or exec connection.
pub(crate) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Write `bytes` to `input`, then close it, on a task of its own (on the
/// caller's runtime: the Engine API's driver). The handle lets the run
/// abort a write its process will never read once the process has exited.
pub(crate) fn feed(mut input: Input, bytes: Stdin) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = input.write_all(bytes.bytes()).await {
            // The process exited (or closed its stdin) before reading it
            // all: not an error (see `Stdin`). Only the length is traced.
            tracing::debug!(error = %e, len = bytes.len(), "stdin not fully read by the process");
            return;
        }
        if let Err(e) = input.shutdown().await {
            tracing::debug!(error = %e, "closing stdin failed");
        }
    })
}

/// The writer of one run, aborted when dropped (the process has ended, so
/// whatever it has not read is dropped).
pub(crate) struct Feeding(Option<JoinHandle<()>>);

impl Feeding {
    /// Start feeding `bytes` to `input`, or nothing when there are none.
    pub(crate) fn start(input: Input, bytes: Option<Stdin>) -> Feeding {
        Feeding(bytes.map(|b| feed(input, b)))
    }
}

impl Drop for Feeding {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
