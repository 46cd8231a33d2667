//! The conformance suite: one body per property, run against every backend (`mem`, `tcp` here;
//! `verbs` in the rxe lab). Test names start with `conformance_`.

mod common;

use bytes::Bytes;
use common::*;
use entente_fastpath::frame::{FrameHeader, Kind, MAX_CONTROL_PAYLOAD};
use entente_fastpath::{Config, ConnId, DownReason, Event, SendError, Transport};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn window(window: u32) -> Config {
    Config {
        window,
        ..Config::default()
    }
}

/// Sends `total` numbered messages from `a` to `c` as credits allow, polling both; returns what
/// `c` received.
fn stream(
    a: &mut Box<dyn Transport>,
    c: &mut Box<dyn Transport>,
    conn: ConnId,
    total: u32,
) -> Vec<Bytes> {
    let mut sent = 0u32;
    let mut got = Vec::new();
    let mut ev = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while (got.len() as u32) < total {
        assert!(Instant::now() < deadline, "stalled at {}", got.len());
        while sent < total {
            match a.send(conn, Bytes::copy_from_slice(&sent.to_le_bytes())) {
                Ok(()) => sent += 1,
                Err(SendError::NoCredits(_)) => break,
                Err(e) => panic!("send failed: {e}"),
            }
        }
        ev.clear();
        a.poll(&mut ev, Some(Duration::ZERO)).unwrap();
        ev.clear();
        c.poll(&mut ev, Some(Duration::from_millis(1))).unwrap();
        got.extend(messages(&ev));
    }
    got
}

fn numbered(got: &[Bytes]) -> Vec<u32> {
    got.iter()
        .map(|p| u32::from_le_bytes(p[..4].try_into().unwrap()))
        .collect()
}

/// Per-connection order, exactly once.
pub fn ordering(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, _) = connect(&mut a, &mut c);
    let got = stream(&mut a, &mut c, ac, 5000);
    assert_eq!(numbered(&got), (0..5000).collect::<Vec<_>>());
}

/// A receiver that does not poll stops the sender at its window, visibly; polling frees it.
pub fn backpressure(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), window(8));
    let mut c = b.endpoint(2, key(), window(8));
    let (ac, _) = connect(&mut a, &mut c);
    let mut sent = 0;
    let err = loop {
        match a.send(ac, Bytes::from_static(b"x")) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 8, "sent past the window");
    };
    assert_eq!(err, SendError::NoCredits(ac));
    assert_eq!(sent, 7, "one credit stays reserved for credit returns");
    assert_eq!(a.credits(ac), Some(0));
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        l[0].iter().any(|e| *e == Event::Writable(ac))
    });
    assert_eq!(messages(&log[1]).len(), 7);
    assert!(a.credits(ac).unwrap() >= 2);
}

/// Both directions at once with a tiny window never deadlock.
pub fn bidirectional(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), window(4));
    let mut c = b.endpoint(2, key(), window(4));
    let (ac, ca) = connect(&mut a, &mut c);
    let total = 3000u32;
    let (mut sent, mut got) = ([0u32; 2], [0u32; 2]);
    let deadline = Instant::now() + LIMIT;
    let mut ev = Vec::new();
    while got != [total; 2] {
        assert!(
            Instant::now() < deadline,
            "deadlock: sent {sent:?} got {got:?}"
        );
        for (i, (t, conn)) in [(&mut a, ac), (&mut c, ca)].into_iter().enumerate() {
            while sent[i] < total {
                match t.send(conn, Bytes::copy_from_slice(&sent[i].to_le_bytes())) {
                    Ok(()) => sent[i] += 1,
                    Err(SendError::NoCredits(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            ev.clear();
            t.poll(&mut ev, Some(Duration::ZERO)).unwrap();
            for n in numbered(&messages(&ev)) {
                assert_eq!(n, got[1 - i], "order");
                got[1 - i] += 1;
            }
        }
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn grants(events: &[Event]) -> Vec<(u32, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::BulkGrant { slot, len, .. } => Some((*slot, *len)),
            _ => None,
        })
        .collect()
}

/// Bulk chunks arrive intact in the slot granted for them; a slot serves one chunk.
pub fn bulk_integrity(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, ca) = connect(&mut a, &mut c);
    let chunk = 1 << 20;
    let mut slots = Vec::new();
    for _ in 0..4 {
        slots.push(c.grant_bulk(ca, chunk as u32).unwrap());
    }
    assert_eq!(c.grant_bulk(ca, 1), Err(SendError::NoSlot(ca)));
    assert!(matches!(
        a.send_bulk(ac, 999, Bytes::from_static(b"x")),
        Err(SendError::NotGranted { .. })
    ));
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        grants(&l[0]).len() == 4
    });
    let granted = grants(&log[0]);
    assert_eq!(granted.iter().map(|g| g.0).collect::<Vec<_>>(), slots);
    let (s0, len0) = granted[0];
    assert!(matches!(
        a.send_bulk(ac, s0, pattern(len0 as usize + 1, 0)),
        Err(SendError::TooLarge { .. })
    ));
    for (i, (slot, _)) in granted.iter().enumerate() {
        a.send_bulk(ac, *slot, pattern(chunk - i, i as u8)).unwrap();
    }
    assert!(matches!(
        a.send_bulk(ac, s0, Bytes::from_static(b"again")),
        Err(SendError::NotGranted { .. })
    ));
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        l[1].iter()
            .filter(|e| matches!(e, Event::Bulk { .. }))
            .count()
            == 4
            && l[0]
                .iter()
                .filter(|e| matches!(e, Event::BulkSent { .. }))
                .count()
                == 4
    });
    let mut i = 0;
    for e in &log[1] {
        if let Event::Bulk { conn, slot, data } = e {
            assert_eq!((*conn, *slot), (ca, granted[i].0));
            assert!(
                data[..] == pattern(chunk - i, i as u8)[..],
                "chunk {i} corrupted"
            );
            i += 1;
        }
    }
}

/// A peer that disappears mid-transfer: `Down` is reported, nothing is delivered twice, no hang.
pub fn disconnect_mid_transfer(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, ca) = connect(&mut a, &mut c);
    let slot = c.grant_bulk(ca, 4 << 20).unwrap();
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        !grants(&l[0]).is_empty()
    });
    a.send(ac, Bytes::from_static(b"before")).unwrap();
    a.send_bulk(ac, slot, pattern(4 << 20, 9)).unwrap();
    drop(a);
    let mut ev = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while !ev.iter().any(|e| matches!(e, Event::Down(..))) {
        assert!(Instant::now() < deadline, "no Down reported: {ev:?}");
        c.poll(&mut ev, Some(Duration::from_millis(5))).unwrap();
    }
    let bulks: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, Event::Bulk { .. }))
        .collect();
    assert!(bulks.len() <= 1, "a chunk delivered twice");
    if let Some(Event::Bulk { data, .. }) = bulks.first() {
        assert!(
            data[..] == pattern(4 << 20, 9)[..],
            "a partial chunk was delivered"
        );
    }
    assert!(messages(&ev).len() <= 1);
    let after = ev
        .iter()
        .position(|e| matches!(e, Event::Down(..)))
        .unwrap();
    assert!(
        ev[after + 1..]
            .iter()
            .all(|e| !matches!(e, Event::Message(..) | Event::Bulk { .. })),
        "delivery after Down"
    );
    assert_eq!(
        c.send(ca, Bytes::from_static(b"x")),
        Err(SendError::NoConnection(ca))
    );
}

/// Reconnecting yields a higher generation on both ends; the old id is dead.
pub fn reconnect_new_generation(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, ca) = connect(&mut a, &mut c);
    assert_eq!(ac.generation, ca.generation);
    assert_eq!((ac.peer, ca.peer), (2, 1));
    a.close(ac);
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        l[0].contains(&Event::Down(ac, DownReason::Local))
            && l[1].contains(&Event::Down(ca, DownReason::Closed))
    });
    let (ac2, ca2) = connect(&mut a, &mut c);
    assert!(ac2.generation > ac.generation);
    assert_eq!(ac2, ConnId { peer: 2, ..ca2 });
    assert_eq!(
        a.send(ac, Bytes::from_static(b"old")),
        Err(SendError::NoConnection(ac))
    );
    let got = stream(&mut a, &mut c, ac2, 10);
    assert_eq!(numbered(&got), (0..10).collect::<Vec<_>>());
}

/// A second connection to the same peer replaces the first.
pub fn replaced(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, ca) = connect(&mut a, &mut c);
    let addr = c.local_addr();
    a.connect(addr).unwrap();
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        let down =
            |l: &[Event], c: ConnId| l.iter().any(|e| matches!(e, Event::Down(x, _) if *x == c));
        down(&l[0], ac) && down(&l[1], ca) && up(&l[0]).is_some() && up(&l[1]).is_some()
    });
    // The acceptor comes up first and retires the old connection as replaced; the connector
    // learns of it either from that close or from its own replacement.
    assert!(log[1].contains(&Event::Down(ca, DownReason::Replaced)));
    let ac2 = up(&log[0]).unwrap();
    assert!(ac2.generation > ac.generation);
    assert_eq!(
        a.send(ac, Bytes::from_static(b"x")),
        Err(SendError::NoConnection(ac))
    );
    assert!(a.send(ac2, Bytes::from_static(b"x")).is_ok());
}

/// A peer without the cluster key never comes up, is counted, and nothing it sends is delivered.
pub fn authentication_failure(b: &mut dyn Backend) {
    let mut good = b.endpoint(1, key(), Config::default());
    let mut evil = b.endpoint(66, wrong_key(), Config::default());
    evil.connect(good.local_addr()).unwrap();
    let mut log = Log::new();
    pump(&mut [&mut good, &mut evil], &mut log, LIMIT, |l| {
        l[1].iter().any(|e| matches!(e, Event::Refused { .. }))
            && l[0].iter().any(|e| matches!(e, Event::Refused { .. }))
    });
    assert!(up(&log[0]).is_none() && up(&log[1]).is_none());
    assert!(
        evil.stats().auth_failures >= 1,
        "the connector saw a bad proof"
    );

    let Some(mut raw) = b.raw(good.local_addr()) else {
        return;
    };
    // A raw peer that skips the handshake and sends data is refused; nothing is delivered.
    let payload = b"let me in";
    let h = FrameHeader::new(fields(Kind::Data, 66, 1, 0, 1), payload);
    raw.send(h.bytes(), payload);
    // A raw peer with the wrong key fails the proof.
    let mut raw2 = b.raw(good.local_addr()).expect("raw connections");
    let mut log = Log::new();
    log.push(Vec::new());
    let got = raw_handshake(raw2.as_mut(), 67, &wrong_key(), &mut good, &mut log[0]);
    assert!(got.is_none(), "a wrong key completed the handshake");
    pump(&mut [&mut good], &mut log, LIMIT, |l| {
        l[0].iter()
            .filter(|e| matches!(e, Event::Refused { .. }))
            .count()
            >= 2
    });
    assert!(messages(&log[0]).is_empty());
    assert_eq!(good.stats().messages_received, 0);
    assert!(good.stats().auth_failures >= 1, "{:?}", good.stats());
}

/// Oversized and malformed frames are refused with a typed error and cut the connection.
pub fn oversized_and_malformed(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, _) = connect(&mut a, &mut c);
    let big = Bytes::from(vec![0u8; MAX_CONTROL_PAYLOAD + 1]);
    assert_eq!(
        a.send(ac, big),
        Err(SendError::TooLarge {
            len: MAX_CONTROL_PAYLOAD + 1,
            max: MAX_CONTROL_PAYLOAD
        })
    );
    assert!(a
        .send(ac, Bytes::from(vec![7u8; MAX_CONTROL_PAYLOAD]))
        .is_ok());

    // Garbage instead of a HELLO.
    let Some(mut raw) = b.raw(c.local_addr()) else {
        return;
    };
    raw.send(&[0xffu8; 64], b"");
    let mut log = Log::new();
    pump(&mut [&mut c], &mut log, LIMIT, |l| {
        l[0].iter().any(|e| matches!(e, Event::Refused { .. }))
    });

    // An authenticated raw peer that then sends an oversized frame, and one with a bad checksum.
    for corrupt in [false, true] {
        let mut raw = b.raw(c.local_addr()).expect("raw connections");
        let mut log = Log::new();
        log.push(Vec::new());
        let (acceptor, generation) =
            raw_handshake(raw.as_mut(), 9, &key(), &mut c, &mut log[0]).expect("handshake");
        pump(&mut [&mut c], &mut log, LIMIT, |l| up(&l[0]).is_some());
        let conn = up(&log[0]).unwrap();
        let payload = vec![1u8; 16];
        let mut h = FrameHeader::new(fields(Kind::Data, 9, acceptor, 0, generation), &payload)
            .bytes()
            .to_vec();
        if corrupt {
            h[20] ^= 1; // the src field: the checksum no longer matches
        } else {
            h[8..12].copy_from_slice(&100_000u32.to_le_bytes()); // length past the limit
        }
        raw.send(&h, &payload);
        let before = c.stats().protocol_errors;
        let mut log = Log::new();
        pump(&mut [&mut c], &mut log, LIMIT, |l| {
            l[0].iter()
                .any(|e| matches!(e, Event::Down(x, DownReason::Protocol(_)) if *x == conn))
        });
        assert!(messages(&log[0]).is_empty(), "a bad frame was delivered");
        assert!(c.stats().protocol_errors > before);
    }
}

/// Grants the peer declined and we revoked are free again, on both ends, however many times.
pub fn declined_grants_are_freed(b: &mut dyn Backend) {
    let mut a = b.endpoint(1, key(), Config::default());
    let mut c = b.endpoint(2, key(), Config::default());
    let (ac, ca) = connect(&mut a, &mut c);
    for round in 0..40 {
        let slots: Vec<u32> = (0..4).map(|_| c.grant_bulk(ca, 1024).unwrap()).collect();
        assert_eq!(
            c.grant_bulk(ca, 1024),
            Err(SendError::NoSlot(ca)),
            "round {round}"
        );
        let mut log = Log::new();
        pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
            grants(&l[0]).len() == 4
        });
        for s in &slots {
            assert!(a.decline_bulk(ac, *s), "declined {s}");
            assert!(!a.decline_bulk(ac, *s), "declined twice");
            assert!(c.revoke_bulk(ca, *s), "revoked {s}");
        }
    }
    // Still up: the peer never saw more grants than it may hold.
    assert!(a.send(ac, Bytes::from_static(b"still here")).is_ok());
    let mut log = Log::new();
    pump(&mut [&mut a, &mut c], &mut log, LIMIT, |l| {
        !messages(&l[1]).is_empty()
    });
    assert!(log[1].iter().all(|e| !matches!(e, Event::Down(..))));
}

#[test]
fn mem_conformance_declined_grants_are_freed() {
    declined_grants_are_freed(&mut Mem::new());
}

#[test]
fn tcp_conformance_declined_grants_are_freed() {
    declined_grants_are_freed(&mut Tcp);
}

macro_rules! suite {
    ($backend:ident, $make:expr $(, #[$attr:meta])*) => {
        mod $backend {
            use super::*;
            #[test]
            $(#[$attr])*
            fn conformance_ordering() {
                ordering(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_backpressure() {
                backpressure(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_bidirectional_small_window() {
                bidirectional(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_bulk_integrity() {
                bulk_integrity(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_disconnect_mid_transfer() {
                disconnect_mid_transfer(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_reconnect_new_generation() {
                reconnect_new_generation(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_replaced_connection() {
                replaced(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_authentication_failure() {
                authentication_failure(&mut $make);
            }
            #[test]
            $(#[$attr])*
            fn conformance_oversized_and_malformed() {
                oversized_and_malformed(&mut $make);
            }
        }
    };
}

suite!(mem, Mem::new());
suite!(tcp, Tcp);
#[cfg(feature = "rdma")]
suite!(
    verbs,
    Verbs::new(),
    #[ignore = "needs an RDMA device: run in the rxe lab with ENTENTE_RDMA_ADDR set"]
);
