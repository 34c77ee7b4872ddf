//! `cldpd new <pod>`: scaffold a pod directory to edit.

use clap::Args;

use super::scaffold::{self, cldpd_for, ensure_pods_dir, write_pod};
use crate::cli::error::CliError;
use crate::cli::Ctx;

/// Arguments of `cldpd new`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes <pods-dir>/<pod>/ with a Dockerfile (Claude Code on node:20-slim, a
non-root user), pod.json (the API key forwarded from your shell, limits),
template.md (standing orders) and README.md (what each file and each
pod.json field does). Edit them, then: cldpd doctor; cldpd start <pod> ...")]
pub struct NewArgs {
    /// The new pod's name (a directory name Docker accepts in an image tag)
    pub pod: String,
}

/// Run `cldpd new`.
pub fn run(args: NewArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(false);
    cldpd::pod::validate_pod_name(&args.pod)?;
    let pods_dir = &ctx.settings().pods_dir;
    let dir = pods_dir.join(&args.pod);
    if dir.exists() {
        return Err(CliError::new(format!(
            "pod {} exists already: {}",
            args.pod,
            dir.display()
        ))
        .hint("pick another name, or edit that pod's files"));
    }
    if ensure_pods_dir(pods_dir)? {
        ui.status(format_args!(
            "created the pods directory {}",
            pods_dir.display()
        ));
    }
    write_pod(&dir, scaffold::CLAUDE_POD)?;
    ui.status(format_args!(
        "created pod {} in {}",
        args.pod,
        dir.display()
    ));
    let cldpd = cldpd_for(pods_dir);
    ui.print(format_args!(
        "\
Next:
  edit {dir}/Dockerfile, pod.json and template.md (README.md explains them)
  export ANTHROPIC_API_KEY=...
  {cldpd} doctor
  {cldpd} start {pod} --issue https://github.com/<owner>/<repo>/issues/<n>
",
        dir = dir.display(),
        pod = args.pod
    ));
    Ok(0)
}
