//! The `Runtime` contract (see the docs of `cldpd::runtime::Runtime`), one
//! suite run unchanged against every backend: the Engine API, the docker
//! CLI, and `FaultRuntime`.
//!
//! A [`Fixture`] turns an abstract [`Behaviour`] into what each backend
//! runs: a busybox `sh -c` command in a `FROM scratch` test image for the
//! Docker backends, a script for `FaultRuntime`. The `contract!` macro
//! instantiates every test once per backend. The Docker backends need the
//! engine (they fail under `CI=true` without it, skip otherwise).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cldpd::runtime::{
    DockerCli, EngineApi, ExecSpec, FaultRuntime, ProcessEvent, Resources, RunScript, RunSpec,
    Runtime, Stdin, StopSignal, DEFAULT_LINE_CAP,
};
use cldpd::{Error, OutputStream};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use support::docker::{require_docker, TestPod};

/// Upper bound for any one test.
const LIMIT: Duration = Duration::from_secs(60);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test exceeded its time bound")
}

/// What a process does.
#[derive(Clone, Copy)]
enum Behaviour {
    /// stdout `one`, `two`, `three`; stderr `warn`; exit 3.
    Print,
    /// Prints `ready`, then waits; TERM ends it.
    Wait,
    /// Prints `ready`, ignores TERM; only KILL ends it.
    IgnoreTerm,
    /// The command does not exist.
    Missing,
    /// Reads its stdin to EOF, prints how many bytes it got, exits 0.
    CountStdin,
}

trait Fixture {
    fn runtime(&self) -> Arc<dyn Runtime>;
    /// A run doing `b`, with a fresh container name and session labels.
    fn run_spec(&self, b: Behaviour) -> RunSpec;
    /// An exec doing `b` in the container of `run`.
    fn exec_spec(&self, run: &RunSpec, b: Behaviour) -> ExecSpec;
    /// The same backend pointed at an engine that cannot be reached.
    fn unreachable(&self) -> Arc<dyn Runtime>;
    /// How many stdin bytes the process of `container` got, as its
    /// output (`seen`) or the backend's record says.
    fn stdin_len(&self, seen: &Seen, container: &str) -> usize;
}

fn base_spec(pod: &str, image: &str, command: Vec<String>) -> RunSpec {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let session = format!("{pod}-{}", &id[..8]);
    let mut labels = BTreeMap::new();
    labels.insert("cldpd.session".to_string(), session.clone());
    labels.insert("cldpd.pod".to_string(), pod.to_string());
    RunSpec {
        container: format!("cldpd-{session}-0"),
        session,
        pod: pod.to_string(),
        image: image.to_string(),
        command,
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

// ----- Docker backends ---------------------------------------------------

struct DockerFixture {
    pod: TestPod,
    runtime: Arc<dyn Runtime>,
    cli: bool,
}

impl DockerFixture {
    fn new(cli: bool) -> Option<DockerFixture> {
        if !require_docker() {
            return None;
        }
        let pod = TestPod::builder().create();
        pod.build_image();
        let runtime: Arc<dyn Runtime> = if cli {
            Arc::new(DockerCli::new())
        } else {
            Arc::new(EngineApi::new())
        };
        Some(DockerFixture { pod, runtime, cli })
    }

    fn command(b: Behaviour, exec: bool) -> Vec<String> {
        let sh = |script: &str| {
            // An exec's last argument (free text, like a prompt) keeps its
            // arguments distinct from the main process's.
            let mut v = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
            if exec {
                v.push("exec".to_string());
            }
            v
        };
        match b {
            Behaviour::Print => sh("echo one; echo two; echo warn >&2; echo three; exit 3"),
            Behaviour::Wait if exec => sh("echo ready; while :; do sleep 1; done"),
            Behaviour::Wait => sh("echo ready; exec sleep 1000"),
            Behaviour::IgnoreTerm => sh("trap '' TERM; echo ready; while :; do sleep 1; done"),
            Behaviour::Missing => vec!["cldpd-no-such-agent".to_string()],
            // No prompt argument here: the prompt is on stdin.
            Behaviour::CountStdin => vec!["wc".to_string(), "-c".to_string()],
        }
    }
}

impl Fixture for DockerFixture {
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.runtime.clone()
    }

    fn run_spec(&self, b: Behaviour) -> RunSpec {
        base_spec(self.pod.name(), &self.pod.image(), Self::command(b, false))
    }

    fn exec_spec(&self, run: &RunSpec, b: Behaviour) -> ExecSpec {
        ExecSpec {
            container: run.container.clone(),
            command: Self::command(b, true),
            workdir: None,
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        }
    }

    fn unreachable(&self) -> Arc<dyn Runtime> {
        let dir = tempfile::tempdir().unwrap().keep();
        let sock = dir.join("nobody.sock");
        if self.cli {
            let wrapper = dir.join("docker-down");
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nDOCKER_HOST=unix://{} exec {} \"$@\"\n",
                    sock.display(),
                    support::docker::docker_bin()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &wrapper,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            Arc::new(DockerCli::with_binary(wrapper))
        } else {
            Arc::new(EngineApi::with_host(format!("unix://{}", sock.display())))
        }
    }

    fn stdin_len(&self, seen: &Seen, _container: &str) -> usize {
        let out = seen.lines(OutputStream::Stdout);
        assert_eq!(out.len(), 1, "{seen:?}");
        out[0].trim().parse().unwrap()
    }
}

// ----- FaultRuntime --------------------------------------------------------

struct FaultFixture {
    rt: FaultRuntime,
    /// Pods whose exec script is set, by pod.
    exec_scripts: Mutex<HashMap<String, ()>>,
}

impl FaultFixture {
    fn new() -> Option<FaultFixture> {
        // Docker-like: a container is `created` for a moment before its
        // process starts, so signals and lists right after `run` are
        // tested against the same window the Docker backends have.
        let rt = FaultRuntime::new();
        rt.creation_delay(Duration::from_millis(20));
        Some(FaultFixture {
            rt,
            exec_scripts: Mutex::new(HashMap::new()),
        })
    }

    fn script(b: Behaviour) -> RunScript {
        match b {
            Behaviour::Print => RunScript::new()
                .bytes(OutputStream::Stdout, "one\ntwo\n")
                .bytes(OutputStream::Stderr, "warn\n")
                .bytes(OutputStream::Stdout, "three\n")
                .exit(3),
            Behaviour::Wait => RunScript::new()
                .bytes(OutputStream::Stdout, "ready\n")
                .hang(),
            Behaviour::IgnoreTerm => RunScript::new()
                .bytes(OutputStream::Stdout, "ready\n")
                .ignore_sigterm()
                .hang(),
            Behaviour::Missing => RunScript::new().not_runnable(127),
            Behaviour::CountStdin => RunScript::new().exit(0),
        }
    }
}

impl Fixture for FaultFixture {
    fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::new(self.rt.clone())
    }

    fn run_spec(&self, b: Behaviour) -> RunSpec {
        let pod = support::docker::unique_name();
        self.rt.script_pod(&pod, Self::script(b));
        base_spec(&pod, &format!("cldpd-{pod}"), vec!["claude".to_string()])
    }

    fn exec_spec(&self, run: &RunSpec, b: Behaviour) -> ExecSpec {
        self.rt.script_exec(&run.pod, Self::script(b));
        self.exec_scripts
            .lock()
            .unwrap()
            .insert(run.pod.clone(), ());
        ExecSpec {
            container: run.container.clone(),
            command: vec!["claude".into(), "-p".into(), "exec".into()],
            workdir: None,
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
        }
    }

    fn unreachable(&self) -> Arc<dyn Runtime> {
        let rt = FaultRuntime::new();
        rt.set_unavailable(true);
        Arc::new(rt)
    }

    fn stdin_len(&self, _seen: &Seen, container: &str) -> usize {
        let stdins = self.rt.stdins();
        let got: Vec<_> = stdins.iter().filter(|(c, _)| c == container).collect();
        assert_eq!(got.len(), 1, "{stdins:?}");
        got[0].1.len()
    }
}

// ----- helpers -------------------------------------------------------------

/// Everything a stream yielded, in order.
#[derive(Default, Debug)]
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

    fn terminal(&self) -> &ProcessEvent {
        self.events.last().expect("no events")
    }

    /// `Started` first (when `started`), then only output, then one
    /// terminal item last.
    fn assert_grammar(&self, started: bool) {
        let n = self.events.len();
        assert!(n >= 1, "{:?}", self.events);
        let body = if started {
            assert!(
                matches!(self.events[0], ProcessEvent::Started { .. }),
                "{:?}",
                self.events
            );
            &self.events[1..n - 1]
        } else {
            &self.events[..n - 1]
        };
        assert!(
            body.iter().all(|e| matches!(e, ProcessEvent::Output(_))),
            "{:?}",
            self.events
        );
        assert!(
            matches!(
                self.events[n - 1],
                ProcessEvent::Exited { .. } | ProcessEvent::Failed(_)
            ),
            "{:?}",
            self.events
        );
    }
}

/// Read until a stdout line `text` was seen.
async fn read_until_line(
    stream: &mut BoxStream<'static, ProcessEvent>,
    seen: &mut Seen,
    text: &str,
) {
    while !seen.lines(OutputStream::Stdout).iter().any(|l| l == text) {
        let ev = stream
            .next()
            .await
            .unwrap_or_else(|| panic!("stream ended before `{text}`: {:?}", seen.events));
        let terminal = matches!(ev, ProcessEvent::Exited { .. } | ProcessEvent::Failed(_));
        seen.events.push(ev);
        assert!(
            !terminal || seen.lines(OutputStream::Stdout).iter().any(|l| l == text),
            "ended before `{text}`: {:?}",
            seen.events
        );
    }
}

async fn read_to_end(stream: &mut BoxStream<'static, ProcessEvent>, seen: &mut Seen) {
    while let Some(ev) = stream.next().await {
        seen.events.push(ev);
    }
}

async fn listed(rt: &Arc<dyn Runtime>, container: &str) -> Option<cldpd::runtime::ContainerInfo> {
    rt.list()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == container)
}

// ----- the contract ----------------------------------------------------------

async fn run_yields_started_output_then_the_exit(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Print);
    let container = spec.container.clone();
    let mut seen = Seen::default();
    read_to_end(&mut rt.run(spec), &mut seen).await;
    seen.assert_grammar(true);
    assert_eq!(seen.lines(OutputStream::Stdout), ["one", "two", "three"]);
    assert_eq!(seen.lines(OutputStream::Stderr), ["warn"]);
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 3 }),
        "{seen:?}"
    );
    // Once the exit is seen, the container is gone.
    assert_eq!(listed(&rt, &container).await, None);
}

async fn term_ends_a_run_with_143(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Wait);
    let container = spec.container.clone();
    let mut stream = rt.run(spec);
    let mut seen = Seen::default();
    read_until_line(&mut stream, &mut seen, "ready").await;
    rt.signal(&container, StopSignal::Term).await.unwrap();
    read_to_end(&mut stream, &mut seen).await;
    seen.assert_grammar(true);
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 143 }),
        "{seen:?}"
    );
    assert_eq!(listed(&rt, &container).await, None);
}

async fn a_signal_sent_right_after_run_reaches_the_process(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Wait);
    let container = spec.container.clone();
    let stream = rt.run(spec);
    let reader = tokio::spawn(async move {
        let mut stream = stream;
        let mut seen = Seen::default();
        read_to_end(&mut stream, &mut seen).await;
        seen
    });
    // Before `Started`, probably before the container exists.
    rt.signal(&container, StopSignal::Term).await.unwrap();
    let seen = reader.await.unwrap();
    seen.assert_grammar(true);
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 143 }),
        "{seen:?}"
    );
}

/// Run `b` until its `ready` line, stop it from outside with `grace`
/// (reading its stream meanwhile), and return what was seen and its name.
async fn stopped_after_ready(
    rt: &Arc<dyn Runtime>,
    fx: &dyn Fixture,
    b: Behaviour,
    grace: Duration,
) -> (Seen, String) {
    let spec = fx.run_spec(b);
    let container = spec.container.clone();
    let mut stream = rt.run(spec);
    let mut seen = Seen::default();
    read_until_line(&mut stream, &mut seen, "ready").await;
    let reader = tokio::spawn(async move {
        read_to_end(&mut stream, &mut seen).await;
        seen
    });
    rt.stop(&container, grace).await.unwrap();
    (reader.await.unwrap(), container)
}

async fn stop_escalates_to_kill_after_the_grace(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let grace = Duration::from_millis(500);
    let (seen, container) = stopped_after_ready(&rt, fx, Behaviour::IgnoreTerm, grace).await;
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 137 }),
        "{seen:?}"
    );
    // Idempotent: stopping it again is fine.
    rt.stop(&container, grace).await.unwrap();
}

/// A stop resolves when the container ends, not when the grace does: a
/// process that ends on its SIGTERM is stopped by it (143, no SIGKILL)
/// while the grace (an hour, beyond the test's bound) is still running.
async fn stop_ends_when_the_container_does(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let grace = Duration::from_secs(3600);
    let (seen, _) = stopped_after_ready(&rt, fx, Behaviour::Wait, grace).await;
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 143 }),
        "{seen:?}"
    );
}

async fn already_gone_is_not_an_error(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Print);
    let ghost = format!("{}-never", spec.container);
    rt.signal(&ghost, StopSignal::Term).await.unwrap();
    rt.signal(&ghost, StopSignal::Kill).await.unwrap();
    rt.stop(&ghost, Duration::from_secs(1)).await.unwrap();
    rt.remove(&ghost).await.unwrap();
    let exec = ExecSpec {
        container: ghost,
        command: vec!["claude".into(), "-p".into(), "x".into()],
        workdir: None,
        line_cap: DEFAULT_LINE_CAP,
        stdin: None,
    };
    rt.signal_exec(&exec, StopSignal::Term).await.unwrap();
}

async fn list_shows_a_live_run_with_its_labels(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Wait);
    let (container, session) = (spec.container.clone(), spec.session.clone());
    let mut stream = rt.run(spec);
    let mut seen = Seen::default();
    read_until_line(&mut stream, &mut seen, "ready").await;
    let info = listed(&rt, &container).await.expect("listed");
    assert!(info.is_running(), "{info:?}");
    assert_eq!(info.label("cldpd.session"), Some(session.as_str()));
    rt.remove(&container).await.unwrap();
    read_to_end(&mut stream, &mut seen).await;
    seen.assert_grammar(true);
    assert_eq!(listed(&rt, &container).await, None);
}

async fn exec_streams_and_reports_its_exit(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Wait);
    let container = spec.container.clone();
    let mut stream = rt.run(spec.clone());
    let mut seen = Seen::default();
    read_until_line(&mut stream, &mut seen, "ready").await;
    let mut exec_seen = Seen::default();
    read_to_end(
        &mut rt.exec(fx.exec_spec(&spec, Behaviour::Print)),
        &mut exec_seen,
    )
    .await;
    exec_seen.assert_grammar(true);
    assert_eq!(
        exec_seen.lines(OutputStream::Stdout),
        ["one", "two", "three"]
    );
    assert_eq!(exec_seen.lines(OutputStream::Stderr), ["warn"]);
    assert!(
        matches!(exec_seen.terminal(), ProcessEvent::Exited { code: 3 }),
        "{exec_seen:?}"
    );
    rt.remove(&container).await.unwrap();
    read_to_end(&mut stream, &mut seen).await;
}

async fn exec_into_a_missing_container_fails_without_started(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Print);
    let exec = fx.exec_spec(&spec, Behaviour::Print); // never started
    let events: Vec<ProcessEvent> = rt.exec(exec).collect().await;
    assert!(
        matches!(events.as_slice(), [ProcessEvent::Failed(Error::SessionNotFound { target })] if *target == spec.container),
        "{events:?}"
    );
}

async fn signal_exec_ends_the_exec_not_the_container(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Wait);
    let container = spec.container.clone();
    let mut stream = rt.run(spec.clone());
    let mut seen = Seen::default();
    read_until_line(&mut stream, &mut seen, "ready").await;
    let exec = fx.exec_spec(&spec, Behaviour::Wait);
    let mut exec_stream = rt.exec(exec.clone());
    let mut exec_seen = Seen::default();
    read_until_line(&mut exec_stream, &mut exec_seen, "ready").await;
    rt.signal_exec(&exec, StopSignal::Term).await.unwrap();
    read_to_end(&mut exec_stream, &mut exec_seen).await;
    assert!(
        matches!(exec_seen.terminal(), ProcessEvent::Exited { code: 143 }),
        "{exec_seen:?}"
    );
    let info = listed(&rt, &container)
        .await
        .expect("the container goes on");
    assert!(info.is_running(), "{info:?}");
    rt.remove(&container).await.unwrap();
    read_to_end(&mut stream, &mut seen).await;
}

async fn missing_command_is_agent_not_runnable(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Missing);
    let container = spec.container.clone();
    let mut seen = Seen::default();
    read_to_end(&mut rt.run(spec), &mut seen).await;
    assert!(
        matches!(
            seen.terminal(),
            ProcessEvent::Failed(Error::AgentNotRunnable { code: 127, .. })
        ),
        "{seen:?}"
    );
    assert_eq!(listed(&rt, &container).await, None);
}

async fn an_unreachable_engine_is_docker_unavailable(fx: &dyn Fixture) {
    let rt = fx.unreachable();
    let down = |e: &Error| matches!(e, Error::DockerUnavailable { .. });
    let e = rt.preflight().await.unwrap_err();
    assert!(down(&e), "{e:?}");
    let e = rt.list().await.unwrap_err();
    assert!(down(&e), "{e:?}");
    let e = rt.image_exists("x").await.unwrap_err();
    assert!(down(&e), "{e:?}");
    // The CLI backend reports `Started` (its client ran) and the client's
    // own message first; the terminal item is the same everywhere.
    let mut seen = Seen::default();
    read_to_end(&mut rt.run(fx.run_spec(Behaviour::Print)), &mut seen).await;
    assert!(
        matches!(seen.terminal(), ProcessEvent::Failed(e) if down(e)),
        "{seen:?}"
    );
    assert_eq!(seen.lines(OutputStream::Stdout), Vec::<String>::new());
}

async fn stdin_reaches_the_process_whole_then_eof(fx: &dyn Fixture) {
    let rt = fx.runtime();
    // 1 MiB, led by a dash (an option, were it in argv).
    let mut prompt = b"-rf ".to_vec();
    prompt.resize(1 << 20, b'x');
    let mut spec = fx.run_spec(Behaviour::CountStdin);
    spec.stdin = Some(Stdin::new(prompt));
    let container = spec.container.clone();
    let mut seen = Seen::default();
    read_to_end(&mut rt.run(spec), &mut seen).await;
    seen.assert_grammar(true);
    assert!(
        matches!(seen.terminal(), ProcessEvent::Exited { code: 0 }),
        "{seen:?}"
    );
    assert_eq!(fx.stdin_len(&seen, &container), 1 << 20);
    assert_eq!(listed(&rt, &container).await, None);
}

async fn exec_stdin_reaches_the_exec_then_eof(fx: &dyn Fixture) {
    let rt = fx.runtime();
    let spec = fx.run_spec(Behaviour::Wait);
    let container = spec.container.clone();
    let mut stream = rt.run(spec.clone());
    let mut seen = Seen::default();
    read_until_line(&mut stream, &mut seen, "ready").await;
    let mut exec = fx.exec_spec(&spec, Behaviour::CountStdin);
    exec.stdin = Some(Stdin::new("-- a follow-up\nsecond line\n"));
    let mut exec_seen = Seen::default();
    read_to_end(&mut rt.exec(exec), &mut exec_seen).await;
    exec_seen.assert_grammar(true);
    assert!(
        matches!(exec_seen.terminal(), ProcessEvent::Exited { code: 0 }),
        "{exec_seen:?}"
    );
    assert_eq!(fx.stdin_len(&exec_seen, &container), 27);
    rt.remove(&container).await.unwrap();
    read_to_end(&mut stream, &mut seen).await;
}

// ----- one module per backend --------------------------------------------------

macro_rules! contract {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let Some(fx) = $fixture else { return };
                        bounded(super::$name(&fx)).await;
                    }
                };
            }

            case!(run_yields_started_output_then_the_exit);
            case!(term_ends_a_run_with_143);
            case!(a_signal_sent_right_after_run_reaches_the_process);
            case!(stop_escalates_to_kill_after_the_grace);
            case!(stop_ends_when_the_container_does);
            case!(already_gone_is_not_an_error);
            case!(list_shows_a_live_run_with_its_labels);
            case!(exec_streams_and_reports_its_exit);
            case!(exec_into_a_missing_container_fails_without_started);
            case!(signal_exec_ends_the_exec_not_the_container);
            case!(missing_command_is_agent_not_runnable);
            case!(an_unreachable_engine_is_docker_unavailable);
            case!(stdin_reaches_the_process_whole_then_eof);
            case!(exec_stdin_reaches_the_exec_then_eof);
        }
    };
}

contract!(engine_api, DockerFixture::new(false));
contract!(docker_cli, DockerFixture::new(true));
contract!(fault, FaultFixture::new());
