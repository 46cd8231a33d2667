//! The control-socket client: one request, one response.

use anyhow::{bail, Context, Result};
use entente_api::{Envelope, ErrorCode, Reply, Request, Response, API_VERSION};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Exit status for a request the agent refused (documented in the README).
pub const EXIT_REFUSED: u8 = 3;
/// Exit status when there was nothing to do.
pub const EXIT_NOTHING_TO_DO: u8 = 2;

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
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is entented running? --socket names another)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_vec(&Envelope {
        api: API_VERSION,
        request,
    })?;
    line.push(b'\n');
    s.write_all(&line)?;
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
