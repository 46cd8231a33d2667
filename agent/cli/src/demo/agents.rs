//! The `entented` processes `entente demo` runs.

use crate::client::call;
use anyhow::{Context, Result};
use entente_api::{Reply, Request, Status};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One agent: its files and, while it runs, its process.
pub struct Agent {
    pub(super) id: u64,
    pub(super) config: PathBuf,
    pub(super) socket: PathBuf,
    pub(super) log: PathBuf,
    pub(super) child: Option<Child>,
}

impl Agent {
    pub(super) fn start(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&self.config)
            .env(
                "ENTENTE_LOG",
                std::env::var("ENTENTE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes the agent's state store (`state.db` and its WAL files), as a lost disk would;
    /// its image store, manifests and device stay.
    pub(super) fn wipe_state(&self) -> Result<()> {
        let data = self.config.with_file_name("data");
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            match std::fs::remove_file(data.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    anyhow::bail!("deleting {}: {e}", data.join(f).display())
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(super) fn status(&self) -> Option<Status> {
        match call(&self.socket, Request::Status) {
            Ok(Reply::Status(s)) => Some(s),
            _ => None,
        }
    }
}
