//! The session event log: one NDJSON file per session.
//!
//! Every session appends each of its events, in the serde form of
//! [`Event`] (one JSON object a line), to
//! `<state-dir>/sessions/<session-id>.ndjson`. The log is how a subscriber
//! that fell behind catches up without the session holding its events in
//! memory, and how a finished run is read back later (`cldpd logs`).
//!
//! Writes never block the session: at the end of every batch of output it
//! handles, the session hands its encoded lines over to the state
//! directory's owner ([`crate::state`]), whose thread appends them to the
//! file (kept open) and indexes them. A subscriber that falls behind reads
//! back only what that thread has *settled* (written, or known to be
//! missing), so it always finds what it needs or learns it is gone.
//!
//! # Liveness
//!
//! A live run writes its log as events happen, and its dispatcher touches
//! the file's modification time every [`HEARTBEAT`] (a quiet run, or one
//! with no running container, may have nothing to write for a long time).
//! A log neither written nor touched for [`STALE_AFTER`] ([`is_fresh`] is
//! false) whose run has no container in Docker belongs to a run whose
//! process is gone: `cldpd logs --follow` uses this to follow a run of
//! another process as long as it lives, and no longer.
//!
//! # Incomplete logs
//!
//! A log the state thread could not write (a full disk) does not end the
//! run: the events that could not be written are recorded as missing, and
//! once writing works again a marker line says which ([`LogEntry::Gap`]).
//! [`LogReader`] reports the markers, and any jump in `seq`, as gaps;
//! `cldpd logs` says so and exits non-zero; a lagging subscriber that needs
//! a missing event gets an `error` event (code `log`) and is dropped.
//!
//! # Retention
//!
//! [`prune`] deletes logs of finished sessions whose last write is older
//! than the retention age (default 14 days), then the oldest ones until the
//! directory is under the size budget (default 1 GiB). It never deletes a
//! log younger than [`PRUNE_MIN_AGE`] (a live run's log is never older
//! than [`STALE_AFTER`]) nor the log of a run that is live in any process
//! (the dispatcher asks Docker's labels). The dispatcher runs it once when
//! it starts, in the background.
//!
//! ```no_run
//! # fn main() -> cldpd::Result<()> {
//! for event in cldpd::log::read_all("/home/me/.cldpd/sessions/web-0a1b2c3d.ndjson".as_ref())? {
//!     println!("{} {}", event.seq, event.kind.name());
//! }
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::state::{Cmd, SharedLog, StateStore};

/// An index entry is kept for every `INDEX_STRIDE`-th event, so a reader
/// can start at any `seq` after skipping at most this many lines.
const INDEX_STRIDE: u64 = 1024;

/// How often a dispatcher touches the logs of its live runs (the default
/// of [`crate::Settings::log_heartbeat`]).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A log not modified for this long belongs to a run that is not live in
/// any process (three missed heartbeats).
pub const STALE_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());

/// [`prune`] never deletes a log modified more recently than this.
pub const PRUNE_MIN_AGE: Duration = Duration::from_secs(3600);

/// A session whose log has more than this many bytes waiting to be written
/// makes its runner wait (the container's output waits in its pipe) until
/// half of it is written.
pub(crate) const MAX_BACKLOG: usize = 8 * 1024 * 1024;

/// The same over every session of one state store (a thousand sessions
/// may each be a little under [`MAX_BACKLOG`] behind a slow disk): above
/// it, every session that hands bytes over makes its runner wait until the
/// total is down to half.
pub(crate) const MAX_TOTAL_BACKLOG: usize = 64 * 1024 * 1024;

/// Whether a session whose log is `log` may read more of its container's
/// output now (see [`MAX_BACKLOG`], [`MAX_TOTAL_BACKLOG`]).
pub(crate) fn has_room(log: &SharedLog) -> bool {
    log.backlog() <= MAX_BACKLOG
        && (log.backlog() == 0 || log.total_backlog() <= log.max_total_backlog())
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

/// End the log of a run whose writer is gone (its cldpd process died, and
/// `stop --orphans` reaped the container): append `kind` as the final
/// event, numbered after the last one, unless the log already ends with a
/// terminal event. A torn last line (the process died mid-write) is ended
/// with a newline first. Returns whether it appended.
pub fn append_final(path: &Path, kind: EventKind) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(256 * 1024);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    let last = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Event>(l).ok());
    let Some(last) = last else {
        return Ok(false); // nothing to number it after
    };
    if last.is_terminal() {
        return Ok(false);
    }
    let ev = Event::new(last.session.clone(), last.seq + 1, kind);
    let mut line = Vec::new();
    if !tail.is_empty() && !tail.ends_with(b"\n") {
        line.push(b'\n');
    }
    line.extend(serde_json::to_vec(&ev).map_err(std::io::Error::other)?);
    line.push(b'\n');
    file.write_all(&line)?;
    Ok(true)
}

/// The marker line of a gap (see [`LogEntry::Gap`]).
pub(crate) fn gap_line(from: u64, to: u64, reason: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "gap": {"from": from, "to": to, "reason": reason}
    }))
    .expect("json serialises");
    line.push(b'\n');
    line
}

/// Appends events to one session's log: encodes them (on the session's
/// thread) and hands them over to the state thread, which writes them.
#[derive(Debug)]
pub(crate) struct LogWriter {
    shared: Arc<SharedLog>,
    store: StateStore,
    buf: Vec<u8>,
    /// `(seq, offset in buf)` of the events in `buf` that get an index
    /// entry (event 1 is at offset 0: a short log needs no index at all).
    marks: Vec<(u64, usize)>,
    /// Seq of the first event in `buf`.
    first_seq: u64,
    /// Last seq appended (buffered or handed over).
    last_seq: u64,
    /// Last seq handed over.
    handed_seq: u64,
}

impl LogWriter {
    /// The writer of the log just created at `path` (see
    /// [`StateStore::create_log`]).
    pub(crate) fn new(store: StateStore, path: PathBuf) -> Self {
        LogWriter {
            shared: store.shared_log(path),
            store,
            buf: Vec::new(),
            marks: Vec::new(),
            first_seq: 0,
            last_seq: 0,
            handed_seq: 0,
        }
    }

    /// What the state thread knows of this log.
    pub(crate) fn shared(&self) -> &Arc<SharedLog> {
        &self.shared
    }

    /// The state directory's owner writing this log.
    pub(crate) fn store(&self) -> &StateStore {
        &self.store
    }

    /// Buffer one event (its seq must follow the previous one).
    pub(crate) fn append(&mut self, event: &Event) {
        debug_assert_eq!(event.seq, self.last_seq + 1);
        if self.buf.is_empty() {
            self.first_seq = event.seq;
        }
        if event.seq > 1 && (event.seq - 1) % INDEX_STRIDE == 0 {
            self.marks.push((event.seq, self.buf.len()));
        }
        crate::event::fast_json::write(event, &mut self.buf);
        self.buf.push(b'\n');
        self.last_seq = event.seq;
    }

    /// Make room for about `bytes` more before a batch of appends. An
    /// empty buffer takes a spare one (a written buffer the state thread
    /// gave back) instead of allocating and growing a fresh one.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        if self.buf.capacity() - self.buf.len() >= bytes {
            return;
        }
        if self.buf.capacity() == 0 {
            if let Some(spare) = crate::state::writer_spare() {
                self.buf = spare;
            }
        }
        self.buf.reserve(bytes);
    }

    /// Hand what is buffered over to the state thread (never blocks, never
    /// fails: a write that fails there is recorded as a gap).
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let queue = self.shared.hand_over(
            &mut self.buf,
            &mut self.marks,
            self.first_seq,
            self.last_seq,
        );
        self.handed_seq = self.last_seq;
        if queue {
            self.store.send(Cmd::Write(self.shared.clone()));
        }
    }

    /// Last seq handed over.
    pub(crate) fn handed_seq(&self) -> u64 {
        self.handed_seq
    }

    /// Bytes handed over and not yet written.
    pub(crate) fn backlog(&self) -> usize {
        self.shared.backlog()
    }

    /// Bytes held in memory (buffer capacity + index).
    pub(crate) fn memory(&self) -> usize {
        self.buf.capacity() + self.marks.capacity() * 16 + self.shared.index_memory()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.flush();
        self.store.send(Cmd::Close(self.shared.clone()));
    }
}

/// Wait until every event up to `seq` of `log` is settled (in the file or
/// known to be missing).
/// (`store` is the log's owner: holding it keeps its thread alive.)
pub(crate) async fn settled(store: &StateStore, log: &SharedLog, seq: u64) {
    let _owner = store;
    log.settled_to(seq).await
}

/// Wait until `log` has at most half of [`MAX_BACKLOG`] waiting, and the
/// store at most half of [`MAX_TOTAL_BACKLOG`] (or this log nothing).
pub(crate) async fn room(store: &StateStore, log: &SharedLog) {
    let _owner = store;
    log.room().await
}

/// One line of a log.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEntry {
    /// An event.
    Event(Event),
    /// Events `from..=to` are not in the log: they could not be written
    /// (`reason`, e.g. a full disk), or the file was deleted while the run
    /// was live. Written as a marker line `{"gap":{...}}` once writing
    /// works again, or found as a jump in `seq`.
    Gap {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
        /// Why.
        reason: String,
    },
}

/// Reads events back from a log, from any position; tolerates a last line
/// that is still being written (it is returned once complete).
///
/// [`next_event`](Self::next_event) returns the events and notes what is
/// missing ([`gaps`](Self::gaps)); [`next_entry`](Self::next_entry) returns
/// the gaps too, where they are.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    line: String,
    /// The session id of the last line, shared by the events read.
    session: Option<std::sync::Arc<str>>,
    /// Seq of the last event read (0: none yet, reading from the start).
    last_seq: u64,
    /// Whether `last_seq` is known (false when opened mid-file).
    seq_known: bool,
    /// An event read after a jump in seq, returned after its gap.
    held: Option<Event>,
    gaps: Vec<(u64, u64)>,
}

impl LogReader {
    /// Open `path` at the start.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at(path, 0)
    }

    /// Open `path` at byte `offset` (the start of a line).
    pub fn open_at(path: &Path, offset: u64) -> Result<Self> {
        Self::open_buffered(path, offset, 64 * 1024)
    }

    /// [`open_at`](Self::open_at) with a read buffer of `capacity` bytes
    /// (feeders use a small one: see `FEED_READ_BUFFER` in the fan-out).
    pub(crate) fn open_buffered(path: &Path, offset: u64, capacity: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::Log {
            path: path.to_path_buf(),
            message: format!("cannot open: {e}"),
        })?;
        let mut reader = BufReader::with_capacity(capacity, file);
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
            last_seq: 0,
            seq_known: offset == 0,
            held: None,
            gaps: Vec::new(),
        })
    }

    /// The next complete event, or `None` at the current end of the file.
    /// Gaps are skipped (and noted in [`gaps`](Self::gaps)).
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            match self.next_entry()? {
                Some(LogEntry::Event(ev)) => return Ok(Some(ev)),
                Some(LogEntry::Gap { .. }) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The ranges of events found missing so far (marker lines and jumps
    /// in `seq`); empty for a complete log.
    pub fn gaps(&self) -> &[(u64, u64)] {
        &self.gaps
    }

    fn note_gap(&mut self, from: u64, to: u64) {
        match self.gaps.last_mut() {
            Some(last) if last.1 + 1 >= from => last.1 = last.1.max(to),
            _ => self.gaps.push((from, to)),
        }
    }

    /// The next complete line: an event or a gap, or `None` at the current
    /// end of the file.
    pub fn next_entry(&mut self) -> Result<Option<LogEntry>> {
        if let Some(ev) = self.held.take() {
            self.last_seq = ev.seq;
            return Ok(Some(LogEntry::Event(ev)));
        }
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
        let at = self.offset;
        self.offset += n as u64;
        if self.line.starts_with("{\"gap\"") {
            let gap = serde_json::from_str::<GapLine>(&self.line).map_err(|e| Error::Log {
                path: self.path.clone(),
                message: format!("corrupt gap marker at byte {at}: {e}"),
            })?;
            let GapBody { from, to, reason } = gap.gap;
            self.note_gap(from, to);
            // The events that follow continue after the gap.
            self.last_seq = self.last_seq.max(to);
            return Ok(Some(LogEntry::Gap { from, to, reason }));
        }
        let event = match crate::event::fast_json::read(&self.line, &mut self.session) {
            Some(event) => event,
            None => serde_json::from_str(&self.line).map_err(|e| Error::Log {
                path: self.path.clone(),
                message: format!("corrupt line at byte {at}: {e}"),
            })?,
        };
        if self.seq_known && event.seq > self.last_seq + 1 {
            let (from, to) = (self.last_seq + 1, event.seq - 1);
            self.note_gap(from, to);
            self.held = Some(event);
            return Ok(Some(LogEntry::Gap {
                from,
                to,
                reason: "missing from the log".into(),
            }));
        }
        self.seq_known = true;
        self.last_seq = event.seq;
        Ok(Some(LogEntry::Event(event)))
    }
}

#[derive(serde::Deserialize)]
struct GapLine {
    gap: GapBody,
}

#[derive(serde::Deserialize)]
struct GapBody {
    from: u64,
    to: u64,
    #[serde(default)]
    reason: String,
}

/// Every event of a log, in order (gaps skipped). Stops at the first
/// unreadable line.
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

/// Whether [`prune`] could delete anything under `sessions_dir` (some log
/// older than [`PRUNE_MIN_AGE`] breaks `rule`), before asking which runs
/// are live.
pub(crate) fn prune_due(sessions_dir: &Path, rule: Retention) -> bool {
    let Ok(dir) = std::fs::read_dir(sessions_dir) else {
        return false;
    };
    let now = SystemTime::now();
    let mut total = 0u64;
    let mut old_enough = false;
    for e in dir.filter_map(|e| e.ok()) {
        let Ok(meta) = e.metadata() else { continue };
        total += meta.len();
        let age = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        if age > rule.max_age.max(PRUNE_MIN_AGE) {
            return true;
        }
        old_enough |= age >= PRUNE_MIN_AGE;
    }
    old_enough && total > rule.max_total_bytes
}

/// Delete old logs under `sessions_dir` by `rule`, never one for which
/// `is_live(session_id)` is true nor one modified within [`PRUNE_MIN_AGE`]
/// (so never the log of a run live in any process: live runs write or
/// touch theirs every [`HEARTBEAT`]). Returns how many files were deleted.
/// Blocking: run it off the actor threads.
pub fn prune(sessions_dir: &Path, rule: Retention, is_live: &dyn Fn(&str) -> bool) -> usize {
    let Ok(dir) = std::fs::read_dir(sessions_dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut total: u64 = 0;
    let mut files: Vec<(SystemTime, u64, PathBuf)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".ndjson")?
                .to_string();
            let meta = e.metadata().ok()?;
            total += meta.len();
            let modified = meta.modified().ok()?;
            let young = now.duration_since(modified).unwrap_or_default() < PRUNE_MIN_AGE;
            if young || is_live(&id) {
                return None;
            }
            Some((modified, meta.len(), path))
        })
        .collect();
    files.sort();
    let mut deleted = 0;
    for (modified, len, path) in files {
        let too_old = now.duration_since(modified).unwrap_or_default() > rule.max_age;
        if !(too_old || total > rule.max_total_bytes) {
            continue;
        }
        // Looked at again just before: written since the listing means live.
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < PRUNE_MIN_AGE);
        if !fresh && std::fs::remove_file(&path).is_ok() {
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
    fn a_small_read_buffer_reads_lines_longer_than_itself() {
        // A feeder reads with an 8 KiB buffer; a tool result's line may be
        // 30 KB and more.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p-1.ndjson");
        let long = "y".repeat(100_000);
        let mut text = Vec::new();
        for (seq, line) in [(1, "a"), (2, long.as_str()), (3, "b")] {
            text.extend(serde_json::to_vec(&out(seq, line)).unwrap());
            text.push(b'\n');
        }
        std::fs::write(&path, text).unwrap();
        let first = serde_json::to_vec(&out(1, "a")).unwrap().len() as u64 + 1;
        let mut r = LogReader::open_buffered(&path, first, 8 * 1024).unwrap();
        let two = r.next_event().unwrap().unwrap();
        assert_eq!((two.seq, two.line().map(str::len)), (2, Some(100_000)));
        assert_eq!(r.next_event().unwrap().unwrap().line(), Some("b"));
        assert!(r.next_event().unwrap().is_none());
    }

    #[test]
    fn gap_markers_and_seq_jumps_are_reported_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p-1.ndjson");
        let mut text = Vec::new();
        for seq in [1, 2] {
            text.extend(serde_json::to_vec(&out(seq, "a")).unwrap());
            text.push(b'\n');
        }
        text.extend(gap_line(3, 5, "No space left on device (os error 28)"));
        for seq in [6, 9] {
            text.extend(serde_json::to_vec(&out(seq, "b")).unwrap());
            text.push(b'\n');
        }
        std::fs::write(&path, text).unwrap();
        let mut r = LogReader::open(&path).unwrap();
        let mut seen = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            seen.push(match e {
                LogEntry::Event(ev) => format!("{}", ev.seq),
                LogEntry::Gap { from, to, .. } => format!("gap {from}-{to}"),
            });
        }
        assert_eq!(seen, ["1", "2", "gap 3-5", "6", "gap 7-8", "9"]);
        assert_eq!(r.gaps(), [(3, 5), (7, 8)]);
        let events: Vec<u64> = read_all(&path).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(events, [1, 2, 6, 9]);
    }

    fn aged(path: &Path, age: Duration) {
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn prune_keeps_live_and_young_logs_and_deletes_old_ones_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(24 * 3600);
        for (name, age) in [
            ("a-1", 3 * day),
            ("b-1", 2 * day),
            ("c-1", day),
            ("d-1", Duration::ZERO),
        ] {
            let path = dir.path().join(format!("{name}.ndjson"));
            std::fs::write(&path, vec![b'x'; 100]).unwrap();
            aged(&path, age);
        }
        let rule = Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_total_bytes: 150,
        };
        assert!(prune_due(dir.path(), rule));
        // a-1 is live (oldest, yet kept); d-1 is young (kept whatever the
        // budget); b-1 then c-1 go, oldest first, until under budget or
        // only protected ones are left.
        let deleted = prune(dir.path(), rule, &|id| id == "a-1");
        assert_eq!(deleted, 2);
        for (name, kept) in [("a-1", true), ("b-1", false), ("c-1", false), ("d-1", true)] {
            assert_eq!(
                dir.path().join(format!("{name}.ndjson")).exists(),
                kept,
                "{name}"
            );
        }
        assert!(!prune_due(
            dir.path(),
            Retention {
                max_age: Duration::from_secs(30 * 24 * 3600),
                max_total_bytes: 1000
            }
        ));
        let rule = Retention {
            max_age: Duration::ZERO,
            max_total_bytes: u64::MAX,
        };
        // Past the age rule, but d-1 is younger than PRUNE_MIN_AGE.
        assert_eq!(prune(dir.path(), rule, &|_| false), 1);
        assert!(dir.path().join("d-1.ndjson").exists());
    }
}
