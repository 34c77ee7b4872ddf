//! The `cldpd` binary against a real Docker engine: every command, flag
//! order both ways, `--json`, exit-code propagation, Ctrl-C / SIGTERM / a
//! second Ctrl-C, `stop` from a second process, `logs` (also `--follow`),
//! `ps`, `resume`, `doctor`, and the failures only Docker can reveal.
//!
//! Each test has its own pod (unique name, `support::docker::TestPod`,
//! whose `Drop` removes its containers and images) and its own state
//! directory; every process is bounded in time. Signals are sent once the
//! agent has printed `ready` (so the container is really running), found by
//! reading the child's output, never by sleeping. Without Docker these tests
//! are skipped, except under `CI=true`, where they fail.

mod cli_support;
mod support;

use std::time::Duration;

use cli_support::{
    cldpd, exit_within, read_stderr, run, run_with_full_stdout, Finished, Live, LIMIT,
    STREAM_JSON_AGENT,
};
use support::docker::{docker, require_docker, TestPod};

const ISSUE: &str = "https://github.com/cldpd/demo/issues/1";

/// How long a build plus the start of a container may take.
const STARTUP: Duration = Duration::from_secs(60);

/// Prints on both pipes and exits 7.
const EXIT_7: &str =
    "#!/bin/sh\necho \"out 1\"\necho \"err 1\" >&2\necho \"out 2: $* $(cat)\"\nexit 7\n";

/// Runs until SIGTERM, then says so and exits 42.
const GRACEFUL: &str = "#!/bin/sh\ntrap 'echo \"got TERM\" >&2; exit 42' TERM\necho ready\nwhile :; do sleep 0.1; done\n";

/// Ignores SIGTERM: only SIGKILL ends it.
const STUBBORN: &str =
    "#!/bin/sh\ntrap 'echo \"ignoring TERM\" >&2' TERM\necho ready\nwhile :; do sleep 0.1; done\n";

/// Runs until signalled (SIGTERM ends it: 143); a resume prints its
/// arguments and exits 5.
const LOOP_OR_RESUME: &str = "#!/bin/sh\ncase \"$*\" in *--resume*) echo \"resumed: $* $(cat)\"; exit 5;; esac\necho ready\nwhile :; do sleep 0.1; done\n";

/// A few lines over about two seconds, then exit 0.
const SLOW_LINES: &str = "#!/bin/sh\necho ready\nfor i in $(seq 1 10); do echo \"line $i\"; sleep 0.2; done\necho \"err end\" >&2\n";

fn state() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cldpd-cli-state-")
        .tempdir()
        .unwrap()
}

fn no_containers_left(pod: &TestPod) {
    assert_eq!(
        pod.containers(),
        Vec::<String>::new(),
        "containers of {}",
        pod.name()
    );
}

/// The position of `needle` in `text`, panicking with the text.
fn pos(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` missing in:\n{text}"))
}

/// Every stdout line parsed as JSON; panics on a line that is not.
fn ndjson(out: &Finished) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `seq` is 1, 2, 3, ... and every event names `session`.
fn gapless(events: &[serde_json::Value], session: &str) {
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["seq"], (i + 1) as u64, "gap at {i}: {ev}");
        assert_eq!(ev["session"], session, "{ev}");
        assert!(
            ev["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{ev}"
        );
    }
}

#[test]
fn start_streams_both_pipes_and_exits_with_the_agent_code_whatever_the_flag_order() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(EXIT_7);
    let state = state();
    let name = pod.name();
    let orders: [Vec<&str>; 3] = [
        vec!["start", name, "--issue", ISSUE],
        vec!["start", "--issue", ISSUE, name],
        vec!["start", "--issue", ISSUE, name, "--grace", "2"],
    ];
    for args in orders {
        let mut cmd = cldpd(pod.pods_dir(), state.path());
        cmd.args(&args);
        let out = run(cmd, LIMIT);
        out.expect_code(7);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "{args:?}: only the agent's stdout:\n{}",
            out.stdout
        );
        assert_eq!(lines[0], "out 1");
        assert!(
            lines[1].starts_with("out 2: -p --output-format stream-json --verbose --session-id ")
                && lines[1].ends_with(&format!(" Work on this GitHub issue: {ISSUE}")),
            "{}",
            lines[1]
        );
        let err = &out.stderr;
        let building = pos(err, &format!("cldpd: building cldpd-{name}"));
        let started = pos(err, &format!("cldpd: started {name}-"));
        let agent = pos(err, "\nerr 1\n");
        let exited = pos(err, "cldpd: exited 7\n");
        assert!(
            building < started && started < agent && agent < exited,
            "{err}"
        );
        assert!(
            !err.contains("Step 1/"),
            "build output only with -v:\n{err}"
        );
    }

    // -v (after the subcommand: global flags go anywhere) shows the build.
    // A fresh state directory: no build recorded, so it builds again (with
    // the first one's, the image is reused and nothing is built).
    let fresh = self::state();
    let mut cmd = cldpd(pod.pods_dir(), fresh.path());
    cmd.args(["start", name, "--issue", ISSUE, "-v"]);
    let out = run(cmd, LIMIT);
    out.expect_code(7);
    assert!(out.stderr.contains("Step 1/"), "{}", out.stderr);
    no_containers_left(&pod);
}

#[test]
fn json_is_ndjson_of_every_event_with_gapless_seq_and_nothing_else_on_stdout() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(EXIT_7);
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", "--json", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(7);
    let events = ndjson(&out);
    let session = events[0]["session"].as_str().unwrap().to_string();
    assert!(session.starts_with(&format!("{}-", pod.name())));
    gapless(&events, &session);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "build_started");
    assert_eq!(events[0]["image"], pod.image());
    let complete = types.iter().position(|t| *t == "build_complete").unwrap();
    assert_eq!(types[complete + 1], "container_started");
    assert_eq!(*types.last().unwrap(), "container_exited");
    assert_eq!(events.last().unwrap()["code"], 7);
    let output: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| (e["stream"].as_str().unwrap(), e["line"].as_str().unwrap()))
        .collect();
    assert!(output.contains(&("stdout", "out 1")), "{output:?}");
    assert!(output.contains(&("stderr", "err 1")), "{output:?}");
    assert_eq!(output.len(), 3, "{output:?}");
    assert!(
        !out.stderr.contains("cldpd: started"),
        "no status lines with --json:\n{}",
        out.stderr
    );
    no_containers_left(&pod);
}

/// Start a run of `pod` (extra args appended), wait until its agent runs.
fn start_live(pod: &TestPod, state: &std::path::Path, extra: &[&str]) -> (Live, String) {
    let mut cmd = cldpd(pod.pods_dir(), state);
    cmd.args(["start", pod.name(), "--issue", ISSUE])
        .args(extra);
    let live = Live::spawn(cmd);
    let id = live.session_id(STARTUP);
    live.wait_stdout("ready\n", STARTUP);
    (live, id)
}

fn graceful_stop_on(signal: &str) {
    let pod = TestPod::with_stub(GRACEFUL);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &["--grace", "30"]);
    live.signal(signal);
    // Well within the 30 s grace: the agent handled SIGTERM itself.
    let out = live.finish(Duration::from_secs(20));
    out.expect_code(42);
    assert!(
        out.stderr.contains(&format!(
            "cldpd: stopping {id} (SIGTERM, then SIGKILL after 30s)"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("got TERM"), "{}", out.stderr);
    assert!(out.stderr.contains("cldpd: exited 42"), "{}", out.stderr);
    no_containers_left(&pod);
}

#[test]
fn ctrl_c_stops_the_run_gracefully_and_exits_with_the_container_code() {
    if !require_docker() {
        return;
    }
    graceful_stop_on("INT");
}

#[test]
fn sigterm_stops_the_run_gracefully_and_exits_with_the_container_code() {
    if !require_docker() {
        return;
    }
    graceful_stop_on("TERM");
}

/// Says which signal reached it: SIGTERM exits 143, SIGINT 130, SIGHUP 129.
const WHICH_SIGNAL: &str = "#!/bin/sh\ntrap 'echo \"got TERM\" >&2; exit 143' TERM\ntrap 'echo \"got INT\" >&2; exit 130' INT\ntrap 'echo \"got HUP\" >&2; exit 129' HUP\necho ready\nwhile :; do sleep 0.1; done\n";

/// A terminal sends Ctrl-C (SIGINT) or its hang-up (SIGHUP) to the whole
/// foreground process group, not to cldpd alone. The docker clients cldpd
/// starts must not be in that group (they would forward the signal to the
/// agent): the agent gets exactly what cldpd says it sends, SIGTERM.
fn terminal_signal_reaches_the_agent_as_sigterm(signal: &str) {
    use std::os::unix::process::CommandExt;
    let pod = TestPod::with_stub(WHICH_SIGNAL);
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE, "--grace", "30"]);
    // Its own process group, as a shell puts a foreground job.
    cmd.process_group(0);
    let live = Live::spawn(cmd);
    let id = live.session_id(STARTUP);
    live.wait_stdout("ready\n", STARTUP);
    let group = format!("-{}", live.pid());
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &group])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} -- {group}");
    let out = live.finish(Duration::from_secs(20));
    out.expect_code(143);
    assert!(
        out.stderr.contains(&format!(
            "cldpd: stopping {id} (SIGTERM, then SIGKILL after 30s)"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("got TERM"), "{}", out.stderr);
    assert!(!out.stderr.contains("got INT"), "{}", out.stderr);
    assert!(!out.stderr.contains("got HUP"), "{}", out.stderr);
    no_containers_left(&pod);
}

#[test]
fn ctrl_c_on_a_terminal_gives_the_agent_sigterm_not_sigint() {
    if !require_docker() {
        return;
    }
    terminal_signal_reaches_the_agent_as_sigterm("INT");
}

#[test]
fn closing_the_terminal_gives_the_agent_sigterm_not_sighup() {
    if !require_docker() {
        return;
    }
    terminal_signal_reaches_the_agent_as_sigterm("HUP");
}

#[test]
fn the_restart_limit_exits_with_the_agent_code_and_a_timeout_exits_124() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .stub(EXIT_7)
        .pod_json(r#"{"restart": "on-failure", "maxRestarts": 1, "backoffMs": 10}"#)
        .create();
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(7);
    assert!(
        out.stderr.contains("restart limit reached"),
        "{}",
        out.stderr
    );
    no_containers_left(&pod);

    let pod = TestPod::builder()
        .stub(LOOP_OR_RESUME)
        .pod_json(r#"{"timeoutSecs": 1, "stopGraceSecs": 1}"#)
        .create();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(124);
    assert!(out.stderr.contains("timeout"), "{}", out.stderr);
    no_containers_left(&pod);
}

#[test]
fn a_prompt_from_stdin_reaches_the_agent() {
    if !require_docker() {
        return;
    }
    // Prints its arguments and its stdin: the prompt is in one of them.
    let pod = TestPod::builder()
        .stub("#!/bin/sh\necho \"args: $*\"\ncat\n")
        .pod_json(r#"{"inheritEnv": ["CLDPD_TEST_NEVER_SET_VAR"]}"#)
        .create();
    let state = state();
    let task = state.path().join("task.md");
    std::fs::write(&task, "- fix the tests\n- and the docs\n").unwrap();
    for flag in ["--prompt", "--prompt-file"] {
        let mut cmd = cldpd(pod.pods_dir(), state.path());
        cmd.args(["start", pod.name(), flag, "-"])
            .stdin(std::fs::File::open(&task).unwrap());
        let out = run(cmd, LIMIT);
        out.expect_code(0);
        assert!(out.stdout.contains("- fix the tests"), "{}", out.stdout);
        assert!(out.stdout.contains("- and the docs"), "{}", out.stdout);
        // An unset inheritEnv variable is named at start.
        assert!(
            out.stderr
                .contains("cldpd: warning: CLDPD_TEST_NEVER_SET_VAR (inheritEnv of pod"),
            "{}",
            out.stderr
        );
    }
    // gh's issue shorthand.
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", "cldpd/demo#1"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stdout.contains(ISSUE), "{}", out.stdout);
    no_containers_left(&pod);
}

/// Removes an image tag when dropped, and every image (intermediate layers
/// too) labelled with it (see `support::docker::remove_images_labelled`).
struct RemoveTag(String);

impl Drop for RemoveTag {
    fn drop(&mut self) {
        let _ = docker(["rmi", "--no-prune", self.0.as_str()]);
        support::docker::remove_images_labelled(&self.0);
    }
}

/// The README's two library programs (examples/actor.rs and
/// examples/facade.rs, which `cargo test` builds) run against the demo pod
/// and print a failure with Display and its hint, not Debug.
#[test]
fn the_library_examples_run_against_the_demo_pod() {
    if !require_docker() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    let pods = tempfile::tempdir().unwrap();
    let state = state();
    // The demo pod as config/pods/hello has it, under its own image tag.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pods/hello");
    let hello = pods.path().join("hello");
    std::fs::create_dir(&hello).unwrap();
    for file in ["claude", "template.md"] {
        std::fs::copy(demo.join(file), hello.join(file)).unwrap();
    }
    std::fs::copy(support::docker::BUSYBOX, hello.join("busybox")).unwrap();
    let tag = format!("cldpd-{}", support::docker::unique_name());
    let _remove = RemoveTag(tag.clone());
    // The demo's Dockerfile, its layers labelled so that the test removes
    // them all.
    let dockerfile = std::fs::read_to_string(demo.join("Dockerfile")).unwrap();
    let labelled = dockerfile.replacen(
        "FROM scratch\n",
        &format!(
            "FROM scratch\nLABEL {}={tag}\n",
            support::docker::POD_IMAGE_LABEL
        ),
        1,
    );
    assert_ne!(
        labelled, dockerfile,
        "the demo Dockerfile starts FROM scratch"
    );
    std::fs::write(hello.join("Dockerfile"), labelled).unwrap();
    std::fs::write(
        hello.join("pod.json"),
        format!(r#"{{"image": "{tag}", "workdir": "/work", "stopGraceSecs": 3}}"#),
    )
    .unwrap();
    for name in ["facade", "actor"] {
        let bin = examples.join(name);
        assert!(
            bin.is_file(),
            "{} is missing: `cargo test` builds the examples (or: cargo build --examples)",
            bin.display()
        );
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("CLDPD_PODS_DIR", pods.path())
            .env("CLDPD_STATE_DIR", state.path())
            .stdin(std::process::Stdio::null());
        let out = run(cmd, LIMIT);
        out.expect_code(0);
        assert!(
            out.stdout.contains("hello from the demo agent"),
            "{name}: {}",
            out.stdout
        );
        // A missing pods directory: Display and a hint, no Debug.
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("CLDPD_PODS_DIR", pods.path().join("missing"))
            .env("CLDPD_STATE_DIR", state.path())
            .stdin(std::process::Stdio::null());
        let out = run(cmd, LIMIT);
        out.expect_code(1);
        assert!(
            out.stderr.contains("cannot start: pods directory")
                && out.stderr.contains("hint: ")
                && !out.stderr.contains("PodsDirMissing"),
            "{name}: {}",
            out.stderr
        );
    }
    assert_eq!(
        support::docker::containers_with_label(&format!("cldpd.image={tag}")),
        Vec::<String>::new()
    );
}

#[test]
fn start_detach_prints_the_id_and_the_run_goes_on_in_the_background() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(LOOP_OR_RESUME);
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", "-d", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let id = out.stdout.trim().to_string();
    assert!(
        id.starts_with(&format!("{}-", pod.name())) && out.stdout == format!("{id}\n"),
        "{}",
        out.stdout
    );
    // The run is live, owned by a process that is not the one that exited.
    let deadline = std::time::Instant::now() + STARTUP;
    loop {
        let mut ps = cldpd(pod.pods_dir(), state.path());
        ps.args(["ps", "-q"]);
        let out = run(ps, LIMIT);
        out.expect_code(0);
        if out.stdout.lines().any(|l| l == id) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{id} never listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "--json"]);
    let rows = ndjson(&run(ps, LIMIT));
    let row = rows.iter().find(|r| r["session"] == id.as_str()).unwrap();
    assert_eq!(row["orphan"], false, "its owner lives: {row}");

    // Two targets at once: the live run and one that does not exist.
    let mut stop = cldpd(pod.pods_dir(), state.path());
    stop.args(["stop", &id, "nope-00000000", "--grace", "5"]);
    let out = run(stop, LIMIT);
    out.expect_code(1);
    assert_eq!(out.stdout, format!("{id}\n"));
    assert!(
        out.stderr.contains(&format!("cldpd: stopped {id}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("cldpd: nope-00000000: "),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("stopping nope-00000000"),
        "no 'stopping' for what is not running: {}",
        out.stderr
    );
    // The background process saw its run end and logged it.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", "-f", &id]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    assert!(out.stderr.contains("exited 143"), "{}", out.stderr);
    // Its session log is its owner's only.
    use std::os::unix::fs::PermissionsExt;
    let log = state.path().join("sessions").join(format!("{id}.ndjson"));
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", log.display());
    // ps -a lists it, ended, with its exit code; ps without -a does not.
    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "-a"]);
    let out = run(ps, LIMIT);
    out.expect_code(0);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in ps -a:\n{}", out.stdout));
    assert!(row.contains("exited 143 after "), "{row}");
    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "-q"]);
    assert!(!run(ps, LIMIT).stdout.contains(&id));
    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "-a", "--json"]);
    let rows = ndjson(&run(ps, LIMIT));
    let row = rows.iter().find(|r| r["session"] == id.as_str()).unwrap();
    assert_eq!(row["exit_code"], 143, "{row}");
    assert!(row["duration_ms"].as_u64().is_some(), "{row}");
    no_containers_left(&pod);
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(STUBBORN);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &["--grace", "300"]);
    live.signal("INT");
    live.wait_stderr("ignoring TERM", Duration::from_secs(20));
    live.signal("INT");
    // Far less than the 300 s grace.
    let out = live.finish(Duration::from_secs(30));
    out.expect_code(137);
    assert!(
        out.stderr.contains(&format!("cldpd: stopping {id}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("cldpd: killing {id} now (SIGKILL)")),
        "{}",
        out.stderr
    );
    no_containers_left(&pod);
}

/// `cldpd stop` from another process is not undone by the owner's restart
/// policy: the owner ends with the stop's exit code and starts nothing
/// again.
#[test]
fn stop_from_a_second_process_is_not_undone_by_the_restart_policy() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .stub(LOOP_OR_RESUME)
        .pod_json(r#"{ "restart": "on-failure", "backoffMs": 50 }"#)
        .create();
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &[]);
    let mut stop = cldpd(pod.pods_dir(), state.path());
    stop.args(["stop", "--grace", "5", &id]);
    run(stop, LIMIT).expect_code(0);
    let first = live.finish(Duration::from_secs(30));
    first.expect_code(143);
    assert!(!first.stderr.contains("restarting"), "{}", first.stderr);
    assert!(
        first.stderr.contains("cldpd: exited 143"),
        "{}",
        first.stderr
    );
    no_containers_left(&pod);
}

/// Ctrl-C while a run waits to restart (no container runs) ends it as
/// interrupted: 130, like a Ctrl-C before its first container, not the
/// exit code of the container that ended before the back-off.
#[test]
fn ctrl_c_during_a_restart_back_off_exits_130() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .stub("#!/bin/sh\necho ready\nexit 1\n")
        .pod_json(r#"{ "restart": "on-failure", "backoffMs": 600000 }"#)
        .create();
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &[]);
    live.wait_stderr(&format!("restarting {id} in"), STARTUP);
    live.signal("INT");
    let out = live.finish(Duration::from_secs(30));
    out.expect_code(130);
    assert!(out.stderr.contains("stopped by SIGINT"), "{}", out.stderr);
    no_containers_left(&pod);
}

#[test]
fn stop_from_a_second_process_ends_the_run_of_the_first() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(LOOP_OR_RESUME);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &[]);

    let mut stop = cldpd(pod.pods_dir(), state.path());
    stop.args(["stop", "--grace", "5", &id]);
    let out = run(stop, LIMIT);
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{id}\n"));
    assert!(
        out.stderr.contains(&format!("cldpd: stopped {id}")),
        "{}",
        out.stderr
    );

    let first = live.finish(Duration::from_secs(30));
    first.expect_code(143);
    assert!(
        first.stderr.contains("cldpd: exited 143"),
        "{}",
        first.stderr
    );
    no_containers_left(&pod);

    // Nothing left to stop: exit 1 with a hint.
    let mut again = cldpd(pod.pods_dir(), state.path());
    again.args(["stop", &id]);
    let out = run(again, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("no running session matches `{id}`"))
            && out.stderr.contains("hint: "),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("stopping"),
        "nothing is stopping: {}",
        out.stderr
    );
}

#[test]
fn ps_shows_a_live_run_and_resume_reaches_it_from_another_process() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(LOOP_OR_RESUME);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &[]);

    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.arg("ps");
    let out = run(ps, LIMIT);
    out.expect_code(0);
    assert!(out.stdout.starts_with("SESSION"), "{}", out.stdout);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", out.stdout));
    for needle in [pod.name(), ISSUE, "running"] {
        assert!(row.contains(needle), "{row}");
    }

    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "--json"]);
    let out = run(ps, LIMIT);
    out.expect_code(0);
    let rows = ndjson(&out);
    let mine = rows
        .iter()
        .find(|r| r["session"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {rows:?}"));
    assert_eq!(mine["pod"], pod.name());
    assert_eq!(mine["issue"], ISSUE);
    assert_eq!(mine["state"], "running");
    assert_eq!(mine["orphan"], false);

    // Resume by pod name (one live run), flags after the target ...
    let mut resume = cldpd(pod.pods_dir(), state.path());
    resume.args(["resume", pod.name(), "--prompt", "more please"]);
    let out = run(resume, LIMIT);
    out.expect_code(5);
    assert!(
        out.stdout
            .starts_with("resumed: -p --output-format stream-json --verbose --resume ")
            && out.stdout.ends_with(" more please\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!("(resuming {id})")),
        "{}",
        out.stderr
    );
    // ... and by session id, flags first, as JSON.
    let mut resume = cldpd(pod.pods_dir(), state.path());
    resume.args(["resume", "--json", "--prompt", "again", &id]);
    let out = run(resume, LIMIT);
    out.expect_code(5);
    let events = ndjson(&out);
    let session = events[0]["session"].as_str().unwrap().to_string();
    assert_ne!(session, id, "a resume is a session of its own");
    gapless(&events, &session);
    assert_eq!(events[0]["type"], "container_started");
    assert_eq!(events.last().unwrap()["code"], 5);

    // `logs <pod>` is the one live run, not the newer, finished follow-up.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", pod.name()]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    assert!(
        out.stderr
            .contains(&format!("showing {id}, the live run of pod")),
        "{}",
        out.stderr
    );

    live.signal("INT");
    live.finish(Duration::from_secs(30)).expect_code(143);
    no_containers_left(&pod);
}

#[test]
fn logs_follow_during_the_run_and_read_back_after_it() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(SLOW_LINES);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &[]);

    let mut follow = cldpd(pod.pods_dir(), state.path());
    follow.args(["logs", "--follow", &id]);
    let follow = Live::spawn(follow);
    let run_out = live.finish(LIMIT);
    run_out.expect_code(0);
    let followed = follow.finish(Duration::from_secs(30));
    followed.expect_code(0);
    let expected: String = std::iter::once("ready\n".to_string())
        .chain((1..=10).map(|i| format!("line {i}\n")))
        .collect();
    assert_eq!(run_out.stdout, expected);
    assert_eq!(followed.stdout, expected, "--follow saw every line");
    assert!(followed.stderr.contains("err end\n"), "{}", followed.stderr);
    assert!(
        followed.stderr.contains("cldpd: exited 0"),
        "{}",
        followed.stderr
    );

    // After the run (the container is gone): the same output.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", &id]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    assert_eq!(out.stdout, expected);
    assert!(
        out.stderr.contains(&format!("cldpd: started {id}")),
        "{}",
        out.stderr
    );

    // By pod name: its latest run.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", pod.name()]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    assert_eq!(out.stdout, expected);
    assert!(
        out.stderr.contains(&format!("showing {id}")),
        "{}",
        out.stderr
    );

    // As JSON: the whole run, gapless, ending with the exit.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", "--json", &id]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    let events = ndjson(&out);
    gapless(&events, &id);
    assert_eq!(events[0]["type"], "build_started");
    assert_eq!(events.last().unwrap()["type"], "container_exited");
    assert_eq!(events.last().unwrap()["code"], 0);
    no_containers_left(&pod);
}

#[test]
fn logs_follow_ends_when_the_run_is_gone_without_a_final_event() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(LOOP_OR_RESUME);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &[]);
    // The owning cldpd dies without a word; its container is left behind
    // (findable by label) until removed.
    live.signal("KILL");
    let killed = live.finish(Duration::from_secs(10));
    assert_eq!(killed.code, None);

    let mut follow = cldpd(pod.pods_dir(), state.path());
    follow.args(["logs", "-f", &id]);
    let follow = Live::spawn(follow);
    follow.wait_stderr(&format!("cldpd: started {id}"), Duration::from_secs(10));
    let containers = pod.containers();
    assert_eq!(containers.len(), 1, "the run's container is still there");
    let rm = docker(["rm", "-f", &containers[0]]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let out = follow.finish(Duration::from_secs(20));
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("{id} is gone and its log has no final event")),
        "{}",
        out.stderr
    );
    no_containers_left(&pod);
}

#[test]
fn agent_missing_exits_1_with_a_hint_and_leaves_no_container() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder().no_agent().create();
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr.contains(&format!(
            "cldpd: agent command `claude` was not found in image `{}`",
            pod.image()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: install `claude`"),
        "{}",
        out.stderr
    );
    no_containers_left(&pod);
}

#[test]
fn dockers_own_failure_exits_1_with_its_message_and_leaves_no_container() {
    if !require_docker() {
        return;
    }
    // More CPUs than this machine has (but not more than pod.json takes,
    // 4096): `docker run` itself fails (125).
    let pod = TestPod::builder().pod_json(r#"{ "cpus": 4000 }"#).create();
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("cldpd: docker could not run the container")
            && out.stderr.contains("CPU"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    // Docker's own line is the error's message, not a line of agent output.
    assert_eq!(
        out.stderr
            .lines()
            // The daemon's own text, whichever backend carried it.
            .filter(|l| l.contains("Range of CPUs"))
            .count(),
        1,
        "{}",
        out.stderr
    );
    no_containers_left(&pod);
}

#[test]
fn a_failed_build_exits_1_and_shows_the_tail_of_its_output() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .dockerfile_line("RUN [\"/bin/false\"]")
        .create();
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("cldpd: building image `{}` failed", pod.image())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("/bin/false"),
        "the tail: {}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    // The legacy builder's notice and its carriage returns are not shown.
    assert!(!out.stderr.contains("DEPRECATED"), "{}", out.stderr);
    assert!(!out.stderr.contains("buildx"), "{}", out.stderr);
    assert!(!out.stderr.contains('\r'), "{:?}", out.stderr);

    // --json: no notice, no `\r` in any event (nor its JSON escape).
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE, "--json"]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(out.stdout.contains("build_output"), "{}", out.stdout);
    assert!(!out.stdout.contains("DEPRECATED"), "{}", out.stdout);
    assert!(!out.stdout.contains("\\r"), "{}", out.stdout);
    assert!(!out.stdout.contains('\r'), "{:?}", out.stdout);

    // -v: the build log once, not again in the error.
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE, "-v"]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert_eq!(
        out.stderr.matches("RUN [\"/bin/false\"]").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("cldpd: building image `{}` failed", pod.image())),
        "{}",
        out.stderr
    );
    no_containers_left(&pod);
}

#[test]
fn doctor_passes_with_docker_and_valid_pods_and_removes_its_probe() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::builder()
        .pod_json(r#"{ "inheritEnv": ["CLDPD_TEST_DOCTOR_VAR"] }"#)
        .create();
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.env("CLDPD_TEST_DOCTOR_VAR", "value").arg("doctor");
    let out = run(cmd, Duration::from_secs(180));
    out.expect_code(0);
    for needle in [
        "ok    docker is reachable".to_string(),
        "ok    docker can build images".to_string(),
        format!(
            "ok    pods directory {} exists (1 pod)",
            pod.pods_dir().display()
        ),
        format!("ok    pod {} is valid", pod.name()),
        format!("ok    pod {}: CLDPD_TEST_DOCTOR_VAR is set", pod.name()),
        format!(
            "ok    state directory {} is writable",
            state.path().display()
        ),
        "all 6 checks passed".to_string(),
    ] {
        assert!(
            out.stdout.contains(&needle),
            "`{needle}` in:\n{}",
            out.stdout
        );
    }
    let probes = docker(["images", "-q", "cldpd-doctor-probe"]);
    assert_eq!(
        String::from_utf8_lossy(&probes.stdout).trim(),
        "",
        "doctor left its probe image"
    );
}

/// The demo pod of `config/pods/hello` (its stub agent, `pod.json` and
/// `template.md`, under a unique name so that its image tag is the test's
/// own): a run on an issue, an exit code asked for in the prompt, and a
/// waiting run resumed in the same conversation and stopped from a second
/// process, as the README suggests trying.
#[test]
fn the_demo_pod_runs_resumes_and_stops_as_the_readme_says() {
    if !require_docker() {
        return;
    }
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pods/hello");
    let read = |f: &str| std::fs::read_to_string(demo.join(f)).unwrap();
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("FROM scratch") && dockerfile.contains("COPY claude /bin/claude"),
        "the test pod mirrors this Dockerfile: {dockerfile}"
    );
    let pod = TestPod::builder()
        .stub(&read("claude"))
        .pod_json(&read("pod.json"))
        .file("template.md", &read("template.md"))
        .dockerfile_line("WORKDIR /work")
        .create();
    let state = state();

    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    for line in [
        "hello from the demo agent (start, conversation ",
        "workdir: /work, GREETING=hi from pod.json",
        "  > You are the cldpd demo agent. Standing orders:",
        &format!("  > Work on this GitHub issue: {ISSUE}"),
        "working... step 3/3",
        "done",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in {}", out.stdout);
    }
    assert!(
        out.stderr.contains("(this line went to stderr)"),
        "{}",
        out.stderr
    );

    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--prompt", "fail with exit=3"]);
    run(cmd, LIMIT).expect_code(3);

    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--prompt", "wait=300"]);
    let live = Live::spawn(cmd);
    let id = live.session_id(STARTUP);
    live.wait_stdout("(try cldpd ps, resume, stop)", STARTUP);
    let conversation = {
        let out = live.stdout();
        let start = out.find("(start, conversation ").unwrap() + "(start, conversation ".len();
        out[start..start + 36].to_string()
    };
    let mut resume = cldpd(pod.pods_dir(), state.path());
    resume.args(["resume", pod.name(), "--prompt", "what now?"]);
    let out = run(resume, LIMIT);
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!(
            "hello from the demo agent (resume, conversation {conversation})"
        )),
        "{}",
        out.stdout
    );
    let mut stop = cldpd(pod.pods_dir(), state.path());
    stop.args(["stop", &id]);
    run(stop, LIMIT).expect_code(0);
    let first = live.finish(Duration::from_secs(30));
    first.expect_code(143);
    assert!(
        first
            .stdout
            .contains("got SIGTERM: cleaning up and leaving"),
        "{}",
        first.stdout
    );
    no_containers_left(&pod);
}

/// Prints a line every 0.2 s until it is stopped.
const FOREVER_LINES: &str = "#!/bin/sh\nwhile :; do echo l; sleep 0.2; done\n";

#[test]
fn a_full_stdout_stops_the_run_and_exits_1_with_a_message() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(FOREVER_LINES);
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--prompt", "go", "--grace", "2"]);
    let stderr = run_with_full_stdout(cmd, STARTUP + Duration::from_secs(30));
    assert!(stderr.contains("cldpd: stopping "), "{stderr}");
    no_containers_left(&pod);
}

#[test]
fn a_stdout_pipe_closed_after_three_lines_stops_the_run_and_exits_141() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(FOREVER_LINES);
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--prompt", "go", "--grace", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = read_stderr(&mut child);
    // `| head -3`: read three lines, then close the pipe.
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
        (0..3).filter_map(|_| lines.next()?.ok()).count()
    });
    let (code, stderr) = exit_within(child, err, STARTUP + Duration::from_secs(30));
    assert_eq!(reader.join().unwrap(), 3, "{stderr}");
    assert_eq!(code, Some(141), "stderr:\n{stderr}");
    assert!(stderr.contains("cldpd: stdout was closed"), "{stderr}");
    assert!(stderr.contains("cldpd: stopping "), "{stderr}");
    no_containers_left(&pod);
}

/// A Claude Code stand-in mid-run: two assistant turns in stream-json,
/// then it keeps working (no result yet, so no cost yet).
const AGENT_MID_RUN: &str = "#!/bin/sh\necho '{\"type\":\"assistant\",\"message\":{\"id\":\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"step one\"}]}}'\necho '{\"type\":\"assistant\",\"message\":{\"id\":\"msg_1\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"Bash\",\"input\":{\"command\":\"ls\"}}]}}'\necho '{\"type\":\"assistant\",\"message\":{\"id\":\"msg_2\",\"content\":[{\"type\":\"text\",\"text\":\"step two\"}]}}'\necho ready\nwhile :; do sleep 0.1; done\n";

#[test]
fn ps_shows_an_agents_turns_so_far() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(AGENT_MID_RUN);
    let state = state();
    let (live, id) = start_live(&pod, state.path(), &["--grace", "0"]);

    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.arg("ps");
    let out = run(ps, LIMIT);
    out.expect_code(0);
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["SESSION", "POD", "ISSUE", "AGE", "TURNS", "COST", "STATE"],
        "{}",
        out.stdout
    );
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", out.stdout))
        .split_whitespace()
        .collect();
    // Two assistant messages (the first in two lines); no result, so the
    // cost is not known yet.
    assert_eq!(&row[4..6], ["2", "…"], "{row:?}");

    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "--json"]);
    let out = run(ps, LIMIT);
    out.expect_code(0);
    let rows = ndjson(&out);
    let mine = rows.iter().find(|r| r["session"] == id.as_str()).unwrap();
    assert_eq!(mine["turns"], 2, "{mine}");
    assert!(mine["cost_usd"].is_null(), "{mine}");
    live.signal("INT");
    live.finish(Duration::from_secs(30));
    no_containers_left(&pod);
}

#[test]
fn a_base_image_that_cannot_be_pulled_is_named_and_doctor_warns_of_it() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(SLOW_LINES);
    // This machine's engine cannot pull (elsewhere the registry has no
    // such image): either way the image is named and the Dockerfile is
    // not blamed.
    let missing = format!(
        "cldpd-test-not-present-{}:1.0",
        support::docker::unique_name()
    );
    std::fs::write(
        pod.dockerfile(),
        format!("FROM {missing} AS base\nFROM base\nCOPY claude /bin/claude\n"),
    )
    .unwrap();
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--prompt", "x"]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("its base image `{missing}` cannot be pulled: ")),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("fix the pod's Dockerfile"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the engine cannot reach its registry")
            || out.stderr.contains("the registry has no such image"),
        "{}",
        out.stderr
    );

    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "--prompt", "x", "--json"]);
    let out = run(cmd, LIMIT);
    let events = ndjson(&out);
    assert_eq!(events.last().unwrap()["code"], "base_image_unavailable");

    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.arg("doctor");
    let out = run(cmd, Duration::from_secs(180));
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!(
            "warn  pod {}: base image {missing} is not present: building the pod pulls it",
            pod.name()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("docker pull {missing}")),
        "{}",
        out.stdout
    );
    no_containers_left(&pod);
}

/// A pod whose agent is [`STREAM_JSON_AGENT`], long-lived; `note` runs
/// after each turn, `extra` is more of its pod.json.
fn stream_json_pod(note: &str, extra: &str) -> TestPod {
    TestPod::builder()
        .stub(&STREAM_JSON_AGENT.replace("NOTE", note))
        .pod_json(&format!(
            r#"{{"agentInput": "stream-json", "stopGraceSecs": 5{extra}}}"#
        ))
        .create()
}

/// The `agent_prompt` texts and `agent_result` results of a session log,
/// in order, and how many containers it started.
fn turns_in_log(state: &std::path::Path, id: &str) -> (Vec<String>, Vec<String>, usize) {
    let log = std::fs::read_to_string(state.join("sessions").join(format!("{id}.ndjson")))
        .expect("the session log");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str, field: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e[field].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let started = events
        .iter()
        .filter(|e| e["type"] == "container_started")
        .count();
    (
        of("agent_prompt", "text"),
        of("agent_result", "result"),
        started,
    )
}

#[test]
fn start_attached_sends_each_stdin_line_to_the_live_agent_and_ends_at_eof() {
    use std::io::Write;
    if !require_docker() {
        return;
    }
    let pod = stream_json_pod("", "");
    let state = state();

    // Typed while the agent waits: it answers each, in order, in the one
    // container, and waits again (an hour by default with -i).
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["start", pod.name(), "-i", "--prompt", "first prompt"])
        .stdin(std::process::Stdio::piped());
    let mut live = Live::spawn(cmd);
    let mut stdin = live.take_stdin();
    let id = live.session_id(STARTUP);
    live.wait_stderr(
        "cldpd: idle after 1 turn; waiting 1h for a follow-up (type it here, one line; Ctrl-D ends)\n",
        STARTUP,
    );
    stdin
        .write_all(b"second prompt\n\n   \nthird prompt\n")
        .unwrap();
    stdin.flush().unwrap();
    live.wait_stderr("cldpd: idle after 3 turns; waiting 1h", LIMIT);
    assert!(live.running(), "the agent waits for more");
    // Ctrl-D: the run ends with the last result's outcome.
    drop(stdin);
    let out = live.finish(LIMIT);
    out.expect_code(0);
    assert_eq!(
        out.stdout, "answer 1: first prompt\nanswer 2: second prompt\nanswer 3: third prompt\n",
        "{}",
        out.stderr
    );
    let err = &out.stderr;
    let first = pos(err, "cldpd: prompt: first prompt\n");
    let second = pos(err, "cldpd: prompt: second prompt\n");
    let third = pos(err, "cldpd: prompt: third prompt\n");
    let end = pos(
        err,
        "cldpd: end of input: the conversation ends once the agent has answered\n",
    );
    let exited = pos(err, "cldpd: exited 0\n");
    assert!(
        first < second && second < third && third < end && end < exited,
        "{err}"
    );
    assert!(!err.contains("agent_turn"), "turns show nothing:\n{err}");
    let (prompts, results, containers) = turns_in_log(state.path(), &id);
    assert_eq!(prompts, ["first prompt", "second prompt", "third prompt"]);
    assert_eq!(
        results,
        [
            "answer 1: first prompt",
            "answer 2: second prompt",
            "answer 3: third prompt"
        ]
    );
    assert_eq!(containers, 1, "one agent, one container");
    no_containers_left(&pod);

    // Piped in at once, with its end, while the image is still being
    // built (a fresh state directory builds again): the follow-ups wait
    // for the agent instead of being refused, and the run ends once all
    // are answered.
    let fresh = self::state();
    let mut cmd = cldpd(pod.pods_dir(), fresh.path());
    cmd.args(["start", pod.name(), "--attach", "--prompt", "one"])
        .stdin(std::process::Stdio::piped());
    let mut live = Live::spawn(cmd);
    live.take_stdin().write_all(b"two\nthree\n").unwrap();
    let out = live.finish(STARTUP);
    out.expect_code(0);
    assert_eq!(
        out.stdout, "answer 1: one\nanswer 2: two\nanswer 3: three\n",
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("cannot send"), "{}", out.stderr);
    no_containers_left(&pod);
}

/// A clean git repository with one commit on `main`.
fn source_repo() -> tempfile::TempDir {
    let repo = tempfile::Builder::new()
        .prefix("cldpd-cli-repo-")
        .tempdir()
        .unwrap();
    let git = |args: &[&str]| support::git::git(repo.path(), args);
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README"), "hello\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "init"]);
    repo
}

#[test]
fn work_on_a_repository_comes_back_as_a_branch_in_batch_ps_diff_and_rm_removes_it() {
    if !require_docker() {
        return;
    }
    let repo = source_repo();
    let pod = stream_json_pod(
        r#"echo "$text" >> /workspace/notes.txt"#,
        &format!(
            r#", "repo": {{"path": "{}", "ref": "main"}}"#,
            repo.path().display()
        ),
    );
    let state = state();
    let jobs = state.path().join("jobs.ndjson");
    std::fs::write(
        &jobs,
        format!(
            "{{\"pod\": \"{}\", \"prompt\": \"write notes\", \"name\": \"notes\"}}\n",
            pod.name()
        ),
    )
    .unwrap();
    let report = state.path().join("report.json");
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.arg("batch").arg(&jobs).arg("--report").arg(&report);
    let out = run(cmd, STARTUP);
    out.expect_code(0);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let job = &report["jobs"][0];
    let id = job["session"].as_str().unwrap().to_string();
    let branch = format!("cldpd/{id}");
    assert_eq!(job["branch"], branch.as_str(), "{report}");
    assert_eq!(job["commits"], 1, "{report}");
    assert!(
        out.stdout.contains(&format!("→ {branch} (1 commit)")),
        "{}",
        out.stdout
    );
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["branch", "--list", &branch])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&branch),
        "the source repository has the branch"
    );

    // diff: the patch of what the agent wrote.
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["diff", &id]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(
        out.stdout.contains("+++ b/notes.txt") && out.stdout.contains("\n+write notes\n"),
        "{}",
        out.stdout
    );

    // ps -a: resumable, with its branch; ps alone: not listed.
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["ps", "-a"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let resumable = &out.stdout[pos(&out.stdout, "\nRESUMABLE ")..];
    let row = resumable
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} is resumable:\n{}", out.stdout));
    assert!(
        row.contains("exited 0") && row.ends_with(&format!("{branch} (1 commit)")),
        "{row}"
    );
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["ps", "-a", "--json"]);
    let rows = ndjson(&run(cmd, LIMIT));
    let stored = rows
        .iter()
        .find(|r| r["state"] == "resumable" && r["session"] == id.as_str())
        .expect("a resumable row");
    assert_eq!(stored["branch"]["commits"], 1);
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.arg("ps");
    let out = run(cmd, LIMIT);
    assert!(!out.stdout.contains("RESUMABLE"), "{}", out.stdout);

    // rm: storage and logs gone, the branch stays.
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["rm", &id]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{id}\n"));
    assert!(!state.path().join("workspaces").join(&id).exists());
    assert!(!state
        .path()
        .join("sessions")
        .join(format!("{id}.ndjson"))
        .exists());
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["rm", &id]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr.contains(&format!("no stored session `{id}`")),
        "{}",
        out.stderr
    );
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["branch", "--list", &branch])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&branch));
    no_containers_left(&pod);
}

#[test]
fn rm_refuses_a_live_session_and_the_final_line_names_the_branch() {
    if !require_docker() {
        return;
    }
    let repo = source_repo();
    let pod = stream_json_pod(
        r#"echo "$text" >> /workspace/notes.txt"#,
        &format!(
            r#", "repo": {{"path": "{}", "ref": "main"}}"#,
            repo.path().display()
        ),
    );
    let state = state();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args([
        "start",
        pod.name(),
        "--prompt",
        "write",
        "--keep-alive",
        "5m",
    ]);
    let live = Live::spawn(cmd);
    let id = live.session_id(STARTUP);
    live.wait_stderr(
        &format!(
            "cldpd: idle after 1 turn; waiting 5m for a follow-up (cldpd resume {id} --prompt …)\n"
        ),
        STARTUP,
    );
    // `ps` shows it idle (from its session log, which the state thread
    // writes a moment after the line above: asked until it says so).
    let idle_row = (0..100).find_map(|_| {
        let mut cmd = cldpd(pod.pods_dir(), state.path());
        cmd.args(["ps", "--json"]);
        let out = run(cmd, LIMIT);
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|row| row["session"] == id.as_str() && row["idle"] == true)
    });
    let idle_row = idle_row.expect("ps --json never said idle");
    assert_eq!(idle_row["state"], "running", "Docker's state stays");
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.arg("ps");
    let out = run(cmd, LIMIT);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(id.as_str()))
        .unwrap_or_default();
    assert!(line.ends_with("idle"), "{}", out.stdout);
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["rm", &id]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr.contains(&format!(
            "cldpd: {id} is running: its storage is in use\nhint: stop it first (`cldpd stop {id}`), then `cldpd rm {id}`"
        )),
        "{}",
        out.stderr
    );
    assert!(state.path().join("workspaces").join(&id).exists());
    // A follow-up from another process, then the stop.
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["resume", &id, "--prompt", "more"]);
    run(cmd, LIMIT).expect_code(0);
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["stop", &id]);
    run(cmd, LIMIT).expect_code(0);
    let out = live.finish(LIMIT);
    assert_eq!(
        out.stdout, "answer 1: write\nanswer 2: more\n",
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .ends_with(&format!("cldpd: work is on branch cldpd/{id} (1 commit)\n")),
        "the last line names the branch:\n{}",
        out.stderr
    );
    no_containers_left(&pod);
}
