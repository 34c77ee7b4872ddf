//! The real Claude Code, end to end: cldpd runs it in a container on the
//! host network against the scripted model server on loopback (offline,
//! free, deterministic), and turns what it does into typed events.
//!
//! The image is built once per test process (tests/support/claude.rs,
//! `.ci/claude-fixture.sh`). Without Docker these tests skip with a note,
//! except under `CI=true`, where they fail.

mod support;

use std::time::{Duration, Instant};

use cldpd::model_server::{ModelServer, Script, Turn};
use cldpd::{Dispatcher, Error, Event, EventKind, Settings, StartRequest};
use futures_util::StreamExt;
use support::claude::ClaudePod;
use support::docker::require_docker;
use support::git::git;

fn dispatcher(pod: &ClaudePod, state: &tempfile::TempDir) -> Dispatcher {
    Dispatcher::docker(Settings::new(pod.pods_dir(), state.path()).workers(2))
}

async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// The events that are not raw lines or build chatter.
fn typed(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.kind.name())
        .filter(|n| {
            !matches!(
                *n,
                "output" | "build_output" | "build_started" | "build_complete"
            )
        })
        .collect()
}

fn gapless(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap at {i}: {events:#?}");
    }
}

fn agent_result(events: &[Event]) -> &EventKind {
    events
        .iter()
        .map(|e| &e.kind)
        .find(|k| matches!(k, EventKind::AgentResult(_)))
        .unwrap_or_else(|| panic!("no agent_result in {events:#?}"))
}

/// The `agent_api_error` events: code, status, and whether the agent
/// retries by itself.
fn api_errors(events: &[Event]) -> Vec<(String, Option<u16>, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentApiError(e) => {
                Some((e.code.clone(), e.status, e.retry_in_ms.is_some()))
            }
            _ => None,
        })
        .collect()
}

fn output_lines(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| e.line())
        .collect::<Vec<_>>()
        .join("\n")
}

#[actix::test]
async fn bash_writes_a_file_in_the_workspace_and_the_events_say_so_in_order() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(
        Script::new([
            Turn::bash("echo hello-from-the-agent > /workspace/out.txt").usage(100, 20),
            Turn::text("I wrote out.txt.").usage(150, 10),
        ]),
        0,
    )
    .unwrap();
    let pod = ClaudePod::new(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "Write hello into out.txt"))
        .await
        .unwrap();
    let events: Vec<Event> = within(180, "the agent run", s.events().collect()).await;
    assert_eq!(
        typed(&events),
        [
            "container_started",
            "agent_init",
            "tool_use",
            "tool_result",
            "agent_text",
            "agent_result",
            "container_exited"
        ],
        "{}",
        output_lines(&events)
    );
    gapless(&events);
    assert_eq!(
        std::fs::read_to_string(pod.workspace().join("out.txt")).unwrap(),
        "hello-from-the-agent\n"
    );
    let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
    let init = kinds
        .iter()
        .find(|k| matches!(k, EventKind::AgentInit(_)))
        .unwrap();
    let EventKind::AgentInit(boxed) = init else {
        unreachable!()
    };
    let cldpd::AgentInit {
        conversation,
        tools,
        version,
        permission_mode,
        ..
    } = &**boxed;
    assert!(tools.iter().any(|t| t == "Bash"), "{tools:?}");
    assert_eq!(version, "2.1.332");
    assert_eq!(permission_mode, "bypassPermissions");
    let (tool_id, input) = kinds
        .iter()
        .find_map(|k| match k {
            EventKind::ToolUse(t) if t.tool == "Bash" => Some((&t.id, &t.input)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        input["command"],
        "echo hello-from-the-agent > /workspace/out.txt"
    );
    assert!(kinds
        .iter()
        .any(|k| matches!(k, EventKind::ToolResult { id, is_error: false, .. } if id == tool_id)));
    match agent_result(&events) {
        EventKind::AgentResult(boxed) => {
            let cldpd::AgentResult {
                subtype,
                is_error,
                turns,
                cost_usd,
                usage,
                result,
                ..
            } = &**boxed;
            assert_eq!(subtype, "success");
            assert!(!is_error);
            assert_eq!(*turns, 2);
            // What the server scripted: 100 + 150 in, 20 + 10 out.
            assert_eq!((usage.input_tokens, usage.output_tokens), (250, 30));
            assert!(cost_usd.0 > 0.0);
            assert_eq!(result.as_deref(), Some("I wrote out.txt."));
        }
        _ => unreachable!(),
    }
    assert_eq!(s.wait().await.unwrap(), 0);
    // The conversation the server saw: the prompt, then the tool's result.
    let reqs = server.message_requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert!(reqs[0].body.contains("Write hello into out.txt"));
    assert!(reqs[1].body.contains("tool_result"));
    assert_eq!(reqs[0].conversation.as_deref(), Some(conversation.as_str()));
    assert!(pod.containers().is_empty());
}

#[actix::test]
async fn a_1_mib_prompt_that_begins_with_a_dash_reaches_the_model_whole() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(Script::new([Turn::text("read it all")]), 0).unwrap();
    let pod = ClaudePod::new(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    // Linux caps one argv string at 128 KiB: this only works on stdin.
    let body: String = (0..(1 << 20) / 16)
        .map(|i| format!("word{i:011} "))
        .collect();
    let prompt = format!("--help {body}END-OF-PROMPT");
    assert!(prompt.len() > 1 << 20);
    let s = d
        .start(StartRequest::prompt(pod.name(), prompt.clone()))
        .await
        .unwrap();
    let events: Vec<Event> = within(180, "the agent run", s.events().collect()).await;
    assert_eq!(s.wait().await.unwrap(), 0, "{}", output_lines(&events));
    let reqs = server.message_requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs[0].body.contains(&prompt),
        "the first request lacks the whole prompt ({} bytes of body)",
        reqs[0].body.len()
    );
}

#[actix::test]
async fn stop_while_the_model_is_slow_ends_143_and_leaves_no_container() {
    if !require_docker() {
        return;
    }
    let server =
        ModelServer::start(Script::new([Turn::text("too late").delay_ms(120_000)]), 0).unwrap();
    let pod = ClaudePod::new(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "think slowly"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.message_requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent never called the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = within(60, "the stop", s.stop(Some(Duration::from_secs(20)))).await;
    assert_eq!(code.unwrap(), 143);
    let events: Vec<Event> = within(30, "the stream's end", s.events().collect()).await;
    assert!(matches!(
        events.last().map(|e| &e.kind),
        Some(EventKind::ContainerExited { code: 143 })
    ));
    assert!(pod.containers().is_empty());
}

#[actix::test]
async fn an_overloaded_api_is_a_typed_error_and_a_retry_policy_recovers() {
    if !require_docker() {
        return;
    }
    // Claude Code retries API errors itself; CLAUDE_CODE_MAX_RETRIES=0 makes
    // the first one final.
    let env = [("CLAUDE_CODE_MAX_RETRIES", "0")];
    let server = ModelServer::start(Script::new([Turn::error(529).times(0)]), 0).unwrap();
    let pod = ClaudePod::with_env(&server.url(), "", &env);
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "hello"))
        .await
        .unwrap();
    let events: Vec<Event> = within(180, "the agent run", s.events().collect()).await;
    let last = &events.last().unwrap().kind;
    assert!(
        matches!(last, EventKind::Error { code, .. } if code == "api_error"),
        "{last:?}\n{}",
        output_lines(&events)
    );
    match s.wait().await {
        Err(Error::AgentFailed {
            api_error_status: Some(529),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The agent's own error message is typed before its result.
    assert!(
        api_errors(&events)
            .iter()
            .any(|(code, _, _)| code == "api_error"),
        "{:?}",
        typed(&events)
    );
    drop(d);

    // 429 once, and the agent may retry: it says so in its stream (a typed
    // `rate_limited`, with its retry delay), then succeeds.
    let mut limited = Turn::error(429);
    limited.error.as_mut().unwrap().retry_after = Some(1);
    let server =
        ModelServer::start(Script::new([limited.clone(), Turn::text("fine now")]), 0).unwrap();
    let pod = ClaudePod::with_env(&server.url(), "", &[]);
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "hello"))
        .await
        .unwrap();
    let events: Vec<Event> = within(180, "the self-retried run", s.events().collect()).await;
    assert_eq!(
        api_errors(&events),
        [("rate_limited".to_string(), Some(429), true)],
        "{}",
        output_lines(&events)
    );
    assert_eq!(s.wait().await.unwrap(), 0);
    drop(d);

    // 429 once, then the API answers: the restart policy retries the run.
    let mut limited = Turn::error(429);
    limited.error.as_mut().unwrap().retry_after = Some(1);
    let server =
        ModelServer::start(Script::new([limited, Turn::text("back again")]).shared(), 0).unwrap();
    let pod = ClaudePod::with_env(
        &server.url(),
        r#""restart": "on-failure", "backoffMs": 100"#,
        &env,
    );
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "hello again"))
        .await
        .unwrap();
    let events: Vec<Event> = within(240, "the retried run", s.events().collect()).await;
    let names = typed(&events);
    let first_result = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::AgentResult(r) => Some((r.is_error, r.api_error_status)),
            _ => None,
        })
        .unwrap();
    assert_eq!(first_result, (true, Some(429)), "{names:?}");
    // Without retries of its own, the agent's failed call is typed too.
    assert_eq!(
        api_errors(&events),
        [("rate_limited".to_string(), Some(429), false)],
        "{names:?}"
    );
    let restarting = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Restarting { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no restart: {names:?}"));
    assert!(restarting.contains("429"), "{restarting}");
    assert_eq!(*names.last().unwrap(), "container_exited", "{names:?}");
    assert_eq!(s.wait().await.unwrap(), 0);
    gapless(&events);
}

#[actix::test]
async fn exceeding_max_turns_ends_as_a_failure() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(Script::new([Turn::bash("true").times(0)]), 0).unwrap();
    let pod = ClaudePod::new(&server.url(), r#""maxTurns": 2"#);
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "loop for ever"))
        .await
        .unwrap();
    let events: Vec<Event> = within(180, "the agent run", s.events().collect()).await;
    match agent_result(&events) {
        EventKind::AgentResult(boxed) => {
            let cldpd::AgentResult {
                subtype, is_error, ..
            } = &**boxed;
            assert_eq!(subtype, "error_max_turns");
            assert!(is_error);
        }
        _ => unreachable!(),
    }
    assert!(matches!(
        &events.last().unwrap().kind,
        EventKind::Error { code, .. } if code == "agent_max_turns"
    ));
    assert!(matches!(
        s.wait().await,
        Err(Error::AgentFailed { ref subtype, .. }) if subtype == "error_max_turns"
    ));
    assert!(server.message_requests().len() <= 3);
}

#[actix::test]
async fn resume_of_a_running_session_reaches_the_same_conversation() {
    if !require_docker() {
        return;
    }
    // One cursor: the first run's agent sits in a long Bash call (Claude
    // Code refuses a plain `sleep N` as a "standalone sleep"; busybox's is
    // run), the follow-up gets the text turn.
    let server = ModelServer::start(
        Script::new([Turn::bash("busybox sleep 120"), Turn::text("resumed")]).shared(),
        0,
    )
    .unwrap();
    let pod = ClaudePod::new(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let first = d
        .start(StartRequest::prompt(pod.name(), "first task MARKER-ONE"))
        .await
        .unwrap();
    let mut events = first.events();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ev = within(120, "the tool call", events.next())
            .await
            .expect("the run ended before its tool call");
        if matches!(ev.kind, EventKind::ToolUse(_)) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let follow = d
        .resume(first.id(), "-- follow-up MARKER-TWO")
        .await
        .unwrap();
    let fevents: Vec<Event> = within(120, "the follow-up", follow.events().collect()).await;
    assert_eq!(
        follow.wait().await.unwrap(),
        0,
        "{}",
        output_lines(&fevents)
    );
    assert!(typed(&fevents).contains(&"agent_result"));
    let reqs = server.message_requests();
    let last = reqs.last().unwrap();
    assert!(last.body.contains("MARKER-TWO"));
    assert!(
        last.body.contains("MARKER-ONE"),
        "the resumed request lacks the earlier turns"
    );
    assert_eq!(last.conversation, reqs[0].conversation);
    within(60, "the stop", first.stop(Some(Duration::from_secs(5))))
        .await
        .unwrap();
    assert!(pod.containers().is_empty());
}

/// Resident memory of this process, in KiB.
fn own_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[actix::test]
async fn ten_concurrent_real_agents_complete() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(
        Script::new([Turn::bash("busybox sleep 4"), Turn::text("finished")]),
        0,
    )
    .unwrap();
    let pod = ClaudePod::new(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = Dispatcher::docker(Settings::new(pod.pods_dir(), state.path()).workers(4));
    let started = Instant::now();
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push(
            d.start(StartRequest::prompt(pod.name(), format!("agent {i}")))
                .await
                .unwrap(),
        );
    }
    // While they sit in their Bash call: memory of each agent container.
    let deadline = Instant::now() + Duration::from_secs(240);
    while server.message_requests().len() < 10 {
        assert!(Instant::now() < deadline, "not all agents called the model");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = std::process::Command::new(support::docker::docker_bin())
        .args([
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}}",
        ])
        .args(pod.containers())
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    let cldpd_rss = own_rss_kib();
    for s in &sessions {
        let events: Vec<Event> = within(300, "an agent", s.events().collect()).await;
        assert_eq!(s.wait().await.unwrap(), 0, "{}", output_lines(&events));
        assert!(matches!(
            agent_result(&events),
            EventKind::AgentResult(r) if !r.is_error && r.turns == 2
        ));
    }
    eprintln!(
        "10 concurrent agents: {:.1} s; memory per agent container:\n{stats}cldpd (this test process) RSS: {} MiB",
        started.elapsed().as_secs_f64(),
        cldpd_rss / 1024
    );
    assert!(pod.containers().is_empty());
}

/// README's one command: `./demo-claude.sh` runs the real Claude Code
/// offline against the scripted model (with this test process's image as
/// its base, a pod name of its own, and the binary under test).
#[test]
fn the_offline_demo_script_shows_a_real_agent_loop() {
    if !require_docker() {
        return;
    }
    let base = support::claude::claude_image();
    let pod = format!("demo-{}", support::docker::unique_name());
    let state = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = std::process::Command::new(format!("{root}/demo-claude.sh"));
    cmd.env("DEMO_BASE_IMAGE", base)
        .env("DEMO_POD", &pod)
        .env("CLDPD_BIN", env!("CARGO_BIN_EXE_cldpd"))
        .env("CLDPD_STATE_DIR", state.path())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
        .stdin(std::process::Stdio::null());
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(300))
        .unwrap_or_else(|_| {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!("demo-claude.sh took over 300 s")
        })
        .unwrap();
    let image = format!("cldpd-{pod}");
    support::docker::docker(["rmi", "-f", image.as_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for needle in [
        "scripted model server on http://127.0.0.1:",
        "agent: Claude Code 2.1.332",
        "▸ Bash: cat hello.txt",
        "↳ hello from a real Claude Code agent",
        "success in 3 turns",
    ] {
        assert!(stderr.contains(needle), "{needle}:\n{stderr}");
    }
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(
        stdout.contains("Done: hello.txt holds the greeting."),
        "{stdout}"
    );

    // --real without credentials says what it needs.
    let out = std::process::Command::new(format!("{root}/demo-claude.sh"))
        .arg("--real")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN"));
}

/// Follow a session's state until `pred` holds (bounded).
async fn wait_for_state(
    s: &cldpd::Session,
    secs: u64,
    what: &str,
    pred: impl FnMut(&cldpd::SessionState) -> bool,
) {
    let mut st = s.info().state.clone();
    within(secs, what, st.wait_for(pred))
        .await
        .expect("the session's state");
}

fn idle_after(turns: u32) -> impl FnMut(&cldpd::SessionState) -> bool {
    move |st| matches!(st, cldpd::SessionState::Idle { turns: t, .. } if *t >= turns)
}

/// The processes of a container whose command is `claude` (not the
/// `docker-init -- claude …` in front of it), from `docker top`.
fn claude_processes(container: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args(["top", container, "-eo", "pid,args"])
        .output()
        .expect("docker top");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let n = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p == "claude" || p.ends_with("/claude"))
        })
        .count();
    assert!(
        n > 0,
        "no claude process in `docker top`: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    n
}

fn results_in(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentResult(r) => Some(r.result.clone().unwrap_or_default()),
            _ => None,
        })
        .collect()
}

fn prompts_in(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentPrompt { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[actix::test]
async fn one_live_agent_answers_three_follow_ups_in_order() {
    if !require_docker() {
        return;
    }
    // The first turn is slow, so that the first follow-up arrives while
    // the agent works (Claude Code queues it as the next turn).
    let server = ModelServer::start(
        Script::new([
            Turn::text("answer one").delay_ms(1500),
            Turn::text("answer two"),
            Turn::text("answer three"),
            Turn::text("answer four"),
        ]),
        0,
    )
    .unwrap();
    let pod = ClaudePod::new(
        &server.url(),
        r#""agentInput": "stream-json", "keepAliveSecs": 120"#,
    );
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "task MARKER-0"))
        .await
        .unwrap();
    wait_for_state(&s, 180, "the agent's start", |st| {
        matches!(st, cldpd::SessionState::Running { .. })
    })
    .await;
    s.send("follow-up MARKER-1").await.unwrap();
    wait_for_state(&s, 120, "two answers", idle_after(2)).await;
    let container = pod.containers().pop().expect("the run's container");
    assert_eq!(claude_processes(&container), 1, "one agent process");
    s.send("follow-up MARKER-2").await.unwrap();
    wait_for_state(&s, 120, "three answers", idle_after(3)).await;
    s.send("follow-up MARKER-3").await.unwrap();
    wait_for_state(&s, 120, "four answers", idle_after(4)).await;
    assert_eq!(claude_processes(&container), 1, "still one agent process");
    assert_eq!(
        pod.containers(),
        std::slice::from_ref(&container),
        "one container"
    );
    // The run ends with the last answer's status.
    within(60, "the stop", s.stop(Some(Duration::from_secs(10))))
        .await
        .unwrap();
    let events: Vec<Event> = within(60, "the events", s.events().collect()).await;
    gapless(&events);
    assert_eq!(
        results_in(&events),
        ["answer one", "answer two", "answer three", "answer four"],
        "{}",
        output_lines(&events)
    );
    let prompts = prompts_in(&events);
    assert_eq!(prompts.len(), 4, "{prompts:?}");
    for (i, p) in prompts.iter().enumerate() {
        assert!(p.contains(&format!("MARKER-{i}")), "{prompts:?}");
    }
    // One conversation, growing: request k carries every earlier prompt.
    let reqs = server.message_requests();
    assert_eq!(reqs.len(), 4, "one request a turn");
    for (k, r) in reqs.iter().enumerate() {
        assert_eq!(r.conversation, reqs[0].conversation);
        for i in 0..=k {
            assert!(
                r.body.contains(&format!("MARKER-{i}")),
                "request {k} lacks prompt {i}"
            );
        }
    }
    assert!(pod.containers().is_empty());
}

#[actix::test]
async fn two_concurrent_resumes_from_another_process_are_both_answered() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(
        Script::new([
            Turn::text("answer one"),
            Turn::text("answer two").delay_ms(500),
            Turn::text("answer three"),
        ]),
        0,
    )
    .unwrap();
    let pod = ClaudePod::new(
        &server.url(),
        r#""agentInput": "stream-json", "keepAliveSecs": 120"#,
    );
    let state = tempfile::tempdir().unwrap();
    let owner = dispatcher(&pod, &state);
    let run = owner
        .start(StartRequest::prompt(pod.name(), "task MARKER-0"))
        .await
        .unwrap();
    wait_for_state(&run, 180, "the first answer", idle_after(1)).await;
    // Another process: its own dispatcher, state directory and Engine API
    // client, which reaches the agent by attaching to its stdin.
    let other_state = tempfile::tempdir().unwrap();
    let other = dispatcher(&pod, &other_state);
    let (a, b) = tokio::join!(
        other.resume(run.id(), "resume MARKER-A"),
        other.resume(run.id(), "resume MARKER-B")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ea, eb): (Vec<Event>, Vec<Event>) = tokio::join!(
        within(120, "resume A", a.events().collect()),
        within(120, "resume B", b.events().collect())
    );
    assert_eq!(a.wait().await.unwrap(), 0, "{}", output_lines(&ea));
    assert_eq!(b.wait().await.unwrap(), 0, "{}", output_lines(&eb));
    gapless(&ea);
    gapless(&eb);
    // Each resume saw its own prompt and the answer to it.
    assert_eq!(prompts_in(&ea).len(), 1);
    assert!(prompts_in(&ea)[0].contains("MARKER-A"));
    assert!(prompts_in(&eb)[0].contains("MARKER-B"));
    let (ra, rb) = (results_in(&ea), results_in(&eb));
    assert_eq!((ra.len(), rb.len()), (1, 1), "{ra:?} {rb:?}");
    wait_for_state(&run, 120, "both answered", idle_after(3)).await;
    // The run's own log: the turns in the order they were sent, each
    // answered in that order.
    within(60, "the stop", run.stop(Some(Duration::from_secs(10))))
        .await
        .unwrap();
    let events: Vec<Event> = within(60, "the events", run.events().collect()).await;
    let prompts = prompts_in(&events);
    let results = results_in(&events);
    assert_eq!(results, ["answer one", "answer two", "answer three"]);
    let a_first = prompts[1].contains("MARKER-A");
    let (first, second) = if a_first { (&ra, &rb) } else { (&rb, &ra) };
    assert_eq!(first[0], "answer two", "{prompts:?}");
    assert_eq!(second[0], "answer three", "{prompts:?}");
    // One agent process answered all: no exec, no second conversation.
    let reqs = server.message_requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.conversation == reqs[0].conversation));
    assert!(pod.containers().is_empty());
}

fn conversation_of(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::AgentInit(i) => Some(i.conversation.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no agent_init in {events:#?}"))
}

#[actix::test]
async fn resume_after_exit_continues_the_conversation_on_the_same_files() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(
        Script::new([
            Turn::bash("echo kept-across-containers > /workspace/note.txt"),
            Turn::text("wrote it"),
            Turn::bash("cat /workspace/note.txt"),
            Turn::text("read it"),
        ]),
        0,
    )
    .unwrap();
    let pod = ClaudePod::persistent(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let first = d
        .start(StartRequest::prompt(pod.name(), "task MARKER-ONE"))
        .await
        .unwrap();
    let e1: Vec<Event> = within(180, "the first run", first.events().collect()).await;
    assert_eq!(first.wait().await.unwrap(), 0, "{}", output_lines(&e1));
    assert!(pod.containers().is_empty(), "its container is gone");
    let work = state
        .path()
        .join("workspaces")
        .join(first.id())
        .join("work");
    assert_eq!(
        std::fs::read_to_string(work.join("note.txt")).unwrap(),
        "kept-across-containers\n"
    );
    let second = d.resume(first.id(), "follow-up MARKER-TWO").await.unwrap();
    let e2: Vec<Event> = within(180, "the resumed run", second.events().collect()).await;
    assert_eq!(second.wait().await.unwrap(), 0, "{}", output_lines(&e2));
    // A new container saw the file, in the same conversation.
    let read = e2.iter().find_map(|e| match &e.kind {
        EventKind::ToolResult { first_line, .. } => Some(first_line.clone()),
        _ => None,
    });
    assert_eq!(
        read.as_deref(),
        Some("kept-across-containers"),
        "{}",
        output_lines(&e2)
    );
    assert_eq!(conversation_of(&e1), conversation_of(&e2));
    let reqs = server.message_requests();
    let last = reqs.last().unwrap();
    assert!(last.body.contains("MARKER-TWO"));
    assert!(
        last.body.contains("MARKER-ONE"),
        "the earlier turns came along"
    );
    assert_eq!(last.conversation, reqs[0].conversation);
    assert!(pod.containers().is_empty());
}

#[actix::test]
async fn the_work_comes_back_as_a_branch_and_a_dirty_or_missing_repository_is_refused() {
    if !require_docker() {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README.md"), "hello\n").unwrap();
    git(repo.path(), &["add", "README.md"]);
    git(repo.path(), &["commit", "-q", "-m", "first"]);
    let head_before = git(repo.path(), &["rev-parse", "HEAD"]);
    let server = ModelServer::start(
        Script::new([
            Turn::bash("echo agent-change > /workspace/CHANGE.txt && cat README.md"),
            Turn::text("changed it"),
        ]),
        0,
    )
    .unwrap();
    let extra = format!(
        r#""repo": {{"path": "{}", "ref": "main"}}"#,
        repo.path().display()
    );
    let pod = ClaudePod::persistent(&server.url(), &extra);
    let state = tempfile::tempdir().unwrap();
    let d = dispatcher(&pod, &state);
    let s = d
        .start(StartRequest::prompt(pod.name(), "change something"))
        .await
        .unwrap();
    let events: Vec<Event> = within(180, "the run", s.events().collect()).await;
    assert_eq!(s.wait().await.unwrap(), 0, "{}", output_lines(&events));
    let branch = format!("cldpd/{}", s.id());
    let seen = events.iter().find_map(|e| match &e.kind {
        EventKind::Branch { name, commits, .. } => Some((name.clone(), *commits)),
        _ => None,
    });
    assert_eq!(seen, Some((branch.clone(), 1)), "{}", output_lines(&events));
    // The agent read the clone; the source gained the branch, untouched.
    assert!(output_lines(&events).contains("hello"));
    assert_eq!(
        git(repo.path(), &["show", &format!("{branch}:CHANGE.txt")]),
        "agent-change"
    );
    assert_eq!(
        git(repo.path(), &["log", "-1", "--format=%an", &branch]),
        "cldpd agent"
    );
    assert_eq!(git(repo.path(), &["rev-parse", "HEAD"]), head_before);
    assert_eq!(
        git(repo.path(), &["symbolic-ref", "--short", "HEAD"]),
        "main"
    );
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
    let patch = String::from_utf8(d.diff(s.id()).await.unwrap()).unwrap();
    assert!(patch.contains("+agent-change"), "{patch}");
    assert!(pod.containers().is_empty());

    // A dirty repository is refused before anything starts.
    std::fs::write(repo.path().join("untracked.txt"), "x").unwrap();
    match d.start(StartRequest::prompt(pod.name(), "again")).await {
        Err(e) => {
            assert_eq!(e.code(), "repo_dirty", "{e}");
            assert!(e.to_string().contains("untracked.txt"), "{e}");
        }
        Ok(s) => panic!("started {} on a dirty repository", s.id()),
    }
    // So is a missing one.
    let gone = format!(
        r#"{{"repo": {{"path": "{}/nope"}}}}"#,
        repo.path().display()
    );
    let overrides: cldpd::pod::PodConfig = serde_json::from_str(&gone).unwrap();
    match d
        .start(StartRequest::prompt(pod.name(), "again").overrides(overrides))
        .await
    {
        Err(e) => assert_eq!(e.code(), "repo_missing", "{e}"),
        Ok(s) => panic!("started {} on a missing repository", s.id()),
    }
    assert_eq!(
        d.stored().await.unwrap().len(),
        1,
        "no storage for refused runs"
    );
    assert!(pod.containers().is_empty());
}

#[actix::test]
async fn ten_concurrent_sessions_keep_their_own_agent_state_and_each_resumes() {
    if !require_docker() {
        return;
    }
    let server = ModelServer::start(
        Script::new([Turn::text("first answer"), Turn::text("second answer")]),
        0,
    )
    .unwrap();
    let pod = ClaudePod::persistent(&server.url(), "");
    let state = tempfile::tempdir().unwrap();
    let d = Dispatcher::docker(Settings::new(pod.pods_dir(), state.path()).workers(4));
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push(
            d.start(StartRequest::prompt(pod.name(), format!("agent {i}")))
                .await
                .unwrap(),
        );
    }
    let mut conversations = Vec::new();
    for s in &sessions {
        let events: Vec<Event> = within(300, "an agent", s.events().collect()).await;
        assert_eq!(s.wait().await.unwrap(), 0, "{}", output_lines(&events));
        conversations.push(conversation_of(&events));
    }
    let stored = d.stored().await.unwrap();
    assert_eq!(stored.len(), 10);
    let mut dirs = std::collections::HashSet::new();
    for (s, conversation) in sessions.iter().zip(&conversations) {
        let agent = state.path().join("workspaces").join(s.id()).join("agent");
        assert!(dirs.insert(agent.clone()));
        // Claude Code's own state, intact: its config parses, and the
        // conversation file is there.
        let config = std::fs::read_to_string(agent.join(".claude.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&config).expect("an intact .claude.json");
        let transcript = walk(&agent.join("projects")).into_iter().find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == format!("{conversation}.jsonl"))
        });
        assert!(
            transcript.is_some(),
            "no transcript of {conversation} in {}",
            agent.display()
        );
    }
    // Each is resumable afterwards, all at once.
    let mut resumed = Vec::new();
    for s in &sessions {
        resumed.push(d.resume(s.id(), "and then?").await.unwrap());
    }
    for (r, conversation) in resumed.iter().zip(&conversations) {
        let events: Vec<Event> = within(300, "a resume", r.events().collect()).await;
        assert_eq!(r.wait().await.unwrap(), 0, "{}", output_lines(&events));
        assert_eq!(&conversation_of(&events), conversation);
        assert_eq!(results_in(&events), ["second answer"]);
    }
    assert!(pod.containers().is_empty());
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
