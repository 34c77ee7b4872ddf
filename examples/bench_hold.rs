//! Benchmark "hold" (issue 5, workload 3) over the fault runtime: N
//! sessions live at once, each printed one line and then blocks until
//! stopped. Reports starts per second (N `start` calls issued at once, until
//! the last returned), the time until every session has printed its line,
//! the resident memory per live session (RSS with N live minus RSS before,
//! divided by N), and the time to stop them all (`stop` on every session at
//! once, until the last resolved).
//!
//! ```text
//! cargo run --release --example bench_hold -- --sessions 10000 --runs 3
//! ```
//!
//! Options: `--sessions N`, `--runs N`, `--subscriber 1|0` (one shared
//! counting subscriber actor for all sessions, default 1), `--workers N`,
//! `--dir D` (where the temporary pods and state directories go).

#[path = "bench/common.rs"]
mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, Event, EventKind, OutputStream, Settings, StartRequest};
use common::*;
use futures_util::future::join_all;
use tokio::sync::oneshot;

/// Counts output lines of all sessions; reports when `want` have arrived.
struct Shared {
    lines: usize,
    want: usize,
    done: Option<oneshot::Sender<()>>,
}

impl Actor for Shared {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl Handler<Event> for Shared {
    type Result = ();
    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        if matches!(ev.kind, EventKind::Output { .. }) {
            self.lines += 1;
            if self.lines == self.want {
                if let Some(tx) = self.done.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

struct Run {
    starts: Duration,
    /// CPU of the dispatcher's thread during the start calls, and of the
    /// whole process until every session printed.
    dispatcher_cpu: f64,
    cpu: f64,
    all_printed: Duration,
    live_kib: u64,
    base_kib: u64,
    /// Heap bytes in use (allocated, not freed) before and with N live.
    heap_base: u64,
    heap_live: u64,
    stop_all: Duration,
    exit_143: usize,
}

async fn one_run(
    n: usize,
    subscriber: bool,
    workers: usize,
    base: Option<&std::path::Path>,
) -> Run {
    let dirs = FaultDirs::new("bench", base);
    let rt = FaultRuntime::new();
    rt.record_specs(false);
    rt.script_pod(
        "bench",
        RunScript::new()
            .lines(OutputStream::Stdout, 1, 80, None)
            .hang(),
    );
    let d = Dispatcher::new(
        Settings::new(dirs.pods(), dirs.state()).workers(workers),
        rt.clone(),
    );
    let (tx, printed) = oneshot::channel();
    // On its own thread, so the dispatcher's thread (this one) measures
    // the dispatcher alone.
    let sub_thread = Arbiter::new();
    let shared = Shared::start_in_arbiter(&sub_thread.handle(), move |_| Shared {
        lines: 0,
        want: n,
        done: Some(tx),
    });
    FaultDirs::settle().await;
    // Warm up: one session start to end, so that lazily allocated state
    // (threads, pod caches, allocator arenas) is in the baseline.
    let warm = d
        .start(StartRequest::prompt("bench", "warm-up"))
        .await
        .unwrap();
    warm.stop(Some(Duration::ZERO)).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base_kib = rss_kib();
    let heap_base = heap_in_use().0;

    let cpu0 = cpu_secs();
    let main0 = main_thread_cpu_secs();
    let t0 = Instant::now();
    let starts = (0..n).map(|_| {
        let mut req = StartRequest::prompt("bench", "go");
        if subscriber {
            req = req.subscribe(shared.clone().recipient());
        }
        d.start(req)
    });
    let sessions: Vec<_> = join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start"))
        .collect();
    let starts = t0.elapsed();
    let dispatcher_cpu = main_thread_cpu_secs() - main0;
    if subscriber {
        printed.await.unwrap();
    } else {
        // Without a subscriber: poll the runtime until every container runs
        // and each session has published its line (seq 4).
        loop {
            let mut all = true;
            for s in &sessions {
                match s.status().await {
                    Some(st) if st.last_seq >= 4 => {}
                    _ => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let all_printed = t0.elapsed();
    let cpu = cpu_secs() - cpu0;
    // Let transient buffers of the start burst settle, then measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live_kib = rss_kib();
    let heap_live = heap_in_use().0;
    if std::env::var_os("CLDPD_BENCH_NO_STOP").is_some() {
        // For heap profilers: end here, with every session live.
        println!(
            "live RSS {:.1} MiB; exiting without stopping",
            mib(live_kib)
        );
        std::process::exit(0);
    }

    let t1 = Instant::now();
    let outcomes = join_all(sessions.iter().map(|s| s.stop(None))).await;
    let stop_all = t1.elapsed();
    let exit_143 = outcomes.iter().filter(|o| matches!(o, Ok(143))).count();
    d.shutdown(None).await.unwrap();
    drop(sessions);
    sub_thread.stop();
    Run {
        starts,
        dispatcher_cpu,
        cpu,
        all_printed,
        live_kib,
        base_kib,
        heap_base,
        heap_live,
        stop_all,
        exit_143,
    }
}

fn main() {
    let args = Args::parse();
    let n: usize = args.get("sessions", 10_000);
    let runs: usize = args.get("runs", 3);
    let subscriber: u32 = args.get("subscriber", 1);
    let default_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers: usize = args.get("workers", default_workers);
    let base: String = args.get("dir", String::new());
    let base = (!base.is_empty()).then(|| std::path::PathBuf::from(&base));

    if is_child() {
        let r = actix::System::new()
            .block_on(async move { one_run(n, subscriber == 1, workers, base.as_deref()).await });
        let per = (r.live_kib.saturating_sub(r.base_kib) * 1024) as f64 / n as f64;
        println!(
            "run 1: {n} starts in {:.3} s ({:.0} starts/s; dispatcher thread CPU {:.1} µs/start), all printed after {:.3} s (process CPU {:.1} µs/session), RSS {:.1} → {:.1} MiB = {:.0} B per live session (heap in use {:.0} B), stop all {:.3} s ({} exited 143)",
            secs(r.starts),
            n as f64 / secs(r.starts),
            r.dispatcher_cpu * 1e6 / n as f64,
            secs(r.all_printed),
            r.cpu * 1e6 / n as f64,
            mib(r.base_kib),
            mib(r.live_kib),
            per,
            r.heap_live.saturating_sub(r.heap_base) as f64 / n as f64,
            secs(r.stop_all),
            r.exit_143,
        );
        emit_data(&[
            ("rate", n as f64 / secs(r.starts)),
            ("dispatcher_us", r.dispatcher_cpu * 1e6 / n as f64),
            ("cpu_us", r.cpu * 1e6 / n as f64),
            ("printed", secs(r.all_printed)),
            ("per_session", per),
            (
                "heap_per_session",
                r.heap_live.saturating_sub(r.heap_base) as f64 / n as f64,
            ),
            ("stop_all", secs(r.stop_all)),
            ("exit_143", r.exit_143 as f64),
        ]);
        return;
    }

    println!(
        "bench_hold: {n} live sessions, each printed one line then hangs; {}; {workers} session threads; one process per run",
        if subscriber == 1 {
            "one counting subscriber actor shared by all"
        } else {
            "no subscriber"
        }
    );
    print_fault_header(
        "bench_hold",
        base.as_deref(),
        vec![
            ("sessions", n.to_string()),
            ("runs", runs.to_string()),
            ("subscriber", subscriber.to_string()),
        ],
    );
    let data = run_children(runs);
    print_result("starts/s", &data, "rate", "starts/s", 0);
    print_result(
        "dispatcher thread CPU per start",
        &data,
        "dispatcher_us",
        "µs",
        1,
    );
    print_result(
        "process CPU per session (start to printed)",
        &data,
        "cpu_us",
        "µs",
        1,
    );
    println!(
        "result: all {n} printed their line after {}",
        spread(&column(&data, "printed"), "s", 3)
    );
    print_result("RSS per live session", &data, "per_session", "B", 0);
    print_result(
        "heap in use per live session",
        &data,
        "heap_per_session",
        "B",
        0,
    );
    print_result("stop all", &data, "stop_all", "s", 3);
}
