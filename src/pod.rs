//! Pods: discovery, `pod.json`, `template.md`, validation.
//!
//! A pod is a directory `<pods-dir>/<name>/` holding a `Dockerfile`, an
//! optional `pod.json` ([`PodConfig`]) and an optional `template.md`
//! (standing orders prepended to the start prompt).
//!
//! STUB: the implementation is being written; signatures are final.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::{BindMount, SecretValue};

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
    /// Host path; `~` and `~/` are expanded to the home directory.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// `pod.json`. Every field is optional.
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
    /// `["claude"]`. cldpd appends `-p --session-id <uuid> <prompt>` on
    /// start and `-p --resume <uuid> <prompt>` on resume.
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
    /// Memory limit, e.g. `"2g"`, `"512m"` (`docker run --memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Process limit (`docker run --pids-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
}

/// A discovered pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// Pod name (the directory name).
    pub name: String,
    /// Absolute pod directory.
    pub dir: PathBuf,
    /// Parsed `pod.json` (defaults when absent).
    pub config: PodConfig,
    /// Absolute path of the Dockerfile.
    pub dockerfile: PathBuf,
    /// Contents of `template.md`, when present.
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

/// Refuse names that are not a plain directory name Docker accepts in a tag.
pub fn validate_pod_name(_name: &str) -> Result<()> {
    todo!()
}

impl Pod {
    /// Discover one pod.
    pub fn discover(_pods_dir: &Path, _name: &str) -> Result<Pod> {
        todo!()
    }
    /// The image tag: `config.image` or `cldpd-<name>`.
    pub fn image(&self) -> String {
        todo!()
    }
    /// The agent command prefix: `config.agent_command` or `["claude"]`.
    pub fn agent_command(&self) -> Vec<String> {
        todo!()
    }
    /// Resolve mounts.
    pub fn resolve_mounts(&self) -> Result<Vec<BindMount>> {
        todo!()
    }
    /// Resolve env.
    pub fn resolve_env(
        &self,
        _lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, SecretValue)>> {
        todo!()
    }
    /// Resolve build args.
    pub fn resolve_build_args(&self) -> Result<Vec<(String, SecretValue)>> {
        todo!()
    }
    /// Start prompt for an issue.
    pub fn start_prompt_for_issue(&self, _url: &str) -> String {
        todo!()
    }
    /// Start prompt for a free-form prompt.
    pub fn start_prompt_for_text(&self, _p: &str) -> String {
        todo!()
    }
    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> Result<Option<u64>> {
        todo!()
    }
}

/// Discover all pods.
pub fn discover_all(_pods_dir: &Path) -> Result<Vec<PodEntry>> {
    todo!()
}

/// Validate a prompt.
pub fn validate_prompt(_p: &str) -> Result<()> {
    todo!()
}

/// Validate an issue URL.
pub fn validate_issue_url(_url: &str) -> Result<()> {
    todo!()
}

impl PodConfig {
    /// Read `pod.json`.
    pub fn load(_path: &Path) -> Result<PodConfig> {
        todo!()
    }
    /// Overlay.
    pub fn merged(&self, _over: &PodConfig) -> PodConfig {
        todo!()
    }
}

#[allow(dead_code)]
fn _unused(_: Error) {}
