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
