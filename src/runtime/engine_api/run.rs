//! One run: create → attach → start → `Started` → output (and stdin,
//! beside it: [`super::stdin`]) → wait → remove → `Exited`.
//!
//! The container is created without `AutoRemove`, so that its exit code
//! can always be read after it exited (`wait` with `not-running` after the
//! start returns at once for a container that already ended); the run
//! removes it itself before it reports the exit, so that, as with
//! `docker run --rm`, nothing is left once `Exited` is seen. The wait is
//! asked for right after the start, so a container force-removed by
//! someone else reports the SIGKILL's 137. A broken attach connection is
//! not an exit: the run then waits for the container's real exit, and
//! fails with [`Error::DockerLost`] when the engine stays unreachable for
//! `LOST_ENGINE` or the container was removed before its code was read —
//! never with a made-up code. The output goes on from the container's log
//! (`GET /containers/{id}/logs?follow=1`, once the engine answers again):
//! what was delivered before the break is skipped byte for byte, so no
//! line is lost or repeated where the log driver keeps the bytes
//! (`json-file`, the default, stores invalid UTF-8 lossily); with a log
//! driver that cannot be read, or a container removed meanwhile, the
//! output after the break is missing and a warning says so. The input
//! half of the broken attach is dropped with it: this process's later
//! `write_input`s attach anew (bytes written into the connection as it
//! broke are lost, as they would be for any client).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, LogsOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc::Sender;

use super::errors::{failure, not_runnable_code, unavailable, Failure};
use super::output::{End, Frames, Pump};
use super::secrets::Placeholders;
use super::stdin::{Feeding, Input, More};
use super::tracker::Guard;
use crate::error::Error;
use crate::runtime::{labels, ProcessEvent, RunSpec};

/// How long the engine may take to answer the calls around a run.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a run whose output ended waits for the wait's answer before
/// it asks whether the container still runs.
const EXIT_SETTLE: Duration = Duration::from_secs(2);

/// How long a run waits for a lost engine to come back before it fails.
const LOST_ENGINE: Duration = Duration::from_secs(20);

/// Run `spec`, sending its events to `tx`. `guard` holds the container in
/// the backend's `starting` tracker (taken when `run` was called) until
/// the container has started.
pub(crate) async fn run(
    docker: Docker,
    spec: RunSpec,
    guard: Guard,
    more: Option<More>,
    tx: Sender<ProcessEvent>,
) {
    let (frames, input) = match create_and_start(&docker, &spec).await {
        Ok(attached) => attached,
        Err(e) => {
            let _ = tx.send(ProcessEvent::Failed(e)).await;
            return;
        }
    };
    drop(guard);
    // Asked for now, so that it is registered before the container can
    // end (and be removed by someone else): the exit code is not lost.
    let mut waiting = {
        let (docker, container) = (docker.clone(), spec.container.clone());
        tokio::spawn(async move { wait_exit(&docker, &container).await })
    };
    // The wait's answer, once it came while the output was being read.
    let mut exit = None;
    let _ = tx
        .send(ProcessEvent::Started {
            container: spec.container.clone(),
        })
        .await;
    // The prompt, written once the process runs, beside the reading of
    // its output; aborted (whatever is unread dropped) once the run ends.
    let mut feeding = Some(Feeding::start(input, spec.stdin.clone(), more));
    let mut frames = frames;
    let mut pump = Pump::new(spec.line_cap);
    loop {
        let end = pump.run(&mut frames, &tx).await;
        if !matches!(end, End::Dropped) {
            // The attach is over, its input half with it: this process's
            // later `write_input`s attach anew (as another process's do).
            feeding = None;
        }
        let end = match end {
            // A killed engine closes the attach stream cleanly, as an exit
            // does. An exit's wait answers at once; only when it does not
            // is the container's state asked (a state read right at the
            // exit may still say "running", and a needless re-reading of
            // the log would shift a line whose invalid UTF-8 the log
            // stored lossily).
            End::Closed if exit.is_none() => {
                match tokio::time::timeout(EXIT_SETTLE, &mut waiting).await {
                    Ok(answer) => {
                        exit = Some(answer);
                        End::Closed
                    }
                    Err(_) if still_running(&docker, &spec.container).await => {
                        End::Broken(bollard::errors::Error::IOError {
                            err: std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the attach stream ended while the container runs",
                            ),
                        })
                    }
                    Err(_) => End::Closed,
                }
            }
            end => end,
        };
        match end {
            End::Closed => break,
            End::Dropped => {
                // Nobody reads; the container goes on (see `Runtime::run`):
                // drain the stream so that it can, then clean up at its exit.
                while frames.next().await.is_some() {}
                break;
            }
            End::Broken(e) => {
                tracing::warn!(container = %spec.container, error = %e, "attach connection broken; going on from the container's log");
                let deadline = tokio::time::Instant::now() + LOST_ENGINE;
                match log_frames(&docker, &spec.container, deadline).await {
                    Some(log) => {
                        frames = log;
                        pump.rewind();
                    }
                    None => {
                        pump.flush(&tx).await;
                        break;
                    }
                }
            }
        }
    }
    drop(feeding);
    let answer = match exit {
        Some(answer) => answer,
        None => waiting.await,
    };
    let outcome = match answer {
        Ok(outcome) => outcome,
        Err(e) => Err(Error::internal(format!("waiting for the exit failed: {e}"))),
    };
    let remove = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    if !matches!(outcome, Err(Error::DockerLost { .. })) {
        let removed = tokio::time::timeout(
            CALL_TIMEOUT,
            docker.remove_container(&spec.container, Some(remove)),
        )
        .await;
        if let Ok(Err(e)) = removed {
            if !super::errors::gone(&e) {
                tracing::warn!(container = %spec.container, error = %e, "removing the exited container failed");
            }
        }
    }
    let event = match outcome {
        Ok(code @ (126 | 127)) => {
            let message = pump.message();
            ProcessEvent::Failed(Error::AgentNotRunnable {
                image: shown_image(&spec),
                command: spec.command.first().cloned().unwrap_or_default(),
                code: not_runnable_code(&message).unwrap_or(code),
                message,
            })
        }
        Ok(code) => ProcessEvent::Exited { code },
        Err(e) => ProcessEvent::Failed(e),
    };
    let _ = tx.send(event).await;
}

/// Create, attach (output, and stdin when the run has some), start. On
/// failure after the create, the container is removed again.
async fn create_and_start(docker: &Docker, spec: &RunSpec) -> Result<(Frames, Input), Error> {
    let options = CreateContainerOptions {
        name: Some(spec.container.clone()),
        ..Default::default()
    };
    tracing::debug!(container = %spec.container, image = %spec.image, "engine api: create");
    let mut secrets = Placeholders::default();
    let body = create_body(spec, &mut secrets);
    let created = timed(docker.create_container(Some(options), body)).await;
    drop(secrets);
    if let Err(e) = created {
        return Err(match e {
            Failed::Engine(e) => match failure(&e) {
                Failure::Unreachable(m) => unavailable(m),
                Failure::Status(404, _) => Error::ImageMissing {
                    image: shown_image(spec),
                },
                Failure::Status(_, m) | Failure::Other(m) => Error::DockerFailed { message: m },
            },
            Failed::Timeout => timeout_error("create"),
        });
    }
    let undo = |e: Error| async {
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let _ = timed(docker.remove_container(&spec.container, Some(opts))).await;
        e
    };
    let attach = AttachContainerOptions {
        stream: true,
        stdin: spec.stdin.is_some(),
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let attached = match timed(docker.attach_container(&spec.container, Some(attach))).await {
        Ok(a) => (a.output, a.input),
        Err(e) => return Err(undo(start_error(e, spec, "attach")).await),
    };
    if let Err(e) = timed(docker.start_container(&spec.container, None)).await {
        return Err(undo(start_error(e, spec, "start")).await);
    }
    Ok(attached)
}

/// The create request. Env values go in this body only, as placeholders
/// that `secrets` turns into the values as the request leaves.
fn create_body(spec: &RunSpec, secrets: &mut Placeholders) -> ContainerCreateBody {
    let mut all_labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in [(labels::SESSION, &spec.session), (labels::POD, &spec.pod)] {
        if !value.is_empty() {
            all_labels
                .entry(key.to_string())
                .or_insert_with(|| value.clone());
        }
    }
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let host_config = HostConfig {
        init: Some(true),
        mounts: (!mounts.is_empty()).then_some(mounts),
        nano_cpus: spec.resources.cpus.map(|c| (c * 1e9).round() as i64),
        memory: spec.resources.memory_bytes.map(|b| b as i64),
        pids_limit: spec.resources.pids_limit.map(i64::from),
        // `bridge`, `none`, `host` or a network's name, as `--network`.
        network_mode: spec.network.clone(),
        ..Default::default()
    };
    // A stdin to write: open, and closed by the engine when the one
    // attached client (this run) closes its end (`docker run -i`). An
    // open stdin (`Stdin::open`: follow-ups for a long-lived agent) is
    // not closed when an attached client leaves, so that other clients
    // (`write_input` from another process) can attach and write too.
    let stdin = spec.stdin.is_some().then_some(true);
    let once = spec.stdin.as_ref().map(|s| !s.keeps_open());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.command.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(name, value)| format!("{name}={}", secrets.add(value)))
                .collect(),
        ),
        working_dir: spec.workdir.clone(),
        labels: Some(all_labels),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: stdin,
        open_stdin: stdin,
        stdin_once: once,
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// True when the container runs, or when the engine cannot say (it went
/// away: the container may run on, with `--live-restore`). From the list,
/// never an inspect (see `super::summary`).
async fn still_running(docker: &Docker, container: &str) -> bool {
    match tokio::time::timeout(CALL_TIMEOUT, super::summary::summary(docker, container)).await {
        Err(_) => true,
        Ok(Ok(c)) => c.as_ref().is_some_and(super::summary::running),
        Ok(Err(e)) => matches!(failure(&e), Failure::Unreachable(_)),
    }
}

/// The container's output from the start of its log, following it, once
/// the engine answers (retried until `deadline` while it is unreachable).
/// `None` when the log cannot be read: the engine stayed away, the
/// container is gone, or its log driver cannot be read back.
async fn log_frames(
    docker: &Docker,
    container: &str,
    deadline: tokio::time::Instant,
) -> Option<Frames> {
    let mut delay = Duration::from_millis(50);
    loop {
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut log = docker.logs(container, Some(options)).boxed();
        let err = match log.next().await {
            // An empty log of a container that ended: nothing more to read.
            None => return Some(futures_util::stream::empty().boxed()),
            Some(Ok(first)) => {
                let first = futures_util::stream::once(async move { Ok(first) });
                return Some(first.chain(log).boxed());
            }
            Some(Err(e)) => e,
        };
        match failure(&err) {
            Failure::Unreachable(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            _ => {
                tracing::warn!(container, error = %err, "the container's log cannot be read: its output after the broken connection is missing");
                return None;
            }
        }
    }
}

/// The container's exit code once it is not running. A broken connection
/// is retried for a while (the engine may come back); an engine that
/// stays unreachable is [`Error::DockerUnavailable`].
async fn wait_exit(docker: &Docker, container: &str) -> Result<i32, Error> {
    // Set at the first failed connection: how long the engine may stay away.
    let mut deadline = None;
    let mut delay = Duration::from_millis(50);
    loop {
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let first = docker.wait_container(container, Some(options)).next().await;
        let err = match first {
            Some(Ok(r)) => return Ok(r.status_code as i32),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                return Ok(code as i32)
            }
            Some(Err(e)) => e,
            None => {
                return Err(Error::RuntimeFailed {
                    message: format!("the engine ended the wait for {container} without a status"),
                })
            }
        };
        match failure(&err) {
            Failure::Status(404, _) => {
                // Removed by someone else before its exit was read (the
                // wait is asked for right after the start, so this takes a
                // lost engine or a very quick removal): how it ended is
                // unknown, and no code is made up.
                return Err(Error::DockerLost {
                    container: container.to_string(),
                    message: "the container was removed before its exit code could be read".into(),
                });
            }
            Failure::Unreachable(m)
                if tokio::time::Instant::now()
                    >= *deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + LOST_ENGINE) =>
            {
                return Err(Error::DockerLost {
                    container: container.to_string(),
                    message: format!(
                        "the engine could not be reached for {} while the container ran: {m}",
                        humantime::format_duration(LOST_ENGINE)
                    ),
                })
            }
            Failure::Unreachable(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Failure::Status(_, m) | Failure::Other(m) => {
                return Err(Error::RuntimeFailed {
                    message: format!("waiting for container {container}: {m}"),
                })
            }
        }
    }
}

/// The image as people know it, for messages: the tag (label
/// `cldpd.image`), not the id the run uses.
fn shown_image(spec: &RunSpec) -> String {
    spec.labels
        .get(labels::IMAGE)
        .cloned()
        .unwrap_or_else(|| spec.image.clone())
}

/// A failed attach or start.
fn start_error(e: Failed, spec: &RunSpec, what: &str) -> Error {
    let e = match e {
        Failed::Timeout => return timeout_error(what),
        Failed::Engine(e) => e,
    };
    match failure(&e) {
        Failure::Unreachable(m) => unavailable(m),
        Failure::Status(_, m) => match not_runnable_code(&m) {
            Some(code) => Error::AgentNotRunnable {
                image: shown_image(spec),
                command: spec.command.first().cloned().unwrap_or_default(),
                code,
                message: m,
            },
            None => Error::DockerFailed { message: m },
        },
        Failure::Other(m) => Error::RuntimeFailed {
            message: format!("{what}: {m}"),
        },
    }
}

pub(crate) enum Failed {
    Engine(bollard::errors::Error),
    Timeout,
}

/// `fut` under [`CALL_TIMEOUT`].
pub(crate) async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, Failed> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failed::Engine(e)),
        Err(_) => Err(Failed::Timeout),
    }
}

pub(crate) fn timeout_error(what: &str) -> Error {
    Error::RuntimeFailed {
        message: format!(
            "the engine did not answer `{what}` within {}",
            humantime::format_duration(CALL_TIMEOUT)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BindMount, Resources, SecretValue};

    #[test]
    fn the_create_body_carries_everything_the_cli_passes() {
        let spec = RunSpec {
            session: "web-0a1b2c3d".into(),
            pod: "web".into(),
            container: "cldpd-web-0a1b2c3d-0".into(),
            image: "cldpd-web".into(),
            command: vec!["claude".into(), "-p".into()],
            env: vec![("API_KEY".into(), SecretValue::new("sk-1"))],
            workdir: Some("/w".into()),
            mounts: vec![BindMount {
                source: "/src".into(),
                target: "/w".into(),
                read_only: true,
            }],
            labels: Default::default(),
            resources: Resources {
                cpus: Some(1.5),
                memory_bytes: Some(1 << 30),
                pids_limit: Some(64),
            },
            line_cap: 1024,
            stdin: None,
            network: Some("none".into()),
        };
        let mut secrets = Placeholders::default();
        let body = create_body(&spec, &mut secrets);
        let env = body.env.clone().unwrap();
        assert_eq!(env.len(), 1);
        assert!(env[0].starts_with("API_KEY=cldpd-secret-"), "{env:?}");
        assert!(!format!("{body:?}").contains("sk-1"));
        assert_eq!(body.working_dir.as_deref(), Some("/w"));
        let labels = body.labels.unwrap();
        assert_eq!(labels["cldpd.session"], "web-0a1b2c3d");
        assert_eq!(labels["cldpd.pod"], "web");
        let host = body.host_config.unwrap();
        assert_eq!(host.init, Some(true));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(1 << 30));
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(body.open_stdin, None, "no stdin: closed from the start");
        let m = &host.mounts.unwrap()[0];
        assert_eq!(m.source.as_deref(), Some("/src"));
        assert_eq!(m.read_only, Some(true));
        assert_eq!(m.typ, Some(MountType::BIND));

        // With a stdin: open, attached, closed at the client's EOF; the
        // bytes themselves are not in the request.
        let spec = RunSpec {
            stdin: Some(crate::runtime::Stdin::new("the prompt")),
            network: None,
            ..spec
        };
        let body = create_body(&spec, &mut Placeholders::default());
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.attach_stdin, Some(true));
        assert!(!format!("{body:?}").contains("the prompt"));
        assert_eq!(body.host_config.unwrap().network_mode, None);
    }
}
