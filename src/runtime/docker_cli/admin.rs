//! Short docker commands (`info`, `inspect`, `kill`, `stop`, `rm`, `ps`):
//! run to completion under a timeout, killed if it fires, and the mapping
//! of their output to errors.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::{exit, DOCKER_ENV};
use crate::error::Error;

/// The error for a docker binary that cannot be started.
pub(crate) fn spawn_error(binary: &Path, err: &io::Error) -> Error {
    Error::DockerUnavailable {
        message: format!(
            "cannot run the docker binary `{}`: {err}; install Docker, put `docker` on PATH, or set {DOCKER_ENV} to a docker-compatible binary",
            binary.display()
        ),
    }
}

/// The error for a `docker run` / `exec` / `build` client that cannot be
/// started: [`spawn_error`], except that `E2BIG` (the command line is over
/// the Linux limit) is [`Error::ArgumentsTooLong`], saying what is too long;
/// not "docker is not available", and not retried.
pub(crate) fn spawn_failure(binary: &Path, err: &io::Error, cmd: &Command) -> Error {
    if err.kind() != io::ErrorKind::ArgumentListTooLong {
        return spawn_error(binary, err);
    }
    let cmd = cmd.as_std();
    crate::pod::limits::spawn_error(cmd.get_program(), &mut cmd.get_args(), &mut cmd.get_envs())
}

/// What a finished admin command printed.
pub(crate) struct AdminOutput {
    pub(crate) success: bool,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl AdminOutput {
    /// Stderr, or stdout when stderr is empty, or the exit code: what to
    /// put in an error message.
    pub(crate) fn message(&self, what: &str) -> String {
        let err = self.stderr.trim();
        let out = self.stdout.trim();
        if !err.is_empty() {
            err.to_string()
        } else if !out.is_empty() {
            out.to_string()
        } else {
            match self.code {
                Some(code) => format!("`docker {what}` exited with code {code}"),
                None => format!("`docker {what}` was killed by a signal"),
            }
        }
    }

    pub(crate) fn daemon_down(&self) -> bool {
        exit::daemon_down(&self.stderr) || exit::daemon_down(&self.stdout)
    }
}

pub(crate) enum AdminError {
    /// The binary could not be started.
    Spawn(Error),
    /// It did not finish in time (and was killed).
    Timeout(Duration),
    /// Waiting for it failed.
    Io(io::Error),
}

impl AdminError {
    /// The error to report, for `what` (`docker kill`, ...).
    pub(crate) fn into_error(self, what: &str, wrap: impl FnOnce(String) -> Error) -> Error {
        match self {
            AdminError::Spawn(e) => e,
            AdminError::Timeout(after) => wrap(format!(
                "`docker {what}` did not finish within {}",
                humantime::format_duration(after)
            )),
            AdminError::Io(e) => wrap(format!("`docker {what}` failed: {e}")),
        }
    }
}

/// Run an admin command to completion under `limit`.
pub(crate) async fn run_admin(
    mut cmd: Command,
    binary: &Path,
    limit: Duration,
) -> Result<AdminOutput, AdminError> {
    let child = cmd
        .spawn()
        .map_err(|e| AdminError::Spawn(spawn_error(binary, &e)))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(AdminError::Timeout(limit)),
        Ok(Err(e)) => Err(AdminError::Io(e)),
        Ok(Ok(out)) => Ok(AdminOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}

pub(crate) fn unavailable(message: String) -> Error {
    Error::DockerUnavailable { message }
}

pub(crate) fn runtime_failed(message: String) -> Error {
    Error::RuntimeFailed { message }
}

/// `docker kill` / `docker wait` / `docker rm -f`: gone is fine, daemon
/// down is `DockerUnavailable`, anything else `StopFailed`.
pub(crate) fn stop_result(
    result: Result<AdminOutput, AdminError>,
    what: &str,
    container: &str,
) -> Result<(), Error> {
    let stop_failed = |message| Error::StopFailed {
        container: container.to_string(),
        message,
    };
    let out = result.map_err(|e| e.into_error(what, stop_failed))?;
    if out.success || exit::container_gone(&out.stderr) {
        Ok(())
    } else if out.daemon_down() {
        Err(unavailable(out.message(what)))
    } else {
        Err(stop_failed(out.message(what)))
    }
}
