//! Test support for the end-to-end tests: starts the real `tasknode-console` and `tasknode`
//! binaries on loopback, each in its own throwaway directory, and waits on what they report.
//! The binaries are the ones `cargo build --workspace --bins` puts in target/debug (scripts/test.sh runs it first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod aarch64;
pub mod browser;
pub mod cgroup;
pub mod container;
pub mod haproxy;
pub mod old_kernel;
pub mod postgres;
pub mod releases;
pub mod sandbox;
pub mod web;

/// The path of a program on PATH, or a panic saying to install it.
pub fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !path.is_empty(),
        "{program} is not installed: scripts/test.sh installs what the tests need"
    );
    PathBuf::from(path)
}

/// The static (musl) agent that install.sh downloads in sandbox tests: TASKNODE_STATIC_AGENT,
/// else the debug musl build (scripts/test.sh builds it).
pub fn static_agent() -> PathBuf {
    let path = std::env::var_os("TASKNODE_STATIC_AGENT").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
            target.join("x86_64-unknown-linux-musl/debug/tasknode")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --target x86_64-unknown-linux-musl -p tasknode` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Path of a workspace binary built beside the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, sig);
}

/// This host's name as the agent sees it.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .to_ascii_lowercase()
}

/// A running console with its own data directory.
pub struct Console {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

/// Serve flags of consoles sharing a database in the tests: heartbeats a second apart, flushed
/// every second, degraded after 6 s and stopped after 20 s without one.
pub const SHARED_LIVENESS: [&str; 8] = [
    "--heartbeat-interval",
    "1s",
    "--persist-interval",
    "1s",
    "--degraded-after",
    "6s",
    "--stopped-after",
    "20s",
];

/// Runs an admin command of `tasknode-console` against the console (or balancer) at `url`,
/// with the admin token of the data directory `data`.
pub fn admin_cli(url: &str, data: &Path, args: &[&str]) -> Output {
    Command::new(bin("tasknode-console"))
        .args(args)
        .env("TASKNODE_DATA", data)
        .env("TASKNODE_CONSOLE", url)
        .env_remove("TASKNODE_TOKEN_FILE")
        .output()
        .unwrap()
}

/// [`admin_cli`] that must succeed; returns its standard output.
pub fn admin_cli_ok(url: &str, data: &Path, args: &[&str]) -> String {
    let out = admin_cli(url, data, args);
    assert!(
        out.status.success(),
        "tasknode-console {args:?} at {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Submits `script` to `group` with `task submit` at `url` (through a file, as an operator
/// would); returns the task's id.
pub fn submit_script(url: &str, data: &Path, group: &str, script: &str) -> i64 {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let out = admin_cli_ok(
        url,
        data,
        &[
            "task",
            "submit",
            "--group",
            group,
            "--script",
            file.path().to_str().unwrap(),
            "--json",
        ],
    );
    let submitted: Value = serde_json::from_str(&out).unwrap();
    submitted["id"].as_i64().unwrap()
}

impl Console {
    /// Starts a console on a free loopback port with `extra` serve flags.
    pub fn start(extra: &[&str]) -> Console {
        Console::start_at("127.0.0.1:0", extra)
    }

    /// Starts a console listening at `listen` (a port chosen beforehand, for flags that name
    /// the console's own URL) with `extra` serve flags.
    pub fn start_at(listen: &str, extra: &[&str]) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let mut console = Console {
            log: dir.path().join("console.log"),
            dir,
            url: String::new(),
            port: 0,
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        console.spawn(listen);
        console
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(bin("tasknode-console"))
            .arg("serve")
            .args(["--listen", listen])
            .arg("--data")
            .arg(self.data())
            .args(&self.args)
            .env_remove("TASKNODE_CONSOLE")
            .env_remove("TASKNODE_TOKEN_FILE")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| {
                panic!(
                    "console did not say where it listens: {line:?}; log: {}",
                    self.log_text()
                )
            })
            .to_owned();
        self.port = url.rsplit(':').next().unwrap().parse().unwrap();
        self.url = url;
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the console with SIGTERM (a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::Term);
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "console exited with {status}: {}",
                self.log_text()
            );
        }
    }

    /// Kills the console outright (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the console again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the console first");
        let listen = format!("127.0.0.1:{}", self.port);
        self.spawn(&listen);
    }

    /// Starts another console on this one's data directory (this one stopped), on a new
    /// port and with `extra` serve flags in place of its own: a second console of the same
    /// store, taking this handle's place.
    pub fn restart_as_another(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "stop or kill the console first");
        self.args = extra.iter().map(|s| (*s).to_owned()).collect();
        self.spawn("127.0.0.1:0");
    }

    /// Starts the console again on the same data directory at `listen` (another address
    /// than before: a second console taking over its state); `url` and `port` follow.
    pub fn restart_at(&mut self, listen: &str) {
        assert!(self.child.is_none(), "stop or kill the console first");
        self.spawn(listen);
    }

    /// The console's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the console runs").id()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Runs an admin command against this console.
    pub fn cli(&self, args: &[&str]) -> Output {
        admin_cli(&self.url, &self.data(), args)
    }

    /// Runs an admin command that must succeed; returns its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        admin_cli_ok(&self.url, &self.data(), args)
    }

    /// Creates a user and returns its password.
    pub fn create_user(&self, name: &str) -> String {
        let v: Value =
            serde_json::from_str(&self.cli_ok(&["user", "create", name, "--json"])).unwrap();
        assert_eq!(v["user_name"], name);
        v["password"].as_str().unwrap().to_owned()
    }

    pub fn servers(&self) -> Vec<Value> {
        serde_json::from_str(&self.cli_ok(&["server", "list", "--json"])).unwrap()
    }

    pub fn server(&self, name: &str) -> Value {
        self.servers()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no server {name} listed"))
    }

    /// Waits until server `name` is in `status`; returns its listing.
    pub fn wait_status(&self, name: &str, status: &str, timeout: Duration) -> Value {
        self.wait_server(name, &format!("to be {status}"), timeout, |s| {
            s["status"] == status
        })
    }

    /// Waits until the listing of server `name` satisfies `done`; returns it. On a timeout the
    /// panic shows the last listing and the console's log.
    pub fn wait_server(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_seen(
            &format!("server {name} {what}"),
            timeout,
            || self.server(name),
            done,
        )
    }

    /// Looks with `look` until what it sees satisfies `done`; returns that. On a timeout the
    /// panic shows what was last seen and the console's log.
    fn wait_seen(
        &self,
        what: &str,
        timeout: Duration,
        look: impl Fn() -> Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, what, || {
                last = look();
                done(&last).then(|| last.clone())
            })
        }));
        found.unwrap_or_else(|_| {
            panic!(
                "{what}: last seen {last:#}\nconsole log:\n{}",
                self.log_text()
            )
        })
    }

    /// Task `id` as `task show --json` gives it.
    pub fn task(&self, id: i64) -> Value {
        serde_json::from_str(&self.cli_ok(&["task", "show", &id.to_string(), "--json"])).unwrap()
    }

    /// Waits until task `id` is in one of `states`; returns it. On a timeout the panic shows
    /// the task as last seen and the console's log.
    pub fn wait_task(&self, id: i64, states: &[&str], timeout: Duration) -> Value {
        self.wait_seen(
            &format!("task {id} to be one of {states:?}"),
            timeout,
            || self.task(id),
            |t| states.iter().any(|s| t["state"] == *s),
        )
    }

    /// Submits `script` to `group` with `task submit` (through a file, as an operator would);
    /// returns the task's id.
    pub fn submit_script(&self, group: &str, script: &str) -> i64 {
        submit_script(&self.url, &self.data(), group, script)
    }

    /// The console's CA certificate, when it serves with `--tls`.
    pub fn ca(&self) -> PathBuf {
        self.data().join("tls/ca.pem")
    }

    /// A blocking HTTP client that trusts this console's CA (if it has one) and nothing else.
    pub fn http(&self) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder().tls_built_in_root_certs(false);
        if let Ok(pem) = std::fs::read(self.ca()) {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }

    /// The API URL of `path`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// `GET /metrics` with the admin token, as Prometheus scrapes it.
    pub fn metrics(&self) -> String {
        let r = self
            .http()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(self.token())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent with its own config and log directories, optionally with a fake DMI UUID.
pub struct Agent {
    pub dir: tempfile::TempDir,
    root: Option<PathBuf>,
    child: Option<Child>,
    /// The static agent under the Linux 2.6.32 filters, instead of the debug build.
    old_kernel: Option<std::sync::Arc<old_kernel::Linux2632>>,
    /// A binary of this agent's own (which it may replace), instead of the debug build.
    exe: Option<PathBuf>,
    /// A user-mode emulator every command of the agent runs under (qemu-aarch64-static).
    emulator: Option<PathBuf>,
}

impl Agent {
    /// An agent that identifies by this host's name.
    pub fn new() -> Agent {
        Agent {
            dir: tempfile::tempdir().unwrap(),
            root: None,
            child: None,
            old_kernel: None,
            exe: None,
            emulator: None,
        }
    }

    /// Runs a stripped copy of `binary` at `tasknode/bin/tasknode` in this agent's directory,
    /// as install.sh lays it out: an agent that can update itself.
    pub fn with_own_binary(mut self, binary: &Path) -> Agent {
        let bin = self.dir.path().join("tasknode/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("tasknode");
        install_binary(binary, &exe);
        self.exe = Some(exe);
        self
    }

    /// Runs every command of this agent as `emulator AGENT ARGS` (an aarch64 agent under
    /// qemu-user where binfmt_misc does not run it).
    pub fn under_emulator(mut self, emulator: &Path) -> Agent {
        self.emulator = Some(emulator.to_owned());
        self
    }

    /// The binary this agent runs.
    pub fn exe(&self) -> PathBuf {
        self.exe.clone().unwrap_or_else(|| bin("tasknode"))
    }

    /// An agent that is the static (musl) build, every command of it run as on Linux 2.6.32
    /// (see [`old_kernel`]).
    pub fn static_on_linux_2632() -> Agent {
        let mut agent = Agent::new();
        agent.old_kernel = Some(old_kernel::Linux2632::new());
        agent
    }

    /// An agent whose host reports `uuid` as its DMI product UUID (through TASKNODE_ROOT).
    pub fn with_uuid(uuid: &str) -> Agent {
        let mut agent = Agent::new();
        let root = agent.dir.path().join("root");
        let dmi = root.join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(dmi.join("product_uuid"), format!("{uuid}\n")).unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::copy("/proc/meminfo", root.join("proc/meminfo")).unwrap();
        agent.root = Some(root);
        agent
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("tasknode/conf/tasknode.conf")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("tasknode/logs")
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.old_kernel {
            Some(kernel) => {
                let mut cmd = Command::new(static_agent());
                kernel.apply_on_exec(&mut cmd);
                cmd
            }
            None => match &self.emulator {
                Some(emulator) => {
                    let mut cmd = Command::new(emulator);
                    cmd.arg(self.exe());
                    cmd
                }
                None => Command::new(self.exe()),
            },
        };
        cmd.env("TASKNODE_CONFIG", self.config())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("INVOCATION_ID");
        match &self.root {
            Some(root) => cmd.env("TASKNODE_ROOT", root),
            None => cmd.env_remove("TASKNODE_ROOT"),
        };
        cmd
    }

    /// Runs `tasknode enroll`, the password on standard input.
    pub fn enroll(&self, console: &str, user: &str, password: &str, enable_uuid: bool) -> Output {
        self.enroll_with(console, user, password, enable_uuid, &[])
    }

    /// `enroll` with `extra` flags.
    pub fn enroll_with(
        &self,
        console: &str,
        user: &str,
        password: &str,
        enable_uuid: bool,
        extra: &[&str],
    ) -> Output {
        let mut child = self
            .command()
            .args([
                "enroll",
                "--console",
                console,
                "--user-name",
                user,
                "--password-stdin",
            ])
            .args(["--enable-uuid", if enable_uuid { "true" } else { "false" }])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // An agent that stops before reading (a bad flag, say) closes the pipe: not an error
        // of the test's.
        let _ = writeln!(child.stdin.take().unwrap(), "{password}");
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            self.private_log_port();
        }
        out
    }

    /// Tests run many agents at once: each classic agent's log service listens on a port of
    /// its own on loopback instead of 0.0.0.0:8000.
    fn private_log_port(&self) {
        if self.config().exists() {
            self.set_config("logs", "listen", "127.0.0.1:0".into());
        }
    }

    /// Sets `key` of the config's `[table]` (creating the table), as an operator editing the
    /// file would; the file keeps its mode.
    pub fn set_config(&self, table: &str, key: &str, value: toml::Value) {
        set_config_value(&self.config(), table, key, value);
    }

    /// Lets this agent run tasks when the tests run as root: tasks never run as root, so they
    /// run as `nobody`, who must reach their working directories under this agent's tempdir.
    /// Call after enrolling.
    pub fn allow_tasks(&self) {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            return;
        }
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        self.set_config("tasks", "user", "nobody".into());
    }

    pub fn enroll_ok(&self, console: &str, user: &str, password: &str, enable_uuid: bool) {
        let out = self.enroll(console, user, password, enable_uuid);
        assert!(
            out.status.success(),
            "enroll failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `tasknode run` in the background.
    pub fn run(&mut self) {
        self.run_with_env(&[]);
    }

    pub fn run_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "agent already running");
        let mut cmd = self.command();
        cmd.arg("run")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().unwrap());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits; returns whether the agent exited successfully.
    pub fn stop(&mut self) -> bool {
        let mut child = self.child.take().unwrap();
        signal(&child, rustix::process::Signal::Term);
        child.wait().unwrap().success()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether `tasknode run` is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Runs `tasknode status --json`; returns its report and whether it exited 0.
    pub fn status(&self) -> (Value, bool) {
        let out = self.command().args(["status", "--json"]).output().unwrap();
        (
            serde_json::from_slice(&out.stdout).unwrap(),
            out.status.success(),
        )
    }

    pub fn heartbeat_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.logs().join("heartbeat.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.logs().join("agent.log")).unwrap_or_default()
    }

    /// A string from the agent config by dotted path, e.g. `node.id`.
    pub fn config_value(&self, path: &str) -> String {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let mut value: toml::Value = toml::from_str(&text).unwrap();
        for key in path.split('.') {
            value = value
                .get(key)
                .unwrap_or_else(|| panic!("no {path} in config:\n{text}"))
                .clone();
        }
        value
            .as_str()
            .unwrap_or_else(|| panic!("{path} is not a string"))
            .to_owned()
    }
}

impl Default for Agent {
    fn default() -> Self {
        Agent::new()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies `from` to `to` without its debug information (a debug agent is 100 MB, stripped
/// 20 MB), executable; an aarch64 binary with binutils for aarch64.
pub fn install_binary(from: &Path, to: &Path) {
    let head = std::fs::read(from).unwrap();
    let strip = match tasknode_render::arch::Arch::of_elf(&head) {
        Some(tasknode_render::arch::Arch::Aarch64) => "aarch64-linux-gnu-strip",
        _ => "strip",
    };
    let out = Command::new(which(strip))
        .arg("-o")
        .arg(to)
        .arg(from)
        .output()
        .unwrap();
    assert!(out.status.success(), "strip failed: {}", stderr(&out));
}

/// Runs `tasknode-dist ARGS --json` and returns what it printed; panics if it fails. The
/// caller's SOURCE_DATE_EPOCH is not passed on: a build's time is what ARGS say.
pub fn dist_json(args: &[&str]) -> Value {
    let out = Command::new(bin("tasknode-dist"))
        .args(args)
        .arg("--json")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tasknode-dist {args:?}: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Builds `agent` as release `version` into `out` with `tasknode-dist build`: the packages of
/// `targets` (`none`, or a list such as `deb` or `el7`), signed with the release keys in
/// `keys`, at a fixed build time. Returns the build's report.
pub fn build_release(out: &Path, keys: &Path, version: &str, agent: &Path, targets: &str) -> Value {
    build_release_at(out, keys, version, agent, targets, "1700000000")
}

/// [`build_release`] with the build time `epoch` (seconds, as `--source-date-epoch`).
pub fn build_release_at(
    out: &Path,
    keys: &Path,
    version: &str,
    agent: &Path,
    targets: &str,
    epoch: &str,
) -> Value {
    dist_json(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--version",
        version,
        "--targets",
        targets,
        "--keys",
        keys.to_str().unwrap(),
        "--agent",
        agent.to_str().unwrap(),
        "--source-date-epoch",
        epoch,
    ])
}

/// A loopback port free at the time of the call, where nothing listens once it returns.
/// The directory of a fixture the tests of one binary share, built once and kept in a static:
/// target/<profile>/fixtures/<test binary>-<name>, made afresh when the fixture is built. A
/// static is never dropped, so a `TempDir` in one would leave a directory in /tmp after every
/// run; this leaves one copy, which the next run replaces.
pub fn fixture_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>: the name without the hash, so a rebuilt binary
    // replaces its last run's copy too.
    let stem = exe
        .file_stem()
        .map_or_else(|| "tests".to_owned(), |s| s.to_string_lossy().into_owned());
    let binary = stem
        .rsplit_once('-')
        .map_or(stem.as_str(), |(name, _)| name);
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let dir = profile.join("fixtures").join(format!("{binary}-{name}"));
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("removing the last run's {}: {e}", dir.display())
        }
        _ => {}
    }
    std::fs::create_dir_all(&dir).expect("creating the fixture directory");
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory for `serve --agent-dir`: the static agent as `tasknode-x86_64`, stripped (debug
/// info is most of a debug build; install.sh downloads it faster without).
pub fn agent_dir() -> tempfile::TempDir {
    let agents = tempfile::tempdir().unwrap();
    install_binary(&static_agent(), &agents.path().join("tasknode-x86_64"));
    agents
}

/// A console (heartbeats a second apart) serving the static agent from an [`agent_dir`] of its
/// own (returned with it), started with `extra` flags as well, with a user `etl`.
pub fn console_serving_agent(extra: &[&str]) -> (Console, tempfile::TempDir) {
    let agents = agent_dir();
    let mut flags = vec![
        "--heartbeat-interval",
        "1s",
        "--agent-dir",
        agents.path().to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    let console = Console::start(&flags);
    console.create_user("etl");
    (console, agents)
}

/// Sets `[table] key = value` in the agent config at `path`, as an operator editing the file
/// would; the file keeps its owner and mode.
pub fn set_config_value(path: &Path, table: &str, key: &str, value: toml::Value) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    doc.entry(table)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap()
        .insert(key.to_owned(), value);
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
}

/// The agent built as version 0.2.0 (TASKNODE_UPDATE_AGENT, else target/update-test/; built by
/// scripts/test.sh): the release self-update tests move agents to.
pub fn update_agent() -> PathBuf {
    let path = std::env::var_os("TASKNODE_UPDATE_AGENT").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
            target.join("update-test/tasknode-0.2.0")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `TASKNODE_VERSION=0.2.0 cargo build -p tasknode` and strip it there (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A console with `flags`, a user `etl`, a classic group `etl` with this host in it, and an
/// agent enrolled there (not yet running).
pub fn enrolled_classic(flags: &[&str]) -> (Console, Agent) {
    enrolled_classic_with(flags, Agent::new())
}

/// A console serving the releases in `dist` (heartbeats a second apart), a user `etl`, a
/// classic group `etl` with this host in it, and an agent enrolled there that runs its own copy
/// of the static agent, so it can update itself (not yet running).
pub fn enrolled_own_binary(dist: &Path) -> (Console, Agent) {
    enrolled_classic_with(
        &[
            "--dist",
            dist.to_str().unwrap(),
            "--heartbeat-interval",
            "1s",
        ],
        Agent::new().with_own_binary(&static_agent()),
    )
}

fn enrolled_classic_with(flags: &[&str], agent: Agent) -> (Console, Agent) {
    let console = Console::start(flags);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    agent.enroll_ok(&console.url, "etl", &password, false);
    (console, agent)
}

/// A host root (for TASKNODE_ROOT) with no systemd and no init script, whose passwd maps the
/// agent user to the user running the tests, so serverctl takes the pid-file path and, as root,
/// switches to an existing uid.
pub fn root_without_service_manager(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::copy("/proc/meminfo", root.join("proc/meminfo")).unwrap();
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    std::fs::write(
        root.join("etc/passwd"),
        format!("admin:x:{uid}:{gid}::/home/admin:/bin/sh\n"),
    )
    .unwrap();
    root
}

/// Runs `wrapper ACTION` (a [`serverctl_wrapper`]) with the host root `root`.
pub fn run_serverctl(wrapper: &Path, root: &Path, action: &str) -> Output {
    Command::new(wrapper)
        .arg(action)
        .env("TASKNODE_ROOT", root)
        .env_remove("TASKNODE_CONFIG")
        .output()
        .unwrap()
}

/// bin/serverctl as install.sh lays it out in `dir`, pointing at `agent` and `config`.
pub fn serverctl_wrapper(dir: &Path, agent: &Path, config: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut layout = tasknode_render::Layout::script();
    layout.bin = agent.display().to_string();
    layout.config = config.display().to_string();
    let wrapper = dir.join("serverctl");
    let templates = tasknode_render::Templates::embedded().unwrap();
    std::fs::write(
        &wrapper,
        tasknode_render::render::serverctl(&templates, &layout).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Standard error of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a path's permission bits are exactly `mode`.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The value of the sample of metric `name` (Prometheus text format) whose labels include every
/// pair of `labels`; the first such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
