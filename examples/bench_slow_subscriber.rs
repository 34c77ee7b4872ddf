//! Benchmark "slow subscriber" (issue 5, workload 2) over the fault runtime:
//! one session writes 1,000,000 lines of 80 bytes; its only subscriber
//! actor sleeps 1 ms every 1000 events (blocking its thread). The subscriber
//! falls behind, is fed from the lag window and the session log, and must
//! still receive every line in order. Reports peak RSS of the process (the
//! target: under 64 MiB), lines lost, and how long the run and the catch-up
//! took.
//!
//! ```text
//! cargo run --release --example bench_slow_subscriber -- --runs 3
//! ```
//!
//! Options: `--lines N` (default 1000000), `--every N` / `--sleep-ms N`
//! (default: 1 ms every 1000 events), `--mailbox N` (subscriber mailbox,
//! default 16, actix's default), `--dir D` (where the temporary pods and
//! state directories go).

#[path = "bench/common.rs"]
mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, EventKind, OutputStream, Settings, StartRequest};
use common::*;
use tokio::sync::oneshot;

struct Run {
    exit_at: Duration,
    caught_up: Duration,
    lines: u64,
    errors: u64,
    terminal_ok: bool,
    base_kib: u64,
    peak_kib: u64,
}

async fn one_run(
    lines: usize,
    every: u64,
    sleep: Duration,
    mailbox: usize,
    base: Option<&std::path::Path>,
) -> Run {
    let dirs = FaultDirs::new("bench", base);
    let rt = FaultRuntime::new();
    rt.record_specs(false);
    rt.script_pod(
        "bench",
        RunScript::new()
            .lines(OutputStream::Stdout, lines, 80, None)
            .exit(0),
    );
    let d = Dispatcher::new(Settings::new(dirs.pods(), dirs.state()), rt);
    let arbiter = Arbiter::new();
    let (tx, rx) = oneshot::channel();
    let sub = Counter::start_in_arbiter(&arbiter.handle(), move |_| {
        Counter::new(mailbox, tx).slow(every, sleep)
    });
    d.build_count().await.unwrap();
    let base_kib = rss_kib();
    reset_peak();
    let t0 = Instant::now();
    let s = d
        .start(StartRequest::prompt("bench", "go").subscribe(sub.recipient()))
        .await
        .expect("start");
    let code = s.wait().await.expect("wait");
    let exit_at = t0.elapsed();
    let tally = rx.await.expect("tally");
    let caught_up = t0.elapsed();
    let peak_kib = peak_kib();
    d.shutdown(None).await.unwrap();
    arbiter.stop();
    Run {
        exit_at,
        caught_up,
        lines: tally.lines,
        errors: tally.seq_errors + tally.order_errors,
        terminal_ok: code == 0
            && matches!(
                tally.terminal.as_ref().map(|e| &e.kind),
                Some(EventKind::ContainerExited { code: 0 })
            ),
        base_kib,
        peak_kib,
    }
}

fn main() {
    let args = Args::parse();
    let lines: usize = args.get("lines", 1_000_000);
    let runs: usize = args.get("runs", 3);
    let every: u64 = args.get("every", 1000);
    let sleep_ms: u64 = args.get("sleep-ms", 1);
    let mailbox: usize = args.get("mailbox", 16);
    let base: String = args.get("dir", String::new());
    let base = (!base.is_empty()).then(|| std::path::PathBuf::from(&base));
    let sleep = Duration::from_millis(sleep_ms);

    if is_child() {
        let r = actix::System::new()
            .block_on(async move { one_run(lines, every, sleep, mailbox, base.as_deref()).await });
        println!(
            "run 1: container exited after {:.3} s, subscriber caught up after {:.3} s, lines {} (lost {}), seq/order errors {}, terminal event ok {}, RSS before {:.1} MiB, peak RSS {:.1} MiB",
            secs(r.exit_at),
            secs(r.caught_up),
            r.lines,
            lines as i64 - r.lines as i64,
            r.errors,
            r.terminal_ok,
            mib(r.base_kib),
            mib(r.peak_kib)
        );
        emit_data(&[
            ("exit", secs(r.exit_at)),
            ("caught", secs(r.caught_up)),
            ("lost", lines as f64 - r.lines as f64),
            ("errors", r.errors as f64),
            ("terminal_ok", if r.terminal_ok { 1.0 } else { 0.0 }),
            ("peak_mib", mib(r.peak_kib)),
        ]);
        return;
    }

    println!("bench_slow_subscriber: 1 session x {lines} lines of 80 B; the subscriber (mailbox {mailbox}) sleeps {sleep_ms} ms every {every} events; one process per run");
    print_fault_header(
        "bench_slow_subscriber",
        base.as_deref(),
        vec![
            ("lines", lines.to_string()),
            ("runs", runs.to_string()),
            ("mailbox", mailbox.to_string()),
        ],
    );
    let data = run_children(runs);
    let lost: f64 = column(&data, "lost").iter().map(|x| x.abs()).sum();
    let errors: f64 = column(&data, "errors").iter().sum();
    let ok: f64 = column(&data, "terminal_ok").iter().sum();
    print_result("peak RSS", &data, "peak_mib", "MiB", 1);
    println!("result: lines lost {lost} (all runs); seq/order errors {errors}; terminal events {ok} of {runs}");
    print_result("container exit after", &data, "exit", "s", 3);
    print_result("subscriber caught up after", &data, "caught", "s", 3);
}
