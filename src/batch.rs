//! Batch dispatch: many jobs, one report.
//!
//! A batch is a list of [`Job`]s (pod + issue URL or prompt + per-job
//! overrides of `pod.json`). [`Batch::start`] checks every job first — the
//! batch does not start if any job is bad — then starts them all; the
//! dispatcher's admission control (`max_concurrent`) queues what does not fit,
//! FIFO. [`Batch::events`] merges the events of every job;
//! [`Batch::report`] waits for every job and returns a [`BatchReport`]: per
//! job the session id, final state, exit code, restarts, duration, for a
//! Claude Code agent its turns, cost and result subtype, for a pod with a
//! `repo` the branch its work came back as and its commit count, and, on
//! failure, the last lines of output; and the totals.
//!
//! [`BatchOptions`] add a budget (`budget_usd`: once the agents' results
//! add up to it, queued jobs never start and are reported `not_started`)
//! and a back-off while the API reports rate limits (admissions wait;
//! running jobs go on). See [`admission`].
//!
//! Job files (`cldpd batch <file>`) are a JSON array or NDJSON (one object a
//! line; blank lines and lines starting with `#` are skipped) of
//! `{"pod": "...", "issue": "https://..."}` or `{"pod": "...", "prompt":
//! "..."}`, with an optional `"name"` and any `pod.json` field as a per-job
//! override:
//!
//! ```
//! let jobs = cldpd::batch::parse_jobs(
//!     r#"{"pod": "web", "issue": "https://github.com/acme/web/issues/1"}
//!        {"pod": "web", "prompt": "fix the flaky test", "timeoutSecs": 600, "restart": "on-failure"}"#,
//!     "jobs.ndjson".as_ref(),
//! ).unwrap();
//! assert_eq!(jobs.len(), 2);
//! assert_eq!(jobs[1].overrides.timeout_secs, Some(600.0));
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::facade::{Dispatcher, Session};
use crate::messages::dispatcher::{AdoptedRun, StartRequest, Task};
use crate::pod::PodConfig;

pub mod admission;

pub use admission::Admission;
use admission::{Backoff, Governor};

/// Output lines kept per job for the report of a failed job.
pub const DEFAULT_TAIL_LINES: usize = 20;

/// One job of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// A label for reports (default: none).
    pub name: Option<String>,
    /// Pod name.
    pub pod: String,
    /// What to do.
    pub task: Task,
    /// Per-job overrides of the pod's `pod.json`.
    pub overrides: PodConfig,
    /// Line of the job file it came from.
    pub line: Option<usize>,
}

impl Job {
    /// A job working on a GitHub issue.
    pub fn issue(pod: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(pod, Task::Issue(url.into()))
    }

    /// A job with a free-form prompt.
    pub fn prompt(pod: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self::new(pod, Task::Prompt(prompt.into()))
    }

    fn new(pod: impl Into<String>, task: Task) -> Self {
        Job {
            name: None,
            pod: pod.into(),
            task,
            overrides: PodConfig::default(),
            line: None,
        }
    }

    /// Override `pod.json` fields for this job.
    pub fn overrides(mut self, overrides: PodConfig) -> Self {
        self.overrides = overrides;
        self
    }

    fn request(&self) -> StartRequest {
        let req = match &self.task {
            Task::Issue(url) => StartRequest::issue(self.pod.clone(), url.clone()),
            Task::Prompt(p) => StartRequest::prompt(self.pod.clone(), p.clone()),
        };
        req.overrides(self.overrides.clone())
    }

    /// `e`, refusing this job (the `index`-th of its batch).
    fn refused(&self, index: usize, e: Error) -> Error {
        Error::BatchJob {
            index,
            line: self.line,
            source: Box::new(e),
        }
    }
}

/// Parse a job file (JSON array or NDJSON). A malformed job is reported
/// with its line number ([`Error::BatchFile`]).
pub fn parse_jobs(text: &str, path: &Path) -> Result<Vec<Job>> {
    let bad = |line: usize, message: String| Error::BatchFile {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut items: Vec<(usize, &str)> = Vec::new();
    if text.trim_start().starts_with('[') {
        let raws: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(|e| bad(e.line(), format!("invalid JSON: {e}")))?;
        for raw in raws {
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            items.push((text[..offset].matches('\n').count() + 1, raw.get()));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') {
                items.push((i + 1, t));
            }
        }
    }
    if items.is_empty() {
        return Err(bad(1, "no jobs: write one JSON object per job".into()));
    }
    items
        .into_iter()
        .map(|(line, json)| {
            parse_job(json, path)
                .map_err(|m| bad(line, m))
                .map(|mut j| {
                    j.line = Some(line);
                    j
                })
        })
        .collect()
}

fn parse_job(json: &str, path: &Path) -> std::result::Result<Job, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err(
            "a job must be a JSON object like {\"pod\": \"web\", \"issue\": \"https://...\"}"
                .into(),
        );
    };
    let mut string = |key: &str| -> std::result::Result<Option<String>, String> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("`{key}` must be a string, not {other}")),
        }
    };
    let pod = string("pod")?.ok_or("`pod` is missing")?;
    let name = string("name")?;
    let task = match (string("issue")?, string("prompt")?) {
        (Some(url), None) => Task::Issue(url),
        (None, Some(p)) => Task::Prompt(p),
        (Some(_), Some(_)) => return Err("give `issue` or `prompt`, not both".into()),
        (None, None) => return Err("`issue` (a GitHub issue URL) or `prompt` is missing".into()),
    };
    let overrides = if map.is_empty() {
        PodConfig::default()
    } else {
        PodConfig::from_json(&Value::Object(map).to_string(), path).map_err(|e| match e {
            Error::PodConfig {
                field: Some(field),
                message,
                ..
            } => format!("field `{field}`: {message}"),
            Error::PodConfig { message, .. } => message,
            other => other.to_string(),
        })?
    };
    Ok(Job {
        name,
        pod,
        task,
        overrides,
        line: None,
    })
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// The container exited 0.
    Succeeded,
    /// Non-zero exit, or an error.
    Failed,
    /// Stopped by [`Batch::stop`] (Ctrl-C) before it finished.
    Stopped,
    /// Never started: the batch's budget was spent while it waited.
    NotStarted,
}

/// The outcome of one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Position in the batch, from 0.
    pub index: usize,
    /// The job's name, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pod.
    pub pod: String,
    /// Issue URL, for issue jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// Session id.
    pub session: String,
    /// Final state.
    pub state: JobState,
    /// Exit code of the last container, when it exited.
    pub exit_code: Option<i32>,
    /// The error, when the run failed with one: `{code, message}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Restarts under the restart policy.
    pub restarts: u32,
    /// From submission to the end, in milliseconds.
    pub duration_ms: u64,
    /// Turns the agent took (every attempt), for a Claude Code agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    /// What the agent's results say it cost, in US dollars (every attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The last result's subtype (`success`, `error_max_turns`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The branch the job's work came back as (`cldpd/<session>`), for a
    /// pod whose `pod.json` names a `repo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// How many commits that branch has on top of the ref it started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<usize>,
    /// The last lines of output (stdout and stderr) when the job failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<String>,
}

/// An error in a [`JobReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobError {
    /// [`Error::code`].
    pub code: String,
    /// The message.
    pub message: String,
}

/// The outcome of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// Jobs.
    pub total: usize,
    /// Jobs that succeeded.
    pub succeeded: usize,
    /// Jobs that failed.
    pub failed: usize,
    /// Jobs stopped before they finished.
    pub stopped: usize,
    /// Jobs that never started because the budget was spent.
    pub not_started: usize,
    /// Turns of every agent.
    pub turns: u64,
    /// What every agent's results say it cost, in US dollars.
    pub cost_usd: f64,
    /// The budget, when the batch had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// True when the spent total reached the budget (and jobs were kept
    /// from starting, if any were left).
    pub budget_reached: bool,
    /// Back-offs taken because the API reported rate limits.
    pub rate_limit_pauses: u32,
    /// Wall time of the batch in milliseconds.
    pub duration_ms: u64,
    /// One entry per job, in batch order.
    pub jobs: Vec<JobReport>,
    /// Runs of a dead cldpd adopted by the batch's dispatcher: they held
    /// slots of the batch's concurrency and were stopped with it.
    pub adopted: Vec<AdoptedReport>,
}

/// What became of a run the batch's dispatcher adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptedReport {
    /// Session id.
    pub session: String,
    /// Its container.
    pub container: String,
    /// The dead dispatcher that started it.
    pub previous_owner: String,
    /// `stopped` (by the batch, at its end or on [`Batch::stop`]) or
    /// `ended` (on its own, while the batch ran).
    pub state: AdoptedState,
}

/// How an adopted run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdoptedState {
    /// Stopped by the batch.
    Stopped,
    /// Ended on its own.
    Ended,
}

impl BatchReport {
    /// True when every job succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.succeeded == self.total
    }
}

/// How a batch admits its jobs (beyond the dispatcher's `max_concurrent`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchOptions {
    /// Stop admitting jobs once the agents' results add up to this many
    /// US dollars.
    pub budget_usd: Option<f64>,
    /// First back-off when a rate limit is reported (default
    /// [`admission::DEFAULT_BACKOFF`]).
    pub backoff: Option<Duration>,
    /// Longest back-off (default [`admission::DEFAULT_MAX_BACKOFF`]).
    pub max_backoff: Option<Duration>,
}

/// A running batch. See the [module docs](self).
pub struct Batch {
    governor: Arc<Governor>,
    dispatcher: Dispatcher,
    /// Runs of a dead dispatcher adopted when the batch started.
    adopted: Vec<AdoptedRun>,
    /// Those the batch stopped.
    adopted_stopped: Arc<Mutex<Vec<String>>>,
    jobs: Vec<Job>,
    sessions: Vec<Session>,
    started: SystemTime,
    /// When [`Batch::stop`] was called.
    stopped_at: Arc<Mutex<Option<SystemTime>>>,
    tail_lines: usize,
}

impl Batch {
    /// Check every job, then start them all. A bad job refuses the whole
    /// batch with [`Error::BatchJob`] (naming its index and line). A job
    /// that passes the check but then fails to start (its pod changed in
    /// between, the state directory failed) refuses the batch too, after
    /// the jobs already started have been stopped: nothing of a refused
    /// batch keeps running.
    pub async fn start(dispatcher: &Dispatcher, jobs: Vec<Job>) -> Result<Batch> {
        Self::start_with(dispatcher, jobs, BatchOptions::default()).await
    }

    /// [`Batch::start`] with a budget or another back-off.
    pub async fn start_with(
        dispatcher: &Dispatcher,
        jobs: Vec<Job>,
        options: BatchOptions,
    ) -> Result<Batch> {
        for (index, job) in jobs.iter().enumerate() {
            dispatcher
                .validate(job.request())
                .await
                .map_err(|e| job.refused(index, e))?;
        }
        // Adopted before any message (settings' `adopt_orphans`): they hold
        // slots, so they are shown, and stopped with the batch.
        let adopted = dispatcher.adopted().await?;
        if !adopted.is_empty() {
            tracing::info!(
                adopted = adopted.len(),
                "the batch's dispatcher adopted orphaned runs; they are stopped with the batch"
            );
        }
        let started = SystemTime::now();
        let mut sessions = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.iter().enumerate() {
            match dispatcher.start(job.request()).await {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    // All or nothing: the jobs already started are stopped
                    // (each with its own grace) before the batch is refused.
                    tracing::warn!(
                        job = index,
                        started = sessions.len(),
                        error = %e,
                        "a batch job could not start; stopping the jobs already started"
                    );
                    join_all(sessions.iter().map(|s| s.stop(None))).await;
                    return Err(job.refused(index, e));
                }
            }
        }
        let governor = Governor::new(options.budget_usd);
        let defaults = Backoff::default();
        governor.spawn(
            dispatcher.clone(),
            sessions.clone(),
            Backoff {
                base: options.backoff.unwrap_or(defaults.base),
                max: options.max_backoff.unwrap_or(defaults.max),
            },
        );
        Ok(Batch {
            governor,
            dispatcher: dispatcher.clone(),
            adopted,
            adopted_stopped: Arc::new(Mutex::new(Vec::new())),
            jobs,
            sessions,
            started,
            stopped_at: Arc::new(Mutex::new(None)),
            tail_lines: DEFAULT_TAIL_LINES,
        })
    }

    /// How many output lines a failed job's report keeps.
    pub fn tail_lines(mut self, n: usize) -> Self {
        self.tail_lines = n;
        self
    }

    /// The runs of a dead cldpd adopted by the dispatcher when the batch
    /// started (they count against its concurrency and are stopped when
    /// the batch ends or is stopped).
    pub fn adopted(&self) -> &[AdoptedRun] {
        &self.adopted
    }

    /// Stop the adopted runs still live, remembering them for the report.
    async fn stop_adopted(&self, grace: Option<Duration>) {
        if self.adopted.is_empty() {
            return;
        }
        match self.dispatcher.stop_adopted(grace).await {
            Ok(stopped) => self
                .adopted_stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(stopped.into_iter().map(|r| r.session)),
            Err(e) => tracing::error!(error = %e, "could not stop the adopted runs"),
        }
    }

    /// What the admission governor is doing now (rate-limit hold, money
    /// spent, budget).
    pub fn admission(&self) -> Admission {
        self.governor.state.borrow().clone()
    }

    /// [`Batch::admission`] as it changes.
    pub fn admission_changes(&self) -> tokio::sync::watch::Receiver<Admission> {
        self.governor.state.subscribe()
    }

    /// The sessions, in batch order.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// Every event of every job, tagged with the job's index; ends when
    /// every job has ended.
    pub fn events(&self) -> impl Stream<Item = (usize, Event)> + Send + 'static {
        stream::select_all(
            self.sessions
                .iter()
                .enumerate()
                .map(|(i, s)| s.events().map(move |e| (i, e)).boxed()),
        )
    }

    /// Stop every job that has not ended (queued ones never start), each
    /// with `grace`; jobs that end because of it are reported `stopped`.
    pub async fn stop(&self, grace: Option<Duration>) {
        self.stopped_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(SystemTime::now);
        futures_util::join!(
            join_all(self.sessions.iter().map(|s| s.stop(grace))),
            self.stop_adopted(grace)
        );
    }

    /// Wait for every job, stop the adopted runs still live (the batch is
    /// over), and report.
    pub async fn report(&self) -> BatchReport {
        let jobs = join_all(
            self.sessions
                .iter()
                .enumerate()
                .map(|(i, s)| self.job_report(i, s)),
        )
        .await;
        self.stop_adopted(None).await;
        let stopped = self
            .adopted_stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let adopted = self
            .adopted
            .iter()
            .map(|r| AdoptedReport {
                session: r.session.clone(),
                container: r.container.clone(),
                previous_owner: r.previous_owner.clone(),
                state: if stopped.contains(&r.session) {
                    AdoptedState::Stopped
                } else {
                    AdoptedState::Ended
                },
            })
            .collect();
        let count = |st: JobState| jobs.iter().filter(|j| j.state == st).count();
        let admission = self.admission();
        BatchReport {
            total: jobs.len(),
            succeeded: count(JobState::Succeeded),
            failed: count(JobState::Failed),
            stopped: count(JobState::Stopped),
            not_started: count(JobState::NotStarted),
            turns: jobs.iter().filter_map(|j| j.turns).map(u64::from).sum(),
            cost_usd: jobs.iter().filter_map(|j| j.cost_usd).sum(),
            budget_usd: admission.budget_usd,
            budget_reached: admission.budget_reached,
            rate_limit_pauses: admission.pauses,
            duration_ms: millis(self.started.elapsed().unwrap_or_default()),
            jobs,
            adopted,
        }
    }

    async fn job_report(&self, index: usize, session: &Session) -> JobReport {
        let job = &self.jobs[index];
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut restarts = 0;
        let mut ran = false;
        let mut terminal: Option<Event> = None;
        let mut tally = crate::agent::AgentTally::default();
        let mut branch: Option<(String, usize)> = None;
        let mut events = session.events();
        while let Some(ev) = events.next().await {
            tally.observe(&ev.kind);
            match &ev.kind {
                EventKind::Branch { name, commits, .. } => {
                    branch = Some((name.clone(), *commits));
                }
                EventKind::Output { line, .. } | EventKind::BuildOutput { line } => {
                    if tail.len() == self.tail_lines {
                        tail.pop_front();
                    }
                    if self.tail_lines > 0 {
                        tail.push_back(line.clone());
                    }
                }
                // Build output matters only when the build is what failed.
                EventKind::ContainerStarted { .. } if !ran => {
                    ran = true;
                    tail.clear();
                }
                EventKind::Restarting { .. } => restarts += 1,
                _ => {}
            }
            if ev.is_terminal() {
                terminal = Some(ev);
            }
        }
        // A run the restart limit ended still has its agent's last code.
        let last_code = match session.wait().await {
            Err(Error::RestartLimit { exit_code, .. }) => exit_code,
            _ => None,
        };
        let (exit_code, error) = match terminal.as_ref().map(|e| &e.kind) {
            Some(EventKind::ContainerExited { code }) => (Some(*code), None),
            Some(EventKind::Error { code, message }) => (
                last_code,
                Some(JobError {
                    code: code.clone(),
                    message: message.clone(),
                }),
            ),
            _ => (
                None,
                Some(JobError {
                    code: "internal".into(),
                    message: "the run ended without a terminal event".into(),
                }),
            ),
        };
        let ended = terminal.as_ref().map_or_else(SystemTime::now, |e| e.time);
        // A job that ended after the batch was told to stop was stopped,
        // whatever its agent did on SIGTERM.
        let stopped_at = *self.stopped_at.lock().unwrap_or_else(|e| e.into_inner());
        let stopped = stopped_at.is_some_and(|t| ended >= t);
        let not_started = self.governor.was_not_started(session.id());
        let error = match error {
            Some(_) if not_started => {
                let a = self.admission();
                Some(JobError {
                    code: "budget_spent".into(),
                    message: format!(
                        "not started: the batch's budget of ${:.4} was spent (${:.4})",
                        a.budget_usd.unwrap_or_default(),
                        a.spent_usd
                    ),
                })
            }
            other => other,
        };
        let state = match (exit_code, &error) {
            _ if not_started => JobState::NotStarted,
            (_, Some(e)) if e.code == "stopped" => JobState::Stopped,
            _ if stopped => JobState::Stopped,
            (Some(0), None) => JobState::Succeeded,
            _ => JobState::Failed,
        };
        JobReport {
            index,
            name: job.name.clone(),
            pod: job.pod.clone(),
            // As the agent got it (`#42` expanded with the pod's
            // repository), else as the job gave it (it never started).
            issue: match &job.task {
                Task::Issue(url) => session.info().issue.clone().or_else(|| Some(url.clone())),
                Task::Prompt(_) => None,
            },
            session: session.id().to_string(),
            state,
            exit_code,
            error,
            restarts,
            duration_ms: millis(ended.duration_since(self.started).unwrap_or_default()),
            turns: tally.is_agent().then(|| tally.turns()),
            cost_usd: tally.cost_usd(),
            result: tally.subtype().map(String::from),
            commits: branch.as_ref().map(|b| b.1),
            branch: branch.map(|b| b.0),
            tail: if matches!(state, JobState::Succeeded | JobState::NotStarted) {
                Vec::new()
            } else {
                tail.into()
            },
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("jobs.json")
    }

    #[test]
    fn arrays_and_ndjson_parse_with_line_numbers() {
        let jobs = parse_jobs(
            "[\n  {\"pod\": \"a\", \"issue\": \"https://github.com/o/r/issues/1\"},\n\n  {\"pod\": \"b\", \"prompt\": \"x\", \"name\": \"second\"}\n]",
            p(),
        )
        .unwrap();
        assert_eq!(jobs[0].line, Some(2));
        assert_eq!(jobs[1].line, Some(4));
        assert_eq!(jobs[1].name.as_deref(), Some("second"));
        let jobs = parse_jobs(
            "# comment\n{\"pod\":\"a\",\"prompt\":\"x\"}\n\n{\"pod\":\"b\",\"prompt\":\"y\"}\n",
            p(),
        )
        .unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.line).collect::<Vec<_>>(),
            [Some(2), Some(4)]
        );
    }

    #[test]
    fn the_example_batch_file_parses() {
        let text = include_str!("../config/batch-example.ndjson");
        let jobs = parse_jobs(text, Path::new("config/batch-example.ndjson")).unwrap();
        assert_eq!(jobs.len(), 4);
        assert_eq!(
            jobs[3].overrides.restart,
            Some(crate::RestartPolicy::OnFailure)
        );
    }

    #[test]
    fn a_malformed_job_names_its_line() {
        let err = |text: &str| match parse_jobs(text, p()) {
            Err(Error::BatchFile { line, message, .. }) => (line, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(err("{\"pod\":\"a\",\"prompt\":\"x\"}\n{\"pod\": \n").0, 2);
        let (line, msg) = err("{\"pod\":\"a\",\"prompt\":\"x\"}\n{\"prompt\":\"x\"}\n");
        assert_eq!(line, 2);
        assert!(msg.contains("`pod` is missing"), "{msg}");
        let (line, msg) = err("{\"pod\":\"a\",\"prompt\":\"x\",\"timeoutSec\":5}");
        assert_eq!(line, 1);
        assert!(msg.contains("timeoutSec"), "{msg}");
        assert!(err("{\"pod\":\"a\"}").1.contains("`issue`"));
        assert!(err("{\"pod\":\"a\",\"issue\":\"u\",\"prompt\":\"p\"}")
            .1
            .contains("not both"));
        assert!(err("[1]").1.contains("JSON object"));
        assert!(
            err("[\n{\"pod\":\"a\",\"prompt\":\"x\"},\n{\"pod\":1,\"prompt\":\"x\"}\n]").0 == 3
        );
        assert!(err("\n\n").1.contains("no jobs"));
    }
}
