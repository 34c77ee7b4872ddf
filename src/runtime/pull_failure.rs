//! Recognising a build that failed because its base image could not be
//! pulled, from the build's last output lines — shared by every backend
//! (the docker CLI's legacy builder and BuildKit print it differently; the
//! Engine API reports the same registry messages).
//!
//! A pull failure is not a Dockerfile to fix: the Dockerfile is fine, the
//! engine cannot get the image its `FROM` names. [`Error::BuildFailed`]'s
//! message and hint say so when [`pull_failure`] recognises the tail.
//!
//! ```
//! use cldpd::runtime::{pull_failure, PullFailureKind};
//! let tail = [
//!     "Step 1/3 : FROM node:20-slim",
//!     r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host"#,
//! ];
//! let f = pull_failure(&tail).unwrap();
//! assert_eq!(f.image, "node:20-slim");
//! assert_eq!(f.kind, PullFailureKind::Unreachable);
//! ```
//!
//! [`Error::BuildFailed`]: crate::Error::BuildFailed

/// Why the base image could not be pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailureKind {
    /// The engine cannot reach its registry (DNS, no route, timeout,
    /// refused).
    Unreachable,
    /// The registry has no such image (or hides it without credentials).
    NotFound,
    /// The registry wants credentials.
    Unauthorized,
}

/// A base image that could not be pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFailure {
    /// The image as the Dockerfile's `FROM` (or the engine) names it.
    pub image: String,
    /// Why.
    pub kind: PullFailureKind,
}

impl PullFailure {
    /// One line for the error message.
    pub fn describe(&self) -> String {
        let why = match self.kind {
            PullFailureKind::Unreachable => "the engine cannot reach its registry",
            PullFailureKind::NotFound => {
                "the registry has no such image, or it needs `docker login`"
            }
            PullFailureKind::Unauthorized => "the registry wants credentials",
        };
        format!("its base image `{}` cannot be pulled: {why}", self.image)
    }

    /// What to do.
    pub fn hint(&self) -> String {
        let image = &self.image;
        match self.kind {
            PullFailureKind::Unreachable => format!(
                "the pod's Dockerfile is fine: get `{image}` onto this engine — `docker pull {image}` once it can reach the registry, or `docker save` it elsewhere and `docker load` it here — or change `FROM` to an image `docker images` lists"
            ),
            PullFailureKind::NotFound => format!(
                "check the name and tag in `FROM` (`{image}`); for a private image `docker login` first; or build or `docker load` it locally"
            ),
            PullFailureKind::Unauthorized => format!(
                "`docker login` to the registry of `{image}`, or change `FROM` to an image `docker images` lists"
            ),
        }
    }
}

/// The pull failure the last lines of a failed build show, if any.
pub fn pull_failure<S: AsRef<str>>(tail: &[S]) -> Option<PullFailure> {
    let lines: Vec<&str> = tail.iter().map(|l| l.as_ref().trim()).collect();
    let (at, kind) = lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| kind_of(l).map(|k| (i, k)))?;
    let line = lines[at];
    // The image: named in the message (BuildKit, the Engine API), else the
    // FROM of the step that failed (the legacy builder: no other step
    // between it and the error).
    if let Some(image) = image_in_message(line) {
        return Some(PullFailure { image, kind });
    }
    for l in lines[..at].iter().rev() {
        if let Some(image) = from_step(l) {
            return Some(PullFailure { image, kind });
        }
        if is_step(l) {
            return None;
        }
    }
    None
}

fn kind_of(line: &str) -> Option<PullFailureKind> {
    let l = line.to_ascii_lowercase();
    const UNREACHABLE: [&str; 9] = [
        "dial tcp",
        "no such host",
        "i/o timeout",
        "connection refused",
        "tls handshake timeout",
        "network is unreachable",
        "client.timeout exceeded",
        "server misbehaving",
        "proxyconnect",
    ];
    const NOT_FOUND: [&str; 4] = [
        "pull access denied",
        "manifest unknown",
        "repository does not exist",
        "not found: manifest",
    ];
    let registry = l.contains("registry")
        || l.contains("/v2/")
        || l.contains("pull")
        || l.contains("manifest")
        || l.contains("resolve source metadata")
        || l.contains("load metadata");
    if UNREACHABLE.iter().any(|p| l.contains(p)) && registry {
        Some(PullFailureKind::Unreachable)
    } else if NOT_FOUND.iter().any(|p| l.contains(p))
        || (l.starts_with("manifest for ") && l.contains(" not found"))
    {
        Some(PullFailureKind::NotFound)
    } else if (l.contains("unauthorized") || l.contains("authentication required")) && registry {
        Some(PullFailureKind::Unauthorized)
    } else {
        None
    }
}

/// `Step 1/3 : FROM [--platform=…] image [AS name]` → `image`.
fn from_step(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Step ")?;
    let (_, instr) = rest.split_once(" : ")?;
    let mut words = instr.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("FROM") {
        return None;
    }
    words.find(|w| !w.starts_with("--")).map(String::from)
}

fn is_step(line: &str) -> bool {
    line.starts_with("Step ") && line.contains(" : ")
}

/// The image a registry message names: `pull access denied for IMAGE,`,
/// `manifest for IMAGE not found`, `resolve source metadata for IMAGE:`,
/// `load metadata for IMAGE`.
fn image_in_message(line: &str) -> Option<String> {
    for marker in [
        "pull access denied for ",
        "manifest for ",
        "resolve source metadata for ",
        "load metadata for ",
    ] {
        if let Some(at) = line.find(marker) {
            let rest = &line[at + marker.len()..];
            let image: String = rest
                .split(|c: char| c.is_whitespace() || c == ',')
                .next()
                .unwrap_or_default()
                .trim_end_matches(':')
                .to_string();
            if !image.is_empty() {
                return Some(image);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_builder_without_a_registry_is_unreachable() {
        // Seen on this project's machine (Docker 20.10, no network).
        let tail = [
            "Sending build context to Docker daemon  2.048kB",
            "Step 1/3 : FROM some-image-not-present:1.0",
            r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host"#,
        ];
        assert_eq!(
            pull_failure(&tail),
            Some(PullFailure {
                image: "some-image-not-present:1.0".into(),
                kind: PullFailureKind::Unreachable
            })
        );
        let with_platform = [
            "Step 1/2 : FROM --platform=linux/amd64 node:20 AS build",
            tail[2],
        ];
        assert_eq!(pull_failure(&with_platform).unwrap().image, "node:20");
    }

    #[test]
    fn missing_images_and_credentials_are_told_apart() {
        let denied = ["Step 1/2 : FROM acme/private", "pull access denied for acme/private, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"];
        assert_eq!(
            pull_failure(&denied),
            Some(PullFailure {
                image: "acme/private".into(),
                kind: PullFailureKind::NotFound
            })
        );
        let manifest = ["manifest for node:99 not found: manifest unknown: manifest unknown"];
        assert_eq!(pull_failure(&manifest).unwrap().image, "node:99");
        let buildkit = ["ERROR: failed to solve: node:20-slim: failed to resolve source metadata for docker.io/library/node:20-slim: unexpected status from HEAD request to https://registry-1.docker.io/v2/library/node/manifests/20-slim: 401 Unauthorized"];
        assert_eq!(
            pull_failure(&buildkit),
            Some(PullFailure {
                image: "docker.io/library/node:20-slim".into(),
                kind: PullFailureKind::Unauthorized
            })
        );
    }

    #[test]
    fn other_build_failures_are_not_pull_failures() {
        // A RUN step that fails to reach the network is the Dockerfile's
        // business, not a base image's.
        let run = [
            "Step 1/3 : FROM debian:12",
            " ---> 0a1b2c3d",
            "Step 2/3 : RUN apt-get update",
            "Err:1 http://deb.debian.org/debian bookworm InRelease  Temporary failure resolving 'deb.debian.org'",
            "dial tcp: lookup deb.debian.org: no such host",
        ];
        assert_eq!(pull_failure(&run), None);
        assert_eq!(pull_failure(&["Step 1/1 : FROM scratch", "oops"]), None);
        assert_eq!(pull_failure::<&str>(&[]), None);
    }
}
