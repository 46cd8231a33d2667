//! The control socket: newline-delimited JSON (entente-api), one request per connection.
//! Callers are identified by SO_PEERCRED and SO_PEERGROUPS (`peer.rs`); read commands need root
//! or the read (or admin) group, mutating ones root or the admin group. Refusals are answered
//! and logged.
//!
//! The socket is mode 0666: the credentials the kernel attaches to the connection are the gate,
//! not the file's group, so members of the read group and of the admin group both reach it (a
//! file has one group) and anyone else is told plainly that they may not (exit 3), rather than
//! finding the agent unreachable. What a stranger can hold is bounded: at most
//! [`PER_USER`] of its connections are read at once, and [`RESERVED`] reading slots beyond
//! [`MAX_CLIENTS`] are kept for root and the agent's own user.
//!
//! Clients are read and answered on threads of their own, never on the protocol loop: a request
//! is at most [`MAX_REQUEST`] bytes, read within [`REQUEST_DEADLINE`], and at most
//! [`MAX_CLIENTS`] are read at once; so a slow, silent or endless client cannot stall the agent
//! or grow its memory, and a log line carries at most [`LOGGED_BYTES`] of a request.

use crate::config::Config;
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use entente_api::{Envelope, ErrorCode, Request, Response, API_VERSION};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};

pub mod fds;
pub mod peer;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest request line accepted, in bytes (a manifest with its signature fits many times).
pub const MAX_REQUEST: usize = 1 << 20;
/// Time a client has to send its whole request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Clients read at once; more are turned away until one finishes.
pub const MAX_CLIENTS: usize = 32;
/// Connections of one user (other than root and the agent's user) read at once.
pub const PER_USER: usize = 4;
/// Reading slots beyond [`MAX_CLIENTS`] that only root and the agent's user may take.
pub const RESERVED: usize = 8;
/// Most bytes of a request a log line carries.
pub const LOGGED_BYTES: usize = 200;
/// Time the agent spends writing one answer to a client that does not read it.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

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
    access: Arc<Access>,
    /// Requests read (by the client threads), waiting for the loop.
    ready: Receiver<Pending>,
    ready_tx: Sender<Pending>,
    /// Clients being read now, by user id.
    reading: Arc<Mutex<HashMap<u32, usize>>>,
    /// Clients turned away since the last log line about them.
    turned_away: u64,
    last_turned_away_log: Instant,
}

/// Who may do what.
struct Access {
    read_gid: Option<u32>,
    admin_gid: Option<u32>,
    own_uid: u32,
}

/// One accepted request waiting for its answer.
pub struct Pending {
    stream: UnixStream,
    /// The caller.
    pub caller: Caller,
    /// The request, or why it could not be read.
    pub request: Result<Request, (ErrorCode, String)>,
    /// Files the caller passed with it (SCM_RIGHTS), in order: the images of `campaign start`
    /// and `image add`.
    pub files: Vec<std::fs::File>,
}

impl Pending {
    /// Writes the response and closes, on a thread of its own (a client that does not read
    /// its answer holds only that thread, for at most a few seconds).
    pub fn answer(self, r: &Response) {
        let mut line = serde_json::to_vec(r).expect("responses serialise");
        line.push(b'\n');
        let mut stream = self.stream;
        let spawned = std::thread::Builder::new()
            .name("control-answer".into())
            .spawn(move || {
                let _ = stream.set_write_timeout(Some(ANSWER_DEADLINE));
                let _ = stream.write_all(&line);
            });
        if let Err(e) = spawned {
            tracing::error!("control socket: cannot start an answer thread: {e}");
        }
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
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let read_gid = gid_of(&cfg.read_group, "read_group")?;
        let admin_gid = gid_of(&cfg.admin_group, "admin_group")?;
        let (ready_tx, ready) = crossbeam_channel::unbounded();
        Ok(ControlServer {
            listener,
            path,
            access: Arc::new(Access {
                read_gid,
                admin_gid,
                own_uid: nix::unistd::geteuid().as_raw(),
            }),
            ready,
            ready_tx,
            reading: Arc::new(Mutex::new(HashMap::new())),
            turned_away: 0,
            last_turned_away_log: Instant::now(),
        })
    }
}

impl Access {
    fn allowed(&self, c: &Caller, mutating: bool) -> bool {
        if c.uid == 0 || c.uid == self.own_uid {
            return true;
        }
        let member = |g: Option<u32>| g.is_some_and(|g| c.groups.contains(&g));
        if mutating {
            member(self.admin_gid)
        } else {
            member(self.read_gid) || member(self.admin_gid)
        }
    }
}

impl ControlServer {
    /// Accepts waiting clients (each is read on a thread of its own) and returns the requests
    /// read so far, authorisation already decided. Never blocks.
    pub fn accept(&mut self) -> Vec<Pending> {
        while let Ok((stream, _)) = self.listener.accept() {
            let Ok(cred) = getsockopt(&stream, PeerCredentials) else {
                continue;
            };
            let uid = cred.uid();
            if !self.admit(uid) {
                // Closed at once: the client sees the connection end without an answer.
                self.turned_away += 1;
                continue;
            }
            let (access, tx, reading) = (
                Arc::clone(&self.access),
                self.ready_tx.clone(),
                Arc::clone(&self.reading),
            );
            let spawned = std::thread::Builder::new()
                .name("control-read".into())
                .spawn(move || {
                    if let Some(p) = read_client(stream, &access) {
                        let _ = tx.send(p);
                    }
                    release(&reading, uid);
                });
            if let Err(e) = spawned {
                release(&self.reading, uid);
                tracing::error!("control socket: cannot start a client thread: {e}");
            }
        }
        if self.turned_away > 0 && self.last_turned_away_log.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                "control socket: {} clients turned away in the last {} s (at most {MAX_CLIENTS} \
                 are read at once, {PER_USER} per user)",
                self.turned_away,
                self.last_turned_away_log.elapsed().as_secs()
            );
            self.turned_away = 0;
            self.last_turned_away_log = Instant::now();
        }
        self.ready.try_iter().collect()
    }
}

impl ControlServer {
    /// Takes a reading slot for a client of user `uid`, if the limits allow.
    fn admit(&self, uid: u32) -> bool {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = reading.values().sum();
        let privileged = uid == 0 || uid == self.access.own_uid;
        let mine = reading.get(&uid).copied().unwrap_or(0);
        let room = if privileged {
            total < MAX_CLIENTS + RESERVED
        } else {
            total < MAX_CLIENTS && mine < PER_USER
        };
        if room {
            *reading.entry(uid).or_default() += 1;
        }
        room
    }
}

/// Gives back the reading slot of a client of user `uid`.
fn release(reading: &Mutex<HashMap<u32, usize>>, uid: u32) {
    let mut reading = reading.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = reading.get_mut(&uid) {
        *n -= 1;
        if *n == 0 {
            reading.remove(&uid);
        }
    }
}

/// Reads one client's request line (bounded in size and time), identifies the caller and
/// decides whether it may make that request. `None` when the caller cannot be identified.
fn read_client(stream: UnixStream, access: &Access) -> Option<Pending> {
    let cred = match peer::peer_cred(&stream) {
        Ok(cred) => cred,
        Err(e) => {
            tracing::warn!("control client: cannot read its credentials: {e}");
            return None;
        }
    };
    let caller = Caller {
        uid: cred.uid,
        pid: cred.pid,
        groups: cred.groups,
    };
    let mut files = Vec::new();
    let request = match read_line(&stream, &mut files) {
        Ok(line) => decide(&line, &caller, access),
        Err(why) => {
            tracing::warn!(uid = caller.uid, pid = caller.pid, "control request: {why}");
            Err((ErrorCode::BadRequest, why))
        }
    };
    Some(Pending {
        stream,
        caller,
        request,
        files,
    })
}

/// One request line: at most [`MAX_REQUEST`] bytes, all of it within [`REQUEST_DEADLINE`], and
/// the files passed with it.
fn read_line(stream: &UnixStream, files: &mut Vec<std::fs::File>) -> Result<Vec<u8>, String> {
    let started = Instant::now();
    let mut line = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = REQUEST_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(format!(
                "no complete request line within {} s",
                REQUEST_DEADLINE.as_secs()
            ));
        }
        let _ = stream.set_read_timeout(Some(left));
        match fds::read_with_files(stream, &mut buf, files) {
            Ok(0) if line.is_empty() => return Err("no request line".into()),
            Ok(0) => return Ok(line),
            Ok(n) => {
                let end = buf[..n].iter().position(|&b| b == b'\n');
                line.extend_from_slice(&buf[..end.unwrap_or(n)]);
                if line.len() > MAX_REQUEST {
                    return Err(format!("request longer than {MAX_REQUEST} bytes"));
                }
                if end.is_some() {
                    return Ok(line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
}

/// Parses one request line (without its newline): a JSON [`Envelope`] of [`API_VERSION`].
/// Anything else is a [`ErrorCode::BadRequest`] with the reason; no input panics.
pub fn parse_request(line: &[u8]) -> Result<Request, (ErrorCode, String)> {
    let e = match serde_json::from_slice::<Envelope>(line) {
        Ok(e) => e,
        Err(e) => return Err((ErrorCode::BadRequest, format!("malformed request: {e}"))),
    };
    if e.api != API_VERSION {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "API version {} is not spoken here (this agent speaks {API_VERSION})",
                e.api
            ),
        ));
    }
    Ok(e.request)
}

/// Parses a request line and decides whether `caller` may make it.
fn decide(line: &[u8], caller: &Caller, access: &Access) -> Result<Request, (ErrorCode, String)> {
    let request = parse_request(line)?;
    let mutating = request.is_mutating();
    if !access.allowed(caller, mutating) {
        tracing::warn!(
            uid = caller.uid,
            pid = caller.pid,
            "control request refused: {}",
            clip(&format!("{request:?}"), LOGGED_BYTES)
        );
        let (what, group) = if mutating {
            ("change this agent", "admin")
        } else {
            ("read this agent's state", "read")
        };
        return Err((
            ErrorCode::Unauthorized,
            format!(
                "uid {} may not {what} (needs root or the {group} group)",
                caller.uid
            ),
        ));
    }
    Ok(request)
}

/// At most `max` bytes of `text` (on a character boundary), marked when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::{clip, parse_request};
    use entente_api::{ErrorCode, Request, API_VERSION};

    #[test]
    fn a_request_line_parses_only_at_this_api_version() {
        let line = format!(r#"{{"api":{API_VERSION},"request":{{"kind":"history","limit":5}}}}"#);
        assert_eq!(
            parse_request(line.as_bytes()),
            Ok(Request::History { limit: 5 })
        );
        let old = format!(
            r#"{{"api":{},"request":{{"kind":"status"}}}}"#,
            API_VERSION - 1
        );
        let (code, why) = parse_request(old.as_bytes()).unwrap_err();
        assert!(
            code == ErrorCode::BadRequest && why.contains("API version"),
            "{why}"
        );
        let (code, why) = parse_request(b"{\"api\":").unwrap_err();
        assert!(
            code == ErrorCode::BadRequest && why.contains("malformed"),
            "{why}"
        );
    }

    #[test]
    fn a_logged_request_is_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 200), "short");
        let long = "é".repeat(300);
        let c = clip(&long, 201);
        assert!(
            c.starts_with(&"é".repeat(100)) && c.ends_with("(600 bytes)"),
            "{c}"
        );
    }
}
