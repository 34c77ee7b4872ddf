//! Stop markers: how a stop from another process reaches the owner's
//! restart decision.
//!
//! A run is owned by one dispatcher (one process): its session actor holds
//! the container and applies the restart policy. Another process (a second
//! `cldpd`, `cldpd stop`) stops the run by signalling the container
//! directly ([`Runtime::stop`](crate::runtime::Runtime::stop)). The owner
//! then only sees its container exit (143 after SIGTERM, 137 after
//! SIGKILL), with no stop of its own in progress — which the restart policy
//! would take for a failure and restart.
//!
//! So a stop of a run owned elsewhere first **records** the stop, then
//! signals: it creates the file `<state>/stops/<session>` in the state
//! directory of the run's owner (its [`labels::STATE_DIR`] label, which all
//! processes sharing that state directory — the only ones that can own each
//! other's runs — can write). The owner, when a container of the run ends
//! while it is not stopping the run itself and its policy would restart,
//! looks for that file first: present, the run ends with the container's
//! exit code and no restart, and the file is removed.
//!
//! Why a file and not something on Docker: Docker is the state store for
//! what runs, but it has no mutable mark a stopper could set on a running
//! container that survives its `--rm` removal (labels are fixed at
//! creation; `docker inspect` says nothing of who sent a signal, and the
//! container is gone by the time the owner could ask), and its event
//! history (`docker events`) keeps only the last 256 events, which a busy
//! engine overwrites within seconds. The file is written *before* the
//! signal, so it exists by the time the owner sees the exit: no race.
//!
//! Limits, stated: a stopper that cannot write the owner's state directory
//! (another host, other permissions) still stops the container but cannot
//! prevent a restart (it logs a warning). A marker written for a run that
//! had already ended is never read; markers older than [`STALE`] are swept
//! whenever a new one is written. The marker is keyed by session, so it
//! covers every attempt of the run.
//!
//! [`labels::STATE_DIR`]: crate::runtime::labels::STATE_DIR

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Markers older than this are left-overs (their run ended without reading
/// them) and are removed when another marker is written.
pub(crate) const STALE: Duration = Duration::from_secs(24 * 60 * 60);

/// The marker of `session` under `state_dir`.
pub(crate) fn path(state_dir: &Path, session: &str) -> PathBuf {
    state_dir.join("stops").join(session)
}

/// Record that `session` is being stopped by this process (before the
/// signal is sent). Blocking: call it off the actor threads.
pub(crate) fn record(state_dir: &Path, session: &str) -> io::Result<()> {
    let file = path(state_dir, session);
    let dir = file.parent().expect("the marker has a directory");
    std::fs::create_dir_all(dir)?;
    sweep(dir);
    let note = format!(
        "stopped by pid {} on {} at {}\n",
        std::process::id(),
        crate::owner::hostname(),
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    std::fs::write(&file, note)
}

/// True when a stop of `session` was recorded at `marker`; the marker is
/// removed (it has done its job). Runs the file calls on the blocking pool.
pub(crate) async fn take(marker: PathBuf) -> bool {
    tokio::task::spawn_blocking(move || {
        let found = marker.exists();
        if found {
            let _ = std::fs::remove_file(&marker);
        }
        found
    })
    .await
    .unwrap_or(false)
}

/// Remove markers older than [`STALE`] (best effort).
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorded_stop_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let marker = path(dir.path(), "p-0a1b2c3d");
        assert!(!take(marker.clone()).await);
        record(dir.path(), "p-0a1b2c3d").unwrap();
        assert!(marker.is_file());
        assert!(take(marker.clone()).await);
        assert!(!marker.exists());
        assert!(!take(marker).await);
    }

    #[test]
    fn stale_markers_are_swept_when_another_is_written() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "old").unwrap();
        let old = path(dir.path(), "old");
        let file = std::fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(SystemTime::now() - STALE - Duration::from_secs(60))
            .unwrap();
        drop(file);
        record(dir.path(), "fresh").unwrap();
        assert!(!old.exists());
        assert!(path(dir.path(), "fresh").exists());
    }
}
