//! Issue 9, item 19: the actor threads never touch the disk. Every read
//! and write of the state directory (session logs, build records, the
//! build lock, the state key, stop markers, retention) and every walk of a
//! pod directory for its build fingerprint happens on the `cldpd-state`
//! thread or on blocking-pool threads, so that a slow or hung disk never
//! stalls a dispatcher, a session or a subscriber.
//!
//! Shown at the level of the operating system, not of the code's own
//! bookkeeping: the test runs a scenario (two dispatchers on one state
//! directory, a pod built once under its build lock and recorded, runs
//! that print, a subscriber that joins late and is fed from the log, a run
//! stopped, a list, shutdown) in a child process of this test binary under
//! `strace -f`, which records every file-system system call of every
//! thread. The child names its threads' ids (`/proc/self/task`); no thread
//! of the actor system (the dispatchers' system thread and the `actix-rt`
//! session threads) may appear in a call on a path under the state
//! directory, and the state thread must appear (the trace is not empty by
//! accident). Two things are outside this check, on purpose:
//!
//! - `Dispatcher::new` resolves the state directory's path once, on the
//!   caller's thread before the actor starts (the child marks that call);
//! - discovering a pod (its directory, `pod.json`, `template.md`) is done
//!   by the dispatcher itself, cached by file stamps (one to three `lstat`s
//!   a start once cached): the pods directory is not state, and the
//!   dispatcher needs the pod to admit the run.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cldpd::runtime::{BuildScript, FaultRuntime, RunScript};
use cldpd::{Dispatcher, EventKind, OutputStream, Settings, StartRequest};
use futures_util::StreamExt;

const HELPER_ENV: &str = "CLDPD_TEST_ACTOR_IO_HELPER";
/// The name of the thread that runs the helper's actor system.
const SYSTEM_THREAD: &str = "actors-system";

/// Paths the child looks up around its calls to `Dispatcher::new`.
const MARK_BEGIN: &str = "cldpd-test-mark-dispatcher-new-begin";
const MARK_END: &str = "cldpd-test-mark-dispatcher-new-end";

/// File-system system calls (and `write`/`read` on files, whose paths
/// `strace -y` shows).
const SYSCALLS: &str = "trace=%file,%desc";

#[test]
fn no_actor_thread_makes_a_file_system_call() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return helper();
    }
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "strace is not installed (.ci/run installs it)"
        );
        eprintln!("SKIPPED: strace is not installed");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let trace = root.path().join("trace.txt");
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg("strace")
        .args(["-f", "-qq", "-y", "-e", SYSCALLS, "-e", "signal=none", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "no_actor_thread_makes_a_file_system_call",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HELPER_ENV, &work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the helper failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `thread <tid> <name>` lines from the helper.
    let mut names: HashMap<u32, String> = HashMap::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(3, ' ');
        if let (Some("thread"), Some(tid), Some(name)) = (parts.next(), parts.next(), parts.next())
        {
            names.insert(tid.parse().unwrap(), name.to_string());
        }
    }
    let actor = |name: &str| name == SYSTEM_THREAD || name.starts_with("actix-rt");
    assert!(
        names.values().any(|n| n.starts_with("actix-rt")),
        "the helper named no session thread: {names:?}"
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let dir = work.join("state");
    let dir = dir.to_str().unwrap();
    let mut offending = Vec::new();
    let mut touching: BTreeSet<String> = BTreeSet::new();
    let mut in_new = false;
    for line in text.lines() {
        let Some(tid) = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let name = names.get(&tid).map_or("(ended)", String::as_str);
        if name == SYSTEM_THREAD && line.contains(MARK_BEGIN) {
            in_new = true;
        } else if name == SYSTEM_THREAD && line.contains(MARK_END) {
            in_new = false;
        }
        if !line.contains(dir) || (in_new && name == SYSTEM_THREAD) {
            continue;
        }
        touching.insert(name.to_string());
        if actor(name) {
            offending.push(format!("{name} ({tid}): {}", shorten(line)));
        }
    }
    assert!(
        touching.contains("cldpd-state"),
        "the state thread made no file-system call under {dir}: {touching:?}"
    );
    assert!(
        offending.is_empty(),
        "actor threads made {} file-system calls, the first:\n{}",
        offending.len(),
        offending[..offending.len().min(20)].join("\n")
    );
}

fn shorten(line: &str) -> &str {
    &line[..line.len().min(300)]
}

/// The child: runs the scenario on a system thread of its own, then prints
/// the id and name of every thread of the process.
fn helper() {
    let work = std::path::PathBuf::from(std::env::var_os(HELPER_ENV).unwrap());
    let pods = work.join("pods");
    let state = work.join("state");
    std::fs::create_dir_all(pods.join("web")).unwrap();
    std::fs::write(pods.join("web/Dockerfile"), "FROM scratch\nCOPY . .\n").unwrap();
    std::fs::write(pods.join("web/template.md"), "Be brief.\n").unwrap();
    for i in 0..50 {
        std::fs::write(pods.join(format!("web/src-{i}.txt")), format!("{i}\n")).unwrap();
    }
    std::thread::Builder::new()
        .name(SYSTEM_THREAD.into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(scenario(&pods, &state));
            print_threads();
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn scenario(pods: &Path, state: &Path) {
    let rt = FaultRuntime::new();
    rt.script_build(
        "cldpd-web",
        BuildScript::succeed(["Step 1/2 : FROM scratch"]),
    );
    rt.script_pod(
        "web",
        RunScript::new()
            .lines(OutputStream::Stdout, 2000, 80, None)
            .stderr_lines(10)
            .exit(0),
    );
    let settings = Settings::new(pods, state).workers(2);
    let first = new_dispatcher(&settings, &rt);
    let mut runs = Vec::new();
    for i in 0..8 {
        let s = first
            .start(StartRequest::prompt("web", format!("job {i}")))
            .await
            .unwrap();
        runs.push(s);
    }
    print_threads();
    for s in &runs {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(60), s.wait())
                .await
                .unwrap()
                .unwrap(),
            0
        );
    }
    // A run stopped while it waits for more output.
    rt.script_pod(
        "web",
        RunScript::new()
            .stdout_lines(3)
            .sleep(Duration::from_secs(600))
            .exit(0),
    );
    let held = first
        .start(StartRequest::prompt("web", "hold"))
        .await
        .unwrap();
    let mut events = held.events();
    while let Some(ev) = events.next().await {
        if matches!(&ev.kind, EventKind::Output { line, .. } if line == "out 3") {
            break;
        }
    }
    print_threads();
    assert_eq!(first.runs().await.unwrap().len(), 1);
    assert!(held.status().await.is_some());
    held.stop(Some(Duration::from_millis(200))).await.unwrap();
    first.shutdown(None).await.unwrap();
    // A second dispatcher on the same state directory: finds the build
    // record, runs, and reads a finished run's log back.
    let second = new_dispatcher(&settings, &rt);
    rt.script_pod("web", RunScript::new().stdout_lines(5).exit(0));
    let s = second
        .start(StartRequest::prompt("web", "again"))
        .await
        .unwrap();
    assert_eq!(s.wait().await.unwrap(), 0);
    print_threads();
    second.shutdown(None).await.unwrap();
}

/// `Dispatcher::new`, between two marks in the trace.
fn new_dispatcher(settings: &Settings, rt: &FaultRuntime) -> Dispatcher {
    let _ = std::fs::metadata(MARK_BEGIN);
    let d = Dispatcher::new(settings.clone(), rt.clone());
    let _ = std::fs::metadata(MARK_END);
    d
}

/// `thread <tid> <name>` for every live thread of this process.
fn print_threads() {
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        if let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) {
            println!("thread {tid} {}", name.trim_end());
        }
    }
}
