//! `cldpd stop <session-or-pod>`: stop a run of any cldpd process.

use std::time::Duration;

use clap::Args;

use crate::cli::error::CliError;
use crate::cli::output::grace_text;
use crate::cli::{parse_grace, Ctx};

/// Arguments of `cldpd stop`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints the stopped session's id on stdout. The cldpd process that started the
run (if any) then exits with the container's code (143 after SIGTERM).")]
pub struct StopArgs {
    /// A session id, or a pod name when exactly one run of it is live
    pub target: String,

    /// Seconds between SIGTERM and SIGKILL [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_grace)]
    pub grace: Option<Duration>,

    /// Print what was stopped as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd stop`.
pub async fn run(args: StopArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let grace = args.grace.unwrap_or(ctx.settings().policy.stop_grace);
    ui.status(format_args!(
        "stopping {} (SIGTERM, then SIGKILL after {})",
        args.target,
        grace_text(grace)
    ));
    let report = ctx.dispatcher().stop(&args.target, Some(grace)).await?;
    if ui.json {
        ui.json_line(&report);
    } else {
        ui.print(format_args!("{}\n", report.session));
        match report.code {
            Some(code) => ui.status(format_args!(
                "stopped {} (container {}, exited {code})",
                report.session, report.container
            )),
            None => ui.status(format_args!(
                "stopped {} (container {})",
                report.session, report.container
            )),
        }
    }
    Ok(0)
}
