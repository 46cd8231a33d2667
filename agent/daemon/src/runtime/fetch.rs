//! Getting a campaign's manifest and image onto this node, and serving them to neighbours.
//!
//! A node that must stage a campaign asks its connected neighbours, one after another, for the
//! manifest the campaign names (by sha256), verifies it (trusted signature, anti-rollback, the
//! digest the campaign names), then fetches the image for its own hw-profile chunk by chunk from
//! every neighbour that has it complete, each chunk verified against the manifest before it is
//! written. A neighbour that has nothing yet says so, and the node asks again a little later:
//! images spread outward from the agent the operator seeded, hop by hop.

use super::Agent;
use crate::envelope::Envelope;
use crate::worker::Job;
use anyhow::Result;
use bytes::Bytes;
use entente_fastpath::ConnId;
use entente_proto::msg::Campaign;
use entente_stage::{Digest, Manifest, ProfileImage, Signature, Staging};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest manifest (with its signature) accepted over the wire.
const MAX_MANIFEST: u32 = 1 << 20;
/// Chunk requests in flight per neighbour.
const PER_PEER: usize = 2;
/// Wait before asking a neighbour that had nothing again.
const NOT_YET_BACKOFF: Duration = Duration::from_millis(150);

/// Where this node is in acquiring the current campaign's image.
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
        want: VecDeque<u32>,
        /// Requests in flight: (peer, slot) → chunk.
        inflight: HashMap<(u64, u32), u32>,
        /// Neighbours that had nothing, until when.
        resting: HashMap<u64, Instant>,
    },
    /// The device is flashing the staged image.
    Flashing,
}

fn manifest_dir(data: &Path) -> std::path::PathBuf {
    data.join("manifests")
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
                self.history(&format!(
                    "fetching image {} ({} chunks, {} already here)",
                    image.sha256.to_hex(),
                    image.chunk_count(),
                    staging.resumed_chunks()
                ));
                self.fetch = Fetch::Chunks {
                    campaign: c,
                    image,
                    staging: Box::new(staging),
                    want,
                    inflight: HashMap::new(),
                    resting: HashMap::new(),
                };
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

    fn connected(&self) -> Vec<ConnId> {
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
                want,
                inflight,
                resting,
                ..
            } => {
                let now = Instant::now();
                for conn in conns {
                    if resting.get(&conn.peer).is_some_and(|t| now < *t) {
                        continue;
                    }
                    while inflight.keys().filter(|(p, _)| *p == conn.peer).count() < PER_PEER {
                        let Some(index) = want.pop_front() else { break };
                        match self
                            .transport
                            .grant_bulk(conn, image.chunk_len(index) as u32)
                        {
                            Ok(slot) => {
                                inflight.insert((conn.peer, slot), index);
                                let image = image.sha256.0;
                                self.request(conn, Envelope::ChunkReq { image, index, slot });
                            }
                            Err(_) => {
                                want.push_front(index);
                                break;
                            }
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
            ..
        } = std::mem::replace(&mut self.fetch, Fetch::Idle)
        else {
            return Ok(());
        };
        match staging.finish() {
            Ok(_) => {
                self.images.insert(image.sha256.0, image.clone());
                self.history(&format!(
                    "image {} staged in the store",
                    image.sha256.to_hex()
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

    /// A neighbour had nothing for the request in `slot`.
    pub(super) fn fetch_not_yet(&mut self, conn: ConnId, slot: u32) {
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
                if let Some(i) = inflight.remove(&(conn.peer, slot)) {
                    want.push_back(i);
                    resting.insert(conn.peer, Instant::now() + NOT_YET_BACKOFF);
                }
            }
            _ => {}
        }
    }

    /// A neighbour went away: what it owed us is asked of others.
    pub(super) fn fetch_peer_down(&mut self, peer: u64) {
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
                    if let Some(i) = inflight.remove(&k) {
                        want.push_back(i);
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
                staging,
                want,
                inflight,
                resting,
                ..
            } => {
                if let Some(index) = inflight.remove(&(conn.peer, slot)) {
                    if let Err(e) = staging.write_chunk(index, &data) {
                        tracing::warn!(peer = conn.peer, index, "chunk refused: {e}");
                        want.push_back(index);
                        resting.insert(conn.peer, Instant::now() + NOT_YET_BACKOFF * 4);
                        let msg = format!("chunk {index} from node {} refused: {e}", conn.peer);
                        self.history(&msg);
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
            Err(e) => {
                tracing::warn!(peer = conn.peer, "manifest refused: {e}");
                self.history(&format!("manifest from node {} refused: {e}", conn.peer));
                if let Fetch::Manifest { tried, .. } = &mut self.fetch {
                    tried.insert(conn.peer);
                }
            }
        }
        Ok(())
    }

    /// Verifies a manifest a neighbour sent for campaign `c`: signature by a trusted key,
    /// anti-rollback, and the digest the campaign names. Returns this node's image.
    fn accept_manifest(&mut self, c: &Campaign, data: &[u8]) -> Result<ProfileImage, String> {
        if data.len() < 2 {
            return Err("truncated".into());
        }
        let sig_len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let (sig_text, bytes) = data[2..]
            .split_at_checked(sig_len)
            .ok_or("truncated signature")?;
        let sig_text = std::str::from_utf8(sig_text).map_err(|_| "signature is not text")?;
        if Digest::of(bytes).0 != c.image_digest {
            return Err("it is not the manifest the campaign names".into());
        }
        let sig = Signature::parse(sig_text, Path::new("<peer>")).map_err(|e| e.to_string())?;
        self.verifier
            .accept(bytes, &sig, entente_stage::unix_now())
            .map_err(|e| e.to_string())?;
        self.keep_manifest(bytes.to_vec(), sig_text.to_owned())
            .map_err(|e| e.to_string())?;
        match self.own_image(&c.image_digest) {
            Some(r) => r,
            None => Err("manifest lost".into()),
        }
    }

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

    /// A neighbour asks for a chunk of an image.
    pub(super) fn serve_chunk(&mut self, conn: ConnId, image: [u8; 32], index: u32, slot: u32) {
        let Some(img) = self.images.get(&image).cloned() else {
            return self.not_yet(conn, slot);
        };
        let data = match self
            .store
            .open_image(&img)
            .and_then(|mut r| r.read_chunk(index).map(Bytes::copy_from_slice))
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("reading chunk {index} of {}: {e}", img.sha256.to_hex());
                return self.not_yet(conn, slot);
            }
        };
        if let Err(e) = self.transport.send_bulk(conn, slot, data) {
            tracing::warn!(peer = conn.peer, "serving a chunk: {e}");
        }
    }

    fn not_yet(&mut self, conn: ConnId, slot: u32) {
        // Both ends forget the grant: we here, the requester when NOT_YET arrives.
        self.transport.decline_bulk(conn, slot);
        let mut b = Vec::new();
        Envelope::NotYet { slot }.encode(&mut b);
        self.send_on(conn, Bytes::from(b));
    }
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
