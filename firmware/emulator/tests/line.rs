//! The emulator behind a real pseudo-terminal, with this test acting as the appliance.

use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator, LineEvent};
use screenline_protocol::{
    encode_frame, Epoch, FailSafeReason, FrameDecoder, ToAppliance, ToController, Verdict,
    MAX_FRAME_LEN, PROTOCOL_MAJOR,
};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fast_belt() -> BeltConfig {
    BeltConfig {
        eye_to_gate_mm: 600,
        decision_margin_mm: 100,
        ..BeltConfig::default()
    }
}

fn send(port: &mut std::fs::File, seq: u16, msg: &ToController) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = encode_frame(seq, msg, &mut buf).expect("encodes");
    port.write_all(&buf[..n]).expect("write to the slave");
}

/// The appliance's side of the link, played by the test: heartbeats from one thread, and a
/// fresh epoch (`0xe1`, `0xe2`, …) after every hello the controller says.
struct Appliance {
    port: std::fs::File,
    stop: Arc<AtomicBool>,
    beats: Option<std::thread::JoinHandle<()>>,
    /// The epoch given after each hello, in order.
    epochs: Receiver<Epoch>,
    given: Vec<Epoch>,
}

impl Appliance {
    fn attach(pty: &Pty) -> Appliance {
        let port = OpenOptions::new()
            .read(true)
            .write(true)
            .open(pty.slave_path())
            .expect("slave");
        let stop = Arc::new(AtomicBool::new(false));
        let (mut writer, stop2) = (port.try_clone().expect("clone"), stop.clone());
        let beats = std::thread::spawn(move || {
            send(
                &mut writer,
                0,
                &ToController::Hello {
                    protocol_major: PROTOCOL_MAJOR,
                    protocol_minor: 0,
                },
            );
            let mut seq = 1u16;
            while !stop2.load(Ordering::Relaxed) {
                send(&mut writer, seq, &ToController::Heartbeat { uptime_ms: 0 });
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (epoch_tx, epochs) = std::sync::mpsc::channel();
        let mut reader = port.try_clone().expect("clone");
        let mut writer = port.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut d = FrameDecoder::<128>::new();
            let mut buf = [0u8; 64];
            let mut next = 0xe1;
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    if let Some(Ok(f)) = d.push::<ToAppliance>(b) {
                        if matches!(f.msg, ToAppliance::Hello { protocol_major, .. } if protocol_major == PROTOCOL_MAJOR)
                        {
                            let epoch = Epoch::new(next).expect("non-zero");
                            next += 1;
                            send(&mut writer, 1000, &ToController::Epoch { epoch });
                            let _ = epoch_tx.send(epoch);
                        }
                    }
                }
            }
        });
        Appliance {
            port,
            stop,
            beats: Some(beats),
            epochs,
            given: Vec::new(),
        }
    }

    /// The epoch given after the controller's `n`th hello, once it has said it.
    fn epoch_after_hello(&mut self, n: usize) -> Epoch {
        while self.given.len() < n {
            let e = self
                .epochs
                .recv_timeout(Duration::from_secs(10))
                .expect("the controller says hello");
            self.given.push(e);
        }
        self.given[n - 1]
    }

    fn decide(&mut self, epoch: Epoch, seq: u32, verdict: Verdict) {
        send(
            &mut self.port,
            100,
            &ToController::Decision {
                epoch,
                seq,
                verdict,
            },
        );
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = self.beats.take() {
            let _ = b.join();
        }
    }
}

fn wait_for(rx: &Receiver<LineEvent>, seen: &mut Vec<LineEvent>, want: &[LineEvent]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|w| seen.contains(w)) {
        assert!(
            Instant::now() < deadline,
            "waiting for {want:?}, saw {seen:?}"
        );
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(50)) {
            seen.push(e);
        }
    }
}

/// The emulator with this test's appliance attached, once the controller has the epoch the
/// appliance gave last; the events seen until then.
struct Connected {
    _pty: Pty,
    emu: LineEmulator,
    events: Receiver<LineEvent>,
    app: Appliance,
    epoch: Epoch,
    seen: Vec<LineEvent>,
}

fn connected() -> Connected {
    let pty = Pty::open().expect("pty");
    let mut emu = LineEmulator::start(pty.master().expect("master"), fast_belt()).expect("start");
    let events = emu.take_events().expect("events");
    let mut app = Appliance::attach(&pty);
    // The controller says hello at boot and again when asked: two epochs, the last stands.
    let epoch = app.epoch_after_hello(2);
    let mut seen = Vec::new();
    wait_for(
        &events,
        &mut seen,
        &[LineEvent::LinkUp, LineEvent::EpochAssigned { epoch }],
    );
    Connected {
        _pty: pty,
        emu,
        events,
        app,
        epoch,
        seen,
    }
}

impl Connected {
    /// Waits until every one of `want` has been seen.
    fn wait(&mut self, want: &[LineEvent]) {
        wait_for(&self.events, &mut self.seen, want);
    }

    /// A parcel on the belt; waits until it has entered as `seq`.
    fn enter(&mut self, seq: u32) {
        self.emu.place_parcel(200);
        self.wait(&[LineEvent::Entered { seq }]);
    }
}

#[test]
fn the_appliance_decides_and_the_line_obeys() {
    let mut l = connected();
    let e1 = l.epoch;
    l.enter(1);
    l.enter(2);
    l.app.decide(e1, 1, Verdict::Pass);
    l.app.decide(e1, 2, Verdict::Divert);
    l.wait(&[LineEvent::Passed { seq: 1 }, LineEvent::Diverted { seq: 2 }]);
    assert!(l.seen.contains(&LineEvent::DecisionReceived {
        epoch: e1,
        seq: 2,
        verdict: Verdict::Divert
    }));
    assert!(
        !l.seen
            .iter()
            .any(|e| matches!(e, LineEvent::FailSafe { .. })),
        "{:?}",
        l.seen
    );
    drop(l.app);
    l.emu.shutdown();
}

#[test]
fn after_a_reboot_a_decision_of_the_last_boot_is_refused_and_its_seq_diverted() {
    let mut l = connected();
    let e1 = l.epoch;
    // Parcel 1 of this boot leaves the belt undecided: its decision is still to come.
    l.emu.place_parcel(200);
    l.wait(&[LineEvent::Diverted { seq: 1 }]);

    l.emu.reboot();
    // The new boot says hello; the appliance answers with a new epoch.
    let e2 = l.app.epoch_after_hello(3);
    l.wait(&[LineEvent::EpochAssigned { epoch: e2 }]);
    let boot = l
        .seen
        .iter()
        .position(|e| *e == LineEvent::Rebooted)
        .expect("rebooted");
    // From here on, what is seen is this boot's alone.
    l.seen.drain(..boot);
    l.enter(1);
    // The decision meant for parcel 1 of the last boot arrives now.
    l.app.decide(e1, 1, Verdict::Pass);
    l.wait(&[
        LineEvent::StaleDecision { epoch: e1, seq: 1 },
        LineEvent::FailSafe {
            seq: 1,
            reason: FailSafeReason::DecisionLate,
        },
        LineEvent::Diverted { seq: 1 },
    ]);
    // A decision of this boot's epoch is obeyed.
    l.enter(2);
    l.app.decide(e2, 2, Verdict::Pass);
    l.wait(&[LineEvent::Passed { seq: 2 }]);
    assert!(
        !l.seen.contains(&LineEvent::Passed { seq: 1 }),
        "{:?}",
        l.seen
    );
    drop(l.app);
    l.emu.shutdown();
}

#[test]
fn without_an_appliance_every_parcel_is_diverted_fail_safe() {
    let pty = Pty::open().expect("pty");
    let mut emu = LineEmulator::start(pty.master().expect("master"), fast_belt()).expect("start");
    let events = emu.take_events().expect("events");
    emu.place_parcel(200);
    let mut seen = Vec::new();
    wait_for(
        &events,
        &mut seen,
        &[
            LineEvent::FailSafe {
                seq: 1,
                reason: FailSafeReason::HeartbeatLost,
            },
            LineEvent::Diverted { seq: 1 },
        ],
    );
    emu.shutdown();
}
