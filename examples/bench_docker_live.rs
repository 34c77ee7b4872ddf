//! Benchmark "live runs" (issue 12): what N live runs cost on the host,
//! per Docker backend, and how long `cldpd ps` takes beside them.
//!
//! Each round starts a fresh child process per backend (`CLDPD_RUNTIME=cli`:
//! one `docker run` client process per run; `CLDPD_RUNTIME=engine`: the
//! Engine API over one connection pool). The child is a long-lived
//! `Dispatcher` that starts N runs of a cached `FROM scratch` busybox pod
//! whose agent prints a line a second and runs until stopped, and tells the
//! parent once every run has printed its first line. Then the parent:
//!
//! - samples the RSS of the child and of all its descendants (docker
//!   clients) for two seconds and keeps the peak — the containers, their
//!   shims and the daemon are not descendants and are not counted;
//! - times `cldpd ps` (the binary, same backend, same state directory) five
//!   times with the N runs live (median);
//! - asks the child to stop everything (`Dispatcher::shutdown`, SIGTERM)
//!   and times it.
//!
//! Backends alternate within a round and the order rotates between rounds;
//! results are medians with the ratio engine / cli. Build the binary first
//! (`cargo build --bin cldpd`, same profile); the pod's image and every
//! container are removed at the end.
//!
//! ```text
//! cargo build --release --bin cldpd
//! cargo run --release --example bench_docker_live -- --live 200 --runs 3
//! ```

#[path = "bench/common.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cldpd::{Dispatcher, EventKind, Settings, StartRequest};
use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt;

/// A line a second until signalled.
const STUB: &str = "#!/bin/sh\nwhile :; do echo tick; sleep 1; done\n";

const BACKENDS: [&str; 2] = ["cli", "engine"];

/// The child: start `live` runs, report, wait for "stop" on stdin, shut
/// down, report.
fn child(live: usize, pods: &Path, pod: &str, state: &Path) {
    let pods = pods.to_path_buf();
    let pod = pod.to_string();
    let state = state.to_path_buf();
    actix::System::new().block_on(async move {
        let d = Dispatcher::docker(
            Settings::new(&pods, &state)
                .max_concurrent(live)
                .stop_grace(Duration::from_secs(5)),
        );
        let t0 = Instant::now();
        let sessions = join_all((0..live).map(|_| d.start(StartRequest::prompt(&pod, "go")))).await;
        let firsts = sessions.iter().map(|s| {
            let mut events = s.as_ref().expect("start").events();
            async move {
                while let Some(ev) = events.next().await {
                    if matches!(ev.kind, EventKind::Output { .. }) {
                        return true;
                    }
                    assert!(!ev.is_terminal(), "a run ended before printing: {ev:?}");
                }
                false
            }
        });
        assert!(join_all(firsts).await.into_iter().all(|x| x));
        println!("live {:.3}", t0.elapsed().as_secs_f64());
        let mut line = String::new();
        // The parent measures, then writes "stop" (blocking read: nothing
        // else has to run meanwhile; the runs need no help from us).
        std::io::stdin().lock().read_line(&mut line).unwrap();
        let t1 = Instant::now();
        d.shutdown(Some(Duration::from_secs(5)))
            .await
            .expect("shutdown");
        println!("stopped {:.3}", t1.elapsed().as_secs_f64());
    });
}

struct Round {
    live_secs: f64,
    peak_kib: u64,
    procs: usize,
    ps_secs: f64,
    stop_secs: f64,
}

fn cldpd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/bench_docker_live → target/<profile>/cldpd
    let bin = exe.parent().unwrap().parent().unwrap().join("cldpd");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --bin cldpd with the same profile first",
        bin.display()
    );
    bin
}

fn round(backend: &str, live: usize, pods: &Path, pod: &str) -> Round {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--live", &live.to_string(), "--pod", pod])
        .arg("--pods")
        .arg(pods)
        .arg("--state")
        .arg(state.path())
        .env(CHILD_ENV, "1")
        .env("CLDPD_RUNTIME", backend)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let live_secs: f64 = line
        .strip_prefix("live ")
        .unwrap_or_else(|| panic!("child said {line:?}"))
        .trim()
        .parse()
        .unwrap();
    let mut peak_kib = 0;
    let mut procs = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let (kib, n) = tree_rss_kib(child.id());
        peak_kib = peak_kib.max(kib);
        procs = procs.max(n);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ps = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let st = Command::new(cldpd_bin())
            .arg("--pods-dir")
            .arg(pods)
            .arg("ps")
            .env("CLDPD_STATE_DIR", state.path())
            .env("CLDPD_RUNTIME", backend)
            .stdout(Stdio::piped())
            .output()
            .expect("cldpd ps");
        ps.push(t.elapsed().as_secs_f64());
        assert!(st.status.success());
        let listed = String::from_utf8_lossy(&st.stdout).lines().count();
        assert_eq!(listed, live + 1, "cldpd ps lists every live run");
    }
    child.stdin.as_mut().unwrap().write_all(b"stop\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let stop_secs: f64 = line
        .strip_prefix("stopped ")
        .unwrap_or_else(|| panic!("child said {line:?}"))
        .trim()
        .parse()
        .unwrap();
    assert!(child.wait().unwrap().success());
    Round {
        live_secs,
        peak_kib,
        procs,
        ps_secs: median(&ps),
        stop_secs,
    }
}

fn main() {
    let args = Args::parse();
    let live: usize = args.get("live", 200);
    if is_child() {
        let pods: String = args.get("pods", String::new());
        let pod: String = args.get("pod", String::new());
        let state: String = args.get("state", String::new());
        child(live, Path::new(&pods), &pod, Path::new(&state));
        return;
    }
    let runs: usize = args.get("runs", 3);
    println!("bench_docker_live: {live} live runs (agent prints a line a second until stopped) per Docker backend; RSS of cldpd + its client processes, `cldpd ps` beside them, stop-all; {runs} rounds, backends alternating");
    print_machine();
    print_docker_versions();
    print_command(
        "bench_docker_live",
        &[("live", live.to_string()), ("runs", runs.to_string())],
    );
    let pod = DockerPod::new(STUB);
    pod.build();
    let mut results: Vec<(&str, Vec<Round>)> = BACKENDS.iter().map(|b| (*b, Vec::new())).collect();
    for r in 0..runs {
        for k in 0..BACKENDS.len() {
            let i = (r + k) % BACKENDS.len();
            let backend = BACKENDS[i];
            let x = round(backend, live, pod.pods_dir(), &pod.name);
            println!(
                "run {} {backend}: all {live} live in {:.2} s; peak RSS {:.1} MiB in {} processes ({:.0} KiB per run); cldpd ps {:.3} s; stop all {:.2} s",
                r + 1,
                x.live_secs,
                mib(x.peak_kib),
                x.procs,
                x.peak_kib as f64 / live as f64,
                x.ps_secs,
                x.stop_secs
            );
            results[i].1.push(x);
        }
    }
    let med = |b: usize, f: &dyn Fn(&Round) -> f64| -> f64 {
        median(&results[b].1.iter().map(f).collect::<Vec<_>>())
    };
    for (b, (backend, _)) in results.iter().enumerate() {
        println!(
            "result {backend}: peak RSS {:.1} MiB, time to all live {:.2} s, cldpd ps {:.3} s, stop all {:.2} s (medians of {runs})",
            med(b, &|x| mib(x.peak_kib)),
            med(b, &|x| x.live_secs),
            med(b, &|x| x.ps_secs),
            med(b, &|x| x.stop_secs)
        );
    }
    let ratio = |f: &dyn Fn(&Round) -> f64| med(1, f) / med(0, f);
    println!(
        "ratio engine/cli: peak RSS {:.3}, time to all live {:.2}, cldpd ps {:.2}, stop all {:.2}",
        ratio(&|x| x.peak_kib as f64),
        ratio(&|x| x.live_secs),
        ratio(&|x| x.ps_secs),
        ratio(&|x| x.stop_secs)
    );
}
