//! The end of runs whose cldpd process is gone: orphans reaped by `stop
//! --orphans`; runs a dispatcher adopted
//! ([`Settings::adopt_orphans`](crate::Settings::adopt_orphans)), stopped
//! as it ends or ended on their own; runs of a dead dispatcher found ended
//! as one starts; and the end of such a run's log.
//!
//! Nobody else will clean up after such a run: the process that started it
//! died, so it never reads the exit, never removes the container (the
//! Engine API backend creates containers without auto-removal, so that
//! their exit code can be read) and never writes the log's final event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::supervisor::guarded;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::messages::dispatcher::AdoptedRun;
use crate::owner::Owner;
use crate::runtime::{labels, ContainerInfo, Runtime};

/// The orphans of our state directory found as a dispatcher starts.
#[derive(Default)]
pub(super) struct Adoption {
    /// Still running: adopted, by session.
    pub(super) running: HashMap<String, AdoptedRun>,
    /// Ended since their cldpd died: cleaned up after, not adopted.
    pub(super) ended: Vec<(AdoptedRun, Option<i32>)>,
}

/// Take over the orphans of a dead dispatcher that used our state dir:
/// record `owner` as the adopter of those still running and return
/// them by session, and return those that have ended since (with their
/// exit codes), for the caller to clean up after.
/// Blocking (adoption records, `/proc`).
pub(super) fn adopt(owner: &Owner, state_dir: &Path, containers: &[ContainerInfo]) -> Adoption {
    let ours = state_dir.display().to_string();
    let mut found = Adoption::default();
    for c in containers
        .iter()
        .filter(|c| c.is_running() || c.has_ended())
    {
        let Some(session) = c.label(labels::SESSION) else {
            continue;
        };
        if c.label(labels::STATE_DIR) != Some(ours.as_str()) || found.running.contains_key(session)
        {
            continue;
        }
        let Some(previous) = Owner::effective(&c.labels, state_dir) else {
            continue;
        };
        if previous.is_alive() {
            continue;
        }
        let run = AdoptedRun {
            session: session.to_string(),
            container: c.name.clone(),
            previous_owner: previous.id.clone(),
        };
        if c.has_ended() {
            tracing::info!(session, container = %c.name, previous_owner = %previous.id, "found an orphaned run that has ended; cleaning up after it");
            found.ended.push((run, c.exit_code));
            continue;
        }
        match owner.record_adoption(state_dir, session) {
            Ok(()) => {
                tracing::info!(session, container = %c.name, previous_owner = %previous.id, "adopted an orphaned run");
                found.running.insert(session.to_string(), run);
            }
            Err(e) => {
                tracing::warn!(session, error = %e, "could not record the adoption of an orphaned run")
            }
        }
    }
    found
}

/// What an adopted run that no longer runs has become, from the runtime's
/// list: `Some` when it is over, `None` while it still holds its slot.
/// `listed` is its container in the list, if there.
pub(super) fn adopted_run_end(listed: Option<&ContainerInfo>) -> Option<Ended> {
    match listed {
        None => Some(Ended::Gone),
        Some(c) if c.has_ended() => Some(Ended::Exited(c.exit_code)),
        // Running, or paused, restarting or being removed by someone
        // else: not over yet (a removal shows as gone next time).
        Some(_) => None,
    }
}

/// How an adopted run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Its container has ended and is still there (with its code when the
    /// backend could read it).
    Exited(Option<i32>),
    /// Its container is gone (removed by Docker, as `docker run --rm`
    /// does, or by someone else): its code is lost.
    Gone,
}

/// Clean up after a run of a dead dispatcher that ended on its own
/// (adopted, or found ended as the adopter started): remove its container,
/// end its log with its exit (or with `docker_lost` when the code could not
/// be learnt), and forget the adoption.
pub(super) async fn end_adopted_run(
    runtime: Arc<dyn Runtime>,
    state_dir: PathBuf,
    run: AdoptedRun,
    ended: Ended,
) {
    let code = match ended {
        Ended::Exited(code) => {
            let removed = guarded("the runtime's remove", runtime.remove(&run.container)).await;
            if let Err(e) = removed.and_then(|r| r) {
                tracing::warn!(container = %run.container, error = %e, "could not remove an adopted run that ended");
            }
            code
        }
        Ended::Gone => None,
    };
    let end = match code {
        Some(code) => EventKind::ContainerExited { code },
        None => {
            let lost = Error::DockerLost {
                container: run.container.clone(),
                message: "it ended while the cldpd process that ran it was gone, and its exit \
                          code could not be read"
                    .into(),
            };
            EventKind::Error {
                code: lost.code().to_string(),
                message: lost.to_string(),
            }
        }
    };
    end_foreign_log(&state_dir, &run.session, end).await;
    forget_adoption(crate::owner::adoption_path(&state_dir, &run.session)).await;
    tracing::info!(session = %run.session, ?code, "a run whose cldpd process is gone ended on its own; cleaned up after it");
}

/// Stop and remove the container of a run whose cldpd process is gone (an
/// orphan reaped by `stop --orphans`, or a run a batch adopted), then end
/// its log: its writer died, and `logs` of it must end like any other
/// run's. A run that had already ended on its own with a known code
/// (`exited`) ends with that exit; any other with a `stopped` error saying
/// `why`. Nothing of it is left in Docker once this resolves.
pub(super) async fn stop_foreign_run(
    runtime: Arc<dyn Runtime>,
    state_dir: PathBuf,
    session: String,
    container: String,
    exited: Option<i32>,
    grace: Duration,
    why: &'static str,
) -> Result<()> {
    guarded("the runtime's stop", runtime.stop(&container, grace)).await??;
    guarded("the runtime's remove", runtime.remove(&container)).await??;
    let end = match exited {
        Some(code) => EventKind::ContainerExited { code },
        None => EventKind::Error {
            code: Error::Stopped.code().to_string(),
            message: why.into(),
        },
    };
    end_foreign_log(&state_dir, &session, end).await;
    Ok(())
}

/// The end of the log of an adopted run its adopter stopped.
const ADOPTED_STOPPED: &str =
    "stopped by the dispatcher that adopted it: the cldpd process that ran it was gone";

/// Stop an adopted run as its adopter ends (`StopAdopted`, `Shutdown`, a
/// dispatcher's death): [`stop_foreign_run`], then forget the adoption.
/// False, and logged, when it could not be stopped.
pub(super) async fn stop_adopted_run(
    runtime: Arc<dyn Runtime>,
    state_dir: PathBuf,
    run: AdoptedRun,
    grace: Duration,
) -> bool {
    let record = crate::owner::adoption_path(&state_dir, &run.session);
    let container = run.container.clone();
    let stopped = stop_foreign_run(
        runtime,
        state_dir,
        run.session,
        run.container,
        None,
        grace,
        ADOPTED_STOPPED,
    );
    match stopped.await {
        Ok(()) => {
            forget_adoption(record).await;
            true
        }
        Err(e) => {
            tracing::error!(container, error = %e, "could not stop an adopted run");
            false
        }
    }
}

/// End the log of a run whose writer is gone with `end` (unless it already
/// ends with a final event), so that `logs` of it ends like any other
/// run's. A missing log is not an error (retention may have taken it).
pub(super) async fn end_foreign_log(state_dir: &Path, session: &str, end: EventKind) {
    let log = crate::log::path_for(&state_dir.join("sessions"), session);
    let appended = crate::state::blocking(move || crate::log::append_final(&log, end)).await;
    if let Ok(Err(e)) = appended {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%session, error = %e, "could not end the log of a run whose cldpd process is gone");
        }
    }
}

/// Remove the record of an adoption whose run has ended or was stopped,
/// off the actor's thread (state-directory I/O is blocking).
pub(super) async fn forget_adoption(record: PathBuf) {
    let _ = crate::state::blocking(move || std::fs::remove_file(record)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(state: &str, exit_code: Option<i32>) -> ContainerInfo {
        ContainerInfo {
            name: "c".into(),
            state: state.into(),
            labels: Default::default(),
            exit_code,
        }
    }

    #[test]
    fn only_an_ended_or_vanished_container_ends_an_adopted_run() {
        assert_eq!(adopted_run_end(None), Some(Ended::Gone));
        assert_eq!(
            adopted_run_end(Some(&listed("exited", Some(3)))),
            Some(Ended::Exited(Some(3)))
        );
        assert_eq!(
            adopted_run_end(Some(&listed("dead", None))),
            Some(Ended::Exited(None))
        );
        for live in ["running", "paused", "restarting", "removing"] {
            assert_eq!(adopted_run_end(Some(&listed(live, None))), None, "{live}");
        }
    }
}
