//! `cldpd completions <shell>`: a completion script on stdout.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::error::CliError;
use crate::cli::Cli;

/// Arguments of `cldpd completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cldpd completions bash > ~/.local/share/bash-completion/completions/cldpd
  cldpd completions zsh > ~/.zfunc/_cldpd
  cldpd completions fish > ~/.config/fish/completions/cldpd.fish")]
pub struct CompletionsArgs {
    /// The shell
    pub shell: Shell,
}

/// Run `cldpd completions`.
pub fn run(args: CompletionsArgs) -> Result<i32, CliError> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "cldpd", &mut out);
    Ok(0)
}
