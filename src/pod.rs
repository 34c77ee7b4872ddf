//! Pods: discovery, `pod.json`, `template.md`, validation.
//!
//! A pod is a directory `<pods-dir>/<name>/`:
//!
//! | file | required | meaning |
//! |---|---|---|
//! | `Dockerfile` | yes | the image; cldpd never writes or interprets it |
//! | `pod.json` | no | configuration ([`PodConfig`]); absent = all defaults |
//! | `template.md` | no | standing orders, prepended to the start prompt (not on resume) |
//!
//! # Pod names
//!
//! A pod name is one directory name that Docker accepts in the image tag
//! `cldpd-<name>`: lowercase letters and digits, separated by a single `.`,
//! one or two `_`, or any number of `-`; starting and ending with a letter or
//! digit; at most [`MAX_POD_NAME_LEN`] characters. [`validate_pod_name`]
//! checks this before anything touches the file system, so `../x`, `/x`,
//! `a/b` or `Web` never reach a path or a `docker` command line.
//!
//! A pod directory may be a symbolic link, as long as it resolves to a
//! directory *inside* the pods directory; one that leads outside is refused
//! with [`Error::InvalidPodName`] (the name would otherwise smuggle an
//! arbitrary build context past the name check).
//!
//! # When things are checked
//!
//! [`Pod::discover`] checks everything that does not depend on the host it
//! runs on: the name, the Dockerfile, the syntax and field names of
//! `pod.json` ([`PodConfig::load`]) and its values ([`PodConfig::validate`]).
//! Mount sources are checked at dispatch time by [`Pod::resolve_mounts`],
//! because `~` depends on the host's `HOME`. [`Pod::check`] runs every check
//! at once and returns all problems (for `cldpd doctor` / `cldpd pods`).
//!
//! # Mounts and environment
//!
//! A mount `source` of `~` or `~/...` is expanded to `$HOME` (`~user` is not
//! supported); a relative source is resolved against the pod directory; an
//! absolute one is taken as is. The source must exist: cldpd does not let
//! Docker create an empty directory in its place.
//!
//! The container environment is `inheritEnv` (looked up on the host at
//! dispatch time, unset names skipped silently) overlaid by `env`: an
//! explicit `env` value wins over an inherited one.
//!
//! ```
//! use cldpd::pod::Pod;
//!
//! let pods = tempfile::tempdir()?;
//! let web = pods.path().join("web");
//! std::fs::create_dir(&web)?;
//! std::fs::write(web.join("Dockerfile"), "FROM scratch\n")?;
//! std::fs::write(web.join("pod.json"), r#"{ "env": { "MODE": "ci" }, "inheritEnv": ["GH_TOKEN"] }"#)?;
//!
//! let pod = Pod::discover(pods.path(), "web")?;
//! let env = pod.resolve_env(&|name| (name == "GH_TOKEN").then(|| "t0k3n".to_string()))?;
//! let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
//! assert_eq!(names, ["GH_TOKEN", "MODE"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::runtime::{BindMount, Resources, SecretValue};

/// The prefix of the default image tag: a pod `web` builds `cldpd-web`.
pub const IMAGE_PREFIX: &str = "cldpd-";

/// The longest pod name: Docker allows 128 characters in a tag and the
/// default tag is `cldpd-<name>`.
pub const MAX_POD_NAME_LEN: usize = 128 - IMAGE_PREFIX.len();

/// The agent program run when `pod.json` has no `agentCommand`.
pub const DEFAULT_AGENT_COMMAND: &str = "claude";

/// The file name of the Dockerfile inside a pod directory.
pub const DOCKERFILE: &str = "Dockerfile";

/// The file name of the configuration inside a pod directory.
pub const POD_CONFIG_FILE: &str = "pod.json";

/// The file name of the standing orders inside a pod directory.
pub const TEMPLATE_FILE: &str = "template.md";

/// Every field name `pod.json` accepts, as written in the file (camelCase).
pub const POD_CONFIG_FIELDS: &[&str] = &[
    "image",
    "env",
    "buildArgs",
    "workdir",
    "inheritEnv",
    "mounts",
    "agentCommand",
    "stopGraceSecs",
    "restart",
    "maxRestarts",
    "withinSecs",
    "backoffMs",
    "backoffMaxMs",
    "timeoutSecs",
    "idleTimeoutSecs",
    "cpus",
    "memory",
    "pidsLimit",
    "agentOutput",
    "maxTurns",
    "maxBudgetUsd",
    "network",
];

/// The field names of one entry of `mounts`.
const MOUNT_FIELDS: &[&str] = &["source", "target", "readOnly"];

/// The values of `restart`, as written in the file.
const RESTART_VALUES: &[&str] = &["never", "on-failure", "always"];

/// Reason given when a pod directory resolves outside the pods directory.
const SYMLINK_OUTSIDE: &str =
    "the pod directory is a symbolic link that leads outside the pods directory";

/// Restart policy of a run (`pod.json` `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (the default, as in the Go original).
    #[default]
    Never,
    /// Restart after a non-zero exit or a runtime failure.
    OnFailure,
    /// Restart after every exit (until stopped or the limit is reached).
    Always,
}

/// A bind mount as written in `pod.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// Host path; `~` and `~/` are expanded to the home directory, a
    /// relative path is resolved against the pod directory.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// `pod.json`. Every field is optional.
///
/// [`PodConfig::load`] parses the file (unknown or misspelled fields are
/// errors that name the field); [`PodConfig::validate`] checks the values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodConfig {
    /// Image tag; default `cldpd-<pod name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment variables for the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `docker build --build-arg` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Host variables forwarded at dispatch time (unset ones skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Bind mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// The agent program and its fixed leading arguments; default
    /// `["claude"]`. cldpd appends `-p [--output-format stream-json
    /// --verbose] --session-id <uuid>` on start and `-p [...] --resume
    /// <uuid>` on resume; the prompt goes on the agent's stdin, never in
    /// argv (see [`crate::agent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_command: Option<Vec<String>>,
    /// Seconds between SIGTERM and SIGKILL when the run is stopped; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_secs: Option<f64>,
    /// Restart policy; default `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Most restarts allowed within `withinSecs`; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// The restart-intensity period in seconds; default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_secs: Option<f64>,
    /// First restart back-off in milliseconds, doubled each restart; default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Back-off cap in milliseconds; default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// Wall-clock limit of the whole run in seconds; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// Limit on time without output in seconds; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<f64>,
    /// CPU limit (`docker run --cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. `"2g"`, `"512m"` (`docker run --memory`); see
    /// [`parse_memory`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Process limit (`docker run --pids-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
    /// What the agent prints: `"stream-json"` (default, Claude Code, parsed
    /// into typed agent events) or `"text"` (any other agent); see
    /// [`crate::agent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_output: Option<crate::agent::AgentOutput>,
    /// Most agent turns (`claude --max-turns`); exceeding it ends the run
    /// with the error `agent_max_turns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Most US dollars the agent may spend (`claude --max-budget-usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// The container's network (`docker run --network`): `"bridge"`
    /// (default), `"none"` (no network: a sandboxed agent), `"host"`, or the
    /// name of a Docker network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A discovered pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// Pod name (the directory name).
    pub name: String,
    /// Absolute pod directory (canonical: symbolic links resolved).
    pub dir: PathBuf,
    /// Parsed `pod.json` (defaults when absent).
    pub config: PodConfig,
    /// Absolute path of the Dockerfile.
    pub dockerfile: PathBuf,
    /// Contents of `template.md` without trailing white space, when present
    /// and not blank.
    pub template: Option<String>,
}

/// One entry of [`discover_all`]: a pod directory and whether it is valid.
#[derive(Debug, Clone)]
pub struct PodEntry {
    /// Directory name.
    pub name: String,
    /// The pod, or why it is invalid.
    pub pod: Result<Pod>,
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Refuse names that are not a plain directory name Docker accepts in a tag.
///
/// Nothing touches the file system. The rules are those of a Docker
/// repository path component (the default image tag is `cldpd-<name>`):
/// lowercase `[a-z0-9]` runs separated by a single `.`, one or two `_`, or
/// one or more `-`, starting and ending with a letter or digit, at most
/// [`MAX_POD_NAME_LEN`] characters. The error's `reason` says which rule
/// the name breaks.
///
/// ```
/// use cldpd::pod::validate_pod_name;
/// use cldpd::Error;
///
/// assert!(validate_pod_name("my-pod").is_ok());
/// assert!(validate_pod_name("api.v2").is_ok());
/// for bad in ["", "..", "../x", "/x", "a/b", "Web", "a..b", "-a"] {
///     assert!(matches!(validate_pod_name(bad), Err(Error::InvalidPodName { .. })), "{bad}");
/// }
/// let err = validate_pod_name("Web").unwrap_err();
/// assert!(err.to_string().contains("uppercase"));
/// ```
pub fn validate_pod_name(name: &str) -> Result<()> {
    match pod_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidPodName {
            name: name.to_string(),
            reason,
        }),
    }
}

fn pod_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not pod names");
    }
    if name.starts_with(['/', '\\']) {
        return Some("an absolute path is not a pod name");
    }
    if name.contains(['/', '\\']) {
        if name.split(['/', '\\']).any(|c| c == "..") {
            return Some("a pod name cannot contain `..`: it would leave the pods directory");
        }
        return Some("a pod name cannot contain `/` or `\\`: it is one directory name, not a path");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    if name.chars().any(char::is_uppercase) {
        return Some("uppercase letters are not allowed: Docker image tags (`cldpd-<name>`) must be lowercase");
    }
    if let Some(reason) = path_component_problem(name) {
        return Some(reason);
    }
    if name.len() > MAX_POD_NAME_LEN {
        return Some(
            "longer than 122 characters: the image tag `cldpd-<name>` may have at most 128",
        );
    }
    None
}

/// Docker's grammar for one component of a repository path:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn path_component_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("is empty");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only lowercase letters, digits, '.', '_' and '-' are allowed");
    }
    let bytes = s.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() {
        return Some("must start with a lowercase letter or digit");
    }
    if !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Some("must end with a lowercase letter or digit");
    }
    let bad_separator = s
        .split(|c: char| c.is_ascii_alphanumeric())
        .filter(|run| !run.is_empty())
        .any(|run| !(run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-')));
    if bad_separator {
        return Some("letters and digits may be separated only by one '.', one or two '_', or dashes (not `..`, `___` or a mix like `.-`)");
    }
    None
}

/// True when `name` is a valid environment variable name,
/// `[A-Za-z_][A-Za-z0-9_]*`.
///
/// ```
/// use cldpd::pod::is_valid_env_name;
/// assert!(is_valid_env_name("GH_TOKEN"));
/// assert!(!is_valid_env_name("1X") && !is_valid_env_name("A-B") && !is_valid_env_name(""));
/// ```
pub fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// [`is_valid_env_name`] as a `Result`: [`Error::InvalidEnvName`] naming
/// `origin` (where the name came from, e.g. `"/pods/web/pod.json env"` or
/// `"--env"`).
pub fn validate_env_name(name: &str, origin: &str) -> Result<()> {
    if is_valid_env_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidEnvName {
            name: name.to_string(),
            origin: origin.to_string(),
        })
    }
}

/// Check a Docker image reference usable as a build tag:
/// `[host[:port]/]path[:tag]`, no digest. Returns what is wrong.
fn image_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("the image name is empty".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace or control characters".into());
    }
    if image.contains('@') {
        return Some(
            "digests (`@sha256:...`) are not allowed: `image` is the tag cldpd builds".into(),
        );
    }
    let (name, tag) = match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    };
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Some(format!(
                "tag `{tag}` is invalid: a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ));
        }
    }
    if name.len() > 255 {
        return Some("the repository name is longer than 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && looks_like_registry(components[0]) {
        let host = components.remove(0);
        if let Some(problem) = host_problem(host) {
            return Some(format!("registry `{host}`: {problem}"));
        }
    }
    for c in components {
        if c.is_empty() {
            return Some(
                "it has an empty path component (`//`, or a leading or trailing `/`)".into(),
            );
        }
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Some(format!(
                "`{c}` has uppercase letters: repository names must be lowercase"
            ));
        }
        if let Some(problem) = path_component_problem(c) {
            return Some(format!("path component `{c}`: {problem}"));
        }
    }
    None
}

/// Docker's rule: the first component is a registry when it has a `.` or a
/// `:`, is `localhost`, or has uppercase letters.
fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.bytes().any(|b| b.is_ascii_uppercase())
}

/// `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// A host name with an optional port: labels of letters, digits and `-`
/// (not at either end) separated by `.`. Returns what is wrong.
fn host_problem(host: &str) -> Option<&'static str> {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Some("the port must be a number from 0 to 65535");
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Some("not a host name (letters, digits and '-', separated by '.')");
    }
    None
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

impl Pod {
    /// Discover one pod: `<pods_dir>/<name>/`.
    ///
    /// Checks, in order: the name ([`validate_pod_name`], before touching
    /// the file system); that the pods directory exists
    /// ([`Error::PodsDirMissing`]); that the pod directory exists
    /// ([`Error::PodNotFound`], listing the pods that do); that it stays
    /// inside the pods directory once symbolic links are resolved
    /// ([`Error::InvalidPodName`]); that it has a `Dockerfile`
    /// ([`Error::InvalidPod`]); then loads `pod.json` ([`PodConfig::load`])
    /// and checks its values ([`PodConfig::validate`]), and reads
    /// `template.md` (a blank template counts as none). Mount sources are
    /// not checked here (see [`Pod::resolve_mounts`]).
    ///
    /// ```
    /// use cldpd::pod::Pod;
    /// use cldpd::Error;
    ///
    /// let pods = tempfile::tempdir()?;
    /// let web = pods.path().join("web");
    /// std::fs::create_dir(&web)?;
    /// std::fs::write(web.join("Dockerfile"), "FROM scratch\n")?;
    /// std::fs::write(web.join("template.md"), "Run the tests first.\n")?;
    ///
    /// let pod = Pod::discover(pods.path(), "web")?;
    /// assert_eq!(pod.image(), "cldpd-web");
    /// assert!(pod.dir.is_absolute() && pod.dockerfile.ends_with("web/Dockerfile"));
    /// assert_eq!(
    ///     pod.start_prompt_for_issue("https://github.com/o/r/issues/7"),
    ///     "Run the tests first.\n\nWork on this GitHub issue: https://github.com/o/r/issues/7"
    /// );
    ///
    /// match Pod::discover(pods.path(), "api") {
    ///     Err(Error::PodNotFound { available, .. }) => assert_eq!(available, ["web"]),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discover(pods_dir: &Path, name: &str) -> Result<Pod> {
        validate_pod_name(name)?;
        let pods_canonical = canonical_pods_dir(pods_dir)?;
        let candidate = pods_dir.join(name);
        if !fs::metadata(&candidate).is_ok_and(|m| m.is_dir()) {
            return Err(Error::PodNotFound {
                name: name.to_string(),
                pods_dir: pods_dir.to_path_buf(),
                available: available_pods(pods_dir),
            });
        }
        let dir = fs::canonicalize(&candidate).map_err(|e| {
            Error::io(
                format!("resolving pod directory {}", candidate.display()),
                e,
            )
        })?;
        if dir == pods_canonical || !dir.starts_with(&pods_canonical) {
            return Err(Error::InvalidPodName {
                name: name.to_string(),
                reason: SYMLINK_OUTSIDE,
            });
        }
        let dockerfile = dir.join(DOCKERFILE);
        if !dockerfile.is_file() {
            return Err(Error::InvalidPod {
                name: name.to_string(),
                dir,
            });
        }
        let config_path = dir.join(POD_CONFIG_FILE);
        let config = if present(&config_path)? {
            PodConfig::load(&config_path)?
        } else {
            PodConfig::default()
        };
        config.validate(name, &config_path)?;
        let template = read_template(&dir.join(TEMPLATE_FILE))?;
        Ok(Pod {
            name: name.to_string(),
            dir,
            config,
            dockerfile,
            template,
        })
    }

    /// The path of this pod's `pod.json` (whether or not it exists); errors
    /// about the configuration name it.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(POD_CONFIG_FILE)
    }

    /// The image tag: `config.image` or `cldpd-<name>`.
    pub fn image(&self) -> String {
        match &self.config.image {
            Some(image) => image.clone(),
            None => format!("{IMAGE_PREFIX}{}", self.name),
        }
    }

    /// The agent command prefix: `config.agent_command` or `["claude"]`.
    pub fn agent_command(&self) -> Vec<String> {
        match &self.config.agent_command {
            Some(command) => command.clone(),
            None => vec![DEFAULT_AGENT_COMMAND.to_string()],
        }
    }

    /// Resolve the bind mounts for `docker run`, expanding `~` with the
    /// `HOME` of this process. See [`Pod::resolve_mounts_with_home`].
    pub fn resolve_mounts(&self) -> Result<Vec<BindMount>> {
        self.resolve_mounts_with_home(home_dir().as_deref())
    }

    /// Resolve the bind mounts with an explicit home directory (`None`: no
    /// home, so a `~` source is an error).
    ///
    /// `~` and `~/...` expand to `home` (`~user` is not supported); a
    /// relative source is resolved against the pod directory; the source
    /// must exist ([`Error::MountSourceMissing`], naming the expanded path)
    /// and is returned canonical (absolute, symbolic links resolved). The
    /// target must be an absolute container path
    /// ([`Error::MountTargetRelative`]).
    pub fn resolve_mounts_with_home(&self, home: Option<&Path>) -> Result<Vec<BindMount>> {
        let config_path = self.config_path();
        self.config
            .mounts
            .iter()
            .enumerate()
            .map(|(i, mount)| {
                if let Some(err) = mount_problem(&self.name, &config_path, i, mount) {
                    return Err(err);
                }
                Ok(BindMount {
                    source: self.mount_source(i, &mount.source, home)?,
                    target: mount.target.clone(),
                    read_only: mount.read_only,
                })
            })
            .collect()
    }

    /// Expand and check one mount source (its syntax already checked).
    fn mount_source(&self, index: usize, source: &str, home: Option<&Path>) -> Result<PathBuf> {
        let under_home = if source == "~" {
            Some("")
        } else {
            source.strip_prefix("~/")
        };
        let path = match under_home {
            Some(rest) => {
                let Some(home) = home else {
                    return Err(Error::PodConfig {
                        path: self.config_path(),
                        field: Some(format!("mounts[{index}].source")),
                        message: format!(
                            "`{source}` cannot be expanded: HOME is not set; use an absolute path"
                        ),
                    });
                };
                if rest.is_empty() {
                    home.to_path_buf()
                } else {
                    home.join(rest)
                }
            }
            None => self.dir.join(source),
        };
        match fs::canonicalize(&path) {
            Ok(canonical) => Ok(canonical),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Err(Error::MountSourceMissing {
                    pod: self.name.clone(),
                    source_path: path,
                })
            }
            Err(e) => Err(Error::io(
                format!(
                    "pod `{}`: resolving mount source {}",
                    self.name,
                    path.display()
                ),
                e,
            )),
        }
    }

    /// The container environment: each `inheritEnv` name looked up with
    /// `lookup` (unset names are skipped silently), then the `env` map on
    /// top — an explicit `env` value wins over an inherited one. Names are
    /// validated ([`Error::InvalidEnvName`]). Sorted by name; values are
    /// [`SecretValue`]s, meant for the docker client's environment only.
    pub fn resolve_env(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, SecretValue)>> {
        let config_path = self.config_path();
        let mut out = BTreeMap::new();
        let inherit_origin = origin(&config_path, "inheritEnv");
        for name in &self.config.inherit_env {
            validate_env_name(name, &inherit_origin)?;
            if self.config.env.contains_key(name) {
                continue;
            }
            if let Some(value) = lookup(name) {
                out.insert(name.clone(), SecretValue::new(value));
            }
        }
        out.extend(secret_map(&config_path, "env", &self.config.env)?);
        Ok(out.into_iter().collect())
    }

    /// The `buildArgs` map as `(name, value)` sorted by name, names
    /// validated ([`Error::InvalidEnvName`]).
    pub fn resolve_build_args(&self) -> Result<Vec<(String, SecretValue)>> {
        secret_map(&self.config_path(), "buildArgs", &self.config.build_args)
    }

    /// The start prompt for a GitHub issue:
    /// `<template>\n\nWork on this GitHub issue: <url>`, or without the
    /// template part when the pod has none. Validate the URL first with
    /// [`validate_issue_url`].
    pub fn start_prompt_for_issue(&self, url: &str) -> String {
        self.start_prompt_for_text(&format!("Work on this GitHub issue: {url}"))
    }

    /// The start prompt for a free-form task: `<template>\n\n<prompt>`, or
    /// `prompt` alone when the pod has no template. Validate the prompt
    /// first with [`validate_prompt`].
    pub fn start_prompt_for_text(&self, prompt: &str) -> String {
        match &self.template {
            Some(template) => format!("{template}\n\n{prompt}"),
            None => prompt.to_string(),
        }
    }

    /// Every problem with this pod, for `cldpd doctor` / `cldpd pods`: a
    /// missing Dockerfile, every invalid `pod.json` value
    /// ([`PodConfig::problems`]) and every mount source that does not exist
    /// on this host. Empty when the pod is ready to run.
    pub fn check(&self) -> Vec<Error> {
        self.check_with_home(home_dir().as_deref())
    }

    fn check_with_home(&self, home: Option<&Path>) -> Vec<Error> {
        let mut problems = Vec::new();
        if !self.dockerfile.is_file() {
            problems.push(Error::InvalidPod {
                name: self.name.clone(),
                dir: self.dir.clone(),
            });
        }
        let config_path = self.config_path();
        problems.extend(self.config.problems(&self.name, &config_path));
        for (i, mount) in self.config.mounts.iter().enumerate() {
            // A source whose syntax is wrong is already reported above.
            if mount_source_problem(&config_path, i, &mount.source).is_none() {
                if let Err(err) = self.mount_source(i, &mount.source, home) {
                    problems.push(err);
                }
            }
        }
        problems
    }
}

/// Check that a prompt (start task or resume follow-up) is usable: not
/// empty or blank ([`Error::EmptyPrompt`]) and free of NUL bytes (which
/// cannot be passed in argv; [`Error::InvalidOption`]).
pub fn validate_prompt(prompt: &str) -> Result<()> {
    if prompt.trim().is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if prompt.contains('\0') {
        return Err(Error::InvalidOption {
            option: "prompt".into(),
            message: "contains a NUL byte".into(),
        });
    }
    Ok(())
}

/// Discover every pod in `pods_dir`: one [`PodEntry`] per subdirectory
/// (symbolic links to directories included), sorted by name. Hidden
/// directories (`.name`) and plain files are skipped. Each entry carries
/// the result of [`Pod::discover`], so an invalid pod is listed with its
/// error instead of hiding the others.
///
/// ```
/// let pods = tempfile::tempdir()?;
/// std::fs::create_dir_all(pods.path().join("web"))?;
/// std::fs::write(pods.path().join("web/Dockerfile"), "FROM scratch\n")?;
/// std::fs::create_dir_all(pods.path().join("empty"))?;
///
/// let entries = cldpd::pod::discover_all(pods.path())?;
/// let summary: Vec<(&str, bool)> = entries.iter().map(|e| (e.name.as_str(), e.pod.is_ok())).collect();
/// assert_eq!(summary, [("empty", false), ("web", true)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn discover_all(pods_dir: &Path) -> Result<Vec<PodEntry>> {
    canonical_pods_dir(pods_dir)?;
    let read = fs::read_dir(pods_dir)
        .map_err(|e| Error::io(format!("reading pods directory {}", pods_dir.display()), e))?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry
            .map_err(|e| Error::io(format!("reading pods directory {}", pods_dir.display()), e))?;
        let os_name = entry.file_name();
        let lossy = os_name.to_string_lossy().into_owned();
        if lossy.starts_with('.') || !fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let pod = match os_name.to_str() {
            Some(name) => Pod::discover(pods_dir, name),
            None => Err(Error::InvalidPodName {
                name: lossy.clone(),
                reason: "the directory name is not valid UTF-8",
            }),
        };
        entries.push(PodEntry { name: lossy, pod });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Check that the pods directory exists and return it canonical.
fn canonical_pods_dir(pods_dir: &Path) -> Result<PathBuf> {
    let context = || format!("pods directory {}", pods_dir.display());
    match fs::metadata(pods_dir) {
        Ok(meta) if meta.is_dir() => {
            fs::canonicalize(pods_dir).map_err(|e| Error::io(context(), e))
        }
        Ok(_) => Err(Error::io(
            context(),
            io::Error::new(
                io::ErrorKind::NotADirectory,
                "it is a file, not a directory",
            ),
        )),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Err(Error::PodsDirMissing {
                path: pods_dir.to_path_buf(),
            })
        }
        Err(e) => Err(Error::io(context(), e)),
    }
}

/// Best effort: the valid pod names in `pods_dir` that have a Dockerfile.
fn available_pods(pods_dir: &Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            (pod_name_problem(&name).is_none() && entry.path().join(DOCKERFILE).is_file())
                .then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// Whether a file is there at all (a dangling symbolic link counts, so that
/// reading it reports the problem instead of silently using defaults).
fn present(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn read_template(path: &Path) -> Result<Option<String>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if text.contains('\0') {
        return Err(Error::io(
            format!("reading {}", path.display()),
            io::Error::new(
                io::ErrorKind::InvalidData,
                "it contains a NUL byte, which cannot be passed to the agent",
            ),
        ));
    }
    let text = text.trim_end();
    Ok((!text.trim_start().is_empty()).then(|| text.to_string()))
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

/// `"<path to pod.json> <field>"`, the `origin` of an env name error.
fn origin(config_path: &Path, field: &str) -> String {
    format!("{} {field}", config_path.display())
}

fn secret_map(
    config_path: &Path,
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<Vec<(String, SecretValue)>> {
    let name_origin = origin(config_path, field);
    map.iter()
        .map(|(name, value)| {
            validate_env_name(name, &name_origin)?;
            if value.contains('\0') {
                return Err(nul_value(config_path, field, name));
            }
            Ok((name.clone(), SecretValue::new(value.clone())))
        })
        .collect()
}

fn nul_value(config_path: &Path, field: &str, name: &str) -> Error {
    Error::PodConfig {
        path: config_path.to_path_buf(),
        field: Some(format!("{field}.{name}")),
        message: format!("the value of `{name}` in `{field}` contains a NUL byte"),
    }
}

/// The host-independent problems of one mount: target, then source syntax.
fn mount_problem(pod: &str, config_path: &Path, index: usize, mount: &Mount) -> Option<Error> {
    mount_target_problem(pod, config_path, index, &mount.target)
        .or_else(|| mount_source_problem(config_path, index, &mount.source))
}

fn mount_target_problem(
    pod: &str,
    config_path: &Path,
    index: usize,
    target: &str,
) -> Option<Error> {
    if !target.starts_with('/') {
        return Some(Error::MountTargetRelative {
            pod: pod.to_string(),
            target: target.to_string(),
        });
    }
    if target.trim_end_matches('/').is_empty() {
        return Some(Error::PodConfig {
            path: config_path.to_path_buf(),
            field: Some(format!("mounts[{index}].target")),
            message: "a mount cannot replace the container's root `/`".into(),
        });
    }
    if target.contains('\0') {
        return Some(nul_field(config_path, &format!("mounts[{index}].target")));
    }
    None
}

fn mount_source_problem(config_path: &Path, index: usize, source: &str) -> Option<Error> {
    let field = || Some(format!("mounts[{index}].source"));
    if source.is_empty() {
        return Some(Error::PodConfig {
            path: config_path.to_path_buf(),
            field: field(),
            message: "the mount source is empty".into(),
        });
    }
    if source.starts_with('~') && source != "~" && !source.starts_with("~/") {
        return Some(Error::PodConfig {
            path: config_path.to_path_buf(),
            field: field(),
            message: format!(
                "`{source}`: `~user` is not supported; use `~`, `~/...`, an absolute path, or a path relative to the pod directory"
            ),
        });
    }
    if source.contains('\0') {
        return Some(nul_field(config_path, &format!("mounts[{index}].source")));
    }
    None
}

fn nul_field(config_path: &Path, field: &str) -> Error {
    Error::PodConfig {
        path: config_path.to_path_buf(),
        field: Some(field.to_string()),
        message: format!("`{field}` contains a NUL byte"),
    }
}

// ---------------------------------------------------------------------------
// Issue URLs
// ---------------------------------------------------------------------------

/// Validate an issue URL: `http(s)://<host>/<owner>/<repo>/issues/<number>`.
///
/// Any host is accepted (github.com, www.github.com, GitHub Enterprise); a
/// trailing `/`, a `?query` and a `#fragment` are tolerated. `owner` and
/// `repo` are `[A-Za-z0-9_.-]+`. The error's `reason` says what is wrong.
///
/// ```
/// use cldpd::pod::validate_issue_url;
/// assert!(validate_issue_url("https://github.com/owner/repo/issues/42").is_ok());
/// assert!(validate_issue_url("https://ghe.example.com/team/app/issues/7/").is_ok());
/// let err = validate_issue_url("https://github.com/owner/repo/pull/42").unwrap_err();
/// assert!(err.to_string().contains("pull request"));
/// ```
pub fn validate_issue_url(url: &str) -> Result<()> {
    match issue_url_problem(url) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidIssueUrl {
            url: url.to_string(),
            reason,
        }),
    }
}

fn issue_url_problem(url: &str) -> Option<&'static str> {
    if url.trim().is_empty() {
        return Some("the issue URL is missing");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    let Some(rest) = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
    else {
        return Some("not an http(s) URL");
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host_problem(authority).is_some() {
        return Some("the host is missing or is not a host name");
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let [owner, repo, kind, number] = segments[..] else {
        return Some("path must be /<owner>/<repo>/issues/<number>");
    };
    if owner.is_empty() || repo.is_empty() {
        return Some("path must be /<owner>/<repo>/issues/<number>");
    }
    let name_ok = |s: &str| {
        s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    if !name_ok(owner) || !name_ok(repo) {
        return Some("owner and repository may contain only letters, digits, '.', '_' and '-'");
    }
    if kind == "pull" {
        return Some("this is a pull request URL, not an issue URL");
    }
    if kind != "issues" {
        return Some("path must be /<owner>/<repo>/issues/<number>");
    }
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Some("issue number must be digits");
    }
    if number.bytes().all(|b| b == b'0') {
        return Some("issue number must be 1 or more");
    }
    None
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

// ---------------------------------------------------------------------------
// pod.json
// ---------------------------------------------------------------------------

/// Parse a memory size: a number (integer or decimal) with an optional unit
/// `b`, `k`, `m` or `g` (any case; powers of 1024, as Docker counts), e.g.
/// `"512m"`, `"2G"`, `"1.5g"`, `"1048576"`. `None` when it is not one or
/// does not fit in a `u64`.
///
/// ```
/// use cldpd::pod::parse_memory;
/// assert_eq!(parse_memory("512m"), Some(512 * 1024 * 1024));
/// assert_eq!(parse_memory("1.5G"), Some(3 << 29));
/// assert_eq!(parse_memory("2 gigs"), None);
/// ```
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, multiplier) = match text.chars().last()?.to_ascii_lowercase() {
        'b' => (&text[..text.len() - 1], 1u64),
        'k' => (&text[..text.len() - 1], 1 << 10),
        'm' => (&text[..text.len() - 1], 1 << 20),
        'g' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    match fraction {
        None => whole.parse::<u64>().ok()?.checked_mul(multiplier),
        Some(_) => {
            let bytes = number.parse::<f64>().ok()? * multiplier as f64;
            // u64::MAX as f64 rounds up to 2^64, which does not fit.
            (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
        }
    }
}

impl PodConfig {
    /// Read and parse `pod.json`. Does not check values (see
    /// [`PodConfig::validate`]).
    ///
    /// An unreadable file is [`Error::Io`]. Everything else wrong is
    /// [`Error::PodConfig`] naming `path`, with `field` set to the offending
    /// field where one is to blame (`"imgae"`, `"maxRestarts"`,
    /// `"mounts[1].readOnly"`, `"env.TOKEN"`), a "did you mean" suggestion
    /// for a misspelled field, and the line and column. An empty file or
    /// one that is not a JSON object has `field: None`.
    pub fn load(path: &Path) -> Result<PodConfig> {
        let bytes =
            fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match String::from_utf8(bytes) {
            Ok(text) => PodConfig::from_json(&text, path),
            Err(e) => Err(Error::PodConfig {
                path: path.to_path_buf(),
                field: None,
                message: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            }),
        }
    }

    /// Parse `pod.json` text, as [`PodConfig::load`] does; `path` only names
    /// the source in errors (it may describe a request override instead).
    pub fn from_json(text: &str, path: &Path) -> Result<PodConfig> {
        let error = |field: Option<String>, message: String| Error::PodConfig {
            path: path.to_path_buf(),
            field,
            message,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(error(
                None,
                "the file is empty; write `{}` for all defaults, or delete it".into(),
            ));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| error(None, format!("invalid JSON: {e}")))?;
        let Value::Object(root) = &value else {
            return Err(error(
                None,
                format!(
                    "must be one JSON object (`{{ ... }}`), not {}",
                    kind_of(&value)
                ),
            ));
        };
        serde_json::from_str(text).map_err(|e| {
            let (field, message) = describe_data_error(text, root, &e);
            error(field, message)
        })
    }

    /// Every problem with the values, in field order; empty when valid.
    ///
    /// `pod` names the pod (for mount errors) and `config_path` the file (or
    /// other source) the values came from. Checks: env, `inheritEnv` and
    /// `buildArgs` names ([`Error::InvalidEnvName`]); `image` is a Docker
    /// reference usable as a build tag; `workdir` is absolute; mount
    /// targets are absolute ([`Error::MountTargetRelative`]) and sources are
    /// not empty or `~user`; `agentCommand` is not empty; the durations are
    /// finite, not negative and not absurdly large; `cpus` is above 0;
    /// `memory` parses ([`parse_memory`]) and is above 0. Mount sources are
    /// not looked up (see [`Pod::resolve_mounts`]).
    pub fn problems(&self, pod: &str, config_path: &Path) -> Vec<Error> {
        let mut problems = Vec::new();
        let field_error = |field: &str, message: String| Error::PodConfig {
            path: config_path.to_path_buf(),
            field: Some(field.to_string()),
            message,
        };
        if let Some(image) = &self.image {
            if let Some(problem) = image_problem(image) {
                problems.push(field_error(
                    "image",
                    format!("`{image}` is not a valid image tag: {problem}"),
                ));
            }
        }
        for (field, map) in [("env", &self.env), ("buildArgs", &self.build_args)] {
            let name_origin = origin(config_path, field);
            for (name, value) in map {
                if !is_valid_env_name(name) {
                    problems.push(Error::InvalidEnvName {
                        name: name.clone(),
                        origin: name_origin.clone(),
                    });
                }
                if value.contains('\0') {
                    problems.push(nul_value(config_path, field, name));
                }
            }
        }
        if let Some(workdir) = &self.workdir {
            if !workdir.starts_with('/') {
                problems.push(field_error(
                    "workdir",
                    format!("`{workdir}` is not an absolute container path; use e.g. /workspace"),
                ));
            } else if workdir.contains('\0') {
                problems.push(nul_field(config_path, "workdir"));
            }
        }
        let inherit_origin = origin(config_path, "inheritEnv");
        for name in &self.inherit_env {
            if !is_valid_env_name(name) {
                problems.push(Error::InvalidEnvName {
                    name: name.clone(),
                    origin: inherit_origin.clone(),
                });
            }
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            problems.extend(mount_target_problem(pod, config_path, i, &mount.target));
            problems.extend(mount_source_problem(config_path, i, &mount.source));
        }
        if let Some(command) = &self.agent_command {
            match command.first() {
                None => problems.push(field_error(
                    "agentCommand",
                    "is empty; name the agent program first, or remove the field to run `claude`"
                        .into(),
                )),
                Some(program) if program.trim().is_empty() => problems.push(field_error(
                    "agentCommand",
                    "the first element (the agent program) is empty".into(),
                )),
                Some(_) if command.iter().any(|arg| arg.contains('\0')) => {
                    problems.push(nul_field(config_path, "agentCommand"))
                }
                Some(_) => {}
            }
        }
        for (field, value) in [
            ("stopGraceSecs", self.stop_grace_secs),
            ("withinSecs", self.within_secs),
            ("timeoutSecs", self.timeout_secs),
            ("idleTimeoutSecs", self.idle_timeout_secs),
        ] {
            if let Some(message) = value.and_then(seconds_problem) {
                problems.push(field_error(field, message));
            }
        }
        if let Some(cpus) = self.cpus {
            if !cpus.is_finite() || cpus <= 0.0 {
                problems.push(field_error(
                    "cpus",
                    format!("`{cpus}` must be a number above 0, e.g. 1.5"),
                ));
            }
        }
        if let Some(usd) = self.max_budget_usd {
            if !usd.is_finite() || usd <= 0.0 {
                problems.push(field_error(
                    "maxBudgetUsd",
                    format!("`{usd}` must be an amount above 0, e.g. 2.5"),
                ));
            }
        }
        if self.max_turns == Some(0) {
            problems.push(field_error("maxTurns", "must be at least 1".into()));
        }
        if let Some(net) = &self.network {
            let ok = !net.is_empty()
                && !net.starts_with('-')
                && net
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
            if !ok {
                problems.push(field_error(
                    "network",
                    format!("`{net}` is not a network name; use \"bridge\", \"none\", \"host\" or the name of a Docker network"),
                ));
            }
        }
        if let Some(memory) = &self.memory {
            match parse_memory(memory) {
                None => problems.push(field_error(
                    "memory",
                    format!("`{memory}` is not a memory size; write a number with an optional unit b, k, m or g, e.g. \"512m\" or \"2g\""),
                )),
                Some(0) => problems.push(field_error("memory", "must be above 0".into())),
                Some(_) => {}
            }
        }
        problems
    }

    /// The first of [`PodConfig::problems`], as a `Result`.
    pub fn validate(&self, pod: &str, config_path: &Path) -> Result<()> {
        match self.problems(pod, config_path).into_iter().next() {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }

    /// `self` overlaid by `over` (per-request or per-job overrides): every
    /// `Some` field of `over` wins; `env` and `buildArgs` merge key by key
    /// (`over` wins); `inheritEnv` is appended without duplicates; `mounts`
    /// are appended, and a mount of `over` replaces one of `self` with the
    /// same target (Docker refuses two mounts on one target).
    ///
    /// ```
    /// use cldpd::pod::PodConfig;
    /// let base = PodConfig { image: Some("a".into()), max_restarts: Some(3), ..Default::default() };
    /// let over = PodConfig { image: Some("b".into()), ..Default::default() };
    /// let merged = base.merged(&over);
    /// assert_eq!((merged.image.as_deref(), merged.max_restarts), (Some("b"), Some(3)));
    /// ```
    pub fn merged(&self, over: &PodConfig) -> PodConfig {
        // Destructured so that a new field cannot be forgotten here.
        let PodConfig {
            image,
            env,
            build_args,
            workdir,
            inherit_env,
            mounts,
            agent_command,
            stop_grace_secs,
            restart,
            max_restarts,
            within_secs,
            backoff_ms,
            backoff_max_ms,
            timeout_secs,
            idle_timeout_secs,
            cpus,
            memory,
            pids_limit,
            agent_output,
            max_turns,
            max_budget_usd,
            network,
        } = over;
        let mut merged_env = self.env.clone();
        merged_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut merged_build_args = self.build_args.clone();
        merged_build_args.extend(build_args.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut merged_inherit: Vec<String> = Vec::new();
        for name in self.inherit_env.iter().chain(inherit_env) {
            if !merged_inherit.contains(name) {
                merged_inherit.push(name.clone());
            }
        }
        let same_target = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let mut merged_mounts = self.mounts.clone();
        for mount in mounts {
            merged_mounts.retain(|m| !same_target(&m.target, &mount.target));
            merged_mounts.push(mount.clone());
        }
        PodConfig {
            image: image.clone().or_else(|| self.image.clone()),
            env: merged_env,
            build_args: merged_build_args,
            workdir: workdir.clone().or_else(|| self.workdir.clone()),
            inherit_env: merged_inherit,
            mounts: merged_mounts,
            agent_command: agent_command.clone().or_else(|| self.agent_command.clone()),
            stop_grace_secs: stop_grace_secs.or(self.stop_grace_secs),
            restart: restart.or(self.restart),
            max_restarts: max_restarts.or(self.max_restarts),
            within_secs: within_secs.or(self.within_secs),
            backoff_ms: backoff_ms.or(self.backoff_ms),
            backoff_max_ms: backoff_max_ms.or(self.backoff_max_ms),
            timeout_secs: timeout_secs.or(self.timeout_secs),
            idle_timeout_secs: idle_timeout_secs.or(self.idle_timeout_secs),
            cpus: cpus.or(self.cpus),
            memory: memory.clone().or_else(|| self.memory.clone()),
            pids_limit: pids_limit.or(self.pids_limit),
            agent_output: agent_output.or(self.agent_output),
            max_turns: max_turns.or(self.max_turns),
            max_budget_usd: max_budget_usd.or(self.max_budget_usd),
            network: network.clone().or_else(|| self.network.clone()),
        }
    }

    /// `agentOutput`, defaulted.
    pub fn agent_output(&self) -> crate::agent::AgentOutput {
        self.agent_output.unwrap_or_default()
    }

    /// `maxTurns` and `maxBudgetUsd`.
    pub fn agent_limits(&self) -> crate::agent::AgentLimits {
        crate::agent::AgentLimits {
            max_turns: self.max_turns,
            max_budget_usd: self.max_budget_usd,
        }
    }

    /// The resource limits for `docker run` (`memory` converted to bytes
    /// with [`parse_memory`]; an unparsable value, refused by
    /// [`PodConfig::validate`], gives no limit).
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: self.cpus,
            memory_bytes: self.memory.as_deref().and_then(parse_memory),
            pids_limit: self.pids_limit,
        }
    }
}

/// What is wrong with a number of seconds, if anything: it must be finite,
/// not negative, and fit in a [`Duration`] (a larger value would panic
/// where it is converted).
fn seconds_problem(secs: f64) -> Option<String> {
    if !secs.is_finite() {
        Some(format!("`{secs}` must be a finite number of seconds"))
    } else if secs < 0.0 {
        Some(format!("`{secs}` must not be negative"))
    } else if Duration::try_from_secs_f64(secs).is_err() {
        Some(format!("`{secs}` seconds is too large"))
    } else {
        None
    }
}

// ----- naming the field behind a serde error --------------------------------

/// Turn a serde error on a syntactically valid object into `(field,
/// message)`. The message always has the line and column and never echoes
/// an `env` or `buildArgs` value.
fn describe_data_error(
    text: &str,
    root: &Map<String, Value>,
    err: &serde_json::Error,
) -> (Option<String>, String) {
    let full = err.to_string();
    let at = format!("line {} column {}", err.line(), err.column());
    let inner = full
        .strip_suffix(&format!(" at {at}"))
        .unwrap_or(&full)
        .to_string();
    let offset = byte_offset(text, err.line(), err.column());

    if let Some(name) = backticked_after(&inner, "unknown field `") {
        // serde lists what it expected; a mount's list names `target`.
        let in_mount = inner.contains("`target`");
        let (field, known) = if in_mount {
            let field = mounts_of(root)
                .iter()
                .enumerate()
                .find(|(_, m)| m.as_object().is_some_and(|o| o.contains_key(name)))
                .map(|(i, _)| format!("mounts[{i}].{name}"))
                .unwrap_or_else(|| format!("mounts[].{name}"));
            (field, MOUNT_FIELDS)
        } else {
            (name.to_string(), POD_CONFIG_FIELDS)
        };
        let message = match suggest(name, known) {
            Some(s) => format!("unknown field `{name}` (did you mean `{s}`?) at {at}"),
            None if in_mount => format!(
                "unknown field `{name}` at {at}; a mount has `source`, `target` and `readOnly`"
            ),
            None => format!("unknown field `{name}` at {at}"),
        };
        return (Some(field), message);
    }
    if let Some(name) = backticked_after(&inner, "duplicate field `") {
        return (
            Some(name.to_string()),
            format!("field `{name}` appears twice (the second time at {at}); keep one"),
        );
    }
    if let Some(name) = backticked_after(&inner, "missing field `") {
        // Only mounts have required fields.
        let field = mounts_of(root)
            .iter()
            .enumerate()
            .find(|(_, m)| m.as_object().is_some_and(|o| !o.contains_key(name)))
            .map(|(i, _)| format!("mounts[{i}].{name}"))
            .unwrap_or_else(|| name.to_string());
        return (
            Some(field.clone()),
            format!("`{field}` is missing at {at}: every mount needs `source` and `target`"),
        );
    }

    let Some((field, value)) = locate_bad_value(text, root, offset) else {
        return (None, format!("{inner} at {at}"));
    };
    let top = field.split(['.', '[']).next().unwrap_or_default();
    let detail = if top == "env" || top == "buildArgs" {
        // serde's message would quote the value, which may be a secret.
        if field == top {
            format!(
                "must be an object of NAME: \"value\" strings, not {}",
                kind_of(value)
            )
        } else {
            format!("the value must be a string, not {}", kind_of(value))
        }
    } else if let Some(variant) = backticked_after(&inner, "unknown variant `") {
        let choices = RESTART_VALUES.join(", ");
        match suggest(variant, RESTART_VALUES) {
            Some(s) => {
                format!("unknown value `{variant}` (did you mean `{s}`?); it is one of {choices}")
            }
            None => format!("unknown value `{variant}`; it is one of {choices}"),
        }
    } else {
        inner
    };
    (Some(field.clone()), format!("`{field}`: {detail} at {at}"))
}

/// The text between `prefix` and the next backtick.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn mounts_of(root: &Map<String, Value>) -> &[Value] {
    root.get("mounts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Byte offset in `text` of serde's 1-based line and column (clamped).
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column).min(text.len())
}

/// Offset of the last `"key":` before `offset`.
fn key_position_before(text: &str, key: &str, offset: usize) -> Option<usize> {
    let needle = format!("\"{key}\"");
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .match_indices(&needle)
        .filter(|(i, _)| text[i + needle.len()..].trim_start().starts_with(':'))
        .map(|(i, _)| i)
        .last()
}

/// Of several candidate keys, the one serde stopped in: the one written
/// last before the error position (serde reads in document order; the map
/// we hold is sorted by name).
fn pick_key<'a>(text: &str, offset: usize, keys: &[&'a str]) -> Option<&'a str> {
    if keys.len() <= 1 {
        return keys.first().copied();
    }
    keys.iter()
        .max_by_key(|k| key_position_before(text, k, offset))
        .copied()
}

/// The field whose value made deserialisation fail, and that value: the
/// top-level field, refined to the map entry, array element or mount field.
fn locate_bad_value<'v>(
    text: &str,
    root: &'v Map<String, Value>,
    offset: usize,
) -> Option<(String, &'v Value)> {
    let failing: Vec<&str> = root
        .iter()
        .filter(|(k, v)| POD_CONFIG_FIELDS.contains(&k.as_str()) && !top_field_ok(k, v))
        .map(|(k, _)| k.as_str())
        .collect();
    let key = pick_key(text, offset, &failing)?;
    let value = &root[key];
    let refined = match (key, value) {
        ("env" | "buildArgs", Value::Object(map)) => {
            let bad: Vec<&str> = map
                .iter()
                .filter(|(_, v)| !v.is_string())
                .map(|(k, _)| k.as_str())
                .collect();
            pick_key(text, offset, &bad).map(|k| (format!("{key}.{k}"), &map[k]))
        }
        ("inheritEnv" | "agentCommand", Value::Array(items)) => items
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_string())
            .map(|(i, v)| (format!("{key}[{i}]"), v)),
        ("mounts", Value::Array(items)) => items
            .iter()
            .enumerate()
            .find(|(_, m)| serde_json::from_value::<Mount>((*m).clone()).is_err())
            .map(|(i, m)| match m {
                Value::Object(fields) => {
                    let bad: Vec<&str> = fields
                        .iter()
                        .filter(|(k, v)| {
                            MOUNT_FIELDS.contains(&k.as_str()) && !mount_field_ok(k, v)
                        })
                        .map(|(k, _)| k.as_str())
                        .collect();
                    match pick_key(text, offset, &bad) {
                        Some(k) => (format!("mounts[{i}].{k}"), &fields[k]),
                        None => (format!("mounts[{i}]"), m),
                    }
                }
                other => (format!("mounts[{i}]"), other),
            }),
        _ => None,
    };
    Some(refined.unwrap_or_else(|| (key.to_string(), value)))
}

fn top_field_ok(key: &str, value: &Value) -> bool {
    let mut single = Map::new();
    single.insert(key.to_string(), value.clone());
    serde_json::from_value::<PodConfig>(Value::Object(single)).is_ok()
}

fn mount_field_ok(key: &str, value: &Value) -> bool {
    let mut mount = Map::new();
    mount.insert("source".into(), Value::from("/x"));
    mount.insert("target".into(), Value::from("/x"));
    mount.insert(key.to_string(), value.clone());
    serde_json::from_value::<Mount>(Value::Object(mount)).is_ok()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The known name a misspelled one most likely meant: same letters ignoring
/// case, `_` and `-` (`build_args`, `readonly`); at most one or two edits
/// (transpositions count as one); or one is a prefix of the other
/// (`timeout` → `timeoutSecs`, `memoryLimit` → `memory`).
fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let normalize = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let u = normalize(unknown);
    if u.is_empty() {
        return None;
    }
    let normalized: Vec<(Vec<char>, &'a str)> = known.iter().map(|k| (normalize(k), *k)).collect();
    if let Some((_, k)) = normalized.iter().find(|(n, _)| *n == u) {
        return Some(k);
    }
    let limit = match u.len() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let best = normalized
        .iter()
        .map(|(n, k)| (edit_distance(&u, n), *k))
        .min_by_key(|(d, _)| *d);
    if let Some((d, k)) = best {
        if d <= limit {
            return Some(k);
        }
    }
    if u.len() >= 4 {
        if let Some((_, k)) = normalized.iter().find(|(n, _)| n.starts_with(&u)) {
            return Some(k);
        }
    }
    normalized
        .iter()
        .filter(|(n, _)| n.len() >= 3 && u.starts_with(n))
        .max_by_key(|(n, _)| n.len())
        .map(|(_, k)| *k)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent swaps).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    // ----- helpers ---------------------------------------------------------

    /// A pods directory.
    fn pods() -> TempDir {
        tempfile::tempdir().unwrap()
    }

    /// `<root>/<name>/` with a Dockerfile, and `pod.json` when given.
    fn make_pod(root: &Path, name: &str, pod_json: Option<&str>) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(DOCKERFILE), "FROM scratch\n").unwrap();
        if let Some(json) = pod_json {
            fs::write(dir.join(POD_CONFIG_FILE), json).unwrap();
        }
        dir
    }

    /// Discover a pod whose `pod.json` is `json`.
    fn discover_with(json: &str) -> Result<Pod> {
        let root = pods();
        make_pod(root.path(), "web", Some(json));
        Pod::discover(root.path(), "web")
    }

    /// The `field` of a `PodConfig` error (panics on anything else).
    fn config_field(result: Result<impl std::fmt::Debug>) -> Option<String> {
        match result {
            Err(Error::PodConfig { field, .. }) => field,
            other => panic!("expected Error::PodConfig, got {other:?}"),
        }
    }

    fn config_error(result: Result<impl std::fmt::Debug>) -> (Option<String>, String) {
        match result {
            Err(Error::PodConfig { field, message, .. }) => (field, message),
            other => panic!("expected Error::PodConfig, got {other:?}"),
        }
    }

    fn parse(json: &str) -> Result<PodConfig> {
        PodConfig::from_json(json, Path::new("/pods/web/pod.json"))
    }

    /// A pod value without touching the file system.
    fn pod_at(dir: &Path, config: PodConfig) -> Pod {
        Pod {
            name: "web".into(),
            dir: dir.to_path_buf(),
            dockerfile: dir.join(DOCKERFILE),
            config,
            template: None,
        }
    }

    fn mount(source: &str, target: &str) -> Mount {
        Mount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    // ----- pod names ------------------------------------------------------

    #[test]
    fn pod_name_table() {
        let long_ok = "a".repeat(MAX_POD_NAME_LEN);
        let too_long = "a".repeat(MAX_POD_NAME_LEN + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", None),
            ("my-pod", None),
            ("a_b", None),
            ("a__b", None),
            ("a.b", None),
            ("a---b", None),
            ("x1", None),
            ("1", None),
            ("api.v2-beta_x", None),
            (&long_ok, None),
            ("", Some("empty")),
            (".", Some("`.` and `..`")),
            ("..", Some("`.` and `..`")),
            ("/x", Some("absolute")),
            ("\\x", Some("absolute")),
            ("../x", Some("leave the pods directory")),
            ("a/../b", Some("leave the pods directory")),
            ("a/b", Some("cannot contain `/`")),
            ("a\\b", Some("cannot contain `/`")),
            ("Web", Some("uppercase")),
            ("wEb", Some("uppercase")),
            ("a b", Some("whitespace")),
            ("a\tb", Some("whitespace")),
            ("a\u{7}b", Some("control")),
            ("a..b", Some("separated only by")),
            ("a___b", Some("separated only by")),
            ("a.-b", Some("separated only by")),
            ("a_-b", Some("separated only by")),
            ("-a", Some("must start")),
            (".hidden", Some("must start")),
            ("_a", Some("must start")),
            ("a-", Some("must end")),
            ("a.", Some("must end")),
            ("a:b", Some("only lowercase letters")),
            ("café", Some("only lowercase letters")),
            ("a@b", Some("only lowercase letters")),
            (&too_long, Some("longer than 122")),
        ];
        for (name, expected) in cases {
            match (validate_pod_name(name), expected) {
                (Ok(()), None) => {}
                (Err(Error::InvalidPodName { name: n, reason }), Some(want)) => {
                    assert_eq!(n, *name);
                    assert!(
                        reason.contains(want),
                        "{name:?}: reason {reason:?} lacks {want:?}"
                    );
                }
                (got, want) => panic!("{name:?}: got {got:?}, wanted refusal {want:?}"),
            }
        }
    }

    #[test]
    fn longest_name_makes_a_128_character_tag() {
        assert_eq!(MAX_POD_NAME_LEN, 122);
        let pod = pod_at(Path::new("/p"), PodConfig::default());
        let pod = Pod {
            name: "a".repeat(MAX_POD_NAME_LEN),
            ..pod
        };
        assert_eq!(pod.image().len(), 128);
        assert!(image_problem(&pod.image()).is_none());
    }

    #[test]
    fn bad_name_is_refused_before_touching_the_file_system() {
        let missing = Path::new("/nonexistent/cldpd/pods");
        for name in ["../x", "/etc", "", "Web"] {
            assert!(
                matches!(
                    Pod::discover(missing, name),
                    Err(Error::InvalidPodName { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "_a1", "GH_TOKEN", "a"] {
            assert!(is_valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É", "a.b"] {
            assert!(!is_valid_env_name(bad), "{bad}");
            assert!(matches!(
                validate_env_name(bad, "--env"),
                Err(Error::InvalidEnvName { origin, .. }) if origin == "--env"
            ));
        }
    }

    // ----- discover -------------------------------------------------------

    #[test]
    fn discovers_a_minimal_pod_with_defaults() {
        let root = pods();
        make_pod(root.path(), "web", None);
        let pod = Pod::discover(root.path(), "web").unwrap();
        let canonical = fs::canonicalize(root.path().join("web")).unwrap();
        assert_eq!(pod.name, "web");
        assert_eq!(pod.dir, canonical);
        assert!(pod.dir.is_absolute());
        assert_eq!(pod.dockerfile, canonical.join("Dockerfile"));
        assert_eq!(pod.config, PodConfig::default());
        assert_eq!(pod.template, None);
        assert_eq!(pod.image(), "cldpd-web");
        assert_eq!(pod.agent_command(), ["claude"]);
        assert_eq!(pod.config_path(), canonical.join("pod.json"));
        assert!(pod.check().is_empty());
    }

    #[test]
    fn relative_pods_dir_still_gives_absolute_paths() {
        let root = pods();
        make_pod(root.path(), "web", None);
        let relative = pathdiff(root.path());
        let pod = Pod::discover(&relative, "web").unwrap();
        assert!(pod.dir.is_absolute() && pod.dockerfile.is_absolute());
    }

    /// `root` as a path relative to the current directory (`../../tmp/...`).
    fn pathdiff(root: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let ups = cwd.components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..ups {
            rel.push("..");
        }
        rel.join(root.strip_prefix("/").unwrap())
    }

    #[test]
    fn discovers_config_and_template() {
        let root = pods();
        let dir = make_pod(
            root.path(),
            "web",
            Some(
                r#"{"image": "registry.example.com:5000/team/web:v1", "agentCommand": ["agent", "--fast"], "workdir": "/work"}"#,
            ),
        );
        fs::write(dir.join(TEMPLATE_FILE), "Be careful.\n\n").unwrap();
        let pod = Pod::discover(root.path(), "web").unwrap();
        assert_eq!(pod.image(), "registry.example.com:5000/team/web:v1");
        assert_eq!(pod.agent_command(), ["agent", "--fast"]);
        assert_eq!(pod.config.workdir.as_deref(), Some("/work"));
        assert_eq!(pod.template.as_deref(), Some("Be careful."));
    }

    #[test]
    fn blank_template_counts_as_none() {
        let root = pods();
        let dir = make_pod(root.path(), "web", None);
        fs::write(dir.join(TEMPLATE_FILE), " \n\t\n").unwrap();
        assert_eq!(Pod::discover(root.path(), "web").unwrap().template, None);
        fs::write(dir.join(TEMPLATE_FILE), "").unwrap();
        assert_eq!(Pod::discover(root.path(), "web").unwrap().template, None);
    }

    #[test]
    fn unreadable_template_is_io() {
        let root = pods();
        let dir = make_pod(root.path(), "web", None);
        fs::create_dir(dir.join(TEMPLATE_FILE)).unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "web"),
            Err(Error::Io { .. })
        ));
        fs::remove_dir(dir.join(TEMPLATE_FILE)).unwrap();
        fs::write(dir.join(TEMPLATE_FILE), "a\0b").unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "web"),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn missing_pods_dir() {
        let root = pods();
        let missing = root.path().join("nope");
        match Pod::discover(&missing, "web") {
            Err(Error::PodsDirMissing { path }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pods_dir_that_is_a_file_is_io() {
        let root = pods();
        let file = root.path().join("file");
        fs::write(&file, "").unwrap();
        let err = Pod::discover(&file, "web").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("not a directory"), "{err}");
        // A path *under* a file does not exist.
        assert!(matches!(
            Pod::discover(&file.join("pods"), "web"),
            Err(Error::PodsDirMissing { .. })
        ));
    }

    #[test]
    fn pod_not_found_lists_the_valid_pods() {
        let root = pods();
        make_pod(root.path(), "zeta", None);
        make_pod(root.path(), "alpha", None);
        make_pod(root.path(), ".hidden", None);
        make_pod(root.path(), "Upper", None);
        fs::create_dir(root.path().join("nodockerfile")).unwrap();
        fs::write(root.path().join("file"), "").unwrap();
        match Pod::discover(root.path(), "web") {
            Err(Error::PodNotFound {
                name,
                pods_dir,
                available,
            }) => {
                assert_eq!(name, "web");
                assert_eq!(pods_dir, root.path());
                assert_eq!(available, ["alpha", "zeta"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_is_not_a_pod() {
        let root = pods();
        fs::write(root.path().join("web"), "").unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "web"),
            Err(Error::PodNotFound { .. })
        ));
    }

    #[test]
    fn missing_dockerfile_is_invalid_pod() {
        let root = pods();
        fs::create_dir(root.path().join("web")).unwrap();
        match Pod::discover(root.path(), "web") {
            Err(Error::InvalidPod { name, dir }) => {
                assert_eq!(name, "web");
                assert!(dir.is_absolute() && dir.ends_with("web"));
            }
            other => panic!("{other:?}"),
        }
        // A directory called Dockerfile is not a Dockerfile.
        fs::create_dir(root.path().join("web/Dockerfile")).unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "web"),
            Err(Error::InvalidPod { .. })
        ));
    }

    #[test]
    fn symlink_outside_the_pods_dir_is_refused() {
        let root = pods();
        let outside = pods();
        make_pod(outside.path(), "evil", None);
        symlink(outside.path().join("evil"), root.path().join("web")).unwrap();
        match Pod::discover(root.path(), "web") {
            Err(Error::InvalidPodName { reason, .. }) => assert_eq!(reason, SYMLINK_OUTSIDE),
            other => panic!("{other:?}"),
        }
        // A link to the pods directory itself is not a pod either.
        fs::write(root.path().join(DOCKERFILE), "FROM scratch\n").unwrap();
        symlink(root.path(), root.path().join("self")).unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "self"),
            Err(Error::InvalidPodName { .. })
        ));
    }

    #[test]
    fn symlink_inside_the_pods_dir_is_followed() {
        let root = pods();
        let real = make_pod(root.path(), "real", None);
        symlink(&real, root.path().join("alias")).unwrap();
        let pod = Pod::discover(root.path(), "alias").unwrap();
        assert_eq!(pod.name, "alias");
        assert_eq!(pod.dir, fs::canonicalize(&real).unwrap());
        assert_eq!(pod.image(), "cldpd-alias");
    }

    #[test]
    fn symlinked_pods_dir_is_fine() {
        let root = pods();
        let real = root.path().join("real");
        fs::create_dir(&real).unwrap();
        make_pod(&real, "web", None);
        symlink(&real, root.path().join("link")).unwrap();
        assert!(Pod::discover(&root.path().join("link"), "web").is_ok());
    }

    // ----- pod.json: parse errors -----------------------------------------

    #[test]
    fn unreadable_pod_json_is_io() {
        let root = pods();
        let dir = make_pod(root.path(), "web", None);
        fs::create_dir(dir.join(POD_CONFIG_FILE)).unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "web"),
            Err(Error::Io { .. })
        ));
        // A dangling symlink is reported, not silently ignored.
        fs::remove_dir(dir.join(POD_CONFIG_FILE)).unwrap();
        symlink(dir.join("nowhere.json"), dir.join(POD_CONFIG_FILE)).unwrap();
        assert!(matches!(
            Pod::discover(root.path(), "web"),
            Err(Error::Io { .. })
        ));
        assert!(matches!(
            PodConfig::load(&dir.join("absent.json")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn pod_config_error_names_the_file() {
        let root = pods();
        let dir = make_pod(root.path(), "web", Some("{\"imgae\": \"x\"}"));
        match Pod::discover(root.path(), "web") {
            Err(err @ Error::PodConfig { .. }) => {
                let Error::PodConfig { path, .. } = &err else {
                    unreachable!()
                };
                assert_eq!(path, &fs::canonicalize(&dir).unwrap().join("pod.json"));
                assert!(err.to_string().contains("pod.json"), "{err}");
                assert!(err.hint().unwrap().contains("imgae"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_pod_json() {
        for text in ["", "  \n", "\u{feff}"] {
            let (field, message) = config_error(parse(text));
            assert_eq!(field, None);
            assert!(message.contains("empty"), "{message}");
        }
    }

    #[test]
    fn pod_json_must_be_an_object() {
        for (text, kind) in [
            ("[]", "array"),
            ("\"x\"", "string"),
            ("3", "number"),
            ("null", "null"),
        ] {
            let (field, message) = config_error(parse(text));
            assert_eq!(field, None);
            assert!(
                message.contains("JSON object") && message.contains(kind),
                "{message}"
            );
        }
    }

    #[test]
    fn invalid_json_has_line_and_column() {
        let (field, message) = config_error(parse("{\n  \"image\": \"x\",\n}"));
        assert_eq!(field, None);
        assert!(message.starts_with("invalid JSON"), "{message}");
        assert!(message.contains("line 3 column 1"), "{message}");
    }

    #[test]
    fn non_utf8_pod_json() {
        let root = pods();
        let dir = make_pod(root.path(), "web", None);
        fs::write(dir.join(POD_CONFIG_FILE), b"{\"image\": \"\xff\"}").unwrap();
        let (field, message) = config_error(Pod::discover(root.path(), "web"));
        assert_eq!(field, None);
        assert!(message.contains("UTF-8"), "{message}");
    }

    #[test]
    fn byte_order_mark_is_accepted() {
        let config = parse("\u{feff}{\"image\": \"x\"}").unwrap();
        assert_eq!(config.image.as_deref(), Some("x"));
    }

    #[test]
    fn unknown_field_is_named_with_a_suggestion() {
        let (field, message) = config_error(parse("{\n  \"imgae\": \"x\"\n}"));
        assert_eq!(field.as_deref(), Some("imgae"));
        assert!(
            message.starts_with("unknown field `imgae` (did you mean `image`?) at line 2 column"),
            "{message}"
        );
    }

    #[test]
    fn unknown_field_without_a_close_match() {
        let (field, message) = config_error(parse(r#"{"volumes": []}"#));
        assert_eq!(field.as_deref(), Some("volumes"));
        assert!(!message.contains("did you mean"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");
    }

    #[test]
    fn snake_case_field_suggests_camel_case() {
        for (wrong, right) in [
            ("build_args", "buildArgs"),
            ("inherit_env", "inheritEnv"),
            ("agent_command", "agentCommand"),
            ("pids-limit", "pidsLimit"),
        ] {
            let (field, message) = config_error(parse(&format!("{{\"{wrong}\": 1}}")));
            assert_eq!(field.as_deref(), Some(wrong));
            assert!(
                message.contains(&format!("did you mean `{right}`")),
                "{message}"
            );
        }
    }

    #[test]
    fn unknown_mount_field_is_named() {
        let (field, message) = config_error(parse(
            r#"{"mounts": [{"source": "/a", "target": "/a"}, {"source": "/b", "target": "/b", "readonly": true}]}"#,
        ));
        assert_eq!(field.as_deref(), Some("mounts[1].readonly"));
        assert!(message.contains("did you mean `readOnly`"), "{message}");
        let (field, message) = config_error(parse(
            r#"{"mounts": [{"source": "/a", "target": "/a", "mode": "ro"}]}"#,
        ));
        assert_eq!(field.as_deref(), Some("mounts[0].mode"));
        assert!(
            message.contains("`source`, `target` and `readOnly`"),
            "{message}"
        );
    }

    #[test]
    fn missing_mount_field_is_named() {
        let (field, message) = config_error(parse(r#"{"mounts": [{"source": "/a"}]}"#));
        assert_eq!(field.as_deref(), Some("mounts[0].target"));
        assert!(message.contains("line 1 column"), "{message}");
    }

    #[test]
    fn wrong_type_is_named_with_line_and_column() {
        let (field, message) =
            config_error(parse("{\n  \"image\": \"x\",\n  \"maxRestarts\": \"x\"\n}"));
        assert_eq!(field.as_deref(), Some("maxRestarts"));
        assert!(
            message.contains("`maxRestarts`: invalid type: string \"x\", expected u32"),
            "{message}"
        );
        assert!(message.contains("line 3 column"), "{message}");
    }

    #[test]
    fn the_first_bad_field_in_the_file_is_named_not_the_first_alphabetically() {
        // serde stops at `workdir`; `image` (also bad, sorted first) comes later.
        let (field, _) = config_error(parse(r#"{"workdir": 5, "image": 3}"#));
        assert_eq!(field.as_deref(), Some("workdir"));
        let (field, _) = config_error(parse(r#"{"image": 3, "workdir": 5}"#));
        assert_eq!(field.as_deref(), Some("image"));
    }

    #[test]
    fn out_of_range_integer_is_named() {
        for text in [
            r#"{"maxRestarts": -1}"#,
            r#"{"maxRestarts": 5000000000}"#,
            r#"{"maxRestarts": 1.5}"#,
        ] {
            assert_eq!(
                config_field(parse(text)).as_deref(),
                Some("maxRestarts"),
                "{text}"
            );
        }
        assert_eq!(
            config_field(parse(r#"{"backoffMs": -5}"#)).as_deref(),
            Some("backoffMs")
        );
        assert_eq!(
            config_field(parse(r#"{"pidsLimit": "many"}"#)).as_deref(),
            Some("pidsLimit")
        );
        assert_eq!(
            config_field(parse(r#"{"cpus": "2"}"#)).as_deref(),
            Some("cpus")
        );
        assert_eq!(
            config_field(parse(r#"{"stopGraceSecs": true}"#)).as_deref(),
            Some("stopGraceSecs")
        );
    }

    #[test]
    fn nested_wrong_types_are_named() {
        let cases = [
            (
                r#"{"mounts": [{"source": "/a", "target": "/a", "readOnly": "yes"}]}"#,
                "mounts[0].readOnly",
            ),
            (
                r#"{"mounts": [{"source": "/a", "target": "/a"}, {"source": 1, "target": "/b"}]}"#,
                "mounts[1].source",
            ),
            (r#"{"mounts": ["/a:/a"]}"#, "mounts[0]"),
            (r#"{"mounts": {"source": "/a"}}"#, "mounts"),
            (r#"{"inheritEnv": ["A", 2]}"#, "inheritEnv[1]"),
            (r#"{"inheritEnv": "A"}"#, "inheritEnv"),
            (r#"{"agentCommand": "claude --x"}"#, "agentCommand"),
            (r#"{"agentCommand": ["claude", false]}"#, "agentCommand[1]"),
            (r#"{"env": {"A": "x", "B": 2}}"#, "env.B"),
            (r#"{"buildArgs": {"V": null}}"#, "buildArgs.V"),
        ];
        for (text, want) in cases {
            assert_eq!(config_field(parse(text)).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn env_type_errors_never_echo_the_value() {
        let (field, message) = config_error(parse(r#"{"env": "TOKEN=s3cr3t"}"#));
        assert_eq!(field.as_deref(), Some("env"));
        assert!(!message.contains("s3cr3t"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");
        let (field, message) = config_error(parse(r#"{"buildArgs": {"PIN": 987654}}"#));
        assert_eq!(field.as_deref(), Some("buildArgs.PIN"));
        assert!(!message.contains("987654"), "{message}");
        let (_, message) = config_error(parse(r#"{"env": ["TOKEN=s3cr3t"]}"#));
        assert!(!message.contains("s3cr3t"), "{message}");
    }

    #[test]
    fn unknown_restart_value_is_named_with_a_suggestion() {
        let (field, message) = config_error(parse(r#"{"restart": "on_failure"}"#));
        assert_eq!(field.as_deref(), Some("restart"));
        assert!(message.contains("did you mean `on-failure`"), "{message}");
        let (field, message) = config_error(parse(r#"{"restart": "sometimes"}"#));
        assert_eq!(field.as_deref(), Some("restart"));
        assert!(message.contains("never, on-failure, always"), "{message}");
        for ok in ["never", "on-failure", "always"] {
            assert!(parse(&format!("{{\"restart\": \"{ok}\"}}")).is_ok());
        }
    }

    #[test]
    fn duplicate_field_is_named() {
        let (field, message) = config_error(parse(r#"{"image": "a", "image": "b"}"#));
        assert_eq!(field.as_deref(), Some("image"));
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn full_config_parses() {
        let config = parse(
            r#"{
                "image": "my/web:1",
                "env": {"MODE": "ci"},
                "buildArgs": {"VERSION": "1"},
                "workdir": "/src",
                "inheritEnv": ["GH_TOKEN"],
                "mounts": [{"source": "~/.ssh", "target": "/root/.ssh", "readOnly": true}],
                "agentCommand": ["claude", "--verbose"],
                "stopGraceSecs": 2.5,
                "restart": "on-failure",
                "maxRestarts": 5,
                "withinSecs": 30,
                "backoffMs": 100,
                "backoffMaxMs": 1000,
                "timeoutSecs": 3600,
                "idleTimeoutSecs": 600,
                "cpus": 1.5,
                "memory": "2g",
                "pidsLimit": 256
            }"#,
        )
        .unwrap();
        assert_eq!(config.restart, Some(RestartPolicy::OnFailure));
        assert!(config.mounts[0].read_only);
        assert!(config.validate("web", Path::new("pod.json")).is_ok());
        assert_eq!(
            config.resources(),
            Resources {
                cpus: Some(1.5),
                memory_bytes: Some(2 << 30),
                pids_limit: Some(256)
            }
        );
    }

    #[test]
    fn field_list_matches_serde() {
        let full = PodConfig {
            image: Some("i".into()),
            env: [("A".to_string(), "1".to_string())].into(),
            build_args: [("B".to_string(), "2".to_string())].into(),
            workdir: Some("/w".into()),
            inherit_env: vec!["C".into()],
            mounts: vec![mount("/s", "/t")],
            agent_command: Some(vec!["a".into()]),
            stop_grace_secs: Some(1.0),
            restart: Some(RestartPolicy::Always),
            max_restarts: Some(1),
            within_secs: Some(1.0),
            backoff_ms: Some(1),
            backoff_max_ms: Some(1),
            timeout_secs: Some(1.0),
            idle_timeout_secs: Some(1.0),
            cpus: Some(1.0),
            memory: Some("1m".into()),
            pids_limit: Some(1),
            agent_output: Some(crate::agent::AgentOutput::Text),
            max_turns: Some(2),
            max_budget_usd: Some(0.5),
            network: Some("none".into()),
        };
        let Value::Object(map) = serde_json::to_value(&full).unwrap() else {
            panic!()
        };
        let mut serde_keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut ours = POD_CONFIG_FIELDS.to_vec();
        serde_keys.sort();
        ours.sort();
        assert_eq!(serde_keys, ours);
        // Round trip, and every field survives merging onto defaults.
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(parse(&text).unwrap(), full);
        assert_eq!(PodConfig::default().merged(&full), full);
        assert_eq!(full.merged(&PodConfig::default()), full);
        let Value::Object(m) = serde_json::to_value(mount("/s", "/t")).unwrap() else {
            panic!()
        };
        let mut mount_keys: Vec<&str> = m.keys().map(String::as_str).collect();
        mount_keys.sort();
        let mut ours = MOUNT_FIELDS.to_vec();
        ours.sort();
        assert_eq!(mount_keys, ours);
        // The hint lists every field.
        let hint = Error::PodConfig {
            path: "p".into(),
            field: Some("x".into()),
            message: String::new(),
        }
        .hint()
        .unwrap();
        for field in POD_CONFIG_FIELDS {
            assert!(hint.contains(field), "hint lacks {field}");
        }
    }

    #[test]
    fn suggestions() {
        let cases = [
            ("imgae", Some("image")),
            ("image", Some("image")),
            ("IMAGE", Some("image")),
            ("en", Some("env")),
            ("enviroment", Some("env")),
            ("environment", Some("env")),
            ("cpu", Some("cpus")),
            ("mount", Some("mounts")),
            ("workDir", Some("workdir")),
            ("working_dir", Some("workdir")),
            ("timeout", Some("timeoutSecs")),
            ("memoryLimit", Some("memory")),
            ("maxRestart", Some("maxRestarts")),
            ("xyz", None),
            ("volumes", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(suggest(input, POD_CONFIG_FIELDS), want, "{input}");
        }
        assert_eq!(suggest("sorce", MOUNT_FIELDS), Some("source"));
        assert_eq!(suggest("read_only", MOUNT_FIELDS), Some("readOnly"));
        assert_eq!(suggest("always-on", RESTART_VALUES), Some("always"));
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("imgae", "image"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("same", "same"), 0);
    }

    // ----- pod.json: value errors -----------------------------------------

    #[test]
    fn invalid_env_name_in_env() {
        match discover_with(r#"{"env": {"1BAD": "x"}}"#) {
            Err(Error::InvalidEnvName { name, origin }) => {
                assert_eq!(name, "1BAD");
                assert!(origin.ends_with("pod.json env"), "{origin}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_env_name_in_inherit_env() {
        match discover_with(r#"{"inheritEnv": ["OK", "NOT-OK"]}"#) {
            Err(Error::InvalidEnvName { name, origin }) => {
                assert_eq!(name, "NOT-OK");
                assert!(origin.ends_with("pod.json inheritEnv"), "{origin}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_env_name_in_build_args() {
        match discover_with(r#"{"buildArgs": {"A B": "x"}}"#) {
            Err(Error::InvalidEnvName { name, origin }) => {
                assert_eq!(name, "A B");
                assert!(origin.ends_with("pod.json buildArgs"), "{origin}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nul_in_env_value_is_refused_without_echoing_it() {
        let (field, message) = config_error(discover_with(r#"{"env": {"TOKEN": "ab\u0000cd"}}"#));
        assert_eq!(field.as_deref(), Some("env.TOKEN"));
        assert!(!message.contains("ab"), "{message}");
    }

    #[test]
    fn image_table() {
        let valid = [
            "ubuntu",
            "ubuntu:22.04",
            "my/web",
            "my/web:v1.2-rc_3",
            "a.b/c",
            "registry.example.com/team/app:v1",
            "localhost/x",
            "localhost:5000/x:1",
            "my-registry:5000/a/b/c",
            "a__b/c---d",
            "x:_tag",
        ];
        for image in valid {
            assert!(
                image_problem(image).is_none(),
                "{image}: {:?}",
                image_problem(image)
            );
            let config = PodConfig {
                image: Some(image.into()),
                ..Default::default()
            };
            assert!(config.validate("web", Path::new("pod.json")).is_ok());
        }
        let long_tag = format!("x:{}", "t".repeat(129));
        let long_name = "a".repeat(256);
        let invalid = [
            ("", "empty"),
            ("Web", "uppercase"),
            ("my/Web", "uppercase"),
            ("a..b", "separated only by"),
            ("-a", "must start"),
            ("a/", "empty path component"),
            ("/a", "empty path component"),
            ("a//b", "empty path component"),
            ("foo:", "tag"),
            ("foo:-x", "tag"),
            ("foo:.x", "tag"),
            ("foo:a b", "whitespace"),
            ("foo:a/b", "port"),
            (&long_tag, "tag"),
            (&long_name, "255"),
            ("ubuntu@sha256:abcd", "digest"),
            ("example.com:99999/x", "port"),
            ("example.com:/x", "port"),
            ("-bad.com/x", "host name"),
            ("bad..com/x", "host name"),
            ("a$b", "only lowercase"),
        ];
        for (image, want) in invalid {
            let problem = image_problem(image).unwrap_or_else(|| panic!("{image:?} accepted"));
            assert!(
                problem.contains(want),
                "{image:?}: {problem:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn invalid_image_is_refused_at_discover() {
        let (field, message) = config_error(discover_with(r#"{"image": "My/Web"}"#));
        assert_eq!(field.as_deref(), Some("image"));
        assert!(
            message.contains("My/Web") && message.contains("lowercase"),
            "{message}"
        );
    }

    #[test]
    fn relative_workdir_is_refused() {
        assert_eq!(
            config_field(discover_with(r#"{"workdir": "src"}"#)).as_deref(),
            Some("workdir")
        );
        assert_eq!(
            config_field(discover_with(r#"{"workdir": ""}"#)).as_deref(),
            Some("workdir")
        );
        assert!(discover_with(r#"{"workdir": "/src"}"#).is_ok());
    }

    #[test]
    fn relative_mount_target_is_refused() {
        match discover_with(r#"{"mounts": [{"source": "/tmp", "target": "work"}]}"#) {
            Err(Error::MountTargetRelative { pod, target }) => {
                assert_eq!((pod.as_str(), target.as_str()), ("web", "work"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn root_mount_target_is_refused() {
        let (field, _) = config_error(discover_with(
            r#"{"mounts": [{"source": "/tmp", "target": "/"}]}"#,
        ));
        assert_eq!(field.as_deref(), Some("mounts[0].target"));
    }

    #[test]
    fn bad_mount_source_syntax_is_refused_at_discover() {
        let (field, message) = config_error(discover_with(
            r#"{"mounts": [{"source": "~bob/x", "target": "/x"}]}"#,
        ));
        assert_eq!(field.as_deref(), Some("mounts[0].source"));
        assert!(message.contains("~user"), "{message}");
        let (field, _) = config_error(discover_with(
            r#"{"mounts": [{"source": "/tmp", "target": "/a"}, {"source": "", "target": "/x"}]}"#,
        ));
        assert_eq!(field.as_deref(), Some("mounts[1].source"));
    }

    #[test]
    fn missing_mount_source_is_not_checked_at_discover() {
        let pod =
            discover_with(r#"{"mounts": [{"source": "/nonexistent/cldpd/x", "target": "/x"}]}"#)
                .unwrap();
        assert!(matches!(
            pod.resolve_mounts(),
            Err(Error::MountSourceMissing { .. })
        ));
    }

    #[test]
    fn negative_numbers_are_refused() {
        for field in [
            "stopGraceSecs",
            "withinSecs",
            "timeoutSecs",
            "idleTimeoutSecs",
            "cpus",
        ] {
            let got = config_field(discover_with(&format!("{{\"{field}\": -1}}")));
            assert_eq!(got.as_deref(), Some(field));
        }
        for field in [
            "stopGraceSecs",
            "withinSecs",
            "timeoutSecs",
            "idleTimeoutSecs",
        ] {
            assert!(
                discover_with(&format!("{{\"{field}\": 0}}")).is_ok(),
                "{field}"
            );
        }
    }

    #[test]
    fn cpus_must_be_above_zero() {
        assert_eq!(
            config_field(discover_with(r#"{"cpus": 0}"#)).as_deref(),
            Some("cpus")
        );
        assert!(discover_with(r#"{"cpus": 0.5}"#).is_ok());
    }

    #[test]
    fn agent_fields_are_parsed_and_checked() {
        let pod = discover_with(
            r#"{"agentOutput": "text", "maxTurns": 5, "maxBudgetUsd": 1.5, "network": "none"}"#,
        )
        .unwrap();
        assert_eq!(pod.config.agent_output(), crate::agent::AgentOutput::Text);
        assert_eq!(pod.config.agent_limits().max_turns, Some(5));
        assert_eq!(pod.config.agent_limits().max_budget_usd, Some(1.5));
        assert_eq!(pod.config.network.as_deref(), Some("none"));
        let defaults = discover_with("{}").unwrap();
        assert_eq!(
            defaults.config.agent_output(),
            crate::agent::AgentOutput::StreamJson
        );
        assert!(discover_with(r#"{"network": "my-net_1.x"}"#).is_ok());
        for (json, field) in [
            (r#"{"agentOutput": "json"}"#, "agentOutput"),
            (r#"{"maxTurns": 0}"#, "maxTurns"),
            (r#"{"maxBudgetUsd": 0}"#, "maxBudgetUsd"),
            (r#"{"maxBudgetUsd": -1}"#, "maxBudgetUsd"),
            (r#"{"network": ""}"#, "network"),
            (r#"{"network": "--privileged"}"#, "network"),
            (r#"{"network": "a b"}"#, "network"),
        ] {
            assert_eq!(
                config_field(discover_with(json)).as_deref(),
                Some(field),
                "{json}"
            );
        }
    }

    #[test]
    fn huge_and_non_finite_numbers_are_refused() {
        assert_eq!(
            config_field(discover_with(r#"{"timeoutSecs": 1e300}"#)).as_deref(),
            Some("timeoutSecs")
        );
        // JSON cannot spell these, but an override built in code can.
        let path = Path::new("/p/pod.json");
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let config = PodConfig {
                stop_grace_secs: Some(value),
                cpus: Some(value),
                ..Default::default()
            };
            let fields: Vec<Option<String>> = config
                .problems("web", path)
                .into_iter()
                .map(|e| match e {
                    Error::PodConfig { field, .. } => field,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                fields,
                [Some("stopGraceSecs".into()), Some("cpus".into())],
                "{value}"
            );
        }
    }

    #[test]
    fn memory_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("512m", Some(512 << 20)),
            ("512M", Some(512 << 20)),
            ("2g", Some(2 << 30)),
            ("2G", Some(2 << 30)),
            ("100k", Some(100 << 10)),
            ("100b", Some(100)),
            ("100B", Some(100)),
            ("1048576", Some(1 << 20)),
            ("1.5g", Some(3 << 29)),
            ("0.5k", Some(512)),
            (" 1m ", Some(1 << 20)),
            ("0", Some(0)),
            ("", None),
            ("g", None),
            ("m512", None),
            ("1.g", None),
            (".5g", None),
            ("-1g", None),
            ("1gb", None),
            ("1t", None),
            ("1 g", None),
            ("1e3", None),
            ("99999999999999999999", None),
            ("18446744073709551615g", None),
            ("99999999999999999999.5g", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_memory(text), *want, "{text:?}");
        }
    }

    #[test]
    fn invalid_memory_is_refused() {
        for text in ["lots", "2gb", "0", "0g"] {
            let got = config_field(discover_with(&format!("{{\"memory\": \"{text}\"}}")));
            assert_eq!(got.as_deref(), Some("memory"), "{text}");
        }
    }

    #[test]
    fn agent_command_must_name_a_program() {
        for text in [
            r#"{"agentCommand": []}"#,
            r#"{"agentCommand": [""]}"#,
            r#"{"agentCommand": ["  ", "x"]}"#,
        ] {
            assert_eq!(
                config_field(discover_with(text)).as_deref(),
                Some("agentCommand"),
                "{text}"
            );
        }
        let pod = discover_with(r#"{"agentCommand": ["/usr/bin/agent"]}"#).unwrap();
        assert_eq!(pod.agent_command(), ["/usr/bin/agent"]);
    }

    #[test]
    fn problems_lists_everything() {
        let config = PodConfig {
            image: Some("Bad".into()),
            env: [("1X".to_string(), "v".to_string())].into(),
            workdir: Some("rel".into()),
            inherit_env: vec!["A-B".into()],
            mounts: vec![mount("/s", "rel"), mount("~bob", "/t")],
            memory: Some("huge".into()),
            ..Default::default()
        };
        let codes: Vec<&str> = config
            .problems("web", Path::new("/p/pod.json"))
            .iter()
            .map(Error::code)
            .collect();
        assert_eq!(
            codes,
            [
                "pod_config",
                "invalid_env_name",
                "pod_config",
                "invalid_env_name",
                "mount_target_relative",
                "pod_config",
                "pod_config"
            ]
        );
        assert_eq!(
            config
                .validate("web", Path::new("/p/pod.json"))
                .unwrap_err()
                .code(),
            "pod_config"
        );
    }

    // ----- merged ---------------------------------------------------------

    #[test]
    fn merged_overlays() {
        let base = PodConfig {
            image: Some("base".into()),
            env: [("A", "1"), ("B", "1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            build_args: [("X".to_string(), "1".to_string())].into(),
            workdir: Some("/base".into()),
            inherit_env: vec!["H1".into(), "H2".into()],
            mounts: vec![mount("/a", "/a"), mount("/b", "/b/")],
            agent_command: Some(vec!["claude".into()]),
            stop_grace_secs: Some(10.0),
            restart: Some(RestartPolicy::Always),
            max_restarts: Some(3),
            memory: Some("1g".into()),
            ..Default::default()
        };
        let over = PodConfig {
            image: Some("over".into()),
            env: [("B", "2"), ("C", "2")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            build_args: [("Y".to_string(), "2".to_string())].into(),
            inherit_env: vec!["H2".into(), "H3".into()],
            mounts: vec![mount("/b2", "/b"), mount("/c", "/c")],
            stop_grace_secs: Some(1.0),
            timeout_secs: Some(60.0),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!(m.image.as_deref(), Some("over"));
        assert_eq!(
            m.env,
            [("A", "1"), ("B", "2"), ("C", "2")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into()
        );
        assert_eq!(m.build_args.keys().collect::<Vec<_>>(), ["X", "Y"]);
        assert_eq!(m.workdir.as_deref(), Some("/base"));
        assert_eq!(m.inherit_env, ["H1", "H2", "H3"]);
        assert_eq!(
            m.mounts,
            [mount("/a", "/a"), mount("/b2", "/b"), mount("/c", "/c")]
        );
        assert_eq!(m.agent_command, Some(vec!["claude".to_string()]));
        assert_eq!(m.stop_grace_secs, Some(1.0));
        assert_eq!(m.restart, Some(RestartPolicy::Always));
        assert_eq!(m.max_restarts, Some(3));
        assert_eq!(m.timeout_secs, Some(60.0));
        assert_eq!(m.memory.as_deref(), Some("1g"));
        // Neither input changed, and merging nothing is the identity.
        assert_eq!(base.image.as_deref(), Some("base"));
        assert_eq!(base.merged(&PodConfig::default()), base);
    }

    #[test]
    fn merged_dedupes_inherit_env_of_the_base_too() {
        let base = PodConfig {
            inherit_env: vec!["A".into(), "A".into()],
            ..Default::default()
        };
        assert_eq!(base.merged(&PodConfig::default()).inherit_env, ["A"]);
    }

    // ----- mounts ---------------------------------------------------------

    #[test]
    fn mounts_expand_home_and_resolve_relative_sources() {
        let home = tempfile::tempdir().unwrap();
        fs::create_dir(home.path().join(".ssh")).unwrap();
        let pod_dir = tempfile::tempdir().unwrap();
        fs::create_dir(pod_dir.path().join("data")).unwrap();
        let abs = tempfile::tempdir().unwrap();
        let pod = pod_at(
            pod_dir.path(),
            PodConfig {
                mounts: vec![
                    mount("~", "/home"),
                    mount("~/", "/home2"),
                    mount("~/.ssh", "/root/.ssh"),
                    Mount {
                        read_only: true,
                        ..mount("data", "/data")
                    },
                    mount("./data/../data", "/data2"),
                    mount(abs.path().to_str().unwrap(), "/abs"),
                ],
                ..Default::default()
            },
        );
        let mounts = pod.resolve_mounts_with_home(Some(home.path())).unwrap();
        let canon = |p: &Path| fs::canonicalize(p).unwrap();
        let sources: Vec<PathBuf> = mounts.iter().map(|m| m.source.clone()).collect();
        assert_eq!(
            sources,
            [
                canon(home.path()),
                canon(home.path()),
                canon(&home.path().join(".ssh")),
                canon(&pod_dir.path().join("data")),
                canon(&pod_dir.path().join("data")),
                canon(abs.path()),
            ]
        );
        assert!(mounts.iter().all(|m| m.source.is_absolute()));
        assert_eq!(mounts[2].target, "/root/.ssh");
        assert!(mounts[3].read_only && !mounts[2].read_only);
    }

    #[test]
    fn missing_mount_source_names_the_expanded_path() {
        let home = tempfile::tempdir().unwrap();
        let pod_dir = tempfile::tempdir().unwrap();
        let pod = pod_at(
            pod_dir.path(),
            PodConfig {
                mounts: vec![mount("~/nope", "/x")],
                ..Default::default()
            },
        );
        match pod.resolve_mounts_with_home(Some(home.path())) {
            Err(Error::MountSourceMissing { pod, source_path }) => {
                assert_eq!(pod, "web");
                assert_eq!(source_path, home.path().join("nope"));
            }
            other => panic!("{other:?}"),
        }
        let pod = pod_at(
            pod_dir.path(),
            PodConfig {
                mounts: vec![mount("rel/nope", "/x")],
                ..Default::default()
            },
        );
        match pod.resolve_mounts_with_home(Some(home.path())) {
            Err(Error::MountSourceMissing { source_path, .. }) => {
                assert_eq!(source_path, pod_dir.path().join("rel/nope"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tilde_without_home_is_an_error() {
        let pod_dir = tempfile::tempdir().unwrap();
        let pod = pod_at(
            pod_dir.path(),
            PodConfig {
                mounts: vec![mount("~/x", "/x")],
                ..Default::default()
            },
        );
        let (field, message) = config_error(pod.resolve_mounts_with_home(None));
        assert_eq!(field.as_deref(), Some("mounts[0].source"));
        assert!(message.contains("HOME"), "{message}");
    }

    #[test]
    fn resolve_mounts_checks_targets_and_source_syntax() {
        let pod_dir = tempfile::tempdir().unwrap();
        let pod = pod_at(
            pod_dir.path(),
            PodConfig {
                mounts: vec![mount(".", "relative")],
                ..Default::default()
            },
        );
        assert!(matches!(
            pod.resolve_mounts_with_home(None),
            Err(Error::MountTargetRelative { .. })
        ));
        let pod = pod_at(
            pod_dir.path(),
            PodConfig {
                mounts: vec![mount("~root", "/x")],
                ..Default::default()
            },
        );
        assert_eq!(
            config_field(pod.resolve_mounts_with_home(None)).as_deref(),
            Some("mounts[0].source")
        );
        assert_eq!(
            pod_at(pod_dir.path(), PodConfig::default())
                .resolve_mounts()
                .unwrap(),
            []
        );
    }

    #[test]
    fn check_reports_every_problem_including_mount_sources() {
        let root = pods();
        make_pod(
            root.path(),
            "web",
            Some(
                r#"{"mounts": [{"source": "missing-a", "target": "/a"}, {"source": "data", "target": "/b"}, {"source": "missing-c", "target": "/c"}]}"#,
            ),
        );
        fs::create_dir(root.path().join("web/data")).unwrap();
        let mut pod = Pod::discover(root.path(), "web").unwrap();
        let problems = pod.check_with_home(None);
        let missing: Vec<PathBuf> = problems
            .iter()
            .map(|e| match e {
                Error::MountSourceMissing { source_path, .. } => source_path.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            missing,
            [pod.dir.join("missing-a"), pod.dir.join("missing-c")]
        );

        // Problems found after discovery (e.g. an override) are listed too,
        // and a bad source syntax is reported once.
        pod.config.workdir = Some("rel".into());
        pod.config.mounts.push(mount("~bob", "/d"));
        fs::remove_file(&pod.dockerfile).unwrap();
        let codes: Vec<&str> = pod.check_with_home(None).iter().map(Error::code).collect();
        assert_eq!(
            codes,
            [
                "invalid_pod",
                "pod_config",
                "pod_config",
                "mount_source_missing",
                "mount_source_missing"
            ]
        );
    }

    // ----- env ------------------------------------------------------------

    #[test]
    fn env_wins_over_inherited_and_unset_names_are_skipped() {
        let pod = pod_at(
            Path::new("/p/web"),
            PodConfig {
                env: [("MODE", "explicit"), ("A_FIRST", "1")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                inherit_env: vec!["MODE".into(), "TOKEN".into(), "UNSET".into()],
                ..Default::default()
            },
        );
        let host = |name: &str| match name {
            "MODE" => Some("from-host".to_string()),
            "TOKEN" => Some("s3cr3t".to_string()),
            _ => None,
        };
        let env = pod.resolve_env(&host).unwrap();
        let plain: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(
            plain,
            [("A_FIRST", "1"), ("MODE", "explicit"), ("TOKEN", "s3cr3t")]
        );
        assert!(!format!("{env:?}").contains("s3cr3t"));
    }

    #[test]
    fn resolve_env_validates_names() {
        let pod = pod_at(
            Path::new("/p/web"),
            PodConfig {
                inherit_env: vec!["BAD NAME".into()],
                ..Default::default()
            },
        );
        match pod.resolve_env(&|_| Some("x".into())) {
            Err(Error::InvalidEnvName { name, origin }) => {
                assert_eq!(name, "BAD NAME");
                assert_eq!(origin, "/p/web/pod.json inheritEnv");
            }
            other => panic!("{other:?}"),
        }
        let pod = pod_at(
            Path::new("/p/web"),
            PodConfig {
                env: [("9".to_string(), "x".to_string())].into(),
                ..Default::default()
            },
        );
        assert!(matches!(
            pod.resolve_env(&|_| None),
            Err(Error::InvalidEnvName { origin, .. }) if origin == "/p/web/pod.json env"
        ));
    }

    #[test]
    fn build_args_are_sorted_and_validated() {
        let pod = pod_at(
            Path::new("/p/web"),
            PodConfig {
                build_args: [("Z", "1"), ("A", "2")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                ..Default::default()
            },
        );
        let args = pod.resolve_build_args().unwrap();
        let plain: Vec<(&str, &str)> = args.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(plain, [("A", "2"), ("Z", "1")]);
        let pod = pod_at(
            Path::new("/p/web"),
            PodConfig {
                build_args: [("A=B".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
        );
        assert!(matches!(
            pod.resolve_build_args(),
            Err(Error::InvalidEnvName { origin, .. }) if origin == "/p/web/pod.json buildArgs"
        ));
    }

    // ----- prompts --------------------------------------------------------

    #[test]
    fn start_prompts() {
        let url = "https://github.com/o/r/issues/1";
        let mut pod = pod_at(Path::new("/p/web"), PodConfig::default());
        assert_eq!(
            pod.start_prompt_for_issue(url),
            format!("Work on this GitHub issue: {url}")
        );
        assert_eq!(pod.start_prompt_for_text("fix the build"), "fix the build");
        pod.template = Some("# Orders\nBe brief.".into());
        assert_eq!(
            pod.start_prompt_for_issue(url),
            format!("# Orders\nBe brief.\n\nWork on this GitHub issue: {url}")
        );
        assert_eq!(
            pod.start_prompt_for_text("fix it"),
            "# Orders\nBe brief.\n\nfix it"
        );
    }

    #[test]
    fn prompt_validation() {
        for empty in ["", " ", "\n\t "] {
            assert!(
                matches!(validate_prompt(empty), Err(Error::EmptyPrompt)),
                "{empty:?}"
            );
        }
        assert!(matches!(
            validate_prompt("a\0b"),
            Err(Error::InvalidOption { .. })
        ));
        assert!(validate_prompt("do it").is_ok());
    }

    // ----- issue URLs -----------------------------------------------------

    #[test]
    fn issue_url_table() {
        let valid = [
            "https://github.com/owner/repo/issues/42",
            "http://github.com/owner/repo/issues/42",
            "HTTPS://github.com/owner/repo/issues/42",
            "https://www.github.com/owner/repo/issues/42",
            "https://github.com/owner/repo/issues/42/",
            "https://github.com/owner/repo/issues/42#issuecomment-1",
            "https://github.com/owner/repo/issues/42?x=1",
            "https://ghe.example.com:8443/team/app/issues/7",
            "https://github.com/My-Org/repo.name_x/issues/1",
        ];
        for url in valid {
            assert!(
                validate_issue_url(url).is_ok(),
                "{url}: {:?}",
                validate_issue_url(url)
            );
        }
        let invalid = [
            ("", "missing"),
            ("   ", "missing"),
            ("github.com/o/r/issues/1", "not an http(s) URL"),
            ("ftp://github.com/o/r/issues/1", "not an http(s) URL"),
            ("https:/github.com/o/r/issues/1", "not an http(s) URL"),
            ("https://github.com/o/r/issues/1 ", "whitespace"),
            ("https://github.com/o r/x/issues/1", "whitespace"),
            ("https://github.com/o/r/issues/1\n", "control"),
            ("https:///o/r/issues/1", "host"),
            ("https://user@github.com/o/r/issues/1", "host"),
            ("https://github.com", "path must be"),
            ("https://github.com/", "path must be"),
            ("https://github.com/o/r", "path must be"),
            ("https://github.com/o/r/issues", "path must be"),
            ("https://github.com/o/r/issues/", "path must be"),
            ("https://github.com/o/r/issues/1/comments", "path must be"),
            ("https://github.com//r/issues/1", "path must be"),
            ("https://github.com/o/r/tree/1", "path must be"),
            ("https://github.com/o/r/pull/1", "pull request"),
            (
                "https://github.com/o/r/issues/abc",
                "issue number must be digits",
            ),
            (
                "https://github.com/o/r/issues/-1",
                "issue number must be digits",
            ),
            ("https://github.com/o/r/issues/0", "1 or more"),
            ("https://github.com/o$/r/issues/1", "owner and repository"),
            ("https://github.com/../r/issues/1", "owner and repository"),
        ];
        for (url, want) in invalid {
            match validate_issue_url(url) {
                Err(Error::InvalidIssueUrl { url: u, reason }) => {
                    assert_eq!(u, url);
                    assert!(reason.contains(want), "{url:?}: {reason:?} lacks {want:?}");
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
    }

    // ----- discover_all ---------------------------------------------------

    #[test]
    fn discover_all_lists_valid_and_invalid_pods() {
        let root = pods();
        make_pod(root.path(), "web", None);
        make_pod(root.path(), "api", Some(r#"{"image": "custom"}"#));
        make_pod(root.path(), "broken", Some(r#"{"imgae": "x"}"#));
        make_pod(root.path(), "Upper", None);
        make_pod(root.path(), ".hidden", None);
        fs::create_dir(root.path().join("empty")).unwrap();
        fs::write(root.path().join("README.md"), "not a pod").unwrap();
        let outside = pods();
        make_pod(outside.path(), "evil", None);
        symlink(outside.path().join("evil"), root.path().join("escape")).unwrap();
        symlink(root.path().join("web"), root.path().join("alias")).unwrap();
        symlink(root.path().join("gone"), root.path().join("dangling")).unwrap();

        let entries = discover_all(root.path()).unwrap();
        let summary: Vec<(&str, std::result::Result<String, &str>)> = entries
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.pod.as_ref().map(Pod::image).map_err(Error::code),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("Upper", Err("invalid_pod_name")),
                ("alias", Ok("cldpd-alias".to_string())),
                ("api", Ok("custom".to_string())),
                ("broken", Err("pod_config")),
                ("empty", Err("invalid_pod")),
                ("escape", Err("invalid_pod_name")),
                ("web", Ok("cldpd-web".to_string())),
            ]
        );
    }

    #[test]
    fn discover_all_of_an_empty_dir_is_empty() {
        let root = pods();
        assert!(discover_all(root.path()).unwrap().is_empty());
    }

    #[test]
    fn discover_all_needs_the_pods_dir() {
        let root = pods();
        assert!(matches!(
            discover_all(&root.path().join("nope")),
            Err(Error::PodsDirMissing { .. })
        ));
    }

    #[test]
    fn discover_all_reports_non_utf8_names() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let root = pods();
        let name = OsStr::from_bytes(b"bad\xffname");
        if fs::create_dir(root.path().join(name)).is_err() {
            return; // file system refuses such names
        }
        let entries = discover_all(root.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(matches!(entries[0].pod, Err(Error::InvalidPodName { .. })));
    }
}
