//! What a fault build or run does: [`BuildScript`], [`RunScript`], [`Step`].
//!
//! Scripts are plain data. The runtime shares one script between all the
//! runs it applies to (behind an `Arc`), and a run walks its steps lazily:
//! a `lines(.., 1_000_000, ..)` step is one small enum value, never a
//! million strings.

use std::time::Duration;

use crate::event::OutputStream;

/// The output line of a build that has no script.
pub(super) const DEFAULT_BUILD_LINE: &str = "Step 1/1 : FROM scratch";

/// What a fault build does: print some lines, then succeed, fail, hang or
/// panic, optionally after a delay.
///
/// The default is the build of an unscripted image: one line
/// (`Step 1/1 : FROM scratch`), then success.
///
/// ```
/// use std::time::Duration;
/// use cldpd::runtime::{BuildScript, FaultRuntime};
/// let rt = FaultRuntime::new();
/// rt.script_build("cldpd-web", BuildScript::fail(["Step 1/2 : FROM scratch", "oops"], 1))
///     .script_build("cldpd-api", BuildScript::succeed(["ok"]).delay(Duration::from_millis(5)))
///     .script_build("cldpd-slow", BuildScript::hang())
///     .script_build("cldpd-bug", BuildScript::panic("builder bug"));
/// ```
#[derive(Debug, Clone)]
pub struct BuildScript {
    pub(super) lines: Vec<String>,
    pub(super) outcome: BuildOutcome,
    pub(super) delay: Option<Duration>,
}

/// How a build ends.
#[derive(Debug, Clone)]
pub(super) enum BuildOutcome {
    Succeed,
    Fail(i32),
    Hang,
    Panic(String),
}

impl Default for BuildScript {
    fn default() -> Self {
        BuildScript::succeed([DEFAULT_BUILD_LINE])
    }
}

impl BuildScript {
    /// Print `lines`, then finish with `Ok(())`. The image then exists
    /// ([`Runtime::image_exists`](crate::runtime::Runtime::image_exists)).
    pub fn succeed<I, S>(lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        BuildScript {
            lines: lines.into_iter().map(Into::into).collect(),
            outcome: BuildOutcome::Succeed,
            delay: None,
        }
    }

    /// Print `lines`, then finish with
    /// [`Error::BuildFailed`](crate::Error::BuildFailed) carrying the image
    /// tag, `Some(code)` and the last 20 lines.
    pub fn fail<I, S>(lines: I, code: i32) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        BuildScript {
            outcome: BuildOutcome::Fail(code),
            ..BuildScript::succeed(lines)
        }
    }

    /// Never finish: the stream stays pending until it is dropped (for
    /// build timeouts and cancellation).
    pub fn hang() -> Self {
        BuildScript {
            lines: Vec::new(),
            outcome: BuildOutcome::Hang,
            delay: None,
        }
    }

    /// Panic with `message` when the build stream is polled (a bug in the
    /// backend).
    pub fn panic(message: impl Into<String>) -> Self {
        BuildScript {
            lines: Vec::new(),
            outcome: BuildOutcome::Panic(message.into()),
            delay: None,
        }
    }

    /// Wait this long (tokio time) after the output, before finishing.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// One step of a [`RunScript`]. Steps run in order; output steps feed their
/// bytes through the run's [`LineDecoder`](crate::runtime::LineDecoder)s, so
/// lossy UTF-8 and line splitting behave as with Docker.
///
/// Line numbers count per stream over the whole process: after
/// `stdout_lines(2).stdout_lines(2)` the lines read `out 1` … `out 4`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Step {
    /// `count` generated lines `out <i>` / `err <i>` (i from 1 per stream),
    /// right-padded with `.` to `width` bytes, at `per_sec` lines a second
    /// (scheduled from the step's start) or as fast as they are read.
    Lines {
        /// Which pipe.
        stream: OutputStream,
        /// How many lines.
        count: usize,
        /// Minimum line length in bytes (padding with `.`), 0 for none.
        width: usize,
        /// Rate limit, lines per second.
        per_sec: Option<f64>,
    },
    /// Raw bytes, written as they are (need not be UTF-8 nor end in `\n`).
    Bytes {
        /// Which pipe.
        stream: OutputStream,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// One line of `len` bytes (`x` repeated) and a `\n`, generated in 64 KiB
    /// chunks and never held whole (the decoder splits it at the line cap).
    LongLine {
        /// Which pipe.
        stream: OutputStream,
        /// Length in bytes, without the newline.
        len: usize,
    },
    /// Do nothing for this long (tokio time); a signal interrupts it.
    Sleep(Duration),
    /// Exit with this code.
    Exit(i32),
    /// The runtime fails under the process: `Failed(RuntimeFailed)`.
    Crash(String),
    /// Block until a signal or `remove` ends the process.
    Hang,
    /// A stand-in for Claude Code with `--input-format stream-json`: each
    /// line of its stdin (the run's own bytes, then each
    /// [`write_input`](crate::runtime::Runtime::write_input)) is one turn,
    /// answered `turn` after it was taken up, in order, with a stream-json
    /// `assistant` line and a `result` line (`"answer <n>: <prompt>"`; a
    /// line that is not a user message gets an error result). It waits for
    /// more input while stdin is open, and goes on to the next step once
    /// stdin is closed and read.
    Converse {
        /// How long each turn takes.
        turn: Duration,
    },
    /// Panic inside `poll_next` with this message.
    Panic(String),
}

/// What a start failure looks like.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum OnStart {
    /// `run()` / `exec()` panics.
    Panic(String),
    /// Exit 126/127: `AgentNotRunnable`.
    NotRunnable(i32),
    /// Exit 125: `DockerFailed`.
    DockerFails(String),
}

/// What a fault container (or exec process) does: a list of [`Step`]s plus
/// flags, built fluently. A script that ends without [`exit`](Self::exit)
/// exits 0; steps after a terminal step (`exit`, `crash`, `hang`, `panic`)
/// never run.
///
/// ```
/// use std::time::Duration;
/// use cldpd::runtime::RunScript;
/// use cldpd::OutputStream;
/// // Two lines, a pause, an 80-byte stderr line, a crash.
/// let crashing = RunScript::new()
///     .stdout_lines(2)
///     .sleep(Duration::from_millis(10))
///     .lines(OutputStream::Stderr, 1, 80, None)
///     .crash("the daemon went away");
/// // Survives SIGTERM, dies on SIGKILL.
/// let stubborn = RunScript::new().ignore_sigterm().hang();
/// // 1000 lines at 100 lines a second, then exit 3.
/// let slow = RunScript::new().lines(OutputStream::Stdout, 1000, 0, Some(100.0)).exit(3);
/// assert_eq!(slow.steps().len(), 2);
/// # let _ = (crashing, stubborn);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunScript {
    pub(super) steps: Vec<Step>,
    pub(super) ignore_sigterm: bool,
    pub(super) stop_fails: bool,
    pub(super) on_start: Option<OnStart>,
}

impl RunScript {
    /// An empty script: no output, exit 0.
    pub fn new() -> Self {
        RunScript::default()
    }

    /// The steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Append any step.
    ///
    /// # Panics
    ///
    /// On a [`Step::Lines`] whose `per_sec` is not a positive finite number.
    #[must_use]
    pub fn step(mut self, step: Step) -> Self {
        if let Step::Lines {
            per_sec: Some(rate),
            ..
        } = step
        {
            assert!(
                rate.is_finite() && rate > 0.0,
                "RunScript: per_sec must be a positive finite number, got {rate}"
            );
        }
        self.steps.push(step);
        self
    }

    /// `n` lines `out <i>` on stdout, unthrottled.
    #[must_use]
    pub fn stdout_lines(self, n: usize) -> Self {
        self.lines(OutputStream::Stdout, n, 0, None)
    }

    /// `n` lines `err <i>` on stderr, unthrottled.
    #[must_use]
    pub fn stderr_lines(self, n: usize) -> Self {
        self.lines(OutputStream::Stderr, n, 0, None)
    }

    /// `n` lines on `stream`, padded with `.` to `width` bytes, at `per_sec`
    /// lines a second (`None`: as fast as they are read). See [`Step::Lines`].
    ///
    /// # Panics
    ///
    /// When `per_sec` is not a positive finite number.
    #[must_use]
    pub fn lines(self, stream: OutputStream, n: usize, width: usize, per_sec: Option<f64>) -> Self {
        self.step(Step::Lines {
            stream,
            count: n,
            width,
            per_sec,
        })
    }

    /// Raw bytes on `stream` (e.g. invalid UTF-8, or no trailing newline:
    /// an unterminated last line is emitted when the process ends).
    #[must_use]
    pub fn bytes(self, stream: OutputStream, bytes: impl Into<Vec<u8>>) -> Self {
        self.step(Step::Bytes {
            stream,
            bytes: bytes.into(),
        })
    }

    /// One line of `len` bytes on `stream`, generated in chunks. See
    /// [`Step::LongLine`].
    #[must_use]
    pub fn long_line(self, stream: OutputStream, len: usize) -> Self {
        self.step(Step::LongLine { stream, len })
    }

    /// Pause (tokio time). A signal that ends the process interrupts it.
    #[must_use]
    pub fn sleep(self, duration: Duration) -> Self {
        self.step(Step::Sleep(duration))
    }

    /// Exit with `code` (`Exited { code }`).
    #[must_use]
    pub fn exit(self, code: i32) -> Self {
        self.step(Step::Exit(code))
    }

    /// Fail mid-run: `Failed(Error::RuntimeFailed { message })`. The
    /// container is no longer live afterwards.
    #[must_use]
    pub fn crash(self, message: impl Into<String>) -> Self {
        self.step(Step::Crash(message.into()))
    }

    /// Block until a signal or `remove` ends the process.
    #[must_use]
    pub fn hang(self) -> Self {
        self.step(Step::Hang)
    }

    /// Answer each stream-json user message on stdin like Claude Code
    /// with `--input-format stream-json`, each turn taking `turn` (see
    /// [`Step::Converse`]).
    #[must_use]
    pub fn converse(self, turn: Duration) -> Self {
        self.step(Step::Converse { turn })
    }

    /// Panic inside `poll_next` with `message`. The container stays live
    /// (whoever drove it must remove it); polling again yields `None`.
    #[must_use]
    pub fn panic(self, message: impl Into<String>) -> Self {
        self.step(Step::Panic(message.into()))
    }

    /// SIGTERM is recorded but ignored; only SIGKILL (or `remove`) ends
    /// the process.
    #[must_use]
    pub fn ignore_sigterm(mut self) -> Self {
        self.ignore_sigterm = true;
        self
    }

    /// `signal`, `stop` and `remove` of this container fail with
    /// [`Error::StopFailed`](crate::Error::StopFailed) (the signal is still
    /// recorded) and the container keeps running.
    #[must_use]
    pub fn stop_fails(mut self) -> Self {
        self.stop_fails = true;
        self
    }

    /// The `run()` (or `exec()`) call itself panics with `message`,
    /// synchronously. The run is still counted and recorded.
    #[must_use]
    pub fn panic_on_start(mut self, message: impl Into<String>) -> Self {
        self.on_start = Some(OnStart::Panic(message.into()));
        self
    }

    /// The agent command cannot run (`code` 127: not found, 126: not
    /// executable): the stream yields only
    /// `Failed(Error::AgentNotRunnable { image, command: command[0], code, message })`,
    /// no `Started`, and no container is left live. The steps are ignored.
    #[must_use]
    pub fn not_runnable(mut self, code: i32) -> Self {
        self.on_start = Some(OnStart::NotRunnable(code));
        self
    }

    /// Docker itself fails (exit 125): the stream yields only
    /// `Failed(Error::DockerFailed { message })`, no `Started`, and no
    /// container is left live. The steps are ignored.
    #[must_use]
    pub fn docker_fails(mut self, message: impl Into<String>) -> Self {
        self.on_start = Some(OnStart::DockerFails(message.into()));
        self
    }
}
