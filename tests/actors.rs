//! The actor system over the FaultRuntime: event ordering (invariant 1),
//! loss (2), subscribers (3), stop escalation (6), panics, bad input (8).
//! Every test is bounded by `within(...)`; nothing sleeps to synchronise.

mod support;

use std::time::{Duration, Instant};

use actix::prelude::*;
use cldpd::messages::dispatcher::Start;
use cldpd::messages::session::Subscribe;
use cldpd::runtime::{BuildScript, FaultRuntime, RunScript, Runtime, StopSignal};
use cldpd::{
    Dispatcher, Error, Event, EventBatch, EventKind, OutputStream, StartRequest, Subscriber,
};
use futures_util::StreamExt;
use support::fault::*;

const ISSUE: &str = "https://github.com/acme/web/issues/1";

fn setup(pods: &[(&str, Option<&str>)]) -> (Dirs, FaultRuntime, Dispatcher) {
    let dirs = Dirs::new(pods);
    let rt = FaultRuntime::new();
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    (dirs, rt, d)
}

// ----- invariant 1: ordering -------------------------------------------------

#[actix::test]
async fn start_events_follow_the_grammar() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_build(
        "cldpd-web",
        BuildScript::succeed(["Step 1/2 : FROM scratch", "Step 2/2 : COPY . ."]),
    );
    rt.script_pod(
        "web",
        RunScript::new().stdout_lines(3).stderr_lines(2).exit(0),
    );
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    let seen = within(20, "the run", collect(&s)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_flow(&seen.flow, START);
    assert_eq!((seen.stdout, seen.stderr), (3, 2));
    let build_lines: Vec<_> = seen
        .all
        .iter()
        .filter(|e| e.kind.name() == "build_output")
        .collect();
    assert_eq!(build_lines.len(), 2);
    assert!(matches!(
        seen.terminal.unwrap().kind,
        EventKind::ContainerExited { code: 0 }
    ));
    assert_eq!(s.wait().await.unwrap(), 0);
    // Every event has this session's id and the log holds the same events.
    assert!(seen.all.iter().all(|e| &*e.session == s.id()));
    assert_eq!(cldpd::log::read_all(s.log_path()).unwrap(), seen.all);
    // The container got labels, a pinned conversation and --init-able argv.
    let spec = rt.runs().pop().unwrap();
    assert_eq!(spec.container, s.id());
    assert_eq!(spec.labels["cldpd.session"], s.id());
    assert_eq!(spec.labels["cldpd.pod"], "web");
    let conv = &spec.labels["cldpd.conversation"];
    assert_eq!(
        spec.command,
        [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--session-id",
            conv.as_str()
        ]
    );
    // The prompt is on stdin, never in argv.
    let prompt = String::from_utf8(spec.stdin.as_ref().unwrap().bytes().to_vec()).unwrap();
    assert!(prompt.ends_with(&format!("Work on this GitHub issue: {ISSUE}")));
    assert_eq!(
        rt.stdins(),
        [(s.id().to_string(), spec.stdin.clone().unwrap())]
    );
}

#[actix::test]
async fn build_failure_events_follow_the_grammar() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_build(
        "cldpd-web",
        BuildScript::fail(["Step 1/1 : RUN make", "make: *** no rule"], 2),
    );
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    let seen = within(20, "the run", collect(&s)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_flow(&seen.flow, &["build_started", "build_output*", "error"]);
    match &seen.terminal.unwrap().kind {
        EventKind::Error { code, message } => {
            assert_eq!(code, "build_failed");
            assert!(message.contains("no rule"), "{message}");
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        s.wait().await,
        Err(Error::BuildFailed { code: Some(2), .. })
    ));
    assert_eq!(rt.run_count("web"), 0, "no container after a failed build");
}

#[actix::test]
async fn runtime_failure_events_follow_the_grammar() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(5)
            .crash("engine lost the container"),
    );
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    let seen = within(20, "the run", collect(&s)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_flow(
        &seen.flow,
        &[
            "build_started",
            "build_output*",
            "build_complete",
            "container_started",
            "output*",
            "error",
        ],
    );
    assert_eq!(seen.stdout, 5);
    assert!(matches!(s.wait().await, Err(Error::RuntimeFailed { .. })));
}

/// The registry (lookup and list) answers with the info the starts
/// returned: the run's issue, the resume's origin. (Both hang, so both are
/// still live when asked.)
#[actix::test]
async fn the_registry_answers_with_the_info_the_starts_returned() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(1).hang());
    rt.script_exec("web", RunScript::new().stdout_lines(1).hang());
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    let r = d.resume(s.id(), "also fix the tests").await.unwrap();
    assert_eq!(s.info().issue.as_deref(), Some(ISSUE));
    assert_eq!(r.info().resume_of.as_deref(), Some(s.id()));
    let listed = d.sessions().await.unwrap();
    assert_eq!(listed.len(), 2);
    for x in [&s, &r] {
        let found = d.session(x.id()).await.unwrap().expect("live");
        let in_list = listed.iter().find(|l| l.id() == x.id()).expect("listed");
        for y in [found.info(), in_list.info()] {
            let z = x.info();
            assert_eq!(
                (&y.id, &y.pod, &y.image, &y.resume_of, &y.issue, &y.log_path),
                (&z.id, &z.pod, &z.image, &z.resume_of, &z.issue, &z.log_path)
            );
        }
    }
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn resume_events_follow_the_grammar_and_reach_the_pinned_conversation() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(1).hang());
    rt.script_exec("web", RunScript::new().stdout_lines(2).exit(0));
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    let r = d.resume(s.id(), "also fix the tests").await.unwrap();
    assert_ne!(r.id(), s.id());
    assert_eq!(r.info().resume_of.as_deref(), Some(s.id()));
    let seen = within(20, "the resume", collect(&r)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_flow(
        &seen.flow,
        &["container_started", "output*", "container_exited"],
    );
    let conv = rt.runs()[0].labels["cldpd.conversation"].clone();
    let exec = rt.execs().pop().unwrap();
    assert_eq!(exec.container, s.id());
    assert_eq!(
        exec.command,
        [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--resume",
            conv.as_str()
        ]
    );
    assert_eq!(exec.stdin.unwrap().bytes(), b"also fix the tests");
    // Resume by pod name works while exactly one run of the pod is live.
    let r2 = d.resume("web", "one more").await.unwrap();
    assert_eq!(within(20, "resume 2", r2.wait()).await.unwrap(), 0);
    assert_eq!(s.stop(Some(Duration::ZERO)).await.unwrap(), 137);
}

#[actix::test]
async fn resume_targets_are_checked() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().hang());
    assert!(matches!(
        d.resume("web", "hi").await,
        Err(Error::SessionNotFound { .. })
    ));
    assert!(matches!(
        d.resume("web", "  ").await,
        Err(Error::EmptyPrompt)
    ));
    let a = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    let b = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    within(20, "running", wait_running(&a)).await;
    within(20, "running", wait_running(&b)).await;
    match d.resume("web", "hi").await {
        Err(Error::AmbiguousTarget { sessions, .. }) => {
            let mut want = vec![a.id().to_string(), b.id().to_string()];
            want.sort();
            assert_eq!(sessions, want);
        }
        other => panic!("{other:?}"),
    }
    // An exec into a container that has gone away is SessionNotFound.
    rt.script_exec("web", RunScript::new().exit(0));
    a.stop(Some(Duration::ZERO)).await.unwrap();
    assert!(matches!(
        d.resume(a.id(), "hi").await,
        Err(Error::SessionNotFound { .. })
    ));
    d.shutdown(Some(Duration::ZERO)).await.unwrap();
}

// ----- invariant 2: lossless -------------------------------------------------

#[actix::test]
async fn thousand_sessions_of_thousand_lines_lose_nothing() {
    let (_dirs, rt, d) = setup(&[("bulk", None)]);
    rt.record_specs(false);
    rt.script_pod("bulk", RunScript::new().stdout_lines(1000).exit(0));
    let mut waits = Vec::new();
    for i in 0..1000 {
        // Half with actix's default mailbox (they lag and are fed from the
        // log), half with a roomy one.
        let (checker, done) = Checker::start(false, if i % 2 == 0 { 16 } else { 1024 });
        let req = StartRequest::prompt("bulk", "go").subscribe(checker.recipient::<Event>());
        d.start(req).await.unwrap();
        waits.push(done);
    }
    let seens = within(240, "1000 sessions", futures_util::future::join_all(waits)).await;
    for seen in seens {
        let seen = seen.expect("checker reported");
        assert!(
            seen.problems.is_empty(),
            "{:?}",
            &seen.problems[..seen.problems.len().min(5)]
        );
        assert_eq!(seen.stdout, 1000);
        assert_flow(&seen.flow, START);
        assert!(matches!(
            seen.terminal.unwrap().kind,
            EventKind::ContainerExited { code: 0 }
        ));
    }
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn one_session_of_a_million_lines_loses_nothing() {
    let (_dirs, rt, d) = setup(&[("big", None)]);
    rt.script_pod(
        "big",
        RunScript::new()
            .lines(OutputStream::Stdout, 500_000, 0, None)
            .lines(OutputStream::Stderr, 500_000, 0, None)
            .exit(0),
    );
    let s = d.start(StartRequest::prompt("big", "go")).await.unwrap();
    let mut seen = Seen::default();
    let mut next = 1;
    let mut events = s.events();
    let count = async {
        while let Some(ev) = events.next().await {
            record(&mut seen, &mut next, &ev);
        }
    };
    within(240, "a million lines", count).await;
    assert!(
        seen.problems.is_empty(),
        "{:?}",
        &seen.problems[..seen.problems.len().min(5)]
    );
    assert_eq!((seen.stdout, seen.stderr), (500_000, 500_000));
    assert_flow(
        &seen.flow,
        &[
            "build_started",
            "build_output*",
            "build_complete",
            "container_started",
            "output*",
            "container_exited",
        ],
    );
}

#[actix::test]
async fn non_utf8_and_a_ten_mib_line_do_not_end_the_stream() {
    let (_dirs, rt, d) = setup(&[("odd", None)]);
    rt.script_pod(
        "odd",
        RunScript::new()
            .bytes(
                OutputStream::Stdout,
                b"before\n\xff\xfe bad \xc3\x28 bytes\n".to_vec(),
            )
            .long_line(OutputStream::Stderr, 10 * 1024 * 1024)
            .bytes(OutputStream::Stdout, b"after\n".to_vec())
            .exit(0),
    );
    let s = d.start(StartRequest::prompt("odd", "go")).await.unwrap();
    let seen = within(120, "the run", collect(&s)).await;
    let outs: Vec<(OutputStream, &str, bool)> = seen
        .all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Output {
                stream,
                line,
                partial,
            } => Some((*stream, line.as_str(), *partial)),
            _ => None,
        })
        .collect();
    let stdout: Vec<&str> = outs
        .iter()
        .filter(|o| o.0 == OutputStream::Stdout)
        .map(|o| o.1)
        .collect();
    assert_eq!(stdout[0], "before");
    assert_eq!(stdout[1], "\u{fffd}\u{fffd} bad \u{fffd}( bytes");
    assert_eq!(stdout[2], "after");
    let long: Vec<_> = outs
        .iter()
        .filter(|o| o.0 == OutputStream::Stderr)
        .collect();
    assert_eq!(
        long.iter().map(|o| o.1.len()).sum::<usize>(),
        10 * 1024 * 1024
    );
    assert!(long
        .iter()
        .all(|o| o.1.len() <= cldpd::runtime::DEFAULT_LINE_CAP));
    assert!(long[..long.len() - 1].iter().all(|o| o.2) && !long.last().unwrap().2);
    assert!(matches!(
        seen.terminal.unwrap().kind,
        EventKind::ContainerExited { code: 0 }
    ));
}

// ----- invariant 3: subscribers ---------------------------------------------

#[actix::test]
async fn a_never_read_stream_blocks_nothing_and_later_gets_everything() {
    let (_dirs, rt, d) = setup(&[("a", None), ("b", None)]);
    rt.script_pod("a", RunScript::new().stdout_lines(50_000).exit(3));
    rt.script_pod("b", RunScript::new().hang());
    let a = d.start(StartRequest::prompt("a", "go")).await.unwrap();
    let unread = a.events(); // never polled while the run goes on
    let b = d.start(StartRequest::prompt("b", "go")).await.unwrap();
    let mut b_events = b.events();
    // The run completes and wait() answers although nobody reads `unread`.
    assert_eq!(within(60, "wait", a.wait()).await.unwrap(), 3);
    // Another session is unaffected and stop() answers.
    assert!(matches!(
        within(10, "b's first event", b_events.next())
            .await
            .unwrap()
            .kind,
        EventKind::BuildStarted { .. }
    ));
    assert_eq!(
        within(20, "stop b", b.stop(Some(Duration::ZERO)))
            .await
            .unwrap(),
        137
    );
    // Reading now yields every event from the first, in order.
    let mut seen = Seen::default();
    let mut next = 1;
    let all: Vec<Event> = within(60, "replay", unread.collect()).await;
    for ev in &all {
        record(&mut seen, &mut next, ev);
    }
    assert!(
        seen.problems.is_empty(),
        "{:?}",
        &seen.problems[..seen.problems.len().min(5)]
    );
    assert_eq!(seen.stdout, 50_000);
    assert!(matches!(
        seen.terminal.unwrap().kind,
        EventKind::ContainerExited { code: 3 }
    ));
}

/// Stops itself after `n` events: a subscriber that dies mid-run.
struct DiesAfter(usize);
impl Actor for DiesAfter {
    type Context = Context<Self>;
}
impl Handler<Event> for DiesAfter {
    type Result = ();
    fn handle(&mut self, _: Event, ctx: &mut Context<Self>) {
        self.0 = self.0.saturating_sub(1);
        if self.0 == 0 {
            ctx.stop();
        }
    }
}

#[actix::test]
async fn a_dead_subscriber_is_dropped_and_the_others_get_everything() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(20_000).exit(0));
    let dies = DiesAfter(10).start();
    let (checker, done) = Checker::start(false, 64);
    let req = StartRequest::prompt("web", "go")
        .subscribe(dies.recipient::<Event>())
        .subscribe(checker.recipient::<Event>());
    let s = d.start(req).await.unwrap();
    let seen = within(60, "the checker", done).await.unwrap();
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(seen.stdout, 20_000);
    assert_eq!(s.wait().await.unwrap(), 0);
}

/// Batch subscribers (`Subscriber::Batches`, `WeakBatches`,
/// `BatchChannel`) get exactly what an event subscriber gets (every
/// event, in order, one terminal event), whether they keep up, lag
/// behind a one-message mailbox and are fed from the window and the log,
/// or are not read at all until the run has ended; and they get it in
/// batches, far fewer messages than events.
#[actix::test]
async fn batch_subscribers_get_every_event_in_order_in_fewer_messages() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(100_000).exit(0));
    let (roomy, roomy_done) = Checker::start(false, 1024);
    let (tight, tight_done) = Checker::start(false, 1);
    let (weak, weak_done) = Checker::start(false, 16);
    let (each, each_done) = Checker::start(false, 16);
    let (tx, mut unread) = tokio::sync::mpsc::channel::<EventBatch>(2);
    let req = StartRequest::prompt("web", "go")
        .subscribe(Subscriber::Batches(roomy.clone().recipient()))
        .subscribe(Subscriber::Batches(tight.clone().recipient()))
        .subscribe(Subscriber::WeakBatches(weak.downgrade().recipient()))
        .subscribe(each.clone().recipient::<Event>())
        .subscribe(Subscriber::BatchChannel(tx));
    let s = d.start(req).await.unwrap();
    assert_eq!(within(60, "the run", s.wait()).await.unwrap(), 0);
    let mut seens = Vec::new();
    for (name, done) in [
        ("roomy", roomy_done),
        ("tight", tight_done),
        ("weak", weak_done),
        ("each", each_done),
    ] {
        seens.push((name, within(60, name, done).await.unwrap()));
    }
    let mut channel = Seen::default();
    let mut next = 1;
    while let Some(batch) = within(60, "the unread channel", unread.recv()).await {
        assert!(!batch.0.is_empty(), "an empty batch");
        channel.batches += 1;
        for ev in &batch.0 {
            record(&mut channel, &mut next, ev);
        }
    }
    seens.push(("channel", channel));
    for (name, seen) in &seens {
        assert!(
            seen.problems.is_empty(),
            "{name}: {:?}",
            &seen.problems[..seen.problems.len().min(5)]
        );
        assert_eq!(seen.stdout, 100_000, "{name}");
        assert_flow(&seen.flow, START);
        assert!(
            matches!(
                seen.terminal.as_ref().map(|t| &t.kind),
                Some(EventKind::ContainerExited { code: 0 })
            ),
            "{name}: {:?}",
            seen.terminal
        );
        if *name == "each" {
            assert_eq!(seen.batches, 0);
        } else {
            assert!(
                seen.batches * 4 < seen.events,
                "{name}: {} messages for {} events",
                seen.batches,
                seen.events
            );
        }
    }
    drop((roomy, tight, weak, each));
}

/// Panics on its first output event.
struct Panics;
impl Actor for Panics {
    type Context = Context<Self>;
}
impl Handler<Event> for Panics {
    type Result = ();
    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        if matches!(ev.kind, EventKind::Output { .. }) {
            panic!("subscriber bug (expected by this test)");
        }
    }
}

#[actix::test]
async fn a_panicking_subscriber_takes_nothing_down() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(1000).exit(0));
    // On its own arbiter, like a subscriber of the embedding application.
    let arbiter = Arbiter::new();
    let panics = Panics::start_in_arbiter(&arbiter.handle(), |_| Panics);
    let (checker, done) = Checker::start(false, 1024);
    let req = StartRequest::prompt("web", "go")
        .subscribe(panics.recipient::<Event>())
        .subscribe(checker.recipient::<Event>());
    let s = d.start(req).await.unwrap();
    let seen = within(60, "the checker", done).await.unwrap();
    assert_eq!(seen.stdout, 1000);
    assert_eq!(s.wait().await.unwrap(), 0);
    // The dispatcher still serves.
    let again = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    assert_eq!(within(30, "a second run", again.wait()).await.unwrap(), 0);
    arbiter.stop();
}

#[actix::test]
async fn subscribers_added_later_replay_from_the_first_event() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(3000).hang());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    // Wait until some output exists, then subscribe an actor from seq 1.
    let mut st = s.events();
    while let Some(ev) = st.next().await {
        if ev.line() == Some("out 3000") {
            break;
        }
    }
    let (checker, done) = Checker::start(true, 16);
    s.info()
        .addr
        .send(Subscribe {
            subscriber: Subscriber::from(checker.recipient::<Event>()),
            from_seq: 1,
        })
        .await
        .unwrap()
        .unwrap();
    s.stop(Some(Duration::ZERO)).await.unwrap();
    let seen = within(30, "the late subscriber", done).await.unwrap();
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(seen.all[0].seq, 1);
    assert_eq!(seen.stdout, 3000);
}

// ----- invariant 6: stop escalation ------------------------------------------

#[actix::test]
async fn sigterm_ignored_is_killed_after_the_grace() {
    let (_dirs, rt, d) = setup(&[("stubborn", None)]);
    rt.script_pod(
        "stubborn",
        RunScript::new().stdout_lines(1).hang().ignore_sigterm(),
    );
    let s = d
        .start(StartRequest::prompt("stubborn", "go"))
        .await
        .unwrap();
    within(20, "running", wait_running(&s)).await;
    let grace = Duration::from_millis(300);
    let t0 = Instant::now();
    let code = within(20, "stop", s.stop(Some(grace))).await.unwrap();
    assert!(
        t0.elapsed() >= grace,
        "SIGKILL came before the grace was over"
    );
    assert_eq!(code, 137);
    assert_eq!(rt.signals(s.id()), [StopSignal::Term, StopSignal::Kill]);
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn a_cooperative_agent_stops_on_sigterm_alone() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().hang());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    assert_eq!(
        within(20, "stop", s.stop(Some(Duration::from_secs(60))))
            .await
            .unwrap(),
        143
    );
    assert_eq!(rt.signals(s.id()), [StopSignal::Term]);
    let seen = collect(&s).await;
    assert!(matches!(
        seen.terminal.unwrap().kind,
        EventKind::ContainerExited { code: 143 }
    ));
}

#[actix::test]
async fn stop_is_idempotent_and_a_shorter_grace_hurries_it() {
    let (_dirs, rt, d) = setup(&[("stubborn", None)]);
    rt.script_pod("stubborn", RunScript::new().hang().ignore_sigterm());
    let s = d
        .start(StartRequest::prompt("stubborn", "go"))
        .await
        .unwrap();
    within(20, "running", wait_running(&s)).await;
    let slow = s.stop(Some(Duration::from_secs(3600)));
    let again = s.stop(Some(Duration::from_secs(3600)));
    let fast = s.stop(Some(Duration::ZERO));
    let (a, b, c) = within(
        20,
        "three stops",
        futures_util::future::join3(slow, again, fast),
    )
    .await;
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (137, 137, 137));
    assert_eq!(s.stop(None).await.unwrap(), 137, "stop after the end");
    assert_eq!(rt.signals(s.id()), [StopSignal::Term, StopSignal::Kill]);
    // Exactly one terminal event.
    let seen = collect(&s).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
}

#[actix::test]
async fn a_stop_that_cannot_complete_is_an_error_not_a_hang() {
    let (_dirs, rt, d) = setup(&[("stuck", None)]);
    rt.script_pod("stuck", RunScript::new().hang().stop_fails());
    let s = d.start(StartRequest::prompt("stuck", "go")).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    let r = within(20, "stop", s.stop(Some(Duration::from_millis(50)))).await;
    assert!(matches!(r, Err(Error::StopFailed { .. })), "{r:?}");
    let seen = collect(&s).await;
    assert!(
        matches!(&seen.terminal.unwrap().kind, EventKind::Error { code, .. } if code == "stop_failed")
    );
}

#[actix::test]
async fn stopping_a_run_that_is_building_ends_it_without_a_container() {
    let (_dirs, rt, d) = setup(&[("slow", None)]);
    rt.script_build("cldpd-slow", BuildScript::hang());
    let s = d.start(StartRequest::prompt("slow", "go")).await.unwrap();
    wait_state(&s, 10, "building", |s| {
        matches!(s, cldpd::SessionState::Building)
    })
    .await;
    assert!(matches!(
        within(10, "stop", s.stop(None)).await,
        Err(Error::Stopped)
    ));
    let seen = collect(&s).await;
    assert_flow(&seen.flow, &["build_started", "error"]);
    assert_eq!(rt.run_count("slow"), 0);
}

#[actix::test]
async fn dispatcher_shutdown_stops_every_live_run() {
    let (_dirs, rt, d) = setup(&[("web", None), ("stubborn", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(1).hang());
    rt.script_pod("stubborn", RunScript::new().hang().ignore_sigterm());
    let mut sessions = Vec::new();
    for i in 0..20 {
        let pod = if i % 4 == 0 { "stubborn" } else { "web" };
        sessions.push(d.start(StartRequest::prompt(pod, "go")).await.unwrap());
    }
    for s in &sessions {
        within(20, "running", wait_running(s)).await;
    }
    within(30, "shutdown", d.shutdown(Some(Duration::from_millis(200))))
        .await
        .unwrap();
    for s in &sessions {
        let code = s.wait().await.unwrap();
        assert!(code == 143 || code == 137, "{code}");
    }
    assert!(rt.running().is_empty());
    assert!(d.sessions().await.unwrap().is_empty());
    assert!(matches!(
        d.start(StartRequest::prompt("web", "go")).await,
        Err(Error::ShuttingDown)
    ));
}

// ----- panics ----------------------------------------------------------------

#[actix::test]
async fn a_panicking_runtime_ends_the_run_with_an_error_and_nothing_else() {
    let (_dirs, rt, d) = setup(&[("boom", None), ("early", None), ("web", None)]);
    rt.script_pod(
        "boom",
        RunScript::new()
            .stdout_lines(10)
            .panic("fault runtime panics (expected)"),
    );
    rt.script_pod(
        "early",
        RunScript::new().panic_on_start("run() panics (expected)"),
    );
    rt.script_pod("web", RunScript::new().stdout_lines(1).exit(0));
    for pod in ["boom", "early"] {
        let s = d.start(StartRequest::prompt(pod, "go")).await.unwrap();
        let seen = within(20, "the run", collect(&s)).await;
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        match &seen.terminal.as_ref().unwrap().kind {
            EventKind::Error { code, message } => {
                assert_eq!(code, "internal");
                assert!(message.contains("panicked"), "{message}");
            }
            k => panic!("{k:?}"),
        }
    }
    // The containers of the failed runs were removed.
    assert!(rt.running().is_empty(), "{:?}", rt.running());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    assert_eq!(within(20, "a healthy run", s.wait()).await.unwrap(), 0);
}

#[actix::test]
async fn a_panicking_build_fails_its_run_only() {
    let (_dirs, rt, d) = setup(&[("boom", None), ("web", None)]);
    rt.script_build("cldpd-boom", BuildScript::panic("build panics (expected)"));
    let s = d.start(StartRequest::prompt("boom", "go")).await.unwrap();
    assert!(matches!(
        within(20, "wait", s.wait()).await,
        Err(Error::Internal { .. })
    ));
    let ok = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    assert_eq!(within(20, "a healthy run", ok.wait()).await.unwrap(), 0);
}

// ----- invariant 8: bad input ------------------------------------------------

#[actix::test]
async fn a_command_line_over_the_linux_limit_is_refused_before_anything_runs() {
    let (dirs, rt, d) = setup(&[("web", None)]);
    let env: String = (0..100_000)
        .map(|i| format!("\"VAR_{i}\": \"x\""))
        .collect::<Vec<_>>()
        .join(", ");
    dirs.add_pod("manyenv", Some(&format!("{{ \"env\": {{ {env} }} }}")));
    // A prompt goes on the agent's stdin, never in argv: a long one is no
    // command-line problem (it used to be, before prompts moved to stdin).
    let huge = "p".repeat(200_000);
    d.validate(StartRequest::prompt("web", huge.clone()))
        .await
        .expect("a 200 KB prompt passes the pre-check");
    match d.validate(StartRequest::prompt("manyenv", "task")).await {
        Err(e @ Error::ArgumentsTooLong { .. }) => {
            assert!(e.to_string().contains("100000 env entries"), "{e}");
            assert!(e.hint().unwrap().contains("fewer"), "{:?}", e.hint());
        }
        other => panic!("expected ArgumentsTooLong, got {other:?}"),
    }
    match d.start(StartRequest::prompt("manyenv", "task")).await {
        Err(Error::ArgumentsTooLong { .. }) => {}
        other => panic!(
            "expected ArgumentsTooLong, got {:?}",
            other.map(|s| s.id().to_string())
        ),
    }
    assert!(rt.runs().is_empty() && rt.execs().is_empty(), "nothing ran");
}

#[actix::test]
async fn bad_input_gives_its_own_error_and_creates_nothing() {
    let (dirs, rt, d) = setup(&[("web", None)]);
    std::fs::create_dir_all(dirs.pods().join("nodockerfile")).unwrap();
    dirs.add_pod("badjson", Some("{ \"image\": "));
    dirs.add_pod("typo", Some(r#"{ "imgae": "x" }"#));
    dirs.add_pod(
        "nomount",
        Some(r#"{ "mounts": [{ "source": "/definitely/not/here", "target": "/w" }] }"#),
    );
    dirs.add_pod(
        "relmount",
        Some(r#"{ "mounts": [{ "source": "/tmp", "target": "w" }] }"#),
    );
    dirs.add_pod("badenv", Some(r#"{ "env": { "1BAD": "x" } }"#));
    let start = |pod: &str, issue: &str| d.start(StartRequest::issue(pod, issue));
    let e = start("nope", ISSUE).await.unwrap_err();
    match &e {
        Error::PodNotFound { available, .. } => assert!(available.contains(&"web".to_string())),
        e => panic!("{e:?}"),
    }
    for name in ["../web", "a/b", "/x", "", "Web", ".."] {
        assert!(
            matches!(start(name, ISSUE).await, Err(Error::InvalidPodName { .. })),
            "pod name {name:?} must be refused"
        );
    }
    assert!(matches!(
        start("nodockerfile", ISSUE).await,
        Err(Error::InvalidPod { .. })
    ));
    assert!(matches!(
        start("badjson", ISSUE).await,
        Err(Error::PodConfig { .. })
    ));
    match start("typo", ISSUE).await {
        Err(Error::PodConfig { field, path, .. }) => {
            assert_eq!(field.as_deref(), Some("imgae"));
            assert!(path.ends_with("typo/pod.json"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        start("nomount", ISSUE).await,
        Err(Error::MountSourceMissing { .. })
    ));
    assert!(matches!(
        start("relmount", ISSUE).await,
        Err(Error::MountTargetRelative { .. })
    ));
    assert!(matches!(
        start("badenv", ISSUE).await,
        Err(Error::InvalidEnvName { .. })
    ));
    assert!(matches!(
        start("web", "").await,
        Err(Error::InvalidIssueUrl { .. })
    ));
    assert!(matches!(
        start("web", "not a url").await,
        Err(Error::InvalidIssueUrl { .. })
    ));
    assert!(matches!(
        start("web", "https://github.com/acme/web/pull/1").await,
        Err(Error::InvalidIssueUrl { .. })
    ));
    assert!(matches!(
        d.start(StartRequest::prompt("web", " \n")).await,
        Err(Error::EmptyPrompt)
    ));
    // Nothing was created: no session, no log, no build, no container.
    assert!(d.sessions().await.unwrap().is_empty());
    let logs = std::fs::read_dir(dirs.state().join("sessions"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(logs, 0);
    assert_eq!(d.build_count().await.unwrap(), 0);
    assert!(rt.runs().is_empty());
}

#[actix::test]
async fn docker_and_agent_failures_are_clear_errors_and_leave_nothing_running() {
    let (_dirs, rt, d) = setup(&[("missing", None), ("broken", None), ("web", None)]);
    rt.script_pod("missing", RunScript::new().not_runnable(127));
    rt.script_pod(
        "broken",
        RunScript::new().docker_fails("docker: Error response from daemon: invalid mount config"),
    );
    let s = d
        .start(StartRequest::prompt("missing", "go"))
        .await
        .unwrap();
    match within(20, "wait", s.wait()).await {
        Err(e @ Error::AgentNotRunnable { code: 127, .. }) => {
            assert!(e.hint().unwrap().contains("claude"))
        }
        other => panic!("{other:?}"),
    }
    let s = d.start(StartRequest::prompt("broken", "go")).await.unwrap();
    match within(20, "wait", s.wait()).await {
        Err(Error::DockerFailed { message }) => assert!(message.contains("invalid mount")),
        other => panic!("{other:?}"),
    }
    rt.set_unavailable(true);
    assert!(matches!(
        d.preflight().await,
        Err(Error::DockerUnavailable { .. })
    ));
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    assert!(matches!(
        within(20, "wait", s.wait()).await,
        Err(Error::DockerUnavailable { .. })
    ));
    assert!(rt.running().is_empty());
    assert!(d.sessions().await.unwrap().is_empty());
}

#[actix::test]
async fn the_actor_api_takes_recipients_at_start() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(10).exit(0));
    let (checker, done) = Checker::start(true, 16);
    let info = d
        .addr()
        .send(Start(
            StartRequest::prompt("web", "go").subscribe(checker.recipient::<Event>()),
        ))
        .await
        .unwrap()
        .unwrap();
    let seen = within(20, "checker", done).await.unwrap();
    assert_eq!(&*seen.all[0].session, info.id);
    assert_flow(&seen.flow, START);
}

#[actix::test]
async fn stopping_a_resume_ends_only_the_follow_up() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(1).hang());
    rt.script_exec("web", RunScript::new().stdout_lines(1).hang());
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    let r = d.resume(s.id(), "a long follow-up").await.unwrap();
    within(20, "resume running", wait_running(&r)).await;
    assert_eq!(
        within(20, "stop the resume", r.stop(Some(Duration::from_secs(5))))
            .await
            .unwrap(),
        143
    );
    // The run itself goes on: no signal reached its container.
    assert!(rt.signals(s.id()).is_empty());
    assert!(matches!(s.state(), cldpd::SessionState::Running { .. }));
    assert!(rt.running().contains(&s.id().to_string()));
    assert_eq!(s.stop(Some(Duration::ZERO)).await.unwrap(), 137);
}

#[actix::test]
async fn a_panic_in_a_session_ends_its_run_cleanly_and_nothing_else() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(2).hang());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    let other = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    within(20, "running", wait_running(&other)).await;
    s.info().addr.do_send(cldpd::messages::session::InjectPanic);
    // Subscribers get an error event as the last one.
    let seen = within(20, "the run", collect(&s)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    match &seen.terminal.unwrap().kind {
        EventKind::Error { code, message } => {
            assert_eq!(code, "internal");
            assert!(message.contains("stopped unexpectedly"), "{message}");
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(s.wait().await, Err(Error::Internal { .. })));
    // Its container is removed (by the dispatcher, right after).
    let removed = async {
        while rt.running().contains(&s.id().to_string()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    within(10, "the container's removal", removed).await;
    // The other run and the dispatcher are unaffected.
    assert!(matches!(other.state(), cldpd::SessionState::Running { .. }));
    assert_eq!(other.stop(Some(Duration::ZERO)).await.unwrap(), 137);
    let again = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    within(20, "a new run", wait_running(&again)).await;
    again.stop(Some(Duration::ZERO)).await.unwrap();
}

/// A log that cannot be written no longer ends the run (issue 9, item 7):
/// the subscribers that keep up get every line and the run its own end.
#[actix::test]
async fn an_unwritable_log_does_not_end_the_run() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(1)
            .lines(OutputStream::Stdout, 1000, 0, Some(200.0))
            .exit(0),
    );
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    let mut events = s.events();
    let first_line = async {
        while let Some(ev) = events.next().await {
            if ev.line() == Some("out 1") {
                return;
            }
        }
    };
    within(20, "the first line", first_line).await;
    // The disk goes away under the run: its log path is now a directory.
    std::fs::remove_file(s.log_path()).unwrap();
    std::fs::create_dir(s.log_path()).unwrap();
    let rest: Vec<Event> = within(30, "the end", events.collect()).await;
    let lines = rest
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Output { .. }))
        .count();
    assert_eq!(lines, 1000, "every later line reached the subscriber");
    assert!(matches!(
        rest.last().unwrap().kind,
        EventKind::ContainerExited { code: 0 }
    ));
    assert_eq!(s.wait().await.unwrap(), 0);
}

#[actix::test]
async fn a_runner_that_dies_ends_its_run_with_an_error_and_its_container_removed() {
    let (_dirs, rt, d) = setup(&[("web", None)]);
    rt.script_pod("web", RunScript::new().stdout_lines(2).hang());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    within(20, "running", wait_running(&s)).await;
    s.info()
        .addr
        .do_send(cldpd::messages::session::InjectRunnerPanic);
    let seen = within(20, "the run", collect(&s)).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    match &seen.terminal.unwrap().kind {
        EventKind::Error { code, message } => {
            assert_eq!(code, "internal");
            assert!(message.contains("runner"), "{message}");
        }
        k => panic!("{k:?}"),
    }
    let removed = async {
        while rt.running().contains(&s.id().to_string()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    within(10, "the container's removal", removed).await;
    let again = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    within(20, "a new run", wait_running(&again)).await;
    again.stop(Some(Duration::ZERO)).await.unwrap();
}

/// A stop from another dispatcher (another process) that arrives while the
/// run's container is still `created` — Docker's window between create and
/// start, here a `FaultRuntime` creation delay — is not lost: it targets the
/// created run, waits for its start and ends it with the stop's 143.
#[actix::test]
async fn a_stop_from_elsewhere_while_the_container_is_created_is_not_lost() {
    let (dirs, rt, d) = setup(&[("web", None)]);
    rt.creation_delay(Duration::from_millis(300));
    rt.script_pod("web", RunScript::new().stdout_lines(1).hang());
    let s = d.start(StartRequest::issue("web", ISSUE)).await.unwrap();
    within(20, "the container is created", async {
        while !rt
            .list()
            .await
            .unwrap()
            .iter()
            .any(|c| c.name == s.id() && c.is_created())
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let other = Dispatcher::new(dirs.settings(), rt.clone());
    let report = within(
        20,
        "the stop",
        other.stop(s.id(), Some(Duration::from_secs(5))),
    )
    .await
    .unwrap();
    assert_eq!(report.session, s.id());
    assert_eq!(within(20, "the run's end", s.wait()).await.unwrap(), 143);
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn an_issue_number_means_the_pods_repository_and_the_full_url_is_kept() {
    let (_dirs, rt, d) = setup(&[
        ("web", Some(r#"{"repository": "acme/web"}"#)),
        ("bare", None),
    ]);
    for (issue, url) in [
        ("#42", "https://github.com/acme/web/issues/42"),
        ("other/repo#7", "https://github.com/other/repo/issues/7"),
    ] {
        let s = d.start(StartRequest::issue("web", issue)).await.unwrap();
        let seen = within(20, "the run", collect(&s)).await;
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        let spec = rt.runs().pop().unwrap();
        assert_eq!(spec.labels["cldpd.issue"], url, "{issue}");
        let prompt = String::from_utf8(spec.stdin.as_ref().unwrap().bytes().to_vec()).unwrap();
        assert!(
            prompt.ends_with(&format!("Work on this GitHub issue: {url}")),
            "{prompt}"
        );
    }
    // A pod without a repository: `#42` is refused with what to add.
    match d.start(StartRequest::issue("bare", "#42")).await {
        Err(Error::InvalidIssueUrl { reason, .. }) => {
            assert!(
                reason.contains("\"repository\": \"owner/repo\""),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[actix::test]
async fn a_rebuild_removes_the_replaced_image_only_when_no_container_uses_it() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_next_run("web", RunScript::new().hang());
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    // Image 1, held by a live run.
    let live = d.start(StartRequest::prompt("web", "hold")).await.unwrap();
    wait_running(&live).await;
    let first = rt.image_id("cldpd-web").await.unwrap().unwrap();
    let edit = |n: u32| {
        std::fs::write(
            dirs.pods().join("web").join("Dockerfile"),
            format!("FROM scratch\nLABEL edit={n}\n"),
        )
        .unwrap()
    };
    // Image 2 replaces it: image 1 is in use, so it stays.
    edit(1);
    let s = d.start(StartRequest::prompt("web", "two")).await.unwrap();
    assert_eq!(within(20, "run 2", s.wait()).await.unwrap(), 0);
    let second = rt.image_id("cldpd-web").await.unwrap().unwrap();
    assert_ne!(first, second);
    // Image 3 replaces image 2, which nothing uses: it goes.
    edit(2);
    let s = d.start(StartRequest::prompt("web", "three")).await.unwrap();
    assert_eq!(within(20, "run 3", s.wait()).await.unwrap(), 0);
    within(20, "image 2 removed", async {
        while rt.image_exists(&second).await.unwrap() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Image 1's removal was tried first (right after build 2), and refused.
    assert!(
        rt.image_exists(&first).await.unwrap(),
        "an image in use stays"
    );
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
}
