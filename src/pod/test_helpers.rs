//! Helpers shared by the pod unit tests.

pub(super) use std::fs;
pub(super) use std::os::unix::fs::symlink;
pub(super) use std::path::{Path, PathBuf};

pub(super) use tempfile::TempDir;

pub(super) use crate::error::{Error, Result};
pub(super) use crate::pod::*;

/// A pods directory.
pub(super) fn pods() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// `<root>/<name>/` with a Dockerfile, and `pod.json` when given.
pub(super) fn make_pod(root: &Path, name: &str, pod_json: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(DOCKERFILE), "FROM scratch\n").unwrap();
    if let Some(json) = pod_json {
        fs::write(dir.join(POD_CONFIG_FILE), json).unwrap();
    }
    dir
}

/// Discover a pod whose `pod.json` is `json`.
pub(super) fn discover_with(json: &str) -> Result<Pod> {
    let root = pods();
    make_pod(root.path(), "web", Some(json));
    Pod::discover(root.path(), "web")
}

/// The `field` of a `PodConfig` error (panics on anything else).
pub(super) fn config_field(result: Result<impl std::fmt::Debug>) -> Option<String> {
    match result {
        Err(Error::PodConfig { field, .. }) => field,
        other => panic!("expected Error::PodConfig, got {other:?}"),
    }
}

pub(super) fn config_error(result: Result<impl std::fmt::Debug>) -> (Option<String>, String) {
    match result {
        Err(Error::PodConfig { field, message, .. }) => (field, message),
        other => panic!("expected Error::PodConfig, got {other:?}"),
    }
}

pub(super) fn parse(json: &str) -> Result<PodConfig> {
    PodConfig::from_json(json, Path::new("/pods/web/pod.json"))
}

/// A pod value without touching the file system.
pub(super) fn pod_at(dir: &Path, config: PodConfig) -> Pod {
    Pod {
        name: "web".into(),
        dir: dir.to_path_buf(),
        dockerfile: dir.join(DOCKERFILE),
        config,
        template: None,
    }
}

pub(super) fn mount(source: &str, target: &str) -> Mount {
    Mount {
        source: source.into(),
        target: target.into(),
        read_only: false,
    }
}
