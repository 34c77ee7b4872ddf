//! The Docker Engine API backend (bollard): no docker client process per
//! run, one connection pool per process.
//!
//! | call | Engine API |
//! |---|---|
//! | preflight | `GET /version` |
//! | build | `POST /build` with a tar of the pod directory; build args in the request, never in argv |
//! | image_exists | `GET /images/{name}/json` |
//! | run | `POST /containers/create` (labels, env, bind mounts, `Init`, resources, workdir, name, `NetworkMode`; `OpenStdin` + `StdinOnce` with a stdin) → `POST /containers/{id}/attach` (before the start, so no output is lost; `stdin=1` with a stdin) → `POST /containers/{id}/start` → stdin written then half-closed, beside the output → `POST /containers/{id}/wait` → `DELETE /containers/{id}` |
//! | exec | `POST /containers/{id}/exec` (`AttachStdin` with a stdin) → `POST /exec/{id}/start` → stdin written then half-closed, beside the output → `GET /exec/{id}/json` (exit code) |
//! | signal | `POST /containers/{id}/kill?signal=` |
//! | signal_exec | a second exec that signals the processes carrying the exec's unique marker ([`exec`](self::exec)) |
//! | stop | `POST /containers/{id}/kill?signal=` (TERM, then KILL after the grace: `runtime::escalation`) and `POST /containers/{id}/wait?condition=not-running` |
//! | remove | `DELETE /containers/{id}?force=true` |
//! | list | `GET /containers/json?all=true&filters={"label":["cldpd.session"]}` |
//!
//! **Which engine.** `DOCKER_HOST` as the docker CLI reads it: unset means
//! `unix:///var/run/docker.sock`; `unix://`, `tcp://` (TLS with
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`) and `ssh://` work. bollard
//! 0.21 sends requests without an API version prefix, so the engine answers
//! at its own version (Docker 20.10: API 1.41).
//!
//! **Runtimes.** Every request runs on one dedicated runtime thread
//! (`driver`), whatever actix arbiter or tokio runtime calls: a bollard
//! client used from several tokio runtimes breaks (bollard issue #387).
//!
//! **Stdin.** A run or exec with a [`Stdin`](crate::runtime::Stdin) is
//! attached with stdin before it starts; the bytes are written beside the
//! reading of the output and the write half of the connection is then shut
//! down, which the engine turns into EOF on the process's stdin
//! (`StdinOnce`; an exec's stdin always closes so). `stdin.rs` keeps that
//! write half as a value of its own, so a long-lived agent that takes
//! follow-ups on one open stdin can hold it instead of closing it.
//!
//! **Errors** are typed from the engine's HTTP status: a missing image is
//! [`Error::ImageMissing`], an unreachable engine
//! [`Error::DockerUnavailable`], an engine lost while a container runs (or
//! a container removed before its exit code was read)
//! [`Error::DockerLost`], an exec into a container that is gone or
//! stopped [`Error::SessionNotFound`] (no `Started` first), exit 126/127
//! of the agent (or an OCI error saying so at start)
//! [`Error::AgentNotRunnable`], any other refusal of create/start
//! [`Error::DockerFailed`] with the engine's message.
//!
//! **Secrets.** Env values travel only in the create request's body and
//! build-arg values only in the build request, and neither is logged,
//! not even by bollard at `trace`: bollard builds (and logs) requests
//! holding placeholders, swapped for the values as the request leaves
//! (`secrets`).
//!
//! ```no_run
//! use cldpd::runtime::{EngineApi, Runtime};
//! # async fn demo() -> cldpd::Result<()> {
//! let engine = EngineApi::new(); // $DOCKER_HOST, or the local socket
//! println!("Docker {}", engine.preflight().await?);
//! # Ok(()) }
//! ```

mod build;
mod context;
mod driver;
mod errors;
mod exec;
mod host;
mod output;
mod run;
mod secrets;
mod stdin;
mod summary;
mod tracker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{BoxStream, StreamExt};

use self::errors::{failure, stop_result, Failure};
use self::tracker::Tracker;
use crate::error::Error;
use crate::runtime::escalation;
use crate::runtime::{
    labels, BuildEvent, BuildSpec, ContainerInfo, ExecSpec, ProcessEvent, RunSpec, Runtime, Stdin,
    StopSignal,
};

/// How long short calls (kill, remove, list, inspect) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// First delay before a signal that found no container yet is asked again.
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(200);

/// The Docker Engine API backend: a [`Runtime`] that talks to the engine
/// over its HTTP API (bollard). See the module docs of `runtime::engine_api`
/// (in the source).
///
/// Cheap to clone; clones (and every `EngineApi` of the same host in the
/// process) share one connection pool.
///
/// ```
/// use cldpd::runtime::EngineApi;
/// let engine = EngineApi::with_host("unix:///var/run/docker.sock");
/// assert_eq!(engine.host(), "unix:///var/run/docker.sock");
/// ```
#[derive(Debug, Clone)]
pub struct EngineApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: String,
    /// Runs of this process being created and started, by container.
    starting: Tracker,
    /// Live execs of this process and their markers.
    execs: Tracker,
    /// The open stdin of each live run of this process given a
    /// [`Stdin::open`](crate::runtime::Stdin::open): the sender feeding
    /// its attach connection, held weakly (the run holds it, so the entry
    /// dies with the run).
    inputs: Mutex<HashMap<String, tokio::sync::mpsc::WeakUnboundedSender<Stdin>>>,
}

impl Default for EngineApi {
    /// Same as [`EngineApi::new`].
    fn default() -> Self {
        EngineApi::new()
    }
}

impl EngineApi {
    /// The engine named by `DOCKER_HOST` (unset: the local socket).
    pub fn new() -> Self {
        Self::with_host(host::host_from(std::env::var("DOCKER_HOST").ok()))
    }

    /// The engine at `host` (`unix://…`, `tcp://…`, `ssh://…`). Nothing
    /// is connected until the first call.
    pub fn with_host(host: impl Into<String>) -> Self {
        EngineApi {
            inner: Arc::new(Inner {
                host: host.into(),
                starting: Tracker::default(),
                execs: Tracker::default(),
                inputs: Mutex::default(),
            }),
        }
    }

    /// The engine's address.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Remove an image tag (force; already gone is not an error). For
    /// cleanup by tools such as `cldpd doctor`.
    pub fn remove_image(&self, image: &str) -> BoxFuture<'static, Result<(), Error>> {
        let image = image.to_string();
        self.call(move |docker| async move {
            let options = bollard::query_parameters::RemoveImageOptions {
                force: true,
                ..Default::default()
            };
            let fut = docker.remove_image(&image, Some(options), None);
            match tokio::time::timeout(ADMIN_TIMEOUT, fut).await {
                Err(_) => Err(admin_timeout("image remove")),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) if matches!(failure(&e), Failure::Status(404, _)) => Ok(()),
                Ok(Err(e)) => Err(errors::runtime("image remove", &e)),
            }
        })
    }

    /// The process's client for this host (connected on first use, inside
    /// the driver runtime; a failed connection is tried again next time).
    fn client(host: &str) -> Result<Docker, Error> {
        static CLIENTS: OnceLock<Mutex<HashMap<String, Docker>>> = OnceLock::new();
        let clients = CLIENTS.get_or_init(Default::default);
        let mut map = clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = map.get(host) {
            return Ok(d.clone());
        }
        let docker = host::connect(host)?;
        map.insert(host.to_string(), docker.clone());
        Ok(docker)
    }

    /// Run `f` with the client on the driver runtime.
    fn call<T, F, Fut>(&self, f: F) -> BoxFuture<'static, Result<T, Error>>
    where
        T: Send + 'static,
        F: FnOnce(Docker) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    {
        let host = self.inner.host.clone();
        driver::call(async move {
            let docker = Self::client(&host)?;
            f(docker).await
        })
    }

    /// A stream produced on the driver runtime; `failed` turns a
    /// connection error into the stream's only item.
    fn stream<T, F, Fut>(&self, failed: fn(Error) -> T, f: F) -> BoxStream<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(Docker, tokio::sync::mpsc::Sender<T>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let host = self.inner.host.clone();
        driver::stream(move |tx| async move {
            match Self::client(&host) {
                Ok(docker) => f(docker, tx).await,
                Err(e) => {
                    let _ = tx.send(failed(e)).await;
                }
            }
        })
    }

    /// Ask `attempt` again (growing delays, for at most `ADMIN_TIMEOUT`)
    /// while it answers `Ok(false)` ("nothing there yet") and `key` is
    /// still being started by this process.
    async fn while_starting<F, Fut>(
        tracker: &Tracker,
        key: &str,
        mut attempt: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, Error>>,
    {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        let mut delay = FIRST_RETRY;
        loop {
            if attempt().await? || !tracker.contains(key) || tokio::time::Instant::now() >= deadline
            {
                return Ok(());
            }
            tracing::debug!(%key, ?delay, "signal before its target exists: asking again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}

fn signal_name(signal: StopSignal) -> String {
    format!("SIG{}", signal.name())
}

fn admin_timeout(what: &str) -> Error {
    Error::RuntimeFailed {
        message: format!(
            "the engine did not answer `{what}` within {}",
            humantime::format_duration(ADMIN_TIMEOUT)
        ),
    }
}

impl Runtime for EngineApi {
    fn name(&self) -> &str {
        "engine-api"
    }

    fn preflight(&self) -> BoxFuture<'static, Result<String, Error>> {
        let host = self.inner.host.clone();
        self.call(move |docker| async move {
            let version = tokio::time::timeout(ADMIN_TIMEOUT, docker.version())
                .await
                .map_err(|_| errors::unavailable(format!("{host} did not answer")))?;
            match version {
                Ok(v) => Ok(v.version.unwrap_or_else(|| "unknown".into())),
                Err(e) => Err(errors::unavailable(format!("cannot reach {host}: {e}"))),
            }
        })
    }

    fn build(&self, spec: BuildSpec) -> BoxStream<'static, BuildEvent> {
        self.stream(
            |e| BuildEvent::Finished(Err(e)),
            move |docker, tx| build::build(docker, spec, tx),
        )
    }

    fn image_exists(&self, image: &str) -> BoxFuture<'static, Result<bool, Error>> {
        self.image_id(image)
            .map(|id| id.map(|id| id.is_some()))
            .boxed()
    }

    fn image_id(&self, image: &str) -> BoxFuture<'static, Result<Option<String>, Error>> {
        let image = image.to_string();
        self.call(move |docker| async move {
            match tokio::time::timeout(ADMIN_TIMEOUT, docker.inspect_image(&image)).await {
                Err(_) => Err(admin_timeout("image inspect")),
                Ok(Ok(info)) => Ok(info.id),
                Ok(Err(e)) => match failure(&e) {
                    Failure::Status(404, _) => Ok(None),
                    _ => Err(errors::runtime("image inspect", &e)),
                },
            }
        })
    }

    fn remove_unused_image(&self, id: &str) -> BoxFuture<'static, Result<bool, Error>> {
        let id = id.to_string();
        self.call(move |docker| async move {
            // Never forced: an image a container uses (409) stays.
            let options = bollard::query_parameters::RemoveImageOptions {
                force: false,
                ..Default::default()
            };
            let fut = docker.remove_image(&id, Some(options), None);
            match tokio::time::timeout(ADMIN_TIMEOUT, fut).await {
                Err(_) => Err(admin_timeout("image remove")),
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) => match failure(&e) {
                    Failure::Status(404 | 409, _) => Ok(false),
                    _ => Err(errors::runtime("image remove", &e)),
                },
            }
        })
    }

    fn run(&self, spec: RunSpec) -> BoxStream<'static, ProcessEvent> {
        // Tracked from now on, so that a signal sent before the run's task
        // got going waits for the container.
        let guard = self.inner.starting.track(&spec.container, "");
        // An open stdin: later `write_input`s of this process go through
        // the run's own attach connection, in order after its bytes.
        let more = spec.stdin.as_ref().filter(|s| s.keeps_open()).map(|_| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut inputs = self
                .inner
                .inputs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            inputs.retain(|_, w| w.strong_count() > 0);
            inputs.insert(spec.container.clone(), tx.downgrade());
            (tx, rx)
        });
        self.stream(ProcessEvent::Failed, move |docker, tx| async move {
            let (writer, more) = more.unzip();
            run::run(docker, spec, guard, more, tx).await;
            drop(writer);
        })
    }

    fn exec(&self, spec: ExecSpec) -> BoxStream<'static, ProcessEvent> {
        let tracked = exec::track(&self.inner.execs, &spec);
        self.stream(ProcessEvent::Failed, move |docker, tx| {
            exec::exec(docker, spec, tracked, tx)
        })
    }

    fn signal(&self, container: &str, signal: StopSignal) -> BoxFuture<'static, Result<(), Error>> {
        let container = container.to_string();
        let starting = self.inner.starting.clone();
        self.call(move |docker| async move {
            let kill = || {
                let options = KillContainerOptions {
                    signal: signal_name(signal),
                };
                let fut = docker.kill_container(&container, Some(options));
                let container = container.clone();
                async move {
                    match tokio::time::timeout(ADMIN_TIMEOUT, fut).await {
                        Err(_) => Err(admin_timeout("kill")),
                        Ok(Ok(())) => Ok(true),
                        // Not created or not started yet, or already gone.
                        Ok(Err(e)) if errors::gone(&e) => Ok(false),
                        Ok(Err(e)) => stop_result(Err(e), &container).map(|()| true),
                    }
                }
            };
            Self::while_starting(&starting, &container, kill).await
        })
    }

    fn signal_exec(
        &self,
        spec: &ExecSpec,
        signal: StopSignal,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let key = exec::exec_key(spec);
        let container = spec.container.clone();
        let execs = self.inner.execs.clone();
        self.call(move |docker| async move {
            let attempt = || {
                let markers = execs.values(&key);
                let (docker, container) = (docker.clone(), container.clone());
                async move {
                    if markers.is_empty() {
                        return Ok(true); // no exec of ours: nothing to signal
                    }
                    exec::signal_markers(&docker, &container, signal.name(), &markers).await
                }
            };
            Self::while_starting(&execs, &key, attempt).await
        })
    }

    fn stop(&self, container: &str, grace: Duration) -> BoxFuture<'static, Result<(), Error>> {
        // The crate's one escalation (not the engine's own stop, whose
        // grace is in whole seconds); the wait for "not-running" says when
        // the container no longer runs.
        let name = container.to_string();
        let stopped = self.call(move |docker| async move {
            let options = WaitContainerOptions {
                condition: "not-running".into(),
            };
            match docker.wait_container(&name, Some(options)).next().await {
                // An exit code other than 0 is an error value in bollard.
                None | Some(Ok(_)) => Ok(()),
                Some(Err(BollardError::DockerContainerWaitError { .. })) => Ok(()),
                Some(Err(e)) => stop_result(Err(e), &name),
            }
        });
        let (this, container) = (self.clone(), container.to_string());
        async move {
            let signal = |sig| this.signal(&container, sig);
            escalation::stop(&container, grace, signal, stopped).await
        }
        .boxed()
    }

    fn remove(&self, container: &str) -> BoxFuture<'static, Result<(), Error>> {
        let container = container.to_string();
        self.call(move |docker| async move {
            let options = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            let fut = docker.remove_container(&container, Some(options));
            match tokio::time::timeout(ADMIN_TIMEOUT, fut).await {
                Err(_) => Err(admin_timeout("remove")),
                Ok(r) => stop_result(r, &container),
            }
        })
    }

    fn list(&self) -> BoxFuture<'static, Result<Vec<ContainerInfo>, Error>> {
        self.call(move |docker| async move {
            let options = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![labels::SESSION.to_string()],
                )])),
                ..Default::default()
            };
            let list = tokio::time::timeout(ADMIN_TIMEOUT, docker.list_containers(Some(options)))
                .await
                .map_err(|_| admin_timeout("list"))?
                .map_err(|e| errors::runtime("list", &e))?;
            Ok(list
                .into_iter()
                .map(|c| ContainerInfo {
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    exit_code: c.status.as_deref().and_then(summary::exit_code_of_status),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    labels: c
                        .labels
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| k.starts_with("cldpd."))
                        .collect(),
                })
                .collect())
        })
    }

    fn write_input(&self, container: &str, bytes: Stdin) -> BoxFuture<'static, Result<(), Error>> {
        let own = self
            .inner
            .inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(container)
            .and_then(|w| w.upgrade());
        let bytes = match own {
            Some(writer) => match writer.send(bytes) {
                Ok(()) => return Box::pin(futures_util::future::ready(Ok(()))),
                // The run's own attach broke (see `run::run`): attach anew.
                Err(tokio::sync::mpsc::error::SendError(bytes)) => bytes,
            },
            None => bytes,
        };
        let container = container.to_string();
        self.call(
            move |docker| async move { stdin::write_attached(&docker, &container, bytes).await },
        )
    }
}
