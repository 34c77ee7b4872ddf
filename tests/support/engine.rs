//! A second, private Docker engine for one test, in a network namespace of
//! its own (ARCHITECTURE.md, "Tests").
//!
//! `dockerd` runs under `nsenter --net=/var/run/netns/<name>` with its own
//! socket, data root, exec root and pid file, `--bridge none` and
//! `--iptables=false`: started in the machine's own network namespace, such
//! a daemon deletes the `docker0` bridge of the machine's engine. It uses the
//! `vfs` storage driver, so that nothing is left mounted when the test ends.
//! The engine is reached with `DOCKER_HOST=unix://<dir>/docker.sock`.
//!
//! [`PrivateEngine::kill`] kills the daemon with SIGKILL (as a crash or an
//! OOM kill would), [`PrivateEngine::restart`] brings it back on the same
//! state. `Drop` stops the daemon, kills anything still running from its
//! directories (its containerd, container shims), deletes the namespace and
//! the directory.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a private engine may take to answer after it is started.
const READY: Duration = Duration::from_secs(60);

/// Why a private engine cannot be started here, or `None` when it can.
fn missing_requirement() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("starting a private dockerd needs root".into());
    }
    for tool in ["ip", "nsenter", "dockerd", "openssl"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not on PATH"));
        }
    }
    None
}

/// True when a private engine can be started. Otherwise panics under
/// `CI=true` (the test must fail there, not skip), or prints `SKIPPED …`
/// and returns false.
pub fn require_private_engine() -> bool {
    match missing_requirement() {
        None => true,
        Some(reason) => super::skip_unless_ci(&format!(
            "a private Docker engine cannot be started: {reason}"
        )),
    }
}

/// A `dockerd` of the test's own, in its own network namespace.
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    netns: String,
    flags: Vec<String>,
    daemon: Option<Child>,
}

impl PrivateEngine {
    /// Create the namespace and start the daemon; waits until it answers.
    pub fn start() -> PrivateEngine {
        Self::start_with(&[])
    }

    /// [`PrivateEngine::start`] with extra daemon flags (for example
    /// `--live-restore`: containers outlive a crash of the daemon).
    pub fn start_with(flags: &[&str]) -> PrivateEngine {
        Self::start_inner(flags, false)
    }

    /// [`PrivateEngine::start`], also listening on [`TLS_HOST`] inside its
    /// namespace, with TLS that verifies clients (`--tlsverify`, as the
    /// docker documentation sets a remote engine up): a CA, a server
    /// certificate for 127.0.0.1 and a client certificate, made with
    /// `openssl` for this engine only. A command run in the namespace
    /// ([`PrivateEngine::in_netns`]) reaches it with `DOCKER_HOST` =
    /// [`TLS_HOST`], `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH` =
    /// [`PrivateEngine::client_certs`].
    pub fn start_tls() -> PrivateEngine {
        Self::start_inner(&[], true)
    }

    fn start_inner(flags: &[&str], tls: bool) -> PrivateEngine {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let netns = format!(
            "cldpd-t{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Short path: the daemon's and containerd's unix sockets live under
        // it, and a socket path is limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("cldpd-eng-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if tls {
            let certs = dir.path().join("tls");
            make_certificates(&certs);
            let path = |name: &str| certs.join(name).display().to_string();
            flags.extend([
                "--host".to_string(),
                TLS_HOST.to_string(),
                "--tlsverify".to_string(),
                "--tlscacert".to_string(),
                path("ca.pem"),
                "--tlscert".to_string(),
                path("server-cert.pem"),
                "--tlskey".to_string(),
                path("server-key.pem"),
            ]);
        }
        let status = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {netns} failed");
        let mut engine = PrivateEngine {
            dir,
            netns,
            flags,
            daemon: None,
        };
        let status = Command::new("ip")
            .args(["-n", &engine.netns, "link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(
            status.success(),
            "bringing lo up in {} failed",
            engine.netns
        );
        engine.launch();
        engine
    }

    /// `unix://…/docker.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// `DOCKER_CERT_PATH` for a client of [`PrivateEngine::start_tls`]'s
    /// engine: `ca.pem`, `cert.pem`, `key.pem`, as the docker CLI wants.
    pub fn client_certs(&self) -> PathBuf {
        self.path("tls/client")
    }

    /// `cmd` run inside this engine's network namespace (`nsenter --net`),
    /// with the same arguments, environment, directory and stdio set-up
    /// (stdin is closed, as `cldpd()` does).
    pub fn in_netns(&self, cmd: &Command) -> Command {
        let mut wrapped = Command::new("nsenter");
        wrapped
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// The cgroup parent of this engine's containers.
    fn cgroup_parent(&self) -> String {
        format!("/{}", self.netns)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .expect("dockerd log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver",
                "vfs",
            ])
            // Its containers' cgroups are named after the namespace, so
            // that Drop can find (and kill) whatever outlived the daemon.
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd under nsenter");
        self.daemon = Some(child);
        let deadline = Instant::now() + READY;
        loop {
            if self
                .docker(["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
            {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the private dockerd exited ({status}) before answering:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the private dockerd did not answer within {READY:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        // gRPC's reconnection chatter says nothing a reader needs.
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("module=grpc")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Run `docker <args>` against this engine (stdin closed).
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(super::docker::docker_bin())
            .env("DOCKER_HOST", self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Ids of this engine's containers (any state) matching a label filter.
    pub fn containers_with_label(&self, filter: &str) -> Vec<String> {
        let out = self.docker(["ps", "-aq", "--filter", &format!("label={filter}")]);
        assert!(
            out.status.success(),
            "docker ps on the private engine failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Kill the daemon with SIGKILL, as a crash would, and reap it. Its
    /// containerd goes with it (the daemon would kill it on a clean exit);
    /// the containers' shims stay, as they do when a daemon crashes.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // nsenter execs dockerd, so the child is the daemon itself.
            let _ = child.kill();
            let _ = child.wait();
        }
        let containerd: Vec<u32> = processes_under(self.dir.path())
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("containerd\0") || cmd.starts_with("containerd "))
            .map(|(pid, _)| pid)
            .collect();
        for pid in &containerd {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // Wait (bounded) until they are dead. Nobody may reap them (their
        // parent was the daemon), and a restarted daemon that finds the old
        // containerd's pid still in /proc waits for it instead of starting
        // its own: so also remove containerd's pid file.
        let deadline = Instant::now() + Duration::from_secs(10);
        while containerd.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.path("exec/containerd/containerd.pid"));
    }

    /// Start the daemon again on the same state; waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Stop the daemon with SIGTERM (it stops its containers), waiting at
    /// most `limit`, then SIGKILL.
    fn stop(&mut self, limit: Duration) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The sshd binary [`PrivateEngine::start_sshd`] runs (Debian's
/// `openssh-server`; `.ci/run` installs it).
pub const SSHD: &str = "/usr/sbin/sshd";

/// True when an `ssh://` engine can be set up here ([`SSHD`] and `ssh`,
/// `ssh-keygen` on PATH). Otherwise panics under `CI=true`, or prints
/// `SKIPPED …` and returns false.
pub fn require_sshd() -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    let missing = if !Path::new(SSHD).is_file() {
        Some(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ))
    } else {
        ["ssh", "ssh-keygen"]
            .into_iter()
            .find(|t| !on_path(t))
            .map(|t| format!("`{t}` is not on PATH"))
    };
    match missing {
        None => true,
        Some(reason) => {
            super::skip_unless_ci(&format!("an ssh:// engine cannot be set up: {reason}"))
        }
    }
}

/// An `sshd` in a [`PrivateEngine`]'s namespace on 127.0.0.1:22 whose
/// sessions talk to that engine (`SetEnv DOCKER_HOST=unix://…`), so that
/// `DOCKER_HOST=ssh://root@127.0.0.1`, from a command run in the
/// namespace, reaches the engine as a remote docker host is reached: the
/// client runs `ssh … docker system dial-stdio`. The client's `ssh` is a
/// wrapper first on PATH ([`SshGate::path`]) that adds `-F` with this
/// gate's key and known-hosts file: nothing of the user's `~/.ssh` is read
/// or written. Dropping it stops the sshd.
pub struct SshGate {
    dir: PathBuf,
    daemon: Child,
}

impl SshGate {
    /// `PATH` for a client: the wrapper's directory, then the inherited one.
    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A state directory for the client's ssh multiplexing sockets
    /// (`XDG_STATE_HOME`: bollard's ssh client puts them there).
    pub fn state_home(&self) -> PathBuf {
        self.dir.join("state")
    }
}

impl Drop for SshGate {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Multiplexing masters the clients left behind.
        for (pid, _) in processes_under(&self.dir) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl PrivateEngine {
    /// Start an [`SshGate`] to this engine; waits until it accepts a login.
    pub fn start_sshd(&self) -> SshGate {
        let dir = self.path("ssh");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        // sshd's privilege separation directory (the package makes it at
        // boot; without an init system it may be missing).
        let _ = std::fs::create_dir_all("/run/sshd");
        for key in ["host_key", "client_key"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "cldpd-test", "-f"])
                .arg(dir.join(key))
                .stdin(Stdio::null())
                .output()
                .expect("run ssh-keygen");
            assert!(
                out.status.success(),
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let public = |key: &str| {
            std::fs::read_to_string(dir.join(format!("{key}.pub")))
                .unwrap()
                .trim()
                .to_string()
        };
        std::fs::write(
            dir.join("authorized_keys"),
            format!("{}\n", public("client_key")),
        )
        .unwrap();
        std::fs::write(
            dir.join("known_hosts"),
            format!("127.0.0.1 {}\n", public("host_key")),
        )
        .unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port 22\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nAllowUsers root\nSetEnv DOCKER_HOST={}\n",
                self.host()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("ssh_config"),
            format!(
                "Host 127.0.0.1\n  User root\n  IdentityFile {d}/client_key\n  IdentitiesOnly yes\n\
                 \x20 UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n\
                 \x20 StrictHostKeyChecking yes\n  BatchMode yes\n"
            ),
        )
        .unwrap();
        let wrapper = dir.join("bin/ssh");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec /usr/bin/ssh -F {d}/ssh_config \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args([SSHD, "-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd under nsenter");
        let mut gate = SshGate { dir, daemon };
        let deadline = Instant::now() + READY;
        loop {
            let mut probe = Command::new("ssh");
            probe.env("PATH", gate.path()).args([
                "127.0.0.1",
                "docker",
                "version",
                "--format",
                "{{.Server.Version}}",
            ]);
            let out = self.in_netns(&probe).output().expect("run ssh");
            if out.status.success() && !out.stdout.is_empty() {
                return gate;
            }
            if let Some(status) = gate.daemon.try_wait().unwrap() {
                panic!(
                    "sshd exited ({status}):\n{}",
                    std::fs::read_to_string(gate.dir.join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no login through the private sshd within {READY:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(gate.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where [`PrivateEngine::start_tls`]'s engine listens, inside its
/// namespace (its loopback is its own: the port cannot clash).
pub const TLS_HOST: &str = "tcp://127.0.0.1:2376";

/// A CA, a server certificate (127.0.0.1, localhost) and key, and a client
/// certificate and key in `dir/client` under the names the docker CLI and
/// cldpd look for. P-256 keys: quick to make.
fn make_certificates(dir: &Path) {
    let client = dir.join("client");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    // A key and a certificate request (or, with `-x509`, a self-signed
    // certificate) for `subject`; a request signed by the CA with `ext`.
    let request = |first: &[&str], subject: &str, key: &str, out: &str| -> Vec<String> {
        let mut args: Vec<String> = first.iter().map(|a| a.to_string()).collect();
        args.extend(
            [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ]
            .map(String::from),
        );
        args.extend(
            ["-days", "2", "-subj", subject, "-keyout", key, "-out", out].map(String::from),
        );
        args
    };
    let sign = |csr: &str, ext: &str, out: &str| -> Vec<String> {
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    let steps = [
        request(
            &["req", "-x509"],
            "/CN=cldpd-test-ca",
            "ca-key.pem",
            "ca.pem",
        ),
        request(&["req"], "/CN=127.0.0.1", "server-key.pem", "server.csr"),
        sign("server.csr", "server.ext", "server-cert.pem"),
        request(
            &["req"],
            "/CN=cldpd-test-client",
            "client/key.pem",
            "client.csr",
        ),
        sign("client.csr", "client.ext", "client/cert.pem"),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::copy(dir.join("ca.pem"), client.join("ca.pem")).unwrap();
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Every process of the machine whose `/proc/<pid>/<file>` satisfies
/// `keep`, with that file's text.
fn processes_where(file: &str, keep: impl Fn(&str) -> bool) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bytes = std::fs::read(entry.path().join(file)).ok()?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            keep(&text).then_some((pid, text))
        })
        .collect()
}

/// Pids and command lines (arguments joined by NUL) of processes whose
/// command line mentions `dir`: the private engine's containerd and
/// container shims.
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    processes_where("cmdline", |cmdline| cmdline.contains(&needle))
}

/// Pids of processes whose cgroup path lies under `parent` (`/<name>`).
fn processes_in_cgroup(parent: &str) -> Vec<u32> {
    let prefix = format!("{parent}/");
    // `<id>:<controllers>:<path>` per line (one line on cgroup v2).
    processes_where("cgroup", |cgroups| {
        cgroups
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| path.starts_with(&prefix))
    })
    .into_iter()
    .map(|(pid, _)| pid)
    .collect()
}

/// Remove the (now empty) cgroup directories named `parent` under every
/// mounted hierarchy, children first. Errors are ignored: a directory that
/// still holds a process stays.
fn remove_cgroups(parent: &str) {
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let name = parent.trim_start_matches('/');
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(name);
        if dir.is_dir() {
            remove(&dir);
        }
    }
    let top = Path::new("/sys/fs/cgroup").join(name);
    if top.is_dir() {
        remove(&top);
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Nothing here may panic: Drop also runs while a failed test
        // unwinds.
        if self.daemon.is_some() {
            // Remove what the test left, so that the daemon's shutdown has
            // nothing to wait for.
            let out = self.docker(["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm".to_string(), "-f".to_string()];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        self.stop(Duration::from_secs(20));
        // Its containerd and shims, then any container process that
        // outlived them (after a failed test, a container's init survives
        // its killed shim and runs on, unowned).
        let mut pids: Vec<u32> = processes_under(self.dir.path())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        pids.extend(processes_in_cgroup(&self.cgroup_parent()));
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // The daemon bind-mounts its data root and network namespaces under
        // the directory; unmount them (deepest first) so it can be removed.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        remove_cgroups(&self.cgroup_parent());
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        // The TempDir then removes the directory (vfs: plain directories).
    }
}
