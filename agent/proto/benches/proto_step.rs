//! Micro-benchmarks of the protocol's hot paths (`cargo bench -p entente-proto --bench proto_step`).
//!
//! * `link_txn`: complete PROPOSE → REFLECT → COMMIT → COMMIT_ACK transactions between two
//!   in-memory [`LinkEnd`]s, timers re-armed as the node does (throughput: transactions/s);
//! * `wire`: [`wire::encode`] and [`wire::decode`] of a REFLECT and of a 100-entry gossip delta
//!   (throughput: bytes/s);
//! * `summary`: [`Summary::merge`] of a 1000-entry delta (into an empty replica, and again into one
//!   that already holds it), and [`Summary::delta_since`] (full state and last 100 changes);
//! * `node_probe`: [`Node::handle_message`] for a stream of data probes over 32 links (the data
//!   interpretation hot path; throughput: probes/s).
//!
//! Every group samples for about 3 s so the whole binary finishes well within two minutes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use entente_proto::link::{LinkCtx, LinkEnd, LinkState, LinkTimers};
use entente_proto::msg::{GossipDelta, Message, Txn, TxnKind};
use entente_proto::node::{Durable, NodeConfig, Output};
use entente_proto::phase::{Phase, PhaseEntry, Version};
use entente_proto::summary::Summary;
use entente_proto::types::{Epoch, Nanos, NodeId, Nonce, US};
use entente_proto::{wire, Node};

/// Round-trip time of the simulated links (the simulator's default: 2 × 10 µs).
const RTT: Nanos = 20 * US;

fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
}

// ---- (a) link transactions ----

fn link_ctx(ready_for: Epoch) -> LinkCtx {
    LinkCtx {
        ready_for: Some(ready_for),
        device_refused: false,
        nonce_floor: entente_proto::Nonce(0),
        firmware_digest: [0xab; 32],
        timers: LinkTimers::for_rtt(RTT),
        #[cfg(feature = "mutants")]
        mutant: None,
    }
}

/// Two connected ends of the link {1, 2}, agreed on epoch 0.
fn link_pair() -> (LinkEnd, LinkEnd) {
    let (a, b) = (NodeId(1), NodeId(2));
    let mut init = LinkEnd::new(a, b, LinkState::established(Epoch(0)));
    let mut resp = LinkEnd::new(b, a, LinkState::established(Epoch(0)));
    init.conn = Some(1);
    resp.conn = Some(1);
    (init, resp)
}

/// One complete transaction moving the link to its next epoch, each message handed straight to
/// the other end, each step followed by the timer re-arm the node performs.
fn transaction(init: &mut LinkEnd, resp: &mut LinkEnd, now: Nanos) -> Epoch {
    let e = init.state.committed.next();
    let ctx = link_ctx(e);
    init.peer_activated = Some(e);

    let fx = init.try_propose(&ctx);
    init.rearm(now, &ctx, fx.persist);
    let propose = fx.send.expect("the guard holds: PROPOSE");

    let fx = resp.on_txn(&propose, &ctx);
    resp.rearm(now, &ctx, fx.persist);
    let reflect = fx.send.expect("ready responder: REFLECT");

    let fx = init.on_txn(&reflect, &ctx);
    init.rearm(now, &ctx, fx.persist);
    let committed = fx.committed.expect("same nonce reflected: committed");
    let commit = init
        .device_applied(committed)
        .send
        .expect("device acknowledged: COMMIT");

    let fx = resp.on_txn(&commit, &ctx);
    resp.rearm(now, &ctx, fx.persist);
    let committed = fx.committed.expect("reflecting responder: committed");
    let ack = resp
        .device_applied(committed)
        .send
        .expect("device acknowledged: COMMIT_ACK");

    let fx = init.on_txn(&ack, &ctx);
    init.rearm(now, &ctx, fx.persist);
    fx.committed.unwrap_or(init.state.committed)
}

fn bench_link_txn(c: &mut Criterion) {
    // Sanity: one transaction commits both ends and leaves the initiator acknowledged.
    let (mut i, mut r) = link_pair();
    transaction(&mut i, &mut r, 0);
    assert_eq!(
        (i.state.committed, r.state.committed, i.state.acked),
        (Epoch(1), Epoch(1), true)
    );

    let mut g = c.benchmark_group("link_txn");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    g.bench_function("propose_reflect_commit_ack", |b| {
        let (mut init, mut resp) = link_pair();
        let mut now = 0;
        b.iter(|| {
            now += RTT;
            black_box(transaction(&mut init, &mut resp, black_box(now)))
        });
    });
    g.finish();
}

// ---- (b) wire encoding ----

fn reflect_msg() -> Message {
    Message::Txn(Txn {
        digest: [0x5a; 32],
        ..Txn::new(TxnKind::Reflect, Epoch(7), Nonce(3))
    })
}

fn phase_entry(i: u64) -> PhaseEntry {
    PhaseEntry {
        epoch: Epoch(1),
        phase: Phase::Activated,
        version: Version {
            incarnation: (i % 3) as u32,
            counter: (i % 7) as u32 + 1,
        },
    }
}

/// A delta of `links + phases + retired` entries, shaped like the simulator's: both ends' reports
/// of consecutive links, then phases, then a few retired pairs.
fn delta(links: u64, phases: u64, retired: u64) -> GossipDelta {
    GossipDelta {
        upto: 12_345,
        links: (0..links)
            .map(|k| {
                let (a, b) = (NodeId(k / 2), NodeId(k / 2 + 1));
                if k % 2 == 0 {
                    (a, b, Epoch(1))
                } else {
                    (b, a, Epoch(1))
                }
            })
            .collect(),
        phases: (0..phases).map(|n| (NodeId(n), phase_entry(n))).collect(),
        marks: (0..retired)
            .map(|k| {
                let version = entente_proto::msg::RetireVersion {
                    counter: 1,
                    by: NodeId(10_000 + 2 * k),
                };
                let mark = entente_proto::msg::RetireMark {
                    version,
                    retired: true,
                };
                (NodeId(10_000 + 2 * k), NodeId(10_001 + 2 * k), mark)
            })
            .collect(),
        ..GossipDelta::default()
    }
}

fn bench_wire(c: &mut Criterion) {
    let cases = [
        ("txn_reflect", reflect_msg()),
        // 100 entries: 70 link reports, 25 phases, 5 retired pairs.
        ("gossip_100", Message::Gossip(delta(70, 25, 5))),
    ];
    let mut g = c.benchmark_group("wire");
    configure(&mut g);
    for (name, msg) in &cases {
        let bytes = wire::encoded(msg);
        assert_eq!(wire::decode(&bytes).as_ref(), Ok(msg), "{name} round-trips");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("encode/{name}"), |b| {
            let mut out = Vec::with_capacity(bytes.len());
            b.iter(|| {
                out.clear();
                wire::encode(black_box(msg), &mut out);
                black_box(out.len())
            });
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| wire::decode(black_box(&bytes)))
        });
    }
    g.finish();
}

// ---- (c) summary CRDT ----

fn bench_summary(c: &mut Criterion) {
    // 1000 entries: 800 link reports (400 links, both ends), 200 phases.
    let d = delta(800, 200, 0);
    let entries = d.len() as u64;
    assert_eq!(entries, 1000);
    let mut full = Summary::new();
    assert!(full.merge(&d));
    assert_eq!(full.len(), 1000);

    let mut g = c.benchmark_group("summary");
    configure(&mut g);
    g.throughput(Throughput::Elements(entries));
    g.bench_function("merge_1000/into_empty", |b| {
        b.iter_batched_ref(
            Summary::new,
            |s| black_box(s.merge(black_box(&d))),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("merge_1000/already_known", |b| {
        let mut s = full.clone();
        b.iter(|| black_box(s.merge(black_box(&d))))
    });
    g.bench_function("delta_since/full_1000", |b| {
        let mut out = GossipDelta::default();
        b.iter(|| {
            full.delta_since(black_box(0), &mut out);
            black_box(out.links.len() + out.phases.len())
        })
    });
    // The usual case: a peer acknowledged all but the last 100 changes.
    let mut recent = full.clone();
    for n in 0..100 {
        let mut e = phase_entry(n);
        e.version.counter += 100;
        e.phase = Phase::Converged;
        assert!(recent.set_phase(NodeId(n), e));
    }
    let acked = recent.seq() - 100;
    g.throughput(Throughput::Elements(100));
    g.bench_function("delta_since/last_100", |b| {
        let mut out = GossipDelta::default();
        b.iter(|| {
            recent.delta_since(black_box(acked), &mut out);
            black_box(out.phases.len())
        })
    });
    g.finish();
}

// ---- (d) data probes through a node ----

/// Probes handed to the node per iteration (cycling over its links).
const PROBES: u64 = 1024;
/// Links of the probed node (a fat-tree switch of radix 32).
const DEGREE: u64 = 32;

fn bench_node_probe(c: &mut Criterion) {
    let me = NodeId(1000);
    let peers: Vec<NodeId> = (0..DEGREE).map(NodeId).collect();
    let durable = Durable {
        node: None,
        links: peers
            .iter()
            .map(|&p| (p, LinkState::established(Epoch(0))))
            .collect(),
    };
    let mut node = Node::new(NodeConfig::new(me, peers.clone(), RTT), &durable, 0);
    let mut buf: Vec<Output> = Vec::new();
    node.take_outputs(&mut buf);
    let stream: Vec<(NodeId, Message)> = (0..PROBES)
        .map(|k| {
            let msg = Message::Probe {
                epoch: Epoch(0),
                seq: k / DEGREE,
            };
            (peers[(k % DEGREE) as usize], msg)
        })
        .collect();
    // Sanity: matching probes produce no output and count no mismatch.
    for (p, m) in &stream {
        node.handle_message(0, *p, m.clone());
    }
    buf.clear();
    node.take_outputs(&mut buf);
    assert!(buf.is_empty());
    assert_eq!(node.stats().probe_mismatches, 0);

    let mut g = c.benchmark_group("node_probe");
    configure(&mut g);
    g.throughput(Throughput::Elements(PROBES));
    g.bench_function("handle_message_32_links", |b| {
        let mut now = 0;
        b.iter(|| {
            for (p, m) in &stream {
                now += US;
                node.handle_message(now, black_box(*p), black_box(m.clone()));
            }
            node.take_outputs(&mut buf);
            buf.clear();
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_link_txn,
    bench_wire,
    bench_summary,
    bench_node_probe
);
criterion_main!(benches);
