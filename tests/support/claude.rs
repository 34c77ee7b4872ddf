//! The real Claude Code in tests: an image built once per test process
//! around the CLI that PyPI's `claude-agent-sdk` wheel bundles, and pods
//! that run it against a scripted model server on loopback.
//!
//! The image recipe is `.ci/claude-fixture.sh` (README "Tests"): a
//! `FROM scratch` image with the host's glibc, `/bin/bash`, busybox and
//! `claude`, user 1000. [`claude_image`] runs that script once per test
//! process (a `OnceLock`) under `flock` on `<cache>/claude-fixture.lock`, so
//! concurrent test processes never build, stage or remove at the same time,
//! with a tag of its own: `cldpd-test-claude:run-<pid>-<hex8>`.
//!
//! Removal: the tag is removed when the test process exits — a C `atexit`
//! hook (libtest returns from `main` or calls `exit`, both run it), again
//! under the lock. A process killed before that (Ctrl-C, SIGKILL) leaves its
//! tag; the next test process removes every `run-<pid>-…` tag whose pid is
//! no longer alive before it builds. The layers are shared by identical
//! builds (the build cache), so a second process's build takes seconds, and
//! `docker rmi` only deletes them once no tag of a live process uses them.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::docker::{containers_with_label, docker, docker_bin, unique_name, POD_IMAGE_LABEL};

/// The repository of the test image tags.
pub const IMAGE_REPO: &str = "cldpd-test-claude";

/// The API key the agents are given (any value works with the scripted
/// model server).
pub const TEST_API_KEY: &str = "sk-ant-test-not-a-real-key";

fn cache_dir() -> PathBuf {
    match std::env::var_os("CLDPD_CACHE_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/cldpd"),
    }
}

fn lock_file() -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("create the cache dir");
    dir.join("claude-fixture.lock")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static TAG: OnceLock<String> = OnceLock::new();

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Runs at process exit: remove this process's tag (under the lock).
extern "C" fn remove_tag_at_exit() {
    if let Some(tag) = TAG.get() {
        let _ = Command::new("flock")
            .arg(lock_file())
            .arg(docker_bin())
            .args(["rmi", "-f", tag])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Tags `run-<pid>-…` of test processes that are gone.
fn stale_tags() -> Vec<String> {
    let out = docker(["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|t| {
            let Some(rest) = t.strip_prefix(&format!("{IMAGE_REPO}:run-")) else {
                return false;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            !pid.is_empty() && !Path::new("/proc").join(pid).exists()
        })
        .map(str::to_string)
        .collect()
}

/// The Claude Code test image, built on first use in this process (≈ 20 s
/// the first time on a machine, seconds after that). Panics with the
/// script's output when it cannot be built.
pub fn claude_image() -> &'static str {
    TAG.get_or_init(|| {
        let stale = stale_tags();
        if !stale.is_empty() {
            let _ = Command::new("flock")
                .arg(lock_file())
                .arg(docker_bin())
                .args(["rmi", "-f"])
                .args(&stale)
                .stdin(Stdio::null())
                .output();
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tag = format!("{IMAGE_REPO}:run-{}-{}", std::process::id(), &id[..8]);
        // Registered before the build, so a half-made tag goes too.
        // SAFETY: registering a plain `extern "C" fn` with libc's atexit.
        unsafe {
            atexit(remove_tag_at_exit);
        }
        let out = Command::new("flock")
            .arg(lock_file())
            .arg(repo_root().join(".ci/claude-fixture.sh"))
            .arg(&tag)
            .stdin(Stdio::null())
            .output()
            .expect("run flock .ci/claude-fixture.sh (is util-linux's flock installed?)");
        assert!(
            out.status.success(),
            "building the Claude Code test image failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tag
    })
}

/// A pod running the real Claude Code against a model server at
/// `base_url`: host network, `--dangerously-skip-permissions`, a
/// world-writable workspace bind-mounted at `/workspace`. Dropping it
/// removes its containers and image tags.
pub struct ClaudePod {
    tmp: tempfile::TempDir,
    name: String,
    workspace: tempfile::TempDir,
}

impl ClaudePod {
    /// A pod whose `pod.json` is the default one plus `extra` (JSON object
    /// fields, e.g. `"maxTurns": 2`, or empty).
    pub fn new(base_url: &str, extra: &str) -> ClaudePod {
        Self::with_env(base_url, extra, &[])
    }

    /// Like [`ClaudePod::new`] with extra `env` entries.
    pub fn with_env(base_url: &str, extra: &str, env: &[(&str, &str)]) -> ClaudePod {
        Self::make(base_url, extra, env, true)
    }

    /// A pod whose agent is long-lived (`agentInput: "stream-json"`) and
    /// whose workspace is the session's own storage (no mount of a test
    /// directory), plus `extra`.
    pub fn persistent(base_url: &str, extra: &str) -> ClaudePod {
        let mut fields = r#""agentInput": "stream-json""#.to_string();
        if !extra.trim().is_empty() {
            fields.push_str(", ");
            fields.push_str(extra);
        }
        Self::make(base_url, &fields, &[], false)
    }

    fn make(base_url: &str, extra: &str, env: &[(&str, &str)], mount: bool) -> ClaudePod {
        let image = claude_image();
        let tmp = tempfile::Builder::new()
            .prefix("cldpd-claude-pods-")
            .tempdir()
            .expect("temp dir");
        let workspace = tempfile::Builder::new()
            .prefix("cldpd-claude-ws-")
            .tempdir()
            .expect("temp dir");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(workspace.path(), std::fs::Permissions::from_mode(0o777))
                .unwrap();
        }
        let name = unique_name();
        let dir = tmp.path().join(&name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM {image}\nLABEL {POD_IMAGE_LABEL}={name}\n"),
        )
        .unwrap();
        let mut env_json = serde_json::json!({
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": TEST_API_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        });
        for (k, v) in env {
            env_json[*k] = serde_json::Value::String(v.to_string());
        }
        let mut json = format!(
            r#"{{"network": "host", "agentCommand": ["claude", "--dangerously-skip-permissions"],
                "workdir": "/workspace", "env": {env_json}"#
        );
        if mount {
            json.push_str(&format!(
                r#", "mounts": [{{"source": "{}", "target": "/workspace"}}]"#,
                workspace.path().display()
            ));
        }
        if !extra.trim().is_empty() {
            json.push_str(", ");
            json.push_str(extra);
        }
        json.push('}');
        std::fs::write(dir.join("pod.json"), json).unwrap();
        ClaudePod {
            tmp,
            name,
            workspace,
        }
    }

    /// The pods directory.
    pub fn pods_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The pod name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host directory mounted at `/workspace`.
    pub fn workspace(&self) -> &Path {
        self.workspace.path()
    }

    /// Containers of this pod, running or not.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("cldpd.pod={}", self.name))
    }
}

impl Drop for ClaudePod {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            docker(["rm", "-f"].into_iter().map(String::from).chain(ids));
        }
        docker([
            OsStr::new("rmi"),
            OsStr::new("-f"),
            OsStr::new("--no-prune"),
            OsStr::new(&format!("cldpd-{}", self.name)),
        ]);
        let filter = format!("label={POD_IMAGE_LABEL}={}", self.name);
        let out = docker(["images", "-aq", "--filter", &filter]);
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            docker(
                ["rmi", "-f", "--no-prune"]
                    .into_iter()
                    .map(String::from)
                    .chain(ids),
            );
        }
    }
}
