//! `exec` and `signal_exec` over the Engine API.
//!
//! The Engine API cannot signal an exec's process (there is no exec-kill),
//! so each exec carries a unique marker in its environment
//! (`CLDPD_EXEC_ID=<uuid>`), and `signal_exec` runs a second exec in the
//! same container that signals the processes whose `/proc/<pid>/environ`
//! holds it (needs `sh` and `cat` in the image, like the CLI backend's
//! script). The execs of this process are found by their container and
//! arguments, as with the CLI backend.

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc::Sender;

use super::errors::{failure, not_runnable_code, unavailable, Failure};
use super::output::{End, Pump};
use super::run::{timed, timeout_error, Failed};
use super::stdin::Feeding;
use super::tracker::{Guard, Tracker};
use crate::error::Error;
use crate::runtime::{ExecSpec, ProcessEvent};

/// The environment variable holding an exec's marker.
pub(crate) const MARKER_ENV: &str = "CLDPD_EXEC_ID";

/// How the signal script says that no process matched.
pub(crate) const NO_PROCESS_MATCHED: i64 = 3;

/// Signals the processes whose environment holds `$2` (`NAME=uuid`),
/// skipping itself. The shell drops the NUL separators of
/// `/proc/<pid>/environ`; the uuid makes a substring match exact enough.
pub(crate) const SIGNAL_SCRIPT: &str = r#"sig=$1; marker=$2; self=$$
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = "$self" ] && continue
  e=$(cat "$d/environ" 2>/dev/null) || continue
  case "$e" in *"$marker"*) kill -s "$sig" "$p" 2>/dev/null && n=$((n+1)) ;; esac
done
[ "${n:-0}" -gt 0 ] || exit 3"#;

/// What an exec is tracked under: its container and its arguments (as
/// the CLI backend's marker: without the program, and without the last
/// argument when that is a prompt, i.e. when there is no stdin).
pub(crate) fn exec_key(spec: &ExecSpec) -> String {
    let args = spec.command.get(1..).unwrap_or_default();
    let args = if args.len() >= 2 && spec.stdin.is_none() {
        &args[..args.len() - 1]
    } else {
        args
    };
    format!("{}\0{}", spec.container, args.join("\0"))
}

/// A new exec's marker, tracked (from the `exec` call on, so that a
/// signal sent at once finds it) until the guard is dropped.
pub(crate) fn track(execs: &Tracker, spec: &ExecSpec) -> (String, Guard) {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let guard = execs.track(&exec_key(spec), &marker);
    (marker, guard)
}

/// Run one exec, sending its events to `tx`.
pub(crate) async fn exec(
    docker: Docker,
    spec: ExecSpec,
    (marker, _guard): (String, Guard),
    tx: Sender<ProcessEvent>,
) {
    let options = CreateExecOptions {
        attach_stdin: spec.stdin.is_some().then_some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(spec.command.clone()),
        env: Some(vec![format!("{MARKER_ENV}={marker}")]),
        working_dir: spec.workdir.clone(),
        ..Default::default()
    };
    let not_found = || Error::SessionNotFound {
        target: spec.container.clone(),
    };
    let to_error = |e: Failed, what: &str| match e {
        Failed::Timeout => timeout_error(what),
        Failed::Engine(e) => match failure(&e) {
            Failure::Unreachable(m) => unavailable(m),
            Failure::Status(404 | 409, _) => not_found(),
            Failure::Status(_, m) | Failure::Other(m) => Error::RuntimeFailed {
                message: format!("exec in {}: {m}", spec.container),
            },
        },
    };
    let id = match timed(docker.create_exec(&spec.container, options)).await {
        Ok(r) => r.id,
        Err(e) => {
            let _ = tx
                .send(ProcessEvent::Failed(to_error(e, "exec create")))
                .await;
            return;
        }
    };
    let start = StartExecOptions {
        detach: false,
        ..Default::default()
    };
    let (mut frames, input) = match timed(docker.start_exec(&id, Some(start))).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => {
            let _ = tx
                .send(ProcessEvent::Failed(Error::internal(
                    "exec started detached",
                )))
                .await;
            return;
        }
        Err(e) => {
            let _ = tx
                .send(ProcessEvent::Failed(to_error(e, "exec start")))
                .await;
            return;
        }
    };
    let _ = tx
        .send(ProcessEvent::Started {
            container: spec.container.clone(),
        })
        .await;
    // The follow-up prompt, beside the output; the engine closes the
    // exec's stdin when this half is shut down.
    let feeding = Feeding::start(input, spec.stdin.clone(), None);
    let mut pump = Pump::new(spec.line_cap);
    match pump.run(&mut frames, &tx).await {
        End::Closed => {}
        // Nobody reads: the process goes on; its end is the stream's end.
        End::Dropped => while frames.next().await.is_some() {},
        End::Broken(e) => {
            // An exec's output cannot be read again: what it holds of an
            // unfinished line goes out as it is.
            tracing::warn!(container = %spec.container, error = %e, "exec connection broken");
            pump.flush(&tx).await;
        }
    }
    drop(feeding);
    // The stream ends at the process's exit; its code is then readable.
    let code = exit_code(&docker, &id).await;
    let event = match code {
        Ok(code @ (126 | 127)) => {
            let message = pump.message();
            // From the list, not an inspect (see `super::summary`).
            let image = super::summary::summary(&docker, &spec.container)
                .await
                .ok()
                .flatten()
                .and_then(|c| {
                    let tag = c
                        .labels
                        .and_then(|mut l| l.remove(crate::runtime::labels::IMAGE));
                    tag.or(c.image)
                })
                .unwrap_or_else(|| format!("of container {}", spec.container));
            ProcessEvent::Failed(Error::AgentNotRunnable {
                image,
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

/// The exit code of exec `id` once it no longer runs (polled briefly: the
/// engine may report it a moment after the stream ended).
async fn exit_code(docker: &Docker, id: &str) -> Result<i32, Error> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut delay = std::time::Duration::from_millis(5);
    loop {
        match timed(docker.inspect_exec(id)).await {
            Ok(r) if r.running != Some(true) => {
                return Ok(r.exit_code.unwrap_or(-1) as i32);
            }
            Ok(_) if tokio::time::Instant::now() < deadline => {}
            Ok(_) => {
                return Err(Error::RuntimeFailed {
                    message: format!("exec {id} still runs after its output ended"),
                })
            }
            Err(Failed::Timeout) => return Err(timeout_error("exec inspect")),
            Err(Failed::Engine(e)) => {
                return Err(match failure(&e) {
                    Failure::Unreachable(m) => unavailable(m),
                    Failure::Status(_, m) | Failure::Other(m) => Error::RuntimeFailed {
                        message: format!("exec inspect: {m}"),
                    },
                })
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(200));
    }
}

/// Run the signal script for `markers` in `container`; `Ok(true)` when a
/// process was signalled, `Ok(false)` when none matched.
pub(crate) async fn signal_markers(
    docker: &Docker,
    container: &str,
    signal: &str,
    markers: &[String],
) -> Result<bool, Error> {
    let stop_failed = |m: String| Error::StopFailed {
        container: container.to_string(),
        message: m,
    };
    let mut any = false;
    for marker in markers {
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            SIGNAL_SCRIPT.to_string(),
            "cldpd-signal".to_string(),
            signal.to_string(),
            format!("{MARKER_ENV}={marker}"),
        ];
        let options = CreateExecOptions {
            cmd: Some(cmd),
            ..Default::default()
        };
        let map = |e: Failed| match e {
            Failed::Timeout => stop_failed("the engine did not answer".into()),
            Failed::Engine(e) => match failure(&e) {
                Failure::Unreachable(m) => unavailable(m),
                Failure::Status(_, m) | Failure::Other(m) => stop_failed(m),
            },
        };
        let id = match timed(docker.create_exec(container, options)).await {
            Ok(r) => r.id,
            // The container is gone: so is the exec's process.
            Err(Failed::Engine(e)) if super::errors::gone(&e) => return Ok(false),
            Err(e) => return Err(map(e)),
        };
        let start = StartExecOptions {
            detach: true,
            ..Default::default()
        };
        match timed(docker.start_exec(&id, Some(start))).await {
            Ok(_) => {}
            Err(Failed::Engine(e)) if super::errors::gone(&e) => return Ok(false),
            Err(e) => return Err(map(e)),
        }
        match exit_code(docker, &id).await? {
            0 => any = true,
            c if i64::from(c) == NO_PROCESS_MATCHED => {}
            c => {
                return Err(stop_failed(format!(
                    "the signal script exited with code {c}"
                )))
            }
        }
    }
    Ok(any)
}
