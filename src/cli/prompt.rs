//! Where a prompt comes from: `--prompt <text>`, `--prompt -` (cldpd's own
//! stdin) or `--prompt-file <file>` (`-`: stdin too).

use std::io::Read;
use std::path::Path;

use super::error::CliError;

/// The prompt text of `--prompt` / `--prompt-file`, read from stdin or the
/// file when they say so; `None` when neither was given.
pub fn read_prompt(
    prompt: Option<&str>,
    prompt_file: Option<&Path>,
) -> Result<Option<String>, CliError> {
    match (prompt, prompt_file) {
        (Some("-"), _) => read_stdin().map(Some),
        (Some(text), _) => Ok(Some(text.to_string())),
        (None, Some(path)) if path == Path::new("-") => read_stdin().map(Some),
        (None, Some(path)) => std::fs::read_to_string(path).map(Some).map_err(|e| {
            CliError::new(format!(
                "cannot read the prompt file {}: {e}",
                path.display()
            ))
            .hint("check the path given to --prompt-file (`-` reads stdin)")
        }),
        (None, None) => Ok(None),
    }
}

fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::new(format!("cannot read the prompt from stdin: {e}")))?;
    Ok(text)
}
