//! The Docker backends against the real Docker engine: the one
//! `CLDPD_RUNTIME` selects (`support::docker::runtime()`: the Engine API by
//! default, `cli` for `DockerCli`); `.ci/run` runs this file once per
//! backend.
//!
//! Every test builds its own `FROM scratch` + busybox pod image (see
//! `support::docker`), is bounded in time, waits for conditions (output
//! lines, `docker inspect`) rather than sleeping, and checks at its end
//! that no container labelled with its pod is left.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cldpd::runtime::{
    Backend, BindMount, BuildEvent, BuildSpec, DockerCli, EngineApi, ExecSpec, OutputLine,
    ProcessEvent, Resources, RunSpec, Runtime, SecretValue, Stdin, StopSignal, DEFAULT_LINE_CAP,
};
use cldpd::{Error, OutputStream};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use support::docker::{
    container_running, containers_with_label, docker as docker_cmd, require_docker, wait_until,
    TestPod, TRAP_TERM_STUB,
};

/// Upper bound for any one test.
const LIMIT: Duration = Duration::from_secs(90);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test exceeded its time bound")
}

fn run_spec(pod: &TestPod, container: &str, command: &[&str]) -> RunSpec {
    let session = format!("{}-{}", pod.name(), &container[container.len() - 4..]);
    let mut labels = BTreeMap::new();
    labels.insert("cldpd.session".to_string(), session.clone());
    labels.insert("cldpd.pod".to_string(), pod.name().to_string());
    RunSpec {
        session,
        pod: pod.name().to_string(),
        container: container.to_string(),
        image: pod.image(),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        workdir: None,
        mounts: Vec::new(),
        labels,
        resources: Resources::default(),
        line_cap: DEFAULT_LINE_CAP,
        stdin: None,
        network: None,
    }
}

fn build_spec(pod: &TestPod) -> BuildSpec {
    let mut labels = BTreeMap::new();
    labels.insert("cldpd.pod".to_string(), pod.name().to_string());
    BuildSpec {
        pod: pod.name().to_string(),
        image: pod.image(),
        context: pod.dir(),
        dockerfile: pod.dockerfile(),
        build_args: Vec::new(),
        labels,
    }
}

/// What a run/exec stream reported.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<ProcessEvent>,
}

impl Seen {
    fn lines(&self, stream: OutputStream) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Output(lines) => Some(lines),
                _ => None,
            })
            .flatten()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.clone())
            .collect()
    }
    fn stdout(&self) -> Vec<String> {
        self.lines(OutputStream::Stdout)
    }
    fn stderr(&self) -> Vec<String> {
        self.lines(OutputStream::Stderr)
    }
    fn terminal(&self) -> &ProcessEvent {
        self.events.last().expect("no events")
    }
    /// Started first, exactly one terminal event last.
    fn assert_well_formed(&self) {
        assert!(
            matches!(self.events.first(), Some(ProcessEvent::Started { .. })),
            "{:?}",
            self.events.first()
        );
        let terminals = self
            .events
            .iter()
            .filter(|e| matches!(e, ProcessEvent::Exited { .. } | ProcessEvent::Failed(_)))
            .count();
        assert_eq!(terminals, 1, "{:?}", self.events);
        assert!(matches!(
            self.terminal(),
            ProcessEvent::Exited { .. } | ProcessEvent::Failed(_)
        ));
    }
}

/// Read events into `seen` until a line satisfies `pred`.
async fn read_until(
    stream: &mut BoxStream<'static, ProcessEvent>,
    seen: &mut Seen,
    pred: impl Fn(&OutputLine) -> bool,
) {
    loop {
        let ev = stream
            .next()
            .await
            .unwrap_or_else(|| panic!("stream ended before the awaited line: {:?}", seen.events));
        let hit = matches!(&ev, ProcessEvent::Output(lines) if lines.iter().any(&pred));
        seen.events.push(ev);
        if hit {
            return;
        }
    }
}

/// Read the first event into `seen`: it must be `Started` (the client was
/// spawned; the container may not exist yet).
async fn read_started(stream: &mut BoxStream<'static, ProcessEvent>, seen: &mut Seen) {
    let first = stream.next().await.expect("a Started event");
    assert!(matches!(first, ProcessEvent::Started { .. }), "{first:?}");
    seen.events.push(first);
}

/// Read the rest of the stream into `seen`.
async fn read_to_end(stream: &mut BoxStream<'static, ProcessEvent>, seen: &mut Seen) {
    while let Some(ev) = stream.next().await {
        seen.events.push(ev);
    }
}

async fn run_all(docker: &Arc<dyn Runtime>, spec: RunSpec) -> Seen {
    let mut seen = Seen::default();
    read_to_end(&mut docker.run(spec), &mut seen).await;
    seen
}

fn assert_no_leftovers(pod: &TestPod) {
    let left = pod.containers();
    assert!(
        left.is_empty(),
        "containers left behind for {}: {left:?}",
        pod.name()
    );
}

fn is_line(text: &'static str) -> impl Fn(&OutputLine) -> bool {
    move |l: &OutputLine| l.text == text
}

/// An agent that prints `ready`, then idles until signalled.
const IDLE_STUB: &str = "#!/bin/sh\necho ready\nwhile :; do sleep 0.2; done\n";

#[tokio::test]
async fn preflight_reports_the_engine_version() {
    if !require_docker() {
        return;
    }
    let version = bounded(support::docker::runtime().preflight())
        .await
        .unwrap();
    assert!(
        version.chars().next().unwrap().is_ascii_digit(),
        "{version}"
    );
}

#[tokio::test]
async fn build_streams_output_and_tags_the_image() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder().create();
    let docker = support::docker::runtime();
    bounded(async {
        assert!(!docker.image_exists(&pod.image()).await.unwrap());
        let events: Vec<BuildEvent> = docker.build(build_spec(&pod)).collect().await;
        let (last, output) = events.split_last().unwrap();
        // The build reports the new image's id (runs use it, not the tag).
        assert!(
            matches!(last, BuildEvent::Finished(Ok(b)) if b.id.as_deref().is_some_and(|id| id.starts_with("sha256:"))),
            "{last:?}"
        );
        let lines: Vec<&String> = output
            .iter()
            .flat_map(|e| match e {
                BuildEvent::Output(lines) => lines.iter(),
                other => panic!("{other:?} before Finished"),
            })
            .collect();
        assert!(
            lines.iter().any(|l| l.starts_with("Successfully tagged")),
            "{lines:?}"
        );
        assert!(docker.image_exists(&pod.image()).await.unwrap());
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn build_failure_carries_the_tail() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .dockerfile_line("RUN [\"/bin/false\"]")
        .create();
    let docker = support::docker::runtime();
    let events: Vec<BuildEvent> = bounded(docker.build(build_spec(&pod)).collect()).await;
    match events.last().unwrap() {
        BuildEvent::Finished(Err(Error::BuildFailed { image, code, tail })) => {
            assert_eq!(image, &pod.image());
            assert_eq!(*code, Some(1));
            assert!(!tail.is_empty() && tail.len() <= 20, "{tail:?}");
            assert!(
                tail.iter()
                    .any(|l| l.contains("/bin/false") && l.contains("non-zero code")),
                "{tail:?}"
            );
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert!(!bounded(docker.image_exists(&pod.image())).await.unwrap());
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn run_marks_stdout_and_stderr_and_propagates_exit_code() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(
        "#!/bin/sh\necho \"out one $1\"\necho \"err one\" >&2\necho \"out two\"\necho \"err two\" >&2\nexit 3\n",
    );
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("run1");
    let seen = bounded(run_all(
        &docker,
        run_spec(&pod, &container, &["claude", "arg"]),
    ))
    .await;
    seen.assert_well_formed();
    assert!(matches!(&seen.events[0], ProcessEvent::Started { container: c } if *c == container));
    assert_eq!(seen.stdout(), ["out one arg", "out two"]);
    assert_eq!(seen.stderr(), ["err one", "err two"]);
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 3 }),
        "{:?}",
        seen.terminal()
    );
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn run_delivers_a_large_output_losslessly_in_batches() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(
        "#!/bin/sh\nseq 1 200000 | sed 's/^/out /'\nprintf 'bad \\377 byte\\n'\nhead -c 5000 /dev/zero | tr '\\0' x\necho\nseq 1 1000 >&2\n",
    );
    pod.build_image();
    let docker = support::docker::runtime();
    let mut spec = run_spec(&pod, &pod.container_name("big1"), &["claude"]);
    spec.line_cap = 1024;
    let seen = bounded(run_all(&docker, spec)).await;
    seen.assert_well_formed();
    let out = seen.stdout();
    assert_eq!(out.len(), 200_000 + 1 + 5, "5000-byte line split at 1024");
    for (i, line) in out[..200_000].iter().enumerate() {
        assert_eq!(*line, format!("out {}", i + 1));
    }
    assert_eq!(out[200_000], "bad \u{fffd} byte");
    assert_eq!(out[200_001..].concat(), "x".repeat(5000));
    let partial: Vec<bool> = seen
        .events
        .iter()
        .filter_map(|e| match e {
            ProcessEvent::Output(l) => Some(l),
            _ => None,
        })
        .flatten()
        .filter(|l| l.stream == OutputStream::Stdout && l.text.starts_with('x'))
        .map(|l| l.partial)
        .collect();
    assert_eq!(partial, [true, true, true, true, false]);
    let err = seen.stderr();
    assert_eq!(err, (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>());
    let batches = seen.events.len() - 2;
    assert!(batches < 2000, "{batches} output events for 201006 lines");
    assert!(matches!(seen.terminal(), ProcessEvent::Exited { code: 0 }));
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn missing_agent_is_agent_not_runnable() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder().no_agent().create();
    pod.build_image();
    let docker = support::docker::runtime();
    bounded(async {
        let seen = run_all(
            &docker,
            run_spec(&pod, &pod.container_name("nf01"), &["claude", "-p", "x"]),
        )
        .await;
        seen.assert_well_formed();
        assert!(!seen.stderr().is_empty(), "docker's stderr is output first");
        match seen.terminal() {
            ProcessEvent::Failed(Error::AgentNotRunnable {
                image,
                command,
                code,
                message,
            }) => {
                assert_eq!(image, &pod.image());
                assert_eq!(command, "claude");
                assert_eq!(*code, 127);
                assert!(message.contains("claude"), "{message}");
            }
            other => panic!("expected AgentNotRunnable, got {other:?}"),
        }
        // A directory is not executable: 126.
        let seen = run_all(
            &docker,
            run_spec(&pod, &pod.container_name("ne01"), &["/bin"]),
        )
        .await;
        assert!(
            matches!(
                seen.terminal(),
                ProcessEvent::Failed(Error::AgentNotRunnable { code: 126, .. })
            ),
            "{:?}",
            seen.terminal()
        );
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn docker_failure_125_carries_dockers_message() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder().create();
    pod.build_image();
    let docker = support::docker::runtime();
    bounded(async {
        let mut spec = run_spec(&pod, &pod.container_name("m125"), &["claude"]);
        spec.mounts.push(BindMount {
            source: "/nonexistent/cldpd-test-mount".into(),
            target: "/work".into(),
            read_only: false,
        });
        let seen = run_all(&docker, spec).await;
        // The CLI backend reports `Started` once its client ran; the Engine
        // API backend's create is refused before anything started (the
        // contract allows both).
        if support::docker::backend() == Backend::Cli {
            seen.assert_well_formed();
        } else {
            assert_eq!(seen.events.len(), 1, "{:?}", seen.events);
        }
        // Docker's own words are the error's message, not agent output.
        assert!(seen.stderr().is_empty(), "{:?}", seen.stderr());
        match seen.terminal() {
            ProcessEvent::Failed(Error::DockerFailed { message }) => {
                assert!(
                    message.contains("/nonexistent/cldpd-test-mount"),
                    "{message}"
                );
                assert!(!message.contains("--help"), "{message}");
            }
            other => panic!("expected DockerFailed, got {other:?}"),
        }
        let mut spec = run_spec(&pod, &pod.container_name("c125"), &["claude"]);
        spec.resources.cpus = Some(10_000.0);
        let seen = run_all(&docker, spec).await;
        match seen.terminal() {
            ProcessEvent::Failed(Error::DockerFailed { message }) => {
                assert!(message.to_lowercase().contains("cpu"), "{message}")
            }
            other => panic!("expected DockerFailed, got {other:?}"),
        }
    })
    .await;
    assert_no_leftovers(&pod);
}

/// Every host process's argv, as (pid, bytes with NULs).
fn host_cmdlines() -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            all.push((pid, bytes));
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn env_secret_reaches_the_container_but_no_argv() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(
        "#!/bin/sh\necho \"secret=$CLDPD_TEST_SECRET\"\necho ready\nwhile :; do sleep 0.2; done\n",
    );
    pod.build_image();
    let docker = support::docker::runtime();
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let marker = format!("marker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let container = pod.container_name("sec1");
    let mut spec = run_spec(&pod, &container, &["claude", &marker]);
    spec.env
        .push(("CLDPD_TEST_SECRET".into(), SecretValue::new(secret.clone())));
    bounded(async {
        let mut stream = docker.run(spec);
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;
        assert!(container_running(&container));
        assert_eq!(
            seen.stdout(),
            [format!("secret={secret}"), "ready".to_string()]
        );

        let cmdlines = host_cmdlines();
        let leaks: Vec<_> = cmdlines
            .iter()
            .filter(|(_, c)| contains(c, secret.as_bytes()))
            .map(|(pid, c)| (pid, String::from_utf8_lossy(c).replace('\0', " ")))
            .collect();
        assert!(leaks.is_empty(), "secret in argv: {leaks:?}");
        // The scan did see the docker client and the agent (by the marker),
        // and the client got the variable by name.
        let with_marker: Vec<&Vec<u8>> = cmdlines
            .iter()
            .map(|(_, c)| c)
            .filter(|c| contains(c, marker.as_bytes()))
            .collect();
        if support::docker::backend() == Backend::Cli {
            assert!(
                with_marker.len() >= 2,
                "docker client and agent not found in /proc"
            );
            assert!(with_marker
                .iter()
                .any(|c| contains(c, b"\0-e\0CLDPD_TEST_SECRET\0")));
        } else {
            // No client process: only the agent carries the marker.
            assert!(!with_marker.is_empty(), "agent not found in /proc");
        }

        docker.signal(&container, StopSignal::Kill).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        seen.assert_well_formed();
        assert!(
            matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }),
            "{:?}",
            seen.terminal()
        );
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn bind_mount_with_comma_and_quote_in_the_path() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(
        "#!/bin/sh\ncat /data/hello.txt\nif touch /data/new 2>/dev/null; then echo writable; else echo readonly; fi\n",
    );
    pod.build_image();
    let host = tempfile::tempdir().unwrap();
    let weird = host.path().join("we,ird \"dir\"");
    std::fs::create_dir(&weird).unwrap();
    std::fs::write(weird.join("hello.txt"), "hello from the host\n").unwrap();
    let docker = support::docker::runtime();
    let mut spec = run_spec(&pod, &pod.container_name("mnt1"), &["claude"]);
    spec.mounts.push(BindMount {
        source: weird.clone(),
        target: "/data".into(),
        read_only: true,
    });
    let seen = bounded(run_all(&docker, spec)).await;
    seen.assert_well_formed();
    assert_eq!(
        seen.stdout(),
        ["hello from the host", "readonly"],
        "{:?}",
        seen.events
    );
    assert!(matches!(seen.terminal(), ProcessEvent::Exited { code: 0 }));
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn resources_and_workdir_reach_the_container() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .stub(IDLE_STUB)
        .dockerfile_line("WORKDIR /")
        .create();
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("res1");
    let mut spec = run_spec(&pod, &container, &["claude"]);
    spec.resources = Resources {
        cpus: Some(0.5),
        memory_bytes: Some(64 * 1024 * 1024),
        pids_limit: Some(64),
    };
    spec.workdir = Some("/tmp".into());
    bounded(async {
        let mut stream = docker.run(spec);
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;
        let out = docker_cmd([
            "inspect",
            "--format",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.Config.WorkingDir}} {{.HostConfig.Init}} {{.HostConfig.AutoRemove}}",
            &container,
        ]);
        // `--rm` on the CLI backend; the Engine API backend removes the
        // container itself once it has read the exit code.
        let auto_remove = support::docker::backend() == Backend::Cli;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("500000000 67108864 64 /tmp true {auto_remove}")
        );
        docker.signal(&container, StopSignal::Kill).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        assert!(matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }));
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn term_reaches_an_agent_that_traps_it() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(TRAP_TERM_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("trm1");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;
        docker.signal(&container, StopSignal::Term).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        seen.assert_well_formed();
        assert_eq!(seen.stdout(), ["ready", "got-term"]);
        assert!(
            matches!(seen.terminal(), ProcessEvent::Exited { code: 0 }),
            "{:?}",
            seen.terminal()
        );
    })
    .await;
    assert_no_leftovers(&pod);
}

/// A run counts as started when its client is spawned; a SIGTERM sent in
/// the next instant, before the daemon has created the container, is
/// delivered once the container exists instead of being taken for "gone"
/// (which would leave this container running until the test's bound).
#[tokio::test]
async fn term_sent_before_the_container_exists_is_delivered() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(TRAP_TERM_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("ear1");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_started(&mut stream, &mut seen).await;
        let (signalled, ()) = tokio::join!(
            docker.signal(&container, StopSignal::Term),
            read_to_end(&mut stream, &mut seen)
        );
        signalled.unwrap();
        seen.assert_well_formed();
        match seen.terminal() {
            // Trapped, or arrived before the trap was set.
            ProcessEvent::Exited { code: 0 | 143 } => {}
            other => panic!("{other:?}"),
        }
    })
    .await;
    assert_no_leftovers(&pod);
}

/// Signals to a follow-up (`docker exec`) reach its process even when sent
/// as its client has just been spawned, and a signal to one that has
/// already ended is not an error.
#[tokio::test]
async fn exec_signals_reach_a_starting_exec_and_tolerate_an_ended_one() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(IDLE_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("exs1");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;

        let exec = ExecSpec {
            container: container.clone(),
            command: [
                "sh",
                "-c",
                "trap 'exit 5' TERM; while :; do sleep 1 & wait $!; done",
                "--follow-up",
            ]
            .map(String::from)
            .to_vec(),
            workdir: None,
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        };
        let mut out = Seen::default();
        let mut follow_up = docker.exec(exec.clone());
        read_started(&mut follow_up, &mut out).await;
        let (signalled, ()) = tokio::join!(
            docker.signal_exec(&exec, StopSignal::Term),
            read_to_end(&mut follow_up, &mut out)
        );
        signalled.unwrap();
        match out.terminal() {
            ProcessEvent::Exited { code: 5 | 143 } => {}
            other => panic!("{other:?}"),
        }
        // Ended: signalling it again finds nothing and is fine.
        docker.signal_exec(&exec, StopSignal::Kill).await.unwrap();
        // The run itself was not touched.
        docker.signal(&container, StopSignal::Kill).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        assert!(matches!(
            seen.terminal(),
            ProcessEvent::Exited { code: 137 }
        ));
    })
    .await;
    assert_no_leftovers(&pod);
}

/// Ticks every 0.2 s and ignores SIGTERM.
const STUBBORN_STUB: &str =
    "#!/bin/sh\ntrap '' TERM\necho ready\ni=0\nwhile :; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done\n";

#[tokio::test]
async fn ignored_term_survives_and_kill_ends_it_with_137() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(STUBBORN_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("ign1");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;
        docker.signal(&container, StopSignal::Term).await.unwrap();
        // The signal has been delivered when `docker kill` returns; two
        // more ticks after that show the agent survived it.
        let ticks_before = seen.stdout().len();
        let want = ticks_before + 2;
        while seen.stdout().len() < want {
            let ev = stream
                .next()
                .await
                .expect("stream ended: TERM was not ignored");
            assert!(
                !matches!(ev, ProcessEvent::Exited { .. } | ProcessEvent::Failed(_)),
                "{ev:?}"
            );
            seen.events.push(ev);
        }
        assert!(container_running(&container));
        docker.signal(&container, StopSignal::Kill).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        seen.assert_well_formed();
        assert!(
            matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }),
            "{:?}",
            seen.terminal()
        );
        // Signalling what is gone is fine.
        docker.signal(&container, StopSignal::Kill).await.unwrap();
        docker.signal(&container, StopSignal::Term).await.unwrap();
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn stop_escalates_to_kill_after_the_grace_period() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(STUBBORN_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("stp1");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;
        let t = Instant::now();
        docker
            .stop(&container, Duration::from_millis(800))
            .await
            .unwrap();
        let took = t.elapsed();
        // The grace is cldpd's own, to the millisecond (Docker's own stop
        // counted whole seconds): never a SIGKILL before it is over.
        assert!(
            took >= Duration::from_millis(800),
            "killed before the grace was over: {took:?}"
        );
        read_to_end(&mut stream, &mut seen).await;
        assert!(
            matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }),
            "{:?}",
            seen.terminal()
        );
        // Stopping and removing what is gone is fine.
        docker
            .stop(&container, Duration::from_secs(1))
            .await
            .unwrap();
        docker.remove(&container).await.unwrap();
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn exec_runs_in_a_running_container() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(IDLE_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("exe1");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;

        let exec = ExecSpec {
            container: container.clone(),
            command: ["sh", "-c", "echo exec-out; echo exec-err >&2; pwd; exit 5"]
                .map(String::from)
                .to_vec(),
            workdir: Some("/bin".into()),
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        };
        let mut out = Seen::default();
        read_to_end(&mut docker.exec(exec), &mut out).await;
        out.assert_well_formed();
        assert_eq!(out.stdout(), ["exec-out", "/bin"]);
        assert_eq!(out.stderr(), ["exec-err"]);
        assert!(matches!(out.terminal(), ProcessEvent::Exited { code: 5 }), "{:?}", out.terminal());

        // The agent binary missing in a running container.
        let exec = ExecSpec {
            container: container.clone(),
            command: vec!["no-such-agent".into(), "-p".into()],
            workdir: None,
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        };
        let mut out = Seen::default();
        read_to_end(&mut docker.exec(exec), &mut out).await;
        match out.terminal() {
            ProcessEvent::Failed(Error::AgentNotRunnable { image, command, code, .. }) => {
                assert_eq!(image, &pod.image());
                assert_eq!(command, "no-such-agent");
                assert_eq!(*code, 127);
            }
            other => panic!("expected AgentNotRunnable, got {other:?}"),
        }

        docker.signal(&container, StopSignal::Kill).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        assert!(matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }));

        // Now the container is gone: resume finds no session.
        let exec = ExecSpec {
            container: container.clone(),
            command: vec!["claude".into()],
            workdir: None,
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        };
        let events: Vec<ProcessEvent> = docker.exec(exec).collect().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], ProcessEvent::Failed(Error::SessionNotFound { target }) if *target == container),
            "{events:?}"
        );
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn exec_into_a_stopped_container_is_session_not_found() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder().create();
    pod.build_image();
    let container = pod.container_name("cre1");
    // A created-but-never-started container carrying the pod label.
    let out = docker_cmd([
        "create",
        "--name",
        &container,
        "--label",
        &pod.label_filter(),
        &pod.image(),
        "claude",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docker_cli = support::docker::runtime();
    let exec = ExecSpec {
        container: container.clone(),
        command: vec!["claude".into()],
        workdir: None,
        line_cap: DEFAULT_LINE_CAP,
        stdin: None,
    };
    let events: Vec<ProcessEvent> = bounded(docker_cli.exec(exec).collect()).await;
    assert!(
        matches!(events.as_slice(), [ProcessEvent::Failed(Error::SessionNotFound { target })] if *target == container),
        "{events:?}"
    );
    bounded(docker_cli.remove(&container)).await.unwrap();
    bounded(docker_cli.remove(&container)).await.unwrap();
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn list_finds_running_containers_with_their_labels() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(IDLE_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("lst1");
    let mut spec = run_spec(&pod, &container, &["claude"]);
    spec.labels.insert("cldpd.attempt".into(), "2".into());
    let session = spec.session.clone();
    bounded(async {
        let mut stream = docker.run(spec);
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;

        let all = docker.list().await.unwrap();
        let mine: Vec<_> = all.iter().filter(|c| c.name == container).collect();
        assert_eq!(mine.len(), 1, "{all:?}");
        let info = mine[0];
        assert!(info.is_running(), "{info:?}");
        assert_eq!(info.label("cldpd.session"), Some(session.as_str()));
        assert_eq!(info.label("cldpd.pod"), Some(pod.name()));
        assert_eq!(info.label("cldpd.attempt"), Some("2"));
        assert!(info.labels.keys().all(|k| k.starts_with("cldpd.")));

        docker.signal(&container, StopSignal::Kill).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        // `--rm`: gone once the client has exited.
        assert!(containers_with_label(&format!("cldpd.session={session}")).is_empty());
        let all = docker.list().await.unwrap();
        assert!(all.iter().all(|c| c.name != container), "{all:?}");
    })
    .await;
    assert_no_leftovers(&pod);
}

#[tokio::test]
async fn remove_of_a_running_or_gone_container_is_ok() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(IDLE_STUB);
    pod.build_image();
    let docker = support::docker::runtime();
    let container = pod.container_name("rm01");
    bounded(async {
        let mut stream = docker.run(run_spec(&pod, &container, &["claude"]));
        let mut seen = Seen::default();
        read_until(&mut stream, &mut seen, is_line("ready")).await;
        docker.remove(&container).await.unwrap();
        read_to_end(&mut stream, &mut seen).await;
        seen.assert_well_formed();
        assert!(
            matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }),
            "{:?}",
            seen.terminal()
        );
        wait_until(
            "the container to disappear",
            Duration::from_secs(20),
            || pod.containers().is_empty(),
        )
        .await;
        docker.remove(&container).await.unwrap();
        docker.remove("cldpd-never-existed-0000").await.unwrap();
    })
    .await;
    assert_no_leftovers(&pod);
}

/// A docker client pointed at a socket nobody listens on: every operation
/// says Docker is unavailable. Needs the docker binary, not the daemon.
#[tokio::test]
async fn unreachable_daemon_is_docker_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let docker: Arc<dyn Runtime> = match support::docker::backend() {
        Backend::EngineApi => {
            // A socket file nobody listens on: the connection is refused.
            let sock = dir.path().join("nobody.sock");
            drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
            Arc::new(EngineApi::with_host(format!("unix://{}", sock.display())))
        }
        Backend::Cli => {
            let have_client = std::process::Command::new(support::docker::docker_bin())
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            if !have_client {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true and the docker client is missing"
                );
                eprintln!("note: skipping, no docker client");
                return;
            }
            let wrapper = dir.path().join("docker-down");
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nDOCKER_HOST=unix://{}/nobody.sock exec {} \"$@\"\n",
                    dir.path().display(),
                    support::docker::docker_bin()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &wrapper,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            Arc::new(DockerCli::with_binary(&wrapper))
        }
    };
    let cli = support::docker::backend() == Backend::Cli;
    let down = |e: &Error| matches!(e, Error::DockerUnavailable { message } if !cli || message.contains("Cannot connect"));
    bounded(async {
        let e = docker.preflight().await.unwrap_err();
        assert!(down(&e), "{e:?}");
        let e = docker.image_exists("x").await.unwrap_err();
        assert!(down(&e), "{e:?}");
        let e = docker.list().await.unwrap_err();
        assert!(down(&e), "{e:?}");
        let e = docker.signal("x", StopSignal::Term).await.unwrap_err();
        assert!(down(&e), "{e:?}");
        let e = docker.remove("x").await.unwrap_err();
        assert!(down(&e), "{e:?}");

        let spec = RunSpec {
            session: "t-down-0000".into(),
            pod: "t-down".into(),
            container: "cldpd-t-down-0000".into(),
            image: "img".into(),
            command: vec!["claude".into()],
            env: vec![],
            workdir: None,
            mounts: vec![],
            labels: BTreeMap::new(),
            resources: Resources::default(),
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
            network: None,
        };
        let events: Vec<ProcessEvent> = docker.run(spec).collect().await;
        assert!(
            matches!(events.last(), Some(ProcessEvent::Failed(e)) if down(e)),
            "{events:?}"
        );

        let exec = ExecSpec {
            container: "x".into(),
            command: vec!["claude".into()],
            workdir: None,
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        };
        let events: Vec<ProcessEvent> = docker.exec(exec).collect().await;
        assert!(
            matches!(events.as_slice(), [ProcessEvent::Failed(e)] if down(e)),
            "{events:?}"
        );

        let build = BuildSpec {
            pod: "t-down".into(),
            image: "cldpd-t-down".into(),
            context: dir.path().to_path_buf(),
            dockerfile: dir.path().join("Dockerfile"),
            build_args: vec![],
            labels: BTreeMap::new(),
        };
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let events: Vec<BuildEvent> = docker.build(build).collect().await;
        match events.last() {
            Some(BuildEvent::Finished(Err(e))) => assert!(down(e), "{e:?}"),
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn stdin_reaches_the_process_whole_and_an_unread_one_is_no_error() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub("#!/bin/sh\nwc -c\n");
    pod.build_image();
    let docker = support::docker::runtime();
    // 1 MiB + a leading dash: far over one argv string's 128 KiB.
    let mut prompt = b"-rf ".to_vec();
    prompt.resize(1 << 20, b'x');
    let mut spec = run_spec(&pod, &pod.container_name("in01"), &["claude"]);
    spec.stdin = Some(Stdin::new(prompt.clone()));
    let seen = bounded(run_all(&docker, spec)).await;
    seen.assert_well_formed();
    assert_eq!(seen.stdout(), [(1usize << 20).to_string()]);
    assert!(matches!(seen.terminal(), ProcessEvent::Exited { code: 0 }));

    // A process that never reads its stdin ends normally.
    let mut spec = run_spec(&pod, &pod.container_name("in02"), &["true"]);
    spec.stdin = Some(Stdin::new(prompt));
    let seen = bounded(run_all(&docker, spec)).await;
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 0 }),
        "{:?}",
        seen.events
    );

    // Exec: the follow-up on stdin.
    let mut spec = run_spec(
        &pod,
        &pod.container_name("in03"),
        &["sh", "-c", "echo ready; while :; do sleep 0.2; done"],
    );
    spec.stdin = None;
    let container = spec.container.clone();
    let mut run = docker.run(spec);
    let mut seen = Seen::default();
    bounded(read_until(&mut run, &mut seen, is_line("ready"))).await;
    let exec = ExecSpec {
        container: container.clone(),
        command: vec!["sh".into(), "-c".into(), "cat".into()],
        workdir: None,
        line_cap: DEFAULT_LINE_CAP,
        stdin: Some(Stdin::new("-- follow-up\nsecond line\n")),
    };
    let mut out = Seen::default();
    bounded(read_to_end(&mut docker.exec(exec), &mut out)).await;
    assert_eq!(out.stdout(), ["-- follow-up", "second line"]);
    bounded(docker.remove(&container)).await.unwrap();
    drop(run);
    assert_no_leftovers(&pod);
}
