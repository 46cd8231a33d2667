//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from `entente_fuzz::seeds`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`. Checks first that every seed is
//! accepted by the parser it is for, so the corpus starts the fuzzer on valid inputs.

use entente_agent::config::Config;
use entente_agent::control::parse_request;
use entente_fastpath::frame::decode_frame;
use entente_fuzz::{seeds, Seed, TARGETS};
use entente_stage::{Manifest, Signature};
use std::path::{Path, PathBuf};

fn check(s: &Seed) -> Result<(), String> {
    match s.target {
        "control_request" => parse_request(&s.bytes).map(drop).map_err(|(_, why)| why),
        "proto_decode" => entente_proto::wire::decode(&s.bytes)
            .map(drop)
            .map_err(|e| format!("{e:?}")),
        "frame_decode" => decode_frame(&s.bytes).map(drop).map_err(|e| e.to_string()),
        "manifest" if s.name.ends_with(".sig") => {
            let text = std::str::from_utf8(&s.bytes).map_err(|e| e.to_string())?;
            Signature::parse(text, Path::new(s.name))
                .map(drop)
                .map_err(|e| e.to_string())
        }
        "manifest" => Manifest::from_canonical_bytes(&s.bytes)
            .map(drop)
            .map_err(|e| e.to_string()),
        "config" => {
            let text = std::str::from_utf8(&s.bytes).map_err(|e| e.to_string())?;
            let layers: Vec<(PathBuf, String)> = text
                .split('\0')
                .map(|t| (PathBuf::from(s.name), t.to_owned()))
                .collect();
            Config::from_layers(&layers)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        "statement" => {
            let text = std::str::from_utf8(&s.bytes).map_err(|e| e.to_string())?;
            entente_stage::SignedStatement::parse(text)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        other => Err(format!("no target {other}")),
    }
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = seeds();
    for t in TARGETS {
        assert!(seeds.iter().any(|s| s.target == t), "no seed for {t}");
        let dir = corpus.join(t);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
    }
    for s in &seeds {
        if let Err(why) = check(s) {
            panic!("seed {}/{} is refused: {why}", s.target, s.name);
        }
        let path = corpus.join(s.target).join(s.name);
        std::fs::write(&path, &s.bytes).expect("write a seed");
        println!("{} ({} bytes)", path.display(), s.bytes.len());
    }
}
