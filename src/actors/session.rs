//! [`SessionActor`]: the state machine of one run.
//!
//! ```text
//! Created ─Enqueued─▶ Queued ─Admit─▶ Building ─▶ Starting ─Started─▶ Running ─▶ (Restarting ─▶ Starting ─▶ Running)* ─▶ Exited | Failed
//!                                                   │
//!                                                   └─ stop / timeout ─▶ Stopping ─▶ Exited | Failed
//! ```
//!
//! The session numbers its events (`seq` from 1, no gaps), appends them to
//! its log and fans them out ([`fanout`]); applies the
//! restart policy and timeouts ([`supervisor`](super::supervisor)); and runs
//! the stop escalation: SIGTERM, the grace period, SIGKILL, then
//! `kill_timeout` before giving up with [`Error::StopFailed`] — the crate's
//! one escalation (`runtime::escalation`, which every backend's
//! `Runtime::stop` runs too), its signals sent through the runner and
//! cancelled by the container's end. The actor stops only after its
//! terminal event, so an escalation always completes.
//!
//! A resume session skips admission and build: it execs into the container
//! of the run it resumes.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::watch;

use crate::actors::build;
use crate::actors::dispatcher::DispatcherActor;
use crate::actors::fanout::{self, SharedHub};
use crate::actors::runner::{Job, RunnerActor};
use crate::actors::supervisor::{guarded, stops, Decision, Ending, Policy, RestartTracker};
use crate::agent::{self, AgentInput, AgentLimits, AgentOutput, StreamJsonParser};
use crate::error::{Error, TimeoutKind};
use crate::event::{Event, EventData, EventKind, OutputStream};
use crate::messages::dispatcher::{ForgetImage, ImageFound, RequestBuild, SessionEnded};
use crate::messages::runner::{Abandon, Release, Signal};
use crate::messages::session::*;
use crate::runtime::escalation;
use crate::runtime::{
    labels, BindMount, BuildSpec, ProcessEvent, RunSpec, Runtime, SecretValue, Stdin,
};

mod conversation;
mod storage;
use conversation::Conversation;
use storage::persist;

/// What a session runs.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// Build the image, then run containers (one per attempt).
    Start(Box<StartPlan>),
    /// A follow-up to a running container: an exec of a second agent
    /// process (`Job::Exec`), or a prompt to its long-lived agent
    /// (`Job::FollowUp`).
    Resume {
        job: Box<Job>,
        agent_output: AgentOutput,
    },
}

/// The parts of a [`Plan::Start`]: what is this run's own, and the
/// template it shares with the other runs of its pod.
#[derive(Debug, Clone)]
pub(crate) struct StartPlan {
    pub(crate) template: Arc<RunTemplate>,
    /// Resolved at dispatch time (`inheritEnv` reads the host then).
    pub(crate) env: Vec<(String, SecretValue)>,
    pub(crate) mounts: Vec<BindMount>,
    /// The issue URL, for the `cldpd.issue` label.
    pub(crate) issue: Option<String>,
    pub(crate) prompt: String,
    /// Storage that outlives the container (a long-lived agent's).
    pub(crate) persistent: Option<Arc<Persistent>>,
}

/// A run whose workspace and agent state outlive its container (see
/// [`crate::workspace::storage`]).
#[derive(Debug)]
pub(crate) struct Persistent {
    pub(crate) storage: crate::workspace::Storage,
    /// The storage's session id (its first run's): names the branch.
    pub(crate) key: String,
    pub(crate) conversation: String,
    /// Continue the conversation (`--resume`) instead of beginning it.
    pub(crate) resume: bool,
    pub(crate) workdir: String,
    /// False when the pod mounts something of its own at the workdir.
    pub(crate) mount_work: bool,
    pub(crate) repo: Option<crate::workspace::StoredRepo>,
    pub(crate) issue: Option<String>,
    /// Bring the work back after each turn too (`checkpoint`).
    pub(crate) checkpoint: bool,
}

/// What every run of one pod under one dispatcher has in common (made
/// once per discovered pod and shared, so a live session holds only its
/// own parts).
#[derive(Debug)]
pub(crate) struct RunTemplate {
    /// Shared by every run's build request (a clone per start held up
    /// to 1.3 KB per session at the peak of a start burst).
    pub(crate) build: Arc<BuildSpec>,
    /// Session, container, command, env and mounts empty; the labels
    /// common to every run.
    pub(crate) run: RunSpec,
    pub(crate) agent: Vec<String>,
    /// What the agent prints (parsed into agent events or not).
    pub(crate) agent_output: AgentOutput,
    /// How the agent takes prompts (stream-json: a long-lived agent).
    pub(crate) agent_input: AgentInput,
    /// How long a long-lived agent waits, idle, for a follow-up.
    pub(crate) keep_alive: std::time::Duration,
    /// `--max-turns` / `--max-budget-usd`.
    pub(crate) limits: AgentLimits,
    pub(crate) policy: Arc<Policy>,
    /// The image tag, shared by the sessions' actors.
    pub(crate) image: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Queued,
    Building,
    Running,
    /// Removing the container of a failed attempt.
    Cleanup,
    Backoff,
    Ended,
}

#[derive(Debug, Clone)]
enum StopReason {
    Requested,
    Timeout(TimeoutKind, std::time::Duration),
    /// A long-lived agent answered everything and its keep-alive is over.
    Finished,
}

struct Stopping {
    reason: StopReason,
    /// Brings the escalation's SIGKILL forward (a later, shorter stop);
    /// `None` when no container runs.
    hurry: Option<escalation::Hurry>,
    /// The escalation, cancelled when the container ends.
    escalation: Option<SpawnHandle>,
}

/// One run. See the [module docs](self).
pub struct SessionActor {
    id: Arc<str>,
    image: Arc<str>,
    /// What the containers run: the built image's id once the build is done
    /// (the tag may move; the id is what was built from these inputs).
    run_image: Option<Box<str>>,
    plan: Plan,
    policy: Arc<Policy>,
    runtime: Arc<dyn Runtime>,
    dispatcher: Addr<DispatcherActor>,
    hub: SharedHub,
    state: watch::Sender<SessionState>,
    phase: Phase,
    seq: u64,
    attempt: u32,
    /// Number of the current runner (reports of older ones are ignored).
    generation: u32,
    /// Set while a recorded image is being checked: the container already
    /// starts, its reports wait here (boxed: rare).
    checking: Option<Box<Checking>>,
    runner: Option<Addr<RunnerActor>>,
    container: Option<Box<str>>,
    tracker: RestartTracker,
    stopping: Option<Box<Stopping>>,
    backoff_timer: Option<SpawnHandle>,
    first_start: Option<Instant>,
    last_output: Instant,
    finished: bool,
    /// The stream-json parser of the current process, while it holds
    /// something (a split line, the agent's result): made for a batch of
    /// output when the agent writes stream-json
    /// ([`agent_output`](Self::agent_output)) and dropped after it when it
    /// holds nothing, so that a quiet run holds none (96 bytes of heap per
    /// live session in `bench_hold`, BENCHMARKS.md; one allocation per
    /// batch of a busy one).
    parser: Option<Box<StreamJsonParser>>,
    /// The final state and container to clean up, reported once the log
    /// is settled.
    ended: Option<Box<(SessionState, Option<String>)>>,
    /// Whether another process can record a stop of this run (see
    /// [`stops`]), to be consulted before any restart. The marker's path is
    /// made when needed, not kept: 10,000 live runs kept 10,000 paths.
    stoppable_elsewhere: bool,
    /// A long-lived agent's conversation (boxed: only such runs have one).
    convo: Option<Box<Conversation>>,
    /// Set once the work of a persistent session was saved (or that began).
    harvested: bool,
}

impl SessionActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: Arc<str>,
        image: Arc<str>,
        plan: Plan,
        policy: Arc<Policy>,
        runtime: Arc<dyn Runtime>,
        dispatcher: Addr<DispatcherActor>,
        hub: SharedHub,
        state: watch::Sender<SessionState>,
    ) -> Self {
        SessionActor {
            id,
            image,
            run_image: None,
            plan,
            policy,
            runtime,
            dispatcher,
            hub,
            state,
            phase: Phase::Created,
            seq: 0,
            attempt: 0,
            generation: 0,
            checking: None,
            runner: None,
            container: None,
            tracker: RestartTracker::default(),
            stopping: None,
            backoff_timer: None,
            first_start: None,
            last_output: Instant::now(),
            finished: false,
            parser: None,
            ended: None,
            stoppable_elsewhere: false,
            convo: None,
            harvested: false,
        }
    }

    /// Consult this run's stop marker (see [`stops`]) before restarting: a
    /// stop recorded there by another process ends the run instead.
    pub(crate) fn with_stop_marker(mut self) -> Self {
        self.stoppable_elsewhere = true;
        self
    }

    /// The current container's name, if one was started.
    fn container_name(&self) -> Option<String> {
        self.container.as_deref().map(String::from)
    }

    /// The path of this run's stop marker, when it has one.
    fn stop_marker(&self) -> Option<std::path::PathBuf> {
        self.stoppable_elsewhere
            .then(|| stops::path(self.hub.borrow().store().dir(), &self.id))
    }

    fn emit(&mut self, kind: EventKind) {
        self.seq += 1;
        fanout::publish(&self.hub, Event::new(self.id.clone(), self.seq, kind));
    }

    /// Emit a batch of events observed together (one read of the
    /// container's output): one timestamp, one pass through the fan-out.
    fn emit_all(&mut self, kinds: impl ExactSizeIterator<Item = EventKind>) {
        let time = crate::event::now_micros();
        let mut events = Vec::with_capacity(kinds.len());
        for kind in kinds {
            self.seq += 1;
            events.push(Event::from_data(EventData {
                session: self.id.clone(),
                seq: self.seq,
                time,
                kind,
            }));
        }
        fanout::publish_all(&self.hub, events);
    }

    /// Hand the events of this handler over to the log's writer (the state
    /// thread). Never blocks, never fails: a log that cannot be written
    /// does not end the run, it records what it is missing
    /// ([`crate::log`], "Incomplete logs"); the subscribers that keep up
    /// still get every event.
    fn flush(&mut self, _ctx: &mut Context<Self>) {
        self.hub.borrow_mut().flush_log();
    }

    /// Done at once, or, while the log has more than
    /// [`crate::log::MAX_BACKLOG`] bytes waiting for the disk (or the
    /// store more than [`crate::log::MAX_TOTAL_BACKLOG`]), once it has
    /// room: the runner awaits it before reading more of the container's
    /// output, which waits in its pipe meanwhile.
    fn log_room(&self) -> Response<()> {
        let hub = self.hub.borrow();
        if hub.log_has_room() {
            return Response::reply(());
        }
        Response::fut(hub.log_room())
    }

    fn set_state(&self, state: SessionState) {
        self.state.send_replace(state);
    }

    fn start_attempt(&mut self, ctx: &mut Context<Self>) {
        let job = match &self.plan {
            Plan::Start(plan) => {
                let StartPlan {
                    template,
                    env,
                    mounts,
                    issue,
                    prompt,
                    persistent,
                } = &**plan;
                let mut spec = template.run.clone();
                if let Some(image) = &self.run_image {
                    spec.image = image.to_string();
                }
                spec.session = self.id.to_string();
                spec.env = env.clone();
                spec.mounts = mounts.clone();
                let conversation = match persistent {
                    Some(p) => p.conversation.clone(),
                    None => uuid::Uuid::new_v4().to_string(),
                };
                spec.container = if self.attempt == 0 {
                    self.id.to_string()
                } else {
                    format!("{}-r{}", self.id, self.attempt)
                };
                spec.command = template.agent.clone();
                spec.command.extend(agent::start_args(
                    template.agent_output,
                    template.agent_input,
                    &conversation,
                    &template.limits,
                ));
                if let Some(p) = persistent {
                    // A resumed session, or a restart on the same storage:
                    // the conversation goes on.
                    if p.resume || self.attempt > 0 {
                        for arg in &mut spec.command {
                            if arg == "--session-id" {
                                *arg = "--resume".into();
                            }
                        }
                    }
                    persist(&mut spec, p);
                }
                // The prompt goes on stdin, never in argv (128 KiB cap;
                // a prompt that begins with `-` stays text).
                spec.stdin = Some(match template.agent_input {
                    AgentInput::Text => Stdin::new(prompt.clone()),
                    AgentInput::StreamJson => {
                        // One long-lived agent: the prompt is its first
                        // user message, and stdin stays open for more.
                        let convo = Conversation::new(conversation.clone(), template.keep_alive);
                        let first = convo.outstanding[0].clone();
                        self.convo = Some(Box::new(convo));
                        Stdin::open(agent::user_message(prompt, &conversation, &first))
                    }
                });
                spec.labels
                    .insert(labels::SESSION.into(), self.id.to_string());
                if let Some(url) = issue {
                    spec.labels.insert(labels::ISSUE.into(), url.clone());
                }
                spec.labels
                    .insert(labels::CONVERSATION.into(), conversation);
                spec.labels
                    .insert(labels::ATTEMPT.into(), self.attempt.to_string());
                spec.labels.insert(
                    labels::STARTED.into(),
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                );
                Job::Run(spec)
            }
            Plan::Resume { job, .. } => (**job).clone(),
        };
        // A new process: its parser starts afresh with its first line.
        self.parser = None;
        let container = job.container().to_string();
        self.generation += 1;
        let runner = RunnerActor::new(
            self.runtime.clone(),
            ctx.address().recipient(),
            self.generation,
            job,
        );
        self.runner = Some(runner.start());
        self.phase = Phase::Running;
        self.container = Some(container.as_str().into());
        // `running` once the runtime reports the container started: a
        // caller that sees `running` can rely on the container existing.
        self.set_state(SessionState::Starting {
            container,
            attempt: self.attempt,
        });
        self.last_output = Instant::now();
        if self.first_start.is_none() {
            self.first_start = Some(Instant::now());
            if let Some(limit) = self.policy.timeout {
                ctx.run_later(limit, move |act, ctx| {
                    act.begin_stop(
                        StopReason::Timeout(TimeoutKind::Run, limit),
                        act.policy.stop_grace,
                        ctx,
                    );
                });
            }
            if let Some(idle) = self.policy.idle_timeout {
                ctx.run_later(idle, move |act, ctx| act.check_idle(ctx));
            }
        }
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = self.policy.idle_timeout else {
            return;
        };
        if self.phase == Phase::Ended {
            return;
        }
        let quiet = self.last_output.elapsed();
        // An agent waiting for a follow-up is quiet on purpose: its
        // keep-alive bounds that wait.
        let waiting = self.convo.as_ref().is_some_and(|c| c.idle.is_some());
        let watching = self.phase == Phase::Running && self.stopping.is_none() && !waiting;
        if watching && quiet >= idle {
            self.begin_stop(
                StopReason::Timeout(TimeoutKind::Idle, idle),
                self.policy.stop_grace,
                ctx,
            );
            return;
        }
        // Between containers (back-off, cleanup) or while stopping, look
        // again a full period later: the next container resets the clock.
        let next = if watching {
            idle.saturating_sub(quiet)
                .max(std::time::Duration::from_millis(10))
        } else {
            idle
        };
        ctx.run_later(next, move |act, ctx| act.check_idle(ctx));
    }

    /// The container (or exec process) of the current attempt ended. After
    /// a failure its container may still exist (a crashed runtime stream, a
    /// panic): it is force-removed before the run goes on or ends, so no
    /// terminal event is ever published while a container of the run lives.
    fn container_ended(&mut self, ending: Ending, ctx: &mut Context<Self>) {
        self.runner = None;
        if let Some(timer) = self.convo.as_mut().and_then(|c| c.idle.take()) {
            ctx.cancel_future(timer);
        }
        let container = match (&ending, &self.plan) {
            (Ending::Failed(_), Plan::Start(_)) => self.container_name(),
            _ => None,
        };
        let Some(container) = container else {
            return self.after_container(ending, ctx);
        };
        self.phase = Phase::Cleanup;
        let remove = guarded("the runtime's remove", self.runtime.remove(&container));
        ctx.spawn(actix::fut::wrap_future(remove).map(move |removed, act: &mut Self, ctx| {
            if let Ok(Err(e)) | Err(e) = removed {
                tracing::warn!(container, error = %e, "could not remove the container of a failed attempt");
            }
            act.after_container(ending, ctx);
            act.flush(ctx);
        }));
    }

    fn after_container(&mut self, ending: Ending, ctx: &mut Context<Self>) {
        let restart =
            self.stopping.is_none() && RestartTracker::wants_restart(&self.policy, &ending);
        if let (true, Some(marker)) = (restart, self.stop_marker()) {
            // Was the container stopped by another process? Ask before
            // restarting (see `stops`); no container runs meanwhile, so a
            // stop arriving now just ends the run (as in `Cleanup`).
            self.phase = Phase::Cleanup;
            let taken = stops::take(marker);
            ctx.spawn(actix::fut::wrap_future(taken).map(
                move |stopped_elsewhere, act: &mut Self, ctx| {
                    act.decide(ending, stopped_elsewhere, ctx);
                    act.flush(ctx);
                },
            ));
            return;
        }
        self.decide(ending, false, ctx);
    }

    /// The run goes on or ends after a container ended: a stop in progress
    /// (here or, `stopped_elsewhere`, from another process) ends it with
    /// that container's ending; otherwise the restart policy decides.
    fn decide(&mut self, ending: Ending, stopped_elsewhere: bool, ctx: &mut Context<Self>) {
        if stopped_elsewhere && self.stopping.is_none() {
            tracing::info!(session = %self.id, "stopped by another process: not restarting");
            return self.finish(ending, None, ctx);
        }
        if let Some(stopping) = self.stopping.take() {
            if let Some(t) = stopping.escalation {
                ctx.cancel_future(t);
            }
            // Our own stop ended it: its signal exit needs no look for
            // another process's marker (one written meanwhile is never read
            // and is swept with the stale ones): stopping 10,000 runs made
            // 10,000 unlinks of files that were not there.
            self.stoppable_elsewhere = false;
            let outcome = match stopping.reason {
                StopReason::Requested => ending,
                StopReason::Timeout(kind, after) => Ending::Failed(Error::Timeout { kind, after }),
                // The agent answered every prompt and the keep-alive ran
                // out: cldpd ended it, so its exit code (143 after the
                // TERM) says nothing; its last result decides (an error
                // result is already `Failed`).
                StopReason::Finished => match ending {
                    Ending::Exited(_) => Ending::Exited(0),
                    failed => failed,
                },
            };
            return self.finish(outcome, None, ctx);
        }
        match self.tracker.decide(&self.policy, &ending, Instant::now()) {
            Decision::Finish => self.finish(ending, None, ctx),
            Decision::GiveUp(e) => self.finish(Ending::Failed(e), None, ctx),
            Decision::Restart {
                attempt,
                delay,
                reason,
            } => {
                self.emit(EventKind::Restarting {
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    reason,
                });
                self.attempt = attempt;
                self.phase = Phase::Backoff;
                self.set_state(SessionState::Restarting { attempt });
                self.backoff_timer = Some(ctx.run_later(delay, |act, ctx| {
                    act.backoff_timer = None;
                    act.start_attempt(ctx);
                    act.flush(ctx);
                }));
            }
        }
    }

    /// Stop the run (idempotent; a later call may only shorten the grace).
    fn begin_stop(
        &mut self,
        reason: StopReason,
        grace: std::time::Duration,
        ctx: &mut Context<Self>,
    ) {
        match self.phase {
            Phase::Ended => {}
            Phase::Cleanup => {
                // The container is gone; just make sure the run ends.
                if self.stopping.is_none() {
                    self.stopping = Some(Box::new(Stopping {
                        reason,
                        hurry: None,
                        escalation: None,
                    }));
                }
            }
            Phase::Created | Phase::Queued | Phase::Building => {
                let err = match reason {
                    StopReason::Timeout(kind, after) => Error::Timeout { kind, after },
                    StopReason::Requested | StopReason::Finished => Error::Stopped,
                };
                self.finish(Ending::Failed(err), None, ctx);
            }
            Phase::Backoff => {
                if let Some(t) = self.backoff_timer.take() {
                    ctx.cancel_future(t);
                }
                let ending = match reason {
                    StopReason::Timeout(kind, after) => {
                        Ending::Failed(Error::Timeout { kind, after })
                    }
                    // No container runs: like a stop before the first one
                    // started (the last one's ending was in `Restarting`).
                    StopReason::Requested | StopReason::Finished => Ending::Failed(Error::Stopped),
                };
                self.finish(ending, None, ctx);
            }
            Phase::Running => {
                if let Some(stopping) = &self.stopping {
                    // Already stopping: only ever hurry it up.
                    if let Some(hurry) = &stopping.hurry {
                        hurry.hurry(grace);
                    }
                    return;
                }
                tracing::debug!(session = %self.id, ?grace, "stopping: SIGTERM");
                self.set_state(SessionState::Stopping);
                let (hurry, deadline) = escalation::Hurry::new(grace);
                let container = self.container_name().unwrap_or_default();
                let runner = self.runner.clone();
                let signal = move |sig| {
                    let sent = runner.as_ref().map(|r| r.send(Signal(sig)));
                    async move {
                        match sent {
                            Some(sent) => sent.await.unwrap_or(Ok(())),
                            // Gone with its runner: the end is on its way.
                            None => Ok(()),
                        }
                    }
                };
                let kill_timeout = self.policy.kill_timeout;
                let escalation = async move {
                    let gave_up =
                        escalation::escalate(&container, deadline, kill_timeout, signal).await;
                    (gave_up, container)
                };
                let handle = ctx.spawn(actix::fut::wrap_future(escalation).map(
                    |(gave_up, container), act: &mut Self, ctx| {
                        if let Some(s) = &mut act.stopping {
                            s.escalation = None; // this one, done
                        }
                        act.finish(Ending::Failed(gave_up), Some(container), ctx);
                        act.flush(ctx);
                    },
                ));
                self.stopping = Some(Box::new(Stopping {
                    reason,
                    hurry: Some(hurry),
                    escalation: Some(handle),
                }));
            }
        }
    }

    /// End the run: terminal event, final state, release everything.
    fn finish(&mut self, ending: Ending, cleanup: Option<String>, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        if let Some(t) = self.stopping.as_mut().and_then(|s| s.escalation.take()) {
            // Ended otherwise (a lost runner, a timeout): no more signals.
            ctx.cancel_future(t);
        }
        if self.harvest(&ending, &cleanup, ctx) {
            return; // finishes once the work is saved
        }
        self.finished = true;
        self.phase = Phase::Ended;
        if let (Some(marker), Ending::Exited(code)) = (self.stop_marker(), &ending) {
            if *code > 128 {
                // Killed by a signal: perhaps by a stop from another
                // process whose marker no restart decision read (a policy
                // that would not restart). Don't leave it behind.
                self.hub.borrow().store().remove_file(marker);
            }
        }
        let (kind, state) = match ending {
            Ending::Exited(code) => (
                EventKind::ContainerExited { code },
                SessionState::Exited { code },
            ),
            Ending::Failed(e) => (EventKind::error(&e), SessionState::Failed(e)),
        };
        self.emit(kind);
        self.hub.borrow_mut().flush_log();
        if let Some(runner) = self.runner.take() {
            runner.do_send(Release);
        }
        // A resume's container belongs to the run it resumed.
        let cleanup = cleanup.filter(|_| matches!(self.plan, Plan::Start(_)));
        // The outcome is known once the log holds the whole run (written,
        // or known to be incomplete), so that whoever reads the log after
        // `wait` finds the end of it.
        self.ended = Some(Box::new((state, cleanup)));
        let settled = self.hub.borrow().log_settled(self.seq);
        ctx.spawn(
            actix::fut::wrap_future(async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), settled).await;
            })
            .map(|(), act: &mut Self, ctx| {
                act.report_end();
                ctx.stop();
            }),
        );
    }

    /// Tell the dispatcher, then whoever waits on the state, that the run
    /// has ended (once).
    fn report_end(&mut self) {
        let Some(ended) = self.ended.take() else {
            return;
        };
        let (state, cleanup) = *ended;
        // Tell the dispatcher before anyone waiting on the state can ask it
        // anything: its mailbox is FIFO, so it will have forgotten this run.
        self.dispatcher.do_send(SessionEnded {
            id: self.id.to_string(),
            cleanup,
        });
        self.set_state(state);
    }

    /// What the agent writes on stdout.
    fn agent_output(&self) -> AgentOutput {
        match &self.plan {
            Plan::Start(plan) => plan.template.agent_output,
            Plan::Resume { agent_output, .. } => *agent_output,
        }
    }

    fn outcome_future(&self) -> ResponseFuture<Result<i32, Error>> {
        let mut rx = self.state.subscribe();
        Box::pin(async move {
            let outcome = rx
                .wait_for(SessionState::is_terminal)
                .await
                .map(|s| s.outcome().expect("terminal state has an outcome"));
            outcome.unwrap_or_else(|_| Err(Error::internal("the session ended without an outcome")))
        })
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Runs start on the dispatcher's Admit; resumes go at once.
        if matches!(self.plan, Plan::Resume { .. }) {
            self.start_attempt(ctx);
        }
    }
}

impl Drop for SessionActor {
    /// A session that dies without finishing (a panic in a handler) still
    /// ends its run: an Error event, a final state, and its container
    /// removed by the dispatcher.
    fn drop(&mut self) {
        if self.finished {
            // Stopped while its log was being settled: report it now.
            self.report_end();
            return;
        }
        let err = Error::internal(
            "the session actor stopped unexpectedly (a panic in one of its handlers)",
        );
        let seq = self.seq + 1;
        let hub = self.hub.clone();
        let ev = Event::new(self.id.clone(), seq, EventKind::error(&err));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if hub.try_borrow_mut().is_ok() {
                fanout::publish(&hub, ev);
                hub.borrow_mut().flush_log();
            }
        }));
        let cleanup = (matches!(self.phase, Phase::Running) && matches!(self.plan, Plan::Start(_)))
            .then(|| self.container_name())
            .flatten();
        self.dispatcher.do_send(SessionEnded {
            id: self.id.to_string(),
            cleanup,
        });
        self.state.send_replace(SessionState::Failed(err));
    }
}

/// Runner reports held while a recorded image is checked. Bounded: the
/// runner's reply for a held report resolves only once the check is over
/// (`released` dropped), which is back-pressure on the container's output
/// (it waits in its pipe), never loss.
struct Checking {
    cached: bool,
    reports: Vec<RunnerEvent>,
    /// Dropped with the `Checking`: releases the runner.
    released: watch::Sender<()>,
}

/// Docker's message when the image to run does not exist (removed since it
/// was built): the next run builds it again.
fn image_missing(message: &str) -> bool {
    message.contains("Unable to find image") || message.contains("No such image")
}

// ----- public messages -------------------------------------------------------

impl Handler<Subscribe> for SessionActor {
    type Result = Result<crate::actors::fanout::SubscriptionId, Error>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(fanout::subscribe(&self.hub, msg.subscriber, msg.from_seq))
    }
}

impl Handler<Unsubscribe> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        fanout::unsubscribe(&self.hub, msg.0);
    }
}

impl Handler<StopSession> for SessionActor {
    type Result = ResponseFuture<Result<i32, Error>>;

    fn handle(&mut self, msg: StopSession, ctx: &mut Context<Self>) -> Self::Result {
        let grace = msg.grace.unwrap_or(self.policy.stop_grace);
        self.begin_stop(StopReason::Requested, grace, ctx);
        self.flush(ctx);
        self.outcome_future()
    }
}

impl Handler<Wait> for SessionActor {
    type Result = ResponseFuture<Result<i32, Error>>;

    fn handle(&mut self, _: Wait, _ctx: &mut Context<Self>) -> Self::Result {
        self.outcome_future()
    }
}

#[cfg(any(test, feature = "fault-injection"))]
impl Handler<InjectPanic> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("panic injected into session {} (InjectPanic)", self.id);
    }
}

#[cfg(any(test, feature = "fault-injection"))]
impl Handler<InjectRunnerPanic> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: InjectRunnerPanic, _ctx: &mut Context<Self>) {
        if let Some(runner) = &self.runner {
            runner.do_send(crate::messages::runner::InjectPanic);
        }
    }
}

impl Handler<GetStatus> for SessionActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(SessionStatus {
            state: self.state.borrow().clone(),
            last_seq: self.hub.borrow().head(),
            restarts: self.tracker.restarts(),
            fanout: self.hub.borrow().stats(),
        })
    }
}

// ----- from the dispatcher ---------------------------------------------------

impl Handler<Enqueued> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueued, ctx: &mut Context<Self>) {
        if self.phase == Phase::Created {
            self.phase = Phase::Queued;
            self.set_state(SessionState::Queued {
                position: msg.position,
            });
            self.emit(EventKind::Queued {
                position: msg.position,
            });
            self.flush(ctx);
        }
    }
}

impl Handler<Admit> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Admit, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Created | Phase::Queued) {
            return;
        }
        let Plan::Start(plan) = &self.plan else {
            return;
        };
        let spec = plan.template.build.clone();
        self.phase = Phase::Building;
        self.set_state(SessionState::Building);
        self.emit(EventKind::BuildStarted {
            image: self.image.to_string(),
        });
        self.request_build(spec, ctx);
        self.flush(ctx);
    }
}

impl Handler<BuildNotice> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: BuildNotice, ctx: &mut Context<Self>) {
        if self.phase != Phase::Building {
            return;
        }
        match msg {
            BuildNotice::Lines(lines) => {
                self.emit_all(
                    lines
                        .into_iter()
                        .map(|line| EventKind::BuildOutput { line }),
                );
            }
            BuildNotice::Done(Ok(done)) if done.verify => {
                // Recorded by another process: check the image exists while
                // the container starts; report nothing until it is known.
                let check = guarded(
                    "the runtime's image_exists",
                    self.runtime.image_exists(&done.image),
                );
                ctx.spawn(
                    actix::fut::wrap_future(check).map(|found, act: &mut Self, ctx| {
                        act.image_checked(matches!(found, Ok(Ok(true))), ctx);
                        act.flush(ctx);
                    }),
                );
                self.checking = Some(Box::new(Checking {
                    cached: done.cached,
                    reports: Vec::new(),
                    released: watch::Sender::new(()),
                }));
                self.run_image = Some(done.image.into_boxed_str());
                self.start_attempt(ctx);
            }
            BuildNotice::Done(Ok(done)) => {
                self.emit(EventKind::BuildComplete {
                    image: self.image.to_string(),
                    cached: done.cached,
                });
                self.run_image = Some(done.image.into_boxed_str());
                self.start_attempt(ctx);
            }
            BuildNotice::Done(Err(e)) => self.finish(Ending::Failed(e), None, ctx),
        }
        self.flush(ctx);
    }
}

// ----- from the runner -------------------------------------------------------

impl Handler<RunnerReport> for SessionActor {
    type Result = Response<()>;

    fn handle(&mut self, msg: RunnerReport, ctx: &mut Context<Self>) -> Response<()> {
        if msg.generation != self.generation || self.phase != Phase::Running {
            return Response::reply(()); // a report from an earlier runner
        }
        if let Some(checking) = &mut self.checking {
            // Held until the check answers; the runner reads no more of
            // the container's output before this reply (its pump awaits
            // each one), so at most one batch waits here, plus a signal
            // failure or loss report (`do_send`, one each at most).
            if checking.reports.is_empty() {
                tracing::debug!(session = %self.id, image = %self.image,
                    "holding the container's output until the recorded image is checked");
            }
            checking.reports.push(msg.event);
            let mut released = checking.released.subscribe();
            return Response::fut(async move {
                // Resolves when the check is over (its sender dropped).
                while released.changed().await.is_ok() {}
            });
        }
        self.runner_event(msg.event, ctx);
        self.flush(ctx);
        self.log_room()
    }
}

impl SessionActor {
    fn runner_event(&mut self, event: RunnerEvent, ctx: &mut Context<Self>) {
        match event {
            RunnerEvent::Process(ProcessEvent::Started { container }) => {
                self.last_output = Instant::now();
                if self.stopping.is_none() {
                    self.set_state(SessionState::Running {
                        container: container.clone(),
                        attempt: self.attempt,
                    });
                }
                if let Some(convo) = self.convo.as_mut() {
                    convo.started = true;
                    for bytes in std::mem::take(&mut convo.held) {
                        let write = self.runtime.write_input(&container, bytes);
                        ctx.spawn(actix::fut::wrap_future(write).map(|written, act: &mut Self, _| {
                            if let Err(e) = written {
                                tracing::warn!(session = %act.id, error = %e, "a follow-up sent before the start could not be written");
                            }
                        }));
                    }
                }
                self.emit(EventKind::ContainerStarted {
                    container,
                    attempt: self.attempt,
                });
            }
            RunnerEvent::Process(ProcessEvent::Output(lines)) => {
                self.last_output = Instant::now();
                if self.parser.is_none() && self.agent_output() == AgentOutput::StreamJson {
                    self.parser = Some(Box::default());
                }
                let Some(parser) = self.parser.as_mut() else {
                    return self.emit_all(lines.into_iter().map(|l| EventKind::Output {
                        stream: l.stream,
                        line: l.text,
                        partial: l.partial,
                    }));
                };
                // Each line stays an `output` event; the agent events it
                // completes follow it (see `crate::agent`).
                let mut kinds = Vec::with_capacity(lines.len());
                for l in lines {
                    let typed = if l.stream == OutputStream::Stdout {
                        parser.feed(&l.text, l.partial)
                    } else {
                        Vec::new()
                    };
                    kinds.push(EventKind::Output {
                        stream: l.stream,
                        line: l.text,
                        partial: l.partial,
                    });
                    kinds.extend(typed);
                }
                if parser.holds_nothing() {
                    self.parser = None;
                }
                let went_idle = self.convo.is_some() && self.track_turns(&kinds, ctx);
                self.emit_all(kinds.into_iter());
                if went_idle {
                    self.go_idle(ctx);
                }
            }
            RunnerEvent::Process(ProcessEvent::Exited { code }) => {
                // An error result of the agent fails the run whatever
                // its exit code (Claude Code reports a failed API call as
                // `subtype: "success"`, `is_error: true`).
                let failed = self
                    .parser
                    .as_ref()
                    .and_then(|p| p.outcome())
                    .filter(|o| o.is_error)
                    .map(|o| Error::AgentFailed {
                        subtype: o.subtype.clone(),
                        message: o
                            .result
                            .clone()
                            .unwrap_or_else(|| format!("exit code {code}")),
                        api_error_status: o.api_error_status,
                        turns: o.turns,
                    });
                let ending = match failed {
                    Some(e) => Ending::Failed(e),
                    None => Ending::Exited(code),
                };
                self.container_ended(ending, ctx);
            }
            RunnerEvent::Process(ProcessEvent::Failed(e)) => {
                if matches!(&e, Error::ImageMissing { .. })
                    || matches!(&e, Error::DockerFailed { message } if image_missing(message))
                {
                    self.dispatcher.do_send(ForgetImage(self.image.to_string()));
                }
                self.container_ended(Ending::Failed(e), ctx);
            }
            RunnerEvent::Lost => {
                let container = self.container_name();
                let err = Error::internal(format!(
                    "the runner of container {} died unexpectedly; the container is removed",
                    container.as_deref().unwrap_or("?")
                ));
                self.runner = None;
                self.finish(Ending::Failed(err), container, ctx);
            }
        }
    }

    /// The recorded image was looked up. Found: the build is complete and
    /// the held reports go out. Gone: the container cannot have run it;
    /// that runner is dropped, the record forgotten, and the image built.
    fn image_checked(&mut self, found: bool, ctx: &mut Context<Self>) {
        let Some(checking) = self.checking.take() else {
            return;
        };
        if self.phase == Phase::Ended {
            return;
        }
        if found {
            self.dispatcher.do_send(ImageFound(self.image.to_string()));
            self.emit(EventKind::BuildComplete {
                image: self.image.to_string(),
                cached: checking.cached,
            });
            for event in checking.reports {
                if self.phase != Phase::Running {
                    break;
                }
                self.runner_event(event, ctx);
            }
            return;
        }
        tracing::info!(session = %self.id, image = %self.image, "the recorded image is gone; building it");
        self.generation += 1;
        let runner = self.runner.take();
        self.dispatcher.do_send(ForgetImage(self.image.to_string()));
        self.run_image = None;
        if let Some(stopping) = self.stopping.take() {
            // Stopped while checking: no container ran.
            if let Some(t) = stopping.escalation {
                ctx.cancel_future(t);
            }
            if let Some(runner) = runner {
                runner.do_send(Abandon);
            }
            return self.finish(Ending::Failed(Error::Stopped), None, ctx);
        }
        self.phase = Phase::Building;
        self.set_state(SessionState::Building);
        // The attempt's container name is used again: the abandoned runner
        // removes whatever it started under it before the new build's run.
        ctx.spawn(
            actix::fut::wrap_future(async move {
                if let Some(runner) = runner {
                    let _ = runner.send(Abandon).await;
                }
            })
            .map(|(), act: &mut Self, ctx| {
                if act.phase != Phase::Building {
                    return;
                }
                if let Plan::Start(plan) = &act.plan {
                    let spec = plan.template.build.clone();
                    act.request_build(spec, ctx);
                }
            }),
        );
    }

    /// Ask the dispatcher for the image, with the fingerprint of its inputs
    /// as they are now (read in a blocking task: a walk of the pod
    /// directory).
    fn request_build(&mut self, spec: Arc<BuildSpec>, ctx: &mut Context<Self>) {
        let store = self.hub.borrow().store();
        let fingerprint = build::fingerprint_async(store, spec.clone());
        ctx.spawn(actix::fut::wrap_future(fingerprint).map(
            move |fingerprint, act: &mut Self, ctx| {
                if act.phase != Phase::Building {
                    return; // stopped meanwhile
                }
                act.dispatcher.do_send(RequestBuild {
                    session: act.id.to_string(),
                    spec,
                    fingerprint,
                    reply: ctx.address().recipient(),
                });
            },
        ));
    }
}
