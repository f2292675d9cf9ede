//! The line-controller link: speaks the firmware's framed protocol over the serial port.
//!
//! Inbound, parcel-entered events become [`LineInput::Entered`] for the join; what the
//! controller did with each parcel (passed, diverted, fail-safe) goes to telemetry. Outbound,
//! it sends our heartbeat — whose absence makes the controller divert everything — and the
//! decisions and stack-light states the pipeline hands it.
//!
//! After every hello from the controller (at its boot, and in answer to ours) the link gives
//! it a fresh [`Epoch`], and from then on sends only decisions that name that epoch: a
//! decision for a parcel that entered before the hello — queued here, or still being
//! screened — is dropped, because the controller may have rebooted and reused its sequence
//! number for another parcel. The controller diverts such a parcel on its own.

use super::LineInput;
use crate::telemetry::{Device, Gauge, LineCounter, Link, ParcelOutcome, Telemetry};
use anyhow::{bail, Context};
use screenline_protocol::{
    encode_frame, ControllerConfig, Epoch, FrameDecoder, FrameError, StackLight, ToAppliance,
    ToController, MAX_FRAME_LEN, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

/// How often the appliance tells the controller it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(200);

/// How long a controller fault keeps the stack light red.
const FAULT_RED: Duration = Duration::from_secs(60);

/// What the appliance asks the stack light to show: green while the line can be screened,
/// amber while the waybill reader or the X-ray folder is down (every parcel goes to manual
/// inspection), red for a while after the controller reported a fault a technician must see.
/// While the appliance is silent the controller shows amber on its own.
pub fn wanted_light(
    line_id: &str,
    telemetry: &Telemetry,
    last_fault: Option<Instant>,
) -> StackLight {
    if last_fault.is_some_and(|t| t.elapsed() < FAULT_RED) {
        StackLight::Red
    } else if telemetry.link_up(&Link::line(line_id, Device::Reader))
        && telemetry.link_up(&Link::line(line_id, Device::Xray))
    {
        StackLight::Green
    } else {
        StackLight::Amber
    }
}

/// Commands for one line's controller.
pub type Commands = mpsc::Receiver<ToController>;

/// The epochs one line's link gives its controller: a random start, then one after the other,
/// so that no two hellos of this process get the same epoch (a decision of an earlier one
/// could otherwise pass for one of the later), and a restarted appliance most likely starts
/// elsewhere.
pub struct Epochs {
    next: u32,
}

impl Epochs {
    /// A sequence from a random start.
    pub fn random() -> Epochs {
        Epochs {
            next: rand::random(),
        }
    }

    /// The next epoch; never zero, never one given before by this sequence (until 2³² − 1
    /// hellos).
    pub fn fresh(&mut self) -> Epoch {
        loop {
            let n = self.next;
            self.next = self.next.wrapping_add(1);
            if let Some(e) = Epoch::new(n) {
                return e;
            }
        }
    }
}

/// What a technician must do when the controller speaks protocol `got`.x.
fn version_advice(got: u8) -> String {
    let update = if got < PROTOCOL_MAJOR {
        "update the controller's firmware (firmware/README.md)"
    } else {
        "update this appliance (screenline) to a release that speaks it"
    };
    format!(
        "the controller speaks protocol {got}.x, this appliance {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}: {update}"
    )
}

struct Writer {
    seq: u16,
}

/// Forgets the line's stack light when dropped.
struct LightUnknown<'a> {
    line_id: &'a str,
    telemetry: &'a Telemetry,
}

impl Drop for LightUnknown<'_> {
    fn drop(&mut self) {
        self.telemetry.set_light(self.line_id, None);
    }
}

impl Writer {
    async fn send(&mut self, port: &mut SerialStream, msg: &ToController) -> anyhow::Result<()> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(self.seq, msg, &mut buf)
            .map_err(|e| anyhow::anyhow!("encoding {msg:?}: {e:?}"))?;
        self.seq = self.seq.wrapping_add(1);
        port.write_all(&buf[..n])
            .await
            .context("writing to the line controller")
    }
}

/// Runs the protocol on an open port until it disconnects. After every hello from the
/// controller it sends a fresh epoch from `epochs`, then `geometry` when the line's
/// configuration has one.
pub async fn session(
    line_id: &str,
    mut port: SerialStream,
    geometry: Option<ControllerConfig>,
    epochs: &mut Epochs,
    commands: &mut Commands,
    out: &mpsc::Sender<LineInput>,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    // However the session ends (an error, the port gone, the task cancelled), what the
    // light shows is unknown from then on.
    let _light_unknown = LightUnknown { line_id, telemetry };
    let link = Link::line(line_id, Device::Controller);
    let mut writer = Writer { seq: 0 };
    let mut decoder = FrameDecoder::<{ MAX_FRAME_LEN * 2 }>::new();
    writer
        .send(
            &mut port,
            &ToController::Hello {
                protocol_major: PROTOCOL_MAJOR,
                protocol_minor: PROTOCOL_MINOR,
            },
        )
        .await?;
    let started = Instant::now();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The light follows the reader's and the X-ray folder's links, and a fault's time.
    let mut links = telemetry.watch_links();
    let mut light_sent: Option<StackLight> = None;
    let mut last_fault: Option<Instant> = None;
    // None until the controller's first hello on this connection: no parcel of it can have
    // been decided before, so every queued decision is stale until then.
    let mut epoch: Option<Epoch> = None;
    let mut buf = [0u8; 512];
    loop {
        let want = wanted_light(line_id, telemetry, last_fault);
        if light_sent != Some(want) {
            writer
                .send(&mut port, &ToController::StackLight { light: want })
                .await?;
            light_sent = Some(want);
        }
        let fault_over = last_fault.map(|t| t + FAULT_RED);
        tokio::select! {
            read = port.read(&mut buf) => {
                let n = read.context("reading the line controller")?;
                if n == 0 {
                    return Ok(());
                }
                telemetry.seen(&link);
                for &b in &buf[..n] {
                    match decoder.push::<ToAppliance>(b) {
                        None => {}
                        Some(Ok(frame)) => {
                            match frame.msg {
                                ToAppliance::Hello { .. } => {
                                    let fresh = epochs.fresh();
                                    writer.send(&mut port, &ToController::Epoch { epoch: fresh }).await?;
                                    epoch = Some(fresh);
                                    telemetry.incr_line(line_id, LineCounter::ControllerEpochs);
                                    if let Some(g) = geometry {
                                        writer.send(&mut port, &ToController::Configure(g)).await?;
                                    }
                                    // Whatever it showed before, it gets our view again.
                                    light_sent = None;
                                }
                                ToAppliance::Fault { .. } => last_fault = Some(Instant::now()),
                                _ => {}
                            }
                            let pipeline_alive = handle(line_id, &link, frame.msg, out, telemetry).await?;
                            if !pipeline_alive {
                                return Ok(());
                            }
                        }
                        Some(Err(FrameError::Version { got })) => {
                            // The decoder refuses the frame; the technician must hear why.
                            telemetry.incr_line(line_id, LineCounter::ControllerVersionMismatches);
                            let why = version_advice(got);
                            telemetry.link(link.clone(), false, why.clone());
                            tracing::error!(line = line_id, "{why}");
                        }
                        Some(Err(e)) => {
                            telemetry.incr_line(line_id, LineCounter::ControllerBadFrames);
                            tracing::warn!(line = line_id, error = %e, "line-controller frame dropped");
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                let uptime_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                writer.send(&mut port, &ToController::Heartbeat { uptime_ms }).await?;
            }
            // Looked at again at the top of the loop.
            Ok(()) = links.changed() => {}
            _ = tokio::time::sleep_until(fault_over.unwrap_or_else(Instant::now).into()), if fault_over.is_some() => {}
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                if let ToController::Decision { epoch: named, seq, verdict } = cmd {
                    if Some(named) != epoch {
                        // Never carried across a hello: the controller may be a new boot whose
                        // parcel `seq` is another parcel. It diverts this one on its own.
                        telemetry.incr_line(line_id, LineCounter::ControllerStaleDecisionsDropped);
                        tracing::warn!(
                            line = line_id,
                            seq,
                            epoch = %named,
                            ?verdict,
                            "decision dropped: its parcel entered before the controller's last hello"
                        );
                        continue;
                    }
                }
                writer.send(&mut port, &cmd).await?;
            }
        }
    }
}

/// Counts what the controller did with parcel `seq`, and shows it beside the decision.
fn outcome(telemetry: &Telemetry, line_id: &str, seq: u32, outcome: ParcelOutcome) {
    telemetry.incr_line(line_id, LineCounter::Outcome(outcome));
    telemetry.parcel_outcome(line_id, seq, outcome);
}

/// Handles one message; `Ok(false)` when the pipeline is gone.
async fn handle(
    line_id: &str,
    link: &Link,
    msg: ToAppliance,
    out: &mpsc::Sender<LineInput>,
    telemetry: &Telemetry,
) -> anyhow::Result<bool> {
    match msg {
        ToAppliance::Hello {
            firmware,
            protocol_major,
            protocol_minor,
        } => {
            if protocol_major != PROTOCOL_MAJOR {
                bail!(
                    "controller speaks protocol {protocol_major}.{protocol_minor}, we speak {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}: update the firmware"
                );
            }
            telemetry.link(
                link.clone(),
                true,
                format!(
                    "firmware {}.{}.{}, protocol {protocol_major}.{protocol_minor}",
                    firmware[0], firmware[1], firmware[2]
                ),
            );
        }
        ToAppliance::ParcelEntered { epoch, seq, .. } => {
            telemetry.incr_line(line_id, LineCounter::ControllerParcelsEntered);
            let input = LineInput::Entered {
                seq,
                epoch,
                at: Instant::now(),
                wall: SystemTime::now(),
            };
            if out.send(input).await.is_err() {
                return Ok(false);
            }
        }
        ToAppliance::ParcelDiverted { seq, .. } => {
            outcome(telemetry, line_id, seq, ParcelOutcome::Diverted);
        }
        ToAppliance::ParcelPassed { seq, .. } => {
            outcome(telemetry, line_id, seq, ParcelOutcome::Passed);
        }
        ToAppliance::FailSafeDivert { seq, reason } => {
            tracing::warn!(
                line = line_id,
                seq,
                ?reason,
                "controller diverted a parcel fail-safe"
            );
            outcome(telemetry, line_id, seq, ParcelOutcome::FailSafe);
        }
        ToAppliance::Heartbeat { belt_mm_per_s, .. } => {
            telemetry.set(
                Gauge::BeltSpeedMillimetresPerSecond(line_id.to_owned()),
                u64::from(belt_mm_per_s),
            );
        }
        ToAppliance::Fault { code } => {
            telemetry.incr_line(line_id, LineCounter::ControllerFaults);
            tracing::error!(line = line_id, ?code, "line controller fault");
        }
        ToAppliance::StackLight { light } => {
            telemetry.set_light(line_id, Some(light));
        }
        ToAppliance::StaleDecision { epoch, seq } => {
            // The link drops these before sending, so one here means a decision crossed a
            // hello on the wire (say, bytes buffered in the adapter through a reset).
            telemetry.incr_line(line_id, LineCounter::ControllerStaleDecisions);
            tracing::warn!(
                line = line_id,
                seq,
                %epoch,
                "the controller ignored a decision of an earlier epoch"
            );
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use screenline_emulator::pty::Pty;
    use std::io::Write;
    use tokio_serial::SerialPortBuilderExt;

    /// Plays a controller of protocol `major` saying hello to a session; returns the link's
    /// state once the session has refused it.
    async fn refusal_from_a_controller_of(major: u8) -> crate::telemetry::LinkState {
        let pty = Pty::open().expect("pty");
        let port = tokio_serial::new(pty.slave_path().to_string_lossy(), 115_200)
            .open_native_async()
            .expect("open the pty");
        let mut frame = [0u8; MAX_FRAME_LEN];
        // Hello is the first message of every generation, with the same fields.
        let hello = ToAppliance::Hello {
            firmware: [major, 0, 0],
            protocol_major: major,
            protocol_minor: 0,
        };
        let n = screenline_protocol::encode_frame_as(major, 0, &hello, &mut frame).expect("encode");
        pty.master()
            .expect("master")
            .write_all(&frame[..n])
            .expect("write");
        let telemetry = Telemetry::default();
        let (out, _parcels) = mpsc::channel(4);
        let (_cmd_tx, mut commands) = mpsc::channel(4);
        let count = |c| telemetry.get(crate::telemetry::Counter::line("L1", c));
        let refused = async {
            while count(LineCounter::ControllerVersionMismatches) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let mut epochs = Epochs::random();
        tokio::select! {
            r = session("L1", port, None, &mut epochs, &mut commands, &out, &telemetry) => panic!("session ended: {r:?}"),
            _ = tokio::time::timeout(Duration::from_secs(5), refused) => {}
        }
        assert_eq!(count(LineCounter::ControllerVersionMismatches), 1);
        assert_eq!(
            count(LineCounter::ControllerEpochs),
            0,
            "no epoch for a refused hello"
        );
        telemetry.links()[&Link::line("L1", Device::Controller)].clone()
    }

    #[tokio::test]
    async fn a_controller_of_another_major_version_is_refused_with_what_to_do() {
        // Protocol 1, before epochs: its decisions cannot name a boot, so it must be updated.
        let older = refusal_from_a_controller_of(1).await;
        assert!(!older.up);
        assert!(
            older.detail.contains("protocol 1.x")
                && older.detail.contains("update the controller's firmware"),
            "{}",
            older.detail
        );
        let newer = refusal_from_a_controller_of(PROTOCOL_MAJOR + 1).await;
        assert!(!newer.up);
        assert!(
            newer.detail.contains("update this appliance"),
            "{}",
            newer.detail
        );
    }

    #[test]
    fn epochs_are_never_zero_and_never_repeat_across_the_wrap() {
        let mut e = Epochs { next: u32::MAX - 1 };
        let got: Vec<u32> = (0..4).map(|_| e.fresh().get()).collect();
        assert_eq!(got, [u32::MAX - 1, u32::MAX, 1, 2]);
    }
}
