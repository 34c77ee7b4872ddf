//! `cldpd completions <shell>`: a completion script on stdout.
//!
//! Commands and flags come from clap. For bash, zsh and fish the script
//! also completes what only cldpd knows, by asking it at completion time
//! (`cldpd __complete pods|targets|sessions`): pod names after `start`; pod
//! names and live session ids after `stop`, `logs` and `resume`; stored
//! session ids (those `ps -a` lists as resumable, and live ones) after `rm`
//! and `diff`. A `--pods-dir` or `--state-dir` on the command line being
//! completed is passed on.

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
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "cldpd", &mut script);
    let script = String::from_utf8_lossy(&script);
    let script = match args.shell {
        Shell::Bash => format!("{script}{BASH_DYNAMIC}"),
        Shell::Fish => format!("{script}{FISH_DYNAMIC}"),
        Shell::Zsh => zsh_dynamic(&script),
        _ => script.into_owned(),
    };
    let _ = std::io::stdout().lock().write_all(script.as_bytes());
    Ok(0)
}

/// clap's zsh script ends by calling `_cldpd` (when autoloaded from
/// `fpath`) or registering it with `compdef` (when sourced). Both must go
/// through `_cldpd_dynamic` instead, which answers the positional targets
/// from cldpd and hands everything else to clap's `_cldpd`. When clap's
/// ending is not found (a changed generator), the dynamic part is appended
/// and registered, so the script still works.
fn zsh_dynamic(clap: &str) -> String {
    let ending = clap
        .rfind("if [ \"$funcstack[1]\" = \"_cldpd\" ]; then")
        .unwrap_or(clap.len());
    format!("{}{ZSH_DYNAMIC}\n{ZSH_DISPATCH}", &clap[..ending])
}

/// Arguments of the hidden `cldpd __complete`.
#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// `pods` (pod names), `targets` (pod names and live session ids) or
    /// `sessions` (stored session ids)
    pub kind: String,
}

/// Print the candidates, one a line; nothing (and exit 0) when they cannot
/// be found — a completion never prints errors.
pub async fn candidates(args: CompleteArgs, ctx: &crate::cli::Ctx) -> Result<i32, CliError> {
    if args.kind == "sessions" {
        // From the state directory alone: no engine to wait for.
        let text: String = cldpd::workspace::Storage::all(&ctx.settings().state_dir)
            .iter()
            .filter_map(|s| s.dir().file_name()?.to_str().map(|n| format!("{n}\n")))
            .collect();
        print!("{text}");
        return Ok(0);
    }
    let mut out: Vec<String> = cldpd::pod::discover_all(&ctx.settings().pods_dir)
        .map(|entries| entries.into_iter().map(|e| e.name).collect())
        .unwrap_or_default();
    if args.kind == "targets" {
        let runs =
            tokio::time::timeout(std::time::Duration::from_secs(3), ctx.dispatcher().runs()).await;
        if let Ok(Ok(runs)) = runs {
            out.extend(runs.into_iter().map(|r| r.session));
        }
    }
    let text: String = out.iter().map(|c| format!("{c}\n")).collect();
    print!("{text}");
    Ok(0)
}

/// Bash: wrap clap's `_cldpd` so that the positional targets of start,
/// stop, logs, resume, rm and diff complete from `cldpd __complete`.
const BASH_DYNAMIC: &str = r#"
# Pod names and live session ids, from cldpd itself (dynamic).
_cldpd_dynamic() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local sub="" kind="" i w
    local -a dir=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ ( $w == --pods-dir || $w == --state-dir ) && $((i + 1)) -lt COMP_CWORD ]]; then
            dir+=("$w" "${COMP_WORDS[i+1]}")
        elif [[ -z $sub && $w != -* && ${COMP_WORDS[i-1]} != --pods-dir && ${COMP_WORDS[i-1]} != --state-dir ]]; then
            sub=$w
        fi
    done
    case $sub in
        start) kind=pods ;;
        stop | logs | resume) kind=targets ;;
        rm | diff) kind=sessions ;;
    esac
    if [[ -n $kind && $cur != -* ]]; then
        case $prev in
            --issue | --prompt | --prompt-file | --grace | --pods-dir | --state-dir | -n | --tail | --keep-alive | --older-than) ;;
            *)
                local IFS=$'
'
                COMPREPLY=($(compgen -W "$(cldpd "${dir[@]}" __complete "$kind" 2>/dev/null)" -- "$cur"))
                return 0
                ;;
        esac
    fi
    _cldpd "$@"
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _cldpd_dynamic -o nosort -o bashdefault -o default cldpd
else
    complete -F _cldpd_dynamic -o bashdefault -o default cldpd
fi
"#;

/// Zsh: the same logic as bash's over `$words` / `$CURRENT` (1-based),
/// candidates given to `compadd`, which filters them by the typed prefix.
const ZSH_DYNAMIC: &str = r#"
# Pod names and live session ids, from cldpd itself (dynamic).
_cldpd_dynamic() {
    local sub="" kind="" i w
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    local -a dir candidates
    for ((i = 2; i < CURRENT; i++)); do
        w=${words[i]}
        if [[ ( $w == --pods-dir || $w == --state-dir ) ]] && (( i + 1 < CURRENT )); then
            dir+=("$w" "${words[i+1]}")
        elif [[ -z $sub && $w != -* && ${words[i-1]} != --pods-dir && ${words[i-1]} != --state-dir ]]; then
            sub=$w
        fi
    done
    case $sub in
        start) kind=pods ;;
        stop|logs|resume) kind=targets ;;
        rm|diff) kind=sessions ;;
    esac
    if [[ -n $kind && $cur != -* ]]; then
        case $prev in
            --issue|--prompt|--prompt-file|--grace|--pods-dir|--state-dir|-n|--tail|--keep-alive|--older-than) ;;
            *)
                candidates=("${(@f)$(cldpd "${dir[@]}" __complete $kind 2>/dev/null)}")
                candidates=(${candidates:#})
                compadd -a candidates
                return
                ;;
        esac
    fi
    _cldpd "$@"
}
"#;

/// Zsh: where clap's script would call or register `_cldpd`.
const ZSH_DISPATCH: &str = r#"if [ "$funcstack[1]" = "_cldpd" ]; then
    # Autoloaded from fpath as _cldpd: from now on complete through the
    # dynamic wrapper, then answer this first completion.
    compdef _cldpd_dynamic cldpd
    _cldpd_dynamic "$@"
else
    compdef _cldpd_dynamic cldpd
fi
"#;

/// Fish: pod names after start; pods and live sessions after stop, logs,
/// resume; stored sessions after rm and diff.
const FISH_DYNAMIC: &str = r#"
# Pod names and live session ids, from cldpd itself (dynamic).
complete -c cldpd -n "__fish_seen_subcommand_from start" -f -a "(cldpd __complete pods 2>/dev/null)"
complete -c cldpd -n "__fish_seen_subcommand_from stop logs resume" -f -a "(cldpd __complete targets 2>/dev/null)"
complete -c cldpd -n "__fish_seen_subcommand_from rm diff" -f -a "(cldpd __complete sessions 2>/dev/null)"
"#;
