//! Who a subscription keeps alive: an actor given as a `Recipient` lives
//! to see the end of the run; one given as a `WeakRecipient` stops when
//! the application drops its last address, and its subscription ends.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cldpd::messages::session::Subscribe;
use cldpd::runtime::{FaultRuntime, RunScript};
use cldpd::{Dispatcher, Event, SessionState, StartRequest, Subscriber};
use support::fault::*;
use tokio::sync::oneshot;

/// Records whether it has stopped, and hands over the terminal event.
struct Probe {
    stopped: Arc<AtomicBool>,
    terminal: Option<oneshot::Sender<Event>>,
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl Handler<Event> for Probe {
    type Result = ();
    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        if ev.is_terminal() {
            if let Some(tx) = self.terminal.take() {
                let _ = tx.send(ev);
            }
        }
    }
}

fn probe() -> (Addr<Probe>, Arc<AtomicBool>, oneshot::Receiver<Event>) {
    let stopped = Arc::new(AtomicBool::new(false));
    let (tx, rx) = oneshot::channel();
    let addr = Probe {
        stopped: stopped.clone(),
        terminal: Some(tx),
    }
    .start();
    (addr, stopped, rx)
}

#[actix::test]
async fn a_weak_subscriber_is_not_kept_alive_and_a_strong_one_is() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().hang());
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let s = d.start(StartRequest::prompt("web", "go")).await.unwrap();
    wait_state(&s, 10, "running", |st| {
        matches!(st, SessionState::Running { .. })
    })
    .await;

    let (strong, strong_stopped, strong_end) = probe();
    let (weak, weak_stopped, _weak_end) = probe();
    for sub in [
        Subscriber::from(strong.clone()),
        Subscriber::from(weak.downgrade()),
    ] {
        s.info()
            .addr
            .send(Subscribe {
                subscriber: sub,
                from_seq: 1,
            })
            .await
            .unwrap()
            .unwrap();
    }
    drop(strong);
    drop(weak);

    // The weak one stops once its last address is gone, the run going on.
    within(10, "the weak subscriber to stop", async {
        while !weak_stopped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(matches!(s.state(), SessionState::Running { .. }));

    // The strong one lives to receive the end of the run.
    s.stop(Some(Duration::ZERO)).await.unwrap();
    let end = within(10, "the strong subscriber's last event", strong_end)
        .await
        .expect("the strong subscriber got the terminal event");
    assert!(end.is_terminal());
    within(10, "the strong subscriber to stop after the run", async {
        while !strong_stopped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(rt.running().is_empty());
}

/// Busy in a future of its own (its thread blocked) while a run ends,
/// then counts what reaches it: the moment at which actix stops an actor
/// whose last address went away without handling what was queued.
struct Busy {
    entered: Option<oneshot::Sender<()>>,
    release: Option<std::sync::mpsc::Receiver<()>>,
    events: u64,
    /// `Ok((events, terminal seq))` at the terminal event, `Err(events)`
    /// when stopped without it.
    done: Option<oneshot::Sender<Result<(u64, u64), u64>>>,
}

impl Actor for Busy {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::ready(()).map(|(), act: &mut Self, _| {
            let _ = act.entered.take().expect("once").send(());
            let _ = act.release.take().expect("once").recv();
        }));
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Err(self.events));
        }
    }
}

impl Handler<Event> for Busy {
    type Result = ();
    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        self.events += 1;
        if ev.is_terminal() {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(Ok((self.events, ev.seq)));
            }
        }
    }
}

#[actix::test]
async fn an_actor_whose_only_address_is_the_subscription_handles_the_whole_run() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().stdout_lines(3).exit(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let (entered_tx, entered) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let (done_tx, done) = oneshot::channel();
    let arbiter = Arbiter::new();
    let busy = Busy::start_in_arbiter(&arbiter.handle(), move |_| Busy {
        entered: Some(entered_tx),
        release: Some(release_rx),
        events: 0,
        done: Some(done_tx),
    });
    within(20, "the subscriber busy", entered).await.unwrap();
    // The subscription holds the only address of the actor.
    let req = StartRequest::prompt("web", "go").subscribe(busy.recipient::<Event>());
    let s = d.start(req).await.unwrap();
    // Every event is queued in its mailbox (and, before the fix, the last
    // address of it dropped) while the actor is still busy.
    assert!(matches!(within(20, "the run", s.wait()).await, Ok(0)));
    release.send(()).unwrap();
    let got = within(20, "the subscriber's report", done).await.unwrap();
    match got {
        Ok((events, seq)) => assert_eq!(events, seq, "events were lost"),
        Err(n) => panic!("the subscriber was stopped after {n} events, without the terminal one"),
    }
    arbiter.stop();
    d.shutdown(Some(Duration::ZERO)).await.unwrap();
}

/// A weak subscription whose actor the application keeps alive gets the
/// whole run, the terminal event last, and does not keep the actor alive
/// afterwards (the session's hold on it ends with the terminal event).
#[actix::test]
async fn a_weak_subscriber_kept_alive_by_the_application_gets_the_end_of_the_run() {
    let dirs = Dirs::new(&[("web", None)]);
    let rt = FaultRuntime::new();
    rt.script_pod("web", RunScript::new().stdout_lines(3).exit(0));
    let d = Dispatcher::new(dirs.settings(), rt.clone());
    let (weak, weak_stopped, weak_end) = probe();
    let req = StartRequest::prompt("web", "go").subscribe(Subscriber::from(weak.downgrade()));
    let s = d.start(req).await.unwrap();
    assert!(matches!(within(20, "the run", s.wait()).await, Ok(0)));
    let end = within(10, "the weak subscriber's last event", weak_end)
        .await
        .expect("the weak subscriber got the terminal event");
    assert!(end.is_terminal());
    assert!(!weak_stopped.load(Ordering::SeqCst));
    drop(weak);
    within(
        10,
        "the weak subscriber to stop once the application lets go",
        async {
            while !weak_stopped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    d.shutdown(Some(Duration::ZERO)).await.unwrap();
}
