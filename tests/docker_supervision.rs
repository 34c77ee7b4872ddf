//! Supervision over the real Docker engine, where Docker itself is part of
//! the fault: a stop from another dispatcher (another process) is not
//! undone by the restart policy; a killed `docker run` client is not taken
//! for the container's exit.
//!
//! Without Docker these tests skip with a note, except under `CI=true`,
//! where they fail.

mod support;

use std::time::Duration;

use cldpd::{EventKind, StartRequest};
use futures_util::StreamExt;
use support::docker::{
    containers_with_label, dispatcher, require_docker, until, wait_until, TestPod,
};
use support::fault::within;

fn assert_nothing_left(pod: &TestPod) {
    assert_eq!(
        pod.containers(),
        Vec::<String>::new(),
        "containers left behind"
    );
    assert!(containers_with_label(&pod.label_filter()).is_empty());
}

/// A stub that says `ready` and then waits; SIGTERM ends it (exit 143).
const WAIT_STUB: &str = "#!/bin/sh\necho ready\nwhile :; do sleep 1 & wait $!; done\n";

/// `cldpd stop` from another process (here: a second dispatcher over the
/// same state directory, which owns nothing of the run) ends the run with
/// the stop's exit code, whatever the restart policy: no restart, no `-r1`
/// container, exactly one terminal event.
async fn a_stop_from_elsewhere_is_not_undone_by(policy: &str) {
    let pod = TestPod::builder()
        .stub(WAIT_STUB)
        .pod_json(&format!(
            r#"{{ "restart": "{policy}", "backoffMs": 50, "maxRestarts": 3, "stopGraceSecs": 10 }}"#
        ))
        .create();
    let state = tempfile::tempdir().unwrap();
    let owner = dispatcher(&pod, &state);
    let s = owner
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    let mut events = s.events();
    let mut seen = within(
        120,
        "ready",
        until(&mut events, |e| e.line() == Some("ready")),
    )
    .await;

    let other = dispatcher(&pod, &state);
    let report = within(60, "the stop", other.stop(s.id(), None))
        .await
        .unwrap();
    assert_eq!(report.session, s.id());
    assert_eq!(report.container, s.id());

    assert_eq!(within(60, "the run's end", s.wait()).await.unwrap(), 143);
    seen.extend(within(30, "the rest", events.collect::<Vec<_>>()).await);
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.name()).collect();
    assert!(!kinds.contains(&"restarting"), "{kinds:?}");
    assert_eq!(
        seen.iter().filter(|e| e.is_terminal()).count(),
        1,
        "{kinds:?}"
    );
    assert!(
        matches!(
            seen.last().unwrap().kind,
            EventKind::ContainerExited { code: 143 }
        ),
        "{kinds:?}"
    );
    let starts: Vec<String> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContainerStarted { container, .. } => Some(container.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [s.id().to_string()], "no `-r1` container");
    // The marker has done its job and is gone.
    assert!(!state.path().join("stops").join(s.id()).exists());
    wait_until("the container's removal", Duration::from_secs(30), || {
        pod.containers().is_empty()
    })
    .await;
    assert_nothing_left(&pod);
}

#[actix::test]
async fn a_stop_from_another_dispatcher_ends_an_on_failure_run_without_restart() {
    if !require_docker() {
        return;
    }
    a_stop_from_elsewhere_is_not_undone_by("on-failure").await;
}

#[actix::test]
async fn a_stop_from_another_dispatcher_ends_an_always_run_without_restart() {
    if !require_docker() {
        return;
    }
    a_stop_from_elsewhere_is_not_undone_by("always").await;
}

/// Pids of the `docker run` clients of `container` (found by their argv).
fn run_clients_of(container: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let is_run = argv.get(1) == Some(&&b"run"[..]);
        let names_it = argv
            .windows(2)
            .any(|w| w[0] == b"--name" && w[1] == container.as_bytes());
        if is_run && names_it {
            pids.push(pid);
        }
    }
    pids
}

/// A `docker run` client killed with SIGKILL (as an OOM killer would) is
/// not the container's exit: the run goes on to the container's real end
/// and code, the lines written after the kill still arrive — each exactly
/// once, in order — and the restart policy starts no second container.
///
/// About the CLI backend's own client, so it runs on the CLI backend
/// whatever the default (the Engine API backend has no client process).
#[actix::test]
async fn a_killed_docker_run_client_is_not_the_containers_exit() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .stub(concat!(
            "#!/bin/sh\n",
            "echo ready\n",
            "i=1; while [ $i -le 30 ]; do echo \"line $i\"; sleep 0.1; i=$((i+1)); done\n",
            "echo 'err end' >&2\n",
            "exit 0\n",
        ))
        .pod_json(r#"{ "restart": "on-failure", "backoffMs": 50 }"#)
        .create();
    let state = tempfile::tempdir().unwrap();
    let d = cldpd::Dispatcher::docker(
        cldpd::Settings::new(pod.pods_dir(), state.path())
            .workers(2)
            .runtime(cldpd::runtime::Backend::Cli),
    );
    let s = d
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    let mut events = s.events();
    let mut seen = within(
        120,
        "line 5",
        until(&mut events, |e| e.line() == Some("line 5")),
    )
    .await;
    let clients = run_clients_of(s.id());
    assert_eq!(clients.len(), 1, "one `docker run` client: {clients:?}");
    let killed = std::process::Command::new("kill")
        .args(["-9", &clients[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    seen.extend(within(60, "the run's end", events.collect::<Vec<_>>()).await);
    assert_eq!(s.wait().await.unwrap(), 0, "the container's own exit code");
    let stdout: Vec<&str> = seen
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Output {
                    stream: cldpd::OutputStream::Stdout,
                    ..
                }
            )
        })
        .filter_map(|e| e.line())
        .collect();
    let want: Vec<String> = std::iter::once("ready".to_string())
        .chain((1..=30).map(|i| format!("line {i}")))
        .collect();
    assert_eq!(stdout, want, "every line once, in order");
    let stderr: Vec<&str> = seen
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Output {
                    stream: cldpd::OutputStream::Stderr,
                    ..
                }
            )
        })
        .filter_map(|e| e.line())
        .collect();
    assert_eq!(stderr, ["err end"]);
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.name()).collect();
    assert!(!kinds.contains(&"restarting"), "{kinds:?}");
    assert_eq!(seen.iter().filter(|e| e.is_terminal()).count(), 1);
    assert!(matches!(
        seen.last().unwrap().kind,
        EventKind::ContainerExited { code: 0 }
    ));
    assert!(seen.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    wait_until("the container's removal", Duration::from_secs(30), || {
        pod.containers().is_empty()
    })
    .await;
    assert_nothing_left(&pod);
}
