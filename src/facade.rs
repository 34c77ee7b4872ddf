//! The async facade: [`Dispatcher`] and [`Session`] handles for code that
//! is not an actor. Each method is a thin wrapper over one message of
//! [`crate::messages`]; it needs a running actix system (`#[actix::main]`,
//! `#[actix::test]` or `actix::System::new().block_on(...)`).
//!
//! ```no_run
//! use cldpd::{Dispatcher, Settings, StartRequest, EventKind};
//! use futures_util::StreamExt;
//!
//! #[actix::main]
//! async fn main() -> cldpd::Result<()> {
//!     let dispatcher = Dispatcher::docker(Settings::from_env());
//!     let session = dispatcher
//!         .start(StartRequest::issue("web", "https://github.com/acme/web/issues/42"))
//!         .await?;
//!     let mut events = session.events();
//!     while let Some(event) = events.next().await {
//!         if let EventKind::Output { line, .. } = &event.kind {
//!             println!("{line}");
//!         }
//!     }
//!     let code = session.wait().await?;
//!     println!("agent exited with {code}");
//!     Ok(())
//! }
//! ```

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::{Actor, Addr, MailboxError};
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::actors::fanout::Subscriber;
use crate::actors::DispatcherActor;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::log::LogReader;
use crate::messages::dispatcher::*;
use crate::messages::session::{GetStatus, SessionState, SessionStatus, StopSession, Subscribe};
use crate::runtime::{Backend, Runtime};
use crate::settings::Settings;

/// Capacity of the channel behind an [`EventStream`]; a reader slower than
/// the run is fed from the session log (nothing is lost).
pub const EVENT_STREAM_CAPACITY: usize = 1024;

fn gone(_: MailboxError) -> Error {
    Error::internal("the dispatcher is not running (its actix system stopped?)")
}

/// Handle to a [`DispatcherActor`]. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    addr: Addr<DispatcherActor>,
}

impl Dispatcher {
    /// Start a dispatcher over `runtime` in the current actix system.
    pub fn new(settings: Settings, runtime: impl Runtime) -> Dispatcher {
        Self::with_runtime(settings, Arc::new(runtime))
    }

    /// Start a dispatcher over a shared runtime.
    pub fn with_runtime(settings: Settings, runtime: Arc<dyn Runtime>) -> Dispatcher {
        Dispatcher {
            addr: DispatcherActor::new(settings, runtime).start(),
        }
    }

    /// Start a dispatcher over Docker: the Engine API (`DOCKER_HOST`) by
    /// default, the `docker` CLI with `CLDPD_RUNTIME=cli` or
    /// [`Settings::runtime`] (see [`Backend`]). An invalid `CLDPD_RUNTIME`
    /// is logged and the default used (the CLI refuses it up front).
    pub fn docker(settings: Settings) -> Dispatcher {
        let backend = settings.runtime.map(Ok).unwrap_or_else(Backend::from_env);
        let backend = backend.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "using the Engine API backend");
            Backend::EngineApi
        });
        Self::with_runtime(settings, backend.runtime())
    }

    /// The actor, for sending messages directly.
    pub fn addr(&self) -> &Addr<DispatcherActor> {
        &self.addr
    }

    /// Start a run (see [`Start`]).
    pub async fn start(&self, request: StartRequest) -> Result<Session> {
        let info = self.addr.send(Start(request)).await.map_err(gone)??;
        Ok(Session { info })
    }

    /// Check a start request without starting anything (see [`Validate`]).
    pub async fn validate(&self, request: StartRequest) -> Result<()> {
        self.addr.send(Validate(request)).await.map_err(gone)?
    }

    /// Send a follow-up prompt to a running agent (see [`Resume`]).
    pub async fn resume(
        &self,
        target: impl Into<String>,
        prompt: impl Into<String>,
    ) -> Result<Session> {
        let info = self
            .addr
            .send(Resume {
                target: target.into(),
                prompt: prompt.into(),
                subscribers: Vec::new(),
            })
            .await
            .map_err(gone)??;
        Ok(Session { info })
    }

    /// Stop a run of this or another process (see [`Stop`]).
    pub async fn stop(
        &self,
        target: impl Into<String>,
        grace: Option<Duration>,
    ) -> Result<StopReport> {
        self.addr
            .send(Stop {
                target: target.into(),
                grace,
            })
            .await
            .map_err(gone)?
    }

    /// Stop and remove the runs whose owner process is gone.
    pub async fn stop_orphans(&self, grace: Option<Duration>) -> Result<Vec<StopReport>> {
        self.addr.send(StopOrphans { grace }).await.map_err(gone)?
    }

    /// This dispatcher's live sessions.
    pub async fn sessions(&self) -> Result<Vec<Session>> {
        let list = self.addr.send(List).await.map_err(gone)?;
        Ok(list.into_iter().map(|info| Session { info }).collect())
    }

    /// One live session of this dispatcher.
    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        let info = self.addr.send(Lookup(id.to_string())).await.map_err(gone)?;
        Ok(info.map(|info| Session { info }))
    }

    /// Every cldpd container on the engine, with orphans marked.
    pub async fn runs(&self) -> Result<Vec<RunInfo>> {
        self.addr.send(ListRuns).await.map_err(gone)?
    }

    /// Check the runtime is reachable; returns its version.
    pub async fn preflight(&self) -> Result<String> {
        self.addr.send(Preflight).await.map_err(gone)?
    }

    /// Image builds actually started by this dispatcher.
    pub async fn build_count(&self) -> Result<u64> {
        self.addr.send(BuildCount).await.map_err(gone)
    }

    /// The runs of a dead dispatcher this one adopted (settings'
    /// `adopt_orphans`) that are still live.
    pub async fn adopted(&self) -> Result<Vec<AdoptedRun>> {
        self.addr.send(ListAdopted).await.map_err(gone)
    }

    /// Stop every adopted run still live; returns those stopped.
    pub async fn stop_adopted(&self, grace: Option<Duration>) -> Result<Vec<AdoptedRun>> {
        self.addr.send(StopAdopted { grace }).await.map_err(gone)
    }

    /// Stop every live run and refuse new ones.
    pub async fn shutdown(&self, grace: Option<Duration>) -> Result<()> {
        self.addr.send(Shutdown { grace }).await.map_err(gone)
    }
}

/// Handle to one run. Cheap to clone; dropping it does not stop the run.
#[derive(Clone, Debug)]
pub struct Session {
    info: SessionInfo,
}

impl Session {
    /// Wrap a [`SessionInfo`] (from the `Start`/`Resume` messages).
    pub fn from_info(info: SessionInfo) -> Self {
        Session { info }
    }

    /// The session id (`<pod>-<hex8>`).
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The pod.
    pub fn pod(&self) -> &str {
        &self.info.pod
    }

    /// Everything known about it.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Its event log.
    pub fn log_path(&self) -> &Path {
        &self.info.log_path
    }

    /// Its current state.
    pub fn state(&self) -> SessionState {
        self.info.state.borrow().clone()
    }

    /// Every event of the run from the first, in order, ending after the
    /// terminal event. May be called any number of times, before, during or
    /// after the run; reading slowly or never does not hold the run up.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(EVENT_STREAM_CAPACITY);
        self.info.addr.do_send(Subscribe {
            subscriber: Subscriber::Channel(tx),
            from_seq: 1,
        });
        EventStream {
            source: Source::Live(rx),
            last_seq: 0,
            log_path: self.info.log_path.clone(),
        }
    }

    /// Stop the run (SIGTERM, `grace`, SIGKILL) and return its outcome.
    pub async fn stop(&self, grace: Option<Duration>) -> Result<i32> {
        match self.info.addr.send(StopSession { grace }).await {
            Ok(outcome) => outcome,
            Err(_) => self.wait().await,
        }
    }

    /// The container's exit code once the run ends, or its error.
    pub async fn wait(&self) -> Result<i32> {
        let mut state = self.info.state.clone();
        let outcome = state
            .wait_for(SessionState::is_terminal)
            .await
            .map(|s| s.outcome().expect("terminal"));
        outcome.unwrap_or_else(|_| Err(Error::internal("the session ended without an outcome")))
    }

    /// A snapshot (state, last seq, fan-out memory); `None` once ended.
    pub async fn status(&self) -> Option<SessionStatus> {
        self.info.addr.send(GetStatus).await.ok()
    }
}

enum Source {
    Live(mpsc::Receiver<Event>),
    Log(Option<LogReader>),
    Done,
}

/// The events of one session; see [`Session::events`].
pub struct EventStream {
    source: Source,
    last_seq: u64,
    log_path: PathBuf,
}

impl EventStream {
    /// Read a finished (or running) session's events from its log file.
    pub fn from_log(path: impl Into<PathBuf>) -> Self {
        EventStream {
            source: Source::Log(None),
            last_seq: 0,
            log_path: path.into(),
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        loop {
            match &mut this.source {
                Source::Live(rx) => match rx.poll_recv(cx) {
                    Poll::Ready(Some(ev)) => {
                        this.last_seq = ev.seq;
                        if ev.is_terminal() {
                            this.source = Source::Done;
                        }
                        return Poll::Ready(Some(ev));
                    }
                    // Closed before the terminal event (the session had
                    // already ended): the rest is in the log.
                    Poll::Ready(None) => this.source = Source::Log(None),
                    Poll::Pending => return Poll::Pending,
                },
                Source::Log(reader) => {
                    if reader.is_none() {
                        match LogReader::open(&this.log_path) {
                            Ok(r) => *reader = Some(r),
                            Err(e) => {
                                tracing::warn!(error = %e, "event stream: no session log to read");
                                this.source = Source::Done;
                                continue;
                            }
                        }
                    }
                    let r = reader.as_mut().expect("opened");
                    match r.next_event() {
                        Ok(Some(ev)) if ev.seq <= this.last_seq => continue,
                        Ok(Some(ev)) => {
                            this.last_seq = ev.seq;
                            if ev.is_terminal() {
                                this.source = Source::Done;
                            }
                            return Poll::Ready(Some(ev));
                        }
                        Ok(None) => this.source = Source::Done,
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream: session log unreadable");
                            this.source = Source::Done;
                        }
                    }
                }
                Source::Done => return Poll::Ready(None),
            }
        }
    }
}
