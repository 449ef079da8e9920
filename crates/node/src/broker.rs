//! A Mosquitto broker of our own on a free port of 127.0.0.1 (benchmarks and tests; a community's
//! broker runs as a service of its own). Killed on drop.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalMosquitto {
    child: Child,
    pub port: u16,
    _conf: tempfile::TempDir,
}

/// Where Debian's package installs the broker.
pub fn mosquitto_binary() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl LocalMosquitto {
    /// Starts the broker (no persistence, anonymous on loopback, unbounded queues) and waits until
    /// it listens.
    pub fn start() -> anyhow::Result<LocalMosquitto> {
        let bin = mosquitto_binary()
            .context("mosquitto is not installed (./scripts/setup installs it)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = tempfile::tempdir()?;
        let file = conf.path().join("mosquitto.conf");
        std::fs::write(
            &file,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\n"
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("mosquitto did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(LocalMosquitto {
            child,
            port,
            _conf: conf,
        })
    }
}

impl Drop for LocalMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
