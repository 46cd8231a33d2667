//! `stage-worker`: stages one image into a store, for the kill test and the staging benchmark.
//!
//! `stage-worker DATA_DIR IMAGE_JSON SOURCE DELAY_US [BUFFER_KIB]`
//!
//! `IMAGE_JSON` is a [`ProfileImage`] as JSON, `SOURCE` the image file. The worker prints
//! `resumed N` once staging has begun (N chunks found already staged), reads each missing chunk
//! from `SOURCE`, sleeping `DELAY_US` microseconds before each, and prints
//! `done fetched M secs S vmhwm_kib K` when the image is in the store. `BUFFER_KIB` sets the
//! store's buffer size (default: the store's default).

use entente_stage::{ProfileImage, Store, StoreConfig};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (data, image, source, delay, buffer_kib) = match &args[..] {
        [d, i, s, t] => (d, i, s, t, None),
        [d, i, s, t, b] => (d, i, s, t, b.parse::<usize>().ok()),
        _ => {
            eprintln!("usage: stage-worker DATA_DIR IMAGE_JSON SOURCE DELAY_US [BUFFER_KIB]");
            return ExitCode::from(2);
        }
    };
    let mut cfg = StoreConfig::default();
    if let Some(kib) = buffer_kib {
        cfg.buffer_size = kib * 1024;
    }
    match run(
        Path::new(data),
        Path::new(image),
        Path::new(source),
        delay.parse().unwrap_or(0),
        cfg,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stage-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    data: &Path,
    image: &Path,
    source: &Path,
    delay_us: u64,
    cfg: StoreConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    let image: ProfileImage = serde_json::from_slice(&std::fs::read(image)?)?;
    let src = std::fs::File::open(source)?;
    let start = Instant::now();
    let store = Store::with_config(data, cfg)?;
    let mut staging = store.begin(&image)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "resumed {}", staging.resumed_chunks())?;
    out.flush()?;
    let mut buf = vec![0u8; image.chunk_size as usize];
    let mut fetched = 0u32;
    for i in staging.missing_chunks() {
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
        let chunk = &mut buf[..image.chunk_len(i)];
        src.read_exact_at(chunk, image.chunk_offset(i))?;
        staging.write_chunk(i, chunk)?;
        fetched += 1;
    }
    staging.finish()?;
    let secs = start.elapsed().as_secs_f64();
    writeln!(
        out,
        "done fetched {fetched} secs {secs:.6} vmhwm_kib {}",
        vm_hwm_kib()
    )?;
    out.flush()?;
    Ok(())
}

/// Peak resident set size of this process, from `/proc/self/status`.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
