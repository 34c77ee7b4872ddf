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
//! with [`Error::InvalidPodName`](crate::Error::InvalidPodName) (the name would otherwise smuggle an
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

mod base_images;
mod config;
mod discover;
mod issue;
pub mod limits;
mod name;
mod suggest;
#[cfg(test)]
mod test_helpers;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;

pub use base_images::base_images;
pub use config::parse_memory;
pub use discover::{discover_all, validate_prompt};
pub use issue::{expand_issue, validate_issue_url};
pub use name::{is_valid_env_name, validate_env_name, validate_pod_name};

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
    "agentInput",
    "keepAliveSecs",
    "maxTurns",
    "maxBudgetUsd",
    "network",
    "repository",
    "repo",
    "checkpoint",
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
    /// How prompts reach the agent: `"text"` (default: the prompt, then
    /// end of input; a follow-up starts a second agent process in the
    /// container) or `"stream-json"` (Claude Code's `--input-format
    /// stream-json`: one long-lived agent per run, the prompt and every
    /// follow-up are user messages on its stdin; see [`crate::agent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_input: Option<crate::agent::AgentInput>,
    /// With `agentInput: "stream-json"`: seconds the run stays up, `idle`,
    /// waiting for a follow-up after the agent answered; default 0 (the
    /// run ends when the first prompt is answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_secs: Option<f64>,
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
    /// The GitHub repository the pod works on: `owner/repo` (github.com)
    /// or the repository's URL (GitHub Enterprise). With it, `--issue #42`
    /// means that repository's issue 42 (the full URL is what is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// A local git repository the session works on (`agentInput:
    /// "stream-json"` only): its workspace starts as a clone of `ref` on a
    /// new branch `cldpd/<session>`, and comes back into the repository as
    /// that branch (see [`crate::workspace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoConfig>,
    /// With `repo`: also bring the work back after each turn (when the
    /// agent goes idle), not only when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
}

/// `pod.json` `repo`: `{"path": "~/src/app", "ref": "main"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// The repository on the host: absolute, `~/…`, or relative to the pod
    /// directory.
    pub path: String,
    /// The branch, tag or commit to start from; default `HEAD`.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
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
