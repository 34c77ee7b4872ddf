//! The streams behind `run`, `exec` and `build`: read both pipes of a
//! docker client concurrently, decode them with [`LineDecoder`], and end
//! with the meaning of the client's exit.
//!
//! Both streams are hand-written state machines (spawn → stream → wait for
//! the exit → done). Each poll reads at most once per pipe into one reusable
//! 64 KiB buffer and yields everything decoded from those reads as one
//! batch, so a container printing millions of lines costs one event per
//! read, not per line. The child is spawned on the first poll (inside the
//! caller's tokio runtime) and both pipes are decoded to their end whatever
//! their size; memory is bounded by the decoders' line cap.
//!
//! **The client's own words are not the agent's output.** The docker
//! client writes its errors on the same stderr as the container's, so
//! lines that look like them are held back while they are the last thing
//! read (at most [`HOLD_MAX`]); anything read after them releases them in
//! order. When the run ends as docker's own failure, the held lines are in
//! the error's message and are not delivered as output; otherwise they are
//! delivered before the terminal event. An exec holds them only before
//! its first other line (they decide "no such container").
//!
//! **A lost `docker run` client is not the container's exit**: see
//! [`recover`](super::recover) for how the stream then finds the real exit
//! and the rest of the output.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use super::exit::{self, Kind, Outcome};
use super::recover::{self, Position, Skip, MAX_REPLAYS};
use super::{spawn_failure, DockerCli};
use crate::error::Error;
use crate::event::OutputStream;
use crate::runtime::{BuildEvent, LineDecoder, OutputLine, ProcessEvent};

/// Size of the read buffer shared by both pipes.
const READ_BUF: usize = 64 * 1024;
/// Lines of stderr (run/exec) or output (build) kept for error messages.
const TAIL: usize = 20;
/// At most this many docker-client error lines are held back before they
/// are released as output.
const HOLD_MAX: usize = 16;

/// One pipe of a client: its reader, the decoder (which outlives a client
/// when a replay takes over), how far it got, and what a replay skips.
struct Pipe<R> {
    reader: Option<R>,
    dec: LineDecoder,
    pos: Position,
    skip: Skip,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(reader: Option<R>, stream: OutputStream, line_cap: usize) -> Self {
        Pipe {
            reader,
            dec: LineDecoder::new(stream, line_cap),
            pos: Position::default(),
            skip: Skip::default(),
        }
    }

    /// Read from a new client that replays the output from its start.
    fn replay_from(&mut self, reader: Option<R>) {
        self.reader = reader;
        self.skip = Skip::to(self.pos);
    }

    /// One read. `Pending` when the pipe is closed (it takes no part any
    /// more) or has nothing yet. End of file closes the pipe but keeps the
    /// decoder's unfinished line (see [`Pipes::finish`]).
    fn poll_read(
        &mut self,
        buf: &mut [u8],
        cx: &mut Context<'_>,
        lines: &mut Vec<OutputLine>,
    ) -> Poll<()> {
        let Some(reader) = self.reader.as_mut() else {
            return Poll::Pending;
        };
        let mut rb = ReadBuf::new(buf);
        match Pin::new(reader).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                if rb.filled().is_empty() {
                    self.reader = None;
                } else {
                    let data = self.skip.apply(rb.filled());
                    self.pos.advance(data);
                    self.dec.push(data, lines);
                }
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Poll::Ready(()),
            Poll::Ready(Err(e)) => {
                tracing::warn!(error = %e, "reading docker client output failed; treating as end of output");
                self.reader = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Both pipes of a client, the shared buffer and the tail of what was read.
struct Pipes {
    stdout: Pipe<ChildStdout>,
    stderr: Pipe<ChildStderr>,
    buf: Box<[u8]>,
    /// Last lines of stderr only (`false`) or of both pipes (`true`).
    tail_both: bool,
    tail: VecDeque<String>,
}

impl Pipes {
    fn new(child: &mut Child, line_cap: usize, tail_both: bool) -> Self {
        Pipes {
            stdout: Pipe::new(child.stdout.take(), OutputStream::Stdout, line_cap),
            stderr: Pipe::new(child.stderr.take(), OutputStream::Stderr, line_cap),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            tail_both,
            tail: VecDeque::with_capacity(TAIL),
        }
    }

    /// Go on reading from `child`, which replays the output from its start.
    fn replay_from(&mut self, child: &mut Child) {
        self.stdout.replay_from(child.stdout.take());
        self.stderr.replay_from(child.stderr.take());
    }

    /// Both pipes reached their end.
    fn is_done(&self) -> bool {
        self.stdout.reader.is_none() && self.stderr.reader.is_none()
    }

    /// Read at most once from each open pipe, appending decoded lines to
    /// `lines`. Ready when at least one read completed (with data, end of
    /// file or an error); Pending when every open pipe is pending (both
    /// wakers are then registered).
    fn poll_read(&mut self, cx: &mut Context<'_>, lines: &mut Vec<OutputLine>) -> Poll<()> {
        let start = lines.len();
        let a = self.stdout.poll_read(&mut self.buf, cx, lines);
        if self.tail_both {
            self.keep_tail_of(lines, start);
        }
        let mid = lines.len();
        let b = self.stderr.poll_read(&mut self.buf, cx, lines);
        self.keep_tail_of(lines, mid);
        if a.is_ready() || b.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The output is over: the unfinished last line of each pipe.
    fn finish(&mut self, lines: &mut Vec<OutputLine>) {
        let start = lines.len();
        self.stdout.dec.finish(lines);
        let mid = lines.len();
        self.stderr.dec.finish(lines);
        if self.tail_both {
            self.keep_tail_of(lines, start);
        } else {
            self.keep_tail_of(lines, mid);
        }
    }

    /// Remember the last [`TAIL`] of `lines[from..]` (clipped copies; at
    /// most `TAIL` clones per batch, whatever its size).
    fn keep_tail_of(&mut self, lines: &[OutputLine], from: usize) {
        let new = &lines[from..];
        let skip = new.len().saturating_sub(TAIL);
        for line in &new[skip..] {
            if self.tail.len() == TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(exit::clip(&line.text));
        }
    }

    fn take_tail(&mut self) -> Vec<String> {
        std::mem::take(&mut self.tail).into()
    }
}

/// Docker-client error lines held back (see the module docs).
enum Hold {
    /// Exec: only before any other line (`None` once output was released).
    Leading(Option<Vec<OutputLine>>),
    /// Run: while they are the last lines read. `broad` while a replay
    /// client (`docker logs`) reads: its errors look like any client's.
    Trailing { held: Vec<OutputLine>, broad: bool },
}

impl Hold {
    /// What of `lines` to deliver now; the rest is held.
    fn release(&mut self, mut lines: Vec<OutputLine>) -> Vec<OutputLine> {
        match self {
            Hold::Leading(slot) => {
                let Some(held) = slot.as_mut() else {
                    return lines;
                };
                if lines.iter().all(|l| is_client_line(l, true))
                    && held.len() + lines.len() <= HOLD_MAX
                {
                    held.extend(lines);
                    return Vec::new();
                }
                let mut out = slot.take().unwrap_or_default();
                if out.is_empty() {
                    return lines;
                }
                out.extend(lines);
                out
            }
            Hold::Trailing { held, broad } => {
                let broad = *broad;
                let keep = lines
                    .iter()
                    .rev()
                    .take_while(|l| is_client_line(l, broad))
                    .count();
                if keep == 0 && held.is_empty() {
                    return lines;
                }
                if keep == lines.len() {
                    // Only client lines: they go after what is held.
                    held.extend(lines);
                    return if held.len() > HOLD_MAX {
                        std::mem::take(held)
                    } else {
                        Vec::new()
                    };
                }
                let suffix = lines.split_off(lines.len() - keep);
                let mut out = std::mem::take(held);
                out.extend(lines);
                *held = suffix;
                if held.len() > HOLD_MAX {
                    out.append(held);
                }
                out
            }
        }
    }

    /// Everything still held.
    fn take(&mut self) -> Vec<OutputLine> {
        match self {
            Hold::Leading(slot) => slot.take().unwrap_or_default(),
            Hold::Trailing { held, .. } => std::mem::take(held),
        }
    }

    /// The held lines' text, for an exec's exit classification (`None`
    /// once other output was released).
    fn leading_text(&self) -> Option<Vec<String>> {
        match self {
            Hold::Leading(Some(held)) => Some(held.iter().map(|l| exit::clip(&l.text)).collect()),
            _ => None,
        }
    }
}

/// A stderr line the docker client may have written about itself. Not
/// `broad`: only the shapes `docker run` uses (`docker: …`, a logrus error
/// line, a daemon that cannot be reached or went away), so that an agent's
/// own `Error: …` line is not held back while the agent runs.
fn is_client_line(line: &OutputLine, broad: bool) -> bool {
    if line.stream != OutputStream::Stderr {
        return false;
    }
    let text = &line.text;
    if broad {
        exit::looks_like_docker_error(text) || exit::docker_error_filler(text)
    } else {
        exit::looks_like_docker_run_error(text) || exit::docker_error_filler(text)
    }
}

enum State {
    /// Exec: checking that the target runs before starting the client;
    /// resolves to the failure to report, or `None` to go on.
    Precheck(BoxFuture<'static, Option<ProcessEvent>>, Box<Command>),
    /// Not spawned yet (spawning needs the tokio runtime of the poller).
    Spawn(Box<Command>),
    /// Reading the pipes of this client.
    Streaming(Box<Child>),
    /// The pipes are closed: waiting for the client's exit status.
    Exiting(BoxFuture<'static, io::Result<ExitStatus>>),
    /// Working out the terminal event.
    Finishing(BoxFuture<'static, ProcessEvent>),
    Done,
}

/// What a run/exec stream needs to turn an exit into an event.
#[derive(Clone)]
pub(crate) struct ProcessContext {
    pub kind: Kind,
    pub binary: PathBuf,
    /// `docker run`: the image. `docker exec`: looked up on 126/127.
    pub image: Option<String>,
    pub container: String,
    pub command0: String,
    pub line_cap: usize,
    /// Written to the client's stdin once it runs, then closed (see
    /// [`crate::runtime::Stdin`]).
    pub stdin: Option<crate::runtime::Stdin>,
}

/// After the run's client was lost (see [`recover`]).
struct Recovery {
    /// `docker wait`, started when the loss was seen.
    wait: Option<Child>,
    /// Why, for messages.
    reason: String,
    /// Replay clients used so far.
    replays: u32,
}

/// The stream of a `docker run` or `docker exec` client.
pub(crate) struct ProcessStream {
    state: State,
    ctx: ProcessContext,
    /// Created with the first client; a replay client goes on with them.
    pipes: Option<Box<Pipes>>,
    hold: Hold,
    queue: VecDeque<ProcessEvent>,
    /// When the run's client was spawned (for the `die` event look-up).
    spawned_at: SystemTime,
    recovery: Option<Box<Recovery>>,
    /// A run with an open stdin: the writer (held so that the pipe stays
    /// open while the stream lives) and the reader, handed to the task that
    /// writes the client's stdin when it is spawned.
    input: Option<Box<OpenInput>>,
}

struct OpenInput {
    _writer: tokio::sync::mpsc::UnboundedSender<crate::runtime::Stdin>,
    more: Option<tokio::sync::mpsc::UnboundedReceiver<crate::runtime::Stdin>>,
}

impl ProcessStream {
    pub(crate) fn new(command: Command, ctx: ProcessContext) -> Self {
        let (state, hold) = match ctx.kind {
            Kind::Run => (
                State::Spawn(Box::new(command)),
                Hold::Trailing {
                    held: Vec::new(),
                    broad: false,
                },
            ),
            Kind::Exec => (
                State::Precheck(
                    Box::pin(precheck_exec(ctx.binary.clone(), ctx.container.clone())),
                    Box::new(command),
                ),
                Hold::Leading(Some(Vec::new())),
            ),
        };
        ProcessStream {
            state,
            ctx,
            pipes: None,
            hold,
            queue: VecDeque::new(),
            spawned_at: SystemTime::now(),
            recovery: None,
            input: None,
        }
    }

    /// Keep the client's stdin open after the run's bytes, and write what
    /// arrives on `more` to it (see [`crate::runtime::Stdin::open`]).
    pub(crate) fn with_input(
        mut self,
        writer: tokio::sync::mpsc::UnboundedSender<crate::runtime::Stdin>,
        more: tokio::sync::mpsc::UnboundedReceiver<crate::runtime::Stdin>,
    ) -> Self {
        self.input = Some(Box::new(OpenInput {
            _writer: writer,
            more: Some(more),
        }));
        self
    }

    /// The client's pipes are closed and it exited with `status`: the end,
    /// or (a lost run client) the start of a recovery.
    fn exited(&mut self, status: io::Result<ExitStatus>) {
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                self.state = State::Done;
                self.queue
                    .push_back(ProcessEvent::Failed(Error::RuntimeFailed {
                        message: format!("waiting for the docker client failed: {e}"),
                    }));
                return;
            }
        };
        let code = exit::exit_code(status);
        if self.recovery.is_some() {
            return self.replay_ended(status, code);
        }
        let mut lines = Vec::new();
        let pipes = self.pipes.as_mut().expect("pipes exist once spawned");
        let tail = pipes.take_tail();
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        let lost_message = match exit::classify(self.ctx.kind, code, &tail, None) {
            Outcome::DockerLost(m) if self.ctx.kind == Kind::Run => Some(m),
            _ => None,
        };
        if self.ctx.kind == Kind::Run && (signal.is_some() || lost_message.is_some()) {
            // The client is gone, not (necessarily) the container.
            let held = self.hold.take();
            if lost_message.is_some() {
                tracing::debug!(
                    lines = held.len(),
                    "docker client diagnostics kept out of the output"
                );
                // They are not in the container's log: the replay must not
                // skip lines of the container's for them.
                let client_lines = held.iter().filter(|l| !l.partial).count() as u64;
                if let Some(pipes) = self.pipes.as_mut() {
                    let pos = &mut pipes.stderr.pos;
                    pos.lines = pos.lines.saturating_sub(client_lines);
                }
            } else if !held.is_empty() {
                self.queue.push_back(ProcessEvent::Output(held));
            }
            let reason = recover::lost_reason(signal, lost_message.as_deref());
            tracing::warn!(container = %self.ctx.container, "{reason}; waiting for the container itself and re-reading its output");
            let docker = DockerCli::with_binary(&self.ctx.binary);
            self.recovery = Some(Box::new(Recovery {
                wait: recover::spawn_wait(&docker, &self.ctx.container),
                reason,
                replays: 0,
            }));
            return self.replay(tail);
        }
        pipes.finish(&mut lines);
        let mut tail = tail;
        tail.extend(pipes.take_tail());
        let lines = self.hold.release(lines);
        if !lines.is_empty() {
            self.queue.push_back(ProcessEvent::Output(lines));
        }
        let held_text = self.hold.leading_text();
        let outcome = exit::classify(self.ctx.kind, code, &tail, held_text.as_deref());
        let swallow = match self.ctx.kind {
            Kind::Exec => matches!(
                outcome,
                Outcome::SessionNotFound | Outcome::DockerUnavailable(_)
            ),
            Kind::Run => matches!(
                outcome,
                Outcome::DockerFailed(_) | Outcome::DockerUnavailable(_) | Outcome::DockerLost(_)
            ),
        };
        let held = self.hold.take();
        if swallow {
            if !held.is_empty() {
                tracing::debug!(
                    lines = held.len(),
                    "docker client diagnostics kept out of the output"
                );
            }
        } else if !held.is_empty() {
            self.queue.push_back(ProcessEvent::Output(held));
        }
        self.state = State::Finishing(Box::pin(terminal_event(outcome, self.ctx.clone())));
    }

    /// Start a client that replays the container's output (see
    /// [`recover`]); without one, go straight to the real exit.
    fn replay(&mut self, tail: Vec<String>) {
        let recovery = self.recovery.as_mut().expect("recovering");
        let pipes = self.pipes.as_mut().expect("pipes exist once spawned");
        pipes.tail.extend(tail);
        if recovery.replays < MAX_REPLAYS {
            recovery.replays += 1;
            let docker = DockerCli::with_binary(&self.ctx.binary);
            match recover::logs_command(&docker, &self.ctx.container).spawn() {
                Ok(mut child) => {
                    pipes.replay_from(&mut child);
                    if let Hold::Trailing { broad, .. } = &mut self.hold {
                        *broad = true;
                    }
                    self.state = State::Streaming(Box::new(child));
                    return;
                }
                Err(e) => {
                    tracing::warn!(container = %self.ctx.container, error = %e, "cannot start `docker logs`: the output after the loss is missing")
                }
            }
        }
        self.real_exit();
    }

    /// A replay client ended.
    fn replay_ended(&mut self, status: ExitStatus, code: i32) {
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        let pipes = self.pipes.as_mut().expect("pipes exist once spawned");
        if signal.is_some() {
            // Lost too: another replay goes on from where this one got.
            let tail = pipes.take_tail();
            let held = self.hold.take();
            if !held.is_empty() {
                self.queue.push_back(ProcessEvent::Output(held));
            }
            return self.replay(tail);
        }
        let held = self.hold.take();
        if code != 0 {
            // `docker logs` failed (container gone, a log driver that
            // cannot be read, daemon down): its words are not output.
            let message = held
                .iter()
                .map(|l| l.text.as_str())
                .collect::<Vec<_>>()
                .join(" / ");
            tracing::warn!(container = %self.ctx.container, code, message, "`docker logs` failed: the output after the loss may be missing");
        } else if !held.is_empty() {
            self.queue.push_back(ProcessEvent::Output(held));
        }
        self.real_exit();
    }

    /// The output is over: deliver the unfinished lines, then the
    /// container's real exit.
    fn real_exit(&mut self) {
        let mut lines = Vec::new();
        if let Some(pipes) = self.pipes.as_mut() {
            pipes.finish(&mut lines);
        }
        let mut lines = self.hold.release(lines);
        lines.extend(self.hold.take());
        if !lines.is_empty() {
            self.queue.push_back(ProcessEvent::Output(lines));
        }
        let recovery = self.recovery.as_mut().expect("recovering");
        let wait = recovery.wait.take();
        let reason = recovery.reason.clone();
        let binary = self.ctx.binary.clone();
        let container = self.ctx.container.clone();
        let since = self.spawned_at;
        self.state = State::Finishing(Box::pin(async move {
            recover::real_exit(&binary, &container, wait, since, &reason).await
        }));
    }
}

impl Stream for ProcessStream {
    type Item = ProcessEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProcessEvent>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.queue.pop_front() {
                return Poll::Ready(Some(ev));
            }
            match &mut this.state {
                State::Precheck(fut, _) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(failure)) => {
                        this.queue.push_back(failure);
                        this.state = State::Done;
                    }
                    Poll::Ready(None) => {
                        let State::Precheck(_, cmd) =
                            std::mem::replace(&mut this.state, State::Done)
                        else {
                            unreachable!()
                        };
                        this.state = State::Spawn(cmd);
                    }
                },
                State::Spawn(cmd) => match cmd.spawn() {
                    Ok(mut child) => {
                        if let (Some(bytes), Some(pipe)) =
                            (this.ctx.stdin.clone(), child.stdin.take())
                        {
                            let more = this.input.as_mut().and_then(|i| i.more.take());
                            tokio::spawn(write_stdin(pipe, bytes, more));
                        }
                        // `docker exec` prints its own OCI errors (126) on
                        // stdout, so an exec keeps the tail of both pipes.
                        let both = this.ctx.kind == Kind::Exec;
                        this.pipes =
                            Some(Box::new(Pipes::new(&mut child, this.ctx.line_cap, both)));
                        this.spawned_at = SystemTime::now();
                        this.state = State::Streaming(Box::new(child));
                        this.queue.push_back(ProcessEvent::Started {
                            container: this.ctx.container.clone(),
                        });
                    }
                    Err(e) => {
                        let failure = spawn_failure(&this.ctx.binary, &e, cmd);
                        this.state = State::Done;
                        this.queue.push_back(ProcessEvent::Failed(failure));
                    }
                },
                State::Streaming(_) if this.pipes.as_ref().is_some_and(|p| p.is_done()) => {
                    let State::Streaming(child) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!()
                    };
                    let mut child = *child;
                    this.state = State::Exiting(async move { child.wait().await }.boxed());
                }
                State::Streaming(_) => {
                    let pipes = this.pipes.as_mut().expect("pipes exist once spawned");
                    let mut lines = Vec::new();
                    match pipes.poll_read(cx, &mut lines) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if lines.is_empty() => {}
                        Poll::Ready(()) => {
                            let lines = this.hold.release(lines);
                            if !lines.is_empty() {
                                return Poll::Ready(Some(ProcessEvent::Output(lines)));
                            }
                        }
                    }
                }
                State::Exiting(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(status) => {
                        this.state = State::Done;
                        this.exited(status);
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(event) => {
                        this.queue.push_back(event);
                        this.state = State::Done;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Write the prompt to the client's stdin beside the reading of its
/// output, then close it (EOF) — or, with `more` (an open stdin), write
/// each input that arrives there, and close once the run's stream is gone.
/// A process that stops reading early is not an error: the rest is
/// dropped.
async fn write_stdin(
    mut pipe: tokio::process::ChildStdin,
    bytes: crate::runtime::Stdin,
    more: Option<tokio::sync::mpsc::UnboundedReceiver<crate::runtime::Stdin>>,
) {
    crate::runtime::input::feed(&mut pipe, &bytes, more).await;
}

/// The terminal event of an `outcome` (looking up an exec's image for
/// [`Error::AgentNotRunnable`]).
async fn terminal_event(outcome: Outcome, ctx: ProcessContext) -> ProcessEvent {
    match outcome {
        Outcome::Exited(code) => ProcessEvent::Exited { code },
        Outcome::DockerFailed(message) => ProcessEvent::Failed(Error::DockerFailed { message }),
        Outcome::DockerUnavailable(message) => {
            ProcessEvent::Failed(Error::DockerUnavailable { message })
        }
        Outcome::DockerLost(message) => ProcessEvent::Failed(Error::DockerLost {
            container: ctx.container.clone(),
            message: format!("the connection to the Docker daemon broke: {message}"),
        }),
        Outcome::SessionNotFound => ProcessEvent::Failed(Error::SessionNotFound {
            target: ctx.container.clone(),
        }),
        Outcome::AgentNotRunnable { code, message } => {
            let image = match ctx.image {
                Some(image) => image,
                None => container_image(&ctx.binary, &ctx.container)
                    .await
                    .unwrap_or_else(|| format!("of container {}", ctx.container)),
            };
            ProcessEvent::Failed(Error::AgentNotRunnable {
                image,
                command: ctx.command0,
                code,
                message,
            })
        }
    }
}

/// Before an exec: is the target running? A target that is gone or
/// stopped (or a daemon that is down) ends the exec before it starts, so no
/// `Started` is reported for it. Anything inconclusive lets the exec run
/// (and the exit mapping decide).
async fn precheck_exec(binary: PathBuf, container: String) -> Option<ProcessEvent> {
    let args = [
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Running}}",
        &container,
    ]
    .map(Into::into);
    let cmd = DockerCli::with_binary(&binary).admin_command(&args);
    match super::admin::run_admin(cmd, &binary, Duration::from_secs(30)).await {
        Err(super::admin::AdminError::Spawn(e)) => Some(ProcessEvent::Failed(e)),
        Err(_) => None,
        Ok(out) if out.success && out.stdout.trim() == "true" => None,
        Ok(out) if out.success && out.stdout.trim() == "false" => {
            Some(ProcessEvent::Failed(Error::SessionNotFound {
                target: container,
            }))
        }
        Ok(out) if out.daemon_down() => Some(ProcessEvent::Failed(Error::DockerUnavailable {
            message: out.message("inspect"),
        })),
        Ok(out) if exit::container_gone(&out.stderr) => {
            Some(ProcessEvent::Failed(Error::SessionNotFound {
                target: container,
            }))
        }
        Ok(_) => None,
    }
}

/// The image a container runs (`docker inspect --format {{.Config.Image}}`),
/// for the message of a failed exec.
async fn container_image(binary: &std::path::Path, container: &str) -> Option<String> {
    let args = ["inspect", "--format", "{{.Config.Image}}", container].map(Into::into);
    let cmd = DockerCli::with_binary(binary).admin_command(&args);
    let out = super::admin::run_admin(cmd, binary, Duration::from_secs(10))
        .await
        .ok()?;
    let image = out.stdout.trim();
    (out.success && !image.is_empty()).then(|| image.to_string())
}

/// A spawned build client and its pipes.
struct BuildLive {
    child: Child,
    pipes: Pipes,
}

enum BuildState {
    /// Not spawned yet (spawning needs the tokio runtime of the poller).
    Spawn(Box<Command>),
    /// Reading the pipes (boxed: the pipes and buffers are large).
    Streaming(Box<BuildLive>),
    Finishing(BoxFuture<'static, Vec<BuildEvent>>),
    Done,
}

/// The stream of a `docker build` client.
pub(crate) struct BuildStream {
    state: BuildState,
    binary: PathBuf,
    image: String,
    iidfile: PathBuf,
    queue: VecDeque<BuildEvent>,
    log: super::build_log::BuildLog,
}

impl BuildStream {
    pub(crate) fn new(command: Command, binary: PathBuf, image: String, iidfile: PathBuf) -> Self {
        BuildStream {
            state: BuildState::Spawn(Box::new(command)),
            binary,
            image,
            iidfile,
            queue: VecDeque::new(),
            log: Default::default(),
        }
    }
}

impl Drop for BuildStream {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.iidfile);
    }
}

impl Stream for BuildStream {
    type Item = BuildEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BuildEvent>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.queue.pop_front() {
                return Poll::Ready(Some(ev));
            }
            match &mut this.state {
                BuildState::Spawn(cmd) => match cmd.spawn() {
                    Ok(mut child) => {
                        // Build output has no line cap of its own; use the default.
                        let pipes = Pipes::new(&mut child, crate::runtime::DEFAULT_LINE_CAP, true);
                        this.state = BuildState::Streaming(Box::new(BuildLive { child, pipes }));
                    }
                    Err(e) => {
                        let failure = spawn_failure(&this.binary, &e, cmd);
                        this.state = BuildState::Done;
                        this.queue.push_back(BuildEvent::Finished(Err(failure)));
                    }
                },
                BuildState::Streaming(live) if live.pipes.is_done() => {
                    let BuildState::Streaming(live) =
                        std::mem::replace(&mut this.state, BuildState::Done)
                    else {
                        unreachable!()
                    };
                    let BuildLive { child, mut pipes } = *live;
                    let mut lines = Vec::new();
                    pipes.finish(&mut lines);
                    if !lines.is_empty() {
                        let texts = lines.into_iter().map(|l| l.text).collect();
                        this.queue.push_back(BuildEvent::Output(texts));
                    }
                    let fut = finish_build(
                        child,
                        super::build_log::BuildLog::clean_all(pipes.take_tail()),
                        this.binary.clone(),
                        this.image.clone(),
                        this.iidfile.clone(),
                    );
                    this.state = BuildState::Finishing(Box::pin(fut));
                }
                BuildState::Streaming(live) => {
                    let mut lines = Vec::new();
                    match live.pipes.poll_read(cx, &mut lines) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if lines.is_empty() => {}
                        Poll::Ready(()) => {
                            let texts: Vec<String> = lines
                                .into_iter()
                                .filter_map(|l| this.log.clean(l.text))
                                .collect();
                            if !texts.is_empty() {
                                return Poll::Ready(Some(BuildEvent::Output(texts)));
                            }
                        }
                    }
                }
                BuildState::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(events) => {
                        this.queue.extend(events);
                        this.state = BuildState::Done;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                BuildState::Done => return Poll::Ready(None),
            }
        }
    }
}

async fn finish_build(
    mut child: Child,
    tail: Vec<String>,
    binary: PathBuf,
    image: String,
    iidfile: PathBuf,
) -> Vec<BuildEvent> {
    let result = match child.wait().await {
        Ok(status) if status.success() => Ok(crate::runtime::BuiltImage {
            id: std::fs::read_to_string(&iidfile)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        }),
        Ok(status) => {
            if let Some(message) = daemon_gone_during_build(&binary, &tail).await {
                Err(Error::DockerUnavailable { message })
            } else {
                Err(Error::BuildFailed {
                    image,
                    code: status.code(),
                    tail,
                })
            }
        }
        Err(e) => Err(Error::RuntimeFailed {
            message: format!("waiting for docker build failed: {e}"),
        }),
    };
    vec![BuildEvent::Finished(result)]
}

/// The message to give when a failed build failed because the daemon went
/// away, not because of the Dockerfile: its output says it could not
/// reach the daemon, or ends with a broken connection (`unexpected EOF`)
/// and the daemon does not answer `docker info` now. (A build step may
/// print "unexpected EOF" itself; the check with the daemon tells.)
async fn daemon_gone_during_build(binary: &std::path::Path, tail: &[String]) -> Option<String> {
    let down: Vec<String> = tail
        .iter()
        .filter(|l| exit::daemon_down(l))
        .cloned()
        .collect();
    if !down.is_empty() {
        return Some(exit::docker_message(&down));
    }
    // The broken connection is among the last lines (docker may add a
    // line or two about closing its side after it).
    let last = tail
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .find(|l| exit::connection_lost(l))?;
    let args = ["info", "--format", "{{.ServerVersion}}"].map(Into::into);
    let cmd = DockerCli::with_binary(binary).admin_command(&args);
    // `docker info` exits 0 with an empty version when the server part
    // failed (seen: plain HTTP to an engine's TLS port), so the version
    // must be there.
    let why = match super::admin::run_admin(cmd, binary, Duration::from_secs(15)).await {
        Ok(out) if out.success && !out.stdout.trim().is_empty() => return None,
        Ok(out) => match out.stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => format!(": {line}"),
            None => String::new(),
        },
        Err(_) => String::new(),
    };
    Some(format!(
        "the connection to the Docker daemon broke during the build ({}); it does not answer now{why}",
        exit::docker_message(std::slice::from_ref(last))
    ))
}
