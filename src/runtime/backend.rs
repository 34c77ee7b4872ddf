//! Which backend drives Docker: the Engine API by default, the `docker`
//! command line on request.
//!
//! | `CLDPD_RUNTIME` | backend |
//! |---|---|
//! | unset or empty | [`EngineApi`](super::EngineApi), unless `CLDPD_DOCKER` names a binary: then [`DockerCli`](super::DockerCli) with it |
//! | `engine` (or `api`) | [`EngineApi`](super::EngineApi) (`DOCKER_HOST`) |
//! | `cli` | [`DockerCli`](super::DockerCli) (`CLDPD_DOCKER`, default `docker`) |
//!
//! ```
//! use cldpd::runtime::Backend;
//! assert_eq!(Backend::parse("cli").unwrap(), Backend::Cli);
//! assert_eq!(Backend::parse("").unwrap(), Backend::EngineApi);
//! assert!(Backend::parse("kubernetes").is_err());
//! ```

use std::sync::Arc;

use super::{DockerCli, EngineApi, Runtime};
use crate::error::Error;

/// A Docker backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The Docker Engine API over `DOCKER_HOST` (bollard).
    #[default]
    EngineApi,
    /// The `docker` binary (or `CLDPD_DOCKER`), one client process per
    /// operation; for docker-compatible stand-ins such as `podman`.
    Cli,
}

impl Backend {
    /// The variable that picks the backend.
    pub const ENV: &'static str = "CLDPD_RUNTIME";

    /// `engine`/`api`, `cli`; empty is the default.
    pub fn parse(value: &str) -> Result<Backend, Error> {
        match value.trim() {
            "" | "engine" | "api" | "engine-api" => Ok(Backend::EngineApi),
            "cli" | "docker-cli" => Ok(Backend::Cli),
            other => Err(Error::InvalidOption {
                option: Self::ENV.to_string(),
                message: format!("`{other}` is not a backend; use `engine` (the default) or `cli`"),
            }),
        }
    }

    /// From `CLDPD_RUNTIME`; unset or empty: the CLI when `CLDPD_DOCKER`
    /// names a binary, the Engine API otherwise.
    pub fn from_env() -> Result<Backend, Error> {
        Self::from_values(
            std::env::var(Self::ENV).ok(),
            std::env::var(DockerCli::BINARY_ENV).ok(),
        )
    }

    fn from_values(runtime: Option<String>, docker: Option<String>) -> Result<Backend, Error> {
        match runtime.filter(|v| !v.trim().is_empty()) {
            Some(v) => Self::parse(&v),
            None if docker.is_some_and(|d| !d.is_empty()) => Ok(Backend::Cli),
            None => Ok(Backend::EngineApi),
        }
    }

    /// A runtime of this kind, configured from the environment.
    pub fn runtime(self) -> Arc<dyn Runtime> {
        match self {
            Backend::EngineApi => Arc::new(EngineApi::new()),
            Backend::Cli => Arc::new(DockerCli::new()),
        }
    }

    /// `engine-api` / `cli`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::EngineApi => "engine-api",
            Backend::Cli => "cli",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_picks_the_backend() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            Backend::from_values(None, None).unwrap(),
            Backend::EngineApi
        );
        assert_eq!(
            Backend::from_values(s(""), None).unwrap(),
            Backend::EngineApi
        );
        assert_eq!(Backend::from_values(s("cli"), None).unwrap(), Backend::Cli);
        assert_eq!(
            Backend::from_values(None, s("podman")).unwrap(),
            Backend::Cli
        );
        assert_eq!(
            Backend::from_values(None, s("")).unwrap(),
            Backend::EngineApi
        );
        assert_eq!(
            Backend::from_values(s("engine"), s("podman")).unwrap(),
            Backend::EngineApi
        );
        assert!(matches!(
            Backend::from_values(s("k8s"), None),
            Err(Error::InvalidOption { .. })
        ));
    }
}
