//! The line-controller frame decoder (COBS + postcard + CRC-32C) on any bytes; the first two
//! bytes pick which bit of a valid frame the corruption check flips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use screenline_core::invariants::controller_stream;

fuzz_target!(|data: &[u8]| {
    let (flip, bytes) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    if let Err(e) = controller_stream(bytes, flip) {
        panic!("{e}");
    }
});
