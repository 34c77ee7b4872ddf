//! Shared helpers of the `bench_*` examples: arguments, process memory from
//! `/proc`, medians, a counting subscriber actor, fault-runtime pods and a
//! real-Docker busybox pod. Not a test: nothing here asserts a timing.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cldpd::{Event, EventBatch, EventKind};
use tokio::sync::oneshot;

/// The benchmarks run on the allocator of the `cldpd` binary: glibc's
/// malloc, or mimalloc with `--features mimalloc` (`heap_in_use` then
/// reads glibc's figures, which mean nothing under mimalloc).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// ----- arguments --------------------------------------------------------------

/// `--name value` pairs from the command line.
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse() -> Args {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                eprintln!("unexpected argument {a:?} (use --name value)");
                std::process::exit(2);
            };
            let value = it.next().unwrap_or_else(|| {
                eprintln!("--{key} needs a value");
                std::process::exit(2);
            });
            map.insert(key.to_string(), value);
        }
        Args(map)
    }

    /// A two-way option `--key off|on` (default `off`): whether it is
    /// `on`. Anything else ends the benchmark with exit code 2.
    pub fn either(&self, key: &str, off: &str, on: &str) -> bool {
        match self.0.get(key).map_or(off, String::as_str) {
            v if v == off => false,
            v if v == on => true,
            other => {
                eprintln!("--{key}: `{off}` or `{on}`, not {other:?}");
                std::process::exit(2);
            }
        }
    }

    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.0.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{key}: cannot parse {v:?}");
                std::process::exit(2);
            }),
        }
    }
}

/// Print the command that reproduces this run.
pub fn print_command(example: &str, args: &[(&str, String)]) {
    let mut cmd = format!("cargo run --release --example {example} --");
    for (k, v) in args {
        cmd.push_str(&format!(" --{k} {v}"));
    }
    println!("command: {cmd}");
}

/// The opening lines of a fault-runtime benchmark: the machine, where its
/// state lives (`base`, else the system temp dir) and the command that
/// reproduces it (`--dir` added when `base` is set).
pub fn print_fault_header(example: &str, base: Option<&Path>, mut repro: Vec<(&str, String)>) {
    print_machine();
    println!(
        "state and pods directories under {}",
        base.unwrap_or(&std::env::temp_dir()).display()
    );
    if let Some(b) = base {
        repro.push(("dir", b.display().to_string()));
    }
    print_command(example, &repro);
}

/// `result: <what> <median (min, max, n runs)>` of the runs' `key` column.
pub fn print_result(
    what: &str,
    data: &[HashMap<String, f64>],
    key: &str,
    unit: &str,
    digits: usize,
) {
    println!(
        "result: {what} {}",
        spread(&column(data, key), unit, digits)
    );
}

// ----- memory -----------------------------------------------------------------

fn status_field_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory of this process, KiB.
pub fn rss_kib() -> u64 {
    status_field_kib("self", "VmRSS:").unwrap_or(0)
}

/// Peak resident memory of this process since the last [`reset_peak`], KiB.
pub fn peak_kib() -> u64 {
    status_field_kib("self", "VmHWM:").unwrap_or(0)
}

/// Reset the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// RSS (KiB) of `pid` and of every descendant process, summed, and how many
/// processes that was.
pub fn tree_rss_kib(pid: u32) -> (u64, usize) {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may hold spaces: split after ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut total = 0;
    let mut count = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Some(kib) = status_field_kib(&p.to_string(), "VmRSS:") {
            total += kib;
            count += 1;
        }
        if let Some(c) = children.get(&p) {
            stack.extend(c);
        }
    }
    (total, count)
}

/// Samples [`tree_rss_kib`] of this process every `period` on its own thread
/// until stopped; returns the peak (KiB) and the most processes seen.
pub struct TreeSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, usize)>>,
}

impl TreeSampler {
    pub fn start(period: Duration, include_self: bool) -> TreeSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let me = std::process::id();
        let own = if include_self { 0 } else { 1 };
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            let mut procs = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let (mut kib, n) = tree_rss_kib(me);
                if !include_self {
                    kib = kib.saturating_sub(rss_kib());
                }
                peak = peak.max(kib);
                procs = procs.max(n.saturating_sub(own));
                std::thread::sleep(period);
            }
            (peak, procs)
        });
        TreeSampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> (u64, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// CPU time (user + system) used by this process so far, all threads, in
/// seconds (from `/proc/self/stat`; clock-tick resolution).
pub fn cpu_secs() -> f64 {
    stat_cpu_secs("/proc/self/stat")
}

/// CPU time of this process's main thread (where the actix system, and so
/// the dispatcher actor, runs), in seconds.
pub fn main_thread_cpu_secs() -> f64 {
    stat_cpu_secs(&format!("/proc/self/task/{}/stat", std::process::id()))
}

fn stat_cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes the C allocator has handed out and not got back (all arenas),
/// and bytes it holds from the OS (heap arenas + mmapped chunks): the
/// difference is free memory kept in its arenas.
pub fn heap_in_use() -> (u64, u64) {
    // SAFETY: a plain glibc call without arguments (glibc >= 2.33).
    let m = unsafe { mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, (m.arena + m.hblkhd) as u64)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ----- statistics -------------------------------------------------------------

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn min(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::INFINITY, f64::min)
}

pub fn max(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
}

/// `median (min … max, n runs)`.
pub fn spread(xs: &[f64], unit: &str, digits: usize) -> String {
    format!(
        "{:.d$} {unit} (min {:.d$}, max {:.d$}, {} runs)",
        median(xs),
        min(xs),
        max(xs),
        xs.len(),
        d = digits
    )
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ----- the counting subscriber ------------------------------------------------

/// What a [`Counter`] saw of one session.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub events: u64,
    pub lines: u64,
    /// Bytes of the output lines.
    pub line_bytes: u64,
    /// Typed agent events (parsed from stream-json output).
    pub agent_events: u64,
    /// Events whose seq was not the expected one.
    pub seq_errors: u64,
    /// Output lines out of order (`out <n>` numbering), and agent events
    /// that do not follow an output line.
    pub order_errors: u64,
    pub terminal: Option<Event>,
    pub first_line_at: Option<Instant>,
    pub end_at: Option<Instant>,
}

/// A subscriber actor that counts output lines, checks seq continuity and
/// the `out <n>` numbering, optionally sleeps `sleep` every `every` events
/// (a slow consumer), and reports its tally on the terminal event.
pub struct Counter {
    tally: Tally,
    next_seq: u64,
    next_line: u64,
    check_numbers: bool,
    /// Whether the last event was an `output` line.
    after_output: bool,
    mailbox: usize,
    slow: Option<(u64, Duration)>,
    done: Option<oneshot::Sender<Tally>>,
}

impl Counter {
    pub fn new(mailbox: usize, done: oneshot::Sender<Tally>) -> Counter {
        Counter {
            tally: Tally::default(),
            next_seq: 1,
            next_line: 1,
            check_numbers: true,
            after_output: false,
            mailbox,
            slow: None,
            done: Some(done),
        }
    }

    pub fn slow(mut self, every: u64, sleep: Duration) -> Counter {
        self.slow = Some((every, sleep));
        self
    }

    pub fn unchecked(mut self) -> Counter {
        self.check_numbers = false;
        self
    }
}

/// `n` of a fault-runtime line `out <n>....`.
fn line_number(line: &str) -> Option<u64> {
    let digits = line.as_bytes().strip_prefix(b"out ")?;
    let mut n: u64 = 0;
    let mut any = false;
    for &b in digits {
        if !b.is_ascii_digit() {
            break;
        }
        n = n * 10 + u64::from(b - b'0');
        any = true;
    }
    any.then_some(n)
}

impl Actor for Counter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

/// The same count, one batch message at a time (`Subscriber::Batches`).
impl Handler<EventBatch> for Counter {
    type Result = ();

    fn handle(&mut self, batch: EventBatch, ctx: &mut Context<Self>) {
        for ev in batch.0 {
            <Self as Handler<Event>>::handle(self, ev, ctx);
        }
    }
}

impl Handler<Event> for Counter {
    type Result = ();

    fn handle(&mut self, ev: Event, _ctx: &mut Context<Self>) {
        let t = &mut self.tally;
        t.events += 1;
        if ev.seq != self.next_seq {
            t.seq_errors += 1;
        }
        self.next_seq = ev.seq + 1;
        if ev.kind.is_agent() {
            t.agent_events += 1;
            // The parser's events follow the line that completed them.
            if !self.after_output {
                t.order_errors += 1;
            }
        }
        self.after_output = matches!(ev.kind, EventKind::Output { .. });
        if let EventKind::Output { line, .. } = &ev.kind {
            t.lines += 1;
            t.line_bytes += line.len() as u64;
            if t.first_line_at.is_none() {
                t.first_line_at = Some(Instant::now());
            }
            if self.check_numbers {
                // Fault lines are `out <n>` padded with dots to the width.
                if line_number(line) != Some(self.next_line) {
                    t.order_errors += 1;
                }
                self.next_line += 1;
            }
        }
        if let Some((every, sleep)) = self.slow {
            if t.events % every == 0 {
                std::thread::sleep(sleep);
            }
        }
        if ev.is_terminal() {
            t.end_at = Some(Instant::now());
            t.terminal = Some(ev);
            if let Some(tx) = self.done.take() {
                let _ = tx.send(std::mem::take(&mut self.tally));
            }
        }
    }
}

// ----- fault-runtime pods -----------------------------------------------------

/// A temporary pods directory (one pod) and state directory.
pub struct FaultDirs {
    pub root: tempfile::TempDir,
}

impl FaultDirs {
    /// Under `base` (default: the system temp dir).
    pub fn new(pod: &str, base: Option<&Path>) -> FaultDirs {
        let mut b = tempfile::Builder::new();
        b.prefix("cldpd-bench-");
        let root = match base {
            Some(dir) => b.tempdir_in(dir),
            None => b.tempdir(),
        }
        .expect("temp dir");
        let dir = root.path().join("pods").join(pod);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        FaultDirs { root }
    }

    pub fn pods(&self) -> PathBuf {
        self.root.path().join("pods")
    }

    /// Wait until the pod's files are older than the dispatcher's pod-cache
    /// settle time (2 s): real pods are written long before a burst of
    /// starts, and a pod edited less than 2 s ago is re-read on every start.
    pub async fn settle() {
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    }

    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
}

// ----- real Docker ------------------------------------------------------------

pub const BUSYBOX: &str = "/bin/busybox";
/// Same layers as the test support's base, so the build cache is shared.
const BASE_DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
/// Label on every layer that belongs to one bench pod (as the tests do).
pub const POD_IMAGE_LABEL: &str = "cldpd.test.pod";

pub fn docker(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run docker")
}

fn lines_of(out: std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A busybox pod in a temporary pods directory; on drop, its containers
/// (by label and by image) and its image are removed (`rmi --no-prune`).
pub struct DockerPod {
    pub tmp: tempfile::TempDir,
    pub name: String,
}

impl DockerPod {
    /// A pod whose agent (`/bin/claude`) is `stub`.
    pub fn new(stub: &str) -> DockerPod {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: apt-get install busybox-static"
        );
        let tmp = tempfile::Builder::new()
            .prefix("cldpd-bench-pods-")
            .tempdir()
            .unwrap();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("bench-{}", &id[..8]);
        let dir = tmp.path().join(&name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(BUSYBOX, dir.join("busybox")).unwrap();
        let claude = dir.join("claude");
        std::fs::write(&claude, stub).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("{BASE_DOCKERFILE}LABEL {POD_IMAGE_LABEL}={name}\nCOPY claude /bin/claude\n"),
        )
        .unwrap();
        DockerPod { tmp, name }
    }

    pub fn pods_dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn image(&self) -> String {
        format!("cldpd-{}", self.name)
    }

    /// `docker build` the image (as cldpd would name it).
    pub fn build(&self) {
        let dir = self.tmp.path().join(&self.name);
        let out = docker(&[
            "build",
            "-q",
            "--force-rm",
            "-t",
            &self.image(),
            dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "docker build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for DockerPod {
    fn drop(&mut self) {
        remove_pod_leftovers(&self.name, &[&self.image()]);
    }
}

/// Remove what a bench pod `pod` left behind: its containers (by the
/// `cldpd.pod` label, and any container of the images `ancestors`), its
/// image `cldpd-<pod>` (`rmi --no-prune`, as the tests do) and the layers
/// labelled as its own.
pub fn remove_pod_leftovers(pod: &str, ancestors: &[&str]) {
    let mut ids = lines_of(docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=cldpd.pod={pod}"),
    ]));
    for image in ancestors {
        ids.extend(lines_of(docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("ancestor={image}"),
        ])));
    }
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        let mut argv = vec!["rm", "-f"];
        argv.extend(ids.iter().map(String::as_str));
        docker(&argv);
    }
    docker(&["rmi", "-f", "--no-prune", &format!("cldpd-{pod}")]);
    let filter = format!("label={POD_IMAGE_LABEL}={pod}");
    for _ in 0..5 {
        let ids = lines_of(docker(&["images", "-aq", "--filter", &filter]));
        if ids.is_empty() {
            break;
        }
        let mut argv = vec!["rmi", "-f", "--no-prune"];
        argv.extend(ids.iter().map(String::as_str));
        docker(&argv);
    }
}

/// Docker client and server versions.
pub fn print_docker_versions() {
    let out = docker(&[
        "version",
        "--format",
        "client {{.Client.Version}}, server {{.Server.Version}}",
    ]);
    println!("docker: {}", String::from_utf8_lossy(&out.stdout).trim());
}

/// Machine description lines.
pub fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cores} cores, {mem} memory, kernel {}, load average {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

// ----- one process per run ----------------------------------------------------

/// Set in the environment of the child processes [`run_children`] starts.
pub const CHILD_ENV: &str = "CLDPD_BENCH_CHILD";

/// True in a child started by [`run_children`] (it does one run and prints
/// its `run` and `data:` lines).
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Print one run's figures for the parent: `data: key=value ...`.
pub fn emit_data(pairs: &[(&str, f64)]) {
    let mut line = String::from("data:");
    for (k, v) in pairs {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

/// Run this benchmark `runs` times, each in a fresh process (so that peak
/// RSS and the memory baseline of one run are not those of the previous
/// one), with the same arguments. Prints each child's `run` line as
/// `run <i>:` and returns each child's `data:` figures.
pub fn run_children(runs: usize) -> Vec<HashMap<String, f64>> {
    let exe = std::env::current_exe().expect("own path");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut all = Vec::new();
    for i in 0..runs {
        let out = std::process::Command::new(&exe)
            .args(&args)
            .env(CHILD_ENV, "1")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run a benchmark child");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!("run {} failed ({}):\n{text}", i + 1, out.status);
            std::process::exit(1);
        }
        let mut data = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("run 1:") {
                println!("run {}:{rest}", i + 1);
            } else if let Some(rest) = line.strip_prefix("data:") {
                for kv in rest.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        data.insert(k.to_string(), v.parse().unwrap_or(f64::NAN));
                    }
                }
            } else {
                println!("{line}");
            }
        }
        all.push(data);
    }
    all
}

/// One figure of every run.
pub fn column(data: &[HashMap<String, f64>], key: &str) -> Vec<f64> {
    data.iter()
        .map(|d| d.get(key).copied().unwrap_or(f64::NAN))
        .collect()
}
