//! Benchmark "real Docker, latency" (issue 5, workload 4): a cached
//! `FROM scratch` busybox image whose agent (`/bin/claude`, a `#!/bin/sh`
//! stub) prints one line and exits. Measures the time from the start call
//! to the first output line and to the exit, for
//!
//! - **cldpd**: a long-lived `Dispatcher` over the Docker CLI backend (the
//!   realistic embedding); its first run builds the image, every later run
//!   finds it memoised (a fingerprint walk instead of `docker build`);
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
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("docker")
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
    assert!(status.success(), "docker run failed: {status}");
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
    println!("bench_docker_latency: agent prints one line and exits; cldpd (library, long-lived Dispatcher over the docker CLI) vs docker run --rm; {runs} interleaved rounds");
    print_machine();
    print_docker_versions();
    print_command("bench_docker_latency", &[("runs", runs.to_string())]);
    println!("note: the cldpd binary is not on main yet (src/main.rs is a stub); measured through the library only");

    let pod = DockerPod::new(STUB);
    let name = pod.name.clone();
    let image = pod.image();
    let state = tempfile::tempdir().unwrap();
    let settings = Settings::new(pod.pods_dir(), state.path());
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
        for round in 0..runs {
            for k in 0..3 {
                match (round + k) % 3 {
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
            println!(
                "run {}: cldpd first line {:.0} ms, exit {:.0} ms | docker run {:.0} / {:.0} ms | docker run with cldpd's flags {:.0} / {:.0} ms",
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
        let pairs: Vec<f64> = c_exit.iter().zip(&p_exit).map(|(c, p)| c / p).collect();
        println!("result: per-round ratio cldpd / docker run, exit: {}", spread(&pairs, "", 3));
    });
    drop(pod);
    println!("cleanup: image and containers removed");
}
