//! `cldpd batch <file>`: run many jobs, at most `--concurrency` at a time,
//! and report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use cldpd::batch::{parse_jobs, Admission, Batch, BatchOptions, BatchReport};
use cldpd::{Dispatcher, EventKind};
use futures_util::{FutureExt, StreamExt};

use crate::cli::error::{CliError, EXIT_FAILURE};
use crate::cli::output::{grace_text, short_duration, truncate_chars, SPINNER_INTERVAL};
use crate::cli::signals::Signals;
use crate::cli::{parse_grace, Ctx};

/// Arguments of `cldpd batch`.
#[derive(Debug, Args)]
#[command(after_help = "\
The job file is a JSON array or NDJSON (one object per line; blank lines and
lines starting with # are skipped). Each job is {\"pod\": \"<name>\", \"issue\":
\"<url>\"} or {\"pod\": ..., \"prompt\": \"...\"}, with an optional \"name\" and any
pod.json field as a per-job override (e.g. \"timeoutSecs\", \"restart\"). A
malformed or invalid job is reported with its line number and nothing starts.

Output: one line per finished job on stdout (on a terminal, a progress line
with the counts on stderr); --json: every event of every job as NDJSON.
Ctrl-C stops every job (SIGTERM, grace, SIGKILL) and still writes the report.
Runs orphaned by a dead cldpd with the same state directory are adopted: they
are listed when the batch starts (with --json, first, one line each:
{\"type\": \"batch_adopted\", \"session\": ..., \"container\": ...,
\"previous_owner\": ...}), count against --concurrency (shown as \"adopted\"
on the progress line), are stopped when the batch ends or is stopped, and
are listed in the report under \"adopted\" (one that ends on its own is
removed, and its log ends with its exit code).

Claude Code agents: each finished line and the report give the job's turns,
cost and result subtype, and the batch's totals. --budget-usd X stops
admitting jobs once the agents' results add up to X dollars (running jobs
finish; the rest are reported \"not_started\"). While an agent reports a rate
limit (HTTP 429, or 529 overloaded), the batch holds its admissions for a
back-off (10 s, doubling to 5 min while reports keep coming; shown on the
progress line); running jobs go on. With --json the last line is the report
({\"type\": \"batch_report\", ...}). A job of a pod whose pod.json names a
\"repo\" has its work come back as branch cldpd/<session>: its finished line
ends with it, and its report entry has \"branch\" and \"commits\".

Exit status: 0 when every job succeeded (exit 0), 1 otherwise.")]
pub struct BatchArgs {
    /// The job file (JSON array or NDJSON)
    pub file: PathBuf,

    /// Most jobs running at once; the rest wait in order
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Write the report (JSON) to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Seconds between SIGTERM and SIGKILL when the batch is stopped
    /// [default: each pod's stopGraceSecs, else 10]
    #[arg(long, value_name = "SECS", value_parser = parse_grace)]
    pub grace: Option<Duration>,

    /// Every event of every job as NDJSON on stdout (each has its session),
    /// then the report
    #[arg(long)]
    pub json: bool,

    /// Stop admitting jobs once the agents' results add up to this many
    /// US dollars
    #[arg(long, value_name = "USD", value_parser = parse_budget)]
    pub budget_usd: Option<f64>,
}

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not an amount of dollars above 0 (e.g. 2.50)"
        )),
    }
}

#[derive(Default)]
struct Counts {
    /// Runs of a dead cldpd holding slots (adopted at the start).
    adopted: usize,
    queued: usize,
    running: usize,
    succeeded: usize,
    failed: usize,
    not_started: usize,
}

/// Run `cldpd batch`.
pub async fn run(args: BatchArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let text = std::fs::read_to_string(&args.file).map_err(|e| {
        CliError::new(format!("cannot read {}: {e}", args.file.display()))
            .hint("pass a JSON array or NDJSON file of jobs")
    })?;
    let jobs = parse_jobs(&text, &args.file)?;
    let settings = ctx
        .settings()
        .clone()
        .max_concurrent(args.concurrency as usize)
        .workers(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .adopt_orphans(true);
    let dispatcher = Dispatcher::docker(settings);
    let result = run_batch(args, &mut ui, &dispatcher, jobs).await;
    // Every path, error or not: the jobs and the adopted runs are stopped
    // (a finished batch has none left of its own).
    if let Err(e) = dispatcher.shutdown(None).await {
        tracing::warn!(error = %e, "could not shut the batch's dispatcher down");
    }
    result
}

/// `value` as one JSON line on stdout, with `"type": kind` added.
fn typed_json_line(ui: &mut crate::cli::output::Ui, kind: &str, value: &impl serde::Serialize) {
    let mut line = serde_json::to_value(value).expect("our own types serialise");
    if let Some(m) = line.as_object_mut() {
        m.insert("type".into(), kind.into());
    }
    ui.json_line(&line);
}

async fn run_batch(
    args: BatchArgs,
    ui: &mut crate::cli::output::Ui,
    dispatcher: &Dispatcher,
    jobs: Vec<cldpd::batch::Job>,
) -> Result<i32, CliError> {
    let text_jobs = jobs.clone();
    dispatcher.preflight().await?;
    let mut signals = Signals::install()?;
    let total = jobs.len();
    let start_time = std::time::SystemTime::now();
    let options = BatchOptions {
        budget_usd: args.budget_usd,
        ..BatchOptions::default()
    };
    let batch = Batch::start_with(dispatcher, jobs, options).await?;
    ui.status(format_args!(
        "batch of {total} jobs, at most {} at a time{}",
        args.concurrency,
        args.budget_usd
            .map(|b| format!(", budget ${b:.2}"))
            .unwrap_or_default()
    ));
    let adopted = batch.adopted().len();
    if adopted > 0 {
        let ids: Vec<&str> = batch.adopted().iter().map(|r| r.session.as_str()).collect();
        ui.notice(format_args!(
            "adopted {adopted} run{} of a dead cldpd with this state directory ({}): {} hold{} slots of --concurrency and {} stopped when the batch ends",
            if adopted == 1 { "" } else { "s" },
            ids.join(", "),
            if adopted == 1 { "it" } else { "they" },
            if adopted == 1 { "s" } else { "" },
            if adopted == 1 { "is" } else { "are" },
        ));
        if ui.json {
            for run in batch.adopted() {
                typed_json_line(ui, "batch_adopted", run);
            }
            ui.flush();
        }
    }

    let started = Instant::now();
    let mut board = Board {
        names: batch_labels(&text_jobs),
        state: vec![Phase::Waiting; total],
        tails: HashMap::new(),
        counts: Counts {
            queued: total,
            adopted,
            ..Counts::default()
        },
        start_time,
        admission: batch.admission_changes(),
    };
    let mut events = batch.events();
    let report = batch.report();
    tokio::pin!(report);
    let mut report_done: Option<BatchReport> = None;
    let mut tick = tokio::time::interval(SPINNER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stopping: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> = None;
    let mut signalled = false;
    let mut events_done = false;
    let progress = ui.is_tty() && !ui.json;
    let mut admission = batch.admission_changes();
    let mut seen = Admission::default();
    let mut admission_open = true;
    if progress {
        ui.spin_begin(progress_text(&board.counts, total, &seen));
    }

    while !(events_done && report_done.is_some()) {
        tokio::select! {
            biased;
            _ = signals.recv() => {
                ui.spin_end();
                let grace = if signalled {
                    ui.notice("killing every job now (SIGKILL)");
                    Some(Duration::ZERO)
                } else {
                    signalled = true;
                    let text = args.grace.map_or("each pod's grace".to_string(), grace_text);
                    ui.notice(format_args!("stopping every job (SIGTERM, then SIGKILL after {text})"));
                    args.grace
                };
                stopping = Some(Box::pin(batch.stop(grace)));
                if progress {
                    ui.spin_begin(progress_text(&board.counts, total, &seen));
                }
            }
            _ = async { stopping.as_mut().expect("guarded").await }, if stopping.is_some() => {
                stopping = None;
            }
            ev = events.next(), if !events_done => {
                let Some(first) = ev else {
                    events_done = true;
                    continue;
                };
                // Handle what is already there, then flush once.
                let mut next = Some(first);
                let mut handled = 0;
                while let Some((i, ev)) = next.take() {
                    board.event(ui, i, &ev, signalled);
                    handled += 1;
                    if handled < DRAIN_BATCH {
                        match events.next().now_or_never() {
                            Some(Some(more)) => next = Some(more),
                            Some(None) => events_done = true,
                            None => {}
                        }
                    }
                }
                if progress {
                    ui.spin_begin(progress_text(&board.counts, total, &seen));
                }
                ui.flush();
                if ui.out_failed_now() && !signalled {
                    // Nobody reads the results: stop every job, as Ctrl-C
                    // would (the report is still written).
                    signalled = true;
                    let text = args.grace.map_or("each pod's grace".to_string(), grace_text);
                    ui.notice(format_args!("stopping every job (SIGTERM, then SIGKILL after {text})"));
                    stopping = Some(Box::pin(batch.stop(args.grace)));
                }
            }
            r = &mut report, if report_done.is_none() => {
                report_done = Some(r);
            }
            changed = admission.changed(), if admission_open => {
                if changed.is_err() {
                    // The governor is done; nothing more changes.
                    admission_open = false;
                    continue;
                }
                let now = admission.borrow_and_update().clone();
                ui.spin_end();
                admission_notices(ui, &seen, &now);
                seen = now;
                if progress {
                    ui.spin_begin(progress_text(&board.counts, total, &seen));
                }
                ui.flush();
            }
            _ = tick.tick(), if ui.spinning() => {
                if seen.held_until.is_some() {
                    // The back-off's countdown.
                    ui.spin_begin(progress_text(&board.counts, total, &seen));
                }
                ui.spin_tick()
            }
        }
    }
    ui.spin_end();
    let report = report_done.expect("loop ends with the report");
    if ui.json {
        typed_json_line(ui, "batch_report", &report);
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        std::fs::write(path, json).map_err(|e| {
            CliError::new(format!(
                "cannot write the report to {}: {e}",
                path.display()
            ))
        })?;
        ui.status(format_args!("report written to {}", path.display()));
    }
    let not_started = if report.not_started > 0 {
        format!(", {} not started (budget spent)", report.not_started)
    } else {
        String::new()
    };
    ui.status(format_args!(
        "batch done in {}: {} succeeded, {} failed, {} stopped{not_started}",
        short_duration(started.elapsed()),
        report.succeeded,
        report.failed,
        report.stopped
    ));
    if report.turns > 0 || report.cost_usd > 0.0 || report.budget_usd.is_some() {
        let budget = report
            .budget_usd
            .map(|b| {
                format!(
                    " of a ${b:.2} budget{}",
                    if report.budget_reached {
                        " (reached)"
                    } else {
                        ""
                    }
                )
            })
            .unwrap_or_default();
        let pauses = match report.rate_limit_pauses {
            0 => String::new(),
            n => format!(", {n} rate-limit back-off{}", if n == 1 { "" } else { "s" }),
        };
        ui.status(format_args!(
            "agents: {} turns, ${:.4}{budget}{pauses}",
            report.turns, report.cost_usd
        ));
    }
    if !report.adopted.is_empty() {
        let stopped = report
            .adopted
            .iter()
            .filter(|r| r.state == cldpd::batch::AdoptedState::Stopped)
            .count();
        ui.status(format_args!(
            "adopted runs: {stopped} stopped by the batch, {} ended on their own",
            report.adopted.len() - stopped
        ));
    }
    ui.flush();
    Ok(if report.all_succeeded() {
        0
    } else {
        EXIT_FAILURE
    })
}

/// Events handled before the loop flushes and looks at signals again.
const DRAIN_BATCH: usize = 1024;

/// What the batch command knows of every job while it runs.
struct Board {
    names: Vec<String>,
    state: Vec<Phase>,
    tails: HashMap<usize, Tail>,
    counts: Counts,
    start_time: std::time::SystemTime,
    /// The governor's state (is the budget spent?).
    admission: tokio::sync::watch::Receiver<Admission>,
}

impl Board {
    /// Account for one event of job `i`; print its line when it finished
    /// (or, with `--json`, print the event).
    fn event(
        &mut self,
        ui: &mut crate::cli::output::Ui,
        i: usize,
        ev: &cldpd::Event,
        stopping: bool,
    ) {
        if ui.json {
            ui.json_line(ev);
            return;
        }
        let tail = self.tails.entry(i).or_default();
        tail.tally.observe(&ev.kind);
        match &ev.kind {
            EventKind::Output { line, .. } | EventKind::BuildOutput { line } => tail.push(line),
            EventKind::Branch { name, commits, .. } => tail.branch = Some((name.clone(), *commits)),
            EventKind::ContainerStarted { .. } if !tail.ran => {
                tail.ran = true;
                tail.lines.clear();
            }
            _ => {}
        }
        let next = match &ev.kind {
            EventKind::BuildStarted { .. } | EventKind::ContainerStarted { .. } => Phase::Running,
            EventKind::ContainerExited { code: 0 } => Phase::Succeeded,
            EventKind::Error { code, .. }
                if code == "stopped"
                    && self.state[i] == Phase::Waiting
                    && self.admission.borrow().budget_reached =>
            {
                Phase::NotStarted
            }
            k if k.is_terminal() => Phase::Failed,
            _ => self.state[i],
        };
        if next != self.state[i] {
            self.counts.move_job(self.state[i], next);
            self.state[i] = next;
        }
        if ev.is_terminal() {
            let tail = self.tails.remove(&i).unwrap_or_default();
            let took = ev.time.duration_since(self.start_time).unwrap_or_default();
            if next == Phase::NotStarted {
                ui.print(format!(
                    "{:<8} {:<24} {:<16} {:>8}  {}\n",
                    "skipped", ev.session, "budget spent", "-", self.names[i]
                ));
                return;
            }
            ui.print(finished_line(ev, &self.names[i], stopping, took, &tail));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// Never started: the budget was spent.
    NotStarted,
}

impl Counts {
    fn slot(&mut self, p: Phase) -> &mut usize {
        match p {
            Phase::Waiting => &mut self.queued,
            Phase::Running => &mut self.running,
            Phase::Succeeded => &mut self.succeeded,
            Phase::Failed => &mut self.failed,
            Phase::NotStarted => &mut self.not_started,
        }
    }

    fn move_job(&mut self, from: Phase, to: Phase) {
        *self.slot(from) -= 1;
        *self.slot(to) += 1;
    }
}

/// Say when a back-off starts and when the budget is reached.
fn admission_notices(ui: &mut crate::cli::output::Ui, before: &Admission, now: &Admission) {
    if now.pauses > before.pauses {
        if let Some(d) = now.held_for() {
            ui.notice(format_args!(
                "{}: new jobs wait {} (running ones go on)",
                now.reason.as_deref().unwrap_or("rate limited"),
                short_duration(d)
            ));
        }
    }
    if now.budget_reached && !before.budget_reached {
        ui.notice(format_args!(
            "budget reached: ${:.4} spent of ${:.2}; no more jobs start (running ones finish)",
            now.spent_usd,
            now.budget_usd.unwrap_or_default()
        ));
    }
}

fn progress_text(c: &Counts, total: usize, a: &Admission) -> String {
    let done = c.succeeded + c.failed + c.not_started;
    let width = 20;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let adopted = if c.adopted > 0 {
        format!("  adopted {}", c.adopted)
    } else {
        String::new()
    };
    let mut extra = String::new();
    if a.spent_usd > 0.0 || a.budget_usd.is_some() {
        extra.push_str(&format!("  ${:.4}", a.spent_usd));
        if let Some(b) = a.budget_usd {
            extra.push_str(&format!("/{b:.2}"));
        }
    }
    if a.budget_reached {
        extra.push_str(&format!("  budget reached, {} not started", c.not_started));
    } else if let Some(d) = a.held_for() {
        extra.push_str(&format!("  paused {} (rate limited)", short_duration(d)));
    }
    format!(
        "[{}{}] {done}/{total}  queued {}  running {}{adopted}  succeeded {}  failed {}{extra}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        c.queued,
        c.running,
        c.succeeded,
        c.failed
    )
}

/// The last few output lines of a job, for its finished line.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    ran: bool,
    /// The agent's turns and cost so far.
    tally: cldpd::agent::AgentTally,
    /// The branch the work came back as, and its commits.
    branch: Option<(String, usize)>,
}

impl Tail {
    const KEEP: usize = 3;

    fn push(&mut self, line: &str) {
        if self.lines.len() == Self::KEEP {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }
}

/// What each job is about: its name, else its issue URL, else its prompt.
fn batch_labels(jobs: &[cldpd::batch::Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| match (&j.name, &j.task) {
            (Some(n), _) => n.clone(),
            (None, cldpd::Task::Issue(url)) => url.clone(),
            (None, cldpd::Task::Prompt(p)) => {
                truncate_chars(p.lines().next().unwrap_or_default(), 40)
            }
        })
        .collect()
}

/// `success, 4 turns, $0.0123  ` for an agent's job, else nothing.
fn agent_summary(t: &cldpd::agent::AgentTally) -> String {
    if !t.is_agent() {
        return String::new();
    }
    let cost = t
        .cost_usd()
        .map(|c| format!(", ${c:.4}"))
        .unwrap_or_default();
    format!(
        "{}{} turn{}{cost}  ",
        t.subtype().map(|s| format!("{s}, ")).unwrap_or_default(),
        t.turns(),
        if t.turns() == 1 { "" } else { "s" }
    )
}

/// One line per finished job: `STATE SESSION POD OUTCOME DURATION WHAT`,
/// then for a failure its error and last output lines.
fn finished_line(
    ev: &cldpd::Event,
    what: &str,
    stopping: bool,
    took: Duration,
    tail: &Tail,
) -> String {
    let (state, outcome, error) = match &ev.kind {
        EventKind::ContainerExited { code } if stopping => {
            ("stopped", format!("exit {code}"), None)
        }
        EventKind::ContainerExited { code: 0 } => ("ok", "exit 0".to_string(), None),
        EventKind::ContainerExited { code } => ("FAILED", format!("exit {code}"), None),
        EventKind::Error { code, .. } if code == "stopped" || stopping => {
            ("stopped", code.clone(), None)
        }
        EventKind::Error { code, message } => ("FAILED", code.clone(), Some(message.as_str())),
        _ => ("?", String::new(), None),
    };
    let agent = agent_summary(&tail.tally);
    let mut line = format!(
        "{state:<8} {:<24} {outcome:<16} {:>8}  {agent}{what}",
        ev.session,
        short_duration(took),
    );
    if let Some((name, commits)) = &tail.branch {
        let plural = if *commits == 1 { "" } else { "s" };
        line.push_str(&format!("  → {name} ({commits} commit{plural})"));
    }
    if state == "FAILED" {
        if let Some(message) = error {
            line.push_str(&format!(
                "\n         {}",
                message.lines().next().unwrap_or_default()
            ));
        }
        for l in &tail.lines {
            line.push_str(&format!("\n         | {l}"));
        }
    }
    line.push('\n');
    line
}
