//! The emulator behind a real pseudo-terminal, with this test acting as the appliance.

use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator, LineEvent};
use screenline_protocol::{
    encode_frame, FailSafeReason, FrameDecoder, ToAppliance, ToController, Verdict, MAX_FRAME_LEN,
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

#[test]
fn the_appliance_decides_and_the_line_obeys() {
    let pty = Pty::open().expect("pty");
    let mut emu = LineEmulator::start(pty.master().expect("master"), fast_belt()).expect("start");
    let events = emu.take_events().expect("events");
    let mut port = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pty.slave_path())
        .expect("slave");

    // The appliance's side: heartbeats from one thread, frames read on another.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = port.try_clone().expect("clone");
    let stop2 = stop.clone();
    let beats = std::thread::spawn(move || {
        send(
            &mut writer,
            0,
            &ToController::Hello {
                protocol_major: 1,
                protocol_minor: 0,
            },
        );
        let mut seq = 1u16;
        while !stop2.load(Ordering::Relaxed) {
            send(&mut writer, seq, &ToController::Heartbeat { uptime_ms: 0 });
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(100));
        }
        writer
    });
    let (hello_tx, hello_rx) = std::sync::mpsc::channel();
    let mut reader = port.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut d = FrameDecoder::<128>::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if let Some(Ok(f)) = d.push::<ToAppliance>(b) {
                    if matches!(
                        f.msg,
                        ToAppliance::Hello {
                            protocol_major: 1,
                            ..
                        }
                    ) {
                        let _ = hello_tx.send(());
                    }
                }
            }
        }
    });
    hello_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the controller says hello");

    let mut seen = Vec::new();
    wait_for(&events, &mut seen, &[LineEvent::LinkUp]);
    emu.place_parcel(200);
    wait_for(&events, &mut seen, &[LineEvent::Entered { seq: 1 }]);
    emu.place_parcel(200);
    wait_for(&events, &mut seen, &[LineEvent::Entered { seq: 2 }]);
    send(
        &mut port,
        100,
        &ToController::Decision {
            seq: 1,
            verdict: Verdict::Pass,
        },
    );
    send(
        &mut port,
        101,
        &ToController::Decision {
            seq: 2,
            verdict: Verdict::Divert,
        },
    );
    wait_for(
        &events,
        &mut seen,
        &[LineEvent::Passed { seq: 1 }, LineEvent::Diverted { seq: 2 }],
    );
    assert!(seen.contains(&LineEvent::DecisionReceived {
        seq: 2,
        verdict: Verdict::Divert
    }));
    assert!(
        !seen.iter().any(|e| matches!(e, LineEvent::FailSafe { .. })),
        "{seen:?}"
    );

    stop.store(true, Ordering::Relaxed);
    drop(beats.join());
    emu.shutdown();
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
