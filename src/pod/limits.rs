//! The Linux limits on a command line, and whether a run's docker client
//! fits within them.
//!
//! The prompt, the agent command and the names of the `env` entries are
//! arguments of the docker client; the `env` values are in its environment,
//! beside this process's own. `execve` refuses (`E2BIG`) a single string
//! over [`MAX_ARG_BYTES`], or all of them together over [`MAX_TOTAL_BYTES`].
//! cldpd checks this where the sizes are known — pod validation
//! (`cldpd pods`, `cldpd doctor`), every start and the batch pre-check, every
//! resume — and maps an `E2BIG` it still meets at spawn time to the same
//! [`Error::ArgumentsTooLong`], which is never retried.
//!
//! ```
//! use cldpd::pod::limits::{check_arg, MAX_ARG_BYTES};
//! assert!(check_arg("the prompt", MAX_ARG_BYTES - 1).is_ok());
//! let err = check_arg("the prompt", MAX_ARG_BYTES).unwrap_err();
//! assert!(err.to_string().starts_with("the prompt is 131072 bytes"));
//! ```

use std::ffi::OsStr;
use std::mem::size_of;

use super::Pod;
use crate::error::{Error, Result};
use crate::runtime::SecretValue;

/// Linux's limit on one argument or environment string, its NUL included
/// (`MAX_ARG_STRLEN`: 32 pages of 4 KiB).
pub const MAX_ARG_BYTES: usize = 32 * 4096;

/// The limit on all arguments and environment strings together, each
/// counted with its NUL and one pointer. Linux allows a quarter of the
/// stack limit (at most 6 MiB); with the usual 8 MiB stack (`ulimit -s`)
/// that is 2 MiB, the figure used here.
pub const MAX_TOTAL_BYTES: usize = 2 * 1024 * 1024;

/// Room for what cldpd adds to every `docker run` itself: docker's
/// options and the labels (session, pod, image, owner, state directory).
const FIXED_BYTES: usize = 16 * 1024;

/// What one string costs `execve`: its bytes, its NUL and a pointer.
pub fn cost(len: usize) -> usize {
    len + 1 + size_of::<usize>()
}

/// [`Error::ArgumentsTooLong`] when one string of `bytes` (NUL not
/// counted) is over [`MAX_ARG_BYTES`]; `what` names it in the error.
pub fn check_arg(what: &str, bytes: usize) -> Result<()> {
    if bytes >= MAX_ARG_BYTES {
        return Err(Error::ArgumentsTooLong {
            what: what.to_string(),
            bytes,
            limit: MAX_ARG_BYTES - 1,
        });
    }
    Ok(())
}

fn check_total(what: impl FnOnce() -> String, bytes: usize) -> Result<()> {
    if bytes > MAX_TOTAL_BYTES {
        return Err(Error::ArgumentsTooLong {
            what: what(),
            bytes,
            limit: MAX_TOTAL_BYTES,
        });
    }
    Ok(())
}

/// What this process's environment costs: every docker client inherits it.
///
/// Read again at most once a second: reading it copies every variable
/// under the environment's lock, which was 2.5 % of the CPU of starting
/// 10,000 runs at once (`perf` of `bench_hold`, 2026-12-01); a variable
/// set meanwhile is counted within a second.
fn own_environment_bytes() -> usize {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<(Instant, usize)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match *last {
        Some((at, bytes)) if at.elapsed() < Duration::from_secs(1) => bytes,
        _ => {
            let bytes = std::env::vars_os()
                .map(|(k, v)| cost(k.len() + 1 + v.len()))
                .sum();
            *last = Some((Instant::now(), bytes));
            bytes
        }
    }
}

/// Check a follow-up prompt: `docker exec <container> <agent> ... <prompt>`.
pub fn check_follow_up(prompt: &str) -> Result<()> {
    let what = "the follow-up prompt";
    check_arg(what, prompt.len())?;
    check_total(
        || format!("{what} with this process's environment"),
        FIXED_BYTES + own_environment_bytes() + cost(prompt.len()),
    )
}

impl Pod {
    /// Check that a `docker run` of this pod fits the Linux limits:
    /// `prompt` (already joined with the template) and each `env` string as
    /// one argument, and everything together — the prompt, the agent
    /// command, an `-e NAME` argument and a `NAME=value` string for each
    /// `env` entry, the mounts and this process's environment. `env` is
    /// the resolved environment ([`Pod::resolve_env`]).
    pub fn check_argument_size(&self, prompt: &str, env: &[(String, SecretValue)]) -> Result<()> {
        check_arg(
            "the prompt (template.md and the task together)",
            prompt.len(),
        )?;
        let agent = self.agent_command();
        for arg in &agent {
            check_arg("an argument of agentCommand", arg.len())?;
        }
        let mut total = FIXED_BYTES + own_environment_bytes() + cost(prompt.len());
        // The agent command is in argv and again in a label.
        total += agent.iter().map(|a| 2 * cost(a.len())).sum::<usize>();
        for (name, value) in env {
            let string = name.len() + 1 + value.expose().len();
            check_arg(
                &format!("the environment variable `{name}` (name=value)"),
                string,
            )?;
            total += cost("-e".len()) + cost(name.len()) + cost(string);
        }
        for mount in &self.config.mounts {
            // `type=bind,source=<s>,target=<t>,readonly`, `~` expanded.
            let home = if mount.source.starts_with('~') {
                super::discover::home_dir().map_or(0, |h| h.as_os_str().len())
            } else {
                self.dir.as_os_str().len()
            };
            let arg = 40 + home + mount.source.len() + mount.target.len();
            total += cost("--mount".len()) + cost(arg);
        }
        total += self
            .config
            .workdir
            .as_ref()
            .map_or(0, |w| 2 * cost(w.len()));
        check_total(
            || {
                format!(
                    "the docker command line for pod `{}` ({} env entries, the prompt, the agent command and this process's environment)",
                    self.name,
                    env.len()
                )
            },
            total,
        )
    }
}

/// The error for a docker client that could not be spawned with `E2BIG`:
/// say which string, or the whole, is over the limit.
pub(crate) fn spawn_error(
    program: &OsStr,
    args: &mut dyn Iterator<Item = &OsStr>,
    envs: &mut dyn Iterator<Item = (&OsStr, Option<&OsStr>)>,
) -> Error {
    let mut total = own_environment_bytes() + cost(program.len());
    let mut longest: Option<(&str, usize)> = None;
    let mut note = |what: &'static str, len: usize, total: &mut usize| {
        *total += cost(len);
        if len >= MAX_ARG_BYTES && longest.is_none_or(|(_, l)| len > l) {
            longest = Some((what, len));
        }
    };
    for arg in args {
        note("an argument of the docker command", arg.len(), &mut total);
    }
    for (name, value) in envs {
        if let Some(value) = value {
            note(
                "an environment variable of the docker client",
                name.len() + 1 + value.len(),
                &mut total,
            );
        }
    }
    match longest {
        Some((what, bytes)) => Error::ArgumentsTooLong {
            what: what.to_string(),
            bytes,
            limit: MAX_ARG_BYTES - 1,
        },
        None => Error::ArgumentsTooLong {
            what: "the docker command line (arguments and environment)".to_string(),
            bytes: total,
            limit: MAX_TOTAL_BYTES,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::test_helpers::*;

    fn pod() -> Pod {
        Pod {
            name: "web".into(),
            dir: "/pods/web".into(),
            dockerfile: "/pods/web/Dockerfile".into(),
            config: PodConfig::default(),
            template: None,
        }
    }

    fn too_long(result: Result<()>) -> (String, usize, usize) {
        match result {
            Err(Error::ArgumentsTooLong { what, bytes, limit }) => (what, bytes, limit),
            other => panic!("expected ArgumentsTooLong, got {other:?}"),
        }
    }

    #[test]
    fn one_string_may_have_128_kib_less_its_nul() {
        assert!(check_arg("x", 131_071).is_ok());
        let (what, bytes, limit) = too_long(check_arg("x", 131_072));
        assert_eq!((what.as_str(), bytes, limit), ("x", 131_072, 131_071));
    }

    #[test]
    fn a_huge_prompt_is_refused_naming_the_prompt() {
        let pod = pod();
        assert!(pod.check_argument_size(&"p".repeat(100_000), &[]).is_ok());
        let (what, bytes, _) = too_long(pod.check_argument_size(&"p".repeat(200_000), &[]));
        assert!(what.contains("the prompt"), "{what}");
        assert_eq!(bytes, 200_000);
        let (what, ..) = too_long(check_follow_up(&"p".repeat(200_000)));
        assert!(what.contains("follow-up"), "{what}");
        assert!(check_follow_up("more").is_ok());
    }

    #[test]
    fn a_huge_environment_is_refused() {
        let pod = pod();
        let env: Vec<(String, SecretValue)> = (0..100_000)
            .map(|i| (format!("VAR_{i}"), SecretValue::new("x")))
            .collect();
        let (what, bytes, limit) = too_long(pod.check_argument_size("task", &env));
        assert!(what.contains("100000 env entries"), "{what}");
        assert!(bytes > limit && limit == MAX_TOTAL_BYTES, "{bytes}");
        let few = &env[..1000];
        assert!(pod.check_argument_size("task", few).is_ok());
        // One value over 128 KiB is too long on its own, and named.
        let big = [("BIG".to_string(), SecretValue::new("v".repeat(140_000)))];
        let (what, ..) = too_long(pod.check_argument_size("task", &big));
        assert!(what.contains("`BIG`"), "{what}");
        assert!(!what.contains("vvv"), "the value is never shown: {what}");
    }

    #[test]
    fn an_e2big_at_spawn_names_the_long_argument_or_the_whole() {
        let long = "a".repeat(200_000);
        let args = ["run".to_string(), long];
        let err = spawn_error(
            OsStr::new("docker"),
            &mut args.iter().map(OsStr::new),
            &mut std::iter::empty(),
        );
        let (what, bytes, limit) = too_long(Err(err));
        assert!(what.contains("argument"), "{what}");
        assert_eq!((bytes, limit), (200_000, MAX_ARG_BYTES - 1));
        let many: Vec<String> = (0..200_000).map(|i| format!("NAME_{i}")).collect();
        let err = spawn_error(
            OsStr::new("docker"),
            &mut many.iter().map(OsStr::new),
            &mut std::iter::empty(),
        );
        let (what, bytes, limit) = too_long(Err(err));
        assert!(what.contains("command line"), "{what}");
        assert!(bytes > limit, "{bytes}");
    }
}
