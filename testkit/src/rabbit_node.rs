//! [`RabbitNode`]: a RabbitMQ node of one test's own, started from this machine's RabbitMQ
//! installation on spare ports, for faults that would reach every other test on the shared
//! broker (a memory alarm blocks every publisher of its cluster). The way `scripts/cluster`
//! starts its nodes, one node, no plugins: it takes a few seconds.
//!
//! Stopped and deleted when dropped. A test process that dies without dropping it (killed,
//! aborted) leaves the node running: the next [`RabbitNode::start`] stops the nodes whose test
//! process is gone, so they never pile up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Data directories are named `<PREFIX><pid>-<id>`, under the system's temporary directory.
const PREFIX: &str = "mailroom-rabbit-";

pub struct RabbitNode {
    /// The Erlang node name, for `rabbitmqctl -n`.
    pub name: String,
    pub port: u16,
    dir: PathBuf,
}

impl RabbitNode {
    /// Starts a node and waits until it takes AMQP connections. Panics, saying why, when this
    /// machine has no RabbitMQ installation to start one from (`scripts/test` installs it).
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("starting a RabbitMQ node")
    }

    fn start_blocking() -> Self {
        reap_orphans();
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let name = format!("mailroom-test-{id}@localhost");
        let (port, dist_port) = (crate::free_port(), crate::free_port());
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}-{id}", std::process::id()));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("node directory");
        }
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users.guest = true\n"),
        )
        .expect("rabbitmq.conf");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        std::fs::write(dir.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
        std::fs::write(dir.join("node"), &name).expect("node name");
        // Run as root, rabbitmq-server switches to the rabbitmq user, which must own the
        // directory; run as that user (or on macOS) this fails harmlessly.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        let node = Self { name, port, dir };
        let d = |f: &str| node.dir.join(f);
        let started = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match started {
            Ok(s) if s.success() => {}
            other => panic!(
                "cannot start a RabbitMQ node of this test's own with rabbitmq-server \
                 ({other:?}): it needs RabbitMQ installed on this machine (scripts/test \
                 installs it) and root or the rabbitmq user"
            ),
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not take connections on 127.0.0.1:{port} within 90 s (its \
                 log: {})",
                node.name,
                node.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Runs `rabbitmqctl -n <node> <args>`, panicking with its output when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = ctl(&self.name, args);
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} on {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        stop(&self.name, &self.dir);
    }
}

fn ctl(node: &str, args: &[&str]) -> Output {
    Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("rabbitmqctl runs")
}

fn stop(node: &str, dir: &Path) {
    let _ = ctl(node, &["stop"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops the nodes (and deletes the directories) of test processes that are gone.
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // kill(pid, 0): is that process still there (EPERM: there, someone else's)?
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let dir = entry.path();
        if let Ok(node) = std::fs::read_to_string(dir.join("node")) {
            stop(node.trim(), &dir);
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
