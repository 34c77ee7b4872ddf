//! `cldpd stop <session-or-pod>`: stop a run of any cldpd process;
//! `cldpd stop --orphans`: stop and remove the runs whose cldpd is gone.

use std::time::Duration;

use clap::Args;

use crate::cli::error::{CliError, EXIT_FAILURE};
use crate::cli::output::grace_text;
use crate::cli::{parse_grace, Ctx};

/// Arguments of `cldpd stop`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints the stopped session's id on stdout (with --orphans: one per line). The
cldpd process that started the run (if any) then exits with the container's
code (143 after SIGTERM). An orphan is a run whose owning cldpd process is
gone (see `cldpd ps`); --orphans never touches a run whose owner is alive.")]
#[command(group(clap::ArgGroup::new("what").required(true).args(["targets", "orphans"])))]
pub struct StopArgs {
    /// Session ids, or pod names each with exactly one live run; several
    /// are stopped at once
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Stop and remove every orphaned run instead
    #[arg(long)]
    pub orphans: bool,

    /// Seconds between SIGTERM and SIGKILL [default: the run's stopGraceSecs, else 10]
    #[arg(long, value_name = "SECS", value_parser = parse_grace)]
    pub grace: Option<Duration>,

    /// Print what was stopped as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd stop`.
pub async fn run(args: StopArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    if args.targets.is_empty() {
        return orphans(&mut ui, ctx, args.grace).await;
    }
    // Each target's stop is its own escalation: run them at once.
    let stops = args
        .targets
        .iter()
        .map(|target| stop_one(ctx, target, args.grace, args.json));
    let results = futures_util::future::join_all(stops).await;
    let mut code = 0;
    for (target, result) in args.targets.iter().zip(results) {
        match result {
            Ok(report) if ui.json => ui.json_line(&report),
            Ok(report) => {
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
            Err(e) if args.targets.len() == 1 => return Err(e),
            Err(e) => {
                ui.error(&CliError {
                    message: format!("{target}: {}", e.message),
                    hint: e.hint,
                });
                code = EXIT_FAILURE;
            }
        }
    }
    Ok(code)
}

/// Stop one target; says "stopping…" only once it is known to be live.
async fn stop_one(
    ctx: &Ctx,
    target: &str,
    grace: Option<Duration>,
    json: bool,
) -> Result<cldpd::StopReport, CliError> {
    let runs = ctx.dispatcher().runs().await?;
    let live = runs
        .iter()
        .any(|r| r.session == target || r.pod == target || r.container == target);
    if live {
        let grace_note = grace.map_or("the run's grace".to_string(), grace_text);
        ctx.ui(json).status(format_args!(
            "stopping {target} (SIGTERM, then SIGKILL after {grace_note})"
        ));
    }
    Ok(ctx.dispatcher().stop(target, grace).await?)
}

async fn orphans(
    ui: &mut crate::cli::output::Ui,
    ctx: &Ctx,
    grace: Option<Duration>,
) -> Result<i32, CliError> {
    let reports = ctx.dispatcher().stop_orphans(grace).await?;
    for report in &reports {
        if ui.json {
            ui.json_line(report);
        } else {
            ui.print(format_args!("{}\n", report.session));
        }
    }
    ui.status(format_args!(
        "stopped and removed {} orphaned run{}",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" }
    ));
    Ok(0)
}
