//! The memory of lagging subscribers is bounded over the whole dispatcher
//! (issue 9, item 12): `Settings::lag_budget`, shared by every session's
//! lag window. Many sessions, each with a subscriber that reads nothing:
//! together their windows hold at most the budget (give or take one event
//! each); the rest is fed from the session logs, so every subscriber still
//! gets every event, in order, once it reads.

mod support;

use std::time::Duration;

use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, EventKind, OutputStream, StartRequest};
use futures_util::future::join_all;
use support::fault::*;

#[actix::test]
async fn all_lag_windows_together_stay_within_the_dispatchers_lag_budget() {
    let sessions = 20;
    let lines = 2000;
    let budget = 1 << 20;
    let dirs = Dirs::new(&[("a", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod(
        "a",
        RunScript::new()
            .lines(OutputStream::Stdout, lines, 200, None)
            .hang(),
    );
    // Each window alone may hold 4 MiB: all 2,000 events of its run
    // (about 650 KB), 13 MB for the twenty, were it not for the budget.
    let d = Dispatcher::new(dirs.settings().lag_budget(budget), rt.clone());
    let mut runs = Vec::new();
    for _ in 0..sessions {
        // Room for one event, never read until the end: stuck.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let s = d
            .start(StartRequest::prompt("a", "go").subscribe(tx))
            .await
            .unwrap();
        runs.push((s, rx));
    }
    // Every run has written all its lines (build events, container start,
    // then the lines).
    within(60, "every line published", async {
        loop {
            let mut done = 0;
            for (s, _) in &runs {
                let st = s.status().await.expect("a live session");
                if st.last_seq >= lines as u64 + 3 && st.fanout.lagging == 1 {
                    done += 1;
                }
            }
            if done == sessions {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut held = 0;
    for (s, _) in &runs {
        held += s
            .status()
            .await
            .expect("a live session")
            .fanout
            .window_bytes;
    }
    assert!(
        held <= budget + sessions * 1024,
        "the lag windows hold {held} bytes, over the budget of {budget}"
    );

    // Stop the runs, then read: every event, in order, from the log.
    let stops = runs
        .iter()
        .map(|(s, _)| s.stop(Some(Duration::ZERO)))
        .collect::<Vec<_>>();
    for code in join_all(stops).await {
        assert_eq!(code.unwrap(), 137);
    }
    for (s, mut rx) in runs {
        let got = within(60, "the subscriber's events", async {
            let mut seq = 0;
            let mut outputs = 0;
            let mut terminal = false;
            while let Some(ev) = rx.recv().await {
                assert_eq!(ev.seq, seq + 1, "gapless, in order ({})", s.id());
                assert!(!terminal, "nothing after the terminal event");
                seq = ev.seq;
                terminal = ev.is_terminal();
                if let EventKind::Output { line, .. } = &ev.kind {
                    outputs += 1;
                    assert!(line.starts_with(&format!("out {outputs}")), "{line}");
                }
            }
            assert!(terminal, "the stream ends with its terminal event");
            outputs
        })
        .await;
        assert_eq!(got, lines, "every line of {}", s.id());
    }
    d.shutdown(None).await.unwrap();
}
