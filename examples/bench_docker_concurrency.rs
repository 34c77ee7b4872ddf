//! Benchmark "real Docker, concurrency" (issue 5, workload 5): 50 runs of
//! one pod (a cached `FROM scratch` busybox image whose agent prints one
//! line and exits) at concurrency 10 and 50:
//!
//! - **cldpd**: a long-lived `Dispatcher::docker` (the default backend, the
//!   Engine API; `CLDPD_RUNTIME=cli` for the docker CLI) with
//!   `max_concurrent` = the concurrency; all 50 starts are issued at once
//!   and its admission control queues the rest (FIFO);
//! - **docker run**: 50 `docker run --rm <image> claude -p go` launched
//!   with the same parallelism (that many workers, each running the next
//!   one when its previous one exited);
//! - **docker run (cldpd's flags)**: the same, with the argv shape cldpd
//!   uses (`--init`, `--name`, a dozen `bench.*` labels), to tell cldpd's
//!   own cost from the cost of its flags in the daemon.
//!
//! Reports the total wall time and the peak memory (RSS sampled from /proc
//! every 10 ms) of this process plus its docker client processes (for
//! cldpd), or of the docker client processes alone (for docker run; this
//! harness's own RSS is printed beside). Docker's daemon and shims are not
//! counted in either. Rounds alternate cldpd / docker run.
//!
//! ```text
//! cargo run --release --example bench_docker_concurrency -- --runs 3
//! ```

#[path = "bench/common.rs"]
mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cldpd::{Dispatcher, Settings, StartRequest};
use common::*;
use futures_util::future::join_all;

const STUB: &str = "#!/bin/sh\necho \"hello from the agent\"\n";
const RUNS: usize = 50;

struct Round {
    wall: Duration,
    peak_kib: u64,
    procs: usize,
}

/// 50 starts at once through `d` (its `max_concurrent` is the concurrency),
/// until every run has exited.
async fn cldpd_round(d: &Dispatcher, pod: &str) -> Round {
    let sampler = TreeSampler::start(Duration::from_millis(10), true);
    let t0 = Instant::now();
    let sessions = join_all((0..RUNS).map(|_| d.start(StartRequest::prompt(pod, "go")))).await;
    let waits = sessions.iter().map(|s| s.as_ref().expect("start").wait());
    for code in join_all(waits).await {
        assert_eq!(code.expect("run"), 0);
    }
    let wall = t0.elapsed();
    let (peak_kib, procs) = sampler.finish();
    Round {
        wall,
        peak_kib,
        procs,
    }
}

/// cldpd's `docker run` flags for run `n` (labels keyed `bench.*`, so no
/// cldpd process takes the container for its own).
fn flagged(image: &str, pod: &str, n: usize) -> Vec<String> {
    let name = format!("{pod}-plain-{n}");
    let mut v: Vec<String> = ["run", "--rm", "--init", "--name", &name]
        .map(String::from)
        .to_vec();
    for (k, val) in [
        ("bench.session", name.as_str()),
        ("bench.pod", pod),
        ("bench.image", image),
        ("bench.agent", "[\"claude\"]"),
        ("bench.attempt", "0"),
        ("bench.conversation", "00000000-0000-4000-8000-000000000000"),
        ("bench.started", "2026-01-01T00:00:00Z"),
        ("bench.grace", "10"),
        ("bench.owner", "bench"),
        ("bench.owner.host", "bench"),
        ("bench.owner.pid", "1"),
        ("bench.owner.start", "123456"),
        ("bench.state", "/tmp"),
    ] {
        v.push("--label".into());
        v.push(format!("{k}={val}"));
    }
    v.extend(
        [
            image,
            "claude",
            "-p",
            "--session-id",
            "00000000-0000-4000-8000-000000000000",
            "go",
        ]
        .map(String::from),
    );
    v
}

async fn docker_round(image: &str, conc: usize, flags: Option<&str>) -> Round {
    let next = Arc::new(AtomicUsize::new(0));
    let sampler = TreeSampler::start(Duration::from_millis(10), false);
    let t0 = Instant::now();
    let stamp = uuid::Uuid::new_v4().simple().to_string();
    let flags = flags.map(|pod| format!("{pod}-{}", &stamp[..6]));
    let workers = (0..conc).map(|_| {
        let next = next.clone();
        let image = image.to_string();
        let flags = flags.clone();
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= RUNS {
                    break;
                }
                let args = match &flags {
                    Some(pod) => flagged(&image, pod, n),
                    None => ["run", "--rm", &image, "claude", "-p", "go"]
                        .map(String::from)
                        .to_vec(),
                };
                let status = tokio::process::Command::new("docker")
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .output()
                    .await
                    .expect("docker run");
                assert!(status.status.success());
                assert!(String::from_utf8_lossy(&status.stdout).contains("hello"));
            }
        }
    });
    join_all(workers).await;
    let wall = t0.elapsed();
    let (peak_kib, procs) = sampler.finish();
    Round {
        wall,
        peak_kib,
        procs,
    }
}

fn main() {
    let args = Args::parse();
    let runs: usize = args.get("runs", 3);
    println!("bench_docker_concurrency: {RUNS} runs of one pod (agent prints one line and exits) at concurrency 10 and 50; cldpd (library, Dispatcher with max_concurrent) vs docker run --rm with the same parallelism; {runs} rounds each, alternating");
    print_machine();
    print_docker_versions();
    print_command("bench_docker_concurrency", &[("runs", runs.to_string())]);
    println!(
        "backend: {} (CLDPD_RUNTIME)",
        std::env::var("CLDPD_RUNTIME").unwrap_or_else(|_| "default (engine)".into())
    );

    let pod = DockerPod::new(STUB);
    let name = pod.name.clone();
    let image = pod.image();
    let pods = pod.pods_dir().to_path_buf();
    actix::System::new().block_on(async move {
        FaultDirs::settle().await;
        for conc in [10usize, 50] {
            // One long-lived dispatcher per concurrency limit; its first run
            // builds the image (memoised for the rest), not measured.
            let state = tempfile::tempdir().unwrap();
            let d = Dispatcher::docker(Settings::new(&pods, state.path()).max_concurrent(conc));
            let s = d.start(StartRequest::prompt(&name, "go")).await.unwrap();
            assert_eq!(s.wait().await.unwrap(), 0);
            let mut c_wall = Vec::new();
            let mut c_mem = Vec::new();
            let mut p_wall = Vec::new();
            let mut p_mem = Vec::new();
            let mut f_wall = Vec::new();
            for round in 0..runs {
                // Rotate the order of the three every round.
                let mut c = None;
                let mut p = None;
                let mut f = None;
                for k in 0..3 {
                    match (round + k) % 3 {
                        0 => c = Some(cldpd_round(&d, &name).await),
                        1 => p = Some(docker_round(&image, conc, None).await),
                        _ => f = Some(docker_round(&image, conc, Some(&name)).await),
                    }
                }
                let (c, p, f) = (c.unwrap(), p.unwrap(), f.unwrap());
                f_wall.push(secs(f.wall));
                println!(
                    "run {} (concurrency {conc}): cldpd {:.2} s, peak {:.1} MiB (this process + docker clients, up to {} processes) | docker run {:.2} s, peak {:.1} MiB (docker clients, up to {} processes; this harness {:.1} MiB) | docker run with cldpd's flags {:.2} s",
                    round + 1,
                    secs(c.wall),
                    mib(c.peak_kib),
                    c.procs,
                    secs(p.wall),
                    mib(p.peak_kib),
                    p.procs,
                    mib(rss_kib()),
                    secs(f.wall),
                );
                c_wall.push(secs(c.wall));
                c_mem.push(mib(c.peak_kib));
                p_wall.push(secs(p.wall));
                p_mem.push(mib(p.peak_kib));
            }
            assert_eq!(d.build_count().await.unwrap(), 1, "later runs used the memo");
            d.shutdown(None).await.unwrap();
            println!("result: concurrency {conc}: cldpd wall {}", spread(&c_wall, "s", 2));
            println!("result: concurrency {conc}: docker run wall {}", spread(&p_wall, "s", 2));
            println!(
                "result: concurrency {conc}: docker run with cldpd's flags wall {}",
                spread(&f_wall, "s", 2)
            );
            println!(
                "result: concurrency {conc}: ratio cldpd / docker run wall (medians) {:.3}; cldpd / docker run with cldpd's flags {:.3}",
                median(&c_wall) / median(&p_wall),
                median(&c_wall) / median(&f_wall)
            );
            println!(
                "result: concurrency {conc}: peak memory cldpd process + docker clients {}",
                spread(&c_mem, "MiB", 1)
            );
            println!(
                "result: concurrency {conc}: peak memory docker clients of plain docker run {}",
                spread(&p_mem, "MiB", 1)
            );
        }
    });
    drop(pod);
    println!("cleanup: image and containers removed");
}
