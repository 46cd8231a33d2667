//! The content-addressed image store.
//!
//! Layout under the data directory:
//!
//! - `images/<sha256>`: complete, verified, durable images, named by the SHA-256 of their
//!   content. A file appears here only by an atomic rename after every chunk was verified, the
//!   whole-image digest matched and the data was `fdatasync`ed; the directory is then fsynced.
//! - `partial/<sha256>.part`: an image being staged, written in place at each chunk's offset.
//! - `partial/<sha256>.journal`: the indices (u32, little-endian) of chunks whose writes
//!   completed. The journal is a *hint*, never trusted on its own: on resume every chunk it
//!   lists is read back and re-hashed, and only chunks that match the manifest count as staged.
//!   It is therefore appended without fsync (a lost or torn tail only costs a re-fetch), and it
//!   saves reading the never-written parts of the partial file.
//!
//! Every chunk is checked against the manifest (length, then SHA-256) *before* it is queued for
//! writing. Writes go through the io_uring [`uring`] engine: `O_DIRECT` where the filesystem
//! accepts it (buffered otherwise), registered buffers (by default 4 × 1 MiB, so staging
//! memory stays small whatever the image size) backed by huge pages so that each write reaches
//! the disk as one request, write-combining of consecutive chunks.
//!
//! When staging begins, the free space of the filesystem (`statvfs`) is compared with what the
//! image still needs, so a disk that cannot hold it fails at once; that, or `ENOSPC`/`EDQUOT`
//! from any later write or the `fdatasync`, removes the partial file and its journal and returns
//! [`StoreError::NoSpace`]. Space is deliberately not reserved with `fallocate`: on ext4 every
//! `O_DIRECT` write into a preallocated (unwritten) extent then converts it, which cost about
//! 10 % of staging throughput in `docs/bench/staging.md`'s setting.
//!
//! The whole-image SHA-256 is computed while chunks arrive in order (including the verified
//! prefix of a resumed staging), on a helper thread ([`hasher`]) so that the staging thread
//! only verifies chunk digests and the two hashes of every byte run on two cores; whatever could
//! not be hashed in order is read back through the engine before the rename.
//!
//! One staging per image at a time: the partial file is locked with `flock`, and a second
//! [`Store::begin`] of the same image gets [`StoreError::Busy`] (after waiting up to a second:
//! a staging process that was just killed holds the lock until its in-flight writes finish).

mod hasher;
#[allow(unsafe_code)]
mod uring;

use crate::fsutil::fsync_dir;
use crate::manifest::{Digest, ProfileImage};
use crate::verify::VerifyError;
use bytes::Bytes;
use hasher::ImageHasher;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use uring::{Engine, ALIGN};

/// How many times (10 ms apart) [`Store::begin`] tries the partial file's lock.
const LOCK_TRIES: u32 = 100;

/// Tuning of the store's I/O.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Registered buffers per staging (writes in flight at once).
    pub buffers: usize,
    /// Bytes per buffer (raised to the chunk size if that is larger).
    pub buffer_size: usize,
    /// Try `O_DIRECT` (falls back to buffered I/O where the filesystem refuses it).
    pub direct: bool,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            buffers: 4,
            buffer_size: 1 << 20,
            direct: true,
        }
    }
}

/// Why staging or reading an image failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Data does not match the manifest ([`VerifyError::SizeMismatch`],
    /// [`VerifyError::ChunkMismatch`]).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Every chunk matched, but the whole image does not have the manifest's SHA-256 (the
    /// manifest contradicts itself, or the disk changed the data). The partial image is removed.
    #[error("image digest mismatch: the manifest says {expected}, the staged data is {actual}")]
    DigestMismatch {
        /// The manifest's digest.
        expected: Digest,
        /// The digest of the staged data.
        actual: Digest,
    },
    /// The filesystem is full. The partial image was removed.
    #[error("no space left on the device for {path} ({needed} bytes needed); the partial image was removed")]
    NoSpace {
        /// The partial file.
        path: PathBuf,
        /// The image size.
        needed: u64,
    },
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another staging of the same image holds its partial file.
    #[error("{path}: another staging of this image is in progress")]
    Busy {
        /// The partial file.
        path: PathBuf,
    },
    /// [`Staging::finish`] was called before every chunk was written.
    #[error("staging incomplete: {missing} of {count} chunks missing")]
    Incomplete {
        /// Chunks not yet written.
        missing: u32,
        /// Chunks in the image.
        count: u32,
    },
    /// A chunk index beyond the image.
    #[error("chunk {index} out of range: the image has {count} chunks")]
    ChunkIndex {
        /// The index given.
        index: u32,
        /// Chunks in the image.
        count: u32,
    },
    /// The staging hit an earlier error and can no longer be used.
    #[error("staging aborted by an earlier error")]
    Aborted,
    /// A chunk that is not staged yet was asked for.
    #[error("chunk {index} is not staged yet")]
    ChunkMissing {
        /// The chunk.
        index: u32,
    },
    /// The image is not in the store.
    #[error("image {sha256} is not in the store")]
    NotFound {
        /// The image's digest.
        sha256: Digest,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Opens `path` read-write (creating it) or read-only, with `O_DIRECT` if asked and accepted.
fn open_file(path: &Path, create: bool, direct: bool) -> io::Result<(File, bool)> {
    let open = |flags: i32| {
        let mut o = OpenOptions::new();
        o.read(true).custom_flags(flags);
        if create {
            o.write(true).create(true).mode(0o644);
        }
        o.open(path)
    };
    if direct {
        match open(libc::O_DIRECT) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    open(0).map(|f| (f, false))
}

/// A content-addressed image store under one data directory (see the module docs).
#[derive(Clone, Debug)]
pub struct Store {
    images: PathBuf,
    partial: PathBuf,
    cfg: StoreConfig,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir` with the default configuration.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::with_config(data_dir, StoreConfig::default())
    }

    /// Opens the store under `data_dir` with `cfg`.
    pub fn with_config(data_dir: &Path, cfg: StoreConfig) -> Result<Store, StoreError> {
        let images = data_dir.join("images");
        let partial = data_dir.join("partial");
        for d in [&images, &partial] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        fsync_dir(data_dir).map_err(io_err("fsync", data_dir))?;
        Ok(Store {
            images,
            partial,
            cfg,
        })
    }

    /// Where the complete image with digest `sha256` lives.
    pub fn image_path(&self, sha256: &Digest) -> PathBuf {
        self.images.join(sha256.to_hex())
    }

    /// Where the image with digest `sha256` is staged.
    pub fn partial_path(&self, sha256: &Digest) -> PathBuf {
        self.partial.join(format!("{sha256}.part"))
    }

    fn journal_path(&self, sha256: &Digest) -> PathBuf {
        self.partial.join(format!("{sha256}.journal"))
    }

    /// Whether the complete image is in the store.
    pub fn contains(&self, image: &ProfileImage) -> bool {
        fs::metadata(self.image_path(&image.sha256)).is_ok_and(|m| m.len() == image.size)
    }

    /// Starts or resumes staging `image`. Chunks already in the partial file are re-verified
    /// (see the module docs); an image already in the store gives a complete [`Staging`].
    pub fn begin(&self, image: &ProfileImage) -> Result<Staging, StoreError> {
        Staging::begin(self, image)
    }

    /// Stages `image` from the local file `src`, reading only the chunks not yet staged.
    ///
    /// A file that does not match the manifest (or cannot be read) leaves nothing behind: the
    /// partial file and journal this call created are removed. A partial staging that existed
    /// before (chunks verified earlier, from other sources) is kept.
    pub fn stage_file(&self, image: &ProfileImage, src: &Path) -> Result<StageReport, StoreError> {
        let f = File::open(src).map_err(io_err("open", src))?;
        self.stage_from(image, &f, src)
    }

    /// [`Store::stage_file`] from a file already open (`src` names it in messages only): the
    /// agent stages what a caller opened and passed, never a path it names.
    pub fn stage_from(
        &self,
        image: &ProfileImage,
        f: &File,
        src: &Path,
    ) -> Result<StageReport, StoreError> {
        let len = f.metadata().map_err(io_err("stat", src))?.len();
        if len != image.size {
            return Err(VerifyError::SizeMismatch {
                chunk: None,
                expected: image.size,
                actual: len,
            }
            .into());
        }
        let fresh = !self.partial_path(&image.sha256).exists() && !self.contains(image);
        let r = self.copy_file(image, f, src);
        if r.is_err() && fresh {
            self.remove_partial(&image.sha256);
        }
        r
    }

    /// Deletes the image `sha256` from the store, complete or partial; returns whether a
    /// complete image was there. The directory entry is made durable before it returns.
    pub fn remove(&self, sha256: &Digest) -> Result<bool, StoreError> {
        let path = self.image_path(sha256);
        let was = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("remove", &path)(e)),
        };
        fsync_dir(&self.images).map_err(io_err("fsync", &self.images))?;
        self.remove_partial(sha256);
        Ok(was)
    }

    /// Removes the partial file and journal of `sha256` (a staging that must not resume).
    fn remove_partial(&self, sha256: &Digest) {
        let _ = fs::remove_file(self.partial_path(sha256));
        let _ = fs::remove_file(self.journal_path(sha256));
        let _ = fsync_dir(&self.partial);
    }

    /// The body of [`Store::stage_file`]: the staging is dropped (its lock released) on return.
    fn copy_file(
        &self,
        image: &ProfileImage,
        f: &File,
        src: &Path,
    ) -> Result<StageReport, StoreError> {
        let mut staging = self.begin(image)?;
        let mut buf = vec![0u8; image.chunk_size as usize];
        let mut fetched = 0;
        for index in staging.missing_chunks() {
            let data = &mut buf[..image.chunk_len(index)];
            f.read_exact_at(data, image.chunk_offset(index))
                .map_err(io_err("read", src))?;
            staging.write_chunk(index, data)?;
            fetched += 1;
        }
        let resumed = staging.resumed_chunks();
        let path = staging.finish()?;
        Ok(StageReport {
            path,
            resumed,
            fetched,
        })
    }

    /// Opens a complete image for reading back (for flashing), chunk by chunk, verified.
    pub fn open_image(&self, image: &ProfileImage) -> Result<ImageReader, StoreError> {
        let path = self.image_path(&image.sha256);
        let (file, direct) = match open_file(&path, false, self.cfg.direct) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    sha256: image.sha256,
                })
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let engine = Engine::new(file, direct, 1, buffer_size(&self.cfg, image))
            .map_err(io_err("io_uring setup", &path))?;
        Ok(ImageReader {
            engine,
            image: image.clone(),
            path,
        })
    }
}

fn buffer_size(cfg: &StoreConfig, image: &ProfileImage) -> usize {
    cfg.buffer_size
        .max(image.chunk_size as usize)
        .next_multiple_of(ALIGN)
}

/// What [`Store::stage_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageReport {
    /// The complete image.
    pub path: PathBuf,
    /// Chunks found already staged (verified) when staging began.
    pub resumed: u32,
    /// Chunks read from the source and written.
    pub fetched: u32,
}

/// An image being staged. Dropping it keeps the partial file, to resume later.
pub struct Staging {
    image: ProfileImage,
    part: PathBuf,
    journal_path: PathBuf,
    final_path: PathBuf,
    images_dir: PathBuf,
    /// `None` once the image is complete in the store.
    engine: Option<Engine>,
    journal: Option<File>,
    have: Vec<bool>,
    missing: u32,
    resumed: u32,
    hasher: ImageHasher,
    hashed_through: u32,
    done: Vec<u32>,
    journal_buf: Vec<u8>,
    aborted: bool,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("image", &self.image.sha256)
            .field("missing", &self.missing)
            .field("resumed", &self.resumed)
            .finish()
    }
}

impl Staging {
    fn begin(store: &Store, image: &ProfileImage) -> Result<Staging, StoreError> {
        let count = image.chunk_count();
        let final_path = store.image_path(&image.sha256);
        let part = store.partial_path(&image.sha256);
        let journal_path = store.journal_path(&image.sha256);
        let mut s = Staging {
            image: image.clone(),
            part,
            journal_path,
            final_path,
            images_dir: store.images.clone(),
            engine: None,
            journal: None,
            have: vec![true; count as usize],
            missing: 0,
            resumed: count,
            hasher: ImageHasher::new(image.chunk_size as usize),
            hashed_through: count,
            done: Vec::new(),
            journal_buf: Vec::new(),
            aborted: false,
        };
        if store.contains(image) {
            // Leftovers of a staging that was stopped after its rename.
            let _ = fs::remove_file(&s.journal_path);
            return Ok(s);
        }
        s.have.fill(false);
        s.missing = count;
        s.resumed = 0;
        s.hashed_through = 0;

        let (file, direct) =
            open_file(&s.part, true, store.cfg.direct).map_err(io_err("open", &s.part))?;
        // A staging process killed a moment ago keeps its lock until the kernel has finished
        // the writes it had in flight: wait a little before calling the image busy.
        let mut tries = 0;
        while !uring::try_lock_exclusive(&file).map_err(io_err("lock", &s.part))? {
            tries += 1;
            if tries > LOCK_TRIES {
                return Err(StoreError::Busy {
                    path: s.part.clone(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let engine = Engine::new(
            file,
            direct,
            store.cfg.buffers,
            buffer_size(&store.cfg, image),
        )
        .map_err(io_err("io_uring setup", &s.part))?;
        // Refuse at once if the rest of the image cannot fit. The space is not reserved
        // (`fallocate` made every O_DIRECT write convert an unwritten extent, measurably slower),
        // so ENOSPC from a later write is handled the same way.
        let allocated = engine
            .file()
            .metadata()
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        let needed = image.size.saturating_sub(allocated);
        let available = uring::available_bytes(&s.part).map_err(io_err("statvfs", &s.part))?;
        if available < needed {
            drop(engine);
            return Err(s.no_space());
        }
        s.engine = Some(engine);
        s.resume()?;
        fsync_dir(&store.partial).map_err(io_err("fsync", &store.partial))?;
        Ok(s)
    }

    /// Re-verifies the chunks the journal lists and rewrites it with those that match.
    fn resume(&mut self) -> Result<(), StoreError> {
        let mut listed = Vec::new();
        match File::open(&self.journal_path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .map_err(io_err("read", &self.journal_path))?;
                // A torn last record is ignored.
                for rec in bytes.chunks_exact(4) {
                    let i = u32::from_le_bytes(rec.try_into().expect("4 bytes"));
                    if i < self.image.chunk_count() {
                        listed.push(i);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("open", &self.journal_path)(e)),
        }
        listed.sort_unstable();
        listed.dedup();
        let engine = self.engine.as_mut().expect("engine");
        let mut verified = Vec::with_capacity(listed.len() * 4);
        for i in listed {
            let len = self.image.chunk_len(i);
            let data = engine
                .read_at(self.image.chunk_offset(i), len)
                .map_err(io_err("read", &self.part))?;
            if data.len() == len && Digest::of(data) == self.image.chunks[i as usize] {
                if i == self.hashed_through {
                    self.hasher.update(data);
                    self.hashed_through += 1;
                }
                self.have[i as usize] = true;
                self.missing -= 1;
                self.resumed += 1;
                verified.extend_from_slice(&i.to_le_bytes());
            }
        }
        let mut journal = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.journal_path)
            .map_err(io_err("open", &self.journal_path))?;
        journal
            .write_all(&verified)
            .map_err(io_err("write", &self.journal_path))?;
        self.journal = Some(journal);
        Ok(())
    }

    /// Chunks in the image.
    pub fn chunk_count(&self) -> u32 {
        self.image.chunk_count()
    }

    /// Whether chunk `index` is staged (verified and written or queued).
    pub fn has_chunk(&self, index: u32) -> bool {
        self.have.get(index as usize).copied().unwrap_or(false)
    }

    /// The chunks still to be written, in order.
    pub fn missing_chunks(&self) -> Vec<u32> {
        (0..self.chunk_count())
            .filter(|&i| !self.have[i as usize])
            .collect()
    }

    /// Chunks found staged and verified when the staging began.
    pub fn resumed_chunks(&self) -> u32 {
        self.resumed
    }

    /// Whether every chunk is staged.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Verifies `data` as chunk `index` (length, then SHA-256 against the manifest) and, if it
    /// matches, queues it for writing. A chunk already staged is verified and not written again.
    pub fn write_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        if !self.verify_chunk(index, data)? {
            return Ok(());
        }
        let engine = self
            .engine
            .as_mut()
            .expect("an incomplete staging has an engine");
        let r = engine.write(self.image.chunk_offset(index), data, index);
        if let Err(e) = r {
            return Err(self.fail("write", e));
        }
        self.staged(index, data)
    }

    /// As [`Staging::write_chunk`], but the write goes to the file from `data`'s own memory
    /// where the engine can (an RDMA slot the chunk was written into: page-aligned, whole
    /// pages), so the chunk is not copied on its way to the disk; `data` is kept until the
    /// write completes. Returns whether it was written without a copy.
    pub fn write_chunk_shared(&mut self, index: u32, data: Bytes) -> Result<bool, StoreError> {
        if !self.verify_chunk(index, &data)? {
            return Ok(false);
        }
        let engine = self
            .engine
            .as_mut()
            .expect("an incomplete staging has an engine");
        let offset = self.image.chunk_offset(index);
        let r = match engine.write_owned(offset, data.clone(), index) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(back)) => engine.write(offset, &back, index).map(|()| false),
            Err(e) => Err(e),
        };
        match r {
            Ok(direct) => {
                self.staged(index, &data)?;
                Ok(direct)
            }
            Err(e) => Err(self.fail("write", e)),
        }
    }

    /// Checks chunk `index` against the manifest; `false` when it is already staged.
    fn verify_chunk(&mut self, index: u32, data: &[u8]) -> Result<bool, StoreError> {
        if self.aborted {
            return Err(StoreError::Aborted);
        }
        let count = self.chunk_count();
        if index >= count {
            return Err(StoreError::ChunkIndex { index, count });
        }
        let expected = self.image.chunk_len(index);
        if data.len() != expected {
            return Err(VerifyError::SizeMismatch {
                chunk: Some(index),
                expected: expected as u64,
                actual: data.len() as u64,
            }
            .into());
        }
        let actual = Digest::of(data);
        if actual != self.image.chunks[index as usize] {
            return Err(VerifyError::ChunkMismatch {
                index,
                expected: self.image.chunks[index as usize],
                actual,
            }
            .into());
        }
        Ok(!self.have[index as usize])
    }

    /// Records chunk `index` as queued for writing.
    fn staged(&mut self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        self.have[index as usize] = true;
        self.missing -= 1;
        if index == self.hashed_through {
            self.hasher.update(data);
            self.hashed_through += 1;
        }
        self.record_done()
    }

    /// Appends the chunks whose writes completed to the journal.
    fn record_done(&mut self) -> Result<(), StoreError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        engine.take_done(&mut self.done);
        if self.done.is_empty() {
            return Ok(());
        }
        self.journal_buf.clear();
        for i in self.done.drain(..) {
            self.journal_buf.extend_from_slice(&i.to_le_bytes());
        }
        if let Some(j) = self.journal.as_mut() {
            j.write_all(&self.journal_buf)
                .map_err(io_err("write", &self.journal_path))?;
        }
        Ok(())
    }

    /// Turns an I/O error into a `StoreError`, cleaning up on a full disk.
    fn fail(&mut self, op: &'static str, e: io::Error) -> StoreError {
        self.aborted = true;
        if is_no_space(&e) {
            self.engine = None;
            self.no_space()
        } else {
            io_err(op, &self.part)(e)
        }
    }

    fn no_space(&mut self) -> StoreError {
        self.aborted = true;
        self.journal = None;
        let _ = fs::remove_file(&self.part);
        let _ = fs::remove_file(&self.journal_path);
        if let Some(dir) = self.part.parent() {
            let _ = fsync_dir(dir);
        }
        StoreError::NoSpace {
            path: self.part.clone(),
            needed: self.image.size,
        }
    }

    /// Starts the writes of the chunks queued so far and journals those that completed,
    /// without waiting: chunks that arrive slowly (over the network) do not sit in a
    /// write-combining buffer, so a restart resumes from them.
    pub fn push_writes(&mut self) -> Result<(), StoreError> {
        if self.aborted {
            return Err(StoreError::Aborted);
        }
        if let Some(engine) = self.engine.as_mut() {
            if let Err(e) = engine.start_writes() {
                return Err(self.fail("write", e));
            }
        }
        self.record_done()
    }

    /// Reads back staged chunk `index` (after the writes queued before it complete) and checks
    /// it against the manifest again, so that a node can forward chunks of an image it is
    /// still receiving.
    pub fn read_chunk(&mut self, index: u32) -> Result<&[u8], StoreError> {
        let count = self.chunk_count();
        if index >= count {
            return Err(StoreError::ChunkIndex { index, count });
        }
        if !self.have[index as usize] {
            return Err(StoreError::ChunkMissing { index });
        }
        let len = self.image.chunk_len(index);
        let offset = self.image.chunk_offset(index);
        let expected = self.image.chunks[index as usize];
        let part = self.part.clone();
        let engine = self.engine.as_mut().ok_or(StoreError::Aborted)?;
        let data = engine.read_at(offset, len).map_err(io_err("read", &part))?;
        let actual = Digest::of(data);
        if data.len() != len || actual != expected {
            return Err(VerifyError::ChunkMismatch {
                index,
                expected,
                actual,
            }
            .into());
        }
        Ok(data)
    }

    /// Completes the staging: waits for the writes, truncates to the image size, `fdatasync`s,
    /// checks the whole-image SHA-256, renames the file into `images/` and fsyncs the
    /// directory. Returns the image's path.
    pub fn finish(mut self) -> Result<PathBuf, StoreError> {
        if self.aborted {
            return Err(StoreError::Aborted);
        }
        if self.engine.is_none() {
            return Ok(self.final_path.clone());
        }
        if let Err(e) = self.engine.as_mut().expect("engine").flush() {
            return Err(self.fail("write", e));
        }
        self.record_done()?;
        if self.missing > 0 {
            return Err(StoreError::Incomplete {
                missing: self.missing,
                count: self.chunk_count(),
            });
        }
        let engine = self.engine.as_mut().expect("engine");
        let part = self.part.clone();
        engine
            .file()
            .set_len(self.image.size)
            .map_err(io_err("truncate", &part))?;
        if let Err(e) = engine.fdatasync() {
            return Err(self.fail("fdatasync", e));
        }
        let engine = self.engine.as_mut().expect("engine");
        let mut hasher = std::mem::replace(&mut self.hasher, ImageHasher::new(0)).finish();
        for i in self.hashed_through..self.image.chunk_count() {
            let data = engine
                .read_at(self.image.chunk_offset(i), self.image.chunk_len(i))
                .map_err(io_err("read", &part))?;
            hasher.update(data);
        }
        let actual = Digest(hasher.finalize().into());
        if actual != self.image.sha256 {
            self.aborted = true;
            self.engine = None;
            self.journal = None;
            let _ = fs::remove_file(&self.part);
            let _ = fs::remove_file(&self.journal_path);
            return Err(StoreError::DigestMismatch {
                expected: self.image.sha256,
                actual,
            });
        }
        fs::rename(&self.part, &self.final_path).map_err(io_err("rename", &part))?;
        fsync_dir(&self.images_dir).map_err(io_err("fsync", &self.images_dir))?;
        self.engine = None;
        self.journal = None;
        let _ = fs::remove_file(&self.journal_path);
        Ok(self.final_path.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Stopped before `finish`: let the queued writes land and journal them, so a later
        // staging resumes from them.
        if !self.aborted {
            if let Some(engine) = self.engine.as_mut() {
                if engine.flush().is_ok() {
                    let _ = self.record_done();
                }
            }
        }
    }
}

/// Reads a complete image back through the io_uring engine, verifying every chunk.
pub struct ImageReader {
    engine: Engine,
    image: ProfileImage,
    path: PathBuf,
}

impl ImageReader {
    /// Chunks in the image.
    pub fn chunk_count(&self) -> u32 {
        self.image.chunk_count()
    }

    /// Reads chunk `index` and checks it against the manifest.
    pub fn read_chunk(&mut self, index: u32) -> Result<&[u8], StoreError> {
        let count = self.image.chunk_count();
        if index >= count {
            return Err(StoreError::ChunkIndex { index, count });
        }
        let len = self.image.chunk_len(index);
        let data = self
            .engine
            .read_at(self.image.chunk_offset(index), len)
            .map_err(io_err("read", &self.path))?;
        if data.len() != len {
            return Err(VerifyError::SizeMismatch {
                chunk: Some(index),
                expected: len as u64,
                actual: data.len() as u64,
            }
            .into());
        }
        let actual = Digest::of(data);
        let expected = self.image.chunks[index as usize];
        if actual != expected {
            return Err(VerifyError::ChunkMismatch {
                index,
                expected,
                actual,
            }
            .into());
        }
        Ok(data)
    }

    /// Reads the whole image, verifying every chunk and the whole-image digest, passing each
    /// chunk to `sink` in order.
    pub fn read_all(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let mut h = Sha256::new();
        for i in 0..self.chunk_count() {
            let data = self.read_chunk(i)?;
            h.update(data);
            sink(data).map_err(io_err("deliver", &self.path))?;
        }
        let actual = Digest(h.finalize().into());
        if actual != self.image.sha256 {
            return Err(StoreError::DigestMismatch {
                expected: self.image.sha256,
                actual,
            });
        }
        Ok(())
    }

    /// Whether reads bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.engine.is_direct()
    }

    /// Whether the engine's buffers are registered with the ring.
    pub fn uses_registered_buffers(&self) -> bool {
        self.engine.is_fixed()
    }
}
