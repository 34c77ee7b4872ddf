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

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use super::exit::{self, Kind, Outcome};
use super::{spawn_failure, DockerCli};
use crate::error::Error;
use crate::event::OutputStream;
use crate::runtime::{BuildEvent, LineDecoder, OutputLine, ProcessEvent};

/// Size of the read buffer shared by both pipes.
const READ_BUF: usize = 64 * 1024;
/// Lines of stderr (run/exec) or output (build) kept for error messages.
const TAIL: usize = 20;
/// At most this many docker-client error lines are held back by an exec
/// before they are released as output.
const HOLD_MAX: usize = 16;

/// Both pipes of a child, their decoders, the shared buffer and the tail of
/// what was read.
struct Pipes {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out_dec: LineDecoder,
    err_dec: LineDecoder,
    buf: Box<[u8]>,
    /// Last lines of stderr only (`false`) or of both pipes (`true`).
    tail_both: bool,
    tail: VecDeque<String>,
}

impl Pipes {
    fn new(child: &mut Child, line_cap: usize, tail_both: bool) -> Self {
        Pipes {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            out_dec: LineDecoder::new(OutputStream::Stdout, line_cap),
            err_dec: LineDecoder::new(OutputStream::Stderr, line_cap),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            tail_both,
            tail: VecDeque::with_capacity(TAIL),
        }
    }

    /// Both pipes reached their end.
    fn is_done(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// Read at most once from each open pipe, appending decoded lines to
    /// `lines`. Ready when at least one read completed (with data, end of
    /// file or an error); Pending when every open pipe is pending (both
    /// wakers are then registered).
    fn poll_read(&mut self, cx: &mut Context<'_>, lines: &mut Vec<OutputLine>) -> Poll<()> {
        let start = lines.len();
        let a = poll_pipe(
            &mut self.stdout,
            &mut self.out_dec,
            &mut self.buf,
            cx,
            lines,
        );
        if self.tail_both {
            self.keep_tail(&lines[start..]);
        }
        let mid = lines.len();
        let b = poll_pipe(
            &mut self.stderr,
            &mut self.err_dec,
            &mut self.buf,
            cx,
            lines,
        );
        self.keep_tail(&lines[mid..]);
        if a.is_ready() || b.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Remember the last [`TAIL`] of `new` (clipped copies; at most `TAIL`
    /// clones per batch, whatever its size).
    fn keep_tail(&mut self, new: &[OutputLine]) {
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

/// One read from one pipe. `Pending` when the pipe is closed (it takes no
/// part any more) or has nothing yet.
fn poll_pipe<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    dec: &mut LineDecoder,
    buf: &mut [u8],
    cx: &mut Context<'_>,
    lines: &mut Vec<OutputLine>,
) -> Poll<()> {
    let Some(reader) = pipe.as_mut() else {
        return Poll::Pending;
    };
    let mut rb = ReadBuf::new(buf);
    match Pin::new(reader).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            if rb.filled().is_empty() {
                dec.finish(lines);
                *pipe = None;
            } else {
                dec.push(rb.filled(), lines);
            }
            Poll::Ready(())
        }
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Poll::Ready(()),
        Poll::Ready(Err(e)) => {
            tracing::warn!(error = %e, "reading docker client output failed; treating as end of output");
            dec.finish(lines);
            *pipe = None;
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

/// A spawned client and its pipes.
struct Live {
    child: Child,
    pipes: Pipes,
}

enum State<T> {
    /// Exec: checking that the target runs before starting the client;
    /// resolves to the failure to report, or `None` to go on.
    Precheck(BoxFuture<'static, Option<T>>, Box<Command>),
    /// Not spawned yet (spawning needs the tokio runtime of the poller).
    Spawn(Box<Command>),
    /// Reading the pipes (boxed: the pipes and buffers are large).
    Streaming(Box<Live>),
    Finishing(BoxFuture<'static, Vec<T>>),
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
}

/// The stream of a `docker run` or `docker exec` client.
pub(crate) struct ProcessStream {
    state: State<ProcessEvent>,
    ctx: ProcessContext,
    /// Exec only: docker-client error lines held back while nothing else
    /// has been output (`None` once output was released).
    held: Option<Vec<OutputLine>>,
    queue: VecDeque<ProcessEvent>,
}

impl ProcessStream {
    pub(crate) fn new(command: Command, ctx: ProcessContext) -> Self {
        let held = (ctx.kind == Kind::Exec).then(Vec::new);
        let state = match ctx.kind {
            Kind::Run => State::Spawn(Box::new(command)),
            Kind::Exec => State::Precheck(
                Box::pin(precheck_exec(ctx.binary.clone(), ctx.container.clone())),
                Box::new(command),
            ),
        };
        ProcessStream {
            state,
            ctx,
            held,
            queue: VecDeque::new(),
        }
    }

    /// Exec: hold docker-client error lines until something else shows up,
    /// so "No such container" becomes `SessionNotFound` instead of output.
    fn release(&mut self, lines: Vec<OutputLine>) -> Vec<OutputLine> {
        let Some(held) = self.held.as_mut() else {
            return lines;
        };
        let client_errors = lines
            .iter()
            .all(|l| l.stream == OutputStream::Stderr && exit::looks_like_docker_error(&l.text));
        if client_errors && held.len() + lines.len() <= HOLD_MAX {
            held.extend(lines);
            return Vec::new();
        }
        let mut out = self.held.take().unwrap_or_default();
        if out.is_empty() {
            return lines;
        }
        out.extend(lines);
        out
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
                        // `docker exec` prints its own OCI errors (126) on
                        // stdout, so an exec keeps the tail of both pipes.
                        let both = this.ctx.kind == Kind::Exec;
                        let pipes = Pipes::new(&mut child, this.ctx.line_cap, both);
                        this.state = State::Streaming(Box::new(Live { child, pipes }));
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
                State::Streaming(live) if live.pipes.is_done() => {
                    let State::Streaming(live) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!()
                    };
                    let Live { child, mut pipes } = *live;
                    let held = this.held.take();
                    let fut = finish_process(child, pipes.take_tail(), held, this.ctx.clone());
                    this.state = State::Finishing(Box::pin(fut));
                }
                State::Streaming(live) => {
                    let mut lines = Vec::new();
                    match live.pipes.poll_read(cx, &mut lines) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if lines.is_empty() => {}
                        Poll::Ready(()) => {
                            let lines = this.release(lines);
                            if !lines.is_empty() {
                                return Poll::Ready(Some(ProcessEvent::Output(lines)));
                            }
                        }
                    }
                }
                State::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(events) => {
                        this.queue.extend(events);
                        this.state = State::Done;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Wait for the client and map its exit (see [`exit::classify`]).
async fn finish_process(
    mut child: Child,
    tail: Vec<String>,
    held: Option<Vec<OutputLine>>,
    ctx: ProcessContext,
) -> Vec<ProcessEvent> {
    let status = match child.wait().await {
        Ok(status) => status,
        Err(e) => {
            return vec![ProcessEvent::Failed(Error::RuntimeFailed {
                message: format!("waiting for the docker client failed: {e}"),
            })]
        }
    };
    let code = exit::exit_code(status);
    let held_text: Option<Vec<String>> = held
        .as_ref()
        .map(|h| h.iter().map(|l| exit::clip(&l.text)).collect());
    let outcome = exit::classify(ctx.kind, code, &tail, held_text.as_deref());
    let mut events = Vec::with_capacity(2);
    let swallow_held = matches!(
        outcome,
        Outcome::SessionNotFound | Outcome::DockerUnavailable(_)
    );
    if let Some(held) = held.filter(|h| !h.is_empty() && !swallow_held) {
        events.push(ProcessEvent::Output(held));
    }
    events.push(match outcome {
        Outcome::Exited(code) => ProcessEvent::Exited { code },
        Outcome::DockerFailed(message) => ProcessEvent::Failed(Error::DockerFailed { message }),
        Outcome::DockerUnavailable(message) => {
            ProcessEvent::Failed(Error::DockerUnavailable { message })
        }
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
    });
    events
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

/// The stream of a `docker build` client.
pub(crate) struct BuildStream {
    state: State<BuildEvent>,
    binary: PathBuf,
    image: String,
    iidfile: PathBuf,
    queue: VecDeque<BuildEvent>,
}

impl BuildStream {
    pub(crate) fn new(command: Command, binary: PathBuf, image: String, iidfile: PathBuf) -> Self {
        BuildStream {
            state: State::Spawn(Box::new(command)),
            binary,
            image,
            iidfile,
            queue: VecDeque::new(),
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
                State::Precheck(..) => unreachable!("builds have no precheck"),
                State::Spawn(cmd) => match cmd.spawn() {
                    Ok(mut child) => {
                        // Build output has no line cap of its own; use the default.
                        let pipes = Pipes::new(&mut child, crate::runtime::DEFAULT_LINE_CAP, true);
                        this.state = State::Streaming(Box::new(Live { child, pipes }));
                    }
                    Err(e) => {
                        let failure = spawn_failure(&this.binary, &e, cmd);
                        this.state = State::Done;
                        this.queue.push_back(BuildEvent::Finished(Err(failure)));
                    }
                },
                State::Streaming(live) if live.pipes.is_done() => {
                    let State::Streaming(live) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!()
                    };
                    let Live { child, mut pipes } = *live;
                    let fut = finish_build(
                        child,
                        pipes.take_tail(),
                        this.image.clone(),
                        this.iidfile.clone(),
                    );
                    this.state = State::Finishing(Box::pin(fut));
                }
                State::Streaming(live) => {
                    let mut lines = Vec::new();
                    match live.pipes.poll_read(cx, &mut lines) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if lines.is_empty() => {}
                        Poll::Ready(()) => {
                            let texts = lines.into_iter().map(|l| l.text).collect();
                            return Poll::Ready(Some(BuildEvent::Output(texts)));
                        }
                    }
                }
                State::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(events) => {
                        this.queue.extend(events);
                        this.state = State::Done;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

async fn finish_build(
    mut child: Child,
    tail: Vec<String>,
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
            if tail.iter().any(|l| exit::daemon_down(l)) {
                let down: Vec<String> = tail
                    .iter()
                    .filter(|l| exit::daemon_down(l))
                    .cloned()
                    .collect();
                Err(Error::DockerUnavailable {
                    message: exit::docker_message(&down),
                })
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
