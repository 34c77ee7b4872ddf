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
use crate::event::{Event, EventBatch};
use crate::log::LogReader;
use crate::messages::dispatcher::*;
use crate::messages::session::{
    EndConversation, FollowUp, GetStatus, SessionState, SessionStatus, StopSession, Subscribe,
};
use crate::runtime::{Backend, Runtime};
use crate::settings::Settings;

/// Capacity of the channel behind an [`EventStream`], in batches of
/// events (a batch is what the session published at once: one event when
/// output trickles, up to a read of the container's output when it
/// pours); a reader slower than the run is fed from the session log
/// (nothing is lost). The stream takes batches
/// ([`Subscriber::BatchChannel`]) and yields their events one by one.
pub const EVENT_STREAM_CAPACITY: usize = 128;

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

    /// The sessions with storage of their own, live or ended (see
    /// [`ListStored`]): what `resume` can still continue.
    pub async fn stored(&self) -> Result<Vec<StoredInfo>> {
        self.addr.send(ListStored).await.map_err(gone)?
    }

    /// Remove an ended session's storage and logs (see [`RemoveStored`]).
    pub async fn remove_stored(&self, session: impl Into<String>) -> Result<StoredInfo> {
        self.addr
            .send(RemoveStored {
                session: session.into(),
            })
            .await
            .map_err(gone)?
    }

    /// Remove the sessions ended more than `older_than` ago (see
    /// [`PruneStored`]).
    pub async fn prune_stored(&self, older_than: Duration) -> Result<Vec<StoredInfo>> {
        self.addr
            .send(PruneStored { older_than })
            .await
            .map_err(gone)?
    }

    /// A session's changes to its repository as a patch (see [`Diff`]).
    pub async fn diff(&self, session: impl Into<String>) -> Result<Vec<u8>> {
        self.addr
            .send(Diff {
                session: session.into(),
            })
            .await
            .map_err(gone)?
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
    /// Called as (or after) the run ends, it reads the session's log, and
    /// waits up to 10 s for the log to hold the terminal event, which the
    /// state thread writes a moment after the session sent it.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(EVENT_STREAM_CAPACITY);
        self.info.addr.do_send(Subscribe {
            subscriber: Subscriber::BatchChannel(tx),
            from_seq: 1,
        });
        EventStream {
            source: Source::Live(rx, Vec::new().into_iter()),
            last_seq: 0,
            log_path: self.info.log_path.clone(),
            catch_up_until: None,
            retry: None,
        }
    }

    /// Send a follow-up prompt to the run's long-lived agent
    /// (`agentInput: "stream-json"`; see [`FollowUp`]): no second agent
    /// process, the same conversation. Answers the prompt's id, which the
    /// run's `agent_prompt` and `agent_turn` events carry; the answer is in
    /// the run's own events (between the turn's `started` and `completed`).
    /// While the agent works the prompt is queued as its next turn; while
    /// it is [`SessionState::Idle`] it starts at once.
    ///
    /// ```no_run
    /// # async fn demo(session: cldpd::Session) -> cldpd::Result<()> {
    /// let id = session.send("Now add a test for it.").await?;
    /// println!("sent {id}; state {}", session.state().name());
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, prompt: impl Into<String>) -> Result<String> {
        self.info
            .addr
            .send(FollowUp {
                prompt: prompt.into(),
            })
            .await
            .map_err(|_| Error::SessionNotFound {
                target: self.info.id.clone(),
            })?
    }

    /// End the long-lived agent's conversation once it has answered (see
    /// [`EndConversation`]) and return the run's outcome.
    pub async fn end(&self) -> Result<i32> {
        match self.info.addr.send(EndConversation).await {
            Ok(outcome) => outcome,
            Err(_) => self.wait().await,
        }
    }

    /// True while the run's long-lived agent waits for a follow-up.
    pub fn is_idle(&self) -> bool {
        matches!(*self.info.state.borrow(), SessionState::Idle { .. })
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
    /// The channel, and the rest of the batch last taken from it.
    Live(mpsc::Receiver<EventBatch>, std::vec::IntoIter<Event>),
    Log(Option<LogReader>),
    Done,
}

/// How long a stream whose live session ended before it could subscribe
/// keeps reading the session's log for the events still on their way to
/// the disk (the terminal one at least: the state thread writes the log a
/// moment after the session has sent its last event).
const LOG_CATCH_UP: Duration = Duration::from_secs(10);

/// How often the log is read again meanwhile.
const LOG_RETRY: Duration = Duration::from_millis(10);

/// The events of one session; see [`Session::events`].
pub struct EventStream {
    source: Source,
    last_seq: u64,
    log_path: Arc<Path>,
    /// Set when the live channel closed before the terminal event: until
    /// then, the end of the log is the end of what is written so far, not
    /// the end of the stream.
    catch_up_until: Option<tokio::time::Instant>,
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl EventStream {
    /// Read a finished (or running) session's events from its log file.
    pub fn from_log(path: impl Into<PathBuf>) -> Self {
        EventStream {
            source: Source::Log(None),
            last_seq: 0,
            log_path: Arc::from(path.into()),
            catch_up_until: None,
            retry: None,
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        loop {
            match &mut this.source {
                Source::Live(rx, pending) => {
                    if let Some(ev) = pending.next() {
                        this.last_seq = ev.seq;
                        if ev.is_terminal() {
                            this.source = Source::Done;
                        }
                        return Poll::Ready(Some(ev));
                    }
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some(batch)) => *pending = batch.0.into_iter(),
                        // Closed before the terminal event (the session had
                        // already ended): the rest is in the log, or about to
                        // be.
                        Poll::Ready(None) => {
                            this.source = Source::Log(None);
                            this.catch_up_until = Some(tokio::time::Instant::now() + LOG_CATCH_UP);
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
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
                        Ok(None) => {
                            let waiting = this
                                .catch_up_until
                                .is_some_and(|until| tokio::time::Instant::now() < until);
                            if waiting {
                                let retry = this
                                    .retry
                                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(LOG_RETRY)));
                                match std::future::Future::poll(retry.as_mut(), cx) {
                                    Poll::Pending => return Poll::Pending,
                                    Poll::Ready(()) => {
                                        this.retry = None;
                                        continue;
                                    }
                                }
                            }
                            if this.catch_up_until.is_some() {
                                tracing::warn!(
                                    path = %this.log_path.display(),
                                    "event stream: the session ended and its log has no final event"
                                );
                            }
                            this.source = Source::Done
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, OutputStream};
    use futures_util::StreamExt;
    use std::io::Write;

    fn line(seq: u64, kind: EventKind) -> String {
        let mut s = serde_json::to_string(&Event::new("web-0a1b2c3d", seq, kind)).unwrap();
        s.push('\n');
        s
    }

    fn output(seq: u64) -> String {
        line(
            seq,
            EventKind::Output {
                stream: OutputStream::Stdout,
                line: format!("out {seq}"),
                partial: false,
            },
        )
    }

    /// The session ended before `events()` could subscribe, and the state
    /// thread had not yet written its last events: the stream reads the
    /// log until the terminal event arrives, instead of ending without it
    /// (seen as a flaky `a_panic_in_a_session_ends_its_run_cleanly…`).
    #[actix::test]
    async fn a_stream_whose_session_already_ended_waits_for_the_log_to_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-0a1b2c3d.ndjson");
        std::fs::write(&path, output(1) + &output(2)).unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(tx); // the session is gone: nobody will send anything live
        let stream = EventStream {
            source: Source::Live(rx, Vec::new().into_iter()),
            last_seq: 0,
            log_path: path.clone().into(),
            catch_up_until: None,
            retry: None,
        };
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            // Half a line first, as a writer caught mid-write leaves it.
            let last = line(3, EventKind::ContainerExited { code: 0 });
            let (a, b) = last.split_at(10);
            f.write_all(a.as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            f.write_all(b.as_bytes()).unwrap();
        });
        let events: Vec<Event> =
            tokio::time::timeout(Duration::from_secs(20), stream.collect::<Vec<_>>())
                .await
                .expect("the stream ends");
        writer.join().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(events[2].is_terminal());
    }

    /// A log read on its own (`from_log`) ends at its end: a run whose
    /// process died without a final event is not waited for.
    #[actix::test]
    async fn a_stream_from_a_log_ends_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-0a1b2c3d.ndjson");
        std::fs::write(&path, output(1)).unwrap();
        let events: Vec<Event> = tokio::time::timeout(
            Duration::from_secs(1),
            EventStream::from_log(&path).collect::<Vec<_>>(),
        )
        .await
        .expect("no waiting");
        assert_eq!(events.len(), 1);
    }
}
