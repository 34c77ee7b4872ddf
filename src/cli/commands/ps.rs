//! `cldpd ps`: the runs Docker knows about, from their `cldpd.*` labels, so
//! runs of every cldpd process are listed. `-a` adds the runs that ended
//! (from their session logs) and the stored sessions of long-lived agents
//! that `resume` can continue ([`cldpd::Dispatcher::stored`]).

use std::time::SystemTime;

use clap::Args;
use cldpd::agent::AgentTally;
use cldpd::messages::dispatcher::StoredInfo;

use crate::cli::error::CliError;
use crate::cli::output::{age, table};
use crate::cli::Ctx;

/// Arguments of `cldpd ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// One JSON object per run on stdout (session, pod, container, issue,
    /// started, state, exit_code of an orphan that ended, attempt, owner,
    /// orphan, turns, cost_usd)
    #[arg(long)]
    pub json: bool,

    /// Also the runs that ended, from the session logs (exit code and
    /// duration), and the sessions that can be resumed (RESUMABLE: ended,
    /// outcome, branch; `cldpd resume <session> --prompt ...`)
    #[arg(short, long)]
    pub all: bool,

    /// Only the session ids, one a line (for scripts: `cldpd stop $(cldpd ps -q)`)
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
}

/// Run `cldpd ps`.
pub async fn run(args: PsArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let runs = ctx.dispatcher().runs().await?;
    let ended = if args.all {
        let live: std::collections::HashSet<&str> =
            runs.iter().map(|r| r.session.as_str()).collect();
        ended_runs(&ctx.settings().sessions_dir(), &live)
    } else {
        Vec::new()
    };
    let resumable: Vec<StoredInfo> = if args.all {
        ctx.dispatcher()
            .stored()
            .await?
            .into_iter()
            .filter(|s| !s.live)
            .collect()
    } else {
        Vec::new()
    };
    let sessions_dir = ctx.settings().sessions_dir();
    let tallies: Vec<Option<AgentTally>> = runs
        .iter()
        .map(|r| tally_log(&sessions_dir.join(format!("{}.ndjson", r.session))))
        .collect();
    if ui.json {
        for (run, tally) in runs.iter().zip(&tallies) {
            ui.json_line(&LiveRow {
                run,
                turns: tally.as_ref().map(AgentTally::turns),
                cost_usd: tally.as_ref().and_then(AgentTally::cost_usd),
                idle: is_idle(run, tally.as_ref()),
            });
        }
        for run in &ended {
            ui.json_line(run);
        }
        for info in &resumable {
            ui.json_line(&StoredRow {
                info,
                state: "resumable",
            });
        }
        return Ok(0);
    }
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for session in runs
            .iter()
            .map(|r| &r.session)
            .chain(ended.iter().map(|r| &r.session))
            .chain(resumable.iter().map(|s| &s.meta.session))
        {
            if seen.insert(session) {
                ui.print(format_args!("{session}\n"));
            }
        }
        return Ok(0);
    }
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .zip(&tallies)
        .map(|(r, tally)| {
            let age = r
                .started
                .map(|t| age(now.duration_since(t).unwrap_or_default()))
                .unwrap_or_else(|| "-".into());
            let mut state = if is_idle(r, tally.as_ref()) {
                "idle".to_string()
            } else if let Some(code) = r.exit_code {
                format!("exited {code}")
            } else {
                r.state.clone()
            };
            if r.orphan {
                state.push_str(" (orphan)");
            }
            let (turns, cost) = tally_cells(tally.as_ref());
            vec![
                r.session.clone(),
                r.pod.clone(),
                r.issue.clone().unwrap_or_else(|| "-".into()),
                age,
                turns,
                cost,
                state,
            ]
        })
        .chain(ended.iter().map(|r| {
            let took = r
                .duration_ms
                .map(|ms| format!(" after {}", age(std::time::Duration::from_millis(ms))))
                .unwrap_or_default();
            let state = match (&r.exit_code, &r.error) {
                (Some(code), None) => format!("exited {code}{took}"),
                (code, Some(e)) => match code {
                    Some(code) => format!("failed ({e}, last exit {code}){took}"),
                    None => format!("failed ({e}){took}"),
                },
                (None, None) => "ended (no final event)".to_string(),
            };
            let turns = r.turns.map_or("-".into(), |t| t.to_string());
            let cost = r.cost_usd.map_or("-".into(), |c| format!("${c:.4}"));
            vec![
                r.session.clone(),
                r.pod.clone(),
                "-".to_string(),
                r.started
                    .map(|t| age(now.duration_since(t).unwrap_or_default()))
                    .unwrap_or_else(|| "-".into()),
                turns,
                cost,
                state,
            ]
        }))
        .collect();
    ui.print(table(
        &["SESSION", "POD", "ISSUE", "AGE", "TURNS", "COST", "STATE"],
        &rows,
    ));
    if !resumable.is_empty() {
        ui.print(format_args!("\n{}", resumable_table(&resumable, now)));
    }
    Ok(0)
}

/// A stored session as `ps -a --json` prints it: `session.json`'s fields,
/// `live`, `dir`, and `"state": "resumable"`.
#[derive(serde::Serialize)]
struct StoredRow<'a> {
    #[serde(flatten)]
    info: &'a StoredInfo,
    state: &'static str,
}

/// The sessions `resume` can continue: `RESUMABLE POD ENDED OUTCOME RUNS
/// BRANCH`.
fn resumable_table(stored: &[StoredInfo], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = stored
        .iter()
        .map(|s| {
            let m = &s.meta;
            let ended = m
                .ended
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .map(|t| format!("{} ago", age(now.duration_since(t).unwrap_or_default())))
                .unwrap_or_else(|| "-".into());
            let branch = m
                .branch
                .as_ref()
                .map(|b| {
                    let plural = if b.commits == 1 { "" } else { "s" };
                    format!("{} ({} commit{plural})", b.name, b.commits)
                })
                .unwrap_or_else(|| "-".into());
            vec![
                m.session.clone(),
                m.pod.clone(),
                ended,
                m.outcome.clone().unwrap_or_else(|| "-".into()),
                m.runs.len().to_string(),
                branch,
            ]
        })
        .collect();
    table(
        &["RESUMABLE", "POD", "ENDED", "OUTCOME", "RUNS", "BRANCH"],
        &rows,
    )
}

/// A live run as `ps --json` prints it: its labels, and its agent's turns
/// and cost so far (from its session log).
#[derive(serde::Serialize)]
struct LiveRow<'a> {
    #[serde(flatten)]
    run: &'a cldpd::RunInfo,
    turns: Option<u32>,
    cost_usd: Option<f64>,
    /// A long-lived agent waiting for a follow-up.
    idle: bool,
}

/// The TURNS and COST cells of a live run: turns so far; the cost of its
/// finished attempts (Claude Code reports cost at the end of a run), `…`
/// before the first.
fn tally_cells(tally: Option<&AgentTally>) -> (String, String) {
    match tally {
        None => ("-".into(), "-".into()),
        Some(t) => (
            t.turns().to_string(),
            t.cost_usd().map_or("…".into(), |c| format!("${c:.4}")),
        ),
    }
}

/// The agent's tally of a session log: `None` when the log is missing or
/// the run is not an agent's. Only the lines that can matter are parsed
/// (a log can hold millions of output lines).
fn tally_log(path: &std::path::Path) -> Option<AgentTally> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut tally = AgentTally::default();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if !(line.contains("assistant")
            || line.starts_with("{\"type\":\"agent_result\"")
            || line.starts_with("{\"type\":\"container_started\"")
            || line.starts_with("{\"type\":\"idle\"")
            || line.starts_with("{\"type\":\"agent_prompt\"")
            || line.starts_with("{\"type\":\"agent_turn\""))
        {
            continue;
        }
        if let Ok(ev) = serde_json::from_str::<cldpd::Event>(&line) {
            tally.observe(&ev.kind);
        }
    }
    tally.is_agent().then_some(tally)
}

/// A running container whose long-lived agent waits for a follow-up (its
/// log's last `idle` is later than its last prompt).
fn is_idle(run: &cldpd::RunInfo, tally: Option<&AgentTally>) -> bool {
    run.state == "running" && tally.is_some_and(AgentTally::is_idle)
}

/// A run that is no longer live, from its session log (`ps -a`).
#[derive(Debug, serde::Serialize)]
pub struct EndedRun {
    /// Session id.
    pub session: String,
    /// Pod name.
    pub pod: String,
    /// Always `"ended"`.
    pub state: &'static str,
    /// The container's exit code, when the final event is its exit.
    pub exit_code: Option<i32>,
    /// The failure's code (`timeout`, `build_failed`, ...).
    pub error: Option<String>,
    /// Its first event.
    #[serde(skip)]
    pub started: Option<SystemTime>,
    /// From the first event to the final one.
    pub duration_ms: Option<u64>,
    /// The agent's turns (every attempt), for a Claude Code agent.
    pub turns: Option<u32>,
    /// What its results say it cost, in US dollars.
    pub cost_usd: Option<f64>,
    /// The last result's subtype.
    pub result: Option<String>,
}

/// The ended runs of `dir`'s session logs (not in `live`), newest first.
fn ended_runs(dir: &std::path::Path, live: &std::collections::HashSet<&str>) -> Vec<EndedRun> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runs: Vec<EndedRun> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let session = name.strip_suffix(".ndjson")?.to_string();
            if live.contains(session.as_str()) {
                return None;
            }
            let (first, last) = first_and_last_event(&e.path())?;
            let pod = session
                .rsplit_once('-')
                .map_or(session.as_str(), |(pod, _)| pod)
                .to_string();
            let (exit_code, error) = match &last.kind {
                cldpd::EventKind::ContainerExited { code } => (Some(*code), None),
                cldpd::EventKind::Error { code, .. } => (None, Some(code.clone())),
                _ => (None, None),
            };
            let terminal = last.is_terminal();
            let tally = tally_log(&e.path());
            Some(EndedRun {
                session,
                pod,
                state: "ended",
                exit_code,
                error,
                started: Some(first.time),
                duration_ms: terminal
                    .then(|| last.time.duration_since(first.time).ok())
                    .flatten()
                    .map(|d| d.as_millis() as u64),
                turns: tally.as_ref().map(AgentTally::turns),
                cost_usd: tally.as_ref().and_then(AgentTally::cost_usd),
                result: tally.as_ref().and_then(|t| t.subtype().map(String::from)),
            })
        })
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.started));
    runs
}

/// The first and the last event of a session log, without reading all of
/// it (a log can hold millions of lines).
fn first_and_last_event(path: &std::path::Path) -> Option<(cldpd::Event, cldpd::Event)> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(&mut file)
        .read_line(&mut first)
        .ok()?;
    let first: cldpd::Event = serde_json::from_str(first.trim_end()).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(256 * 1024);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let last = tail
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<cldpd::Event>(l).ok())
        .unwrap_or_else(|| first.clone());
    Some((first, last))
}
