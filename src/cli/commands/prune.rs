//! `cldpd prune [--older-than 7d]`: remove the stored sessions whose last
//! run ended longer ago than that, through
//! [`cldpd::Dispatcher::prune_stored`]; never a live one.

use std::time::Duration;

use clap::Args;
use cldpd::workspace::Storage;

use crate::cli::error::CliError;
use crate::cli::render::keep_alive_text;
use crate::cli::{parse_duration, Ctx};

/// Arguments of `cldpd prune`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cldpd prune                      (sessions ended 7 days ago or more)
  cldpd prune --older-than 12h
  cldpd prune --older-than 0       (every session that has ended)

Removes, as `cldpd rm` does, each session's workspace, agent state and run
logs; its branch (cldpd/<session>) stays in your repository. Sessions whose
run is live, and sessions that never ended, are kept. Prints the id of each
removed session.")]
pub struct PruneArgs {
    /// Remove the sessions whose last run ended at least this long ago:
    /// `7d`, `12h`, `30m`, `0` (all ended ones)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub older_than: Duration,

    /// Print each removed session as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd prune`.
pub async fn run(args: PruneArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    // Nothing stored: nothing to ask the engine about.
    let removed = if Storage::all(&ctx.settings().state_dir).is_empty() {
        Vec::new()
    } else {
        ctx.dispatcher().prune_stored(args.older_than).await?
    };
    for info in &removed {
        if ui.json {
            ui.json_line(info);
        } else {
            ui.print(format_args!("{}\n", info.meta.session));
        }
    }
    ui.status(format_args!(
        "removed {} session{} ended {} ago or more",
        removed.len(),
        if removed.len() == 1 { "" } else { "s" },
        keep_alive_text(args.older_than)
    ));
    ui.flush();
    Ok(0)
}
