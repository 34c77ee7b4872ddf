//! `cldpd logs <session>`: a run's events read back from its session log
//! (`<state-dir>/sessions/<session>.ndjson`), also after the container is
//! gone; `--follow` keeps reading while the run is live.
//!
//! `--follow` polls the file every 100 ms and ends after the run's final
//! event. A run whose cldpd process died never writes one: following ends
//! then too, once Docker has no running container for the session and the
//! log has been quiet for a second (a minute before the run's container
//! started, as an image build can be silent that long), with exit code 1.
//!
//! An incomplete log (events that could not be written, e.g. on a full
//! disk: a gap marker or a jump in `seq`) is shown as far as it goes, each
//! gap is named where it is, and the exit code is 1.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use cldpd::log::{LogEntry, LogReader};
use cldpd::EventKind;

use crate::cli::error::{CliError, EXIT_FAILURE};
use crate::cli::render::Renderer;
use crate::cli::Ctx;

/// How often `--follow` looks for new events.
const POLL: Duration = Duration::from_millis(100);
/// Quiet time after which `--follow` checks whether the run is live; then
/// again as often.
const QUIET: Duration = Duration::from_secs(1);

/// Arguments of `cldpd logs`.
#[derive(Debug, Args)]
#[command(after_help = "\
The container's stdout lines go to stdout and its stderr lines to stderr, as
they did live; cldpd's lifecycle lines (building, started, exited) go to
stderr. Exits 0 once the log is shown; 1 when the log is incomplete (events
could not be written, e.g. the state disk was full) or --follow saw the run
vanish without a final event.")]
pub struct LogsArgs {
    /// A session id (e.g. hello-1a2b3c4d), or a pod name for its latest run
    pub session: String,

    /// Keep reading while the run is live, until its final event
    #[arg(short, long)]
    pub follow: bool,

    /// Print every event as one JSON object per line on stdout
    #[arg(long)]
    pub json: bool,

    /// Only the last N output lines (and what follows them) of what is in
    /// the log now; with -f, then everything new
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,

    /// Put each output line's time (RFC 3339, UTC) before it
    #[arg(short, long)]
    pub timestamps: bool,
}

/// Run `cldpd logs`.
pub async fn run(args: LogsArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let (id, path) = resolve(ctx, &args.session)?;
    let (id, path) = if id == args.session {
        (id, path)
    } else {
        // A pod name: its one live run when there is one.
        match live_run_of(ctx, &args.session).await? {
            Some(live) => {
                ui.status(format_args!(
                    "showing {live}, the live run of pod {}",
                    args.session
                ));
                let path = ctx.settings().log_path(&live);
                (live, path)
            }
            None => {
                ui.status(format_args!(
                    "showing {id}, the latest run of pod {} (none is live)",
                    args.session
                ));
                (id, path)
            }
        }
    };
    // --tail: how many of the output lines in the log now to skip, and
    // everything before them.
    let mut skip = match args.tail {
        Some(n) => {
            let mut counter = LogReader::open(&path)?;
            let mut outputs = 0usize;
            while let Some(ev) = counter.next_event()? {
                outputs += usize::from(matches!(ev.kind, EventKind::Output { .. }));
            }
            outputs.saturating_sub(n)
        }
        None => 0,
    };
    let mut reader = LogReader::open(&path)?;
    let mut renderer = Renderer::replay();
    let mut container: Option<String> = None;
    let mut last_event = Instant::now();
    let mut last_check: Option<Instant> = None;
    let mut gone = false;
    let mut waiting = false;
    let mut incomplete = false;
    let done = |incomplete: bool| if incomplete { EXIT_FAILURE } else { 0 };
    loop {
        while let Some(entry) = reader.next_entry()? {
            let ev = match entry {
                LogEntry::Event(ev) => ev,
                LogEntry::Gap { from, to, reason } => {
                    incomplete = true;
                    ui.flush();
                    ui.notice(format_args!(
                        "the log of {id} is incomplete: events {from} to {to} are missing ({reason})"
                    ));
                    continue;
                }
            };
            last_event = Instant::now();
            if let EventKind::ContainerStarted { container: c, .. } = &ev.kind {
                container = Some(c.clone());
            }
            // Queued, building or waiting to restart: no container runs.
            waiting = matches!(
                ev.kind,
                EventKind::Queued { .. }
                    | EventKind::BuildStarted { .. }
                    | EventKind::BuildOutput { .. }
                    | EventKind::BuildComplete { .. }
                    | EventKind::Restarting { .. }
            );
            if skip > 0 {
                skip -= usize::from(matches!(ev.kind, EventKind::Output { .. }));
            } else if args.timestamps && !ui.json {
                renderer.event(&mut ui, &timestamped(&ev));
            } else {
                renderer.event(&mut ui, &ev);
            }
            if ev.is_terminal() {
                ui.flush();
                return Ok(done(incomplete));
            }
        }
        ui.flush();
        if ui.out_failed_now() {
            // Said on stderr; the exit code comes from the failure.
            return Ok(EXIT_FAILURE);
        }
        if !args.follow {
            return Ok(done(incomplete));
        }
        if gone {
            ui.status(format_args!(
                "{id} is gone and its log has no final event (was its cldpd process killed?)"
            ));
            return Ok(EXIT_FAILURE);
        }
        let due = last_check.is_none_or(|t| t.elapsed() >= QUIET);
        if last_event.elapsed() >= QUIET && due {
            last_check = Some(Instant::now());
            // Live: waiting for a container and its log written or touched
            // lately (its dispatcher touches it meanwhile), or Docker runs
            // its container. Otherwise read once more, then give up.
            gone = if waiting && cldpd::log::is_fresh(&path) {
                tracing::debug!(session = %id, "the log is fresh: the run is live");
                false
            } else {
                !live_in_docker(ctx, &id, container.as_deref()).await
            };
            if gone {
                continue;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The session of the one live run of `pod` (`None`: none, or Docker
/// unreachable); more than one is an error listing them.
async fn live_run_of(ctx: &Ctx, pod: &str) -> Result<Option<String>, CliError> {
    let runs = match ctx.dispatcher().runs().await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask Docker for the live runs");
            return Ok(None);
        }
    };
    let live: Vec<&str> = runs
        .iter()
        .filter(|r| r.pod == pod && r.state == "running")
        .map(|r| r.session.as_str())
        .collect();
    match live.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        many => Err(CliError::new(format!(
            "pod {pod} has {} live runs: {}",
            many.len(),
            many.join(", ")
        ))
        .hint("pass one of these session ids")),
    }
}

/// An output event with its time before the line (`logs -t`); other
/// events as they are.
fn timestamped(ev: &cldpd::Event) -> cldpd::Event {
    match &ev.kind {
        EventKind::Output {
            stream,
            line,
            partial,
        } => cldpd::Event::from_data(cldpd::EventData {
            session: ev.session.clone(),
            seq: ev.seq,
            time: ev.time,
            kind: EventKind::Output {
                stream: *stream,
                line: format!("{} {line}", humantime::format_rfc3339_micros(ev.time)),
                partial: *partial,
            },
        }),
        _ => ev.clone(),
    }
}

/// True when Docker runs a container of session `id` (or the container the
/// log names, for a resume, which runs in another session's container).
async fn live_in_docker(ctx: &Ctx, id: &str, container: Option<&str>) -> bool {
    match ctx.dispatcher().runs().await {
        Ok(runs) => runs.iter().any(|r| {
            r.state == "running" && (r.session == id || Some(r.container.as_str()) == container)
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask Docker whether the run is live");
            false
        }
    }
}

/// The session id and log file for `target`: a session id, or a pod name
/// (its newest log).
fn resolve(ctx: &Ctx, target: &str) -> Result<(String, PathBuf), CliError> {
    let settings = ctx.settings();
    let dir = settings.sessions_dir();
    // Session ids use the characters of pod names: this refuses paths.
    if cldpd::pod::validate_pod_name(target).is_err() {
        return Err(
            CliError::new(format!("invalid session id `{target}`")).hint(
                "a session id looks like hello-1a2b3c4d: see `cldpd ps`, or the file names in "
                    .to_string()
                    + &dir.display().to_string(),
            ),
        );
    }
    let path = settings.log_path(target);
    if path.is_file() {
        return Ok((target.to_string(), path));
    }
    let logs = session_logs(&dir);
    let prefix = format!("{target}-");
    let latest = logs
        .iter()
        .filter(|(id, _)| {
            id.strip_prefix(&prefix)
                .is_some_and(|rest| rest.len() == 8 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .max_by_key(|(_, modified)| *modified);
    if let Some((id, _)) = latest {
        return Ok((id.clone(), settings.log_path(id)));
    }
    let mut recent = logs;
    recent.sort_by_key(|r| std::cmp::Reverse(r.1));
    let hint = if recent.is_empty() {
        format!(
            "there are no session logs in {} yet; runs write them there (set --state-dir or CLDPD_STATE_DIR if yours are elsewhere)",
            dir.display()
        )
    } else {
        let names: Vec<&str> = recent.iter().take(5).map(|(id, _)| id.as_str()).collect();
        format!("recent sessions: {}", names.join(", "))
    };
    Err(CliError::new(format!(
        "no session log for `{target}` in {}",
        dir.display()
    ))
    .hint(hint))
}

/// `(session id, last modified)` of every log in `dir`.
fn session_logs(dir: &std::path::Path) -> Vec<(String, SystemTime)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".ndjson")?.to_string();
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((id, modified))
        })
        .collect()
}
