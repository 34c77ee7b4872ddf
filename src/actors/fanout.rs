//! Fan-out of one session's events to its subscribers: lossless, in order,
//! bounded in memory, and never blocked by a subscriber.
//!
//! Each session owns a `Hub` (on the session's own thread). Publishing an
//! event appends it to the session log and offers it to every subscriber
//! with a non-blocking `try_send`:
//!
//! - accepted: the subscriber is *live* and the event is gone from cldpd's
//!   hands;
//! - mailbox or channel full: the subscriber becomes *lagging*. A feeder task
//!   takes over its delivery from that event on, awaiting room in its
//!   mailbox. The events it still needs are kept in a bounded window; older
//!   ones are read back from the session log on disk. When the feeder has
//!   caught up, the subscriber is live again;
//! - closed (actor stopped, stream dropped): the subscriber is removed.
//!
//! So a slow, stuck or dead subscriber costs at most the window
//! (`FanoutLimits`) plus what its own mailbox holds, never blocks the
//! session, other subscribers, `stop`, `wait` or shutdown, and still gets
//! every event in order when it reads again.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use actix::dev::SendError;
use actix::{Actor, Addr, Handler, Recipient, WeakAddr, WeakRecipient};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::event::{Event, EventBatch, EventKind};
use crate::log::{LogReader, LogWriter};
use crate::state::{DropOffThread, SharedLog};

/// Who receives a session's events.
///
/// Any actor: `Subscriber::from(addr.recipient())`. Or a bounded channel,
/// for code that is not an actor (the async facade's event streams).
///
/// Who keeps whom alive (a decision, not an accident):
///
/// - [`Subscriber::Actor`] holds a strong `Recipient`: the session keeps
///   the actor alive until the run's terminal event has been *handled*
///   (not merely queued: actix may stop an actor whose last address goes
///   away without handling what was queued, so the terminal event goes
///   with a `send` that waits for the handler), like any holder of its
///   address. That is what `StartRequest::subscribe`
///   callers rely on when they drop their own `Addr` after the start (the
///   README's `Printer` does): the actor lives to see the end of the run.
/// - [`Subscriber::Weak`] holds a `WeakRecipient`: the session never keeps
///   the actor alive. When the application drops its last address the
///   actor stops, and the subscription ends with it. Use it for an actor
///   whose life the application manages (a UI pane, a per-connection
///   actor) — `Subscriber::from(addr.downgrade())`.
/// - [`Subscriber::Channel`] holds the `Sender`, which keeps nothing alive:
///   the receiver belongs to whoever reads it (the facade's
///   [`EventStream`](crate::EventStream)), and dropping the receiver ends
///   the subscription. The facade needs nothing more.
///
/// The `Batches` forms take the same events, in the same order, packed
/// as [`EventBatch`] messages (one per burst of output instead of one per
/// event): the cheaper choice for a subscriber of fast runs. Build them
/// from the variant, which fixes the message type:
/// `Subscriber::Batches(addr.recipient())`.
///
/// Tip: give a subscriber actor a larger mailbox
/// (`ctx.set_mailbox_capacity(1024)` in `started`); with actix's default of
/// 16 a fast run makes it lag (lossless, but through the disk).
#[derive(Clone)]
pub enum Subscriber {
    /// An actor, kept alive by the subscription until the run ends.
    Actor(Recipient<Event>),
    /// An actor the subscription does not keep alive.
    Weak(WeakRecipient<Event>),
    /// A bounded channel.
    Channel(mpsc::Sender<Event>),
    /// An actor that takes [`EventBatch`]es, kept alive like
    /// [`Subscriber::Actor`].
    Batches(Recipient<EventBatch>),
    /// An actor that takes [`EventBatch`]es, not kept alive (like
    /// [`Subscriber::Weak`]).
    WeakBatches(WeakRecipient<EventBatch>),
    /// A bounded channel of [`EventBatch`]es (its capacity counts
    /// batches).
    BatchChannel(mpsc::Sender<EventBatch>),
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subscriber::Actor(_) => "Subscriber::Actor",
            Subscriber::Weak(_) => "Subscriber::Weak",
            Subscriber::Channel(_) => "Subscriber::Channel",
            Subscriber::Batches(_) => "Subscriber::Batches",
            Subscriber::WeakBatches(_) => "Subscriber::WeakBatches",
            Subscriber::BatchChannel(_) => "Subscriber::BatchChannel",
        })
    }
}

impl From<Recipient<Event>> for Subscriber {
    fn from(r: Recipient<Event>) -> Self {
        Subscriber::Actor(r)
    }
}

impl<A> From<Addr<A>> for Subscriber
where
    A: Actor + Handler<Event>,
    A::Context: actix::dev::ToEnvelope<A, Event>,
{
    fn from(addr: Addr<A>) -> Self {
        Subscriber::Actor(addr.recipient())
    }
}

impl From<WeakRecipient<Event>> for Subscriber {
    fn from(r: WeakRecipient<Event>) -> Self {
        Subscriber::Weak(r)
    }
}

impl<A> From<WeakAddr<A>> for Subscriber
where
    A: Actor + Handler<Event>,
    A::Context: actix::dev::ToEnvelope<A, Event>,
{
    fn from(addr: WeakAddr<A>) -> Self {
        Subscriber::Weak(addr.recipient())
    }
}

impl From<mpsc::Sender<Event>> for Subscriber {
    fn from(tx: mpsc::Sender<Event>) -> Self {
        Subscriber::Channel(tx)
    }
}

/// What became of events offered to a subscriber without waiting.
enum Offered {
    /// All accepted.
    All,
    /// Its mailbox or channel is full: these (the first one refused and
    /// all after it) were not accepted.
    Full(Vec<Event>),
    /// It is gone.
    Closed,
}

/// Why one `try_send` did not take its message.
enum Refused<M> {
    Full(M),
    Closed,
}

fn from_actix<M>(e: SendError<M>) -> Refused<M> {
    match e {
        SendError::Full(m) => Refused::Full(m),
        SendError::Closed(_) => Refused::Closed,
    }
}

fn from_channel<M>(e: mpsc::error::TrySendError<M>) -> Refused<M> {
    match e {
        mpsc::error::TrySendError::Full(m) => Refused::Full(m),
        mpsc::error::TrySendError::Closed(_) => Refused::Closed,
    }
}

/// Offer `events` one message each, in order, until one is refused.
fn one_by_one(
    events: Vec<Event>,
    mut try_send: impl FnMut(Event) -> Result<(), Refused<Event>>,
) -> Offered {
    let mut it = events.into_iter();
    while let Some(ev) = it.next() {
        match try_send(ev) {
            Ok(()) => {}
            Err(Refused::Full(ev)) => {
                let mut rest = Vec::with_capacity(it.len() + 1);
                rest.push(ev);
                rest.extend(it);
                return Offered::Full(rest);
            }
            Err(Refused::Closed) => return Offered::Closed,
        }
    }
    Offered::All
}

/// Offer `events` as one batch.
fn as_batch(
    events: Vec<Event>,
    try_send: impl FnOnce(EventBatch) -> Result<(), Refused<EventBatch>>,
) -> Offered {
    match try_send(EventBatch(events)) {
        Ok(()) => Offered::All,
        Err(Refused::Full(batch)) => Offered::Full(batch.0),
        Err(Refused::Closed) => Offered::Closed,
    }
}

impl Subscriber {
    /// Offer `events` (not empty, in seq order) without waiting.
    fn try_deliver(&self, events: Vec<Event>) -> Offered {
        match self {
            Subscriber::Actor(r) => one_by_one(events, |ev| r.try_send(ev).map_err(from_actix)),
            Subscriber::Weak(w) => match w.upgrade() {
                Some(r) => one_by_one(events, |ev| r.try_send(ev).map_err(from_actix)),
                None => Offered::Closed,
            },
            Subscriber::Channel(tx) => {
                one_by_one(events, |ev| tx.try_send(ev).map_err(from_channel))
            }
            Subscriber::Batches(r) => as_batch(events, |b| r.try_send(b).map_err(from_actix)),
            Subscriber::WeakBatches(w) => match w.upgrade() {
                Some(r) => as_batch(events, |b| r.try_send(b).map_err(from_actix)),
                None => Offered::Closed,
            },
            Subscriber::BatchChannel(tx) => {
                as_batch(events, |b| tx.try_send(b).map_err(from_channel))
            }
        }
    }

    /// Whether this is an actor (its address may be the last one).
    fn is_actor(&self) -> bool {
        !matches!(self, Subscriber::Channel(_) | Subscriber::BatchChannel(_))
    }

    /// Deliver `events` (not empty, in seq order), waiting for room.
    /// `Err` when the subscriber is gone.
    ///
    /// An actor gets the run's terminal event with a `send` that resolves
    /// once the actor has *handled* it, and the subscription's address is
    /// held until then. Queued is not enough: actix stops an actor whose
    /// last address is dropped between two polls of its mailbox without
    /// handling what was queued in between (its context checks for a
    /// connected mailbox after running the actor's futures, not after
    /// draining the mailbox), so a terminal event queued with `try_send`
    /// just before the session let go of the address could be lost, and
    /// the subscriber would never see the end of the run (seen once in 85
    /// runs of a test of a thousand sessions).
    async fn deliver(&self, events: Vec<Event>) -> Result<(), ()> {
        if self.is_actor() && events.last().is_some_and(Event::is_terminal) {
            return self.deliver_final(events).await;
        }
        self.deliver_all(events).await
    }

    /// [`deliver`](Self::deliver) for a batch that ends with the terminal
    /// event, to an actor.
    async fn deliver_final(&self, mut events: Vec<Event>) -> Result<(), ()> {
        if self.takes_batches() {
            return self.send_batch(events).await;
        }
        let last = events.pop().expect("ends with the terminal event");
        if !events.is_empty() {
            self.deliver_all(events).await?;
        }
        self.send_event(last).await
    }

    /// [`deliver`](Self::deliver) without the care for the terminal event.
    async fn deliver_all(&self, mut events: Vec<Event>) -> Result<(), ()> {
        loop {
            let mut rest = match self.try_deliver(events) {
                Offered::All => return Ok(()),
                Offered::Closed => return Err(()),
                Offered::Full(rest) => rest,
            };
            // Wait for room: a batch subscriber's for the whole rest, an
            // event subscriber's for the first event refused (the others
            // are offered again without waiting).
            if self.takes_batches() {
                return self.send_batch(rest).await;
            }
            self.send_event(rest.remove(0)).await?;
            if rest.is_empty() {
                return Ok(());
            }
            events = rest;
        }
    }

    /// Whether this subscriber takes [`EventBatch`] messages.
    fn takes_batches(&self) -> bool {
        matches!(
            self,
            Subscriber::Batches(_) | Subscriber::WeakBatches(_) | Subscriber::BatchChannel(_)
        )
    }

    /// Send `events` as one batch, waiting for room (and, for an actor,
    /// until it has handled them: its mailbox has drained to here).
    async fn send_batch(&self, events: Vec<Event>) -> Result<(), ()> {
        let batch = EventBatch(events);
        match self {
            Subscriber::Batches(r) => r.send(batch).await.map_err(|_| ()),
            // Strong only while the batch waits.
            Subscriber::WeakBatches(w) => w.upgrade().ok_or(())?.send(batch).await.map_err(|_| ()),
            Subscriber::BatchChannel(tx) => tx.send(batch).await.map_err(|_| ()),
            _ => unreachable!("an event subscriber takes no batches"),
        }
    }

    /// Send one event, waiting for room (and, for an actor, until it has
    /// handled it).
    async fn send_event(&self, ev: Event) -> Result<(), ()> {
        match self {
            Subscriber::Actor(r) => r.send(ev).await.map_err(|_| ()),
            // Strong only while the event waits.
            Subscriber::Weak(w) => w.upgrade().ok_or(())?.send(ev).await.map_err(|_| ()),
            Subscriber::Channel(tx) => tx.send(ev).await.map_err(|_| ()),
            _ => unreachable!("a batch subscriber takes no single events"),
        }
    }
}

/// Identifies a subscription within its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SubscriptionId(pub u64);

/// Memory limits of a session's lag window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutLimits {
    /// Most events kept in memory for lagging subscribers.
    pub window_events: usize,
    /// Most bytes (approximate) kept in memory for lagging subscribers.
    pub window_bytes: usize,
}

impl Default for FanoutLimits {
    /// 16,384 events or 4 MiB. At a million lines a second the event
    /// limit is 16 ms of output: enough to ride out a subscriber thread
    /// that the OS did not schedule for a few time slices, without the
    /// catch-up going through the disk.
    fn default() -> Self {
        FanoutLimits {
            window_events: 16384,
            window_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Memory for lagging subscribers shared by every session of one
/// dispatcher ([`Settings::lag_budget`](crate::Settings::lag_budget)).
/// Each session's lag window charges the events it holds here; while the
/// budget is spent, windows give up their oldest events (all of them if
/// need be) and their lagging subscribers are fed from the session log
/// instead: so a thousand sessions with a stuck subscriber each hold at
/// most the budget between them (give or take one event each), not a
/// thousand windows.
#[derive(Debug, Clone)]
pub(crate) struct LagBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl LagBudget {
    pub(crate) fn new(limit: usize) -> Self {
        LagBudget(Arc::new(BudgetInner {
            used: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }))
    }

    fn charge(&self, bytes: usize) {
        self.0
            .used
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.0
            .used
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn spent(&self) -> bool {
        self.0.used.load(std::sync::atomic::Ordering::Relaxed) > self.0.limit
    }

    /// Less than an eighth of it is used.
    fn mostly_free(&self) -> bool {
        self.0.used.load(std::sync::atomic::Ordering::Relaxed) < self.0.limit / 8
    }
}

/// What a hub holds, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FanoutStats {
    /// Subscribers attached.
    pub subscribers: usize,
    /// Of which lagging (fed by a feeder task).
    pub lagging: usize,
    /// Events held in the lag window now.
    pub window_events: usize,
    /// Approximate bytes held in the lag window now.
    pub window_bytes: usize,
    /// Highest `window_bytes` seen.
    pub peak_window_bytes: usize,
    /// Times a subscriber fell behind.
    pub lag_episodes: u64,
    /// Events a feeder read back from the log.
    pub replayed_from_log: u64,
    /// Bytes held by the log writer (buffer + index).
    pub log_memory: usize,
    /// Bytes handed to the state directory's writer thread and not yet
    /// written (bounded: see [`crate::log`]).
    pub log_backlog: usize,
}

struct Slot {
    id: u64,
    /// `Some` while live; a lagging subscriber's sink is owned by its feeder.
    sink: Option<Subscriber>,
    /// Next seq the feeder delivers (meaningful while lagging).
    cursor: u64,
}

/// One session's fan-out state. Lives on the session's thread, shared
/// (`Rc<RefCell<_>>`) by the session actor and its feeder tasks.
pub(crate) struct Hub {
    head: u64,
    terminal: bool,
    window: VecDeque<Event>,
    /// Seq of `window[0]`.
    window_base: u64,
    stats: FanoutStats,
    limits: FanoutLimits,
    /// Shared with the dispatcher's other sessions; charged with
    /// `stats.window_bytes`.
    budget: LagBudget,
    log: LogWriter,
    slots: Vec<Slot>,
    next_id: u64,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.budget.release(self.stats.window_bytes);
    }
}

pub(crate) type SharedHub = Rc<RefCell<Hub>>;

/// About the bytes of an event's line in the log (for the log buffer's
/// reservation).
fn approx_size(ev: &Event) -> usize {
    128 + ev.line().map_or(0, str::len)
}

/// The memory an event held in a lag window keeps allocated, as charged
/// to the window's limits and the dispatcher's [`LagBudget`]: its slot in
/// the window, its shared block (two reference counts and the
/// [`EventData`](crate::EventData)), its line's buffer, and 16 bytes of
/// the allocator's own per block. (The window holds the last reference
/// of most of them: the subscribers that lag are the ones that have not
/// taken theirs.) An 80-byte output line is charged 240 bytes on x86-64
/// (312 before the agent variants of [`EventKind`](crate::EventKind) were
/// boxed; a heap profile of a lagging fan-out then measured about 300 per
/// event, where the earlier estimate of 128 + the line (208) let a budget
/// of 64 MiB hold about 1.5 times that).
fn held_size(ev: &Event) -> usize {
    const BLOCK: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<crate::EventData>();
    const MALLOC: usize = 16;
    std::mem::size_of::<Event>() + BLOCK + MALLOC + ev.line().map_or(0, |l| l.len() + MALLOC)
}

impl Hub {
    pub(crate) fn new(log: LogWriter, limits: FanoutLimits, budget: LagBudget) -> SharedHub {
        Rc::new(RefCell::new(Hub {
            head: 0,
            terminal: false,
            window: VecDeque::new(),
            window_base: 1,
            stats: FanoutStats::default(),
            limits,
            budget,
            log,
            slots: Vec::new(),
            next_id: 0,
        }))
    }

    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn stats(&self) -> FanoutStats {
        FanoutStats {
            subscribers: self.slots.len(),
            window_events: self.window.len(),
            log_memory: self.log.memory(),
            log_backlog: self.log.backlog(),
            ..self.stats
        }
    }

    /// Hand buffered log lines over to the state thread (never blocks).
    pub(crate) fn flush_log(&mut self) {
        self.log.flush()
    }

    /// The owner of the state directory this session's log is in.
    pub(crate) fn store(&self) -> crate::state::StateStore {
        self.log.store().clone()
    }

    /// Resolves once every event up to `seq` is settled in the log
    /// (written, or known to be missing).
    pub(crate) fn log_settled(&self, seq: u64) -> impl std::future::Future<Output = ()> + 'static {
        let store = self.log.store().clone();
        let shared = self.log.shared().clone();
        async move { crate::log::settled(&store, &shared, seq).await }
    }

    /// Whether the runner may read on (see [`crate::log::has_room`]).
    pub(crate) fn log_has_room(&self) -> bool {
        crate::log::has_room(self.log.shared())
    }

    /// Wait until the log's backlog is down to half its limit (see
    /// [`crate::log::MAX_BACKLOG`]).
    pub(crate) fn log_room(&self) -> impl std::future::Future<Output = ()> + 'static {
        let store = self.log.store().clone();
        let shared = self.log.shared().clone();
        async move { crate::log::room(&store, &shared).await }
    }
}

/// Add a subscriber that wants every event from `from_seq` on.
pub(crate) fn subscribe(hub: &SharedHub, sink: Subscriber, from_seq: u64) -> SubscriptionId {
    let mut h = hub.borrow_mut();
    let id = h.next_id;
    h.next_id += 1;
    let from = from_seq.max(1);
    if h.terminal && from > h.head {
        // Nothing left to deliver: dropping the sink ends a channel stream.
        return SubscriptionId(id);
    }
    if h.slots.capacity() == 0 {
        // Most sessions have one subscriber: no room for four.
        h.slots.reserve_exact(1);
    }
    if from > h.head {
        h.slots.push(Slot {
            id,
            sink: Some(sink),
            cursor: from,
        });
    } else {
        h.slots.push(Slot {
            id,
            sink: None,
            cursor: from,
        });
        h.stats.lagging += 1;
        h.stats.lag_episodes += 1;
        drop(h);
        actix::spawn(feed(hub.clone(), id, sink, from));
    }
    SubscriptionId(id)
}

/// Remove a subscriber (its feeder, if any, notices and ends).
pub(crate) fn unsubscribe(hub: &SharedHub, id: SubscriptionId) {
    let mut h = hub.borrow_mut();
    if let Some(i) = h.slots.iter().position(|s| s.id == id.0) {
        let slot = h.slots.remove(i);
        if slot.sink.is_none() {
            h.stats.lagging -= 1;
        }
        h.trim_window();
    }
}

/// Log and deliver one event. Must be called in seq order.
pub(crate) fn publish(hub: &SharedHub, ev: Event) {
    publish_all(hub, vec![ev]);
}

/// Log and deliver events, in seq order (only the last may be terminal).
///
/// The whole batch is appended to the log first, then offered to each
/// subscriber in turn, all of it before the next one. A subscriber on
/// another thread is then woken about once per batch rather than once per
/// event (each wake-up of a parked thread is a system call on both sides,
/// and was the largest single cost of a fast run).
pub(crate) fn publish_all(hub: &SharedHub, events: Vec<Event>) {
    let Some(last) = events.last() else { return };
    let last_seq = last.seq;
    let terminal = last.is_terminal();
    let mut spawn: Vec<(u64, Subscriber, u64)> = Vec::new();
    // Actors getting their last batch: see `Subscriber::deliver`.
    let mut finals: Vec<(Subscriber, Vec<Event>)> = Vec::new();
    {
        let mut h = hub.borrow_mut();
        let h = &mut *h;
        let bytes: usize = events.iter().map(approx_size).sum();
        h.log.reserve(bytes);
        for ev in &events {
            h.log.append(ev);
        }
        h.head = last_seq;
        // The batch, for the subscribers still to be served and the lag
        // window. The last live subscriber takes it (no copy of the
        // vector) when no lagging one needs it afterwards; if that one
        // then lags, it hands back what it refused, which is all the
        // window needs.
        let mut kept = Some(events);
        let mut live_left = h.slots.iter().filter(|s| s.sink.is_some()).count();
        let mut i = 0;
        while i < h.slots.len() {
            let Some(sink) = &h.slots[i].sink else {
                i += 1;
                continue;
            };
            live_left -= 1;
            let take = live_left == 0 && h.stats.lagging == 0;
            let batch = if take {
                kept.take().expect("kept until taken")
            } else {
                kept.clone().expect("kept until taken")
            };
            if terminal && sink.is_actor() {
                let sink = h.slots.swap_remove(i).sink.expect("live slot");
                finals.push((sink, batch));
                continue;
            }
            match sink.try_deliver(batch) {
                Offered::All => {
                    if terminal {
                        // Everything delivered, nothing follows: release
                        // the sink now.
                        h.slots.swap_remove(i);
                        continue;
                    }
                }
                Offered::Full(rest) => {
                    let slot = &mut h.slots[i];
                    let cursor = rest[0].seq;
                    slot.cursor = cursor;
                    let sink = slot.sink.take().expect("live slot");
                    spawn.push((slot.id, sink, cursor));
                    h.stats.lagging += 1;
                    h.stats.lag_episodes += 1;
                    if take {
                        kept = Some(rest);
                    }
                }
                Offered::Closed => {
                    h.slots.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        if terminal {
            h.terminal = true;
        }
        if h.stats.lagging > 0 {
            // Feeders need the events from their cursor on.
            let needed = h
                .slots
                .iter()
                .filter(|s| s.sink.is_none())
                .map(|s| s.cursor)
                .min()
                .unwrap_or(u64::MAX);
            for ev in kept.expect("kept while a subscriber lags") {
                if h.window.is_empty() {
                    if ev.seq < needed {
                        continue;
                    }
                    h.window_base = ev.seq;
                }
                let size = held_size(&ev);
                h.stats.window_bytes += size;
                h.budget.charge(size);
                h.window.push_back(ev);
                h.stats.peak_window_bytes = h.stats.peak_window_bytes.max(h.stats.window_bytes);
                h.trim_window();
            }
        }
    }
    for (id, sink, cursor) in spawn {
        actix::spawn(feed(hub.clone(), id, sink, cursor));
    }
    for (sink, batch) in finals {
        deliver_final(sink, batch);
    }
}

/// Hand an actor subscriber its last batch (ending with the terminal
/// event; see [`Subscriber::deliver`]). Usually all of it goes at once:
/// the events before the terminal one with `try_send`, the terminal one
/// with a `send` whose reply says it was handled, and a small task only
/// holds the address until that reply. (The whole `deliver` future as a
/// task per ended run is large enough that its allocation made glibc
/// consolidate its free chunks each time: stopping 10,000 runs spent a
/// tenth of its time there.)
fn deliver_final(sink: Subscriber, mut batch: Vec<Event>) {
    let send_last = |r: Recipient<Event>, last: Event| {
        let reply = r.send(last);
        actix::spawn(async move {
            let _ = reply.await;
            drop(r);
        });
    };
    if !sink.takes_batches() {
        let last = batch.pop().expect("ends with the terminal event");
        let before = if batch.is_empty() {
            Offered::All
        } else {
            sink.try_deliver(batch)
        };
        match (before, sink) {
            (Offered::All, Subscriber::Actor(r)) => return send_last(r, last),
            (Offered::All, Subscriber::Weak(w)) => {
                if let Some(r) = w.upgrade() {
                    send_last(r, last);
                }
                return;
            }
            (Offered::Closed, _) => return,
            (Offered::All, sink) => spawn_deliver(sink, vec![last]),
            (Offered::Full(mut rest), sink) => {
                rest.push(last);
                spawn_deliver(sink, rest);
            }
        }
        return;
    }
    spawn_deliver(sink, batch);
}

fn spawn_deliver(sink: Subscriber, batch: Vec<Event>) {
    actix::spawn(async move {
        let _ = sink.deliver(batch).await;
    });
}

impl Hub {
    /// How many events a feeder takes at a time now.
    fn feed_chunk(&self) -> usize {
        if self.budget.spent() {
            FEED_CHUNK_SPENT
        } else {
            FEED_CHUNK
        }
    }

    /// The same for a chunk read from the log: each is a round trip to a
    /// blocking-pool thread, so more events at a time while the budget is
    /// mostly free (a few lagging subscribers), not when many lag.
    fn log_chunk(&self) -> usize {
        if self.budget.mostly_free() {
            FEED_LOG_CHUNK
        } else {
            self.feed_chunk()
        }
    }

    /// Drop window events no lagging subscriber needs, and events beyond
    /// the limits (those are read back from the log); only events already
    /// on disk leave memory.
    fn trim_window(&mut self) {
        if self.stats.lagging == 0 {
            self.window.clear();
            self.window_base = self.head + 1;
            self.budget.release(self.stats.window_bytes);
            self.stats.window_bytes = 0;
            return;
        }
        let min_cursor = self
            .slots
            .iter()
            .filter(|s| s.sink.is_none())
            .map(|s| s.cursor)
            .min()
            .unwrap_or(self.head + 1);
        while let Some(front) = self.window.front() {
            let over = self.window.len() > self.limits.window_events
                || self.stats.window_bytes > self.limits.window_bytes
                || self.budget.spent();
            if front.seq >= min_cursor && !over {
                break;
            }
            if front.seq > self.log.handed_seq() {
                // Handed over, it is the state thread's: written, or
                // recorded as missing (the feeder then says so).
                self.log.flush();
            }
            let ev = self.window.pop_front().expect("front exists");
            let size = held_size(&ev);
            self.stats.window_bytes -= size;
            self.budget.release(size);
            self.window_base = ev.seq + 1;
        }
    }
}

/// Most events a feeder takes from the window or the log at a time.
const FEED_CHUNK: usize = 256;

/// Most events a feeder reads from the log at a time (on a blocking-pool
/// thread) while less than an eighth of the lag budget is used.
const FEED_LOG_CHUNK: usize = 1024;

/// The same while the dispatcher's lag budget is spent: what a feeder
/// holds while it waits for room is outside the budget, and a thousand
/// feeders hold a thousand chunks. (Measured on the lagging 1000 × 1000
/// fan-out, mailbox 16: peak RSS unchanged at 139 MiB, lines/s 0.33-0.34 M
/// against 0.29-0.30 M with 256, two single runs each; BENCHMARKS.md.)
const FEED_CHUNK_SPENT: usize = 16;

/// A feeder's read buffer for the session log: a chunk of 256 output
/// events is about 38 KB of log, and a thousand lagging subscribers have
/// a thousand readers open (at 64 KiB each, they held 62 MB at the peak
/// of a 1000 × 1000 fan-out whose subscribers lagged, heaptrack).
const FEED_READ_BUFFER: usize = 8 * 1024;

enum Next {
    Deliver(Vec<Event>),
    FromLog,
    Caught,
    Done,
}

/// Deliver to one lagging subscriber until it has caught up (it is then
/// live again) or the stream is over.
async fn feed(hub: SharedHub, id: u64, sink: Subscriber, mut cursor: u64) {
    // The reader and the seq it is at (its file is closed off-thread).
    let mut reader: Option<DropOffThread<(LogReader, u64)>> = None;
    loop {
        let next = {
            let mut h = hub.borrow_mut();
            let Some(slot) = h.slots.iter().position(|s| s.id == id) else {
                return; // unsubscribed
            };
            h.slots[slot].cursor = cursor;
            h.trim_window();
            if cursor > h.head {
                if h.terminal {
                    Next::Done
                } else {
                    Next::Caught
                }
            } else if cursor >= h.window_base
                && ((cursor - h.window_base) as usize) < h.window.len()
            {
                let from = (cursor - h.window_base) as usize;
                let to = h.window.len().min(from + h.feed_chunk());
                Next::Deliver(h.window.range(from..to).cloned().collect())
            } else {
                // Behind the window: from the log, once the state thread
                // has settled it.
                if cursor > h.log.handed_seq() {
                    h.log.flush();
                }
                Next::FromLog
            }
        };
        match next {
            Next::Deliver(events) => {
                let n = events.len() as u64;
                if sink.deliver(events).await.is_err() {
                    return remove(&hub, id);
                }
                cursor += n;
            }
            Next::FromLog => {
                let (shared, store, chunk) = {
                    let h = hub.borrow();
                    (h.log.shared().clone(), h.log.store().clone(), h.log_chunk())
                };
                crate::log::settled(&store, &shared, cursor).await;
                if let Some((from, to)) = shared.gap_at(cursor) {
                    return missing(&hub, id, &sink, &shared, cursor, Some((from, to))).await;
                }
                // The file is opened and read on a blocking-pool thread,
                // never on the session's (a slow disk must not stall the
                // sessions sharing its thread); the reader comes back to be
                // used for the next chunk.
                let held = reader.take().map(DropOffThread::into_inner);
                let at = shared.locate(cursor);
                let path = shared.shared_path().clone();
                let read =
                    crate::state::blocking(move || read_chunk(held, at, &path, cursor, chunk))
                        .await;
                let (batch, jumped) = match read {
                    Ok(Ok((r, batch, jumped))) => {
                        reader = Some(DropOffThread::new(r));
                        (batch, jumped)
                    }
                    Ok(Err(e)) | Err(e) => {
                        tracing::error!(error = %e, "cannot replay the session log");
                        return missing(&hub, id, &sink, &shared, cursor, None).await;
                    }
                };
                let missed = jumped || batch.is_empty();
                hub.borrow_mut().stats.replayed_from_log += batch.len() as u64;
                let n = batch.len() as u64;
                if n > 0 {
                    if sink.deliver(batch).await.is_err() {
                        return remove(&hub, id);
                    }
                    cursor += n;
                }
                if missed {
                    // Settled, yet not in the file: lost.
                    return missing(&hub, id, &sink, &shared, cursor, None).await;
                }
            }
            Next::Caught => {
                let mut h = hub.borrow_mut();
                if let Some(slot) = h.slots.iter_mut().find(|s| s.id == id) {
                    slot.sink = Some(sink);
                    h.stats.lagging -= 1;
                    h.trim_window();
                }
                return;
            }
            Next::Done => return remove(&hub, id),
        }
    }
}

/// One chunk of a feeder's replay, on a blocking-pool thread: up to
/// `chunk` events from `cursor` on, read with `held` if it is at `cursor`,
/// else (closing `held` here) with a reader opened at `at` (`(offset, seq
/// there)`, from the log's index). Returns the reader and the seq it is
/// at, the events, and whether the log jumped past `cursor` or could not
/// be parsed (an event is missing).
#[allow(clippy::type_complexity)]
fn read_chunk(
    held: Option<(LogReader, u64)>,
    at: (u64, u64),
    path: &std::path::Path,
    cursor: u64,
    chunk: usize,
) -> Result<((LogReader, u64), Vec<Event>, bool), Error> {
    let (mut r, mut next_seq) = match held {
        Some(held) if held.1 == cursor => held,
        _ => {
            let (offset, first) = at;
            (
                LogReader::open_buffered(path, offset, FEED_READ_BUFFER)?,
                first,
            )
        }
    };
    let mut batch = Vec::with_capacity(chunk);
    let mut jumped = false;
    while batch.len() < chunk {
        match r.next_event() {
            Ok(Some(ev)) => {
                next_seq = ev.seq + 1;
                let expect = cursor + batch.len() as u64;
                if ev.seq == expect {
                    batch.push(ev);
                } else if ev.seq > expect {
                    jumped = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot replay the session log");
                jumped = true;
                break;
            }
        }
    }
    Ok(((r, next_seq), batch, jumped))
}

/// Event `seq` is needed and missing from the log: tell the subscriber with
/// an `error` event (code `log`, at that seq; the end of its stream) and
/// drop it.
async fn missing(
    hub: &SharedHub,
    id: u64,
    sink: &Subscriber,
    log: &SharedLog,
    seq: u64,
    gap: Option<(u64, u64)>,
) {
    let path = log.path().to_path_buf();
    let session: Arc<str> = path.file_stem().map_or_else(
        || Arc::from(""),
        |s| Arc::from(s.to_string_lossy().as_ref()),
    );
    let message = match gap {
        Some((from, to)) => format!(
            "events {from} to {to} are missing (they could not be written; is the state directory's disk full?), and this subscriber fell behind them: it gets nothing more"
        ),
        None => format!(
            "event {seq} is missing from the log, and this subscriber fell behind it: it gets nothing more"
        ),
    };
    tracing::error!(log = %path.display(), seq, "subscriber dropped: {message}");
    let err = Error::Log { path, message };
    let _ = sink
        .deliver(vec![Event::new(session, seq, EventKind::error(&err))])
        .await;
    remove(hub, id);
}

fn remove(hub: &SharedHub, id: u64) {
    let mut h = hub.borrow_mut();
    if let Some(i) = h.slots.iter().position(|s| s.id == id) {
        h.slots.remove(i);
        h.stats.lagging -= 1;
        h.trim_window();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputStream;

    #[test]
    fn a_held_event_is_charged_at_least_what_it_was_measured_to_hold() {
        let ev = Event::new(
            "web-00000001",
            7,
            EventKind::Output {
                stream: OutputStream::Stdout,
                line: "x".repeat(80),
                partial: false,
            },
        );
        // A heap profile of a lagging fan-out (80-byte lines) measured
        // about 300 bytes per event held when `EventData` was 176 bytes;
        // boxing the agent variants shrank every event by what `EventData`
        // lost. The charge must not be less than that, or the lag budget
        // holds more memory than it says.
        let measured = 300 + std::mem::size_of::<crate::EventData>() - 176;
        assert!(
            held_size(&ev) >= measured,
            "{} < {measured}",
            held_size(&ev)
        );
        // The line's buffer is charged in full.
        let longer = Event::new(
            "web-00000001",
            8,
            EventKind::Output {
                stream: OutputStream::Stdout,
                line: "x".repeat(1080),
                partial: false,
            },
        );
        assert_eq!(held_size(&longer) - held_size(&ev), 1000);
    }
}
