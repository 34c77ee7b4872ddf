//! Benchmark "real agents per minute" (issue 11): the real Claude Code
//! (the CLI bundled in PyPI's `claude-agent-sdk`, the image of
//! `.ci/claude-fixture.sh`) against cldpd's scripted model server, which
//! answers at once: each agent makes one Bash tool call (`echo hi >
//! out.txt`), gets its result, answers "Done." and exits. Per concurrency
//! level (default 1, 10 and 30) and per round, interleaved:
//!
//! - **cldpd**: a long-lived `Dispatcher::docker` (the default backend, the
//!   Engine API; `CLDPD_RUNTIME=cli` for the docker CLI) with
//!   `max_concurrent` = the level; all jobs are started at once and its
//!   admission control queues the rest. Every run must end with exit 0,
//!   which for a stream-json agent means a `result` that is not an error.
//! - **docker run**: the same image, the same agent argv, environment and
//!   network, as `docker run --rm -i` with the prompt on stdin, that many
//!   workers each starting the next job when its previous one exited; each
//!   run's stdout must hold a `result` with `"is_error":false`.
//!
//! Prints agents per minute (jobs / wall time) for both, and the ratio of
//! the medians of the wall times (cldpd / docker run: cldpd's cost on top
//! of the same containers). Also checks that the model server saw at least
//! two Messages requests per agent (the tool call and the answer).
//!
//! ```text
//! cargo run --release --example bench_agents -- --runs 3 --levels 1,10,30
//! ```
//!
//! Needs Docker (builds, cannot pull) and the Claude Code fixture
//! (`.ci/claude-fixture.sh` fetches the wheel from PyPI once into
//! `~/.cache/cldpd`). Removes its image tags and containers at the end.

#[path = "bench/common.rs"]
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cldpd::model_server::{ModelServer, Script, Turn};
use cldpd::{Dispatcher, Settings, StartRequest};
use common::*;
use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;

const PROMPT: &str = "Write hi into out.txt, then say Done.";
const API_KEY: &str = "sk-bench-not-a-real-key";
/// The image's writable home (the agent runs as `agent`, not root).
const WORKDIR: &str = "/home/agent";

/// The fixture image, built from `.ci/claude-fixture.sh` under a tag of
/// this process; removed (with the pod's image) on drop.
struct Fixture {
    tag: String,
    pod: String,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn build(base_url: &str) -> Fixture {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tag = format!("cldpd-claude-bench:run-{}-{}", std::process::id(), &id[..8]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/claude-fixture.sh");
        let t0 = Instant::now();
        let out = std::process::Command::new(&script)
            .arg(&tag)
            .stdin(Stdio::null())
            .output()
            .expect("run .ci/claude-fixture.sh");
        assert!(
            out.status.success(),
            "building the Claude Code image failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "fixture: built {tag} in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let tmp = tempfile::Builder::new()
            .prefix("cldpd-bench-agents-")
            .tempdir()
            .unwrap();
        let pod = format!("agents-{}", &id[..8]);
        let dir = tmp.path().join("pods").join(&pod);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM {tag}\nLABEL {POD_IMAGE_LABEL}={pod}\n"),
        )
        .unwrap();
        let pod_json = serde_json::json!({
            "network": "host",
            "agentCommand": ["claude", "--dangerously-skip-permissions"],
            "workdir": WORKDIR,
            "env": {
                "ANTHROPIC_BASE_URL": base_url,
                "ANTHROPIC_API_KEY": API_KEY,
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            },
        });
        std::fs::write(dir.join("pod.json"), pod_json.to_string()).unwrap();
        Fixture { tag, pod, tmp }
    }

    fn pods(&self) -> PathBuf {
        self.tmp.path().join("pods")
    }

    fn state(&self, level: usize) -> PathBuf {
        self.tmp.path().join(format!("state-{level}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Its pod's containers and image, and any `docker run` container
        // of the fixture's tag; then the tag.
        remove_pod_leftovers(&self.pod, &[&format!("cldpd-{}", self.pod), &self.tag]);
        docker(&["rmi", "--no-prune", &self.tag]);
    }
}

/// `jobs` agents through `d` (its `max_concurrent` is the level), all
/// started at once; the wall time until every one has ended.
async fn cldpd_round(d: &Dispatcher, pod: &str, jobs: usize) -> Duration {
    let t0 = Instant::now();
    let sessions = join_all((0..jobs).map(|_| d.start(StartRequest::prompt(pod, PROMPT)))).await;
    let waits = sessions.iter().map(|s| s.as_ref().expect("start").wait());
    for code in join_all(waits).await {
        assert_eq!(code.expect("the agent's run"), 0);
    }
    t0.elapsed()
}

/// The same agents as plain `docker run --rm -i`, `level` at a time.
async fn docker_round(image: &str, base_url: &str, level: usize, jobs: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers = (0..level).map(|_| {
        let next = next.clone();
        async move {
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let session = uuid::Uuid::new_v4().to_string();
                let mut child = tokio::process::Command::new("docker")
                    .args(["run", "--rm", "-i", "--network", "host", "-w", WORKDIR])
                    .args(["-e", "ANTHROPIC_BASE_URL", "-e", "ANTHROPIC_API_KEY"])
                    .args(["-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"])
                    .arg(image)
                    .args(["claude", "--dangerously-skip-permissions", "-p"])
                    .args(["--output-format", "stream-json", "--verbose"])
                    .args(["--session-id", &session])
                    .env("ANTHROPIC_BASE_URL", base_url)
                    .env("ANTHROPIC_API_KEY", API_KEY)
                    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("docker run");
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(PROMPT.as_bytes()).await.unwrap();
                drop(stdin);
                let out = child.wait_with_output().await.expect("docker run");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && stdout.lines().any(succeeded),
                    "docker run of the agent failed ({}):\n{stdout}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    });
    join_all(workers).await;
    t0.elapsed()
}

/// True for a stream-json `result` line that is not an error.
fn succeeded(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v["type"] == "result" && v["is_error"] == false && v["subtype"] == "success")
}

fn per_minute(jobs: usize, wall: &[f64]) -> Vec<f64> {
    wall.iter().map(|w| jobs as f64 * 60.0 / w).collect()
}

fn main() {
    let args = Args::parse();
    let runs: usize = args.get("runs", 3);
    let levels: String = args.get("levels", "1,10,30".to_string());
    let levels: Vec<usize> = levels
        .split(',')
        .map(|l| l.trim().parse().expect("--levels: numbers, e.g. 1,10,30"))
        .collect();
    // Jobs per round at a level: at least 4, at least the level, and
    // enough that admission queues some at the lower levels.
    let jobs_at = |level: usize| (level * 2).clamp(4, 30).max(level);
    println!("bench_agents: the real Claude Code against the scripted model server (one Bash tool call, then an answer); agents per minute at each concurrency level, cldpd (library, Dispatcher with max_concurrent) vs plain docker run --rm -i with the same argv, env and network; {runs} rounds, order alternating");
    print_machine();
    print_docker_versions();
    print_command(
        "bench_agents",
        &[
            ("runs", runs.to_string()),
            (
                "levels",
                levels
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ],
    );
    println!(
        "backend: {} (CLDPD_RUNTIME)",
        std::env::var("CLDPD_RUNTIME").unwrap_or_else(|_| "default (engine)".into())
    );
    let server = ModelServer::start(
        Script::new([Turn::bash("echo hi > out.txt"), Turn::text("Done.")]),
        0,
    )
    .expect("start the model server");
    let base_url = server.url();
    let fixture = Fixture::build(&base_url);
    let pods = fixture.pods();
    let pod = fixture.pod.clone();
    let image = fixture.tag.clone();
    let _ = std::io::stdout().flush();
    actix::System::new().block_on(async {
        FaultDirs::settle().await;
        let mut summary = Vec::new();
        for &level in &levels {
            let jobs = jobs_at(level);
            let state = fixture.state(level);
            let d = Dispatcher::docker(Settings::new(&pods, &state).max_concurrent(level));
            // The first run builds the pod's image (memoised for the rest)
            // and warms the engine's caches: not measured.
            let s = d.start(StartRequest::prompt(&pod, PROMPT)).await.unwrap();
            assert_eq!(s.wait().await.unwrap(), 0, "the warm-up agent");
            let mut c_wall = Vec::new();
            let mut p_wall = Vec::new();
            for round in 0..runs {
                let before = server.message_requests().len();
                let (c, p) = if round % 2 == 0 {
                    let c = cldpd_round(&d, &pod, jobs).await;
                    (c, docker_round(&image, &base_url, level, jobs).await)
                } else {
                    let p = docker_round(&image, &base_url, level, jobs).await;
                    (cldpd_round(&d, &pod, jobs).await, p)
                };
                let requests = server.message_requests().len() - before;
                assert!(
                    requests >= 4 * jobs,
                    "expected at least 2 model requests per agent, got {requests} for {} agents",
                    2 * jobs
                );
                println!(
                    "run {} (concurrency {level}, {jobs} agents each): cldpd {:.2} s ({:.1} agents/min) | docker run {:.2} s ({:.1} agents/min) | {requests} model requests",
                    round + 1,
                    secs(c),
                    jobs as f64 * 60.0 / secs(c),
                    secs(p),
                    jobs as f64 * 60.0 / secs(p),
                );
                let _ = std::io::stdout().flush();
                c_wall.push(secs(c));
                p_wall.push(secs(p));
            }
            assert_eq!(d.build_count().await.unwrap(), 1, "later runs used the memo");
            d.shutdown(None).await.unwrap();
            println!(
                "result: concurrency {level}: cldpd agents/min {}",
                spread(&per_minute(jobs, &c_wall), "", 1)
            );
            println!(
                "result: concurrency {level}: docker run agents/min {}",
                spread(&per_minute(jobs, &p_wall), "", 1)
            );
            let ratio = median(&c_wall) / median(&p_wall);
            println!(
                "result: concurrency {level}: ratio cldpd / docker run wall (medians) {ratio:.3}"
            );
            summary.push((level, jobs, per_minute(jobs, &c_wall), per_minute(jobs, &p_wall), ratio));
        }
        println!("summary: concurrency | agents per round | cldpd agents/min | docker run agents/min | cldpd / docker run wall");
        for (level, jobs, c, p, ratio) in summary {
            println!(
                "summary: {level} | {jobs} | {:.1} | {:.1} | {ratio:.3}",
                median(&c),
                median(&p)
            );
        }
    });
    drop(fixture);
    drop(server);
    println!("cleanup: image tags and containers removed");
}
