//! Fast-path benchmarks.
//!
//! - criterion: frame header decode (and a whole 64-byte frame with its checksum);
//! - interleaved comparisons against a minimal std `TcpStream` baseline written here: ping-pong
//!   round trip (64-byte messages) and bulk throughput (1 MiB chunks). Rounds alternate baseline
//!   and transport, and the report gives medians and their ratio.
//!
//! `FASTPATH_REPORT=docs/bench/fastpath.md cargo bench -p entente-benches --bench fastpath`
//! also writes the Markdown report.

use bytes::Bytes;
use criterion::Criterion;
use entente_fastpath::frame::{decode_frame, Fields, FrameHeader, Kind};
use entente_fastpath::{ClusterKey, Config, ConnId, Event, FrameMacs, TcpTransport, Transport};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const MSG: usize = 64;
const PING_ROUNDS: usize = 15;
const PINGS_PER_ROUND: usize = 2000;
const CHUNK: usize = 1 << 20;
const BULK_ROUNDS: usize = 9;
const CHUNKS_PER_ROUND: usize = 256;

fn key() -> ClusterKey {
    ClusterKey::from_bytes(&[0x42; 32]).expect("key")
}

fn header_bench(c: &mut Criterion) {
    let f = Fields {
        kind: Kind::Data,
        flags: 0,
        src: 1,
        dst: 2,
        seq: 77,
        generation: 3,
        aux: 0,
        freed: 5,
    };
    let payload = [7u8; MSG];
    let frame = [FrameHeader::new(f, &payload).bytes().as_slice(), &payload].concat();
    c.bench_function("header_decode", |b| {
        b.iter(|| FrameHeader::decode(black_box(&frame)).map(|h| h.len()))
    });
    c.bench_function("frame_decode_64B_with_checksum", |b| {
        b.iter(|| decode_frame(black_box(&frame)).map(|(h, _)| h.len()))
    });
}

// ---- baseline: std TcpStream ----

fn std_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            thread::spawn(move || {
                // One byte says what this connection is for: echo 64-byte messages, or sink
                // rounds of chunks and acknowledge each round.
                let mut kind = [0u8; 1];
                s.read_exact(&mut kind).expect("kind");
                if kind[0] == b'p' {
                    let mut m = [0u8; MSG];
                    while s.read_exact(&mut m).is_ok() {
                        s.write_all(&m).expect("write");
                    }
                } else {
                    let mut buf = vec![0u8; CHUNK];
                    'rounds: loop {
                        for _ in 0..CHUNKS_PER_ROUND {
                            if s.read_exact(&mut buf).is_err() {
                                break 'rounds;
                            }
                        }
                        s.write_all(b"k").expect("ack");
                    }
                }
            });
        }
    });
    addr
}

struct StdClient {
    ping: TcpStream,
    bulk: TcpStream,
}

impl StdClient {
    fn connect(addr: SocketAddr) -> StdClient {
        let open = |kind: &[u8]| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s.write_all(kind).expect("kind");
            s
        };
        StdClient {
            ping: open(b"p"),
            bulk: open(b"b"),
        }
    }
    fn ping_round(&mut self) -> f64 {
        let mut m = [1u8; MSG];
        let t = Instant::now();
        for _ in 0..PINGS_PER_ROUND {
            self.ping.write_all(&m).expect("w");
            self.ping.read_exact(&mut m).expect("r");
        }
        t.elapsed().as_secs_f64() / PINGS_PER_ROUND as f64
    }
    fn bulk_round(&mut self, chunk: &[u8]) -> f64 {
        let t = Instant::now();
        for _ in 0..CHUNKS_PER_ROUND {
            self.bulk.write_all(chunk).expect("w");
        }
        let mut k = [0u8; 1];
        self.bulk.read_exact(&mut k).expect("ack");
        (CHUNK * CHUNKS_PER_ROUND) as f64 / t.elapsed().as_secs_f64()
    }
}

// ---- entente tcp transport ----

/// The transport's default configuration (frame MACs on), with busy polling, or untagged.
#[derive(Clone, Copy)]
enum Setup {
    Default,
    BusyPoll,
    Untagged,
}

fn config(setup: Setup) -> Config {
    let mut c = Config::default();
    match setup {
        Setup::Default => {}
        Setup::BusyPoll => c.busy_poll = Duration::from_micros(50),
        Setup::Untagged => c.frame_macs = FrameMacs::Off,
    }
    c
}

fn entente_server(setup: Setup) -> SocketAddr {
    let mut t = TcpTransport::bind(
        "127.0.0.1:0".parse().expect("addr"),
        2,
        key(),
        config(setup),
    )
    .expect("bind");
    let addr = t.local_addr();
    thread::spawn(move || {
        let mut ev = Vec::with_capacity(1024);
        let mut chunks = 0;
        loop {
            ev.clear();
            t.poll(&mut ev, None).expect("poll");
            for e in ev.drain(..) {
                match e {
                    Event::Up(c) => {
                        for _ in 0..4 {
                            t.grant_bulk(c, CHUNK as u32).expect("grant");
                        }
                    }
                    Event::Message(c, m) => t.send(c, m).expect("echo"),
                    Event::Bulk { conn, .. } => {
                        chunks += 1;
                        t.grant_bulk(conn, CHUNK as u32).expect("grant");
                        if chunks == CHUNKS_PER_ROUND {
                            chunks = 0;
                            t.send(conn, Bytes::from_static(b"k")).expect("ack");
                        }
                    }
                    Event::Down(..) => return,
                    _ => {}
                }
            }
        }
    });
    addr
}

struct EntenteClient {
    t: TcpTransport,
    conn: ConnId,
    grants: Vec<u32>,
    ev: Vec<Event>,
}

impl EntenteClient {
    fn connect(addr: SocketAddr, setup: Setup) -> EntenteClient {
        let mut t = TcpTransport::bind(
            "127.0.0.1:0".parse().expect("addr"),
            1,
            key(),
            config(setup),
        )
        .expect("bind");
        t.connect(addr).expect("connect");
        let mut ev = Vec::with_capacity(1024);
        let mut grants = Vec::new();
        let conn = loop {
            t.poll(&mut ev, None).expect("poll");
            if let Some(c) = ev.iter().find_map(|e| match e {
                Event::Up(c) => Some(*c),
                _ => None,
            }) {
                break c;
            }
        };
        collect_grants(&mut ev, &mut grants);
        ev.clear();
        while grants.len() < 4 {
            t.poll(&mut ev, None).expect("poll");
            collect_grants(&mut ev, &mut grants);
            ev.clear();
        }
        EntenteClient {
            t,
            conn,
            grants,
            ev,
        }
    }

    fn ping_round(&mut self) -> f64 {
        let m = Bytes::from(vec![1u8; MSG]);
        let start = Instant::now();
        for _ in 0..PINGS_PER_ROUND {
            self.t.send(self.conn, m.clone()).expect("send");
            'wait: loop {
                self.ev.clear();
                self.t.poll(&mut self.ev, None).expect("poll");
                for e in &self.ev {
                    if matches!(e, Event::Message(..)) {
                        break 'wait;
                    }
                }
            }
        }
        start.elapsed().as_secs_f64() / PINGS_PER_ROUND as f64
    }

    fn bulk_round(&mut self, chunk: &Bytes) -> f64 {
        let start = Instant::now();
        let mut sent = 0;
        loop {
            while sent < CHUNKS_PER_ROUND {
                let Some(slot) = self.grants.pop() else { break };
                self.t
                    .send_bulk(self.conn, slot, chunk.clone())
                    .expect("bulk");
                sent += 1;
            }
            self.ev.clear();
            self.t.poll(&mut self.ev, None).expect("poll");
            let done = self.ev.iter().any(|e| matches!(e, Event::Message(..)));
            collect_grants(&mut self.ev, &mut self.grants);
            if done {
                break;
            }
        }
        (CHUNK * CHUNKS_PER_ROUND) as f64 / start.elapsed().as_secs_f64()
    }
}

fn collect_grants(ev: &mut [Event], grants: &mut Vec<u32>) {
    for e in ev.iter() {
        if let Event::BulkGrant { slot, .. } = e {
            grants.push(*slot);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Comparison {
    what: &'static str,
    unit: &'static str,
    baseline: f64,
    entente: f64,
    target: &'static str,
}

/// Runs `rounds` rounds of each contender, alternating which goes first, after one warm-up
/// round each; returns the median of each.
fn interleaved(
    rounds: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (f64, f64) {
    a();
    b();
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            va.push(a());
            vb.push(b());
        } else {
            vb.push(b());
            va.push(a());
        }
    }
    (median(va), median(vb))
}

fn compare() -> Vec<Comparison> {
    let mut std_c = StdClient::connect(std_server());
    let mut ent = EntenteClient::connect(entente_server(Setup::Default), Setup::Default);
    let mut ent_spin = EntenteClient::connect(entente_server(Setup::BusyPoll), Setup::BusyPoll);
    let mut untagged = EntenteClient::connect(entente_server(Setup::Untagged), Setup::Untagged);
    let mut rows = Vec::new();
    let (b, e) = interleaved(PING_ROUNDS, || std_c.ping_round(), || ent.ping_round());
    rows.push(Comparison {
        what: "tcp ping-pong round trip, 64 B (default configuration)",
        unit: "µs",
        baseline: b * 1e6,
        entente: e * 1e6,
        target: "≤ 1.2× baseline",
    });
    let (b, e) = interleaved(PING_ROUNDS, || std_c.ping_round(), || ent_spin.ping_round());
    rows.push(Comparison {
        what: "tcp ping-pong round trip, 64 B (busy_poll = 50 µs, opt-in)",
        unit: "µs",
        baseline: b * 1e6,
        entente: e * 1e6,
        target: "(for reference)",
    });
    let chunk_vec = vec![0x5au8; CHUNK];
    let chunk = Bytes::from(chunk_vec.clone());
    let (b, e) = interleaved(
        BULK_ROUNDS,
        || std_c.bulk_round(&chunk_vec),
        || ent.bulk_round(&chunk),
    );
    rows.push(Comparison {
        what: "tcp bulk throughput, 1 MiB chunks",
        unit: "MiB/s",
        baseline: b / (1 << 20) as f64,
        entente: e / (1 << 20) as f64,
        target: "≥ 0.9× baseline",
    });
    // What frame MACs cost: the default (tagged) against the same transport untagged.
    let (b, e) = interleaved(PING_ROUNDS, || untagged.ping_round(), || ent.ping_round());
    rows.push(Comparison {
        what: "frame MACs: ping-pong round trip, 64 B, against entente untagged",
        unit: "µs",
        baseline: b * 1e6,
        entente: e * 1e6,
        target: "(cost of tags)",
    });
    let (b, e) = interleaved(
        BULK_ROUNDS,
        || untagged.bulk_round(&chunk),
        || ent.bulk_round(&chunk),
    );
    rows.push(Comparison {
        what: "frame MACs: bulk throughput, 1 MiB chunks, against entente untagged",
        unit: "MiB/s",
        baseline: b / (1 << 20) as f64,
        entente: e / (1 << 20) as f64,
        target: "(cost of tags)",
    });
    rows
}

/// Median time of one header decode over rounds of a million (the criterion run above gives the
/// same with confidence intervals; this figure goes into the report).
fn header_decode_ns() -> f64 {
    let f = Fields {
        kind: Kind::Data,
        flags: 0,
        src: 1,
        dst: 2,
        seq: 77,
        generation: 3,
        aux: 0,
        freed: 5,
    };
    let frame = FrameHeader::new(f, b"").bytes().to_vec();
    let rounds = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..1_000_000 {
                black_box(FrameHeader::decode(black_box(&frame)).map(|h| h.len()).ok());
            }
            t.elapsed().as_secs_f64() * 1e9 / 1e6
        })
        .collect();
    median(rounds)
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    header_bench(&mut c);
    c.final_summary();
    let rows = compare();
    let mut md = String::new();
    md.push_str(
        "| measure | baseline (std, unless named) | entente tcp | ratio | target |\n|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.1} {} | {:.1} {} | {:.2}× | {} |\n",
            r.what,
            r.baseline,
            r.unit,
            r.entente,
            r.unit,
            r.entente / r.baseline,
            r.target
        ));
    }
    md.push_str(&format!(
        "\nHeader decode (validate every field of a 64-byte header): median {:.1} ns (target < 20 ns).\n",
        header_decode_ns()
    ));
    println!("\n{md}");
    if let Ok(path) = std::env::var("FASTPATH_REPORT") {
        // Relative paths are from the workspace root (cargo runs benches in the package dir).
        let path = entente_benches::workspace_root().join(path);
        let header = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.split("<!-- results -->").next().map(str::to_owned))
            .unwrap_or_else(|| "# fastpath benchmarks\n\n".to_owned());
        std::fs::write(&path, format!("{header}<!-- results -->\n{md}")).expect("write report");
    }
}
