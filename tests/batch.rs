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

/// Claude Code's stream-json lines, as a fault run prints them: an
/// assistant turn, then a result costing `cost`.
fn agent_lines(cost: f64) -> Vec<u8> {
    format!(
        "{}\n{}\n",
        r#"{"type":"assistant","message":{"id":"msg_1","content":[{"type":"text","text":"working"}]}}"#,
        format_args!(
            r#"{{"type":"result","subtype":"success","is_error":false,"num_turns":3,"total_cost_usd":{cost},"duration_ms":5,"result":"done"}}"#
        )
    )
    .into_bytes()
}

/// Recorded from Claude Code 2.1.332 against the scripted model server
/// answering 429: it retries by itself and says so.
const API_RETRY_429: &str = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1025,"error_status":429,"error":"rate_limit","session_id":"228137a7-8f36-4519-87ad-b6e827e38333","uuid":"5dfae2d0-144f-46e1-931a-f4d8587abef0"}"#;

#[actix::test]
async fn the_report_gives_each_agents_turns_cost_and_result_and_the_totals() {
    let dirs = Dirs::new(&[
        ("agent", None),
        ("plain", Some(r#"{"agentOutput": "text"}"#)),
    ]);
    let rt = FaultRuntime::new();
    rt.script_pod(
        "agent",
        RunScript::new()
            .bytes(cldpd::OutputStream::Stdout, agent_lines(0.25))
            .exit(0),
    );
    rt.script_pod("plain", RunScript::new().stdout_lines(2).exit(0));
    let d = Dispatcher::new(dirs.settings().max_concurrent(2), rt.clone());
    let jobs = vec![
        Job::prompt("agent", "a"),
        Job::prompt("agent", "b"),
        Job::prompt("plain", "c"),
    ];
    let batch = Batch::start(&d, jobs).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), batch.report())
        .await
        .unwrap();
    assert_eq!(report.succeeded, 3, "{report:#?}");
    for j in &report.jobs[..2] {
        assert_eq!(
            (j.turns, j.cost_usd, j.result.as_deref()),
            (Some(3), Some(0.25), Some("success"))
        );
    }
    assert_eq!(
        (
            report.jobs[2].turns,
            report.jobs[2].cost_usd,
            &report.jobs[2].result
        ),
        (None, None, &None)
    );
    assert_eq!((report.turns, report.cost_usd), (6, 0.5));
    assert!(!report.budget_reached);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["cost_usd"], 0.5);
    assert_eq!(json["jobs"][0]["result"], "success");
    assert!(json["jobs"][2].get("turns").is_none(), "{json}");
}

#[actix::test]
async fn a_spent_budget_keeps_the_queued_jobs_from_starting() {
    let dirs = Dirs::new(&[("spend", None)]);
    let rt = FaultRuntime::new();
    // The first job reports its cost, then keeps running: the budget is
    // spent while the others wait for its slot.
    rt.script_pod(
        "spend",
        RunScript::new()
            .bytes(cldpd::OutputStream::Stdout, agent_lines(0.6))
            .hang(),
    );
    let d = Dispatcher::new(dirs.settings().max_concurrent(1), rt.clone());
    let jobs = (0..3)
        .map(|i| Job::prompt("spend", format!("job {i}")))
        .collect();
    let options = cldpd::batch::BatchOptions {
        budget_usd: Some(0.5),
        ..Default::default()
    };
    let batch = Batch::start_with(&d, jobs, options).await.unwrap();
    let queued: HashSet<String> = batch.sessions()[1..]
        .iter()
        .map(|s| s.id().to_string())
        .collect();
    // Wait until both queued jobs have ended (stopped before they started).
    let mut events = batch.events();
    let mut ended = HashSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((_, ev)) = events.next().await {
            if ev.is_terminal() {
                ended.insert(ev.session.to_string());
            }
            if ended == queued {
                break;
            }
        }
    })
    .await
    .expect("the queued jobs end once the budget is spent");
    let admission = batch.admission();
    assert!(admission.budget_reached, "{admission:?}");
    assert_eq!(admission.spent_usd, 0.6);
    // The running job goes on until stopped.
    assert_eq!(rt.running().len(), 1);
    batch.stop(Some(Duration::ZERO)).await;
    let report = tokio::time::timeout(Duration::from_secs(30), batch.report())
        .await
        .unwrap();
    assert_eq!(rt.run_count("spend"), 1, "only the first job ran");
    assert_eq!(report.jobs[0].state, JobState::Stopped);
    assert_eq!(report.jobs[0].cost_usd, Some(0.6));
    for j in &report.jobs[1..] {
        assert_eq!(j.state, JobState::NotStarted, "{j:?}");
        assert_eq!(j.error.as_ref().unwrap().code, "budget_spent");
    }
    assert_eq!(report.not_started, 2);
    assert!(report.budget_reached);
    assert_eq!(report.budget_usd, Some(0.5));
    assert_eq!(report.cost_usd, 0.6);
    // The hold is lifted once the batch is over: the dispatcher admits again.
    let s = d
        .start(cldpd::StartRequest::prompt("spend", "after"))
        .await
        .unwrap();
    let mut evs = s.events();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = evs.next().await {
            if matches!(ev.kind, cldpd::EventKind::ContainerStarted { .. }) {
                break;
            }
        }
    })
    .await
    .expect("admitted after the batch");
    s.stop(Some(Duration::ZERO)).await.ok();
}

#[actix::test]
async fn a_reported_rate_limit_holds_admissions_for_a_back_off() {
    let dirs = Dirs::new(&[("limited", None), ("next", None)]);
    let rt = FaultRuntime::new();
    // The agent reports a 429 it is retrying, then keeps running.
    rt.script_pod(
        "limited",
        RunScript::new()
            .bytes(
                cldpd::OutputStream::Stdout,
                format!("{API_RETRY_429}\n").into_bytes(),
            )
            .hang(),
    );
    rt.script_pod(
        "next",
        RunScript::new()
            .bytes(cldpd::OutputStream::Stdout, agent_lines(0.01))
            .exit(0),
    );
    let d = Dispatcher::new(dirs.settings().max_concurrent(1), rt.clone());
    let backoff = Duration::from_millis(700);
    let options = cldpd::batch::BatchOptions {
        backoff: Some(backoff),
        ..Default::default()
    };
    let batch = Batch::start_with(
        &d,
        vec![Job::prompt("limited", "a"), Job::prompt("next", "b")],
        options,
    )
    .await
    .unwrap();
    let mut admission = batch.admission_changes();
    let held = tokio::time::timeout(
        Duration::from_secs(30),
        admission.wait_for(|a| a.pauses == 1),
    )
    .await
    .expect("the rate limit is seen")
    .unwrap()
    .clone();
    let until = held.held_until.expect("a hold");
    assert!(
        held.reason
            .as_deref()
            .unwrap()
            .starts_with("rate_limited (HTTP 429) in limited-"),
        "{held:?}"
    );
    // The limited job ends; its slot is free, but the next job waits out
    // the back-off.
    let freed = std::time::Instant::now();
    batch.sessions()[0].stop(Some(Duration::ZERO)).await.ok();
    let mut events = batch.sessions()[1].events();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            if matches!(ev.kind, cldpd::EventKind::ContainerStarted { .. }) {
                return std::time::Instant::now();
            }
        }
        panic!("the next job never started");
    })
    .await
    .unwrap();
    assert!(
        started >= until,
        "started {:?} before the hold ended",
        until - started
    );
    assert!(until > freed, "the hold was over before the slot was freed");
    let report = tokio::time::timeout(Duration::from_secs(30), batch.report())
        .await
        .unwrap();
    assert_eq!(report.rate_limit_pauses, 1);
    assert_eq!(report.jobs[1].state, JobState::Succeeded);
}

#[actix::test]
async fn the_report_names_the_issue_as_the_agent_got_it() {
    let dirs = Dirs::new(&[("web", Some(r#"{"repository": "acme/web"}"#))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().exit(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let jobs = vec![
        Job::issue("web", "#42"),
        Job::issue("web", "acme/other#7"),
        Job::issue("web", "https://github.com/acme/web/issues/9"),
    ];
    let batch = Batch::start(&d, jobs).await.unwrap();
    let report = within(30, "report", batch.report()).await;
    let issues: Vec<Option<&str>> = report.jobs.iter().map(|j| j.issue.as_deref()).collect();
    assert_eq!(
        issues,
        [
            Some("https://github.com/acme/web/issues/42"),
            Some("https://github.com/acme/other/issues/7"),
            Some("https://github.com/acme/web/issues/9"),
        ]
    );
    assert!(report.jobs.iter().all(|j| j.state == JobState::Succeeded));
}

/// A batch job's prompt that begins with `-` reaches the agent as text on
/// its stdin, never as one of its options (issue 9, item 8): no argument
/// of any job's command is, or begins with, a prompt.
#[actix::test]
async fn a_batch_jobs_prompt_that_begins_with_a_dash_reaches_the_agent_as_text() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().exit(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let prompts = ["--dangerously-skip-permissions", "-p --model x", "--"];
    let jobs = prompts.iter().map(|p| Job::prompt("web", *p)).collect();
    let batch = Batch::start(&d, jobs).await.unwrap();
    let report = within(30, "report", batch.report()).await;
    assert!(report.jobs.iter().all(|j| j.state == JobState::Succeeded));
    let runs = rt.runs();
    assert_eq!(runs.len(), prompts.len());
    for spec in &runs {
        let conv = &spec.labels["cldpd.conversation"];
        assert_eq!(
            spec.command,
            [
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--session-id",
                conv.as_str()
            ],
            "the command has no prompt in it"
        );
    }
    let mut given: Vec<String> = rt
        .stdins()
        .iter()
        .map(|(_, stdin)| String::from_utf8(stdin.bytes().to_vec()).unwrap())
        .collect();
    given.sort();
    let mut want: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(given, want, "each prompt whole on its job's stdin");
}

/// A `DOCKER_*` name in a job's or a run's overrides is refused before
/// anything starts, naming it and never echoing its value (issue 9, item
/// 13): a job cannot send its `docker run`, with the keys it inherits, to
/// another daemon.
#[actix::test]
async fn a_docker_variable_in_a_jobs_or_a_runs_overrides_is_refused_before_anything_starts() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().exit(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let evil = || PodConfig {
        env: [("DOCKER_HOST".to_string(), "tcp://evil:2375".to_string())].into(),
        ..PodConfig::default()
    };
    let named_not_echoed = |e: &Error| {
        let text = format!("{e} {}", e.hint().unwrap_or_default());
        assert!(text.contains("DOCKER_HOST"), "{text}");
        assert!(!text.contains("evil"), "never echo a value: {text}");
    };
    let jobs = vec![
        Job::prompt("web", "a"),
        Job::prompt("web", "b").overrides(evil()),
    ];
    match Batch::start(&d, jobs).await {
        Err(Error::BatchJob {
            index: 1, source, ..
        }) => named_not_echoed(&source),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("the batch started"),
    }
    let mut request = cldpd::StartRequest::prompt("web", "c");
    request.overrides = evil();
    match d.start(request).await {
        Err(e) => named_not_echoed(&e),
        Ok(_) => panic!("the run started"),
    }
    assert!(rt.runs().is_empty());
    assert!(d.sessions().await.unwrap().is_empty());
}
