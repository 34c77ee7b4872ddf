//! `cldpd pods`: every pod in the pods directory, valid or not and why.

use clap::Args;
use serde::Serialize;

use crate::cli::error::CliError;
use crate::cli::output::table;
use crate::cli::Ctx;

/// Arguments of `cldpd pods`.
#[derive(Debug, Args)]
pub struct PodsArgs {
    /// One JSON object per pod on stdout (name, valid, dir, image, problems)
    #[arg(long)]
    pub json: bool,
}

/// One problem of a pod, for `--json`.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// [`cldpd::Error::code`].
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// One pod, for `--json`.
#[derive(Debug, Serialize)]
pub struct PodRow {
    /// Directory name.
    pub name: String,
    /// True when it can be started.
    pub valid: bool,
    /// The pod directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Its image tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Everything wrong with it.
    pub problems: Vec<Problem>,
}

/// Every pod in the pods directory with its problems (`Pod::check`).
pub fn survey(ctx: &Ctx) -> Result<Vec<(PodRow, Option<cldpd::Pod>)>, CliError> {
    let entries = cldpd::pod::discover_all(&ctx.settings().pods_dir)?;
    Ok(entries
        .into_iter()
        .map(|entry| {
            let problems: Vec<cldpd::Error> = match &entry.pod {
                Ok(pod) => pod.check(),
                Err(e) => vec![e.clone()],
            };
            let row = PodRow {
                name: entry.name,
                valid: problems.is_empty(),
                dir: entry.pod.as_ref().ok().map(|p| p.dir.display().to_string()),
                image: entry.pod.as_ref().ok().map(|p| p.image()),
                problems: problems
                    .iter()
                    .map(|e| Problem {
                        code: e.code(),
                        message: e.to_string(),
                        hint: e.hint(),
                    })
                    .collect(),
            };
            (row, entry.pod.ok())
        })
        .collect())
}

/// Run `cldpd pods`.
pub fn run(args: PodsArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let pods = survey(ctx)?;
    if ui.json {
        for (row, _) in &pods {
            ui.json_line(row);
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|(row, _)| {
            let why = row
                .problems
                .iter()
                .map(|p| p.message.replace('\n', " "))
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                row.name.clone(),
                if row.valid { "valid" } else { "invalid" }.to_string(),
                row.image.clone().unwrap_or_else(|| "-".into()),
                why,
            ]
        })
        .collect();
    ui.print(table(&["NAME", "STATUS", "IMAGE", "PROBLEMS"], &rows));
    if pods.is_empty() {
        ui.status(format_args!(
            "no pods in {}: `cldpd new <name>` scaffolds one, `cldpd init` adds the demo pod",
            ctx.settings().pods_dir.display()
        ));
    }
    Ok(0)
}
