//! The `cldpd` binary against bad input and bad usage: no Docker needed.
//! Every bad input of ARCHITECTURE.md invariant 8 that cldpd can refuse up
//! front exits 1 with a message naming the problem, and (checked when
//! Docker is reachable) creates no container and no image.
//!
//! The bad inputs only Docker can reveal (agent missing, docker's own exit
//! 125, build failure) are in `cli_docker.rs`.

mod cli_support;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cli_support::{cldpd, run, Finished, LIMIT};
use support::docker::{docker, docker_available, unique_name};

const ISSUE: &str = "https://github.com/cldpd/demo/issues/1";

/// A pod directory with a Dockerfile (never built here) and, optionally, a
/// `pod.json`.
fn pod(pods: &Path, name: &str, pod_json: Option<&str>) {
    let dir = pods.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
    if let Some(json) = pod_json {
        std::fs::write(dir.join("pod.json"), json).unwrap();
    }
}

/// Exit 1, every `needles` on stderr (the `cldpd: ` line), nothing on stdout.
fn refused(out: &Finished, needles: &[&str]) {
    out.expect_code(1);
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("cldpd: "),
        "the first stderr line is the error:\n{}",
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr should mention `{needle}`:\n{}",
            out.stderr
        );
    }
    assert_eq!(out.stdout, "", "nothing on stdout for an error");
}

/// No container labelled with the pod and no image `cldpd-<pod>`.
fn nothing_created(pod: &str) {
    if !docker_available() {
        return;
    }
    let ps = docker(["ps", "-aq", "--filter", &format!("label=cldpd.pod={pod}")]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "",
        "container of {pod}"
    );
    let images = docker(["images", "-q", &format!("cldpd-{pod}")]);
    assert_eq!(
        String::from_utf8_lossy(&images.stdout).trim(),
        "",
        "image of {pod}"
    );
}

#[test]
fn every_bad_start_input_exits_1_naming_the_problem_and_creates_nothing() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let p = pods.path();
    let base = unique_name();
    let name = |suffix: &str| format!("{base}-{suffix}");

    pod(p, &name("ok"), None);
    std::fs::create_dir_all(p.join(name("nodockerfile"))).unwrap();
    pod(p, &name("badjson"), Some("{ \"env\": {"));
    pod(p, &name("typo"), Some(r#"{ "imgae": "x" }"#));
    pod(
        p,
        &name("nomount"),
        Some(r#"{ "mounts": [ { "source": "/nonexistent/cldpd-test", "target": "/src" } ] }"#),
    );
    pod(
        p,
        &name("relmount"),
        Some(r#"{ "mounts": [ { "source": "/tmp", "target": "src" } ] }"#),
    );
    pod(p, &name("badenv"), Some(r#"{ "env": { "1BAD": "x" } }"#));

    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["start".into(), name("nope"), "--issue".into(), ISSUE.into()],
            vec![
                format!("pod `{}` not found", name("nope")),
                "hint: pods that exist:".into(),
                name("ok"),
            ],
        ),
        (
            vec![
                "start".into(),
                "../x".into(),
                "--issue".into(),
                ISSUE.into(),
            ],
            vec!["invalid pod name `../x`".into(), "..".into()],
        ),
        (
            vec!["start".into(), "/x".into(), "--issue".into(), ISSUE.into()],
            vec!["invalid pod name `/x`".into(), "absolute".into()],
        ),
        (
            vec!["start".into(), "".into(), "--issue".into(), ISSUE.into()],
            vec!["invalid pod name ``".into(), "empty".into()],
        ),
        (
            vec!["start".into(), "Web".into(), "--issue".into(), ISSUE.into()],
            vec!["invalid pod name `Web`".into(), "uppercase".into()],
        ),
        (
            vec!["start".into(), "a:b".into(), "--issue".into(), ISSUE.into()],
            vec!["invalid pod name `a:b`".into()],
        ),
        (
            vec![
                "start".into(),
                name("nodockerfile"),
                "--issue".into(),
                ISSUE.into(),
            ],
            vec!["no Dockerfile".into(), name("nodockerfile")],
        ),
        (
            vec![
                "start".into(),
                name("badjson"),
                "--issue".into(),
                ISSUE.into(),
            ],
            vec![
                format!("{}/pod.json", name("badjson")),
                "invalid JSON".into(),
            ],
        ),
        (
            vec!["start".into(), name("typo"), "--issue".into(), ISSUE.into()],
            vec![
                format!("{}/pod.json", name("typo")),
                "unknown field `imgae`".into(),
            ],
        ),
        (
            vec![
                "start".into(),
                name("nomount"),
                "--issue".into(),
                ISSUE.into(),
            ],
            vec!["mount source /nonexistent/cldpd-test does not exist".into()],
        ),
        (
            vec![
                "start".into(),
                name("relmount"),
                "--issue".into(),
                ISSUE.into(),
            ],
            vec!["mount target `src` is not an absolute path".into()],
        ),
        (
            vec![
                "start".into(),
                name("badenv"),
                "--issue".into(),
                ISSUE.into(),
            ],
            vec!["invalid environment variable name `1BAD`".into()],
        ),
        (
            vec!["start".into(), name("ok"), "--issue".into(), "".into()],
            vec!["invalid issue URL".into(), "missing".into()],
        ),
        (
            vec![
                "start".into(),
                name("ok"),
                "--issue".into(),
                "https://github.com/acme/web/pull/3".into(),
            ],
            vec!["invalid issue URL `https://github.com/acme/web/pull/3`".into()],
        ),
        (
            vec![
                "start".into(),
                name("ok"),
                "--issue".into(),
                "not a url".into(),
            ],
            vec!["invalid issue URL `not a url`".into()],
        ),
        (
            vec!["start".into(), name("ok"), "--prompt".into(), "  ".into()],
            vec!["the prompt is empty".into()],
        ),
        (
            vec!["resume".into(), name("ok"), "--prompt".into(), "".into()],
            vec!["the prompt is empty".into()],
        ),
    ];
    for (args, needles) in &cases {
        let mut cmd = cldpd(p, state.path());
        cmd.args(args);
        let out = run(cmd, LIMIT);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        refused(&out, &needles);
        assert!(
            out.stderr.contains("\nhint: "),
            "{args:?}: a hint follows the error:\n{}",
            out.stderr
        );
    }
    for suffix in [
        "ok",
        "nope",
        "nodockerfile",
        "badjson",
        "typo",
        "nomount",
        "relmount",
        "badenv",
    ] {
        nothing_created(&name(suffix));
    }
}

/// A pod whose Dockerfile cannot be looked at is not "no Dockerfile" (issue
/// 9, item 17): a symlink loop, and a pod directory this user may not
/// search (as root, the run drops to `nobody` with `setpriv`, or root would
/// read it anyway) name the Dockerfile and the cause.
#[test]
fn a_pod_that_cannot_be_read_is_not_reported_as_having_no_dockerfile() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (pods, state) = (root.path().join("pods"), root.path().join("state"));
    for dir in [root.path(), pods.as_path(), state.as_path()] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let looped = pods.join("looped");
    std::fs::create_dir_all(&looped).unwrap();
    std::os::unix::fs::symlink("Dockerfile", looped.join("Dockerfile")).unwrap();
    let out = run(
        with_args(cldpd(&pods, &state), &["start", "looped", "--issue", ISSUE]),
        LIMIT,
    );
    refused(
        &out,
        &["looped", "Dockerfile", "symbolic links", "readable"],
    );
    assert!(!out.stderr.contains("no Dockerfile"), "{}", out.stderr);

    pod(&pods, "locked", None);
    let locked = pods.join("locked");
    let cmd = if support::tmpfs::is_root() {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_cldpd"))
            .arg("--pods-dir")
            .arg(&pods)
            .env("CLDPD_STATE_DIR", &state)
            .env("HOME", root.path())
            .env_remove("CLDPD_PODS_DIR")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        cmd
    } else {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        cldpd(&pods, &state)
    };
    let out = run(
        with_args(cmd, &["start", "locked", "--issue", ISSUE]),
        LIMIT,
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused(
        &out,
        &["locked", "Dockerfile", "Permission denied", "readable"],
    );
    assert!(!out.stderr.contains("no Dockerfile"), "{}", out.stderr);
}

fn with_args(mut cmd: Command, args: &[&str]) -> Command {
    cmd.args(args);
    cmd
}

/// Run in a child test process with Docker unreachable: a real-Docker test
/// skipped there says so in the harness's output (a passing test's
/// `eprintln!` is swallowed).
#[test]
fn a_skipped_docker_test_is_visible_in_the_test_output() {
    const NAME: &str = "a_skipped_docker_test_is_visible_in_the_test_output";
    if std::env::var_os("CLDPD_TEST_SKIP_CHILD").is_some() {
        assert!(!support::docker::require_docker());
        return;
    }
    let child = |ci: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", NAME, "--test-threads", "2"])
            .env("CLDPD_TEST_SKIP_CHILD", "1")
            .env("CLDPD_DOCKER", "/nonexistent/docker")
            .env_remove("CI")
            .stdin(std::process::Stdio::null());
        if let Some(ci) = ci {
            cmd.env("CI", ci);
        }
        run(cmd, LIMIT)
    };
    let out = child(None);
    out.expect_code(0);
    assert!(out.stdout.contains("1 passed"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("SKIPPED {NAME}: Docker is unreachable")),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    // Under CI=true the same test fails.
    let out = child(Some("true"));
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("1 failed"), "{}", out.stdout);
}

#[test]
fn init_creates_the_pods_directory_with_a_pod_that_is_valid() {
    let home = tempfile::tempdir().unwrap();
    let pods = home.path().join("pods");
    let state = home.path().join("state");
    // Without a static busybox: the Claude Code pod to start from.
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["init", "--busybox", "/nonexistent/busybox"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    for needle in ["created the pods directory", "created pod claude"] {
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
    assert!(
        out.stdout.contains("doctor") && out.stdout.contains("--pods-dir"),
        "{}",
        out.stdout
    );
    for file in ["Dockerfile", "pod.json", "template.md", "README.md"] {
        assert!(pods.join("claude").join(file).is_file(), "{file}");
    }
    // With one (a copy of the real one when there is one): the demo pod.
    let fake = home.path().join("busybox");
    let real = Path::new("/bin/busybox");
    if real.is_file()
        && Command::new("ldd")
            .arg(real)
            .output()
            .map_or(true, |o| !o.status.success())
    {
        std::fs::copy(real, &fake).unwrap();
    } else {
        // A minimal static ELF header stands in for it.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        std::fs::write(&fake, elf).unwrap();
    }
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["init", "--busybox"]).arg(&fake);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stderr.contains("the pods directory"), "{}", out.stderr);
    assert!(out.stderr.contains("created pod hello"), "{}", out.stderr);
    assert!(out.stdout.contains("start hello"), "{}", out.stdout);
    let hello = pods.join("hello");
    assert_eq!(
        std::fs::read(hello.join("busybox")).unwrap(),
        std::fs::read(&fake).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(hello.join("claude"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the stub agent is executable");
    // A second init leaves the pod alone.
    std::fs::write(hello.join("template.md"), "mine").unwrap();
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["init", "--busybox"]).arg(&fake);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stderr.contains("left as it is"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(hello.join("template.md")).unwrap(),
        "mine"
    );

    // Both pods are valid.
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["pods", "--json"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let rows: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    for row in rows {
        assert_eq!(row["valid"], true, "{row}");
    }
}

#[test]
fn new_scaffolds_a_valid_pod_and_refuses_an_existing_one() {
    let home = tempfile::tempdir().unwrap();
    let pods = home.path().join("pods");
    let state = home.path().join("state");
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["new", "web"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stderr.contains("created pod web"), "{}", out.stderr);
    assert!(out.stdout.contains("start web --issue"), "{}", out.stdout);
    let readme = std::fs::read_to_string(pods.join("web/README.md")).unwrap();
    for field in ["inheritEnv", "agentCommand", "stopGraceSecs", "timeoutSecs"] {
        assert!(readme.contains(field), "README.md explains {field}");
    }
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["pods", "--json"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stdout.contains("\"valid\":true"), "{}", out.stdout);

    let mut cmd = cldpd(&pods, &state);
    cmd.args(["new", "web"]);
    refused(&run(cmd, LIMIT), &["pod web exists already"]);
    let mut cmd = cldpd(&pods, &state);
    cmd.args(["new", "Web"]);
    refused(&run(cmd, LIMIT), &["Web"]);
}

#[test]
fn docker_habits_version_verbose_and_a_detached_start_that_fails_shows_why() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for args in [vec!["version"], vec!["--version"]] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(&args);
        let out = run(cmd, LIMIT);
        out.expect_code(0);
        assert_eq!(
            out.stdout,
            format!("cldpd {}\n", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
    // --verbose is -v.
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["pods", "--verbose"]);
    run(cmd, LIMIT).expect_code(0);
    // A detached start that cannot start says why and exits 1.
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["start", "-d", "nope", "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    refused(&out, &["nope"]);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["start", "--detach", "nope", "--prompt", "-"]);
    refused(
        &run(cmd, LIMIT),
        &["--detach cannot read the prompt from stdin"],
    );
}

/// A finished run's session log: a build, `outputs` stdout lines one
/// second apart, then exit `code`.
fn write_log(state: &Path, session: &str, outputs: usize, code: i32) {
    let dir = state.join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!(
        "{{\"type\":\"build_started\",\"session\":\"{session}\",\"seq\":1,\"time\":\"2026-11-29T10:00:00.000000Z\",\"image\":\"cldpd-web\"}}\n"
    );
    for i in 0..outputs {
        text.push_str(&format!(
            "{{\"type\":\"output\",\"session\":\"{session}\",\"seq\":{},\"time\":\"2026-11-29T10:00:{:02}.000000Z\",\"stream\":\"stdout\",\"line\":\"line {i}\"}}\n",
            i + 2,
            i + 1
        ));
    }
    text.push_str(&format!(
        "{{\"type\":\"container_exited\",\"session\":\"{session}\",\"seq\":{},\"time\":\"2026-11-29T10:00:{:02}.000000Z\",\"code\":{code}}}\n",
        outputs + 2,
        outputs + 1
    ));
    std::fs::write(dir.join(format!("{session}.ndjson")), text).unwrap();
}

#[test]
fn logs_tail_and_timestamps() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    write_log(state.path(), "web-0a1b2c3d", 5, 3);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["logs", "web-0a1b2c3d", "--tail", "2"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert_eq!(out.stdout, "line 3\nline 4\n");
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
    assert!(out.stderr.contains("exited 3"), "{}", out.stderr);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["logs", "-n", "9", "-t", "web-0a1b2c3d"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    assert_eq!(lines[0], "2026-11-29T10:00:01.000000Z line 0");
}

#[test]
fn doctor_names_a_bad_pod_once_per_fail_line() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "webby", Some("{\"imgae\": \"x\"}"));
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.env("CLDPD_DOCKER", "/nonexistent/docker").arg("doctor");
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    let fails: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL") && l.contains("webby"))
        .collect();
    assert!(!fails.is_empty(), "{}", out.stdout);
    for line in fails {
        assert_eq!(line.matches("webby").count(), 1, "{line}");
    }
}

/// On a terminal (a pseudo-terminal from util-linux's `script`) doctor's
/// FAIL and the error prefix are red; NO_COLOR or a pipe: no escapes.
#[test]
fn colour_on_a_terminal_unless_no_color() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let line = format!(
        "{} --pods-dir {} doctor",
        env!("CARGO_BIN_EXE_cldpd"),
        pods.path().display()
    );
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env("CLDPD_DOCKER", "/nonexistent/docker")
            .env("CLDPD_STATE_DIR", state.path())
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        run(cmd, LIMIT)
    };
    let out = on_tty(None);
    assert!(
        out.stdout.contains("\x1b[1;31mFAIL\x1b[0m"),
        "{:?}",
        out.stdout
    );
    let out = on_tty(Some("1"));
    assert!(out.stdout.contains("FAIL"), "{:?}", out.stdout);
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    // Not a terminal: plain.
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.env("CLDPD_DOCKER", "/nonexistent/docker").arg("doctor");
    let out = run(cmd, LIMIT);
    assert!(out.stdout.contains("FAIL"), "{}", out.stdout);
    assert!(!out.stdout.contains('\x1b') && !out.stderr.contains('\x1b'));
}

#[test]
fn a_missing_task_is_a_usage_error_exit_2() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "ok", None);
    for (args, needles) in [
        (vec!["start", "ok"], ["--issue", "--prompt"]),
        (vec!["resume", "ok"], ["--prompt", "--prompt-file"]),
    ] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(&args);
        let out = run(cmd, LIMIT);
        out.expect_code(2);
        for needle in needles {
            assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        }
        assert!(out.stderr.contains("Usage:"), "{}", out.stderr);
    }
}

#[test]
fn a_prompt_may_start_with_a_dash_or_come_from_a_file() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "ok", None);
    // Parsed (not a usage error): the unknown pod is what stops it.
    for args in [
        vec!["start", "nope", "--prompt", "- fix the tests"],
        vec!["start", "--prompt", "-fix", "nope"],
        vec!["resume", "nope", "--prompt", "- and the docs"],
    ] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(&args);
        let out = run(cmd, LIMIT);
        out.expect_code(1);
        assert!(out.stderr.contains("nope"), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("Usage:"), "{args:?}: {}", out.stderr);
    }
    // A prompt file that cannot be read is named.
    let missing = state.path().join("no-task.md");
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["start", "ok", "--prompt-file"]).arg(&missing);
    let out = run(cmd, LIMIT);
    refused(&out, &["cannot read the prompt file", "no-task.md"]);
    // An empty prompt file is an empty prompt.
    let empty = state.path().join("empty.md");
    std::fs::write(&empty, "  \n").unwrap();
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["start", "ok", "--prompt-file"]).arg(&empty);
    refused(&run(cmd, LIMIT), &["the prompt is empty"]);
    // So is an empty stdin (`--prompt -`; the harness gives /dev/null).
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["start", "ok", "--prompt", "-"]);
    refused(&run(cmd, LIMIT), &["the prompt is empty"]);
    // --issue and a prompt exclude each other.
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["start", "ok", "--issue", ISSUE, "--prompt-file", "x"]);
    run(cmd, LIMIT).expect_code(2);
}

#[test]
fn a_missing_pods_directory_is_named_with_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    let missing = state.path().join("no-such-pods");
    for args in [vec!["start", "web", "--issue", ISSUE], vec!["pods"]] {
        let mut cmd = cldpd(&missing, state.path());
        cmd.args(&args);
        let out = run(cmd, LIMIT);
        refused(
            &out,
            &[
                "pods directory",
                "no-such-pods",
                "does not exist",
                "--pods-dir",
                "cldpd init",
            ],
        );
    }
}

#[test]
fn docker_unreachable_exits_1_with_a_hint() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let name = unique_name();
    pod(pods.path(), &name, None);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.env("CLDPD_DOCKER", "/nonexistent/docker")
        .args(["start", &name, "--issue", ISSUE]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr.contains("cldpd: docker is not available")
            && out.stderr.contains("/nonexistent/docker")
            && out.stderr.contains("hint: "),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    nothing_created(&name);

    let mut ps = cldpd(pods.path(), state.path());
    ps.env("CLDPD_DOCKER", "/nonexistent/docker").arg("ps");
    let out = run(ps, LIMIT);
    refused(&out, &["docker is not available"]);

    let mut doctor = cldpd(pods.path(), state.path());
    doctor
        .env("CLDPD_DOCKER", "/nonexistent/docker")
        .arg("doctor");
    let out = run(doctor, LIMIT);
    out.expect_code(1);
    assert!(
        out.stdout.contains("FAIL  docker is not available"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("skip  docker can build images"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("ok    pod {name} is valid")),
        "{}",
        out.stdout
    );
}

#[test]
fn logs_of_an_unknown_or_malformed_session_are_refused() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["logs", "web-0a1b2c3d"]);
    refused(
        &run(cmd, LIMIT),
        &["no session log for `web-0a1b2c3d`", "hint: "],
    );

    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["logs", "../../etc/passwd"]);
    refused(&run(cmd, LIMIT), &["invalid session id `../../etc/passwd`"]);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for args in [
        vec!["start"],
        vec!["start", "web", "--issue"],
        vec!["start", "web", "--bogus"],
        vec!["start", "web", "--issue", ISSUE, "--prompt", "x"],
        vec!["start", "web", "--issue", ISSUE, "--grace", "soon"],
        vec!["frobnicate"],
        vec![],
    ] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(&args);
        let out = run(cmd, LIMIT);
        out.expect_code(2);
        assert!(
            out.stderr.contains("error:") || out.stderr.contains("Usage:"),
            "{args:?}: {}",
            out.stderr
        );
    }
    for args in [
        vec!["--help"],
        vec!["start", "--help"],
        vec!["help", "logs"],
        vec!["--version"],
    ] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(&args);
        run(cmd, LIMIT).expect_code(0);
    }
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.arg("--help");
    let help = run(cmd, LIMIT).stdout;
    for needle in [
        "Exit status:",
        "usage error",
        "container's exit code",
        "CLDPD_DOCKER",
    ] {
        assert!(
            help.contains(needle),
            "--help should mention {needle}:\n{help}"
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(["completions", shell]);
        let out = run(cmd, LIMIT);
        out.expect_code(0);
        assert!(out.stdout.contains("cldpd"), "{shell}");
        assert!(
            out.stdout.contains("resume"),
            "{shell}: subcommands completed"
        );
    }
}

#[test]
fn pods_lists_valid_and_invalid_pods_with_why() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "good", Some(r#"{ "env": { "A": "1" } }"#));
    pod(pods.path(), "typo", Some(r#"{ "workdri": "/x" }"#));
    std::fs::create_dir_all(pods.path().join("empty")).unwrap();

    let mut cmd = cldpd(pods.path(), state.path());
    cmd.arg("pods");
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[0].starts_with("NAME") && lines[0].contains("STATUS"));
    assert!(
        lines[1].starts_with("empty")
            && lines[1].contains("invalid")
            && lines[1].contains("no Dockerfile")
    );
    assert!(
        lines[2].starts_with("good")
            && lines[2].contains("valid")
            && lines[2].contains("cldpd-good")
    );
    assert!(
        lines[3].starts_with("typo")
            && lines[3].contains("invalid")
            && lines[3].contains("`workdri`")
    );

    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["pods", "--json"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let rows: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["name"], "good");
    assert_eq!(rows[1]["valid"], true);
    assert_eq!(rows[1]["image"], "cldpd-good");
    assert_eq!(rows[2]["valid"], false);
    assert_eq!(rows[2]["problems"][0]["code"], "pod_config");
    assert!(rows[2]["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("workdri"));
}

#[test]
fn doctor_names_unset_inherit_env_variables_but_never_prints_values() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(
        pods.path(),
        "agent",
        Some(r#"{ "inheritEnv": ["CLDPD_TEST_SET_SECRET", "CLDPD_TEST_UNSET_VAR"] }"#),
    );
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.env("CLDPD_TEST_SET_SECRET", "s3cr3t-value-xyz")
        .env_remove("CLDPD_TEST_UNSET_VAR")
        .arg("doctor");
    let out = run(cmd, Duration::from_secs(180));
    out.expect_code(1);
    assert!(
        out.stdout
            .contains("ok    pod agent: CLDPD_TEST_SET_SECRET is set"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("FAIL  pod agent: CLDPD_TEST_UNSET_VAR (inheritEnv) is not set"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("hint: export CLDPD_TEST_UNSET_VAR"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("s3cr3t") && !out.stderr.contains("s3cr3t"),
        "a value was printed:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("checks failed"), "{}", out.stdout);
}

#[test]
fn environment_variables_stand_in_for_the_flags_and_empty_means_unset() {
    let home = tempfile::tempdir().unwrap();
    let pods = tempfile::tempdir().unwrap();
    pod(pods.path(), "from-env", None);
    let bin = env!("CARGO_BIN_EXE_cldpd");

    let out = run(
        {
            let mut c = std::process::Command::new(bin);
            c.env("CLDPD_PODS_DIR", pods.path())
                .env("CLDPD_STATE_DIR", home.path())
                .arg("pods");
            c
        },
        LIMIT,
    );
    out.expect_code(0);
    assert!(out.stdout.contains("from-env"), "{}", out.stdout);

    // Empty: the default under HOME, not a usage error.
    let out = run(
        {
            let mut c = std::process::Command::new(bin);
            c.env("HOME", home.path())
                .env("CLDPD_PODS_DIR", "")
                .env("CLDPD_STATE_DIR", "")
                .arg("pods");
            c
        },
        LIMIT,
    );
    refused(
        &out,
        &[&format!(
            "pods directory {}/.cldpd/pods does not exist",
            home.path().display()
        )],
    );
}

/// A session log as a queued run of another process leaves it: `Queued`,
/// nothing after. Returns its path.
fn queued_log(state: &Path, id: &str) -> std::path::PathBuf {
    let dir = state.join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{id}.ndjson"));
    let ev = cldpd::Event::new(id, 1, cldpd::EventKind::Queued { position: 3 });
    std::fs::write(&path, serde_json::to_string(&ev).unwrap() + "\n").unwrap();
    path
}

#[test]
fn logs_follow_gives_up_on_a_queued_run_whose_log_went_stale() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let id = "job-0a1b2c3d";
    let path = queued_log(state.path(), id);
    // Untouched for longer than three heartbeats: its dispatcher is gone.
    let stale = std::time::SystemTime::now() - cldpd::log::STALE_AFTER - Duration::from_secs(5);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .set_modified(stale)
        .unwrap();
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["logs", "--follow", id]);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("{id} is gone and its log has no final event")),
        "{}",
        out.stderr
    );
}

#[test]
fn logs_follow_keeps_following_a_queued_run_whose_log_is_fresh() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let id = "job-1b2c3d4e";
    let path = queued_log(state.path(), id);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["-v", "logs", "--follow", id]);
    let follow = cli_support::Live::spawn(cmd);
    // No container in Docker, but the log was just written: live.
    follow.wait_stderr("the log is fresh: the run is live", LIMIT);
    // Its run goes on and ends; the follower shows it and exits 0.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    for (seq, kind) in [
        (
            2,
            cldpd::EventKind::BuildStarted {
                image: "cldpd-job".into(),
            },
        ),
        (3, cldpd::EventKind::ContainerExited { code: 0 }),
    ] {
        let ev = cldpd::Event::new(id, seq, kind);
        use std::io::Write;
        writeln!(f, "{}", serde_json::to_string(&ev).unwrap()).unwrap();
    }
    drop(f);
    let out = follow.finish(LIMIT);
    out.expect_code(0);
    assert!(out.stderr.contains("exited 0"), "{}", out.stderr);
}

#[test]
fn model_server_serves_its_script_on_loopback_until_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        r#"{"turns": [{"content": [{"type": "text", "text": "scripted hello"}]}]}"#,
    )
    .unwrap();
    let mut cmd = cldpd(dir.path(), dir.path());
    cmd.args(["model-server", "--script"]).arg(&script);
    let live = cli_support::Live::spawn(cmd);
    live.wait_stdout("ANTHROPIC_BASE_URL=http://127.0.0.1:", LIMIT);
    let url = live
        .stdout()
        .lines()
        .find_map(|l| {
            l.strip_prefix("ANTHROPIC_BASE_URL=http://")
                .map(str::to_string)
        })
        .unwrap();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = std::net::TcpStream::connect(url.trim()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("scripted hello"), "{answer}");
    assert!(answer.contains("event: message_stop"), "{answer}");
    live.wait_stderr("POST /v1/messages?beta=true -> 200 (turn 0", LIMIT);
    live.signal("TERM");
    live.finish(LIMIT).expect_code(0);

    // A bad script is refused, naming the problem.
    std::fs::write(&script, r#"{"turns": [{"error": {"status": 200}}]}"#).unwrap();
    let mut cmd = cldpd(dir.path(), dir.path());
    cmd.args(["model-server", "--script"]).arg(&script);
    let out = run(cmd, LIMIT);
    out.expect_code(1);
    assert!(
        out.stderr.contains("turns[0].error.status"),
        "{}",
        out.stderr
    );
}

/// Issue 9, item 7: `cldpd logs` showed an incomplete log (the state disk
/// was full) and exited 0 saying nothing. It names each gap, where it is,
/// and exits 1: a marker line written when space was back, or a jump in
/// `seq` when none could be.
#[test]
fn logs_of_an_incomplete_log_name_the_gap_and_exit_1() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let line = |id: &str, seq: u64, kind: cldpd::EventKind| {
        serde_json::to_string(&cldpd::Event::new(id, seq, kind)).unwrap() + "\n"
    };
    let out_line = |id: &str, seq: u64, text: &str| {
        line(
            id,
            seq,
            cldpd::EventKind::Output {
                stream: cldpd::OutputStream::Stdout,
                line: text.into(),
                partial: false,
            },
        )
    };
    let marked = "full-0a1b2c3d";
    let text = out_line(marked, 1, "first")
        + "{\"gap\":{\"from\":2,\"to\":7,\"reason\":\"No space left on device (os error 28)\"}}\n"
        + &out_line(marked, 8, "after")
        + &line(marked, 9, cldpd::EventKind::ContainerExited { code: 0 });
    std::fs::write(dir.join(format!("{marked}.ndjson")), text).unwrap();
    let jumped = "full-1b2c3d4e";
    let text = out_line(jumped, 1, "first")
        + &out_line(jumped, 5, "after")
        + &line(jumped, 6, cldpd::EventKind::ContainerExited { code: 0 });
    std::fs::write(dir.join(format!("{jumped}.ndjson")), text).unwrap();
    for (id, gap) in [(marked, "events 2 to 7"), (jumped, "events 2 to 4")] {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(["logs", id]);
        let out = run(cmd, LIMIT);
        out.expect_code(1);
        assert_eq!(out.stdout, "first\nafter\n", "everything there is shown");
        assert!(
            out.stderr
                .contains(&format!("the log of {id} is incomplete: {gap} are missing")),
            "{}",
            out.stderr
        );
    }
}

/// Issue 9, item 6, for `logs` (the start path is in `cli_docker.rs`): a
/// full stdout exits 1 saying so, a reader gone after one line exits 141
/// at once (not after writing the whole log), and `--help` documents both.
#[test]
fn logs_to_a_failing_stdout_exits_1_or_141_as_the_help_says() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let id = "long-0a1b2c3d";
    let mut text = String::new();
    for seq in 1..=200_000u64 {
        let kind = cldpd::EventKind::Output {
            stream: cldpd::OutputStream::Stdout,
            line: format!("line {seq}"),
            partial: false,
        };
        text += &(serde_json::to_string(&cldpd::Event::new(id, seq, kind)).unwrap() + "\n");
    }
    let end = cldpd::Event::new(id, 200_001, cldpd::EventKind::ContainerExited { code: 0 });
    text += &(serde_json::to_string(&end).unwrap() + "\n");
    std::fs::write(dir.join(format!("{id}.ndjson")), text).unwrap();

    // `cldpd logs ... > /dev/full` and `cldpd logs ... | head -1`: the
    // exit status is cldpd's.
    let shell = |script: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_cldpd"))
            .arg(pods.path())
            .arg(id)
            .env("CLDPD_STATE_DIR", state.path())
            .env_remove("CLDPD_PODS_DIR");
        run(cmd, LIMIT)
    };
    let out = shell("\"$0\" --pods-dir \"$1\" logs \"$2\" > /dev/full");
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("cldpd: cannot write to stdout: No space left on device"),
        "{}",
        out.stderr
    );

    let out = shell("\"$0\" --pods-dir \"$1\" logs \"$2\" | head -1; exit \"${PIPESTATUS[0]}\"");
    out.expect_code(141);
    assert_eq!(out.stdout, "line 1\n");

    let mut help = cldpd(pods.path(), state.path());
    help.arg("--help");
    let out = run(help, LIMIT);
    out.expect_code(0);
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("141 stdout's reader went away (broken pipe")
            && text.contains("any other stdout write error, e.g. a full disk: 1"),
        "{}",
        out.stdout
    );
}

/// Issue 9, item 7: `cldpd doctor` checks that the state directory takes a
/// write and has free space.
#[test]
fn doctor_checks_that_the_state_directory_is_writable() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut doctor = cldpd(pods.path(), state.path());
    doctor
        .env("CLDPD_DOCKER", "/nonexistent/docker")
        .arg("doctor");
    let out = run(doctor, LIMIT);
    assert!(
        out.stdout.contains(&format!(
            "ok    state directory {} is writable (",
            state.path().display()
        )),
        "{}",
        out.stdout
    );
    // A state directory that cannot be made (a file is in the way).
    let blocked = state.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let mut doctor = cldpd(pods.path(), &blocked);
    doctor
        .env("CLDPD_DOCKER", "/nonexistent/docker")
        .arg("doctor");
    let out = run(doctor, LIMIT);
    out.expect_code(1);
    assert!(
        out.stdout.contains(&format!(
            "FAIL  state directory {} is not writable",
            blocked.display()
        )),
        "{}",
        out.stdout
    );
}

/// A state directory with less than 64 MiB free is a warning, not a
/// failure (issue 9, item 7): on a 1 MiB tmpfs, as root.
#[test]
fn doctor_warns_when_the_state_directory_is_short_of_space() {
    if !support::tmpfs::is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root: this test needs to mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let pods = tempfile::tempdir().unwrap();
    let disk = support::tmpfs::Tmpfs::mount("1m");
    let state = disk.path().join("state");
    let mut doctor = cldpd(pods.path(), &state);
    doctor
        .env("CLDPD_DOCKER", "/nonexistent/docker")
        .arg("doctor");
    let out = run(doctor, LIMIT);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("state directory"))
        .unwrap_or_else(|| panic!("no state directory line:\n{}", out.stdout));
    assert!(
        line.starts_with(&format!(
            "warn  state directory {} is writable but has only ",
            state.display()
        )) && line.ends_with("KiB free: session logs may be incomplete"),
        "{line}"
    );
    let kib: u64 = line
        .split("only ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(kib <= 1024, "{kib} KiB free on a 1 MiB disk");
    assert!(
        out.stdout
            .contains("make it writable and free some space there"),
        "{}",
        out.stdout
    );
}

#[test]
fn usage_lines_do_not_show_options_given_by_the_environment() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "ok", None);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cldpd"));
    cmd.env("CLDPD_PODS_DIR", pods.path())
        .env("CLDPD_STATE_DIR", state.path())
        .args(["start", "ok"]);
    let out = run(cmd, LIMIT);
    out.expect_code(2);
    let usage = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(!usage.contains("--pods-dir"), "{usage}");
    assert!(!usage.contains("--state-dir"), "{usage}");
    // The variables still count: the pods directory is the one named.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cldpd"));
    cmd.env("CLDPD_PODS_DIR", pods.path())
        .env("CLDPD_STATE_DIR", state.path())
        .args(["pods", "--json"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stdout.contains("\"ok\""), "{}", out.stdout);
}

/// The non-empty lines, sorted, that `shell` (its argv up to the script)
/// prints running `script`, with the cldpd binary on PATH and `state` as
/// the state directory (a completion script asks cldpd at completion time).
fn shell_lines(shell: &[&str], script: &str, state: &Path) -> Vec<String> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cldpd")).parent().unwrap();
    let out = Command::new(shell[0])
        .args(&shell[1..])
        .arg(script)
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("CLDPD_STATE_DIR", state)
        .env_remove("CLDPD_PODS_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn completion_offers_pod_names_and_session_ids_dynamically() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "web", None);
    pod(pods.path(), "api", None);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["__complete", "pods"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let mut names: Vec<&str> = out.stdout.lines().collect();
    names.sort();
    assert_eq!(names, ["api", "web"]);

    // The bash script asks cldpd at completion time, with the --pods-dir
    // of the line being completed.
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["completions", "bash"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    let script = state.path().join("cldpd.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = |words: &str, cword: usize| {
        shell_lines(
            &["bash", "-c"],
            &format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='x'; COMP_POINT=1; _cldpd_dynamic cldpd; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ),
            state.path(),
        )
    };
    let dir = pods.path().display();
    assert_eq!(
        complete(&format!("cldpd --pods-dir {dir} start w"), 4),
        ["web"]
    );
    // Targets: the pods, and the live sessions of the engine (whoever
    // started them: other tests may have some).
    let targets = complete(&format!("cldpd --pods-dir {dir} logs ''"), 4);
    assert!(
        targets.contains(&"api".to_string()) && targets.contains(&"web".to_string()),
        "{targets:?}"
    );
    for t in targets.iter().filter(|t| *t != "api" && *t != "web") {
        let (_, hex) = t.rsplit_once('-').unwrap_or_else(|| panic!("{t}"));
        assert!(
            hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{t}"
        );
    }
    // Flags still come from clap.
    assert!(
        complete(&format!("cldpd --pods-dir {dir} start web --pr"), 5)
            .contains(&"--prompt".to_string())
    );
}

/// Issue 10, item 14, for zsh: the script runs in a real zsh with the
/// completion system's builtins (`compadd`, `compdef`) stood in by
/// functions that print what they were given, so what `_cldpd_dynamic`
/// offers, and when it hands over to clap's `_cldpd`, is seen exactly.
/// `.ci/run` installs zsh; without it the test fails under `CI=true`.
#[test]
fn zsh_completion_offers_pod_names_and_session_ids_dynamically() {
    if Command::new("zsh").arg("--version").output().is_err()
        && !support::skip_unless_ci("zsh is not installed (.ci/run installs it)")
    {
        return;
    }
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    pod(pods.path(), "web", None);
    pod(pods.path(), "api", None);
    stored_session(state.path(), "web-0a1b2c3d", None);
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["completions", "zsh"]);
    let out = run(cmd, LIMIT);
    out.expect_code(0);
    assert!(out.stdout.starts_with("#compdef cldpd"), "{}", out.stdout);
    let script = state.path().join("_cldpd");
    std::fs::write(&script, &out.stdout).unwrap();
    // Sourced, the script registers the dynamic wrapper; then `words` and
    // `CURRENT` are set as the completion system would.
    let complete = |words: &str, current: usize| {
        shell_lines(
            &["zsh", "-f", "-c"],
            &format!(
                r#"compdef() {{ print -r -- "COMPDEF:$*" }}
compadd() {{ [[ $1 == -a ]] && print -rl -- "${{(@P)2}}" }}
source {}
_cldpd() {{ print -r -- "CLAP" }}
words=({words}); CURRENT={current}
_cldpd_dynamic"#,
                script.display()
            ),
            state.path(),
        )
    };
    let dir = pods.path().display();
    // `words` and `CURRENT` count from 1, the command name included.
    // Registered once, for the wrapper.
    let only_registration = complete("cldpd ''", 2);
    assert!(
        only_registration.contains(&"COMPDEF:_cldpd_dynamic cldpd".to_string()),
        "{only_registration:?}"
    );
    let offered = |words: &str, current: usize| -> Vec<String> {
        complete(words, current)
            .into_iter()
            .filter(|l| !l.starts_with("COMPDEF:"))
            .collect()
    };
    // Pod names after start (compadd filters them by the typed prefix).
    assert_eq!(
        offered(&format!("cldpd --pods-dir {dir} start w"), 5),
        ["api", "web"]
    );
    // Pods and live sessions after logs, stop and resume.
    for sub in ["logs", "stop", "resume"] {
        let targets = offered(&format!("cldpd --pods-dir {dir} {sub} ''"), 5);
        assert!(
            targets.contains(&"api".to_string()) && targets.contains(&"web".to_string()),
            "{sub}: {targets:?}"
        );
        for t in targets.iter().filter(|t| *t != "api" && *t != "web") {
            let (_, hex) = t.rsplit_once('-').unwrap_or_else(|| panic!("{t}"));
            assert!(
                hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sub}: {t}"
            );
        }
    }
    // Stored sessions after rm and diff, from the line's --state-dir.
    let other_state = tempfile::tempdir().unwrap();
    let line = |sub: &str| format!("cldpd --state-dir {} {sub} ''", state.path().display());
    assert_eq!(offered(&line("rm"), 5), ["web-0a1b2c3d"]);
    assert_eq!(offered(&line("diff"), 5), ["web-0a1b2c3d"]);
    assert!(offered(
        &format!("cldpd --state-dir {} rm ''", other_state.path().display()),
        5
    )
    .is_empty());
    // Flags, the values of options and other commands go to clap.
    assert_eq!(
        offered(&format!("cldpd --pods-dir {dir} start web --pr"), 6),
        ["CLAP"]
    );
    assert_eq!(
        offered(&format!("cldpd --pods-dir {dir} start web --issue ''"), 7),
        ["CLAP"]
    );
    assert_eq!(offered("cldpd ps ''", 3), ["CLAP"]);
}

/// A pod whose agent is long-lived (`agentInput: "stream-json"`).
const LIVE_POD: &str = r#"{"agentInput": "stream-json"}"#;

#[test]
fn keep_alive_takes_durations_and_attach_needs_a_long_lived_agent() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let base = unique_name();
    let plain = format!("{base}-plain");
    let live = format!("{base}-live");
    pod(pods.path(), &plain, None);
    pod(pods.path(), &live, Some(LIVE_POD));
    let start = |args: &[&str]| {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.arg("start").args(args);
        run(cmd, LIMIT)
    };

    // Valid durations pass parsing: what refuses these starts is the pod
    // that does not exist (exit 1), not the flag (exit 2).
    for value in ["30s", "10m", "1h 30m", "2d", "90", "0", "1.5"] {
        let out = start(&["nope", "--keep-alive", value, "--prompt", "x"]);
        refused(&out, &["pod `nope` not found"]);
    }
    // Invalid ones are usage errors naming the value.
    for value in ["soon", "-5s", "10 parsecs", ""] {
        let out = start(&[&live, &format!("--keep-alive={value}"), "--prompt", "x"]);
        out.expect_code(2);
        assert!(
            out.stderr.contains("--keep-alive <DURATION>"),
            "{value}: {}",
            out.stderr
        );
    }
    let out = start(&[&live, "--keep-alive", "soon", "--prompt", "x"]);
    assert!(
        out.stderr
            .contains("`soon` is not a duration: write it like 30s, 10m, 1h or 7d"),
        "{}",
        out.stderr
    );

    // A pod that runs one agent per prompt takes neither, said before
    // anything is built.
    for flag in [vec!["-i"], vec!["--attach"], vec!["--keep-alive", "10m"]] {
        let mut args = vec![plain.as_str(), "--prompt", "x"];
        args.extend(&flag);
        let out = start(&args);
        let shown = if flag[0] == "--keep-alive" {
            "--keep-alive"
        } else {
            "-i"
        };
        refused(
            &out,
            &[
                &format!(
                    "{shown} needs a long-lived agent, and pod `{plain}` runs one agent per prompt"
                ),
                "hint: add \"agentInput\": \"stream-json\" to ",
                &format!("{plain}/pod.json"),
            ],
        );
    }
    nothing_created(&plain);

    // --checkpoint brings work back into a repository: a pod without one
    // is refused before anything is built.
    let out = start(&[&live, "--checkpoint", "--prompt", "x"]);
    refused(
        &out,
        &["field `checkpoint`: checkpoints bring work back into a repository"],
    );
    nothing_created(&live);

    // -i reads stdin: the first prompt cannot come from it too.
    for args in [
        vec![live.as_str(), "-i", "--prompt", "-"],
        vec![live.as_str(), "-i", "--prompt-file", "-"],
    ] {
        let out = start(&args);
        refused(
            &out,
            &[
                "-i reads follow-ups from stdin: the first prompt cannot come from it too",
                "hint: pass the first prompt with --prompt <text> or --prompt-file <file>",
            ],
        );
    }
    // A detached run has no terminal to read follow-ups from.
    let out = start(&[&live, "-i", "-d", "--prompt", "x"]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("'--attach' cannot be used with '--detach'"),
        "{}",
        out.stderr
    );
    nothing_created(&live);
}

/// The storage of a session as the library writes it, without a run:
/// `<state>/workspaces/<id>/session.json`.
fn stored_session(state: &Path, id: &str, repo: Option<&str>) {
    let dir = state.join("workspaces").join(id);
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::create_dir_all(dir.join("agent")).unwrap();
    let repo = repo.map_or(
        serde_json::Value::Null,
        |path| serde_json::json!({"source": path, "reference": "main", "base": "0".repeat(40)}),
    );
    let meta = serde_json::json!({
        "session": id,
        "pod": id.rsplit_once('-').unwrap().0,
        "image": "cldpd-web",
        "conversation": "00000000-0000-4000-8000-000000000000",
        "workdir": "/workspace",
        "repo": repo,
        "created": "2026-01-01T00:00:00Z",
        "runs": [id],
        "ended": "2026-01-01T00:01:00Z",
        "outcome": "exited 0",
    });
    std::fs::write(dir.join("session.json"), meta.to_string()).unwrap();
}

#[test]
fn rm_prune_and_diff_name_what_is_missing_without_docker() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut cmd = cldpd(pods.path(), state.path());
        // No engine: nothing here may need one.
        cmd.env("DOCKER_HOST", "unix:///nonexistent/cldpd-test.sock")
            .args(args);
        run(cmd, LIMIT)
    };
    let hint = "hint: `cldpd ps -a` lists the sessions that can be resumed or removed";

    // An empty state directory.
    refused(
        &cmd(&["rm", "web-0a1b2c3d"]),
        &["no stored session `web-0a1b2c3d`", hint],
    );
    refused(&cmd(&["rm", "../etc"]), &["no stored session `../etc`"]);
    let out = cmd(&["rm", "web-0a1b2c3d", "api-1b2c3d4e"]);
    refused(
        &out,
        &[
            "cldpd: web-0a1b2c3d: no stored session `web-0a1b2c3d`",
            "cldpd: api-1b2c3d4e: no stored session `api-1b2c3d4e`",
        ],
    );
    refused(
        &cmd(&["diff", "web-0a1b2c3d"]),
        &["no stored session `web-0a1b2c3d`", hint],
    );
    let out = cmd(&["prune"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("cldpd: removed 0 sessions ended 7d ago or more"),
        "{}",
        out.stderr
    );
    let out = cmd(&["prune", "--older-than", "12h", "--json"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "", "--json: nothing but JSON");
    for args in [
        vec!["rm"],
        vec!["diff"],
        vec!["prune", "--older-than", "soon"],
        vec!["rm", "x", "--bogus"],
    ] {
        let out = cmd(&args);
        out.expect_code(2);
        assert!(out.stderr.contains("error:"), "{args:?}: {}", out.stderr);
    }

    // diff reads the session's own record: no repository, no patch; a
    // repository whose work has not come back yet, not yet.
    stored_session(state.path(), "web-0a1b2c3d", None);
    stored_session(state.path(), "api-1b2c3d4e", Some("/nonexistent/repo"));
    refused(
        &cmd(&["diff", "web-0a1b2c3d"]),
        &[
            "web-0a1b2c3d does not work on a repository: it has no patch",
            "workspaces/web-0a1b2c3d/work",
        ],
    );
    refused(
        &cmd(&["diff", "api-1b2c3d4e"]),
        &[
            "the work of api-1b2c3d4e has not come back yet: it does when a run of it ends",
            "cldpd stop api-1b2c3d4e",
        ],
    );
    // rm and diff complete stored session ids, from the state directory.
    let out = cmd(&["__complete", "sessions"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "api-1b2c3d4e\nweb-0a1b2c3d\n");
}

#[test]
fn help_texts_explain_sessions_with_examples() {
    let pods = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let mut cmd = cldpd(pods.path(), state.path());
        cmd.args(args).arg("--help");
        let out = run(cmd, LIMIT);
        out.expect_code(0);
        out.stdout
    };
    let top = help(&[]);
    for needle in [
        "rm ",
        "Remove ended sessions",
        "prune ",
        "Remove the sessions that ended long ago",
        "diff ",
        "as a patch",
    ] {
        assert!(top.contains(needle), "--help: {needle}\n{top}");
    }
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["start"],
            &[
                "--keep-alive <DURATION>",
                "-i, --attach",
                "Ctrl-D",
                "cldpd start web -i --prompt 'Read the README'",
                "--keep-alive 10m",
                r"printf 'Add a test\nRun it\n' | cldpd start web -i --prompt 'Fix the bug'",
            ],
        ),
        (
            &["rm"],
            &[
                "Examples:",
                "cldpd rm web-1a2b3c4d",
                "stop it first",
                "exit 1",
            ],
        ),
        (
            &["prune"],
            &[
                "Examples:",
                "--older-than <DURATION>",
                "[default: 7d]",
                "never ended",
            ],
        ),
        (
            &["diff"],
            &[
                "Examples:",
                "cldpd diff web-1a2b3c4d > work.patch",
                "cldpd/<session>",
            ],
        ),
        (&["ps"], &["RESUMABLE"]),
        (&["resume"], &["ended: resumed on its storage"]),
    ];
    for (args, needles) in cases {
        let text = help(args);
        for needle in needles {
            assert!(text.contains(needle), "{args:?} --help: {needle}\n{text}");
        }
    }
    // The completion scripts complete stored sessions after rm and diff.
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["completions", "bash"]);
    let bash = run(cmd, LIMIT).stdout;
    assert!(bash.contains("rm | diff) kind=sessions"), "{bash}");
    let mut cmd = cldpd(pods.path(), state.path());
    cmd.args(["completions", "fish"]);
    let fish = run(cmd, LIMIT).stdout;
    assert!(
        fish.contains("__fish_seen_subcommand_from rm diff"),
        "{fish}"
    );
}
