//! Benchmark "real Docker, latency" (issue 5, workload 4): a cached
//! `FROM scratch` busybox image whose agent (`/bin/claude`, a `#!/bin/sh`
//! stub) prints one line and exits. Measures the time from the start call
//! to the first output line and to the exit, for
//!
//! - **cldpd**: a long-lived `Dispatcher::docker` over the default backend
//!   (the Engine API; `CLDPD_RUNTIME=cli` for the docker CLI) — the
//!   realistic embedding; its first run builds the image, every later run
//!   finds it memoised (a fingerprint walk instead of `docker build`);
//! - **cldpd binary**: `cldpd --pods-dir … --state-dir … start <pod>
//!   --prompt go`, one process per run (so every run is a new dispatcher:
//!   the image is looked at with `docker build` again, from its cache),
//!   output line read from its stdout. Build it first:
//!   `cargo build --release --bin cldpd` (skipped when missing);
//! - **docker run**: plain `docker run --rm <image> claude -p go`;
//! - **docker run (cldpd's flags)**: the argv shape cldpd uses (`--init`,
//!   `--name`, a dozen labels of the same sizes, prefixed `bench.` rather
//!   than `cldpd.` so that no other cldpd process takes these containers
//!   for its own), to tell cldpd's own cost from its flags'.
//!
//! Runs are interleaved (the order rotates every round) and reported as
//! medians, with the ratios cldpd / docker run. The image tag and every
//! container are removed at the end (`docker rmi --no-prune`).
//!
//! ```text
//! cargo build --release --bin cldpd
//! cargo run --release --example bench_docker_latency -- --runs 30
//! ```

#[path = "bench/common.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cldpd::{Dispatcher, EventKind, Settings, StartRequest};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

const STUB: &str = "#!/bin/sh\necho \"hello from the agent\"\n";

/// Times of one run: to the first line, to the end.
#[derive(Clone, Copy)]
struct Times {
    first: Duration,
    exit: Duration,
}

/// `docker <args>`: time to the first stdout line and to the client's exit.
async fn docker_run(args: &[String]) -> Times {
    process_run("docker", args).await
}

/// `<program> <args>`: time to the first stdout line and to its exit.
async fn process_run(program: &str, args: &[String]) -> Times {
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.expect("read").expect("a line");
    let first = t0.elapsed();
    assert!(line.contains("hello"), "{line}");
    while lines.next_line().await.expect("read").is_some() {}
    let status = child.wait().await.expect("wait");
    let exit = t0.elapsed();
    assert!(status.success(), "{program} failed: {status}");
    Times { first, exit }
}

/// One run through the dispatcher: start → first Output event → terminal
/// event, as a subscriber actor receives them.
async fn cldpd_run(d: &Dispatcher, pod: &str, sub_thread: &Arbiter) -> Times {
    let (tx, rx) = oneshot::channel();
    let counter = Counter::start_in_arbiter(&sub_thread.handle(), move |_| {
        Counter::new(1024, tx).unchecked()
    });
    let t0 = Instant::now();
    let s = d
        .start(StartRequest::prompt(pod, "go").subscribe(counter.recipient()))
        .await
        .expect("start");
    let tally = rx.await.expect("tally");
    let code = s.wait().await.expect("wait");
    assert_eq!(code, 0);
    assert!(matches!(
        tally.terminal.as_ref().map(|e| &e.kind),
        Some(EventKind::ContainerExited { code: 0 })
    ));
    assert_eq!(tally.lines, 1);
    Times {
        first: tally.first_line_at.expect("a line") - t0,
        exit: tally.end_at.expect("the end") - t0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args = Args::parse();
    let runs: usize = args.get("runs", 30);
    let backend = std::env::var("CLDPD_RUNTIME").unwrap_or_else(|_| "default (engine)".into());
    println!("bench_docker_latency: agent prints one line and exits; cldpd (library, long-lived Dispatcher over the {backend} backend) vs docker run --rm; {runs} interleaved rounds");
    print_machine();
    print_docker_versions();
    print_command("bench_docker_latency", &[("runs", runs.to_string())]);
    let binary = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("cldpd")))
        .filter(|b| b.is_file());
    match &binary {
        Some(b) => println!("cldpd binary: {}", b.display()),
        None => println!(
            "note: no cldpd binary beside this example (cargo build --release --bin cldpd); the binary is not measured"
        ),
    }

    let pod = DockerPod::new(STUB);
    let name = pod.name.clone();
    let image = pod.image();
    let state = tempfile::tempdir().unwrap();
    let settings = Settings::new(pod.pods_dir(), state.path());
    let bin_state = tempfile::tempdir().unwrap();
    let bin_args: Vec<String> = vec![
        "--pods-dir".into(),
        pod.pods_dir().display().to_string(),
        "--state-dir".into(),
        bin_state.path().display().to_string(),
        "start".into(),
        pod.name.clone(),
        "--prompt".into(),
        "go".into(),
    ];
    actix::System::new().block_on(async move {
        let d = Dispatcher::docker(settings);
        let sub_thread = Arbiter::new();
        // First run: cldpd builds the image (not measured).
        let t = Instant::now();
        cldpd_run(&d, &name, &sub_thread).await;
        println!("warm-up: first cldpd run (includes docker build) {:.0} ms", ms(t.elapsed()));
        assert_eq!(d.build_count().await.unwrap(), 1);
        // Pod files older than the pod cache's settle time, as real pods are.
        FaultDirs::settle().await;
        let plain: Vec<String> = ["run", "--rm", &image, "claude", "-p", "go"]
            .map(String::from)
            .to_vec();
        let mut flagged_n = 0;
        let flagged = |n: usize| -> Vec<String> {
            let c = format!("{name}-plain-{n}");
            let mut v: Vec<String> = ["run", "--rm", "--init", "--name", &c]
                .map(String::from)
                .to_vec();
            for (k, val) in [
                ("bench.session", c.as_str()),
                ("bench.pod", name.as_str()),
                ("bench.image", image.as_str()),
                ("bench.agent", "[\"claude\"]"),
                ("bench.attempt", "0"),
                ("bench.conversation", "00000000-0000-4000-8000-000000000000"),
                ("bench.started", "2026-01-01T00:00:00Z"),
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
                    &image,
                    "claude",
                    "-p",
                    "--session-id",
                    "00000000-0000-4000-8000-000000000000",
                    "go",
                ]
                .map(String::from),
            );
            v
        };
        let mut c_first = Vec::new();
        let mut c_exit = Vec::new();
        let mut p_first = Vec::new();
        let mut p_exit = Vec::new();
        let mut f_first = Vec::new();
        let mut f_exit = Vec::new();
        let mut b_first = Vec::new();
        let mut b_exit = Vec::new();
        let variants = if binary.is_some() { 4 } else { 3 };
        for round in 0..runs {
            for k in 0..variants {
                match (round + k) % variants {
                    3 => {
                        let b = binary.as_ref().expect("variant 3 only with a binary");
                        let t = process_run(b.to_str().unwrap(), &bin_args).await;
                        b_first.push(ms(t.first));
                        b_exit.push(ms(t.exit));
                    }
                    0 => {
                        let t = cldpd_run(&d, &name, &sub_thread).await;
                        c_first.push(ms(t.first));
                        c_exit.push(ms(t.exit));
                    }
                    1 => {
                        let t = docker_run(&plain).await;
                        p_first.push(ms(t.first));
                        p_exit.push(ms(t.exit));
                    }
                    _ => {
                        flagged_n += 1;
                        let t = docker_run(&flagged(flagged_n)).await;
                        f_first.push(ms(t.first));
                        f_exit.push(ms(t.exit));
                    }
                }
            }
            let bin = match (b_first.get(round), b_exit.get(round)) {
                (Some(f), Some(e)) => format!(" | cldpd binary {f:.0} / {e:.0} ms"),
                _ => String::new(),
            };
            println!(
                "run {}: cldpd (library) first line {:.0} ms, exit {:.0} ms | docker run {:.0} / {:.0} ms | docker run with cldpd's flags {:.0} / {:.0} ms{bin}",
                round + 1,
                c_first[round],
                c_exit[round],
                p_first[round],
                p_exit[round],
                f_first[round],
                f_exit[round]
            );
        }
        assert_eq!(d.build_count().await.unwrap(), 1, "later runs used the memo");
        d.shutdown(None).await.unwrap();
        sub_thread.stop();
        println!("result: cldpd start → first line {}", spread(&c_first, "ms", 0));
        println!("result: cldpd start → exit {}", spread(&c_exit, "ms", 0));
        println!("result: docker run → first line {}", spread(&p_first, "ms", 0));
        println!("result: docker run → exit {}", spread(&p_exit, "ms", 0));
        println!(
            "result: docker run with cldpd's flags → first line {}",
            spread(&f_first, "ms", 0)
        );
        println!(
            "result: docker run with cldpd's flags → exit {}",
            spread(&f_exit, "ms", 0)
        );
        println!(
            "result: ratio cldpd / docker run (medians): first line {:.3}, exit {:.3}",
            median(&c_first) / median(&p_first),
            median(&c_exit) / median(&p_exit)
        );
        println!(
            "result: ratio cldpd / docker run with cldpd's flags (medians): first line {:.3}, exit {:.3}",
            median(&c_first) / median(&f_first),
            median(&c_exit) / median(&f_exit)
        );
        if !b_first.is_empty() {
            println!(
                "result: cldpd binary start → first line {}",
                spread(&b_first, "ms", 0)
            );
            println!("result: cldpd binary start → exit {}", spread(&b_exit, "ms", 0));
            println!(
                "result: ratio cldpd binary / docker run (medians): first line {:.3}, exit {:.3}",
                median(&b_first) / median(&p_first),
                median(&b_exit) / median(&p_exit)
            );
        }
        let pairs: Vec<f64> = c_exit.iter().zip(&p_exit).map(|(c, p)| c / p).collect();
        println!("result: per-round ratio cldpd / docker run, exit: {}", spread(&pairs, "", 3));
    });
    drop(pod);
    drop(bin_state);
    println!("cleanup: image and containers removed");
}
