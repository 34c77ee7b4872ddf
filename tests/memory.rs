//! Memory stays bounded with a stuck subscriber (invariant 3), measured.
//!
//! Alone in its own test binary so that the process's resident memory is
//! this test's. A subscriber actor blocks its thread on the first event
//! while one session writes 1,000,000 lines of 80 bytes (80 MB of output);
//! the session's lag window must stay within its limit and the process's
//! peak RSS must grow far less than the output. Released, the subscriber
//! then receives every event, from the first, in order (fed from the log).

mod support;

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use actix::prelude::*;
use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, Event, EventKind, FanoutLimits, OutputStream, StartRequest};
use futures_util::StreamExt;
use support::fault::*;
use tokio::sync::oneshot;

const LINES: usize = 1_000_000;

struct Stuck {
    gate: Option<std_mpsc::Receiver<()>>,
    seen: Seen,
    next: u64,
    done: Option<oneshot::Sender<Seen>>,
}

impl Actor for Stuck {
    type Context = Context<Self>;
}

impl Handler<Event> for Stuck {
    type Result = ();
    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        if let Some(gate) = self.gate.take() {
            // Blocks this actor's thread until the test releases it.
            let _ = gate.recv();
        }
        record(&mut self.seen, &mut self.next, &ev);
        if ev.is_terminal() {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(std::mem::take(&mut self.seen));
            }
        }
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[actix::test]
async fn memory_stays_bounded_with_a_stuck_subscriber() {
    let dirs = Dirs::new(&[("flood", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod(
        "flood",
        RunScript::new()
            .lines(OutputStream::Stdout, LINES, 80, None)
            .hang(),
    );
    let limits = FanoutLimits {
        window_events: 4096,
        window_bytes: 4 * 1024 * 1024,
    };
    let d = Dispatcher::new(dirs.settings().fanout(limits), rt);

    let (release, gate) = std_mpsc::channel();
    let (done_tx, done) = oneshot::channel();
    let arbiter = Arbiter::new();
    let stuck = Stuck::start_in_arbiter(&arbiter.handle(), move |_| Stuck {
        gate: Some(gate),
        seen: Seen::default(),
        next: 1,
        done: Some(done_tx),
    });

    let baseline_kib = status_kib("VmRSS:");
    let s = d
        .start(StartRequest::prompt("flood", "go").subscribe(stuck.recipient::<Event>()))
        .await
        .unwrap();
    // All the output gets through although the subscriber is stuck: a
    // second, reading subscriber sees the last line.
    let mut events = s.events();
    let last = format!("out {LINES}");
    let reach_last = async {
        while let Some(ev) = events.next().await {
            if ev.line().is_some_and(|l| l.trim_end_matches('.') == last) {
                return;
            }
        }
        panic!("the stream ended before the last line");
    };
    within(300, "all lines past a stuck subscriber", reach_last).await;
    let peak_kib = status_kib("VmHWM:");
    let status = s
        .status()
        .await
        .expect("the session is alive (its agent hangs)");
    let growth_mib = peak_kib.saturating_sub(baseline_kib) as f64 / 1024.0;
    println!(
        "stuck subscriber, {LINES} lines of 80 B: baseline RSS {:.1} MiB, peak RSS {:.1} MiB, \
         growth {growth_mib:.1} MiB; lag window peak {} KiB (limit {} KiB), {} events replayed from the log so far",
        baseline_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        status.fanout.peak_window_bytes / 1024,
        limits.window_bytes / 1024,
        status.fanout.replayed_from_log,
    );
    assert!(status.fanout.peak_window_bytes <= limits.window_bytes + 4096);
    assert!(status.fanout.window_events <= limits.window_events);
    assert!(
        growth_mib < 48.0,
        "peak RSS grew by {growth_mib:.1} MiB while 80 MB of output passed a stuck subscriber"
    );
    // Stopping and waiting are not held up by the stuck subscriber either.
    assert_eq!(
        within(30, "stop", s.stop(Some(Duration::ZERO)))
            .await
            .unwrap(),
        137
    );

    // Released, it gets everything from the first event, in order.
    release.send(()).unwrap();
    let seen = within(300, "the replay", done).await.unwrap();
    assert!(
        seen.problems.is_empty(),
        "{:?}",
        &seen.problems[..seen.problems.len().min(5)]
    );
    assert_eq!(seen.stdout, LINES as u64);
    assert!(matches!(
        seen.terminal.unwrap().kind,
        EventKind::ContainerExited { code: 137 }
    ));
    arbiter.stop();
}
