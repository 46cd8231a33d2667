//! Fuzzes the operator statement parser (`entente_stage::SignedStatement::parse`), which reads
//! lines from the control socket and from neighbours: any bytes give a statement or a typed
//! error, never a panic; a statement it accepts is in its one canonical form (written again, it
//! is the same line) and is checked without panicking against a fixed key and clock.
#![no_main]

use entente_stage::statement::SignedStatement;
use entente_stage::{SecretKey, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = SignedStatement::parse(line) {
        assert_eq!(s.to_line(), line, "accepted a non-canonical line");
        let mut keys = TrustedKeys::new();
        keys.add(SecretKey::from_seed([7; 32]).public());
        let _ = s.check(&[0xc1; 8], &keys, 1_800_000_000_000, 0);
    }
});
