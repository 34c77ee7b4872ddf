//! Running the real `cldpd` binary in tests: bounded in time, with its own
//! state directory, output captured while it runs.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default limit for one command.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A `cldpd` command with `--pods-dir <pods>` and `CLDPD_STATE_DIR=<state>`,
/// and none of the caller's cldpd environment.
pub fn cldpd(pods: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cldpd"));
    cmd.arg("--pods-dir")
        .arg(pods)
        .env("CLDPD_STATE_DIR", state)
        .env_remove("CLDPD_PODS_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// What a finished command did.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// Panic with the output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A running `cldpd` process whose output is collected as it comes.
pub struct Live {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Live {
    /// Start `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Live {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the cldpd binary");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Live {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// Its stdin, once (the command must have been given
    /// `stdin(Stdio::piped())`); dropping it closes it (end of input).
    pub fn take_stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().expect("stdin was piped")
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&Live) -> bool) {
        let deadline = Instant::now() + limit;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until stdout contains `needle`.
    pub fn wait_stdout(&self, needle: &str, limit: Duration) {
        self.wait_for(&format!("`{needle}` on stdout"), limit, |l| {
            l.stdout().contains(needle)
        });
    }

    /// Wait until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, limit: Duration) {
        self.wait_for(&format!("`{needle}` on stderr"), limit, |l| {
            l.stderr().contains(needle)
        });
    }

    /// The session id from the `cldpd: started <id>` status line (waits for
    /// it).
    pub fn session_id(&self, limit: Duration) -> String {
        self.wait_stderr("cldpd: started ", limit);
        let err = self.stderr();
        let rest = &err[err.find("cldpd: started ").unwrap() + "cldpd: started ".len()..];
        rest.split_whitespace().next().unwrap().to_string()
    }

    /// Send a signal (`"INT"`, `"TERM"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Wait for the exit (killing it and panicking after `limit`).
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for cldpd") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "cldpd did not exit within {limit:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` to the end within `limit`.
pub fn run(cmd: Command, limit: Duration) -> Finished {
    Live::spawn(cmd).finish(limit)
}

/// A long-lived agent as Claude Code is one with `--input-format
/// stream-json` (see `src/runtime/fault/converse.rs`): for each user
/// message on its stdin, one turn — `command_lifecycle` started with the
/// message's `uuid`, the message replayed, an `assistant` text `answer <n>:
/// <prompt>`, a `result`, `command_lifecycle` completed; it ends at the end
/// of its input. `NOTE` (empty here) runs after each turn, with `$text`.
pub const STREAM_JSON_AGENT: &str = r#"#!/bin/sh
n=0
while IFS= read -r line; do
  n=$((n + 1))
  uuid=$(printf '%s\n' "$line" | sed -n 's/.*"uuid":"\([^"]*\)".*/\1/p')
  text=$(printf '%s\n' "$line" | sed -n 's/.*"content":"\([^"]*\)".*/\1/p')
  echo "{\"type\":\"command_lifecycle\",\"command_uuid\":\"$uuid\",\"state\":\"started\"}"
  echo "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"$text\"},\"isReplay\":true,\"uuid\":\"$uuid\"}"
  echo "{\"type\":\"assistant\",\"message\":{\"id\":\"msg_$n\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"answer $n: $text\"}]}}"
  echo "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"num_turns\":1,\"total_cost_usd\":0.001,\"duration_ms\":1,\"result\":\"answer $n: $text\"}"
  NOTE
  echo "{\"type\":\"command_lifecycle\",\"command_uuid\":\"$uuid\",\"state\":\"completed\"}"
done
"#;

/// Wait for `child` within `limit` (killing it and panicking after);
/// returns its exit code and stderr (read by `err`, see [`read_stderr`]).
pub fn exit_within(
    mut child: Child,
    err: JoinHandle<String>,
    limit: Duration,
) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cldpd did not exit within {limit:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), err.join().unwrap())
}

/// Read `child`'s piped stderr to its end on a thread of its own.
pub fn read_stderr(child: &mut Child) -> JoinHandle<String> {
    let mut pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Run `cmd` with its stdout on `/dev/full` (every write fails with
/// ENOSPC), waiting at most `limit`: asserts that cldpd exits 1 and says
/// why, and returns its stderr for the rest of the test's checks.
pub fn run_with_full_stdout(mut cmd: Command, limit: Duration) -> String {
    cmd.stdout(dev_full()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = read_stderr(&mut child);
    let (code, stderr) = exit_within(child, err, limit);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("cldpd: cannot write to stdout: No space left on device"),
        "{stderr}"
    );
    stderr
}

/// `/dev/full` opened for writing: every write fails with ENOSPC.
fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}
