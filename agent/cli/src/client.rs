//! The control-socket client: one request, one response.

use anyhow::{bail, Context, Result};
use entente_api::{Envelope, ErrorCode, Reply, Request, Response, API_VERSION};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Exit status of an error (documented in the README with the others).
pub const EXIT_ERROR: u8 = 1;
/// Exit status when there was nothing to do (as fwupdmgr).
pub const EXIT_NOTHING_TO_DO: u8 = 2;
/// Exit status for a request the agent refused, or a caller not allowed to ask.
pub const EXIT_REFUSED: u8 = 3;
/// Exit status when the agent cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit status of bad usage: unknown options, bad values (as sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// The agent could not be reached (no socket, nobody listening).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The caller may not reach the agent's socket (a directory on the way refuses it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotAllowed(pub String);

/// The command was used wrongly: an option or value it cannot take.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit status an error of a command maps to.
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some() {
        EXIT_USAGE
    } else if e.downcast_ref::<Unreachable>().is_some() {
        EXIT_UNREACHABLE
    } else if e.downcast_ref::<NotAllowed>().is_some() {
        EXIT_REFUSED
    } else {
        EXIT_ERROR
    }
}

/// An error the agent answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// Its class.
    pub code: ErrorCode,
    /// Its message.
    pub message: String,
}

/// Sends `request` to the agent at `socket` and returns its reply.
pub fn call(socket: &Path, request: Request) -> Result<Reply> {
    call_with_files(socket, request, &[])
}

/// [`call`], passing `files` open with the request (SCM_RIGHTS): the agent reads images from
/// these, never from a path, so it reads only what this user could open.
pub fn call_with_files(socket: &Path, request: Request, files: &[std::fs::File]) -> Result<Reply> {
    let mut s = UnixStream::connect(socket).map_err(|e| -> anyhow::Error {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            NotAllowed(format!(
                "may not reach the agent at {}: {e} (a directory on the way is closed to you)",
                socket.display()
            ))
            .into()
        } else {
            Unreachable(format!(
                "cannot reach the agent at {}: {e} (is entented running? --socket names another)",
                socket.display()
            ))
            .into()
        }
    })?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_vec(&Envelope {
        api: API_VERSION,
        request,
    })?;
    line.push(b'\n');
    if files.is_empty() {
        s.write_all(&line)?;
    } else {
        send_with_files(&s, &line, files)?;
    }
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    if answer.is_empty() {
        bail!("the agent closed the connection without answering");
    }
    match serde_json::from_str::<Response>(&answer).context("the agent's answer")? {
        Response::Ok { result } => Ok(result),
        Response::Error { message, code } => Err(AgentError { code, message }.into()),
    }
}

/// Writes `line` with `files` attached to its first bytes, then the rest of it.
fn send_with_files(s: &UnixStream, line: &[u8], files: &[std::fs::File]) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(line)];
    let sent = sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("passing the image files to the agent")?;
    let mut rest = s;
    rest.write_all(&line[sent..])?;
    Ok(())
}
