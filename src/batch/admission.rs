//! The batch's admission governor: a budget in US dollars, and a back-off
//! while the API reports rate limits.
//!
//! One task per batch watches every job's events:
//!
//! - each `agent_result` adds its cost to the spent total; once the total
//!   reaches the budget, the dispatcher holds admissions for good and the
//!   jobs still queued are stopped before they start (reported
//!   `not_started`). Jobs already running go on: their cost is counted,
//!   so the total can end above the budget by what they spend.
//! - an `agent_api_error` that says `rate_limited`, or status 529
//!   (overloaded), holds admissions for a back-off (doubling from `base`
//!   up to `max` while reports keep coming; a successful result resets
//!   it). Running jobs go on; queued ones wait until the hold ends.
//!
//! Holds go through [`HoldAdmissions`], so they apply to the dispatcher as
//! a whole (the CLI gives each batch its own). The hold is lifted when
//! every job has ended.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;

use crate::event::EventKind;
use crate::facade::{Dispatcher, Session};
use crate::messages::dispatcher::HoldAdmissions;

/// Default first back-off after a rate limit is reported.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);

/// Default longest back-off.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long "for good" is (a budget's hold): longer than any batch.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What the governor is doing, for progress lines and reports
/// ([`Batch::admission`](super::Batch::admission)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admission {
    /// Admissions are held for a rate-limit back-off until then.
    pub held_until: Option<Instant>,
    /// Why (the last report: `rate_limited (HTTP 429) in web-0a1b2c3d`).
    pub reason: Option<String>,
    /// Back-offs started so far.
    pub pauses: u32,
    /// Cost of every agent result so far, in US dollars.
    pub spent_usd: f64,
    /// The budget, when there is one.
    pub budget_usd: Option<f64>,
    /// True once the spent total reached the budget: nothing more starts.
    pub budget_reached: bool,
}

impl Admission {
    /// The back-off still to wait, if any.
    pub fn held_for(&self) -> Option<Duration> {
        self.held_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

/// The back-off's bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: DEFAULT_BACKOFF,
            max: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// Shared between the governor task and the batch.
#[derive(Debug)]
pub(super) struct Governor {
    pub state: watch::Sender<Admission>,
    /// Sessions stopped because the budget was spent before they started.
    pub not_started: Mutex<HashSet<String>>,
}

impl Governor {
    pub fn new(budget_usd: Option<f64>) -> Arc<Self> {
        let (state, _) = watch::channel(Admission {
            budget_usd,
            ..Admission::default()
        });
        Arc::new(Governor {
            state,
            not_started: Mutex::new(HashSet::new()),
        })
    }

    pub fn was_not_started(&self, session: &str) -> bool {
        self.not_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(session)
    }

    /// Watch `sessions` until every one has ended (spawned on the current
    /// actix arbiter).
    pub fn spawn(
        self: &Arc<Self>,
        dispatcher: Dispatcher,
        sessions: Vec<Session>,
        backoff: Backoff,
    ) {
        let me = self.clone();
        actix::spawn(async move { me.run(dispatcher, sessions, backoff).await });
    }

    async fn run(&self, dispatcher: Dispatcher, sessions: Vec<Session>, backoff: Backoff) {
        let mut events = stream::select_all(sessions.iter().map(|s| s.events().boxed()));
        let mut current = Duration::ZERO;
        let mut held = false;
        while let Some(ev) = events.next().await {
            match &ev.kind {
                EventKind::AgentResult(boxed) => {
                    let crate::event::AgentResult {
                        cost_usd, is_error, ..
                    } = &**boxed;
                    if !is_error {
                        current = Duration::ZERO;
                    }
                    let reached = {
                        let mut reached = false;
                        self.state.send_modify(|a| {
                            a.spent_usd += cost_usd.0;
                            if !a.budget_reached && a.budget_usd.is_some_and(|b| a.spent_usd >= b) {
                                a.budget_reached = true;
                                a.held_until = None;
                                reached = true;
                            }
                        });
                        reached
                    };
                    if reached {
                        let a = self.state.borrow().clone();
                        tracing::warn!(
                            spent_usd = a.spent_usd,
                            budget_usd = a.budget_usd,
                            "the batch's budget is spent; no more jobs start"
                        );
                        held = true;
                        self.close(&dispatcher, &sessions).await;
                    }
                }
                // A run queued after the budget was spent (its start was
                // still on its way): it never starts either.
                EventKind::Queued { .. } if self.state.borrow().budget_reached => {
                    self.close(&dispatcher, &sessions).await;
                }
                EventKind::AgentApiError(e)
                    if e.code == "rate_limited" || e.status == Some(529) =>
                {
                    let (code, status) = (&e.code, e.status);
                    if self.state.borrow().budget_reached {
                        continue;
                    }
                    current = if current.is_zero() {
                        backoff.base
                    } else {
                        (current * 2).min(backoff.max)
                    };
                    let until = Instant::now() + current;
                    let reason = format!(
                        "{code}{} in {}",
                        status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
                        ev.session
                    );
                    tracing::info!(
                        backoff_ms = current.as_millis() as u64,
                        reason,
                        "rate limit reported: the batch holds its admissions"
                    );
                    held = true;
                    let _ = dispatcher
                        .addr()
                        .send(HoldAdmissions { until: Some(until) })
                        .await;
                    self.state.send_modify(|a| {
                        a.held_until = Some(until);
                        a.reason = Some(reason);
                        a.pauses += 1;
                    });
                }
                _ => {}
            }
        }
        if held {
            let _ = dispatcher.addr().send(HoldAdmissions { until: None }).await;
            self.state.send_modify(|a| a.held_until = None);
        }
    }

    /// Hold admissions for good and stop every job still queued.
    async fn close(&self, dispatcher: &Dispatcher, sessions: &[Session]) {
        let queued: HashSet<String> = match dispatcher
            .addr()
            .send(HoldAdmissions {
                until: Some(Instant::now() + FOREVER),
            })
            .await
        {
            Ok(q) => q.into_iter().collect(),
            Err(_) => return,
        };
        let stop: Vec<&Session> = {
            let mut not_started = self.not_started.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .iter()
                .filter(|s| queued.contains(s.id()) && not_started.insert(s.id().to_string()))
                .collect()
        };
        join_all(stop.into_iter().map(|s| s.stop(Some(Duration::ZERO)))).await;
    }
}
