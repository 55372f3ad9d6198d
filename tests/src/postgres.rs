//! A throwaway PostgreSQL cluster: Debian's server binaries, `initdb` in a temp dir,
//! `postgres` in the foreground on a free loopback port, killed when dropped. As root
//! (CI), the server runs as the `postgres` user the package creates (PostgreSQL
//! refuses to run as root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{eventually, free_port};

/// The database role the cluster is made with (trust authentication on loopback).
pub const ROLE: &str = "keyward";

#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    proc: Option<Proc>,
}

impl Postgres {
    /// `initdb`, then starts the server and waits until it takes queries.
    pub async fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = if is_root() {
            let ids = user_ids("postgres").expect(
                "running as root, and there is no `postgres` user to run PostgreSQL as: \
                 install Debian's postgresql package (.ci/bootstrap does)",
            );
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1)).expect("chown");
            Some(ids)
        } else {
            None
        };
        let mut pg = Self {
            port: free_port(),
            dir,
            bin,
            owner,
            proc: None,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-U", ROLE, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.restart().await;
        pg
    }

    /// Starts the server (again, on the same port and data) and waits for it.
    pub async fn restart(&mut self) {
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("postgres.log")).expect("postgres log"),
            );
        self.proc = Some(Proc::spawn("postgres", &mut cmd));
        eventually(
            Duration::from_secs(30),
            "PostgreSQL takes queries",
            || async { self.psql("postgres", "SELECT 1").ok() },
        )
        .await;
    }

    /// SIGKILL (the server's backends notice and exit).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// `postgres://keyward@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(name)
    }

    /// Runs one statement with `psql`; its output, or its error.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = self
            .psql_command(database, sql)
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The `psql` command that runs `sql` (one transaction) in `database`.
    pub fn psql_command(&self, database: &str, sql: &str) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", ROLE, "-d", database])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql);
        cmd
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd.current_dir(self.dir.path());
        cmd
    }
}

/// Debian keeps the server binaries out of PATH, in /usr/lib/postgresql/<major>/bin:
/// the newest there, else `initdb` on PATH.
fn server_bin_dir() -> PathBuf {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .find(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
        })
        .expect(
            "PostgreSQL's server is not installed: apt-get install postgresql (.ci/bootstrap does)",
        )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// (uid, gid) of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}
