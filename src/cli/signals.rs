//! Ctrl-C, SIGTERM and SIGHUP for the commands that run something (`start`,
//! `resume`). Once [`Signals::install`] has run, these signals no longer end
//! the process: they are delivered to [`Signals::recv`], and the command
//! stops its run (first signal: SIGTERM, grace, SIGKILL; second: SIGKILL at
//! once) and exits with the container's code. A hang-up (the terminal
//! closed) counts like SIGTERM so that it does not leave the container
//! running.

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::error::CliError;

/// A signal the CLI handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// Ctrl-C.
    Int,
    /// `kill <pid>`.
    Term,
    /// The terminal went away.
    Hup,
}

impl Sig {
    /// `SIGINT`, ...
    pub fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
        }
    }

    /// The signal number (for the conventional exit code 128 + n).
    pub fn number(self) -> i32 {
        match self {
            Sig::Int => 2,
            Sig::Term => 15,
            Sig::Hup => 1,
        }
    }
}

/// The handled signals of this process.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    /// Take over SIGINT, SIGTERM and SIGHUP. Needs a running tokio runtime.
    pub fn install() -> Result<Signals, CliError> {
        let make = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| CliError::new(format!("cannot install the {name} handler: {e}")))
        };
        Ok(Signals {
            int: make(SignalKind::interrupt(), "SIGINT")?,
            term: make(SignalKind::terminate(), "SIGTERM")?,
            hup: make(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal received (also one received before this call).
    pub async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Int,
            _ = self.term.recv() => Sig::Term,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}
