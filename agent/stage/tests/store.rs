//! The image store: verification before writing, atomic visibility, resume, full disk, read back.

use entente_stage::{
    CompatWindow, Digest, ProfileImage, Store, StoreConfig, StoreError, VerifyError,
};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic pseudo-random bytes.
fn image_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn describe(data: &[u8], chunk_size: u32) -> ProfileImage {
    ProfileImage::from_reader(
        data,
        chunk_size,
        "1.0",
        CompatWindow {
            min_epoch: 1,
            max_epoch: 2,
        },
    )
    .unwrap()
}

fn chunk(data: &[u8], p: &ProfileImage, i: u32) -> Vec<u8> {
    let off = p.chunk_offset(i) as usize;
    data[off..off + p.chunk_len(i)].to_vec()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn stages_an_image_only_visible_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(3 * 65536 + 1234, 1);
    let p = describe(&data, 65536);
    let mut s = store.begin(&p).unwrap();
    assert_eq!(s.missing_chunks(), vec![0, 1, 2, 3]);
    for i in 0..p.chunk_count() {
        s.write_chunk(i, &chunk(&data, &p, i)).unwrap();
        assert!(entries(&dir.path().join("images")).is_empty());
    }
    assert!(s.is_complete());
    let path = s.finish().unwrap();
    assert_eq!(path, dir.path().join("images").join(p.sha256.to_hex()));
    assert_eq!(fs::read(&path).unwrap(), data);
    assert!(entries(&dir.path().join("partial")).is_empty());
    assert!(store.contains(&p));
    // Staging it again is immediate.
    let again = store.begin(&p).unwrap();
    assert!(again.is_complete());
    assert_eq!(again.finish().unwrap(), path);
}

#[test]
fn a_chunk_that_does_not_match_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(4 * 4096, 2);
    let p = describe(&data, 4096);
    let mut s = store.begin(&p).unwrap();
    let mut bad = chunk(&data, &p, 1);
    bad[100] ^= 1;
    match s.write_chunk(1, &bad) {
        Err(StoreError::Verify(VerifyError::ChunkMismatch {
            index: 1,
            expected,
            actual,
        })) => {
            assert_eq!(expected, p.chunks[1]);
            assert_eq!(actual, Digest::of(&bad));
        }
        other => panic!("{other:?}"),
    }
    assert!(!s.has_chunk(1));
    drop(s);
    // Nothing of the refused chunk reached the disk.
    let part = fs::read(store.partial_path(&p.sha256)).unwrap();
    assert!(part
        .get(4096..8192)
        .is_none_or(|c| c.iter().all(|&b| b == 0)));
}

#[test]
fn a_chunk_of_the_wrong_length_is_a_size_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(2 * 4096 + 10, 3);
    let p = describe(&data, 4096);
    let mut s = store.begin(&p).unwrap();
    let short = &chunk(&data, &p, 0)[..4000];
    assert!(matches!(
        s.write_chunk(0, short),
        Err(StoreError::Verify(VerifyError::SizeMismatch {
            chunk: Some(0),
            expected: 4096,
            actual: 4000
        }))
    ));
    assert!(matches!(
        s.write_chunk(3, &[0; 10]),
        Err(StoreError::ChunkIndex { index: 3, count: 3 })
    ));
    // A source file of the wrong size is refused as a whole.
    let src = dir.path().join("src.bin");
    fs::write(&src, &data[..data.len() - 1]).unwrap();
    drop(s);
    assert!(matches!(
        store.stage_file(&p, &src),
        Err(StoreError::Verify(VerifyError::SizeMismatch {
            chunk: None,
            ..
        }))
    ));
}

#[test]
fn finishing_early_is_refused_and_nothing_becomes_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(5 * 4096, 4);
    let p = describe(&data, 4096);
    let mut s = store.begin(&p).unwrap();
    s.write_chunk(0, &chunk(&data, &p, 0)).unwrap();
    assert!(matches!(
        s.finish(),
        Err(StoreError::Incomplete {
            missing: 4,
            count: 5
        })
    ));
    assert!(entries(&dir.path().join("images")).is_empty());
}

#[test]
fn resume_reverifies_journaled_chunks_and_refetches_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(8 * 16384 + 77, 5);
    let p = describe(&data, 16384);
    let mut s = store.begin(&p).unwrap();
    for i in [0, 1, 2, 5, 6] {
        s.write_chunk(i, &chunk(&data, &p, i)).unwrap();
    }
    drop(s);

    // Damage chunk 5 on disk: the journal lists it, but it must not count.
    let part = fs::OpenOptions::new()
        .write(true)
        .open(store.partial_path(&p.sha256))
        .unwrap();
    part.write_all_at(b"XX", p.chunk_offset(5) + 3).unwrap();
    drop(part);

    let mut s = store.begin(&p).unwrap();
    assert_eq!(s.resumed_chunks(), 4);
    assert_eq!(s.missing_chunks(), vec![3, 4, 5, 7, 8]);
    for i in s.missing_chunks() {
        s.write_chunk(i, &chunk(&data, &p, i)).unwrap();
    }
    let path = s.finish().unwrap();
    assert_eq!(fs::read(path).unwrap(), data);
}

#[test]
fn out_of_order_and_repeated_chunks_make_the_exact_image() {
    for cfg in [
        StoreConfig::default(),
        StoreConfig {
            direct: false,
            ..StoreConfig::default()
        },
        StoreConfig {
            buffers: 1,
            buffer_size: 4096,
            direct: true,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_config(dir.path(), cfg).unwrap();
        let data = image_bytes(40 * 8192 + 4095, 6);
        let p = describe(&data, 8192);
        let mut s = store.begin(&p).unwrap();
        let n = p.chunk_count();
        let order: Vec<u32> = (0..n).rev().chain(0..n).collect();
        for i in order {
            s.write_chunk(i, &chunk(&data, &p, i)).unwrap();
        }
        let path = s.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), data, "{cfg:?}");
    }
}

#[test]
fn a_manifest_whose_whole_digest_contradicts_its_chunks_is_refused_and_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(3 * 4096, 7);
    let mut p = describe(&data, 4096);
    p.sha256 = Digest::of(b"something else");
    let mut s = store.begin(&p).unwrap();
    for i in 0..3 {
        s.write_chunk(i, &chunk(&data, &p, i)).unwrap();
    }
    assert!(matches!(s.finish(), Err(StoreError::DigestMismatch { .. })));
    assert!(entries(&dir.path().join("images")).is_empty());
    assert!(entries(&dir.path().join("partial")).is_empty());
}

#[test]
fn a_second_staging_of_the_same_image_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(4096, 8);
    let p = describe(&data, 4096);
    let s = store.begin(&p).unwrap();
    assert!(matches!(store.begin(&p), Err(StoreError::Busy { .. })));
    drop(s);
    store.begin(&p).unwrap();
}

#[test]
fn reading_back_verifies_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(10 * 4096 + 3, 9);
    let p = describe(&data, 4096);
    let src = dir.path().join("src.bin");
    fs::write(&src, &data).unwrap();
    let report = store.stage_file(&p, &src).unwrap();
    assert_eq!((report.resumed, report.fetched), (0, 11));

    let mut r = store.open_image(&p).unwrap();
    let mut out = Vec::new();
    r.read_all(|c| {
        out.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(out, data);
    drop(r);

    // Flip one byte of the stored image: reading it back refuses that chunk.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(store.image_path(&p.sha256))
        .unwrap();
    f.write_all_at(b"!", 5 * 4096 + 1).unwrap();
    drop(f);
    let mut r = store.open_image(&p).unwrap();
    assert!(r.read_chunk(4).is_ok());
    assert!(matches!(
        r.read_chunk(5),
        Err(StoreError::Verify(VerifyError::ChunkMismatch {
            index: 5,
            ..
        }))
    ));
    let mut other = p.clone();
    other.sha256 = Digest::of(b"absent");
    assert!(matches!(
        store.open_image(&other),
        Err(StoreError::NotFound { .. })
    ));
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> Option<TinyFs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs as root failed");
        Some(TinyFs { dir })
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A real full disk: a 1 MiB tmpfs (needs root; the test says so and does nothing otherwise).
#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_behind() {
    let Some(fs_) = TinyFs::mount("1m") else {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    };
    let root = fs_.dir.path().join("data");
    let store = Store::open(&root).unwrap();

    // Fits: 512 KiB.
    let small = image_bytes(512 * 1024, 10);
    let ps = describe(&small, 65536);
    let src_dir = tempfile::tempdir().unwrap();
    let small_src = src_dir.path().join("small.bin");
    fs::write(&small_src, &small).unwrap();
    store.stage_file(&ps, &small_src).unwrap();

    // Does not fit next to it: 768 KiB.
    let big = image_bytes(768 * 1024, 11);
    let pb = describe(&big, 65536);
    let big_src = src_dir.path().join("big.bin");
    fs::write(&big_src, &big).unwrap();
    match store.stage_file(&pb, &big_src) {
        Err(StoreError::NoSpace { path, needed }) => {
            assert_eq!(needed, 768 * 1024);
            assert_eq!(path, store.partial_path(&pb.sha256));
        }
        other => panic!("{other:?}"),
    }
    let err = StoreError::NoSpace {
        path: "p".into(),
        needed: 1,
    }
    .to_string();
    assert!(err.contains("no space left"), "{err}");
    assert!(entries(&root.join("partial")).is_empty());
    assert_eq!(
        entries(&root.join("images")),
        vec![store.image_path(&ps.sha256)]
    );
    assert_eq!(fs::read(store.image_path(&ps.sha256)).unwrap(), small);
}

/// ENOSPC in the middle of the writes (the disk filled up after staging began): the same clear
/// error, and the partial file is gone.
#[test]
fn a_disk_that_fills_up_during_staging_is_a_clear_error_and_leaves_nothing_behind() {
    let Some(fs_) = TinyFs::mount("1m") else {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    };
    let root = fs_.dir.path().join("data");
    let store = Store::open(&root).unwrap();
    let data = image_bytes(768 * 1024, 12);
    let p = describe(&data, 65536);
    let mut s = store.begin(&p).unwrap();
    // Something else takes most of the space now.
    fs::write(fs_.dir.path().join("filler"), vec![1u8; 600 * 1024]).unwrap();
    let mut err = None;
    for i in 0..p.chunk_count() {
        if let Err(e) = s.write_chunk(i, &chunk(&data, &p, i)) {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => s.finish().unwrap_err(),
    };
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err:?}");
    assert!(entries(&root.join("partial")).is_empty());
    assert!(entries(&root.join("images")).is_empty());
}

#[test]
fn a_partial_image_serves_the_chunks_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(4 * 65536 + 99, 7);
    let p = describe(&data, 65536);
    let mut s = store.begin(&p).unwrap();
    s.write_chunk(2, &chunk(&data, &p, 2)).unwrap();
    s.write_chunk(4, &chunk(&data, &p, 4)).unwrap();
    // Read back at once: queued writes complete first.
    assert_eq!(s.read_chunk(2).unwrap(), &chunk(&data, &p, 2)[..]);
    assert_eq!(s.read_chunk(4).unwrap(), &chunk(&data, &p, 4)[..]);
    assert!(matches!(
        s.read_chunk(1),
        Err(StoreError::ChunkMissing { index: 1 })
    ));
    assert!(matches!(
        s.read_chunk(9),
        Err(StoreError::ChunkIndex { index: 9, .. })
    ));
    // Damage on disk is caught on the way out, not forwarded.
    drop(s);
    let part = store.partial_path(&p.sha256);
    fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .write_all_at(b"XX", p.chunk_offset(2) + 5)
        .unwrap();
    let mut s = store.begin(&p).unwrap();
    // Resume re-verified the journal: chunk 2 is missing again, chunk 4 is still staged.
    assert!(!s.has_chunk(2) && s.has_chunk(4));
    assert_eq!(s.read_chunk(4).unwrap(), &chunk(&data, &p, 4)[..]);
}

#[test]
fn pushed_writes_survive_a_dropped_staging() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(4 * 65536, 9);
    let p = describe(&data, 65536);
    let mut s = store.begin(&p).unwrap();
    s.write_chunk(0, &chunk(&data, &p, 0)).unwrap();
    s.write_chunk(1, &chunk(&data, &p, 1)).unwrap();
    // Journaled as they complete, without waiting for more chunks to combine with.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let journal = store.partial_path(&p.sha256).with_extension("journal");
    while fs::metadata(&journal).map_or(0, |m| m.len()) < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "chunks never journaled"
        );
        s.push_writes().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // What a process killed now (no drop, no flush) leaves: the two chunks, journaled.
    let j = fs::read(&journal).unwrap();
    let mut listed: Vec<u32> = j
        .chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, vec![0, 1]);
    drop(s);
    let again = store.begin(&p).unwrap();
    assert_eq!(again.resumed_chunks(), 2);
    assert_eq!(again.missing_chunks(), vec![2, 3]);
}

/// `data` in memory that starts on a page boundary (plus `shift` bytes).
fn page_aligned(data: &[u8], shift: usize) -> bytes::Bytes {
    let mut v = vec![0u8; data.len() + 8192];
    let start = v.as_ptr().align_offset(4096) + shift;
    v[start..start + data.len()].copy_from_slice(data);
    bytes::Bytes::from(v).slice(start..start + data.len())
}

#[test]
fn shared_chunks_are_written_from_their_own_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(3 * 65536 + 100, 11);
    let p = describe(&data, 65536);
    let mut s = store.begin(&p).unwrap();
    // Whole pages on a page boundary: written in place.
    assert!(s
        .write_chunk_shared(0, page_aligned(&chunk(&data, &p, 0), 0))
        .unwrap());
    assert!(s
        .write_chunk_shared(2, page_aligned(&chunk(&data, &p, 2), 0))
        .unwrap());
    // Off a page boundary, or a short last chunk: copied where the file is written O_DIRECT.
    s.write_chunk_shared(1, page_aligned(&chunk(&data, &p, 1), 8))
        .unwrap();
    s.write_chunk_shared(3, page_aligned(&chunk(&data, &p, 3), 0))
        .unwrap();
    // A bad chunk is refused like any other.
    let mut bad = chunk(&data, &p, 1);
    bad[0] ^= 1;
    assert!(s.write_chunk_shared(1, page_aligned(&bad, 0)).is_err());
    let path = s.finish().unwrap();
    assert_eq!(fs::read(path).unwrap(), data);
}

#[test]
fn a_file_that_does_not_match_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = image_bytes(6 * 4096 + 17, 21);
    let p = describe(&data, 4096);
    let mut bad = data.clone();
    bad[4 * 4096 + 5] ^= 0x5a;
    let src = dir.path().join("tampered.bin");
    fs::write(&src, &bad).unwrap();
    assert!(matches!(
        store.stage_file(&p, &src),
        Err(StoreError::Verify(VerifyError::ChunkMismatch {
            index: 4,
            ..
        }))
    ));
    assert_eq!(entries(&dir.path().join("partial")), Vec::<PathBuf>::new());
    assert_eq!(entries(&dir.path().join("images")), Vec::<PathBuf>::new());
    // The right file stages from scratch.
    fs::write(&src, &data).unwrap();
    let report = store.stage_file(&p, &src).unwrap();
    assert_eq!((report.resumed, report.fetched), (0, 7));
    assert!(store.contains(&p));
}
