//! Decodes arbitrary bytes; whatever decodes must re-encode to a message that decodes to itself.

#![no_main]

use entente_proto::wire::{decode, encoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode(data) {
        let bytes = encoded(&msg);
        assert_eq!(decode(&bytes), Ok(msg), "round trip changed the message");
        assert_eq!(bytes, data, "decoder accepted a non-canonical encoding");
    }
});
