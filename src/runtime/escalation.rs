//! The stop escalation (invariant 6 of ARCHITECTURE.md), written once.
//!
//! SIGTERM; the grace period; SIGKILL; then at most `kill_timeout` for the
//! process to go, after which the stop is [`Error::StopFailed`], never a
//! hang. A zero grace skips the SIGTERM. A SIGTERM that cannot be
//! delivered brings the SIGKILL forward; a SIGKILL that cannot be
//! delivered ends the stop with its error. A later stop of the same run
//! may only bring the SIGKILL forward ([`Hurry`]), never put it off.
//!
//! Every stop of a container goes through [`escalate`], whoever asks:
//!
//! - the session actor stopping its own run
//!   ([`SessionActor`](crate::actors::SessionActor)): its signals go
//!   through its runner, and the escalation is cancelled when the runner
//!   reports the container's end;
//! - [`Runtime::stop`](super::Runtime::stop) of every backend, for a
//!   container of any process ([`stop`] below): the backend gives its own
//!   signal call and a future that resolves once the container no longer
//!   runs. Docker's own `docker stop` / `POST /containers/{id}/stop` are not
//!   used: they count the grace in whole seconds and end with the engine's
//!   own timeout, so the same stop behaved differently on each backend and
//!   in the session.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::runtime::StopSignal;

/// How long a container may go on after its SIGKILL before a stop from
/// [`Runtime::stop`](super::Runtime::stop) is [`Error::StopFailed`]; the
/// session's own stops use the policy's `kill_timeout`, whose default this
/// is.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Brings the SIGKILL of a running escalation forward: a second stop with
/// a shorter grace. Dropping it changes nothing.
#[derive(Debug)]
pub(crate) struct Hurry(watch::Sender<Instant>);

/// When the SIGKILL is due, as [`escalate`] reads it, and whether the
/// stop began with a grace (and so with a SIGTERM, even if a hurry makes
/// the SIGKILL due before the escalation first runs).
#[derive(Debug)]
pub(crate) struct Deadline {
    due: watch::Receiver<Instant>,
    term: bool,
}

impl Hurry {
    /// The deadline of an escalation with `grace`, and its hurry handle.
    pub(crate) fn new(grace: Duration) -> (Hurry, Deadline) {
        let (tx, due) = watch::channel(Instant::now() + grace);
        let term = !grace.is_zero();
        (Hurry(tx), Deadline { due, term })
    }

    /// Make the SIGKILL due `grace` from now if that is sooner than it was.
    pub(crate) fn hurry(&self, grace: Duration) {
        let at = Instant::now() + grace;
        self.0.send_if_modified(|due| {
            let sooner = at < *due;
            if sooner {
                *due = at;
            }
            sooner
        });
    }
}

/// Run the escalation on `container` with `signal`, until it gives up;
/// the caller ends it (drops the future) once the container has ended.
/// Returns why it gave up: the SIGKILL could not be delivered (its
/// error), or the container outlived it by `kill_timeout`
/// ([`Error::StopFailed`]).
pub(crate) async fn escalate<F, Fut>(
    container: &str,
    mut deadline: Deadline,
    kill_timeout: Duration,
    mut signal: F,
) -> Error
where
    F: FnMut(StopSignal) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    if deadline.term {
        match signal(StopSignal::Term).await {
            Ok(()) => grace(&mut deadline.due).await,
            Err(e) => {
                tracing::warn!(container, error = %e, "SIGTERM failed: sending SIGKILL now");
            }
        }
    }
    tracing::debug!(container, "grace over: SIGKILL");
    if let Err(e) = signal(StopSignal::Kill).await {
        tracing::warn!(container, error = %e, "SIGKILL failed");
        return e;
    }
    tokio::time::sleep(kill_timeout).await;
    Error::StopFailed {
        container: container.to_string(),
        message: format!(
            "still running {} after SIGKILL",
            humantime::format_duration(kill_timeout)
        ),
    }
}

/// Wait until the deadline, following every [`Hurry`].
async fn grace(deadline: &mut watch::Receiver<Instant>) {
    loop {
        let due = *deadline.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep_until(due) => return,
            changed = deadline.changed() => {
                if changed.is_err() {
                    // No hurry can come any more.
                    return tokio::time::sleep_until(due).await;
                }
            }
        }
    }
}

/// A whole stop of `container` from outside its run (a backend's
/// [`Runtime::stop`](super::Runtime::stop)): [`escalate`] with `grace` and
/// [`KILL_TIMEOUT`], ended by `stopped` — the backend's future that
/// resolves once the container no longer runs (exited, removed, or never
/// there), or with the error that keeps it from knowing.
pub(crate) async fn stop<F, Fut, S>(
    container: &str,
    grace: Duration,
    signal: F,
    stopped: S,
) -> Result<(), Error>
where
    F: FnMut(StopSignal) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
    S: Future<Output = Result<(), Error>>,
{
    let (_hurry, deadline) = Hurry::new(grace);
    let escalation = escalate(container, deadline, KILL_TIMEOUT, signal);
    tokio::select! {
        biased;
        stopped = stopped => stopped,
        gave_up = escalation => Err(gave_up),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a signaller saw: each signal with the (virtual) time it came.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(StopSignal, Duration)>>>);

    impl Seen {
        fn signaller(
            &self,
            start: Instant,
            fail: Option<StopSignal>,
        ) -> impl FnMut(StopSignal) -> std::future::Ready<Result<(), Error>> {
            let seen = self.0.clone();
            move |sig| {
                seen.lock().unwrap().push((sig, start.elapsed()));
                std::future::ready(if Some(sig) == fail {
                    Err(Error::internal(format!("cannot {}", sig.name())))
                } else {
                    Ok(())
                })
            }
        }

        fn get(&self) -> Vec<(StopSignal, Duration)> {
            self.0.lock().unwrap().clone()
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn term_then_kill_at_the_end_of_the_grace_then_gives_up_after_kill_timeout() {
        let (start, seen) = (Instant::now(), Seen::default());
        let (_hurry, deadline) = Hurry::new(S(3));
        let err = escalate("c", deadline, S(5), seen.signaller(start, None)).await;
        assert_eq!(
            seen.get(),
            vec![(StopSignal::Term, S(0)), (StopSignal::Kill, S(3))]
        );
        assert_eq!(start.elapsed(), S(8));
        match err {
            Error::StopFailed { container, message } => {
                assert_eq!(container, "c");
                assert!(message.contains("after SIGKILL"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_grace_sends_only_the_kill() {
        let (start, seen) = (Instant::now(), Seen::default());
        let (_hurry, deadline) = Hurry::new(Duration::ZERO);
        escalate("c", deadline, S(1), seen.signaller(start, None)).await;
        assert_eq!(seen.get(), vec![(StopSignal::Kill, S(0))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hurry_brings_the_kill_forward_and_never_puts_it_off() {
        let (start, seen) = (Instant::now(), Seen::default());
        let (hurry, deadline) = Hurry::new(S(10));
        let escalation = escalate("c", deadline, S(1), seen.signaller(start, None));
        let hurried = async {
            tokio::time::sleep(S(2)).await;
            hurry.hurry(S(60)); // later: ignored
            hurry.hurry(S(3)); // due at 5 s instead of 10 s
            tokio::time::sleep(S(3600)).await;
        };
        tokio::select! {
            _ = escalation => {}
            () = hurried => unreachable!("the escalation gives up first"),
        }
        assert_eq!(
            seen.get(),
            vec![(StopSignal::Term, S(0)), (StopSignal::Kill, S(5))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_hurried_to_zero_before_it_ran_still_begins_with_its_term() {
        let (start, seen) = (Instant::now(), Seen::default());
        let (hurry, deadline) = Hurry::new(S(3600));
        hurry.hurry(Duration::ZERO);
        escalate("c", deadline, S(1), seen.signaller(start, None)).await;
        assert_eq!(
            seen.get(),
            vec![(StopSignal::Term, S(0)), (StopSignal::Kill, S(0))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_term_brings_the_kill_forward_and_a_failed_kill_is_the_outcome() {
        let (start, seen) = (Instant::now(), Seen::default());
        let (_hurry, deadline) = Hurry::new(S(10));
        escalate(
            "c",
            deadline,
            S(1),
            seen.signaller(start, Some(StopSignal::Term)),
        )
        .await;
        assert_eq!(
            seen.get(),
            vec![(StopSignal::Term, S(0)), (StopSignal::Kill, S(0))]
        );

        let (start, seen) = (Instant::now(), Seen::default());
        let (_hurry, deadline) = Hurry::new(S(2));
        let err = escalate(
            "c",
            deadline,
            S(60),
            seen.signaller(start, Some(StopSignal::Kill)),
        )
        .await;
        assert!(
            matches!(&err, Error::Internal { message } if message == "cannot KILL"),
            "{err:?}"
        );
        assert_eq!(start.elapsed(), S(2), "no wait after a failed SIGKILL");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_when_the_container_does_and_only_then() {
        let (start, seen) = (Instant::now(), Seen::default());
        // The container ends 1 s after its TERM: no KILL.
        let ended = tokio::time::sleep(S(1));
        let r = stop("c", S(10), seen.signaller(start, None), async {
            ended.await;
            Ok(())
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(seen.get(), vec![(StopSignal::Term, S(0))]);
        assert_eq!(start.elapsed(), S(1));

        // One that never ends: TERM, KILL after the grace, StopFailed
        // after KILL_TIMEOUT.
        let (start, seen) = (Instant::now(), Seen::default());
        let r = stop(
            "c",
            Duration::from_millis(300),
            seen.signaller(start, None),
            std::future::pending(),
        )
        .await;
        assert!(matches!(r, Err(Error::StopFailed { .. })), "{r:?}");
        assert_eq!(
            seen.get(),
            vec![
                (StopSignal::Term, S(0)),
                (StopSignal::Kill, Duration::from_millis(300))
            ]
        );
        assert_eq!(start.elapsed(), Duration::from_millis(300) + KILL_TIMEOUT);
    }
}
