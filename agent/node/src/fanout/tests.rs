//! The fan-out policy on virtual time: no I/O, so the stalls the agent met on loopback are
//! reproduced here in microseconds.

use super::fetch::request_deadline;
use super::*;
use crate::Nanos;

const IMG: ImageId = [7; 32];

fn shape(chunks: u32) -> ImageShape {
    ImageShape {
        id: IMG,
        size: u64::from(chunks) * 1024,
        chunk_size: 1024,
    }
}

fn params() -> FetchParams {
    FetchParams::agent(1024, 0.0, Strategy::Pipeline)
}

/// A serving neighbour: the chunks it holds, its queue, and a switch that makes its connection
/// refuse sends for want of credits.
struct Server {
    id: u64,
    holds: ChunkSet,
    queue: ServeQueue<u64>,
    upload: RateLimit,
    no_credits: bool,
    /// Requests it received.
    asked: u32,
    /// What it sent: (to, slot, index) or a NOT_YET (index u32::MAX).
    wire: Vec<(u64, u32, u32)>,
}

impl Server {
    fn new(id: u64, chunks: u32) -> Server {
        Server {
            id,
            holds: ChunkSet::full(chunks),
            queue: ServeQueue::new(ServeParams::agent(Strategy::Pipeline)),
            upload: RateLimit::unlimited(),
            no_credits: false,
            asked: 0,
            wire: Vec::new(),
        }
    }

    fn ask(&mut self, from: u64, a: Ask, now: Nanos) -> Admit {
        self.asked += 1;
        self.queue.admit(
            ServeReq {
                conn: from,
                peer: from,
                image: IMG,
                index: a.index,
                slot: a.slot,
            },
            now,
        )
    }

    fn step(&mut self, now: Nanos) {
        let mut out = Wire {
            holds: &self.holds,
            blocked: self.no_credits,
            sent: &mut self.wire,
        };
        self.queue.serve(now, &mut self.upload, &mut out);
    }
}

/// The server's side of the connection in these tests.
struct Wire<'a> {
    holds: &'a ChunkSet,
    blocked: bool,
    sent: &'a mut Vec<(u64, u32, u32)>,
}

impl ChunkSender<u64> for Wire<'_> {
    fn chunk_len(&self, _: &ImageId, _: u32) -> Option<u64> {
        Some(1024)
    }

    fn decline(&mut self, r: &ServeReq<u64>) {
        self.sent.push((r.peer, r.slot, u32::MAX - 1));
    }

    fn send(&mut self, r: &ServeReq<u64>) -> ServeOutcome {
        if self.blocked {
            ServeOutcome::NoCredits
        } else if self.holds.contains(r.index) {
            self.sent.push((r.peer, r.slot, r.index));
            ServeOutcome::Sent
        } else {
            self.sent.push((r.peer, r.slot, u32::MAX));
            ServeOutcome::NotHeld
        }
    }
}

/// Node 1 fetches from the servers until done or `limit`; returns the time it finished.
fn fetch_from(
    servers: &mut [Server],
    chunks: u32,
    limit: Nanos,
    mut at: impl FnMut(Nanos, &mut [Server]),
) -> Option<Nanos> {
    let mut f = ChunkFetch::new(shape(chunks), 0..chunks, 1, params());
    let mut holdings = Holdings::default();
    for s in servers.iter() {
        holdings.record(s.id, IMG, s.holds.clone());
    }
    let mut down = RateLimit::unlimited();
    let mut slot = 0u32;
    let mut now = 0;
    while now < limit {
        at(now, servers);
        let _ = f.expire(now);
        let ids: Vec<u64> = servers.iter().map(|s| s.id).collect();
        for a in f.fill(now, &ids, &holdings, &mut down, |_, _| {
            slot += 1;
            Some(slot)
        }) {
            let s = servers.iter_mut().find(|s| s.id == a.peer).unwrap();
            if s.ask(1, a, now) == Admit::Busy {
                f.declined(a.peer, a.slot, true, now);
            }
        }
        for s in servers.iter_mut() {
            s.step(now);
            for (_, slot, index) in std::mem::take(&mut s.wire) {
                if index == u32::MAX {
                    f.declined(s.id, slot, false, now);
                } else if index == u32::MAX - 1 {
                    f.declined(s.id, slot, true, now);
                } else {
                    assert_eq!(f.arrived(s.id, slot, 1024, now, &mut down), Some(index));
                    s.queue.left(1, slot);
                }
            }
        }
        if f.done() {
            return Some(now);
        }
        now += MS;
    }
    None
}

#[test]
fn fetch_no_credit_stall() {
    // The serving node's connection has no credits for a while (a restarted origin spending its
    // window on announcements): its answers wait in its queue, and the fetch ends once credits
    // return, with nothing asked twice.
    let mut servers = [Server::new(2, 8)];
    let done = fetch_from(&mut servers, 8, 60_000 * MS, |now, s| {
        s[0].no_credits = now < 3_000 * MS;
    });
    let t = done.expect("the fetch ends once the connection has credits again");
    assert!(t >= 3_000 * MS);
    assert!(
        t < 3_100 * MS,
        "the queued answers went out once credits returned, not after a deadline: {t}"
    );
    for i in 0..8 {
        assert_eq!(servers[0].queue.times_served(&IMG, i), 1, "chunk {i}");
    }
    assert_eq!(servers[0].asked, 8, "nothing was asked twice");
}

#[test]
fn a_request_lost_by_a_restarted_server_is_asked_again_after_its_deadline() {
    // The server forgets every request it queued (it restarted) and comes back: the requests
    // lapse at their deadline and are asked again, so the fetch ends without help.
    let mut servers = [Server::new(2, 4)];
    let deadline = request_deadline(1024, 0.0);
    let done = fetch_from(&mut servers, 4, 10 * deadline, |now, s| {
        if now < 1_000 * MS {
            s[0].no_credits = true;
        } else if now == 1_000 * MS {
            s[0].queue = ServeQueue::new(ServeParams::agent(Strategy::Pipeline));
            s[0].no_credits = false;
        }
    });
    let t = done.expect("lapsed requests are asked again");
    assert!(t >= deadline, "not before the deadline: {t}");
}

#[test]
fn a_neighbour_without_the_chunk_is_left_for_one_that_has_it() {
    let mut servers = [Server::new(2, 4), Server::new(3, 4)];
    servers[0].holds = ChunkSet::empty(4);
    fetch_from(&mut servers, 4, 10_000 * MS, |_, _| {}).expect("node 3 serves everything");
    assert!((0..4).all(|i| servers[0].queue.times_served(&IMG, i) == 0));
}

#[test]
fn the_rarest_chunk_is_asked_first_of_the_least_loaded_neighbour() {
    let mut holdings = Holdings::default();
    let mut two = ChunkSet::full(4);
    let mut three = ChunkSet::empty(4);
    three.insert(2);
    two.insert(2);
    holdings.record(2, IMG, two);
    holdings.record(3, IMG, three);
    let mut f = ChunkFetch::new(
        shape(4),
        [2, 3],
        1,
        FetchParams {
            window: 1,
            ..params()
        },
    );
    let asks = f.fill(
        0,
        &[2, 3],
        &holdings,
        &mut RateLimit::unlimited(),
        |_, _| Some(9),
    );
    assert_eq!(
        asks,
        vec![Ask {
            peer: 2,
            slot: 9,
            index: 3
        }],
        "chunk 3: one holder"
    );
}

#[test]
fn a_busy_uplink_declines_chunks_it_already_forwarded() {
    let mut q: ServeQueue<u64> = ServeQueue::new(ServeParams::agent(Strategy::Pipeline));
    let r = |peer, index| ServeReq {
        conn: peer,
        peer,
        image: IMG,
        index,
        slot: 0,
    };
    assert_eq!(q.admit(r(5, 0), 0), Admit::Queued);
    let first = q.pop().unwrap();
    q.sent(&first, 0);
    assert_eq!(
        q.admit(r(7, 0), 0),
        Admit::Busy,
        "forwarded once, still on the uplink"
    );
    q.left(5, 0);
    assert_eq!(
        q.admit(r(7, 0), 0),
        Admit::Queued,
        "an idle uplink serves anything"
    );
    assert_eq!(q.admit(r(6, 1), 0), Admit::Queued);
    assert_eq!(q.admit(r(8, 3), 0), Admit::Busy, "queue full");
    q.peer_down(6);
    assert_eq!(q.len(), 1);
    q.pop();
    q.sent(&r(9, 4), 0);
    assert_eq!(q.admit(r(7, 0), 1), Admit::Busy);
    assert_eq!(
        q.admit(r(7, 0), 10_000 * MS),
        Admit::Queued,
        "an unreported send lapses"
    );
    let mut one: ServeQueue<u64> =
        ServeQueue::new(ServeParams::agent(Strategy::PullOne { source: 0 }));
    assert!((0..10).all(|i| one.admit(r(i, 0), 0) == Admit::Queued));
    assert!((0..3).all(|_| one.admit(r(3, 1), 0) == Admit::Queued));
    assert_eq!(
        one.admit(r(3, 1), 0),
        Admit::Busy,
        "four per neighbour at most"
    );
    one.pop();
    assert_eq!(
        one.admit(r(0, 1), 0),
        Admit::Queued,
        "a served neighbour may ask again"
    );
}

#[test]
fn a_chunk_that_does_not_verify_drops_its_source() {
    let mut f = ChunkFetch::new(shape(2), 0..2, 1, params());
    let h = Holdings::default();
    let asks = f.fill(0, &[4], &h, &mut RateLimit::unlimited(), |_, _| Some(1));
    let i = f
        .arrived(4, asks[0].slot, 1024, 0, &mut RateLimit::unlimited())
        .unwrap();
    assert!(f.refused(4, i));
    assert!(!f.refused(4, i));
    assert_eq!(f.banned().collect::<Vec<_>>(), vec![4]);
    assert!(f
        .fill(1, &[4], &h, &mut RateLimit::unlimited(), |_, _| Some(2))
        .is_empty());
}

#[test]
fn chunk_sets_and_holdings() {
    let mut s = ChunkSet::empty(10);
    s.insert(0);
    s.insert(9);
    s.insert(10);
    assert_eq!(s.bitmap(), &[0x01, 0x02]);
    assert!(s.contains(9) && !s.contains(1) && !s.contains(10));
    assert_eq!(ChunkSet::full(10).bitmap(), &[0xff, 0x03]);
    assert_eq!(ChunkSet::from_bitmap(10, vec![0]), None, "one byte short");
    let mut h = Holdings::default();
    assert_eq!(h.holds(2, &IMG, 0), None);
    h.record(2, IMG, s.clone());
    h.record(3, IMG, ChunkSet::full(10));
    h.add(4, IMG, 10, 9);
    assert_eq!(h.holds(2, &IMG, 9), Some(true));
    assert_eq!(h.holds(2, &IMG, 5), Some(false));
    assert_eq!(h.count(&[2, 3, 4], &IMG, 9), 3);
    assert_eq!(h.count(&[2, 3, 4], &IMG, 5), 1);
    h.forget(2);
    assert_eq!(h.holds(2, &IMG, 9), None);
}

#[test]
fn a_request_deadline_is_ten_seconds_or_eight_chunk_times_at_the_cap() {
    assert_eq!(request_deadline(1 << 20, 0.0), 10_000 * MS);
    assert_eq!(request_deadline(1 << 20, 100.0), 10_000 * MS);
    assert_eq!(request_deadline(1 << 20, 0.5), 16_000 * MS);
    assert_eq!(request_deadline(1 << 20, 1e-9), 3_600_000 * MS);
}

#[test]
fn the_rate_cap_refills_with_time_and_charges_make_a_debt() {
    let mut r = RateLimit::new(100.0, 1 << 20, 0);
    assert!(
        r.try_take(10 << 20, 0),
        "a tenth of a second's worth passes"
    );
    assert!(!r.try_take(1, 0));
    assert!(r.wait_for(5 << 20, 0) >= 49 * MS);
    assert!(!r.try_take(5 << 20, 40 * MS));
    assert!(r.try_take(5 << 20, 60 * MS));
    let mut d = RateLimit::new(10.0, 1 << 20, 0);
    assert!(
        d.allows(2 << 20, 0) && d.allows(2 << 20, 0),
        "allows takes nothing"
    );
    d.charge(3 << 20, 0);
    assert!(!d.allows(1, 90 * MS));
    assert!(d.allows(1 << 20, 210 * MS));
    let mut none = RateLimit::unlimited();
    assert!((0..1000).all(|_| none.try_take(1 << 30, 5)));
    let mut slow = RateLimit::new(0.5, 1 << 20, 0);
    assert!(slow.try_take(1 << 20, 0) && slow.try_take(1 << 20, 0));
    assert!(!slow.try_take(1 << 20, 1_000 * MS));
    assert!(slow.try_take(1 << 20, 2_000 * MS));
}

#[test]
fn announcements_come_in_rounds_and_a_new_neighbour_hears_of_three_images_at_most() {
    let mut a = Announcements::default();
    assert!(a.due(0).is_empty());
    a.changed([1; 32]);
    a.changed([1; 32]);
    assert_eq!(a.due(0), vec![[1; 32]]);
    a.changed([2; 32]);
    assert!(a.due(5 * MS).is_empty(), "within the interval");
    assert_eq!(a.due(HAVE_INTERVAL), vec![[2; 32]]);
    let held: Vec<ImageId> = (1..=5).map(|i| [i; 32]).collect();
    assert_eq!(
        on_connect(Some([9; 32]), &held),
        vec![[9; 32], [5; 32], [4; 32]]
    );
    assert_eq!(on_connect(None, &held[..1]), vec![[1; 32]]);
}

#[test]
fn a_converged_campaign_keeps_its_images_and_the_previous_campaigns() {
    let held = [
        (1, [1; 32]),
        (2, [2; 32]),
        (3, [3; 32]),
        (3, [4; 32]),
        (5, [5; 32]),
    ];
    assert_eq!(
        to_prune(&held, 3, None),
        vec![[1; 32]],
        "2 is the previous campaign"
    );
    assert_eq!(to_prune(&held, 5, None), vec![[1; 32], [2; 32]]);
    assert_eq!(to_prune(&held, 5, Some(2)), vec![[1; 32]], "2 ran before");
    assert_eq!(to_prune(&held, 1, None), Vec::<ImageId>::new());
    assert_eq!(
        to_prune(&held, 9, None),
        vec![[1; 32], [2; 32], [3; 32], [4; 32]]
    );
}

#[test]
fn a_manifest_is_asked_of_one_neighbour_at_a_time_and_an_unanswered_request_lapses() {
    let mut m = ManifestFetch::new();
    assert_eq!(m.next(0, &[2, 3]), Some(2));
    m.asked(2, 7, 0);
    assert_eq!(m.next(1, &[2, 3]), None, "one request at a time");
    assert!(!m.answered(3, 7), "not from that neighbour");
    assert_eq!(m.lapsed(MANIFEST_DEADLINE), Some((2, 7)));
    assert_eq!(
        m.next(MANIFEST_DEADLINE, &[2, 3]),
        Some(3),
        "the silent one was tried"
    );
    m.asked(3, 8, MANIFEST_DEADLINE);
    m.declined(3, 8);
    let t = MANIFEST_DEADLINE + 1;
    assert_eq!(m.next(t, &[2, 3]), None, "everyone tried: a pause");
    assert_eq!(m.next(t + MANIFEST_RETRY, &[2, 3]), Some(2), "a new round");
    m.asked(2, 9, t + MANIFEST_RETRY);
    m.peer_down(2);
    assert_eq!(m.next(t + MANIFEST_RETRY, &[3]), Some(3));
    m.asked(3, 1, t + MANIFEST_RETRY);
    assert!(m.answered(3, 1));
}

#[test]
fn a_slot_reused_by_a_new_connection_does_not_lose_the_chunk_asked_in_it_before() {
    let mut f = ChunkFetch::new(shape(4), 0..4, 1, params());
    let mut h = Holdings::default();
    h.record(2, IMG, ChunkSet::full(4));
    let mut down = RateLimit::unlimited();
    let mut next = 0;
    let old = f.fill(0, &[2], &h, &mut down, |_, _| {
        next += 1;
        Some(next)
    });
    assert!(f.arrived(2, old[0].slot, 1024, 1, &mut down).is_some());
    // The answer in the old connection's slot 2 is lost; a new session numbers slots from 1.
    let mut next = 0;
    let a = f.fill(2, &[2], &h, &mut down, |_, _| {
        next += 1;
        Some(next)
    });
    assert!(f.arrived(2, a[0].slot, 1024, 3, &mut down).is_some());
    let b = f.fill(4, &[2], &h, &mut down, |_, _| {
        next += 1;
        Some(next)
    });
    assert_eq!(b[0].slot, 2, "the new session reuses slot 2");
    let mut got = vec![old[0].index, a[0].index];
    got.push(f.arrived(2, 2, 1024, 5, &mut down).unwrap());
    for x in &b[1..] {
        got.push(f.arrived(2, x.slot, 1024, 5, &mut down).unwrap());
    }
    for _ in 0..4 {
        for x in &f.fill(6, &[2], &h, &mut down, |_, _| {
            next += 1;
            Some(next)
        }) {
            got.push(f.arrived(2, x.slot, 1024, 7, &mut down).unwrap());
        }
    }
    got.sort();
    assert!(f.done());
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[test]
fn a_requester_without_credits_does_not_make_the_server_busy_for_ever() {
    let mut s = Server::new(2, 8);
    s.no_credits = true;
    for slot in 1..=2 {
        let a = Ask {
            peer: 2,
            slot,
            index: slot,
        };
        assert_eq!(s.ask(9, a, 0), Admit::Queued);
    }
    let later = 3_600_000 * MS;
    s.step(later);
    let a = Ask {
        peer: 2,
        slot: 7,
        index: 3,
    };
    assert_eq!(s.ask(5, a, later), Admit::Queued);
}

#[test]
fn pruning_keeps_the_firmware_that_ran_before_even_past_a_campaign_that_never_ran() {
    let held = [(5, [0xa; 32]), (6, [0xb; 32]), (7, [0xc; 32])];
    assert!(!to_prune(&held, 7, Some(5)).contains(&[0xa; 32]));
}

#[test]
fn a_tiny_upload_cap_does_not_overflow_the_wakeup() {
    let mut s = Server::new(2, 8);
    s.upload = RateLimit::new(1e-15, 1024, 0);
    for slot in 1..=3 {
        let r = ServeReq {
            conn: 9,
            peer: 9,
            image: IMG,
            index: slot,
            slot,
        };
        s.queue.admit(r, 0);
        s.step(1);
        s.queue.left(9, slot);
    }
}

#[test]
fn news_from_a_busy_neighbour_does_not_cut_its_busy_rest_short() {
    let mut f = ChunkFetch::new(
        shape(4),
        0..4,
        1,
        FetchParams {
            window: 1,
            ..params()
        },
    );
    let mut h = Holdings::default();
    h.record(2, IMG, ChunkSet::full(4));
    let mut down = RateLimit::unlimited();
    let a = f.fill(0, &[2], &h, &mut down, |_, _| Some(1));
    f.declined(2, a[0].slot, true, 0);
    f.heard_from(2);
    assert!(
        f.fill(1, &[2], &h, &mut down, |_, _| Some(2)).is_empty(),
        "still resting"
    );
    let b = f.fill(0, &[2], &h, &mut down, |_, _| Some(3));
    assert!(b.is_empty());
    // A neighbour that had nothing and announces chunks is asked again at once.
    let c = f.fill(params().busy_backoff, &[2], &h, &mut down, |_, _| Some(4));
    f.declined(2, c[0].slot, false, params().busy_backoff);
    f.heard_from(2);
    assert_eq!(
        f.fill(params().busy_backoff + 1, &[2], &h, &mut down, |_, _| Some(
            5
        ))
        .len(),
        1
    );
}
