//! The state directory's one owner: every read and write of cldpd's state
//! directory (`~/.cldpd`: `sessions/*.ndjson`, `images/*.json` and
//! `*.lock`, `owners/*.json`, `key`) happens here, off the actor threads.
//!
//! - **Session logs** go through one dedicated thread per `StateStore`
//!   (`cldpd-state`). A session encodes its events into its own buffer (the
//!   hand-written encoder of [`crate::event`], on the session's thread) and
//!   at the end of each batch *hands the bytes over* ([`crate::log`]): a
//!   short lock, never a system call. A log with bytes waiting is queued
//!   for the thread at most once, so the command channel holds at most one
//!   write notice per live log (it is bounded by the number of logs, and
//!   nothing ever waits to send); bytes handed over while a log waits in
//!   the queue join the same write. The thread keeps the files open (up to
//!   [`OPEN_LOGS`] at once), appends, builds the seq → offset index the
//!   lagging subscribers read from, and records what it could not write
//!   (see "Incomplete logs" in [`crate::log`]).
//! - **Session log files are created** on that thread too (`O_EXCL`, which
//!   keeps session ids unique across processes), in batches when many
//!   sessions start at once, and touched there by the heartbeat.
//! - **Other state I/O** (build records, the build lock, the state key,
//!   adoption records, `/proc` reads, retention) runs as blocking tasks
//!   (`blocking`): each is a one-off whose caller awaits its answer, and
//!   some wait long (a build lock is held for a whole build), so they must
//!   not queue behind (or in front of) the log writes.
//!
//! Nothing here blocks an actor thread: a session that produces output
//! faster than the disk takes it is slowed by back-pressure on its runner
//! (see `LogWriter::backlog` in `crate::log`), never by a write. The bytes
//! waiting for the thread are bounded per log (`MAX_BACKLOG`, 8 MiB)
//! and over all the logs of a store (`MAX_TOTAL_BACKLOG`, 64 MiB),
//! whether the disk is slow or failing (a failed write is settled as a gap
//! at once: it frees its bytes like a written one).

pub(crate) mod key;
pub(crate) mod lock;
pub mod space;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

pub(crate) use writer::SharedLog;

/// Most session log files the state thread holds open at once (more live
/// sessions than this are written by opening their files again).
pub const OPEN_LOGS: usize = 256;

/// What the state thread is asked to do.
///
/// Kept to 24 bytes (the rare variants boxed): the channel allocates its
/// queue in blocks of 31 commands, and a block of larger commands is over
/// 1 KiB, a request that makes glibc's `malloc` first consolidate every
/// small freed chunk of the process (`malloc_consolidate`, 9 % of the
/// actor threads' time while 10,000 runs were stopped at once).
pub(crate) enum Cmd {
    /// A log has bytes handed over.
    Write(Arc<SharedLog>),
    /// A log's writer is gone: write what is left and close the file.
    Close(Arc<SharedLog>),
    /// Create the log file of a new session.
    Create(Box<CreateLog>),
    /// Mark these logs as belonging to live runs (modification time now).
    Touch(Box<[Arc<Path>]>),
    /// Remove a file if it exists (a stop marker nobody read).
    Remove(Box<Path>),
}

const _: () = assert!(std::mem::size_of::<Cmd>() <= 24);

/// Create the log file of a new session of `pod` under `dir`.
pub(crate) struct CreateLog {
    pub(crate) dir: PathBuf,
    pub(crate) pod: String,
    pub(crate) reply: oneshot::Sender<Result<String>>,
}

/// Handle to the owner of one state directory's I/O. Cheap to clone; the
/// thread ends when the last handle (and the last log writer) is gone.
#[derive(Clone)]
pub(crate) struct StateStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tx: mpsc::Sender<Cmd>,
    /// Bytes handed over by every log of this store and not yet written
    /// (see [`crate::log::MAX_TOTAL_BACKLOG`]).
    backlog: Arc<writer::TotalBacklog>,
    /// The state directory's hashing key, read (or made) once.
    key: OnceLock<std::result::Result<[u8; 32], Arc<std::io::Error>>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// `dir` as other processes must see it: canonical when it exists (no
/// `..`, no symlinks, so that two spellings of one directory compare
/// equal), else absolute against the current directory with `.` and `..`
/// resolved by name (it is created later, by the state thread), else as
/// given. Called once per dispatcher, before its actor starts.
pub(crate) fn absolute_dir(dir: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(dir) {
        return canonical;
    }
    let Ok(absolute) = std::path::absolute(dir) else {
        return dir.to_path_buf();
    };
    let mut clean = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

impl StateStore {
    /// The state directory (absolute, see [`absolute_dir`]).
    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The owner of `state_dir`'s I/O, with its thread started.
    pub(crate) fn open(state_dir: &Path) -> StateStore {
        let (tx, rx) = mpsc::channel();
        let backlog = Arc::new(writer::TotalBacklog::default());
        #[cfg(test)]
        if let Some(max) = writer::fault::total_limit(state_dir) {
            backlog.max.store(max, std::sync::atomic::Ordering::Relaxed);
        }
        std::thread::Builder::new()
            .name("cldpd-state".into())
            .spawn(move || writer::run(rx))
            .expect("cannot start the cldpd-state thread");
        StateStore {
            inner: Arc::new(Inner {
                dir: state_dir.to_path_buf(),
                tx,
                backlog,
                key: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn send(&self, cmd: Cmd) {
        // The thread only ends once every sender is gone.
        let _ = self.inner.tx.send(cmd);
    }

    /// The shared state of a new log at `path`, counted in this store's
    /// backlog.
    pub(crate) fn shared_log(&self, path: PathBuf) -> Arc<SharedLog> {
        SharedLog::new(path, self.inner.backlog.clone())
    }

    /// Create the log of a new session of `pod` (in `<state>/sessions`,
    /// made if missing), under a fresh id `<pod>-<hex8>` no process has
    /// used; returns the id.
    pub(crate) async fn create_log(&self, pod: &str) -> Result<String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Create(Box::new(CreateLog {
            dir: self.inner.dir.join("sessions"),
            pod: pod.to_string(),
            reply,
        })));
        rx.await
            .unwrap_or_else(|_| Err(Error::internal("the cldpd-state thread is gone")))
    }

    /// Remove `path` if it exists, without waiting (a run's left-over stop
    /// marker: queued with its session's last log write, where a blocking
    /// task per run ended was 10,000 thread hand-overs to stop 10,000 runs).
    pub(crate) fn remove_file(&self, path: PathBuf) {
        self.send(Cmd::Remove(path.into_boxed_path()));
    }

    /// Touch the logs of live runs (see [`crate::log::HEARTBEAT`]).
    pub(crate) fn touch(&self, paths: Vec<Arc<Path>>) {
        if !paths.is_empty() {
            self.send(Cmd::Touch(paths.into_boxed_slice()));
        }
    }

    /// The state directory's hashing key if it has been read already
    /// (never blocks).
    pub(crate) fn key_if_read(&self) -> Option<[u8; 32]> {
        self.inner.key.get()?.as_ref().ok().copied()
    }

    /// The state directory's hashing key (made on first use; see
    /// [`key`]). Blocking: call it from a blocking task.
    pub(crate) fn key_blocking(&self) -> Result<[u8; 32]> {
        self.inner
            .key
            .get_or_init(|| key::load_or_create(&self.inner.dir).map_err(Arc::new))
            .clone()
            .map_err(|source| Error::Io {
                context: format!(
                    "cannot read or create the state key {}",
                    key::path(&self.inner.dir).display()
                ),
                source,
            })
    }
}

/// Holds a value whose drop makes a system call (an open file: `close`,
/// and for a build lock the release of its `flock`), and drops it on a
/// blocking-pool thread instead of the thread it is dropped on, when there
/// is a runtime (else right there).
#[derive(Debug)]
pub(crate) struct DropOffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropOffThread<T> {
    pub(crate) fn new(value: T) -> Self {
        DropOffThread(Some(value))
    }

    /// The value, to be moved to a blocking task.
    pub(crate) fn into_inner(mut self) -> T {
        self.0.take().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for DropOffThread<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn_blocking(move || drop(value)));
            }
        }
    }
}

/// Run blocking file-system work off the actor threads and await it.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a state-directory task failed: {e}")))
}

#[cfg(test)]
mod tests;

/// A spare emptied log buffer, for a session's next large batch.
pub(crate) fn writer_spare() -> Option<Vec<u8>> {
    writer::take_spare()
}
