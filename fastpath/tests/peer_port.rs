//! The peer port under hostile clients (tcp backend, in process): strangers connect from
//! 127.0.0.77, the configured peers from 127.0.0.1. Idle strangers are capped and timed out
//! early and never lock out a configured peer nor touch an established connection; no frame an
//! unauthenticated (or ungranted) sender announces gets a buffer sized from its header.

mod common;

use bytes::Bytes;
use common::*;
use entente_fastpath::frame::{flags, FrameHeader, Kind};
use entente_fastpath::{Config, DownReason, Event, RefuseReason, TcpTransport, Transport};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

/// A TCP connection to `to` from address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket calls on a descriptor owned here; the addresses are valid for `len`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(SocketAddrV4::new(from, 0));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(to);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A configuration whose only configured peer address is 127.0.0.1.
fn guarded() -> Config {
    Config {
        reserved_peers: vec!["127.0.0.1".parse().unwrap()],
        handshake_timeout: Duration::from_secs(20),
        stranger_handshake_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

fn endpoint(id: u64, config: Config) -> Box<dyn Transport> {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Box::new(TcpTransport::bind(addr, id, key(), config).unwrap())
}

fn refused(events: &[Event], why: impl Fn(&RefuseReason) -> bool) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Refused { reason, .. } if why(reason)))
        .count()
}

/// Opens `n` idle connections from [`STRANGER`] while polling `node`; returns them.
fn idle_strangers(node: &mut Box<dyn Transport>, n: usize, log: &mut Vec<Event>) -> Vec<TcpStream> {
    let to = node.local_addr();
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(connect_from(STRANGER, to).unwrap());
        node.poll(log, Some(Duration::ZERO)).unwrap();
    }
    for _ in 0..20 {
        node.poll(log, Some(Duration::from_millis(1))).unwrap();
    }
    open
}

#[test]
fn idle_strangers_do_not_lock_out_a_configured_peer() {
    let mut node = endpoint(2, guarded());
    let mut log = Vec::new();
    let _crowd = idle_strangers(&mut node, 200, &mut log);
    // One source holds at most its share of the pool: the rest were refused at once.
    let busy = refused(&log, |r| *r == RefuseReason::Busy);
    let per_source = Config::default().max_pending_per_source;
    assert_eq!(busy, 200 - per_source, "{log:?}");
    // A configured peer connects at once beside them.
    let mut peer = endpoint(1, Config::default());
    let started = Instant::now();
    let (a, b) = connect(&mut peer, &mut node);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((a.peer, b.peer), (2, 1));
}

#[test]
fn strangers_from_many_sources_fill_only_the_shared_pool() {
    let config = Config {
        max_pending_handshakes: 16,
        ..guarded()
    };
    let mut node = endpoint(2, config);
    let to = node.local_addr();
    let mut log = Vec::new();
    let mut crowd = Vec::new();
    for i in 100..140u8 {
        for _ in 0..4 {
            crowd.push(connect_from(Ipv4Addr::new(127, 0, 0, i), to).unwrap());
            node.poll(&mut log, Some(Duration::ZERO)).unwrap();
        }
    }
    for _ in 0..20 {
        node.poll(&mut log, Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(refused(&log, |r| *r == RefuseReason::Busy), 160 - 16);
    let mut peer = endpoint(1, Config::default());
    connect(&mut peer, &mut node);
}

#[test]
fn an_established_neighbour_is_never_closed_to_make_room() {
    let mut node = endpoint(2, guarded());
    let mut peer = endpoint(1, Config::default());
    let (a, _) = connect(&mut peer, &mut node);
    let mut log = Vec::new();
    let _crowd = idle_strangers(&mut node, 200, &mut log);
    peer.send(a, Bytes::from_static(b"still here")).unwrap();
    let mut logs = Log::new();
    pump(
        &mut [&mut peer, &mut node],
        &mut logs,
        Duration::from_secs(5),
        |l| !messages(&l[1]).is_empty(),
    );
    assert!(
        !log.iter()
            .chain(&logs[0])
            .chain(&logs[1])
            .any(|e| matches!(e, Event::Down(..))),
        "{log:?} {logs:?}"
    );
}

#[test]
fn strangers_get_the_short_handshake_deadline() {
    let config = Config {
        handshake_timeout: Duration::from_secs(5),
        stranger_handshake_timeout: Duration::from_millis(300),
        ..guarded()
    };
    let mut node = endpoint(2, config);
    let to = node.local_addr();
    let _stranger = connect_from(STRANGER, to).unwrap();
    let _neighbour = TcpStream::connect(to).unwrap();
    let started = Instant::now();
    let mut log = Vec::new();
    while refused(&log, |r| *r == RefuseReason::Timeout) == 0 {
        assert!(started.elapsed() < Duration::from_secs(3), "{log:?}");
        node.poll(&mut log, Some(Duration::from_millis(50)))
            .unwrap();
    }
    let timed_out: Vec<_> = log
        .iter()
        .filter_map(|e| match e {
            Event::Refused {
                addr,
                reason: RefuseReason::Timeout,
            } => Some(addr.ip()),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out, vec![std::net::IpAddr::from(STRANGER)]);
    // The configured address's idle handshake is still waiting, well past the stranger's.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        node.poll(&mut log, Some(Duration::from_millis(50)))
            .unwrap();
    }
    assert_eq!(refused(&log, |r| *r == RefuseReason::Timeout), 1, "{log:?}");
}

/// A bulk frame header announcing `len` bytes into `slot`.
fn bulk_header(
    src: u64,
    dst: u64,
    seq: u64,
    generation: u64,
    slot: u64,
    len: usize,
) -> FrameHeader {
    let mut f = fields(Kind::BulkData, src, dst, seq, generation);
    f.flags = flags::NO_PAYLOAD_SUM;
    f.aux = slot;
    FrameHeader::new(f, &vec![0u8; len])
}

#[test]
fn a_bulk_frame_before_the_handshake_is_refused_from_its_header() {
    let mut node = endpoint(2, guarded());
    let mut s = connect_from(STRANGER, node.local_addr()).unwrap();
    // Only the header and a little of the 16 MiB it announces: the refusal must not wait for
    // (or buffer) the rest.
    s.write_all(bulk_header(77, 2, 0, 1, 1, 16 << 20).bytes())
        .unwrap();
    s.write_all(&[0u8; 4096]).unwrap();
    let mut log = Vec::new();
    let started = Instant::now();
    while refused(&log, |r| matches!(r, RefuseReason::Handshake(_))) == 0 {
        assert!(started.elapsed() < Duration::from_secs(1), "{log:?}");
        node.poll(&mut log, Some(Duration::from_millis(10)))
            .unwrap();
    }
    // A control frame larger than any handshake frame is refused the same way.
    let mut s = TcpStream::connect(node.local_addr()).unwrap();
    let payload = vec![1u8; 4000];
    s.write_all(FrameHeader::new(fields(Kind::Hello, 5, 0, 0, 0), &payload).bytes())
        .unwrap();
    while refused(&log, |r| matches!(r, RefuseReason::Handshake(_))) < 2 {
        assert!(started.elapsed() < Duration::from_secs(2), "{log:?}");
        node.poll(&mut log, Some(Duration::from_millis(10)))
            .unwrap();
    }
    assert_eq!(node.stats().connections_up, 0);
}

#[test]
fn an_ungranted_bulk_chunk_is_cut_from_its_header() {
    let mut node = endpoint(2, guarded());
    let mut raw = RawTcp::connect(node.local_addr());
    let mut log = Vec::new();
    let (acceptor, generation) =
        raw_handshake(&mut raw, 7, &key(), &mut node, &mut log).expect("handshake");
    // Slot 9 was never granted: only the header goes, the 16 MiB it announces never do.
    raw.send(
        bulk_header(7, acceptor, 0, generation, 9, 16 << 20).bytes(),
        &[],
    );
    let started = Instant::now();
    loop {
        if log.iter().any(
            |e| matches!(e, Event::Down(_, DownReason::Protocol(w)) if w.contains("not granted")),
        ) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{log:?}");
        node.poll(&mut log, Some(Duration::from_millis(10)))
            .unwrap();
    }
}
