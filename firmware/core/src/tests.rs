//! Scripted belt scenarios on fake pins, and exact pin transactions on embedded-hal-mock.

extern crate std;
use super::*;
use core::cell::Cell;
use core::convert::Infallible;
use embedded_hal::digital::ErrorType;
use screenline_protocol::FailSafePolicy;
use std::rc::Rc;
use std::vec::Vec;

#[derive(Clone, Default)]
struct Wire(Rc<Cell<bool>>);
impl ErrorType for Wire {
    type Error = Infallible;
}
impl InputPin for Wire {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.get())
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.get())
    }
}
impl OutputPin for Wire {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.set(true);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Counter(Rc<Cell<u32>>);
impl EncoderCount for Counter {
    fn count(&mut self) -> u32 {
        self.0.get()
    }
}
impl Clock for Counter {
    fn now_ms(&mut self) -> u32 {
        self.0.get()
    }
}

const CONFIG: ControllerConfig = ControllerConfig {
    eye_to_gate_counts: 1000,
    gate_width_counts: 200,
    debounce_counts: 5,
    decision_margin_counts: 100,
    heartbeat_timeout_ms: 500,
    fail_safe: FailSafePolicy::DivertUndecided,
};

/// The epoch the appliance gives the first boot in these tests.
const E1: Epoch = match Epoch::new(0x1111_1111) {
    Some(e) => e,
    None => panic!("non-zero"),
};
/// The epoch after a reboot.
const E2: Epoch = match Epoch::new(0x2222_2222) {
    Some(e) => e,
    None => panic!("non-zero"),
};

type Ctl<const Q: usize> = Controller<Wire, Wire, Wire, Wire, Wire, Counter, Counter, Q>;

/// A controller on [`CONFIG`], reporting firmware 0.1.0, on the given pins and counters.
macro_rules! controller {
    ($eye:expr, $gate:expr, $light:expr, $enc:expr, $clock:expr) => {
        Controller::new($eye, $gate, $light, $enc, $clock, CONFIG, [0, 1, 0])
    };
}

/// A belt moving 1 count per ms, with the controller polled every count.
struct Belt<const Q: usize> {
    ctl: Ctl<Q>,
    eye: Wire,
    gate: Wire,
    amber: Wire,
    green: Wire,
    enc: Counter,
    clock: Counter,
    events: Vec<ToAppliance>,
    heartbeats: bool,
    /// Counts at which the gate output was high.
    gate_high_at: Vec<u32>,
}

impl<const Q: usize> Belt<Q> {
    /// A line whose appliance has said hello and given epoch [`E1`].
    fn new(start: u32) -> Self {
        let mut b = Self::booted(start);
        b.appliance(ToController::Epoch { epoch: E1 });
        b
    }

    /// A line as [`Belt::new`] from count 0, the belt run 10 counts.
    fn running() -> Self {
        let mut b = Self::new(0);
        b.run(10);
        b
    }

    /// A line whose appliance has said hello but given no epoch yet.
    fn booted(start: u32) -> Self {
        let (eye, gate, green, amber, red) = (
            Wire::default(),
            Wire::default(),
            Wire::default(),
            Wire::default(),
            Wire::default(),
        );
        let enc = Counter::default();
        enc.0.set(start);
        let clock = Counter::default();
        let light = StackLightPins {
            green: green.clone(),
            amber: amber.clone(),
            red,
        };
        let ctl = controller!(eye.clone(), gate.clone(), light, enc.clone(), clock.clone());
        let mut b = Belt {
            ctl,
            eye,
            gate,
            amber,
            green,
            enc,
            clock,
            events: Vec::new(),
            heartbeats: true,
            gate_high_at: Vec::new(),
        };
        b.appliance(hello());
        b
    }

    fn appliance(&mut self, msg: ToController) {
        let events = &mut self.events;
        self.ctl.handle(&msg, &mut |e| events.push(e));
    }

    /// Moves the belt `counts` counts (1 ms each); the appliance beats every 100 ms if enabled.
    fn run(&mut self, counts: u32) {
        for _ in 0..counts {
            self.enc.0.set(self.enc.0.get().wrapping_add(1));
            self.clock.0.set(self.clock.0.get().wrapping_add(1));
            if self.heartbeats && self.clock.0.get().is_multiple_of(100) {
                self.appliance(ToController::Heartbeat { uptime_ms: 0 });
            }
            let events = &mut self.events;
            self.ctl.poll(&mut |e| events.push(e));
            if self.gate.0.get() {
                self.gate_high_at.push(self.enc.0.get());
            }
        }
    }

    /// A parcel `len` counts long passes the eye.
    fn parcel(&mut self, len: u32) -> u32 {
        self.eye.0.set(true);
        let at = self.enc.0.get();
        self.run(len);
        self.eye.0.set(false);
        at
    }

    fn entered(&self) -> Vec<u32> {
        pick(&self.events, |e| match e {
            ToAppliance::ParcelEntered { seq, .. } => Some(*seq),
            _ => None,
        })
    }
    fn diverted(&self) -> Vec<u32> {
        diverted(&self.events)
    }
    fn passed(&self) -> Vec<u32> {
        passed(&self.events)
    }
    fn entered_epochs(&self) -> Vec<(Option<Epoch>, u32)> {
        entered_epochs(&self.events)
    }
    fn stale(&self) -> Vec<(Epoch, u32)> {
        pick(&self.events, |e| match e {
            ToAppliance::StaleDecision { epoch, seq } => Some((*epoch, *seq)),
            _ => None,
        })
    }
    fn fail_safe(&self) -> Vec<(u32, FailSafeReason)> {
        pick(&self.events, |e| match e {
            ToAppliance::FailSafeDivert { seq, reason } => Some((*seq, *reason)),
            _ => None,
        })
    }
}

/// What `f` picks out of each of `events`, in order.
fn pick<T>(events: &[ToAppliance], f: impl Fn(&ToAppliance) -> Option<T>) -> Vec<T> {
    events.iter().filter_map(f).collect()
}

/// The parcels diverted, in order.
fn diverted(events: &[ToAppliance]) -> Vec<u32> {
    pick(events, |e| match e {
        ToAppliance::ParcelDiverted { seq, .. } => Some(*seq),
        _ => None,
    })
}

/// The parcels passed, in order.
fn passed(events: &[ToAppliance]) -> Vec<u32> {
    pick(events, |e| match e {
        ToAppliance::ParcelPassed { seq, .. } => Some(*seq),
        _ => None,
    })
}

/// The epoch and sequence number of each parcel that entered, in order.
fn entered_epochs(events: &[ToAppliance]) -> Vec<(Option<Epoch>, u32)> {
    pick(events, |e| match e {
        ToAppliance::ParcelEntered { epoch, seq, .. } => Some((*epoch, *seq)),
        _ => None,
    })
}

/// The appliance's decision on parcel `seq` of `epoch`.
fn decision(epoch: Epoch, seq: u32, verdict: Verdict) -> ToController {
    ToController::Decision {
        epoch,
        seq,
        verdict,
    }
}

/// The appliance's hello, at this protocol.
fn hello() -> ToController {
    ToController::Hello {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: 0,
    }
}

#[test]
fn hello_at_boot_and_on_request() {
    let mut b = Belt::<4>::new(0);
    b.run(1);
    let hellos = b
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ToAppliance::Hello {
                    protocol_major: PROTOCOL_MAJOR,
                    ..
                }
            )
        })
        .count();
    assert_eq!(hellos, 2, "{:?}", b.events);
}

#[test]
fn a_parcel_decided_pass_passes_and_the_gate_stays_low() {
    let mut b = Belt::<4>::running();
    b.parcel(300);
    assert_eq!(b.entered(), [1]);
    b.appliance(decision(E1, 1, Verdict::Pass));
    b.run(1000);
    assert_eq!(b.passed(), [1]);
    assert!(
        b.diverted().is_empty() && b.fail_safe().is_empty(),
        "{:?}",
        b.events
    );
    assert!(b.gate_high_at.is_empty());
    assert!(b.green.0.get() && !b.amber.0.get());
}

#[test]
fn a_parcel_decided_divert_is_diverted_exactly_at_the_gate_for_the_gate_width() {
    let mut b = Belt::<4>::running();
    let entry = b.parcel(300) + CONFIG.debounce_counts;
    b.appliance(decision(E1, 1, Verdict::Divert));
    // Entry is where the level first changed, so the debounce does not shift the timing.
    let entry = entry - CONFIG.debounce_counts;
    b.run(1200);
    assert_eq!(b.diverted(), [1]);
    let first = b.gate_high_at.first().copied();
    assert_eq!(
        first,
        Some(entry + CONFIG.eye_to_gate_counts + 1),
        "fires at entry + eye-to-gate"
    );
    assert_eq!(b.gate_high_at.len() as u32, CONFIG.gate_width_counts);
    assert!(!b.gate.0.get());
}

#[test]
fn a_late_decision_means_fail_safe_divert_and_is_ignored_when_it_comes() {
    let mut b = Belt::<4>::running();
    b.parcel(300);
    b.run(700); // past the decision point (900 counts after entry)
    assert_eq!(b.fail_safe(), [(1, FailSafeReason::DecisionLate)]);
    b.appliance(decision(E1, 1, Verdict::Pass));
    b.run(300);
    assert_eq!(b.diverted(), [1]);
    assert!(b.passed().is_empty());
}

#[test]
fn decisions_are_idempotent_and_unknown_ones_ignored() {
    let mut b = Belt::<4>::running();
    b.parcel(300);
    b.appliance(decision(E1, 1, Verdict::Pass));
    b.appliance(decision(E1, 1, Verdict::Divert));
    b.appliance(decision(E1, 99, Verdict::Divert));
    b.run(1000);
    assert_eq!(b.passed(), [1]);
}

#[test]
fn heartbeat_loss_diverts_everything_and_recovery_restores_passing() {
    let mut b = Belt::<4>::running();
    b.parcel(200);
    b.appliance(decision(E1, 1, Verdict::Pass));
    b.heartbeats = false;
    b.run(600);
    assert!(!b.ctl.appliance_alive());
    assert!(
        b.amber.0.get() && !b.green.0.get(),
        "stack light shows the fail-safe"
    );
    b.parcel(200);
    b.run(1000);
    assert_eq!(
        b.fail_safe(),
        [
            (1, FailSafeReason::HeartbeatLost),
            (2, FailSafeReason::HeartbeatLost)
        ]
    );
    assert_eq!(
        b.diverted(),
        [1, 2],
        "even the parcel decided pass is diverted"
    );
    b.heartbeats = true;
    b.run(200);
    assert!(b.ctl.appliance_alive() && b.green.0.get());
    b.parcel(200);
    b.appliance(decision(E1, 3, Verdict::Pass));
    b.run(1000);
    assert_eq!(b.passed(), [3]);
}

#[test]
fn before_the_appliance_speaks_every_parcel_is_diverted() {
    let (eye, gate) = (Wire::default(), Wire::default());
    let enc = Counter::default();
    let light = StackLightPins {
        green: Wire::default(),
        amber: Wire::default(),
        red: Wire::default(),
    };
    let mut ctl: Ctl<4> = controller!(eye.clone(), gate.clone(), light, enc.clone(), enc.clone());
    let mut events = Vec::new();
    for i in 0..1500u32 {
        enc.0.set(i);
        eye.0.set((10..300).contains(&i));
        ctl.poll(&mut |e| events.push(e));
    }
    assert!(events.contains(&ToAppliance::FailSafeDivert {
        seq: 1,
        reason: FailSafeReason::HeartbeatLost
    }));
    assert!(diverted(&events).contains(&1));
}

#[test]
fn two_parcels_closer_than_the_gate_width_both_go_to_the_reject_lane() {
    let mut b = Belt::<4>::running();
    b.parcel(100);
    b.run(50); // gap of 50 counts, less than the 200-count gate width
    b.parcel(100);
    b.appliance(decision(E1, 1, Verdict::Divert));
    b.appliance(decision(E1, 2, Verdict::Pass));
    b.run(1300);
    assert_eq!(
        b.diverted(),
        [1, 2],
        "the gate cannot swing back in between"
    );
    assert!(b.passed().is_empty());
}

#[test]
fn photo_eye_chatter_shorter_than_the_debounce_is_ignored() {
    let mut b = Belt::<4>::running();
    for _ in 0..5 {
        b.parcel(3);
        b.run(3);
    }
    assert!(b.entered().is_empty(), "{:?}", b.events);
    b.parcel(300);
    assert_eq!(b.entered(), [1]);
}

#[test]
fn a_photo_eye_blocked_for_longer_than_any_parcel_is_a_fault() {
    let mut b = Belt::<4>::running();
    b.parcel(CONFIG.eye_to_gate_counts + 50);
    let faults = b
        .events
        .iter()
        .filter(|e| {
            **e == ToAppliance::Fault {
                code: FaultCode::PhotoEyeBlocked,
            }
        })
        .count();
    assert_eq!(faults, 1, "reported once: {:?}", b.events);
}

#[test]
fn encoder_wrap_around_mid_parcel_keeps_the_timing() {
    let start = u32::MAX - 500;
    let mut b = Belt::<4>::new(start);
    b.run(10);
    let entry = b.parcel(300);
    b.appliance(decision(E1, 1, Verdict::Divert));
    b.run(1200);
    assert_eq!(b.diverted(), [1]);
    assert_eq!(
        b.gate_high_at.first().copied(),
        Some(entry.wrapping_add(CONFIG.eye_to_gate_counts + 1))
    );
    assert_eq!(b.gate_high_at.len() as u32, CONFIG.gate_width_counts);
}

#[test]
fn a_full_queue_holds_the_gate_over_the_untracked_parcel() {
    let mut b = Belt::<2>::new(0);
    b.run(10);
    for _ in 0..3 {
        b.parcel(50);
        b.run(50);
    }
    assert_eq!(b.ctl.queue_len(), 2);
    assert!(b.fail_safe().contains(&(3, FailSafeReason::QueueFull)));
    assert!(b.events.contains(&ToAppliance::Fault {
        code: FaultCode::QueueOverflow
    }));
    b.appliance(decision(E1, 1, Verdict::Pass));
    b.appliance(decision(E1, 2, Verdict::Pass));
    let third_entry = 10 + 200;
    b.run(1400);
    assert_eq!(b.passed(), [1, 2]);
    // The gate was energised while the third parcel crossed it.
    assert!(b
        .gate_high_at
        .contains(&(third_entry + CONFIG.eye_to_gate_counts + 10)));
}

#[test]
fn configuration_by_message_takes_effect() {
    let mut b = Belt::<4>::new(0);
    let c = ControllerConfig {
        eye_to_gate_counts: 400,
        ..CONFIG
    };
    b.appliance(ToController::Configure(c));
    assert_eq!(b.ctl.config().eye_to_gate_counts, 400);
    b.run(10);
    b.parcel(100);
    b.appliance(decision(E1, 1, Verdict::Divert));
    b.run(400);
    assert_eq!(b.diverted(), [1]);
}

/// A controller whose gate and lamps are mocks.
type MockCtl = Controller<Wire, MockPin, MockPin, MockPin, MockPin, Counter, Counter, 4>;

/// A pin on embedded-hal-mock that expects to be set to `states`, in order.
fn mock_pin(states: &[embedded_hal_mock::eh1::digital::State]) -> MockPin {
    use embedded_hal_mock::eh1::digital::Transaction;
    MockPin::new(
        &states
            .iter()
            .map(|s| Transaction::set(*s))
            .collect::<Vec<_>>(),
    )
}

/// A controller whose gate and lamps are mocks expecting exactly this: the gate fires once
/// (low, high, low), and the light goes from amber at boot to green once the appliance has
/// spoken and given an epoch. The photo-eye, encoder and clock are the returned fakes.
fn firing_once_on_mocks() -> (MockCtl, Wire, Counter) {
    use embedded_hal_mock::eh1::digital::State::{High as H, Low as L};
    let (eye, enc) = (Wire::default(), Counter::default());
    let light = StackLightPins {
        green: mock_pin(&[L, H]),
        amber: mock_pin(&[H, L]),
        red: mock_pin(&[L, L]),
    };
    let ctl = controller!(
        eye.clone(),
        mock_pin(&[L, H, L]),
        light,
        enc.clone(),
        enc.clone()
    );
    (ctl, eye, enc)
}

#[test]
fn gate_pin_transactions_on_a_mock() {
    let (mut ctl, eye, enc) = firing_once_on_mocks();
    let mut sink = |_e: ToAppliance| {};
    ctl.poll(&mut sink);
    ctl.handle(&ToController::Epoch { epoch: E1 }, &mut sink);
    for i in 1..1500u32 {
        enc.0.set(i);
        eye.0.set((10..100).contains(&i));
        if i.is_multiple_of(100) {
            ctl.handle(&ToController::Heartbeat { uptime_ms: i }, &mut sink);
        }
        if i == 50 {
            ctl.handle(&decision(E1, 1, Verdict::Divert), &mut sink);
        }
        ctl.poll(&mut sink);
    }
    let Controller { gate, light, .. } = ctl;
    all_done(gate, light);
}

type MockPin = embedded_hal_mock::eh1::digital::Mock;

/// Checks that every expected transaction on the gate and the lamps happened.
fn all_done(mut gate: MockPin, light: StackLightPins<MockPin, MockPin, MockPin>) {
    gate.done();
    let StackLightPins {
        mut green,
        mut amber,
        mut red,
    } = light;
    green.done();
    amber.done();
    red.done();
}

#[test]
fn heartbeat_loss_and_recovery_on_mock_pins_and_reported_lights() {
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
    const POLLS: u32 = 2000;
    let enc = Counter::default();
    // The photo-eye is read exactly once per control cycle, and nothing passes it.
    let eye = Mock::new(&std::vec![Transaction::get(State::Low); POLLS as usize]);
    let gate = Mock::new(&[Transaction::set(State::Low)]);
    let lamp = mock_pin;
    use State::{High as H, Low as L};
    // Boot: amber (no appliance). It speaks: green. Silent: amber. Back: green. It asks
    // for red (say, the X-ray folder is unreadable): red.
    let green = lamp(&[L, H, L, H, L]);
    let amber = lamp(&[H, L, H, L, L]);
    let red = lamp(&[L, L, L, L, H]);
    let mut ctl: Controller<Mock, Mock, Mock, Mock, Mock, Counter, Counter, 4> = controller!(
        eye,
        gate,
        StackLightPins { green, amber, red },
        enc.clone(),
        enc.clone()
    );
    let mut lights = Vec::new();
    let mut sink = |e: ToAppliance| {
        if let ToAppliance::StackLight { light } = e {
            lights.push(light);
        }
    };
    for i in 0..POLLS {
        enc.0.set(i);
        if i == 50 {
            ctl.handle(&ToController::Epoch { epoch: E1 }, &mut sink);
        }
        let speaking = !(600..1400).contains(&i);
        if i > 0 && speaking && i.is_multiple_of(100) {
            ctl.handle(&ToController::Heartbeat { uptime_ms: i }, &mut sink);
        }
        if i == 1800 {
            ctl.handle(
                &ToController::StackLight {
                    light: StackLight::Red,
                },
                &mut sink,
            );
        }
        ctl.poll(&mut sink);
    }
    assert_eq!(
        lights,
        [
            StackLight::Amber,
            StackLight::Green,
            StackLight::Amber,
            StackLight::Green,
            StackLight::Red
        ]
    );
    let Controller {
        mut eye,
        gate,
        light,
        ..
    } = ctl;
    eye.done();
    all_done(gate, light);
}

#[test]
fn the_light_is_reported_again_when_the_appliance_says_hello() {
    let mut b = Belt::<4>::running();
    b.events.clear();
    b.appliance(hello());
    assert!(
        b.events.contains(&ToAppliance::StackLight {
            light: StackLight::Green
        }),
        "{:?}",
        b.events
    );
}

#[test]
fn a_decision_of_the_last_boot_never_decides_a_parcel_of_this_one_on_mock_pins() {
    // The last boot: parcel 1 entered under epoch E1 and was to be passed.
    let mut last = Belt::<4>::new(0);
    last.run(10);
    last.parcel(100);
    assert_eq!(last.entered_epochs(), [(Some(E1), 1)]);

    // Reboot: sequence numbers start again at 1. The appliance says hello and gives E2.
    // Parcel 1 of this boot is diverted (the only time the gate fires); parcel 2 passes.
    let (mut ctl, eye, enc) = firing_once_on_mocks();
    let mut events = Vec::new();
    let mut gate_high_at = Vec::new();
    for i in 0..1600u32 {
        enc.0.set(i);
        eye.0.set((10..100).contains(&i) || (300..400).contains(&i));
        let mut msgs = Vec::new();
        match i {
            5 => {
                msgs.push(hello());
                msgs.push(ToController::Epoch { epoch: E2 });
            }
            // The decision queued before the reboot arrives: it names parcel 1, of E1.
            150 => msgs.push(decision(E1, 1, Verdict::Pass)),
            450 => msgs.push(decision(E2, 2, Verdict::Pass)),
            // Even a stale one for a parcel still undecided, and one after it passed.
            460 => msgs.push(decision(E1, 2, Verdict::Divert)),
            _ if i.is_multiple_of(100) => msgs.push(ToController::Heartbeat { uptime_ms: i }),
            _ => {}
        }
        for m in msgs {
            ctl.handle(&m, &mut |e| events.push(e));
        }
        ctl.poll(&mut |e| events.push(e));
        if ctl.gate_energised() {
            gate_high_at.push(i);
        }
    }
    assert_eq!(entered_epochs(&events), [(Some(E2), 1), (Some(E2), 2)]);
    assert!(events.contains(&ToAppliance::StaleDecision { epoch: E1, seq: 1 }));
    assert!(events.contains(&ToAppliance::StaleDecision { epoch: E1, seq: 2 }));
    assert_eq!(ctl.stale_decisions(), 2);
    assert!(events.contains(&ToAppliance::FailSafeDivert {
        seq: 1,
        reason: FailSafeReason::DecisionLate
    }));
    assert!(diverted(&events).contains(&1));
    assert!(passed(&events).contains(&2));
    assert!(!passed(&events).contains(&1), "{events:?}");
    assert_eq!(
        (gate_high_at.first(), gate_high_at.len() as u32),
        (
            Some(&(10 + CONFIG.eye_to_gate_counts)),
            CONFIG.gate_width_counts
        )
    );
    let Controller { gate, light, .. } = ctl;
    all_done(gate, light);
}

#[test]
fn a_parcel_that_entered_before_the_epoch_is_diverted_and_cannot_be_decided() {
    let mut b = Belt::<4>::booted(0);
    b.run(10);
    assert!(b.ctl.appliance_alive());
    assert!(b.amber.0.get() && !b.green.0.get(), "no epoch: amber");
    b.parcel(100);
    assert_eq!(b.entered_epochs(), [(None, 1)]);
    assert_eq!(b.fail_safe(), [(1, FailSafeReason::NoEpoch)]);
    b.appliance(ToController::Epoch { epoch: E1 });
    b.appliance(decision(E1, 1, Verdict::Pass));
    b.run(300);
    assert!(b.green.0.get() && !b.amber.0.get(), "an epoch: green");
    b.parcel(100);
    b.appliance(decision(E1, 2, Verdict::Pass));
    b.run(1300);
    assert_eq!(b.entered_epochs(), [(None, 1), (Some(E1), 2)]);
    assert_eq!(b.diverted(), [1]);
    assert_eq!(b.passed(), [2]);
}

#[test]
fn a_new_epoch_commits_the_undecided_parcels_of_the_old_one_to_divert() {
    let mut b = Belt::<4>::running();
    b.parcel(100);
    b.run(50);
    b.parcel(100);
    b.appliance(decision(E1, 1, Verdict::Pass));
    // The same epoch again changes nothing.
    b.appliance(ToController::Epoch { epoch: E1 });
    assert!(b.fail_safe().is_empty(), "{:?}", b.events);
    // The appliance reconnects: hello, and a new epoch.
    b.appliance(hello());
    b.appliance(ToController::Epoch { epoch: E2 });
    assert_eq!(b.fail_safe(), [(2, FailSafeReason::EpochChanged)]);
    b.appliance(decision(E1, 2, Verdict::Pass));
    assert_eq!(b.stale(), [(E1, 2)]);
    b.run(100);
    b.parcel(100);
    b.appliance(decision(E2, 3, Verdict::Pass));
    b.run(1300);
    assert_eq!(
        b.entered_epochs(),
        [(Some(E1), 1), (Some(E1), 2), (Some(E2), 3)]
    );
    assert_eq!(b.passed(), [1, 3], "a verdict given stands across epochs");
    assert_eq!(b.diverted(), [2]);
}
