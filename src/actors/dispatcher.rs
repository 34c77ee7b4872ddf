//! [`DispatcherActor`]: discovers pods, builds images, admits runs, keeps
//! the registry of live sessions.
//!
//! - `Start` validates everything that can be validated up front (pod name,
//!   pod, `pod.json`, mounts, env names, the task) and refuses bad input
//!   with its own error before anything is created; then it creates the
//!   session's log, starts a [`SessionActor`] on one of its worker threads
//!   (round robin) and admits it, or queues it FIFO when `max_concurrent`
//!   containers already run.
//! - Builds go through the crate's build coordinator: one per tag at a time,
//!   shared, memoised.
//! - `Resume`, `Stop` and `ListRuns` consult Docker's labels, so they work
//!   for runs of other processes too.
//! - `Shutdown` stops every live run with its grace and resolves when all
//!   have ended.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::actors::build::{self, Builds, Join};
use crate::actors::fanout::{self, Hub};
use crate::actors::runner::Job;
use crate::actors::session::{Persistent, Plan, RunTemplate, SessionActor, StartPlan};
use crate::actors::supervisor::{guard, guarded, guarded_stream, stops, Policy};
use crate::agent::follow_up::FollowUpSpec;
use crate::agent::{AgentInput, AgentOutput};
use crate::error::{Error, Result};
use crate::log::LogWriter;
use crate::messages::dispatcher::*;
use crate::messages::session::{
    Admit, BuildDone, BuildNotice, Enqueued, SessionState, StopSession,
};
use crate::owner::Owner;
use crate::pod::{self, Pod};
use crate::runtime::{
    labels, BuildEvent, BuildSpec, ContainerInfo, ExecSpec, RunSpec, Runtime, Stdin,
};
use crate::settings::Settings;
use crate::state::StateStore;

/// How often the end of adopted runs is checked (they have no session
/// actor to report it).
const ADOPTED_POLL: Duration = Duration::from_secs(2);

mod adoption;
mod pod_cache;
mod stored;

use adoption::{stop_adopted_run, stop_foreign_run};

use pod_cache::PodCache;

/// A live session in the registry: what its [`SessionInfo`] is made of,
/// without a second copy of the strings the caller's info owns (the id is
/// the table's key, the image tag is shared with the session's actor).
/// That copy was about 120 bytes of heap in use per live session in
/// `bench_hold` (BENCHMARKS.md).
struct Entry {
    pod: Box<str>,
    image: Arc<str>,
    resume_of: Option<Box<str>>,
    issue: Option<Box<str>>,
    addr: Addr<SessionActor>,
    state: watch::Receiver<SessionState>,
    log_path: Arc<std::path::Path>,
    admitted: bool,
}

impl Entry {
    /// The session's info (`id` is the entry's key).
    fn info(&self, id: &str) -> SessionInfo {
        SessionInfo {
            id: id.to_string(),
            pod: self.pod.to_string(),
            image: self.image.to_string(),
            resume_of: self.resume_of.as_deref().map(str::to_string),
            issue: self.issue.as_deref().map(str::to_string),
            addr: self.addr.clone(),
            state: self.state.clone(),
            log_path: self.log_path.clone(),
        }
    }
}

/// The dispatcher. See the [module docs](self).
pub struct DispatcherActor {
    settings: Arc<Settings>,
    runtime: Arc<dyn Runtime>,
    owner: Owner,
    workers: Vec<Arbiter>,
    next_worker: usize,
    /// Boxed entries: a table sized for thousands of live sessions then
    /// holds 32-byte slots, not 200-byte ones.
    sessions: HashMap<String, Box<Entry>>,
    queue: VecDeque<String>,
    /// Admissions wait until then ([`HoldAdmissions`]).
    held_until: Option<Instant>,
    running: usize,
    /// Runs of a dead dispatcher taken over (session → container).
    adopted: HashMap<String, AdoptedRun>,
    /// Clean-ups after runs of a dead dispatcher that ended on their own,
    /// still going: `Shutdown` waits for them, so that a process exiting
    /// right after it does not cut one short.
    cleanups: Vec<tokio::task::JoinHandle<()>>,
    builds: Builds,
    /// Pods discovered by earlier starts, reused while unchanged.
    pods: PodCache,
    /// The run template of each pod, for the pod it was made from.
    templates: HashMap<String, (Arc<Pod>, Arc<RunTemplate>)>,
    /// The settings' policy, shared by resume sessions.
    resume_policy: Arc<Policy>,
    /// The owner of the state directory's I/O (its own thread).
    store: StateStore,
    /// Memory for lagging subscribers, shared by all sessions.
    lag_budget: fanout::LagBudget,
    shutting_down: bool,
    /// The stops of a dying dispatcher were sent.
    death_stops_sent: bool,
}

impl DispatcherActor {
    /// A dispatcher over `runtime`. Start it with `.start()` inside an
    /// actix system.
    pub fn new(mut settings: Settings, runtime: Arc<dyn Runtime>) -> Self {
        // Other processes act on the state directory named in a run's
        // labels (stop markers, adoption): a relative path would mean
        // another place to them.
        settings.state_dir = crate::state::absolute_dir(&settings.state_dir);
        let resume_policy = Arc::new(settings.policy.clone());
        let builds = Builds::with_store(settings.state_dir.join("images"));
        let store = StateStore::open(&settings.state_dir);
        let lag_budget = fanout::LagBudget::new(settings.lag_budget);
        DispatcherActor {
            settings: Arc::new(settings),
            runtime,
            owner: Owner::current(),
            workers: Vec::new(),
            next_worker: 0,
            sessions: HashMap::new(),
            queue: VecDeque::new(),
            held_until: None,
            running: 0,
            adopted: HashMap::new(),
            cleanups: Vec::new(),
            builds,
            pods: PodCache::default(),
            templates: HashMap::new(),
            resume_policy,
            store,
            lag_budget,
            shutting_down: false,
            death_stops_sent: false,
        }
    }

    fn worker(&mut self) -> ArbiterHandle {
        if self.workers.is_empty() {
            return Arbiter::current();
        }
        let w = self.workers[self.next_worker % self.workers.len()].handle();
        self.next_worker = self.next_worker.wrapping_add(1);
        w
    }

    /// A fresh session id and its new log (made by the state thread:
    /// `O_EXCL`, so ids are unique across processes sharing a state
    /// directory).
    fn new_session(
        &self,
        pod: &str,
    ) -> impl std::future::Future<Output = Result<(String, LogWriter)>> {
        let store = self.store.clone();
        let dir = self.settings.sessions_dir();
        let pod = pod.to_string();
        async move {
            let id = store.create_log(&pod).await?;
            let log = LogWriter::new(store, crate::log::path_for(&dir, &id));
            Ok((id, log))
        }
    }

    /// Everything `Start` checks before creating anything.
    ///
    /// What every run of a pod has in common (build spec, run spec with the
    /// common labels, agent command, policy) is a [`RunTemplate`] shared by
    /// its sessions, made once per discovered pod (again when the pod
    /// changes; never shared for a request with overrides). Checks happen
    /// in the same order either way.
    fn plan_start(&mut self, req: &StartRequest) -> Result<(Arc<Pod>, Plan, Arc<Policy>)> {
        let mut pod = self.pods.discover(&self.settings.pods_dir, &req.pod)?;
        let overridden = req.overrides != pod::PodConfig::default();
        if overridden {
            let mut merged = Pod::clone(&pod);
            merged.config = merged.config.merged(&req.overrides);
            merged
                .config
                .validate(&merged.name, &merged.config_path())?;
            pod = Arc::new(merged);
        }
        let prompt = match &req.task {
            crate::messages::dispatcher::Task::Issue(issue) => {
                // `#42` / `owner/repo#42` become the full URL.
                let url = pod::expand_issue(issue, pod.config.repository.as_deref())?;
                pod::validate_issue_url(&url)?;
                pod.start_prompt_for_issue(&url)
            }
            crate::messages::dispatcher::Task::Prompt(p) => {
                pod::validate_prompt(p)?;
                pod.start_prompt_for_text(p)
            }
        };
        let cached = match self.templates.get(&pod.name) {
            Some((for_pod, template)) if !overridden && Arc::ptr_eq(for_pod, &pod) => {
                Some(template.clone())
            }
            _ => None,
        };
        let policy = match &cached {
            Some(_) => None,
            None => Some(Policy::from_config(&pod.config, &self.settings.policy)?),
        };
        let mounts = pod.resolve_mounts()?;
        let lookup = self.settings.env_lookup.clone();
        let env = pod.resolve_env(&move |name: &str| lookup(name))?;
        // The prompt goes on the agent's stdin (never argv): only the rest
        // of the command line counts against the kernel's limits.
        pod.check_argument_size("", &env)?;
        let template = match (cached, policy) {
            (Some(t), _) => t,
            (None, policy) => {
                let policy = policy.expect("computed when not cached");
                let template = Arc::new(self.run_template(&pod, policy)?);
                if !overridden {
                    if self.templates.len() >= 4096 {
                        self.templates.clear();
                    }
                    self.templates
                        .insert(pod.name.clone(), (pod.clone(), template.clone()));
                }
                template
            }
        };
        let issue = match &req.task {
            crate::messages::dispatcher::Task::Issue(issue) => Some(
                pod::expand_issue(issue, pod.config.repository.as_deref())
                    .unwrap_or_else(|_| issue.clone()),
            ),
            crate::messages::dispatcher::Task::Prompt(_) => None,
        };
        let policy = template.policy.clone();
        let plan = Plan::Start(Box::new(StartPlan {
            template,
            env,
            mounts,
            issue,
            prompt,
            persistent: None,
        }));
        Ok((pod, plan, policy))
    }

    /// [`Self::plan_start`] with a panic in it (pod discovery, `pod.json`
    /// analysis, mounts, env, the template) turned into an internal error
    /// for this request: the dispatcher, and every run it owns, go on.
    fn checked_plan(&mut self, req: &StartRequest) -> Result<(Arc<Pod>, Plan, Arc<Policy>)> {
        match guard("checking the start request", || self.plan_start(req)) {
            Ok(planned) => planned,
            Err(e) => {
                tracing::error!(pod = %req.pod, error = %e, "a panic while checking a start request; refused");
                // Whatever it cached may be half-made: forget it.
                self.pods = PodCache::default();
                self.templates.clear();
                Err(e)
            }
        }
    }

    /// Ask every live session to stop (each with its own grace) and the
    /// adopted runs too; for a dispatcher that dies without a `Shutdown`
    /// (stopped, or a panic in a handler). Never panics.
    fn stop_everything_on_death(&mut self) {
        if self.death_stops_sent {
            return;
        }
        self.death_stops_sent = true;
        if !self.sessions.is_empty() {
            tracing::warn!(
                live = self.sessions.len(),
                "the dispatcher is going away with live runs; stopping them"
            );
        }
        for entry in self.sessions.values() {
            entry.addr.do_send(StopSession { grace: None });
        }
        if self.adopted.is_empty() {
            return;
        }
        // No actor context to drive futures in: a thread of its own.
        let runtime = self.runtime.clone();
        let grace = self.settings.policy.stop_grace;
        let state_dir = self.settings.state_dir.clone();
        let runs: Vec<AdoptedRun> = self.adopted.values().cloned().collect();
        let _ = std::thread::Builder::new()
            .name("cldpd-adopted-stop".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(join_all(runs.into_iter().map(|run| {
                    stop_adopted_run(runtime.clone(), state_dir.clone(), run, grace)
                })));
            });
    }

    /// What every run of `pod` shares.
    fn run_template(&self, pod: &Pod, policy: Policy) -> Result<RunTemplate> {
        let build_args = pod.resolve_build_args()?;
        let image = pod.image();
        let image_tag = image.clone();
        let mut labels_map = std::collections::BTreeMap::new();
        labels_map.insert(labels::POD.to_string(), pod.name.clone());
        labels_map.insert(labels::IMAGE.to_string(), image.clone());
        labels_map.insert(
            labels::GRACE.to_string(),
            policy.stop_grace.as_secs_f64().to_string(),
        );
        labels_map.insert(
            labels::STATE_DIR.to_string(),
            self.settings.state_dir.display().to_string(),
        );
        labels_map.insert(
            labels::AGENT.to_string(),
            serde_json::to_string(&pod.agent_command()).expect("strings serialise"),
        );
        labels_map.insert(
            labels::AGENT_OUTPUT.to_string(),
            match pod.config.agent_output() {
                AgentOutput::StreamJson => "stream-json",
                AgentOutput::Text => "text",
            }
            .to_string(),
        );
        if let Some(w) = &pod.config.workdir {
            labels_map.insert(labels::WORKDIR.to_string(), w.clone());
        }
        if pod.config.agent_input() == AgentInput::StreamJson {
            labels_map.insert(labels::AGENT_INPUT.to_string(), "stream-json".into());
        }
        for (k, v) in self.owner.labels() {
            labels_map.insert(k, v);
        }
        let build = BuildSpec {
            pod: pod.name.clone(),
            image: image.clone(),
            context: pod.dir.clone(),
            dockerfile: pod.dockerfile.clone(),
            build_args,
            labels: [(labels::POD.to_string(), pod.name.clone())]
                .into_iter()
                .collect(),
        };
        let run = RunSpec {
            session: String::new(),
            pod: pod.name.clone(),
            container: String::new(),
            image,
            command: Vec::new(),
            env: Vec::new(),
            workdir: pod.config.workdir.clone(),
            mounts: Vec::new(),
            labels: labels_map,
            resources: pod.config.resources(),
            line_cap: self.settings.line_cap,
            stdin: None,
            network: pod.config.network.clone(),
        };
        Ok(RunTemplate {
            build: Arc::new(build),
            run,
            agent: pod.agent_command(),
            agent_output: pod.config.agent_output(),
            agent_input: pod.config.agent_input(),
            keep_alive: pod.config.keep_alive(),
            limits: pod.config.agent_limits(),
            policy: Arc::new(policy),
            image: Arc::from(image_tag.as_str()),
        })
    }

    /// Create and register a session actor.
    #[allow(clippy::too_many_arguments)]
    fn spawn_session(
        &mut self,
        ctx: &mut Context<Self>,
        id: String,
        log: LogWriter,
        pod: String,
        image: String,
        plan: Plan,
        policy: Arc<Policy>,
        subscribers: Vec<fanout::Subscriber>,
        resume_of: Option<String>,
    ) -> SessionInfo {
        let log_path = log.shared().shared_path().clone();
        let (tx, rx) = watch::channel(SessionState::Created);
        let runtime = self.runtime.clone();
        let dispatcher = ctx.address();
        let limits = self.settings.fanout;
        let budget = self.lag_budget.clone();
        let id_arc: Arc<str> = Arc::from(id.as_str());
        let image_for_actor: Arc<str> = match &plan {
            Plan::Start(start) => start.template.image.clone(),
            Plan::Resume { .. } => Arc::from(image.as_str()),
        };
        let image_shared = image_for_actor.clone();
        let issue = match &plan {
            Plan::Start(start) => start.issue.clone(),
            Plan::Resume { .. } => None,
        };
        let worker = self.worker();
        // A run (not a resume) can be stopped by another process: see `stops`.
        let stop_marker = matches!(plan, Plan::Start(_));
        let addr = SessionActor::start_in_arbiter(&worker, move |_| {
            let hub = Hub::new(log, limits, budget);
            for s in subscribers {
                fanout::subscribe(&hub, s, 1);
            }
            let session = SessionActor::new(
                id_arc,
                image_for_actor,
                plan,
                policy,
                runtime,
                dispatcher,
                hub,
                tx,
            );
            if stop_marker {
                session.with_stop_marker()
            } else {
                session
            }
        });
        let entry = Box::new(Entry {
            pod: pod.as_str().into(),
            image: image_shared,
            resume_of: resume_of.as_deref().map(Box::from),
            issue: issue.as_deref().map(Box::from),
            addr: addr.clone(),
            state: rx.clone(),
            log_path: log_path.clone(),
            admitted: false,
        });
        self.sessions.insert(id.clone(), entry);
        SessionInfo {
            id,
            pod,
            image,
            resume_of,
            issue,
            addr,
            state: rx,
            log_path,
        }
    }

    /// True while a [`HoldAdmissions`] is in force (an expired one is
    /// forgotten).
    fn held(&mut self) -> bool {
        match self.held_until {
            Some(t) if t > Instant::now() => true,
            Some(_) => {
                self.held_until = None;
                false
            }
            None => false,
        }
    }

    fn admit_or_queue(&mut self, id: &str) {
        let busy = self.running + self.adopted.len();
        let full = self.held() || self.settings.max_concurrent.is_some_and(|max| busy >= max);
        let Some(entry) = self.sessions.get_mut(id) else {
            return;
        };
        if full {
            self.queue.push_back(id.to_string());
            entry.addr.do_send(Enqueued {
                position: self.queue.len(),
            });
        } else {
            entry.admitted = true;
            self.running += 1;
            entry.addr.do_send(Admit);
        }
    }

    fn admit_next(&mut self) {
        if self.held() {
            return;
        }
        while self
            .settings
            .max_concurrent
            .is_none_or(|max| self.running + self.adopted.len() < max)
        {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            if let Some(entry) = self.sessions.get_mut(&id) {
                entry.admitted = true;
                self.running += 1;
                entry.addr.do_send(Admit);
            }
        }
    }

    /// Build `spec.image` for the runs waiting on it: first take the tag's
    /// cross-process build lock and read its record (in a blocking task;
    /// another process may be building it right now), then build unless
    /// that record matches the inputs.
    fn start_build(&mut self, spec: Arc<BuildSpec>, ctx: &mut Context<Self>) {
        let image = spec.image.clone();
        let Some(images_dir) = self.builds.images_dir().map(Path::to_path_buf) else {
            return self.run_build(spec, ctx);
        };
        let tag = image.clone();
        let locked = crate::state::blocking(move || {
            let lock = crate::state::lock::acquire(&images_dir, &tag);
            let record = build::load(&images_dir, &tag);
            (lock, record)
        });
        let handle = ctx.spawn(actix::fut::wrap_future(locked).map(
            move |locked, act: &mut Self, ctx| {
                let (lock, record) = match locked {
                    Ok((Ok(lock), record)) => (Some(lock), record),
                    Ok((Err(e), record)) => {
                        tracing::warn!(image = %spec.image, error = %e, "cannot take the build lock; building without it");
                        (None, record)
                    }
                    Err(e) => {
                        tracing::warn!(image = %spec.image, error = %e, "cannot take the build lock; building without it");
                        (None, None)
                    }
                };
                if !act.builds.in_flight(&spec.image) {
                    return; // abandoned meanwhile: the lock goes with it
                }
                if act.builds.locked(&spec.image, lock, record) {
                    return; // built by another process meanwhile: reused
                }
                act.run_build(spec, ctx);
            },
        ));
        self.builds.started(&image, handle);
    }

    /// Run the build of `spec.image` (its lock, if any, is held).
    fn run_build(&mut self, spec: Arc<BuildSpec>, ctx: &mut Context<Self>) {
        let image = spec.image.clone();
        let runtime = self.runtime.clone();
        // The image the tag names before the build: once the build has
        // moved the tag, it is removed if no container uses it (else it
        // would pile up as a `<none>` image with every pod edit).
        let before = guarded("the runtime's image_id", self.runtime.image_id(&image));
        let janitor = self.runtime.clone();
        let events = match guard("the runtime's build", move || {
            runtime.build(Arc::unwrap_or_clone(spec))
        }) {
            Ok(s) => guarded_stream("the runtime's build stream", s, |e| {
                BuildEvent::Finished(Err(e))
            })
            .boxed(),
            Err(e) => {
                futures_util::stream::once(async move { BuildEvent::Finished(Err(e)) }).boxed()
            }
        };
        let mut events = Some(events);
        let events = futures_util::stream::once(before)
            .flat_map(move |before| {
                let events = events.take().expect("one item: one build stream");
                let old = before.ok().and_then(|r| r.ok()).flatten();
                let janitor = janitor.clone();
                events.inspect(move |ev| {
                    let BuildEvent::Finished(Ok(built)) = ev else {
                        return;
                    };
                    let Some(old) = old.clone().filter(|o| built.id.as_ref() != Some(o)) else {
                        return;
                    };
                    let remove = guarded("the runtime's remove_unused_image", janitor.remove_unused_image(&old));
                    actix::spawn(async move {
                        match remove.await {
                            Ok(Ok(removed)) => {
                                tracing::debug!(image = %old, removed, "the image a rebuild replaced")
                            }
                            Ok(Err(e)) | Err(e) => {
                                tracing::debug!(image = %old, error = %e, "could not remove the image a rebuild replaced")
                            }
                        }
                    });
                })
            })
            .boxed();
        let key = image.clone();
        let done_key = image.clone();
        let handle = ctx.spawn(
            actix::fut::wrap_stream::<_, Self>(events)
                .fold(false, move |finished, ev, act, _| {
                    let finished = finished
                        || match ev {
                            BuildEvent::Output(lines) => {
                                act.builds.output(&key, lines);
                                false
                            }
                            BuildEvent::Finished(result) => {
                                act.build_finished(&key, result);
                                true
                            }
                        };
                    actix::fut::ready(finished)
                })
                .map(move |finished, act, _| {
                    if !finished {
                        let e = Error::internal("the build stream ended without a result");
                        act.build_finished(&done_key, Err(e));
                    }
                }),
        );
        self.builds.building(&image, handle);
    }

    /// A build ended: tell its runs, then write its record and release its
    /// lock off this thread.
    fn build_finished(&mut self, image: &str, result: Result<crate::runtime::BuiltImage>) {
        if let Some(record) = self.builds.finished(image, result) {
            actix::spawn(async move {
                let _ = crate::state::blocking(move || record.write()).await;
            });
        }
    }

    /// Sessions matching `target` (a session id, or a pod name), local and
    /// from Docker's labels, as `(session, pod, container, local)`.
    fn matches(&self, target: &str, containers: &[ContainerInfo]) -> Result<Vec<Match>> {
        let mut found: Vec<Match> = Vec::new();
        for (id, e) in &self.sessions {
            if id == target || &*e.pod == target {
                let container = match &*e.state.borrow() {
                    SessionState::Starting { container, .. }
                    | SessionState::Running { container, .. }
                    | SessionState::Idle { container, .. } => Some(container.clone()),
                    _ => None,
                };
                found.push(Match {
                    session: id.clone(),
                    container,
                    local: Some(e.info(id)),
                    labels: None,
                });
            }
        }
        // A `created` container is a run whose owner is starting it (the
        // Engine API backend's create → attach → start takes a moment):
        // a target too, so that a stop right after a start is not lost.
        for c in containers
            .iter()
            .filter(|c| c.is_running() || c.is_created())
        {
            let (Some(session), Some(pod)) = (c.label(labels::SESSION), c.label(labels::POD))
            else {
                continue;
            };
            if session != target && pod != target {
                continue;
            }
            match found.iter_mut().find(|m| m.session == session) {
                Some(m) => {
                    m.container.get_or_insert_with(|| c.name.clone());
                    m.labels = Some(c.clone());
                }
                None => found.push(Match {
                    session: session.to_string(),
                    container: Some(c.name.clone()),
                    local: None,
                    labels: Some(c.clone()),
                }),
            }
        }
        // A resume session runs in another session's container: it is not a
        // run of its own for targeting purposes.
        found.retain(|m| m.local.as_ref().is_none_or(|i| i.resume_of.is_none()));
        if let Some(exact) = found.iter().position(|m| m.session == target) {
            return Ok(vec![found.swap_remove(exact)]);
        }
        match found.len() {
            0 => Err(Error::SessionNotFound {
                target: target.to_string(),
            }),
            1 => Ok(found),
            _ => {
                let mut sessions: Vec<String> = found.into_iter().map(|m| m.session).collect();
                sessions.sort();
                Err(Error::AmbiguousTarget {
                    target: target.to_string(),
                    sessions,
                })
            }
        }
    }

    /// The runs among `containers`, with their owners looked up (adoption
    /// records, `/proc`) in a blocking task.
    async fn run_infos(
        containers: Vec<ContainerInfo>,
        state_dir: std::path::PathBuf,
    ) -> Result<Vec<RunInfo>> {
        crate::state::blocking(move || {
            containers
                .iter()
                .filter_map(|c| Self::run_info(c, &state_dir))
                .collect()
        })
        .await
    }

    fn run_info(c: &ContainerInfo, state_dir: &std::path::Path) -> Option<RunInfo> {
        let owner = Owner::effective(&c.labels, state_dir);
        Some(RunInfo {
            session: c.label(labels::SESSION)?.to_string(),
            pod: c.label(labels::POD).unwrap_or_default().to_string(),
            container: c.name.clone(),
            issue: c.label(labels::ISSUE).map(str::to_string),
            started: c
                .label(labels::STARTED)
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok()),
            state: c.state.clone(),
            exit_code: c.exit_code,
            attempt: c
                .label(labels::ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            orphan: owner.as_ref().is_some_and(|o| !o.is_alive()),
            owner: owner.map(|o| o.id),
        })
    }
}

impl DispatcherActor {
    /// Apply the retention rule to the session logs, in the background.
    /// Docker is asked which runs are live (in any process) only when some
    /// log is due for deletion; logs of live runs are never deleted, and
    /// neither is any log written or touched within
    /// [`crate::log::PRUNE_MIN_AGE`] (live runs touch theirs every
    /// heartbeat), also when Docker cannot be asked.
    async fn prune(
        dir: std::path::PathBuf,
        rule: crate::log::Retention,
        runtime: Arc<dyn Runtime>,
    ) {
        let probe = dir.clone();
        let due = crate::state::blocking(move || crate::log::prune_due(&probe, rule)).await;
        if !matches!(due, Ok(true)) {
            return;
        }
        let live: Option<std::collections::HashSet<String>> = match guarded(
            "the runtime's list",
            runtime.list(),
        )
        .await
        {
            Ok(Ok(containers)) => Some(
                containers
                    .iter()
                    .filter_map(|c| c.label(labels::SESSION).map(str::to_string))
                    .collect(),
            ),
            Ok(Err(e)) | Err(e) => {
                tracing::debug!(error = %e, "cannot ask Docker which runs are live; pruning only old logs");
                None
            }
        };
        let deleted = crate::state::blocking(move || {
            crate::log::prune(&dir, rule, &|id| {
                live.as_ref().is_some_and(|l| l.contains(id))
            })
        })
        .await;
        if let Ok(n @ 1..) = deleted {
            tracing::info!(deleted = n, "pruned old session logs");
        }
    }

    /// Touch the logs of every live run (on the state thread), so that
    /// other processes can tell them from dead runs (see
    /// [`crate::log::HEARTBEAT`]) and retention never takes them for old,
    /// even when a run is quiet for hours.
    fn heartbeat(&self) {
        let live: Vec<Arc<std::path::Path>> = self
            .sessions
            .values()
            .filter(|e| !e.state.borrow().is_terminal())
            .map(|e| e.log_path.clone())
            .collect();
        self.store.touch(live);
    }

    /// Clean up after a run of a dead dispatcher that ended on its own
    /// ([`adoption::end_adopted_run`]), in the background.
    fn clean_up_after(&mut self, run: AdoptedRun, end: adoption::Ended) {
        self.cleanups.retain(|c| !c.is_finished());
        self.cleanups.push(actix::spawn(adoption::end_adopted_run(
            self.runtime.clone(),
            self.settings.state_dir.clone(),
            run,
            end,
        )));
    }

    /// Drop adopted runs that have ended on their own, cleaning up after
    /// them ([`adoption::end_adopted_run`]); their slots go to the queue.
    fn refresh_adopted(&mut self, ctx: &mut Context<Self>) {
        if self.adopted.is_empty() {
            return;
        }
        let list = guarded("the runtime's list", self.runtime.list());
        ctx.spawn(
            actix::fut::wrap_future(list).map(|listed, act: &mut Self, _| {
                let Ok(Ok(containers)) = listed else { return };
                let ended: Vec<(String, adoption::Ended)> = act
                    .adopted
                    .iter()
                    .filter_map(|(session, run)| {
                        let listed = containers.iter().find(|c| c.name == run.container);
                        adoption::adopted_run_end(listed).map(|end| (session.clone(), end))
                    })
                    .collect();
                for (session, end) in ended {
                    let Some(run) = act.adopted.remove(&session) else {
                        continue;
                    };
                    act.clean_up_after(run, end);
                }
                act.admit_next();
            }),
        );
    }
}

struct Match {
    session: String,
    container: Option<String>,
    local: Option<SessionInfo>,
    labels: Option<ContainerInfo>,
}

impl Actor for DispatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.workers = (0..self.settings.workers).map(|_| Arbiter::new()).collect();
        if self.settings.adopt_orphans {
            // Before any message: starts must see the adopted runs' slots.
            let list = guarded("the runtime's list", self.runtime.list());
            let owner = self.owner.clone();
            let state_dir = self.settings.state_dir.clone();
            let find = async move {
                let containers = list.await??;
                crate::state::blocking(move || adoption::adopt(&owner, &state_dir, &containers))
                    .await
            };
            ctx.wait(
                actix::fut::wrap_future(find).map(|found, act: &mut Self, _| match found {
                    Ok(found) => {
                        act.adopted.extend(found.running);
                        for (run, code) in found.ended {
                            act.clean_up_after(run, adoption::Ended::Exited(code));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look for orphaned runs to adopt")
                    }
                }),
            );
            ctx.run_interval(ADOPTED_POLL, |act, ctx| act.refresh_adopted(ctx));
        }
        ctx.run_interval(self.settings.log_heartbeat, |act, _| act.heartbeat());
        actix::spawn(Self::prune(
            self.settings.sessions_dir(),
            self.settings.retention,
            self.runtime.clone(),
        ));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Stopped without a Shutdown: its runs must not be orphaned. The
        // workers (where the sessions live) stop once every run has ended.
        self.stop_everything_on_death();
        let states: Vec<watch::Receiver<SessionState>> =
            self.sessions.values().map(|e| e.state.clone()).collect();
        let workers: Vec<ArbiterHandle> = self.workers.iter().map(|w| w.handle()).collect();
        actix::spawn(async move {
            join_all(states.into_iter().map(|mut st| async move {
                let _ = st.wait_for(SessionState::is_terminal).await;
            }))
            .await;
            for w in workers {
                w.stop();
            }
        });
    }
}

impl Drop for DispatcherActor {
    /// A dispatcher that dies in a panic (no `stopped`) still stops its
    /// live runs: each session runs its own stop escalation.
    fn drop(&mut self) {
        self.stop_everything_on_death();
    }
}

impl Handler<Start> for DispatcherActor {
    type Result = ResponseActFuture<Self, Result<SessionInfo>>;

    fn handle(&mut self, Start(req): Start, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(Error::ShuttingDown)));
        }
        let (pod, plan, policy) = match self.checked_plan(&req) {
            Ok(planned) => planned,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        // A long-lived agent's session gets storage of its own (and its
        // repository checked) before anything is created.
        let storage = match storage_plan(&pod, &plan) {
            Ok(s) => s,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let checked = async move {
            match storage {
                Some(mut s) => {
                    if let Some(spec) = s.repo_spec.take() {
                        let source = tokio::task::spawn_blocking(move || {
                            crate::workspace::check_source(&spec)
                        })
                        .await
                        .map_err(|e| Error::internal(format!("checking the repository: {e}")))??;
                        s.source = Some(source);
                    }
                    Ok(Some(s))
                }
                None => Ok(None),
            }
        };
        // The log file is made on the state thread; the run is registered
        // when it exists.
        let made = self.new_session(&pod.name);
        let state_dir = self.settings.state_dir.clone();
        let meta_pod = pod.clone();
        let issue = match &plan {
            Plan::Start(sp) => sp.issue.clone(),
            Plan::Resume { .. } => None,
        };
        let prepared = async move {
            let storage = checked.await?;
            let (id, log) = made.await?;
            let persistent = match storage {
                Some(s) => {
                    let id2 = id.clone();
                    Some(
                        tokio::task::spawn_blocking(move || {
                            s.create(&state_dir, &id2, &meta_pod, issue)
                        })
                        .await
                        .map_err(|e| {
                            Error::internal(format!("making the session's storage: {e}"))
                        })??,
                    )
                }
                None => None,
            };
            Ok::<_, Error>((id, log, persistent))
        };
        let mut plan = plan;
        Box::pin(
            actix::fut::wrap_future(prepared).map(move |made, act: &mut Self, ctx| {
                let (id, log, persistent) = made?;
                if act.shutting_down {
                    return Err(Error::ShuttingDown);
                }
                if let (Plan::Start(sp), Some(p)) = (&mut plan, persistent) {
                    sp.persistent = Some(Arc::new(p));
                }
                let image = pod.image();
                let info = act.spawn_session(
                    ctx,
                    id.clone(),
                    log,
                    pod.name.clone(),
                    image,
                    plan,
                    policy,
                    req.subscribers,
                    None,
                );
                act.admit_or_queue(&id);
                Ok(info)
            }),
        )
    }
}

/// What a long-lived agent's session needs of its storage, worked out
/// from the pod before anything is made.
struct StoragePlan {
    workdir: String,
    mount_work: bool,
    repo_spec: Option<crate::workspace::RepoSpec>,
    source: Option<crate::workspace::Source>,
}

/// `None` for a run that needs no storage (its agent is not long-lived).
fn storage_plan(pod: &Pod, plan: &Plan) -> Result<Option<StoragePlan>> {
    let Plan::Start(sp) = plan else {
        return Ok(None);
    };
    if sp.template.agent_input != AgentInput::StreamJson {
        return Ok(None);
    }
    let workdir = pod
        .config
        .workdir
        .clone()
        .unwrap_or_else(|| crate::workspace::storage::DEFAULT_WORKDIR.to_string());
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let mount_work = !sp.mounts.iter().any(|m| same(&m.target, &workdir));
    let repo_spec = pod.repo()?;
    if repo_spec.is_some() && !mount_work {
        return Err(Error::PodConfig {
            path: pod.config_path(),
            field: Some("repo".into()),
            message: format!(
                "field `repo`: the pod mounts a directory of its own at its workdir `{workdir}`, where the repository's clone would go; remove that mount or the repo field"
            ),
        });
    }
    Ok(Some(StoragePlan {
        workdir,
        mount_work,
        repo_spec,
        source: None,
    }))
}

impl StoragePlan {
    /// Make the storage of session `id` (and clone the repository into
    /// its workspace). Blocking.
    fn create(
        self,
        state_dir: &std::path::Path,
        id: &str,
        pod: &Pod,
        issue: Option<String>,
    ) -> Result<Persistent> {
        use crate::workspace::{storage, Storage, StoredRepo, StoredSession};
        let store = Storage::of(state_dir, id);
        let conversation = uuid::Uuid::new_v4().to_string();
        store.create(&StoredSession {
            session: id.to_string(),
            pod: pod.name.clone(),
            image: pod.image(),
            conversation: conversation.clone(),
            workdir: self.workdir.clone(),
            issue: issue.clone(),
            repo: None,
            created: storage::now(),
            runs: vec![id.to_string()],
            ended: None,
            outcome: None,
            branch: None,
        })?;
        let repo = match &self.source {
            Some(source) => {
                let prepared = crate::workspace::prepare_workspace(source, id, &store.work());
                let prepared = match prepared {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = store.remove();
                        return Err(e);
                    }
                };
                let repo = StoredRepo {
                    source: source.path.clone(),
                    reference: source.reference.clone(),
                    base: prepared.base,
                };
                let r = repo.clone();
                store.update(|m| m.repo = Some(r))?;
                Some(repo)
            }
            None => None,
        };
        Ok(Persistent {
            storage: store,
            key: id.to_string(),
            conversation,
            resume: false,
            workdir: self.workdir,
            mount_work: self.mount_work,
            repo,
            issue,
            checkpoint: pod.config.checkpoint == Some(true),
        })
    }
}

/// The storage of an ended session and the plan of its new run.
type StoredResume = (
    crate::workspace::StoredSession,
    (Arc<Pod>, Plan, Arc<Policy>),
);

/// What a `Resume` reaches: a live run, or the storage of one that ended
/// (with the plan of its new run).
enum ResumeTarget {
    Live(Box<Match>, String),
    Stored(Box<StoredResume>),
}

impl DispatcherActor {
    /// The live run `target` names (a session id, a pod name, or the
    /// session whose storage a resumed run uses), and its pod.
    fn live_target(&self, target: &str, containers: &[ContainerInfo]) -> Result<(Match, String)> {
        let m = match self.matches(target, containers) {
            Ok(mut found) => found.remove(0),
            Err(Error::SessionNotFound { .. }) => {
                let resumed = containers
                    .iter()
                    .find(|c| c.is_running() && c.label(labels::STORAGE) == Some(target));
                let Some(session) = resumed.and_then(|c| c.label(labels::SESSION)) else {
                    return Err(Error::SessionNotFound {
                        target: target.to_string(),
                    });
                };
                self.matches(session, containers)?.remove(0)
            }
            Err(e) => return Err(e),
        };
        match (&m.container, &m.labels) {
            (Some(_), Some(c)) if c.label(labels::CONVERSATION).is_some() => {
                let pod = c.label(labels::POD).unwrap_or("resume").to_string();
                Ok((m, pod))
            }
            _ => Err(Error::SessionNotFound {
                target: target.to_string(),
            }),
        }
    }

    /// The plan of a new run on the storage of session `meta` (its
    /// container has ended): the same pod, workspace and agent state, the
    /// conversation continued (`--resume`) with `prompt` (no template).
    fn plan_stored_resume(
        &mut self,
        meta: &crate::workspace::StoredSession,
        prompt: &str,
    ) -> Result<(Arc<Pod>, Plan, Arc<Policy>)> {
        let req = StartRequest::prompt(meta.pod.clone(), prompt);
        let (pod, mut plan, policy) = self.checked_plan(&req)?;
        let layout = storage_plan(&pod, &plan)?.ok_or_else(|| Error::InputUnavailable {
            target: meta.session.clone(),
            message: format!(
                "pod {} no longer runs a long-lived agent (agentInput is not stream-json)",
                meta.pod
            ),
        })?;
        let Plan::Start(sp) = &mut plan else {
            return Err(Error::internal("a start plan was expected"));
        };
        sp.prompt = prompt.to_string();
        sp.issue = meta.issue.clone();
        sp.persistent = Some(Arc::new(Persistent {
            storage: crate::workspace::Storage::of(&self.settings.state_dir, &meta.session),
            key: meta.session.clone(),
            conversation: meta.conversation.clone(),
            resume: true,
            workdir: meta.workdir.clone(),
            mount_work: layout.mount_work,
            repo: meta.repo.clone(),
            issue: meta.issue.clone(),
            checkpoint: pod.config.checkpoint == Some(true),
        }));
        Ok((pod, plan, policy))
    }
}

impl Handler<Validate> for DispatcherActor {
    type Result = Result<()>;

    fn handle(&mut self, Validate(req): Validate, _ctx: &mut Context<Self>) -> Self::Result {
        self.checked_plan(&req).map(|_| ())
    }
}

impl Handler<Resume> for DispatcherActor {
    type Result = ResponseActFuture<Self, Result<SessionInfo>>;

    fn handle(&mut self, msg: Resume, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(Error::ShuttingDown)));
        }
        // The follow-up goes on stdin, so its length is not limited by argv.
        if let Err(e) =
            pod::validate_prompt(&msg.prompt).and_then(|()| pod::limits::check_follow_up(""))
        {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let list = guarded("the runtime's list", self.runtime.list());
        let target = msg.target.clone();
        let prompt = msg.prompt.clone();
        Box::pin(
            actix::fut::wrap_future(list)
                .then(move |listed, act: &mut Self, _ctx| {
                    // The run to resume first (a live one, or the storage
                    // of one that ended), then its new session's log.
                    let found = listed.and_then(|r| r).and_then(|containers| {
                        match act.live_target(&target, &containers) {
                            Ok((m, pod)) => Ok(ResumeTarget::Live(Box::new(m), pod)),
                            Err(Error::SessionNotFound { .. }) => {
                                let store =
                                    crate::workspace::Storage::of(&act.settings.state_dir, &target);
                                if !store.exists() {
                                    return Err(Error::SessionNotFound { target });
                                }
                                let meta = store.load()?;
                                let planned = act.plan_stored_resume(&meta, &prompt)?;
                                Ok(ResumeTarget::Stored(Box::new((meta, planned))))
                            }
                            Err(e) => Err(e),
                        }
                    });
                    let made = found.as_ref().ok().map(|t| {
                        act.new_session(match t {
                            ResumeTarget::Live(_, pod) => pod,
                            ResumeTarget::Stored(s) => &s.0.pod,
                        })
                    });
                    actix::fut::wrap_future(async move {
                        let found = found?;
                        let made = made.expect("made when the run is found").await?;
                        Ok::<_, Error>((found, made))
                    })
                })
                .map(move |found, act: &mut Self, ctx| {
                    let (found, (id, log)) = found?;
                    if act.shutting_down {
                        return Err(Error::ShuttingDown);
                    }
                    let (m, pod_name) = match found {
                        ResumeTarget::Live(m, pod) => (*m, pod),
                        ResumeTarget::Stored(stored) => {
                            let (meta, (pod, plan, policy)) = *stored;
                            // A new container on the session's storage.
                            let store = crate::workspace::Storage::of(
                                &act.settings.state_dir,
                                &meta.session,
                            );
                            let run = id.clone();
                            tokio::task::spawn_blocking(move || {
                                let _ = store.update(|m| m.runs.push(run));
                            });
                            let info = act.spawn_session(
                                ctx,
                                id.clone(),
                                log,
                                pod.name.clone(),
                                pod.image(),
                                plan,
                                policy,
                                msg.subscribers,
                                None,
                            );
                            act.admit_or_queue(&id);
                            return Ok(info);
                        }
                    };
                    let (Some(container), Some(c)) = (m.container, m.labels) else {
                        return Err(Error::SessionNotFound { target: msg.target });
                    };
                    let conversation = c.label(labels::CONVERSATION).unwrap_or_default();
                    let image = c.label(labels::IMAGE).unwrap_or_default().to_string();
                    let agent_output = match c.label(labels::AGENT_OUTPUT) {
                        Some("text") => AgentOutput::Text,
                        _ => AgentOutput::StreamJson,
                    };
                    let job = if c.label(labels::AGENT_INPUT) == Some("stream-json") {
                        // A long-lived agent: the prompt goes to its stdin,
                        // the answer comes from the run's log.
                        let command = uuid::Uuid::new_v4().to_string();
                        let state_dir = c
                            .label(labels::STATE_DIR)
                            .map(std::path::PathBuf::from)
                            .unwrap_or_else(|| act.settings.state_dir.clone());
                        Job::FollowUp(FollowUpSpec {
                            log: crate::log::path_for(&state_dir.join("sessions"), &m.session),
                            run: m.session.clone(),
                            bytes: Stdin::new(crate::agent::user_message(
                                &msg.prompt,
                                conversation,
                                &command,
                            )),
                            command,
                            container,
                        })
                    } else {
                        let agent: Vec<String> = c
                            .label(labels::AGENT)
                            .and_then(|a| serde_json::from_str(a).ok())
                            .unwrap_or_else(|| vec!["claude".to_string()]);
                        let mut command = agent;
                        command.extend(crate::agent::resume_args(agent_output, conversation));
                        Job::Exec(ExecSpec {
                            container,
                            command,
                            workdir: c.label(labels::WORKDIR).map(str::to_string),
                            line_cap: act.settings.line_cap,
                            // The follow-up goes on stdin, never in argv.
                            stdin: Some(Stdin::new(msg.prompt.clone())),
                        })
                    };
                    let policy = act.resume_policy.clone();
                    Ok(act.spawn_session(
                        ctx,
                        id,
                        log,
                        pod_name,
                        image,
                        Plan::Resume {
                            job: Box::new(job),
                            agent_output,
                        },
                        policy,
                        msg.subscribers,
                        Some(m.session),
                    ))
                }),
        )
    }
}

impl Handler<Stop> for DispatcherActor {
    type Result = ResponseActFuture<Self, Result<StopReport>>;

    fn handle(&mut self, msg: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        let list = guarded("the runtime's list", self.runtime.list());
        let runtime = self.runtime.clone();
        let default_grace = self.settings.policy.stop_grace;
        let own_state_dir = self.settings.state_dir.clone();
        Box::pin(
            actix::fut::wrap_future(list)
                .map(move |listed, act: &mut Self, _| {
                    // Docker unreachable still lets us stop our own sessions.
                    let containers = listed.and_then(|r| r).unwrap_or_default();
                    act.matches(&msg.target, &containers)
                        .map(|mut m| (m.remove(0), msg.grace))
                })
                .then(move |found, _act, _ctx| {
                    let fut = async move {
                        let (m, grace) = found?;
                        let container = m.container.clone().unwrap_or_default();
                        if let Some(local) = m.local {
                            let code =
                                local.addr.send(StopSession { grace }).await.map_err(|_| {
                                    Error::SessionNotFound {
                                        target: m.session.clone(),
                                    }
                                })?;
                            let code = match code {
                                Ok(c) => Some(c),
                                Err(Error::Stopped) => None,
                                Err(e) => return Err(e),
                            };
                            return Ok(StopReport {
                                session: m.session,
                                container,
                                code,
                            });
                        }
                        // The run's own grace, from its labels, unless the
                        // caller gave one.
                        let own = m
                            .labels
                            .as_ref()
                            .and_then(|c| c.label(labels::GRACE))
                            .and_then(|g| g.parse::<f64>().ok())
                            .and_then(|g| Duration::try_from_secs_f64(g).ok());
                        let grace = grace.or(own).unwrap_or(default_grace);
                        // Tell the owner first, so that it does not take the
                        // exit for a failure and restart (see `stops`).
                        let state_dir = m
                            .labels
                            .as_ref()
                            .and_then(|c| c.label(labels::STATE_DIR))
                            .map_or(own_state_dir, std::path::PathBuf::from);
                        let session = m.session.clone();
                        let recorded = tokio::task::spawn_blocking(move || {
                            stops::record(&state_dir, &session)
                        })
                        .await;
                        if let Ok(Err(e)) = recorded {
                            tracing::warn!(session = %m.session, error = %e, "could not record the stop for the run's owner; it may restart the run");
                        }
                        if m.labels.as_ref().is_some_and(ContainerInfo::is_created) {
                            until_started(&runtime, &container).await;
                        }
                        guarded("the runtime's stop", runtime.stop(&container, grace)).await??;
                        Ok(StopReport {
                            session: m.session,
                            container,
                            code: None,
                        })
                    };
                    actix::fut::wrap_future(fut)
                }),
        )
    }
}

/// Wait (bounded) until `container` is no longer `created`: Docker's stop
/// of a container that has not started does nothing, and its owner would
/// then start it. Gone or running both end the wait; so does an engine
/// that cannot list.
async fn until_started(runtime: &Arc<dyn Runtime>, container: &str) {
    const LIMIT: Duration = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut delay = Duration::from_millis(20);
    while tokio::time::Instant::now() < deadline {
        let Ok(Ok(list)) = guarded("the runtime's list", runtime.list()).await else {
            return;
        };
        if !list.iter().any(|c| c.name == container && c.is_created()) {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    tracing::warn!(%container, "still not started after {LIMIT:?}; stopping it anyway");
}

impl Handler<StopOrphans> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<StopReport>>>;

    fn handle(&mut self, msg: StopOrphans, _ctx: &mut Context<Self>) -> Self::Result {
        let runtime = self.runtime.clone();
        let state_dir = self.settings.state_dir.clone();
        let grace = msg.grace.unwrap_or(self.settings.policy.stop_grace);
        Box::pin(async move {
            let containers = guarded("the runtime's list", runtime.list()).await??;
            let orphans: Vec<RunInfo> = Self::run_infos(containers, state_dir.clone())
                .await?
                .into_iter()
                .filter(|r| r.orphan)
                .collect();
            let stops = orphans.iter().map(|r| {
                stop_foreign_run(
                    runtime.clone(),
                    state_dir.clone(),
                    r.session.clone(),
                    r.container.clone(),
                    r.exit_code,
                    grace,
                    "stopped by `cldpd stop --orphans`: the cldpd process that ran it was gone",
                )
            });
            let results = join_all(stops).await;
            let mut reports = Vec::new();
            for (r, res) in orphans.into_iter().zip(results) {
                res?;
                reports.push(StopReport {
                    session: r.session,
                    container: r.container,
                    code: r.exit_code,
                });
            }
            Ok(reports)
        })
    }
}

impl Handler<List> for DispatcherActor {
    type Result = MessageResult<List>;

    fn handle(&mut self, _: List, _ctx: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<SessionInfo> = self.sessions.iter().map(|(id, e)| e.info(id)).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(v)
    }
}

impl Handler<Lookup> for DispatcherActor {
    type Result = Option<SessionInfo>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.sessions.get(&msg.0).map(|e| e.info(&msg.0))
    }
}

impl Handler<ListRuns> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<RunInfo>>>;

    fn handle(&mut self, _: ListRuns, _ctx: &mut Context<Self>) -> Self::Result {
        let list = guarded("the runtime's list", self.runtime.list());
        let state_dir = self.settings.state_dir.clone();
        Box::pin(async move {
            let containers = list.await??;
            let mut runs = Self::run_infos(containers, state_dir).await?;
            runs.sort_by(|a, b| a.started.cmp(&b.started).then(a.session.cmp(&b.session)));
            Ok(runs)
        })
    }
}

impl Handler<Preflight> for DispatcherActor {
    type Result = ResponseFuture<Result<String>>;

    fn handle(&mut self, _: Preflight, _ctx: &mut Context<Self>) -> Self::Result {
        let fut = guarded("the runtime's preflight", self.runtime.preflight());
        Box::pin(async move { fut.await? })
    }
}

impl Handler<Shutdown> for DispatcherActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let sessions: Vec<SessionInfo> = self.sessions.iter().map(|(id, e)| e.info(id)).collect();
        let runtime = self.runtime.clone();
        let grace = msg.grace.unwrap_or(self.settings.policy.stop_grace);
        let adopted: Vec<AdoptedRun> = self.adopted.values().cloned().collect();
        let state_dir = self.settings.state_dir.clone();
        let cleanups = std::mem::take(&mut self.cleanups);
        Box::pin(async move {
            let adopted = adopted
                .into_iter()
                .map(|run| stop_adopted_run(runtime.clone(), state_dir.clone(), run, grace));
            let stops = sessions.iter().map(|s| {
                let mut state = s.state.clone();
                let addr = s.addr.clone();
                async move {
                    let _ = addr.send(StopSession { grace: msg.grace }).await;
                    // Also wait for the final state (the actor may be gone).
                    let _ = state.wait_for(SessionState::is_terminal).await;
                }
            });
            futures_util::future::join3(join_all(stops), join_all(adopted), join_all(cleanups))
                .await;
        })
    }
}

impl Handler<HoldAdmissions> for DispatcherActor {
    type Result = MessageResult<HoldAdmissions>;

    fn handle(&mut self, msg: HoldAdmissions, ctx: &mut Context<Self>) -> Self::Result {
        self.held_until = msg.until;
        match msg.until {
            Some(until) => {
                tracing::info!(
                    for_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                    queued = self.queue.len(),
                    "admissions held"
                );
                // Admit again once the hold ends (a later hold replaces
                // this one; an early wake-up finds it still held).
                ctx.run_later(until.saturating_duration_since(Instant::now()), |act, _| {
                    act.admit_next()
                });
            }
            None => self.admit_next(),
        }
        MessageResult(self.queue.iter().cloned().collect())
    }
}

impl Handler<ListAdopted> for DispatcherActor {
    type Result = MessageResult<ListAdopted>;

    fn handle(&mut self, _: ListAdopted, _ctx: &mut Context<Self>) -> Self::Result {
        let mut runs: Vec<AdoptedRun> = self.adopted.values().cloned().collect();
        runs.sort_by(|a, b| a.session.cmp(&b.session));
        MessageResult(runs)
    }
}

impl Handler<StopAdopted> for DispatcherActor {
    type Result = ResponseActFuture<Self, Vec<AdoptedRun>>;

    fn handle(&mut self, msg: StopAdopted, _ctx: &mut Context<Self>) -> Self::Result {
        let grace = msg.grace.unwrap_or(self.settings.policy.stop_grace);
        let mut runs: Vec<AdoptedRun> = self.adopted.values().cloned().collect();
        runs.sort_by(|a, b| a.session.cmp(&b.session));
        let runtime = self.runtime.clone();
        let state_dir = self.settings.state_dir.clone();
        let stops = join_all(
            runs.iter()
                .map(|r| stop_adopted_run(runtime.clone(), state_dir.clone(), r.clone(), grace)),
        );
        Box::pin(
            actix::fut::wrap_future(stops).map(move |stopped, act: &mut Self, _| {
                let mut done = Vec::new();
                for (run, ok) in runs.into_iter().zip(stopped) {
                    if ok {
                        act.adopted.remove(&run.session);
                        tracing::info!(session = %run.session, "stopped an adopted run");
                        done.push(run);
                    }
                }
                act.admit_next();
                done
            }),
        )
    }
}

// ----- from sessions ---------------------------------------------------------

impl Handler<SessionEnded> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, ctx: &mut Context<Self>) {
        if let Some(entry) = self.sessions.remove(&msg.id) {
            if entry.admitted {
                self.running = self.running.saturating_sub(1);
            } else {
                self.queue.retain(|q| q != &msg.id);
            }
        }
        for handle in self.builds.leave(&msg.id) {
            ctx.cancel_future(handle);
        }
        if let Some(container) = msg.cleanup {
            let remove = guarded("the runtime's remove", self.runtime.remove(&container));
            actix::spawn(async move {
                match remove.await {
                    Ok(Ok(())) => {
                        tracing::info!(container, "removed the container of an ended run")
                    }
                    Ok(Err(e)) | Err(e) => {
                        tracing::error!(container, error = %e, "could not remove the container; it keeps its cldpd labels")
                    }
                }
            });
        }
        self.admit_next();
    }
}

impl Handler<RequestBuild> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, msg: RequestBuild, ctx: &mut Context<Self>) {
        if !self.sessions.contains_key(&msg.session) {
            return; // ended while the request was in flight
        }
        match self
            .builds
            .join(&msg.spec, msg.fingerprint, msg.session, msg.reply.clone())
        {
            Join::Cached { image, verify } => msg.reply.do_send(BuildNotice::Done(Ok(BuildDone {
                cached: true,
                image,
                verify,
            }))),
            Join::Joined => {}
            Join::Start => self.start_build(msg.spec, ctx),
        }
    }
}

impl Handler<ImageFound> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, msg: ImageFound, _ctx: &mut Context<Self>) {
        self.builds.checked(&msg.0);
    }
}

impl Handler<ForgetImage> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, msg: ForgetImage, _ctx: &mut Context<Self>) {
        if let Some(record) = self.builds.forget(&msg.0) {
            actix::spawn(async move {
                let _ = crate::state::blocking(move || std::fs::remove_file(record)).await;
            });
        }
    }
}

#[cfg(any(test, feature = "fault-injection"))]
impl Handler<InjectPanic> for DispatcherActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("panic injected into the dispatcher (InjectPanic)");
    }
}

impl Handler<BuildCount> for DispatcherActor {
    type Result = u64;

    fn handle(&mut self, _: BuildCount, _ctx: &mut Context<Self>) -> u64 {
        self.builds.count()
    }
}
