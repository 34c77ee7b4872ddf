//! [`FaultRuntime`]: an in-memory container engine that fails on cue.
//!
//! - `script.rs`: what builds and runs do ([`BuildScript`], [`RunScript`], [`Step`]);
//! - `process.rs`: the stream of one process, a state machine over the steps;
//! - `engine.rs`: the [`Runtime`] implementation;
//! - this file: the engine state (names, labels, liveness, signals), the
//!   scripting and observation API.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::stream::{self, BoxStream, StreamExt};

use crate::error::Error;
#[cfg(doc)]
use crate::runtime::{labels, BuildSpec, Runtime};
use crate::runtime::{ExecSpec, ProcessEvent, RunSpec, Stdin, StopSignal};

mod converse;
mod engine;
mod process;
mod script;

use process::{Kind, Shared, KILL_CODE, TERM_CODE};
pub use script::{BuildScript, RunScript, Step};

/// Lines of build output kept in [`Error::BuildFailed`]'s tail.
const BUILD_TAIL: usize = 20;

/// An in-memory, scriptable container engine: a [`Runtime`] that fails on
/// cue, for tests and benchmarks of everything above the runtime.
///
/// It behaves like a container engine: containers have names (unique while
/// live; a clash fails like Docker's exit 125), labels ([`Runtime::list`]),
/// signals (TERM → exit 143, KILL → exit 137) and exits. What each build,
/// run and exec does is scripted per image or pod; everything the runtime
/// was asked to do can be observed afterwards.
///
/// # Behaviour without scripts
///
/// Builds print `Step 1/1 : FROM scratch` and succeed; runs and execs print
/// nothing and exit 0.
///
/// # Semantics
///
/// - **Creation.** By default a container exists and its process has
///   started at the `run()` call. With a
///   [`creation_delay`](Self::creation_delay) it is first `created`, as
///   Docker's create + start take time: [`Runtime::list`] shows it with
///   state `created` until the delay has passed on its stream (tokio time),
///   then `running` when `Started` is yielded. A signal sent meanwhile is
///   not lost: it reaches the process as soon as it starts (`Started`, then
///   the signal's exit), which is what the Docker backends guarantee too.
/// - **Liveness.** A container is live from the `run()` call until its
///   process exits, crashes, is ended by a signal, or is removed
///   ([`running`](Self::running), [`Runtime::list`]). Ended containers are
///   forgotten (as with `docker run --rm`).
/// - **Processes advance only while their stream is polled.** The stream is
///   the process: there is no background task. Dropping it does not stop the
///   container (as the trait requires), but the container then stays live,
///   frozen, until it is signalled or removed.
/// - **Output.** The stream yields `Started` first (immediately), then
///   `Output` batches (up to 1024 lines or about 256 KiB each), then one
///   terminal item, then `None`. Every byte goes through a
///   [`LineDecoder`](crate::runtime::LineDecoder) with the spec's `line_cap`,
///   so invalid UTF-8 and over-long lines behave as with Docker. Unthrottled
///   streams consume tokio's cooperative budget, so they yield now and then.
/// - **Signals.** [`Runtime::signal`] with `Term` ends a live process with
///   `Exited { code: 143 }` (unless its script says
///   [`ignore_sigterm`](RunScript::ignore_sigterm)), `Kill` with 137; the
///   container stops being live at once, and its stream is woken out of any
///   sleep, rate limit or hang, emits any unterminated line, then the exit.
///   A signal to an unknown or ended container is `Ok(())`.
///   [`Runtime::stop`] sends TERM, waits up to the grace period for the
///   process to end (by itself or by the TERM), sends KILL, and resolves once
///   it has ended. [`Runtime::remove`] is KILL (if live) and forget.
/// - **Exec.** An exec into a container that is not live yields only
///   `Failed(SessionNotFound { target: container })`; an exec process ends
///   with 137 when its container ends, and is signalled through
///   [`Runtime::signal_exec`] (found by its command, as on Docker).
/// - **Failures at the start** (a command that cannot run, Docker refusing
///   the container, a name in use, an unreachable engine) yield `Failed` as
///   the only item, without `Started`, as on the Engine API backend.
/// - **Unavailable** ([`set_unavailable`](Self::set_unavailable)):
///   `preflight`, `image_exists`, `list`, `signal`, `stop` and `remove`
///   return [`Error::DockerUnavailable`]; builds finish with it; runs and
///   execs yield `Failed(DockerUnavailable)` as their only item. Live
///   containers keep running.
/// - `list()` returns the live containers that carry the
///   [`labels::SESSION`] label, state `created` (see **Creation**) or
///   `running`, with all their labels.
/// - Images are not checked: `run` works whether the image was built or
///   not. `image_exists` is true after a successful build of the tag or
///   [`add_image`](Self::add_image).
/// - Sleeps, delays and rate limits use tokio time (so they need a tokio
///   runtime with the time driver, and follow a paused clock).
///
/// # Cost
///
/// No task, channel or output buffer exists per container: a process is a
/// stream polled by its consumer, generating each batch on demand. A live,
/// hanging container costs its boxed stream state (200 bytes), a shared
/// state (exit code, waker, `Notify`: 64 bytes), its name, and a registry
/// entry holding the pod, image and labels packed out of its spec into one
/// buffer: about 550 bytes in all with two labels and 880 with the
/// thirteen cldpd sets, as measured by the
/// `a_live_container_costs_under_1_kib` test (a label costs its text plus
/// 8 bytes). Draining 1,000,000 80-byte lines from one stream runs at several
/// million lines a second in release builds.
///
/// Observations cost more: [`record_specs`](Self::record_specs) (on by
/// default) keeps a copy of every spec and stdin received, so switch it
/// off in soak tests and benchmarks that hold thousands of runs.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cldpd::runtime::{FaultRuntime, ProcessEvent, RunScript, RunSpec, Runtime, StopSignal};
/// use futures_util::StreamExt;
/// # fn spec(pod: &str, container: &str) -> RunSpec {
/// #     RunSpec {
/// #         session: format!("{pod}-0a1b2c3d"), pod: pod.into(), container: container.into(),
/// #         image: format!("cldpd-{pod}"), command: vec!["claude".into()], env: vec![],
/// #         workdir: None, mounts: vec![], labels: Default::default(),
/// #         resources: Default::default(), line_cap: cldpd::runtime::DEFAULT_LINE_CAP, stdin: None, network: None,
/// #     }
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let rt = FaultRuntime::new();
/// // The first run of `web` crashes after two lines; every later one hangs.
/// rt.script_next_run("web", RunScript::new().stdout_lines(2).crash("lost the daemon"))
///     .script_pod("web", RunScript::new().hang());
///
/// let events: Vec<_> = rt.run(spec("web", "web-1")).collect().await;
/// assert!(matches!(&events[0], ProcessEvent::Started { container } if container == "web-1"));
/// assert!(matches!(&events[1], ProcessEvent::Output(lines) if lines.len() == 2));
/// assert!(matches!(&events[2], ProcessEvent::Failed(e) if e.code() == "runtime_failed"));
///
/// let mut second = rt.run(spec("web", "web-2"));
/// assert!(matches!(second.next().await, Some(ProcessEvent::Started { .. })));
/// assert_eq!(rt.running(), ["web-2"]);
/// rt.stop("web-2", Duration::from_secs(10)).await.unwrap();
/// assert!(matches!(second.next().await, Some(ProcessEvent::Exited { code: 143 })));
/// assert_eq!(rt.signals("web-2"), [StopSignal::Term]);
/// assert_eq!((rt.run_count("web"), rt.max_running()), (2, 1));
/// # });
/// ```
#[derive(Clone, Default)]
pub struct FaultRuntime {
    inner: Arc<Inner>,
}

/// The engine state behind every clone of one [`FaultRuntime`].
#[derive(Default)]
struct Inner {
    reg: Mutex<Registry>,
    /// The script of unscripted runs and execs.
    empty: Arc<RunScript>,
}

/// A live container. The labels are packed out of the spec's `BTreeMap`
/// (whose smallest node is over 500 bytes, plus two allocations a label)
/// into one exact-size buffer.
struct Live {
    shared: Arc<Shared>,
    pod: Box<str>,
    image: Box<str>,
    labels: PackedLabels,
    ignore_sigterm: bool,
    stop_fails: bool,
    /// Its stdin stays open for `write_input` ([`Stdin::open`]).
    input_open: bool,
    /// Exec processes running in it (ended with it).
    execs: Vec<ExecProcess>,
}

/// An exec process: its command (to find it for `signal_exec`), whether it
/// ignores SIGTERM, and its shared state.
struct ExecProcess {
    command: Box<[String]>,
    ignore_sigterm: bool,
    shared: Arc<Shared>,
}

/// Labels in one allocation: for each, the key's and the value's length
/// (`u32`, native endian) then their bytes.
struct PackedLabels(Box<[u8]>);

impl PackedLabels {
    fn new(labels: std::collections::BTreeMap<String, String>) -> Self {
        let size = labels.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut buf = Vec::with_capacity(size);
        for (k, v) in &labels {
            for s in [k, v] {
                buf.extend_from_slice(&(s.len() as u32).to_ne_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
        }
        PackedLabels(buf.into_boxed_slice())
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let mut next = || {
                let (len, tail) = rest.split_first_chunk::<4>()?;
                let (s, tail) = tail.split_at(u32::from_ne_bytes(*len) as usize);
                rest = tail;
                // Written from `String`s above.
                std::str::from_utf8(s).ok()
            };
            Some((next()?, next()?))
        })
    }
}

struct Registry {
    unavailable: bool,
    /// How long a container is `created` before it starts.
    creation_delay: Option<std::time::Duration>,
    /// While `Some`, `image_exists` answers only once it holds `false`.
    checks_held: Option<tokio::sync::watch::Sender<bool>>,
    record_specs: bool,
    builds: HashMap<String, Arc<BuildScript>>,
    images: HashSet<String>,
    /// Tag → id of the image it names (made by builds).
    tags: HashMap<String, String>,
    pods: HashMap<String, Arc<RunScript>>,
    next_runs: HashMap<String, VecDeque<RunScript>>,
    exec_scripts: HashMap<String, Arc<RunScript>>,
    live: HashMap<Arc<str>, Live>,
    // Observations.
    build_counts: HashMap<String, usize>,
    run_counts: HashMap<String, usize>,
    max_running: usize,
    signals: HashMap<String, Vec<StopSignal>>,
    runs: Vec<RunSpec>,
    execs: Vec<ExecSpec>,
    /// What each started process was given on stdin (container or exec
    /// target name, bytes), in order.
    stdins: Vec<(String, Stdin)>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            unavailable: false,
            creation_delay: None,
            checks_held: None,
            record_specs: true,
            builds: HashMap::new(),
            images: HashSet::new(),
            tags: HashMap::new(),
            pods: HashMap::new(),
            next_runs: HashMap::new(),
            exec_scripts: HashMap::new(),
            live: HashMap::new(),
            build_counts: HashMap::new(),
            run_counts: HashMap::new(),
            max_running: 0,
            signals: HashMap::new(),
            runs: Vec::new(),
            execs: Vec::new(),
            stdins: Vec::new(),
        }
    }
}

impl Registry {
    /// End a live container (and its exec processes) with `code`, forget it.
    fn end_live(&mut self, name: &str, code: i32) {
        if let Some(live) = self.live.remove(name) {
            live.shared.end(code);
            for exec in &live.execs {
                exec.shared.end(KILL_CODE);
            }
        }
    }
}

fn unavailable() -> Error {
    Error::DockerUnavailable {
        message: "Cannot connect to the Docker daemon (fault runtime: set_unavailable(true))"
            .to_string(),
    }
}

fn failed(error: Error) -> BoxStream<'static, ProcessEvent> {
    stream::iter([ProcessEvent::Failed(error)]).boxed()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // No code panics while holding it; tolerate poisoning regardless.
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A process reached the end of its script with `code`. Returns the
    /// engine's code instead when a signal (or its container's end) ended it
    /// first.
    fn process_ended(
        &self,
        kind: Kind,
        container: &str,
        shared: &Arc<Shared>,
        code: i32,
    ) -> Option<i32> {
        let mut reg = self.lock();
        if let Some(engine) = shared.code() {
            return Some(engine);
        }
        match kind {
            Kind::Main => {
                if reg
                    .live
                    .get(container)
                    .is_some_and(|l| Arc::ptr_eq(&l.shared, shared))
                {
                    reg.end_live(container, code);
                }
            }
            Kind::Exec => {
                if let Some(live) = reg.live.get_mut(container) {
                    live.execs.retain(|e| !Arc::ptr_eq(&e.shared, shared));
                }
            }
        }
        shared.end(code);
        None
    }

    /// Deliver `signal` to the live container `name` (only if it is still
    /// `only`, when given). Returns its shared state, or `None` when there
    /// was no such live container.
    /// Signal the exec processes of `container` running `command`.
    fn deliver_exec(
        &self,
        container: &str,
        command: &[String],
        signal: StopSignal,
    ) -> Result<(), Error> {
        let mut reg = self.lock();
        if reg.unavailable {
            return Err(unavailable());
        }
        let Some(live) = reg.live.get_mut(container) else {
            return Ok(());
        };
        for exec in live.execs.iter().filter(|e| &*e.command == command) {
            match signal {
                StopSignal::Term if exec.ignore_sigterm => {}
                StopSignal::Term => {
                    exec.shared.end(TERM_CODE);
                }
                StopSignal::Kill => {
                    exec.shared.end(KILL_CODE);
                }
            }
        }
        live.execs.retain(|e| e.shared.code().is_none());
        Ok(())
    }

    fn deliver(
        &self,
        name: &str,
        signal: StopSignal,
        only: Option<&Arc<Shared>>,
    ) -> Result<Option<Arc<Shared>>, Error> {
        let mut reg = self.lock();
        if reg.unavailable {
            return Err(unavailable());
        }
        let Some(live) = reg.live.get(name) else {
            return Ok(None);
        };
        if only.is_some_and(|s| !Arc::ptr_eq(s, &live.shared)) {
            return Ok(None);
        }
        let (shared, stop_fails, ignore_sigterm) =
            (live.shared.clone(), live.stop_fails, live.ignore_sigterm);
        match reg.signals.get_mut(name) {
            Some(seen) => seen.push(signal),
            None => {
                reg.signals.insert(name.to_owned(), vec![signal]);
            }
        }
        if stop_fails {
            return Err(Error::StopFailed {
                container: name.to_owned(),
                message: format!(
                    "cannot {} the container (fault runtime: stop_fails)",
                    signal.name()
                ),
            });
        }
        match signal {
            StopSignal::Term if ignore_sigterm => {}
            StopSignal::Term => reg.end_live(name, TERM_CODE),
            StopSignal::Kill => reg.end_live(name, KILL_CODE),
        }
        Ok(Some(shared))
    }
}

impl fmt::Debug for FaultRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.inner.lock();
        f.debug_struct("FaultRuntime")
            .field("unavailable", &reg.unavailable)
            .field("running", &reg.live.len())
            .finish_non_exhaustive()
    }
}

/// Scripting. Every method applies to all clones and returns `&self` for
/// chaining.
impl FaultRuntime {
    /// A runtime with no scripts: builds succeed, runs and execs exit 0.
    pub fn new() -> Self {
        FaultRuntime::default()
    }

    /// Make Docker unreachable (`true`) or reachable again (`false`). See
    /// the type docs for what fails.
    ///
    /// ```
    /// # use cldpd::runtime::{FaultRuntime, Runtime};
    /// let rt = FaultRuntime::new();
    /// rt.set_unavailable(true);
    /// let err = futures_util::FutureExt::now_or_never(rt.preflight()).unwrap().unwrap_err();
    /// assert_eq!(err.code(), "docker_unavailable");
    /// ```
    pub fn set_unavailable(&self, unavailable: bool) -> &Self {
        self.inner.lock().unavailable = unavailable;
        self
    }

    /// Let each container run after this from now on spend `delay` (tokio
    /// time, counted from the first poll of its stream) in state `created`
    /// before its process starts, as Docker's create and start take time
    /// (tens of milliseconds on a quiet machine, seconds on a loaded one).
    /// Code that signals, lists or stops a run right after starting it is
    /// then tested against what Docker does; see the **Creation** semantics
    /// above. `Duration::ZERO` switches it off (the default).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cldpd::runtime::FaultRuntime;
    /// let rt = FaultRuntime::new();
    /// rt.creation_delay(Duration::from_millis(50));
    /// ```
    pub fn creation_delay(&self, delay: std::time::Duration) -> &Self {
        self.inner.lock().creation_delay = (!delay.is_zero()).then_some(delay);
        self
    }

    /// Script the builds of an image tag ([`BuildSpec::image`]). A build
    /// whose tag has no script uses the script registered under its pod name
    /// ([`BuildSpec::pod`]), if any, else the default.
    ///
    /// ```
    /// # use cldpd::runtime::{BuildScript, FaultRuntime};
    /// FaultRuntime::new().script_build("cldpd-web", BuildScript::fail(["boom"], 2));
    /// ```
    pub fn script_build(&self, pod_or_image: &str, script: BuildScript) -> &Self {
        self.inner
            .lock()
            .builds
            .insert(pod_or_image.to_owned(), Arc::new(script));
        self
    }

    /// Script every run of `pod` ([`RunSpec::pod`]) that
    /// [`script_next_run`](Self::script_next_run) does not cover.
    ///
    /// ```
    /// # use cldpd::runtime::{FaultRuntime, RunScript};
    /// FaultRuntime::new().script_pod("web", RunScript::new().stdout_lines(3).exit(1));
    /// ```
    pub fn script_pod(&self, pod: &str, script: RunScript) -> &Self {
        self.inner
            .lock()
            .pods
            .insert(pod.to_owned(), Arc::new(script));
        self
    }

    /// Queue a script for the next run of `pod`: each run takes one from
    /// the front of the queue (first in, first out) before falling back to
    /// [`script_pod`](Self::script_pod). For "the first attempt crashes, the
    /// second succeeds".
    ///
    /// ```
    /// # use cldpd::runtime::{FaultRuntime, RunScript};
    /// FaultRuntime::new()
    ///     .script_next_run("web", RunScript::new().crash("first attempt"))
    ///     .script_next_run("web", RunScript::new().exit(1))
    ///     .script_pod("web", RunScript::new().stdout_lines(1));
    /// ```
    pub fn script_next_run(&self, pod: &str, script: RunScript) -> &Self {
        self.inner
            .lock()
            .next_runs
            .entry(pod.to_owned())
            .or_default()
            .push_back(script);
        self
    }

    /// Script every exec process started in a container of `pod`.
    ///
    /// ```
    /// # use cldpd::runtime::{FaultRuntime, RunScript};
    /// FaultRuntime::new().script_exec("web", RunScript::new().stdout_lines(2));
    /// ```
    pub fn script_exec(&self, pod: &str, script: RunScript) -> &Self {
        self.inner
            .lock()
            .exec_scripts
            .insert(pod.to_owned(), Arc::new(script));
        self
    }

    /// Make `image_exists(image)` true without a build.
    pub fn add_image(&self, image: &str) -> &Self {
        self.inner.lock().images.insert(image.to_owned());
        self
    }

    /// Hold every `image_exists` answer (`true`) until released
    /// (`false`), as a slow engine would: for the time a session checks
    /// an image recorded by another process while its container already
    /// runs.
    ///
    /// ```
    /// # use cldpd::runtime::{FaultRuntime, Runtime};
    /// # use futures_util::FutureExt;
    /// let rt = FaultRuntime::new();
    /// rt.hold_image_checks(true);
    /// let mut check = rt.image_exists("x");
    /// assert!((&mut check).now_or_never().is_none());
    /// rt.hold_image_checks(false);
    /// assert!(!check.now_or_never().unwrap().unwrap());
    /// ```
    pub fn hold_image_checks(&self, hold: bool) -> &Self {
        self.inner
            .lock()
            .checks_held
            .get_or_insert_with(|| tokio::sync::watch::Sender::new(false))
            .send_replace(hold);
        self
    }

    /// Remove an image (tag or id), as `docker rmi` would: `image_exists`
    /// is false afterwards. Containers already running are not affected.
    pub fn remove_image(&self, image: &str) -> &Self {
        self.inner.lock().images.remove(image);
        self
    }

    /// Record every [`RunSpec`] and [`ExecSpec`] received, for
    /// [`runs`](Self::runs) and [`execs`](Self::execs), and what each was
    /// given on its stdin, for [`stdins`](Self::stdins) (on by default).
    /// Recording keeps a copy of each spec and stdin until
    /// [`reset_observations`](Self::reset_observations); switch it off when
    /// holding thousands of runs.
    pub fn record_specs(&self, record: bool) -> &Self {
        self.inner.lock().record_specs = record;
        self
    }
}

/// Observations.
impl FaultRuntime {
    /// Builds started for this image tag (calls to `build` while
    /// available).
    pub fn build_count(&self, image: &str) -> usize {
        self.inner
            .lock()
            .build_counts
            .get(image)
            .copied()
            .unwrap_or(0)
    }

    /// Calls to `run` for this pod, including those that failed to start.
    pub fn run_count(&self, pod: &str) -> usize {
        self.inner.lock().run_counts.get(pod).copied().unwrap_or(0)
    }

    /// Names of the live containers, sorted.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .lock()
            .live
            .keys()
            .map(|k| k.to_string())
            .collect();
        names.sort_unstable();
        names
    }

    /// The most containers that were live at the same time (since creation
    /// or the last [`reset_observations`](Self::reset_observations)).
    pub fn max_running(&self) -> usize {
        self.inner.lock().max_running
    }

    /// Signals sent to the container while it was live, in order, whether
    /// by `signal`, `stop` or `remove` (KILL), including those that failed
    /// under [`RunScript::stop_fails`]. Signals to unknown or ended
    /// containers are not recorded.
    pub fn signals(&self, container: &str) -> Vec<StopSignal> {
        self.inner
            .lock()
            .signals
            .get(container)
            .cloned()
            .unwrap_or_default()
    }

    /// Every run spec received, in order (when recording, see
    /// [`record_specs`](Self::record_specs)).
    pub fn runs(&self) -> Vec<RunSpec> {
        self.inner.lock().runs.clone()
    }

    /// Every exec spec received, in order (when recording).
    pub fn execs(&self) -> Vec<ExecSpec> {
        self.inner.lock().execs.clone()
    }

    /// What the processes started so far were given on their stdin (see
    /// [`Stdin`]): `(container, bytes)` per run or exec that had one, in
    /// order (when recording, see [`record_specs`](Self::record_specs)).
    /// The fault runtime "writes" the whole of it at start, as the real
    /// backends do.
    pub fn stdins(&self) -> Vec<(String, Stdin)> {
        self.inner.lock().stdins.clone()
    }

    /// Forget counts, signals and recorded specs; `max_running` restarts
    /// from the number live now. Scripts and live containers are kept.
    pub fn reset_observations(&self) {
        let mut reg = self.inner.lock();
        reg.build_counts.clear();
        reg.run_counts.clear();
        reg.signals.clear();
        reg.runs.clear();
        reg.execs.clear();
        reg.stdins.clear();
        reg.max_running = reg.live.len();
    }
}

#[cfg(test)]
mod tests {
    use super::process::Process;
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn thread_safety() {
        assert_send_sync::<FaultRuntime>();
        assert_send::<Process>();
    }
}
