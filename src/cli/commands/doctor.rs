//! `cldpd doctor`: is everything in place to run pods? One line per check,
//! exit 1 when any fails.
//!
//! Checks: Docker is reachable (`docker info`), Docker can build (a tiny
//! `FROM scratch` probe image, built through the library's runtime and
//! removed again), the pods directory exists, every pod is valid
//! (`Pod::check`: Dockerfile, `pod.json`, mount sources), each pod's base
//! images are on the engine (a missing one is a warning: the build pulls
//! it), and every `inheritEnv` variable is set (values are never printed), and the state
//! directory takes a write and has free space (a full one leaves session
//! logs incomplete).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use cldpd::runtime::{Backend, BuildEvent, BuildSpec, DockerCli, EngineApi};
use futures_util::StreamExt;

use crate::cli::error::{CliError, EXIT_FAILURE};
use crate::cli::output::{elapsed, Ui};
use crate::cli::Ctx;

/// Longest wait for `docker info`.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the probe build.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Repository of the probe image; each probe has its own tag.
const PROBE_REPO: &str = "cldpd-doctor-probe";

/// Arguments of `cldpd doctor`.
#[derive(Debug, Args)]
#[command(after_help = "\
Checks that Docker is reachable and can build an image (a tiny FROM scratch
probe, removed again), that the pods directory exists, that every pod is
valid, that each pod's base images (FROM) are present on the engine (a
missing one is a warning: building the pod pulls it), that every inheritEnv variable of every pod is set, and that the
state directory is writable with free space. Exits 1 when a check fails.")]
pub struct DoctorArgs {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Skip,
    Fail,
}

struct Report {
    checks: usize,
    failed: usize,
}

impl Report {
    fn line(
        &mut self,
        ui: &mut Ui,
        level: Level,
        what: impl std::fmt::Display,
        hint: Option<String>,
    ) {
        use crate::cli::colour::{on_stdout, paint, Colour};
        let tag = match level {
            Level::Ok => paint(on_stdout(), Colour::Green, "ok  "),
            Level::Warn => paint(on_stdout(), Colour::Yellow, "warn"),
            Level::Skip => "skip".to_string(),
            Level::Fail => paint(on_stdout(), Colour::Red, "FAIL"),
        };
        self.checks += 1;
        if level == Level::Fail {
            self.failed += 1;
        }
        ui.print(format_args!("{tag}  {what}\n"));
        if let Some(hint) = hint {
            ui.print(format_args!("      hint: {hint}\n"));
        }
        ui.flush();
    }

    fn error(&mut self, ui: &mut Ui, prefix: &str, e: &cldpd::Error) {
        self.line(ui, Level::Fail, format_args!("{prefix}{e}"), e.hint());
    }
}

/// The state directory takes a small write, and has at least
/// [`LOW_SPACE`](cldpd::state::space::LOW_SPACE) free (less is a warning;
/// none, or no write, a failure).
fn state_dir_check(ui: &mut Ui, report: &mut Report, dir: &std::path::Path) {
    let hint = format!(
        "cldpd keeps session logs and build records in {}: make it writable and free some space there, or point --state-dir / CLDPD_STATE_DIR elsewhere",
        dir.display()
    );
    match cldpd::state::space::check_writable(dir) {
        Ok(free) if free >= cldpd::state::space::LOW_SPACE => report.line(
            ui,
            Level::Ok,
            format_args!(
                "state directory {} is writable ({} MiB free)",
                dir.display(),
                free / (1024 * 1024)
            ),
            None,
        ),
        Ok(free) => report.line(
            ui,
            Level::Warn,
            format_args!(
                "state directory {} is writable but has only {} KiB free: session logs may be incomplete",
                dir.display(),
                free / 1024
            ),
            Some(hint),
        ),
        Err(e) => report.line(
            ui,
            Level::Fail,
            format_args!("state directory {} is not writable: {e}", dir.display()),
            Some(hint),
        ),
    }
}

/// Run `cldpd doctor`.
pub async fn run(_args: DoctorArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(false);
    let mut report = Report {
        checks: 0,
        failed: 0,
    };
    let backend = ctx.settings().runtime.unwrap_or_default();
    let docker = match backend {
        Backend::Cli => format!("cli backend, {}", docker_binary()),
        Backend::EngineApi => format!("Engine API backend, {}", EngineApi::new().host()),
    };

    // Docker.
    let preflight = tokio::time::timeout(PREFLIGHT_TIMEOUT, ctx.dispatcher().preflight()).await;
    let reachable = match preflight {
        Ok(Ok(version)) => {
            report.line(
                &mut ui,
                Level::Ok,
                format_args!("docker is reachable ({docker}, server {version})"),
                None,
            );
            true
        }
        Ok(Err(e)) => {
            report.error(&mut ui, "", &e);
            false
        }
        Err(_) => {
            report.line(
                &mut ui,
                Level::Fail,
                format_args!(
                    "docker ({docker}) did not answer within {}s",
                    PREFLIGHT_TIMEOUT.as_secs()
                ),
                Some("check that the Docker daemon is running and responsive".into()),
            );
            false
        }
    };
    if reachable {
        let started = Instant::now();
        match probe_build(backend).await {
            Ok(()) => report.line(
                &mut ui,
                Level::Ok,
                format_args!(
                    "docker can build images (a FROM scratch probe built and removed in {})",
                    elapsed(started)
                ),
                None,
            ),
            Err(e) => report.line(
                &mut ui,
                Level::Fail,
                format_args!("docker cannot build images: {}", e.message),
                e.hint,
            ),
        }
    } else {
        report.line(
            &mut ui,
            Level::Skip,
            "docker can build images: not checked, docker is unreachable",
            None,
        );
    }

    // State directory.
    state_dir_check(&mut ui, &mut report, &ctx.settings().state_dir);

    // Pods.
    let pods_dir = &ctx.settings().pods_dir;
    if !pods_dir.is_dir() {
        report.error(
            &mut ui,
            "",
            &cldpd::Error::PodsDirMissing {
                path: pods_dir.clone(),
            },
        );
    } else {
        match super::pods::survey(ctx) {
            Err(e) => report.line(&mut ui, Level::Fail, &e.message, e.hint),
            Ok(pods) => {
                report.line(
                    &mut ui,
                    Level::Ok,
                    format_args!(
                        "pods directory {} exists ({})",
                        pods_dir.display(),
                        match pods.len() {
                            1 => "1 pod".to_string(),
                            n => format!("{n} pods"),
                        }
                    ),
                    None,
                );
                if pods.is_empty() {
                    report.line(
                        &mut ui,
                        Level::Warn,
                        format_args!("no pods in {}", pods_dir.display()),
                        Some(
                            "`cldpd new <name>` scaffolds a pod, `cldpd init` adds the demo pod"
                                .into(),
                        ),
                    );
                }
                for (row, pod) in &pods {
                    if row.valid {
                        report.line(
                            &mut ui,
                            Level::Ok,
                            format_args!("pod {} is valid", row.name),
                            None,
                        );
                    }
                    for p in &row.problems {
                        report.line(
                            &mut ui,
                            Level::Fail,
                            // The message often names the pod already.
                            format_args!(
                                "{}",
                                if p.message.contains(row.name.as_str()) {
                                    p.message.clone()
                                } else {
                                    format!("pod {}: {}", row.name, p.message)
                                }
                            ),
                            p.hint.clone(),
                        );
                    }
                    let Some(pod) = pod else { continue };
                    if reachable {
                        base_image_checks(&mut ui, &mut report, backend, &row.name, pod).await;
                    }
                    for name in &pod.config.inherit_env {
                        match std::env::var_os(name) {
                            Some(v) if !v.is_empty() => report.line(
                                &mut ui,
                                Level::Ok,
                                format_args!("pod {}: {name} is set", row.name),
                                None,
                            ),
                            Some(_) => report.line(
                                &mut ui,
                                Level::Warn,
                                format_args!("pod {}: {name} is set but empty", row.name),
                                None,
                            ),
                            None => report.line(
                                &mut ui,
                                Level::Fail,
                                format_args!("pod {}: {name} (inheritEnv) is not set", row.name),
                                Some(format!(
                                    "export {name} before `cldpd start {}`; an unset variable is skipped and the agent runs without it",
                                    row.name
                                )),
                            ),
                        }
                    }
                }
            }
        }
    }

    if report.failed == 0 {
        ui.print(format_args!("all {} checks passed\n", report.checks));
        Ok(0)
    } else {
        ui.print(format_args!(
            "{} of {} checks failed\n",
            report.failed, report.checks
        ));
        Ok(EXIT_FAILURE)
    }
}

/// Each base image of the pod's Dockerfile (`FROM`, not `scratch` nor an
/// earlier stage) is present on the engine; a missing one is a warning
/// that the build will pull it (the engine must reach its registry).
async fn base_image_checks(
    ui: &mut Ui,
    report: &mut Report,
    backend: Backend,
    name: &str,
    pod: &cldpd::Pod,
) {
    let Ok(text) = std::fs::read_to_string(&pod.dockerfile) else {
        return; // the pod check above said what is wrong with it
    };
    // The engine the runs use, through the backend they use.
    let runtime = backend.runtime();
    for image in cldpd::pod::base_images(&text, &pod.config.build_args) {
        match tokio::time::timeout(PREFLIGHT_TIMEOUT, runtime.image_exists(&image)).await {
            Ok(Ok(true)) => report.line(
                ui,
                Level::Ok,
                format_args!("pod {name}: base image {image} is present"),
                None,
            ),
            Ok(Ok(false)) => report.line(
                ui,
                Level::Warn,
                format_args!(
                    "pod {name}: base image {image} is not present: building the pod pulls it, which needs the engine to reach its registry"
                ),
                Some(format!(
                    "`docker pull {image}` now (or `docker load` it where the engine has no network), or change `FROM` to an image `docker images` lists"
                )),
            ),
            Ok(Err(e)) => report.line(
                ui,
                Level::Warn,
                format_args!("pod {name}: could not check base image {image}: {e}"),
                None,
            ),
            Err(_) => report.line(
                ui,
                Level::Warn,
                format_args!(
                    "pod {name}: checking base image {image} took over {}s",
                    PREFLIGHT_TIMEOUT.as_secs()
                ),
                None,
            ),
        }
    }
}

/// The docker binary the library uses (`CLDPD_DOCKER`, else `docker`).
fn docker_binary() -> String {
    DockerCli::new().binary().display().to_string()
}

/// Build a one-file `FROM scratch` image through the library's Docker
/// runtime, then remove it. Its content is unique, so concurrent doctors
/// never share (and never delete) each other's layers.
async fn probe_build(backend: Backend) -> Result<(), CliError> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let unique = format!("{}-{nanos:x}", std::process::id());
    let dir = std::env::temp_dir().join(format!("cldpd-doctor-{unique}"));
    let _cleanup = RemoveDir(dir.clone());
    let io = |e| {
        CliError::new(format!(
            "cannot write the probe build context in {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY probe.txt /probe.txt\n",
    )
    .map_err(io)?;
    std::fs::write(
        dir.join("probe.txt"),
        format!("cldpd doctor probe {unique}\n"),
    )
    .map_err(io)?;
    let image = format!("{PROBE_REPO}:{unique}");
    let spec = BuildSpec {
        pod: "doctor".into(),
        image: image.clone(),
        context: dir.clone(),
        dockerfile: dir.join("Dockerfile"),
        build_args: Vec::new(),
        labels: Default::default(),
    };
    let mut events = backend.runtime().build(spec);
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
        while let Some(ev) = events.next().await {
            if let BuildEvent::Finished(result) = ev {
                return result;
            }
        }
        Err(cldpd::Error::internal("the build ended without a result"))
    })
    .await;
    // Remove the probe whatever happened (a timed-out build may still tag it).
    match backend {
        Backend::Cli => {
            let _ = Command::new(DockerCli::new().binary())
                .args(["rmi", "-f", &image])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Backend::EngineApi => {
            let _ = EngineApi::new().remove_image(&image).await;
        }
    }
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(CliError::new(format!(
            "the probe build did not finish within {}s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
