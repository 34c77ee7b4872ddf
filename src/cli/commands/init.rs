//! `cldpd init`: create the pods directory with a pod that works, and say
//! what to do next.

use std::path::{Path, PathBuf};

use clap::Args;

use super::scaffold::{self, cldpd_for, ensure_pods_dir, io_error, write_pod};
use crate::cli::error::CliError;
use crate::cli::Ctx;

/// Arguments of `cldpd init`.
#[derive(Debug, Args)]
#[command(after_help = "\
Creates the pods directory (--pods-dir, CLDPD_PODS_DIR, default
~/.cldpd/pods) and one pod in it:

  hello    the demo pod: a stub agent in a FROM scratch image, no network or
           API key needed (when the host has a static busybox: Debian's
           busybox-static)
  claude   otherwise: a real Claude Code pod on node:20-slim (its build
           pulls the image; needs ANTHROPIC_API_KEY)

An existing pod of that name is left as it is. Then: cldpd doctor.")]
pub struct InitArgs {
    /// The static busybox to put into the demo pod
    #[arg(long, value_name = "FILE", default_value = "/bin/busybox")]
    pub busybox: PathBuf,
}

/// Run `cldpd init`.
pub fn run(args: InitArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(false);
    let pods_dir = &ctx.settings().pods_dir;
    if ensure_pods_dir(pods_dir)? {
        ui.status(format_args!(
            "created the pods directory {}",
            pods_dir.display()
        ));
    } else {
        ui.status(format_args!(
            "the pods directory {} exists",
            pods_dir.display()
        ));
    }
    let demo = scaffold::is_static_elf(&args.busybox);
    let (name, what) = if demo {
        (
            "hello",
            "the demo pod: a stub agent, no network or API key needed",
        )
    } else {
        ui.status(format_args!(
            "{} is not a static busybox (Debian: apt-get install busybox-static): no demo pod",
            args.busybox.display()
        ));
        (
            "claude",
            "a Claude Code pod to start from (see its README.md)",
        )
    };
    let dir = pods_dir.join(name);
    let cldpd = cldpd_for(pods_dir);
    if dir.exists() {
        ui.status(format_args!(
            "pod {name} exists in {}: left as it is",
            dir.display()
        ));
    } else {
        if demo {
            write_pod(&dir, scaffold::DEMO_POD)?;
            copy_busybox(&args.busybox, &dir.join("busybox"))?;
        } else {
            write_pod(&dir, scaffold::CLAUDE_POD)?;
        }
        ui.status(format_args!(
            "created pod {name} in {} ({what})",
            dir.display()
        ));
    }
    let run = if demo {
        format!("{cldpd} start hello --prompt 'exit=3'         # run the demo pod (exits 3)")
    } else {
        format!("export ANTHROPIC_API_KEY=...; {cldpd} start claude --prompt 'Say hello'")
    };
    ui.print(format_args!(
        "\
Next:
  {cldpd} doctor                  # check Docker and the pods
  {run}
  {cldpd} new <name>              # scaffold your own pod (Dockerfile, pod.json, template.md)
"
    ));
    Ok(0)
}

fn copy_busybox(from: &Path, to: &Path) -> Result<(), CliError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| io_error(to, e))
}
