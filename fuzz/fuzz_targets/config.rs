//! Fuzzes the agent's configuration loader without files (`Config::from_layers`): the input,
//! split at NUL bytes into up to four layers (a main file and its drop-ins), gives validated
//! settings or a `ConfigError` naming a file, never a panic. Accepted settings satisfy the
//! invariants the validation promises, and loading the same layers twice gives the same answer.
#![no_main]

use entente_agent::config::{Config, ConfigError, FanoutStrategy};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn load(layers: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
    Config::from_layers(layers)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let layers: Vec<(PathBuf, String)> = text
        .splitn(4, '\0')
        .enumerate()
        .map(|(i, t)| (PathBuf::from(format!("entented.d/{i}.toml")), t.to_owned()))
        .collect();
    let first = load(&layers);
    let again = load(&layers);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    match first {
        Ok(c) => {
            assert_ne!(c.node_id, 0);
            assert!(c.peers.iter().all(|p| p.id != 0 && p.id != c.node_id));
            assert!((1..=60_000).contains(&c.transport.rtt_ms));
            assert!(c.fanout.max_mib_per_s.is_finite() && c.fanout.max_mib_per_s >= 0.0);
            if c.fanout.strategy == FanoutStrategy::PullOne {
                assert!(c.fanout.source.is_some());
            }
            assert!(c.policy.max_unavailable_neighbors >= 1);
            assert!(c.source.is_none());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
