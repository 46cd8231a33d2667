//! Fuzzes the fastpath frame decoder: any bytes give a typed result, never a panic, and whatever
//! decodes keeps its bytes. A second pass repairs the checksum first, so the fuzzer reaches the
//! field checks behind it.
#![no_main]

use entente_fastpath::frame::{decode_frame, FrameHeader, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let _ = FrameHeader::decode(data);
    if let Ok((h, payload)) = decode_frame(data) {
        assert_eq!(payload.len(), h.len());
        assert_eq!(&data[..HEADER_LEN], h.bytes());
        assert!(h.verify_payload(payload).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed[12..16].fill(0);
        let payload_sum = fixed[6] & 1 == 0;
        let mut sum = crc32c::crc32c(&fixed[..HEADER_LEN]);
        if payload_sum {
            sum = crc32c::crc32c_append(sum, &fixed[HEADER_LEN..]);
        }
        fixed[12..16].copy_from_slice(&sum.to_le_bytes());
        check(&fixed);
    }
});
