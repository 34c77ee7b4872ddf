//! The `cldpd-state` thread: appends the bytes sessions hand over to their
//! logs, creates and touches log files.
//!
//! # What a reader may rely on
//!
//! [`SharedLog::settled`] is the last seq whose fate is known: every event
//! up to it is either in the file (written with `write(2)`, so any reader
//! that opens the file sees it) or recorded as missing
//! ([`SharedLog::gap_at`]). The thread stores `settled` only after the
//! write returned, with release ordering, so a reader that sees
//! `settled >= n` and then opens the file finds event `n` or knows it is
//! lost.
//!
//! # When a write fails
//!
//! (A full disk, a log file replaced by something unwritable.) The run goes
//! on: the events of the failed batch are recorded as a gap in memory, the
//! file is cut back to its last complete line, and the next write that
//! succeeds first appends a marker line `{"gap":{"from":F,"to":T,"reason":
//! "..."}}` ([`crate::log::LogEntry::Gap`]), so the file itself says where
//! it is incomplete. A log file deleted under a live run (by hand, or by an
//! old cldpd's retention) is created again, starting with such a marker for
//! the events it lost.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{Cmd, OPEN_LOGS};
use crate::error::{Error, Result};

/// Largest buffer kept for reuse.
const MAX_SPARE: usize = 4 * 1024 * 1024;
/// Buffers kept for reuse (shared by every session and the thread).
const SPARES: usize = 8;

/// Written buffers, emptied, for the next large batch of any session: busy
/// sessions do not allocate (and grow, copy, free) a buffer per batch, idle
/// ones hold none.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A reusable empty buffer, if one is spare.
pub(crate) fn take_spare() -> Option<Vec<u8>> {
    POOL.lock().ok()?.pop()
}

/// Give an emptied buffer back for reuse.
pub(crate) fn put_spare(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_SPARE {
        return;
    }
    buf.clear();
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < SPARES {
            pool.push(buf);
        }
    }
}

/// One session log, shared by its writer (on the session's thread), its
/// lagging subscribers' feeders, and the state thread.
#[derive(Debug)]
pub(crate) struct SharedLog {
    /// Shared with the session's [`SessionInfo`](crate::SessionInfo)s.
    path: Arc<Path>,
    state: Mutex<LogState>,
    /// Last seq written to the file or recorded as missing.
    settled: AtomicU64,
    /// Bytes handed over and not yet settled.
    backlog: AtomicUsize,
    /// The same, summed over every log of the store.
    total: Arc<TotalBacklog>,
    /// Woken when `settled` moves: only the waiters of this log (a
    /// store-wide signal woke every waiting session at every round of
    /// writes, which made stopping 10,000 runs quadratic).
    settled_moved: tokio::sync::Notify,
}

/// Bytes handed over by every log of one store and not yet settled, and
/// the most allowed before runners wait (see
/// [`crate::log::MAX_TOTAL_BACKLOG`]).
#[derive(Debug)]
pub(crate) struct TotalBacklog {
    pub(crate) bytes: AtomicUsize,
    pub(crate) max: AtomicUsize,
    /// Woken when `bytes` falls to half of `max` or below (once per
    /// crossing, not per write: a thousand waiting sessions are woken
    /// once, not at every round of writes).
    room: tokio::sync::Notify,
}

impl Default for TotalBacklog {
    fn default() -> Self {
        TotalBacklog {
            bytes: AtomicUsize::new(0),
            max: AtomicUsize::new(crate::log::MAX_TOTAL_BACKLOG),
            room: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Debug, Default)]
struct LogState {
    /// Handed over, not yet written.
    buf: Vec<u8>,
    /// `(seq, offset in buf)` of the events that get an index entry.
    marks: Vec<(u64, usize)>,
    /// Seq of the first and last event in `buf`.
    first_seq: u64,
    last_seq: u64,
    /// A write notice for this log is in the thread's queue.
    queued: bool,
    // ----- kept by the state thread -----
    /// Bytes in the file.
    len: u64,
    /// `(seq, offset)` of every indexed event in the file, by seq.
    index: Vec<(u64, u64)>,
    /// Rare: what is missing. Boxed, so a healthy log pays one word.
    trouble: Option<Box<Trouble>>,
}

#[derive(Debug, Default)]
struct Trouble {
    /// Seq ranges (inclusive) that are not in the file.
    gaps: Vec<(u64, u64)>,
    /// The latest gap, until a marker line for it is in the file.
    unmarked: Option<(u64, u64, String)>,
}

impl SharedLog {
    /// The shared state of the (existing, empty) log file at `path`.
    /// `total` is the store's sum of every log's backlog.
    pub(crate) fn new(path: PathBuf, total: Arc<TotalBacklog>) -> Arc<SharedLog> {
        Arc::new(SharedLog {
            path: path.into(),
            state: Mutex::new(LogState::default()),
            settled: AtomicU64::new(0),
            backlog: AtomicUsize::new(0),
            total,
            settled_moved: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding it cannot leave the state half-changed in a
        // way that matters more than losing the log: go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path, to keep (one allocation per session, however many keep it).
    pub(crate) fn shared_path(&self) -> &Arc<Path> {
        &self.path
    }

    /// Hand `buf` over (it is left empty, `marks` too); `true` when the log
    /// must be queued for the thread (it was not already).
    pub(crate) fn hand_over(
        &self,
        buf: &mut Vec<u8>,
        marks: &mut Vec<(u64, usize)>,
        first_seq: u64,
        last_seq: u64,
    ) -> bool {
        let n = buf.len();
        let mut st = self.lock();
        if st.buf.is_empty() {
            std::mem::swap(&mut st.buf, buf);
            std::mem::swap(&mut st.marks, marks);
            st.first_seq = first_seq;
        } else {
            let base = st.buf.len();
            st.marks.extend(marks.drain(..).map(|(s, o)| (s, o + base)));
            st.buf.extend_from_slice(buf);
            // An idle session holds no buffer.
            put_spare(std::mem::take(buf));
        }
        st.last_seq = last_seq;
        self.backlog.fetch_add(n, Ordering::Relaxed);
        self.total.bytes.fetch_add(n, Ordering::Relaxed);
        !std::mem::replace(&mut st.queued, true)
    }

    /// Last seq that is in the file or known to be missing from it.
    pub(crate) fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Resolves once this log has at most half of
    /// [`crate::log::MAX_BACKLOG`] waiting, and the store at most half of
    /// its total limit (or this log nothing).
    pub(crate) async fn room(&self) {
        loop {
            let mine = self.settled_moved.notified();
            let mut mine = std::pin::pin!(mine);
            mine.as_mut().enable();
            let all = self.total.room.notified();
            let mut all = std::pin::pin!(all);
            all.as_mut().enable();
            let backlog = self.backlog();
            if backlog <= crate::log::MAX_BACKLOG / 2
                && (backlog == 0 || self.total_backlog() <= self.max_total_backlog() / 2)
            {
                return;
            }
            futures_util::future::select(mine, all).await;
        }
    }

    /// Resolves once every event up to `seq` is settled.
    pub(crate) async fn settled_to(&self, seq: u64) {
        loop {
            // Registered before the check: a move in between wakes it.
            let moved = self.settled_moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            if self.settled() >= seq {
                return;
            }
            moved.await;
        }
    }

    /// Bytes handed over and not yet written.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Bytes handed over and not yet written, summed over every log of
    /// the store.
    pub(crate) fn total_backlog(&self) -> usize {
        self.total.bytes.load(Ordering::Relaxed)
    }

    /// The most [`total_backlog`](Self::total_backlog) may be before
    /// runners wait.
    pub(crate) fn max_total_backlog(&self) -> usize {
        self.total.max.load(Ordering::Relaxed)
    }

    /// Where to start reading to reach `seq`: `(offset, seq at offset)`
    /// (`(0, 1)`: from the start).
    pub(crate) fn locate(&self, seq: u64) -> (u64, u64) {
        let st = self.lock();
        let i = st.index.partition_point(|&(s, _)| s <= seq);
        match i {
            0 => (0, 1),
            i => {
                let (s, off) = st.index[i - 1];
                (off, s)
            }
        }
    }

    /// The missing range holding `seq`, if it is missing.
    pub(crate) fn gap_at(&self, seq: u64) -> Option<(u64, u64)> {
        let st = self.lock();
        let t = st.trouble.as_ref()?;
        t.gaps.iter().copied().find(|&(f, t)| f <= seq && seq <= t)
    }

    /// Every missing range so far.
    pub(crate) fn gaps(&self) -> Vec<(u64, u64)> {
        self.lock()
            .trouble
            .as_ref()
            .map_or_else(Vec::new, |t| t.gaps.clone())
    }

    /// Bytes of the index.
    pub(crate) fn index_memory(&self) -> usize {
        self.lock().index.capacity() * 16
    }
}

/// Test hook: make writes to logs under a directory fail as a full disk
/// does (after writing part of the batch).
#[cfg(test)]
pub(crate) mod fault {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FULL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Writes under `dir` fail with ENOSPC (`full`) or work again.
    pub(crate) fn set_full(dir: &Path, full: bool) {
        let mut v = FULL.lock().unwrap();
        v.retain(|d| d != dir);
        if full {
            v.push(dir.to_path_buf());
        }
    }

    pub(super) fn is_full(path: &Path) -> bool {
        FULL.lock().unwrap().iter().any(|d| path.starts_with(d))
    }

    static LIMITS: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

    /// Stores opened on `dir` from now on allow `bytes` waiting over all
    /// their logs instead of [`crate::log::MAX_TOTAL_BACKLOG`].
    pub(crate) fn set_total_limit(dir: &Path, bytes: usize) {
        let mut v = LIMITS.lock().unwrap();
        v.retain(|(d, _)| d != dir);
        v.push((dir.to_path_buf(), bytes));
    }

    pub(crate) fn total_limit(dir: &Path) -> Option<usize> {
        LIMITS
            .lock()
            .unwrap()
            .iter()
            .find(|(d, _)| d == dir)
            .map(|l| l.1)
    }

    static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Writes to logs under `dir` wait (`held`), as on a disk that does
    /// not keep up, or go on again.
    pub(crate) fn set_held(dir: &Path, held: bool) {
        let mut v = HELD.lock().unwrap();
        v.retain(|d| d != dir);
        if held {
            v.push(dir.to_path_buf());
        }
    }

    /// Whether writes to `path` are held: the thread then puts them
    /// aside and goes on with other commands (creating logs, touching).
    pub(super) fn is_held(path: &Path) -> bool {
        HELD.lock().unwrap().iter().any(|d| path.starts_with(d))
    }
}

/// Open log files, by log (the `Arc` keeps the address from being reused).
#[derive(Default)]
struct Files {
    open: HashMap<usize, (Arc<SharedLog>, File)>,
    order: VecDeque<usize>,
}

fn key(log: &Arc<SharedLog>) -> usize {
    Arc::as_ptr(log) as usize
}

impl Files {
    /// The open file of `log`, opening it (created again if it was
    /// deleted: then `true`).
    fn get(&mut self, log: &Arc<SharedLog>) -> io::Result<(&mut File, bool)> {
        let k = key(log);
        let mut recreated = false;
        if let Some((_, f)) = self.open.get(&k) {
            // Deleted under us: writing on would write into nothing.
            if f.metadata()?.nlink() == 0 {
                self.open.remove(&k);
            }
        }
        if !self.open.contains_key(&k) {
            let file = match OpenOptions::new().append(true).open(log.path()) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    recreated = true;
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(log.path())?
                }
                Err(e) => return Err(e),
            };
            if recreated {
                let len = file.metadata()?.len();
                let mut st = log.lock();
                st.index.clear();
                st.len = len;
            }
            // Otherwise the length is known: the log was created empty and
            // only this thread appends to it (no `fstat` per reopening:
            // 10,000 runs ending at once reopen 10,000 logs).
            while self.open.len() >= OPEN_LOGS {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.open.remove(&old);
            }
            self.open.insert(k, (log.clone(), file));
            self.order.push_back(k);
        }
        let (_, f) = self.open.get_mut(&k).expect("just opened");
        Ok((f, recreated))
    }

    fn close(&mut self, log: &Arc<SharedLog>) {
        self.open.remove(&key(log));
        if self.order.len() > 2 * OPEN_LOGS {
            let open = &self.open;
            self.order.retain(|k| open.contains_key(k));
        }
    }
}

/// The thread's loop: until every sender is gone.
pub(super) fn run(rx: mpsc::Receiver<Cmd>) {
    let mut files = Files::default();
    let mut cmds = Vec::new();
    // Test hook: writes of held logs, put aside (see `fault::set_held`).
    #[cfg(test)]
    let mut held: Vec<Cmd> = Vec::new();
    loop {
        #[cfg(test)]
        {
            let (later, now): (Vec<Cmd>, Vec<Cmd>) = held.drain(..).partition(|c| match c {
                Cmd::Write(l) | Cmd::Close(l) => fault::is_held(l.path()),
                _ => false,
            });
            held = later;
            cmds.extend(now);
            if !held.is_empty() && cmds.is_empty() {
                match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                    Ok(c) => cmds.push(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        if cmds.is_empty() {
            match rx.recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        while cmds.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        for cmd in cmds.drain(..) {
            #[cfg(test)]
            if let Cmd::Write(l) | Cmd::Close(l) = &cmd {
                if fault::is_held(l.path()) {
                    held.push(cmd);
                    continue;
                }
            }
            match cmd {
                Cmd::Write(log) => {
                    write(&mut files, &log);
                }
                Cmd::Close(log) => {
                    write(&mut files, &log);
                    files.close(&log);
                }
                Cmd::Create(c) => {
                    let _ = c.reply.send(create(&c.dir, &c.pod));
                }
                Cmd::Touch(paths) => touch(&paths),
                Cmd::Remove(path) => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// Write what `log` has handed over.
fn write(files: &mut Files, log: &Arc<SharedLog>) {
    let (buf, marks, first, last, unmarked) = {
        let mut st = log.lock();
        st.queued = false;
        if st.buf.is_empty() {
            return;
        }
        let unmarked = st.trouble.as_ref().and_then(|t| t.unmarked.clone());
        (
            std::mem::take(&mut st.buf),
            std::mem::take(&mut st.marks),
            st.first_seq,
            st.last_seq,
            unmarked,
        )
    };
    let n = buf.len();
    let mut start = None;
    let written = (|| -> io::Result<u64> {
        let (file, recreated) = files.get(log)?;
        let mut unmarked = unmarked;
        if recreated {
            let lost_to = first - 1;
            tracing::warn!(log = %log.path.display(), "the session log was deleted while its run is live; it is created again");
            if lost_to >= 1 {
                let gap = (1, lost_to, "the log file was deleted".to_string());
                record_gap(log, gap.0, gap.1, &gap.2);
                unmarked = Some(merge(unmarked, gap));
            }
        }
        let mut len = log.lock().len;
        start = Some(len);
        if let Some((from, to, reason)) = &unmarked {
            let line = crate::log::gap_line(*from, *to, reason);
            #[cfg(test)]
            if fault::is_full(&log.path) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            file.write_all(&line)?;
            len += line.len() as u64;
        }
        #[cfg(test)]
        if fault::is_full(&log.path) {
            // As a full disk does: part of it, then ENOSPC.
            file.write_all(&buf[..buf.len() / 2])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        file.write_all(&buf)?;
        Ok(len)
    })();
    match written {
        Ok(data_at) => {
            let mut st = log.lock();
            st.index
                .extend(marks.iter().map(|&(s, o)| (s, data_at + o as u64)));
            st.len = data_at + n as u64;
            if let Some(t) = &mut st.trouble {
                t.unmarked = None;
            }
        }
        Err(e) => {
            // Cut the file back to its last complete line, so the next
            // write starts a line of its own.
            if let Some(len) = start {
                if let Ok((file, _)) = files.get(log) {
                    if file.set_len(len).is_err() {
                        files.close(log);
                    }
                }
            } else {
                files.close(log);
            }
            let reason = e.to_string();
            let first_time = log.gaps().is_empty();
            record_gap(log, first, last, &reason);
            {
                let mut st = log.lock();
                let t = st.trouble.get_or_insert_with(Box::default);
                t.unmarked = Some(merge(t.unmarked.take(), (first, last, reason.clone())));
            }
            if first_time {
                tracing::error!(log = %log.path.display(), seq = first, error = %e,
                    "cannot write the session log; the run goes on, its log is incomplete from here");
            }
        }
    }
    log.backlog.fetch_sub(n, Ordering::Relaxed);
    let before = log.total.bytes.fetch_sub(n, Ordering::Relaxed);
    log.settled.store(last, Ordering::Release);
    log.settled_moved.notify_waiters();
    let half = log.total.max.load(Ordering::Relaxed) / 2;
    if before > half && before - n <= half {
        log.total.room.notify_waiters();
    }
    put_spare(buf);
}

fn merge(a: Option<(u64, u64, String)>, b: (u64, u64, String)) -> (u64, u64, String) {
    match a {
        Some((f, t, reason)) => (f.min(b.0), t.max(b.1), reason),
        None => b,
    }
}

fn record_gap(log: &SharedLog, from: u64, to: u64, _reason: &str) {
    let mut st = log.lock();
    let t = st.trouble.get_or_insert_with(Box::default);
    match t.gaps.last_mut() {
        Some(last) if last.1 + 1 >= from => {
            last.0 = last.0.min(from);
            last.1 = last.1.max(to);
        }
        _ => t.gaps.push((from, to)),
    }
}

/// Create a new session's log file with a fresh id.
fn create(dir: &Path, pod: &str) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut made = false;
    for _ in 0..16 {
        let id = format!("{pod}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let path = crate::log::path_for(dir, &id);
        // Readable by its owner only: it holds whatever the agent printed.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => return Ok(id),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // Removed while we run (or never made): make it (once).
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made => {
                std::fs::create_dir_all(dir).map_err(|e| Error::Log {
                    path: dir.to_path_buf(),
                    message: format!("cannot create the sessions directory: {e}"),
                })?;
                made = true;
            }
            Err(e) => {
                return Err(Error::Log {
                    path,
                    message: format!("cannot create: {e}"),
                })
            }
        }
    }
    Err(Error::internal("could not find an unused session id"))
}

fn touch(paths: &[Arc<Path>]) {
    let now = SystemTime::now();
    for p in paths {
        if let Err(e) = OpenOptions::new()
            .append(true)
            .open(p)
            .and_then(|f| f.set_modified(now))
        {
            tracing::debug!(log = %p.display(), error = %e, "cannot touch the session log");
        }
    }
}
