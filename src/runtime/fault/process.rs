//! The fault process: a hand-written `Stream` that walks a [`RunScript`]
//! while its consumer polls it. No task, no channel, no buffered output:
//! each poll generates the next batch, feeds it through the
//! [`LineDecoder`]s and hands it over.
//!
//! The engine side (signals, `remove`, the end of an exec's container)
//! reaches a process only through its [`Shared`] state: an atomic exit code
//! plus an [`AtomicWaker`] that wakes the stream out of a sleep, a rate
//! limit or a hang.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::Stream;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant, Sleep};

use super::script::{RunScript, Step};
use super::Inner;
use crate::error::Error;
use crate::event::OutputStream;
use crate::runtime::{LineDecoder, OutputLine, ProcessEvent};

/// Most lines in one `Output` batch.
pub(super) const BATCH_LINES: usize = 1024;
/// Most input bytes generated for one `Output` batch.
pub(super) const BATCH_BYTES: usize = 256 * 1024;
/// Long lines are generated in chunks of this size.
const CHUNK: usize = 64 * 1024;
static FILL: [u8; CHUNK] = [b'x'; CHUNK];

thread_local! {
    /// Per-thread scratch for generated lines (one batch, reused).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Exit code of a SIGTERM'd process.
pub(super) const TERM_CODE: i32 = 143;
/// Exit code of a SIGKILL'd process.
pub(super) const KILL_CODE: i32 = 137;
/// State code of a crashed process (never reported as an exit code).
const CRASH_CODE: i32 = -1;

const ENDED: u64 = 1 << 32;
/// Set once the process has started (`Started` yielded).
const STARTED: u64 = 1 << 33;

/// What the engine and the stream of one process share.
#[derive(Debug)]
pub(super) struct Shared {
    /// `STARTED` once started, `| ENDED | code as u32` once ended.
    state: AtomicU64,
    /// The stream's waker, for the engine to wake it.
    waker: AtomicWaker,
    /// Wakes `stop()` callers waiting for the end.
    pub(super) ended: Notify,
    /// What was written to its stdin and not read yet (runs with a
    /// [`Stdin`](crate::runtime::Stdin) only).
    input: std::sync::Mutex<Option<Box<Input>>>,
}

/// Unread stdin bytes of a process, and whether stdin was closed after
/// them.
#[derive(Debug, Default)]
struct Input {
    bytes: Vec<u8>,
    closed: bool,
}

impl Shared {
    /// A process that is created, not started yet.
    pub(super) fn new() -> Self {
        Shared {
            state: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            ended: Notify::new(),
            input: std::sync::Mutex::new(None),
        }
    }

    fn input(&self) -> std::sync::MutexGuard<'_, Option<Box<Input>>> {
        self.input.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append to its stdin (and close it after, unless `keep_open`).
    pub(super) fn write_input(&self, bytes: &[u8], keep_open: bool) {
        {
            let mut guard = self.input();
            let input = guard.get_or_insert_with(Box::default);
            input.bytes.extend_from_slice(bytes);
            input.closed = !keep_open;
        }
        self.waker.wake();
    }

    /// The next complete input line (without its `\n`): `Some(Some(line))`;
    /// `Some(None)` when none is complete yet; `None` once stdin is closed
    /// and every line was read (a partial last line counts as a line).
    fn next_input_line(&self, take: bool) -> Option<Option<Vec<u8>>> {
        let mut guard = self.input();
        let input = guard.as_mut()?;
        let end = match memchr::memchr(b'\n', &input.bytes) {
            Some(i) => i + 1,
            None if input.closed && !input.bytes.is_empty() => input.bytes.len(),
            None if input.closed => return None,
            None => return Some(None),
        };
        if !take {
            return Some(Some(Vec::new()));
        }
        let mut line: Vec<u8> = input.bytes.drain(..end).collect();
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Some(Some(line))
    }

    /// A process that starts at once (an exec).
    pub(super) fn started() -> Self {
        let shared = Self::new();
        shared.state.store(STARTED, Ordering::Release);
        shared
    }

    /// True once `Started` was yielded (or for an exec).
    pub(super) fn has_started(&self) -> bool {
        self.state.load(Ordering::Acquire) & STARTED != 0
    }

    fn mark_started(&self) {
        self.state.fetch_or(STARTED, Ordering::AcqRel);
    }

    /// The exit code once the process has ended.
    pub(super) fn code(&self) -> Option<i32> {
        let s = self.state.load(Ordering::Acquire);
        (s & ENDED != 0).then_some(s as u32 as i32)
    }

    /// End the process (callers hold the registry lock, which orders all
    /// ends). Returns false when it had already ended.
    pub(super) fn end(&self, code: i32) -> bool {
        if self.code().is_some() {
            return false;
        }
        self.state
            .fetch_or(ENDED | u64::from(code as u32), Ordering::AcqRel);
        self.waker.wake();
        self.ended.notify_waiters();
        true
    }
}

/// A container's main process or an exec process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Main,
    Exec,
}

#[derive(Debug)]
enum Phase {
    /// `Started` not yet yielded.
    Start,
    Run,
    /// The terminal item is due (after the final batch).
    Terminal(Terminal),
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Terminal {
    Exit(i32),
    /// `Failed(RuntimeFailed)` with the message of the step at this index.
    Crash(usize),
}

/// The stream of one fault process. See the module docs.
pub(super) struct Process {
    inner: Arc<Inner>,
    /// The container's name (the target container for an exec).
    container: Arc<str>,
    script: Arc<RunScript>,
    shared: Arc<Shared>,
    kind: Kind,
    phase: Phase,
    /// Index of the current step.
    step: usize,
    /// Lines or bytes of the current step already produced.
    progress: usize,
    /// When the current timed step (sleep, rate-limited lines) began.
    step_start: Option<Instant>,
    /// Last line number per stream (stdout, stderr).
    numbers: [usize; 2],
    decoders: [LineDecoder; 2],
    /// Allocated only while a timed step waits (or the creation delay).
    timer: Option<Pin<Box<Sleep>>>,
    /// The creation delay still to spend before `Started`.
    creating: Option<Duration>,
}

impl Process {
    pub(super) fn new(
        inner: Arc<Inner>,
        container: Arc<str>,
        script: Arc<RunScript>,
        shared: Arc<Shared>,
        kind: Kind,
        line_cap: usize,
    ) -> Self {
        Process {
            inner,
            container,
            script,
            shared,
            kind,
            phase: Phase::Start,
            step: 0,
            progress: 0,
            step_start: None,
            numbers: [0; 2],
            decoders: [
                LineDecoder::new(OutputStream::Stdout, line_cap),
                LineDecoder::new(OutputStream::Stderr, line_cap),
            ],
            timer: None,
            creating: None,
        }
    }

    /// Spend `delay` (from the first poll) as `created` before `Started`.
    pub(super) fn created_for(mut self, delay: Option<Duration>) -> Self {
        self.creating = delay;
        self
    }

    fn next_step(&mut self) {
        self.step += 1;
        self.progress = 0;
        self.step_start = None;
        self.timer = None;
    }

    /// Emit unterminated lines, as at end of input.
    fn flush(&mut self, batch: &mut Vec<OutputLine>) {
        for d in &mut self.decoders {
            d.finish(batch);
        }
    }

    /// The script reached its end (exit or crash): tell the engine, unless
    /// a signal ended the process first, in which case that code wins.
    fn end(&mut self, terminal: Terminal, batch: &mut Vec<OutputLine>) {
        self.flush(batch);
        let code = match terminal {
            Terminal::Exit(code) => code,
            Terminal::Crash(_) => CRASH_CODE,
        };
        self.phase = match self
            .inner
            .process_ended(self.kind, &self.container, &self.shared, code)
        {
            None => Phase::Terminal(terminal),
            Some(engine) => Phase::Terminal(Terminal::Exit(engine)),
        };
        self.timer = None;
    }

    fn terminal_event(&self, terminal: Terminal) -> ProcessEvent {
        match terminal {
            Terminal::Exit(code) => ProcessEvent::Exited { code },
            Terminal::Crash(i) => {
                let message = match self.script.steps.get(i) {
                    Some(Step::Crash(m)) => m.clone(),
                    _ => String::new(),
                };
                ProcessEvent::Failed(Error::RuntimeFailed { message })
            }
        }
    }

    /// Generate `take` numbered lines into the decoder; returns bytes made.
    fn gen_lines(
        &mut self,
        stream: OutputStream,
        take: usize,
        width: usize,
        batch: &mut Vec<OutputLine>,
    ) -> usize {
        let i = index(stream);
        let prefix: &[u8] = match stream {
            OutputStream::Stdout => b"out ",
            OutputStream::Stderr => b"err ",
        };
        let first = self.numbers[i] + 1;
        self.numbers[i] += take;
        batch.reserve(take);
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            for n in first..first + take {
                let start = buf.len();
                buf.extend_from_slice(prefix);
                push_decimal(&mut buf, n);
                if buf.len() - start < width {
                    buf.resize(start + width, b'.');
                }
                buf.push(b'\n');
            }
            self.decoders[i].push(&buf, batch);
            let made = buf.len();
            if buf.capacity() > 4 * BATCH_BYTES {
                *buf = Vec::new();
            }
            made
        })
    }

    /// Run steps until a batch is ready, the process ends, or it must wait.
    /// `Ready` means `batch` is non-empty or the phase is now `Terminal`;
    /// `Pending` means the waker is registered and `batch` is empty.
    fn advance(&mut self, cx: &mut Context<'_>, batch: &mut Vec<OutputLine>) -> Poll<()> {
        let script = Arc::clone(&self.script);
        let mut bytes = 0usize;
        let mut fired = false;
        loop {
            let timer_fired = std::mem::take(&mut fired);
            if let Some(code) = self.shared.code() {
                // The engine ended it (signal, remove, container gone).
                self.flush(batch);
                self.phase = Phase::Terminal(Terminal::Exit(code));
                self.timer = None;
                return Poll::Ready(());
            }
            if batch.len() >= BATCH_LINES || bytes >= BATCH_BYTES {
                if !batch.is_empty() {
                    return Poll::Ready(());
                }
                // Only a long line grew inside the decoder: let others run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let wait: Option<Instant> = match script.steps.get(self.step) {
                None => {
                    self.end(Terminal::Exit(0), batch);
                    return Poll::Ready(());
                }
                Some(Step::Exit(code)) => {
                    self.end(Terminal::Exit(*code), batch);
                    return Poll::Ready(());
                }
                Some(Step::Crash(_)) => {
                    self.end(Terminal::Crash(self.step), batch);
                    return Poll::Ready(());
                }
                Some(Step::Panic(message)) => {
                    self.phase = Phase::Done;
                    panic!("{message}");
                }
                Some(Step::Hang) => None,
                Some(&Step::Converse { turn }) => match self.shared.next_input_line(false) {
                    // Stdin closed and read: the agent ends, as Claude Code
                    // does at the end of its input.
                    None => {
                        self.next_step();
                        continue;
                    }
                    Some(None) => None,
                    Some(Some(_)) => {
                        let start = *self.step_start.get_or_insert_with(Instant::now);
                        let deadline = start.checked_add(turn);
                        if turn.is_zero()
                            || timer_fired
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            let line = self
                                .shared
                                .next_input_line(true)
                                .flatten()
                                .unwrap_or_default();
                            self.progress += 1;
                            let answer = super::converse::answer(&line, self.progress, turn);
                            self.decoders[0].push(&answer, batch);
                            bytes += answer.len();
                            self.step_start = None;
                            self.timer = None;
                            continue;
                        }
                        deadline
                    }
                },
                Some(Step::Sleep(duration)) => {
                    let start = *self.step_start.get_or_insert_with(Instant::now);
                    // Too far to represent: sleep forever.
                    let deadline = start.checked_add(*duration);
                    if timer_fired || deadline.is_some_and(|d| Instant::now() >= d) {
                        self.next_step();
                        continue;
                    }
                    deadline
                }
                Some(&Step::Lines {
                    stream,
                    count,
                    width,
                    per_sec,
                }) => {
                    let left = count - self.progress;
                    if left == 0 {
                        self.next_step();
                        continue;
                    }
                    let per_line = width.max(24) + 1;
                    let mut take = left
                        .min(BATCH_LINES - batch.len())
                        .min(((BATCH_BYTES - bytes) / per_line).max(1));
                    if let Some(rate) = per_sec {
                        let start = *self.step_start.get_or_insert_with(Instant::now);
                        let elapsed = Instant::now().saturating_duration_since(start);
                        let mut due = ((elapsed.as_secs_f64() * rate) as usize)
                            .saturating_add(1)
                            .min(count);
                        if timer_fired {
                            due = due.max(self.progress + 1);
                        }
                        if due <= self.progress {
                            Duration::try_from_secs_f64(self.progress as f64 / rate)
                                .ok()
                                .and_then(|d| start.checked_add(d))
                        } else {
                            take = take.min(due - self.progress);
                            bytes += self.gen_lines(stream, take, width, batch);
                            self.progress += take;
                            continue;
                        }
                    } else {
                        bytes += self.gen_lines(stream, take, width, batch);
                        self.progress += take;
                        continue;
                    }
                }
                Some(Step::Bytes {
                    stream,
                    bytes: data,
                }) => {
                    let rest = &data[self.progress..];
                    if rest.is_empty() {
                        self.next_step();
                        continue;
                    }
                    let n = cut(rest, BATCH_LINES - batch.len(), BATCH_BYTES - bytes);
                    self.decoders[index(*stream)].push(&rest[..n], batch);
                    self.progress += n;
                    bytes += n;
                    continue;
                }
                Some(&Step::LongLine { stream, len }) => {
                    let d = &mut self.decoders[index(stream)];
                    if self.progress == len {
                        d.push(b"\n", batch);
                        self.next_step();
                        continue;
                    }
                    let n = (len - self.progress).min(CHUNK).min(BATCH_BYTES - bytes);
                    d.push(&FILL[..n], batch);
                    self.progress += n;
                    bytes += n;
                    continue;
                }
            };
            // The process waits: for a deadline, or (hang) for the engine.
            if !batch.is_empty() {
                return Poll::Ready(());
            }
            self.shared.waker.register(cx.waker());
            if self.shared.code().is_some() {
                continue;
            }
            if let Some(deadline) = wait {
                let timer = match &mut self.timer {
                    Some(t) => {
                        if t.deadline() != deadline {
                            t.as_mut().reset(deadline);
                        }
                        t
                    }
                    slot @ None => slot.insert(Box::pin(sleep_until(deadline))),
                };
                if timer.as_mut().poll(cx).is_ready() {
                    fired = true;
                    continue;
                }
            }
            return Poll::Pending;
        }
    }
}

impl Stream for Process {
    type Item = ProcessEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProcessEvent>> {
        let this = self.get_mut();
        match std::mem::replace(&mut this.phase, Phase::Run) {
            Phase::Start => {
                if let Some(delay) = this.creating {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                    if timer.as_mut().poll(cx).is_pending() {
                        this.phase = Phase::Start;
                        return Poll::Pending;
                    }
                    this.timer = None;
                    this.creating = None;
                }
                this.shared.mark_started();
                return Poll::Ready(Some(ProcessEvent::Started {
                    container: this.container.to_string(),
                }));
            }
            Phase::Run => {}
            Phase::Terminal(t) => {
                this.phase = Phase::Done;
                return Poll::Ready(Some(this.terminal_event(t)));
            }
            Phase::Done => {
                this.phase = Phase::Done;
                return Poll::Ready(None);
            }
        }
        // Cooperate with tokio's budget: an unthrottled stream is always
        // ready and would otherwise starve its neighbours on the worker.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let mut batch = Vec::new();
        ready!(this.advance(cx, &mut batch));
        coop.made_progress();
        if batch.is_empty() {
            if let Phase::Terminal(t) = std::mem::replace(&mut this.phase, Phase::Done) {
                return Poll::Ready(Some(this.terminal_event(t)));
            }
        }
        Poll::Ready(Some(ProcessEvent::Output(batch)))
    }
}

fn index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

fn push_decimal(buf: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// How many bytes of `data` to write now: at most `max_bytes`, and no more
/// than `max_lines` complete lines. Never 0 for non-empty `data`.
fn cut(data: &[u8], max_lines: usize, max_bytes: usize) -> usize {
    let window = &data[..data.len().min(max_bytes.max(1))];
    let mut lines = 0;
    for (i, &b) in window.iter().enumerate() {
        if b == b'\n' {
            lines += 1;
            if lines >= max_lines {
                return i + 1;
            }
        }
    }
    window.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_cut() {
        let mut b = Vec::new();
        push_decimal(&mut b, 0);
        push_decimal(&mut b, 1_000_007);
        assert_eq!(b, b"01000007");
        assert_eq!(cut(b"a\nb\nc\n", 2, 100), 4);
        assert_eq!(cut(b"abcdef", 2, 3), 3);
        assert_eq!(cut(b"abc", 2, 0), 1);
    }

    /// A live (hanging) fault container costs: the boxed `Process`, its
    /// `Arc<Shared>`, the `Arc<str>` name and one registry entry. The
    /// integration test `a_live_container_costs_under_1_kib` measures the
    /// whole with a counting allocator.
    #[test]
    fn live_state_is_small() {
        let process = std::mem::size_of::<Process>();
        let shared = std::mem::size_of::<Shared>();
        println!("size_of::<Process>() = {process} B, size_of::<Shared>() = {shared} B");
        assert!(process <= 256, "Process is {process} bytes");
        assert!(shared <= 96, "Shared is {shared} bytes");
    }
}
