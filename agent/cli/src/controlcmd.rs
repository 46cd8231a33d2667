//! `entente campaign pause|resume|abort|rollback`: an operator statement, signed here with the
//! operator's key and handed to the local agent, which checks it, applies it and carries it to
//! every other agent (each checks it against its own trusted operator keys).

use crate::agentcmd::{exit_for, SocketArg};
use crate::client::call;
use anyhow::{Context, Result};
use clap::Args;
use entente_api::Status;
use entente_api::{Reply, Request};
use entente_stage::statement::{Action, SignedStatement, Statement};
use entente_stage::SecretKey;
use std::path::PathBuf;
use std::process::ExitCode;

/// What a statement needs besides its action.
#[derive(Args, Debug)]
pub struct ControlArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The operator's secret key (`entente keygen`; its public key in every agent's
    /// `trusted_operator_keys`).
    #[arg(long)]
    key: PathBuf,
    /// Why, for every agent's status and history (at most 200 bytes, one line).
    #[arg(long, default_value = "")]
    reason: String,
    /// The campaign it concerns (default: the local agent's campaign).
    #[arg(long)]
    epoch: Option<u64>,
    /// Seconds until the statement expires (at most 7 days): an agent that has not heard of
    /// it by then (down, or cut off, all that time) refuses it and says so; give it again.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    valid_for: u64,
}

/// A statement for the cluster and (unless `epoch` names one) the campaign of the agent whose
/// `status` this is, signed now with `key`, valid for `valid_for` seconds.
pub fn sign(
    status: &Status,
    key: &SecretKey,
    action: Action,
    epoch: Option<u64>,
    reason: String,
    valid_for: u64,
) -> Result<SignedStatement> {
    let mut cluster = [0u8; 8];
    let hex = status.cluster.as_bytes();
    if hex.len() != 16 {
        anyhow::bail!("the agent does not name its cluster (an older entented?)");
    }
    for (i, b) in cluster.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2])?;
        *b = u8::from_str_radix(pair, 16).context("the agent's cluster name")?;
    }
    let epoch = match epoch {
        Some(e) => e,
        None if status.epoch > 0 => status.epoch,
        None => anyhow::bail!(
            "the agent has no campaign: name the campaign with --epoch (a statement for a \
             campaign an agent has not heard of yet is kept until it arrives)"
        ),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_millis() as u64;
    Ok(Statement {
        cluster,
        epoch,
        action,
        counter: now_ms,
        expires_at: now_ms / 1000 + valid_for,
        reason,
    }
    .sign(key)?)
}

/// Signs and sends one statement.
pub fn run(action: Action, a: ControlArgs) -> Result<ExitCode> {
    let key =
        SecretKey::load(&a.key).with_context(|| format!("operator key {}", a.key.display()))?;
    // The agent names its cluster (the statement is signed for it) and, by default, the
    // campaign.
    let status = match call(&a.socket.socket, Request::Status) {
        Ok(Reply::Status(s)) => s,
        Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
        Err(e) => return exit_for(e),
    };
    let statement = sign(&status, &key, action, a.epoch, a.reason, a.valid_for)?;
    let epoch = statement.statement.epoch;
    match call(
        &a.socket.socket,
        Request::Control {
            statement: statement.to_line(),
        },
    ) {
        Ok(Reply::Done) => {
            outln!(
                "campaign {epoch}: {action} applied here (operator key {}); it travels to every agent",
                statement.signature.key_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
        Err(e) => exit_for(e),
    }
}
