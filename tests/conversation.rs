//! One long-lived agent per run (`agentInput: "stream-json"`), over
//! `FaultRuntime`'s stand-in for Claude Code (`RunScript::converse`, which
//! prints what Claude Code prints for each stream-json user message):
//! follow-ups written to the open stdin of the one agent process, turns
//! tracked by their ids, `idle` and the keep-alive, resumes from the
//! dispatcher answered from the run's log.

mod support;

use std::time::Duration;

use cldpd::runtime::{FaultRuntime, RunScript, StopSignal};
use cldpd::{Dispatcher, Error, EventKind, SessionState, StartRequest};
use support::fault::*;
use support::git::git;

const LIVE: &str = r#"{"agentInput": "stream-json", "keepAliveSecs": 60, "stopGraceSecs": 5}"#;

/// What Claude Code prints when an API call failed: an error under
/// `subtype: "success"`.
const FAILING_RESULT: &str = r#"{"type":"result","subtype":"success","is_error":true,"num_turns":1,"api_error_status":529,"result":"API Error: 529 overloaded"}"#;

fn converse(turn_ms: u64) -> RunScript {
    RunScript::new().converse(Duration::from_millis(turn_ms))
}

/// The result texts of a run's `agent_result` events, in order.
fn results(seen: &Seen) -> Vec<String> {
    seen.all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentResult(r) => r.result.clone(),
            _ => None,
        })
        .collect()
}

async fn wait_idle(s: &cldpd::Session, turns: u32) {
    wait_state(
        s,
        20,
        "idle",
        |st| matches!(st, SessionState::Idle { turns: t, .. } if *t >= turns),
    )
    .await;
}

#[actix::test]
async fn follow_ups_reach_the_one_live_agent_in_order_and_it_goes_idle_between() {
    let dirs = Dirs::new(&[("web", Some(LIVE))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(30));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "first")).await.unwrap();
    wait_idle(&s, 1).await;
    assert!(s.is_idle());
    // Two while idle, back to back: the second is queued behind the first.
    let a = s.send("second").await.unwrap();
    let b = s.send("third").await.unwrap();
    assert_ne!(a, b);
    assert!(!s.is_idle(), "a follow-up wakes the agent at once");
    wait_idle(&s, 3).await;
    let c = s.send("fourth").await.unwrap();
    wait_idle(&s, 4).await;
    // One container, one agent process: no exec, no second run.
    assert_eq!(rt.run_count("web"), 1);
    assert!(rt.execs().is_empty());
    let stdins = rt.stdins();
    assert_eq!(stdins.len(), 4, "{stdins:?}");
    assert!(stdins[0].1.keeps_open());
    let code = within(20, "stop", s.stop(None)).await.unwrap();
    assert_eq!(code, 143);
    let seen = collect(&s).await;
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert!(seen
        .all
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Output { line, .. } if line.contains(&c))));
    let template_free = results(&seen)
        .into_iter()
        .map(|r| r.split(": ").nth(1).unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    assert_eq!(template_free[1..], ["second", "third", "fourth"]);
    let idles = seen
        .all
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Idle { .. }))
        .count();
    assert_eq!(idles, 3, "idle after turn 1, after turns 2+3, after turn 4");
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn without_keep_alive_the_run_ends_once_the_first_prompt_is_answered() {
    let dirs = Dirs::new(&[("web", Some(r#"{"agentInput": "stream-json"}"#))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(10));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "only")).await.unwrap();
    // Ended by cldpd (TERM), reported by the answer: exit 0.
    assert_eq!(within(20, "the end", s.wait()).await.unwrap(), 0);
    let seen = collect(&s).await;
    assert_flow(
        &seen.flow,
        &[
            "queued?",
            "build_started",
            "build_output*",
            "build_complete",
            "container_started",
            "output",
            "agent_turn",
            "output",
            "agent_prompt",
            "output",
            "agent_text",
            "output",
            "agent_result",
            "output",
            "agent_turn",
            "idle",
            "container_exited",
        ],
    );
    let name = &rt.runs()[0].container;
    assert_eq!(rt.signals(name), [StopSignal::Term]);
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn the_keep_alive_runs_out_and_a_follow_up_before_that_resets_it() {
    let dirs = Dirs::new(&[(
        "web",
        Some(r#"{"agentInput": "stream-json", "keepAliveSecs": 0.3}"#),
    )]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "one")).await.unwrap();
    wait_idle(&s, 1).await;
    s.send("two").await.unwrap();
    wait_idle(&s, 2).await;
    assert_eq!(within(20, "the end", s.wait()).await.unwrap(), 0);
    let seen = collect(&s).await;
    assert_eq!(results(&seen).len(), 2);
    // A run that has ended takes no follow-up.
    assert!(matches!(s.end().await, Ok(0)));
    assert!(matches!(
        s.send("three").await,
        Err(Error::SessionNotFound { .. } | Error::InputUnavailable { .. })
    ));
}

#[actix::test]
async fn an_error_result_fails_the_run_when_it_ends() {
    let dirs = Dirs::new(&[("web", Some(r#"{"agentInput": "stream-json"}"#))]);
    let rt = FaultRuntime::new();
    // An agent that answers with an error result, then waits.
    rt.script_pod(
        "web",
        RunScript::new()
            .bytes(cldpd::OutputStream::Stdout, format!("{FAILING_RESULT}\n"))
            .hang(),
    );
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    // Without lifecycle lines (an older agent) the turn is not tracked: the
    // run waits for the agent; a stop ends it with the result's error.
    wait_running(&s).await;
    let _ = within(20, "stop", s.stop(Some(Duration::ZERO))).await;
    match s.wait().await {
        Err(e @ Error::AgentFailed { .. }) => assert_eq!(e.code(), "api_error"),
        other => panic!("{other:?}"),
    }
}

/// The session keeps its stream-json parser only while it holds something
/// (a split line, the result): what it holds must outlive the batches of
/// output in between.
#[actix::test]
async fn a_result_split_over_batches_or_followed_by_more_output_still_counts() {
    let dirs = Dirs::new(&[("split", None), ("failing", None)]);
    let rt = FaultRuntime::new();
    // A result line of 2.5 MiB: the fault engine hands output over in
    // batches of at most 256 KiB, and the line arrives as partial pieces
    // (cut at the 1 MiB line cap) in different batches.
    let long = "x".repeat(5 * 512 * 1024);
    let split = format!(
        r#"{{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"{long}"}}"#
    );
    rt.script_pod(
        "split",
        RunScript::new()
            .bytes(cldpd::OutputStream::Stdout, "not json\n")
            .bytes(cldpd::OutputStream::Stdout, format!("{split}\n"))
            .exit(0),
    );
    // An error result, then 1 MiB of plain output (several batches) and a
    // clean exit: the result still fails the run.
    rt.script_pod(
        "failing",
        RunScript::new()
            .bytes(cldpd::OutputStream::Stdout, format!("{FAILING_RESULT}\n"))
            .lines(cldpd::OutputStream::Stdout, 8192, 128, None)
            .exit(0),
    );
    let d = Dispatcher::new(dirs.settings(), rt.clone());

    let s = d.start(StartRequest::prompt("split", "go")).await.unwrap();
    let seen = within(20, "split run", collect(&s)).await;
    let typed: Vec<_> = seen
        .all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentResult(r) => Some((r.turns, r.is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(typed, [(3, false)], "one result, from the pieces");
    assert!(
        seen.all
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Output { partial: true, .. })),
        "the result line did arrive in pieces"
    );
    assert!(matches!(s.wait().await, Ok(0)));

    let s = d
        .start(StartRequest::prompt("failing", "go"))
        .await
        .unwrap();
    let seen = within(20, "failing run", collect(&s)).await;
    assert_eq!(seen.stdout, 8193, "every line arrived");
    match s.wait().await {
        Err(e @ Error::AgentFailed { .. }) => assert_eq!(e.code(), "api_error"),
        other => panic!("{other:?}"),
    }
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn a_text_agent_takes_no_follow_ups_on_stdin() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang());
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    wait_running(&s).await;
    match s.send("more").await {
        Err(e @ Error::InputUnavailable { .. }) => {
            assert_eq!(e.code(), "input_unavailable");
            assert!(e.hint().unwrap().contains("stream-json"));
        }
        other => panic!("{other:?}"),
    }
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
}

#[actix::test]
async fn resumes_are_written_to_the_live_agent_and_each_gets_its_own_answer() {
    let dirs = Dirs::new(&[("web", Some(LIVE))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(50));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let run = d.start(StartRequest::prompt("web", "first")).await.unwrap();
    wait_idle(&run, 1).await;
    // Two concurrent resumes, as from two terminals.
    let (r1, r2) = tokio::join!(d.resume(run.id(), "alpha"), d.resume(run.id(), "beta"));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(within(20, "resume 1", r1.wait()).await.unwrap(), 0);
    assert_eq!(within(20, "resume 2", r2.wait()).await.unwrap(), 0);
    let (s1, s2) = (collect(&r1).await, collect(&r2).await);
    assert!(s1.problems.is_empty() && s2.problems.is_empty());
    let (a1, a2) = (results(&s1), results(&s2));
    assert_eq!(a1.len(), 1, "{a1:?}");
    assert_eq!(a2.len(), 1, "{a2:?}");
    assert!(a1[0].ends_with(": alpha"), "{a1:?}");
    assert!(a2[0].ends_with(": beta"), "{a2:?}");
    assert_flow(
        &s1.flow,
        &[
            "container_started",
            "output",
            "agent_prompt",
            "output",
            "agent_text",
            "output",
            "agent_result",
            "output",
            "agent_turn",
            "container_exited",
        ],
    );
    // Still one agent: no exec; the run answered both and is idle again.
    assert!(rt.execs().is_empty());
    wait_idle(&run, 3).await;
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
    assert!(rt.running().is_empty());
}

fn arg_after<'a>(command: &'a [String], flag: &str) -> Option<&'a str> {
    let i = command.iter().position(|a| a == flag)?;
    command.get(i + 1).map(String::as_str)
}

#[actix::test]
async fn an_ended_session_is_resumed_on_its_own_storage_and_conversation() {
    let dirs = Dirs::new(&[("web", Some(r#"{"agentInput": "stream-json"}"#))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let first = d.start(StartRequest::prompt("web", "one")).await.unwrap();
    assert_eq!(within(20, "the first run", first.wait()).await.unwrap(), 0);
    let stored = d.stored().await.unwrap();
    assert_eq!(stored.len(), 1);
    let meta = &stored[0].meta;
    assert!(!stored[0].live);
    assert_eq!(meta.session, first.id());
    assert_eq!(meta.runs, [first.id().to_string()]);
    assert_eq!(meta.outcome.as_deref(), Some("exited 0"));
    assert!(meta.ended.is_some());
    let run0 = rt.runs()[0].clone();
    assert_eq!(
        arg_after(&run0.command, "--session-id"),
        Some(meta.conversation.as_str())
    );
    let dir = dirs.state().join("workspaces").join(first.id());
    let sources: Vec<_> = run0
        .mounts
        .iter()
        .map(|m| (m.source.clone(), m.target.clone()))
        .collect();
    assert!(
        sources.contains(&(dir.join("work"), "/workspace".to_string())),
        "{sources:?}"
    );
    assert!(
        sources.contains(&(dir.join("agent"), "/cldpd-agent".to_string())),
        "{sources:?}"
    );
    assert!(run0
        .env
        .iter()
        .any(|(k, v)| k == "CLAUDE_CONFIG_DIR" && v.expose() == "/cldpd-agent"));
    assert_eq!(run0.workdir.as_deref(), Some("/workspace"));

    // Its container is gone: a resume starts a new one on the same storage.
    let second = d.resume(first.id(), "two").await.unwrap();
    assert_ne!(second.id(), first.id());
    assert_eq!(
        within(20, "the resumed run", second.wait()).await.unwrap(),
        0
    );
    let run1 = rt.runs()[1].clone();
    assert_eq!(
        arg_after(&run1.command, "--resume"),
        Some(meta.conversation.as_str())
    );
    assert!(!run1.command.iter().any(|a| a == "--session-id"));
    let m1: Vec<_> = run1.mounts.iter().map(|m| m.source.clone()).collect();
    let m0: Vec<_> = run0.mounts.iter().map(|m| m.source.clone()).collect();
    assert_eq!(m0, m1);
    let resumed = String::from_utf8_lossy(rt.stdins()[1].1.bytes()).into_owned();
    assert!(
        resumed.contains("\"two\""),
        "the follow-up alone, no template: {resumed}"
    );
    let seen = collect(&second).await;
    assert_eq!(results(&seen), ["answer 1: two"]);
    let stored = d.stored().await.unwrap();
    assert_eq!(
        stored[0].meta.runs,
        [first.id().to_string(), second.id().to_string()]
    );

    // rm removes the storage and the logs of both runs, once.
    let removed = d.remove_stored(first.id()).await.unwrap();
    assert_eq!(removed.meta.session, first.id());
    assert!(!dir.exists());
    assert!(!log_of(&dirs, first.id()).exists());
    assert!(!log_of(&dirs, second.id()).exists());
    assert!(matches!(
        d.remove_stored(first.id()).await,
        Err(Error::SessionNotFound { .. })
    ));
    assert!(matches!(
        d.resume(first.id(), "three").await,
        Err(Error::SessionNotFound { .. })
    ));
}

#[actix::test]
async fn concurrent_sessions_never_share_storage_and_live_ones_are_never_removed() {
    let dirs = Dirs::new(&[("web", Some(LIVE))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push(
            d.start(StartRequest::prompt("web", format!("task {i}")))
                .await
                .unwrap(),
        );
    }
    for s in &sessions {
        wait_idle(s, 1).await;
    }
    let agent_dirs: std::collections::HashSet<_> = rt
        .runs()
        .iter()
        .flat_map(|r| r.mounts.iter())
        .filter(|m| m.target == "/cldpd-agent")
        .map(|m| m.source.clone())
        .collect();
    assert_eq!(agent_dirs.len(), 10, "ten distinct agent state directories");
    let stored = d.stored().await.unwrap();
    assert_eq!(stored.len(), 10);
    assert!(stored.iter().all(|s| s.live));
    assert!(matches!(
        d.remove_stored(sessions[0].id()).await,
        Err(Error::InvalidOption { .. })
    ));
    assert!(d.prune_stored(Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(d.stored().await.unwrap().len(), 10);
    // Stop one: only that one can go.
    within(20, "stop", sessions[0].stop(None)).await.unwrap();
    let pruned = d.prune_stored(Duration::from_secs(3600)).await.unwrap();
    assert!(pruned.is_empty(), "ended just now: younger than an hour");
    let pruned = d.prune_stored(Duration::ZERO).await.unwrap();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].meta.session, sessions[0].id());
    // Every other one is still resumable: follow-ups reach its live agent.
    let r = d.resume(sessions[5].id(), "more").await.unwrap();
    assert_eq!(within(20, "resume", r.wait()).await.unwrap(), 0);
    within(20, "shutdown", d.shutdown(Some(Duration::ZERO)))
        .await
        .unwrap();
    assert!(rt.running().is_empty());
}

#[actix::test]
async fn ending_the_conversation_waits_for_the_turn_and_reports_its_result() {
    let dirs = Dirs::new(&[("web", Some(LIVE))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(200));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "one")).await.unwrap();
    wait_running(&s).await;
    // Asked while the first turn runs: the answer comes first.
    assert_eq!(within(20, "the end", s.end()).await.unwrap(), 0);
    let seen = collect(&s).await;
    assert_eq!(results(&seen).len(), 1);
    assert!(rt.running().is_empty());
}

/// The commit count of the next `branch` event.
async fn next_branch(events: &mut cldpd::EventStream) -> usize {
    use futures_util::StreamExt;
    while let Some(ev) = events.next().await {
        if let EventKind::Branch { commits, .. } = ev.kind {
            return commits;
        }
    }
    panic!("the run ended without a branch event");
}

fn branches(seen: &Seen) -> Vec<(String, usize)> {
    seen.all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Branch { name, commits, .. } => Some((name.clone(), *commits)),
            _ => None,
        })
        .collect()
}

#[actix::test]
async fn with_checkpoint_the_work_comes_back_after_each_turn() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("a.txt"), "a\n").unwrap();
    git(repo.path(), &["add", "a.txt"]);
    git(repo.path(), &["commit", "-q", "-m", "a"]);
    let json = format!(
        r#"{{"agentInput": "stream-json", "keepAliveSecs": 60, "checkpoint": true,
            "repo": {{"path": "{}", "ref": "main"}}}}"#,
        repo.path().display()
    );
    let dirs = Dirs::new(&[("web", Some(&json))]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", converse(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "one")).await.unwrap();
    wait_idle(&s, 1).await;
    let branch = format!("cldpd/{}", s.id());
    // The workspace is a clone of main on the session's branch.
    let work = dirs.state().join("workspaces").join(s.id()).join("work");
    assert_eq!(std::fs::read_to_string(work.join("a.txt")).unwrap(), "a\n");
    // The checkpoint after turn 1 brings the (empty) branch back.
    let mut events = s.events();
    assert_eq!(
        within(20, "checkpoint 1", next_branch(&mut events)).await,
        0
    );
    assert!(!git(repo.path(), &["branch", "--list", &branch]).is_empty());
    // What "the agent" writes during turn 2 comes back after it.
    std::fs::write(work.join("b.txt"), "b\n").unwrap();
    s.send("two").await.unwrap();
    assert_eq!(
        within(20, "checkpoint 2", next_branch(&mut events)).await,
        1
    );
    assert_eq!(
        git(repo.path(), &["ls-tree", "--name-only", &branch]),
        "a.txt\nb.txt"
    );
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
    assert_eq!(
        git(repo.path(), &["symbolic-ref", "--short", "HEAD"]),
        "main"
    );
    within(20, "stop", s.stop(None)).await.unwrap();
    let seen = collect(&s).await;
    let b = branches(&seen);
    assert!(b.len() >= 3, "after turn 1, turn 2 and the end: {b:?}");
    assert_eq!(b[0], (branch.clone(), 0));
    assert_eq!(b.last().unwrap(), &(branch, 1));
}
