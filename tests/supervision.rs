//! Supervision and admission over the FaultRuntime: restart policies with
//! intensity and back-off, stop during back-off, timeouts, FIFO admission
//! with a cap, single-flight builds.

mod support;

use std::time::Duration;

use cldpd::runtime::{BuildScript, FaultRuntime, RunScript};
use cldpd::{
    Dispatcher, Error, EventKind, PodConfig, RestartPolicy, SessionState, StartRequest, TimeoutKind,
};
use futures_util::StreamExt;
use support::fault::*;

fn restart_policy(policy: RestartPolicy, max: u32, backoff_ms: u64) -> PodConfig {
    PodConfig {
        restart: Some(policy),
        max_restarts: Some(max),
        within_secs: Some(60.0),
        backoff_ms: Some(backoff_ms),
        backoff_max_ms: Some(backoff_ms * 4),
        ..PodConfig::default()
    }
}

#[actix::test]
async fn on_failure_restarts_within_the_intensity_and_the_seq_continues() {
    let dirs = Dirs::new(&[("flaky", None)]);
    let rt = FaultRuntime::new();
    rt.script_next_run("flaky", RunScript::new().stdout_lines(2).exit(1));
    rt.script_next_run(
        "flaky",
        RunScript::new().stdout_lines(2).crash("engine hiccup"),
    );
    rt.script_next_run("flaky", RunScript::new().stdout_lines(2).exit(1));
    rt.script_pod("flaky", RunScript::new().stdout_lines(2).exit(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let req = StartRequest::prompt("flaky", "go").overrides(restart_policy(
        RestartPolicy::OnFailure,
        3,
        10,
    ));
    let s = d.start(req).await.unwrap();
    let seen = within(30, "the run", collect(&s)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    let mut pattern = vec!["build_started", "build_output*", "build_complete"];
    for _ in 0..3 {
        pattern.extend(["container_started", "output*", "restarting"]);
    }
    pattern.extend(["container_started", "output*", "container_exited"]);
    assert_flow(&seen.flow, &pattern);
    let restarts: Vec<(u32, u64, String)> = seen
        .all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Restarting {
                attempt,
                delay_ms,
                reason,
            } => Some((*attempt, *delay_ms, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(restarts.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    // Back-off doubles from backoffMs up to the cap (4 × backoffMs).
    assert_eq!(
        restarts.iter().map(|r| r.1).collect::<Vec<_>>(),
        [10, 20, 40]
    );
    assert_eq!(restarts[0].2, "exited with code 1");
    assert!(restarts[1].2.contains("engine hiccup"));
    let attempts: Vec<u32> = seen
        .all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContainerStarted { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [0, 1, 2, 3]);
    assert_eq!(s.wait().await.unwrap(), 0);
    // Each attempt ran in its own container.
    let names: Vec<String> = rt.runs().iter().map(|r| r.container.clone()).collect();
    assert_eq!(
        names,
        [
            s.id().to_string(),
            format!("{}-r1", s.id()),
            format!("{}-r2", s.id()),
            format!("{}-r3", s.id())
        ]
    );
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn beyond_the_intensity_the_run_ends_with_its_own_error() {
    let dirs = Dirs::new(&[("broken", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("broken", RunScript::new().exit(2));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let req =
        StartRequest::prompt("broken", "go").overrides(restart_policy(RestartPolicy::Always, 2, 5));
    let s = d.start(req).await.unwrap();
    let seen = within(30, "the run", collect(&s)).await;
    assert_eq!(seen.flow.iter().filter(|k| **k == "restarting").count(), 2);
    match &seen.terminal.unwrap().kind {
        EventKind::Error { code, message } => {
            assert_eq!(code, "restart_limit");
            assert!(message.contains("2 restarts within 1m"), "{message}");
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        s.wait().await,
        Err(Error::RestartLimit { restarts: 2, .. })
    ));
    assert_eq!(rt.run_count("broken"), 3);
}

#[actix::test]
async fn never_is_the_default_and_on_failure_leaves_success_alone() {
    let dirs = Dirs::new(&[("once", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("once", RunScript::new().exit(9));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("once", "go")).await.unwrap();
    assert_eq!(within(30, "wait", s.wait()).await.unwrap(), 9);
    rt.script_pod("once", RunScript::new().exit(0));
    let req = StartRequest::prompt("once", "go").overrides(restart_policy(
        RestartPolicy::OnFailure,
        5,
        5,
    ));
    let s = d.start(req).await.unwrap();
    assert_eq!(within(30, "wait", s.wait()).await.unwrap(), 0);
    assert_eq!(rt.run_count("once"), 2);
}

#[actix::test]
async fn stop_during_back_off_ends_the_run_without_another_start() {
    let dirs = Dirs::new(&[(
        "flaky",
        Some(r#"{ "restart": "always", "backoffMs": 3600000 }"#),
    )]);
    let rt = FaultRuntime::new();
    rt.script_pod("flaky", RunScript::new().stdout_lines(1).exit(4));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("flaky", "go")).await.unwrap();
    wait_state(&s, 30, "back-off", |s| {
        matches!(s, SessionState::Restarting { .. })
    })
    .await;
    // No container runs during a back-off: the run ends as stopped (as
    // before its first container), not with the last container's code
    // (which the `restarting` event reported); so the CLI exits 130 on
    // Ctrl-C there, not 4.
    assert!(matches!(
        within(10, "stop", s.stop(None)).await,
        Err(Error::Stopped)
    ));
    assert!(matches!(s.wait().await, Err(Error::Stopped)));
    let seen = collect(&s).await;
    assert_flow(
        &seen.flow,
        &[
            "build_started",
            "build_output*",
            "build_complete",
            "container_started",
            "output*",
            "restarting",
            "error",
        ],
    );
    assert_eq!(rt.run_count("flaky"), 1);
}

#[actix::test]
async fn the_run_timeout_stops_the_run_and_names_itself() {
    let dirs = Dirs::new(&[(
        "slow",
        Some(r#"{ "timeoutSecs": 0.3, "stopGraceSecs": 0.2 }"#),
    )]);
    let rt = FaultRuntime::new();
    rt.script_pod(
        "slow",
        RunScript::new().stdout_lines(1).hang().ignore_sigterm(),
    );
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("slow", "go")).await.unwrap();
    match within(30, "wait", s.wait()).await {
        Err(Error::Timeout {
            kind: TimeoutKind::Run,
            after,
        }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    let seen = collect(&s).await;
    match &seen.terminal.unwrap().kind {
        EventKind::Error { code, message } => {
            assert_eq!(code, "timeout");
            assert!(message.contains("timeoutSecs"), "{message}");
        }
        k => panic!("{k:?}"),
    }
    // The normal escalation ran: TERM ignored, then KILL.
    assert_eq!(rt.signals(s.id()).len(), 2);
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn the_idle_timeout_fires_only_without_output() {
    let dirs = Dirs::new(&[
        ("quiet", Some(r#"{ "idleTimeoutSecs": 0.3 }"#)),
        ("chatty", Some(r#"{ "idleTimeoutSecs": 0.3 }"#)),
    ]);
    let rt = FaultRuntime::new();
    rt.script_pod("quiet", RunScript::new().stdout_lines(3).hang());
    // 40 lines/s for 1.5 s: never 0.3 s without output.
    rt.script_pod(
        "chatty",
        RunScript::new()
            .lines(cldpd::OutputStream::Stdout, 60, 0, Some(40.0))
            .exit(0),
    );
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let quiet = d.start(StartRequest::prompt("quiet", "go")).await.unwrap();
    let chatty = d.start(StartRequest::prompt("chatty", "go")).await.unwrap();
    match within(30, "quiet", quiet.wait()).await {
        Err(
            e @ Error::Timeout {
                kind: TimeoutKind::Idle,
                ..
            },
        ) => {
            assert!(e.to_string().contains("idleTimeoutSecs"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(within(30, "chatty", chatty.wait()).await.unwrap(), 0);
}

#[actix::test]
async fn admission_is_fifo_with_a_cap_and_queued_runs_can_be_stopped() {
    let dirs = Dirs::new(&[("job", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("job", RunScript::new().hang());
    let d = Dispatcher::new(dirs.settings().max_concurrent(3), rt.clone());
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push(
            d.start(StartRequest::prompt("job", format!("job {i}")))
                .await
                .unwrap(),
        );
    }
    for s in &sessions[..3] {
        wait_state(s, 10, "running", |s| {
            matches!(s, SessionState::Running { .. })
        })
        .await;
    }
    // The other seven wait, and their subscribers see Queued first.
    for (i, s) in sessions[3..].iter().enumerate() {
        let mut events = s.events();
        match &within(10, "queued", events.next()).await.unwrap().kind {
            EventKind::Queued { position } => assert_eq!(*position, i + 1),
            k => panic!("{k:?}"),
        }
        assert!(matches!(s.state(), SessionState::Queued { .. }));
    }
    // A queued run stops without ever starting.
    assert!(matches!(sessions[9].stop(None).await, Err(Error::Stopped)));
    // Ending a running one admits exactly the head of the queue.
    for i in 0..6 {
        sessions[i].stop(Some(Duration::ZERO)).await.unwrap();
        wait_state(&sessions[i + 3], 10, "admitted", |s| {
            matches!(s, SessionState::Running { .. })
        })
        .await;
        for later in &sessions[i + 4..9] {
            assert!(
                matches!(later.state(), SessionState::Queued { .. }),
                "{:?}",
                later.state()
            );
        }
    }
    for s in &sessions[6..9] {
        s.stop(Some(Duration::ZERO)).await.unwrap();
    }
    assert_eq!(rt.max_running(), 3);
    assert_eq!(rt.run_count("job"), 9, "the stopped queued run never ran");
}

/// Every live run's log is touched by its dispatcher's heartbeat: while
/// it has no running container (queued, building), so that `cldpd logs
/// --follow` in another process can tell it from a run whose process
/// died; and while its container runs quietly, so that no retention ever
/// takes it for an old log (issue 9, item 1).
#[actix::test]
async fn logs_of_every_live_run_are_kept_fresh() {
    let dirs = Dirs::new(&[("job", None), ("slow", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("job", RunScript::new().hang());
    rt.script_build("slow", BuildScript::hang());
    let d = Dispatcher::new(
        dirs.settings()
            .max_concurrent(2)
            .log_heartbeat(Duration::from_millis(20)),
        rt.clone(),
    );
    let running = d.start(StartRequest::prompt("job", "a")).await.unwrap();
    wait_state(&running, 10, "running", |s| {
        matches!(s, SessionState::Running { .. })
    })
    .await;
    let building = d.start(StartRequest::prompt("slow", "b")).await.unwrap();
    wait_state(&building, 10, "building", |s| {
        matches!(s, SessionState::Building)
    })
    .await;
    let queued = d.start(StartRequest::prompt("job", "c")).await.unwrap();
    wait_state(&queued, 10, "queued", |s| {
        matches!(s, SessionState::Queued { .. })
    })
    .await;
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let age_back = |s: &cldpd::Session| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(s.log_path())
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert!(!cldpd::log::is_fresh(s.log_path()));
    };
    for s in [&running, &building, &queued] {
        age_back(s);
    }
    within(10, "every live log touched", async {
        while !(cldpd::log::is_fresh(queued.log_path())
            && cldpd::log::is_fresh(building.log_path())
            && cldpd::log::is_fresh(running.log_path()))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    d.shutdown(Some(Duration::ZERO)).await.unwrap();
}

#[actix::test]
async fn a_hundred_queued_runs_of_one_pod_share_one_build() {
    let dirs = Dirs::new(&[("many", None)]);
    let rt = FaultRuntime::new();
    rt.script_build(
        "cldpd-many",
        BuildScript::succeed(["Step 1/1 : FROM scratch"]).delay(Duration::from_millis(200)),
    );
    rt.script_pod("many", RunScript::new().stdout_lines(1).exit(0));
    let d = Dispatcher::new(dirs.settings().max_concurrent(4), rt.clone());
    let mut sessions = Vec::new();
    for _ in 0..100 {
        sessions.push(d.start(StartRequest::prompt("many", "go")).await.unwrap());
    }
    for s in &sessions {
        let seen = within(60, "a run", collect(s)).await;
        assert!(seen.problems.is_empty());
        assert_flow(&seen.flow, START);
    }
    assert_eq!(rt.build_count("cldpd-many"), 1);
    assert_eq!(d.build_count().await.unwrap(), 1);
    assert!(rt.max_running() <= 4);
    // Editing the pod makes the next run build again.
    std::fs::write(dirs.pods().join("many").join("extra.txt"), "changed").unwrap();
    let s = d.start(StartRequest::prompt("many", "go")).await.unwrap();
    s.wait().await.unwrap();
    assert_eq!(rt.build_count("cldpd-many"), 2);
}

#[actix::test]
async fn a_failed_shared_build_fails_every_waiting_run_with_its_output() {
    let dirs = Dirs::new(&[("bad", None)]);
    let rt = FaultRuntime::new();
    rt.script_build(
        "cldpd-bad",
        BuildScript::fail(
            [
                "Step 1/2 : FROM scratch",
                "Step 2/2 : RUN make",
                "make: no rule",
            ],
            1,
        )
        .delay(Duration::from_millis(300)),
    );
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(d.start(StartRequest::prompt("bad", "go")).await.unwrap());
    }
    for s in &sessions {
        let seen = within(30, "a run", collect(s)).await;
        assert_flow(&seen.flow, &["build_started", "build_output*", "error"]);
        let lines: Vec<&str> = seen
            .all
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::BuildOutput { line } => Some(line.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines,
            [
                "Step 1/2 : FROM scratch",
                "Step 2/2 : RUN make",
                "make: no rule"
            ]
        );
        match s.wait().await {
            Err(Error::BuildFailed { tail, .. }) => {
                assert_eq!(tail.last().unwrap(), "make: no rule")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rt.build_count("cldpd-bad"), 1);
    assert_eq!(rt.run_count("bad"), 0);
}

#[actix::test]
async fn builds_are_remembered_across_dispatchers_by_image_id() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().exit(0));
    let build_of = |seen: &Seen| -> bool {
        seen.all
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::BuildComplete { cached, .. } => Some(*cached),
                _ => None,
            })
            .expect("a build_complete event")
    };
    let run_once = |rt: FaultRuntime| {
        let settings = dirs.settings();
        async move {
            // A new dispatcher each time, as a new `cldpd start` process is.
            let d = Dispatcher::new(settings, rt);
            let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
            let seen = within(30, "a run", collect(&s)).await;
            assert_eq!(s.wait().await.unwrap(), 0);
            // Whether checked, rebuilt or reused: the usual order, no gaps.
            assert!(seen.problems.is_empty(), "{:?}", seen.problems);
            assert_flow(&seen.flow, START);
            seen
        }
    };
    let first = run_once(rt.clone()).await;
    assert!(!build_of(&first), "the first run builds");
    let id = "sha256:fault-cldpd-web-1";
    assert_eq!(
        rt.runs().last().unwrap().image,
        id,
        "runs use the built image's id"
    );
    assert_eq!(rt.runs().last().unwrap().labels["cldpd.image"], "cldpd-web");

    let second = run_once(rt.clone()).await;
    assert!(
        build_of(&second),
        "another dispatcher reuses the recorded build"
    );
    assert_eq!(rt.build_count("cldpd-web"), 1);
    assert_eq!(rt.runs().last().unwrap().image, id);

    // The image was removed behind cldpd's back: checked, then rebuilt.
    rt.remove_image(id);
    let third = run_once(rt.clone()).await;
    assert!(!build_of(&third));
    assert_eq!(rt.build_count("cldpd-web"), 2);
    assert_eq!(rt.runs().last().unwrap().image, "sha256:fault-cldpd-web-2");

    // Editing the pod means new inputs: built again.
    std::fs::write(dirs.pods().join("web").join("notes.txt"), "changed").unwrap();
    let fourth = run_once(rt.clone()).await;
    assert!(!build_of(&fourth));
    assert_eq!(rt.build_count("cldpd-web"), 3);
    assert!(rt.running().is_empty(), "{:?}", rt.running());
}

/// Item 11 of issue 9: while a session checks an image recorded by another
/// process, its container already runs and its output is held back — in
/// the container's pipe (back-pressure on the runner), not in a queue that
/// grows with everything the container writes meanwhile. Once the check
/// answers, every line goes out, in order. Before the fix the session took
/// every report of the runner into an unbounded queue: the container ran
/// to its end while the check was still out.
#[actix::test]
async fn output_waits_in_the_pipe_while_a_recorded_image_is_checked() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().exit(0));
    {
        // Another process builds and records the image.
        let d = Dispatcher::new(dirs.settings(), rt.clone());
        let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
        assert_eq!(within(30, "the first run", s.wait()).await.unwrap(), 0);
        d.shutdown(None).await.unwrap();
    }
    let lines = 50_000;
    rt.script_pod("web", RunScript::new().stdout_lines(lines).exit(0));
    rt.hold_image_checks(true);
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    let seen = tokio::spawn({
        let s = s.clone();
        async move { collect(&s).await }
    });
    within(30, "the container to start", async {
        while rt.running().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    // An observation window, not a synchronisation: the fault runtime
    // writes 50,000 lines in a few milliseconds when they are read.
    let window = std::time::Instant::now() + Duration::from_millis(1000);
    while std::time::Instant::now() < window {
        assert_eq!(
            rt.running(),
            [s.id().to_string()],
            "the container must wait for its output to be read"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rt.hold_image_checks(false);
    assert_eq!(within(30, "the run", s.wait()).await.unwrap(), 0);
    let seen = within(30, "every event", seen).await.unwrap();
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(seen.stdout, lines as u64);
    assert_flow(&seen.flow, START);
    d.shutdown(None).await.unwrap();
}
