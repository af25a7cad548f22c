//! Arbitrary bytes through the frame decoder and the payload parser: no panic, no allocation of an
//! announced size, and every payload that parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sseloop::frame::{parse, FrameDecoder, OwnedPayload, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(64 * 1024);
    let mut start = 0;
    while start <= data.len() {
        match decoder.decode(&data[start..]) {
            Ok(Some(frame)) => {
                assert!(frame.frame_len() >= HEADER_LEN);
                let payload = &data[start..][frame.payload_range()];
                if let Ok(message) = parse(payload) {
                    let owned = OwnedPayload::from(message);
                    let mut again = Vec::new();
                    owned.encode_frame(&mut again).expect("a parsed payload re-encodes");
                    assert_eq!(&again[HEADER_LEN..], payload, "re-encoding differs");
                }
                start += frame.frame_len();
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The parser alone, on the raw bytes as a payload.
    let _ = parse(data);
});
