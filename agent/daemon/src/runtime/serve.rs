//! Serving neighbours: manifests, chunks of complete images and of the image this node is
//! still receiving (so an image flows through a node while it arrives), and the `Have` bitmaps
//! that tell neighbours what to ask for. What is served when, what is declined and when to
//! announce is `entente_node::fanout`'s decision; this file reads and sends.

use super::fetch::Fetch;
use super::Agent;
use crate::envelope::{Envelope, MAX_HAVE_CHUNKS};
use bytes::Bytes;
use entente_fastpath::{ConnId, SendError};
use entente_node::fanout::{self, Admit, ChunkSet, ServeOutcome, ServeReq};

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
        match self.transport.send_bulk(conn, slot, Bytes::from(out)) {
            Ok(()) => {}
            // No credits now: say so at once (NOT_YET waits in the connection's queue), so the
            // requester asks again instead of waiting out its deadline.
            Err(SendError::NoCredits(_)) => self.not_yet(conn, slot),
            Err(e) => tracing::warn!(peer = conn.peer, "serving a manifest: {e}"),
        }
    }

    /// A neighbour asks for a chunk: it is served in turn, as the upload cap allows, unless
    /// the uplink is busy and others can serve it.
    pub(super) fn queue_chunk(&mut self, conn: ConnId, image: [u8; 32], index: u32, slot: u32) {
        let req = ServeReq {
            conn,
            peer: conn.peer,
            image,
            index,
            slot,
        };
        match self.serve.admit(req, self.now()) {
            Admit::Busy => self.decline_busy(conn, slot),
            Admit::Queued => {
                self.serve_step();
            }
        }
    }

    /// Serves queued requests while the upload cap allows.
    pub(super) fn serve_step(&mut self) {
        let now = self.now();
        let params = fanout::ServeParams::agent(self.strategy());
        let mut queue = std::mem::replace(&mut self.serve, fanout::ServeQueue::new(params));
        let mut upload = std::mem::replace(&mut self.upload, fanout::RateLimit::unlimited());
        queue.serve(now, &mut upload, self);
        self.serve = queue;
        self.upload = upload;
    }

    /// Forgets what a departed neighbour asked for.
    pub(super) fn serve_peer_down(&mut self, peer: u64) {
        self.serve.peer_down(peer);
    }

    /// Length of chunk `index` of an image this node knows, if it does.
    fn known_chunk_len(&self, image: &[u8; 32], index: u32) -> Option<u64> {
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

    /// Sends the `Have` bitmaps of changed images to every connected neighbour, when a round
    /// is due.
    pub(super) fn announce_step(&mut self) {
        let images = self.announcements.due(self.now());
        if images.is_empty() {
            return;
        }
        let conns = self.connected();
        for image in images {
            for &conn in &conns {
                self.announce(conn, image);
            }
        }
    }

    /// Tells a neighbour that just connected what this node holds: the image it is fetching
    /// and the newest complete ones, a bounded number.
    pub(super) fn announce_all(&mut self, conn: ConnId) {
        let fetching = match &self.fetch {
            Fetch::Chunks { image, .. } => Some(image.sha256.0),
            _ => None,
        };
        let mut held: Vec<(u64, [u8; 32])> = self
            .images
            .keys()
            .map(|id| (self.image_epochs.get(id).copied().unwrap_or(0), *id))
            .collect();
        held.sort_unstable();
        let held: Vec<[u8; 32]> = held.into_iter().map(|(_, id)| id).collect();
        for image in fanout::on_connect(fetching, &held) {
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
        // The envelope's decoder checked the bitmap's length.
        let Some(set) = ChunkSet::from_bitmap(chunks, bitmap) else {
            return;
        };
        self.holdings.record(conn.peer, image, set);
        if let Fetch::Chunks { progress, .. } = &mut self.fetch {
            progress.heard_from(conn.peer);
        }
    }
}

impl fanout::ChunkSender<ConnId> for Agent {
    fn chunk_len(&self, image: &[u8; 32], index: u32) -> Option<u64> {
        self.known_chunk_len(image, index)
    }

    fn decline(&mut self, r: &ServeReq<ConnId>) {
        self.decline_busy(r.conn, r.slot);
    }

    /// Sends one chunk, or NOT_YET when this node does not hold it.
    fn send(&mut self, r: &ServeReq<ConnId>) -> ServeOutcome {
        let Some(mut data) = self.read_chunk(&r.image, r.index) else {
            self.not_yet(r.conn, r.slot);
            return ServeOutcome::NotHeld;
        };
        if self.cfg.fanout.corrupt_served_chunks && !data.is_empty() {
            let mut bad = data.to_vec();
            bad[0] ^= 0xff;
            data = Bytes::from(bad);
        }
        match self.transport.send_bulk(r.conn, r.slot, data) {
            Ok(()) => ServeOutcome::Sent,
            Err(SendError::NoCredits(_)) => ServeOutcome::NoCredits,
            // The connection went away (its requests are dropped with it) or the grant is
            // gone: nothing to answer on.
            Err(e) => {
                tracing::warn!(peer = r.conn.peer, "serving a chunk: {e}");
                ServeOutcome::Gone
            }
        }
    }
}
