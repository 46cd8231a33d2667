//! Operator statements: pause, resume, abort or roll back a campaign, signed by an operator
//! key.
//!
//! A statement is one text line, signed whole but for its signature:
//!
//! ```text
//! entente-control-v1 <cluster> <epoch> <action> <counter> <expires_at> <key id> <signature> <reason>
//! ```
//!
//! The signature (ed25519, hex) covers the line with `<key id> <signature> ` removed. `cluster`
//! names the cluster (16 hex digits, what `entente status` shows), so a statement signed for one
//! cluster is refused by every other that trusts the same operator key. `counter`
//! is the signing time in milliseconds since the Unix epoch and `expires_at` a Unix time in
//! seconds. How the two interact, as [`SignedStatement::check`] applies them against the
//! node's clock: a statement is refused once expired; one signed more than [`MAX_AHEAD_MS`] in
//! the future (a wrong clock, or a counter chosen to outrank every later statement) or valid
//! for more than [`MAX_VALIDITY_S`] is refused; among valid statements a node applies each
//! once, in counter order (a counter at or below the last applied is a repeat, answered as
//! such). Because counters are times, a signer needs no state to pick one, and no statement can
//! push the counter beyond what a clock reaches soon.

use crate::keys::{KeyId, SecretKey, Signature, TrustedKeys};
use crate::manifest::{hex_decode, hex_encode};
use std::fmt;

const TAG: &str = "entente-control-v1";
/// Longest statement line accepted.
pub const MAX_STATEMENT_LEN: usize = 1024;
/// Longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 200;
/// How far in the future a statement may have been signed, by the node's clock.
pub const MAX_AHEAD_MS: u64 = 10 * 60 * 1000;
/// Longest validity of a statement.
pub const MAX_VALIDITY_S: u64 = 7 * 24 * 3600;

/// What a statement asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No new staging or activation until a resume.
    Pause,
    /// Undo a pause or an abort: the same manifest runs on.
    Resume,
    /// Halt: open transactions aborted, no new activation, committed links stay.
    Abort,
    /// Go back to the previous firmware where no link moved; halt elsewhere.
    Rollback,
}

impl Action {
    /// Its word in a statement.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
            Action::Rollback => "rollback",
        }
    }

    /// The action a word names.
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            "rollback" => Action::Rollback,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator states, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The cluster it is for.
    pub cluster: [u8; 8],
    /// The campaign it concerns.
    pub epoch: u64,
    /// What to do.
    pub action: Action,
    /// Signing time, milliseconds since the Unix epoch: orders statements.
    pub counter: u64,
    /// Unix time (seconds) after which it is refused.
    pub expires_at: u64,
    /// Why, for status and the history (printable, at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

/// A statement with the signature of the key that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedStatement {
    /// What it says.
    pub statement: Statement,
    /// Who signed it, and the signature.
    pub signature: Signature,
}

/// Why a statement was refused. Each names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Not a statement line of this format.
    #[error("malformed control statement: {0}")]
    Malformed(String),
    /// Signed for another cluster.
    #[error("control statement for cluster {theirs}, this is cluster {ours}")]
    OtherCluster {
        /// The statement's cluster.
        theirs: String,
        /// This node's.
        ours: String,
    },
    /// Signed by a key that is not a trusted operator key.
    #[error("control statement signed by key {0}, which is not a trusted operator key")]
    UnknownKey(KeyId),
    /// The signature does not hold.
    #[error("control statement's signature (key {0}) does not verify")]
    BadSignature(KeyId),
    /// Past its expiry.
    #[error("control statement expired at {expires_at} (now {now})")]
    Expired {
        /// Its expiry, Unix seconds.
        expires_at: u64,
        /// The node's clock, Unix seconds.
        now: u64,
    },
    /// Signed too far in the future by this node's clock.
    #[error(
        "control statement signed {ahead_s} s in the future by this node's clock (at most {} s): \
         a wrong clock, or a counter chosen to outrank every later statement",
        MAX_AHEAD_MS / 1000
    )]
    FarAhead {
        /// How far ahead, seconds.
        ahead_s: u64,
    },
    /// Valid for longer than allowed.
    #[error("control statement valid for {0} s, at most {MAX_VALIDITY_S} s are allowed")]
    TooLong(u64),
    /// At or below the last applied counter.
    #[error("control statement {counter} is not newer than the last applied ({last})")]
    Repeat {
        /// Its counter.
        counter: u64,
        /// The last applied.
        last: u64,
    },
}

impl Statement {
    /// The bytes a signature covers.
    fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{TAG} {} {} {} {} {} {}",
            hex_encode(&self.cluster),
            self.epoch,
            self.action,
            self.counter,
            self.expires_at,
            self.reason
        )
        .into_bytes()
    }

    /// Signs it with `key`; refuses a reason that a statement cannot carry.
    pub fn sign(self, key: &SecretKey) -> Result<SignedStatement, StatementError> {
        check_reason(&self.reason)?;
        let signature = key.sign(&self.signed_bytes());
        Ok(SignedStatement {
            statement: self,
            signature,
        })
    }
}

fn check_reason(reason: &str) -> Result<(), StatementError> {
    if reason.len() > MAX_REASON_LEN {
        return Err(StatementError::Malformed(format!(
            "reason of {} bytes, at most {MAX_REASON_LEN}",
            reason.len()
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(StatementError::Malformed(
            "reason holds control characters (a newline?)".into(),
        ));
    }
    Ok(())
}

fn number(field: &str, what: &str) -> Result<u64, StatementError> {
    let ok = !field.is_empty()
        && field.bytes().all(|b| b.is_ascii_digit())
        && (field == "0" || !field.starts_with('0'));
    ok.then(|| field.parse().ok())
        .flatten()
        .ok_or_else(|| StatementError::Malformed(format!("{what} {field:?} is not a number")))
}

impl SignedStatement {
    /// The statement's line (no newline).
    pub fn to_line(&self) -> String {
        let s = &self.statement;
        format!(
            "{TAG} {} {} {} {} {} {} {} {}",
            hex_encode(&s.cluster),
            s.epoch,
            s.action,
            s.counter,
            s.expires_at,
            self.signature.key_id,
            hex_encode(&self.signature.sig.to_bytes()),
            s.reason
        )
    }

    /// Parses a line; refuses anything but the one canonical encoding.
    pub fn parse(line: &str) -> Result<SignedStatement, StatementError> {
        let bad = |why: &str| StatementError::Malformed(why.to_owned());
        if line.len() > MAX_STATEMENT_LEN {
            return Err(bad(&format!(
                "{} bytes, at most {MAX_STATEMENT_LEN}",
                line.len()
            )));
        }
        let mut f = line.splitn(9, ' ');
        if f.next() != Some(TAG) {
            return Err(bad(&format!("does not start with {TAG}")));
        }
        let mut next = |what: &str| f.next().ok_or_else(|| bad(&format!("no {what}")));
        let mut cluster = [0u8; 8];
        hex_decode(next("cluster")?, &mut cluster)
            .map_err(|_| bad("cluster is not 16 lowercase hex digits"))?;
        let epoch = number(next("epoch")?, "epoch")?;
        let word = next("action")?;
        let action = Action::parse(word).ok_or_else(|| {
            bad(&format!(
                "action {word:?} (pause, resume, abort or rollback)"
            ))
        })?;
        let counter = number(next("counter")?, "counter")?;
        let expires_at = number(next("expiry")?, "expiry")?;
        let mut key_id = [0u8; 8];
        hex_decode(next("key id")?, &mut key_id)
            .map_err(|_| bad("key id is not 16 lowercase hex digits"))?;
        let mut sig = [0u8; 64];
        hex_decode(next("signature")?, &mut sig)
            .map_err(|_| bad("signature is not 128 lowercase hex digits"))?;
        let reason = f.next().unwrap_or("").to_owned();
        check_reason(&reason)?;
        let parsed = SignedStatement {
            statement: Statement {
                cluster,
                epoch,
                action,
                counter,
                expires_at,
                reason,
            },
            signature: Signature {
                key_id: KeyId(key_id),
                sig: ed25519_dalek::Signature::from_bytes(&sig),
            },
        };
        if parsed.to_line() != line {
            return Err(bad("not in canonical form"));
        }
        Ok(parsed)
    }

    /// Checks it against this node's cluster, the trusted operator keys, the node's clock
    /// (`now_ms`, Unix milliseconds) and the last applied counter: it is for this cluster, the
    /// key is trusted, the signature holds, it has not expired, it was not signed too far
    /// ahead, its validity is not too long, and it is newer than `last_counter`.
    pub fn check(
        &self,
        cluster: &[u8; 8],
        keys: &TrustedKeys,
        now_ms: u64,
        last_counter: u64,
    ) -> Result<(), StatementError> {
        if &self.statement.cluster != cluster {
            return Err(StatementError::OtherCluster {
                theirs: hex_encode(&self.statement.cluster),
                ours: hex_encode(cluster),
            });
        }
        let id = self.signature.key_id;
        let key = keys.get(&id).ok_or(StatementError::UnknownKey(id))?;
        if !key.verify(&self.statement.signed_bytes(), &self.signature.sig) {
            return Err(StatementError::BadSignature(id));
        }
        let s = &self.statement;
        let now = now_ms / 1000;
        if now >= s.expires_at {
            return Err(StatementError::Expired {
                expires_at: s.expires_at,
                now,
            });
        }
        if s.counter > now_ms.saturating_add(MAX_AHEAD_MS) {
            return Err(StatementError::FarAhead {
                ahead_s: (s.counter - now_ms) / 1000,
            });
        }
        let validity = s.expires_at.saturating_sub(s.counter / 1000);
        if validity > MAX_VALIDITY_S {
            return Err(StatementError::TooLong(validity));
        }
        if s.counter <= last_counter {
            return Err(StatementError::Repeat {
                counter: s.counter,
                last: last_counter,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
