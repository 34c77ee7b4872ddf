//! `cldpd ps`: the runs Docker knows about, from their `cldpd.*` labels, so
//! runs of every cldpd process are listed.

use std::time::SystemTime;

use clap::Args;

use crate::cli::error::CliError;
use crate::cli::output::{age, table};
use crate::cli::Ctx;

/// Arguments of `cldpd ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// One JSON object per run on stdout (session, pod, container, issue,
    /// started, state, attempt, owner, orphan)
    #[arg(long)]
    pub json: bool,

    /// Also the runs that ended, from the session logs: exit code and
    /// duration
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
    if ui.json {
        for run in &runs {
            ui.json_line(run);
        }
        for run in &ended {
            ui.json_line(run);
        }
        return Ok(0);
    }
    if args.quiet {
        for session in runs
            .iter()
            .map(|r| &r.session)
            .chain(ended.iter().map(|r| &r.session))
        {
            ui.print(format_args!("{session}\n"));
        }
        return Ok(0);
    }
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let age = r
                .started
                .map(|t| age(now.duration_since(t).unwrap_or_default()))
                .unwrap_or_else(|| "-".into());
            let mut state = r.state.clone();
            if r.orphan {
                state.push_str(" (orphan)");
            }
            vec![
                r.session.clone(),
                r.pod.clone(),
                r.issue.clone().unwrap_or_else(|| "-".into()),
                age,
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
            vec![
                r.session.clone(),
                r.pod.clone(),
                "-".to_string(),
                r.started
                    .map(|t| age(now.duration_since(t).unwrap_or_default()))
                    .unwrap_or_else(|| "-".into()),
                state,
            ]
        }))
        .collect();
    ui.print(table(&["SESSION", "POD", "ISSUE", "AGE", "STATE"], &rows));
    Ok(0)
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
