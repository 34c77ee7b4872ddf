//! Owners and orphans over the FaultRuntime: `stop_orphans` reaps exactly
//! the runs whose owner process is gone; a dispatcher with `adopt_orphans`
//! takes over the orphans of its state directory (they count against
//! `max_concurrent`, shutdown stops them, and they are no longer orphans).
//! The same across real processes (one killed with SIGKILL) is in
//! `tests/cli_orphans.rs`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cldpd::owner::Owner;
use cldpd::runtime::{labels, FaultRuntime, RunScript, RunSpec, Runtime};
use cldpd::{Dispatcher, SessionState, StartRequest};
use futures_util::stream::BoxStream;
use support::fault::*;

/// Start a hanging fault container as if another dispatcher had.
fn foreign_run(
    rt: &FaultRuntime,
    session: &str,
    owner: &Owner,
    state_dir: &str,
) -> BoxStream<'static, cldpd::runtime::ProcessEvent> {
    let mut l: BTreeMap<String, String> = owner.labels().into_iter().collect();
    l.insert(labels::SESSION.into(), session.into());
    l.insert(labels::POD.into(), "web".into());
    l.insert(labels::STATE_DIR.into(), state_dir.into());
    rt.script_next_run("web", RunScript::new().hang());
    rt.run(RunSpec {
        session: session.into(),
        pod: "web".into(),
        container: session.into(),
        image: "cldpd-web".into(),
        command: vec!["claude".into()],
        env: vec![],
        workdir: None,
        mounts: vec![],
        labels: l,
        resources: Default::default(),
        line_cap: 1024,
        stdin: None,
        network: None,
    })
}

fn dead_owner() -> Owner {
    let mut o = Owner::current();
    o.pid = u32::MAX - 1;
    o
}

fn live_other_owner() -> Owner {
    Owner {
        pid: std::os::unix::process::parent_id(),
        start: None,
        ..Owner::current()
    }
}

#[actix::test]
async fn stop_orphans_reaps_exactly_the_runs_of_dead_owners() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang());
    let d1 = Dispatcher::new(dirs.settings(), rt.clone());
    let mine = d1.start(StartRequest::prompt("web", "go")).await.unwrap();
    // Its container exists (the `running` state comes as the runner
    // starts, before it asks the runtime for the container).
    wait_running(&mine).await;
    let state = dirs.state().display().to_string();
    let _orphan = foreign_run(&rt, "web-0000dead", &dead_owner(), &state);
    let _alive = foreign_run(&rt, "web-0000a11e", &live_other_owner(), &state);

    let d2 = Dispatcher::new(dirs.settings(), rt.clone());
    let runs = d2.runs().await.unwrap();
    let orphan_flags: BTreeMap<String, bool> =
        runs.iter().map(|r| (r.session.clone(), r.orphan)).collect();
    assert!(orphan_flags["web-0000dead"]);
    assert!(!orphan_flags["web-0000a11e"]);
    assert!(!orphan_flags[mine.id()]);

    let reaped = within(
        20,
        "stop --orphans",
        d2.stop_orphans(Some(Duration::from_millis(100))),
    )
    .await
    .unwrap();
    assert_eq!(
        reaped
            .iter()
            .map(|r| r.session.as_str())
            .collect::<Vec<_>>(),
        ["web-0000dead"]
    );
    let running = rt.running();
    assert!(!running.contains(&"web-0000dead".to_string()));
    assert!(running.contains(&"web-0000a11e".to_string()));
    assert!(running.contains(&mine.id().to_string()));
    mine.stop(Some(Duration::ZERO)).await.unwrap();
}

#[actix::test]
async fn a_restarted_dispatcher_adopts_the_orphans_of_its_state_dir() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let state = dirs.state().display().to_string();
    let _ours = foreign_run(&rt, "web-00000001", &dead_owner(), &state);
    let _theirs = foreign_run(&rt, "web-00000002", &dead_owner(), "/some/other/state");

    // The new dispatcher rebuilds its registry from the labels: the orphan
    // of its state dir holds the only slot.
    rt.script_pod("web", RunScript::new().stdout_lines(1).exit(0));
    let d = Dispatcher::new(
        dirs.settings().max_concurrent(1).adopt_orphans(true),
        rt.clone(),
    );
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    assert!(matches!(
        s.state(),
        SessionState::Queued { position: 1 } | SessionState::Created
    ));
    let runs = d.runs().await.unwrap();
    let orphan: BTreeMap<String, bool> =
        runs.iter().map(|r| (r.session.clone(), r.orphan)).collect();
    assert!(!orphan["web-00000001"], "adopted: its owner is alive again");
    assert!(
        orphan["web-00000002"],
        "another state dir's orphan is left alone"
    );

    // Another dispatcher's stop --orphans does not touch the adopted run.
    let other = Dispatcher::new(dirs.settings(), rt.clone());
    let reaped = other.stop_orphans(Some(Duration::ZERO)).await.unwrap();
    assert_eq!(
        reaped
            .iter()
            .map(|r| r.session.as_str())
            .collect::<Vec<_>>(),
        ["web-00000002"]
    );

    // When the adopted run ends, its slot goes to the queue.
    assert_eq!(rt.run_count("web"), 2);
    let events = s.events();
    let first: Vec<cldpd::Event> =
        futures_util::StreamExt::collect(futures_util::StreamExt::take(events, 1)).await;
    assert!(
        matches!(first[0].kind, cldpd::EventKind::Queued { position: 1 }),
        "{first:?}"
    );
    rt.remove("web-00000001").await.unwrap();
    assert_eq!(within(20, "the queued run", s.wait()).await.unwrap(), 0);
}

/// A run adopted by a live dispatcher is not an orphan to a process that
/// uses another state directory: the adoption is recorded in the run's own
/// state directory, and `stop_orphans` from elsewhere once took the run for
/// its dead first owner's and reaped it from under its adopter.
#[actix::test]
async fn an_adopted_run_is_no_orphan_to_a_dispatcher_of_another_state_dir() {
    let dirs = Dirs::new(&[("web", None)]);
    let elsewhere = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let state = dirs.state().display().to_string();
    let _run = foreign_run(&rt, "web-00000001", &dead_owner(), &state);
    let adopter = Dispatcher::new(dirs.settings().adopt_orphans(true), rt.clone());
    let adopted = adopter.adopted().await.unwrap();
    assert_eq!(adopted.len(), 1, "{adopted:?}");

    let other = Dispatcher::new(elsewhere.settings(), rt.clone());
    let runs = other.runs().await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(!runs[0].orphan, "its adopter lives: {runs:?}");
    let reaped = other.stop_orphans(Some(Duration::ZERO)).await.unwrap();
    assert!(reaped.is_empty(), "{reaped:?}");
    assert!(rt.running().contains(&"web-00000001".to_string()));
    adopter.shutdown(Some(Duration::ZERO)).await.unwrap();
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn shutdown_stops_adopted_runs_too() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let state = dirs.state().display().to_string();
    let _orphan = foreign_run(&rt, "web-000000aa", &dead_owner(), &state);
    let d = Dispatcher::new(dirs.settings().adopt_orphans(true), rt.clone());
    assert!(!d.runs().await.unwrap()[0].orphan);
    let record = cldpd::owner::adoption_path(&dirs.state(), "web-000000aa");
    assert!(record.exists(), "the adoption is recorded");
    within(20, "shutdown", d.shutdown(Some(Duration::from_millis(100))))
        .await
        .unwrap();
    assert!(rt.running().is_empty(), "{:?}", rt.running());
    // The run is gone: so is the record of who adopted it.
    assert!(!record.exists(), "{} left behind", record.display());
}

#[actix::test]
async fn a_stop_from_another_dispatcher_uses_the_runs_own_grace() {
    let dirs = Dirs::new(&[("stubborn", Some(r#"{ "stopGraceSecs": 0.2 }"#))]);
    let rt = FaultRuntime::new();
    rt.script_pod("stubborn", RunScript::new().hang().ignore_sigterm());
    // The default grace (10 s) would outlast the 5 s bound below.
    let owner = Dispatcher::new(dirs.settings(), rt.clone());
    let s = owner
        .start(StartRequest::prompt("stubborn", "go"))
        .await
        .unwrap();
    // Its container exists, for the other dispatcher to find.
    wait_running(&s).await;
    let other = Dispatcher::new(dirs.settings(), rt.clone());
    let report = within(5, "a stop with the pod's grace", other.stop(s.id(), None))
        .await
        .unwrap();
    assert_eq!(report.session, s.id());
    assert_eq!(
        report.code, None,
        "another process's run: its code is not known here"
    );
    assert_eq!(within(5, "the owner's view", s.wait()).await.unwrap(), 137);
}

#[actix::test]
async fn a_batch_shows_the_runs_it_adopted_and_stops_them_when_it_ends() {
    use cldpd::batch::{AdoptedState, Batch, Job, JobState};
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let state = dirs.state().display().to_string();
    let _a = foreign_run(&rt, "web-000000a1", &dead_owner(), &state);
    let _b = foreign_run(&rt, "web-000000b1", &dead_owner(), &state);
    rt.script_pod("web", RunScript::new().stdout_lines(1).exit(0));
    let d = Dispatcher::new(
        dirs.settings().max_concurrent(3).adopt_orphans(true),
        rt.clone(),
    );
    let batch = Batch::start(&d, vec![Job::prompt("web", "go")])
        .await
        .unwrap();
    let adopted: Vec<&str> = batch.adopted().iter().map(|r| r.session.as_str()).collect();
    assert_eq!(adopted, ["web-000000a1", "web-000000b1"]);
    let report = within(20, "the batch report", batch.report()).await;
    assert_eq!(report.jobs[0].state, JobState::Succeeded);
    let states: Vec<(&str, AdoptedState)> = report
        .adopted
        .iter()
        .map(|r| (r.session.as_str(), r.state))
        .collect();
    assert_eq!(
        states,
        [
            ("web-000000a1", AdoptedState::Stopped),
            ("web-000000b1", AdoptedState::Stopped)
        ]
    );
    assert!(rt.running().is_empty(), "{:?}", rt.running());
    assert!(d.adopted().await.unwrap().is_empty());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["adopted"][0]["state"], "stopped");
}

#[actix::test]
async fn stopping_a_batch_stops_its_adopted_runs_too() {
    use cldpd::batch::{AdoptedState, Batch, Job, JobState};
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let state = dirs.state().display().to_string();
    let _a = foreign_run(&rt, "web-000000a2", &dead_owner(), &state);
    rt.script_pod("web", RunScript::new().hang());
    // The adopted run holds the only slot: the job waits, queued.
    let d = Dispatcher::new(
        dirs.settings().max_concurrent(1).adopt_orphans(true),
        rt.clone(),
    );
    let batch = Batch::start(&d, vec![Job::prompt("web", "go")])
        .await
        .unwrap();
    assert_eq!(batch.adopted().len(), 1);
    wait_state(&batch.sessions()[0], 10, "queued", |s| {
        matches!(s, SessionState::Queued { .. })
    })
    .await;
    within(
        20,
        "the batch stop",
        batch.stop(Some(Duration::from_millis(100))),
    )
    .await;
    let report = within(20, "the batch report", batch.report()).await;
    assert_eq!(report.jobs[0].state, JobState::Stopped);
    assert_eq!(report.adopted.len(), 1);
    assert_eq!(report.adopted[0].state, AdoptedState::Stopped);
    assert!(rt.running().is_empty(), "{:?}", rt.running());
}

/// A dispatcher that dies (an injected panic) with an adopted run stops it
/// as `stop_adopted` and `shutdown` do: stopped, removed and its log ended
/// with a `stopped` error. Its death path once only stopped it, leaving
/// the log without a final event (and, on the Engine API backend, the
/// exited container).
#[actix::test]
async fn a_dispatcher_dying_in_a_panic_stops_and_ends_its_adopted_runs() {
    use cldpd::messages::dispatcher::InjectPanic;
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let state = dirs.state().display().to_string();
    let _run = foreign_run(&rt, "web-00000001", &dead_owner(), &state);
    // The log its dead cldpd left: started, no final event.
    let sessions = dirs.state().join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let started = cldpd::Event::new(
        "web-00000001",
        1,
        cldpd::EventKind::ContainerStarted {
            container: "web-00000001".into(),
            attempt: 0,
        },
    );
    let log = sessions.join("web-00000001.ndjson");
    std::fs::write(
        &log,
        format!("{}\n", serde_json::to_string(&started).unwrap()),
    )
    .unwrap();

    let d = Dispatcher::new(dirs.settings().adopt_orphans(true), rt.clone());
    assert_eq!(d.adopted().await.unwrap().len(), 1);
    d.addr().do_send(InjectPanic);
    let last = within(20, "the adopted run stopped and its log ended", async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            let last: serde_json::Value =
                serde_json::from_str(text.lines().last().unwrap()).unwrap();
            if last["type"] != "container_started" && rt.running().is_empty() {
                break last;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "stopped", "{last}");
    assert_eq!(last["seq"], 2, "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("the dispatcher that adopted it")),
        "{last}"
    );
}
