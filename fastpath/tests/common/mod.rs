//! Shared harness of the conformance suite: one test body, every backend.

#![allow(dead_code)]

use bytes::Bytes;
use entente_fastpath::frame::{Fields, FrameHeader, Kind, HEADER_LEN};
use entente_fastpath::{ClusterKey, Config, ConnId, Event, MemNetwork, Transport};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A backend under test: makes endpoints and raw (unauthenticated) connections.
pub trait Backend {
    /// A new endpoint as node `id`.
    fn endpoint(&mut self, id: u64, key: ClusterKey, config: Config) -> Box<dyn Transport>;
    /// A raw connection to `addr` that moves frames without any session logic (`None` where the
    /// backend has no such thing: verbs, whose frames go through the same decoder and session).
    fn raw(&mut self, addr: SocketAddr) -> Option<Box<dyn RawConn>>;
}

/// A connection that sends and receives raw frames (a hostile or broken peer).
pub trait RawConn {
    /// Sends header bytes and a payload as they are.
    fn send(&mut self, header: &[u8], payload: &[u8]);
    /// Receives one frame within `t`.
    fn recv(&mut self, t: Duration) -> Option<(Vec<u8>, Vec<u8>)>;
}

/// The in-process backend.
pub struct Mem {
    net: MemNetwork,
    next: u16,
}

impl Mem {
    pub fn new() -> Mem {
        Mem {
            net: MemNetwork::new(),
            next: 1,
        }
    }
}

impl Backend for Mem {
    fn endpoint(&mut self, id: u64, key: ClusterKey, config: Config) -> Box<dyn Transport> {
        self.next += 1;
        let addr = SocketAddr::from(([10, 0, 0, 1], self.next));
        Box::new(entente_fastpath::MemTransport::bind(&self.net, addr, id, key, config).unwrap())
    }
    fn raw(&mut self, addr: SocketAddr) -> Option<Box<dyn RawConn>> {
        Some(Box::new(self.net.raw_connect(addr).unwrap()))
    }
}

impl RawConn for entente_fastpath::mem::RawMemConn {
    fn send(&mut self, header: &[u8], payload: &[u8]) {
        self.send_raw(header, payload)
    }
    fn recv(&mut self, t: Duration) -> Option<(Vec<u8>, Vec<u8>)> {
        self.recv_raw(t)
    }
}

/// The TCP backend on loopback.
pub struct Tcp;

impl Backend for Tcp {
    fn endpoint(&mut self, id: u64, key: ClusterKey, config: Config) -> Box<dyn Transport> {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Box::new(entente_fastpath::TcpTransport::bind(addr, id, key, config).unwrap())
    }
    fn raw(&mut self, addr: SocketAddr) -> Option<Box<dyn RawConn>> {
        Some(Box::new(RawTcp(TcpStream::connect(addr).unwrap())))
    }
}

/// The verbs backend on an RDMA device (rxe in the lab): endpoints bind to the address in
/// `ENTENTE_RDMA_ADDR`, each on its own port.
#[cfg(feature = "rdma")]
pub struct Verbs {
    ip: std::net::IpAddr,
    next_port: u16,
}

#[cfg(feature = "rdma")]
impl Verbs {
    pub fn new() -> Verbs {
        let ip = std::env::var("ENTENTE_RDMA_ADDR")
            .expect("ENTENTE_RDMA_ADDR names the IP address of the RDMA interface")
            .parse()
            .expect("ENTENTE_RDMA_ADDR is an IP address");
        Verbs {
            ip,
            next_port: 20000 + (std::process::id() % 20000) as u16,
        }
    }
}

#[cfg(feature = "rdma")]
impl Backend for Verbs {
    fn endpoint(&mut self, id: u64, key: ClusterKey, config: Config) -> Box<dyn Transport> {
        self.next_port += 1;
        let addr = SocketAddr::new(self.ip, self.next_port);
        Box::new(entente_fastpath::VerbsTransport::bind(addr, id, key, config).unwrap())
    }
    fn raw(&mut self, _addr: SocketAddr) -> Option<Box<dyn RawConn>> {
        None
    }
}

/// A raw TCP connection.
pub struct RawTcp(TcpStream);

impl RawTcp {
    /// A raw connection to `addr`.
    pub fn connect(addr: SocketAddr) -> RawTcp {
        RawTcp(TcpStream::connect(addr).unwrap())
    }
}

impl RawConn for RawTcp {
    fn send(&mut self, header: &[u8], payload: &[u8]) {
        let _ = self.0.write_all(header);
        let _ = self.0.write_all(payload);
    }
    fn recv(&mut self, t: Duration) -> Option<(Vec<u8>, Vec<u8>)> {
        self.0.set_read_timeout(Some(t)).ok()?;
        let mut h = vec![0u8; HEADER_LEN];
        self.0.read_exact(&mut h).ok()?;
        let len = FrameHeader::decode(&h).ok()?.len();
        let mut p = vec![0u8; len];
        self.0.read_exact(&mut p).ok()?;
        Some((h, p))
    }
}

/// The key every honest node of the suite holds.
pub fn key() -> ClusterKey {
    ClusterKey::from_bytes(&[0x5a; 32]).unwrap()
}

/// A key that is not the cluster's.
pub fn wrong_key() -> ClusterKey {
    ClusterKey::from_bytes(&[0x11; 32]).unwrap()
}

/// Events gathered per endpoint.
pub type Log = Vec<Vec<Event>>;

/// Polls every endpoint until `done` holds over the gathered events, or panics after `limit`.
pub fn pump(
    nodes: &mut [&mut Box<dyn Transport>],
    log: &mut Log,
    limit: Duration,
    mut done: impl FnMut(&Log) -> bool,
) {
    log.resize_with(nodes.len(), Vec::new);
    let deadline = Instant::now() + limit;
    while !done(log) {
        assert!(
            Instant::now() < deadline,
            "no progress within {limit:?}: {log:#?}"
        );
        for (i, n) in nodes.iter_mut().enumerate() {
            n.poll(&mut log[i], Some(Duration::from_millis(1))).unwrap();
        }
    }
}

/// The first `Up` in a log.
pub fn up(events: &[Event]) -> Option<ConnId> {
    events.iter().find_map(|e| match e {
        Event::Up(c) => Some(*c),
        _ => None,
    })
}

/// Connects `a` to `b` and returns each side's connection id once both are up.
pub fn connect(a: &mut Box<dyn Transport>, b: &mut Box<dyn Transport>) -> (ConnId, ConnId) {
    let addr = b.local_addr();
    a.connect(addr).unwrap();
    let mut log = Log::new();
    pump(&mut [a, b], &mut log, Duration::from_secs(10), |l| {
        up(&l[0]).is_some() && up(&l[1]).is_some()
    });
    (up(&log[0]).unwrap(), up(&log[1]).unwrap())
}

/// Messages delivered in a log, in order.
pub fn messages(events: &[Event]) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(_, p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Receives one raw frame while polling `node` (the far end needs polling to answer).
pub fn raw_recv(
    raw: &mut dyn RawConn,
    node: &mut Box<dyn Transport>,
    log: &mut Vec<Event>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        node.poll(log, Some(Duration::from_millis(1))).unwrap();
        if let Some(f) = raw.recv(Duration::from_millis(2)) {
            return Some(f);
        }
    }
    None
}

/// Performs the connector's side of the handshake by hand over a raw connection, as node `id`
/// holding `key`, polling the acceptor `node` meanwhile (its events go to `log`). Returns the
/// acceptor's id and the generation it assigned.
pub fn raw_handshake(
    raw: &mut dyn RawConn,
    id: u64,
    key: &ClusterKey,
    node: &mut Box<dyn Transport>,
    log: &mut Vec<Event>,
) -> Option<(u64, u64)> {
    let nonce_c = [3u8; 32];
    let mut hello = nonce_c.to_vec();
    hello.extend_from_slice(&0u64.to_le_bytes());
    hello.extend_from_slice(&64u32.to_le_bytes());
    let h = FrameHeader::new(fields(Kind::Hello, id, 0, 0, 0), &hello);
    raw.send(h.bytes(), &hello);
    let (ch, cp) = raw_recv(raw, node, log)?;
    let acceptor = FrameHeader::decode(&ch).ok()?.src();
    let nonce_a: [u8; 32] = cp[..32].try_into().ok()?;
    let proof = key.connect_proof(&nonce_c, &nonce_a, id, acceptor);
    let h = FrameHeader::new(fields(Kind::Response, id, acceptor, 1, 0), &proof);
    raw.send(h.bytes(), &proof);
    let (wh, _) = raw_recv(raw, node, log)?;
    let w = FrameHeader::decode(&wh).ok()?;
    (w.kind() == Kind::Welcome).then(|| (acceptor, w.generation()))
}

/// Header fields for a hand-made frame.
pub fn fields(kind: Kind, src: u64, dst: u64, seq: u64, generation: u64) -> Fields {
    Fields {
        kind,
        flags: 0,
        src,
        dst,
        seq,
        generation,
        aux: 0,
        freed: 0,
    }
}
