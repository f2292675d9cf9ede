//! The line-controller protocol, shared by the firmware and the appliance.
//!
//! Every frame is `COBS( postcard(header) ‖ postcard(message) ‖ CRC-32C )` followed by one
//! `0x00` delimiter. COBS keeps `0x00` out of the frame, so a receiver that lost bytes
//! resynchronises at the next delimiter; the CRC-32C (Castagnoli) rejects corrupted and
//! truncated frames; the header carries the protocol's major version and a sequence number.
//! A frame of another major version is refused: that is the version handshake's hard edge.
//!
//! Protocol 2 names each parcel by its controller *epoch* and sequence number: after every
//! hello the appliance hands the controller a fresh [`Epoch`], the controller stamps each
//! parcel with the epoch in force when it entered, and a decision names both. Sequence
//! numbers restart at 1 when the controller reboots; the epoch is what keeps a decision meant
//! for parcel 7 of the last boot from deciding parcel 7 of this one.
//!
//! `no_std`, no allocation: the firmware uses it as is.
#![no_std]
#![deny(unsafe_code, missing_docs)]

mod cobs;

use core::num::NonZeroU32;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Protocol major version: frames of another major version are refused.
pub const PROTOCOL_MAJOR: u8 = 2;
/// Protocol minor version: additions that older peers may ignore.
pub const PROTOCOL_MINOR: u8 = 0;
/// Longest encoded frame including the 0x00 delimiter.
pub const MAX_FRAME_LEN: usize = 64;
/// Longest frame body before COBS (header, message, CRC).
const MAX_BODY_LEN: usize = MAX_FRAME_LEN - 2 - MAX_FRAME_LEN / 254;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// One session between the appliance and a controller boot, named by the appliance (the
/// board has no random source of its own). Never zero: a frame that carries a zero epoch
/// does not decode, so "no epoch" can only be said as `Option::None`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(NonZeroU32);

impl Epoch {
    /// The epoch `n`, or `None` for zero.
    pub const fn new(n: u32) -> Option<Epoch> {
        match NonZeroU32::new(n) {
            Some(n) => Some(Epoch(n)),
            None => None,
        }
    }

    /// Its number.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl core::fmt::Display for Epoch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:08x}", self.0.get())
    }
}

/// What the controller does with a parcel at the diverter.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it pass to the exit.
    Pass,
    /// Divert it to the reject (inspection) lane.
    Divert,
}

/// Why the controller diverted a parcel on its own.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailSafeReason {
    /// No decision had arrived when the parcel reached the decision point.
    DecisionLate,
    /// The appliance's heartbeat is lost.
    HeartbeatLost,
    /// The tracking queue was full when the parcel entered.
    QueueFull,
    /// The parcel entered before the appliance had given this boot an epoch, so no decision
    /// can name it (since protocol 2).
    NoEpoch,
    /// The appliance gave a new epoch while the parcel was undecided: its decision, named by
    /// the old epoch, will be refused (since protocol 2).
    EpochChanged,
}

/// The stack light's state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackLight {
    /// All off.
    Off,
    /// Running normally.
    Green,
    /// Diverting to manual inspection on its own (fail-safe, no appliance).
    Amber,
    /// Fault: the line needs a technician.
    Red,
}

/// Faults the controller reports.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    /// More parcels on the belt than the tracking queue holds.
    QueueOverflow,
    /// The diverter's output could not be driven.
    DiverterFeedback,
    /// The photo-eye has been blocked over more belt than the eye-to-gate distance: a jam,
    /// or a dirty or misaligned sensor.
    PhotoEyeBlocked,
}

/// What the controller does when it cannot know a parcel's verdict.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailSafePolicy {
    /// Divert every undecided parcel to manual inspection.
    DivertUndecided,
}

/// The controller's runtime configuration, in encoder counts and milliseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// From the photo-eye to the diverter gate.
    pub eye_to_gate_counts: u32,
    /// How long the gate stays energised for one parcel.
    pub gate_width_counts: u32,
    /// How long a photo-eye level must hold to count.
    pub debounce_counts: u32,
    /// How far before the gate the decision must have arrived.
    pub decision_margin_counts: u32,
    /// Silence from the appliance after which it counts as lost.
    pub heartbeat_timeout_ms: u32,
    /// What to do with parcels without a verdict.
    pub fail_safe: FailSafePolicy,
}

impl ControllerConfig {
    /// What a controller runs on until the appliance configures its line: a 1 count/mm
    /// encoder, 5 m from the photo-eye to the gate, diverting every parcel without a verdict.
    pub const UNCONFIGURED: ControllerConfig = ControllerConfig {
        eye_to_gate_counts: 5000,
        gate_width_counts: 400,
        debounce_counts: 5,
        decision_margin_counts: 300,
        heartbeat_timeout_ms: 1000,
        fail_safe: FailSafePolicy::DivertUndecided,
    };
}

/// Controller → appliance.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToAppliance {
    /// At boot and on request: who is speaking.
    Hello {
        /// Firmware version (major, minor, patch).
        firmware: [u8; 3],
        /// [`PROTOCOL_MAJOR`] of the firmware.
        protocol_major: u8,
        /// [`PROTOCOL_MINOR`] of the firmware.
        protocol_minor: u8,
    },
    /// The photo-eye saw a new parcel.
    ParcelEntered {
        /// The epoch in force when it entered; `None` before the appliance gave one since
        /// boot (the parcel is then diverted, [`FailSafeReason::NoEpoch`]).
        epoch: Option<Epoch>,
        /// The parcel's sequence number within this boot: with the epoch, the handle for its
        /// decision.
        seq: u32,
        /// Encoder count at its leading edge.
        encoder: u32,
        /// Controller uptime at entry.
        uptime_ms: u32,
    },
    /// The parcel was diverted at the gate.
    ParcelDiverted {
        /// Sequence number.
        seq: u32,
        /// Encoder count when the gate fired.
        encoder: u32,
    },
    /// The parcel passed the gate.
    ParcelPassed {
        /// Sequence number.
        seq: u32,
        /// Encoder count when it passed.
        encoder: u32,
    },
    /// The controller decided to divert the parcel on its own.
    FailSafeDivert {
        /// Sequence number.
        seq: u32,
        /// Why.
        reason: FailSafeReason,
    },
    /// About once a second.
    Heartbeat {
        /// Controller uptime.
        uptime_ms: u32,
        /// Measured belt speed.
        belt_mm_per_s: u32,
    },
    /// Something needs a technician.
    Fault {
        /// What.
        code: FaultCode,
    },
    /// The stack light now shows this (since protocol 1.1): sent whenever the lamps change
    /// and after every [`ToController::Hello`], so the appliance shows what the line shows.
    StackLight {
        /// The lamps lit.
        light: StackLight,
    },
    /// A decision named an epoch other than the one in force, and was ignored (since
    /// protocol 2): the appliance is deciding parcels of an earlier session or boot.
    StaleDecision {
        /// The epoch the decision named.
        epoch: Epoch,
        /// The sequence number it named.
        seq: u32,
    },
}

/// Appliance → controller.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToController {
    /// Asks the controller to say [`ToAppliance::Hello`].
    Hello {
        /// [`PROTOCOL_MAJOR`] of the appliance.
        protocol_major: u8,
        /// [`PROTOCOL_MINOR`] of the appliance.
        protocol_minor: u8,
    },
    /// The epoch for the parcels that enter from now on, sent after every
    /// [`ToAppliance::Hello`] (since protocol 2). Decisions naming any other epoch are
    /// ignored from then on.
    Epoch {
        /// Fresh for every hello.
        epoch: Epoch,
    },
    /// The verdict for one parcel.
    Decision {
        /// Epoch from [`ToAppliance::ParcelEntered`].
        epoch: Epoch,
        /// Sequence number from [`ToAppliance::ParcelEntered`].
        seq: u32,
        /// Pass or divert.
        verdict: Verdict,
    },
    /// The appliance is alive.
    Heartbeat {
        /// Appliance-side uptime.
        uptime_ms: u32,
    },
    /// Sets the stack light (while the controller is not in fail-safe).
    StackLight {
        /// The state.
        light: StackLight,
    },
    /// Replaces the runtime configuration.
    Configure(ControllerConfig),
}

/// A decoded frame: header and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<M> {
    /// The sender's protocol major version.
    pub version: u8,
    /// The sender's frame counter (wraps).
    pub seq: u16,
    /// The message.
    pub msg: M,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u8,
    seq: u16,
}

/// A frame that could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small (give it [`MAX_FRAME_LEN`]).
    BufferTooSmall,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("frame does not fit the buffer")
    }
}

/// Encodes one frame into `out`; returns the number of bytes written, delimiter included.
pub fn encode_frame<M: Serialize>(seq: u16, msg: &M, out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_frame_as(PROTOCOL_MAJOR, seq, msg, out)
}

/// [`encode_frame`] under another major version: how a peer of another generation speaks,
/// for tests of the handshake's refusal.
pub fn encode_frame_as<M: Serialize>(
    version: u8,
    seq: u16,
    msg: &M,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut body = [0u8; MAX_BODY_LEN];
    let header = Header { version, seq };
    let h = postcard::to_slice(&header, &mut body)
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    let m = postcard::to_slice(msg, &mut body[h..])
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    let n = h + m;
    if n + 4 > body.len() {
        return Err(EncodeError::BufferTooSmall);
    }
    let crc = CRC32C.checksum(&body[..n]);
    body[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let written = cobs::encode(&body[..n + 4], out).ok_or(EncodeError::BufferTooSmall)?;
    let end = out.get_mut(written).ok_or(EncodeError::BufferTooSmall)?;
    *end = 0;
    Ok(written + 1)
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than the decoder's buffer.
    Overflow,
    /// Not valid COBS.
    Cobs,
    /// Checksum mismatch: corrupted or truncated.
    Crc,
    /// Checksum fine but the message is not one we know.
    Decode,
    /// Another protocol major version.
    Version {
        /// The sender's major version.
        got: u8,
    },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Overflow => f.write_str("frame too long; dropped up to the next delimiter"),
            FrameError::Cobs => f.write_str("frame is not valid COBS"),
            FrameError::Crc => f.write_str("frame checksum mismatch (corrupted or truncated)"),
            FrameError::Decode => f.write_str("frame holds an unknown message"),
            FrameError::Version { got } => write!(
                f,
                "peer speaks protocol {got}.x, this side {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
            ),
        }
    }
}

/// What the decoder has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Good frames.
    pub frames: u32,
    /// Frames longer than the buffer.
    pub overflow: u32,
    /// Bad COBS.
    pub cobs: u32,
    /// Bad checksum.
    pub crc: u32,
    /// Unknown message.
    pub decode: u32,
    /// Wrong major version.
    pub version: u32,
}

/// Streaming decoder with a fixed buffer of `N` bytes; never panics, and resynchronises at
/// the next `0x00` after any error.
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
    stats: DecoderStats,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: [0; N],
            len: 0,
            overflowed: false,
            stats: DecoderStats {
                frames: 0,
                overflow: 0,
                cobs: 0,
                crc: 0,
                decode: 0,
                version: 0,
            },
        }
    }

    /// Feeds one byte; at a delimiter, returns the result for the frame that just ended.
    /// Empty frames (consecutive delimiters) are skipped.
    pub fn push<M: DeserializeOwned>(&mut self, byte: u8) -> Option<Result<Frame<M>, FrameError>> {
        if byte != 0 {
            if self.len < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let (len, overflowed) = (self.len, self.overflowed);
        self.len = 0;
        self.overflowed = false;
        if overflowed {
            self.stats.overflow += 1;
            return Some(Err(FrameError::Overflow));
        }
        if len == 0 {
            return None;
        }
        let result = self.decode(len);
        match &result {
            Ok(_) => self.stats.frames += 1,
            Err(FrameError::Overflow) => self.stats.overflow += 1,
            Err(FrameError::Cobs) => self.stats.cobs += 1,
            Err(FrameError::Crc) => self.stats.crc += 1,
            Err(FrameError::Decode) => self.stats.decode += 1,
            Err(FrameError::Version { .. }) => self.stats.version += 1,
        }
        Some(result)
    }

    fn decode<M: DeserializeOwned>(&mut self, len: usize) -> Result<Frame<M>, FrameError> {
        let n = cobs::decode_in_place(&mut self.buf[..len]).ok_or(FrameError::Cobs)?;
        if n < 4 {
            return Err(FrameError::Crc);
        }
        let (body, crc) = self.buf[..n].split_at(n - 4);
        let mut want = [0u8; 4];
        want.copy_from_slice(crc);
        if CRC32C.checksum(body) != u32::from_le_bytes(want) {
            return Err(FrameError::Crc);
        }
        let (header, rest): (Header, _) =
            postcard::take_from_bytes(body).map_err(|_| FrameError::Decode)?;
        if header.version != PROTOCOL_MAJOR {
            return Err(FrameError::Version {
                got: header.version,
            });
        }
        let (msg, rest) = postcard::take_from_bytes::<M>(rest).map_err(|_| FrameError::Decode)?;
        if !rest.is_empty() {
            return Err(FrameError::Decode);
        }
        Ok(Frame {
            version: header.version,
            seq: header.seq,
            msg,
        })
    }

    /// What the decoder has seen so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
