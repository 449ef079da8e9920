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
    /// it listens. The port is picked free and released before the broker binds it, so another
    /// process may take it in between: then the broker exits, and it is started again on another
    /// port (at most [`START_ATTEMPTS`] times).
    pub fn start() -> anyhow::Result<LocalMosquitto> {
        let bin = mosquitto_binary()
            .context("mosquitto is not installed (./scripts/setup installs it)")?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&bin)? {
                Ok(m) => return Ok(m),
                Err(port) => last = Some(port),
            }
        }
        bail!(
            "mosquitto exited {START_ATTEMPTS} times right after starting (last on port {}): is another broker or its configuration in the way?",
            last.unwrap_or(0)
        )
    }

    /// One try: the broker listening, or the port it could not keep.
    fn start_once(bin: &std::path::Path) -> anyhow::Result<Result<LocalMosquitto, u16>> {
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
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        let start = Instant::now();
        loop {
            // Whoever answers on the port, the broker must still be running a moment later (one
            // that lost the port exits at once).
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
                if child.try_wait()?.is_none() {
                    break;
                }
            }
            if child.try_wait()?.is_some() {
                return Ok(Err(port));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("mosquitto did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Ok(LocalMosquitto {
            child,
            port,
            _conf: conf,
        }))
    }
}

/// Tries of [`LocalMosquitto::start`].
pub const START_ATTEMPTS: usize = 5;

impl Drop for LocalMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
