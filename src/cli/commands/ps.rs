//! `cldpd ps`: the runs Docker knows about, from their `cldpd.*` labels, so
//! runs of every cldpd process are listed.

use std::time::SystemTime;

use clap::Args;

use crate::cli::error::CliError;
use crate::cli::output::{age, table};
use crate::cli::Ctx;

/// Arguments of `cldpd ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// One JSON object per run on stdout (session, pod, container, issue,
    /// started, state, attempt, owner, orphan)
    #[arg(long)]
    pub json: bool,

    /// Only the session ids, one a line (for scripts: `cldpd stop $(cldpd ps -q)`)
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
}

/// Run `cldpd ps`.
pub async fn run(args: PsArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let runs = ctx.dispatcher().runs().await?;
    if ui.json {
        for run in &runs {
            ui.json_line(run);
        }
        return Ok(0);
    }
    if args.quiet {
        for run in &runs {
            ui.print(format_args!("{}\n", run.session));
        }
        return Ok(0);
    }
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let age = r
                .started
                .map(|t| age(now.duration_since(t).unwrap_or_default()))
                .unwrap_or_else(|| "-".into());
            let mut state = r.state.clone();
            if r.orphan {
                state.push_str(" (orphan)");
            }
            vec![
                r.session.clone(),
                r.pod.clone(),
                r.issue.clone().unwrap_or_else(|| "-".into()),
                age,
                state,
            ]
        })
        .collect();
    ui.print(table(&["SESSION", "POD", "ISSUE", "AGE", "STATE"], &rows));
    Ok(0)
}
