//! Container backends.
//!
//! The [`Runtime`] trait speaks of images, containers, lines and exits —
//! never of processes or argv — so that the actors do not care whether the
//! Docker Engine API ([`EngineApi`], the default: see [`Backend`]), the
//! `docker` binary ([`DockerCli`]) or an in-memory fake with scripted
//! failures ([`FaultRuntime`]) sits behind it. [`Runtime`] states the
//! contract all of them keep.
//!
//! Every method returns a `'static` future or stream, so callers may drive it
//! from any task. Output comes in batches of decoded lines
//! ([`ProcessEvent::Output`]); all backends decode bytes with the same
//! [`LineDecoder`], so non-UTF-8 bytes and over-long lines behave the same
//! everywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::error::Error;
use crate::event::OutputStream;

mod backend;
mod docker_cli;
mod engine_api;
pub(crate) mod escalation;
mod fault;
mod input;
mod lines;
mod pull_failure;

pub use backend::Backend;
pub use docker_cli::DockerCli;
pub use engine_api::EngineApi;
pub use fault::{BuildScript, FaultRuntime, RunScript, Step};
pub use lines::{LineDecoder, DEFAULT_LINE_CAP};
pub use pull_failure::{pull_failure, PullFailure, PullFailureKind};

/// Label keys cldpd puts on every container it starts. Docker is the durable
/// state store: these labels let another process find, resume, list and stop
/// what this one started.
pub mod labels {
    /// The session id (`<pod>-<hex8>`).
    pub const SESSION: &str = "cldpd.session";
    /// The pod name.
    pub const POD: &str = "cldpd.pod";
    /// The agent conversation UUID (`claude --session-id`), for resume.
    pub const CONVERSATION: &str = "cldpd.conversation";
    /// The GitHub issue URL, when the run works on one.
    pub const ISSUE: &str = "cldpd.issue";
    /// The image tag the container runs.
    pub const IMAGE: &str = "cldpd.image";
    /// JSON array of the agent command prefix (e.g. `["claude"]`), for resume.
    pub const AGENT: &str = "cldpd.agent";
    /// What the agent prints (`stream-json` or `text`, pod.json
    /// `agentOutput`), for resume.
    pub const AGENT_OUTPUT: &str = "cldpd.agent.output";
    /// Working directory of the agent inside the container, for resume.
    pub const WORKDIR: &str = "cldpd.workdir";
    /// How the agent takes prompts: `stream-json` (a long-lived agent whose
    /// open stdin takes follow-ups, see [`Runtime::write_input`](super::Runtime::write_input)) or
    /// absent (text: one prompt, then end of input).
    pub const AGENT_INPUT: &str = "cldpd.agent.input";
    /// The session whose storage (workspace, agent state) the run uses:
    /// its own id, or for a resumed session the first run's (see
    /// [`crate::workspace::storage`]).
    pub const STORAGE: &str = "cldpd.storage";
    /// The state directory of the dispatcher that started it (adoption is
    /// among dispatchers sharing one).
    pub const STATE_DIR: &str = "cldpd.state";
    /// The run's stop grace in seconds, for stops from other processes.
    pub const GRACE: &str = "cldpd.grace";
    /// Restart attempt of this container within its session (0 = first).
    pub const ATTEMPT: &str = "cldpd.attempt";
    /// Start time (RFC 3339).
    pub const STARTED: &str = "cldpd.started";
    /// Id of the dispatcher instance that owns the run.
    pub const OWNER: &str = "cldpd.owner";
    /// Host name of the owning process.
    pub const OWNER_HOST: &str = "cldpd.owner.host";
    /// Pid of the owning process.
    pub const OWNER_PID: &str = "cldpd.owner.pid";
    /// Start time of the owning process (clock ticks since boot, from
    /// `/proc/<pid>/stat`), so a reused pid is not mistaken for the owner.
    pub const OWNER_START: &str = "cldpd.owner.start";
}

/// An environment value. Its `Debug` form is redacted so that it cannot end
/// up in logs or tracing output; it is only ever handed to a child process's
/// environment, never to argv.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }
    /// The value itself (to put in a child's environment, nowhere else).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A bind mount with its host path resolved (absolute, `~` expanded, exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute container path.
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// Resource limits for a container (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// CPUs (`--cpus`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes (`--memory`).
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids_limit: Option<u32>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Pod name.
    pub pod: String,
    /// Tag to give the image.
    pub image: String,
    /// Build context (the pod directory).
    pub context: PathBuf,
    /// Dockerfile path.
    pub dockerfile: PathBuf,
    /// `--build-arg` values (passed by name; values via the environment).
    pub build_args: Vec<(String, SecretValue)>,
    /// Labels for the image.
    pub labels: BTreeMap<String, String>,
}

/// What to run. The command is the full argv inside the container.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Session id the container belongs to.
    pub session: String,
    /// Pod name.
    pub pod: String,
    /// Container name (unique per run and attempt).
    pub container: String,
    /// Image tag.
    pub image: String,
    /// argv inside the container (`["claude", "-p", ...]`).
    pub command: Vec<String>,
    /// Environment; names go in argv (`-e NAME`), values only into the
    /// docker client's environment.
    pub env: Vec<(String, SecretValue)>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// Container labels (see [`labels`]).
    pub labels: BTreeMap<String, String>,
    /// Resource limits.
    pub resources: Resources,
    /// Longest line before it is split (see [`LineDecoder`]).
    pub line_cap: usize,
    /// Bytes for the process's standard input (the agent's prompt), or
    /// `None` for an empty, closed stdin. See [`Stdin`] for the contract.
    pub stdin: Option<Stdin>,
    /// The network to attach the container to (`docker run --network`):
    /// `bridge`, `none`, `host` or a named network; `None` = the engine's
    /// default (bridge). Backends that cannot honour it fail the run.
    pub network: Option<String>,
}

/// What a backend writes to a container's (or exec process's) standard
/// input: the prompt, which never goes in argv (Linux caps one argv string
/// at 128 KiB; a prompt that begins with `-` would read as an option).
///
/// The contract every [`Runtime`] keeps for `RunSpec::stdin` and
/// `ExecSpec::stdin`:
///
/// - `Some(bytes)`: the process's stdin is a pipe (`docker run -i`,
///   `docker exec -i`, an attached stdin on the Engine API). The backend
///   writes all of `bytes` once the process has started, then closes its
///   end, so the process reads exactly these bytes followed by EOF. Any
///   size works (tested with 1 MiB): the write runs beside the reading of
///   the output, never before it, so a process that writes a lot before it
///   reads stdin cannot deadlock the run.
/// - A process that exits (or closes its stdin) before reading everything
///   is not an error: the rest is dropped, and the run reports the exit as
///   usual.
/// - `None`: stdin is empty and closed from the start (`/dev/null`); no
///   `-i`.
/// - The bytes are not logged (they may be long, and they are the user's
///   prompt); traces give only their length.
/// - A restart of the run writes the same bytes again to the new process.
///
/// - [`Stdin::open`]: the backend writes the bytes and keeps the pipe
///   open: the process never reads EOF from cldpd, and more input comes
///   through [`Runtime::write_input`] (a long-lived agent taking
///   follow-ups, `agentInput: "stream-json"`). Such a process is ended by a
///   signal. Only for runs (an exec's stdin is always closed after its
///   bytes).
///
/// Cheap to clone (one reference count).
#[derive(Clone, PartialEq, Eq)]
pub struct Stdin {
    bytes: std::sync::Arc<[u8]>,
    keep_open: bool,
}

impl Stdin {
    /// Wrap bytes: written, then stdin is closed.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Stdin {
            bytes: bytes.into().into(),
            keep_open: false,
        }
    }
    /// Wrap bytes: written, then stdin stays open for
    /// [`Runtime::write_input`].
    pub fn open(bytes: impl Into<Vec<u8>>) -> Self {
        Stdin {
            bytes: bytes.into().into(),
            keep_open: true,
        }
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// How many bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// True when stdin stays open after the bytes ([`Stdin::open`]).
    pub fn keeps_open(&self) -> bool {
        self.keep_open
    }
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = if self.keep_open { ", open" } else { "" };
        write!(f, "Stdin({} bytes{open})", self.bytes.len())
    }
}

/// A command to run inside a running container (resume).
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Target container name.
    pub container: String,
    /// argv inside the container.
    pub command: Vec<String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// Longest line before it is split.
    pub line_cap: usize,
    /// Bytes for the process's standard input (the follow-up prompt), or
    /// `None`; see [`Stdin`].
    pub stdin: Option<Stdin>,
}

/// One decoded line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Which pipe.
    pub stream: OutputStream,
    /// Text without the newline.
    pub text: String,
    /// True when the line hit the cap and continues in the next line.
    pub partial: bool,
}

/// What a running container (or exec process) reports, in order:
/// `Started`, then any number of `Output`, then exactly one of `Exited` or
/// `Failed` (a `Failed` may also come first, when nothing started). The
/// stream ends after the terminal item.
#[derive(Debug, Clone)]
pub enum ProcessEvent {
    /// The container was created and its process started.
    Started {
        /// Container name.
        container: String,
    },
    /// A batch of lines, in the order they were read per stream.
    Output(Vec<OutputLine>),
    /// The process exited with this code (128 + n after signal n).
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The process could not be started, or the runtime failed under it.
    Failed(Error),
}

/// What a build reports: output batches, then exactly one `Finished`.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Lines of build output.
    Output(Vec<String>),
    /// The build ended.
    Finished(Result<BuiltImage, Error>),
}

/// A successful build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image's content id (`sha256:…`), when the backend reports it.
    /// Runs use it instead of the tag, so that they run exactly what was
    /// built even if the tag is moved later.
    pub id: Option<String>,
}

/// The two signals cldpd sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Ask the agent to finish (SIGTERM).
    Term,
    /// End it now (SIGKILL).
    Kill,
}

impl StopSignal {
    /// `TERM` / `KILL`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "TERM",
            StopSignal::Kill => "KILL",
        }
    }
}

/// A container found through its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container name.
    pub name: String,
    /// Docker's state word: `running`, `created`, `exited`, ...
    pub state: String,
    /// All `cldpd.*` labels.
    pub labels: BTreeMap<String, String>,
    /// The exit code of a container that has ended (`state` `exited` or
    /// `dead`) when the backend could read it; `None` while it runs and on
    /// backends whose containers are gone once they end ([`FaultRuntime`]).
    /// A container whose cldpd process died ends with no one to read its
    /// code but the process that adopts or reaps it.
    pub exit_code: Option<i32>,
}

impl ContainerInfo {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
    /// True when Docker reports it running.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
    /// True when it was created and not started yet (its owner is starting
    /// it, or died while doing so).
    pub fn is_created(&self) -> bool {
        self.state == "created"
    }
    /// True when it has ended and was not removed (`exited` or `dead`).
    pub fn has_ended(&self) -> bool {
        has_ended(&self.state)
    }
}

/// True for Docker's state words of a container that has ended.
pub(crate) fn has_ended(state: &str) -> bool {
    matches!(state, "exited" | "dead")
}

/// A container backend. See the [module docs](self).
///
/// Implementations must be cheap to share (`Arc<dyn Runtime>`); every
/// method may be called from any thread and any tokio runtime (or actix
/// arbiter).
///
/// # The contract
///
/// Every backend ([`EngineApi`], [`DockerCli`], [`FaultRuntime`]) obeys
/// what follows; `tests/runtime_contract.rs` runs one suite against all
/// three.
///
/// **Runs and execs.** [`run`](Self::run) and [`exec`](Self::exec) yield
/// at most one `Started` (first), then `Output` batches, then exactly one
/// terminal item (`Exited` or `Failed`), then end. An exec whose target
/// does not run yields `Failed(SessionNotFound)` as the only item; an
/// engine that cannot be reached ends a run with
/// `Failed(DockerUnavailable)` (the only item on the Engine API backend
/// and `FaultRuntime`; after `Started` and the client's own message on
/// the CLI backend). A container Docker refuses to create or start (missing
/// image, bad mount, name in use) fails without `Started` on the Engine
/// API backend; the CLI backend reports `Started` when its `docker run`
/// client was spawned, so its refusals come after a `Started`: consumers
/// must accept both. `Started` otherwise means the container exists and
/// its process was started (the Engine API backend reports it after
/// `start`). A signal sent after `run` (or `exec`) was called, even before
/// `Started`, reaches the process once it exists: the backends ask again
/// while their own run or exec is still being created. Output lines of one
/// pipe keep their order; nothing is lost between `Started` and the exit.
/// When `Exited` is seen, the run's container is gone (removed, as with
/// `docker run --rm`).
///
/// **Stdin and network.** A run or exec with a [`Stdin`] reads exactly
/// its bytes, then EOF; one without reads EOF at once (the contract is on
/// [`Stdin`]). The Engine API backend attaches with stdin before the start
/// and writes once the process has started; the CLI backend writes to its
/// `docker run -i` client; `FaultRuntime` records the bytes
/// ([`FaultRuntime::stdins`]). [`RunSpec::network`] is the container's
/// network on both Docker backends (`--network`, `NetworkMode`).
///
/// **A lost engine.** Losing the connection while a container runs is not
/// an exit (see [`run`](Self::run)): the backend waits for the container's
/// real exit and reports `Failed(`[`Error::DockerLost`]`)` when it cannot
/// learn it.
///
/// **Exit codes.** `Exited { code }` carries the process's code, 128 + n
/// after signal n (143 after TERM, 137 after KILL). A command that is not
/// found or not executable (126/127) is `Failed(`[`Error::AgentNotRunnable`]`)`.
///
/// **Already gone.** [`signal`](Self::signal), [`signal_exec`](Self::signal_exec),
/// [`stop`](Self::stop) and [`remove`](Self::remove) of a container (or
/// exec) that does not exist or no longer runs succeed (`Ok(())`): the goal
/// — it does not run — holds.
///
/// **Stops from another process.** [`stop`](Self::stop) works on any
/// container by name, whoever started it: TERM, the grace period, KILL,
/// and it resolves once the container no longer runs. The process that
/// started it sees the exit on its own stream (`Exited { code: 143 }` or
/// `137`) and removes it; a container whose owner is gone is left for
/// [`remove`](Self::remove).
///
/// **Listing.** [`list`](Self::list) returns every container carrying
/// [`labels::SESSION`], running or not, with its state word and its
/// `cldpd.*` labels.
///
/// **Typed errors.** An engine that cannot be reached is
/// [`Error::DockerUnavailable`] from every call; an image that does not
/// exist at `run` is [`Error::ImageMissing`] (CLI backend:
/// [`Error::DockerFailed`] with docker's message); Docker refusing to
/// create or start a container (bad mount, name in use) is
/// [`Error::DockerFailed`]; an exec into a container that does not run is
/// [`Error::SessionNotFound`]; a failed build is [`Error::BuildFailed`]; a
/// stop that cannot complete is [`Error::StopFailed`].
pub trait Runtime: Send + Sync + 'static {
    /// Short name for messages (`docker`, `fault`).
    fn name(&self) -> &str;

    /// Check that the engine is reachable; returns its version.
    /// Unreachable: [`Error::DockerUnavailable`].
    fn preflight(&self) -> BoxFuture<'static, Result<String, Error>>;

    /// Build an image, streaming its output. A failed build finishes with
    /// [`Error::BuildFailed`] carrying the tail of the output.
    fn build(&self, spec: BuildSpec) -> BoxStream<'static, BuildEvent>;

    /// True when an image with this tag exists locally.
    fn image_exists(&self, image: &str) -> BoxFuture<'static, Result<bool, Error>>;

    /// The id of the image the tag `image` names now; `None` when it names
    /// none. A backend that cannot tell answers `None` (the default), and
    /// rebuilt images then stay behind untagged.
    fn image_id(&self, image: &str) -> BoxFuture<'static, Result<Option<String>, Error>> {
        let _ = image;
        Box::pin(futures_util::future::ready(Ok(None)))
    }

    /// Remove the image `id` unless a container (running or not) uses it:
    /// `Ok(true)` when removed, `Ok(false)` when in use or already gone —
    /// never forced. After a rebuild moved a pod's tag, the image it
    /// replaced would otherwise pile up as `<none>`. Default: `Ok(false)`.
    fn remove_unused_image(&self, id: &str) -> BoxFuture<'static, Result<bool, Error>> {
        let _ = id;
        Box::pin(futures_util::future::ready(Ok(false)))
    }

    /// Start a container and stream what it does. Dropping the stream does
    /// not stop the container: use [`Runtime::signal`] / [`Runtime::remove`].
    ///
    /// `Exited` is the container's own exit, nothing else. Losing the
    /// means of watching it (a killed `docker` client, a broken connection
    /// to the engine) is not an exit: the backend finds the container
    /// again, goes on streaming its output (neither losing nor repeating
    /// lines where the engine's log allows) and reports its real exit code;
    /// when it cannot learn how the container ended, it reports
    /// `Failed(`[`Error::DockerLost`]`)`, never a made-up code. Docker's
    /// own diagnostics are the message of a `Failed`, never `Output`.
    fn run(&self, spec: RunSpec) -> BoxStream<'static, ProcessEvent>;

    /// Run a command in a running container. Target not running:
    /// `Failed(Error::SessionNotFound)`.
    fn exec(&self, spec: ExecSpec) -> BoxStream<'static, ProcessEvent>;

    /// Send a signal to a container's main process. A container that is
    /// already gone is not an error.
    fn signal(&self, container: &str, signal: StopSignal) -> BoxFuture<'static, Result<(), Error>>;

    /// Send a signal to the process a previous [`Runtime::exec`] of `spec`
    /// started — not to the container, which goes on. The process is found
    /// by its arguments; one that is already gone is not an error.
    fn signal_exec(
        &self,
        spec: &ExecSpec,
        signal: StopSignal,
    ) -> BoxFuture<'static, Result<(), Error>>;

    /// Stop a container this process does not drive (found by label):
    /// SIGTERM, wait `grace`, SIGKILL; resolves once it has stopped. Every
    /// backend does it with the one escalation of the crate (the session's
    /// own stops too): [`signal`](Self::signal) for the signals, the grace
    /// to the millisecond, [`Error::StopFailed`] when the container is
    /// still running 10 s after its SIGKILL.
    fn stop(&self, container: &str, grace: Duration) -> BoxFuture<'static, Result<(), Error>>;

    /// Force-remove a container (cleanup). Already gone is not an error.
    fn remove(&self, container: &str) -> BoxFuture<'static, Result<(), Error>>;

    /// Every container (running or not) that carries the
    /// [`labels::SESSION`] label.
    fn list(&self) -> BoxFuture<'static, Result<Vec<ContainerInfo>, Error>>;

    /// Write `bytes` to the stdin of the main process of `container`, a
    /// running container whose run was given a [`Stdin::open`]. Writes
    /// made through one runtime value reach the process in the order they
    /// were called, after the run's own bytes. Works from the process that
    /// started the run; the Engine API backend also from any other
    /// process (it attaches to the container's stdin, which Docker allows
    /// from several clients; a container without an open stdin is
    /// refused). A container that does not run is
    /// [`Error::SessionNotFound`]; a backend that cannot reach the stdin
    /// (the CLI backend, for another process's run) says so with
    /// [`Error::InputUnavailable`]. The bytes are never logged.
    fn write_input(&self, container: &str, bytes: Stdin) -> BoxFuture<'static, Result<(), Error>>;
}
