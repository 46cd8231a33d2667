//! Frame MACs: agreed in the handshake, checked on every frame after it, negotiated across
//! builds with and without them. A proxy on the tcp path forges, replays and strips.

mod common;

use bytes::Bytes;
use common::*;
use entente_fastpath::frame::{flags, FrameHeader, Kind, HEADER_LEN};
use entente_fastpath::{
    Config, DownReason, Event, FrameMacs, RefuseReason, Stats, TcpTransport, Transport,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

fn config(frame_macs: FrameMacs) -> Config {
    Config {
        frame_macs,
        ..Config::default()
    }
}

/// Nodes 1 and 2 on loopback tcp.
fn tcp_pair(frame_macs: FrameMacs) -> (Box<dyn Transport>, Box<dyn Transport>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let bind = |id| -> Box<dyn Transport> {
        Box::new(TcpTransport::bind(any, id, key(), config(frame_macs)).unwrap())
    };
    (bind(1), bind(2))
}

fn stats_after_one_message(b: &mut dyn Backend, mine: FrameMacs, theirs: FrameMacs) -> [Stats; 2] {
    let mut a = b.endpoint(1, key(), config(mine));
    let mut c = b.endpoint(2, key(), config(theirs));
    let (ac, _) = connect(&mut a, &mut c);
    a.send(ac, Bytes::from_static(b"hello")).unwrap();
    let mut log = Log::new();
    pump(
        &mut [&mut a, &mut c],
        &mut log,
        Duration::from_secs(5),
        |l| !messages(&l[1]).is_empty(),
    );
    assert_eq!(messages(&log[1]), [Bytes::from_static(b"hello")]);
    [a.stats(), c.stats()]
}

/// Two builds with frame MACs tag their frames; a build without them (`Off`, which speaks as
/// builds before frame MACs did) and one that prefers them connect untagged, either way round.
#[test]
fn mixed_frame_versions() {
    for backend in [&mut Mem::new() as &mut dyn Backend, &mut Tcp] {
        let both = stats_after_one_message(backend, FrameMacs::Prefer, FrameMacs::Prefer);
        assert_eq!(both.map(|s| s.connections_untagged), [0, 0]);
        let required = stats_after_one_message(backend, FrameMacs::Require, FrameMacs::Prefer);
        assert_eq!(required.map(|s| s.connections_untagged), [0, 0]);
        for (mine, theirs) in [
            (FrameMacs::Off, FrameMacs::Prefer),
            (FrameMacs::Prefer, FrameMacs::Off),
        ] {
            let s = stats_after_one_message(backend, mine, theirs);
            assert_eq!(s.map(|s| s.connections_untagged), [1, 1]);
        }
    }
}

fn handshake_refusal(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Refused {
            reason: RefuseReason::Handshake(what),
            ..
        } => Some(what.clone()),
        _ => None,
    })
}

/// A node that requires frame MACs refuses an older peer, as connector and as acceptor, with a
/// message that says why; the connection never comes up.
#[test]
fn require_refuses_a_peer_without_frame_macs() {
    for (connector, acceptor, refuser) in [
        (FrameMacs::Require, FrameMacs::Off, 0),
        (FrameMacs::Off, FrameMacs::Require, 1),
    ] {
        let mut b = Tcp;
        let mut a = b.endpoint(1, key(), config(connector));
        let mut c = b.endpoint(2, key(), config(acceptor));
        a.connect(c.local_addr()).unwrap();
        let mut log = Log::new();
        pump(
            &mut [&mut a, &mut c],
            &mut log,
            Duration::from_secs(5),
            |l| handshake_refusal(&l[refuser]).is_some(),
        );
        let why = handshake_refusal(&log[refuser]).unwrap();
        assert!(why.contains("does not offer frame MACs"), "{why}");
        assert!(log.iter().all(|l| up(l).is_none()), "{log:#?}");
    }
}

/// What the proxy does to one frame on its way: forward these frames instead.
type Tamper = Box<dyn FnMut(Vec<u8>) -> Vec<Vec<u8>> + Send>;

/// A tcp proxy in front of `target` that passes each frame of the connector → acceptor
/// direction through `tamper` (the other direction unchanged). Returns the address to dial.
fn proxy(target: SocketAddr, tamper: Tamper) -> SocketAddr {
    proxy_both(target, tamper, Box::new(|f| vec![f]))
}

/// The same, tampering with both directions: `fwd` connector → acceptor, `back` the other way.
fn proxy_both(target: SocketAddr, fwd: Tamper, back: Tamper) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (inbound, _) = listener.accept().unwrap();
        let outbound = TcpStream::connect(target).unwrap();
        let (in2, out2) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
        thread::spawn(move || relay(out2, in2, back));
        relay(inbound, outbound, fwd);
    });
    addr
}

fn relay(mut from: TcpStream, mut to: TcpStream, mut tamper: Tamper) {
    loop {
        let mut frame = vec![0u8; HEADER_LEN];
        if from.read_exact(&mut frame).is_err() {
            return;
        }
        let len = u32::from_le_bytes(frame[8..12].try_into().unwrap()) as usize;
        frame.resize(HEADER_LEN + len, 0);
        if from.read_exact(&mut frame[HEADER_LEN..]).is_err() {
            return;
        }
        for out in tamper(frame) {
            if to.write_all(&out).is_err() {
                return;
            }
        }
    }
}

/// Recomputes a frame's CRC-32C after the proxy changed it: the checksum is no defence.
fn fix_checksum(frame: &mut [u8]) {
    frame[12..16].fill(0);
    let fl = u16::from_le_bytes([frame[6], frame[7]]);
    let mut sum = crc32c::crc32c(&frame[..HEADER_LEN]);
    if fl & flags::NO_PAYLOAD_SUM == 0 {
        sum = crc32c::crc32c_append(sum, &frame[HEADER_LEN..]);
    }
    frame[12..16].copy_from_slice(&sum.to_le_bytes());
    assert!(FrameHeader::decode(frame).is_ok());
}

fn kind(frame: &[u8]) -> Option<Kind> {
    Kind::from_u8(frame[5])
}

/// Alters the first Data frame's payload (and fixes its checksum).
fn forge_first_data() -> Tamper {
    let mut done = false;
    Box::new(move |mut f| {
        if !done && kind(&f) == Some(Kind::Data) {
            done = true;
            f[HEADER_LEN] ^= 0x20;
            fix_checksum(&mut f);
        }
        vec![f]
    })
}

/// Connects `a` to `c` through a proxy that tampers with `a`'s frames, sends `msgs`, and
/// pumps until `done`.
fn through_proxy(
    frame_macs: FrameMacs,
    tamper: Tamper,
    msgs: &[&'static [u8]],
    done: impl FnMut(&Log) -> bool,
) -> (Log, [Stats; 2]) {
    let (mut a, mut c) = tcp_pair(frame_macs);
    a.connect(proxy(c.local_addr(), tamper)).unwrap();
    let mut log = Log::new();
    pump(
        &mut [&mut a, &mut c],
        &mut log,
        Duration::from_secs(10),
        |l| up(&l[0]).is_some() && up(&l[1]).is_some(),
    );
    let ac = up(&log[0]).unwrap();
    for m in msgs {
        a.send(ac, Bytes::from_static(m)).unwrap();
    }
    pump(
        &mut [&mut a, &mut c],
        &mut log,
        Duration::from_secs(10),
        done,
    );
    (log, [a.stats(), c.stats()])
}

fn cut_by_protocol(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Down(_, DownReason::Protocol(what)) => Some(what.clone()),
        _ => None,
    })
}

/// A frame spliced in on the path with a valid checksum: under frame MACs it fails its tag, the
/// connection is cut and the forgery counted, and nothing of it is delivered.
#[test]
fn forged_frame_is_refused() {
    let (log, stats) = through_proxy(
        FrameMacs::Prefer,
        forge_first_data(),
        &[b"pay the operator"],
        |l| cut_by_protocol(&l[1]).is_some(),
    );
    let why = cut_by_protocol(&log[1]).unwrap();
    assert!(why.contains("failed its MAC"), "{why}");
    assert!(messages(&log[1]).is_empty(), "{log:#?}");
    assert_eq!(stats[1].auth_failures, 1);
}

/// The same forgery between untagged ends is delivered: the checksum alone does not stop it
/// (what the test above would see without frame MACs).
#[test]
fn untagged_frames_are_forgeable() {
    let (log, _) = through_proxy(
        FrameMacs::Off,
        forge_first_data(),
        &[b"pay the operator"],
        |l| !messages(&l[1]).is_empty(),
    );
    assert_eq!(messages(&log[1]), [Bytes::from_static(b"Pay the operator")]);
}

/// A tagged frame replayed on its own connection: its sequence number, which the tag covers,
/// is refused.
#[test]
fn replayed_frame_is_refused() {
    let mut done = false;
    let replay: Tamper = Box::new(move |f| {
        if !done && kind(&f) == Some(Kind::Data) {
            done = true;
            return vec![f.clone(), f];
        }
        vec![f]
    });
    let (log, _) = through_proxy(FrameMacs::Prefer, replay, &[b"once"], |l| {
        cut_by_protocol(&l[1]).is_some()
    });
    let why = cut_by_protocol(&log[1]).unwrap();
    assert!(why.contains("sequence"), "{why}");
    assert_eq!(messages(&log[1]), [Bytes::from_static(b"once")]);
}

/// A tagged frame with its tag removed (flag cleared, length shortened, checksum fixed) is
/// refused: once agreed, every frame must be tagged.
#[test]
fn stripped_tag_is_refused() {
    let mut done = false;
    let strip: Tamper = Box::new(move |mut f| {
        if !done && kind(&f) == Some(Kind::Data) {
            done = true;
            let fl = u16::from_le_bytes([f[6], f[7]]) & !flags::MAC;
            f[6..8].copy_from_slice(&fl.to_le_bytes());
            f.truncate(f.len() - 16);
            let len = (f.len() - HEADER_LEN) as u32;
            f[8..12].copy_from_slice(&len.to_le_bytes());
            fix_checksum(&mut f);
        }
        vec![f]
    });
    let (log, _) = through_proxy(FrameMacs::Prefer, strip, &[b"untagged"], |l| {
        cut_by_protocol(&l[1]).is_some()
    });
    let why = cut_by_protocol(&log[1]).unwrap();
    assert!(why.contains("without its MAC tag"), "{why}");
    assert!(messages(&log[1]).is_empty());
}

/// An offer stripped from HELLO on the path (a downgrade to untagged frames) fails the
/// acceptor's proof, which binds the offers both sides made.
#[test]
fn stripped_offer_fails_the_handshake() {
    let (mut a, mut c) = tcp_pair(FrameMacs::Prefer);
    a.connect(proxy(c.local_addr(), strip_offer(Kind::Hello)))
        .unwrap();
    let mut log = Log::new();
    pump(
        &mut [&mut a, &mut c],
        &mut log,
        Duration::from_secs(10),
        |l| {
            l[0].iter().any(|e| {
                matches!(
                    e,
                    Event::Refused {
                        reason: RefuseReason::Authentication,
                        ..
                    }
                )
            })
        },
    );
    assert!(log.iter().all(|l| up(l).is_none()), "{log:#?}");
    assert_eq!(a.stats().auth_failures, 1);
}

/// Rewrites the WELCOME's generation (payload and header) to `to`, checksum fixed.
fn forge_welcome(to: u64) -> Tamper {
    Box::new(move |mut f| {
        if kind(&f) == Some(Kind::Welcome) {
            f[40..48].copy_from_slice(&to.to_le_bytes());
            f[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&to.to_le_bytes());
            fix_checksum(&mut f);
        }
        vec![f]
    })
}

/// A WELCOME whose generation was rewritten on the path is refused (tagged: it fails its tag;
/// untagged: the generation is beyond any plausible), no generation is recorded from it, and the
/// connector still connects to an honest node afterwards: nothing overflows anywhere.
#[test]
fn forged_welcome_generation_is_refused() {
    // tagged: a plausible generation, caught by the tag; untagged: one beyond any plausible
    for (frame_macs, forged) in [(FrameMacs::Prefer, 1000), (FrameMacs::Off, u64::MAX)] {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cfg = config(frame_macs);
        let mut a: Box<dyn Transport> =
            Box::new(TcpTransport::bind(any, 1, key(), cfg.clone()).unwrap());
        let mut c: Box<dyn Transport> =
            Box::new(TcpTransport::bind(any, 2, key(), cfg.clone()).unwrap());
        let mut d: Box<dyn Transport> = Box::new(TcpTransport::bind(any, 3, key(), cfg).unwrap());
        let target = c.local_addr();
        a.connect(proxy_both(
            target,
            Box::new(|f| vec![f]),
            forge_welcome(forged),
        ))
        .unwrap();
        let mut log = Log::new();
        pump(
            &mut [&mut a, &mut c],
            &mut log,
            Duration::from_secs(10),
            |l| l[0].iter().any(|e| matches!(e, Event::Refused { .. })),
        );
        assert!(up(&log[0]).is_none(), "{frame_macs:?}: {log:#?}");
        let (ad, da) = connect(&mut a, &mut d);
        assert!(
            ad.generation < 1 << 62 && da.generation == ad.generation,
            "{ad:?} {da:?}"
        );
    }
}

/// A peer that proposes a generation beyond any plausible (a node holding the cluster key, or a
/// poisoned one) is refused; the acceptor does not overflow.
#[test]
fn implausible_proposed_generation_is_refused() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c: Box<dyn Transport> =
        Box::new(TcpTransport::bind(any, 2, key(), config(FrameMacs::Off)).unwrap());
    let mut raw = Tcp.raw(c.local_addr()).unwrap();
    let nonce_c = [3u8; 32];
    let mut hello = nonce_c.to_vec();
    hello.extend_from_slice(&u64::MAX.to_le_bytes());
    hello.extend_from_slice(&64u32.to_le_bytes());
    let h = FrameHeader::new(fields(Kind::Hello, 9, 0, 0, 0), &hello);
    raw.send(h.bytes(), &hello);
    let mut events = Vec::new();
    let (_, cp) = raw_recv(&mut *raw, &mut c, &mut events).expect("CHALLENGE");
    let nonce_a: [u8; 32] = cp[..32].try_into().unwrap();
    let proof = key().connect_proof(&nonce_c, &nonce_a, 9, 2);
    let h = FrameHeader::new(fields(Kind::Response, 9, 2, 1, 0), &proof);
    raw.send(h.bytes(), &proof);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !events.iter().any(|e| matches!(e, Event::Refused { .. })) {
        assert!(std::time::Instant::now() < deadline, "{events:#?}");
        c.poll(&mut events, Some(Duration::from_millis(5))).unwrap();
    }
    let why = handshake_refusal(&events).unwrap();
    assert!(why.contains("beyond any plausible"), "{why}");
}

/// Strips the frame-MAC offer from HELLO and CHALLENGE both (checksums fixed).
fn strip_offer(kind_to_strip: Kind) -> Tamper {
    Box::new(move |mut f| {
        if kind(&f) == Some(kind_to_strip) {
            f[48..56].fill(0);
            fix_checksum(&mut f);
        }
        vec![f]
    })
}

/// Two agents that once agreed frame MACs do not connect untagged afterwards: an attacker who
/// strips both offers from a later handshake (which neither proof can see) is refused.
#[test]
fn stripping_both_offers_after_a_tagged_connection_is_refused() {
    let (mut a, mut c) = tcp_pair(FrameMacs::Prefer);
    let (ac, _) = connect(&mut a, &mut c);
    assert_eq!(a.stats().connections_untagged, 0);
    a.close(ac);
    let target = c.local_addr();
    a.connect(proxy_both(
        target,
        strip_offer(Kind::Hello),
        strip_offer(Kind::Challenge),
    ))
    .unwrap();
    let mut log = Log::new();
    pump(
        &mut [&mut a, &mut c],
        &mut log,
        Duration::from_secs(10),
        |l| handshake_refusal(&l[0]).is_some() || handshake_refusal(&l[1]).is_some(),
    );
    let why = handshake_refusal(&log[0])
        .or_else(|| handshake_refusal(&log[1]))
        .unwrap();
    assert!(why.contains("agreed on an earlier connection"), "{why}");
    assert!(log.iter().all(|l| up(l).is_none()), "{log:#?}");
}
