//! Discovery of pods, and what a pod resolves to at dispatch time: mounts,
//! environment and prompts.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::runtime::{BindMount, SecretValue};

use super::config::{mount_problem, mount_source_problem, origin, secret_map};
use super::name::pod_name_problem;
use super::*;

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
        // Only a Dockerfile that is not there (or is not a file) is "no
        // Dockerfile": one that cannot be looked at (a directory this user
        // may not search, a symlink loop) says why, not "add a Dockerfile".
        match fs::metadata(&dockerfile) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(Error::InvalidPod { name: name.to_string(), dir }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::InvalidPod { name: name.to_string(), dir })
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "reading pod {name}'s Dockerfile {} (make the pod directory and its files readable by this user)",
                        dockerfile.display()
                    ),
                    e,
                ))
            }
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

    /// The pod's `repo`, its path expanded (`~`, relative to the pod
    /// directory), or `None`. Whether it is a usable repository is
    /// [`crate::workspace::check_source`]'s to say.
    pub fn repo(&self) -> Result<Option<crate::workspace::RepoSpec>> {
        let Some(repo) = &self.config.repo else {
            return Ok(None);
        };
        let home = home_dir();
        let source = &repo.path;
        let under_home = if source == "~" {
            Some("")
        } else {
            source.strip_prefix("~/")
        };
        let path = match (under_home, &home) {
            (Some(rest), Some(home)) => home.join(rest),
            (Some(_), None) => {
                return Err(Error::PodConfig {
                    path: self.config_path(),
                    field: Some("repo.path".into()),
                    message: format!(
                        "`{source}` cannot be expanded: HOME is not set; use an absolute path"
                    ),
                })
            }
            (None, _) => self.dir.join(source),
        };
        Ok(Some(crate::workspace::RepoSpec::new(
            path,
            repo.reference.clone().unwrap_or_default(),
        )))
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
        // The command line of a run (a name that is invalid is already
        // reported above). The prompt, template included, goes on the
        // agent's stdin, so it does not count.
        if let Ok(env) = self.resolve_env(&|name| std::env::var(name).ok()) {
            problems.extend(self.check_argument_size("", &env).err());
        }
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
pub(super) fn canonical_pods_dir(pods_dir: &Path) -> Result<PathBuf> {
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
pub(super) fn available_pods(pods_dir: &Path) -> Vec<String> {
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
pub(super) fn present(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

pub(super) fn read_template(path: &Path) -> Result<Option<String>> {
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

pub(super) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::test_helpers::*;

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
    fn check_reports_a_command_line_over_the_linux_limit() {
        let env: Vec<String> = (0..100_000)
            .map(|i| format!("\"VAR_{i}\": \"x\""))
            .collect();
        let many = pods();
        let json = format!("{{\"env\": {{{}}}}}", env.join(","));
        make_pod(many.path(), "many", Some(&json));
        let pod = Pod::discover(many.path(), "many").unwrap();
        let problems = pod.check();
        assert!(
            matches!(problems[..], [Error::ArgumentsTooLong { .. }]),
            "{problems:?}"
        );
        let root = pods();
        let dir = make_pod(root.path(), "web", None);
        // The template goes on the agent's stdin with the prompt, so a long
        // one is no command-line problem.
        fs::write(dir.join(TEMPLATE_FILE), "t".repeat(1 << 20)).unwrap();
        let pod = Pod::discover(root.path(), "web").unwrap();
        assert!(pod.check().is_empty(), "{:?}", pod.check());
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
