//! Fuzzes the control socket's request parser (`entente_agent::control::parse_request`): any
//! request line gives a request or a `BadRequest` with its reason, never a panic, and a request
//! it accepts, written again as an envelope of this API version, parses to itself.
#![no_main]

use entente_agent::control::parse_request;
use entente_api::{Envelope, ErrorCode, API_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            let line = serde_json::to_vec(&Envelope {
                api: API_VERSION,
                request: request.clone(),
            })
            .expect("requests serialise");
            assert_eq!(
                parse_request(&line),
                Ok(request),
                "round trip changed the request"
            );
        }
        Err((code, why)) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(!why.is_empty());
        }
    }
});
