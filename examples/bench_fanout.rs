//! Benchmark "fanout" (issue 5, workload 1) over the fault runtime: S
//! sessions started at once, each emitting L lines of 80 bytes, one counting
//! subscriber actor per session. Reports wall time (first start → last
//! terminal event received), lines/s delivered, lines lost, terminal events
//! received, seq/order errors and peak RSS, per run and as medians.
//!
//! ```text
//! cargo run --release --example bench_fanout -- --sessions 1000 --lines 1000 --runs 5
//! cargo run --release --example bench_fanout -- --sessions 1 --lines 1000000 --runs 5
//! ```
//!
//! Options: `--mailbox N` (subscriber mailbox capacity, default 4096),
//! `--workers N` (session threads, default: cores), `--sub-threads N`
//! (subscriber threads, default 1), `--dir D` (where the temporary pods and
//! state directories go; default the system temp dir), `--deliver
//! events|batches` (the subscriber takes one `Event` message per event,
//! the default, or `EventBatch` messages: `Subscriber::Batches`),
//! `--output plain|agent` (plain: the 80-byte lines above; agent: each
//! session prints a Claude Code stream-json transcript of L lines of
//! realistic size, see `bench/transcript.rs`, which the session parses
//! into one agent event per line; the run then also counts the agent
//! events and reports MB/s), `--heap-peak 1` (also sample the heap in use
//! every 5 ms and report its peak beside the peak RSS).
//!
//! ```text
//! cargo run --release --example bench_fanout -- --sessions 1000 --lines 200 --output agent --deliver batches
//! ```

#[path = "bench/common.rs"]
mod common;
#[path = "bench/transcript.rs"]
mod transcript;

use std::time::{Duration, Instant};

use actix::prelude::*;
use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, EventKind, OutputStream, Settings, StartRequest, Subscriber};
use common::*;
use futures_util::future::join_all;
use tokio::sync::oneshot;

struct Run {
    wall: Duration,
    cpu: f64,
    start_calls: Duration,
    lines: u64,
    line_bytes: u64,
    agent_events: u64,
    lost: i64,
    terminals: u64,
    exited_0: u64,
    seq_errors: u64,
    order_errors: u64,
    peak_kib: u64,
    /// Most bytes glibc's allocator had handed out at one sample
    /// (`--heap-peak 1`), or 0.
    peak_heap: u64,
    base_kib: u64,
}

/// How a run delivers: the options besides its size.
struct Delivery {
    /// Subscriber mailbox capacity.
    mailbox: usize,
    /// Session threads.
    workers: usize,
    /// `Settings::lag_budget`, or the library's default.
    lag_budget: Option<usize>,
    /// `Subscriber::Batches` instead of `Subscriber::Actor`.
    batches: bool,
    /// A stream-json transcript instead of plain lines.
    agent: bool,
    /// Sample the heap in use every 5 ms (mallinfo2 takes the allocator's
    /// locks, so off for the A/B figures).
    heap_peak: bool,
}

async fn one_run(
    sessions: usize,
    lines: usize,
    how: &Delivery,
    sub_threads: &[Arbiter],
    base: Option<&std::path::Path>,
) -> Run {
    let Delivery {
        mailbox,
        workers,
        lag_budget,
        batches,
        agent,
        heap_peak,
    } = *how;
    let dirs = FaultDirs::new("bench", base);
    let rt = FaultRuntime::new();
    rt.record_specs(false);
    let script = if agent {
        RunScript::new().bytes(OutputStream::Stdout, transcript::transcript(lines))
    } else {
        RunScript::new().lines(OutputStream::Stdout, lines, 80, None)
    };
    rt.script_pod("bench", script.exit(0));
    FaultDirs::settle().await;
    let mut settings = Settings::new(dirs.pods(), dirs.state()).workers(workers);
    if let Some(bytes) = lag_budget {
        settings = settings.lag_budget(bytes);
    }
    let d = Dispatcher::new(settings, rt);
    // The subscribers, spread over their threads.
    let mut subs = Vec::with_capacity(sessions);
    let mut dones = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (tx, rx) = oneshot::channel();
        let arb = &sub_threads[i % sub_threads.len()];
        subs.push(Counter::start_in_arbiter(&arb.handle(), move |_| {
            let counter = Counter::new(mailbox, tx);
            // Transcript lines are not numbered `out <n>`; their order is
            // checked through the agent events that follow each line.
            if agent {
                counter.unchecked()
            } else {
                counter
            }
        }));
        dones.push(rx);
    }
    // Settle (arbiter threads up, the dispatcher's workers started).
    d.build_count().await.unwrap();
    let base_kib = rss_kib();
    reset_peak();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = heap_peak.then(|| {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(heap_in_use().0);
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    });
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let starts = subs.iter().map(|s| {
        let subscriber = if batches {
            Subscriber::Batches(s.clone().recipient())
        } else {
            Subscriber::Actor(s.clone().recipient())
        };
        d.start(StartRequest::prompt("bench", "go").subscribe(subscriber))
    });
    let started = join_all(starts).await;
    let start_calls = t0.elapsed();
    for s in &started {
        if let Err(e) = s {
            panic!("start failed: {e}");
        }
    }
    let tallies = join_all(dones).await;
    let wall = t0.elapsed();
    let cpu = cpu_secs() - cpu0;
    let peak_kib = peak_kib();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_heap = sampler.map_or(0, |t| t.join().expect("heap sampler"));
    let mut run = Run {
        wall,
        cpu,
        start_calls,
        lines: 0,
        line_bytes: 0,
        agent_events: 0,
        lost: 0,
        terminals: 0,
        exited_0: 0,
        seq_errors: 0,
        order_errors: 0,
        peak_kib,
        peak_heap,
        base_kib,
    };
    for t in tallies {
        let t = t.expect("subscriber reported");
        run.lines += t.lines;
        run.line_bytes += t.line_bytes;
        run.agent_events += t.agent_events;
        run.seq_errors += t.seq_errors;
        run.order_errors += t.order_errors;
        if let Some(ev) = &t.terminal {
            run.terminals += 1;
            if matches!(ev.kind, EventKind::ContainerExited { code: 0 }) {
                run.exited_0 += 1;
            }
        }
    }
    run.lost = (sessions * lines) as i64 - run.lines as i64;
    if agent {
        // One agent event per transcript line.
        run.lost += (sessions * lines) as i64 - run.agent_events as i64;
    }
    for s in started.into_iter().flatten() {
        s.wait().await.unwrap();
    }
    d.shutdown(None).await.unwrap();
    run
}

fn main() {
    let args = Args::parse();
    let sessions: usize = args.get("sessions", 1000);
    let lines: usize = args.get("lines", 1000);
    let runs: usize = args.get("runs", 5);
    let mailbox: usize = args.get("mailbox", 4096);
    let default_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers: usize = args.get("workers", default_workers);
    let sub_threads: usize = args.get("sub-threads", 1);
    let base: String = args.get("dir", String::new());
    let base = (!base.is_empty()).then(|| std::path::PathBuf::from(&base));
    // `--lag-budget-mib N`: Settings::lag_budget (default: the library's).
    let lag_mib: usize = args.get("lag-budget-mib", 0);
    let lag_budget = (lag_mib > 0).then_some(lag_mib * 1024 * 1024);
    let total = (sessions * lines) as f64;
    let batches = args.either("deliver", "events", "batches");
    let agent = args.either("output", "plain", "agent");

    let heap_peak = args.get("heap-peak", 0u32) == 1;

    if is_child() {
        let r = actix::System::new().block_on(async move {
            let arbiters: Vec<Arbiter> = (0..sub_threads).map(|_| Arbiter::new()).collect();
            let how = Delivery {
                mailbox,
                workers,
                lag_budget,
                batches,
                agent,
                heap_peak,
            };
            let r = one_run(sessions, lines, &how, &arbiters, base.as_deref()).await;
            for a in arbiters {
                a.stop();
            }
            r
        });
        println!(
            "run 1: wall {:.3} s, {:.0} lines/s, CPU {:.2} s ({:.2} µs/line), lost {}, terminal events {}/{} (exit 0: {}), seq errors {}, order errors {}, start calls {:.3} s, RSS before {:.1} MiB, peak RSS {:.1} MiB",
            secs(r.wall),
            total / secs(r.wall),
            r.cpu,
            r.cpu * 1e6 / total,
            r.lost,
            r.terminals,
            sessions,
            r.exited_0,
            r.seq_errors,
            r.order_errors,
            secs(r.start_calls),
            mib(r.base_kib),
            mib(r.peak_kib),
        );
        if heap_peak {
            println!(
                "run 1 heap: at most {:.1} MiB in use (sampled every 5 ms) against a peak RSS of {:.1} MiB",
                r.peak_heap as f64 / 1048576.0,
                mib(r.peak_kib),
            );
        }
        if agent {
            println!(
                "run 1 agent: {} agent events ({:.0}/s), output lines {:.1} MB/s ({:.0} B per line on average)",
                r.agent_events,
                r.agent_events as f64 / secs(r.wall),
                r.line_bytes as f64 / 1e6 / secs(r.wall),
                r.line_bytes as f64 / r.lines.max(1) as f64,
            );
        }
        emit_data(&[
            ("agent_rate", r.agent_events as f64 / secs(r.wall)),
            ("mb_per_s", r.line_bytes as f64 / 1e6 / secs(r.wall)),
            ("wall", secs(r.wall)),
            ("rate", total / secs(r.wall)),
            ("cpu_us_per_line", r.cpu * 1e6 / total),
            ("lost", r.lost as f64),
            ("terminals", r.terminals as f64),
            ("errors", (r.seq_errors + r.order_errors) as f64),
            ("peak_mib", mib(r.peak_kib)),
        ]);
        return;
    }

    let shape = if agent {
        "lines of a stream-json transcript (parsed into agent events)"
    } else {
        "lines of 80 B"
    };
    println!("bench_fanout: {sessions} sessions x {lines} {shape}, one counting subscriber each (mailbox {mailbox}, one message per {}), {workers} session threads, {sub_threads} subscriber thread(s), one process per run", if batches { "batch" } else { "event" });
    print_fault_header(
        "bench_fanout",
        base.as_deref(),
        vec![
            ("sessions", sessions.to_string()),
            ("lines", lines.to_string()),
            ("runs", runs.to_string()),
            ("mailbox", mailbox.to_string()),
            ("deliver", if batches { "batches" } else { "events" }.into()),
            ("output", if agent { "agent" } else { "plain" }.into()),
            ("heap-peak", u32::from(heap_peak).to_string()),
        ],
    );
    let data = run_children(runs);
    let lost: f64 = column(&data, "lost").iter().map(|x| x.abs()).sum();
    let terminals: f64 = column(&data, "terminals").iter().sum();
    let errors: f64 = column(&data, "errors").iter().sum();
    print_result("wall time", &data, "wall", "s", 3);
    print_result("delivered", &data, "rate", "lines/s", 0);
    print_result(
        "CPU time per line (all threads)",
        &data,
        "cpu_us_per_line",
        "µs",
        3,
    );
    println!("result: lines lost {lost} (all runs)");
    println!(
        "result: terminal events received {terminals} of {} (all runs); seq/order errors {errors}",
        sessions * runs
    );
    print_result("peak RSS", &data, "peak_mib", "MiB", 1);
    if agent {
        print_result("agent events", &data, "agent_rate", "events/s", 0);
        print_result("output delivered", &data, "mb_per_s", "MB/s", 1);
    }
}
