//! Simulated hosts and links around the agent's own fan-out policy (`entente_node::fanout`):
//! each host runs a [`ChunkFetch`] and a [`ServeQueue`] exactly as `entented` does; this file
//! only supplies what the agent gets from its hardware — links of a given bandwidth and
//! latency, the time, and the delivery of requests, answers and chunks.
//!
//! A chunk occupies the sender's uplink and the receiver's downlink for `chunk / bandwidth`
//! and arrives one latency later; requests and answers take one latency. A host learns that a
//! neighbour holds a chunk when the chunk arrives there (the agent's `Have` rounds are 10 ms;
//! at these bandwidths announcing at once is the charitable model of them).

use super::{FanoutConfig, Strategy};
use entente_node::fanout::{
    Admit, ChunkFetch, ChunkSet, FetchParams, Holdings, ImageId, ImageShape, RateLimit,
    ServeParams, ServeQueue, ServeReq, Strategy as Policy,
};
use entente_node::Nanos;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The image every run moves.
const IMAGE: ImageId = [0xe1; 32];

/// What the loop measured.
pub(super) struct Outcome {
    /// When the last host completed, seconds.
    pub all_hosts_s: f64,
    /// Most bytes one host sent.
    pub max_upload_bytes: u64,
    /// Chunk transfers.
    pub transfers: u64,
}

/// Something that happens to a host at a time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A chunk request from `from` reaches `to`.
    Request {
        to: u32,
        from: u32,
        slot: u32,
        index: u32,
    },
    /// `from` declined the request in `slot` (`busy`: uplink busy; else it had nothing).
    Declined {
        to: u32,
        from: u32,
        slot: u32,
        busy: bool,
    },
    /// A chunk reaches `to`.
    Chunk {
        to: u32,
        from: u32,
        slot: u32,
        index: u32,
    },
    /// `host`'s uplink finished the chunk for `to`'s `slot`.
    UplinkFree { host: u32, to: u32, slot: u32 },
    /// `host`'s fetch asked to be woken (a neighbour's rest ended).
    Wake { host: u32 },
}

struct Host {
    fetch: Option<ChunkFetch>,
    serve: ServeQueue<u32>,
    has: ChunkSet,
    holdings: Holdings,
    /// Whether the uplink is sending a chunk.
    sending: bool,
    downlink_free: f64,
    uploaded: u64,
    next_slot: u32,
    wake_at: Option<u64>,
    done_at: Option<f64>,
}

struct Net<'a> {
    adj: &'a [Vec<u32>],
    shape: ImageShape,
    hosts: Vec<Host>,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    bandwidth: f64,
    latency: f64,
    transfers: u64,
    unlimited: RateLimit,
}

fn ns(t: f64) -> Nanos {
    (t * 1e9) as Nanos
}

impl Net<'_> {
    fn at(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((t.to_bits(), self.seq, ev)));
    }

    /// Lets `h`'s fetch ask its neighbours for what it may.
    fn fill(&mut self, now: f64, h: u32) {
        let host = &mut self.hosts[h as usize];
        let Some(fetch) = host.fetch.as_mut() else {
            return;
        };
        let slot = &mut host.next_slot;
        let asks = fetch.fill(
            ns(now),
            &self.adj[h as usize]
                .iter()
                .map(|&m| u64::from(m))
                .collect::<Vec<_>>(),
            &host.holdings,
            &mut self.unlimited,
            |_, _| {
                *slot += 1;
                Some(*slot)
            },
        );
        let wake = fetch.next_wakeup();
        for a in asks {
            let (to, slot, index) = (a.peer as u32, a.slot, a.index);
            self.at(
                now + self.latency,
                Ev::Request {
                    to,
                    from: h,
                    slot,
                    index,
                },
            );
        }
        if let Some(w) = wake {
            let host = &mut self.hosts[h as usize];
            if host.wake_at.is_none_or(|t| w < t) {
                host.wake_at = Some(w);
                self.at(w as f64 / 1e9, Ev::Wake { host: h });
            }
        }
    }

    /// Sends what `m`'s queue holds, one chunk at a time on its uplink.
    fn transmit(&mut self, now: f64, m: u32) {
        while !self.hosts[m as usize].sending {
            let Some(r) = self.hosts[m as usize].serve.pop() else {
                return;
            };
            let (to, slot, index) = (r.peer as u32, r.slot, r.index);
            if !self.hosts[m as usize].has.contains(index) {
                self.at(
                    now + self.latency,
                    Ev::Declined {
                        to,
                        from: m,
                        slot,
                        busy: false,
                    },
                );
                continue;
            }
            let len = self.shape.chunk_len(index);
            let wire = f64::from(len) / self.bandwidth;
            let sender = &mut self.hosts[m as usize];
            sender.serve.sent(&r, ns(now));
            sender.sending = true;
            sender.uploaded += u64::from(len);
            self.transfers += 1;
            let down = &mut self.hosts[to as usize].downlink_free;
            *down = down.max(now) + wire;
            let arrive = (now + wire).max(*down) + self.latency;
            self.at(now + wire, Ev::UplinkFree { host: m, to, slot });
            self.at(
                arrive,
                Ev::Chunk {
                    to,
                    from: m,
                    slot,
                    index,
                },
            );
        }
    }

    fn handle(&mut self, now: f64, ev: Ev) {
        match ev {
            Ev::Request {
                to,
                from,
                slot,
                index,
            } => {
                let req = ServeReq {
                    conn: from,
                    peer: u64::from(from),
                    image: IMAGE,
                    index,
                    slot,
                };
                match self.hosts[to as usize].serve.admit(req, ns(now)) {
                    Admit::Busy => self.at(
                        now + self.latency,
                        Ev::Declined {
                            to: from,
                            from: to,
                            slot,
                            busy: true,
                        },
                    ),
                    Admit::Queued => self.transmit(now, to),
                }
            }
            Ev::Declined {
                to,
                from,
                slot,
                busy,
            } => {
                if let Some(f) = self.hosts[to as usize].fetch.as_mut() {
                    f.declined(u64::from(from), slot, busy, ns(now));
                }
                self.fill(now, to);
            }
            Ev::UplinkFree { host, to, slot } => {
                self.hosts[host as usize].sending = false;
                self.hosts[host as usize].serve.left(u64::from(to), slot);
                self.transmit(now, host);
            }
            Ev::Wake { host } => {
                let h = &mut self.hosts[host as usize];
                if h.wake_at.is_some_and(|t| t <= ns(now)) {
                    h.wake_at = None;
                }
                if let Some(f) = h.fetch.as_mut() {
                    f.expire(ns(now));
                }
                self.fill(now, host);
            }
            Ev::Chunk {
                to,
                from,
                slot,
                index,
            } => self.arrive(now, to, from, slot, index),
        }
    }

    fn arrive(&mut self, now: f64, h: u32, from: u32, slot: u32, index: u32) {
        let len = self.shape.chunk_len(index) as usize;
        let host = &mut self.hosts[h as usize];
        let Some(f) = host.fetch.as_mut() else {
            return;
        };
        if f.arrived(u64::from(from), slot, len, ns(now), &mut self.unlimited)
            .is_none()
        {
            return;
        }
        host.has.insert(index);
        if f.done() {
            host.fetch = None;
            host.done_at = Some(now);
        }
        let chunks = self.shape.chunk_count();
        for i in 0..self.adj[h as usize].len() {
            let m = self.adj[h as usize][i];
            let n = &mut self.hosts[m as usize];
            n.holdings.add(u64::from(h), IMAGE, chunks, index);
            if n.fetch.as_ref().is_some_and(|f| f.in_flight() < 2) {
                self.fill(now, m);
            }
        }
        self.fill(now, h);
    }
}

/// Runs the loop: host 0 holds every chunk at time 0; the others fetch until all hold them.
pub(super) fn simulate(cfg: &FanoutConfig, adj: &[Vec<u32>], chunks: u32) -> Outcome {
    let shape = ImageShape {
        id: IMAGE,
        size: cfg.image_bytes.max(1),
        chunk_size: cfg.chunk_bytes.min(u64::from(u32::MAX)) as u32,
    };
    debug_assert_eq!(shape.chunk_count(), chunks);
    let policy = match cfg.strategy {
        Strategy::Pipeline => Policy::Pipeline,
        Strategy::PullOne => Policy::PullOne { source: 0 },
    };
    // The agent's back-offs are tens of milliseconds, tuned for capped links on loopback and
    // in the datacentre; here they scale with the simulated link: a busy neighbour is asked
    // again after a quarter of a chunk time and a round trip (the best of 0.1, 0.25, 0.5, 1 and
    // 2 chunk times measured at 256 and 2,000 hosts), one with nothing after four times that.
    let chunk_s = f64::from(shape.chunk_size) / cfg.bandwidth;
    let busy = ns(chunk_s / 4.0 + 2.0 * cfg.latency).max(1);
    let params = FetchParams {
        not_yet_backoff: 4 * busy,
        busy_backoff: busy,
        ..FetchParams::agent(shape.chunk_size, 0.0, policy)
    };
    let hosts = (0..adj.len())
        .map(|h| Host {
            fetch: (h != 0).then(|| ChunkFetch::new(shape, 0..chunks, h as u64, params)),
            serve: ServeQueue::new(ServeParams::agent(policy)),
            has: if h == 0 {
                ChunkSet::full(chunks)
            } else {
                ChunkSet::empty(chunks)
            },
            holdings: Holdings::default(),
            sending: false,
            downlink_free: 0.0,
            uploaded: 0,
            next_slot: 0,
            wake_at: None,
            done_at: (h == 0).then_some(0.0),
        })
        .collect();
    let mut net = Net {
        adj,
        shape,
        hosts,
        events: BinaryHeap::new(),
        seq: 0,
        bandwidth: cfg.bandwidth,
        latency: cfg.latency,
        transfers: 0,
        unlimited: RateLimit::unlimited(),
    };
    for &m in &adj[0] {
        net.hosts[m as usize]
            .holdings
            .record(0, IMAGE, ChunkSet::full(chunks));
    }
    for h in 1..adj.len() as u32 {
        net.fill(0.0, h);
    }
    while let Some(Reverse((t, _, ev))) = net.events.pop() {
        net.handle(f64::from_bits(t), ev);
    }
    let all = net.hosts.iter().map(|h| h.done_at.unwrap_or(f64::INFINITY));
    Outcome {
        all_hosts_s: all.fold(0.0, f64::max),
        max_upload_bytes: net.hosts.iter().map(|h| h.uploaded).max().unwrap_or(0),
        transfers: net.transfers,
    }
}
