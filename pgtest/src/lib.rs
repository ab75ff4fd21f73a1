//! A throwaway PostgreSQL cluster for tests, so the console's store suite and the end-to-end
//! tests run against a real server without one being installed as a service: Debian's `initdb`
//! and `postgres` (from /usr/lib/postgresql/*/bin) on a private port on loopback and a private
//! unix socket directory, in a temporary directory that goes with the cluster.
//!
//! `initdb` and `postgres` refuse to run as root, and the tests run as root in CI: then both run
//! as the `postgres` system user (which Debian's package creates), through `setpriv`, and the
//! cluster's directory belongs to that user. `postgres` also gets a parent-death signal, so a
//! test binary that exits (or is killed) takes its cluster with it; a small shell left behind
//! removes the cluster's directory then (and the next cluster started sweeps any it missed).
//!
//! [`Cluster::shared`] is the one cluster of a test binary; [`Cluster::database`] makes a fresh
//! database in it for each test. The superuser signs in over TCP with a password (SCRAM), as a
//! console configured with `--database-password-file` does; over the socket it is trusted.
//! A missing PostgreSQL is an error that says how to install it: never a silent skip.
//!
//! [`Cluster::start_tls`] starts one with `ssl = on` and the certificate it is given, whose
//! pg_hba.conf lets TCP connections in only over TLS (`hostssl`), as an operator's would.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The superuser the cluster is made with.
pub const SUPERUSER: &str = "postgres";

/// A running cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    pid: u32,
    waiter: Option<JoinHandle<()>>,
}

/// The certificate (chain) and key, PEM, of a cluster that speaks TLS.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A database made for one test.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    /// `postgres://postgres@127.0.0.1:PORT/NAME`: no password in it (see [`Cluster::password`]).
    pub url: String,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// The test binary's cluster, started on first use. Panics, saying why and what to
    /// install, when it cannot start.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a new cluster.
    pub fn start() -> Result<Cluster, String> {
        Cluster::start_with(None)
    }

    /// Starts a new cluster with `ssl = on` and `tls`'s certificate, taking TCP connections
    /// over TLS alone (pg_hba.conf has `hostssl` lines only; the socket stays trusted).
    pub fn start_tls(tls: &ServerTls) -> Result<Cluster, String> {
        Cluster::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls>) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let as_root = rustix::process::geteuid().is_root();
        if as_root && !user_exists(SUPERUSER) {
            return Err(format!(
                "PostgreSQL refuses to run as root and there is no `{SUPERUSER}` system user to run it as: \
                 install Debian's postgresql package (`apt-get install postgresql`; scripts/test.sh does)"
            ));
        }
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = base().join(format!("tasknode-pg-{}-{n}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let password = random_password()?;
        let pwfile = dir.join("pwfile");
        fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&pwfile)
            .and_then(|mut f| writeln!(f, "{password}"))
            .map_err(|e| format!("writing {}: {e}", pwfile.display()))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.join("sock"))
            .map_err(|e| format!("creating the socket directory: {e}"))?;
        if let Some(tls) = tls {
            for (name, pem) in [("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem)] {
                fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(0o600)
                    .open(dir.join(name))
                    .and_then(|mut f| f.write_all(pem.as_bytes()))
                    .map_err(|e| format!("writing {name}: {e}"))?;
            }
        }
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            password,
            pid: 0,
            waiter: None,
        };
        if as_root {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{SUPERUSER}:{SUPERUSER}"))
                .arg(&cluster.dir))?;
        }
        let data = cluster.dir.join("data");
        run(cluster
            .as_owner("initdb")
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C"])
            .arg("--no-sync")
            .arg(format!("--pwfile={}", pwfile.display())))?;
        let _ = fs::remove_file(&pwfile);
        if tls.is_some() {
            // Rewritten in place: the file stays the cluster owner's.
            fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostssl all all ::1/128 scram-sha-256\n",
            )
            .map_err(|e| format!("writing pg_hba.conf: {e}"))?;
        }
        cluster.port = free_port()?;
        let log = fs::File::create(cluster.dir.join("postgres.log"))
            .map_err(|e| format!("creating the server log: {e}"))?;
        let mut server = cluster.as_owner("postgres");
        server
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(cluster.port.to_string())
            .arg("-k")
            .arg(cluster.dir.join("sock"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            // A test cluster needs no durability, and the store tests open many pools.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
            // Dynamic shared memory as files in the data directory, which goes with the
            // cluster: a server killed by the parent-death signal cleans nothing up, and the
            // default left a segment of 1 to 2 MB in /dev/shm (memory) for each cluster.
            .args(["-c", "dynamic_shared_memory_type=mmap"]);
        if tls.is_some() {
            server
                .args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    cluster.dir.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    cluster.dir.join("server.key").display()
                ));
        }
        server
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // The thread that starts the server waits for it: the parent-death signal fires when
        // that thread ends, which is when the server exits or the test binary does.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || match server.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("starting postgres: {e}")));
            }
        });
        cluster.pid = rx
            .recv()
            .map_err(|_| "the thread starting postgres died".to_owned())??;
        reap_when_gone(&cluster.dir);
        cluster.waiter = Some(waiter);
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// The superuser's password (for a password file or TASKNODE_DATABASE_PASSWORD).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Writes the password to `dir/db-password`, readable by its owner alone, as
    /// `--database-password-file` wants it; returns the file's path.
    pub fn password_file(&self, dir: &Path) -> Result<PathBuf, String> {
        let path = dir.join("db-password");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}", self.password))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A fresh, empty database.
    pub fn database(&self) -> Database {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        Database {
            url: format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port),
            name,
        }
    }

    /// Runs one SQL command in `database` as the superuser over the socket; returns what
    /// `psql` printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .arg("--no-psqlrc")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.join("sock"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database, "-c", sql])
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A command running `program` from the cluster's bin directory as the cluster's owner.
    fn as_owner(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        if rustix::process::geteuid().is_root() {
            c.args(["--reuid", SUPERUSER, "--regid", SUPERUSER, "--init-groups"]);
        }
        c.args(["--pdeathsig", "KILL", "--"])
            .arg(self.bin.join(program))
            .current_dir(&self.dir);
        c
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if self.waiter.as_ref().is_some_and(JoinHandle::is_finished)
                || Instant::now() > deadline
            {
                let log = fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("postgres did not start; its log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, nothing of a test cluster is worth a checkpoint.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.pid.to_string()])
            .status();
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The bin directory of the newest PostgreSQL that Debian's packages installed.
fn bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let newest = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): the store tests start a \
         throwaway cluster from Debian's binaries; install them with `apt-get install postgresql` \
         (scripts/test.sh does)"
            .to_owned()
    })
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("running {c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn random_password() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where clusters are made: /tmp when they run as the `postgres` user, who may not reach a
/// TMPDIR of root's; else the temporary directory.
fn base() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// Leaves a shell behind that removes `dir` once this test binary has exited: the binary's
/// shared cluster is never dropped (statics are not), and its directory holds some 40 MB.
fn reap_when_gone(dir: &Path) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; sleep 1; rm -rf -- "$2""#)
        .arg("sh")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Removes the directories of clusters whose test binary is gone.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(base()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("tasknode-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_serves_fresh_databases_and_goes_on_drop() {
        let cluster = Cluster::start().unwrap_or_else(|e| panic!("{e}"));
        let a = cluster.database();
        let b = cluster.database();
        assert_ne!(a.name, b.name);
        cluster.psql(&a.name, "CREATE TABLE x (y int)").unwrap();
        assert_eq!(
            cluster
                .psql(
                    &b.name,
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'x'"
                )
                .unwrap(),
            "0"
        );
        let dir = cluster.dir.clone();
        let pid = cluster.pid;
        drop(cluster);
        assert!(!dir.exists(), "{} is left", dir.display());
        assert!(
            !Path::new("/proc").join(pid.to_string()).exists(),
            "postgres {pid} still runs"
        );
    }

    #[test]
    fn a_killed_cluster_leaves_its_shared_memory_in_its_directory() {
        let cluster = Cluster::start().unwrap_or_else(|e| panic!("{e}"));
        let segments = cluster.dir.join("data/pg_dynshmem");
        let held = fs::read_dir(&segments)
            .unwrap_or_else(|e| panic!("{}: {e}", segments.display()))
            .count();
        assert!(held > 0, "no segment in {}", segments.display());
        // As the parent-death signal does: no shutdown, nothing cleaned up by the server.
        Command::new("kill")
            .args(["-KILL", &cluster.pid.to_string()])
            .status()
            .unwrap();
        let dir = cluster.dir.clone();
        drop(cluster);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
