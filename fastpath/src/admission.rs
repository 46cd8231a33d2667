//! Who may start a handshake, and for how long: the admission rule every socket backend applies
//! to inbound connections before they authenticate, and the refusal count the layer above logs.
//!
//! An inbound connection is unauthenticated until its handshake is done. Until then it may hold
//! one handshake slot, and nothing larger than the handshake's frames (the session refuses any
//! other frame from its header: see [`crate::session::Session::admit_header`]). The slots are
//! shared out so that strangers cannot crowd out the configured peers:
//!
//! - each address in [`Config::reserved_peers`] has
//!   [`Config::reserved_handshakes_per_peer`] slots of its own (per peer listed at that address),
//!   and its handshakes get the full [`Config::handshake_timeout`];
//! - every other inbound handshake (and a configured address's beyond its reserved slots) takes a
//!   slot of the shared pool of [`Config::max_pending_handshakes`], at most
//!   [`Config::max_pending_per_source`] of them per source address, and must finish within
//!   [`Config::stranger_handshake_timeout`] if the source is not a configured peer's.
//!
//! Established connections hold no slot and are never closed to make room; connections we open
//! ourselves hold none either (their number is ours to bound).

use crate::transport::{Config, RefuseReason};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The slot an admitted inbound handshake holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The source address (IPv4-mapped addresses in their IPv4 form).
    pub ip: IpAddr,
    /// Whether it is one of the source's reserved slots (else a slot of the shared pool).
    pub reserved: bool,
}

/// The admission rule of one transport.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    /// Reserved slots per configured address.
    reserved: HashMap<IpAddr, usize>,
    shared: usize,
    per_source: usize,
    peer_deadline: Duration,
    stranger_deadline: Duration,
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        let mut reserved = HashMap::new();
        for ip in &config.reserved_peers {
            *reserved.entry(canonical(*ip)).or_insert(0) += config.reserved_handshakes_per_peer;
        }
        Admission {
            reserved,
            shared: config.max_pending_handshakes,
            per_source: config.max_pending_per_source,
            peer_deadline: config.handshake_timeout,
            stranger_deadline: config.stranger_handshake_timeout,
        }
    }

    /// Whether `ip` is a configured peer's address.
    pub fn is_peer(&self, ip: IpAddr) -> bool {
        self.reserved.contains_key(&canonical(ip))
    }

    /// A slot for a handshake from `remote`, given the slots the pending inbound handshakes
    /// hold; `None`: refuse it ([`RefuseReason::Busy`]).
    pub fn admit(
        &self,
        remote: SocketAddr,
        held: impl Iterator<Item = Slot> + Clone,
    ) -> Option<Slot> {
        let ip = canonical(remote.ip());
        if let Some(&cap) = self.reserved.get(&ip) {
            let mine = held.clone().filter(|s| s.reserved && s.ip == ip).count();
            if mine < cap {
                return Some(Slot { ip, reserved: true });
            }
        }
        let (mut total, mut from_ip) = (0, 0);
        for s in held.filter(|s| !s.reserved) {
            total += 1;
            from_ip += usize::from(s.ip == ip);
        }
        (total < self.shared && from_ip < self.per_source).then_some(Slot {
            ip,
            reserved: false,
        })
    }

    /// How long a handshake from `ip` may take.
    pub fn deadline(&self, ip: IpAddr) -> Duration {
        if self.is_peer(ip) {
            self.peer_deadline
        } else {
            self.stranger_deadline
        }
    }
}

/// Most distinct sources a [`RefusalLog`] remembers in one interval (more are counted as
/// connections, not as sources).
const MAX_SOURCES: usize = 4096;

/// Refused connections counted over an interval, so that a flood of them makes one log line per
/// interval, not one per connection: feed it every [`crate::Event::Refused`] that does not
/// concern a configured peer, and log what [`RefusalLog::summary`] returns.
#[derive(Debug, Clone)]
pub struct RefusalLog {
    interval: Duration,
    since: Instant,
    count: u64,
    busy: u64,
    timeout: u64,
    authentication: u64,
    sources: HashSet<IpAddr>,
    sources_overflowed: bool,
}

impl RefusalLog {
    /// A log that summarises once per `interval`.
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            since: Instant::now(),
            count: 0,
            busy: 0,
            timeout: 0,
            authentication: 0,
            sources: HashSet::new(),
            sources_overflowed: false,
        }
    }

    /// Counts one refused connection.
    pub fn record(&mut self, addr: SocketAddr, reason: &RefuseReason) {
        self.count += 1;
        match reason {
            RefuseReason::Busy => self.busy += 1,
            RefuseReason::Timeout => self.timeout += 1,
            RefuseReason::Authentication => self.authentication += 1,
            _ => {}
        }
        if self.sources.len() < MAX_SOURCES {
            self.sources.insert(canonical(addr.ip()));
        } else if !self.sources.contains(&canonical(addr.ip())) {
            self.sources_overflowed = true;
        }
    }

    /// Refusals counted so far in this interval.
    pub fn pending(&self) -> u64 {
        self.count
    }

    /// Once the interval is over and something was refused in it: the line to log ("refused N
    /// connections from M sources in the last 10 s (…)"), and the count starts again.
    pub fn summary(&mut self, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < self.interval {
            return None;
        }
        self.since = now;
        if self.count == 0 {
            return None;
        }
        let other = self.count - self.busy - self.timeout - self.authentication;
        let line = format!(
            "refused {} connection{} from {}{} source{} in the last {} s ({} busy, {} timed out, \
             {} failed authentication, {} other)",
            self.count,
            if self.count == 1 { "" } else { "s" },
            if self.sources_overflowed { "over " } else { "" },
            self.sources.len(),
            if self.sources.len() == 1 { "" } else { "s" },
            elapsed.as_secs(),
            self.busy,
            self.timeout,
            self.authentication,
            other,
        );
        self.count = 0;
        self.busy = 0;
        self.timeout = 0;
        self.authentication = 0;
        self.sources.clear();
        self.sources_overflowed = false;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &[&str]) -> Config {
        Config {
            reserved_peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
            reserved_handshakes_per_peer: 2,
            max_pending_handshakes: 5,
            max_pending_per_source: 3,
            ..Config::default()
        }
    }

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    fn fill(a: &Admission, held: &mut Vec<Slot>, from: &str, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            if let Some(s) = a.admit(at(from), held.iter().copied()) {
                held.push(s);
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn strangers_are_capped_per_source_and_in_total() {
        let a = Admission::new(&config(&[]));
        let mut held = Vec::new();
        assert_eq!(fill(&a, &mut held, "10.0.0.9", 10), 3);
        assert_eq!(fill(&a, &mut held, "10.0.0.8", 10), 2);
        assert_eq!(fill(&a, &mut held, "10.0.0.7", 10), 0);
    }

    #[test]
    fn configured_peers_keep_their_slots() {
        let a = Admission::new(&config(&["10.0.0.1", "10.0.0.2", "10.0.0.2"]));
        let mut held = Vec::new();
        for s in 0..20 {
            fill(&a, &mut held, &format!("10.0.1.{s}"), 10);
        }
        assert_eq!(held.len(), 5, "the shared pool is full");
        // Reserved slots, then the shared pool (full): per peer at the address.
        assert_eq!(fill(&a, &mut held, "10.0.0.1", 10), 2);
        assert_eq!(fill(&a, &mut held, "10.0.0.2", 10), 4);
        // An IPv4-mapped address is the same source.
        assert!(a
            .admit(at("::ffff:10.0.0.1"), held.iter().copied())
            .is_none());
        assert!(a.is_peer("::ffff:10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn strangers_get_the_short_deadline() {
        let c = Config {
            handshake_timeout: Duration::from_secs(20),
            stranger_handshake_timeout: Duration::from_secs(2),
            ..config(&["10.0.0.1"])
        };
        let a = Admission::new(&c);
        assert_eq!(
            a.deadline("10.0.0.1".parse().unwrap()),
            Duration::from_secs(20)
        );
        assert_eq!(
            a.deadline("10.0.0.5".parse().unwrap()),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn refusals_are_summarised_once_per_interval() {
        let mut log = RefusalLog::new(Duration::from_secs(10));
        let start = log.since;
        for i in 0..300u32 {
            let ip = format!("10.0.0.{}", i % 3);
            let reason = if i % 2 == 0 {
                RefuseReason::Busy
            } else {
                RefuseReason::Timeout
            };
            log.record(at(&ip), &reason);
        }
        assert_eq!(log.summary(start + Duration::from_secs(5)), None);
        let line = log.summary(start + Duration::from_secs(10)).unwrap();
        assert_eq!(
            line,
            "refused 300 connections from 3 sources in the last 10 s \
             (150 busy, 150 timed out, 0 failed authentication, 0 other)"
        );
        assert_eq!(log.pending(), 0);
        assert_eq!(log.summary(start + Duration::from_secs(30)), None);
    }
}
