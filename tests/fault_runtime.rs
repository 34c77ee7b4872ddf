//! `FaultRuntime`: every script step and flag, the engine semantics (names,
//! labels, signals, exits) and its cost. Every test is bounded by a tokio
//! timeout; nothing sleeps to synchronise.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use cldpd::runtime::{
    labels, BuildEvent, BuildScript, BuildSpec, ExecSpec, FaultRuntime, OutputLine, ProcessEvent,
    RunScript, RunSpec, Runtime, Stdin, Step, StopSignal, DEFAULT_LINE_CAP,
};
use cldpd::{Error, OutputStream};
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

// ----- a per-thread counting allocator (for the memory test) ---------------

struct Counting;

thread_local! {
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = NET_BYTES.try_with(|n| n.set(n.get() + delta));
}

fn net_bytes() -> isize {
    NET_BYTES.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ----- helpers ---------------------------------------------------------------

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

fn spec(pod: &str, container: &str) -> RunSpec {
    RunSpec {
        session: format!("{pod}-0a1b2c3d"),
        pod: pod.into(),
        container: container.into(),
        image: format!("cldpd-{pod}"),
        command: vec!["claude".into(), "-p".into(), "work".into()],
        env: vec![],
        workdir: None,
        mounts: vec![],
        labels: [
            (labels::SESSION.to_string(), format!("{pod}-0a1b2c3d")),
            (labels::POD.to_string(), pod.to_string()),
        ]
        .into_iter()
        .collect(),
        resources: Default::default(),
        line_cap: DEFAULT_LINE_CAP,
        stdin: None,
        network: None,
    }
}

fn exec_spec(container: &str) -> ExecSpec {
    ExecSpec {
        container: container.into(),
        command: vec!["claude".into(), "--resume".into()],
        workdir: None,
        line_cap: DEFAULT_LINE_CAP,
        stdin: None,
    }
}

fn build_spec(pod: &str) -> BuildSpec {
    BuildSpec {
        pod: pod.into(),
        image: format!("cldpd-{pod}"),
        context: "/nonexistent".into(),
        dockerfile: "/nonexistent/Dockerfile".into(),
        build_args: vec![],
        labels: Default::default(),
    }
}

async fn collect(stream: BoxStream<'static, ProcessEvent>) -> Vec<ProcessEvent> {
    bounded(stream.collect::<Vec<_>>()).await
}

/// The output lines of a finished process, and its terminal item.
fn split(events: Vec<ProcessEvent>) -> (Vec<OutputLine>, ProcessEvent) {
    let mut it = events.into_iter();
    assert!(
        matches!(it.next(), Some(ProcessEvent::Started { .. })),
        "Started first"
    );
    let mut lines = Vec::new();
    let mut terminal = None;
    for ev in it {
        assert!(
            terminal.is_none(),
            "nothing after the terminal item: {ev:?}"
        );
        match ev {
            ProcessEvent::Output(batch) => {
                assert!(!batch.is_empty(), "no empty batches");
                lines.extend(batch);
            }
            ProcessEvent::Started { .. } => panic!("Started twice"),
            other => terminal = Some(other),
        }
    }
    (lines, terminal.expect("a terminal item"))
}

fn texts(lines: &[OutputLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

fn exit_code(ev: &ProcessEvent) -> i32 {
    match ev {
        ProcessEvent::Exited { code } => *code,
        other => panic!("expected an exit, got {other:?}"),
    }
}

fn failure(ev: &ProcessEvent) -> &Error {
    match ev {
        ProcessEvent::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A stream that was only ever meant to yield one `Failed`.
async fn only_failure(stream: BoxStream<'static, ProcessEvent>) -> Error {
    let mut events = collect(stream).await;
    assert_eq!(events.len(), 1, "{events:?}");
    match events.pop() {
        Some(ProcessEvent::Failed(e)) => e,
        other => panic!("expected Failed, got {other:?}"),
    }
}

async fn started(stream: &mut BoxStream<'static, ProcessEvent>) {
    match bounded(stream.next()).await {
        Some(ProcessEvent::Started { .. }) => {}
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn next(stream: &mut BoxStream<'static, ProcessEvent>) -> ProcessEvent {
    bounded(stream.next()).await.expect("stream ended early")
}

async fn build_events(rt: &FaultRuntime, pod: &str) -> Vec<BuildEvent> {
    bounded(rt.build(build_spec(pod)).collect::<Vec<_>>()).await
}

// ----- defaults and availability ---------------------------------------------

#[tokio::test]
async fn defaults_build_succeeds_and_runs_exit_zero() {
    let rt = FaultRuntime::new();
    assert_eq!(rt.name(), "fault");
    assert!(bounded(rt.preflight()).await.is_ok());

    let build = build_events(&rt, "web").await;
    assert!(matches!(&build[0], BuildEvent::Output(l) if l == &["Step 1/1 : FROM scratch"]));
    assert!(matches!(build[1], BuildEvent::Finished(Ok(_))));
    assert_eq!(build.len(), 2);

    let mut run = rt.run(spec("web", "web-1"));
    match next(&mut run).await {
        ProcessEvent::Started { container } => assert_eq!(container, "web-1"),
        other => panic!("{other:?}"),
    }
    let exec = collect(rt.exec(exec_spec("web-1"))).await;
    let (lines, end) = split(exec);
    assert!(lines.is_empty());
    assert_eq!(exit_code(&end), 0);

    assert_eq!(exit_code(&next(&mut run).await), 0);
    assert!(bounded(run.next()).await.is_none());
    assert!(bounded(run.next()).await.is_none(), "stays ended");
    assert!(rt.running().is_empty());
}

#[tokio::test]
async fn unavailable_docker_fails_everything_until_back() {
    let rt = FaultRuntime::new();
    let mut live = rt.run(spec("web", "web-live"));
    rt.script_pod("web", RunScript::new().hang());
    rt.set_unavailable(true);

    assert_eq!(
        bounded(rt.preflight()).await.unwrap_err().code(),
        "docker_unavailable"
    );
    assert!(bounded(rt.image_exists("cldpd-web")).await.is_err());
    assert!(bounded(rt.list()).await.is_err());
    let build = build_events(&rt, "web").await;
    assert!(matches!(
        &build[..],
        [BuildEvent::Finished(Err(Error::DockerUnavailable { .. }))]
    ));
    assert_eq!(rt.build_count("cldpd-web"), 0, "no build started");
    let err = only_failure(rt.run(spec("web", "web-2"))).await;
    assert_eq!(err.code(), "docker_unavailable");
    assert_eq!(rt.run_count("web"), 2, "runs are counted");
    let err = only_failure(rt.exec(exec_spec("web-live"))).await;
    assert_eq!(err.code(), "docker_unavailable");
    assert!(bounded(rt.signal("web-live", StopSignal::Kill))
        .await
        .is_err());
    assert_eq!(rt.running(), ["web-live"], "live containers keep running");

    rt.set_unavailable(false);
    bounded(rt.preflight()).await.unwrap();
    started(&mut live).await;
    bounded(rt.remove("web-live")).await.unwrap();
    assert_eq!(exit_code(&next(&mut live).await), 137);
}

// ----- builds --------------------------------------------------------------------

#[tokio::test]
async fn build_scripts_are_keyed_by_image_then_pod() {
    let rt = FaultRuntime::new();
    rt.script_build("cldpd-web", BuildScript::succeed(["a", "b"]))
        .script_build("api", BuildScript::succeed(["by pod"]));
    assert!(!bounded(rt.image_exists("cldpd-web")).await.unwrap());

    let build = build_events(&rt, "web").await;
    assert!(matches!(&build[0], BuildEvent::Output(l) if l == &["a", "b"]));
    assert!(matches!(build[1], BuildEvent::Finished(Ok(_))));
    assert!(bounded(rt.image_exists("cldpd-web")).await.unwrap());
    let build = build_events(&rt, "api").await;
    assert!(matches!(&build[0], BuildEvent::Output(l) if l == &["by pod"]));
    build_events(&rt, "web").await;
    assert_eq!(
        (rt.build_count("cldpd-web"), rt.build_count("cldpd-api")),
        (2, 1)
    );

    rt.add_image("cldpd-prebuilt");
    assert!(bounded(rt.image_exists("cldpd-prebuilt")).await.unwrap());
}

#[tokio::test]
async fn failed_build_carries_the_last_20_lines() {
    let rt = FaultRuntime::new();
    let lines: Vec<String> = (1..=25).map(|i| format!("line {i}")).collect();
    rt.script_build("cldpd-web", BuildScript::fail(lines, 2));
    let build = build_events(&rt, "web").await;
    assert!(matches!(&build[0], BuildEvent::Output(l) if l.len() == 25));
    match &build[1] {
        BuildEvent::Finished(Err(Error::BuildFailed { image, code, tail })) => {
            assert_eq!(image, "cldpd-web");
            assert_eq!(*code, Some(2));
            assert_eq!(tail.len(), 20);
            assert_eq!((tail[0].as_str(), tail[19].as_str()), ("line 6", "line 25"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!bounded(rt.image_exists("cldpd-web")).await.unwrap());
}

#[tokio::test]
async fn build_delay_postpones_the_finish() {
    let rt = FaultRuntime::new();
    rt.script_build(
        "cldpd-web",
        BuildScript::succeed(["x"]).delay(Duration::from_millis(40)),
    );
    let t = Instant::now();
    let build = build_events(&rt, "web").await;
    assert!(t.elapsed() >= Duration::from_millis(40));
    assert!(matches!(build.last(), Some(BuildEvent::Finished(Ok(_)))));
}

#[tokio::test]
async fn hanging_build_never_finishes() {
    let rt = FaultRuntime::new();
    rt.script_build("cldpd-web", BuildScript::hang());
    let mut build = rt.build(build_spec("web"));
    let r = tokio::time::timeout(Duration::from_millis(50), build.next()).await;
    assert!(r.is_err(), "still pending");
    drop(build);
    assert_eq!(rt.build_count("cldpd-web"), 1);
}

#[tokio::test]
async fn panicking_build_panics_when_polled() {
    let rt = FaultRuntime::new();
    rt.script_build("cldpd-web", BuildScript::panic("builder bug"));
    let mut build = rt.build(build_spec("web"));
    let caught = bounded(AssertUnwindSafe(build.next()).catch_unwind()).await;
    let payload = caught.expect_err("the build panics");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(message, "builder bug");
}

// ----- output ---------------------------------------------------------------------

#[tokio::test]
async fn lines_are_numbered_per_stream_padded_and_marked() {
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(2)
            .stderr_lines(1)
            .lines(OutputStream::Stdout, 2, 10, None)
            .lines(OutputStream::Stderr, 1, 3, None),
    );
    let (lines, end) = split(collect(rt.run(spec("web", "web-1"))).await);
    assert_eq!(
        texts(&lines),
        [
            "out 1",
            "out 2",
            "err 1",
            "out 3.....",
            "out 4.....",
            "err 2"
        ]
    );
    let streams: Vec<_> = lines.iter().map(|l| l.stream).collect();
    use OutputStream::{Stderr as E, Stdout as O};
    assert_eq!(streams, [O, O, E, O, O, E]);
    assert!(lines.iter().all(|l| !l.partial));
    assert_eq!(exit_code(&end), 0);
}

#[tokio::test]
async fn a_million_lines_arrive_in_order_in_large_batches() {
    const N: usize = 1_000_000;
    let rt = FaultRuntime::new();
    rt.record_specs(false).script_pod(
        "bench",
        RunScript::new()
            .lines(OutputStream::Stdout, N, 80, None)
            .exit(0),
    );
    let mut stream = rt.run(spec("bench", "bench-1"));
    started(&mut stream).await;
    let t = Instant::now();
    let (mut seen, mut batches) = (0usize, 0usize);
    let mut expected = String::new();
    let end = bounded(async {
        loop {
            match stream.next().await.expect("terminal item") {
                ProcessEvent::Output(batch) => {
                    batches += 1;
                    for line in batch {
                        seen += 1;
                        expected.clear();
                        expected.push_str(&format!("out {seen}"));
                        while expected.len() < 80 {
                            expected.push('.');
                        }
                        assert_eq!(line.text, expected);
                    }
                }
                other => break other,
            }
        }
    })
    .await;
    let elapsed = t.elapsed();
    assert_eq!(seen, N);
    assert_eq!(exit_code(&end), 0);
    assert!(batches <= N / 512, "{batches} batches: too small");
    println!(
        "1M lines of 80 bytes, checked: {:.0} lines/s ({batches} batches, {elapsed:?})",
        N as f64 / elapsed.as_secs_f64()
    );

    // Drain only (the benchmark's view): no per-line checks.
    let mut stream = rt.run(spec("bench", "bench-2"));
    let t = Instant::now();
    let mut n = 0;
    while let Some(ev) = bounded(stream.next()).await {
        if let ProcessEvent::Output(batch) = ev {
            n += batch.len();
        }
    }
    let elapsed = t.elapsed();
    assert_eq!(n, N);
    println!(
        "1M lines of 80 bytes, drained: {:.0} lines/s ({elapsed:?})",
        N as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn rate_limited_lines_follow_the_schedule() {
    // 40 lines at 400/s: the last is due 97.5 ms after the first.
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new().lines(OutputStream::Stdout, 40, 0, Some(400.0)),
    );
    let mut stream = rt.run(spec("web", "web-1"));
    started(&mut stream).await;
    let t = Instant::now();
    let (mut lines, mut batches) = (Vec::new(), 0);
    let end = loop {
        match next(&mut stream).await {
            ProcessEvent::Output(batch) => {
                batches += 1;
                lines.extend(batch);
            }
            other => break other,
        }
    };
    let elapsed = t.elapsed();
    assert_eq!(exit_code(&end), 0);
    assert_eq!(lines.len(), 40);
    assert_eq!(lines[39].text, "out 40");
    assert!(
        elapsed >= Duration::from_millis(95),
        "too fast: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "far too slow: {elapsed:?}"
    );
    assert!(
        batches >= 2,
        "output is spread over time ({batches} batches)"
    );
}

#[tokio::test]
async fn invalid_utf8_becomes_replacement_characters_and_output_goes_on() {
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new()
            .bytes(OutputStream::Stdout, b"ok\n\xff\xfebad\n".to_vec())
            .stdout_lines(1)
            .bytes(OutputStream::Stderr, b"no newline at the end"),
    );
    let (lines, end) = split(collect(rt.run(spec("web", "web-1"))).await);
    assert_eq!(
        texts(&lines),
        [
            "ok",
            "\u{fffd}\u{fffd}bad",
            "out 1",
            "no newline at the end"
        ]
    );
    assert_eq!(lines[3].stream, OutputStream::Stderr);
    assert_eq!(exit_code(&end), 0);
}

#[tokio::test]
async fn a_10_mib_line_arrives_in_partial_pieces_and_output_goes_on() {
    const LEN: usize = 10 * 1024 * 1024;
    for cap in [DEFAULT_LINE_CAP, 100_000] {
        let rt = FaultRuntime::new();
        rt.script_pod(
            "web",
            RunScript::new()
                .long_line(OutputStream::Stdout, LEN)
                .stdout_lines(1)
                .exit(0),
        );
        let mut s = spec("web", "web-1");
        s.line_cap = cap;
        let (lines, end) = split(collect(rt.run(s)).await);
        let (last, pieces) = lines.split_last().unwrap();
        assert_eq!(last.text, "out 1");
        assert!(pieces
            .iter()
            .all(|p| p.text.len() <= cap && p.text.bytes().all(|b| b == b'x')));
        assert_eq!(pieces.iter().map(|p| p.text.len()).sum::<usize>(), LEN);
        let (whole_end, partial) = pieces.split_last().unwrap();
        assert!(!whole_end.partial && partial.iter().all(|p| p.partial));
        assert_eq!(pieces.len(), LEN.div_ceil(cap), "cap {cap}");
        assert_eq!(exit_code(&end), 0);
    }
}

#[tokio::test]
async fn batches_stay_bounded() {
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(5000)
            .bytes(OutputStream::Stderr, vec![b'\n'; 5000])
            .lines(OutputStream::Stdout, 100, 100_000, None),
    );
    let events = collect(rt.run(spec("web", "web-1"))).await;
    let mut total = 0;
    for ev in &events {
        if let ProcessEvent::Output(batch) = ev {
            assert!(batch.len() <= 1024, "{} lines", batch.len());
            let bytes: usize = batch.iter().map(|l| l.text.len()).sum();
            assert!(bytes <= 512 * 1024, "{bytes} bytes");
            total += batch.len();
        }
    }
    assert_eq!(total, 10_100);
}

// ----- endings ---------------------------------------------------------------------

#[tokio::test]
async fn sleep_then_exit_with_a_code() {
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(1)
            .sleep(Duration::from_millis(30))
            .exit(3),
    );
    let t = Instant::now();
    let (lines, end) = split(collect(rt.run(spec("web", "web-1"))).await);
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(texts(&lines), ["out 1"]);
    assert_eq!(exit_code(&end), 3);
}

#[tokio::test]
async fn crash_is_a_runtime_failure_after_the_output() {
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(3)
            .crash("connection reset")
            .stdout_lines(9),
    );
    let mut stream = rt.run(spec("web", "web-1"));
    started(&mut stream).await;
    assert_eq!(rt.running(), ["web-1"]);
    let (lines, end) = split(
        std::iter::once(ProcessEvent::Started {
            container: "web-1".into(),
        })
        .chain(collect(stream).await)
        .collect(),
    );
    assert_eq!(lines.len(), 3);
    match failure(&end) {
        Error::RuntimeFailed { message } => assert_eq!(message, "connection reset"),
        other => panic!("{other:?}"),
    }
    assert!(rt.running().is_empty(), "a failed container is not live");
}

#[tokio::test]
async fn panic_inside_poll_is_catchable_and_leaves_the_container_live() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().panic("backend bug"));
    let mut stream = rt.run(spec("web", "web-1"));
    started(&mut stream).await;
    let caught = bounded(AssertUnwindSafe(stream.next()).catch_unwind()).await;
    let payload = caught.expect_err("poll panics");
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("backend bug")
    );
    assert!(
        bounded(stream.next()).await.is_none(),
        "None after the panic"
    );
    assert_eq!(rt.running(), ["web-1"], "whoever drove it must remove it");
    bounded(rt.remove("web-1")).await.unwrap();
    assert!(rt.running().is_empty());
}

#[tokio::test]
async fn panic_on_start_panics_in_run_itself() {
    let rt = FaultRuntime::new();
    rt.script_next_run("web", RunScript::new().panic_on_start("run bug"));
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| rt.run(spec("web", "web-1"))));
    let payload = caught.err().expect("run() panics");
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("run bug")
    );
    assert_eq!(rt.run_count("web"), 1);
    assert!(rt.running().is_empty());
    // The runtime still works afterwards.
    let (_, end) = split(collect(rt.run(spec("web", "web-2"))).await);
    assert_eq!(exit_code(&end), 0);
}

#[tokio::test]
async fn agent_not_runnable_and_docker_failures_fail_before_start() {
    let rt = FaultRuntime::new();
    rt.script_next_run("web", RunScript::new().not_runnable(127))
        .script_next_run("web", RunScript::new().not_runnable(126).stdout_lines(5))
        .script_next_run("web", RunScript::new().docker_fails("invalid mount config"));
    match only_failure(rt.run(spec("web", "web-1"))).await {
        Error::AgentNotRunnable {
            image,
            command,
            code,
            message,
        } => {
            assert_eq!(
                (image.as_str(), command.as_str(), code),
                ("cldpd-web", "claude", 127)
            );
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match only_failure(rt.run(spec("web", "web-2"))).await {
        Error::AgentNotRunnable { code: 126, .. } => {}
        other => panic!("{other:?}"),
    }
    match only_failure(rt.run(spec("web", "web-3"))).await {
        Error::DockerFailed { message } => assert_eq!(message, "invalid mount config"),
        other => panic!("{other:?}"),
    }
    assert!(rt.running().is_empty());
    assert_eq!((rt.run_count("web"), rt.max_running()), (3, 0));
}

#[tokio::test]
async fn next_run_scripts_are_consumed_in_order_before_the_pod_script() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().exit(0))
        .script_next_run("web", RunScript::new().exit(1))
        .script_next_run("web", RunScript::new().crash("second"));
    let codes: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..4 {
            let (_, end) = split(collect(rt.run(spec("web", &format!("web-{i}")))).await);
            v.push(match end {
                ProcessEvent::Exited { code } => format!("exit {code}"),
                ProcessEvent::Failed(e) => e.code().to_string(),
                other => panic!("{other:?}"),
            });
        }
        v
    };
    assert_eq!(codes, ["exit 1", "runtime_failed", "exit 0", "exit 0"]);
    // Another pod is unaffected.
    rt.script_next_run("api", RunScript::new().exit(4));
    let (_, end) = split(collect(rt.run(spec("api", "api-0"))).await);
    assert_eq!(exit_code(&end), 4);
}

// ----- signals, stop, remove -------------------------------------------------------

#[tokio::test]
async fn term_wakes_and_ends_a_hang_sleep_or_rate_limit_with_143() {
    let scripts = [
        RunScript::new().stdout_lines(1).hang(),
        RunScript::new()
            .stdout_lines(1)
            .sleep(Duration::from_secs(3600))
            .stdout_lines(1),
        RunScript::new().lines(OutputStream::Stdout, 3, 0, Some(1.0 / 3600.0)),
        RunScript::new()
            .bytes(OutputStream::Stdout, b"out 1\nunterminated")
            .hang(),
        RunScript::new()
            .stdout_lines(1)
            .sleep(Duration::MAX)
            .stdout_lines(1),
    ];
    for (i, script) in scripts.into_iter().enumerate() {
        let rt = FaultRuntime::new();
        rt.script_pod("web", script);
        let mut stream = rt.run(spec("web", "web-1"));
        started(&mut stream).await;
        let first = next(&mut stream).await;
        assert!(
            matches!(&first, ProcessEvent::Output(l) if l[0].text == "out 1"),
            "{i}: {first:?}"
        );
        // The next poll blocks; the signal must wake it.
        let (ev, sent) = bounded(async {
            tokio::join!(next(&mut stream), async {
                tokio::task::yield_now().await;
                rt.signal("web-1", StopSignal::Term).await
            })
        })
        .await;
        sent.unwrap();
        let ev = if i == 3 {
            // The unterminated line is flushed first, as at a real EOF.
            assert!(
                matches!(&ev, ProcessEvent::Output(l) if l[0].text == "unterminated"),
                "{ev:?}"
            );
            next(&mut stream).await
        } else {
            ev
        };
        assert_eq!(exit_code(&ev), 143, "script {i}");
        assert!(bounded(stream.next()).await.is_none());
        assert_eq!(rt.signals("web-1"), [StopSignal::Term]);
        assert!(rt.running().is_empty());
    }
}

#[tokio::test]
async fn ignore_sigterm_survives_term_and_dies_on_kill() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().ignore_sigterm().hang());
    let mut stream = rt.run(spec("web", "web-1"));
    started(&mut stream).await;
    bounded(rt.signal("web-1", StopSignal::Term)).await.unwrap();
    assert!(
        futures_util::poll!(stream.next()).is_pending(),
        "TERM ignored"
    );
    assert_eq!(rt.running(), ["web-1"]);
    bounded(rt.signal("web-1", StopSignal::Kill)).await.unwrap();
    assert_eq!(exit_code(&next(&mut stream).await), 137);
    assert_eq!(rt.signals("web-1"), [StopSignal::Term, StopSignal::Kill]);
    assert!(rt.running().is_empty());
}

#[tokio::test]
async fn stop_escalates_to_kill_after_the_grace_period() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().ignore_sigterm().hang());
    let mut stream = rt.run(spec("web", "web-1"));
    started(&mut stream).await;
    let t = Instant::now();
    bounded(rt.stop("web-1", Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(rt.signals("web-1"), [StopSignal::Term, StopSignal::Kill]);
    assert_eq!(exit_code(&next(&mut stream).await), 137);

    // A process that obeys TERM stops at once, without KILL.
    rt.script_pod("web", RunScript::new().hang());
    let mut stream = rt.run(spec("web", "web-2"));
    bounded(rt.stop("web-2", Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(rt.signals("web-2"), [StopSignal::Term]);
    started(&mut stream).await;
    assert_eq!(exit_code(&next(&mut stream).await), 143);
}

#[tokio::test]
async fn stop_returns_when_the_process_exits_by_itself_within_the_grace() {
    let rt = FaultRuntime::new();
    rt.script_pod(
        "web",
        RunScript::new()
            .ignore_sigterm()
            .sleep(Duration::from_millis(20))
            .exit(5),
    );
    let stream = rt.run(spec("web", "web-1"));
    let (events, stopped) = bounded(async {
        tokio::join!(
            stream.collect::<Vec<_>>(),
            rt.stop("web-1", Duration::from_secs(3600))
        )
    })
    .await;
    stopped.unwrap();
    let (_, end) = split(events);
    assert_eq!(exit_code(&end), 5);
    assert_eq!(rt.signals("web-1"), [StopSignal::Term], "no KILL needed");
}

#[tokio::test]
async fn stop_fails_keeps_the_container_running() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().stop_fails().hang());
    let mut stream = rt.run(spec("web", "web-1"));
    started(&mut stream).await;
    for result in [
        bounded(rt.signal("web-1", StopSignal::Term)).await,
        bounded(rt.stop("web-1", Duration::from_millis(1))).await,
        bounded(rt.remove("web-1")).await,
    ] {
        match result {
            Err(Error::StopFailed { container, .. }) => assert_eq!(container, "web-1"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rt.running(), ["web-1"]);
    assert!(futures_util::poll!(stream.next()).is_pending());
    // signal: TERM; stop: TERM, then at once KILL (the one escalation:
    // a TERM that cannot be delivered brings the KILL forward); remove: KILL.
    assert_eq!(
        rt.signals("web-1"),
        [
            StopSignal::Term,
            StopSignal::Term,
            StopSignal::Kill,
            StopSignal::Kill
        ]
    );
}

#[tokio::test]
async fn signals_to_unknown_or_ended_containers_are_ok_and_not_recorded() {
    let rt = FaultRuntime::new();
    bounded(rt.signal("nope", StopSignal::Term)).await.unwrap();
    bounded(rt.stop("nope", Duration::from_secs(3600)))
        .await
        .unwrap();
    bounded(rt.remove("nope")).await.unwrap();
    let _ = collect(rt.run(spec("web", "web-1"))).await;
    bounded(rt.remove("web-1")).await.unwrap();
    assert!(rt.signals("nope").is_empty() && rt.signals("web-1").is_empty());
}

#[tokio::test]
async fn a_dropped_stream_does_not_stop_the_container_but_remove_does() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().stdout_lines(10).exit(0));
    drop(rt.run(spec("web", "web-1")));
    assert_eq!(rt.running(), ["web-1"]);
    bounded(rt.remove("web-1")).await.unwrap();
    assert!(rt.running().is_empty());
    assert_eq!(rt.signals("web-1"), [StopSignal::Kill]);
    // The name is free again.
    let (lines, _) = split(collect(rt.run(spec("web", "web-1"))).await);
    assert_eq!(lines.len(), 10);
}

// ----- exec ---------------------------------------------------------------------------

#[tokio::test]
async fn exec_runs_its_script_and_ends_with_its_container() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang())
        .script_exec("web", RunScript::new().stdout_lines(2).hang());
    let mut main = rt.run(spec("web", "web-1"));
    started(&mut main).await;

    let mut exec = rt.exec(exec_spec("web-1"));
    match next(&mut exec).await {
        ProcessEvent::Started { container } => assert_eq!(container, "web-1"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next(&mut exec).await, ProcessEvent::Output(l) if texts(&l) == ["out 1", "out 2"])
    );
    assert!(futures_util::poll!(exec.next()).is_pending());

    bounded(rt.signal("web-1", StopSignal::Kill)).await.unwrap();
    assert_eq!(
        exit_code(&next(&mut exec).await),
        137,
        "the exec dies with its container"
    );
    assert_eq!(exit_code(&next(&mut main).await), 137);

    match only_failure(rt.exec(exec_spec("web-1"))).await {
        Error::SessionNotFound { target } => assert_eq!(target, "web-1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.execs().len(), 2);
    assert_eq!(rt.execs()[0].command[1], "--resume");
}

#[tokio::test]
async fn exec_start_failures_name_the_container_image() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang())
        .script_exec("web", RunScript::new().not_runnable(127));
    let mut main = rt.run(spec("web", "web-1"));
    started(&mut main).await;
    match only_failure(rt.exec(exec_spec("web-1"))).await {
        Error::AgentNotRunnable { image, command, .. } => {
            assert_eq!((image.as_str(), command.as_str()), ("cldpd-web", "claude"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.running(), ["web-1"], "the container is unaffected");
    bounded(rt.remove("web-1")).await.unwrap();
}

// ----- the engine's view ----------------------------------------------------------

#[tokio::test]
async fn running_list_max_running_and_name_conflicts() {
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang());
    let a = rt.run(spec("web", "web-a"));
    let b = rt.run(spec("web", "web-b"));
    let mut unlabelled = spec("web", "other");
    unlabelled.labels.clear();
    let c = rt.run(unlabelled);
    assert_eq!(rt.running(), ["other", "web-a", "web-b"]);
    assert_eq!(rt.max_running(), 3);

    let list = bounded(rt.list()).await.unwrap();
    let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-a", "web-b"],
        "only containers with the session label"
    );
    assert!(list.iter().all(|i| i.is_running()));
    assert_eq!(list[0].label(labels::POD), Some("web"));
    assert_eq!(list[0].label(labels::SESSION), Some("web-0a1b2c3d"));

    match only_failure(rt.run(spec("web", "web-a"))).await {
        Error::DockerFailed { message } => assert!(message.contains("already in use"), "{message}"),
        other => panic!("{other:?}"),
    }

    bounded(rt.remove("web-a")).await.unwrap();
    assert_eq!(rt.running(), ["other", "web-b"]);
    assert_eq!(rt.max_running(), 3, "a high-water mark");
    rt.reset_observations();
    assert_eq!(
        (rt.max_running(), rt.run_count("web"), rt.runs().len()),
        (2, 0, 0)
    );
    drop((a, b, c));
}

#[tokio::test]
async fn specs_are_recorded_unless_switched_off() {
    let rt = FaultRuntime::new();
    let _ = collect(rt.run(spec("web", "web-1"))).await;
    let runs = rt.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].container.as_str(), runs[0].command[0].as_str()),
        ("web-1", "claude")
    );
    rt.record_specs(false);
    let _ = collect(rt.run(spec("web", "web-2"))).await;
    assert_eq!(rt.runs().len(), 1);
    assert_eq!(rt.run_count("web"), 2, "counts go on");
}

#[tokio::test]
async fn stdins_are_recorded_with_the_specs_and_not_when_switched_off() {
    let rt = FaultRuntime::new();
    let with_stdin = |container: &str, prompt: &str| RunSpec {
        stdin: Some(Stdin::new(prompt)),
        ..spec("web", container)
    };
    let _ = collect(rt.run(with_stdin("web-1", "first"))).await;
    let stdins = rt.stdins();
    assert_eq!(stdins.len(), 1);
    assert_eq!(
        (stdins[0].0.as_str(), stdins[0].1.bytes()),
        ("web-1", &b"first"[..])
    );
    // A soak test that switches recording off keeps nothing per run.
    rt.record_specs(false);
    let _ = collect(rt.run(with_stdin("web-2", "second"))).await;
    assert_eq!(rt.stdins().len(), 1);
    rt.record_specs(true);
    let _ = collect(rt.run(with_stdin("web-3", "third"))).await;
    assert_eq!(rt.stdins().len(), 2);
}

#[test]
fn a_rate_must_be_positive() {
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let r = std::panic::catch_unwind(|| {
            RunScript::new().step(Step::Lines {
                stream: OutputStream::Stdout,
                count: 1,
                width: 0,
                per_sec: Some(rate),
            })
        });
        assert!(r.is_err(), "{rate}");
    }
}

#[tokio::test]
async fn custom_steps_and_clones_share_one_engine() {
    let rt = FaultRuntime::new();
    let other = rt.clone();
    other.script_pod("web", RunScript::new().step(Step::Exit(9)));
    let (_, end) = split(collect(rt.run(spec("web", "web-1"))).await);
    assert_eq!(exit_code(&end), 9);
    assert_eq!(other.run_count("web"), 1);
    assert_eq!(RunScript::new().stdout_lines(1).steps().len(), 1);
}

// ----- scale --------------------------------------------------------------------------

#[tokio::test]
async fn a_thousand_sessions_of_a_thousand_lines_concurrently() {
    let rt = FaultRuntime::new();
    rt.record_specs(false)
        .script_pod("many", RunScript::new().stdout_lines(1000).exit(0));
    let runs: Vec<_> = (0..1000)
        .map(|i| {
            let stream = rt.run(spec("many", &format!("many-{i}")));
            async move {
                let (lines, end) = split(stream.collect().await);
                assert_eq!(exit_code(&end), 0);
                assert_eq!(lines.last().map(|l| l.text.as_str()), Some("out 1000"));
                lines.len()
            }
        })
        .collect();
    assert_eq!(rt.max_running(), 1000);
    let counts = bounded(futures_util::future::join_all(runs)).await;
    assert_eq!(counts.iter().sum::<usize>(), 1_000_000);
    assert!(rt.running().is_empty());
}

/// Everything a live, hanging fault container keeps allocated (stream state,
/// shared state, name, registry entry and the labels moved out of its spec),
/// counted by the allocator on this thread.
#[tokio::test]
async fn a_live_container_costs_under_1_kib() {
    const N: usize = 10_000;
    let rt = FaultRuntime::new();
    rt.record_specs(false)
        .script_pod("hold", RunScript::new().stdout_lines(1).hang());
    let mut streams = Vec::with_capacity(2 * N);
    let mut cost = |label_count: usize, prefix: &str| {
        let before = net_bytes();
        for i in 0..N {
            let mut s = spec("hold", &format!("{prefix}-{i:08x}"));
            for l in 2..label_count {
                s.labels
                    .insert(format!("cldpd.extra{l}"), format!("value-{i}"));
            }
            let mut stream = rt.run(s);
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(stream.poll_next_unpin(&mut cx).is_ready()); // Started
            assert!(stream.poll_next_unpin(&mut cx).is_ready()); // out 1
            assert!(stream.poll_next_unpin(&mut cx).is_pending()); // hangs
            streams.push(stream);
        }
        (net_bytes() - before) as usize / N
    };
    // Polled by hand, outside tokio's cooperative budget.
    let (minimal, realistic) =
        tokio::task::unconstrained(async { (cost(2, "min"), cost(13, "full")) }).await;
    assert_eq!(rt.running().len(), 2 * N);
    println!("live fault container: {minimal} B with 2 labels, {realistic} B with 13 labels");
    assert!(minimal < 1024, "{minimal} bytes per live container");
    drop(streams);
    bounded(async {
        for name in rt.running() {
            rt.remove(&name).await.unwrap();
        }
    })
    .await;
    assert!(rt.running().is_empty());
}

/// Docker takes time to create and start a container: with a creation
/// delay the container is listed `created` until its stream has spent the
/// delay, then `running`; a signal sent in that window is not lost (it
/// ends the process right after `Started`, as on the Docker backends).
#[tokio::test]
async fn a_creation_delay_lists_created_then_running_and_an_early_signal_lands() {
    let rt = FaultRuntime::new();
    rt.creation_delay(Duration::from_millis(100))
        .script_pod("web", RunScript::new().stdout_lines(1).hang());
    let state = |rt: &FaultRuntime| {
        let rt = rt.clone();
        async move {
            rt.list()
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.name, c.state))
                .collect::<Vec<_>>()
        }
    };
    let mut first = rt.run(spec("web", "c1"));
    assert_eq!(
        state(&rt).await,
        [("c1".to_string(), "created".to_string())]
    );
    let t0 = tokio::time::Instant::now();
    let started = bounded(first.next()).await;
    assert!(
        matches!(started, Some(ProcessEvent::Started { .. })),
        "{started:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        state(&rt).await,
        [("c1".to_string(), "running".to_string())]
    );

    // A TERM before the container has started reaches it once it has.
    let second = rt.run(spec("web", "c2"));
    rt.signal("c2", StopSignal::Term).await.unwrap();
    let events: Vec<ProcessEvent> = bounded(second.collect()).await;
    assert!(
        matches!(
            events.as_slice(),
            [
                ProcessEvent::Started { .. },
                ProcessEvent::Exited { code: 143 }
            ]
        ),
        "{events:?}"
    );
    rt.remove("c1").await.unwrap();
    let rest: Vec<ProcessEvent> = bounded(first.collect()).await;
    assert!(
        matches!(rest.last(), Some(ProcessEvent::Exited { code: 137 })),
        "{rest:?}"
    );

    // Off again: started at the call.
    rt.creation_delay(Duration::ZERO);
    let _third = rt.run(spec("web", "c3"));
    assert_eq!(
        state(&rt).await,
        [("c3".to_string(), "running".to_string())]
    );
    rt.remove("c3").await.unwrap();
}
