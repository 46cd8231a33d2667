//! The control socket: newline-delimited JSON (entente-api), one request per connection.
//! Callers are identified by SO_PEERCRED; read commands need root or the read (or admin) group,
//! mutating ones root or the admin group. Refusals are answered and logged.

use crate::config::Config;
use anyhow::{Context, Result};
use entente_api::{Envelope, ErrorCode, Request, Response, API_VERSION};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Process id.
    pub pid: i32,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

/// The listening socket.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    read_gid: Option<u32>,
    admin_gid: Option<u32>,
}

/// One accepted request waiting for its answer.
pub struct Pending {
    stream: UnixStream,
    /// The caller.
    pub caller: Caller,
    /// The request, or why it could not be read.
    pub request: Result<Request, (ErrorCode, String)>,
}

impl Pending {
    /// Writes the response and closes.
    pub fn answer(mut self, r: &Response) {
        let mut line = serde_json::to_vec(r).expect("responses serialise");
        line.push(b'\n');
        let _ = self.stream.write_all(&line);
    }
}

fn gid_of(name: &Option<String>, key: &str) -> Result<Option<u32>> {
    match name {
        None => Ok(None),
        Some(n) => {
            let g = nix::unistd::Group::from_name(n)
                .with_context(|| format!("look up group {n:?}"))?
                .with_context(|| format!("{key}: no group named {n:?}"))?;
            Ok(Some(g.gid.as_raw()))
        }
    }
}

/// The caller's groups: primary from SO_PEERCRED, supplementary from /proc.
fn groups_of(pid: i32, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
            groups.extend(
                line[7..]
                    .split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    groups
}

impl ControlServer {
    /// Binds the socket (replacing a stale one), mode 0660.
    pub fn bind(cfg: &Config) -> Result<ControlServer> {
        let path = cfg.control_socket.clone();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        if path.exists() {
            // A live agent answers; a stale socket from a crashed one is replaced.
            if UnixStream::connect(&path).is_ok() {
                anyhow::bail!("another agent serves {}", path.display());
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("remove stale {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
        let read_gid = gid_of(&cfg.read_group, "read_group")?;
        let admin_gid = gid_of(&cfg.admin_group, "admin_group")?;
        if let Some(g) = read_gid.or(admin_gid) {
            let _ = nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(g)));
        }
        Ok(ControlServer {
            listener,
            path,
            read_gid,
            admin_gid,
        })
    }

    fn allowed(&self, c: &Caller, mutating: bool) -> bool {
        if c.uid == 0 || c.uid == nix::unistd::geteuid().as_raw() {
            return true;
        }
        let member = |g: Option<u32>| g.is_some_and(|g| c.groups.contains(&g));
        if mutating {
            member(self.admin_gid)
        } else {
            member(self.read_gid) || member(self.admin_gid)
        }
    }

    /// Accepts waiting clients and reads their requests (authorisation already decided).
    pub fn accept(&self) -> Vec<Pending> {
        let mut out = Vec::new();
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let cred = match getsockopt(&stream, PeerCredentials) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let caller = Caller {
                uid: cred.uid(),
                pid: cred.pid(),
                groups: groups_of(cred.pid(), cred.gid()),
            };
            let mut line = String::new();
            let read = BufReader::new(&stream).read_line(&mut line);
            let request = match read {
                Ok(n) if n > 0 && line.len() <= 64 << 20 => {
                    match serde_json::from_str::<Envelope>(&line) {
                        Ok(e) if e.api != API_VERSION => Err((
                            ErrorCode::BadRequest,
                            format!(
                            "API version {} is not spoken here (this agent speaks {API_VERSION})",
                            e.api
                        ),
                        )),
                        Ok(e) if !self.allowed(&caller, e.request.is_mutating()) => {
                            tracing::warn!(
                                uid = caller.uid,
                                pid = caller.pid,
                                "control request refused: {:?}",
                                e.request
                            );
                            Err((
                                ErrorCode::Unauthorized,
                                format!(
                                    "uid {} may not {} (needs root or the {} group)",
                                    caller.uid,
                                    if e.request.is_mutating() {
                                        "change this agent"
                                    } else {
                                        "read this agent's state"
                                    },
                                    if e.request.is_mutating() {
                                        "admin"
                                    } else {
                                        "read"
                                    }
                                ),
                            ))
                        }
                        Ok(e) => Ok(e.request),
                        Err(e) => Err((ErrorCode::BadRequest, format!("malformed request: {e}"))),
                    }
                }
                _ => Err((ErrorCode::BadRequest, "no request line".into())),
            };
            out.push(Pending {
                stream,
                caller,
                request,
            });
        }
        out
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
