//! The waybill reader's framer and payload parser, both framings, on any bytes: the first
//! byte picks the framing and how the rest is cut into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use screenline_core::invariants::reader_stream;
use screenline_core::waybill::Framing;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let framing = if first & 1 == 0 {
        Framing::Line
    } else {
        Framing::StxEtx
    };
    let step = usize::from(first >> 1) + 1;
    let cuts: Vec<usize> = (step..bytes.len()).step_by(step).collect();
    if let Err(e) = reader_stream(framing, bytes, &cuts) {
        panic!("{e}");
    }
});
