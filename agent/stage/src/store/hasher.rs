//! The whole-image SHA-256, computed on a helper thread.
//!
//! Staging hashes every byte twice: the chunk digest (checked against the manifest before the
//! write, on the caller's thread) and the whole-image digest (the store address). Done in line,
//! the second hash doubles the staging thread's work (SHA-256 runs at about 1.2 GB/s even with
//! the SHA extensions), enough for the disk to wait on it (about 10 % of staging time on 1 GiB
//! in `docs/bench/staging.md`'s setting). [`ImageHasher`] copies the data it is given into one of a few
//! batch buffers and hashes them, in order, on its own thread while the caller verifies the next
//! chunk and the disk writes. Memory stays bounded: at most [`BATCHES`] buffers of `batch`
//! bytes exist, and a caller that gets ahead waits for one to come back.

use sha2::{Digest as _, Sha256};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

/// Batch buffers per hasher: one being hashed, one being filled, one spare.
const BATCHES: usize = 3;

/// Smallest batch: small chunks are gathered so a batch costs one channel round trip per MiB.
const MIN_BATCH: usize = 1 << 20;

/// An in-order SHA-256 fed from one thread and computed on another (see the module docs).
pub(crate) struct ImageHasher {
    batch: usize,
    state: State,
}

enum State {
    /// Nothing hashed yet: the thread is started by the first [`ImageHasher::update`].
    Idle,
    Thread {
        /// The batch being filled.
        filling: Vec<u8>,
        /// Batches to hash; dropped to end the thread.
        work: Sender<Vec<u8>>,
        /// Batches the thread has hashed, for reuse.
        back: Receiver<Vec<u8>>,
        /// Batches allocated so far.
        allocated: usize,
        thread: JoinHandle<Sha256>,
    },
    /// The thread could not be started: hash in line.
    Inline(Sha256),
}

impl ImageHasher {
    /// A hasher whose batches hold at least `chunk` bytes.
    pub(crate) fn new(chunk: usize) -> ImageHasher {
        ImageHasher {
            batch: chunk.max(MIN_BATCH),
            state: State::Idle,
        }
    }

    /// Appends `data` to the hashed stream.
    pub(crate) fn update(&mut self, data: &[u8]) {
        if matches!(self.state, State::Idle) {
            self.state = self.start();
        }
        match &mut self.state {
            State::Idle => unreachable!("started above"),
            State::Inline(h) => h.update(data),
            State::Thread {
                filling,
                work,
                back,
                allocated,
                ..
            } => {
                let mut data = data;
                while !data.is_empty() {
                    let n = data.len().min(self.batch - filling.len());
                    filling.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if filling.len() == self.batch {
                        let next = match back.try_recv() {
                            Ok(b) => b,
                            Err(_) if *allocated < BATCHES => {
                                *allocated += 1;
                                Vec::with_capacity(self.batch)
                            }
                            // The thread holds every other batch: wait for one. If it died, its
                            // panic is reported by `finish`; keep a fresh buffer meanwhile.
                            Err(_) => back
                                .recv()
                                .unwrap_or_else(|_| Vec::with_capacity(self.batch)),
                        };
                        let full = std::mem::replace(filling, next);
                        let _ = work.send(full);
                        filling.clear();
                    }
                }
            }
        }
    }

    fn start(&self) -> State {
        let (work, todo) = channel::<Vec<u8>>();
        let (done, back) = channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("image-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for batch in todo {
                    h.update(&batch);
                    // The other side may be gone (the staging was dropped): nothing to return.
                    let _ = done.send(batch);
                }
                h
            });
        match spawned {
            Ok(thread) => State::Thread {
                filling: Vec::with_capacity(self.batch),
                work,
                back,
                allocated: 1,
                thread,
            },
            Err(_) => State::Inline(Sha256::new()),
        }
    }

    /// Hashes what is still queued and returns the hash state of everything given so far.
    pub(crate) fn finish(self) -> Sha256 {
        match self.state {
            State::Idle => Sha256::new(),
            State::Inline(h) => h,
            State::Thread {
                filling,
                work,
                back,
                thread,
                ..
            } => {
                drop(back);
                let mut h = {
                    drop(work);
                    match thread.join() {
                        Ok(h) => h,
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                };
                h.update(&filling);
                h
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_hash_whatever_the_pieces() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let want = Sha256::digest(&data);
        for piece in [7, 4096, 65536, 1 << 20, 3 << 20, 5_000_000] {
            let mut h = ImageHasher::new(piece);
            for p in data.chunks(piece) {
                h.update(p);
            }
            assert_eq!(h.finish().finalize(), want, "pieces of {piece}");
        }
        assert_eq!(
            ImageHasher::new(4096).finish().finalize(),
            Sha256::digest([])
        );
    }
}
