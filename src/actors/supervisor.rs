//! Supervision: restart policy with intensity and back-off, timeouts, stop
//! escalation settings, and panic containment.
//!
//! actix's own `Supervisor` restarts an actor forever, without back-off and
//! without noticing panics, so cldpd supervises runs itself, after OTP:
//!
//! - **restart intensity**: at most `maxRestarts` restarts within
//!   `withinSecs`; one more failure ends the run with
//!   [`Error::RestartLimit`];
//! - **back-off**: the n-th restart waits `backoffMs × 2ⁿ⁻¹`, capped at
//!   `backoffMaxMs`;
//! - **shutdown timeout**: a stop sends SIGTERM, waits the grace, sends
//!   SIGKILL and waits `kill_timeout` more; a container still alive then is
//!   an [`Error::StopFailed`], never a hang;
//! - **panics**: every call into a runtime backend runs under
//!   `catch_unwind`; a panic becomes an [`Error::Internal`] for that run only.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;

use crate::error::{Error, Result};
use crate::pod::{PodConfig, RestartPolicy};

pub(crate) mod stops;

/// Default grace between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How a run is supervised, resolved from `pod.json`, request overrides and
/// the dispatcher's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// SIGTERM → SIGKILL grace (`stopGraceSecs`, default 10 s).
    pub stop_grace: Duration,
    /// How long to wait after SIGKILL before declaring `StopFailed`.
    pub kill_timeout: Duration,
    /// When to restart (`restart`, default `never`).
    pub restart: RestartPolicy,
    /// Restart intensity: at most this many restarts ... (`maxRestarts`, default 3)
    pub max_restarts: u32,
    /// ... within this period (`withinSecs`, default 60 s).
    pub within: Duration,
    /// First back-off (`backoffMs`, default 1 s).
    pub backoff: Duration,
    /// Back-off cap (`backoffMaxMs`, default 30 s).
    pub backoff_max: Duration,
    /// Wall-clock limit from the first container start (`timeoutSecs`).
    pub timeout: Option<Duration>,
    /// Limit on time without output (`idleTimeoutSecs`).
    pub idle_timeout: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stop_grace: DEFAULT_STOP_GRACE,
            kill_timeout: crate::runtime::escalation::KILL_TIMEOUT,
            restart: RestartPolicy::Never,
            max_restarts: 3,
            within: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            timeout: None,
            idle_timeout: None,
        }
    }
}

fn secs(option: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| Error::InvalidOption {
        option: option.to_string(),
        message: format!("{v} is not a number of seconds >= 0"),
    })
}

impl Policy {
    /// Resolve from a (merged) pod config over `base` defaults.
    pub fn from_config(config: &PodConfig, base: &Policy) -> Result<Policy> {
        let mut p = base.clone();
        if let Some(v) = config.stop_grace_secs {
            p.stop_grace = secs("stopGraceSecs", v)?;
        }
        if let Some(v) = config.restart {
            p.restart = v;
        }
        if let Some(v) = config.max_restarts {
            p.max_restarts = v;
        }
        if let Some(v) = config.within_secs {
            p.within = secs("withinSecs", v)?;
        }
        if let Some(v) = config.backoff_ms {
            p.backoff = Duration::from_millis(v);
        }
        if let Some(v) = config.backoff_max_ms {
            p.backoff_max = Duration::from_millis(v);
        }
        if let Some(v) = config.timeout_secs {
            p.timeout = Some(secs("timeoutSecs", v)?).filter(|d| !d.is_zero());
        }
        if let Some(v) = config.idle_timeout_secs {
            p.idle_timeout = Some(secs("idleTimeoutSecs", v)?).filter(|d| !d.is_zero());
        }
        if p.backoff_max < p.backoff {
            p.backoff_max = p.backoff;
        }
        Ok(p)
    }
}

/// How one container of a run ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    Exited(i32),
    Failed(Error),
}

impl Ending {
    fn describe(&self) -> String {
        match self {
            Ending::Exited(code) => format!("exited with code {code}"),
            Ending::Failed(e) => e.to_string(),
        }
    }
}

/// What to do after a container ended.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// The run is over.
    Finish,
    /// Start attempt `attempt` after `delay`.
    Restart {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// The intensity limit is reached.
    GiveUp(Error),
}

/// Applies a [`Policy`]'s restart rules across the containers of one run.
#[derive(Debug, Default)]
pub(crate) struct RestartTracker {
    recent: Vec<Instant>,
    restarts: u32,
}

impl RestartTracker {
    /// Restarts so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Whether `policy` asks for another container after `ending` (before
    /// the intensity limit is applied). Changes nothing.
    pub(crate) fn wants_restart(policy: &Policy, ending: &Ending) -> bool {
        match (policy.restart, ending) {
            (RestartPolicy::Never, _) => false,
            // Errors that another attempt cannot fix are not retried.
            (_, Ending::Failed(Error::AgentNotRunnable { .. }))
            | (_, Ending::Failed(Error::ArgumentsTooLong { .. }))
            | (_, Ending::Failed(Error::DockerFailed { .. }))
            // The container may still exist: another one could run beside it.
            | (_, Ending::Failed(Error::DockerLost { .. }))
            | (_, Ending::Failed(Error::Internal { .. }))
            | (_, Ending::Failed(Error::Log { .. })) => false,
            // The same task hits the same limit again.
            (_, Ending::Failed(Error::AgentFailed { subtype, .. }))
                if subtype == "error_max_turns" || subtype == "error_max_budget_usd" =>
            {
                false
            }
            (RestartPolicy::Always, _) => true,
            (RestartPolicy::OnFailure, Ending::Exited(0)) => false,
            (RestartPolicy::OnFailure, _) => true,
        }
    }

    /// Decide after a container ended at `now`.
    pub(crate) fn decide(&mut self, policy: &Policy, ending: &Ending, now: Instant) -> Decision {
        if !Self::wants_restart(policy, ending) {
            return Decision::Finish;
        }
        self.recent
            .retain(|&t| now.duration_since(t) <= policy.within);
        if self.recent.len() as u32 >= policy.max_restarts {
            return Decision::GiveUp(Error::RestartLimit {
                restarts: policy.max_restarts,
                within: policy.within,
                last: ending.describe(),
                exit_code: match ending {
                    Ending::Exited(code) => Some(*code),
                    Ending::Failed(_) => None,
                },
            });
        }
        self.recent.push(now);
        self.restarts += 1;
        let factor = 2u32.saturating_pow(self.restarts - 1);
        let delay = policy
            .backoff
            .saturating_mul(factor)
            .min(policy.backoff_max);
        Decision::Restart {
            attempt: self.restarts,
            delay,
            reason: ending.describe(),
        }
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Run `f`, turning a panic into [`Error::Internal`] naming `what`.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| Error::internal(format!("{what} panicked: {}", panic_message(&*p))))
}

/// A future whose panic becomes `Err(Error::Internal)`.
pub(crate) struct GuardedFuture<F> {
    what: &'static str,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for GuardedFuture<F> {
    type Output = Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let what = self.what;
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(Error::internal(format!(
                "{what} panicked: {}",
                panic_message(&*p)
            )))),
        }
    }
}

/// Guard a future (see [`GuardedFuture`]).
pub(crate) fn guarded<F: Future>(what: &'static str, f: F) -> GuardedFuture<F> {
    GuardedFuture {
        what,
        inner: Box::pin(f),
    }
}

/// A stream whose panic becomes one last item made by `on_panic`, after
/// which it ends.
pub(crate) struct GuardedStream<S, F> {
    inner: Option<Pin<Box<S>>>,
    on_panic: F,
    what: &'static str,
}

impl<S: Stream, F: Fn(Error) -> S::Item + Unpin> Stream for GuardedStream<S, F> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_next(cx))) {
            Ok(p) => p,
            Err(p) => {
                this.inner = None;
                let err =
                    Error::internal(format!("{} panicked: {}", this.what, panic_message(&*p)));
                Poll::Ready(Some((this.on_panic)(err)))
            }
        }
    }
}

/// Guard a stream (see [`GuardedStream`]).
pub(crate) fn guarded_stream<S: Stream, F: Fn(Error) -> S::Item + Unpin>(
    what: &'static str,
    stream: S,
    on_panic: F,
) -> GuardedStream<S, F> {
    GuardedStream {
        inner: Some(Box::pin(stream)),
        on_panic,
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restart: RestartPolicy) -> Policy {
        Policy {
            restart,
            max_restarts: 2,
            within: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..Policy::default()
        }
    }

    #[test]
    fn never_finishes_and_on_failure_ignores_success() {
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert!(matches!(
            t.decide(&policy(RestartPolicy::Never), &Ending::Exited(1), now),
            Decision::Finish
        ));
        assert!(matches!(
            t.decide(&policy(RestartPolicy::OnFailure), &Ending::Exited(0), now),
            Decision::Finish
        ));
        assert!(matches!(
            t.decide(&policy(RestartPolicy::Always), &Ending::Exited(0), now),
            Decision::Restart { attempt: 1, .. }
        ));
    }

    #[test]
    fn intensity_limits_restarts_within_the_period_and_backoff_grows_to_the_cap() {
        let p = Policy {
            max_restarts: 3,
            ..policy(RestartPolicy::OnFailure)
        };
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let delays: Vec<_> = (0..3)
            .map(
                |i| match t.decide(&p, &Ending::Exited(1), t0 + Duration::from_secs(i)) {
                    Decision::Restart { delay, .. } => delay,
                    d => panic!("{d:?}"),
                },
            )
            .collect();
        assert_eq!(delays, [100, 200, 300].map(Duration::from_millis));
        assert!(matches!(
            t.decide(&p, &Ending::Exited(1), t0 + Duration::from_secs(3)),
            Decision::GiveUp(Error::RestartLimit {
                restarts: 3,
                exit_code: Some(1),
                ..
            })
        ));
        // Outside the period the old restarts no longer count.
        assert!(matches!(
            t.decide(&p, &Ending::Exited(1), t0 + Duration::from_secs(12)),
            Decision::Restart { attempt: 4, .. }
        ));
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let mut t = RestartTracker::default();
        let e = Error::AgentNotRunnable {
            image: "i".into(),
            command: "claude".into(),
            code: 127,
            message: String::new(),
        };
        assert!(matches!(
            t.decide(
                &policy(RestartPolicy::Always),
                &Ending::Failed(e),
                Instant::now()
            ),
            Decision::Finish
        ));
    }

    #[test]
    fn a_command_line_over_the_limit_is_not_retried() {
        let mut t = RestartTracker::default();
        let e = Error::ArgumentsTooLong {
            what: "the prompt".into(),
            bytes: 200_000,
            limit: 131_071,
        };
        for restart in [RestartPolicy::OnFailure, RestartPolicy::Always] {
            assert!(matches!(
                t.decide(&policy(restart), &Ending::Failed(e.clone()), Instant::now()),
                Decision::Finish
            ));
        }
    }

    #[test]
    fn panics_become_internal_errors() {
        let r: Result<()> = guard("runtime.run", || panic!("boom"));
        match r {
            Err(Error::Internal { message }) => {
                assert!(message.contains("runtime.run panicked: boom"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_reads_pod_config() {
        let cfg = PodConfig {
            stop_grace_secs: Some(2.5),
            timeout_secs: Some(0.0),
            idle_timeout_secs: Some(3.0),
            backoff_ms: Some(5000),
            backoff_max_ms: Some(10),
            ..PodConfig::default()
        };
        let p = Policy::from_config(&cfg, &Policy::default()).unwrap();
        assert_eq!(p.stop_grace, Duration::from_millis(2500));
        assert_eq!(p.timeout, None);
        assert_eq!(p.idle_timeout, Some(Duration::from_secs(3)));
        assert_eq!(p.backoff_max, Duration::from_secs(5));
        let bad = PodConfig {
            stop_grace_secs: Some(-1.0),
            ..PodConfig::default()
        };
        assert!(matches!(
            Policy::from_config(&bad, &Policy::default()),
            Err(Error::InvalidOption { .. })
        ));
    }
}
