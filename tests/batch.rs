//! Batches over the FaultRuntime: 1000 jobs with a mix of outcomes and an
//! exact report; stop; validation before anything starts.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use cldpd::batch::{parse_jobs, Batch, Job, JobState};
use cldpd::runtime::{BuildScript, FaultRuntime, RunScript};
use cldpd::{Dispatcher, Error, PodConfig, RestartPolicy};
use futures_util::StreamExt;
use support::fault::*;

#[actix::test]
async fn a_thousand_jobs_with_mixed_outcomes_are_reported_exactly() {
    let dirs = Dirs::new(&[
        ("ok", None),
        ("bad", None),
        ("crash", None),
        ("nobuild", None),
        ("flaky", None),
    ]);
    let rt = FaultRuntime::new();
    rt.record_specs(false);
    rt.script_pod("ok", RunScript::new().stdout_lines(3).exit(0));
    rt.script_pod(
        "bad",
        RunScript::new().stdout_lines(30).stderr_lines(1).exit(3),
    );
    rt.script_pod(
        "crash",
        RunScript::new().stdout_lines(2).crash("engine lost it"),
    );
    rt.script_build(
        "cldpd-nobuild",
        BuildScript::fail(["Step 1/1 : RUN make", "make: no rule"], 2),
    );
    rt.script_pod("flaky", RunScript::new().stdout_lines(1).exit(1));
    let d = Dispatcher::new(dirs.settings().max_concurrent(50), rt.clone());
    let pods = ["ok", "bad", "crash", "nobuild", "flaky"];
    let flaky = PodConfig {
        restart: Some(RestartPolicy::OnFailure),
        max_restarts: Some(2),
        backoff_ms: Some(1),
        ..PodConfig::default()
    };
    let jobs: Vec<Job> = (0..1000)
        .map(|i| {
            let pod = pods[i % 5];
            let job = Job::prompt(pod, format!("job {i}"));
            if pod == "flaky" {
                job.overrides(flaky.clone())
            } else {
                job
            }
        })
        .collect();
    let batch = Batch::start(&d, jobs).await.unwrap();
    // Every event of every job comes through the merged stream.
    let events = batch.events();
    let (report, merged) = within(300, "the batch", async {
        futures_util::join!(batch.report(), events.collect::<Vec<_>>())
    })
    .await;
    let terminals = merged.iter().filter(|(_, e)| e.is_terminal()).count();
    assert_eq!(terminals, 1000);
    assert_eq!(report.total, 1000);
    assert_eq!(
        (report.succeeded, report.failed, report.stopped),
        (200, 800, 0)
    );
    assert!(!report.all_succeeded());
    let mut sessions = HashSet::new();
    for (i, job) in report.jobs.iter().enumerate() {
        assert_eq!(job.index, i);
        assert!(
            sessions.insert(job.session.clone()),
            "session ids are unique"
        );
        let code = job.error.as_ref().map(|e| e.code.as_str());
        match pods[i % 5] {
            "ok" => {
                assert_eq!(
                    (job.state, job.exit_code, code, job.restarts),
                    (JobState::Succeeded, Some(0), None, 0)
                );
                assert!(job.tail.is_empty());
            }
            "bad" => {
                assert_eq!(
                    (job.state, job.exit_code, code),
                    (JobState::Failed, Some(3), None)
                );
                // The last 20 lines of output, stdout and stderr.
                assert_eq!(job.tail.len(), 20);
                assert_eq!(job.tail.last().unwrap(), "err 1");
                assert_eq!(job.tail[0], "out 12");
            }
            "crash" => {
                assert_eq!(
                    (job.state, job.exit_code, code),
                    (JobState::Failed, None, Some("runtime_failed"))
                );
                assert_eq!(job.tail, ["out 1", "out 2"]);
            }
            "nobuild" => {
                assert_eq!((job.state, code), (JobState::Failed, Some("build_failed")));
                assert_eq!(job.tail, ["Step 1/1 : RUN make", "make: no rule"]);
            }
            "flaky" => {
                // The agent's last exit code is kept.
                assert_eq!(
                    (job.state, job.exit_code, code, job.restarts),
                    (JobState::Failed, Some(1), Some("restart_limit"), 2)
                );
                assert_eq!(job.tail, ["out 1", "out 1", "out 1"]);
            }
            _ => unreachable!(),
        }
    }
    assert!(rt.max_running() <= 50);
    assert_eq!(rt.build_count("cldpd-ok"), 1);
    assert!(rt.running().is_empty());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["jobs"][1]["state"], "failed");
    assert_eq!(json["jobs"][0]["exit_code"], 0);
}

#[actix::test]
async fn stopping_a_batch_stops_running_and_queued_jobs_and_reports_what_finished() {
    let dirs = Dirs::new(&[("quick", None), ("slow", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("quick", RunScript::new().exit(0));
    rt.script_pod("slow", RunScript::new().hang());
    let d = Dispatcher::new(dirs.settings().max_concurrent(2), rt.clone());
    let jobs = vec![
        Job::prompt("quick", "a"),
        Job::prompt("slow", "b"),
        Job::prompt("slow", "c"),
        Job::prompt("slow", "d"),
    ];
    let batch = Batch::start(&d, jobs).await.unwrap();
    // Wait until the two slow ones that fit are running (the quick one is done).
    let first = batch.sessions()[0].clone();
    within(30, "the quick job", first.wait()).await.unwrap();
    for s in &batch.sessions()[1..3] {
        wait_state(s, 30, "running", |s| {
            matches!(s, cldpd::SessionState::Running { .. })
        })
        .await;
    }
    within(30, "stop", batch.stop(Some(Duration::from_millis(100)))).await;
    let report = within(30, "report", batch.report()).await;
    let states: Vec<JobState> = report.jobs.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [
            JobState::Succeeded,
            JobState::Stopped,
            JobState::Stopped,
            JobState::Stopped
        ]
    );
    assert_eq!(
        report.jobs[3].error.as_ref().unwrap().code,
        "stopped",
        "the queued one never started"
    );
    assert_eq!(rt.run_count("slow"), 2);
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn a_bad_job_refuses_the_whole_batch_before_anything_starts() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let path = dirs.root.path().join("jobs.ndjson");
    let text = "{\"pod\":\"web\",\"prompt\":\"a\"}\n{\"pod\":\"nope\",\"prompt\":\"b\"}\n";
    let jobs = parse_jobs(text, &path).unwrap();
    match Batch::start(&d, jobs).await {
        Err(Error::BatchJob {
            index: 1,
            line: Some(2),
            source,
        }) => {
            assert!(matches!(*source, Error::PodNotFound { .. }))
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("the batch started"),
    }
    assert!(rt.runs().is_empty());
    assert!(d.sessions().await.unwrap().is_empty());
}

#[actix::test]
async fn a_job_failing_to_start_part_way_stops_the_jobs_already_started() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().stdout_lines(1).hang());
    // Job 3's mount source exists when the batch is checked, and is
    // removed while job 2 starts (its `inheritEnv` lookup): job 3 then
    // fails to start after jobs 1 and 2 did.
    let source = dirs.root.path().join("vanishing");
    std::fs::create_dir_all(&source).unwrap();
    let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (l, s) = (lookups.clone(), source.clone());
    let settings = dirs.settings().env_lookup(move |name| {
        if name == "TRIGGER" && l.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            let _ = std::fs::remove_dir_all(&s);
        }
        None
    });
    let d = Dispatcher::new(settings, rt.clone());
    let with_mount = PodConfig {
        mounts: vec![cldpd::Mount {
            source: source.display().to_string(),
            target: "/x".into(),
            read_only: false,
        }],
        ..PodConfig::default()
    };
    let trigger = PodConfig {
        inherit_env: vec!["TRIGGER".into()],
        ..PodConfig::default()
    };
    let jobs = vec![
        Job::prompt("web", "1"),
        Job::prompt("web", "2").overrides(trigger),
        Job::prompt("web", "3").overrides(with_mount),
        Job::prompt("web", "4"),
        Job::prompt("web", "5"),
    ];
    match within(30, "the batch start", Batch::start(&d, jobs)).await {
        Err(Error::BatchJob {
            index: 2, source, ..
        }) => {
            assert!(
                matches!(*source, Error::MountSourceMissing { .. }),
                "{source:?}"
            )
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("the batch started"),
    }
    // Nothing of the refused batch lives on.
    assert!(
        d.sessions().await.unwrap().is_empty(),
        "jobs 1-2 still live"
    );
    assert!(rt.running().is_empty(), "running: {:?}", rt.running());
}
