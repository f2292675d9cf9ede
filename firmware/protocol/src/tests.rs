//! Round trips, corruption, truncation, overflow, version refusal, and random streams.

extern crate std;
use super::*;
use proptest::prelude::*;
use std::vec::Vec;

fn config() -> ControllerConfig {
    ControllerConfig::UNCONFIGURED
}

fn epoch(n: u32) -> Epoch {
    Epoch::new(n).expect("non-zero")
}

fn to_controller() -> Vec<ToController> {
    std::vec![
        ToController::Hello {
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: 0
        },
        ToController::Epoch {
            epoch: epoch(u32::MAX)
        },
        ToController::Decision {
            epoch: epoch(u32::MAX),
            seq: u32::MAX,
            verdict: Verdict::Divert
        },
        ToController::Decision {
            epoch: epoch(1),
            seq: 7,
            verdict: Verdict::Pass
        },
        ToController::Heartbeat { uptime_ms: 123_456 },
        ToController::StackLight {
            light: StackLight::Amber
        },
        ToController::Configure(config()),
    ]
}

fn to_appliance() -> Vec<ToAppliance> {
    std::vec![
        ToAppliance::Hello {
            firmware: [0, 1, 0],
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: 0
        },
        ToAppliance::ParcelEntered {
            epoch: Some(epoch(u32::MAX)),
            seq: u32::MAX,
            encoder: u32::MAX,
            uptime_ms: u32::MAX
        },
        ToAppliance::ParcelEntered {
            epoch: None,
            seq: 1,
            encoder: 0,
            uptime_ms: 5
        },
        ToAppliance::ParcelDiverted { seq: 1, encoder: 4 },
        ToAppliance::ParcelPassed { seq: 2, encoder: 9 },
        ToAppliance::FailSafeDivert {
            seq: 3,
            reason: FailSafeReason::HeartbeatLost
        },
        ToAppliance::Heartbeat {
            uptime_ms: 1,
            belt_mm_per_s: 2000
        },
        ToAppliance::FailSafeDivert {
            seq: 4,
            reason: FailSafeReason::NoEpoch
        },
        ToAppliance::FailSafeDivert {
            seq: 5,
            reason: FailSafeReason::EpochChanged
        },
        ToAppliance::Fault {
            code: FaultCode::QueueOverflow
        },
        ToAppliance::StaleDecision {
            epoch: epoch(u32::MAX),
            seq: u32::MAX
        },
    ]
}

fn encode<M: Serialize>(seq: u16, m: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = encode_frame(seq, m, &mut buf).expect("fits");
    buf[..n].to_vec()
}

fn decode_all<M: DeserializeOwned>(bytes: &[u8]) -> Vec<Result<Frame<M>, FrameError>> {
    let mut d = FrameDecoder::<{ MAX_FRAME_LEN * 2 }>::new();
    bytes.iter().filter_map(|b| d.push::<M>(*b)).collect()
}

/// Each of `msgs` fits a frame whose only zero byte is the delimiter, and decodes to
/// itself under its sequence number.
fn round_trips<M>(msgs: Vec<M>)
where
    M: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug,
{
    for (i, m) in msgs.into_iter().enumerate() {
        let bytes = encode(i as u16, &m);
        assert!(bytes.len() <= MAX_FRAME_LEN);
        assert_eq!(
            bytes.iter().filter(|b| **b == 0).count(),
            1,
            "only the delimiter is zero"
        );
        let got = decode_all::<M>(&bytes);
        assert_eq!(
            got,
            std::vec![Ok(Frame {
                version: PROTOCOL_MAJOR,
                seq: i as u16,
                msg: m
            })]
        );
    }
}

#[test]
fn every_message_round_trips() {
    round_trips(to_controller());
    round_trips(to_appliance());
}

#[test]
fn a_corrupted_frame_is_rejected_and_the_next_one_decodes() {
    let m = ToController::Decision {
        epoch: epoch(0x5eed),
        seq: 42,
        verdict: Verdict::Pass,
    };
    let mut bytes = encode(1, &m);
    bytes[3] ^= 0x40;
    if bytes[3] == 0 {
        bytes[3] = 0x7f;
    }
    bytes.extend(encode(2, &m));
    let got = decode_all::<ToController>(&bytes);
    assert_eq!(got.len(), 2);
    assert!(matches!(
        got[0],
        Err(FrameError::Crc) | Err(FrameError::Cobs)
    ));
    assert_eq!(
        got[1],
        Ok(Frame {
            version: PROTOCOL_MAJOR,
            seq: 2,
            msg: m
        })
    );
}

#[test]
fn a_truncated_frame_is_rejected() {
    let m = ToAppliance::ParcelEntered {
        epoch: Some(epoch(3)),
        seq: 9,
        encoder: 1000,
        uptime_ms: 10,
    };
    let full = encode(0, &m);
    let mut bytes = full[..full.len() / 2].to_vec();
    bytes.push(0);
    bytes.extend(&full);
    let got = decode_all::<ToAppliance>(&bytes);
    assert!(got[0].is_err());
    assert_eq!(got[1].as_ref().map(|f| f.msg), Ok(m));
}

#[test]
fn an_overlong_frame_is_dropped_and_counted() {
    let mut d = FrameDecoder::<16>::new();
    let mut results = Vec::new();
    for b in [7u8; 40]
        .iter()
        .chain(&[0u8])
        .chain(&encode(3, &ToController::Heartbeat { uptime_ms: 1 }))
    {
        if let Some(r) = d.push::<ToController>(*b) {
            results.push(r);
        }
    }
    assert_eq!(results[0], Err(FrameError::Overflow));
    assert!(results[1].is_ok());
    assert_eq!(d.stats().overflow, 1);
    assert_eq!(d.stats().frames, 1);
}

/// A frame built by hand from a header and a message body, with a valid checksum: what a
/// peer of any protocol generation puts on the wire.
fn raw_frame(version: u8, message: &[u8]) -> Vec<u8> {
    let mut body = [0u8; 48];
    let h = postcard::to_slice(&Header { version, seq: 0 }, &mut body)
        .expect("fits")
        .len();
    body[h..h + message.len()].copy_from_slice(message);
    let n = h + message.len();
    let crc = CRC32C.checksum(&body[..n]);
    body[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let mut out = [0u8; 64];
    let len = cobs::encode(&body[..n + 4], &mut out).expect("fits");
    let mut bytes = out[..len].to_vec();
    bytes.push(0);
    bytes
}

#[test]
fn another_major_version_is_refused() {
    for version in [1, PROTOCOL_MAJOR + 1] {
        let mut msg = [0u8; 16];
        let m = postcard::to_slice(&ToController::Heartbeat { uptime_ms: 1 }, &mut msg)
            .expect("fits")
            .len();
        assert_eq!(
            decode_all::<ToController>(&raw_frame(version, &msg[..m])),
            std::vec![Err(FrameError::Version { got: version })]
        );
    }
}

#[test]
fn a_protocol_1_decision_without_an_epoch_is_refused_by_version() {
    // Protocol 1's `Decision { seq: 7, verdict: Pass }`: variant 1, varint 7, variant 0.
    // Under protocol 2 those bytes would read as another message; the header's version is
    // what keeps a decision without an epoch from ever reaching the controller's logic.
    let v1_decision = [1u8, 7, 0];
    assert_eq!(
        decode_all::<ToController>(&raw_frame(1, &v1_decision)),
        std::vec![Err(FrameError::Version { got: 1 })]
    );
}

#[test]
fn a_zero_epoch_does_not_decode() {
    let mut msg = [0u8; 16];
    // `ToController::Epoch { epoch }` with the epoch's varint forced to zero.
    let m = postcard::to_slice(&ToController::Epoch { epoch: epoch(1) }, &mut msg)
        .expect("fits")
        .len();
    assert_eq!(&msg[..m], &[1, 1], "variant 1, varint 1");
    msg[1] = 0;
    assert_eq!(
        decode_all::<ToController>(&raw_frame(PROTOCOL_MAJOR, &msg[..m])),
        std::vec![Err(FrameError::Decode)]
    );
    // The same for a decision and a parcel's entry.
    let decision = [2u8, 0, 7, 0];
    assert_eq!(
        decode_all::<ToController>(&raw_frame(PROTOCOL_MAJOR, &decision)),
        std::vec![Err(FrameError::Decode)]
    );
    let entered = [1u8, 1, 0, 7, 0, 0];
    assert_eq!(
        decode_all::<ToAppliance>(&raw_frame(PROTOCOL_MAJOR, &entered)),
        std::vec![Err(FrameError::Decode)]
    );
    assert_eq!(Epoch::new(0), None);
    assert_eq!(Epoch::new(9).map(Epoch::get), Some(9));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_all::<ToController>(&bytes);
        let _ = decode_all::<ToAppliance>(&bytes);
    }

    #[test]
    fn after_garbage_the_next_frame_decodes(
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        seq in any::<u32>(),
    ) {
        let m = ToController::Decision { epoch: epoch(seq | 1), seq, verdict: Verdict::Divert };
        let mut bytes = garbage;
        bytes.push(0);
        bytes.extend(encode(5, &m));
        let got = decode_all::<ToController>(&bytes);
        prop_assert_eq!(got.last().cloned(), Some(Ok(Frame { version: PROTOCOL_MAJOR, seq: 5, msg: m })));
    }

    #[test]
    fn corrupting_a_stream_loses_at_most_the_frames_hit(
        flips in proptest::collection::vec((0usize..400, 1u8..=255), 1..4),
    ) {
        let msgs: Vec<ToAppliance> = (0..20).map(|i| ToAppliance::ParcelEntered { epoch: Epoch::new(i), seq: i, encoder: i * 100, uptime_ms: i }).collect();
        let frames: Vec<Vec<u8>> = msgs.iter().enumerate().map(|(i, m)| encode(i as u16, m)).collect();
        let mut bytes: Vec<u8> = frames.concat();
        let mut hit = std::collections::BTreeSet::new();
        for (pos, x) in flips {
            let pos = pos % bytes.len();
            bytes[pos] ^= x;
            let mut acc = 0;
            for (k, f) in frames.iter().enumerate() {
                if pos < acc + f.len() { hit.insert(k); if pos == acc + f.len() - 1 { hit.insert(k + 1); } break; }
                acc += f.len();
            }
        }
        let ok: Vec<ToAppliance> = decode_all::<ToAppliance>(&bytes).into_iter().filter_map(|r| r.ok().map(|f| f.msg)).collect();
        // Every frame not hit still decodes, and nothing that was not sent appears.
        for (k, m) in msgs.iter().enumerate() {
            if !hit.contains(&k) { prop_assert!(ok.contains(m), "frame {} lost", k); }
        }
        for m in &ok { prop_assert!(msgs.contains(m)); }
    }
}
