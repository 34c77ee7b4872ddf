//! The dispatcher over the real Docker engine: start → stdout/stderr → exit
//! code, concurrent runs of one pod, stop escalation, resume from a second
//! dispatcher, secrets kept out of argv, nothing left behind.
//!
//! Without Docker these tests skip with a note, except under `CI=true`,
//! where they fail.

mod support;

use std::time::{Duration, Instant};

use cldpd::{Dispatcher, Event, EventKind, OutputStream, Session, Settings, StartRequest};
use futures_util::StreamExt;
use support::docker::{
    containers_with_label, dispatcher, require_docker, until, TestPod, TRAP_TERM_STUB,
};
use support::fault::within;

const ISSUE: &str = "https://github.com/acme/web/issues/7";

fn assert_nothing_left(pod: &TestPod) {
    assert_eq!(
        pod.containers(),
        Vec::<String>::new(),
        "containers left behind"
    );
    let sessions = containers_with_label(&format!("cldpd.pod={}", pod.name()));
    assert!(sessions.is_empty());
}

#[actix::test]
async fn a_run_streams_stdout_and_stderr_and_ends_with_the_exit_code() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(
        "#!/bin/sh\necho \"args: $1 $2\"\necho 'to stdout'\necho 'to stderr' >&2\necho 'last words' >&2\nexit 3\n",
    );
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::issue(pod.name(), ISSUE))
        .await
        .unwrap();
    let events: Vec<Event> = within(120, "the run", s.events().collect()).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds[0], "build_started");
    assert!(kinds.contains(&"build_complete"));
    assert_eq!(*kinds.last().unwrap(), "container_exited");
    let lines = |stream| -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Output {
                    stream: s, line, ..
                } if *s == stream => Some(line.as_str()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        lines(OutputStream::Stdout),
        ["args: -p --output-format", "to stdout"]
    );
    assert_eq!(lines(OutputStream::Stderr), ["to stderr", "last words"]);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1));
    assert_eq!(s.wait().await.unwrap(), 3);
    assert_nothing_left(&pod);
}

#[actix::test]
async fn five_concurrent_runs_of_one_pod_do_not_collide() {
    if !require_docker() {
        return;
    }
    // The prompt comes on stdin.
    let pod = TestPod::with_stub("#!/bin/sh\necho \"run $(cat)\"\nexit 0\n");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let mut sessions: Vec<Session> = Vec::new();
    for i in 0..5 {
        sessions.push(
            d.start(StartRequest::prompt(pod.name(), format!("job {i}")))
                .await
                .unwrap(),
        );
    }
    let mut ids: Vec<&str> = sessions.iter().map(|s| s.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    for (i, s) in sessions.iter().enumerate() {
        let events: Vec<Event> = within(180, "a run", s.events().collect()).await;
        let out: Vec<&str> = events.iter().filter_map(|e| e.line()).collect();
        assert!(out.contains(&format!("run job {i}").as_str()), "{out:?}");
        assert_eq!(s.wait().await.unwrap(), 0);
    }
    assert_eq!(
        d.build_count().await.unwrap(),
        1,
        "one shared build for five runs"
    );
    assert_nothing_left(&pod);
}

#[actix::test]
async fn an_agent_that_ignores_sigterm_is_killed_after_the_grace() {
    if !require_docker() {
        return;
    }
    let pod =
        TestPod::with_stub("#!/bin/sh\ntrap '' TERM\necho ready\nwhile :; do sleep 1; done\n");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    let mut events = s.events();
    within(
        120,
        "ready",
        until(&mut events, |e| e.line() == Some("ready")),
    )
    .await;
    let grace = Duration::from_secs(2);
    let t0 = Instant::now();
    let code = within(60, "the stop", s.stop(Some(grace))).await.unwrap();
    assert!(t0.elapsed() >= grace, "killed before the grace was over");
    assert_eq!(code, 137);
    let rest: Vec<Event> = events.collect().await;
    assert!(matches!(
        rest.last().unwrap().kind,
        EventKind::ContainerExited { code: 137 }
    ));
    assert_nothing_left(&pod);
}

/// A stop that arrives as the `docker run` client has just been spawned,
/// before the daemon has created (or started) the container, must still
/// deliver SIGTERM: the agent gets its graceful exit, not a SIGKILL after
/// the whole grace.
#[actix::test]
async fn a_stop_right_after_the_start_still_delivers_sigterm() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(TRAP_TERM_STUB);
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    let mut events = s.events();
    within(
        120,
        "container_started",
        until(&mut events, |e| e.kind.name() == "container_started"),
    )
    .await;
    // A grace far longer than the test's bound: if SIGTERM were lost, the
    // run would only end with the SIGKILL after it (exit 137).
    let code = within(50, "the stop", s.stop(Some(Duration::from_secs(60))))
        .await
        .unwrap();
    assert!(
        code == 0 || code == 143,
        "SIGTERM did not reach the agent: exit {code}"
    );
    let rest: Vec<Event> = events.collect().await;
    assert!(matches!(
        rest.last().unwrap().kind,
        EventKind::ContainerExited { .. }
    ));
    assert_nothing_left(&pod);
}

#[actix::test]
async fn resume_from_a_second_dispatcher_reaches_the_same_conversation() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(concat!(
        "#!/bin/sh\n",
        // argv: -p --output-format stream-json --verbose --resume|--session-id <uuid>;
        // the prompt on stdin.
        "p=$(cat)\n",
        "if [ \"$5\" = --resume ] && [ \"$p\" = wait ]; then trap 'exit 5' TERM; echo waiting; while :; do sleep 1; done; fi\n",
        "if [ \"$5\" = --resume ]; then echo \"resumed $6: $p\"; exit 0; fi\n",
        "echo \"conversation $6\"\n",
        "trap 'exit 0' TERM\n",
        "while :; do sleep 1; done\n",
    ));
    let state = tempfile::tempdir().unwrap();
    let first = dispatcher(&pod, &state);
    let s = first
        .start(StartRequest::prompt(pod.name(), "start"))
        .await
        .unwrap();
    let mut events = s.events();
    let seen = within(
        120,
        "the conversation line",
        until(&mut events, |e| {
            e.line().is_some_and(|l| l.starts_with("conversation "))
        }),
    )
    .await;
    let conversation = seen.last().unwrap().line().unwrap()["conversation ".len()..].to_string();
    assert_eq!(conversation.len(), 36, "a UUID: {conversation}");

    // A second dispatcher (another instance, as another process would be)
    // finds the run by its labels, by session id and by pod name.
    let second = dispatcher(&pod, &state);
    for target in [s.id(), pod.name()] {
        let r = second.resume(target, "and the follow-up").await.unwrap();
        let out: Vec<Event> = within(60, "the resume", r.events().collect()).await;
        let lines: Vec<&str> = out.iter().filter_map(|e| e.line()).collect();
        assert_eq!(
            lines,
            [format!("resumed {conversation}: and the follow-up")]
        );
        assert_eq!(r.wait().await.unwrap(), 0);
    }
    // Stopping a follow-up ends that process only, not the run.
    let waiting = second.resume(s.id(), "wait").await.unwrap();
    let mut w = waiting.events();
    within(
        60,
        "the waiting follow-up",
        until(&mut w, |e| e.line() == Some("waiting")),
    )
    .await;
    assert_eq!(
        within(
            60,
            "stop the follow-up",
            waiting.stop(Some(Duration::from_secs(10)))
        )
        .await
        .unwrap(),
        5
    );
    // A follow-up stopped as soon as it counts as started (its exec may
    // not run yet) still gets SIGTERM, not a SIGKILL after the grace.
    let early = second.resume(s.id(), "wait").await.unwrap();
    let mut e = early.events();
    within(
        60,
        "the follow-up's start",
        until(&mut e, |e| e.kind.name() == "container_started"),
    )
    .await;
    let code = within(
        50,
        "stop the follow-up at once",
        early.stop(Some(Duration::from_secs(60))),
    )
    .await
    .unwrap();
    assert!(code == 5 || code == 143, "SIGTERM was lost: exit {code}");
    assert!(
        matches!(s.state(), cldpd::SessionState::Running { .. }),
        "{:?}",
        s.state()
    );
    // It can stop the run too.
    let report = within(
        60,
        "stop",
        second.stop(pod.name(), Some(Duration::from_secs(5))),
    )
    .await
    .unwrap();
    assert_eq!(report.session, s.id());
    assert_eq!(within(60, "the first run", s.wait()).await.unwrap(), 0);
    assert_nothing_left(&pod);
}

fn cmdlines_containing(needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.contains(needle) {
                hits.push(text);
            }
        }
    }
    hits
}

#[actix::test]
async fn secrets_reach_the_container_but_never_any_argv() {
    if !require_docker() {
        return;
    }
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let inherited = format!("inh3rit-{}", uuid::Uuid::new_v4().simple());
    let pod = TestPod::builder()
        .stub(concat!(
            "#!/bin/sh\n",
            "echo \"secret=$CLDPD_T_SECRET inherited=$CLDPD_T_INHERITED\"\n",
            "trap 'exit 0' TERM\n",
            "while :; do sleep 1; done\n",
        ))
        .pod_json(&format!(
            r#"{{ "env": {{ "CLDPD_T_SECRET": "{secret}" }}, "inheritEnv": ["CLDPD_T_INHERITED", "CLDPD_T_UNSET"] }}"#
        ))
        .create();
    let state = tempfile::tempdir().unwrap();
    let inh = inherited.clone();
    let settings = Settings::new(pod.pods_dir(), state.path())
        .env_lookup(move |name| (name == "CLDPD_T_INHERITED").then(|| inh.clone()));
    let d = Dispatcher::docker(settings);
    let s = d
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    let mut events = s.events();
    let seen = within(
        120,
        "the env line",
        until(&mut events, |e| {
            e.line().is_some_and(|l| l.starts_with("secret="))
        }),
    )
    .await;
    assert_eq!(
        seen.last().unwrap().line().unwrap(),
        format!("secret={secret} inherited={inherited}")
    );
    // While the container runs (docker client, shim, agent all alive):
    assert_eq!(cmdlines_containing(&secret), Vec::<String>::new());
    assert_eq!(cmdlines_containing(&inherited), Vec::<String>::new());
    s.stop(Some(Duration::from_secs(5))).await.unwrap();
    assert_nothing_left(&pod);
}

#[actix::test]
async fn a_new_dispatcher_reuses_the_image_built_by_an_earlier_one() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub("#!/bin/sh\necho hi\n");
    let state = tempfile::tempdir().unwrap();
    let run = || async {
        // A new dispatcher each time, as each `cldpd start` process is.
        let d = dispatcher(&pod, &state);
        let s = d
            .start(StartRequest::prompt(pod.name(), "go"))
            .await
            .unwrap();
        let events: Vec<Event> = within(120, "a run", s.events().collect()).await;
        assert_eq!(s.wait().await.unwrap(), 0);
        let cached = events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::BuildComplete { cached, .. } => Some(*cached),
                _ => None,
            })
            .unwrap();
        let build_lines = events
            .iter()
            .filter(|e| e.kind.name() == "build_output")
            .count();
        (cached, build_lines)
    };
    let (cached, lines) = run().await;
    assert!(!cached && lines > 0, "the first run builds");
    let (cached, lines) = run().await;
    assert!(
        cached && lines == 0,
        "the second dispatcher runs the recorded image, no docker build"
    );
    // The recorded image disappears: the next run notices and builds.
    let out = support::docker::docker(["rmi", "-f", "--no-prune", &pod.image()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cached, lines) = run().await;
    assert!(!cached && lines > 0, "rebuilt after the image was removed");
    assert_nothing_left(&pod);
}

#[actix::test]
async fn network_none_leaves_only_loopback_and_the_default_is_bridge() {
    if !require_docker() {
        return;
    }
    let stub = "#!/bin/sh\nls /sys/class/net\n";
    let isolated = TestPod::builder()
        .stub(stub)
        .pod_json(r#"{"network": "none", "agentOutput": "text"}"#)
        .create();
    let bridged = TestPod::builder()
        .stub(stub)
        .pod_json(r#"{"agentOutput": "text"}"#)
        .create();
    for (pod, want_eth0) in [(&isolated, false), (&bridged, true)] {
        let state = tempfile::tempdir().unwrap();
        let d = dispatcher(pod, &state);
        let s = d
            .start(StartRequest::prompt(pod.name(), "list the interfaces"))
            .await
            .unwrap();
        let events: Vec<Event> = within(120, "the run", s.events().collect()).await;
        let lines: Vec<&str> = events.iter().filter_map(|e| e.line()).collect();
        assert!(lines.contains(&"lo"), "{lines:?}");
        assert_eq!(lines.contains(&"eth0"), want_eth0, "{lines:?}");
        assert_eq!(s.wait().await.unwrap(), 0);
        assert_nothing_left(pod);
    }
}

/// Prints each argument on a line of its own (`arg <n>: <value>`), then
/// what came on stdin (`stdin: <text>`) and `args done`; a start then waits
/// for SIGTERM, a resume exits.
const ARGS_STUB: &str = concat!(
    "#!/bin/sh\n",
    "n=0; for a in \"$@\"; do n=$((n+1)); echo \"arg $n: $a\"; done\n",
    "echo \"stdin: $(cat)\"\n",
    "echo 'args done'\n",
    "if [ \"$5\" = --resume ]; then exit 0; fi\n",
    "trap 'exit 0' TERM\n",
    "while :; do sleep 1; done\n",
);

#[actix::test]
async fn a_prompt_that_starts_with_a_dash_reaches_the_agent_as_text() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(ARGS_STUB);
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let args = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e.line())
            .filter(|l| l.starts_with("arg "))
            .filter_map(|l| l.split_once(": ").map(|(_, a)| a.to_string()))
            .collect()
    };
    let s = d
        .start(StartRequest::prompt(
            pod.name(),
            "--dangerously-skip-permissions",
        ))
        .await
        .unwrap();
    let mut events = s.events();
    let seen = within(
        120,
        "the start's arguments",
        until(&mut events, |e| e.line() == Some("args done")),
    )
    .await;
    let stdin = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e.line())
            .filter_map(|l| l.strip_prefix("stdin: ").map(str::to_string))
            .collect()
    };
    // The prompt is never in argv, so it cannot be an option of the agent.
    let start = args(&seen);
    assert_eq!(
        start[..5],
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--session-id"
        ],
        "{start:?}"
    );
    assert_eq!(start.len(), 6, "{start:?}");
    assert_eq!(stdin(&seen), ["--dangerously-skip-permissions"]);

    let r = d.resume(s.id(), "-v").await.unwrap();
    let out: Vec<Event> = within(60, "the resume", r.events().collect()).await;
    let resume = args(&out);
    assert_eq!(
        resume,
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--resume",
            start[5].as_str()
        ],
        "{out:#?}"
    );
    assert_eq!(stdin(&out), ["-v"]);
    assert_eq!(r.wait().await.unwrap(), 0);
    assert_eq!(
        within(60, "stop", s.stop(Some(Duration::from_secs(10))))
            .await
            .unwrap(),
        0
    );
    assert_nothing_left(&pod);
}

#[actix::test]
async fn rm_and_prune_remove_exactly_the_ended_sessions_they_name() {
    if !require_docker() {
        return;
    }
    const LIVE: &str = r#"{"agentInput": "stream-json", "keepAliveSecs": 60, "stopGraceSecs": 1}"#;
    let waiting = TestPod::builder()
        .stub("#!/bin/sh\necho ready\nwhile :; do sleep 0.1; done\n")
        .pod_json(LIVE)
        .create();
    let done = TestPod::builder()
        .stub("#!/bin/sh\necho done\nexit 0\n")
        .pod_json(r#"{"agentInput": "stream-json"}"#)
        .create();
    let state = tempfile::tempdir().unwrap();
    let settings = Settings::new(waiting.pods_dir(), state.path());
    std::fs::rename(
        done.pods_dir().join(done.name()),
        waiting.pods_dir().join(done.name()),
    )
    .unwrap();
    let d = Dispatcher::docker(settings);
    let live = d
        .start(StartRequest::prompt(waiting.name(), "wait"))
        .await
        .unwrap();
    let mut events = live.events();
    within(120, "ready", async {
        while let Some(ev) = events.next().await {
            if ev.line() == Some("ready") {
                break;
            }
        }
    })
    .await;
    let mut ended = Vec::new();
    for _ in 0..2 {
        let s = d
            .start(StartRequest::prompt(done.name(), "go"))
            .await
            .unwrap();
        assert_eq!(within(120, "a short run", s.wait()).await.unwrap(), 0);
        ended.push(s);
    }
    let stored = d.stored().await.unwrap();
    assert_eq!(stored.len(), 3);
    let is_live = |id: &str| stored.iter().find(|s| s.meta.session == id).unwrap().live;
    assert!(is_live(live.id()));
    assert!(!is_live(ended[0].id()) && !is_live(ended[1].id()));
    let storage = |id: &str| state.path().join("workspaces").join(id);
    let log = |id: &str| state.path().join("sessions").join(format!("{id}.ndjson"));

    // rm of a live session is refused; of an ended one removes just it.
    let refused = d.remove_stored(live.id()).await.unwrap_err();
    assert!(refused.to_string().contains("stop it first"), "{refused}");
    d.remove_stored(ended[0].id()).await.unwrap();
    assert!(!storage(ended[0].id()).exists() && !log(ended[0].id()).exists());
    assert!(storage(ended[1].id()).exists() && log(ended[1].id()).exists());
    assert!(storage(live.id()).exists() && log(live.id()).exists());

    // prune takes the ended one, never the live one.
    let pruned = d.prune_stored(Duration::ZERO).await.unwrap();
    let names: Vec<&str> = pruned.iter().map(|p| p.meta.session.as_str()).collect();
    assert_eq!(names, [ended[1].id()]);
    assert!(!storage(ended[1].id()).exists() && !log(ended[1].id()).exists());
    assert!(storage(live.id()).exists());
    within(60, "the stop", live.stop(None)).await.unwrap();
    let pruned = d.prune_stored(Duration::ZERO).await.unwrap();
    assert_eq!(pruned.len(), 1);
    assert!(!storage(live.id()).exists());
    assert!(d.stored().await.unwrap().is_empty());
    assert_nothing_left(&waiting);
    assert_nothing_left(&done);
}

#[actix::test]
async fn a_rebuild_removes_the_image_it_replaced() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub("#!/bin/sh\necho done\n");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let image_id = || {
        let out = std::process::Command::new(support::docker::docker_bin())
            .args(["image", "inspect", "--format", "{{.Id}}", &pod.image()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let exists = |id: &str| {
        std::process::Command::new(support::docker::docker_bin())
            .args(["image", "inspect", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    let s = d
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    assert_eq!(within(120, "run 1", s.wait()).await.unwrap(), 0);
    let first = image_id();
    assert!(exists(&first));
    // An edit of the pod: the next run rebuilds, and the image the tag
    // named before is removed (no container uses it).
    let mut dockerfile = std::fs::read_to_string(pod.dockerfile()).unwrap();
    dockerfile.push_str("LABEL edited=1\n");
    std::fs::write(pod.dockerfile(), dockerfile).unwrap();
    let s = d
        .start(StartRequest::prompt(pod.name(), "go"))
        .await
        .unwrap();
    assert_eq!(within(120, "run 2", s.wait()).await.unwrap(), 0);
    let second = image_id();
    assert_ne!(first, second);
    // The removal runs beside the start of run 2: ask Docker until it is
    // done (each question is a docker call; bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    while exists(&first) {
        assert!(
            Instant::now() < deadline,
            "the replaced image {first} is still there"
        );
    }
    assert!(exists(&second));
    assert_nothing_left(&pod);
}
