//! [`RunnerActor`]: owns one container process through a [`Runtime`].
//!
//! It starts the container (or `exec` process), forwards what it reports to
//! its session in order — waiting for the session to take each batch, which
//! is the only backpressure on reading the container's output — and
//! delivers signals. Every call into the runtime is guarded: a panicking
//! backend becomes a `Failed(Error::Internal)` report. If the actor dies
//! anyway, its `Drop` tells the session (`RunnerEvent::Lost`).

use std::sync::Arc;

use actix::prelude::*;
use futures_util::stream::{self, BoxStream, StreamExt};

use crate::actors::supervisor::{guard, guarded, guarded_stream};
use crate::error::Error;
#[cfg(any(test, feature = "fault-injection"))]
use crate::messages::runner::InjectPanic;
use crate::messages::runner::{Abandon, Release, Signal};
use crate::messages::session::{RunnerEvent, RunnerReport};
use crate::runtime::{ExecSpec, ProcessEvent, RunSpec, Runtime};

/// What a runner runs.
// One job per runner, moved once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Job {
    /// A new container.
    Run(RunSpec),
    /// A process in a running container.
    Exec(ExecSpec),
    /// A prompt to the long-lived agent of a running container, and its
    /// answer (see [`crate::agent::follow_up`]).
    FollowUp(crate::agent::follow_up::FollowUpSpec),
}

impl Job {
    /// The container it runs in.
    pub fn container(&self) -> &str {
        match self {
            Job::Run(s) => &s.container,
            Job::Exec(s) => &s.container,
            Job::FollowUp(s) => &s.container,
        }
    }
}

/// Wraps one container process. See the [module docs](self).
pub struct RunnerActor {
    runtime: Arc<dyn Runtime>,
    /// Shared with the output pump (one sender, not two).
    session: Arc<Recipient<RunnerReport>>,
    generation: u32,
    container: Box<str>,
    /// For an exec job, its spec: signals go to that process, not to the
    /// container. Boxed, as is the job: the actor stays small.
    exec: Option<Box<ExecSpec>>,
    /// Boxed: a `RunSpec` is large and only needed until the start.
    job: Option<Box<Job>>,
    /// For a follow-up job: ends it (a signal stops the follow-up, not
    /// the run's agent).
    cancel: Option<Arc<tokio::sync::Notify>>,
    ended: bool,
}

impl RunnerActor {
    /// A runner for `job`, reporting to `session` tagged with `generation`
    /// (the session numbers its runners, so reports of an old one are told
    /// apart). Crate-private: only a session makes runners.
    pub(crate) fn new(
        runtime: Arc<dyn Runtime>,
        session: Recipient<RunnerReport>,
        generation: u32,
        job: Job,
    ) -> Self {
        RunnerActor {
            runtime,
            session: Arc::new(session),
            generation,
            container: job.container().into(),
            exec: match &job {
                Job::Exec(spec) => Some(Box::new(spec.clone())),
                Job::Run(_) | Job::FollowUp(_) => None,
            },
            cancel: matches!(job, Job::FollowUp(_)).then(Default::default),
            job: Some(Box::new(job)),
            ended: false,
        }
    }
}

impl Actor for RunnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(job) = self.job.take() else { return };
        let runtime = self.runtime.clone();
        let cancel = self.cancel.clone().unwrap_or_default();
        let started = guard("the runtime's run/exec", move || match *job {
            Job::Run(spec) => runtime.run(spec),
            Job::Exec(spec) => runtime.exec(spec),
            Job::FollowUp(spec) => crate::agent::follow_up::follow(runtime, spec, cancel),
        });
        let events: BoxStream<'static, ProcessEvent> = match started {
            Ok(s) => guarded_stream("the runtime's output stream", s, ProcessEvent::Failed).boxed(),
            Err(e) => stream::once(async move { ProcessEvent::Failed(e) }).boxed(),
        };
        let session = self.session.clone();
        let generation = self.generation;
        let pump = async move {
            let mut events = events;
            while let Some(ev) = events.next().await {
                let terminal = matches!(ev, ProcessEvent::Exited { .. } | ProcessEvent::Failed(_));
                let report = RunnerReport {
                    generation,
                    event: RunnerEvent::Process(ev),
                };
                if session.send(report).await.is_err() || terminal {
                    return;
                }
            }
            let lost = Error::RuntimeFailed {
                message: "the output stream ended without an exit status".into(),
            };
            let _ = session
                .send(RunnerReport {
                    generation,
                    event: RunnerEvent::Process(ProcessEvent::Failed(lost)),
                })
                .await;
        };
        ctx.spawn(actix::fut::wrap_future(pump).map(
            |_, act: &mut Self, ctx: &mut Context<Self>| {
                act.ended = true;
                ctx.stop();
            },
        ));
    }
}

impl Handler<Signal> for RunnerActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, Signal(sig): Signal, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(cancel) = &self.cancel {
            // A follow-up: stopping it ends the wait for its answer; the
            // run's agent goes on (it belongs to the run).
            cancel.notify_one();
            return Box::pin(async { Ok(()) });
        }
        let send = || match &self.exec {
            Some(spec) => self.runtime.signal_exec(spec, sig),
            None => self.runtime.signal(&self.container, sig),
        };
        // A `ResponseFuture` runs apart from the actor: a signal in flight
        // is never cancelled by the runner stopping (its container may
        // outlive it).
        match guard("the runtime's signal", send) {
            Ok(fut) => Box::pin(async move { guarded("the runtime's signal", fut).await? }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<Abandon> for RunnerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Abandon, _ctx: &mut Context<Self>) -> Self::Result {
        let remove = guarded("the runtime's remove", self.runtime.remove(&self.container));
        Box::pin(actix::fut::wrap_future(remove).map(|removed, act: &mut Self, ctx| {
            if let Ok(Err(e)) | Err(e) = removed {
                tracing::warn!(container = %act.container, error = %e, "could not remove an abandoned container");
            }
            act.ended = true;
            ctx.stop();
        }))
    }
}

#[cfg(any(test, feature = "fault-injection"))]
impl Handler<InjectPanic> for RunnerActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!(
            "panic injected into the runner of {} (InjectPanic)",
            self.container
        );
    }
}

impl Handler<Release> for RunnerActor {
    type Result = ();

    fn handle(&mut self, _: Release, ctx: &mut Context<Self>) {
        self.ended = true;
        ctx.stop();
    }
}

impl Drop for RunnerActor {
    fn drop(&mut self) {
        if !self.ended {
            self.session.do_send(RunnerReport {
                generation: self.generation,
                event: RunnerEvent::Lost,
            });
        }
    }
}
