//! The files `cldpd init` and `cldpd new` write: the demo pod (from
//! `config/pods/hello`) and a real Claude Code pod to start from (from
//! `config/pods/claude-example`), embedded in the binary so that they work
//! after `cargo install`.

use std::path::{Path, PathBuf};

use crate::cli::error::CliError;

/// One file of a pod: name, contents, executable.
pub type PodFile = (&'static str, &'static str, bool);

/// The demo pod, without its busybox (copied in from the host).
pub const DEMO_POD: &[PodFile] = &[
    (
        "Dockerfile",
        include_str!("../../../config/pods/hello/Dockerfile"),
        false,
    ),
    (
        "claude",
        include_str!("../../../config/pods/hello/claude"),
        true,
    ),
    (
        "pod.json",
        include_str!("../../../config/pods/hello/pod.json"),
        false,
    ),
    (
        "template.md",
        include_str!("../../../config/pods/hello/template.md"),
        false,
    ),
];

/// A pod that runs the real Claude Code (`cldpd new`, and `cldpd init`
/// without a static busybox). `README.md` explains every file and every
/// `pod.json` field: JSON has no comments, and pod.json refuses unknown
/// fields.
pub const CLAUDE_POD: &[PodFile] = &[
    (
        "Dockerfile",
        include_str!("../../../config/pods/claude-example/Dockerfile"),
        false,
    ),
    ("pod.json", CLAUDE_POD_JSON, false),
    (
        "template.md",
        include_str!("../../../config/pods/claude-example/template.md"),
        false,
    ),
    ("README.md", CLAUDE_POD_README, false),
];

const CLAUDE_POD_JSON: &str = r#"{
  "inheritEnv": ["ANTHROPIC_API_KEY"],
  "env": { "DISABLE_AUTOUPDATER": "1" },
  "workdir": "/workspace",
  "agentCommand": ["claude", "--dangerously-skip-permissions"],
  "agentInput": "stream-json",
  "stopGraceSecs": 30,
  "timeoutSecs": 3600,
  "idleTimeoutSecs": 900
}
"#;

const CLAUDE_POD_README: &str = "\
# A cldpd pod

A pod is this directory: cldpd builds `Dockerfile` (the directory is the
build context) and runs Claude Code in it on an issue or a prompt:

    cldpd start <pod> --issue https://github.com/<owner>/<repo>/issues/<n>
    cldpd start <pod> --prompt 'what to do'

| file | what it does |
|---|---|
| `Dockerfile` | the image: Node 20 + git + Claude Code, a non-root user `agent`, workdir `/workspace` (building it pulls `node:20-slim`) |
| `pod.json` | configuration, below (JSON has no comments: they are here) |
| `template.md` | standing orders, put before every start prompt |
| `README.md` | this file (cldpd ignores it) |

## `pod.json`

Every field is optional; an unknown or misspelled field is refused.

- `inheritEnv: [\"ANTHROPIC_API_KEY\"]`: host variables handed to the
  container when you run `cldpd start` (never on a command line). Export
  the key first; `cldpd doctor` says when it is unset.
- `env`: fixed variables for the container. `DISABLE_AUTOUPDATER`: rebuild
  the image to update Claude Code.
- `workdir`: where the agent starts, inside the container.
- `agentCommand`: the agent and its leading arguments; cldpd appends
  `-p --session-id <uuid>` and its own output options, and gives the
  prompt on stdin. `--dangerously-skip-permissions` lets the agent act
  without asking (nobody is there to answer) -- inside the container only;
  add `mounts` with care.
- `agentInput: \"stream-json\"`: one long-lived Claude Code per run. Follow-ups
  (`cldpd resume <id> --prompt ...`, `cldpd start -i`) reach the same
  agent; the session's workspace and conversation stay after the
  container ends, so `cldpd resume` continues it later (`cldpd rm` removes
  it). Add `keepAliveSecs` to keep the run waiting for follow-ups, and
  `repo: {\"path\": \"~/src/app\", \"ref\": \"main\"}` to work on a clone of a local
  repository whose result comes back as branch `cldpd/<session>`.
- `stopGraceSecs`: seconds between SIGTERM and SIGKILL on `cldpd stop`.
- `timeoutSecs`, `idleTimeoutSecs`: stop a run after this long, or after
  this long without output.

More fields: `image`, `buildArgs`, `mounts`, `restart`, `maxRestarts`,
`withinSecs`, `backoffMs`, `backoffMaxMs`, `cpus`, `memory`, `pidsLimit`
(see cldpd's README).

## Next

    export ANTHROPIC_API_KEY=sk-ant-...
    cldpd doctor
    cldpd start <pod> --prompt 'Say hello and stop'
";

/// Write `files` into the new directory `dir` (which must not exist).
pub fn write_pod(dir: &Path, files: &[PodFile]) -> Result<(), CliError> {
    std::fs::create_dir(dir).map_err(|e| io_error(dir, e))?;
    for (name, contents, executable) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| io_error(&path, e))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io_error(&path, e))?;
        }
    }
    Ok(())
}

/// Create the pods directory (and its parents) when missing; true when it
/// was created.
pub fn ensure_pods_dir(dir: &Path) -> Result<bool, CliError> {
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    Ok(true)
}

/// A failed file operation, with the path.
pub fn io_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(format!("cannot create {}: {e}", path.display()))
        .hint("check the permissions of the pods directory (--pods-dir, CLDPD_PODS_DIR)")
}

/// `cldpd` plus `--pods-dir <dir>` when the pods directory is not the one
/// a bare `cldpd` uses (for the next-step commands printed).
pub fn cldpd_for(pods_dir: &Path) -> String {
    let default: Option<PathBuf> = std::env::var_os("CLDPD_PODS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cldpd").join("pods")));
    if default.as_deref() == Some(pods_dir) {
        "cldpd".to_string()
    } else {
        format!(
            "cldpd --pods-dir {}",
            shell_word(&pods_dir.display().to_string())
        )
    }
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-~+:=@%,".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// True when `path` is a statically linked ELF executable (no program
/// interpreter): one that runs in a `FROM scratch` image.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    static_elf(&bytes)
}

fn static_elf(b: &[u8]) -> bool {
    // ELF magic, 64-bit, little-endian (what Debian's x86-64 and arm64
    // busybox-static are).
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phnum > 0 && phentsize < 4 {
        return false;
    }
    for i in 0..phnum {
        let Some(at) = phoff.checked_add(i * phentsize) else {
            return false;
        };
        let Some(p_type) = b.get(at..at + 4) else {
            return false;
        };
        // PT_INTERP: a dynamic loader is needed.
        if u32::from_le_bytes(p_type.try_into().expect("4 bytes")) == 3 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffolded_pod_json_is_valid() {
        let config = cldpd::pod::PodConfig::from_json(CLAUDE_POD_JSON, Path::new("pod.json"))
            .expect("parses");
        assert!(config.problems("x", Path::new("pod.json")).is_empty());
        assert_eq!(config.inherit_env, ["ANTHROPIC_API_KEY"]);
    }

    #[test]
    fn only_an_elf_without_interpreter_is_static() {
        assert!(!static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(Path::new("/nonexistent/busybox")));
        // A minimal ELF64 header with no program headers is static.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(static_elf(&elf));
        // One PT_INTERP program header makes it dynamic.
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf.extend_from_slice(&[0u8; 56]);
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(!static_elf(&elf));
    }

    #[test]
    fn next_steps_name_a_pods_dir_that_is_not_the_default() {
        assert!(cldpd_for(Path::new("/x/y z")).ends_with("--pods-dir '/x/y z'"));
    }
}
