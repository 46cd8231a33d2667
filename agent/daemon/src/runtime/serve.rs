//! Serving neighbours: manifests, chunks of complete images and of the image this node is
//! still receiving (so an image flows through a node while it arrives), the `Have` bitmaps
//! that tell neighbours what to ask for, and the upload cap.

use super::fetch::Fetch;
use super::have::ChunkSet;
use super::Agent;
use crate::envelope::{Envelope, MAX_HAVE_CHUNKS};
use bytes::Bytes;
use entente_fastpath::{ConnId, SendError};
use std::time::{Duration, Instant};

/// Shortest interval between two `Have` rounds (a round covers every chunk that arrived since).
const HAVE_INTERVAL: Duration = Duration::from_millis(10);
/// Chunk requests waiting for the uplink beyond which new ones are declined as busy: a request
/// queued here would wait while another neighbour's uplink may be free.
const SERVE_QUEUE_MAX: usize = 2;
/// Times a chunk is forwarded while the uplink has a queue; an idle uplink serves any chunk.
/// Forwarding each chunk about once spreads the uploading over every node (the simulator's
/// `SERVE_QUOTA`).
const SERVE_QUOTA: u16 = 1;

/// A chunk request waiting for the upload cap.
#[derive(Debug, Clone, Copy)]
pub struct ServeReq {
    conn: ConnId,
    image: [u8; 32],
    index: u32,
    slot: u32,
}

impl Agent {
    /// A neighbour asks for a manifest.
    pub(super) fn serve_manifest(&mut self, conn: ConnId, digest: [u8; 32], slot: u32) {
        let Some((bytes, sig)) = self.manifests.get(&digest) else {
            return self.not_yet(conn, slot);
        };
        let mut out = Vec::with_capacity(2 + sig.len() + bytes.len());
        out.extend_from_slice(&(sig.len() as u16).to_le_bytes());
        out.extend_from_slice(sig.as_bytes());
        out.extend_from_slice(bytes);
        if let Err(e) = self.transport.send_bulk(conn, slot, Bytes::from(out)) {
            tracing::warn!(peer = conn.peer, "serving a manifest: {e}");
        }
    }

    /// A neighbour asks for a chunk: it is served in turn, as the upload cap allows, unless
    /// the uplink is busy and others can serve it (see [`SERVE_QUEUE_MAX`], [`SERVE_QUOTA`]).
    pub(super) fn queue_chunk(&mut self, conn: ConnId, image: [u8; 32], index: u32, slot: u32) {
        let queued = self.serve_queue.len();
        let forwarded = self.served.get(&(image, index)).copied().unwrap_or(0);
        let pipeline = self.cfg.fanout.strategy == crate::config::FanoutStrategy::Pipeline;
        if pipeline && (queued >= SERVE_QUEUE_MAX || (queued > 0 && forwarded >= SERVE_QUOTA)) {
            return self.decline_busy(conn, slot);
        }
        self.serve_queue.push_back(ServeReq {
            conn,
            image,
            index,
            slot,
        });
        self.serve_step();
    }

    /// Serves queued requests while the upload cap allows; returns when the next may go. A
    /// request whose connection has no credits left goes to the back of the queue and is tried
    /// again on a later round (the loop looks again within a few milliseconds), so one stalled
    /// requester never holds up the others and no request is ever dropped unanswered.
    pub(super) fn serve_step(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut round = self.serve_queue.len();
        while round > 0 {
            round -= 1;
            let Some(r) = self.serve_queue.front().copied() else {
                break;
            };
            let len = self.chunk_len(&r.image, r.index).unwrap_or(0);
            if !self.upload.try_take(len, now) {
                return Some(self.upload.wait_for(len, now));
            }
            self.serve_queue.pop_front();
            if !self.serve_chunk(r) {
                self.serve_queue.push_back(r);
            }
        }
        (!self.serve_queue.is_empty()).then_some(Duration::from_millis(2))
    }

    /// Forgets what a departed neighbour asked for.
    pub(super) fn serve_peer_down(&mut self, peer: u64) {
        self.serve_queue.retain(|r| r.conn.peer != peer);
    }

    /// Length of chunk `index` of an image this node knows, if it does.
    fn chunk_len(&self, image: &[u8; 32], index: u32) -> Option<u64> {
        if let Some(img) = self.images.get(image) {
            return (index < img.chunk_count()).then(|| img.chunk_len(index) as u64);
        }
        match &self.fetch {
            Fetch::Chunks { image: img, .. } if img.sha256.0 == *image => {
                (index < img.chunk_count()).then(|| img.chunk_len(index) as u64)
            }
            _ => None,
        }
    }

    /// Sends one chunk, or NOT_YET when this node does not hold it. Returns false when the
    /// connection has no credits left for it (the request stays queued).
    fn serve_chunk(&mut self, r: ServeReq) -> bool {
        match self.read_chunk(&r.image, r.index) {
            Some(mut data) => {
                if self.cfg.fanout.corrupt_served_chunks && !data.is_empty() {
                    let mut bad = data.to_vec();
                    bad[0] ^= 0xff;
                    data = Bytes::from(bad);
                }
                match self.transport.send_bulk(r.conn, r.slot, data) {
                    Ok(()) => *self.served.entry((r.image, r.index)).or_default() += 1,
                    Err(SendError::NoCredits(_)) => return false,
                    // The connection went away (its requests are dropped with it) or the
                    // grant is gone: nothing to answer on.
                    Err(e) => tracing::warn!(peer = r.conn.peer, "serving a chunk: {e}"),
                }
            }
            None => self.not_yet(r.conn, r.slot),
        }
        true
    }

    /// Chunk `index` of `image`, verified again on the way out: from a complete image in the
    /// store, or from the image this node is receiving.
    fn read_chunk(&mut self, image: &[u8; 32], index: u32) -> Option<Bytes> {
        if let Some(img) = self.images.get(image).cloned() {
            if self.reader.as_ref().is_none_or(|(d, _)| d != image) {
                match self.store.open_image(&img) {
                    Ok(r) => self.reader = Some((*image, r)),
                    Err(e) => {
                        tracing::error!("opening image {}: {e}", img.sha256.to_hex());
                        return None;
                    }
                }
            }
            let (_, reader) = self.reader.as_mut()?;
            return match reader.read_chunk(index) {
                Ok(d) => Some(Bytes::copy_from_slice(d)),
                Err(e) => {
                    tracing::error!("reading chunk {index} of {}: {e}", img.sha256.to_hex());
                    None
                }
            };
        }
        match &mut self.fetch {
            Fetch::Chunks {
                image: img,
                staging,
                ..
            } if img.sha256.0 == *image && staging.has_chunk(index) => {
                match staging.read_chunk(index) {
                    Ok(d) => Some(Bytes::copy_from_slice(d)),
                    Err(e) => {
                        tracing::warn!("forwarding chunk {index}: {e}");
                        None
                    }
                }
            }
            _ => None,
        }
    }

    pub(super) fn not_yet(&mut self, conn: ConnId, slot: u32) {
        // Both ends forget the grant: we here, the requester when NOT_YET arrives.
        self.transport.decline_bulk(conn, slot);
        let mut b = Vec::new();
        Envelope::NotYet { slot }.encode(&mut b);
        self.send_on(conn, Bytes::from(b));
    }

    fn decline_busy(&mut self, conn: ConnId, slot: u32) {
        self.transport.decline_bulk(conn, slot);
        let mut b = Vec::new();
        Envelope::Busy { slot }.encode(&mut b);
        self.send_on(conn, Bytes::from(b));
    }

    /// Notes that this node's holdings of `image` changed (announced at the next round).
    pub(super) fn have_changed(&mut self, image: [u8; 32]) {
        self.have_dirty.insert(image);
    }

    /// What this node holds of `image`, if anything.
    fn own_holdings(&self, image: &[u8; 32]) -> Option<ChunkSet> {
        if let Some(img) = self.images.get(image) {
            return Some(ChunkSet::full(img.chunk_count()));
        }
        match &self.fetch {
            Fetch::Chunks {
                image: img,
                staging,
                ..
            } if img.sha256.0 == *image => {
                let mut s = ChunkSet::empty(img.chunk_count());
                (0..img.chunk_count())
                    .filter(|&i| staging.has_chunk(i))
                    .for_each(|i| s.insert(i));
                Some(s)
            }
            _ => None,
        }
    }

    /// Sends the `Have` bitmaps of changed images to every connected neighbour, at most once
    /// per [`HAVE_INTERVAL`].
    pub(super) fn announce_step(&mut self) {
        if self.have_dirty.is_empty() || self.last_have.elapsed() < HAVE_INTERVAL {
            return;
        }
        self.last_have = Instant::now();
        let images = std::mem::take(&mut self.have_dirty);
        let conns = self.connected();
        for image in images {
            for &conn in &conns {
                self.announce(conn, image);
            }
        }
    }

    /// Tells a neighbour that just connected what this node holds.
    pub(super) fn announce_all(&mut self, conn: ConnId) {
        let mut images: Vec<[u8; 32]> = self.images.keys().copied().collect();
        if let Fetch::Chunks { image, .. } = &self.fetch {
            images.push(image.sha256.0);
        }
        for image in images {
            self.announce(conn, image);
        }
    }

    fn announce(&mut self, conn: ConnId, image: [u8; 32]) {
        let Some(set) = self.own_holdings(&image) else {
            return;
        };
        if set.chunks() > MAX_HAVE_CHUNKS {
            return; // neighbours find its chunks by asking
        }
        let mut b = Vec::new();
        Envelope::Have {
            image,
            chunks: set.chunks(),
            bitmap: set.bitmap().to_vec(),
        }
        .encode(&mut b);
        self.send_on(conn, Bytes::from(b));
    }

    /// A neighbour announced what it holds.
    pub(super) fn on_have(&mut self, conn: ConnId, image: [u8; 32], chunks: u32, bitmap: Vec<u8>) {
        self.holdings
            .record(conn.peer, image, ChunkSet::from_bitmap(chunks, bitmap));
        if let Fetch::Chunks { resting, .. } = &mut self.fetch {
            resting.remove(&conn.peer);
        }
    }
}
