//! Support for tests against the real Docker engine.
//!
//! The engine on the project's machines can build images but cannot pull
//! any, so test images are `FROM scratch` with Debian's static busybox
//! copied in, plus a `#!/bin/sh` stub named `claude` standing in for the
//! agent. A [`TestPod`] owns one such pod (its own temporary pods dir and a
//! unique name) and, when dropped, removes every container labelled with
//! its name and the image(s) it created, so that a failing test leaves
//! nothing behind.
//!
//! Build-cache safety: tests run concurrently (threads and processes), and
//! the legacy builder deletes untagged parent layers on `docker rmi` while
//! another build may be reusing them from the cache ("unknown parent image
//! ID"). So every removal uses `docker rmi --no-prune`: the two shared
//! busybox layers stay as untagged build cache (no tag is left behind), and
//! each pod's Dockerfile continues with `LABEL cldpd.test.pod=<name>`, which
//! makes every later layer the pod's own; `Drop` removes exactly the tags
//! it created and the images carrying that label.
//!
//! Tests start with `if !require_docker() { return; }`: without Docker they
//! are skipped with a note, except under `CI=true`, where they fail.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where Debian's `busybox-static` installs the static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// The Dockerfile lines every test pod starts with.
const BASE_DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// A stub agent that prints `ready`, then waits; SIGTERM makes it print
/// `got-term` and exit 0 at once (its wait is interruptible).
pub const TRAP_TERM_STUB: &str =
    "#!/bin/sh\ntrap 'echo got-term; exit 0' TERM\necho ready\nwhile :; do sleep 1 & wait $!; done\n";

/// Label on every image layer that belongs to one test pod.
pub const POD_IMAGE_LABEL: &str = "cldpd.test.pod";

/// The docker binary tests use: `$CLDPD_DOCKER` when set, else `docker`.
pub fn docker_bin() -> String {
    std::env::var("CLDPD_DOCKER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "docker".to_string())
}

/// The backend under test: `CLDPD_RUNTIME` (`cli`, or the Engine API by
/// default; see `cldpd::runtime::Backend`).
pub fn backend() -> cldpd::runtime::Backend {
    cldpd::runtime::Backend::from_env().expect("CLDPD_RUNTIME")
}

/// A runtime of the backend under test.
pub fn runtime() -> std::sync::Arc<dyn cldpd::runtime::Runtime> {
    backend().runtime()
}

/// Run `docker <args>` to completion (stdin closed).
pub fn docker<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(docker_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", docker_bin()))
}

/// Why Docker is unreachable, or `None` when `docker info` works. Checked
/// once per test binary.
fn unreachable_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            match Command::new(docker_bin())
                .args(["info", "--format", "{{.ServerVersion}}"])
                .stdin(Stdio::null())
                .output()
            {
                Err(e) => Some(format!("cannot run `{}`: {e}", docker_bin())),
                Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => None,
                Ok(out) => Some(format!(
                    "`{} info` failed: {}",
                    docker_bin(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        })
        .clone()
}

/// True when the Docker engine answers `docker info`.
pub fn docker_available() -> bool {
    unreachable_reason().is_none()
}

/// True when Docker is reachable. Otherwise panics under `CI=true` (the
/// real-Docker tests must fail there, not skip), or prints
/// `SKIPPED <test>: ...` past the harness's capture and returns false so
/// the test can return early.
pub fn require_docker() -> bool {
    match unreachable_reason() {
        None => true,
        Some(reason) => super::skip_unless_ci(&format!("Docker is unreachable ({reason})")),
    }
}

/// Ids of every container (running or not) matching a label filter such as
/// `cldpd.pod=t-0a1b2c3d` or `cldpd.session`.
pub fn containers_with_label(filter: &str) -> Vec<String> {
    let out = docker(["ps", "-aq", "--filter", &format!("label={filter}")]);
    assert!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// True when a container of this name exists and is running.
pub fn container_running(name: &str) -> bool {
    let out = docker([
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Running}}",
        name,
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// Poll `cond` every 50 ms until it holds; panics naming `what` after
/// `limit`. (Polling a condition with a deadline, not sleeping for luck.)
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique pod name `t-<8 hex>`.
pub fn unique_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{}", &id[..8])
}

/// Builds a [`TestPod`].
#[derive(Debug, Clone)]
pub struct TestPodBuilder {
    stub: Option<String>,
    pod_json: Option<String>,
    extra_dockerfile: Vec<String>,
    files: Vec<(String, String)>,
}

impl TestPodBuilder {
    /// The agent stub (a `#!/bin/sh` script installed as `/bin/claude`).
    pub fn stub(mut self, script: &str) -> Self {
        self.stub = Some(script.to_string());
        self
    }

    /// No `/bin/claude` in the image (for "agent not found").
    pub fn no_agent(mut self) -> Self {
        self.stub = None;
        self
    }

    /// Contents of `pod.json`.
    pub fn pod_json(mut self, json: &str) -> Self {
        self.pod_json = Some(json.to_string());
        self
    }

    /// A line appended to the Dockerfile (e.g. `RUN ["/bin/false"]`).
    pub fn dockerfile_line(mut self, line: &str) -> Self {
        self.extra_dockerfile.push(line.to_string());
        self
    }

    /// An extra file in the pod directory (the build context).
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_string(), contents.to_string()));
        self
    }

    /// Write the pod directory.
    pub fn create(self) -> TestPod {
        let busybox = Path::new(BUSYBOX);
        if !busybox.is_file() {
            panic!("{BUSYBOX} is missing: install busybox-static (apt-get install busybox-static)");
        }
        let tmp = tempfile::Builder::new()
            .prefix("cldpd-test-pods-")
            .tempdir()
            .expect("temp dir");
        let name = unique_name();
        let dir = tmp.path().join(&name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(busybox, dir.join("busybox")).expect("copy busybox");
        ensure_base_image();
        let mut dockerfile = String::from(BASE_DOCKERFILE);
        dockerfile.push_str(&format!("LABEL {POD_IMAGE_LABEL}={name}\n"));
        if let Some(stub) = &self.stub {
            write_executable(&dir.join("claude"), stub);
            dockerfile.push_str("COPY claude /bin/claude\n");
        }
        for line in &self.extra_dockerfile {
            dockerfile.push_str(line);
            dockerfile.push('\n');
        }
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        if let Some(json) = &self.pod_json {
            std::fs::write(dir.join("pod.json"), json).unwrap();
        }
        for (file, contents) in &self.files {
            std::fs::write(dir.join(file), contents).unwrap();
        }
        TestPod {
            tmp,
            name,
            extra_images: Mutex::new(Vec::new()),
        }
    }
}

/// Warm the build cache with the shared busybox layers, untagged (once
/// per test process).
fn ensure_base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if !docker_available() {
            return;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::copy(BUSYBOX, tmp.path().join("busybox")).expect("copy busybox");
        std::fs::write(tmp.path().join("Dockerfile"), BASE_DOCKERFILE).unwrap();
        let out = docker([
            OsStr::new("build"),
            OsStr::new("-q"),
            OsStr::new("--force-rm"),
            tmp.path().as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "building the busybox base layers failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn write_executable(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A pod in its own temporary pods directory, cleaned up (containers
/// labelled `cldpd.pod=<name>`, its image tags, the directory) on drop.
#[derive(Debug)]
pub struct TestPod {
    tmp: tempfile::TempDir,
    name: String,
    extra_images: Mutex<Vec<String>>,
}

/// The default agent stub: prints a line on each stream and exits 0.
pub const ECHO_STUB: &str = "#!/bin/sh\necho \"claude $*\"\necho \"to stderr\" >&2\n";

impl TestPod {
    /// Start describing a pod (default stub: [`ECHO_STUB`]).
    pub fn builder() -> TestPodBuilder {
        TestPodBuilder {
            stub: Some(ECHO_STUB.to_string()),
            pod_json: None,
            extra_dockerfile: Vec::new(),
            files: Vec::new(),
        }
    }

    /// A pod whose agent is `stub`.
    pub fn with_stub(stub: &str) -> TestPod {
        TestPod::builder().stub(stub).create()
    }

    /// The temporary pods directory holding this pod.
    pub fn pods_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The pod directory (the build context).
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join(&self.name)
    }

    /// The Dockerfile.
    pub fn dockerfile(&self) -> PathBuf {
        self.dir().join("Dockerfile")
    }

    /// The pod name (`t-<8 hex>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The default image tag, `cldpd-<name>`.
    pub fn image(&self) -> String {
        format!("cldpd-{}", self.name)
    }

    /// The label filter matching this pod's containers.
    pub fn label_filter(&self) -> String {
        format!("cldpd.pod={}", self.name)
    }

    /// Also remove this image tag on drop.
    pub fn track_image(&self, tag: &str) {
        self.extra_images.lock().unwrap().push(tag.to_string());
    }

    /// Build the image with the docker CLI directly (for tests that are
    /// not about building); panics with the output on failure.
    pub fn build_image(&self) {
        let out = docker([
            OsStr::new("build"),
            OsStr::new("-q"),
            OsStr::new("--force-rm"),
            OsStr::new("-t"),
            OsStr::new(&self.image()),
            self.dir().as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "building {} failed:\n{}\n{}",
            self.image(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Containers labelled with this pod, running or not.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&self.label_filter())
    }

    /// A container name unique to this pod.
    pub fn container_name(&self, suffix: &str) -> String {
        format!("cldpd-{}-{suffix}", self.name)
    }
}

impl Drop for TestPod {
    fn drop(&mut self) {
        if !docker_available() {
            return;
        }
        let ids = lines_of(docker_quiet([
            "ps",
            "-aq",
            "--filter",
            &format!("label={}", self.label_filter()),
        ]));
        if !ids.is_empty() {
            docker_quiet(["rm", "-f"].into_iter().map(String::from).chain(ids));
        }
        let mut tags = vec![self.image()];
        tags.extend(
            self.extra_images
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default(),
        );
        docker_quiet(
            ["rmi", "-f", "--no-prune"]
                .into_iter()
                .map(String::from)
                .chain(tags),
        );
        // Layers of failed builds and anything else built from this pod's
        // Dockerfile.
        remove_images_labelled(&self.name);
    }
}

/// Run docker, ignoring every failure; stdout (empty on failure).
fn docker_quiet<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(docker_bin())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn lines_of(text: String) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// A dispatcher on the default Docker backend over `pod`'s pods directory
/// and the state directory `state`.
pub fn dispatcher(pod: &TestPod, state: &tempfile::TempDir) -> cldpd::Dispatcher {
    cldpd::Dispatcher::docker(cldpd::Settings::new(pod.pods_dir(), state.path()).workers(2))
}

/// Read events until `pred` matches one; returns the events so far.
pub async fn until(
    events: &mut cldpd::EventStream,
    mut pred: impl FnMut(&cldpd::Event) -> bool,
) -> Vec<cldpd::Event> {
    use futures_util::StreamExt;
    let mut seen = Vec::new();
    while let Some(ev) = events.next().await {
        let hit = pred(&ev);
        seen.push(ev);
        if hit {
            return seen;
        }
    }
    panic!("the stream ended first: {seen:#?}");
}

/// Remove every image, intermediate layers included, labelled
/// `POD_IMAGE_LABEL=<name>` (a Dockerfile with that `LABEL` right after its
/// `FROM`): leaves first, a parent goes once its child is gone. (`rmi
/// --no-prune` of a tag leaves a build's intermediate images behind; a
/// pruning `rmi` could delete a layer another test's build is reusing from
/// the cache.)
pub fn remove_images_labelled(name: &str) {
    let filter = format!("label={POD_IMAGE_LABEL}={name}");
    for _ in 0..5 {
        let ids = lines_of(docker_quiet(["images", "-aq", "--filter", &filter]));
        if ids.is_empty() {
            break;
        }
        docker_quiet(
            ["rmi", "-f", "--no-prune"]
                .into_iter()
                .map(String::from)
                .chain(ids),
        );
    }
}
