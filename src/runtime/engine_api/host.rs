//! Which engine to talk to: `DOCKER_HOST`, as the docker CLI reads it.
//!
//! | `DOCKER_HOST` | connection |
//! |---|---|
//! | unset or empty | `unix:///var/run/docker.sock` |
//! | `unix:///path` | that socket |
//! | `tcp://host:port` | plain HTTP; TLS when `DOCKER_TLS_VERIFY` is set and not empty, with `ca.pem`, `cert.pem`, `key.pem` from `DOCKER_CERT_PATH` (default `~/.docker`) |
//! | `ssh://[user@]host` | through the `ssh` binary (`docker system dial-stdio` on the remote side) |
//!
//! Anything else is [`Error::DockerUnavailable`] naming the value.

use std::time::Duration;

use bollard::{Docker, API_DEFAULT_VERSION};

use crate::error::Error;

/// The socket used when `DOCKER_HOST` is unset, as the docker CLI does.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// bollard's own per-request timeout covers only the wait for a response's
/// head; cldpd puts its own limits around the calls that must end (admin
/// calls, stops), and attach/wait/build/exec streams last as long as the
/// container or build does. One day keeps bollard's limit out of the way.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The host from a `DOCKER_HOST` value (unset or empty: the default).
pub(crate) fn host_from(value: Option<String>) -> String {
    value
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// Connect (lazily: no request is made) to `host`.
pub(crate) fn connect(host: &str) -> Result<Docker, Error> {
    let secs = REQUEST_TIMEOUT.as_secs();
    let unavailable = |e: bollard::errors::Error| Error::DockerUnavailable {
        message: format!("cannot use DOCKER_HOST={host}: {e}"),
    };
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, secs, API_DEFAULT_VERSION).map_err(unavailable)?
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty());
        if tls {
            let http = host.replacen("tcp://", "https://", 1);
            let dir = cert_dir()?;
            Docker::connect_with_ssl(
                &http,
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                secs,
                API_DEFAULT_VERSION,
            )
            .map_err(unavailable)?
        } else {
            Docker::connect_with_http(host, secs, API_DEFAULT_VERSION).map_err(unavailable)?
        }
    } else if host.starts_with("ssh://") {
        Docker::connect_with_ssh(host, secs, API_DEFAULT_VERSION, None).map_err(unavailable)?
    } else {
        return Err(Error::DockerUnavailable {
            message: format!("DOCKER_HOST={host} is not a unix://, tcp:// or ssh:// address"),
        });
    };
    Ok(docker.with_request_modifier(super::secrets::reveal))
}

/// `DOCKER_CERT_PATH`, or `~/.docker` as the docker CLI defaults.
fn cert_dir() -> Result<std::path::PathBuf, Error> {
    if let Some(dir) = std::env::var_os("DOCKER_CERT_PATH").filter(|d| !d.is_empty()) {
        return Ok(dir.into());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::DockerUnavailable {
            message: "DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is".into(),
        })?;
    Ok(std::path::Path::new(&home).join(".docker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_is_the_default_socket() {
        assert_eq!(host_from(None), DEFAULT_HOST);
        assert_eq!(host_from(Some(" ".into())), DEFAULT_HOST);
        assert_eq!(host_from(Some("tcp://h:2375".into())), "tcp://h:2375");
    }

    #[test]
    fn schemes() {
        // bollard checks that a socket exists when it connects.
        assert!(matches!(
            connect("unix:///nonexistent/docker.sock"),
            Err(Error::DockerUnavailable { .. })
        ));
        assert!(connect("tcp://127.0.0.1:1").is_ok());
        assert!(connect("ssh://user@example.invalid").is_ok());
        match connect("npipe:////./pipe/docker") {
            Err(Error::DockerUnavailable { message }) => {
                assert!(message.contains("npipe://"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
