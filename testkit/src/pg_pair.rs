//! [`PgPair`]: a PostgreSQL primary and its streaming replica of one test's own, made with this
//! machine's PostgreSQL binaries on spare ports (initdb, `pg_basebackup -R`), for a switchover
//! test that must not touch the shared cluster: [`PgPair::switch_over`] stops the primary and
//! promotes the replica, as a managed database's failover does. The replica is synchronous
//! (`synchronous_standby_names = '*'`), so a commit the primary acknowledged is on it: what a
//! managed database promises when it says "no data loss".
//!
//! Run as root, every PostgreSQL command runs as the `postgres` user. Stopped and deleted when
//! dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PgPair {
    pub primary: SocketAddr,
    pub replica: SocketAddr,
    dir: PathBuf,
    bin: PathBuf,
}

impl PgPair {
    /// Makes and starts both, and waits until the replica streams synchronously.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("starting a PostgreSQL pair")
    }

    fn start_blocking() -> Self {
        let bin = pg_bin();
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let dir = std::env::temp_dir().join(format!("mailroom-pg-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pair directory");
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let (p1, p2) = (crate::free_port(), crate::free_port());
        let pair = Self {
            primary: ([127, 0, 0, 1], p1).into(),
            replica: ([127, 0, 0, 1], p2).into(),
            dir,
            bin,
        };
        let primary = pair.dir.join("primary");
        pair.run(
            "initdb",
            &[
                "-D",
                path(&primary),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(primary.join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "listen_addresses = '127.0.0.1'\nport = {p1}\nunix_socket_directories = '{}'\n\
                     wal_level = replica\nmax_wal_senders = 4\nsynchronous_standby_names = '*'\n\
                     fsync = off\nshared_buffers = 32MB\nmax_connections = 60",
                    pair.dir.display()
                )
            })
            .expect("primary's settings");
        pair.pg_ctl(&primary, &["start"]);
        let replica = pair.dir.join("replica");
        pair.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &p1.to_string(),
                "-U",
                "postgres",
                "-D",
                path(&replica),
                "-R",
                "-X",
                "stream",
            ],
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(replica.join("postgresql.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                // A promoted replica must not wait for a standby of its own.
                writeln!(f, "port = {p2}\nsynchronous_standby_names = ''")
            })
            .expect("replica's settings");
        pair.pg_ctl(&replica, &["start"]);
        // Synchronous once the primary sees it streaming.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = pair.psql(
                p1,
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            );
            if out.trim() == "1" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not stream synchronously within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        pair
    }

    /// The tail of both servers' logs, for a failing test to show.
    pub fn logs(&self) -> String {
        let listing: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let head = format!(
            "{} holds {listing:?}; psql on the replica says: {}\n",
            self.dir.display(),
            self.psql(
                self.replica.port(),
                "SELECT pg_is_in_recovery(), count(*) FROM pg_stat_activity"
            )
        );
        head + &["primary", "replica"]
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {n}.log\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn primary_url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.primary)
    }

    /// Stops the primary (fast: open transactions are rolled back, as in a failover) and
    /// promotes the replica, waiting until it takes writes. Needs a multi-threaded runtime.
    pub async fn switch_over(&self) {
        // Blocking, but short (a fast stop, a promote); on this task, so that no second PgPair
        // value (whose drop would stop and delete both) is made for another thread.
        tokio::task::block_in_place(|| {
            self.pg_ctl(&self.dir.join("primary"), &["stop", "-m", "fast"]);
            self.pg_ctl(&self.dir.join("replica"), &["promote"]);
        })
    }

    fn pg_ctl(&self, data: &Path, args: &[&str]) {
        let log = self.dir.join(format!(
            "{}.log",
            data.file_name().unwrap().to_string_lossy()
        ));
        let mut all = vec!["-D", path(data), "-l", path(&log), "-w"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    fn psql(&self, port: u16, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", "postgres", "-Atc", sql])
            .output()
            .expect("psql runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One of PostgreSQL's binaries, as the postgres user when this process is root.
    fn command(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, name: &str, args: &[&str]) {
        let out = self
            .command(name)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for data in ["primary", "replica"] {
            let d = self.dir.join(data);
            let _ = self
                .command("pg_ctl")
                .args(["-D", path(&d), "stop", "-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The newest PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin` on Debian), or
/// `pg_config --bindir`'s.
fn pg_bin() -> PathBuf {
    let debian = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
    });
    debian.unwrap_or_else(|| {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("PostgreSQL's initdb: install PostgreSQL's server package");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}
