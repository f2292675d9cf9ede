//! What the line's two byte-stream decoders promise for *any* input, as checks that the fuzz
//! targets (`appliance/fuzz`, `cargo fuzz`) and the bounded property test in CI both run:
//! nothing panics; how the bytes are split into reads does not change the result; no record
//! exceeds the limit; and after any garbage the stream resynchronises on the next delimiter.
//! A check returns a description of the broken promise, so the caller decides how to fail.

use crate::domain::WaybillNo;
use crate::waybill::{parse_record, Framed, Framer, Framing, MAX_RECORD};
use screenline_protocol::{encode_frame, FrameDecoder, ToAppliance, MAX_FRAME_LEN};

/// The date the fuzzers check resident IDs against: fixed, so a failure replays.
pub const TODAY: (u32, u32, u32) = (2026, 6, 1);

/// Feeds `bytes` to a waybill-reader framer whole and in the chunks `cuts` marks (offsets,
/// any order, out-of-range ones ignored), parses every record, then checks that a valid
/// record after a delimiter comes out intact.
pub fn reader_stream(framing: Framing, bytes: &[u8], cuts: &[usize]) -> Result<(), String> {
    let mut whole = Framer::new(framing);
    let all = whole.push(bytes);
    let mut chunked = Framer::new(framing);
    let mut pieces = Vec::new();
    let mut offsets: Vec<usize> = cuts.iter().copied().filter(|c| *c < bytes.len()).collect();
    offsets.sort_unstable();
    let mut start = 0;
    for cut in offsets.into_iter().chain([bytes.len()]) {
        pieces.extend(chunked.push(&bytes[start..cut]));
        start = cut;
    }
    if pieces != all {
        return Err(format!(
            "splitting the input changed the records: {all:?} vs {pieces:?}"
        ));
    }
    for item in &all {
        if let Framed::Record(text) = item {
            if text.len() > MAX_RECORD {
                return Err(format!("a record of {} bytes passed the limit", text.len()));
            }
            if let Ok(r) = parse_record(text, TODAY) {
                WaybillNo::parse(r.waybill.waybill.as_str())
                    .map_err(|e| format!("an accepted record has a bad waybill number: {e}"))?;
            }
        }
    }
    let tail: &[u8] = match framing {
        Framing::Line => b"\nSF12345678\r\n",
        Framing::StxEtx => b"\x02SF12345678\x03",
    };
    let after = whole.push(tail);
    match after.iter().rev().find(|i| matches!(i, Framed::Record(_))) {
        Some(Framed::Record(r)) if r == "SF12345678" => Ok(()),
        other => Err(format!(
            "no resynchronisation after the input: {other:?} ({after:?})"
        )),
    }
}

/// Feeds `bytes` to the line-controller frame decoder, then checks that a frame after a
/// delimiter decodes intact, and that a copy of it with the bit `flip` (modulo its length)
/// inverted never decodes to a different message.
pub fn controller_stream(bytes: &[u8], flip: usize) -> Result<(), String> {
    let mut decoder = FrameDecoder::<{ MAX_FRAME_LEN * 2 }>::new();
    for &b in bytes {
        if let Some(Ok(frame)) = decoder.push::<ToAppliance>(b) {
            // Whatever came out must be a message that encodes again.
            let mut out = [0u8; MAX_FRAME_LEN];
            encode_frame(frame.seq, &frame.msg, &mut out)
                .map_err(|e| format!("a decoded frame does not encode again: {e}"))?;
        }
    }
    let msg = ToAppliance::ParcelEntered {
        epoch: screenline_protocol::Epoch::new(0x5eed),
        seq: 77,
        encoder: 123_456,
        uptime_ms: 9_000,
    };
    let mut frame = [0u8; MAX_FRAME_LEN];
    let n = encode_frame(4242, &msg, &mut frame).map_err(|e| format!("encode: {e}"))?;
    let mut got = None;
    for &b in std::iter::once(&0u8).chain(&frame[..n]) {
        if let Some(r) = decoder.push::<ToAppliance>(b) {
            got = Some(r);
        }
    }
    match got {
        Some(Ok(f)) if f.msg == msg && f.seq == 4242 => {}
        other => return Err(format!("no resynchronisation after the input: {other:?}")),
    }
    let bit = flip % ((n - 1) * 8);
    let mut bad = frame;
    bad[bit / 8] ^= 1 << (bit % 8);
    let mut decoder = FrameDecoder::<{ MAX_FRAME_LEN * 2 }>::new();
    for &b in &bad[..n] {
        if let Some(Ok(f)) = decoder.push::<ToAppliance>(b) {
            if f.msg != msg || f.seq != 4242 {
                return Err(format!("bit {bit} flipped and the frame decoded as {f:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The bounded property test: the fuzz targets' checks over generated inputs — random
    //! bytes, and valid records and frames cut, spliced and corrupted — a fixed number of
    //! cases from a fixed seed, so CI replays the same cases in about a second.

    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const CASES: usize = 20_000;

    fn valid_record(rng: &mut ChaCha8Rng) -> Vec<u8> {
        let json = format!(
            r#"{{"waybill":"SF{:013}","sender":{{"name":"张三","id_type":"resident_id","id_number":"11010519491231002X","phone":"13800138000","address":"北京"}},"declared":{{"goods":"鞋","category":"apparel","value_cny":{}.5,"quantity":{}}}}}"#,
            rng.gen_range(0..10_000_000_000_000u64),
            rng.gen_range(0..2000),
            rng.gen_range(0..5),
        );
        if rng.gen_bool(0.5) {
            json.into_bytes()
        } else {
            format!("YT{:010}", rng.gen_range(0..10_000_000_000u64)).into_bytes()
        }
    }

    /// A stream of records, delimiters, garbage, oversized runs and corruption.
    fn reader_input(rng: &mut ChaCha8Rng, framing: Framing) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rng.gen_range(0..6) {
            match rng.gen_range(0..6) {
                0 => out.extend((0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>())),
                1 => out.extend(std::iter::repeat_n(b'A', rng.gen_range(4000..4200))),
                2 => {
                    let mut r = valid_record(rng);
                    let len = r.len();
                    for _ in 0..rng.gen_range(1..4) {
                        r[rng.gen_range(0..len)] = rng.gen();
                    }
                    out.extend(r);
                }
                3 => {
                    let r = valid_record(rng);
                    out.extend(&r[..rng.gen_range(0..r.len())]);
                }
                _ => {
                    let r = valid_record(rng);
                    match framing {
                        Framing::Line => {
                            out.extend(r);
                            out.extend(b"\r\n");
                        }
                        Framing::StxEtx => {
                            out.push(0x02);
                            out.extend(r);
                            out.push(0x03);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_reader_framer_and_parser_keep_their_promises_on_generated_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
        for case in 0..CASES {
            let framing = if case % 2 == 0 {
                Framing::Line
            } else {
                Framing::StxEtx
            };
            let bytes = reader_input(&mut rng, framing);
            let cuts: Vec<usize> = (0..rng.gen_range(0..5))
                .map(|_| rng.gen_range(0..=bytes.len()))
                .collect();
            if let Err(e) = reader_stream(framing, &bytes, &cuts) {
                panic!(
                    "case {case} ({framing:?}, {} bytes {bytes:?}): {e}",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn the_controller_decoder_keeps_its_promises_on_generated_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0002);
        for case in 0..CASES {
            let mut bytes = Vec::new();
            for _ in 0..rng.gen_range(0..5) {
                if rng.gen_bool(0.5) {
                    bytes.extend((0..rng.gen_range(0..200)).map(|_| rng.gen::<u8>()));
                } else {
                    // A valid frame, possibly truncated or with a byte changed.
                    let mut f = [0u8; MAX_FRAME_LEN];
                    let msg = ToAppliance::Heartbeat {
                        uptime_ms: rng.gen(),
                        belt_mm_per_s: rng.gen_range(0..4000),
                    };
                    let n = encode_frame(rng.gen(), &msg, &mut f).expect("encode");
                    let keep = if rng.gen_bool(0.3) {
                        rng.gen_range(0..n)
                    } else {
                        n
                    };
                    if rng.gen_bool(0.3) {
                        f[rng.gen_range(0..n)] = rng.gen();
                    }
                    bytes.extend(&f[..keep]);
                }
            }
            if let Err(e) = controller_stream(&bytes, rng.gen()) {
                panic!("case {case} ({bytes:?}): {e}");
            }
        }
    }
}
