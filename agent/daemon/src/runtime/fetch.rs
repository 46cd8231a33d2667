//! Getting a campaign's manifest and image onto this node, and serving them to neighbours.
//!
//! A node that must stage a campaign asks its connected neighbours, one after another, for the
//! manifest the campaign names (by sha256), verifies it (trusted signature, anti-rollback, the
//! digest the campaign names), then fetches the image for its own hw-profile chunk by chunk from
//! its neighbours, each chunk verified against the manifest before it is written or forwarded.
//!
//! The image travels as a pipelined swarm (ARCHITECTURE.md, "Image fan-out"): neighbours
//! announce the chunks they hold (`Have`), including those of an image they are still
//! receiving; a node asks for the chunk its neighbourhood holds least often, of the neighbour
//! it has the fewest requests open with, at most [`PER_PEER`] per neighbour and [`WINDOW`] in
//! all, within the download cap. A neighbour that announced nothing is asked all the same and
//! says when it has nothing yet. A neighbour that sends a chunk that does not match the signed
//! manifest is dropped as a source for the rest of the campaign, and the history names it.
//! With `fanout.strategy = "pull-one"` only `fanout.source` is asked (the baseline).

use super::acceptance::Purpose;
use super::campaign::{decide_on, texts};
use super::Agent;
use crate::config::FanoutStrategy;
use crate::envelope::Envelope;
use crate::worker::Job;
use anyhow::Result;
use bytes::Bytes;
use entente_fastpath::ConnId;
use entente_proto::msg::Campaign;
use entente_stage::{Digest, Manifest, ProfileImage, Signature, Staging, VerifyError};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest manifest (with its signature) accepted over the wire.
const MAX_MANIFEST: u32 = 1 << 20;
/// Chunk requests in flight per neighbour (each needs one of the connection's bulk slots).
const PER_PEER: usize = 2;
/// Chunk requests in flight in all (the simulator's model uses the same numbers).
const WINDOW: usize = 2;
/// Wait before asking a neighbour that had nothing again.
const NOT_YET_BACKOFF: Duration = Duration::from_millis(150);
/// Wait before asking a neighbour whose uplink was busy again.
const BUSY_BACKOFF: Duration = Duration::from_millis(15);

/// Where this node is in acquiring the current campaign's image.
// One per agent: the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Fetch {
    /// Nothing to fetch.
    Idle,
    /// Asking neighbours for the manifest.
    Manifest {
        /// The campaign.
        campaign: Campaign,
        /// The open request.
        pending: Option<(ConnId, u32)>,
        /// Neighbours that had nothing this round.
        tried: BTreeSet<u64>,
        /// When to start the next round.
        retry_at: Instant,
    },
    /// Fetching chunks.
    Chunks {
        /// The campaign.
        campaign: Campaign,
        /// This node's image.
        image: ProfileImage,
        /// The partial image in the store.
        staging: Box<Staging>,
        /// Chunks still to ask for.
        want: BTreeSet<u32>,
        /// Requests in flight: (peer, slot) → (chunk, when it was asked).
        inflight: HashMap<(u64, u32), (u32, Instant)>,
        /// Neighbours that had nothing, until when.
        resting: HashMap<u64, Instant>,
        /// Neighbours that sent a chunk that did not verify: never asked again this campaign.
        banned: BTreeSet<u64>,
        /// Chunks fetched from neighbours (and verified) since this staging began.
        fetched: u32,
        /// Of those, chunks written to the disk from the memory they arrived in (an RDMA slot).
        in_place: u32,
        /// Chunks found verified in the store when it began (a resumed staging).
        resumed: u32,
        /// When it began.
        started: Instant,
    },
    /// The device is flashing the staged image.
    Flashing,
}

/// How long a chunk request may stay unanswered before it is asked of another neighbour: ten
/// seconds, or eight chunk times at the configured image-traffic cap if that is longer (a
/// source queues a few requests behind its cap).
fn request_deadline(chunk_size: u32, max_mib_per_s: f64) -> Duration {
    let floor = Duration::from_secs(10);
    if max_mib_per_s <= 0.0 {
        return floor;
    }
    let chunk_s = f64::from(chunk_size) / (max_mib_per_s * 1024.0 * 1024.0);
    floor.max(Duration::from_secs_f64((8.0 * chunk_s).min(3600.0)))
}

fn manifest_dir(data: &Path) -> std::path::PathBuf {
    data.join("manifests")
}

/// The manifests this node accepted before (decoded only: they were verified when accepted),
/// to map the device's running version to a window at start.
pub(super) fn held_manifests(data: &Path) -> Vec<Manifest> {
    let Ok(dir) = std::fs::read_dir(manifest_dir(data)) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| Manifest::from_canonical_bytes(&b).ok())
        .collect()
}

impl Agent {
    /// Reloads the manifests this node accepted before, and which of their images it holds.
    pub(super) fn restore_manifests(&mut self) -> Result<()> {
        let dir = manifest_dir(&self.cfg.data_dir);
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "manifest") {
                continue;
            }
            let (Ok(bytes), Ok(sig)) = (
                std::fs::read(&p),
                std::fs::read_to_string(p.with_extension("sig")),
            ) else {
                continue;
            };
            let digest = Digest::of(&bytes);
            if p.file_stem().and_then(|s| s.to_str()) != Some(digest.to_hex().as_str()) {
                tracing::warn!("{} does not match its name: ignored", p.display());
                continue;
            }
            if let Ok(m) = Manifest::from_canonical_bytes(&bytes) {
                self.remember_images(&m);
            }
            self.manifests.insert(digest.0, (bytes, sig));
        }
        Ok(())
    }

    fn remember_images(&mut self, m: &Manifest) {
        for img in m.profiles.values() {
            if self.store.contains(img) {
                self.images.insert(img.sha256.0, img.clone());
                self.have_dirty.insert(img.sha256.0);
            }
        }
    }

    /// Keeps an accepted manifest (for restarts and for serving neighbours).
    pub(super) fn keep_manifest(&mut self, bytes: Vec<u8>, sig: String) -> Result<[u8; 32]> {
        let digest = Digest::of(&bytes);
        let dir = manifest_dir(&self.cfg.data_dir);
        let path = dir.join(format!("{}.manifest", digest.to_hex()));
        write_atomic(&path.with_extension("sig"), sig.as_bytes())?;
        write_atomic(&path, &bytes)?;
        if let Ok(m) = Manifest::from_canonical_bytes(&bytes) {
            self.remember_images(&m);
        }
        self.manifests.insert(digest.0, (bytes, sig));
        Ok(digest.0)
    }

    /// This node's image in the manifest `digest`, if the node holds that manifest.
    fn own_image(&self, digest: &[u8; 32]) -> Option<Result<ProfileImage, String>> {
        let (bytes, _) = self.manifests.get(digest)?;
        let m = match Manifest::from_canonical_bytes(bytes) {
            Ok(m) => m,
            Err(e) => return Some(Err(e.to_string())),
        };
        Some(m.profiles.get(&self.profile.name).cloned().ok_or_else(|| {
            format!(
                "the manifest has no image for hw-profile {:?}",
                self.profile.name
            )
        }))
    }

    /// The node asked for the campaign's image to be staged.
    pub(super) fn begin_stage(&mut self, c: Campaign) -> Result<()> {
        let now = self.now();
        match self.own_image(&c.image_digest) {
            None => {
                self.fetch = Fetch::Manifest {
                    campaign: c,
                    pending: None,
                    tried: BTreeSet::new(),
                    retry_at: Instant::now(),
                };
            }
            Some(Err(e)) => {
                tracing::error!("campaign {}: {e}", c.epoch.0);
                self.history(&format!("campaign {}: {e}", c.epoch.0));
                self.node.staged(now, c.epoch, false);
            }
            Some(Ok(image)) => self.fetch_image(c, image)?,
        }
        Ok(())
    }

    fn fetch_image(&mut self, c: Campaign, image: ProfileImage) -> Result<()> {
        if !self.images.contains_key(&image.sha256.0) && image.chunk_size > super::BULK_SLOT {
            let why = format!(
                "the image's chunks are {} bytes; agents move at most {} per transfer (sign it with a chunk_size of at most {})",
                image.chunk_size,
                super::BULK_SLOT,
                super::BULK_SLOT
            );
            tracing::error!("campaign {}: {why}", c.epoch.0);
            self.history(&format!("staging epoch {} refused: {why}", c.epoch.0));
            self.fetch = Fetch::Idle;
            self.node.staged(self.now(), c.epoch, false);
            return Ok(());
        }
        if self.images.contains_key(&image.sha256.0) {
            self.flash(c, image);
            return Ok(());
        }
        match self.store.begin(&image) {
            Ok(staging) => {
                let want = staging.missing_chunks().into_iter().collect();
                let resumed = staging.resumed_chunks();
                self.history(&format!(
                    "fetching image {} ({} chunks, {} already here)",
                    image.sha256.to_hex(),
                    image.chunk_count(),
                    resumed
                ));
                let digest = image.sha256.0;
                self.fetch = Fetch::Chunks {
                    campaign: c,
                    image,
                    staging: Box::new(staging),
                    want,
                    inflight: HashMap::new(),
                    resting: HashMap::new(),
                    banned: BTreeSet::new(),
                    fetched: 0,
                    in_place: 0,
                    resumed,
                    started: Instant::now(),
                };
                self.have_changed(digest);
            }
            Err(e) => {
                tracing::error!("staging: {e}");
                self.history(&format!("staging epoch {} failed: {e}", c.epoch.0));
                self.fetch = Fetch::Idle;
                self.node.staged(self.now(), c.epoch, false);
            }
        }
        Ok(())
    }

    fn flash(&mut self, c: Campaign, image: ProfileImage) {
        self.fetch = Fetch::Flashing;
        self.flash_percent = Some(0);
        let _ = self.worker.jobs.send(Job::Stage {
            epoch: c.epoch.0,
            image,
        });
    }

    pub(super) fn connected(&self) -> Vec<ConnId> {
        self.peers.values().filter_map(|p| p.conn).collect()
    }

    /// Sends the requests the fetch needs now.
    pub(super) fn fetch_step(&mut self) -> Result<()> {
        let conns = self.connected();
        let mut fetch = std::mem::replace(&mut self.fetch, Fetch::Idle);
        let mut finished = false;
        match &mut fetch {
            Fetch::Manifest {
                campaign,
                pending,
                tried,
                retry_at,
            } => {
                if pending.is_none() && Instant::now() >= *retry_at {
                    match conns.iter().find(|c| !tried.contains(&c.peer)).copied() {
                        None => {
                            tried.clear();
                            *retry_at = Instant::now() + NOT_YET_BACKOFF;
                        }
                        Some(conn) => match self.transport.grant_bulk(conn, MAX_MANIFEST) {
                            Ok(slot) => {
                                *pending = Some((conn, slot));
                                let digest = campaign.image_digest;
                                self.request(conn, Envelope::ManifestReq { digest, slot });
                            }
                            Err(_) => {
                                tried.insert(conn.peer);
                            }
                        },
                    }
                }
            }
            Fetch::Chunks {
                image,
                staging,
                want,
                inflight,
                resting,
                banned,
                ..
            } => {
                if let Err(e) = staging.push_writes() {
                    tracing::error!("writing the image: {e}");
                }
                let now = Instant::now();
                resting.retain(|_, until| now < *until);
                let sources: Vec<ConnId> = conns
                    .iter()
                    .filter(|c| !banned.contains(&c.peer) && self.may_fetch_from(c.peer))
                    .copied()
                    .collect();
                let peers: Vec<u64> = sources.iter().map(|c| c.peer).collect();
                // A request unanswered past its deadline is asked of someone else; its slot is
                // withdrawn (a chunk arriving in it later breaks that connection, which then
                // starts afresh).
                let deadline = request_deadline(image.chunk_size, self.cfg.fanout.max_mib_per_s);
                let late: Vec<(u64, u32)> = inflight
                    .iter()
                    .filter(|(_, (_, asked))| now.duration_since(*asked) >= deadline)
                    .map(|(k, _)| *k)
                    .collect();
                for (peer, slot) in late {
                    if let Some((index, _)) = inflight.remove(&(peer, slot)) {
                        tracing::warn!(
                            peer,
                            index,
                            "chunk request unanswered after {} ms: asking elsewhere",
                            deadline.as_millis()
                        );
                        want.insert(index);
                        resting.insert(peer, now + NOT_YET_BACKOFF);
                        if let Some(conn) = sources.iter().find(|c| c.peer == peer) {
                            self.transport.revoke_bulk(*conn, slot);
                        }
                    }
                }
                while inflight.len() < WINDOW {
                    let Some((conn, index)) =
                        self.choose(image, want, inflight, resting, &sources, &peers)
                    else {
                        break;
                    };
                    let len = image.chunk_len(index);
                    // Charged when the chunk arrives: a declined request costs nothing.
                    if !self.download.allows(len as u64, now) {
                        break;
                    }
                    match self.transport.grant_bulk(conn, len as u32) {
                        Ok(slot) => {
                            want.remove(&index);
                            inflight.insert((conn.peer, slot), (index, now));
                            let image = image.sha256.0;
                            self.request(conn, Envelope::ChunkReq { image, index, slot });
                        }
                        Err(_) => {
                            // Every slot of that connection is in use (a chunk may still be on
                            // its way to the disk from its slot): ask again shortly.
                            resting.insert(conn.peer, now + BUSY_BACKOFF);
                        }
                    }
                }
                finished = want.is_empty() && inflight.is_empty();
            }
            Fetch::Idle | Fetch::Flashing => {}
        }
        self.fetch = fetch;
        if finished {
            self.finish_fetch()?;
        }
        Ok(())
    }

    /// How far the image fetch is, for `entente status`.
    pub(super) fn image_progress(&self) -> Option<entente_api::ImageProgress> {
        let Fetch::Chunks {
            image,
            staging,
            banned,
            ..
        } = &self.fetch
        else {
            return None;
        };
        Some(entente_api::ImageProgress {
            sha256: image.sha256.to_hex(),
            chunks_held: image.chunk_count() - staging.missing_chunks().len() as u32,
            chunks: image.chunk_count(),
            dropped_sources: banned.iter().copied().collect(),
        })
    }

    /// Whether the strategy lets this node fetch from `peer`.
    fn may_fetch_from(&self, peer: u64) -> bool {
        match self.cfg.fanout.strategy {
            FanoutStrategy::Pipeline => true,
            FanoutStrategy::PullOne => self.cfg.fanout.source == Some(peer),
        }
    }

    /// The next request: the rarest wanted chunk (fewest neighbours announced it) that some
    /// source with a free slot holds, asked of the source with the fewest requests open. A
    /// source that announced nothing may hold anything; it is asked only for chunks no
    /// announcing source offers.
    fn choose(
        &self,
        image: &ProfileImage,
        want: &BTreeSet<u32>,
        inflight: &HashMap<(u64, u32), (u32, Instant)>,
        resting: &HashMap<u64, Instant>,
        sources: &[ConnId],
        peers: &[u64],
    ) -> Option<(ConnId, u32)> {
        let open = |peer: u64| inflight.keys().filter(|(p, _)| *p == peer).count();
        let free: Vec<ConnId> = sources
            .iter()
            .filter(|c| open(c.peer) < PER_PEER && !resting.contains_key(&c.peer))
            .copied()
            .collect();
        let digest = &image.sha256.0;
        let mut best: Option<(bool, usize, u64, usize, ConnId, u32)> = None;
        for &index in want {
            let rarity = self.holdings.count(peers, digest, index);
            // Ties between equally rare chunks differ from node to node, so neighbours fetch
            // different chunks and can then trade them.
            let tie = (u64::from(index) ^ self.cfg.node_id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for &conn in &free {
                let unknown = match self.holdings.holds(conn.peer, digest, index) {
                    Some(false) => continue,
                    Some(true) => false,
                    None => true,
                };
                let key = (unknown, rarity, tie, open(conn.peer), conn, index);
                if best
                    .as_ref()
                    .is_none_or(|b| (key.0, key.1, key.2, key.3) < (b.0, b.1, b.2, b.3))
                {
                    best = Some(key);
                }
            }
        }
        best.map(|(_, _, _, _, conn, index)| (conn, index))
    }

    fn request(&mut self, conn: ConnId, e: Envelope) {
        let mut b = Vec::new();
        e.encode(&mut b);
        self.send_on(conn, Bytes::from(b));
    }

    fn finish_fetch(&mut self) -> Result<()> {
        let Fetch::Chunks {
            campaign,
            image,
            staging,
            fetched,
            in_place,
            resumed,
            started,
            ..
        } = std::mem::replace(&mut self.fetch, Fetch::Idle)
        else {
            return Ok(());
        };
        match staging.finish() {
            Ok(_) => {
                self.images.insert(image.sha256.0, image.clone());
                self.have_changed(image.sha256.0);
                self.history(&format!(
                    "image {} staged in the store: {fetched} chunks fetched ({in_place} written from the receive buffer), {resumed} resumed, {} ms",
                    image.sha256.to_hex(),
                    started.elapsed().as_millis()
                ));
                self.flash(campaign, image);
            }
            Err(e) => {
                tracing::error!("finishing the image: {e}");
                self.history(&format!("staging epoch {} failed: {e}", campaign.epoch.0));
                self.node.staged(self.now(), campaign.epoch, false);
            }
        }
        Ok(())
    }

    /// A neighbour had nothing for the request in `slot` (or, `busy`, no uplink to spare).
    pub(super) fn fetch_not_yet(&mut self, conn: ConnId, slot: u32, busy: bool) {
        let backoff = if busy { BUSY_BACKOFF } else { NOT_YET_BACKOFF };
        self.transport.revoke_bulk(conn, slot);
        match &mut self.fetch {
            Fetch::Manifest { pending, tried, .. } if *pending == Some((conn, slot)) => {
                *pending = None;
                tried.insert(conn.peer);
            }
            Fetch::Chunks {
                want,
                inflight,
                resting,
                ..
            } => {
                if let Some((i, _)) = inflight.remove(&(conn.peer, slot)) {
                    want.insert(i);
                    resting.insert(conn.peer, Instant::now() + backoff);
                }
            }
            _ => {}
        }
    }

    /// A neighbour went away: what it owed us is asked of others.
    pub(super) fn fetch_peer_down(&mut self, peer: u64) {
        self.holdings.forget(peer);
        self.serve_peer_down(peer);
        match &mut self.fetch {
            Fetch::Manifest { pending, .. } if pending.is_some_and(|(c, _)| c.peer == peer) => {
                *pending = None;
            }
            Fetch::Chunks { want, inflight, .. } => {
                let lost: Vec<(u64, u32)> = inflight
                    .keys()
                    .filter(|(p, _)| *p == peer)
                    .copied()
                    .collect();
                for k in lost {
                    if let Some((i, _)) = inflight.remove(&k) {
                        want.insert(i);
                    }
                }
            }
            _ => {}
        }
    }

    /// A bulk chunk arrived in a slot this node granted.
    pub(super) fn fetch_bulk(&mut self, conn: ConnId, slot: u32, data: Bytes) -> Result<()> {
        let manifest_for = match &mut self.fetch {
            Fetch::Manifest {
                campaign, pending, ..
            } if *pending == Some((conn, slot)) => {
                *pending = None;
                Some(*campaign)
            }
            Fetch::Chunks {
                campaign,
                image,
                staging,
                want,
                inflight,
                banned,
                fetched,
                in_place,
                ..
            } => {
                if let Some((index, _)) = inflight.remove(&(conn.peer, slot)) {
                    self.download.charge(data.len() as u64, Instant::now());
                    match staging.write_chunk_shared(index, data.clone()) {
                        Ok(direct) => {
                            *fetched += 1;
                            *in_place += u32::from(direct);
                            let digest = image.sha256.0;
                            self.have_changed(digest);
                        }
                        Err(e) => {
                            tracing::warn!(peer = conn.peer, index, "chunk refused: {e}");
                            want.insert(index);
                            let fresh = banned.insert(conn.peer);
                            let msg = format!(
                                "chunk {index} from node {} refused: {e}{}",
                                conn.peer,
                                if fresh {
                                    format!(
                                        "; node {} dropped as a source for campaign {}",
                                        conn.peer, campaign.epoch.0
                                    )
                                } else {
                                    String::new()
                                }
                            );
                            self.history(&msg);
                        }
                    }
                }
                None
            }
            _ => None,
        };
        let Some(c) = manifest_for else {
            return Ok(());
        };
        match self.accept_manifest(&c, &data) {
            Ok(image) => {
                self.history(&format!(
                    "manifest of epoch {} from node {}",
                    c.epoch.0, conn.peer
                ));
                self.fetch_image(c, image)?;
            }
            Err(ManifestRefused::Peer(e)) => {
                tracing::warn!(peer = conn.peer, "manifest refused: {e}");
                self.history(&format!("manifest from node {} refused: {e}", conn.peer));
                if let Fetch::Manifest { tried, .. } = &mut self.fetch {
                    tried.insert(conn.peer);
                }
            }
            Err(ManifestRefused::Node(e)) => {
                let msg = format!("campaign {} refused: {e}", c.epoch.0);
                tracing::warn!("{msg}");
                self.history(&msg);
                self.fetch = Fetch::Idle;
                self.node.staged(self.now(), c.epoch, false);
            }
        }
        Ok(())
    }

    /// Takes the manifest a neighbour sent for campaign `c` if it is the one the campaign
    /// names, signed by a trusted key, and [`decide`](super::acceptance::decide) accepts it for
    /// this node; only then is it accepted (the anti-rollback floor moves) and kept. Returns
    /// this node's image.
    fn accept_manifest(
        &mut self,
        c: &Campaign,
        data: &[u8],
    ) -> Result<ProfileImage, ManifestRefused> {
        use ManifestRefused::{Node, Peer};
        if data.len() < 2 {
            return Err(Peer("truncated".into()));
        }
        let sig_len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let (sig_text, bytes) = data[2..]
            .split_at_checked(sig_len)
            .ok_or_else(|| Peer("truncated signature".into()))?;
        let sig_text =
            std::str::from_utf8(sig_text).map_err(|_| Peer("signature is not text".into()))?;
        if Digest::of(bytes).0 != c.image_digest {
            return Err(Peer("it is not the manifest the campaign names".into()));
        }
        let sig =
            Signature::parse(sig_text, Path::new("<peer>")).map_err(|e| Peer(e.to_string()))?;
        let now = entente_stage::unix_now();
        let check = self.verifier.check(bytes, &sig, now);
        // The bytes are the campaign's; a signature line that does not verify may be the
        // neighbour's doing: another neighbour is asked.
        if let Err(e @ (VerifyError::BadSignature { .. } | VerifyError::UnknownKey { .. })) = &check
        {
            return Err(Peer(e.to_string()));
        }
        let decoded = Manifest::from_canonical_bytes(bytes).ok();
        let image = decide_on(
            &check,
            decoded.as_ref(),
            &self.node_view(),
            Purpose::Follow(*c),
        )
        .map_err(|r| Node(texts(&r).join("; ")))?;
        self.verifier
            .accept(bytes, &sig, now)
            .map_err(|e| Node(e.to_string()))?;
        self.keep_manifest(bytes.to_vec(), sig_text.to_owned())
            .map_err(|e| Node(e.to_string()))?;
        Ok(image)
    }
}

/// Why a neighbour's manifest was not taken.
enum ManifestRefused {
    /// The neighbour sent something other than the campaign's signed manifest: another
    /// neighbour is asked.
    Peer(String),
    /// It is the campaign's manifest, and this node refuses it: staging fails.
    Node(String),
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::request_deadline;
    use std::time::Duration;

    #[test]
    fn a_request_deadline_is_ten_seconds_or_eight_chunk_times_at_the_cap() {
        assert_eq!(request_deadline(1 << 20, 0.0), Duration::from_secs(10));
        assert_eq!(request_deadline(1 << 20, 100.0), Duration::from_secs(10));
        assert_eq!(request_deadline(1 << 20, 0.5), Duration::from_secs(16));
        assert_eq!(request_deadline(1 << 20, 1e-9), Duration::from_secs(3600));
    }
}
