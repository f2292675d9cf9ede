//! The line-controller host emulator: the real firmware core and protocol, running on the
//! host behind a pseudo-terminal, on a simulated belt with a photo-eye and an encoder.
//!
//! `screenline demo` and the end-to-end tests use it, so the appliance always talks to the
//! real firmware logic over a real (pseudo-)serial port. Time is real: the belt moves at its
//! configured speed and the controller is polled every tick, as the MCU's main loop would.
#![deny(unsafe_code, missing_docs)]

pub mod pty;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use screenline_controller::{Clock, Controller, EncoderCount, StackLightPins};
use screenline_protocol::{
    encode_frame, ControllerConfig, Epoch, FailSafePolicy, FailSafeReason, FaultCode, FrameDecoder,
    StackLight, ToAppliance, ToController, Verdict, MAX_FRAME_LEN,
};
use std::convert::Infallible;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The simulated line's geometry and timing.
#[derive(Debug, Clone)]
pub struct BeltConfig {
    /// Belt speed. Default 2000 mm/s.
    pub belt_mm_per_s: u32,
    /// Encoder resolution. Default 1 count per mm.
    pub counts_per_mm: u32,
    /// Photo-eye to diverter gate. Default 5000 mm.
    pub eye_to_gate_mm: u32,
    /// How long the gate stays energised. Default 400 mm.
    pub gate_width_mm: u32,
    /// How far before the gate the decision must be in. Default 300 mm.
    pub decision_margin_mm: u32,
    /// Photo-eye debounce. Default 5 mm.
    pub debounce_mm: u32,
    /// Appliance silence after which the controller diverts everything. Default 1000 ms.
    pub heartbeat_timeout_ms: u32,
    /// Control-loop period. Default 1 ms.
    pub tick: Duration,
}

impl Default for BeltConfig {
    fn default() -> Self {
        BeltConfig {
            belt_mm_per_s: 2000,
            counts_per_mm: 1,
            eye_to_gate_mm: 5000,
            gate_width_mm: 400,
            decision_margin_mm: 300,
            debounce_mm: 5,
            heartbeat_timeout_ms: 1000,
            tick: Duration::from_millis(1),
        }
    }
}

impl BeltConfig {
    fn controller_config(&self) -> ControllerConfig {
        let c = self.counts_per_mm;
        ControllerConfig {
            eye_to_gate_counts: self.eye_to_gate_mm * c,
            gate_width_counts: self.gate_width_mm * c,
            debounce_counts: self.debounce_mm * c,
            decision_margin_counts: self.decision_margin_mm * c,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            fail_safe: FailSafePolicy::DivertUndecided,
        }
    }
}

/// What happened on the simulated line, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// The appliance's first message since boot arrived.
    LinkUp,
    /// The controller rebooted ([`LineEmulator::reboot`]): sequence numbers start again at 1.
    Rebooted,
    /// The appliance gave the controller an epoch.
    EpochAssigned {
        /// The epoch.
        epoch: Epoch,
    },
    /// The photo-eye saw parcel `seq`.
    Entered {
        /// Sequence number.
        seq: u32,
    },
    /// The appliance's decision for `seq` arrived.
    DecisionReceived {
        /// The epoch it names.
        epoch: Epoch,
        /// Sequence number.
        seq: u32,
        /// The verdict.
        verdict: Verdict,
    },
    /// The parcel went to the reject lane.
    Diverted {
        /// Sequence number.
        seq: u32,
    },
    /// The parcel passed.
    Passed {
        /// Sequence number.
        seq: u32,
    },
    /// The controller diverted it on its own.
    FailSafe {
        /// Sequence number.
        seq: u32,
        /// Why.
        reason: FailSafeReason,
    },
    /// The controller reported a fault.
    Fault {
        /// What.
        code: FaultCode,
    },
    /// The appliance set the line's geometry (`Configure`).
    Configured(ControllerConfig),
    /// The stack light changed.
    StackLight {
        /// The lamps lit.
        light: StackLight,
    },
    /// The controller ignored a decision that named another epoch.
    StaleDecision {
        /// The epoch it named.
        epoch: Epoch,
        /// The sequence number it named.
        seq: u32,
    },
}

/// What the emulator's user asks of the simulated line.
enum Command {
    /// Put a parcel of this length on the belt.
    Place(u32),
    /// Reset the controller, as a watchdog reset or a power cycle would.
    Reboot,
}

/// A pin of the simulated line.
#[derive(Clone, Default)]
struct SimPin(Arc<AtomicBool>);

impl ErrorType for SimPin {
    type Error = Infallible;
}
impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.load(Ordering::Relaxed))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.load(Ordering::Relaxed))
    }
}
impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.store(false, Ordering::Relaxed);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The encoder or the clock of the simulated line.
#[derive(Clone, Default)]
struct SimCounter(Arc<AtomicU32>);

impl EncoderCount for SimCounter {
    fn count(&mut self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}
impl Clock for SimCounter {
    fn now_ms(&mut self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Parcels the emulator's controller can track at once.
const QUEUE: usize = 32;
/// How far upstream of the photo-eye a placed parcel starts.
const PLACE_UPSTREAM_MM: f64 = 5.0;
/// The smallest gap between two parcels placed in quick succession.
const MIN_GAP_MM: f64 = 50.0;
/// Events kept for a reader who does not keep up (the demo never reads them).
const EVENT_BACKLOG: usize = 4096;

/// A running emulator.
pub struct LineEmulator {
    commands: Sender<Command>,
    events: Option<Receiver<LineEvent>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LineEmulator {
    /// Starts the emulator's control loop on `port` (a pseudo-terminal master).
    pub fn start(port: File, cfg: BeltConfig) -> io::Result<LineEmulator> {
        let (commands_tx, commands_rx) = mpsc::channel();
        let (event_tx, event_rx) = mpsc::sync_channel(EVENT_BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("line-emulator".into())
            .spawn(move || Sim::new(port, cfg, commands_rx, event_tx).run(&stop2))?;
        Ok(LineEmulator {
            commands: commands_tx,
            events: Some(event_rx),
            stop,
            thread: Some(thread),
        })
    }

    /// Puts a parcel of `length_mm` on the belt just upstream of the photo-eye, or behind
    /// the last one placed if that is still upstream or under the eye.
    pub fn place_parcel(&self, length_mm: u32) {
        // The loop only ends at shutdown, after which placing is moot.
        let _ = self.commands.send(Command::Place(length_mm));
    }

    /// Reboots the controller: it forgets every parcel it tracked, its epoch and whether the
    /// appliance was alive, and counts sequence numbers from 1 again, while the belt, the
    /// parcels on it and the serial line stay — like a watchdog reset behind a USB-UART
    /// adapter that stays plugged in. Whatever the appliance sent and the old boot did not
    /// read yet is read by the new one.
    pub fn reboot(&self) {
        let _ = self.commands.send(Command::Reboot);
    }

    /// The line's events, in order; can be taken once.
    pub fn take_events(&mut self) -> Option<Receiver<LineEvent>> {
        self.events.take()
    }

    /// Stops the control loop and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LineEmulator {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

type SimController =
    Controller<SimPin, SimPin, SimPin, SimPin, SimPin, SimCounter, SimCounter, QUEUE>;

/// The control loop's state: the controller, the belt, the port.
struct Sim {
    port: File,
    cfg: BeltConfig,
    ctl: SimController,
    eye: SimPin,
    encoder: SimCounter,
    clock: SimCounter,
    decoder: FrameDecoder<{ MAX_FRAME_LEN * 2 }>,
    commands: Receiver<Command>,
    events: SyncSender<LineEvent>,
    /// Parcels on the belt as (distance travelled when the leading edge meets the eye, length), mm.
    parcels: Vec<(f64, f64)>,
    link_up: bool,
    frame_seq: u16,
    started: Instant,
    /// Belt travel and time at the last tick.
    travelled_mm: f64,
    elapsed_ms: f64,
}

impl Sim {
    fn new(
        port: File,
        cfg: BeltConfig,
        commands: Receiver<Command>,
        events: SyncSender<LineEvent>,
    ) -> Sim {
        let (eye, encoder, clock) = (
            SimPin::default(),
            SimCounter::default(),
            SimCounter::default(),
        );
        let ctl = Self::boot(&cfg, &eye, &encoder, &clock);
        Sim {
            port,
            cfg,
            ctl,
            eye,
            encoder,
            clock,
            decoder: FrameDecoder::new(),
            commands,
            events,
            parcels: Vec::new(),
            link_up: false,
            frame_seq: 0,
            started: Instant::now(),
            travelled_mm: 0.0,
            elapsed_ms: 0.0,
        }
    }

    /// A controller as it starts: nothing tracked, no appliance heard, no epoch.
    fn boot(
        cfg: &BeltConfig,
        eye: &SimPin,
        encoder: &SimCounter,
        clock: &SimCounter,
    ) -> SimController {
        Controller::new(
            eye.clone(),
            SimPin::default(),
            StackLightPins {
                green: SimPin::default(),
                amber: SimPin::default(),
                red: SimPin::default(),
            },
            encoder.clone(),
            clock.clone(),
            cfg.controller_config(),
            [0, 1, 0],
        )
    }

    fn reboot(&mut self) {
        self.ctl = Self::boot(&self.cfg, &self.eye, &self.encoder, &self.clock);
        // A frame half received is lost with the UART's state; the frame counter restarts.
        self.decoder = FrameDecoder::new();
        self.frame_seq = 0;
        self.link_up = false;
        self.event(LineEvent::Rebooted);
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.tick();
            next += self.cfg.tick;
            match next.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                // Behind (a loaded machine): do not try to catch up tick by tick; the belt
                // position comes from real time anyway.
                None => next = Instant::now(),
            }
        }
    }

    fn tick(&mut self) {
        let elapsed = self.started.elapsed();
        let travelled = elapsed.as_secs_f64() * f64::from(self.cfg.belt_mm_per_s);
        while let Ok(command) = self.commands.try_recv() {
            let len = match command {
                Command::Place(len) => len,
                Command::Reboot => {
                    self.reboot();
                    continue;
                }
            };
            // Parcels are loaded one behind the other, never on top of each other.
            let behind_last = self
                .parcels
                .last()
                .map_or(f64::MIN, |&(at, len)| at + len + MIN_GAP_MM);
            let at = (travelled + PLACE_UPSTREAM_MM).max(behind_last);
            self.parcels.push((at, f64::from(len)));
        }
        // A loaded machine can stall this thread for longer than a parcel takes to pass the
        // eye; a real belt cannot. So the belt is stepped through every position since the
        // last tick, in steps under the photo-eye's debounce, and the controller polled at
        // each: a stall delays what the controller sees, never loses a parcel.
        let step_mm = (f64::from(self.cfg.debounce_mm) / 2.0).max(0.5);
        let (from_mm, from_ms) = (self.travelled_mm, self.elapsed_ms);
        let steps = ((travelled - from_mm) / step_mm).ceil().clamp(1.0, 1e6) as u32;
        let now_ms = elapsed.as_secs_f64() * 1000.0;
        for i in 1..=steps {
            let f = f64::from(i) / f64::from(steps);
            let at_mm = from_mm + (travelled - from_mm) * f;
            self.clock.0.store(
                (from_ms + (now_ms - from_ms) * f) as u64 as u32,
                Ordering::Relaxed,
            );
            self.encoder.0.store(
                (at_mm * f64::from(self.cfg.counts_per_mm)) as u64 as u32,
                Ordering::Relaxed,
            );
            let blocked = self
                .parcels
                .iter()
                .any(|&(at, len)| at_mm >= at && at_mm <= at + len);
            self.eye.0.store(blocked, Ordering::Relaxed);
            if i == steps {
                self.receive();
            }
            let mut out = Vec::new();
            self.ctl.poll(&mut |m| out.push(m));
            for m in out {
                self.send(m);
            }
        }
        (self.travelled_mm, self.elapsed_ms) = (travelled, now_ms);
        let gone = f64::from(self.cfg.eye_to_gate_mm + self.cfg.gate_width_mm) + 1000.0;
        self.parcels
            .retain(|&(at, len)| travelled <= at + len + gone);
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            let ready = {
                let mut fds = [PollFd::new(self.port.as_fd(), PollFlags::POLLIN)];
                matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
                    && fds[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN))
            };
            if !ready {
                return;
            }
            let n = match self.port.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if let Some(Ok(frame)) = self.decoder.push::<ToController>(b) {
                    if !self.link_up {
                        self.link_up = true;
                        self.event(LineEvent::LinkUp);
                    }
                    match frame.msg {
                        ToController::Decision {
                            epoch,
                            seq,
                            verdict,
                        } => {
                            self.event(LineEvent::DecisionReceived {
                                epoch,
                                seq,
                                verdict,
                            });
                        }
                        ToController::Epoch { epoch } => {
                            self.event(LineEvent::EpochAssigned { epoch });
                        }
                        ToController::Configure(c) => self.event(LineEvent::Configured(c)),
                        _ => {}
                    }
                    let mut out = Vec::new();
                    self.ctl.handle(&frame.msg, &mut |m| out.push(m));
                    for m in out {
                        self.send(m);
                    }
                }
            }
        }
    }

    fn send(&mut self, msg: ToAppliance) {
        let event = match msg {
            ToAppliance::ParcelEntered { seq, .. } => Some(LineEvent::Entered { seq }),
            ToAppliance::ParcelDiverted { seq, .. } => Some(LineEvent::Diverted { seq }),
            ToAppliance::ParcelPassed { seq, .. } => Some(LineEvent::Passed { seq }),
            ToAppliance::FailSafeDivert { seq, reason } => {
                Some(LineEvent::FailSafe { seq, reason })
            }
            ToAppliance::Fault { code } => Some(LineEvent::Fault { code }),
            ToAppliance::StackLight { light } => Some(LineEvent::StackLight { light }),
            ToAppliance::StaleDecision { epoch, seq } => {
                Some(LineEvent::StaleDecision { epoch, seq })
            }
            ToAppliance::Hello { .. } | ToAppliance::Heartbeat { .. } => None,
        };
        if let Some(e) = event {
            self.event(e);
        }
        let mut frame = [0u8; MAX_FRAME_LEN];
        let Ok(n) = encode_frame(self.frame_seq, &msg, &mut frame) else {
            return;
        };
        self.frame_seq = self.frame_seq.wrapping_add(1);
        // Like a UART with nobody listening: if the appliance does not read, bytes are lost.
        let writable = {
            let mut fds = [PollFd::new(self.port.as_fd(), PollFlags::POLLOUT)];
            matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        };
        if writable {
            let _ = self.port.write_all(&frame[..n]);
        }
    }

    fn event(&self, e: LineEvent) {
        let _ = self.events.try_send(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_longer_than_a_parcel_delays_it_but_never_loses_it() {
        let pty = pty::Pty::open().expect("pty");
        let (commands_tx, commands_rx) = mpsc::channel();
        let (event_tx, events) = mpsc::sync_channel(EVENT_BACKLOG);
        let mut sim = Sim::new(
            pty.master().expect("master"),
            BeltConfig::default(),
            commands_rx,
            event_tx,
        );
        sim.tick();
        commands_tx.send(Command::Place(300)).expect("place");
        sim.tick();
        // The thread stalls for a second: 2 m of belt go by, the parcel far past the eye.
        sim.started = sim
            .started
            .checked_sub(Duration::from_secs(1))
            .expect("an instant a second earlier");
        sim.tick();
        let seen: Vec<LineEvent> = events.try_iter().collect();
        assert!(seen.contains(&LineEvent::Entered { seq: 1 }), "{seen:?}");
    }
}
