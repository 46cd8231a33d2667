//! Operator statements (pause, resume, abort): checked against the trusted operator keys and
//! the node's clock, recorded durably, applied by the protocol node, and carried on to the
//! neighbours with their signature, so every agent checks them for itself. The node floods a
//! control once and re-sends the last one on every new connection; a statement reaches a
//! node that was unreachable when it was given as soon as it connects again.

use super::Agent;
use anyhow::Result;
use entente_api::{ControlStatus, ErrorCode, HistoryEvent, HistoryKind};
use entente_proto::msg::{Control, ControlAction};
use entente_proto::{Epoch, NodeId};
use entente_stage::statement::{Action, SignedStatement, StatementError};
use std::time::{Duration, Instant};

/// Refused statements from one neighbour are logged at most once per this interval.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_control(s: &SignedStatement) -> Control {
    let st = &s.statement;
    Control {
        epoch: Epoch(st.epoch),
        action: match st.action {
            Action::Pause => ControlAction::Pause,
            Action::Resume => ControlAction::Resume,
            Action::Abort => ControlAction::Abort,
            Action::Rollback => ControlAction::Rollback,
        },
        counter: st.counter,
    }
}

/// Why a statement was not applied.
pub(super) enum Refusal {
    /// Already applied (or an older one): nothing to do.
    Repeat(String),
    /// Refused: unknown key, bad signature, expired, too far ahead, malformed.
    Refused(String),
}

impl Refusal {
    /// The control socket's answer.
    pub(super) fn answer(self) -> (ErrorCode, String) {
        match self {
            Refusal::Repeat(m) => (ErrorCode::NothingToDo, m),
            Refusal::Refused(m) => (ErrorCode::Refused, m),
        }
    }
}

impl Agent {
    fn check_statement(&self, line: &str) -> Result<SignedStatement, Refusal> {
        let Some(keys) = &self.operator_keys else {
            return Err(Refusal::Refused(
                "this agent trusts no operator key (trusted_operator_keys is not configured)"
                    .into(),
            ));
        };
        let s = SignedStatement::parse(line).map_err(|e| Refusal::Refused(e.to_string()))?;
        let last = self.node.record().control_counter;
        match s.check(&self.cluster, keys, unix_ms(), last) {
            Ok(()) => Ok(s),
            Err(StatementError::Repeat { .. }) => Err(self.not_newer(&s)),
            Err(e) => Err(Refusal::Refused(e.to_string())),
        }
    }

    /// A statement at or below the last applied counter: the same statement again is nothing
    /// to do; a different one is refused, saying which is newer (a signer's clock ahead?).
    fn not_newer(&self, s: &SignedStatement) -> Refusal {
        let at = |ms: u64| entente_api::history::rfc3339_ms(ms);
        match &self.statement {
            Some(last) if last == s => {
                Refusal::Repeat("this statement was applied here already".into())
            }
            Some(last) => Refusal::Refused(format!(
                "this statement, signed {}, is not newer than the last applied: {} campaign {}, \
                 signed {} by key {} (statements apply in signing order; was a signer's clock \
                 ahead?)",
                at(s.statement.counter),
                last.statement.action,
                last.statement.epoch,
                at(last.statement.counter),
                last.signature.key_id
            )),
            None => Refusal::Refused(format!(
                "this statement, signed {}, is not newer than the last control applied here",
                at(s.statement.counter)
            )),
        }
    }

    /// Records `s` durably, then hands it to the node (from the operator here, or from `peer`).
    fn apply_statement(&mut self, s: SignedStatement, from: Option<u64>) -> Result<()> {
        self.db.set_statement(&s.to_line())?;
        let c = to_control(&s);
        let st = &s.statement;
        let via = from.map_or(String::new(), |p| format!(", from node {p}"));
        let mut event = HistoryEvent::new(
            HistoryKind::ControlApplied,
            format!(
                "operator key {}: {} campaign {} ({}){via}",
                s.signature.key_id, st.action, st.epoch, st.reason
            ),
        )
        .epoch(st.epoch)
        .method(st.action.as_str())
        .reason(st.reason.clone());
        if let Some(p) = from {
            event = event.peer(p);
        }
        tracing::info!("{}", event.text);
        self.history(event);
        self.statement = Some(s);
        let now = self.now();
        match from {
            None => self.node.control(now, c),
            Some(p) => self
                .node
                .handle_message(now, NodeId(p), entente_proto::Message::Control(c)),
        }
        Ok(())
    }

    /// A statement given on the control socket: applied and made durable (and sent on) before
    /// the operator is told.
    pub(super) fn operator_statement(&mut self, line: &str) -> Result<(), Refusal> {
        let s = self.check_statement(line)?;
        if s.statement.action == Action::Rollback {
            self.rollback_possible(s.statement.epoch)?;
        }
        let failed = |e: anyhow::Error| Refusal::Refused(format!("recording the statement: {e}"));
        self.apply_statement(s, None).map_err(failed)?;
        self.carry_out().map_err(failed)
    }

    /// A rollback is refused where it is given once any link of the cluster (as this node
    /// knows it) committed the campaign's epoch: epochs only grow, so going back then takes a
    /// downgrade campaign. Given anyway elsewhere, each node that cannot roll back halts.
    fn rollback_possible(&self, epoch: u64) -> Result<(), Refusal> {
        let s = self.status();
        if s.epoch == epoch && s.links_committed > 0 {
            return Err(Refusal::Refused(format!(
                "{} link(s) committed epoch {epoch} already: a rollback cannot take them back. \
                 Going back takes two campaigns: a semantics downgrade (epoch {}: the same \
                 firmware, old semantics), then the old image (epoch {}); docs/protocol.md, \
                 \"Going back\"",
                s.links_committed,
                epoch + 1,
                epoch + 2
            )));
        }
        Ok(())
    }

    /// A statement a neighbour sent: applied if it holds; a repeat is ignored; anything else is
    /// refused, logged (at most once per neighbour per interval) and kept in the history.
    pub(super) fn peer_statement(&mut self, peer: u64, line: &str) -> Result<()> {
        match self.check_statement(line) {
            Ok(s) => self.apply_statement(s, Some(peer)),
            Err(Refusal::Repeat(_)) => Ok(()),
            Err(Refusal::Refused(why)) => {
                self.control_refused(peer, &why);
                Ok(())
            }
        }
    }

    /// A control from a neighbour without the statement that authorises it: refused.
    pub(super) fn unsigned_control(&mut self, peer: u64) {
        self.control_refused(peer, "a control without its signed statement");
    }

    fn control_refused(&mut self, peer: u64, why: &str) {
        self.controls_refused += 1;
        let now = Instant::now();
        let last = self.control_refusals.get(&peer).copied();
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY) {
            return;
        }
        self.control_refusals.insert(peer, now);
        tracing::warn!(peer, "operator statement refused: {why}");
        self.history(
            HistoryEvent::new(
                HistoryKind::ControlRefused,
                format!("operator statement from node {peer} refused: {why}"),
            )
            .peer(peer)
            .reason(why),
        );
    }

    /// The statement line to send for a control the node sends on (`None`: this agent holds no
    /// statement for it, and sends nothing: an unsigned control is refused everywhere).
    pub(super) fn statement_for(&self, c: &Control) -> Option<String> {
        self.statement
            .as_ref()
            .filter(|s| s.statement.counter == c.counter)
            .map(SignedStatement::to_line)
    }

    /// At start: the last statement applied, and, if the node's record is behind it (the agent
    /// stopped between recording a statement and the node's record), applied again.
    pub(super) fn restore_statement(&mut self) -> Result<()> {
        let Some(line) = self.db.statement()? else {
            return Ok(());
        };
        let s = match SignedStatement::parse(&line) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("the recorded operator statement is unreadable: {e}");
                return Ok(());
            }
        };
        if s.statement.counter > self.node.record().control_counter {
            let c = to_control(&s);
            self.statement = Some(s);
            let now = self.now();
            self.node.control(now, c);
        } else {
            self.statement = Some(s);
        }
        Ok(())
    }

    /// The last statement applied, for `status`.
    pub(super) fn control_status(&self) -> Option<ControlStatus> {
        let s = self.statement.as_ref()?;
        let st = &s.statement;
        Some(ControlStatus {
            action: st.action.as_str().to_owned(),
            epoch: st.epoch,
            key: s.signature.key_id.to_string(),
            signed_at: entente_api::history::rfc3339_ms(st.counter),
            counter: st.counter,
            expires_at: entente_api::history::rfc3339_ms(st.expires_at.saturating_mul(1000)),
            reason: st.reason.clone(),
        })
    }
}
