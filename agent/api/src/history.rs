//! The agent's history as typed events: what `entented` writes, `entente history` shows and the
//! offline checker ([`crate::check_histories`]) reads. Every event keeps a sentence for people
//! (`text`); programs read the fields, never the sentence.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// A link's epoch moved by a transaction (`peer`, `epoch`).
    LinkCommitted,
    /// A link's epoch agreed by LINK_HELLO (`peer`, `epoch`).
    LinkAgreed,
    /// A link whose epoch the two windows do not both speak (`peer`, `epoch`).
    LinkIncompatible,
    /// The device failed to apply a committed link epoch (`peer`, `epoch`, `reason`).
    DeviceLagging,
    /// The device cannot take a link epoch (`epoch`, `reason`).
    DeviceRefusedEpoch,
    /// The node's campaign phase changed (`epoch`, `from`, `to`).
    Phase,
    /// The campaign's image is staged in the device (`epoch`).
    Staged,
    /// Staging failed (`epoch`, `reason`).
    StagingFailed,
    /// An activation began (`epoch`, `method`).
    Activating,
    /// The device runs the campaign's firmware (`epoch`).
    Activated,
    /// An activation failed (`epoch`, `reason`).
    ActivationFailed,
    /// Read from the device at start: it runs firmware of campaign `epoch`.
    RunningAtStart,
    /// The state store was lost (`reason`: what remained).
    StoreLost,
    /// The node began draining its workloads for a campaign (`epoch`).
    Draining,
    /// The node drained for a campaign (`epoch`).
    Drained,
    /// A drain failed (`epoch`, `reason`).
    DrainFailed,
    /// The node asked its neighbours for leases (`epoch`).
    LeasesAsked,
    /// An operator started a campaign on this node, its origin (`epoch`).
    CampaignStarted,
    /// An image or manifest arrived, or an image transfer began (`epoch` where known).
    Image,
    /// The node's image for a campaign is complete in its store (`epoch`; `counts`: chunks
    /// `fetched`, `in_place` (written from the receive buffer), `resumed`, and `ms`).
    ImageStored,
    /// A stored image was pruned (`epoch`: the campaign that converged here).
    ImagePruned,
    /// A neighbour sent a chunk or manifest that was refused (`peer`, `reason`).
    PeerRefused,
    /// A campaign was refused here (`epoch`, `reason`).
    CampaignRefused,
    /// A neighbour that is not configured, or a malformed message (`peer`, `reason`).
    Peer,
    /// A probe was read under another epoch than its sender's (`peer`, `epoch`): a safety
    /// violation.
    ProbeMismatch,
    /// The node took a new incarnation.
    Reincarnated,
    /// A neighbour held an implausible report of this node.
    ImplausibleReport,
    /// An operator retired the link to `peer`.
    LinkRetired,
    /// An operator restored the link to `peer`.
    LinkRestored,
    /// An activation ran past the profile's maximum (`epoch`; `counts`: `took_ms`).
    ActivationOverran,
    /// A link's LINK_HELLO failed: the windows share no epoch (`peer`).
    HelloFailed,
    /// A neighbour broke the protocol (`peer`, `reason`).
    ProtocolError,
    /// A neighbour refused a lease (`peer`).
    LeaseDenied,
    /// A rollback was refused (`epoch`).
    RollbackRefused,
    /// The device runs the firmware it ran before campaign `epoch` again.
    RolledBack,
    /// The node passed the health hook after activating campaign `epoch`.
    HealthChecked,
    /// The node failed its health gate after activating campaign `epoch` (`reason`): it rolls
    /// back.
    HealthGateFailed,
    /// A rollback failed: the device still runs campaign `epoch`'s firmware (`reason`).
    RollbackFailed,
    /// An operator's request (`reason`).
    Operator,
    /// An operator statement was applied here (`epoch`, `method`: the action, `reason`: the
    /// operator's; `peer`: the neighbour it came from, none when given here).
    ControlApplied,
    /// An operator statement was refused (`peer` it came from, `reason`: why).
    ControlRefused,
    /// Anything else: entries written before events were typed, and kinds newer than this
    /// reader.
    #[serde(other)]
    Note,
}

/// One thing that happened, with the fields that apply to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// What kind of thing.
    pub kind: HistoryKind,
    /// The campaign or link epoch concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The neighbour concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
    /// The state before (a phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The state after (a phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// How (an activation method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Why, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Numbers the event reports, by name (see the kind).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// The event as a sentence, for people.
    pub text: String,
}

impl HistoryEvent {
    /// An event of `kind` described by `text`, with no fields yet.
    pub fn new(kind: HistoryKind, text: impl Into<String>) -> HistoryEvent {
        HistoryEvent {
            kind,
            epoch: None,
            peer: None,
            from: None,
            to: None,
            method: None,
            reason: None,
            counts: BTreeMap::new(),
            text: text.into(),
        }
    }

    /// With the epoch concerned.
    pub fn epoch(mut self, epoch: u64) -> HistoryEvent {
        self.epoch = Some(epoch);
        self
    }

    /// With the neighbour concerned.
    pub fn peer(mut self, peer: u64) -> HistoryEvent {
        self.peer = Some(peer);
        self
    }

    /// With the states before and after.
    pub fn from_to(mut self, from: impl Into<String>, to: impl Into<String>) -> HistoryEvent {
        self.from = Some(from.into());
        self.to = Some(to.into());
        self
    }

    /// With the method.
    pub fn method(mut self, method: impl Into<String>) -> HistoryEvent {
        self.method = Some(method.into());
        self
    }

    /// With the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> HistoryEvent {
        self.reason = Some(reason.into());
        self
    }

    /// With a number it reports.
    pub fn count(mut self, name: &str, value: u64) -> HistoryEvent {
        self.counts.insert(name.to_owned(), value);
        self
    }

    /// The stored form (JSON).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a history event serializes")
    }

    /// Reads the stored form; an entry written before events were typed becomes a
    /// [`HistoryKind::Note`] with its sentence.
    pub fn from_stored(s: &str) -> HistoryEvent {
        serde_json::from_str(s).unwrap_or_else(|_| HistoryEvent::new(HistoryKind::Note, s))
    }
}

/// One history entry: when, and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When, RFC 3339 in UTC with milliseconds.
    pub at: String,
    /// The same, Unix time in milliseconds.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: HistoryEvent,
}

impl HistoryEntry {
    /// An entry at `at_ms` (Unix milliseconds).
    pub fn new(at_ms: u64, event: HistoryEvent) -> HistoryEntry {
        HistoryEntry {
            at: rfc3339_ms(at_ms),
            at_ms,
            event,
        }
    }
}

/// Unix milliseconds as RFC 3339 in UTC, e.g. `2026-12-07T22:01:21.005Z`.
pub fn rfc3339_ms(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        at_ms % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_680_881_005), "2026-12-07T22:01:21.005Z");
    }

    #[test]
    fn events_store_and_read_back_and_old_lines_become_notes() {
        let e = HistoryEvent::new(HistoryKind::LinkCommitted, "link to 2 committed epoch 3")
            .peer(2)
            .epoch(3);
        assert_eq!(HistoryEvent::from_stored(&e.to_stored()), e);
        let old = HistoryEvent::from_stored("epoch 1 activated");
        assert_eq!(old.kind, HistoryKind::Note);
        assert_eq!(old.text, "epoch 1 activated");
        let j = serde_json::to_value(HistoryEntry::new(0, e)).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"at": "1970-01-01T00:00:00.000Z", "at_ms": 0,
                "kind": "link_committed", "peer": 2, "epoch": 3,
                "text": "link to 2 committed epoch 3"})
        );
    }
}
