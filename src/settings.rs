//! Dispatcher settings.
//!
//! ```
//! use std::time::Duration;
//! let settings = cldpd::Settings::new("/srv/pods", "/var/lib/cldpd")
//!     .max_concurrent(8)
//!     .stop_grace(Duration::from_secs(30));
//! assert_eq!(settings.sessions_dir(), std::path::Path::new("/var/lib/cldpd/sessions"));
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::fanout::FanoutLimits;
use crate::actors::supervisor::Policy;
use crate::log::Retention;
use crate::runtime::{Backend, DEFAULT_LINE_CAP};

/// The default [`Settings::lag_budget`]: 64 MiB, the windows of sixteen
/// sessions at their own limit (4 MiB each); beyond that, lagging
/// subscribers catch up from the disk.
pub const DEFAULT_LAG_BUDGET: usize = 64 * 1024 * 1024;

/// Looks up a host environment variable (for `inheritEnv`).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How a dispatcher behaves. Build with [`Settings::new`] or
/// [`Settings::from_env`], then adjust with the builder methods.
#[derive(Clone)]
pub struct Settings {
    /// Where pods live (`<pods_dir>/<name>/Dockerfile`).
    pub pods_dir: PathBuf,
    /// cldpd's state directory; session logs go to `<state_dir>/sessions/`.
    pub state_dir: PathBuf,
    /// Most containers running at once; further starts queue (FIFO).
    /// `None`: no limit.
    pub max_concurrent: Option<usize>,
    /// Threads (actix arbiters) the sessions are spread over; default the
    /// number of CPUs.
    pub workers: usize,
    /// Defaults for every run; `pod.json` and request overrides win.
    pub policy: Policy,
    /// Longest output line before it is split into `partial` pieces.
    pub line_cap: usize,
    /// Memory each session may hold for lagging subscribers.
    pub fanout: FanoutLimits,
    /// Memory all sessions of the dispatcher together may hold for
    /// lagging subscribers, in bytes (approximate, as
    /// [`FanoutLimits::window_bytes`]); default [`DEFAULT_LAG_BUDGET`].
    /// Once it is spent, lagging subscribers of every session are fed from
    /// the session logs on disk (still every event, in order).
    pub lag_budget: usize,
    /// Session-log retention, applied when the dispatcher starts.
    pub retention: Retention,
    /// Host environment lookup for `inheritEnv` (default: the process
    /// environment).
    pub env_lookup: EnvLookup,
    /// Adopt the orphaned runs of a dead dispatcher that used the same state
    /// directory (see [`crate::owner`]); default off.
    pub adopt_orphans: bool,
    /// How often the logs of live runs without a running container
    /// (queued, building, between restarts) are touched, so that readers
    /// in other processes can tell them from runs whose process died
    /// (default [`crate::log::HEARTBEAT`]).
    pub log_heartbeat: Duration,
    /// The Docker backend of [`Dispatcher::docker`](crate::Dispatcher::docker);
    /// `None` (the default): from `CLDPD_RUNTIME` (see [`Backend`]).
    pub runtime: Option<Backend>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("pods_dir", &self.pods_dir)
            .field("state_dir", &self.state_dir)
            .field("max_concurrent", &self.max_concurrent)
            .field("workers", &self.workers)
            .field("policy", &self.policy)
            .field("line_cap", &self.line_cap)
            .field("fanout", &self.fanout)
            .field("lag_budget", &self.lag_budget)
            .field("retention", &self.retention)
            .field("adopt_orphans", &self.adopt_orphans)
            .field("log_heartbeat", &self.log_heartbeat)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings with explicit directories and defaults for the rest.
    pub fn new(pods_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Settings {
            pods_dir: pods_dir.into(),
            state_dir: state_dir.into(),
            max_concurrent: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            policy: Policy::default(),
            line_cap: DEFAULT_LINE_CAP,
            fanout: FanoutLimits::default(),
            lag_budget: DEFAULT_LAG_BUDGET,
            retention: Retention::default(),
            env_lookup: Arc::new(|name| std::env::var(name).ok()),
            adopt_orphans: false,
            log_heartbeat: crate::log::HEARTBEAT,
            runtime: None,
        }
    }

    /// Directories from the environment: `CLDPD_PODS_DIR` (default
    /// `~/.cldpd/pods`) and `CLDPD_STATE_DIR` (default `~/.cldpd`).
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let state_dir = var("CLDPD_STATE_DIR").unwrap_or_else(|| home.join(".cldpd"));
        let pods_dir = var("CLDPD_PODS_DIR").unwrap_or_else(|| home.join(".cldpd").join("pods"));
        Settings::new(pods_dir, state_dir)
    }

    /// Use this Docker backend in [`Dispatcher::docker`](crate::Dispatcher::docker)
    /// whatever `CLDPD_RUNTIME` says.
    pub fn runtime(mut self, backend: Backend) -> Self {
        self.runtime = Some(backend);
        self
    }

    /// `<state_dir>/sessions`.
    pub fn sessions_dir(&self) -> PathBuf {
        self.state_dir.join("sessions")
    }

    /// The log file of a session.
    pub fn log_path(&self, session: &str) -> PathBuf {
        crate::log::path_for(&self.sessions_dir(), session)
    }

    /// Set the pods directory.
    pub fn pods_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.pods_dir = dir.as_ref().to_path_buf();
        self
    }

    /// Limit the containers running at once.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n.max(1));
        self
    }

    /// How often the logs of live runs without a running container are
    /// touched (see [`crate::log::HEARTBEAT`]): between 1 ms and
    /// `HEARTBEAT`, since readers in other processes, which cannot know
    /// this setting, take a log untouched for [`crate::log::STALE_AFTER`]
    /// for a dead run.
    pub fn log_heartbeat(mut self, every: Duration) -> Self {
        self.log_heartbeat = every.clamp(Duration::from_millis(1), crate::log::HEARTBEAT);
        self
    }

    /// Number of worker threads for sessions.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Default stop grace.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.policy.stop_grace = grace;
        self
    }

    /// How long to wait after SIGKILL before a stop is `StopFailed`.
    pub fn kill_timeout(mut self, t: Duration) -> Self {
        self.policy.kill_timeout = t;
        self
    }

    /// Line cap.
    pub fn line_cap(mut self, cap: usize) -> Self {
        self.line_cap = cap;
        self
    }

    /// Fan-out memory limits.
    pub fn fanout(mut self, limits: FanoutLimits) -> Self {
        self.fanout = limits;
        self
    }

    /// The memory all sessions together may hold for lagging subscribers
    /// (see [`Settings::lag_budget`]).
    ///
    /// ```
    /// let settings = cldpd::Settings::new("/srv/pods", "/var/lib/cldpd").lag_budget(16 << 20);
    /// assert_eq!(settings.lag_budget, 16 << 20);
    /// ```
    pub fn lag_budget(mut self, bytes: usize) -> Self {
        self.lag_budget = bytes;
        self
    }

    /// Adopt orphaned runs of a dead dispatcher with the same state dir.
    pub fn adopt_orphans(mut self, adopt: bool) -> Self {
        self.adopt_orphans = adopt;
        self
    }

    /// The host environment lookup used for `inheritEnv`.
    pub fn env_lookup(
        mut self,
        f: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env_lookup = Arc::new(f);
        self
    }
}
