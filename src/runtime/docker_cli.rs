//! The `docker` command-line backend.
//!
//! [`DockerCli`] runs the `docker` binary (or the one named by
//! `CLDPD_DOCKER`) with `tokio::process`, one client process per operation.
//! The argv shapes:
//!
//! ```text
//! docker info --format {{.ServerVersion}}                             preflight
//! docker build -t <image> -f <dockerfile> --force-rm
//!        [--build-arg NAME]... [--label k=v]... <context>              build
//! docker image inspect --format {{.Id}} <image>                        image_exists
//! docker run --rm --init --name <container> [--label k=v]... [-e NAME]...
//!        [--mount type=bind,source=<abs>,target=<t>[,readonly]]...
//!        [-w <dir>] [--cpus N] [--memory <bytes>] [--pids-limit N]
//!        <image> <command>...                                          run
//! docker inspect --type container --format {{.State.Running}} <container>
//! docker exec [-w <dir>] <container> <command>...                      exec
//! docker kill --signal TERM|KILL <container>                           signal
//! docker kill --signal TERM|KILL <container> ; docker wait <container>  stop
//! docker rm -f <container>                                             remove
//! docker ps -aq --filter label=cldpd.session ; docker inspect <ids>... list
//! docker wait <container> ; docker logs --follow <container>
//! docker events --since <t> --filter container=<c> --filter event=die
//!                                                    after a lost run client
//! ```
//!
//! **Secrets.** Environment variables and build args are passed by *name*
//! only (`-e NAME`, `--build-arg NAME`); their values go into the docker
//! client's own environment, from which docker reads them. No value ever
//! appears in any argv, and argv (logged at `debug`) never holds one.
//!
//! **Exit codes.** The client of `docker run` / `docker exec` exits with
//! the container's code, except:
//!
//! - **125**: docker itself failed (bad option, missing mount source, name
//!   in use…) → `Failed(`[`Error::DockerFailed`]`)` with docker's message
//!   (or [`Error::DockerUnavailable`] when the daemon cannot be reached);
//! - **126 / 127**: the command is not executable / not found in the image
//!   → `Failed(`[`Error::AgentNotRunnable`]`)`;
//! - `docker exec` into a container that is gone or stopped →
//!   `Failed(`[`Error::SessionNotFound`]`)`. An exec first checks that its
//!   target runs (`docker inspect`), so in that case no `Started` comes
//!   first; should the target vanish between the check and the exec,
//!   docker's "No such container" / "is not running" (exit 1) is held back
//!   and reported the same way, after `Started`;
//! - a `docker run` client killed by a signal, or cut off from the daemon
//!   (125, "error waiting for container: unexpected EOF"), is **not** the
//!   container's exit: the stream waits for the container's real exit
//!   (`docker wait`) and reads the rest of its output again (`docker logs
//!   --follow`, what was delivered skipped), or fails with
//!   [`Error::DockerLost`] when the container's end cannot be learnt (see
//!   `recover.rs` for what can be lost then);
//! - an exec's client killed by signal `n` → `Exited { code: 128 + n }`.
//!
//! The container's stderr lines are delivered as output before the
//! failure; docker's own error lines (held back while they are the last
//! lines read) are not, they are the error's message. An agent that itself
//! exits 125–127 is reported the same way; agents should not use those
//! codes.
//!
//! **Stopping.** Killing a docker client does not stop its container, so
//! the `run`/`exec` clients are not killed when their stream is dropped;
//! stopping always goes through `docker kill` / `docker rm -f` by container
//! name (a stop is the crate's one escalation, `runtime::escalation`, with
//! `docker wait` to learn its end). Short admin commands run under a
//! timeout and are killed when it fires. A run counts as started when its
//! client is spawned, before the daemon has created the container: a
//! signal that finds no container while that client still runs is asked
//! again (10 ms, doubling to 200 ms) until the container exists, so a stop
//! right after a start still delivers SIGTERM.
//!
//! ```no_run
//! use cldpd::runtime::{DockerCli, Runtime};
//! # async fn demo() -> cldpd::Result<()> {
//! let docker = DockerCli::new(); // `docker`, or $CLDPD_DOCKER
//! let version = docker.preflight().await?;
//! println!("Docker {version}");
//! # Ok(()) }
//! ```

mod admin;
mod args;
mod build_log;
mod clients;
mod exit;
mod inspect;
mod recover;
mod stream;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::process::Command;

pub(crate) use self::admin::spawn_failure;
use self::admin::{run_admin, runtime_failed, stop_result, unavailable, AdminError, AdminOutput};
use self::clients::Clients;
use self::exit::Kind;
use self::stream::{BuildStream, ProcessContext, ProcessStream};
use crate::error::Error;
use crate::runtime::escalation;
use crate::runtime::{
    labels, BuildEvent, BuildSpec, ContainerInfo, ExecSpec, ProcessEvent, RunSpec, Runtime,
    SecretValue, Stdin, StopSignal,
};
use std::sync::Arc;

/// The environment variable naming the docker binary.
const DOCKER_ENV: &str = DockerCli::BINARY_ENV;

/// How long `docker info` may take in [`Runtime::preflight`].
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long short admin commands (`kill`, `rm`, `inspect`, `ps`) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the longest stop for the limit of its `docker wait`.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// The Docker CLI backend: a [`Runtime`] that drives the `docker` binary.
///
/// Cheap to clone and share; every operation spawns its own client process
/// (`docker run --rm --init --name <container> --label … -e NAME … <image>
/// <command>…` for a run, `docker exec` for a resume, `docker kill` /
/// `stop` / `rm -f` by container name to stop and clean up, `docker ps` +
/// `docker inspect` to list).
///
/// - Environment values and build-arg values never appear in argv: only
///   `-e NAME` / `--build-arg NAME`, with the value in the client's
///   environment.
/// - Output of `run`/`exec` is read from both pipes concurrently and
///   decoded with [`LineDecoder`](crate::runtime::LineDecoder) (one
///   `Output` batch per read).
/// - Exit 125 is docker's own failure ([`Error::DockerFailed`], with its
///   message), 126/127 an agent that is not executable / not found
///   ([`Error::AgentNotRunnable`]), an exec into a container that is gone or
///   stopped [`Error::SessionNotFound`], an unreachable daemon or a missing
///   binary [`Error::DockerUnavailable`]; any other code is
///   `Exited { code }` (128 + n after signal n).
/// - Dropping a `run`/`exec` stream does not stop the container (killing a
///   docker client never does): use [`Runtime::signal`] / [`Runtime::stop`]
///   / [`Runtime::remove`].
///
/// ```
/// use cldpd::runtime::DockerCli;
/// let docker = DockerCli::with_binary("/usr/bin/docker");
/// assert_eq!(docker.binary(), std::path::Path::new("/usr/bin/docker"));
/// ```
#[derive(Debug, Clone)]
pub struct DockerCli {
    binary: PathBuf,
    /// `docker run` clients of this process still running (shared by clones).
    clients: Clients,
    /// The open stdin of each live run given a [`Stdin::open`]: the
    /// writer of its client's pipe, held weakly (the run's stream holds it,
    /// so the pipe closes when the run ends).
    inputs: Inputs,
}

/// Container name → the writer feeding its `docker run -i` client's stdin.
type Inputs = Arc<
    std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::mpsc::WeakUnboundedSender<Stdin>>,
    >,
>;

impl Default for DockerCli {
    /// Same as [`DockerCli::new`].
    fn default() -> Self {
        DockerCli::new()
    }
}

impl DockerCli {
    /// The environment variable that names the docker binary
    /// (`CLDPD_DOCKER`); unset or empty means `docker`.
    pub const BINARY_ENV: &'static str = "CLDPD_DOCKER";

    /// The binary named by `CLDPD_DOCKER` when it is set and not empty,
    /// otherwise `docker` (looked up on `PATH` when a command runs).
    pub fn new() -> Self {
        Self::from_env_value(std::env::var_os(DOCKER_ENV))
    }

    fn from_env_value(value: Option<OsString>) -> Self {
        match value {
            Some(v) if !v.is_empty() => DockerCli::with_binary(v),
            _ => DockerCli::with_binary("docker"),
        }
    }

    /// Use this docker-compatible binary (a path, or a name looked up on
    /// `PATH`).
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        DockerCli {
            binary: binary.into(),
            clients: Clients::default(),
            inputs: Inputs::default(),
        }
    }

    /// The binary this backend runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A client command with stdin closed and both outputs piped. `env`
    /// values go into the child's environment only.
    fn command(&self, args: &[OsString], env: &[(String, SecretValue)]) -> Command {
        let overrides_path = env.iter().any(|(name, _)| name == "PATH");
        let program = if overrides_path {
            // The child's PATH would be used to find the binary: resolve it
            // with ours instead.
            resolve_on_path(&self.binary)
        } else {
            self.binary.clone()
        };
        tracing::debug!(argv = %format!("{} {}", program.display(), args::display_argv(args)), "docker");
        let mut cmd = Command::new(program);
        // Its own process group: a terminal's Ctrl-C or hang-up goes to the
        // foreground group, and a docker client in it would forward SIGINT
        // or SIGHUP to the agent. The agent gets only what cldpd sends.
        cmd.process_group(0);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !env.is_empty() {
            let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
            tracing::debug!(env = ?names, "docker client environment (names only)");
        }
        for (name, value) in env {
            if name.starts_with("DOCKER_") {
                tracing::warn!(
                    name = %name,
                    "this variable is also read by the docker client itself"
                );
            }
            cmd.env(name, value.expose());
        }
        if env.iter().any(|(n, _)| n == "HOME") && !env.iter().any(|(n, _)| n == "DOCKER_CONFIG") {
            // The client finds its config (and current context) under
            // $HOME/.docker; keep it on ours, not the container's HOME.
            if let Some(config) = own_docker_config() {
                cmd.env("DOCKER_CONFIG", config);
            }
        }
        cmd
    }

    /// A short admin command: killed if its future is dropped (timeout).
    /// Poll until `container` no longer exists (bounded by
    /// [`ADMIN_TIMEOUT`]): Docker removes `--rm` containers asynchronously.
    async fn wait_gone(&self, container: &str) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let out = self
                .admin(
                    &["container", "inspect", "--format", "{{.Id}}", container],
                    ADMIN_TIMEOUT,
                )
                .await;
            match out {
                Ok(o) if !o.success && exit::container_gone(&o.stderr) => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::StopFailed {
                        container: container.to_string(),
                        message: "its removal did not finish".to_string(),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn admin_command(&self, args: &[OsString]) -> Command {
        let mut cmd = self.command(args, &[]);
        cmd.kill_on_drop(true);
        cmd
    }

    fn admin(
        &self,
        args: &[&str],
        limit: Duration,
    ) -> BoxFuture<'static, Result<AdminOutput, AdminError>> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let cmd = self.admin_command(&args);
        let binary = self.binary.clone();
        async move { run_admin(cmd, &binary, limit).await }.boxed()
    }

    /// `stream` of a `run` or `exec` client, counted in `clients` under
    /// `key` until its process has ended or the stream is dropped.
    fn tracked(&self, key: &str, stream: ProcessStream) -> BoxStream<'static, ProcessEvent> {
        let mut client = Some(self.clients.track(key));
        Box::pin(stream.map(move |event| {
            if matches!(event, ProcessEvent::Exited { .. } | ProcessEvent::Failed(_)) {
                client.take();
            }
            event
        }))
    }

    /// Run an admin command; while its answer is `not_yet` and the client
    /// tracked under `key` still runs (its container or process does not
    /// exist *yet*), ask again after a growing delay, for at most
    /// `ADMIN_TIMEOUT`. A signal sent right after a start is thus not lost.
    fn admin_while_starting(
        &self,
        key: String,
        args: Vec<String>,
        not_yet: fn(&AdminOutput) -> bool,
    ) -> BoxFuture<'static, Result<AdminOutput, AdminError>> {
        let this = self.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut delays = clients::retry_delays();
            let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
            loop {
                let out = this.admin(&args, ADMIN_TIMEOUT).await;
                let retry = matches!(&out, Ok(o) if not_yet(o))
                    && this.clients.running(&key)
                    && tokio::time::Instant::now() < deadline;
                if !retry {
                    return out;
                }
                let delay = delays.next().unwrap_or(ADMIN_TIMEOUT);
                tracing::debug!(%key, ?delay, "signal before its target exists: asking again");
                tokio::time::sleep(delay).await;
            }
        }
        .boxed()
    }
}

/// Find `binary` on our own `PATH` when it is a bare name.
fn resolve_on_path(binary: &Path) -> PathBuf {
    if binary.components().count() != 1 || binary.is_absolute() {
        return binary.to_path_buf();
    }
    let Some(path) = std::env::var_os("PATH") else {
        return binary.to_path_buf();
    };
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| binary.to_path_buf())
}

/// The docker client's config directory for this process.
fn own_docker_config() -> Option<OsString> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(dir);
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".docker").into_os_string())
}

impl Runtime for DockerCli {
    fn name(&self) -> &str {
        "docker"
    }

    fn preflight(&self) -> BoxFuture<'static, Result<String, Error>> {
        let fut = self.admin(
            &["info", "--format", "{{.ServerVersion}}"],
            PREFLIGHT_TIMEOUT,
        );
        async move {
            let out = fut.await.map_err(|e| e.into_error("info", unavailable))?;
            let version = out.stdout.trim();
            if out.success && !version.is_empty() {
                Ok(version.to_string())
            } else {
                Err(unavailable(out.message("info")))
            }
        }
        .boxed()
    }

    fn build(&self, spec: BuildSpec) -> BoxStream<'static, BuildEvent> {
        // docker writes the new image's id there: runs use the id.
        let iidfile =
            std::env::temp_dir().join(format!("cldpd-iid-{}", uuid::Uuid::new_v4().simple()));
        let cmd = self.command(&args::build_args(&spec, Some(&iidfile)), &spec.build_args);
        Box::pin(BuildStream::new(
            cmd,
            self.binary.clone(),
            spec.image,
            iidfile,
        ))
    }

    fn image_exists(&self, image: &str) -> BoxFuture<'static, Result<bool, Error>> {
        self.image_id(image)
            .map(|id| id.map(|id| id.is_some()))
            .boxed()
    }

    fn image_id(&self, image: &str) -> BoxFuture<'static, Result<Option<String>, Error>> {
        let fut = self.admin(
            &["image", "inspect", "--format", "{{.Id}}", image],
            ADMIN_TIMEOUT,
        );
        async move {
            let out = fut
                .await
                .map_err(|e| e.into_error("image inspect", runtime_failed))?;
            if out.success {
                let id = out.stdout.trim();
                Ok((!id.is_empty()).then(|| id.to_string()))
            } else if out.daemon_down() {
                Err(unavailable(out.message("image inspect")))
            } else if out.stderr.to_ascii_lowercase().contains("no such image") {
                Ok(None)
            } else {
                Err(runtime_failed(out.message("image inspect")))
            }
        }
        .boxed()
    }

    fn remove_unused_image(&self, id: &str) -> BoxFuture<'static, Result<bool, Error>> {
        // `docker rmi` without -f: an image a container uses stays.
        let fut = self.admin(&["rmi", id], ADMIN_TIMEOUT);
        async move {
            let out = fut.await.map_err(|e| e.into_error("rmi", runtime_failed))?;
            let stderr = out.stderr.to_ascii_lowercase();
            if out.success {
                Ok(true)
            } else if out.daemon_down() {
                Err(unavailable(out.message("rmi")))
            } else if stderr.contains("conflict")
                || stderr.contains("being used")
                || stderr.contains("no such image")
            {
                Ok(false)
            } else {
                Err(runtime_failed(out.message("rmi")))
            }
        }
        .boxed()
    }

    fn run(&self, spec: RunSpec) -> BoxStream<'static, ProcessEvent> {
        let mut cmd = self.command(&args::run_args(&spec), &spec.env);
        // Killing the client would not stop the container; stopping goes
        // through `docker kill` / `stop` / `rm -f` by name.
        cmd.kill_on_drop(false);
        let ctx = ProcessContext {
            kind: Kind::Run,
            binary: self.binary.clone(),
            // For messages: the tag people know rather than the id run.
            image: Some(
                spec.labels
                    .get(labels::IMAGE)
                    .cloned()
                    .unwrap_or_else(|| spec.image.clone()),
            ),
            container: spec.container.clone(),
            command0: spec.command.first().cloned().unwrap_or_default(),
            line_cap: spec.line_cap,
            stdin: spec.stdin.clone(),
        };
        if spec.stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut stream = ProcessStream::new(cmd, ctx);
        if spec.stdin.as_ref().is_some_and(Stdin::keeps_open) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
            inputs.retain(|_, w| w.strong_count() > 0);
            inputs.insert(spec.container.clone(), tx.downgrade());
            stream = stream.with_input(tx, rx);
        }
        // Counted as running until its process has ended (or the stream is
        // dropped), so that a signal in the meantime waits for the
        // container to exist (see `signal`).
        self.tracked(&spec.container, stream)
    }

    fn exec(&self, spec: ExecSpec) -> BoxStream<'static, ProcessEvent> {
        let mut cmd = self.command(&args::exec_args(&spec), &[]);
        cmd.kill_on_drop(false);
        let ctx = ProcessContext {
            kind: Kind::Exec,
            binary: self.binary.clone(),
            image: None,
            container: spec.container.clone(),
            command0: spec.command.first().cloned().unwrap_or_default(),
            line_cap: spec.line_cap,
            stdin: spec.stdin.clone(),
        };
        if spec.stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        self.tracked(
            &exec_key(
                &spec.container,
                &exec_marker(&spec.command, spec.stdin.is_some()),
            ),
            ProcessStream::new(cmd, ctx),
        )
    }

    fn signal(&self, container: &str, signal: StopSignal) -> BoxFuture<'static, Result<(), Error>> {
        let args = ["kill", "--signal", signal.name(), container]
            .map(String::from)
            .to_vec();
        // "No such container" (or "is not running") while our `docker run`
        // client of it still runs: the daemon has not created (or started)
        // it yet.
        let not_yet = |o: &AdminOutput| !o.success && exit::container_gone(&o.stderr);
        let out = self.admin_while_starting(container.to_string(), args, not_yet);
        let container = container.to_string();
        async move { stop_result(out.await, "kill", &container) }.boxed()
    }

    fn signal_exec(
        &self,
        spec: &ExecSpec,
        signal: StopSignal,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let marker = exec_marker(&spec.command, spec.stdin.is_some());
        let args = [
            "exec",
            &spec.container,
            "sh",
            "-c",
            SIGNAL_EXEC_SCRIPT,
            "cldpd-signal",
            signal.name(),
            &marker,
        ]
        .map(String::from);
        // The script found no such process: not started yet while the
        // exec's client runs, already ended otherwise.
        let none = |o: &AdminOutput| o.code == Some(NO_PROCESS_MATCHED);
        let out =
            self.admin_while_starting(exec_key(&spec.container, &marker), args.to_vec(), none);
        let container = spec.container.clone();
        async move {
            match out.await {
                Ok(o) if none(&o) => Ok(()),
                out => stop_result(out, "exec kill", &container),
            }
        }
        .boxed()
    }

    fn stop(&self, container: &str, grace: Duration) -> BoxFuture<'static, Result<(), Error>> {
        // The crate's one escalation (not `docker stop`, whose grace is in
        // whole seconds); `docker wait` says when the container no longer
        // runs, and "No such container" that `--rm` has removed it.
        let wait = self.admin(
            &["wait", container],
            grace + escalation::KILL_TIMEOUT + STOP_SLACK,
        );
        let (this, container) = (self.clone(), container.to_string());
        async move {
            let stopped = async { stop_result(wait.await, "wait", &container) };
            let signal = |sig| this.signal(&container, sig);
            escalation::stop(&container, grace, signal, stopped).await
        }
        .boxed()
    }

    fn remove(&self, container: &str) -> BoxFuture<'static, Result<(), Error>> {
        let fut = self.admin(&["rm", "-f", container], ADMIN_TIMEOUT);
        let container = container.to_string();
        let this = self.clone();
        async move {
            let out = fut.await;
            let in_progress = matches!(&out, Ok(o) if o.stderr.contains("is already in progress"));
            stop_result(out, "rm -f", &container)?;
            if in_progress {
                // `--rm` is removing it: resolve once it is really gone.
                this.wait_gone(&container).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'static, Result<Vec<ContainerInfo>, Error>> {
        let filter = format!("label={}", labels::SESSION);
        let ps = self.admin(&["ps", "-aq", "--filter", &filter], ADMIN_TIMEOUT);
        let this = self.clone();
        async move {
            let out = ps.await.map_err(|e| e.into_error("ps", runtime_failed))?;
            if out.daemon_down() {
                return Err(unavailable(out.message("ps")));
            }
            if !out.success {
                return Err(runtime_failed(out.message("ps")));
            }
            let ids: Vec<&str> = out.stdout.split_whitespace().collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut argv = vec!["inspect"];
            argv.extend(ids);
            let out = this
                .admin(&argv, ADMIN_TIMEOUT)
                .await
                .map_err(|e| e.into_error("inspect", runtime_failed))?;
            if out.daemon_down() {
                return Err(unavailable(out.message("inspect")));
            }
            // A container removed between `ps` and `inspect` makes inspect
            // exit 1, but it still prints the others: parse stdout anyway.
            match inspect::parse_inspect(&out.stdout) {
                Ok(infos) => Ok(infos),
                Err(e) if out.success => Err(runtime_failed(format!(
                    "cannot parse `docker inspect` output: {e}"
                ))),
                Err(_) => Err(runtime_failed(out.message("inspect"))),
            }
        }
        .boxed()
    }

    fn write_input(&self, container: &str, bytes: Stdin) -> BoxFuture<'static, Result<(), Error>> {
        let writer = self
            .inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container)
            .and_then(|w| w.upgrade());
        let result = match writer {
            Some(tx) => tx.send(bytes).map_err(|_| Error::SessionNotFound {
                target: container.to_string(),
            }),
            None => Err(Error::InputUnavailable {
                target: container.to_string(),
                message: "the docker CLI backend reaches a live agent's stdin only from the process that started its run".into(),
            }),
        };
        futures_util::future::ready(result).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn binary_from_env_value() {
        assert_eq!(
            DockerCli::from_env_value(None).binary(),
            Path::new("docker")
        );
        assert_eq!(
            DockerCli::from_env_value(Some("".into())).binary(),
            Path::new("docker")
        );
        assert_eq!(
            DockerCli::from_env_value(Some("/opt/podman".into())).binary(),
            Path::new("/opt/podman")
        );
    }

    #[test]
    fn bare_names_resolve_on_our_path() {
        assert_eq!(
            resolve_on_path(Path::new("/x/docker")),
            Path::new("/x/docker")
        );
        let sh = resolve_on_path(Path::new("sh"));
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(
            resolve_on_path(Path::new("surely-not-a-binary-cldpd")),
            Path::new("surely-not-a-binary-cldpd")
        );
    }

    fn missing() -> DockerCli {
        DockerCli::with_binary("/nonexistent/cldpd-test/docker")
    }

    fn assert_unavailable(e: &Error) {
        match e {
            Error::DockerUnavailable { message } => {
                assert!(
                    message.contains("/nonexistent/cldpd-test/docker"),
                    "{message}"
                );
                assert!(message.contains(DOCKER_ENV), "{message}");
            }
            other => panic!("expected DockerUnavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_binary_is_docker_unavailable_everywhere() {
        let d = missing();
        assert_unavailable(&d.preflight().await.unwrap_err());
        assert_unavailable(&d.image_exists("x").await.unwrap_err());
        assert_unavailable(&d.list().await.unwrap_err());
        assert_unavailable(&d.signal("c", StopSignal::Term).await.unwrap_err());
        assert_unavailable(&d.remove("c").await.unwrap_err());
        assert_unavailable(&d.stop("c", Duration::from_secs(1)).await.unwrap_err());

        let spec = RunSpec {
            session: "s".into(),
            pod: "p".into(),
            container: "c".into(),
            image: "i".into(),
            command: vec!["claude".into()],
            env: vec![("K".into(), SecretValue::new("v"))],
            workdir: None,
            mounts: vec![],
            labels: Default::default(),
            resources: Default::default(),
            line_cap: 1024,
            stdin: None,
            network: None,
        };
        let events: Vec<_> = d.run(spec).collect().await;
        assert_eq!(events.len(), 1, "{events:?}");
        match &events[0] {
            ProcessEvent::Failed(e) => assert_unavailable(e),
            other => panic!("{other:?}"),
        }

        let build = BuildSpec {
            pod: "p".into(),
            image: "i".into(),
            context: "/tmp".into(),
            dockerfile: "/tmp/Dockerfile".into(),
            build_args: vec![],
            labels: Default::default(),
        };
        let events: Vec<_> = d.build(build).collect().await;
        assert_eq!(events.len(), 1);
        match &events[0] {
            BuildEvent::Finished(Err(e)) => assert_unavailable(e),
            other => panic!("{other:?}"),
        }
    }

    /// An argument over Linux's 128 KiB per-string limit makes the spawn of
    /// the client fail with E2BIG: that is a command line too long, naming
    /// the argument, not "docker is not available" (issue 9 item 9).
    #[tokio::test]
    async fn e2big_at_spawn_is_arguments_too_long() {
        // Any real program: execve refuses before running it.
        let d = DockerCli::with_binary("/bin/sh");
        let spec = RunSpec {
            command: vec!["claude".into(), "-p".into(), "x".repeat(200_000)],
            ..run_spec()
        };
        let events: Vec<_> = d.run(spec).collect().await;
        match &events[..] {
            [ProcessEvent::Failed(Error::ArgumentsTooLong { what, bytes, limit })] => {
                assert!(what.contains("argument"), "{what}");
                assert_eq!((*bytes, *limit), (200_000, 131_071));
            }
            other => panic!("expected ArgumentsTooLong, got {other:?}"),
        }
    }

    /// A fake docker (a shell script) shows the streaming and the exit
    /// mapping without a daemon.
    #[tokio::test]
    async fn streams_both_pipes_and_maps_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("docker");
        std::fs::write(
            &fake,
            "#!/bin/sh\n\
             echo \"argv: $*\"\n\
             echo \"secret=$API_KEY\"\n\
             i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done\n\
             printf 'no newline' >&2\n\
             exit 125\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let d = DockerCli::with_binary(&fake);
        let spec = RunSpec {
            session: "s".into(),
            pod: "p".into(),
            container: "c1".into(),
            image: "img".into(),
            command: vec!["claude".into()],
            env: vec![("API_KEY".into(), SecretValue::new("sk-123"))],
            workdir: None,
            mounts: vec![],
            labels: Default::default(),
            resources: Default::default(),
            line_cap: 1024,
            stdin: None,
            network: None,
        };
        let events: Vec<_> = d.run(spec).collect().await;
        assert!(matches!(&events[0], ProcessEvent::Started { container } if container == "c1"));
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut batches = 0;
        for ev in &events[1..events.len() - 1] {
            let ProcessEvent::Output(lines) = ev else {
                panic!("{ev:?}")
            };
            batches += 1;
            for l in lines {
                match l.stream {
                    crate::OutputStream::Stdout => stdout.push(l.text.clone()),
                    crate::OutputStream::Stderr => stderr.push(l.text.clone()),
                }
            }
        }
        assert!(
            stdout[0].starts_with("argv: run --rm --init --pull never --name c1"),
            "{}",
            stdout[0]
        );
        assert!(!stdout[0].contains("sk-123"));
        assert_eq!(stdout[1], "secret=sk-123");
        assert_eq!(stdout.len(), 3002);
        assert!(stdout[2..]
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        assert!(
            batches < 3000,
            "one event per read, not per line ({batches})"
        );
        assert_eq!(stderr, ["no newline"]);
        match events.last().unwrap() {
            ProcessEvent::Failed(Error::DockerFailed { message }) => {
                assert_eq!(message, "no newline")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A container `HOME` must not move the docker client's own config
    /// (and with it the current context) to the container's path.
    #[tokio::test]
    async fn a_container_home_does_not_move_the_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("docker");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"home=$HOME\"\necho \"config=$DOCKER_CONFIG\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let spec = RunSpec {
            session: "s".into(),
            pod: "p".into(),
            container: "c".into(),
            image: "i".into(),
            command: vec!["claude".into()],
            env: vec![("HOME".into(), SecretValue::new("/home/agent"))],
            workdir: None,
            mounts: vec![],
            labels: Default::default(),
            resources: Default::default(),
            line_cap: 1024,
            stdin: None,
            network: None,
        };
        let events: Vec<_> = DockerCli::with_binary(&fake).run(spec).collect().await;
        let lines: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Output(l) => Some(l),
                _ => None,
            })
            .flatten()
            .map(|l| l.text.clone())
            .collect();
        assert_eq!(lines[0], "home=/home/agent");
        let want = own_docker_config().map(|c| c.to_string_lossy().into_owned());
        assert_eq!(lines[1], format!("config={}", want.unwrap_or_default()));
    }

    /// A fake docker: a shell script that does what `script` says for each
    /// subcommand (`$1`).
    fn fake_docker(dir: &Path, script: &str) -> DockerCli {
        let fake = dir.join("docker");
        std::fs::write(&fake, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        DockerCli::with_binary(&fake)
    }

    fn run_spec() -> RunSpec {
        RunSpec {
            session: "s".into(),
            pod: "p".into(),
            container: "c1".into(),
            image: "img".into(),
            command: vec!["claude".into()],
            env: vec![],
            workdir: None,
            mounts: vec![],
            labels: Default::default(),
            resources: Default::default(),
            line_cap: 1024,
            stdin: None,
            network: None,
        }
    }

    fn output_texts(events: &[ProcessEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Output(l) => Some(l),
                _ => None,
            })
            .flatten()
            .map(|l| l.text.clone())
            .collect()
    }

    /// Docker's own error lines are the error's message, not the agent's
    /// output; an agent's stderr line that merely looks like one, followed
    /// by more output or a normal exit, is still delivered.
    #[tokio::test]
    async fn dockers_own_error_lines_are_not_agent_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = fake_docker(
            dir.path(),
            "echo 'agent line'\n\
             echo 'docker: Error response from daemon: invalid mount config.' >&2\n\
             echo '' >&2\n\
             echo \"Run 'docker run --help' for more information\" >&2\n\
             exit 125\n",
        );
        let events: Vec<_> = d.run(run_spec()).collect().await;
        assert_eq!(output_texts(&events), ["agent line"]);
        match events.last().unwrap() {
            ProcessEvent::Failed(Error::DockerFailed { message }) => {
                assert_eq!(message, "Error response from daemon: invalid mount config.")
            }
            other => panic!("{other:?}"),
        }

        let d = fake_docker(
            dir.path(),
            "echo 'Error: not found' >&2\necho 'after'\necho 'Error: the end' >&2\nexit 2\n",
        );
        let events: Vec<_> = d.run(run_spec()).collect().await;
        let mut out = output_texts(&events);
        out.sort();
        assert_eq!(out, ["Error: not found", "Error: the end", "after"]);
        assert!(matches!(
            events.last().unwrap(),
            ProcessEvent::Exited { code: 2 }
        ));
    }

    /// The daemon dying mid-run (the client's real message, exit 125) is
    /// not docker's own error about the image or options: the run is lost,
    /// and the daemon still not answering `docker wait` says so.
    #[tokio::test]
    async fn a_daemon_lost_mid_run_is_docker_lost_not_dockers_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = fake_docker(
            dir.path(),
            "case \"$1\" in\n\
             run) echo 'line 9'\n\
                  echo 'time=\"2026-11-30T20:52:17Z\" level=error msg=\"error waiting for container: unexpected EOF\"' >&2\n\
                  exit 125;;\n\
             *) echo 'Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?' >&2; exit 1;;\n\
             esac\n",
        );
        let events: Vec<_> = d.run(run_spec()).collect().await;
        assert_eq!(output_texts(&events), ["line 9"]);
        match events.last().unwrap() {
            ProcessEvent::Failed(e @ Error::DockerLost { container, message }) => {
                assert_eq!(container, "c1");
                assert!(
                    message.contains("error waiting for container: unexpected EOF"),
                    "{message}"
                );
                assert!(
                    message.contains("Cannot connect to the Docker daemon"),
                    "{message}"
                );
                assert!(e.hint().unwrap().contains("docker info"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A `docker run` client killed by a signal is not the container's
    /// exit: the stream reads the rest from `docker logs --follow` (what was
    /// delivered skipped exactly, a line cut by the loss completed, not
    /// split) and ends with `docker wait`'s code.
    #[tokio::test]
    async fn a_killed_run_client_is_followed_by_logs_and_wait() {
        let dir = tempfile::tempdir().unwrap();
        let d = fake_docker(
            dir.path(),
            "case \"$1\" in\n\
             run) echo a; echo e1 >&2; echo b; printf par; sleep 0.2; kill -9 $$;;\n\
             logs) printf 'a\\nb\\npartial\\nc\\n'; printf 'e1\\ne2\\n' >&2;;\n\
             wait) echo 7;;\n\
             esac\n",
        );
        let events: Vec<_> = d.run(run_spec()).collect().await;
        let lines: Vec<(crate::OutputStream, String)> = events
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Output(l) => Some(l),
                _ => None,
            })
            .flatten()
            .map(|l| (l.stream, l.text.clone()))
            .collect();
        let of = |s: crate::OutputStream| -> Vec<&str> {
            lines
                .iter()
                .filter(|l| l.0 == s)
                .map(|l| l.1.as_str())
                .collect()
        };
        assert_eq!(of(crate::OutputStream::Stdout), ["a", "b", "partial", "c"]);
        assert_eq!(of(crate::OutputStream::Stderr), ["e1", "e2"]);
        assert!(
            matches!(events.last().unwrap(), ProcessEvent::Exited { code: 7 }),
            "{events:?}"
        );
    }

    /// A build cut off by the daemon's death (its real last line,
    /// `unexpected EOF`, exit 1) is Docker unavailable, not a Dockerfile to
    /// fix — unless the daemon answers, in which case the build step itself
    /// printed it.
    #[tokio::test]
    async fn a_daemon_lost_mid_build_is_docker_unavailable() {
        let build = BuildSpec {
            pod: "p".into(),
            image: "i".into(),
            context: "/tmp".into(),
            dockerfile: "/tmp/Dockerfile".into(),
            build_args: vec![],
            labels: Default::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let script = |info: &str| {
            format!(
                "case \"$1\" in\n\
                 build) echo 'Step 2/2 : RUN make'; echo ' ---> Running in fd8278bc784d'; echo 'unexpected EOF'; exit 1;;\n\
                 info) {info};;\n\
                 esac\n"
            )
        };
        let down = fake_docker(
            dir.path(),
            &script("echo 'Cannot connect to the Docker daemon at unix:///x.sock.' >&2; exit 1"),
        );
        let events: Vec<_> = down.build(build.clone()).collect().await;
        match events.last().unwrap() {
            BuildEvent::Finished(Err(Error::DockerUnavailable { message })) => {
                assert!(message.contains("broke during the build"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let up = fake_docker(dir.path(), &script("echo 20.10.24; exit 0"));
        let events: Vec<_> = up.build(build).collect().await;
        assert!(matches!(
            events.last().unwrap(),
            BuildEvent::Finished(Err(Error::BuildFailed { .. }))
        ));
    }
}

/// Signals the processes of a container whose command line contains a
/// marker (`$2`), skipping itself. The shell drops the NUL separators of
/// `/proc/<pid>/cmdline`, so the marker is the exec's arguments run
/// together. Needs `sh` and `cat` in the image (any image with a shell).
const SIGNAL_EXEC_SCRIPT: &str = r#"sig=$1; marker=$2; self=$$
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = "$self" ] && continue
  c=$(cat "$d/cmdline" 2>/dev/null) || continue
  case "$c" in *"$marker"*) kill -s "$sig" "$p" 2>/dev/null && n=$((n+1)) ;; esac
done
[ "${n:-0}" -gt 0 ] || exit 3"#;

/// How `SIGNAL_EXEC_SCRIPT` says that no process matched.
const NO_PROCESS_MATCHED: i32 = 3;

/// What `clients` tracks an exec's client under: its container and its
/// [`exec_marker`].
fn exec_key(container: &str, marker: &str) -> String {
    format!("{container}\0{marker}")
}

/// What identifies an exec's process: its arguments after the program
/// (which an interpreter may rewrite), run together:
/// `-p--output-formatstream-json--verbose--resume<uuid>` for a resume. An
/// exec whose prompt is in argv (no stdin; the last argument, free text)
/// leaves that argument out.
fn exec_marker(command: &[String], prompt_on_stdin: bool) -> String {
    let args = command.get(1..).unwrap_or_default();
    let args = if args.len() >= 2 && !prompt_on_stdin {
        &args[..args.len() - 1]
    } else {
        args
    };
    args.concat()
}

#[cfg(test)]
mod marker_tests {
    use super::exec_marker;

    #[test]
    fn the_marker_is_the_arguments_without_program_and_prompt() {
        let cmd: Vec<String> = ["claude", "-p", "--resume", "u-1", "free text"]
            .map(String::from)
            .to_vec();
        assert_eq!(exec_marker(&cmd, false), "-p--resumeu-1");
        assert_eq!(exec_marker(&["x".to_string(), "y".to_string()], false), "y");
        assert_eq!(exec_marker(&[], false), "");
        // The prompt on stdin: every argument is the command's own.
        let cmd: Vec<String> = ["claude", "-p", "--resume", "u-1"]
            .map(String::from)
            .to_vec();
        assert_eq!(exec_marker(&cmd, true), "-p--resumeu-1");
    }
}
