//! Getting a campaign's manifest and image onto this node, and serving them to neighbours.
//!
//! A node that must stage a campaign asks its connected neighbours, one after another, for the
//! manifest the campaign names (by sha256), verifies it (trusted signature, anti-rollback, the
//! digest the campaign names), then fetches the image for its own hw-profile chunk by chunk from
//! its neighbours, each chunk verified against the manifest before it is written or forwarded.
//!
//! Which chunk to ask for, of whom, and what to do with every answer is decided by
//! `entente_node::fanout` (the same code the simulator runs); this file moves the bytes: slots,
//! requests, verification, the store. With `fanout.strategy = "pull-one"` only
//! `fanout.source` is asked (the baseline).

use super::acceptance::Purpose;
use super::campaign::{decide_on, texts};
use super::Agent;
use crate::config::FanoutStrategy;
use crate::envelope::Envelope;
use crate::worker::Job;
use anyhow::Result;
use bytes::Bytes;
use entente_api::{HistoryEvent, HistoryKind};
use entente_fastpath::ConnId;
use entente_node::fanout::{ChunkFetch, FetchParams, ImageShape, ManifestFetch, Strategy};
use entente_proto::msg::Campaign;
use entente_stage::{Digest, Manifest, ProfileImage, Signature, Staging, VerifyError};
use std::path::Path;
use std::time::Instant;

/// Largest manifest (with its signature) accepted over the wire.
const MAX_MANIFEST: u32 = 1 << 20;

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
        /// Whom to ask (the policy).
        progress: ManifestFetch,
    },
    /// Fetching chunks.
    Chunks {
        /// The campaign.
        campaign: Campaign,
        /// This node's image.
        image: ProfileImage,
        /// The partial image in the store.
        staging: Box<Staging>,
        /// What is asked of whom (the policy).
        progress: ChunkFetch,
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
            let epoch = self.image_epochs.entry(img.sha256.0).or_default();
            *epoch = (*epoch).max(m.epoch);
            if self.store.contains(img) {
                self.images.insert(img.sha256.0, img.clone());
                self.announcements.changed(img.sha256.0);
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
    pub(super) fn own_image(&self, digest: &[u8; 32]) -> Option<Result<ProfileImage, String>> {
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
                    progress: ManifestFetch::new(),
                };
            }
            Some(Err(e)) => {
                tracing::error!("campaign {}: {e}", c.epoch.0);
                self.history(
                    HistoryEvent::new(
                        HistoryKind::CampaignRefused,
                        format!("campaign {}: {e}", c.epoch.0),
                    )
                    .epoch(c.epoch.0)
                    .reason(e.clone()),
                );
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
            self.history(
                HistoryEvent::new(
                    HistoryKind::StagingFailed,
                    format!("staging epoch {} refused: {why}", c.epoch.0),
                )
                .epoch(c.epoch.0)
                .reason(why.clone()),
            );
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
                let params = FetchParams::agent(
                    image.chunk_size,
                    self.cfg.fanout.max_mib_per_s,
                    self.strategy(),
                );
                let progress = ChunkFetch::new(
                    image_shape(&image),
                    staging.missing_chunks(),
                    self.cfg.node_id,
                    params,
                );
                let resumed = staging.resumed_chunks();
                self.history(
                    HistoryEvent::new(
                        HistoryKind::Image,
                        format!(
                            "fetching image {} ({} chunks, {} already here)",
                            image.sha256.to_hex(),
                            image.chunk_count(),
                            resumed
                        ),
                    )
                    .epoch(c.epoch.0),
                );
                let digest = image.sha256.0;
                self.fetch = Fetch::Chunks {
                    campaign: c,
                    image,
                    staging: Box::new(staging),
                    progress,
                    fetched: 0,
                    in_place: 0,
                    resumed,
                    started: Instant::now(),
                };
                self.announcements.changed(digest);
            }
            Err(e) => {
                tracing::error!("staging: {e}");
                self.history(
                    HistoryEvent::new(
                        HistoryKind::StagingFailed,
                        format!("staging epoch {} failed: {e}", c.epoch.0),
                    )
                    .epoch(c.epoch.0)
                    .reason(e.to_string()),
                );
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
            Fetch::Manifest { campaign, progress } => {
                let now = self.now();
                if let Some((peer, slot)) = progress.lapsed(now) {
                    tracing::warn!(peer, "manifest request unanswered past its deadline");
                    if let Some(conn) = conns.iter().find(|c| c.peer == peer) {
                        self.transport.revoke_bulk(*conn, slot);
                    }
                }
                let peers: Vec<u64> = conns.iter().map(|c| c.peer).collect();
                if let Some(peer) = progress.next(now, &peers) {
                    let conn = conns.iter().find(|c| c.peer == peer).copied();
                    match conn.map(|c| (c, self.transport.grant_bulk(c, MAX_MANIFEST))) {
                        Some((conn, Ok(slot))) => {
                            progress.asked(peer, slot, now);
                            let digest = campaign.image_digest;
                            self.request(conn, Envelope::ManifestReq { digest, slot });
                        }
                        _ => progress.no_slot(peer),
                    }
                }
            }
            Fetch::Chunks {
                staging, progress, ..
            } => {
                if let Err(e) = staging.push_writes() {
                    tracing::error!("writing the image: {e}");
                }
                let now = self.now();
                // A request unanswered past its deadline is asked of someone else; its slot is
                // withdrawn (a chunk arriving in it later breaks that connection, which then
                // starts afresh).
                for late in progress.expire(now) {
                    tracing::warn!(
                        peer = late.peer,
                        index = late.index,
                        "chunk request unanswered past its deadline: asking elsewhere"
                    );
                    if let Some(conn) = conns.iter().find(|c| c.peer == late.peer) {
                        self.transport.revoke_bulk(*conn, late.slot);
                    }
                }
                let peers: Vec<u64> = conns.iter().map(|c| c.peer).collect();
                let transport = &mut self.transport;
                let asks = progress.fill(
                    now,
                    &peers,
                    &self.holdings,
                    &mut self.download,
                    |peer, len| {
                        let conn = conns.iter().find(|c| c.peer == peer)?;
                        // None when every slot of that connection is in use (a chunk may still be
                        // on its way to the disk from its slot).
                        transport.grant_bulk(*conn, len).ok()
                    },
                );
                let image = progress.shape().id;
                for a in asks {
                    if let Some(conn) = conns.iter().find(|c| c.peer == a.peer) {
                        let req = Envelope::ChunkReq {
                            image,
                            index: a.index,
                            slot: a.slot,
                        };
                        self.request(*conn, req);
                    }
                }
                finished = progress.done();
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
            image, progress, ..
        } = &self.fetch
        else {
            return None;
        };
        Some(entente_api::ImageProgress {
            sha256: image.sha256.to_hex(),
            chunks_held: image.chunk_count() - progress.missing() as u32,
            chunks: image.chunk_count(),
            dropped_sources: progress.banned().collect(),
        })
    }

    /// The configured fan-out strategy.
    pub(super) fn strategy(&self) -> Strategy {
        match (self.cfg.fanout.strategy, self.cfg.fanout.source) {
            (FanoutStrategy::PullOne, Some(source)) => Strategy::PullOne { source },
            // Config validation requires a source for pull-one; without one, no neighbour is.
            (FanoutStrategy::PullOne, None) => Strategy::PullOne { source: u64::MAX },
            (FanoutStrategy::Pipeline, _) => Strategy::Pipeline,
        }
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
                self.announcements.changed(image.sha256.0);
                self.history(HistoryEvent::new(HistoryKind::ImageStored, format!(
                    "image {} staged in the store: {fetched} chunks fetched ({in_place} written from the receive buffer), {resumed} resumed, {} ms",
                    image.sha256.to_hex(),
                    started.elapsed().as_millis()
                )).epoch(campaign.epoch.0)
                .count("fetched", u64::from(fetched))
                .count("in_place", u64::from(in_place))
                .count("resumed", u64::from(resumed))
                .count("ms", started.elapsed().as_millis() as u64));
                self.flash(campaign, image);
            }
            Err(e) => {
                tracing::error!("finishing the image: {e}");
                self.history(
                    HistoryEvent::new(
                        HistoryKind::StagingFailed,
                        format!("staging epoch {} failed: {e}", campaign.epoch.0),
                    )
                    .epoch(campaign.epoch.0)
                    .reason(e.to_string()),
                );
                self.node.staged(self.now(), campaign.epoch, false);
            }
        }
        Ok(())
    }

    /// A neighbour had nothing for the request in `slot` (or, `busy`, no uplink to spare).
    pub(super) fn fetch_not_yet(&mut self, conn: ConnId, slot: u32, busy: bool) {
        self.transport.revoke_bulk(conn, slot);
        let now = self.now();
        match &mut self.fetch {
            Fetch::Manifest { progress, .. } => progress.declined(conn.peer, slot),
            Fetch::Chunks { progress, .. } => {
                progress.declined(conn.peer, slot, busy, now);
            }
            _ => {}
        }
    }

    /// A neighbour went away: what it owed us is asked of others.
    pub(super) fn fetch_peer_down(&mut self, peer: u64) {
        self.holdings.forget(peer);
        self.serve_peer_down(peer);
        match &mut self.fetch {
            Fetch::Manifest { progress, .. } => progress.peer_down(peer),
            Fetch::Chunks { progress, .. } => progress.peer_down(peer),
            _ => {}
        }
    }

    /// A bulk chunk arrived in a slot this node granted.
    pub(super) fn fetch_bulk(&mut self, conn: ConnId, slot: u32, data: Bytes) -> Result<()> {
        let now = self.now();
        let manifest_for = match &mut self.fetch {
            Fetch::Manifest { campaign, progress } => {
                progress.answered(conn.peer, slot).then_some(*campaign)
            }
            Fetch::Chunks {
                campaign,
                image,
                staging,
                progress,
                fetched,
                in_place,
                ..
            } => {
                if let Some(index) =
                    progress.arrived(conn.peer, slot, data.len(), now, &mut self.download)
                {
                    match staging.write_chunk_shared(index, data.clone()) {
                        Ok(direct) => {
                            *fetched += 1;
                            *in_place += u32::from(direct);
                            self.announcements.changed(image.sha256.0);
                        }
                        Err(e) => {
                            tracing::warn!(peer = conn.peer, index, "chunk refused: {e}");
                            let fresh = progress.refused(conn.peer, index);
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
                            let event = HistoryEvent::new(HistoryKind::PeerRefused, msg)
                                .peer(conn.peer)
                                .epoch(campaign.epoch.0)
                                .reason(e.to_string());
                            self.history(event);
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
                self.history(
                    HistoryEvent::new(
                        HistoryKind::Image,
                        format!("manifest of epoch {} from node {}", c.epoch.0, conn.peer),
                    )
                    .epoch(c.epoch.0)
                    .peer(conn.peer),
                );
                self.fetch_image(c, image)?;
            }
            Err(ManifestRefused::Peer(e)) => {
                tracing::warn!(peer = conn.peer, "manifest refused: {e}");
                self.history(
                    HistoryEvent::new(
                        HistoryKind::PeerRefused,
                        format!("manifest from node {} refused: {e}", conn.peer),
                    )
                    .peer(conn.peer)
                    .reason(e.clone()),
                );
                if let Fetch::Manifest { progress, .. } = &mut self.fetch {
                    progress.refused(conn.peer);
                }
            }
            Err(ManifestRefused::Node(e)) => {
                let msg = format!("campaign {} refused: {e}", c.epoch.0);
                tracing::warn!("{msg}");
                self.history(
                    HistoryEvent::new(HistoryKind::CampaignRefused, msg)
                        .epoch(c.epoch.0)
                        .reason(e),
                );
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

/// The image's size and chunking, as the fan-out policy sees it.
pub(super) fn image_shape(image: &ProfileImage) -> ImageShape {
    ImageShape {
        id: image.sha256.0,
        size: image.size,
        chunk_size: image.chunk_size,
    }
}
