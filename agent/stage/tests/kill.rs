//! A staging process killed (SIGKILL) at 50 random moments never leaves a visible partial
//! image, and a restarted staging resumes from the chunks already verified.

use entente_stage::{CompatWindow, ProfileImage};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SEED: u64 = 0x5eed_2026;
const KILLS: usize = 50;
const CHUNK: u32 = 8 * 1024;
const CHUNKS: usize = 256;
const DELAY_US: &str = "400";
/// Store buffers of 64 KiB: eight chunks per write, so progress is journaled often.
const BUFFER_KIB: &str = "64";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Run {
    resumed: Option<u32>,
    fetched: Option<u32>,
}

fn parse(out: &str) -> Run {
    let mut run = Run {
        resumed: None,
        fetched: None,
    };
    for line in out.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        match w[..] {
            ["resumed", n] => run.resumed = n.parse().ok(),
            ["done", "fetched", n, ..] => run.fetched = n.parse().ok(),
            _ => {}
        }
    }
    run
}

fn worker(data: &Path, image_json: &Path, src: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stage-worker"));
    c.arg(data)
        .arg(image_json)
        .arg(src)
        .arg(DELAY_US)
        .arg(BUFFER_KIB)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// Only the complete, correct image may ever be under `images/`.
fn assert_no_visible_partial(images: &Path, expected: &Path, data: &[u8], ctx: &str) {
    // A worker killed before it opened the store left no `images/` at all: nothing is visible.
    let entries = match fs::read_dir(images) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("{ctx}: reading {}: {e}", images.display()),
    };
    for e in entries {
        let p = e.unwrap().path();
        assert_eq!(p, expected, "{ctx}: unexpected file under images/");
        assert!(
            fs::read(&p).unwrap() == data,
            "{ctx}: visible image is not the exact image"
        );
    }
}

#[test]
fn killed_stagings_never_leave_a_visible_partial_image_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(SEED);
    let data: Vec<u8> = (0..CHUNKS * CHUNK as usize)
        .map(|_| rng.next() as u8)
        .collect();
    let src = dir.path().join("image.bin");
    fs::write(&src, &data).unwrap();
    let image = ProfileImage::from_reader(
        &data[..],
        CHUNK,
        "1",
        CompatWindow {
            min_epoch: 0,
            max_epoch: 1,
        },
    )
    .unwrap();
    let image_json = dir.path().join("image.json");
    fs::write(&image_json, serde_json::to_vec(&image).unwrap()).unwrap();
    let store = dir.path().join("store");
    let images = store.join("images");
    let final_path = images.join(image.sha256.to_hex());
    let total = CHUNKS as u32;

    // Calibrate: how long one uninterrupted staging takes on this machine and build.
    let t0 = std::time::Instant::now();
    let out = worker(&dir.path().join("calibrate"), &image_json, &src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let full_us = t0.elapsed().as_micros() as u64;

    let (mut resumed_with_progress, mut completed_resumes, mut killed_midway) = (0, 0, 0);
    for kill in 0..KILLS {
        let ctx = format!("seed {SEED:#x} kill {kill}");
        // Kill anywhere in the run, and now and then after it.
        let after = Duration::from_micros(rng.next() % (full_us * 11 / 10));
        let mut child = worker(&store, &image_json, &src).spawn().unwrap();
        std::thread::sleep(after);
        let _ = child.kill(); // SIGKILL; the worker may already have finished.
        child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let run = parse(&out);

        assert_no_visible_partial(&images, &final_path, &data, &ctx);
        if let Some(r) = run.resumed {
            if r > 0 {
                resumed_with_progress += 1;
            }
            if let Some(f) = run.fetched {
                // A completed run read exactly the chunks it did not find staged.
                assert_eq!(r + f, total, "{ctx}: resumed {r} + fetched {f}");
                if r > 0 {
                    completed_resumes += 1;
                }
            }
        }
        if run.fetched.is_none() && !final_path.exists() {
            killed_midway += 1;
        }
        if final_path.exists() {
            // Start the next round from nothing.
            fs::remove_file(&final_path).unwrap();
        }
    }

    // Finish whatever the last kill left, without killing.
    let out = worker(&store, &image_json, &src).output().unwrap();
    assert!(out.status.success());
    let run = parse(&String::from_utf8_lossy(&out.stdout));
    let (r, f) = (run.resumed.unwrap(), run.fetched.unwrap());
    assert_eq!(r + f, total);
    assert_eq!(fs::read(&final_path).unwrap(), data);
    assert_no_visible_partial(&images, &final_path, &data, "final run");
    assert!(fs::read_dir(store.join("partial"))
        .unwrap()
        .next()
        .is_none());

    eprintln!(
        "{KILLS} kills: {killed_midway} mid-staging, {resumed_with_progress} restarts found progress, \
         {completed_resumes} resumed runs completed"
    );
    assert!(
        killed_midway >= KILLS / 5,
        "too few kills landed mid-staging: {killed_midway}"
    );
    assert!(
        resumed_with_progress >= 5,
        "too few restarts resumed: {resumed_with_progress}"
    );
    assert!(
        completed_resumes >= 2,
        "too few resumed runs completed: {completed_resumes}"
    );
}
