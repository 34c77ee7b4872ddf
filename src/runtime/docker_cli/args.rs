//! Pure argv builders for `docker build`, `docker run` and `docker exec`.
//!
//! Nothing here ever sees an environment *value*: env vars and build args
//! are passed by name (`-e NAME`, `--build-arg NAME`) and the docker client
//! reads the value from its own environment, which the caller sets.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::runtime::{labels, BindMount, BuildSpec, ExecSpec, RunSpec};

/// `build -t <image> -f <dockerfile> --force-rm [--build-arg NAME]...
/// [--label k=v]... <context>`.
///
/// `--force-rm` makes the legacy builder (the only one on engines without
/// buildx) remove the intermediate container of a failed `RUN` step, which
/// it otherwise leaves behind in state `Created`.
pub(crate) fn build_args(spec: &BuildSpec, iidfile: Option<&std::path::Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "build".into(),
        "-t".into(),
        spec.image.clone().into(),
        "-f".into(),
        spec.dockerfile.clone().into_os_string(),
        "--force-rm".into(),
    ];
    if let Some(path) = iidfile {
        args.push("--iidfile".into());
        args.push(path.as_os_str().to_owned());
    }
    for (name, _value) in &spec.build_args {
        args.push("--build-arg".into());
        args.push(name.into());
    }
    push_labels(&mut args, &spec.labels);
    args.push(spec.context.clone().into_os_string());
    args
}

/// `run --rm --init --pull never --name <container> [-i] [--label k=v]... [-e NAME]...
/// [--mount type=bind,source=<abs>,target=<t>[,readonly]]... [-w <dir>] [--network <net>]
/// [--cpus N] [--memory <bytes>] [--pids-limit N] <image> <command>...`.
///
/// The labels are `spec.labels` plus [`labels::SESSION`] / [`labels::POD`]
/// from `spec.session` / `spec.pod` when the map lacks them, so every
/// container can be found again by label; sorted by key.
pub(crate) fn run_args(spec: &RunSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "run".into(),
        "--rm".into(),
        "--init".into(),
        // cldpd builds what it runs: never reach for a registry.
        "--pull".into(),
        "never".into(),
        "--name".into(),
        spec.container.clone().into(),
    ];
    if spec.stdin.is_some() {
        // The prompt arrives on stdin (see `runtime::Stdin`).
        args.push("-i".into());
    }
    let mut all_labels = spec.labels.clone();
    for (key, value) in [(labels::SESSION, &spec.session), (labels::POD, &spec.pod)] {
        if !value.is_empty() && !all_labels.contains_key(key) {
            all_labels.insert(key.to_string(), value.clone());
        }
    }
    push_labels(&mut args, &all_labels);
    for (name, _value) in &spec.env {
        args.push("-e".into());
        args.push(name.into());
    }
    for mount in &spec.mounts {
        args.push("--mount".into());
        args.push(mount_arg(mount));
    }
    if let Some(dir) = &spec.workdir {
        args.push("-w".into());
        args.push(dir.into());
    }
    if let Some(net) = &spec.network {
        args.push("--network".into());
        args.push(net.into());
    }
    if let Some(cpus) = spec.resources.cpus {
        args.push("--cpus".into());
        args.push(cpus.to_string().into());
    }
    if let Some(bytes) = spec.resources.memory_bytes {
        args.push("--memory".into());
        args.push(bytes.to_string().into());
    }
    if let Some(pids) = spec.resources.pids_limit {
        args.push("--pids-limit".into());
        args.push(pids.to_string().into());
    }
    args.push(spec.image.clone().into());
    args.extend(spec.command.iter().map(OsString::from));
    args
}

/// `exec [-i] [-w <dir>] <container> <command>...` (`-i` only with a
/// stdin to write; never `-t`).
pub(crate) fn exec_args(spec: &ExecSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["exec".into()];
    if spec.stdin.is_some() {
        args.push("-i".into());
    }
    if let Some(dir) = &spec.workdir {
        args.push("-w".into());
        args.push(dir.into());
    }
    args.push(spec.container.clone().into());
    args.extend(spec.command.iter().map(OsString::from));
    args
}

fn push_labels(args: &mut Vec<OsString>, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        args.push("--label".into());
        args.push(format!("{key}={value}").into());
    }
}

/// One `--mount` value in Docker's CSV syntax. The host path may be any
/// bytes (it is an `OsStr`), so this works on bytes throughout.
pub(crate) fn mount_arg(mount: &BindMount) -> OsString {
    let mut out = b"type=bind,".to_vec();
    let mut source = b"source=".to_vec();
    source.extend_from_slice(mount.source.as_os_str().as_bytes());
    push_csv_field(&mut out, &source);
    out.push(b',');
    push_csv_field(&mut out, format!("target={}", mount.target).as_bytes());
    if mount.read_only {
        out.extend_from_slice(b",readonly");
    }
    OsString::from_vec(out)
}

/// Append one CSV field, quoted (`"…"`, inner `"` doubled) when it holds a
/// character that would otherwise end or start a field.
fn push_csv_field(out: &mut Vec<u8>, field: &[u8]) {
    if field
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push(b'"');
        for &b in field {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field);
    }
}

/// Render argv for a debug log line. Safe by construction: argv never holds
/// an environment value.
pub(crate) fn display_argv(args: &[OsString]) -> String {
    args.iter()
        .map(|a| OsStr::to_string_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Resources, SecretValue, DEFAULT_LINE_CAP};
    use std::path::PathBuf;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_str().expect("utf-8 argv").to_string())
            .collect()
    }

    fn run_spec() -> RunSpec {
        let mut labels = BTreeMap::new();
        labels.insert("cldpd.session".to_string(), "web-0a1b2c3d".to_string());
        labels.insert("cldpd.attempt".to_string(), "0".to_string());
        RunSpec {
            session: "web-0a1b2c3d".into(),
            pod: "web".into(),
            container: "cldpd-web-0a1b2c3d-0".into(),
            image: "cldpd-web".into(),
            command: vec!["claude".into(), "-p".into(), "do it".into()],
            env: vec![
                ("API_KEY".into(), SecretValue::new("sk-very-secret")),
                ("TOKEN".into(), SecretValue::new("ghp_alsosecret")),
            ],
            workdir: Some("/workspace".into()),
            mounts: vec![
                BindMount {
                    source: PathBuf::from("/home/me/src"),
                    target: "/workspace".into(),
                    read_only: false,
                },
                BindMount {
                    source: PathBuf::from("/home/me/a,b\"c"),
                    target: "/ro".into(),
                    read_only: true,
                },
            ],
            labels,
            resources: Resources {
                cpus: Some(1.5),
                memory_bytes: Some(2 * 1024 * 1024 * 1024),
                pids_limit: Some(256),
            },
            line_cap: DEFAULT_LINE_CAP,
            stdin: None,
            network: None,
        }
    }

    #[test]
    fn run_argv_has_the_documented_shape() {
        let args = strings(&run_args(&run_spec()));
        assert_eq!(
            args,
            [
                "run",
                "--rm",
                "--init",
                "--pull",
                "never",
                "--name",
                "cldpd-web-0a1b2c3d-0",
                "--label",
                "cldpd.attempt=0",
                "--label",
                "cldpd.pod=web",
                "--label",
                "cldpd.session=web-0a1b2c3d",
                "-e",
                "API_KEY",
                "-e",
                "TOKEN",
                "--mount",
                "type=bind,source=/home/me/src,target=/workspace",
                "--mount",
                "type=bind,\"source=/home/me/a,b\"\"c\",target=/ro,readonly",
                "-w",
                "/workspace",
                "--cpus",
                "1.5",
                "--memory",
                "2147483648",
                "--pids-limit",
                "256",
                "cldpd-web",
                "claude",
                "-p",
                "do it",
            ]
        );
    }

    #[test]
    fn run_argv_never_holds_env_values() {
        let spec = run_spec();
        let joined = strings(&run_args(&spec)).join("\0");
        for (name, value) in &spec.env {
            assert!(!joined.contains(value.expose()), "value of {name} in argv");
            assert!(!joined.contains(&format!("{name}=")), "{name}= in argv");
        }
    }

    #[test]
    fn minimal_run_argv() {
        let spec = RunSpec {
            session: String::new(),
            pod: String::new(),
            container: "c".into(),
            image: "img".into(),
            command: vec!["claude".into()],
            env: vec![],
            workdir: None,
            mounts: vec![],
            labels: BTreeMap::new(),
            resources: Resources::default(),
            line_cap: 1024,
            stdin: None,
            network: None,
        };
        assert_eq!(
            strings(&run_args(&spec)),
            ["run", "--rm", "--init", "--pull", "never", "--name", "c", "img", "claude"]
        );
    }

    #[test]
    fn explicit_labels_win_over_spec_fields() {
        let mut spec = run_spec();
        spec.labels
            .insert("cldpd.pod".to_string(), "explicit".to_string());
        let args = strings(&run_args(&spec));
        assert!(args.contains(&"cldpd.pod=explicit".to_string()));
        assert!(!args.contains(&"cldpd.pod=web".to_string()));
    }

    #[test]
    fn mount_csv_quoting() {
        let plain = BindMount {
            source: "/a/b".into(),
            target: "/t".into(),
            read_only: false,
        };
        assert_eq!(mount_arg(&plain), "type=bind,source=/a/b,target=/t");
        let weird = BindMount {
            source: "/x\"y".into(),
            target: "/t,u".into(),
            read_only: true,
        };
        assert_eq!(
            mount_arg(&weird),
            "type=bind,\"source=/x\"\"y\",\"target=/t,u\",readonly"
        );
        // Non-UTF-8 host paths pass through as bytes.
        let bytes = BindMount {
            source: PathBuf::from(OsString::from_vec(b"/p\xff".to_vec())),
            target: "/t".into(),
            read_only: false,
        };
        assert_eq!(
            mount_arg(&bytes).as_bytes(),
            b"type=bind,source=/p\xff,target=/t"
        );
    }

    #[test]
    fn build_argv_passes_build_args_by_name() {
        let mut labels = BTreeMap::new();
        labels.insert("cldpd.pod".to_string(), "web".to_string());
        let spec = BuildSpec {
            pod: "web".into(),
            image: "cldpd-web".into(),
            context: "/pods/web".into(),
            dockerfile: "/pods/web/Dockerfile".into(),
            build_args: vec![("NPM_TOKEN".into(), SecretValue::new("npm_secret"))],
            labels,
        };
        let args = strings(&build_args(&spec, None));
        assert_eq!(
            args,
            [
                "build",
                "-t",
                "cldpd-web",
                "-f",
                "/pods/web/Dockerfile",
                "--force-rm",
                "--build-arg",
                "NPM_TOKEN",
                "--label",
                "cldpd.pod=web",
                "/pods/web",
            ]
        );
        assert!(!args.join(" ").contains("npm_secret"));
    }

    #[test]
    fn exec_argv() {
        let spec = ExecSpec {
            container: "c1".into(),
            command: vec![
                "claude".into(),
                "-p".into(),
                "--resume".into(),
                "u".into(),
                "more".into(),
            ],
            workdir: Some("/w".into()),
            line_cap: 10,
            stdin: None,
        };
        assert_eq!(
            strings(&exec_args(&spec)),
            ["exec", "-w", "/w", "c1", "claude", "-p", "--resume", "u", "more"]
        );
        let bare = ExecSpec {
            workdir: None,
            ..spec
        };
        assert_eq!(strings(&exec_args(&bare))[..2], ["exec", "c1"]);
    }

    #[test]
    fn a_stdin_adds_dash_i_and_never_reaches_argv() {
        let prompt = "-rf the prompt text";
        let mut run = run_spec();
        run.stdin = Some(crate::runtime::Stdin::new(prompt));
        let args = strings(&run_args(&run));
        assert_eq!(args.iter().filter(|a| *a == "-i").count(), 1);
        assert!(args.iter().position(|a| a == "-i") < args.iter().position(|a| a == &run.image));
        assert!(!args.join(" ").contains("the prompt text"));
        run.stdin = None;
        assert!(!strings(&run_args(&run)).contains(&"-i".to_string()));
        assert!(!strings(&run_args(&run)).contains(&"--network".to_string()));
        run.network = Some("none".into());
        let args = strings(&run_args(&run));
        let at = args.iter().position(|a| a == "--network").unwrap();
        assert_eq!(args[at + 1], "none");
        assert!(at < args.iter().position(|a| a == &run.image).unwrap());
        let exec = ExecSpec {
            container: "c1".into(),
            command: vec!["claude".into(), "-p".into()],
            workdir: None,
            line_cap: 10,
            stdin: Some(crate::runtime::Stdin::new(prompt)),
        };
        assert_eq!(
            strings(&exec_args(&exec)),
            ["exec", "-i", "c1", "claude", "-p"]
        );
    }
}
