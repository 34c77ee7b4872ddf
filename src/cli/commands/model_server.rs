//! `cldpd model-server --script FILE [--port N]`: the scripted Messages-API
//! server (see `cldpd::model_server`), so that a pod and its template can be
//! tried with the real Claude Code offline and for free.

use std::path::PathBuf;

use clap::Args;
use cldpd::model_server::{ModelServer, Script};

use crate::cli::error::CliError;

/// Arguments of `cldpd model-server`.
#[derive(Debug, Args)]
#[command(after_help = "\
The script is JSON: {\"turns\": [TURN, ...]}, one turn per request of a
conversation, e.g.

  {\"turns\": [
    {\"content\": [{\"type\": \"tool_use\", \"name\": \"Bash\",
                  \"input\": {\"command\": \"echo hi > hello.txt\"}}]},
    {\"content\": [{\"type\": \"text\", \"text\": \"Wrote hello.txt.\"}]}
  ]}

A turn may also say delayMs, eventDelayMs, usage {inputTokens, outputTokens},
stopReason, error {status, retryAfter, type, message}, cutAfter (events),
malformed (true), times (repeat; 0 = for ever). See the README.

Point a pod at it (pod.json):
  \"network\": \"host\",
  \"env\": {\"ANTHROPIC_BASE_URL\": \"http://127.0.0.1:PORT\",
          \"ANTHROPIC_API_KEY\": \"any\",
          \"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC\": \"1\"}

It listens on 127.0.0.1 only, logs each request on stderr, and runs until
Ctrl-C.")]
pub struct ModelServerArgs {
    /// The script (JSON)
    #[arg(long, value_name = "FILE")]
    pub script: PathBuf,
    /// Port on 127.0.0.1 (0 = any free one)
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

/// Run `cldpd model-server` until Ctrl-C / SIGTERM.
pub async fn run(args: ModelServerArgs) -> Result<i32, CliError> {
    let script = Script::from_file(&args.script)?;
    let turns = script.turns.len();
    let server = ModelServer::start(script, args.port)?;
    println!("ANTHROPIC_BASE_URL={}", server.url());
    eprintln!(
        "cldpd: scripted model server on {} ({turns} turns per conversation); Ctrl-C ends it",
        server.url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::new(format!("cannot watch SIGTERM: {e}")))?;
    let mut seen = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {}
        }
        let reqs = server.requests();
        for r in &reqs[seen..] {
            let turn = r
                .turn
                .map(|t| format!("turn {t}"))
                .unwrap_or_else(|| "-".into());
            eprintln!(
                "cldpd: {} {} -> {} ({turn}, conversation {})",
                r.method,
                r.path,
                r.status,
                r.conversation.as_deref().unwrap_or("-")
            );
        }
        seen = reqs.len();
    }
    eprintln!("cldpd: model server stopped after {seen} requests");
    Ok(0)
}
