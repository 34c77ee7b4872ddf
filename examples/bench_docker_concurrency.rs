//! Benchmark "real Docker, concurrency" (issues 5 and 12): runs of one pod
//! (a cached `FROM scratch` busybox image whose agent prints one line and
//! exits) at each concurrency level (`--levels`, default 10 and 50; `--jobs`
//! runs per round, default 50, and never fewer than the level):
//!
//! - **cldpd**: a long-lived `Dispatcher::docker` (the default backend, the
//!   Engine API; `CLDPD_RUNTIME=cli` for the docker CLI) with
//!   `max_concurrent` = the concurrency; all starts are issued at once
//!   and its admission control queues the rest (FIFO);
//! - **cldpd, the other backend** (with `--both-backends 1`): the same
//!   through a second dispatcher on the docker CLI backend (or the Engine
//!   API when `CLDPD_RUNTIME=cli`), so both backends are measured in one
//!   interleaved run;
//! - **docker run**: the same number of `docker run --rm <image> claude -p go` launched
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
//! cargo run --release --example bench_docker_concurrency -- --runs 2 \
//!     --levels 50,200 --jobs 50 --both-backends 1
//! ```

#[path = "bench/common.rs"]
mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cldpd::runtime::Backend;
use cldpd::{Dispatcher, Settings, StartRequest};
use common::*;
use futures_util::future::join_all;

const STUB: &str = "#!/bin/sh\necho \"hello from the agent\"\n";

struct Round {
    wall: Duration,
    peak_kib: u64,
    procs: usize,
}

/// `jobs` starts at once through `d` (its `max_concurrent` is the
/// concurrency), until every run has exited.
async fn cldpd_round(d: &Dispatcher, pod: &str, jobs: usize) -> Round {
    let sampler = TreeSampler::start(Duration::from_millis(10), true);
    let t0 = Instant::now();
    let sessions = join_all((0..jobs).map(|_| d.start(StartRequest::prompt(pod, "go")))).await;
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

async fn docker_round(image: &str, conc: usize, jobs: usize, flags: Option<&str>) -> Round {
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
                if n >= jobs {
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

/// The backend `CLDPD_RUNTIME` does not pick.
fn other_backend() -> Backend {
    match Backend::from_env() {
        Ok(Backend::Cli) => Backend::EngineApi,
        _ => Backend::Cli,
    }
}

fn main() {
    let args = Args::parse();
    let runs: usize = args.get("runs", 3);
    let jobs: usize = args.get("jobs", 50);
    let both: u8 = args.get("both-backends", 0);
    let levels: String = args.get("levels", "10,50".to_string());
    let levels: Vec<usize> = levels
        .split(',')
        .map(|l| l.trim().parse().expect("--levels: numbers, e.g. 10,50"))
        .collect();
    let level_list = levels
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    println!("bench_docker_concurrency: {jobs} runs (at least the level) of one pod (agent prints one line and exits) at concurrency {level_list}; cldpd (library, Dispatcher with max_concurrent) vs docker run --rm with the same parallelism; {runs} rounds each, order rotating");
    print_machine();
    print_docker_versions();
    print_command(
        "bench_docker_concurrency",
        &[
            ("runs", runs.to_string()),
            ("levels", level_list),
            ("jobs", jobs.to_string()),
            ("both-backends", both.to_string()),
        ],
    );
    let other = other_backend();
    println!(
        "backend: {} (CLDPD_RUNTIME){}",
        std::env::var("CLDPD_RUNTIME").unwrap_or_else(|_| "default (engine)".into()),
        if both == 1 {
            format!("; other backend also measured: {other:?}")
        } else {
            String::new()
        }
    );

    let pod = DockerPod::new(STUB);
    let name = pod.name.clone();
    let image = pod.image();
    let pods = pod.pods_dir().to_path_buf();
    actix::System::new().block_on(async move {
        FaultDirs::settle().await;
        for conc in levels {
            let jobs = jobs.max(conc);
            // One long-lived dispatcher per concurrency limit (and backend);
            // its first run builds the image (memoised for the rest), not
            // measured.
            let state = tempfile::tempdir().unwrap();
            let d = Dispatcher::docker(Settings::new(&pods, state.path()).max_concurrent(conc));
            let s = d.start(StartRequest::prompt(&name, "go")).await.unwrap();
            assert_eq!(s.wait().await.unwrap(), 0);
            let other_state = tempfile::tempdir().unwrap();
            let o = if both == 1 {
                let settings = Settings::new(&pods, other_state.path())
                    .max_concurrent(conc)
                    .runtime(other);
                let o = Dispatcher::docker(settings);
                let s = o.start(StartRequest::prompt(&name, "go")).await.unwrap();
                assert_eq!(s.wait().await.unwrap(), 0);
                Some(o)
            } else {
                None
            };
            let arms = if o.is_some() { 4 } else { 3 };
            let mut c_wall = Vec::new();
            let mut c_mem = Vec::new();
            let mut o_wall = Vec::new();
            let mut o_mem = Vec::new();
            let mut p_wall = Vec::new();
            let mut p_mem = Vec::new();
            let mut f_wall = Vec::new();
            for round in 0..runs {
                // Rotate the order of the arms every round.
                let (mut c, mut p, mut f, mut other_round) = (None, None, None, None);
                for k in 0..arms {
                    match (round + k) % arms {
                        0 => c = Some(cldpd_round(&d, &name, jobs).await),
                        1 => p = Some(docker_round(&image, conc, jobs, None).await),
                        2 => f = Some(docker_round(&image, conc, jobs, Some(&name)).await),
                        _ => {
                            let o = o.as_ref().unwrap();
                            other_round = Some(cldpd_round(o, &name, jobs).await);
                        }
                    }
                }
                let (c, p, f) = (c.unwrap(), p.unwrap(), f.unwrap());
                f_wall.push(secs(f.wall));
                let other_text = match &other_round {
                    Some(r) => format!(
                        " | cldpd on {other:?} {:.2} s, peak {:.1} MiB (up to {} processes)",
                        secs(r.wall),
                        mib(r.peak_kib),
                        r.procs
                    ),
                    None => String::new(),
                };
                println!(
                    "run {} (concurrency {conc}, {jobs} runs): cldpd {:.2} s, peak {:.1} MiB (this process + docker clients, up to {} processes) | docker run {:.2} s, peak {:.1} MiB (docker clients, up to {} processes; this harness {:.1} MiB) | docker run with cldpd's flags {:.2} s{other_text}",
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
                if let Some(r) = other_round {
                    o_wall.push(secs(r.wall));
                    o_mem.push(mib(r.peak_kib));
                }
            }
            assert_eq!(d.build_count().await.unwrap(), 1, "later runs used the memo");
            d.shutdown(None).await.unwrap();
            if let Some(o) = o {
                o.shutdown(None).await.unwrap();
            }
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
            if !o_wall.is_empty() {
                println!(
                    "result: concurrency {conc}: cldpd on {other:?} wall {}; peak memory {}",
                    spread(&o_wall, "s", 2),
                    spread(&o_mem, "MiB", 1)
                );
                println!(
                    "result: concurrency {conc}: ratio cldpd / cldpd on {other:?} wall (medians) {:.3}; peak memory {:.3}",
                    median(&c_wall) / median(&o_wall),
                    median(&c_mem) / median(&o_mem)
                );
            }
        }
    });
    drop(pod);
    println!("cleanup: image and containers removed");
}
