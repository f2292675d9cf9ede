//! The line controller's logic, free of hardware: it follows each parcel from the photo-eye
//! to the diverter by encoder counts and fires the diverter at the right moment — or, when
//! it does not know, diverts to manual inspection.
//!
//! The same code runs on the MCU (board crate), in the host emulator behind a
//! pseudo-terminal (demo and end-to-end tests), and in the unit tests below. Pins are
//! embedded-hal 1.0; the encoder and the clock are small traits of our own, because
//! embedded-hal has neither.
//!
//! Safety by construction:
//! - a parcel is diverted unless a `Pass` verdict for its very epoch and sequence number
//!   arrived before it reached the decision point, and the appliance is alive;
//! - sequence numbers restart at 1 on every boot, so a parcel is named by the *epoch* the
//!   appliance gave after its last hello as well: a decision naming another epoch is
//!   ignored (and reported), a parcel that entered before this boot had an epoch cannot be
//!   named at all and is diverted, and a new epoch commits every undecided parcel of the old
//!   one to divert, because its decision will name the old epoch;
//! - before the appliance has spoken and given an epoch, and whenever its heartbeat is lost,
//!   every parcel is diverted and the stack light shows amber;
//! - a parcel that does not fit the tracking queue cannot be timed individually, so the
//!   diverter is held through the whole stretch of belt where it may be.
#![no_std]
#![deny(unsafe_code, missing_docs)]

use embedded_hal::digital::{InputPin, OutputPin};
use screenline_protocol::{
    ControllerConfig, Epoch, FailSafeReason, FaultCode, StackLight, ToAppliance, ToController,
    Verdict, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};

/// A free-running belt encoder.
pub trait EncoderCount {
    /// The count, which wraps at `u32::MAX`.
    fn count(&mut self) -> u32;
}

/// A millisecond clock.
pub trait Clock {
    /// Milliseconds since boot, wrapping.
    fn now_ms(&mut self) -> u32;
}

/// The stack light's three lamps.
pub struct StackLightPins<G, A, R> {
    /// Green: running.
    pub green: G,
    /// Amber: diverting on its own.
    pub amber: A,
    /// Red: fault.
    pub red: R,
}

/// How often the controller says it is alive.
pub const HEARTBEAT_MS: u32 = 1000;

/// `a` is at or past `b` on a wrapping counter (valid while they are < 2^31 apart).
fn reached(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    epoch: Option<Epoch>,
    seq: u32,
    entry: u32,
    verdict: Option<Verdict>,
    fail_safe: Option<FailSafeReason>,
}

/// The controller.
pub struct Controller<Eye, Gate, G, A, R, Enc, Clk, const Q: usize> {
    eye: Eye,
    gate: Gate,
    light: StackLightPins<G, A, R>,
    encoder: Enc,
    clock: Clk,
    config: ControllerConfig,
    firmware: [u8; 3],
    queue: [Option<Tracked>; Q],
    /// The epoch the appliance gave after its last hello; `None` since boot until then.
    epoch: Option<Epoch>,
    /// Decisions ignored because they named another epoch.
    stale_decisions: u32,
    next_seq: u32,
    eye_level: bool,
    eye_candidate: bool,
    candidate_since: u32,
    /// Where the photo-eye was last blocked from, and whether that was reported as a fault.
    blocked_since: u32,
    blocked_reported: bool,
    last_heard: Option<u32>,
    alive: bool,
    hello_sent: bool,
    last_heartbeat: u32,
    counts_at_heartbeat: u32,
    gate_on: bool,
    gate_until: u32,
    /// Stretch of belt, in counts, held diverted for parcels that could not be tracked.
    overflow_hold: Option<(u32, u32)>,
    requested_light: StackLight,
    shown_light: Option<StackLight>,
    /// What the gate output was last set to (pins are written only on change).
    gate_out: Option<bool>,
}

impl<Eye, Gate, G, A, R, Enc, Clk, const Q: usize> Controller<Eye, Gate, G, A, R, Enc, Clk, Q>
where
    Eye: InputPin,
    Gate: OutputPin,
    G: OutputPin,
    A: OutputPin,
    R: OutputPin,
    Enc: EncoderCount,
    Clk: Clock,
{
    /// A controller at boot: nothing tracked, the appliance not yet heard.
    pub fn new(
        eye: Eye,
        gate: Gate,
        light: StackLightPins<G, A, R>,
        mut encoder: Enc,
        mut clock: Clk,
        config: ControllerConfig,
        firmware: [u8; 3],
    ) -> Self {
        let count = encoder.count();
        let now = clock.now_ms();
        Controller {
            eye,
            gate,
            light,
            encoder,
            clock,
            config,
            firmware,
            queue: [None; Q],
            epoch: None,
            stale_decisions: 0,
            next_seq: 1,
            eye_level: false,
            eye_candidate: false,
            candidate_since: count,
            blocked_since: count,
            blocked_reported: false,
            last_heard: None,
            alive: false,
            hello_sent: false,
            last_heartbeat: now,
            counts_at_heartbeat: count,
            gate_on: false,
            gate_until: count,
            overflow_hold: None,
            requested_light: StackLight::Green,
            shown_light: None,
            gate_out: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Whether the appliance's heartbeat is current.
    pub fn appliance_alive(&self) -> bool {
        self.alive
    }

    /// The epoch in force: parcels entering now are stamped with it.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Decisions ignored since boot because they named another epoch.
    pub fn stale_decisions(&self) -> u32 {
        self.stale_decisions
    }

    /// Parcels being tracked between the photo-eye and the gate.
    pub fn queue_len(&self) -> usize {
        self.queue.iter().flatten().count()
    }

    fn hello(&self) -> ToAppliance {
        ToAppliance::Hello {
            firmware: self.firmware,
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: PROTOCOL_MINOR,
        }
    }

    /// Handles one message from the appliance; every message counts as a heartbeat.
    pub fn handle(&mut self, msg: &ToController, out: &mut impl FnMut(ToAppliance)) {
        self.last_heard = Some(self.clock.now_ms());
        match *msg {
            ToController::Hello { .. } => {
                out(self.hello());
                if let Some(light) = self.shown_light {
                    out(ToAppliance::StackLight { light });
                }
            }
            ToController::Heartbeat { .. } => {}
            ToController::Epoch { epoch } => self.assign_epoch(epoch, out),
            ToController::Decision {
                epoch,
                seq,
                verdict,
            } => {
                if self.epoch != Some(epoch) {
                    // Meant for a parcel of an earlier session or boot, whose sequence number
                    // may now name another parcel: never applied, only reported.
                    self.stale_decisions = self.stale_decisions.saturating_add(1);
                    out(ToAppliance::StaleDecision { epoch, seq });
                    return;
                }
                let alive = self.alive;
                let named = |p: &&mut Tracked| p.seq == seq && p.epoch == Some(epoch);
                if let Some(p) = self.queue.iter_mut().flatten().find(named) {
                    // Idempotent: the first verdict stands; a late one changes nothing,
                    // the parcel is already committed to manual inspection.
                    if p.verdict.is_none() && p.fail_safe.is_none() && alive {
                        p.verdict = Some(verdict);
                    }
                }
            }
            ToController::StackLight { light } => self.requested_light = light,
            ToController::Configure(c) => self.config = c,
        }
    }

    /// A new epoch after a hello. Undecided parcels of the old one are committed to divert
    /// now: their decisions will name the old epoch and be refused, and saying so at once
    /// shows why rather than as a late decision at the decision point.
    fn assign_epoch(&mut self, epoch: Epoch, out: &mut impl FnMut(ToAppliance)) {
        if self.epoch == Some(epoch) {
            return;
        }
        self.epoch = Some(epoch);
        for p in self.queue.iter_mut().flatten() {
            if p.verdict.is_none() && p.fail_safe.is_none() && p.epoch != Some(epoch) {
                p.fail_safe = Some(FailSafeReason::EpochChanged);
                out(ToAppliance::FailSafeDivert {
                    seq: p.seq,
                    reason: FailSafeReason::EpochChanged,
                });
            }
        }
    }

    /// One control cycle: liveness, photo-eye, tracking, diverter, stack light, heartbeat.
    pub fn poll(&mut self, out: &mut impl FnMut(ToAppliance)) {
        let now = self.clock.now_ms();
        let pos = self.encoder.count();
        if !self.hello_sent {
            self.hello_sent = true;
            out(self.hello());
        }
        self.check_liveness(now, out);
        self.sample_eye(pos, now, out);
        self.track(pos, out);
        self.drive_gate(pos, out);
        self.drive_light(out);
        if now.wrapping_sub(self.last_heartbeat) >= HEARTBEAT_MS {
            let counts = pos.wrapping_sub(self.counts_at_heartbeat);
            let elapsed = now.wrapping_sub(self.last_heartbeat).max(1);
            self.last_heartbeat = now;
            self.counts_at_heartbeat = pos;
            out(ToAppliance::Heartbeat {
                uptime_ms: now,
                belt_mm_per_s: (u64::from(counts) * 1000 / u64::from(elapsed)) as u32,
            });
        }
    }

    fn check_liveness(&mut self, now: u32, out: &mut impl FnMut(ToAppliance)) {
        let alive = self
            .last_heard
            .is_some_and(|t| now.wrapping_sub(t) <= self.config.heartbeat_timeout_ms);
        if self.alive && !alive {
            // Lost: nothing on the belt may pass on an old verdict.
            for p in self.queue.iter_mut().flatten() {
                if p.fail_safe.is_none() {
                    p.fail_safe = Some(FailSafeReason::HeartbeatLost);
                    out(ToAppliance::FailSafeDivert {
                        seq: p.seq,
                        reason: FailSafeReason::HeartbeatLost,
                    });
                }
            }
        }
        self.alive = alive;
    }

    fn sample_eye(&mut self, pos: u32, now: u32, out: &mut impl FnMut(ToAppliance)) {
        // A pin that cannot be read counts as blocked: a phantom parcel is diverted, a
        // real one is never missed.
        let level = self.eye.is_high().unwrap_or(true);
        if level == self.eye_level {
            self.eye_candidate = level;
            let blocked_for = pos.wrapping_sub(self.blocked_since);
            if level && !self.blocked_reported && blocked_for > self.config.eye_to_gate_counts {
                self.blocked_reported = true;
                out(ToAppliance::Fault {
                    code: FaultCode::PhotoEyeBlocked,
                });
            }
            return;
        }
        if level != self.eye_candidate {
            self.eye_candidate = level;
            self.candidate_since = pos;
        }
        if pos.wrapping_sub(self.candidate_since) < self.config.debounce_counts {
            return;
        }
        self.eye_level = level;
        if level {
            self.blocked_since = self.candidate_since;
            self.blocked_reported = false;
            self.enter(self.candidate_since, now, out);
        }
    }

    fn enter(&mut self, entry: u32, now: u32, out: &mut impl FnMut(ToAppliance)) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let epoch = self.epoch;
        out(ToAppliance::ParcelEntered {
            epoch,
            seq,
            encoder: entry,
            uptime_ms: now,
        });
        let fail_safe = if !self.alive {
            Some(FailSafeReason::HeartbeatLost)
        } else if epoch.is_none() {
            // No decision can name it: the appliance heard of it without an epoch.
            Some(FailSafeReason::NoEpoch)
        } else {
            None
        };
        match self.queue.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(Tracked {
                    epoch,
                    seq,
                    entry,
                    verdict: None,
                    fail_safe,
                });
                if let Some(reason) = fail_safe {
                    out(ToAppliance::FailSafeDivert { seq, reason });
                }
            }
            None => {
                let start = entry.wrapping_add(self.config.eye_to_gate_counts);
                let end = start.wrapping_add(self.config.gate_width_counts);
                self.overflow_hold = Some(match self.overflow_hold {
                    Some((s, _)) => (s, end),
                    None => (start, end),
                });
                out(ToAppliance::FailSafeDivert {
                    seq,
                    reason: FailSafeReason::QueueFull,
                });
                out(ToAppliance::Fault {
                    code: FaultCode::QueueOverflow,
                });
            }
        }
    }

    fn track(&mut self, pos: u32, out: &mut impl FnMut(ToAppliance)) {
        let c = self.config;
        let decision_point = c
            .eye_to_gate_counts
            .saturating_sub(c.decision_margin_counts);
        // Oldest first, so that two parcels reaching the gate in one cycle keep their order.
        loop {
            let next = self
                .queue
                .iter_mut()
                .flatten()
                .filter(|p| reached(pos, p.entry.wrapping_add(decision_point)))
                .filter(|p| p.verdict.is_none() && p.fail_safe.is_none())
                .min_by_key(|p| p.seq);
            let Some(p) = next else { break };
            p.fail_safe = Some(FailSafeReason::DecisionLate);
            out(ToAppliance::FailSafeDivert {
                seq: p.seq,
                reason: FailSafeReason::DecisionLate,
            });
        }
        loop {
            let at_gate = self
                .queue
                .iter_mut()
                .filter(|s| {
                    s.is_some_and(|p| reached(pos, p.entry.wrapping_add(c.eye_to_gate_counts)))
                })
                .min_by_key(|s| s.map_or(u32::MAX, |p| p.entry));
            let Some(slot) = at_gate else { break };
            let Some(p) = slot.take() else { break };
            let divert = p.fail_safe.is_some() || p.verdict != Some(Verdict::Pass);
            // A parcel closer than the gate width behind a diverted one goes with it: the
            // gate cannot swing back in between.
            if divert || (self.gate_on && !reached(pos, self.gate_until)) {
                let until = pos.wrapping_add(c.gate_width_counts);
                if !self.gate_on || reached(until, self.gate_until) {
                    self.gate_until = until;
                }
                self.gate_on = true;
                out(ToAppliance::ParcelDiverted {
                    seq: p.seq,
                    encoder: pos,
                });
            } else {
                out(ToAppliance::ParcelPassed {
                    seq: p.seq,
                    encoder: pos,
                });
            }
        }
    }

    fn drive_gate(&mut self, pos: u32, out: &mut impl FnMut(ToAppliance)) {
        let mut hold = false;
        if let Some((start, end)) = self.overflow_hold {
            if reached(pos, end) {
                self.overflow_hold = None;
            } else {
                hold = reached(pos, start);
            }
        }
        if self.gate_on && reached(pos, self.gate_until) {
            self.gate_on = false;
        }
        let want = self.gate_on || hold;
        if self.gate_out == Some(want) {
            return;
        }
        let result = if want {
            self.gate.set_high()
        } else {
            self.gate.set_low()
        };
        match result {
            Ok(()) => self.gate_out = Some(want),
            Err(_) => out(ToAppliance::Fault {
                code: FaultCode::DiverterFeedback,
            }),
        }
    }

    fn drive_light(&mut self, out: &mut impl FnMut(ToAppliance)) {
        // Green only while a parcel can be passed at all: the appliance alive, and an epoch
        // to name parcels by.
        let want = if self.alive && self.epoch.is_some() {
            self.requested_light
        } else {
            StackLight::Amber
        };
        if self.shown_light == Some(want) {
            return;
        }
        self.shown_light = Some(want);
        out(ToAppliance::StackLight { light: want });
        let (g, a, r) = match want {
            StackLight::Off => (false, false, false),
            StackLight::Green => (true, false, false),
            StackLight::Amber => (false, true, false),
            StackLight::Red => (false, false, true),
        };
        // A lamp that fails is not worth stopping the line for; the diverter is what matters.
        let _ = self.light.green.set_state(g.into());
        let _ = self.light.amber.set_state(a.into());
        let _ = self.light.red.set_state(r.into());
    }

    /// Whether the diverter is energised now (what the tests' mock pins cannot tell).
    #[cfg(test)]
    pub(crate) fn gate_energised(&self) -> bool {
        self.gate_out == Some(true)
    }
}

#[cfg(test)]
mod tests;
