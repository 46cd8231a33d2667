//! Answering neighbours' chunk requests: in turn, within the upload cap, forwarding each chunk
//! about once while the uplink has a queue and declining (BUSY) what others can serve. No
//! request is dropped unanswered: one whose connection has no credits left waits at the back.

use super::{ImageId, RateLimit};
use crate::Nanos;
use std::collections::{HashMap, VecDeque};

/// How a node answers chunk requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeParams {
    /// Requests waiting for the uplink beyond which new ones are declined as busy: a request
    /// queued here would wait while another neighbour's uplink may be free.
    pub queue_max: usize,
    /// Times a chunk is forwarded while the uplink has a queue (an idle uplink serves any
    /// chunk). Forwarding each chunk about once spreads the uploading over every node.
    pub quota: u16,
    /// Whether busy declines apply at all (pull-one's single source serves everything).
    pub decline_when_busy: bool,
}

impl ServeParams {
    /// The agent's values.
    pub fn agent(strategy: super::Strategy) -> ServeParams {
        ServeParams {
            queue_max: 2,
            quota: 1,
            decline_when_busy: strategy.forwards_once(),
        }
    }
}

/// A chunk request from a neighbour, on the caller's connection handle `C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeReq<C> {
    /// The connection it came on.
    pub conn: C,
    /// The neighbour.
    pub peer: u64,
    /// The image.
    pub image: ImageId,
    /// The chunk.
    pub index: u32,
    /// The neighbour's receive slot.
    pub slot: u32,
}

/// Whether a request was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Queued: it is served in turn.
    Queued,
    /// Declined: the caller answers BUSY.
    Busy,
}

/// What became of one attempt to serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeOutcome {
    /// The chunk went out.
    Sent,
    /// This node does not hold the chunk (the caller answered NOT_YET).
    NotHeld,
    /// The connection has no credits now: try again later.
    NoCredits,
    /// The connection or the grant is gone: nothing to answer on.
    Gone,
}

/// Where [`ServeQueue::serve`] reads and sends chunks: the caller's store and connections.
pub trait ChunkSender<C> {
    /// Bytes in chunk `index` of `image`, if this node knows the image.
    fn chunk_len(&self, image: &ImageId, index: u32) -> Option<u64>;
    /// Tries to send the chunk a request asks for (answering NOT_YET itself when it does not
    /// hold it).
    fn send(&mut self, r: &ServeReq<C>) -> ServeOutcome;
    /// Answers BUSY to a request that waited too long to be sent (its requester asks
    /// elsewhere).
    fn decline(&mut self, r: &ServeReq<C>);
}

/// Requests waiting for the uplink, and how often each chunk went out.
#[derive(Debug)]
pub struct ServeQueue<C> {
    params: ServeParams,
    /// Requests waiting, with when each was queued.
    queue: VecDeque<(ServeReq<C>, Nanos)>,
    /// Requests queued, per neighbour.
    queued: HashMap<u64, u16>,
    /// Chunks handed to a connection that has not yet reported them gone: (peer, slot) → when.
    sending: HashMap<(u64, u32), Nanos>,
    served: HashMap<(ImageId, u32), u16>,
}

/// A chunk not reported sent within this long is no longer counted as on the uplink (a report
/// lost with its connection must not make the node look busy for ever).
const SENDING_FOR_AT_MOST: Nanos = 10_000 * super::MS;
/// A request not sent within this long (its connection has no credits, or the upload cap is
/// far behind) is declined as BUSY: half the shortest deadline a requester gives it, so the
/// answer never lands in a slot the requester has withdrawn.
pub const QUEUED_FOR_AT_MOST: Nanos = 5_000 * super::MS;
/// Most requests one neighbour may have queued (an honest one has at most two in flight): more
/// are declined BUSY, so no neighbour grows the queue, whatever the strategy.
const QUEUED_PER_PEER: u16 = 4;

impl<C: Copy> ServeQueue<C> {
    /// An empty queue.
    pub fn new(params: ServeParams) -> ServeQueue<C> {
        ServeQueue {
            params,
            queue: VecDeque::new(),
            queued: HashMap::new(),
            sending: HashMap::new(),
            served: HashMap::new(),
        }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Times chunk `index` of `image` went out from here.
    pub fn times_served(&self, image: &ImageId, index: u32) -> u16 {
        self.served.get(&(*image, index)).copied().unwrap_or(0)
    }

    /// A neighbour asks for a chunk: queued, unless the uplink is busy (chunks waiting or still
    /// on their way out) and others can serve it.
    pub fn admit(&mut self, r: ServeReq<C>, now: Nanos) -> Admit {
        self.sending
            .retain(|_, at| now.saturating_sub(*at) < SENDING_FOR_AT_MOST);
        let load = self.queue.len() + self.sending.len();
        let forwarded = self.times_served(&r.image, r.index);
        let busy = self.params.decline_when_busy
            && (load >= self.params.queue_max || (load > 0 && forwarded >= self.params.quota));
        let theirs = self.queued.entry(r.peer).or_default();
        if busy || *theirs >= QUEUED_PER_PEER {
            return Admit::Busy;
        }
        *theirs += 1;
        self.queue.push_back((r, now));
        Admit::Queued
    }

    /// The request at the front, taken off the queue (for callers that model the uplink
    /// themselves; report it with [`ServeQueue::sent`]).
    pub fn pop(&mut self) -> Option<ServeReq<C>> {
        let (r, _) = self.queue.pop_front()?;
        self.unqueued(r.peer);
        Some(r)
    }

    /// Counts a chunk handed to its connection at `now`; it is on the uplink until
    /// [`ServeQueue::left`] reports it gone.
    pub fn sent(&mut self, r: &ServeReq<C>, now: Nanos) {
        *self.served.entry((r.image, r.index)).or_default() += 1;
        self.sending.insert((r.peer, r.slot), now);
    }

    /// The chunk sent to `peer`'s `slot` has left this node (its buffer is free again).
    pub fn left(&mut self, peer: u64, slot: u32) {
        self.sending.remove(&(peer, slot));
    }

    /// Serves queued requests while the upload cap allows, through `out`. A request that meets
    /// a connection without credits goes to the back and is tried on a later round, so one
    /// stalled requester never holds up the others and none is dropped. Returns when to call
    /// again, if anything still waits.
    pub fn serve(
        &mut self,
        now: Nanos,
        upload: &mut RateLimit,
        out: &mut impl ChunkSender<C>,
    ) -> Option<Nanos> {
        let is_stale = |at: Nanos| now.saturating_sub(at) >= QUEUED_FOR_AT_MOST;
        // Runs every round of the loop: the queue is rebuilt only when something lapsed.
        if self.queue.iter().any(|&(_, at)| is_stale(at)) {
            let (stale, fresh): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.queue)
                .into_iter()
                .partition(|&(_, at)| is_stale(at));
            self.queue = fresh;
            for (r, _) in stale {
                self.unqueued(r.peer);
                out.decline(&r);
            }
        }
        let mut round = self.queue.len();
        while round > 0 {
            round -= 1;
            let Some((r, at)) = self.queue.front().copied() else {
                break;
            };
            let len = out.chunk_len(&r.image, r.index).unwrap_or(0);
            if !upload.try_take(len, now) {
                return Some(now.saturating_add(upload.wait_for(len, now).max(1)));
            }
            self.queue.pop_front();
            match out.send(&r) {
                ServeOutcome::Sent => {
                    self.unqueued(r.peer);
                    self.sent(&r, now);
                }
                ServeOutcome::NoCredits => {
                    upload.refund(len);
                    self.queue.push_back((r, at));
                }
                ServeOutcome::NotHeld | ServeOutcome::Gone => {
                    self.unqueued(r.peer);
                    upload.refund(len);
                }
            }
        }
        (!self.queue.is_empty()).then_some(now + 2 * super::MS)
    }

    /// Forgets what a departed neighbour asked for.
    pub fn peer_down(&mut self, peer: u64) {
        self.queue.retain(|(r, _)| r.peer != peer);
        self.queued.remove(&peer);
        self.sending.retain(|(p, _), _| *p != peer);
    }

    /// One request of `peer` left the queue.
    fn unqueued(&mut self, peer: u64) {
        if let Some(n) = self.queued.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.queued.remove(&peer);
            }
        }
    }

    /// Forgets the forward counts of an image no longer held.
    pub fn forget_image(&mut self, image: &ImageId) {
        self.served.retain(|(i, _), _| i != image);
    }
}
