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
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::actors::build::{Builds, Join};
use crate::actors::fanout::{self, Hub};
use crate::actors::session::{Plan, RunTemplate, SessionActor, StartPlan};
use crate::actors::supervisor::{guard, guarded, guarded_stream, Policy};
use crate::error::{Error, Result};
use crate::log::LogWriter;
use crate::messages::dispatcher::*;
use crate::messages::session::{
    Admit, BuildDone, BuildNotice, Enqueued, SessionState, StopSession,
};
use crate::owner::Owner;
use crate::pod::{self, Pod};
use crate::runtime::{labels, BuildEvent, BuildSpec, ContainerInfo, ExecSpec, RunSpec, Runtime};
use crate::settings::Settings;

/// How often the end of adopted runs is checked (they have no session
/// actor to report it).
const ADOPTED_POLL: Duration = Duration::from_secs(2);

mod pod_cache;

use pod_cache::PodCache;

struct Entry {
    info: SessionInfo,
    admitted: bool,
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
    running: usize,
    /// Runs of a dead dispatcher taken over (session → container).
    adopted: HashMap<String, String>,
    builds: Builds,
    /// Pods discovered by earlier starts, reused while unchanged.
    pods: PodCache,
    /// The run template of each pod, for the pod it was made from.
    templates: HashMap<String, (Arc<Pod>, Arc<RunTemplate>)>,
    /// The settings' policy, shared by resume sessions.
    resume_policy: Arc<Policy>,
    /// The sessions directory was created (checked again if it vanishes).
    sessions_dir_made: bool,
    shutting_down: bool,
}

impl DispatcherActor {
    /// A dispatcher over `runtime`. Start it with `.start()` inside an
    /// actix system.
    pub fn new(settings: Settings, runtime: Arc<dyn Runtime>) -> Self {
        let resume_policy = Arc::new(settings.policy.clone());
        let builds = Builds::with_store(settings.state_dir.join("images"));
        DispatcherActor {
            settings: Arc::new(settings),
            runtime,
            owner: Owner::current(),
            workers: Vec::new(),
            next_worker: 0,
            sessions: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            adopted: HashMap::new(),
            builds,
            pods: PodCache::default(),
            templates: HashMap::new(),
            resume_policy,
            sessions_dir_made: false,
            shutting_down: false,
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

    /// A fresh session id whose log file did not exist (ids are unique
    /// across processes sharing a state directory).
    fn new_session(&mut self, pod: &str) -> Result<(String, LogWriter)> {
        let dir = self.settings.sessions_dir();
        let ensure_dir = || {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Log {
                path: dir.clone(),
                message: format!("cannot create the sessions directory: {e}"),
            })
        };
        if !self.sessions_dir_made {
            ensure_dir()?;
            self.sessions_dir_made = true;
        }
        let mut made_again = false;
        for _ in 0..16 {
            let id = format!("{pod}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            if self.sessions.contains_key(&id) {
                continue;
            }
            match LogWriter::create(crate::log::path_for(&dir, &id)) {
                Ok(log) => return Ok((id, log)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // Removed while we run: make it again (once).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !made_again => {
                    ensure_dir()?;
                    made_again = true;
                }
                Err(e) => {
                    return Err(Error::Log {
                        path: self.settings.log_path(&id),
                        message: format!("cannot create: {e}"),
                    })
                }
            }
        }
        Err(Error::internal("could not find an unused session id"))
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
            crate::messages::dispatcher::Task::Issue(url) => {
                pod::validate_issue_url(url)?;
                pod.start_prompt_for_issue(url)
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
        pod.check_argument_size(&prompt, &env)?;
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
            crate::messages::dispatcher::Task::Issue(url) => Some(url.clone()),
            crate::messages::dispatcher::Task::Prompt(_) => None,
        };
        let policy = template.policy.clone();
        let plan = Plan::Start(Box::new(StartPlan {
            template,
            env,
            mounts,
            issue,
            prompt,
        }));
        Ok((pod, plan, policy))
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
        if let Some(w) = &pod.config.workdir {
            labels_map.insert(labels::WORKDIR.to_string(), w.clone());
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
        };
        Ok(RunTemplate {
            build,
            run,
            agent: pod.agent_command(),
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
        let log_path = log.path().to_path_buf();
        let (tx, rx) = watch::channel(SessionState::Created);
        let runtime = self.runtime.clone();
        let dispatcher = ctx.address();
        let limits = self.settings.fanout;
        let id_arc: Arc<str> = Arc::from(id.as_str());
        let image_for_actor: Arc<str> = match &plan {
            Plan::Start(start) => start.template.image.clone(),
            Plan::Resume { .. } => Arc::from(image.as_str()),
        };
        let worker = self.worker();
        let addr = SessionActor::start_in_arbiter(&worker, move |_| {
            let hub = Hub::new(log, limits);
            for s in subscribers {
                fanout::subscribe(&hub, s, 1);
            }
            SessionActor::new(
                id_arc,
                image_for_actor,
                plan,
                policy,
                runtime,
                dispatcher,
                hub,
                tx,
            )
        });
        let info = SessionInfo {
            id: id.clone(),
            pod,
            image,
            resume_of,
            addr,
            state: rx,
            log_path,
        };
        self.sessions.insert(
            id,
            Box::new(Entry {
                info: info.clone(),
                admitted: false,
            }),
        );
        info
    }

    fn admit_or_queue(&mut self, id: &str) {
        let busy = self.running + self.adopted.len();
        let full = self.settings.max_concurrent.is_some_and(|max| busy >= max);
        let Some(entry) = self.sessions.get_mut(id) else {
            return;
        };
        if full {
            self.queue.push_back(id.to_string());
            entry.info.addr.do_send(Enqueued {
                position: self.queue.len(),
            });
        } else {
            entry.admitted = true;
            self.running += 1;
            entry.info.addr.do_send(Admit);
        }
    }

    fn admit_next(&mut self) {
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
                entry.info.addr.do_send(Admit);
            }
        }
    }

    fn start_build(&mut self, spec: BuildSpec, ctx: &mut Context<Self>) {
        let image = spec.image.clone();
        let runtime = self.runtime.clone();
        let events = match guard("the runtime's build", move || runtime.build(spec)) {
            Ok(s) => guarded_stream("the runtime's build stream", s, |e| {
                BuildEvent::Finished(Err(e))
            })
            .boxed(),
            Err(e) => {
                futures_util::stream::once(async move { BuildEvent::Finished(Err(e)) }).boxed()
            }
        };
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
                                act.builds.finished(&key, result);
                                true
                            }
                        };
                    actix::fut::ready(finished)
                })
                .map(move |finished, act, _| {
                    if !finished {
                        let e = Error::internal("the build stream ended without a result");
                        act.builds.finished(&done_key, Err(e));
                    }
                }),
        );
        self.builds.started(&image, handle);
    }

    /// Sessions matching `target` (a session id, or a pod name), local and
    /// from Docker's labels, as `(session, pod, container, local)`.
    fn matches(&self, target: &str, containers: &[ContainerInfo]) -> Result<Vec<Match>> {
        let mut found: Vec<Match> = Vec::new();
        for e in self.sessions.values() {
            if e.info.id == target || e.info.pod == target {
                let container = match &*e.info.state.borrow() {
                    SessionState::Running { container, .. } => Some(container.clone()),
                    _ => None,
                };
                found.push(Match {
                    session: e.info.id.clone(),
                    container,
                    local: Some(e.info.clone()),
                    labels: None,
                });
            }
        }
        for c in containers.iter().filter(|c| c.is_running()) {
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
    /// Take over the orphans of a dead dispatcher that used our state dir.
    fn adopt(&mut self, containers: Vec<ContainerInfo>) {
        let ours = self.settings.state_dir.display().to_string();
        for c in containers.iter().filter(|c| c.is_running()) {
            let Some(session) = c.label(labels::SESSION) else {
                continue;
            };
            if c.label(labels::STATE_DIR) != Some(ours.as_str())
                || self.adopted.contains_key(session)
            {
                continue;
            }
            let Some(owner) = Owner::effective(&c.labels, &self.settings.state_dir) else {
                continue;
            };
            if owner.is_alive() {
                continue;
            }
            match self
                .owner
                .record_adoption(&self.settings.state_dir, session)
            {
                Ok(()) => {
                    tracing::info!(session, container = %c.name, previous_owner = %owner.id, "adopted an orphaned run");
                    self.adopted.insert(session.to_string(), c.name.clone());
                }
                Err(e) => {
                    tracing::warn!(session, error = %e, "could not record the adoption of an orphaned run")
                }
            }
        }
    }

    /// Touch the logs of the live runs that have no running container
    /// (queued, building, restarting, stopping before a start), so that
    /// other processes reading them can tell them from dead runs (see
    /// [`crate::log::HEARTBEAT`]). A running container is found in Docker
    /// instead; its logs are not touched.
    fn heartbeat(&self) {
        for entry in self.sessions.values() {
            let waiting = match &*entry.info.state.borrow() {
                SessionState::Running { .. } => false,
                state => !state.is_terminal(),
            };
            if waiting {
                if let Err(e) = crate::log::touch(&entry.info.log_path) {
                    tracing::debug!(session = %entry.info.id, error = %e, "cannot touch the session log");
                }
            }
        }
    }

    /// Drop adopted runs that have ended; their slots go to the queue.
    fn refresh_adopted(&mut self, ctx: &mut Context<Self>) {
        if self.adopted.is_empty() {
            return;
        }
        let list = guarded("the runtime's list", self.runtime.list());
        ctx.spawn(
            actix::fut::wrap_future(list).map(|listed, act: &mut Self, _| {
                let Ok(Ok(containers)) = listed else { return };
                let state_dir = act.settings.state_dir.clone();
                act.adopted.retain(|session, container| {
                    let live = containers
                        .iter()
                        .any(|c| &c.name == container && c.is_running());
                    if !live {
                        let _ =
                            std::fs::remove_file(crate::owner::adoption_path(&state_dir, session));
                    }
                    live
                });
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
            ctx.wait(
                actix::fut::wrap_future(list).map(|listed, act: &mut Self, _| match listed {
                    Ok(Ok(containers)) => act.adopt(containers),
                    Ok(Err(e)) | Err(e) => {
                        tracing::warn!(error = %e, "cannot look for orphaned runs to adopt")
                    }
                }),
            );
            ctx.run_interval(ADOPTED_POLL, |act, ctx| act.refresh_adopted(ctx));
        }
        ctx.run_interval(self.settings.log_heartbeat, |act, _| act.heartbeat());
        let dir = self.settings.sessions_dir();
        let rule = self.settings.retention;
        // Pruning touches only finished runs' files; off the actor thread.
        std::thread::spawn(move || {
            let n = crate::log::prune(&dir, rule, &|_| false);
            if n > 0 {
                tracing::info!(deleted = n, "pruned old session logs");
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for w in &self.workers {
            w.stop();
        }
    }
}

impl Handler<Start> for DispatcherActor {
    type Result = Result<SessionInfo>;

    fn handle(&mut self, Start(req): Start, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let (pod, plan, policy) = self.plan_start(&req)?;
        let (id, log) = self.new_session(&pod.name)?;
        let image = pod.image();
        let info = self.spawn_session(
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
        self.admit_or_queue(&id);
        Ok(info)
    }
}

impl Handler<Validate> for DispatcherActor {
    type Result = Result<()>;

    fn handle(&mut self, Validate(req): Validate, _ctx: &mut Context<Self>) -> Self::Result {
        self.plan_start(&req).map(|_| ())
    }
}

impl Handler<Resume> for DispatcherActor {
    type Result = ResponseActFuture<Self, Result<SessionInfo>>;

    fn handle(&mut self, msg: Resume, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(Error::ShuttingDown)));
        }
        if let Err(e) = pod::validate_prompt(&msg.prompt)
            .and_then(|()| pod::limits::check_follow_up(&msg.prompt))
        {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let list = guarded("the runtime's list", self.runtime.list());
        Box::pin(
            actix::fut::wrap_future(list).map(move |listed, act: &mut Self, ctx| {
                let containers = listed.and_then(|r| r)?;
                let m = act.matches(&msg.target, &containers)?.remove(0);
                let (Some(container), Some(c)) = (m.container, m.labels) else {
                    return Err(Error::SessionNotFound { target: msg.target });
                };
                let Some(conversation) = c.label(labels::CONVERSATION) else {
                    return Err(Error::SessionNotFound { target: msg.target });
                };
                let agent: Vec<String> = c
                    .label(labels::AGENT)
                    .and_then(|a| serde_json::from_str(a).ok())
                    .unwrap_or_else(|| vec!["claude".to_string()]);
                let pod_name = c.label(labels::POD).unwrap_or("resume").to_string();
                let image = c.label(labels::IMAGE).unwrap_or_default().to_string();
                let command = crate::pod::agent::resume_argv(&agent, conversation, &msg.prompt);
                let exec = ExecSpec {
                    container,
                    command,
                    workdir: c.label(labels::WORKDIR).map(str::to_string),
                    line_cap: act.settings.line_cap,
                };
                let (id, log) = act.new_session(&pod_name)?;
                let policy = act.resume_policy.clone();
                Ok(act.spawn_session(
                    ctx,
                    id,
                    log,
                    pod_name,
                    image,
                    Plan::Resume {
                        exec: Box::new(exec),
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

impl Handler<StopOrphans> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<StopReport>>>;

    fn handle(&mut self, msg: StopOrphans, _ctx: &mut Context<Self>) -> Self::Result {
        let runtime = self.runtime.clone();
        let state_dir = self.settings.state_dir.clone();
        let grace = msg.grace.unwrap_or(self.settings.policy.stop_grace);
        Box::pin(async move {
            let containers = guarded("the runtime's list", runtime.list()).await??;
            let orphans: Vec<RunInfo> = containers
                .iter()
                .filter_map(|c| Self::run_info(c, &state_dir))
                .filter(|r| r.orphan)
                .collect();
            let stops = orphans.iter().map(|r| {
                let runtime = runtime.clone();
                let name = r.container.clone();
                async move {
                    let stopped = guarded("the runtime's stop", runtime.stop(&name, grace)).await?;
                    stopped?;
                    guarded("the runtime's remove", runtime.remove(&name)).await?
                }
            });
            let results = join_all(stops).await;
            let mut reports = Vec::new();
            for (r, res) in orphans.into_iter().zip(results) {
                res?;
                reports.push(StopReport {
                    session: r.session,
                    container: r.container,
                    code: None,
                });
            }
            Ok(reports)
        })
    }
}

impl Handler<List> for DispatcherActor {
    type Result = MessageResult<List>;

    fn handle(&mut self, _: List, _ctx: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<SessionInfo> = self.sessions.values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(v)
    }
}

impl Handler<Lookup> for DispatcherActor {
    type Result = Option<SessionInfo>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.sessions.get(&msg.0).map(|e| e.info.clone())
    }
}

impl Handler<ListRuns> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<RunInfo>>>;

    fn handle(&mut self, _: ListRuns, _ctx: &mut Context<Self>) -> Self::Result {
        let list = guarded("the runtime's list", self.runtime.list());
        let state_dir = self.settings.state_dir.clone();
        Box::pin(async move {
            let containers = list.await??;
            let mut runs: Vec<RunInfo> = containers
                .iter()
                .filter_map(|c| Self::run_info(c, &state_dir))
                .collect();
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
        let sessions: Vec<SessionInfo> = self.sessions.values().map(|e| e.info.clone()).collect();
        let runtime = self.runtime.clone();
        let grace = msg.grace.unwrap_or(self.settings.policy.stop_grace);
        let adopted: Vec<String> = self.adopted.values().cloned().collect();
        Box::pin(async move {
            let adopted = adopted.iter().map(|container| {
                let stop = guarded("the runtime's stop", runtime.stop(container, grace));
                async move {
                    if let Ok(Err(e)) | Err(e) = stop.await {
                        tracing::error!(container, error = %e, "could not stop an adopted run");
                    }
                }
            });
            let stops = sessions.iter().map(|s| {
                let mut state = s.state.clone();
                let addr = s.addr.clone();
                async move {
                    let _ = addr.send(StopSession { grace: msg.grace }).await;
                    // Also wait for the final state (the actor may be gone).
                    let _ = state.wait_for(SessionState::is_terminal).await;
                }
            });
            futures_util::future::join(join_all(stops), join_all(adopted)).await;
        })
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
        self.builds.forget(&msg.0);
    }
}

impl Handler<BuildCount> for DispatcherActor {
    type Result = u64;

    fn handle(&mut self, _: BuildCount, _ctx: &mut Context<Self>) -> u64 {
        self.builds.count()
    }
}
