//! `cldpd batch` and `cldpd stop --orphans` with the real binary and Docker:
//! a batch of 20 runs at concurrency 4 builds once, never runs more than 4
//! containers (sampled from `docker ps`) and reports exactly; orphans of a
//! cldpd killed with SIGKILL are reaped, runs of two live cldpd processes
//! are not; a malformed job file names the line and starts nothing.

mod cli_support;
mod support;

use std::time::{Duration, Instant};

use cli_support::{cldpd, exit_within, read_stderr, run, run_with_full_stdout, Live, LIMIT};
use support::docker::{docker, require_docker, TestPod};

/// Succeeds, or exits 3 when its prompt says `fail`; takes a little while so
/// that runs overlap.
const JOB: &str = "#!/bin/sh\np=$(cat)\necho \"job: $p\"\nsleep 0.5\ncase \"$p\" in *fail*) echo 'it failed' >&2; exit 3;; esac\nexit 0\n";

/// Runs until stopped.
/// Held by the tests that leave a run orphaned or reap orphans: `stop
/// --orphans` reaps the orphans of every state directory, so one test's
/// reap would take another's orphan in the second before its batch
/// adopts it.
fn orphans_serialised() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Start a run of `pod` with the prompt "orphan", wait for its agent's
/// "ready" line, and kill its cldpd with SIGKILL: the run goes on, nobody's.
/// Returns its session id and container.
fn orphan_of_a_killed_cldpd(pod: &TestPod, state: &tempfile::TempDir) -> (String, String) {
    let mut start = cldpd(pod.pods_dir(), state.path());
    start.args(["start", pod.name(), "--prompt", "orphan"]);
    let dead = Live::spawn(start);
    let orphan = dead.session_id(Duration::from_secs(60));
    dead.wait_stdout("ready\n", Duration::from_secs(60));
    dead.signal("KILL");
    let _ = dead.finish(Duration::from_secs(20));
    assert_eq!(running_containers(pod), 1, "the orphan runs on");
    let names = container_names(pod);
    assert_eq!(names.len(), 1, "{names:?}");
    (orphan, names[0].clone())
}

/// `session`'s log ends with its container's exit with `code`.
fn assert_log_ends_with_exit(pod: &TestPod, state: &tempfile::TempDir, session: &str, code: i32) {
    let (last, log) = last_logged_event(pod, state, session);
    assert_eq!(last["type"], "container_exited", "{log}");
    assert_eq!(last["code"], code, "{log}");
}

/// Let an [`ENDS_ON_CUE`] run in `container` exit (with 3).
fn cue_the_exit(container: &str) {
    let cue = docker(["exec", container, "/bin/sh", "-c", ": > /go"]);
    assert!(
        cue.status.success(),
        "docker exec: {}",
        String::from_utf8_lossy(&cue.stderr)
    );
}

/// The last event of `session`'s log (`cldpd logs --json`, which must exit
/// 0), and the whole output.
fn last_logged_event(
    pod: &TestPod,
    state: &tempfile::TempDir,
    session: &str,
) -> (serde_json::Value, String) {
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", "--json", session]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    let last = out.stdout.lines().last().expect("events");
    (serde_json::from_str(last).unwrap(), out.stdout)
}

const FOREVER: &str = "#!/bin/sh\ntrap 'exit 0' TERM\necho ready\nwhile :; do sleep 0.1; done\n";

fn state() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cldpd-cli-batch-")
        .tempdir()
        .unwrap()
}

/// A job file of `pod`'s jobs, one per prompt, in order.
fn job_file(state: &tempfile::TempDir, pod: &TestPod, prompts: &[&str]) -> std::path::PathBuf {
    let file = state.path().join("jobs.ndjson");
    let jobs: String = prompts
        .iter()
        .map(|p| format!("{{\"pod\": \"{}\", \"prompt\": \"{p}\"}}\n", pod.name()))
        .collect();
    std::fs::write(&file, jobs).unwrap();
    file
}

/// `cldpd batch FLAGS --report <state>/report.json FILE`, and the
/// report's path.
fn batch(
    pod: &TestPod,
    state: &tempfile::TempDir,
    flags: &[&str],
    file: &std::path::Path,
) -> (std::process::Command, std::path::PathBuf) {
    let report = state.path().join("report.json");
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.arg("batch")
        .args(flags)
        .arg("--report")
        .arg(&report)
        .arg(file);
    (cmd, report)
}

/// The report written at `path`.
fn read_report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The `state` of each job in the report at `path`.
fn report_states(path: &std::path::Path) -> Vec<String> {
    read_report(path)["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap().to_string())
        .collect()
}

fn container_names(pod: &TestPod) -> Vec<String> {
    let out = docker([
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label={}", pod.label_filter()),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn running_containers(pod: &TestPod) -> usize {
    let out = docker([
        "ps",
        "-q",
        "--filter",
        &format!("label={}", pod.label_filter()),
    ]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_batch_of_twenty_at_concurrency_four_builds_once_and_never_runs_more_than_four() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(JOB);
    let state = state();
    let jobs: String = (0..20)
        .map(|i| {
            let prompt = if i % 5 == 4 {
                format!("job {i} fail")
            } else {
                format!("job {i}")
            };
            format!(
                "{{\"pod\": \"{}\", \"prompt\": \"{prompt}\", \"name\": \"j{i}\"}}\n",
                pod.name()
            )
        })
        .collect();
    let file = state.path().join("jobs.ndjson");
    std::fs::write(&file, jobs).unwrap();
    let (cmd, report_path) = batch(&pod, &state, &["--concurrency", "4", "--json"], &file);
    let mut live = Live::spawn(cmd);
    // Sample the engine while the batch runs (a measurement, bounded by the
    // batch's end; nothing waits on it).
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while live.running() && Instant::now() < deadline {
        peak = peak.max(running_containers(&pod));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = live.finish(Duration::from_secs(60));
    out.expect_code(1); // four jobs fail
    assert!(peak <= 4, "{peak} containers ran at once");
    assert!(peak >= 2, "the runs never overlapped ({peak})");

    // --json: every event of every job, each with its session.
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let builds: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "build_complete")
        .collect();
    assert_eq!(builds.len(), 20);
    assert_eq!(
        builds.iter().filter(|e| e["cached"] == false).count(),
        1,
        "one image build"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "container_exited")
            .count(),
        20
    );

    let report = read_report(&report_path);
    assert_eq!(report["total"], 20);
    assert_eq!(report["succeeded"], 16);
    assert_eq!(report["failed"], 4);
    for (i, job) in report["jobs"].as_array().unwrap().iter().enumerate() {
        assert_eq!(job["name"], format!("j{i}"));
        if i % 5 == 4 {
            assert_eq!(job["state"], "failed");
            assert_eq!(job["exit_code"], 3);
            assert_eq!(job["tail"].as_array().unwrap().last().unwrap(), "it failed");
        } else {
            assert_eq!(job["state"], "succeeded");
            assert_eq!(job["exit_code"], 0);
        }
    }
    assert_eq!(running_containers(&pod), 0);
    assert!(pod.containers().is_empty());
}

#[test]
fn human_batch_output_is_one_line_per_finished_job() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(JOB);
    let state = state();
    let file = state.path().join("jobs.json");
    std::fs::write(
        &file,
        format!(
            "[{{\"pod\": \"{0}\", \"prompt\": \"a\"}},\n {{\"pod\": \"{0}\", \"prompt\": \"b\"}}]",
            pod.name()
        ),
    )
    .unwrap();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["batch"]).arg(&file);
    let out = run(cmd, Duration::from_secs(180));
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{}", out.stdout);
    assert!(
        out.stderr.contains("2 succeeded, 0 failed, 0 stopped"),
        "{}",
        out.stderr
    );
    assert!(pod.containers().is_empty());
}

#[test]
fn a_malformed_job_names_its_line_and_nothing_starts() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(JOB);
    let state = state();
    let file = state.path().join("jobs.ndjson");
    std::fs::write(
        &file,
        format!("{{\"pod\": \"{0}\", \"prompt\": \"a\"}}\n{{\"pod\": \"{0}\", \"prompt\": \"b\", \"timeoutSec\": 5}}\n", pod.name()),
    )
    .unwrap();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["batch"]).arg(&file);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(out.stderr.contains("jobs.ndjson:2:"), "{}", out.stderr);
    assert!(out.stderr.contains("timeoutSec"), "{}", out.stderr);
    assert!(pod.containers().is_empty());
    // A job naming an unknown pod: refused with its line, nothing built.
    std::fs::write(
        &file,
        format!(
            "{{\"pod\": \"{}\", \"prompt\": \"a\"}}\n{{\"pod\": \"nope\", \"prompt\": \"b\"}}\n",
            pod.name()
        ),
    )
    .unwrap();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["batch"]).arg(&file);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr.contains("job 2 (line 2): pod `nope` not found"),
        "{}",
        out.stderr
    );
    assert!(pod.containers().is_empty());
    let images = docker(["images", "-q", &pod.image()]);
    assert!(images.stdout.is_empty(), "no image was built");
}

#[test]
fn stop_orphans_reaps_the_runs_of_a_killed_cldpd_and_never_those_of_live_ones() {
    if !require_docker() {
        return;
    }
    let _orphans = orphans_serialised();
    let pod = TestPod::with_stub(FOREVER);
    let state = state();
    let start = |n: usize| {
        let mut cmd = cldpd(pod.pods_dir(), state.path());
        cmd.args(["start", pod.name(), "--prompt", &format!("run {n}")]);
        let live = Live::spawn(cmd);
        let id = live.session_id(Duration::from_secs(60));
        live.wait_stdout("ready\n", Duration::from_secs(60));
        (live, id)
    };
    let (a, a_id) = start(1);
    let (b, b_id) = start(2);
    let (c, c_id) = start(3);
    // SIGKILL: cldpd cannot stop its run; the container is left running.
    c.signal("KILL");
    let _ = c.finish(Duration::from_secs(20));

    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "--json"]);
    let out = run(ps, LIMIT);
    out.expect_code(0);
    let rows: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let orphan = |id: &str| {
        rows.iter()
            .find(|r| r["session"] == id)
            .unwrap_or_else(|| panic!("{id} not in ps: {}", out.stdout))["orphan"]
            .clone()
    };
    assert_eq!(orphan(&c_id), true);
    assert_eq!(orphan(&a_id), false);
    assert_eq!(orphan(&b_id), false);

    let mut reap = cldpd(pod.pods_dir(), state.path());
    reap.args(["stop", "--orphans", "--grace", "5"]);
    let out = run(reap, LIMIT);
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{c_id}\n"));
    let left = container_names(&pod);
    assert!(!left.contains(&c_id), "the orphan is gone: {left:?}");
    assert!(
        left.contains(&a_id) && left.contains(&b_id),
        "live owners' runs stay: {left:?}"
    );
    // The reaped run's log ends with a final event, as any run's does.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", "--json", &c_id]);
    let out = run(logs, LIMIT);
    out.expect_code(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "stopped", "{last}");
    assert_eq!(
        last["seq"].as_u64().unwrap(),
        events[events.len() - 2]["seq"].as_u64().unwrap() + 1
    );
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", &c_id]);
    let out = run(logs, LIMIT);
    assert!(
        out.stderr.contains("stopped by `cldpd stop --orphans`"),
        "{}",
        out.stderr
    );

    for live in [a, b] {
        live.signal("TERM");
        live.finish(Duration::from_secs(30)).expect_code(0);
    }
    assert!(pod.containers().is_empty());
}

/// Issue 9, item 4, through the binary: the run of a cldpd killed with
/// SIGKILL is adopted by the next batch on its state directory, which says
/// so when it starts (on stderr, and with --json as its first line),
/// counts it against --concurrency (the one job waits
/// queued behind it), stops it on Ctrl-C with its own jobs, and lists it
/// in the report.
#[test]
fn a_batch_names_the_run_it_adopted_holds_a_slot_for_it_and_stops_it_on_ctrl_c() {
    if !require_docker() {
        return;
    }
    let _orphans = orphans_serialised();
    let pod = TestPod::with_stub(FOREVER);
    let state = state();
    let (orphan, _) = orphan_of_a_killed_cldpd(&pod, &state);

    let file = job_file(&state, &pod, &["job"]);
    let (cmd, report_path) = batch(
        &pod,
        &state,
        &["--concurrency", "1", "--grace", "5", "--json"],
        &file,
    );
    let live = Live::spawn(cmd);
    live.wait_stderr(
        &format!("adopted 1 run of a dead cldpd with this state directory ({orphan})"),
        Duration::from_secs(60),
    );
    // Machine readers see it too, before any event of the batch's jobs.
    live.wait_stdout("\"batch_adopted\"", Duration::from_secs(10));
    let first: serde_json::Value =
        serde_json::from_str(live.stdout().lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "batch_adopted", "{first}");
    assert_eq!(first["session"], orphan.as_str(), "{first}");
    assert!(
        first["container"].as_str().is_some_and(|c| !c.is_empty()),
        "{first}"
    );
    // The job is queued behind the adopted run: still one container.
    let queued = running_containers(&pod);
    live.signal("INT");
    let out = live.finish(Duration::from_secs(60));
    out.expect_code(1);
    assert_eq!(queued, 1, "the job waited for the adopted run's slot");
    let report = read_report(&report_path);
    assert_eq!(report["adopted"][0]["session"], orphan.as_str(), "{report}");
    assert_eq!(report["adopted"][0]["state"], "stopped", "{report}");
    assert_eq!(report["jobs"][0]["state"], "stopped", "{report}");
    let left = pod.containers();
    assert!(left.is_empty(), "nothing left: {left:?}");
    // The adopted run's log ends like any other run's, saying why.
    let mut logs = cldpd(pod.pods_dir(), state.path());
    logs.args(["logs", &orphan]);
    let out = run(logs, LIMIT);
    assert!(
        out.stderr
            .contains("stopped by the dispatcher that adopted it"),
        "{}",
        out.stderr
    );
}

/// A run of a killed cldpd that ended before a batch started on its state
/// directory: the batch does not adopt it (it holds no slot), but cleans
/// up after it as the dead process would have: container removed, log
/// ended with its exit code.
#[test]
fn a_batch_cleans_up_after_an_orphan_that_ended_before_it_started() {
    if !require_docker() {
        return;
    }
    let _orphans = orphans_serialised();
    let pod = TestPod::with_stub(ENDS_ON_CUE);
    let state = state();
    let (orphan, container) = orphan_of_a_killed_cldpd(&pod, &state);
    cue_the_exit(&container);
    let _ = docker(["wait", &container]);

    let file = job_file(&state, &pod, &["job"]);
    let (cmd, report_path) = batch(&pod, &state, &["--concurrency", "1"], &file);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let report = read_report(&report_path);
    assert_eq!(report["jobs"][0]["state"], "succeeded", "{report}");
    assert_eq!(report["adopted"], serde_json::json!([]), "{report}");
    let left = container_names(&pod);
    assert!(left.is_empty(), "nothing left: {left:?}");
    if auto_removed() {
        return; // gone with its code as it exited (see auto_removed)
    }
    assert_log_ends_with_exit(&pod, &state, &orphan, 3);
}

/// A library dispatcher with `adopt_orphans` that shuts down cleans up
/// after its adopted runs as `stop_adopted` (and a batch) does: stopped,
/// removed and their logs ended. Its shutdown once only stopped them, which
/// left an exited container (the Engine API backend does not auto-remove)
/// and a log without a final event.
#[test]
fn a_dispatcher_shutting_down_removes_its_adopted_runs_and_ends_their_logs() {
    if !require_docker() {
        return;
    }
    let _orphans = orphans_serialised();
    let pod = TestPod::with_stub(FOREVER);
    let state = state();
    let (orphan, _) = orphan_of_a_killed_cldpd(&pod, &state);

    actix::System::new().block_on(async {
        let settings = cldpd::Settings::new(pod.pods_dir(), state.path()).adopt_orphans(true);
        let d = cldpd::Dispatcher::docker(settings);
        let adopted = d.adopted().await.unwrap();
        assert_eq!(adopted.len(), 1, "{adopted:?}");
        assert_eq!(adopted[0].session, orphan);
        let shutdown = d.shutdown(Some(Duration::from_secs(5)));
        tokio::time::timeout(LIMIT, shutdown)
            .await
            .expect("shutdown within the limit")
            .unwrap();
    });
    let left = container_names(&pod);
    assert!(left.is_empty(), "nothing left: {left:?}");
    let (last, log) = last_logged_event(&pod, &state, &orphan);
    assert_eq!(last["type"], "error", "{log}");
    assert_eq!(last["code"], "stopped", "{log}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("the dispatcher that adopted it")),
        "{last}"
    );
}

/// A stand-in whose run for the prompt "orphan" says ready, waits until
/// `/go` exists in its container and exits 3; any other prompt's run
/// prints a line and exits 0.
const ENDS_ON_CUE: &str = "#!/bin/sh\np=$(cat)\ncase \"$p\" in *orphan*) echo ready; while [ ! -e /go ]; do sleep 0.1; done; echo bye; exit 3;; esac\necho job done\n";

/// Issue 9, item 4 (what the earlier fix left): a run adopted by a batch
/// that ends on its own while the batch runs is not left behind as an
/// exited container (the Engine API backend creates containers without
/// auto-removal, and the dead process that started it cannot remove it),
/// its log ends with its real exit code (its writer died, so `logs` would
/// otherwise end without a final event; the lines it printed after its
/// cldpd died were read by nobody and are not in it), its slot goes to the
/// queued job, and the report says it ended.
#[test]
fn an_adopted_run_that_ends_on_its_own_is_removed_and_its_log_ends_with_its_exit_code() {
    if !require_docker() {
        return;
    }
    let _orphans = orphans_serialised();
    let pod = TestPod::with_stub(ENDS_ON_CUE);
    let state = state();
    let (orphan, container) = orphan_of_a_killed_cldpd(&pod, &state);

    let file = job_file(&state, &pod, &["job"]);
    let (cmd, report_path) = batch(&pod, &state, &["--concurrency", "1", "--json"], &file);
    let live = Live::spawn(cmd);
    live.wait_stdout("\"batch_adopted\"", Duration::from_secs(60));
    // Let the adopted run end on its own.
    cue_the_exit(&container);
    let out = live.finish(Duration::from_secs(120));
    out.expect_code(0);
    let report = read_report(&report_path);
    assert_eq!(report["adopted"][0]["session"], orphan.as_str(), "{report}");
    assert_eq!(report["adopted"][0]["state"], "ended", "{report}");
    assert_eq!(report["jobs"][0]["state"], "succeeded", "{report}");
    let left = container_names(&pod);
    assert!(left.is_empty(), "nothing left: {left:?}");
    // The log ends with the run's own exit.
    let (last, log) = last_logged_event(&pod, &state, &orphan);
    if auto_removed() {
        // Docker removed the container as it exited: its code is lost, and
        // the log says so rather than ending without a final event.
        assert_eq!(last["type"], "error", "{log}");
        assert_eq!(last["code"], "docker_lost", "{log}");
    } else {
        assert_eq!(last["type"], "container_exited", "{log}");
        assert_eq!(last["code"], 3, "{log}");
    }
}

/// True when the backend under test runs containers that Docker removes as
/// they exit (the CLI backend's `docker run --rm`): the exit code of a run
/// whose cldpd died is then gone with its container. The Engine API
/// backend removes its containers itself, after reading their code.
fn auto_removed() -> bool {
    support::docker::backend() == cldpd::runtime::Backend::Cli
}

/// An orphan that ended on its own after its cldpd was killed: nobody was
/// left to remove its container (the Engine API backend does not
/// auto-remove), so `ps` shows it with its exit code, and `stop --orphans`
/// removes it and ends its log with that exit rather than with a stop it
/// never had. (On the CLI backend Docker removes it as it exits.)
#[test]
fn an_orphan_that_ended_on_its_own_is_shown_and_reaped_with_its_exit_code() {
    if !require_docker() {
        return;
    }
    let _orphans = orphans_serialised();
    let pod = TestPod::with_stub(ENDS_ON_CUE);
    let state = state();
    let (orphan, container) = orphan_of_a_killed_cldpd(&pod, &state);
    cue_the_exit(&container);
    let waited = docker(["wait", &container]);
    if auto_removed() {
        // Gone with its code as it exited: nothing to show or reap, and
        // its log has no final event (`logs` says so with --follow).
        let _ = waited;
        assert!(container_names(&pod).is_empty());
        let mut ps = cldpd(pod.pods_dir(), state.path());
        ps.args(["ps", "--json"]);
        let out = run(ps, LIMIT);
        out.expect_code(0);
        assert!(!out.stdout.contains(orphan.as_str()), "{}", out.stdout);
        return;
    }
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "3");

    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.args(["ps", "--json"]);
    let out = run(ps, LIMIT);
    out.expect_code(0);
    let row: serde_json::Value = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["session"] == orphan.as_str())
        .unwrap_or_else(|| panic!("{orphan} not in ps: {}", out.stdout));
    assert_eq!(row["orphan"], true, "{row}");
    assert_eq!(row["state"], "exited", "{row}");
    assert_eq!(row["exit_code"], 3, "{row}");
    let mut ps = cldpd(pod.pods_dir(), state.path());
    ps.arg("ps");
    let out = run(ps, LIMIT);
    assert!(out.stdout.contains("exited 3 (orphan)"), "{}", out.stdout);

    let mut reap = cldpd(pod.pods_dir(), state.path());
    reap.args(["stop", "--orphans", "--json"]);
    let out = run(reap, LIMIT);
    out.expect_code(0);
    let reports: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 1, "{}", out.stdout);
    assert_eq!(reports[0]["session"], orphan.as_str(), "{}", out.stdout);
    assert_eq!(reports[0]["code"], 3, "{}", out.stdout);
    let left = container_names(&pod);
    assert!(left.is_empty(), "nothing left: {left:?}");
    assert_log_ends_with_exit(&pod, &state, &orphan, 3);
}

#[test]
fn ctrl_c_stops_every_job_and_still_writes_the_report() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(FOREVER);
    let state = state();
    let file = job_file(&state, &pod, &["run 0", "run 1", "run 2"]);
    let (cmd, report_path) = batch(
        &pod,
        &state,
        &["--concurrency", "2", "--grace", "5", "--json"],
        &file,
    );
    let live = Live::spawn(cmd);
    // Two jobs run (the agents said so), the third waits in the queue.
    live.wait_for("two running agents", Duration::from_secs(120), |l| {
        l.stdout().matches("\"line\":\"ready\"").count() >= 2
    });
    live.signal("INT");
    let out = live.finish(Duration::from_secs(60));
    out.expect_code(1);
    assert!(
        out.stderr.contains("cldpd: stopping every job"),
        "{}",
        out.stderr
    );
    assert_eq!(
        report_states(&report_path),
        ["stopped", "stopped", "stopped"]
    );
    let report = read_report(&report_path);
    assert_eq!(
        report["jobs"][2]["error"]["code"], "stopped",
        "the queued job never started"
    );
    assert!(pod.containers().is_empty());
}

/// A Claude Code stand-in: one assistant turn and a result costing $0.60
/// in stream-json; it then takes 3 s to exit (the budget is seen spent
/// while the other jobs still wait for its slot).
const PRICEY_AGENT: &str = "#!/bin/sh\ncat >/dev/null\necho '{\"type\":\"assistant\",\"message\":{\"id\":\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"working\"}]}}'\necho '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":3,\"total_cost_usd\":0.6,\"duration_ms\":5,\"result\":\"done\"}'\nsleep 3\nexit 0\n";

#[test]
fn a_budget_stops_admissions_and_the_report_gives_turns_and_cost() {
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(PRICEY_AGENT);
    let state = state();
    let file = job_file(&state, &pod, &["job 0", "job 1", "job 2"]);
    let (cmd, report) = batch(
        &pod,
        &state,
        &["--concurrency", "1", "--budget-usd", "0.5"],
        &file,
    );
    let out = run(cmd, Duration::from_secs(180));
    out.expect_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    // The queued jobs end (skipped) before the running one finishes.
    assert!(
        lines[2].starts_with("ok ")
            && lines[2].contains("success, 3 turns, $0.6000")
            && lines[2].ends_with("job 0"),
        "{}",
        out.stdout
    );
    assert!(
        lines[..2]
            .iter()
            .all(|l| l.starts_with("skipped ") && l.contains("budget spent")),
        "{}",
        out.stdout
    );
    for needle in [
        "budget reached: $0.6000 spent of $0.50",
        "1 succeeded, 0 failed, 0 stopped, 2 not started (budget spent)",
        "agents: 3 turns, $0.6000 of a $0.50 budget (reached)",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    let json = read_report(&report);
    assert_eq!(json["not_started"], 2);
    assert_eq!(json["cost_usd"], 0.6);
    assert_eq!(json["turns"], 3);
    assert_eq!(json["budget_reached"], true);
    assert_eq!(json["jobs"][0]["result"], "success");
    assert_eq!(json["jobs"][1]["state"], "not_started");
    assert_eq!(json["jobs"][1]["error"]["code"], "budget_spent");

    // --json: the events, then the report as the last line.
    let file = state.path().join("one.ndjson");
    std::fs::write(
        &file,
        format!("{{\"pod\": \"{}\", \"prompt\": \"x\"}}\n", pod.name()),
    )
    .unwrap();
    let mut cmd = cldpd(pod.pods_dir(), state.path());
    cmd.args(["batch", "--json"]).arg(&file);
    let out = run(cmd, Duration::from_secs(180));
    out.expect_code(0);
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "batch_report", "{last}");
    assert_eq!(last["cost_usd"], 0.6);
    assert_eq!(last["jobs"][0]["turns"], 3);
    assert!(pod.containers().is_empty());
}

/// Prints `ready`, then a line every 0.1 s until stopped; a prompt saying
/// `quick` makes it exit 0 after a second instead.
const TICKING: &str = "#!/bin/sh\np=$(cat)\ntrap 'exit 0' TERM\necho ready\ncase \"$p\" in *quick*) sleep 1; exit 0;; esac\nwhile :; do echo tick; sleep 0.1; done\n";

#[test]
fn a_batch_whose_stdout_is_full_stops_every_job_and_exits_1() {
    // Issue 9, item 6, for `cldpd batch`: the first finished job's line
    // cannot be written (`> /dev/full`); the batch says so, stops the jobs
    // still running the normal way, writes the report and exits 1.
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(TICKING);
    let state = state();
    let file = job_file(&state, &pod, &["quick", "run 1", "run 2"]);
    let (cmd, report_path) = batch(&pod, &state, &["--concurrency", "3", "--grace", "5"], &file);
    let stderr = run_with_full_stdout(cmd, Duration::from_secs(120));
    assert!(stderr.contains("cldpd: stopping every job"), "{stderr}");
    assert_eq!(
        report_states(&report_path),
        ["succeeded", "stopped", "stopped"]
    );
    assert_eq!(pod.containers(), Vec::<String>::new());
}

#[test]
fn a_batch_whose_stdout_reader_goes_away_stops_every_job_and_exits_141() {
    // Issue 9, item 6, for `cldpd batch --json | head`: once the reader
    // has seen both running agents and closes the pipe, the next event
    // cannot be written; the batch stops every job (the queued one never
    // starts) and exits 141.
    if !require_docker() {
        return;
    }
    let pod = TestPod::with_stub(TICKING);
    let state = state();
    let file = job_file(&state, &pod, &["run 0", "run 1", "run 2"]);
    let (mut cmd, report_path) = batch(
        &pod,
        &state,
        &["--concurrency", "2", "--grace", "5", "--json"],
        &file,
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = read_stderr(&mut child);
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut ready = 0;
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if line.contains("\"line\":\"ready\"") {
                ready += 1;
                if ready == 2 {
                    break;
                }
            }
        }
        ready
        // The pipe's read end is dropped here.
    });
    let (code, stderr) = exit_within(child, err, Duration::from_secs(120));
    assert_eq!(reader.join().unwrap(), 2, "{stderr}");
    assert_eq!(code, Some(141), "stderr:\n{stderr}");
    assert!(stderr.contains("cldpd: stdout was closed"), "{stderr}");
    assert!(stderr.contains("cldpd: stopping every job"), "{stderr}");
    assert_eq!(
        report_states(&report_path),
        ["stopped", "stopped", "stopped"]
    );
    assert_eq!(pod.containers(), Vec::<String>::new());
}
