//! Panic containment of the dispatcher: a panic while it checks a start
//! request refuses that request only; a dispatcher that dies anyway (an
//! injected panic) stops its live runs, leaving no container.

mod support;

use std::time::Duration;

use cldpd::messages::dispatcher::InjectPanic;
use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, Error, SessionState, StartRequest};
use support::fault::*;

/// A dispatcher with pods `web` (its runs hang until stopped) and `bad`,
/// whose check panics: `bad` inherits `BOOM`, and looking `BOOM` up
/// panics.
fn panicking_on_pod_bad() -> (Dirs, FaultRuntime, Dispatcher) {
    let dirs = Dirs::new(&[("web", None), ("bad", Some(r#"{"inheritEnv": ["BOOM"]}"#))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang());
    let settings = dirs.settings().env_lookup(|name| {
        if name == "BOOM" {
            panic!("env lookup exploded");
        }
        None
    });
    let d = Dispatcher::new(settings, rt.clone());
    (dirs, rt, d)
}

#[actix::test]
async fn a_panic_while_checking_a_start_refuses_that_start_only() {
    let (_dirs, rt, d) = panicking_on_pod_bad();
    let first = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    wait_state(&first, 10, "running", |s| {
        matches!(s, SessionState::Running { .. })
    })
    .await;

    match d.start(StartRequest::prompt("bad", "go")).await {
        Err(Error::Internal { message }) => {
            assert!(message.contains("panicked"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The dispatcher lives on: its run goes on and it takes new ones.
    assert!(matches!(first.state(), SessionState::Running { .. }));
    let second = d.start(StartRequest::prompt("web", "again")).await.unwrap();
    wait_state(&second, 10, "running", |s| {
        matches!(s, SessionState::Running { .. })
    })
    .await;
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
    assert!(rt.running().is_empty(), "{:?}", rt.running());
}

/// A batch's pre-check (the dispatcher's `Validate`) goes through the same
/// guard: a panic there refuses the batch, and the dispatcher's live run
/// goes on.
#[actix::test]
async fn a_panic_while_checking_a_batch_refuses_the_batch_only() {
    use cldpd::batch::{Batch, Job};
    let (_dirs, rt, d) = panicking_on_pod_bad();
    let live = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    wait_state(&live, 10, "running", |s| {
        matches!(s, SessionState::Running { .. })
    })
    .await;
    let jobs = vec![Job::prompt("web", "a"), Job::prompt("bad", "b")];
    match Batch::start(&d, jobs).await {
        Err(Error::BatchJob {
            index: 1, source, ..
        }) => match *source {
            Error::Internal { ref message } => assert!(message.contains("panicked"), "{message}"),
            ref e => panic!("{e:?}"),
        },
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("the batch started"),
    }
    assert!(matches!(live.state(), SessionState::Running { .. }));
    assert_eq!(
        d.sessions().await.unwrap().len(),
        1,
        "nothing of the batch started"
    );
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
    assert!(rt.running().is_empty(), "{:?}", rt.running());
}

#[actix::test]
async fn a_dispatcher_dying_in_a_panic_stops_its_live_runs() {
    let dirs = Dirs::new(&[("web", Some(r#"{"stopGraceSecs": 0.2}"#))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang());
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let mut sessions = Vec::new();
    for i in 0..3 {
        let s = d
            .start(StartRequest::prompt("web", format!("run {i}")))
            .await
            .unwrap();
        wait_state(&s, 10, "running", |s| {
            matches!(s, SessionState::Running { .. })
        })
        .await;
        sessions.push(s);
    }
    assert_eq!(rt.running().len(), 3);
    d.addr().do_send(InjectPanic);
    for s in &sessions {
        let _ = within(20, "the run to end", s.wait()).await;
    }
    within(20, "no container left", async {
        while !rt.running().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
