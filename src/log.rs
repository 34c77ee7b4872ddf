//! The session event log: one NDJSON file per session.
//!
//! Every session appends each of its events, in the serde form of
//! [`Event`] (one JSON object a line), to
//! `<state-dir>/sessions/<session-id>.ndjson`. The log is how a subscriber
//! that fell behind catches up without the session holding its events in
//! memory, and how a finished run is read back later (`cldpd logs`).
//!
//! Writes are buffered and flushed at the end of every batch of output the
//! session handles (so a line reaches the disk within one batch of being
//! read from the container). The file is opened for each flush rather than
//! held open, so thousands of live sessions do not hold thousands of file
//! descriptors.
//!
//! # Liveness
//!
//! A live run writes its log as events happen. While it has no running
//! container (queued, building, waiting to restart) it may have nothing to
//! write for a long time, so its dispatcher touches the file's
//! modification time every [`HEARTBEAT`]. A log neither written nor touched
//! for [`STALE_AFTER`] ([`is_fresh`] is false) whose run has no container in
//! Docker belongs to a run whose process is gone: `cldpd logs --follow`
//! uses this to follow a queued run of another process as long as it
//! lives, and no longer.
//!
//! # Retention
//!
//! [`prune`] deletes logs of finished sessions whose last write is older
//! than the retention age (default 14 days), then the oldest ones until the
//! directory is under the size budget (default 1 GiB). The dispatcher runs it
//! once when it starts; logs of live sessions are never pruned.
//!
//! ```no_run
//! # fn main() -> cldpd::Result<()> {
//! for event in cldpd::log::read_all("/home/me/.cldpd/sessions/web-0a1b2c3d.ndjson".as_ref())? {
//!     println!("{} {}", event.seq, event.kind.name());
//! }
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::event::Event;

/// An index entry is kept for every `INDEX_STRIDE`-th event, so a reader
/// can start at any `seq` after skipping at most this many lines.
const INDEX_STRIDE: u64 = 1024;

/// Largest buffer kept as a thread's spare.
const MAX_SPARE: usize = 4 * 1024 * 1024;

thread_local! {
    /// One released large buffer per thread, for the next large batch of
    /// any session on this thread: busy sessions do not allocate (and
    /// grow, copy, free) a buffer per batch, idle ones hold none.
    static SPARE: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// How often a dispatcher touches the logs of its live runs that have no
/// running container (the default of [`crate::Settings::log_heartbeat`]).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A log not modified for this long belongs to a run that is not waiting
/// for a container in a live process (three missed heartbeats).
pub const STALE_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());

/// Mark the log at `path` as belonging to a live run: set its modification
/// time to now without writing anything.
pub(crate) fn touch(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// Whether the log at `path` was written or touched within
/// [`STALE_AFTER`]: its run is live (or ended only moments ago).
pub fn is_fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().map_or(true, |age| age < STALE_AFTER))
}

/// The log file of `session` under `sessions_dir`.
pub fn path_for(sessions_dir: &Path, session: &str) -> PathBuf {
    sessions_dir.join(format!("{session}.ndjson"))
}

/// Appends events to one session's log.
#[derive(Debug)]
pub(crate) struct LogWriter {
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes already written to the file.
    flushed: u64,
    /// Last seq written to the file.
    flushed_seq: u64,
    /// Last seq appended (buffered or written).
    last_seq: u64,
    /// `index[k - 1]` is the offset of event `k * INDEX_STRIDE + 1` (event 1
    /// is at offset 0: a short log needs no index at all).
    index: Vec<u64>,
    /// The first write error, kept: once broken, the log stays broken.
    failed: Option<String>,
}

impl LogWriter {
    /// Create the log file; fails if it already exists (session ids are
    /// unique across processes because of this).
    pub(crate) fn create(path: PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // Readable by its owner only: it holds whatever the agent printed.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(LogWriter {
            path,
            buf: Vec::new(),
            flushed: 0,
            flushed_seq: 0,
            last_seq: 0,
            index: Vec::new(),
            failed: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Buffer one event (its seq must follow the previous one).
    pub(crate) fn append(&mut self, event: &Event) {
        debug_assert_eq!(event.seq, self.last_seq + 1);
        if event.seq > 1 && (event.seq - 1) % INDEX_STRIDE == 0 {
            self.index.push(self.flushed + self.buf.len() as u64);
        }
        crate::event::fast_json::write(event, &mut self.buf);
        self.buf.push(b'\n');
        self.last_seq = event.seq;
    }

    /// Make room for about `bytes` more before a batch of appends. An
    /// empty buffer takes this thread's spare (the buffer an earlier flush
    /// of any session on this thread gave back) instead of allocating and
    /// growing a fresh one.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        if self.buf.capacity() - self.buf.len() >= bytes {
            return;
        }
        if self.buf.capacity() == 0 {
            if let Some(spare) = SPARE.with(|s| s.borrow_mut().take()) {
                self.buf = spare;
            }
        }
        self.buf.reserve(bytes);
    }

    /// Write what is buffered. On failure the buffer is kept (nothing is
    /// lost from memory) and the error is returned on every later call.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if let Some(msg) = &self.failed {
            return Err(self.error(msg.clone()));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&self.buf));
        match written {
            Ok(()) => {
                self.flushed += self.buf.len() as u64;
                self.flushed_seq = self.last_seq;
                // An idle session holds no buffer: it goes back to the
                // thread's spare (the larger one is kept).
                let mut buf = std::mem::take(&mut self.buf);
                if buf.capacity() <= MAX_SPARE {
                    buf.clear();
                    SPARE.with(|s| {
                        let mut s = s.borrow_mut();
                        if s.as_ref().is_none_or(|k| k.capacity() < buf.capacity()) {
                            *s = Some(buf);
                        }
                    });
                }
                Ok(())
            }
            Err(e) => {
                let msg = format!("cannot write: {e}");
                self.failed = Some(msg.clone());
                Err(self.error(msg))
            }
        }
    }

    fn error(&self, message: String) -> Error {
        Error::Log {
            path: self.path.clone(),
            message,
        }
    }

    /// Last seq that is on disk.
    pub(crate) fn flushed_seq(&self) -> u64 {
        self.flushed_seq
    }

    /// True once a write failed.
    #[cfg(test)]
    pub(crate) fn is_broken(&self) -> bool {
        self.failed.is_some()
    }

    /// Where to start reading to reach `seq`: `(offset, seq at offset)`.
    pub(crate) fn locate(&self, seq: u64) -> (u64, u64) {
        let k = ((seq.max(1) - 1) / INDEX_STRIDE) as usize;
        if k == 0 {
            return (0, 1);
        }
        match self.index.get(k - 1) {
            Some(&off) => (off, k as u64 * INDEX_STRIDE + 1),
            None => (0, 1),
        }
    }

    /// Bytes held in memory (buffer capacity + index).
    pub(crate) fn memory(&self) -> usize {
        self.buf.capacity() + self.index.capacity() * 8
    }
}

/// Reads events back from a log, from any position; tolerates a last line
/// that is still being written (it is returned once complete).
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    line: String,
    /// The session id of the last line, shared by the events read.
    session: Option<std::sync::Arc<str>>,
}

impl LogReader {
    /// Open `path` at the start.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at(path, 0)
    }

    /// Open `path` at byte `offset` (the start of a line).
    pub fn open_at(path: &Path, offset: u64) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::Log {
            path: path.to_path_buf(),
            message: format!("cannot open: {e}"),
        })?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        if offset > 0 {
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|e| Error::Log {
                    path: path.to_path_buf(),
                    message: format!("cannot seek: {e}"),
                })?;
        }
        Ok(LogReader {
            path: path.to_path_buf(),
            reader,
            offset,
            line: String::new(),
            session: None,
        })
    }

    /// The next complete event, or `None` at the current end of the file.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .map_err(|e| Error::Log {
                path: self.path.clone(),
                message: format!("cannot read: {e}"),
            })?;
        if n == 0 {
            return Ok(None);
        }
        if !self.line.ends_with('\n') {
            // A line still being written: rewind so it is read whole later.
            self.reader
                .seek(SeekFrom::Start(self.offset))
                .map_err(|e| Error::Log {
                    path: self.path.clone(),
                    message: format!("cannot seek: {e}"),
                })?;
            return Ok(None);
        }
        let event = match crate::event::fast_json::read(&self.line, &mut self.session) {
            Some(event) => event,
            None => serde_json::from_str(&self.line).map_err(|e| Error::Log {
                path: self.path.clone(),
                message: format!("corrupt line at byte {}: {e}", self.offset),
            })?,
        };
        self.offset += n as u64;
        Ok(Some(event))
    }
}

/// Every event of a log, in order. Stops at the first unreadable line.
pub fn read_all(path: &Path) -> Result<Vec<Event>> {
    let mut reader = LogReader::open(path)?;
    let mut events = Vec::new();
    while let Some(ev) = reader.next_event()? {
        events.push(ev);
    }
    Ok(events)
}

/// Retention rule for [`prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Logs last written longer ago than this are deleted.
    pub max_age: Duration,
    /// Then the oldest logs are deleted until the total is at most this.
    pub max_total_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(14 * 24 * 3600),
            max_total_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Delete old logs under `sessions_dir` by `rule`, never one for which
/// `is_live(session_id)` is true. Returns how many files were deleted.
pub fn prune(sessions_dir: &Path, rule: Retention, is_live: &dyn Fn(&str) -> bool) -> usize {
    let Ok(dir) = std::fs::read_dir(sessions_dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, u64, PathBuf)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".ndjson")?
                .to_string();
            if is_live(&id) {
                return None;
            }
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    let mut deleted = 0;
    for (modified, len, path) in files {
        let too_old = now.duration_since(modified).unwrap_or_default() > rule.max_age;
        if (too_old || total > rule.max_total_bytes) && std::fs::remove_file(&path).is_ok() {
            total -= len;
            deleted += 1;
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, OutputStream};

    fn out(seq: u64, text: &str) -> Event {
        Event::new(
            "p-1",
            seq,
            EventKind::Output {
                stream: OutputStream::Stdout,
                line: text.into(),
                partial: false,
            },
        )
    }

    #[test]
    fn written_events_read_back_equal_from_any_indexed_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p-1");
        let mut w = LogWriter::create(path.clone()).unwrap();
        let events: Vec<Event> = (1..=3000).map(|i| out(i, &format!("line {i}"))).collect();
        for (i, ev) in events.iter().enumerate() {
            w.append(ev);
            if i % 700 == 0 {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        assert_eq!(w.flushed_seq(), 3000);
        assert_eq!(read_all(&path).unwrap(), events);
        let (off, first) = w.locate(2500);
        assert_eq!(first, 2049);
        let mut r = LogReader::open_at(&path, off).unwrap();
        assert_eq!(r.next_event().unwrap().unwrap().seq, 2049);
        assert!(
            LogWriter::create(path).is_err(),
            "create must not reuse a file"
        );
    }

    #[test]
    fn a_partial_last_line_is_left_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ndjson");
        let line = serde_json::to_string(&out(1, "a")).unwrap();
        std::fs::write(&path, &line[..10]).unwrap();
        let mut r = LogReader::open(&path).unwrap();
        assert!(r.next_event().unwrap().is_none());
        std::fs::write(&path, format!("{line}\n")).unwrap();
        assert_eq!(r.next_event().unwrap().unwrap().seq, 1);
    }

    #[test]
    fn a_failed_write_is_reported_and_keeps_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.ndjson");
        let mut w = LogWriter::create(path.clone()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap(); // now not writable as a file
        w.append(&out(1, "a"));
        assert!(matches!(w.flush(), Err(Error::Log { .. })));
        assert!(w.is_broken());
        assert_eq!(w.flushed_seq(), 0);
    }

    #[test]
    fn prune_keeps_live_and_recent_logs_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a-1", "b-1", "c-1"] {
            std::fs::write(dir.path().join(format!("{name}.ndjson")), vec![b'x'; 100]).unwrap();
        }
        let rule = Retention {
            max_age: Duration::from_secs(3600),
            max_total_bytes: 150,
        };
        let deleted = prune(dir.path(), rule, &|id| id == "a-1");
        assert_eq!(deleted, 1);
        assert!(dir.path().join("a-1.ndjson").exists());
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 2);
        let rule = Retention {
            max_age: Duration::ZERO,
            max_total_bytes: u64::MAX,
        };
        assert_eq!(prune(dir.path(), rule, &|id| id == "a-1"), 1);
    }
}
