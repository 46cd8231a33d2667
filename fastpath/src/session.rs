//! One connection's state machine, shared by every backend (sans-IO: frames in, frames and
//! events out). Backends only move bytes; the handshake, sequence numbers, credits and bulk slot
//! bookkeeping live here, so every backend refuses the same things.

use crate::auth::{self, features, ClusterKey, FrameKeys, FrameMacs, Nonce, MAC_LEN, NONCE_LEN};
use crate::credit::Credits;
use crate::frame::{flags, Fields, FrameError, FrameHeader, Kind, MAX_CONTROL_PAYLOAD, TAG_LEN};
use crate::transport::{ConnId, DownReason, Event, NodeId, RefuseReason, SendError, SlotId, Stats};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Smallest receive window a peer may advertise (the handshake and one data frame must fit).
pub const MIN_WINDOW: u32 = 4;
/// Most bulk grants a peer may hold open towards us at once.
pub const MAX_REMOTE_GRANTS: usize = 64;
/// Highest connection generation either end takes: far above any that connections reach, and
/// low enough that no arithmetic on one overflows, whatever a peer proposes or a forged WELCOME
/// carries.
pub const MAX_GENERATION: u64 = 1 << 62;

/// Where a session's outgoing frames go.
pub trait FrameSink {
    /// Queues one frame for sending, in order: the header, the payload, then `tag` (empty, or
    /// the frame's MAC tag, which its header's length counts).
    fn send_frame(&mut self, header: &FrameHeader, payload: &Bytes, tag: &[u8]);
}

/// The transport-wide state a session updates.
pub struct Ctx<'a> {
    /// Events for the caller of `poll`.
    pub events: &'a mut Vec<Event>,
    /// Counters.
    pub stats: &'a mut Stats,
    /// What the transport remembers of each peer across connections.
    pub generations: &'a mut HashMap<NodeId, PeerMemory>,
}

/// What a transport remembers of a peer across its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerMemory {
    /// The latest generation, so a new connection's generation is higher.
    pub generation: u64,
    /// Whether a connection with it agreed frame MACs: an untagged one is refused from then on
    /// (stripping both offers on the path would otherwise downgrade it), until this transport
    /// is restarted.
    pub tagged: bool,
}

/// A slot the peer granted us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteGrant {
    /// The slot id.
    pub slot: SlotId,
    /// Largest chunk it takes.
    pub len: u32,
    /// Remote address of the slot (verbs only; 0 elsewhere).
    pub addr: u64,
    /// Remote key of the slot (verbs only; 0 elsewhere).
    pub rkey: u32,
}

/// A slot we granted, waiting for its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LocalGrant {
    slot: SlotId,
    len: u32,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    AwaitChallenge {
        nonce_c: Nonce,
        proposed: u64,
    },
    AwaitResponse {
        peer: NodeId,
        nonce_c: Nonce,
        nonce_a: Nonce,
        proposed: u64,
        peer_window: u32,
        /// Set when both offered frame MACs: what the proofs bind and the keys derive from.
        transcript: Option<Transcript>,
    },
    AwaitWelcome {
        peer: NodeId,
        proposed: u64,
        peer_window: u32,
        transcript: Option<Transcript>,
    },
    Established {
        conn: ConnId,
    },
    Closed,
}

/// What ended a session: the backend closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

/// Limits a session enforces on its own side.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Our receive window.
    pub window: u32,
    /// Bulk slots we grant at once.
    pub bulk_slots: u32,
    /// Largest chunk we grant.
    pub bulk_slot_len: u32,
    /// Whether bulk chunks travel as frames with sequence numbers (tcp, mem) or as RDMA writes
    /// with an immediate value (verbs).
    pub bulk_in_band: bool,
    /// Largest peer window we honour (verbs: what our send ring holds).
    pub max_peer_window: u32,
    /// Whether frames are tagged, and whether a peer that does not tag them is refused.
    pub frame_macs: FrameMacs,
}

/// One connection's protocol state.
pub struct Session {
    local: NodeId,
    key: Arc<ClusterKey>,
    limits: Limits,
    addr: SocketAddr,
    state: State,
    tx_seq: u64,
    rx_seq: u64,
    credits: Credits,
    next_slot: SlotId,
    granted: Vec<LocalGrant>,
    grants_to_us: Vec<RemoteGrant>,
    /// The connection's frame keys, once established with frame MACs agreed.
    tags: Option<FrameKeys>,
}

const HELLO_LEN: usize = NONCE_LEN + 8 + 4;
/// HELLO's payload and offer, then CHALLENGE's nonce, window and offer.
const TRANSCRIPT_LEN: usize = HELLO_LEN + 8 + NONCE_LEN + 4 + 8;
type Transcript = [u8; TRANSCRIPT_LEN];

fn transcript(
    hello: &[u8],
    offer_c: u64,
    nonce_a: &Nonce,
    window_a: u32,
    offer_a: u64,
) -> Transcript {
    let mut t = [0u8; TRANSCRIPT_LEN];
    let parts: [&[u8]; 5] = [
        hello,
        &offer_c.to_le_bytes(),
        nonce_a,
        &window_a.to_le_bytes(),
        &offer_a.to_le_bytes(),
    ];
    let mut at = 0;
    for part in parts {
        t[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, TRANSCRIPT_LEN);
    t
}
const CHALLENGE_LEN: usize = NONCE_LEN + MAC_LEN + 4;
const WELCOME_LEN: usize = 8;
const GRANT_LEN: usize = 4 + 4 + 8 + 4;
/// Largest payload of a handshake frame: the most a peer may make us buffer before it has
/// proved the cluster key.
pub const MAX_HANDSHAKE_PAYLOAD: usize = CHALLENGE_LEN;

const _: () = assert!(HELLO_LEN <= MAX_HANDSHAKE_PAYLOAD && MAC_LEN <= MAX_HANDSHAKE_PAYLOAD);

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Session {
    /// A session for a connection we opened; call [`Session::send_hello`] once the connection
    /// can take frames.
    pub fn connector(
        local: NodeId,
        key: Arc<ClusterKey>,
        limits: Limits,
        addr: SocketAddr,
        generations: &HashMap<NodeId, PeerMemory>,
    ) -> Session {
        let nonce_c = auth::nonce();
        // We do not know the peer's id yet: propose past every generation we have seen.
        let proposed = generations
            .values()
            .map(|p| p.generation)
            .max()
            .unwrap_or(0);
        let mut s = Session::new(local, key, limits, addr);
        s.state = State::AwaitChallenge { nonce_c, proposed };
        s
    }

    /// Sends the connector's HELLO.
    pub fn send_hello(&mut self, sink: &mut dyn FrameSink) {
        let State::AwaitChallenge { nonce_c, proposed } = self.state else {
            return;
        };
        let p = self.hello_payload(&nonce_c, proposed);
        let offer = self.limits.frame_macs.offered();
        self.send_handshake(Kind::Hello, 0, 0, offer, Bytes::copy_from_slice(&p), sink);
    }

    fn hello_payload(&self, nonce_c: &Nonce, proposed: u64) -> [u8; HELLO_LEN] {
        let mut p = [0u8; HELLO_LEN];
        p[..NONCE_LEN].copy_from_slice(nonce_c);
        p[NONCE_LEN..NONCE_LEN + 8].copy_from_slice(&proposed.to_le_bytes());
        p[NONCE_LEN + 8..].copy_from_slice(&self.limits.window.to_le_bytes());
        p
    }

    /// What both ends agree from our offer and the peer's (`aux` of its HELLO or CHALLENGE).
    fn agreed(&self, peer_offer: u64) -> u64 {
        self.limits.frame_macs.offered() & peer_offer & features::KNOWN
    }

    /// Refuses a peer that does not offer frame MACs when we require them, or when it tagged
    /// its frames on an earlier connection with this transport.
    fn check_offer(&mut self, peer: NodeId, agreed: u64, ctx: &mut Ctx<'_>) -> Result<(), Ended> {
        if agreed & features::FRAME_MACS != 0 {
            return Ok(());
        }
        let what = if self.limits.frame_macs == FrameMacs::Require {
            "the peer does not offer frame MACs (a build before them, or frame_macs = \"off\"), \
             and this node requires them"
                .to_owned()
        } else if ctx.generations.get(&peer).is_some_and(|p| p.tagged) {
            format!(
                "node {peer} does not offer frame MACs, which it agreed on an earlier connection: \
                 a downgrade on the path, or it went back to a build without them (restart this \
                 agent to accept that)"
            )
        } else {
            return Ok(());
        };
        Err(self.refuse(RefuseReason::Handshake(what), ctx))
    }

    /// A session for a connection a peer opened: waits for HELLO.
    pub fn acceptor(
        local: NodeId,
        key: Arc<ClusterKey>,
        limits: Limits,
        addr: SocketAddr,
    ) -> Session {
        Session::new(local, key, limits, addr)
    }

    fn new(local: NodeId, key: Arc<ClusterKey>, limits: Limits, addr: SocketAddr) -> Session {
        Session {
            local,
            key,
            limits,
            addr,
            state: State::AwaitHello,
            tx_seq: 0,
            rx_seq: 0,
            credits: Credits::new(limits.window, MIN_WINDOW),
            next_slot: 1,
            granted: Vec::with_capacity(limits.bulk_slots as usize),
            grants_to_us: Vec::new(),
            tags: None,
        }
    }

    /// The connection, once the handshake is done.
    pub fn conn(&self) -> Option<ConnId> {
        match self.state {
            State::Established { conn } => Some(conn),
            _ => None,
        }
    }

    /// The remote address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the session ended (the backend should drop the connection).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Frames we may still send.
    pub fn credits(&self) -> u32 {
        self.credits.available_for_data()
    }

    fn send_handshake(
        &mut self,
        kind: Kind,
        dst: NodeId,
        generation: u64,
        aux: u64,
        payload: Bytes,
        sink: &mut dyn FrameSink,
    ) {
        let h = FrameHeader::new(
            Fields {
                kind,
                flags: 0,
                src: self.local,
                dst,
                seq: self.tx_seq,
                generation,
                aux,
                freed: 0,
            },
            &payload,
        );
        self.tx_seq += 1;
        sink.send_frame(&h, &payload, &[]);
    }

    fn send_counted(
        &mut self,
        conn: ConnId,
        kind: Kind,
        fl: u16,
        aux: u64,
        payload: &Bytes,
        sink: &mut dyn FrameSink,
    ) {
        let f = Fields {
            kind,
            flags: fl,
            src: self.local,
            dst: conn.peer,
            seq: self.tx_seq,
            generation: conn.generation,
            aux,
            freed: self.credits.report(),
        };
        self.tx_seq += 1;
        match &self.tags {
            Some(keys) => {
                let (h, tag) =
                    FrameHeader::new_tagged(f, payload, |h, covered| keys.tag(h, covered));
                sink.send_frame(&h, payload, &tag);
            }
            None => sink.send_frame(&FrameHeader::new(f, payload), payload, &[]),
        }
    }

    fn established(&self) -> Result<ConnId, ()> {
        self.conn().ok_or(())
    }

    /// Sends a control message.
    pub fn send_data(
        &mut self,
        payload: &Bytes,
        sink: &mut dyn FrameSink,
    ) -> Result<(), SendError> {
        let conn = self.established().map_err(|_| self.no_conn())?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: MAX_CONTROL_PAYLOAD,
            });
        }
        if !self.credits.take_for_data() {
            return Err(SendError::NoCredits(conn));
        }
        self.send_counted(conn, Kind::Data, 0, 0, payload, sink);
        Ok(())
    }

    fn no_conn(&self) -> SendError {
        SendError::NoConnection(ConnId {
            peer: 0,
            generation: 0,
        })
    }

    /// Grants the peer one bulk slot (`addr`/`rkey` describe it on verbs; 0 elsewhere).
    pub fn grant_bulk(
        &mut self,
        len: u32,
        addr: u64,
        rkey: u32,
        sink: &mut dyn FrameSink,
    ) -> Result<SlotId, SendError> {
        let conn = self.established().map_err(|_| self.no_conn())?;
        if len as usize > self.limits.bulk_slot_len as usize {
            return Err(SendError::TooLarge {
                len: len as usize,
                max: self.limits.bulk_slot_len as usize,
            });
        }
        if self.granted.len() >= self.limits.bulk_slots as usize {
            return Err(SendError::NoSlot(conn));
        }
        if !self.credits.take_for_data() {
            return Err(SendError::NoCredits(conn));
        }
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1).max(1);
        self.granted.push(LocalGrant { slot, len });
        let mut p = [0u8; GRANT_LEN];
        p[0..4].copy_from_slice(&slot.to_le_bytes());
        p[4..8].copy_from_slice(&len.to_le_bytes());
        p[8..16].copy_from_slice(&addr.to_le_bytes());
        p[16..20].copy_from_slice(&rkey.to_le_bytes());
        self.send_counted(
            conn,
            Kind::BulkGrant,
            0,
            0,
            &Bytes::copy_from_slice(&p),
            sink,
        );
        Ok(slot)
    }

    /// Consumes the peer's grant of `slot` for a chunk of `len` bytes and, for in-band backends,
    /// sends the chunk. Returns the grant (verbs writes to its address).
    pub fn send_bulk(
        &mut self,
        slot: SlotId,
        data: &Bytes,
        sink: &mut dyn FrameSink,
    ) -> Result<RemoteGrant, SendError> {
        let conn = self.established().map_err(|_| self.no_conn())?;
        let at = self
            .grants_to_us
            .iter()
            .position(|g| g.slot == slot)
            .ok_or(SendError::NotGranted { conn, slot })?;
        let grant = self.grants_to_us[at];
        if data.len() > grant.len as usize {
            return Err(SendError::TooLarge {
                len: data.len(),
                max: grant.len as usize,
            });
        }
        if !self.credits.take_for_data() {
            return Err(SendError::NoCredits(conn));
        }
        self.grants_to_us.swap_remove(at);
        if self.limits.bulk_in_band {
            self.send_counted(
                conn,
                Kind::BulkData,
                flags::NO_PAYLOAD_SUM,
                slot as u64,
                data,
                sink,
            );
        }
        // Otherwise the chunk goes as an RDMA write, which carries no header: the buffers we
        // freed stay unreported until a frame (a Credit frame at the latest) carries them.
        Ok(grant)
    }

    /// Sends an orderly close (if a credit allows) and ends the session.
    pub fn close(&mut self, sink: &mut dyn FrameSink, ctx: &mut Ctx<'_>) {
        if let Ok(conn) = self.established() {
            if self.credits.take_for_control() {
                self.send_counted(conn, Kind::Close, 0, 0, &Bytes::new(), sink);
            }
            ctx.events.push(Event::Down(conn, DownReason::Local));
        }
        self.state = State::Closed;
    }

    /// The connection broke underneath (EOF, reset, QP error, handshake timeout).
    pub fn broken(&mut self, why: &str, ctx: &mut Ctx<'_>) {
        match self.state {
            State::Established { conn } => ctx
                .events
                .push(Event::Down(conn, DownReason::Broken(why.to_owned()))),
            State::Closed => {}
            _ => ctx.events.push(Event::Refused {
                addr: self.addr,
                reason: RefuseReason::Broken(why.to_owned()),
            }),
        }
        self.state = State::Closed;
    }

    /// The handshake took too long.
    pub fn timed_out(&mut self, ctx: &mut Ctx<'_>) {
        if self.conn().is_none() && !self.is_closed() {
            ctx.events.push(Event::Refused {
                addr: self.addr,
                reason: RefuseReason::Timeout,
            });
            self.state = State::Closed;
        }
    }

    /// A frame that failed to decode: the connection is cut.
    pub fn malformed(&mut self, err: FrameError, ctx: &mut Ctx<'_>) -> Ended {
        ctx.stats.protocol_errors += 1;
        match self.state {
            State::Established { conn } => ctx.events.push(Event::Down(
                conn,
                DownReason::Protocol(format!("malformed frame: {err}")),
            )),
            State::Closed => {}
            _ => ctx.events.push(Event::Refused {
                addr: self.addr,
                reason: RefuseReason::Malformed(err),
            }),
        }
        self.state = State::Closed;
        Ended
    }

    fn refuse(&mut self, reason: RefuseReason, ctx: &mut Ctx<'_>) -> Ended {
        if reason == RefuseReason::Authentication {
            ctx.stats.auth_failures += 1;
        } else {
            ctx.stats.protocol_errors += 1;
        }
        ctx.events.push(Event::Refused {
            addr: self.addr,
            reason,
        });
        self.state = State::Closed;
        Ended
    }

    fn violation(&mut self, conn: ConnId, what: String, ctx: &mut Ctx<'_>) -> Ended {
        ctx.stats.protocol_errors += 1;
        ctx.events
            .push(Event::Down(conn, DownReason::Protocol(what)));
        self.state = State::Closed;
        Ended
    }

    /// Handles one decoded, checksummed frame.
    pub fn on_frame(
        &mut self,
        h: &FrameHeader,
        payload: Bytes,
        sink: &mut dyn FrameSink,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Ended> {
        match self.state {
            State::Established { conn } => self.on_established(conn, h, payload, sink, ctx),
            State::Closed => Err(Ended),
            _ => self.on_handshake(h, &payload, sink, ctx),
        }
    }

    fn on_handshake(
        &mut self,
        h: &FrameHeader,
        p: &[u8],
        sink: &mut dyn FrameSink,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Ended> {
        if p.len() != h.len() {
            // Backends pass the payload the header announced; anything else is not a frame.
            let what = format!("payload of {} bytes under a header of {}", p.len(), h.len());
            return Err(self.refuse(RefuseReason::Handshake(what), ctx));
        }
        self.check_handshake_header(h, ctx)?;
        self.rx_seq += 1;
        let src = h.src();
        if src == 0 || src == self.local {
            let what = format!("peer claims node id {src}");
            return Err(self.refuse(RefuseReason::Handshake(what), ctx));
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitHello => {
                let nonce_c: Nonce = p[..NONCE_LEN].try_into().expect("nonce");
                let proposed = u64_at(p, NONCE_LEN);
                let peer_window = u32_at(p, NONCE_LEN + 8);
                if peer_window < MIN_WINDOW {
                    let what = format!("peer window {peer_window} below {MIN_WINDOW}");
                    return Err(self.refuse(RefuseReason::Handshake(what), ctx));
                }
                let agreed = self.agreed(h.aux());
                self.check_offer(src, agreed, ctx)?;
                let nonce_a = auth::nonce();
                let offer = self.limits.frame_macs.offered();
                let window = self.limits.window;
                let ids = [src, self.local];
                let transcript =
                    (agreed != 0).then(|| transcript(p, h.aux(), &nonce_a, window, offer));
                let proof = match &transcript {
                    Some(t) => self.key.transcript_proof(true, t, ids),
                    None => self.key.accept_proof(&nonce_c, &nonce_a, src, self.local),
                };
                let mut out = Vec::with_capacity(CHALLENGE_LEN);
                out.extend_from_slice(&nonce_a);
                out.extend_from_slice(&proof);
                out.extend_from_slice(&window.to_le_bytes());
                self.send_handshake(Kind::Challenge, src, 0, offer, Bytes::from(out), sink);
                self.state = State::AwaitResponse {
                    peer: src,
                    nonce_c,
                    nonce_a,
                    proposed,
                    peer_window,
                    transcript,
                };
                Ok(())
            }
            State::AwaitChallenge { nonce_c, proposed } => {
                let nonce_a: Nonce = p[..NONCE_LEN].try_into().expect("nonce");
                let proof = &p[NONCE_LEN..NONCE_LEN + MAC_LEN];
                let peer_window = u32_at(p, NONCE_LEN + MAC_LEN);
                let agreed = self.agreed(h.aux());
                let ids = [self.local, src];
                let transcript = (agreed != 0).then(|| {
                    let hello = self.hello_payload(&nonce_c, proposed);
                    let offer = self.limits.frame_macs.offered();
                    transcript(&hello, offer, &nonce_a, peer_window, h.aux())
                });
                let proved = match &transcript {
                    Some(t) => self.key.verify_transcript(true, t, ids, proof),
                    None => self.key.verify_accept(&nonce_c, &nonce_a, ids, proof),
                };
                if !proved {
                    return Err(self.refuse(RefuseReason::Authentication, ctx));
                }
                self.check_offer(src, agreed, ctx)?;
                if peer_window < MIN_WINDOW {
                    let what = format!("peer window {peer_window} below {MIN_WINDOW}");
                    return Err(self.refuse(RefuseReason::Handshake(what), ctx));
                }
                let mine = match &transcript {
                    Some(t) => self.key.transcript_proof(false, t, ids),
                    None => self.key.connect_proof(&nonce_c, &nonce_a, self.local, src),
                };
                let mine = Bytes::copy_from_slice(&mine);
                self.send_handshake(Kind::Response, src, 0, 0, mine, sink);
                self.state = State::AwaitWelcome {
                    peer: src,
                    proposed,
                    peer_window,
                    transcript,
                };
                Ok(())
            }
            State::AwaitResponse {
                peer,
                nonce_c,
                nonce_a,
                proposed,
                peer_window,
                transcript,
            } => {
                let ids = [peer, self.local];
                let proved = match &transcript {
                    Some(t) => self.key.verify_transcript(false, t, ids, p),
                    None => self.key.verify_connect(&nonce_c, &nonce_a, ids, p),
                };
                if src != peer || !proved {
                    return Err(self.refuse(RefuseReason::Authentication, ctx));
                }
                let last = ctx.generations.get(&peer).map_or(0, |p| p.generation);
                let base = last.max(proposed);
                if base >= MAX_GENERATION {
                    let what = format!("proposed generation {proposed} is beyond any plausible");
                    return Err(self.refuse(RefuseReason::Handshake(what), ctx));
                }
                let generation = base + 1;
                let memory = ctx.generations.entry(peer).or_default();
                memory.generation = generation;
                memory.tagged |= transcript.is_some();
                self.tags = transcript.map(|t| self.key.frame_keys(true, &t, ids, generation));
                let welcome = Bytes::copy_from_slice(&generation.to_le_bytes());
                let f = Fields {
                    kind: Kind::Welcome,
                    flags: 0,
                    src: self.local,
                    dst: peer,
                    seq: self.tx_seq,
                    generation,
                    aux: 0,
                    freed: 0,
                };
                self.tx_seq += 1;
                // Tagged when frame MACs were agreed: the generation it assigns is authenticated.
                match &self.tags {
                    Some(keys) => {
                        let (h, tag) =
                            FrameHeader::new_tagged(f, &welcome, |h, covered| keys.tag(h, covered));
                        sink.send_frame(&h, &welcome, &tag);
                    }
                    None => sink.send_frame(&FrameHeader::new(f, &welcome), &welcome, &[]),
                }
                self.establish(peer, generation, peer_window, ctx);
                Ok(())
            }
            State::AwaitWelcome {
                peer,
                proposed,
                peer_window,
                transcript,
            } => {
                let generation = u64_at(p, 0);
                let last = ctx.generations.get(&peer).map_or(0, |p| p.generation);
                if src != peer
                    || generation <= proposed.max(last)
                    || generation > MAX_GENERATION
                    || h.generation() != generation
                {
                    let what = format!("generation {generation} does not follow {last}");
                    return Err(self.refuse(RefuseReason::Handshake(what), ctx));
                }
                let ids = [self.local, peer];
                let tags = transcript.map(|t| self.key.frame_keys(false, &t, ids, generation));
                if let Some(keys) = &tags {
                    // The generation is taken only once the acceptor's tag proves it.
                    if !keys.verify(&h.bytes_for_tag(), &p[..WELCOME_LEN], &p[WELCOME_LEN..]) {
                        return Err(self.refuse(RefuseReason::Authentication, ctx));
                    }
                }
                let memory = ctx.generations.entry(peer).or_default();
                memory.generation = generation;
                memory.tagged |= tags.is_some();
                self.tags = tags;
                self.establish(peer, generation, peer_window, ctx);
                Ok(())
            }
            State::Established { .. } | State::Closed => Err(Ended),
        }
    }

    /// The handshake frame due next: its kind, payload length and whether it is tagged (a
    /// WELCOME when frame MACs were agreed).
    fn expected_handshake(&self) -> (Kind, usize, bool) {
        match self.state {
            State::AwaitHello => (Kind::Hello, HELLO_LEN, false),
            State::AwaitChallenge { .. } => (Kind::Challenge, CHALLENGE_LEN, false),
            State::AwaitResponse { .. } => (Kind::Response, MAC_LEN, false),
            State::AwaitWelcome {
                transcript: Some(_),
                ..
            } => (Kind::Welcome, WELCOME_LEN + TAG_LEN, true),
            _ => (Kind::Welcome, WELCOME_LEN, false),
        }
    }

    fn check_handshake_header(&mut self, h: &FrameHeader, ctx: &mut Ctx<'_>) -> Result<(), Ended> {
        let (expected, want_len, tagged) = self.expected_handshake();
        if h.kind() != expected
            || h.len() != want_len
            || h.is_tagged() != tagged
            || h.seq() != self.rx_seq
        {
            let what = format!(
                "expected {expected:?} of {want_len} bytes (seq {}), got {:?} of {} bytes (seq {})",
                self.rx_seq,
                h.kind(),
                h.len(),
                h.seq()
            );
            return Err(self.refuse(RefuseReason::Handshake(what), ctx));
        }
        Ok(())
    }

    /// Checks a decoded header before its payload is buffered, so that no buffer is ever sized
    /// from a header this side would refuse: during the handshake only the handshake frame due
    /// next (at most [`MAX_HANDSHAKE_PAYLOAD`] bytes) is taken; once established, a bulk chunk
    /// only into a slot this side granted and not longer than the grant. Anything else ends the
    /// session, as [`Session::on_frame`] would once the payload was in.
    pub fn admit_header(&mut self, h: &FrameHeader, ctx: &mut Ctx<'_>) -> Result<(), Ended> {
        match self.state {
            State::Closed => Err(Ended),
            State::Established { conn } => {
                self.check_tagging(conn, h, ctx)?;
                if h.kind() != Kind::BulkData {
                    return Ok(());
                }
                let granted = u32::try_from(h.aux())
                    .ok()
                    .and_then(|slot| self.granted.iter().find(|g| g.slot == slot));
                match granted {
                    Some(g) if h.body_len() <= g.len as usize => Ok(()),
                    Some(g) => {
                        let what = format!(
                            "bulk chunk of {} bytes for slot {} of {} bytes",
                            h.body_len(),
                            g.slot,
                            g.len
                        );
                        Err(self.violation(conn, what, ctx))
                    }
                    None => {
                        let what = format!("bulk chunk for slot {}, which is not granted", h.aux());
                        Err(self.violation(conn, what, ctx))
                    }
                }
            }
            _ => self.check_handshake_header(h, ctx),
        }
    }

    /// A frame is tagged exactly when the connection agreed frame MACs.
    fn check_tagging(
        &mut self,
        conn: ConnId,
        h: &FrameHeader,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Ended> {
        if h.is_tagged() == self.tags.is_some() {
            return Ok(());
        }
        let what = if h.is_tagged() {
            format!(
                "{:?} frame tagged on a connection that agreed no frame MACs",
                h.kind()
            )
        } else {
            format!(
                "{:?} frame without its MAC tag on a connection that agreed them",
                h.kind()
            )
        };
        ctx.stats.auth_failures += 1;
        Err(self.violation(conn, what, ctx))
    }

    /// Checks a tagged frame's tag and returns its payload without it; an untagged frame's
    /// payload as it is.
    fn untag(
        &mut self,
        conn: ConnId,
        h: &FrameHeader,
        payload: Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Result<Bytes, Ended> {
        self.check_tagging(conn, h, ctx)?;
        let Some(keys) = &self.tags else {
            return Ok(payload);
        };
        let Some(body_len) = payload.len().checked_sub(TAG_LEN) else {
            let what = format!("tagged frame of {} bytes", payload.len());
            return Err(self.violation(conn, what, ctx));
        };
        let covered = if h.flags() & flags::NO_PAYLOAD_SUM != 0 {
            &[][..]
        } else {
            &payload[..body_len]
        };
        if !keys.verify(&h.bytes_for_tag(), covered, &payload[body_len..]) {
            ctx.stats.auth_failures += 1;
            let what = format!(
                "{:?} frame (seq {}) failed its MAC: forged or altered on the path",
                h.kind(),
                h.seq()
            );
            return Err(self.violation(conn, what, ctx));
        }
        Ok(payload.slice(..body_len))
    }

    /// Whether the connection's frames carry MAC tags (known once established).
    pub fn is_tagged(&self) -> bool {
        self.tags.is_some()
    }

    fn establish(&mut self, peer: NodeId, generation: u64, peer_window: u32, ctx: &mut Ctx<'_>) {
        let conn = ConnId { peer, generation };
        self.state = State::Established { conn };
        let peer_window = peer_window.min(self.limits.max_peer_window);
        self.credits = Credits::new(self.limits.window, peer_window);
        self.tx_seq = 0;
        self.rx_seq = 0;
        ctx.stats.connections_up += 1;
        if self.tags.is_none() {
            ctx.stats.connections_untagged += 1;
        }
        ctx.events.push(Event::Up(conn));
    }

    fn on_established(
        &mut self,
        conn: ConnId,
        h: &FrameHeader,
        payload: Bytes,
        sink: &mut dyn FrameSink,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Ended> {
        let payload = self.untag(conn, h, payload, ctx)?;
        if h.src() != conn.peer || h.dst() != self.local || h.generation() != conn.generation {
            let what = format!(
                "frame {}→{} generation {} on connection {:?}",
                h.src(),
                h.dst(),
                h.generation(),
                conn
            );
            return Err(self.violation(conn, what, ctx));
        }
        if h.seq() != self.rx_seq {
            let what = format!("sequence {} where {} was due", h.seq(), self.rx_seq);
            return Err(self.violation(conn, what, ctx));
        }
        if h.kind().is_handshake() {
            let what = format!("{:?} after the handshake", h.kind());
            return Err(self.violation(conn, what, ctx));
        }
        self.rx_seq += 1;
        match self.credits.on_receive(h.freed()) {
            Ok(true) => ctx.events.push(Event::Writable(conn)),
            Ok(false) => {}
            Err(e) => return Err(self.violation(conn, e.to_string(), ctx)),
        }
        match h.kind() {
            Kind::Data => {
                ctx.stats.messages_received += 1;
                ctx.events.push(Event::Message(conn, payload));
            }
            Kind::Credit => {}
            Kind::BulkGrant => {
                if payload.len() != GRANT_LEN || self.grants_to_us.len() >= MAX_REMOTE_GRANTS {
                    let what = format!(
                        "bulk grant of {} bytes with {} grants open",
                        payload.len(),
                        self.grants_to_us.len()
                    );
                    return Err(self.violation(conn, what, ctx));
                }
                let g = RemoteGrant {
                    slot: u32_at(&payload, 0),
                    len: u32_at(&payload, 4),
                    addr: u64_at(&payload, 8),
                    rkey: u32_at(&payload, 16),
                };
                if self.grants_to_us.iter().any(|o| o.slot == g.slot) {
                    let what = format!("slot {} granted twice", g.slot);
                    return Err(self.violation(conn, what, ctx));
                }
                self.grants_to_us.push(g);
                ctx.events.push(Event::BulkGrant {
                    conn,
                    slot: g.slot,
                    len: g.len,
                });
            }
            Kind::BulkData => {
                let slot = h.aux() as u32;
                if h.aux() > u32::MAX as u64 {
                    let what = format!("bulk slot {} out of range", h.aux());
                    return Err(self.violation(conn, what, ctx));
                }
                self.take_grant(conn, slot, payload.len(), ctx)?;
                ctx.stats.bulk_received += 1;
                ctx.events.push(Event::Bulk {
                    conn,
                    slot,
                    data: payload,
                });
            }
            Kind::Close => {
                ctx.events.push(Event::Down(conn, DownReason::Closed));
                self.state = State::Closed;
                return Err(Ended);
            }
            Kind::Hello | Kind::Challenge | Kind::Response | Kind::Welcome => {
                unreachable!("handshake kinds refused above")
            }
        }
        self.credits.free_one();
        self.return_credits(sink);
        Ok(())
    }

    /// Withdraws a grant of ours that the peer will not use; returns whether it was open.
    pub fn revoke_grant(&mut self, slot: SlotId) -> bool {
        match self.granted.iter().position(|g| g.slot == slot) {
            Some(at) => {
                self.granted.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Drops a grant the peer made us, unused; returns whether it was held.
    pub fn decline_grant(&mut self, slot: SlotId) -> bool {
        match self.grants_to_us.iter().position(|g| g.slot == slot) {
            Some(at) => {
                self.grants_to_us.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Checks that a chunk of `len` bytes for `slot` was granted, and consumes the grant.
    pub fn take_grant(
        &mut self,
        conn: ConnId,
        slot: SlotId,
        len: usize,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Ended> {
        let Some(at) = self.granted.iter().position(|g| g.slot == slot) else {
            let what = format!("bulk chunk for slot {slot}, which is not granted");
            return Err(self.violation(conn, what, ctx));
        };
        if len > self.granted[at].len as usize {
            let what = format!(
                "bulk chunk of {len} bytes for slot {slot} of {} bytes",
                self.granted[at].len
            );
            return Err(self.violation(conn, what, ctx));
        }
        self.granted.swap_remove(at);
        Ok(())
    }

    /// An out-of-band bulk arrival (verbs WRITE WITH IMM): accounts its credit and grant.
    pub fn on_bulk_arrival(
        &mut self,
        slot: SlotId,
        len: usize,
        sink: &mut dyn FrameSink,
        ctx: &mut Ctx<'_>,
    ) -> Result<ConnId, Ended> {
        let conn = self.established().map_err(|_| Ended)?;
        // A write carries no header: the peer's `freed` is unchanged.
        let freed = self.credits.peer_freed();
        if let Err(e) = self.credits.on_receive(freed) {
            return Err(self.violation(conn, e.to_string(), ctx));
        }
        self.take_grant(conn, slot, len, ctx)?;
        ctx.stats.bulk_received += 1;
        self.credits.free_one();
        self.return_credits(sink);
        Ok(conn)
    }

    /// Sends a `Credit` frame when enough freed buffers are unreported.
    pub fn return_credits(&mut self, sink: &mut dyn FrameSink) {
        if let Ok(conn) = self.established() {
            if self.credits.should_return() && self.credits.take_for_control() {
                self.send_counted(conn, Kind::Credit, 0, 0, &Bytes::new(), sink);
            }
        }
    }
}
