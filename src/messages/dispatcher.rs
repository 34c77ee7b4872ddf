//! Messages handled by the [`DispatcherActor`](crate::actors::DispatcherActor).
//!
//! ```no_run
//! use actix::prelude::*;
//! use cldpd::messages::dispatcher::{Start, StartRequest};
//! # async fn demo(dispatcher: Addr<cldpd::actors::DispatcherActor>, me: Recipient<cldpd::Event>) -> cldpd::Result<()> {
//! let info = dispatcher
//!     .send(Start(
//!         StartRequest::issue("web", "https://github.com/acme/web/issues/42").subscribe(me),
//!     ))
//!     .await
//!     .expect("dispatcher is running")?;
//! println!("started {}", info.id);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::{Addr, Message, Recipient};
use serde::Serialize;
use tokio::sync::watch;

use crate::actors::fanout::Subscriber;
use crate::actors::SessionActor;
use crate::error::Error;
use crate::messages::session::{BuildNotice, SessionState};
use crate::pod::PodConfig;
use crate::runtime::BuildSpec;

/// What the agent is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Work on a GitHub issue: the prompt is
    /// `<template>\n\nWork on this GitHub issue: <url>`.
    Issue(String),
    /// A free-form prompt: `<template>\n\n<prompt>`.
    Prompt(String),
}

/// A request to start a run of a pod.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Pod name.
    pub pod: String,
    /// What to do.
    pub task: Task,
    /// Per-request overrides of the pod's `pod.json` (restart policy,
    /// timeouts, stop grace, env, ...); maps merge, other set fields win.
    pub overrides: PodConfig,
    /// Receive the run's events from its first one.
    pub subscribers: Vec<Subscriber>,
}

impl StartRequest {
    /// Work on a GitHub issue.
    pub fn issue(pod: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(pod, Task::Issue(url.into()))
    }

    /// Work on a free-form prompt.
    pub fn prompt(pod: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self::new(pod, Task::Prompt(prompt.into()))
    }

    fn new(pod: impl Into<String>, task: Task) -> Self {
        StartRequest {
            pod: pod.into(),
            task,
            overrides: PodConfig::default(),
            subscribers: Vec::new(),
        }
    }

    /// Add a subscriber (an actor's `Recipient<Event>`, or a channel).
    pub fn subscribe(mut self, subscriber: impl Into<Subscriber>) -> Self {
        self.subscribers.push(subscriber.into());
        self
    }

    /// Override fields of the pod's `pod.json` for this run.
    pub fn overrides(mut self, overrides: PodConfig) -> Self {
        self.overrides = overrides;
        self
    }

    /// The stop grace period for this run.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.overrides.stop_grace_secs = Some(grace.as_secs_f64());
        self
    }
}

/// Start a run. Bad input (unknown pod, bad name, bad `pod.json`, missing
/// mount source, bad issue URL, ...) is refused here with its own error
/// and nothing is created; everything after (build, run) is reported as
/// events.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionInfo, Error>")]
pub struct Start(pub StartRequest);

/// Check a start request as `Start` would (pod, `pod.json`, overrides,
/// mounts, env names, task) without creating anything.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Validate(pub StartRequest);

/// Send a follow-up prompt to an agent. `target` is a session id, or a pod
/// name when exactly one run of it is live. Works for runs started by other
/// processes (found by their Docker labels). The answer is a new session
/// whose events are the follow-up's:
///
/// - a live long-lived agent (`agentInput: "stream-json"`): the prompt is
///   written to its stdin (no second agent process; from another process
///   through `docker attach`, on the Engine API backend) and the new
///   session replays that prompt's turn from the run's log, ending with
///   exit 0 (or the turn's error) once it is answered;
/// - a long-lived agent's session whose container has ended (its storage
///   remains, see [`crate::workspace::storage`]): a new run of the same pod
///   on the same workspace and agent state, with `claude --resume
///   <conversation>` and the prompt (no template);
/// - any other live run: `claude -p --resume <conversation>` with the
///   prompt on stdin, by `docker exec` in the run's container.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionInfo, Error>")]
pub struct Resume {
    /// Session id or pod name.
    pub target: String,
    /// The follow-up prompt.
    pub prompt: String,
    /// Receive the resume's events from its first one.
    pub subscribers: Vec<Subscriber>,
}

/// Stop a run by session id or pod name (exactly one live run), whether
/// this dispatcher or another process started it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<StopReport, Error>")]
pub struct Stop {
    /// Session id or pod name.
    pub target: String,
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Option<Duration>,
}

/// What a [`Stop`] did.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// The session stopped.
    pub session: String,
    /// Its container.
    pub container: String,
    /// Exit code when this dispatcher ran it, or when an orphan had
    /// already ended on its own and Docker gave its code (a live run of
    /// another process is stopped through Docker and its code is not known
    /// here).
    pub code: Option<i32>,
}

/// The live sessions of this dispatcher.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct List;

/// A live session of this dispatcher, by id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<SessionInfo>")]
pub struct Lookup(pub String);

/// Every cldpd container on the Docker engine, whoever started it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<RunInfo>, Error>")]
pub struct ListRuns;

/// Stop and remove every run whose owning process is gone (an *orphan*),
/// never one whose owner is alive.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "Result<Vec<StopReport>, Error>")]
pub struct StopOrphans {
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Option<Duration>,
}

/// How many image builds this dispatcher has actually started (memoised
/// and shared builds are not counted).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "u64")]
pub struct BuildCount;

/// Check that the runtime is reachable; returns its version.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<String, Error>")]
pub struct Preflight;

/// Stop every live run (each with the grace), refuse new ones, then resolve.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// Grace period for each run; default the run's own.
    pub grace: Option<Duration>,
}

/// Hold admissions: runs waiting for a slot (and new starts that do not
/// fit) stay queued until `until`; running ones go on. `None` releases the
/// hold now; a later hold replaces an earlier one. Resolves with the ids of
/// the runs queued at that moment (in queue order), so that a caller that
/// closes admissions for good (a batch's budget) can stop exactly those.
///
/// Used by [`Batch`](crate::batch::Batch) to slow its admissions while the
/// API reports rate limits, and to stop admitting once its budget is spent.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<String>")]
pub struct HoldAdmissions {
    /// Until when; `None` lifts the hold.
    pub until: Option<std::time::Instant>,
}

/// A run of a dead dispatcher that this one took over (settings'
/// `adopt_orphans`): it counts against `max_concurrent` and is stopped on
/// [`Shutdown`] or [`StopAdopted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptedRun {
    /// Session id.
    pub session: String,
    /// Its container.
    pub container: String,
    /// The dispatcher instance that started it (gone).
    pub previous_owner: String,
}

/// The adopted runs still live (see [`AdoptedRun`]).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<AdoptedRun>")]
pub struct ListAdopted;

/// Stop every adopted run still live (each with `grace`, default the
/// dispatcher's); resolves with those it stopped, once they are stopped.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "Vec<AdoptedRun>")]
pub struct StopAdopted {
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Option<Duration>,
}

/// A handle to a session of this dispatcher.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Session id (`<pod>-<hex8>`).
    pub id: String,
    /// Pod name.
    pub pod: String,
    /// Image tag.
    pub image: String,
    /// For a resume, the session whose container it runs in.
    pub resume_of: Option<String>,
    /// The issue's URL when the run works on one, as the agent got it
    /// (`#42` and `owner/repo#42` expanded).
    pub issue: Option<String>,
    /// The session actor.
    pub addr: Addr<SessionActor>,
    /// Its state, updated as it changes.
    pub state: watch::Receiver<SessionState>,
    /// Its event log (one allocation shared by every copy of the info).
    pub log_path: Arc<Path>,
}

/// A cldpd container found through its Docker labels.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Session id.
    pub session: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Issue URL, when the run works on one.
    pub issue: Option<String>,
    /// When the container was started.
    #[serde(with = "opt_time")]
    pub started: Option<SystemTime>,
    /// Docker's state word (`running`, `exited`, ...).
    pub state: String,
    /// The exit code of a container that has ended and was not removed
    /// (its cldpd process died before it could), when Docker gave it.
    pub exit_code: Option<i32>,
    /// Restart attempt of this container.
    pub attempt: u32,
    /// Owning dispatcher instance id.
    pub owner: Option<String>,
    /// True when the owning process is gone (its runs are nobody's).
    pub orphan: bool,
}

mod opt_time {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
            None => s.serialize_none(),
        }
    }
}

/// The sessions that have storage of their own (a long-lived agent's:
/// workspace, agent state, `session.json`; see
/// [`crate::workspace::storage`]), live or ended, oldest first.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<StoredInfo>, Error>")]
pub struct ListStored;

/// A session's storage and whether a run uses it now.
#[derive(Debug, Clone, Serialize)]
pub struct StoredInfo {
    /// What `session.json` says.
    #[serde(flatten)]
    pub meta: crate::workspace::StoredSession,
    /// True while a container of it runs (it cannot be removed then).
    pub live: bool,
    /// The storage directory.
    pub dir: std::path::PathBuf,
}

/// Remove a session's storage (workspace, agent state) and the logs of its
/// runs. Refused while a run of it is live.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<StoredInfo, Error>")]
pub struct RemoveStored {
    /// The session id (its first run's).
    pub session: String,
}

/// Remove the storage and logs of every session whose last run ended more
/// than `older_than` ago (never a live one); answers what was removed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<StoredInfo>, Error>")]
pub struct PruneStored {
    /// Age of the last end.
    pub older_than: Duration,
}

/// The changes a session made to its repository (pod.json `repo`), as a
/// patch from its base to its branch `cldpd/<session>` (`git apply`
/// applies it). Its work comes back when a run of it ends.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<u8>, Error>")]
pub struct Diff {
    /// The session id (its first run's).
    pub session: String,
}

/// Fault injection: make the dispatcher actor panic inside its handler,
/// as a bug in cldpd would. Its live runs must still be stopped. For
/// supervision tests; compiled only with the cargo feature
/// `fault-injection`.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

// ----- internal ------------------------------------------------------------
//
// Crate-private: sent by sessions to their dispatcher. Anyone able to send
// them could skip admission or corrupt the running count.

/// From a session: it has ended (releases its slot and registry entry).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct SessionEnded {
    pub(crate) id: String,
    /// Container to force-remove (a session that crashed or failed to stop).
    pub(crate) cleanup: Option<String>,
}

/// From a session: make sure this image exists (single flight per tag).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct RequestBuild {
    pub(crate) session: String,
    pub(crate) spec: std::sync::Arc<BuildSpec>,
    /// Identity of the build inputs (keyed hash, hex); `None` = always
    /// build.
    pub(crate) fingerprint: Option<String>,
    pub(crate) reply: Recipient<BuildNotice>,
}

/// From a session: the recorded image of this tag exists (checked).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ImageFound(pub(crate) String);

/// From a session: the image of a memoised build has vanished.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ForgetImage(pub(crate) String);
