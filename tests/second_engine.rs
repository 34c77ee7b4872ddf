//! The `cldpd` binary against a second, private Docker engine reached
//! through `DOCKER_HOST` (tests/support/engine.rs: its own `dockerd` in a
//! network namespace of its own), with the default backend and with
//! `CLDPD_RUNTIME=cli`:
//!
//! - build, run, list and stop happen on that engine and nowhere else,
//!   over its unix socket, over TCP with TLS (`DOCKER_TLS_VERIFY`,
//!   `DOCKER_CERT_PATH`) and over ssh (`ssh://root@127.0.0.1`, an sshd of
//!   the test's own); cldpd runs in the engine's namespace for the last two;
//! - killing the engine (SIGKILL) mid-run ends the run with a clear error
//!   within a bounded time, nothing hangs, and once the engine is back
//!   `ps -a` shows the lost run and `stop --orphans` leaves nothing behind.
//!
//! Needs root, `ip`, `nsenter`, `dockerd`, `openssl` and (for ssh)
//! `openssh-server` besides a reachable Docker
//! (the machine's engine is checked to be untouched). Without them these
//! tests are skipped, except under `CI=true`, where they fail.

mod cli_support;
mod support;

use std::process::Command;
use std::time::Duration;

use cli_support::{cldpd, run, Live, LIMIT, STREAM_JSON_AGENT};
use support::docker::{docker, require_docker, unique_name, BUSYBOX};
use support::engine::{require_private_engine, require_sshd, PrivateEngine, TLS_HOST};

/// The backends to prove: the default one, and the CLI backend by name.
const BACKENDS: &[Option<&str>] = &[None, Some("cli")];

/// How long a build plus the start of a container may take.
const STARTUP: Duration = Duration::from_secs(90);

/// Prints `ready`, then waits until signalled.
const WAITER: &str = "#!/bin/sh\necho ready\nwhile :; do sleep 0.2; done\n";

/// A busybox pod named `name` in a fresh pods directory. Its runs have no
/// network (the private engine has no bridge, and a sandboxed run is what
/// a restarted engine restores most simply).
fn pod(name: &str) -> tempfile::TempDir {
    pod_with(name, WAITER, TEXT_AGENT)
}

/// The pod.json of [`pod`]: a plain-text agent, no network.
const TEXT_AGENT: &str = r#"{"agentOutput": "text", "network": "none"}"#;

/// [`pod`] whose agent is `stub` and whose pod.json is `pod_json`.
fn pod_with(name: &str, stub: &str, pod_json: &str) -> tempfile::TempDir {
    let pods = tempfile::Builder::new()
        .prefix("cldpd-eng-pods-")
        .tempdir()
        .unwrap();
    let dir = pods.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(BUSYBOX, dir.join("busybox")).expect("copy busybox");
    std::fs::write(dir.join("claude"), stub).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("claude"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY claude /bin/claude\n",
    )
    .unwrap();
    std::fs::write(dir.join("pod.json"), pod_json).unwrap();
    pods
}

/// A `cldpd` command aimed at `engine`, with `backend` chosen.
fn cmd(
    pods: &std::path::Path,
    state: &std::path::Path,
    engine: &PrivateEngine,
    backend: Option<&str>,
) -> Command {
    let mut c = cldpd(pods, state);
    c.env("DOCKER_HOST", engine.host());
    match backend {
        Some(b) => c.env("CLDPD_RUNTIME", b),
        None => c.env_remove("CLDPD_RUNTIME"),
    };
    c
}

fn name_for(backend: Option<&str>) -> String {
    format!("{}-{}", unique_name(), backend.unwrap_or("default"))
}

/// The machine's own engine knows nothing of `pod_name`: no container, no
/// image.
fn main_engine_untouched(pod_name: &str) {
    let out = docker([
        "ps",
        "-aq",
        "--filter",
        &format!("label=cldpd.pod={pod_name}"),
    ]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the machine's engine has containers of {pod_name}"
    );
    let out = docker(["image", "inspect", &format!("cldpd-{pod_name}")]);
    assert!(
        !out.status.success(),
        "the machine's engine has the image cldpd-{pod_name}"
    );
}

/// One run of `name` on `engine` through the commands `c` makes: it
/// starts, prints, is listed by `ps` and present on the private engine only,
/// and `stop` ends it with 143, leaving no container.
fn start_list_stop(
    engine: &PrivateEngine,
    backend: Option<&str>,
    name: &str,
    c: &dyn Fn() -> Command,
) {
    let mut start = c();
    start.args(["start", name, "--prompt", "hello"]);
    let live = Live::spawn(start);
    let id = live.session_id(STARTUP);
    live.wait_stdout("ready\n", STARTUP);

    // Listed by cldpd, present on the private engine, not on the
    // machine's.
    let mut ps = c();
    ps.arg("ps");
    let listed = run(ps, LIMIT);
    listed.expect_code(0);
    assert!(
        listed.stdout.contains(&id),
        "{backend:?}: {}",
        listed.stdout
    );
    assert_eq!(
        engine
            .containers_with_label(&format!("cldpd.session={id}"))
            .len(),
        1,
        "{backend:?}: the run's container on the private engine"
    );
    let out = engine.docker(["image", "inspect", &format!("cldpd-{name}")]);
    assert!(
        out.status.success(),
        "{backend:?}: image on the private engine"
    );
    main_engine_untouched(name);

    let mut stop = c();
    stop.args(["stop", &id]);
    run(stop, LIMIT).expect_code(0);
    let out = live.finish(LIMIT);
    out.expect_code(143);
    assert_eq!(
        engine.containers_with_label(&format!("cldpd.pod={name}")),
        Vec::<String>::new(),
        "{backend:?}: containers left on the private engine"
    );
    main_engine_untouched(name);
    let _ = engine.docker(["rmi", "-f", &format!("cldpd-{name}")]);
}

#[test]
fn a_private_engine_reached_through_docker_host_builds_runs_lists_and_stops() {
    if !require_docker() || !require_private_engine() {
        return;
    }
    let engine = PrivateEngine::start();
    for backend in BACKENDS.iter().copied() {
        let name = name_for(backend);
        let pods = pod(&name);
        let state = tempfile::tempdir().unwrap();
        let c = || cmd(pods.path(), state.path(), &engine, backend);
        start_list_stop(&engine, backend, &name, &c);
    }
}

/// The hint of a refused `tcp://` client points at the TLS settings.
fn tls_hint(backend: Option<&str>, stderr: &str) {
    assert!(
        stderr.contains("hint: check that an engine listens at tcp://127.0.0.1:2376")
            && stderr.contains("DOCKER_TLS_VERIFY=1")
            && stderr.contains("DOCKER_CERT_PATH"),
        "{backend:?}: the hint names the TLS settings:\n{stderr}"
    );
}

/// Issue 12: `DOCKER_HOST=tcp://…` with TLS (`DOCKER_TLS_VERIFY=1`,
/// `DOCKER_CERT_PATH`), as the docker CLI reaches a remote engine. The
/// private engine listens on TCP with `--tlsverify` inside its namespace,
/// and cldpd runs there (`nsenter --net`), with either backend. A client
/// without certificates, or without TLS, is refused with an error that
/// says so, and nothing runs.
#[test]
fn a_private_engine_over_tcp_with_tls_builds_runs_lists_and_stops() {
    if !require_docker() || !require_private_engine() {
        return;
    }
    let engine = PrivateEngine::start_tls();
    let no_certs = tempfile::tempdir().unwrap();
    for backend in BACKENDS.iter().copied() {
        let name = name_for(backend);
        let pods = pod(&name);
        let state = tempfile::tempdir().unwrap();
        let over_tls = |certs: &std::path::Path| {
            let mut c = cmd(pods.path(), state.path(), &engine, backend);
            c.env("DOCKER_HOST", TLS_HOST)
                .env("DOCKER_TLS_VERIFY", "1")
                .env("DOCKER_CERT_PATH", certs);
            engine.in_netns(&c)
        };
        let c = || over_tls(&engine.client_certs());
        start_list_stop(&engine, backend, &name, &c);

        // Without the client's certificates: refused, and the error names
        // what is missing or what failed.
        let mut ps = over_tls(no_certs.path());
        ps.arg("ps");
        let out = run(ps, LIMIT);
        assert_ne!(out.code, Some(0), "{backend:?}: {}", out.stdout);
        assert!(
            out.stderr
                .contains(&no_certs.path().join("ca.pem").display().to_string()),
            "{backend:?}: the error names the missing file:\n{}",
            out.stderr
        );
        tls_hint(backend, &out.stderr);
        // Plain HTTP to the TLS port: refused too, not taken for an engine.
        let mut plain = cmd(pods.path(), state.path(), &engine, backend);
        plain
            .env("DOCKER_HOST", TLS_HOST)
            .env_remove("DOCKER_TLS_VERIFY");
        plain.args(["start", &name, "--prompt", "hello"]);
        let out = run(engine.in_netns(&plain), LIMIT);

        assert_ne!(out.code, Some(0), "{backend:?}: {}", out.stdout);
        tls_hint(backend, &out.stderr);
        assert!(
            !out.stderr.contains("fix the pod's Dockerfile"),
            "{backend:?}: not the pod's fault:\n{}",
            out.stderr
        );
        assert_eq!(
            engine.containers_with_label(&format!("cldpd.pod={name}")),
            Vec::<String>::new(),
            "{backend:?}: a refused client started nothing"
        );
    }
}

/// Issue 12: `DOCKER_HOST=ssh://…`, as the docker CLI reaches a remote
/// engine: an sshd in the private engine's namespace whose sessions talk
/// to that engine (`docker system dial-stdio` on the far side), the test's
/// own key and known-hosts file; cldpd runs in the namespace with either
/// backend. A login the far side refuses is a clear error with a hint
/// about ssh, and starts nothing.
#[test]
fn a_private_engine_over_ssh_builds_runs_lists_and_stops() {
    if !require_docker() || !require_private_engine() || !require_sshd() {
        return;
    }
    let engine = PrivateEngine::start();
    let gate = engine.start_sshd();
    for backend in BACKENDS.iter().copied() {
        let name = name_for(backend);
        let pods = pod(&name);
        let state = tempfile::tempdir().unwrap();
        let over_ssh = |host: &str| {
            let mut c = cmd(pods.path(), state.path(), &engine, backend);
            c.env("DOCKER_HOST", host)
                .env("PATH", gate.path())
                .env("XDG_STATE_HOME", gate.state_home());
            engine.in_netns(&c)
        };
        let c = || over_ssh("ssh://root@127.0.0.1");
        start_list_stop(&engine, backend, &name, &c);

        let mut refused = over_ssh("ssh://nobody@127.0.0.1");
        refused.args(["start", &name, "--prompt", "hello"]);
        let out = run(refused, LIMIT);
        assert_ne!(out.code, Some(0), "{backend:?}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("hint: check that `ssh nobody@127.0.0.1` logs in"),
            "{backend:?}: the hint is about ssh:\n{}",
            out.stderr
        );
        assert_eq!(
            engine.containers_with_label(&format!("cldpd.pod={name}")),
            Vec::<String>::new(),
            "{backend:?}: a refused client started nothing"
        );
    }
    drop(gate);
}

/// Prints `line 1` … `line 200`, one every 50 ms, then exits 7.
const COUNTER: &str =
    "#!/bin/sh\nseq 1 200 | while read n; do echo \"line $n\"; sleep 0.05; done\nexit 7\n";

/// The contract of `Runtime::run`: losing the connection to the engine is
/// not the container's exit. The engine is killed mid-run and started
/// again with `--live-restore` (its containers run on): the run goes on
/// from the container's log, every line arrives exactly once and in order,
/// and the run ends with the container's own code. Engine API backend:
/// the CLI backend's `docker run` client ends with its broken connection
/// (its recovery from a killed client is `docker_supervision`'s test).
#[test]
fn an_engine_restarted_mid_run_loses_no_line_and_the_run_ends_with_its_own_code() {
    if !require_docker() || !require_private_engine() {
        return;
    }
    let mut engine = PrivateEngine::start_with(&["--live-restore"]);
    let name = name_for(None);
    let pods = pod_with(&name, COUNTER, TEXT_AGENT);
    let state = tempfile::tempdir().unwrap();
    let mut start = cmd(pods.path(), state.path(), &engine, None);
    start.args(["start", &name, "--prompt", "count"]);
    let live = Live::spawn(start);
    live.session_id(STARTUP);
    live.wait_stdout("line 10\n", STARTUP);
    engine.restart();
    let out = live.finish(Duration::from_secs(60));
    let lines: Vec<&str> = out.stdout.lines().collect();
    let expected: Vec<String> = (1..=200).map(|n| format!("line {n}")).collect();
    assert_eq!(
        lines, expected,
        "every line once, in order; stderr:\n{}",
        out.stderr
    );
    assert_eq!(
        out.code,
        Some(7),
        "the container's own code:\n{}",
        out.stderr
    );
    assert_eq!(
        engine.containers_with_label(&format!("cldpd.pod={name}")),
        Vec::<String>::new(),
        "the ended run's container is removed"
    );
    main_engine_untouched(&name);
    let _ = engine.docker(["rmi", "-f", &format!("cldpd-{name}")]);
}

/// The same for a live conversation (`start -i`, a long-lived stream-json
/// agent): after the engine restarts, the owner's next follow-up reaches
/// the agent (its own attach broke, so it attaches anew) and the answer
/// comes back through the log.
#[test]
fn an_engine_restarted_between_two_turns_keeps_the_conversation_going() {
    use std::io::Write;
    if !require_docker() || !require_private_engine() {
        return;
    }
    let mut engine = PrivateEngine::start_with(&["--live-restore"]);
    let name = name_for(None);
    let pods = pod_with(
        &name,
        &STREAM_JSON_AGENT.replace("NOTE", ""),
        r#"{"agentInput": "stream-json", "network": "none", "stopGraceSecs": 5}"#,
    );
    let state = tempfile::tempdir().unwrap();
    let mut start = cmd(pods.path(), state.path(), &engine, None);
    start
        .args(["start", &name, "-i", "--prompt", "first prompt"])
        .stdin(std::process::Stdio::piped());
    let mut live = Live::spawn(start);
    let mut stdin = live.take_stdin();
    live.session_id(STARTUP);
    live.wait_stderr("cldpd: idle after 1 turn;", STARTUP);
    engine.restart();
    stdin.write_all(b"second prompt\n").unwrap();
    stdin.flush().unwrap();
    live.wait_stderr("cldpd: idle after 2 turns;", LIMIT);
    drop(stdin);
    let out = live.finish(LIMIT);
    out.expect_code(0);
    assert_eq!(
        out.stdout, "answer 1: first prompt\nanswer 2: second prompt\n",
        "{}",
        out.stderr
    );
    assert_eq!(
        engine.containers_with_label(&format!("cldpd.pod={name}")),
        Vec::<String>::new(),
        "the ended run's container is removed"
    );
    let _ = engine.docker(["rmi", "-f", &format!("cldpd-{name}")]);
}

#[test]
fn killing_the_engine_mid_run_ends_the_run_clearly_and_what_is_left_is_cleaned_once_it_is_back() {
    if !require_docker() || !require_private_engine() {
        return;
    }
    let mut engine = PrivateEngine::start();
    for backend in BACKENDS.iter().copied() {
        let name = name_for(backend);
        let pods = pod(&name);
        let state = tempfile::tempdir().unwrap();
        let c = |engine: &PrivateEngine| cmd(pods.path(), state.path(), engine, backend);

        let mut start = c(&engine);
        start.args(["start", &name, "--prompt", "hello"]);
        let live = Live::spawn(start);
        let id = live.session_id(STARTUP);
        live.wait_stdout("ready\n", STARTUP);

        engine.kill();
        // The run ends by itself, with an error that says what happened and
        // what to do, well before any test limit.
        let out = live.finish(Duration::from_secs(60));
        assert_eq!(out.code, Some(1), "{backend:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("Docker daemon"),
            "{backend:?}: the error names the daemon:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("cldpd stop --orphans"),
            "{backend:?}: the hint says how to clean up:\n{}",
            out.stderr
        );

        engine.restart();
        // A daemon restarted after a crash removes the `--rm` containers it
        // finds dead (seen here, also with `--live-restore`); whatever it
        // leaves, cldpd must see and clean it.
        // `ps -a` knows the lost run (from its session log) and says how it
        // ended.
        let mut ps = c(&engine);
        ps.args(["ps", "-a"]);
        let listed = run(ps, LIMIT);
        listed.expect_code(0);
        let line = listed
            .stdout
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("{backend:?}: {id} missing in ps -a:\n{}", listed.stdout));
        // What is left of it on the engine (the CLI backend's `--rm`
        // container is removed by the restarted daemon; the Engine API
        // backend's, created without auto-removal, stays, exited) is shown
        // as an orphan; without a container, the log says how it ended.
        let left = engine.containers_with_label(&format!("cldpd.session={id}"));
        if left.is_empty() {
            assert!(line.contains("docker_lost"), "{backend:?}: {line}");
        } else {
            assert!(line.contains("orphan"), "{backend:?}: {line}");
        }

        let mut orphans = c(&engine);
        orphans.args(["stop", "--orphans"]);
        run(orphans, LIMIT).expect_code(0);
        assert_eq!(
            engine.containers_with_label(&format!("cldpd.pod={name}")),
            Vec::<String>::new(),
            "{backend:?}: containers left on the private engine after stop --orphans"
        );
        // Nothing of it is live any more.
        let mut ps = c(&engine);
        ps.arg("ps");
        let listed = run(ps, LIMIT);
        listed.expect_code(0);
        assert!(
            !listed.stdout.contains(&id),
            "{backend:?}: {}",
            listed.stdout
        );
        main_engine_untouched(&name);
        let _ = engine.docker(["rmi", "-f", &format!("cldpd-{name}")]);
    }
}
