//! The state directory under trouble, over the FaultRuntime: retention
//! next to live runs of another dispatcher, builds shared by dispatchers
//! (processes) using one state directory, and a really full state disk (a
//! 64 KiB tmpfs, as root). Every test is bounded by `within(...)`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cldpd::log::{LogEntry, LogReader};
use cldpd::runtime::{BuildScript, FaultRuntime, RunScript};
use cldpd::{Dispatcher, EventKind, StartRequest};
use futures_util::StreamExt;
use support::fault::*;
use support::tmpfs::{is_root, Tmpfs};

fn set_age(path: &Path, age: Duration) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// Issue 9, item 1: a new process's retention deleted the logs of live
/// runs of other processes (their liveness check always said "not live"),
/// and those runs then died with "session log failed".
#[actix::test]
async fn retention_never_deletes_the_log_of_a_run_live_in_another_dispatcher() {
    let dirs = Dirs::new(&[("quiet", None)]);
    let rt = FaultRuntime::new();
    // A quiet run: one line, then nothing for a long time.
    rt.script_pod("quiet", RunScript::new().stdout_lines(1).hang());
    let a = Dispatcher::new(dirs.settings(), rt.clone());
    let s = a.start(StartRequest::prompt("quiet", "go")).await.unwrap();
    let mut events = s.events();
    let mut seen = Vec::new();
    within(20, "the first line", async {
        while let Some(ev) = events.next().await {
            let line = ev.line() == Some("out 1");
            seen.push(ev);
            if line {
                return;
            }
        }
    })
    .await;
    let sessions = dirs.state().join("sessions");
    // Its log was last written two hours ago (as far as the file system
    // says); an old log of a finished run; and a huge fresh one, so the
    // directory is over its 1 GiB budget.
    within(20, "the log written", async {
        while cldpd::log::read_all(s.log_path()).unwrap().len() < seen.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    set_age(s.log_path(), Duration::from_secs(2 * 3600));
    let old = sessions.join("old-00000001.ndjson");
    std::fs::write(&old, "{}\n").unwrap();
    set_age(&old, Duration::from_secs(30 * 24 * 3600));
    let big = sessions.join("big-00000001.ndjson");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1100 * 1024 * 1024)
        .unwrap();

    // Another process (`cldpd ps`, say) starts its dispatcher: retention.
    let _b = Dispatcher::new(dirs.settings(), rt.clone());
    within(20, "retention to run", async {
        while old.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(s.log_path().exists(), "the live run's log was deleted");
    assert!(big.exists(), "a log younger than an hour was deleted");

    // The run goes on, and ends normally, its log whole.
    assert_eq!(s.stop(Some(Duration::ZERO)).await.unwrap(), 137);
    let rest: Vec<_> = within(20, "the end", events.collect()).await;
    seen.extend(rest);
    assert!(matches!(
        seen.last().unwrap().kind,
        EventKind::ContainerExited { code: 137 }
    ));
    within(20, "the whole log", async {
        while cldpd::log::read_all(s.log_path()).unwrap() != seen {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Issue 9, item 10: 30 concurrent `cldpd start` of a changed pod ran 30
/// `docker build`s. Dispatchers (processes) sharing a state directory
/// build a tag once; the others wait for its lock and reuse the build.
#[actix::test]
async fn dispatchers_sharing_a_state_directory_build_a_changed_pod_once() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_build(
        "cldpd-web",
        BuildScript::succeed(["Step 1/1 : FROM scratch"]).delay(Duration::from_millis(800)),
    );
    rt.script_pod("web", RunScript::new().stdout_lines(1).exit(0));
    // Four processes' dispatchers, one state directory, one Docker.
    let dispatchers: Vec<Dispatcher> = (0..4)
        .map(|_| Dispatcher::new(dirs.settings(), rt.clone()))
        .collect();
    let starts = dispatchers
        .iter()
        .map(|d| d.start(StartRequest::prompt("web", "go")));
    let sessions: Vec<_> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut built = 0;
    for s in &sessions {
        let seen = within(30, "a run", collect(s)).await;
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_flow(&seen.flow, START);
        assert_eq!(s.wait().await.unwrap(), 0);
        built += seen
            .all
            .iter()
            .filter(|e| matches!(e.kind, EventKind::BuildComplete { cached: false, .. }))
            .count();
    }
    assert_eq!(rt.build_count("cldpd-web"), 1, "one docker build for all");
    assert_eq!(built, 1, "exactly one run reports the real build");
}

/// Issue 9, item 7: on a 64 KiB tmpfs a 20,000-line run was stopped when
/// its log filled the disk. It must go on for the subscribers that keep
/// up, and its log must say it is incomplete.
#[actix::test]
async fn a_really_full_state_disk_does_not_stop_the_run() {
    if !is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root: this test needs to mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dirs = Dirs::new(&[("chatty", None)]);
    let disk = Tmpfs::mount("64k");
    let mut settings = dirs.settings();
    settings.state_dir = disk.path().join("state");
    let rt = FaultRuntime::new();
    rt.script_pod("chatty", RunScript::new().stdout_lines(20_000).exit(0));
    let d = Dispatcher::new(settings, rt.clone());
    // A subscriber that keeps up (room for every event in its mailbox).
    let (checker, seen) = Checker::start(false, 32 * 1024);
    let s = d
        .start(StartRequest::prompt("chatty", "go").subscribe(checker))
        .await
        .unwrap();
    let seen = within(60, "the run", seen).await.unwrap();
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(seen.stdout, 20_000, "every line reached the subscriber");
    assert_eq!(s.wait().await.unwrap(), 0, "the run was not stopped");
    // The log cannot hold it all; it shows where it is incomplete (a gap,
    // or no final event).
    let mut reader = LogReader::open(s.log_path()).unwrap();
    let mut events = 0;
    let mut terminal = false;
    while let Some(e) = reader.next_entry().unwrap() {
        if let LogEntry::Event(ev) = e {
            events += 1;
            terminal |= ev.is_terminal();
        }
    }
    assert!(events < 20_000, "64 KiB cannot hold 20,000 lines");
    assert!(!reader.gaps().is_empty() || !terminal);
    drop(d);
}

/// A relative state directory (`CLDPD_STATE_DIR=state` in some directory)
/// was written as given into every container's `cldpd.state` label, so a
/// `cldpd stop` run from another directory wrote its stop marker in the
/// wrong place, and the owner's restart policy undid the stop. The label
/// now holds the absolute path.
#[actix::test]
async fn a_relative_state_dir_is_labelled_as_an_absolute_path() {
    use cldpd::runtime::Runtime;
    let dirs = Dirs::new(&[("rel", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("rel", RunScript::new().stdout_lines(1).hang());
    // The same directory, spelt relative to this process's directory.
    let cwd = std::env::current_dir().unwrap();
    let mut relative = PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(dirs.state().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let mut settings = dirs.settings();
    settings.state_dir = relative;
    let d = Dispatcher::new(settings, rt.clone());
    let s = d.start(StartRequest::prompt("rel", "go")).await.unwrap();
    wait_running(&s).await;
    let containers = within(20, "the list", rt.list()).await.unwrap();
    let label = containers
        .iter()
        .find_map(|c| c.label("cldpd.state"))
        .expect("the run's container with its state label")
        .to_string();
    assert_eq!(
        Path::new(&label),
        dirs.state(),
        "the label names the state directory absolutely"
    );
    d.shutdown(None).await.unwrap();
}
