//! `pod.json`: loading, value checks, and merging of per-run overrides.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::runtime::{Resources, SecretValue};

use super::name::image_problem;
use super::suggest::{deserialize, kind_of};
use super::*;

/// `"<path to pod.json> <field>"`, the `origin` of an env name error.
pub(super) fn origin(config_path: &Path, field: &str) -> String {
    format!("{} {field}", config_path.display())
}

pub(super) fn secret_map(
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

pub(super) fn nul_value(config_path: &Path, field: &str, name: &str) -> Error {
    Error::PodConfig {
        path: config_path.to_path_buf(),
        field: Some(format!("{field}.{name}")),
        message: format!("the value of `{name}` in `{field}` contains a NUL byte"),
    }
}

/// The host-independent problems of one mount: target, then source syntax.
pub(super) fn mount_problem(
    pod: &str,
    config_path: &Path,
    index: usize,
    mount: &Mount,
) -> Option<Error> {
    mount_target_problem(pod, config_path, index, &mount.target)
        .or_else(|| mount_source_problem(config_path, index, &mount.source))
}

pub(super) fn mount_target_problem(
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

pub(super) fn mount_source_problem(
    config_path: &Path,
    index: usize,
    source: &str,
) -> Option<Error> {
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

pub(super) fn nul_field(config_path: &Path, field: &str) -> Error {
    Error::PodConfig {
        path: config_path.to_path_buf(),
        field: Some(field.to_string()),
        message: format!("`{field}` contains a NUL byte"),
    }
}

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
        deserialize(text, root).map_err(|(field, message)| error(field, message))
    }

    /// Every problem with the values, in field order; empty when valid.
    ///
    /// `pod` names the pod (for mount errors) and `config_path` the file (or
    /// other source) the values came from. Checks: env, `inheritEnv` and
    /// `buildArgs` names ([`Error::InvalidEnvName`]), none of them a
    /// `DOCKER_*` name (those steer the docker client that starts the run);
    /// `image` is a Docker reference usable as a build tag; `workdir` is
    /// absolute; mount targets are absolute ([`Error::MountTargetRelative`])
    /// and sources are not empty or `~user`; `agentCommand` is not empty;
    /// the durations are finite, not negative and not absurdly large, and
    /// the two timeouts not 0; `cpus` is from 0.01 to 4096; `memory` parses
    /// ([`parse_memory`]) and is at least Docker's 6 MiB. Mount sources are
    /// not looked up (see [`Pod::resolve_mounts`]).
    pub fn problems(&self, pod: &str, config_path: &Path) -> Vec<Error> {
        let mut problems = Vec::new();
        // Every message names the field: the error shows only the file.
        let field_error = |field: &str, message: String| Error::PodConfig {
            path: config_path.to_path_buf(),
            field: Some(field.to_string()),
            message: format!("field `{field}`: {message}"),
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
                } else if let Some(message) = docker_client_variable(name) {
                    problems.push(field_error(field, message));
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
            } else if let Some(message) = docker_client_variable(name) {
                problems.push(field_error("inheritEnv", message));
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
                    "it is empty; name the agent program first, or remove the field to run `claude`"
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
        if self.agent_input() == crate::agent::AgentInput::StreamJson
            && self.agent_output() != crate::agent::AgentOutput::StreamJson
        {
            problems.push(field_error(
                "agentInput",
                "`stream-json` input needs `\"agentOutput\": \"stream-json\"` (Claude Code reads stream-json only when it writes it)".into(),
            ));
        }
        if let Some(repo) = &self.repo {
            if self.agent_input() != crate::agent::AgentInput::StreamJson {
                problems.push(field_error(
                    "repo",
                    "a session works on a repository only with `\"agentInput\": \"stream-json\"` (its workspace outlives the container); set it".into(),
                ));
            }
            if repo.path.trim().is_empty() {
                problems.push(field_error("repo", "`path` is empty".into()));
            }
        } else if self.checkpoint == Some(true) {
            problems.push(field_error(
                "checkpoint",
                "checkpoints bring work back into a repository: set `repo` too, or remove checkpoint".into(),
            ));
        }
        if self.keep_alive_secs.is_some_and(|s| s > 0.0)
            && self.agent_input() != crate::agent::AgentInput::StreamJson
        {
            problems.push(field_error(
                "keepAliveSecs",
                "a run waits for follow-ups only with `\"agentInput\": \"stream-json\"` (one long-lived agent); set it, or remove keepAliveSecs".into(),
            ));
        }
        for (field, value) in [
            ("stopGraceSecs", self.stop_grace_secs),
            ("withinSecs", self.within_secs),
            ("timeoutSecs", self.timeout_secs),
            ("idleTimeoutSecs", self.idle_timeout_secs),
            ("keepAliveSecs", self.keep_alive_secs),
        ] {
            if let Some(message) = value.and_then(seconds_problem) {
                problems.push(field_error(field, message));
            } else if value == Some(0.0) && matches!(field, "timeoutSecs" | "idleTimeoutSecs") {
                problems.push(field_error(
                    field,
                    "0 would mean no limit at all; leave the field out for no limit, or give the seconds (above 0)".into(),
                ));
            }
        }
        if let Some(cpus) = self.cpus {
            if !cpus.is_finite() || cpus <= 0.0 {
                problems.push(field_error(
                    "cpus",
                    format!("`{cpus}` must be a number above 0, e.g. 1.5"),
                ));
            } else if !(MIN_CPUS..=MAX_CPUS).contains(&cpus) {
                problems.push(field_error(
                    "cpus",
                    format!("`{cpus}` is outside what Docker takes ({MIN_CPUS} to the engine's CPU count); e.g. 1.5"),
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
        if let Some(repo) = &self.repository {
            if let Err(reason) = super::issue::repository_url(repo) {
                problems.push(field_error("repository", reason.to_string()));
            }
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
                Some(0) => problems.push(field_error("memory", "it must be above 0".into())),
                Some(bytes) if bytes < MIN_MEMORY => problems.push(field_error(
                    "memory",
                    format!("`{memory}` is below Docker's minimum of \"6m\" (the run would fail to start); give at least \"6m\", e.g. \"512m\""),
                )),
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
            agent_input,
            keep_alive_secs,
            max_turns,
            max_budget_usd,
            network,
            repository,
            repo,
            checkpoint,
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
            agent_input: agent_input.or(self.agent_input),
            keep_alive_secs: keep_alive_secs.or(self.keep_alive_secs),
            max_turns: max_turns.or(self.max_turns),
            max_budget_usd: max_budget_usd.or(self.max_budget_usd),
            network: network.clone().or_else(|| self.network.clone()),
            repository: repository.clone().or_else(|| self.repository.clone()),
            repo: repo.clone().or_else(|| self.repo.clone()),
            checkpoint: checkpoint.or(self.checkpoint),
        }
    }

    /// `agentOutput`, defaulted.
    pub fn agent_output(&self) -> crate::agent::AgentOutput {
        self.agent_output.unwrap_or_default()
    }

    /// `agentInput`, defaulted.
    pub fn agent_input(&self) -> crate::agent::AgentInput {
        self.agent_input.unwrap_or_default()
    }

    /// `keepAliveSecs`, defaulted (0).
    pub fn keep_alive(&self) -> std::time::Duration {
        self.keep_alive_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(std::time::Duration::from_secs_f64)
            .unwrap_or_default()
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

/// Docker's smallest `--memory` (6 MiB): below it `docker run` fails.
const MIN_MEMORY: u64 = 6 << 20;

/// Docker's smallest `--cpus`.
const MIN_CPUS: f64 = 0.01;
/// A bound above any engine's CPU count (a value above the engine's own
/// count still fails when the run starts, with Docker's message naming
/// the range).
const MAX_CPUS: f64 = 4096.0;

/// Why `name` may not be set for a run: a `DOCKER_*` variable steers the
/// docker client that starts the run (it gets the run's variables in its
/// environment), so `DOCKER_HOST` would send the run, with the API keys
/// it inherits, to another daemon.
fn docker_client_variable(name: &str) -> Option<String> {
    name.starts_with("DOCKER_").then(|| {
        format!("`{name}`: DOCKER_* variables steer the docker client that starts the run (DOCKER_HOST would send the run and its keys to another daemon), so a pod may not set them; set them for cldpd itself, or use another name")
    })
}

/// What is wrong with a number of seconds, if anything: it must be finite,
/// not negative, and fit in a [`Duration`] (a larger value would panic
/// where it is converted).
pub(super) fn seconds_problem(secs: f64) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::test_helpers::*;

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
            message.contains(
                "field `maxRestarts` must be a whole number from 0 to 4294967295, got a string"
            ),
            "{message}"
        );
        assert!(message.contains("line 3 column"), "{message}");
    }

    #[test]
    fn type_errors_say_what_the_field_takes_and_what_it_got() {
        let cases = [
            (
                r#"{"cpus": "2"}"#,
                "field `cpus` must be a number, e.g. 1.5, got a string",
            ),
            (
                r#"{"mounts": {"source": "/a"}}"#,
                "field `mounts` must be an array of mounts",
            ),
            (
                r#"{"inheritEnv": "A"}"#,
                "field `inheritEnv` must be an array of variable names (strings), got a string",
            ),
            (
                r#"{"agentCommand": "claude --x"}"#,
                "field `agentCommand` must be an array of strings, the program first",
            ),
            (
                r#"{"maxRestarts": -1}"#,
                "field `maxRestarts` must be a whole number from 0 to 4294967295, got `-1`",
            ),
            (
                r#"{"pidsLimit": 1.5}"#,
                "field `pidsLimit` must be a whole number from 0 to 4294967295, got `1.5`",
            ),
            (
                r#"{"backoffMs": -5}"#,
                "field `backoffMs` must be a whole number of milliseconds, 0 or more, got `-5`",
            ),
            (
                r#"{"timeoutSecs": "1h"}"#,
                "field `timeoutSecs` must be a number of seconds, got a string",
            ),
            (
                r#"{"stopGraceSecs": true}"#,
                "field `stopGraceSecs` must be a number of seconds, got true/false",
            ),
            (
                r#"{"memory": 512}"#,
                "field `memory` must be a string such as \"512m\" or \"2g\", got `512`",
            ),
            (
                r#"{"mounts": [{"source": "/a", "target": "/a", "readOnly": "yes"}]}"#,
                "field `mounts[0].readOnly` must be true or false, got a string",
            ),
            (
                r#"{"mounts": ["/a:/a"]}"#,
                "field `mounts[0]` must be a mount object",
            ),
            (
                r#"{"agentCommand": ["claude", false]}"#,
                "field `agentCommand[1]` must be a string, got true/false",
            ),
            (
                r#"{"env": {"A": "x", "B": 2}}"#,
                "field `env.B` must be a string, got a number",
            ),
        ];
        for (text, want) in cases {
            let (_, message) = config_error(parse(text));
            assert!(message.starts_with(want), "{text}: {message}");
            assert!(!message.contains("expected"), "{text}: {message}");
            assert!(message.contains("line 1 column"), "{text}: {message}");
        }
    }

    #[test]
    fn a_duplicate_mount_field_is_named() {
        let (field, message) = config_error(parse(
            r#"{"mounts": [{"source": "/a", "target": "/a", "source": "/b"}]}"#,
        ));
        assert_eq!(field.as_deref(), Some("mounts[0].source"));
        assert!(message.contains("appears twice"), "{message}");
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
            agent_input: Some(crate::agent::AgentInput::StreamJson),
            keep_alive_secs: Some(2.5),
            max_turns: Some(2),
            max_budget_usd: Some(0.5),
            network: Some("none".into()),
            repository: Some("acme/web".into()),
            repo: Some(crate::pod::RepoConfig {
                path: "~/src".into(),
                reference: Some("main".into()),
            }),
            checkpoint: Some(true),
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
    fn docker_client_variables_are_refused_in_env_build_args_and_inherit_env() {
        for (text, field) in [
            (r#"{"env": {"DOCKER_HOST": "tcp://evil:2375"}}"#, "env"),
            (r#"{"env": {"DOCKER_CONFIG": "/tmp"}}"#, "env"),
            (
                r#"{"buildArgs": {"DOCKER_HOST": "tcp://evil:2375"}}"#,
                "buildArgs",
            ),
            (r#"{"inheritEnv": ["PATH", "DOCKER_HOST"]}"#, "inheritEnv"),
        ] {
            let (got, message) = config_error(discover_with(text));
            assert_eq!(got.as_deref(), Some(field), "{text}");
            assert!(message.contains("DOCKER_"), "{message}");
            assert!(!message.contains("evil"), "never echo a value: {message}");
        }
        // A per-run or per-job override is checked the same way.
        let over = PodConfig {
            env: BTreeMap::from([("DOCKER_HOST".to_string(), "tcp://evil:2375".to_string())]),
            ..PodConfig::default()
        };
        let merged = PodConfig::default().merged(&over);
        assert!(merged.validate("web", Path::new("/p/pod.json")).is_err());
        // Names that merely contain DOCKER are fine.
        assert!(discover_with(r#"{"env": {"MY_DOCKER_HOST": "x", "DOCKERFILE": "y"}}"#).is_ok());
    }

    #[test]
    fn values_docker_would_refuse_and_zero_timeouts_are_refused() {
        for (text, field) in [
            (r#"{"memory": "1k"}"#, "memory"),
            (r#"{"memory": "5m"}"#, "memory"),
            (r#"{"cpus": 1e9}"#, "cpus"),
            (r#"{"cpus": 0.001}"#, "cpus"),
            (r#"{"timeoutSecs": 0}"#, "timeoutSecs"),
            (r#"{"idleTimeoutSecs": 0}"#, "idleTimeoutSecs"),
        ] {
            assert_eq!(
                config_field(discover_with(text)).as_deref(),
                Some(field),
                "{text}"
            );
        }
        for text in [
            r#"{"memory": "6m"}"#,
            r#"{"cpus": 0.01}"#,
            r#"{"cpus": 64}"#,
            r#"{"timeoutSecs": 0.5}"#,
        ] {
            assert!(discover_with(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn nul_in_env_value_is_refused_without_echoing_it() {
        let (field, message) = config_error(discover_with(r#"{"env": {"TOKEN": "ab\u0000cd"}}"#));
        assert_eq!(field.as_deref(), Some("env.TOKEN"));
        assert!(!message.contains("ab"), "{message}");
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
        for field in ["stopGraceSecs", "withinSecs"] {
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
        let live = discover_with(r#"{"agentInput": "stream-json", "keepAliveSecs": 1.5}"#).unwrap();
        assert_eq!(
            live.config.agent_input(),
            crate::agent::AgentInput::StreamJson
        );
        assert_eq!(live.config.keep_alive(), Duration::from_millis(1500));
        assert_eq!(
            defaults.config.agent_input(),
            crate::agent::AgentInput::Text
        );
        assert_eq!(defaults.config.keep_alive(), Duration::ZERO);
        for ok in [
            "acme/web",
            "https://ghe.example.com/team/app/",
            "acme/web.git",
        ] {
            assert!(
                discover_with(&format!(r#"{{"repository": "{ok}"}}"#)).is_ok(),
                "{ok}"
            );
        }
        for bad in ["acme", "a/b/c", "https://github.com/acme", "acme/we b", ""] {
            let err = discover_with(&format!(r#"{{"repository": "{bad}"}}"#)).unwrap_err();
            assert!(
                err.to_string()
                    .contains("field `repository`: must be owner/repo"),
                "{bad}: {err}"
            );
        }
        for (json, field) in [
            (r#"{"agentOutput": "json"}"#, "agentOutput"),
            (r#"{"agentInput": "json"}"#, "agentInput"),
            (
                r#"{"agentInput": "stream-json", "agentOutput": "text"}"#,
                "agentInput",
            ),
            (r#"{"keepAliveSecs": 5}"#, "keepAliveSecs"),
            (
                r#"{"agentInput": "stream-json", "keepAliveSecs": -1}"#,
                "keepAliveSecs",
            ),
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
        // The error shows only the file, so the message names the field.
        let err = discover_with(r#"{"agentCommand": []}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("field `agentCommand`: it is empty"),
            "{err}"
        );
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
}
