//! The line-controller link: speaks the firmware's framed protocol over the serial port.
//!
//! Inbound, parcel-entered events become [`LineInput::Entered`] for the join; what the
//! controller did with each parcel (passed, diverted, fail-safe) goes to telemetry. Outbound,
//! it sends our heartbeat — whose absence makes the controller divert everything — and the
//! decisions and stack-light states the pipeline hands it.

use super::LineInput;
use crate::telemetry::Telemetry;
use anyhow::{bail, Context};
use screenline_protocol::{
    encode_frame, FrameDecoder, ToAppliance, ToController, MAX_FRAME_LEN, PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

/// How often the appliance tells the controller it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(200);

/// Commands for one line's controller.
pub type Commands = mpsc::Receiver<ToController>;

struct Writer {
    seq: u16,
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

/// Runs the protocol on an open port until it disconnects.
pub async fn session(
    line_id: &str,
    mut port: SerialStream,
    commands: &mut Commands,
    out: &mpsc::Sender<LineInput>,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    let link = format!("{line_id}.controller");
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
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            read = port.read(&mut buf) => {
                let n = read.context("reading the line controller")?;
                if n == 0 {
                    return Ok(());
                }
                for &b in &buf[..n] {
                    match decoder.push::<ToAppliance>(b) {
                        None => {}
                        Some(Ok(frame)) => {
                            let pipeline_alive = handle(line_id, &link, frame.msg, out, telemetry).await?;
                            if !pipeline_alive {
                                return Ok(());
                            }
                        }
                        Some(Err(e)) => {
                            telemetry.incr("controller.bad_frames");
                            tracing::warn!(line = line_id, error = ?e, "line-controller frame dropped");
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                let uptime_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                writer.send(&mut port, &ToController::Heartbeat { uptime_ms }).await?;
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                writer.send(&mut port, &cmd).await?;
            }
        }
    }
}

/// Handles one message; `Ok(false)` when the pipeline is gone.
async fn handle(
    line_id: &str,
    link: &str,
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
                link,
                true,
                format!(
                    "firmware {}.{}.{}, protocol {protocol_major}.{protocol_minor}",
                    firmware[0], firmware[1], firmware[2]
                ),
            );
        }
        ToAppliance::ParcelEntered { seq, .. } => {
            telemetry.incr("controller.parcels_entered");
            let input = LineInput::Entered {
                seq,
                at: Instant::now(),
                wall: SystemTime::now(),
            };
            if out.send(input).await.is_err() {
                return Ok(false);
            }
        }
        ToAppliance::ParcelDiverted { seq, .. } => {
            telemetry.incr("controller.diverted");
            telemetry.parcel_outcome(line_id, seq, "diverted");
        }
        ToAppliance::ParcelPassed { seq, .. } => {
            telemetry.incr("controller.passed");
            telemetry.parcel_outcome(line_id, seq, "passed");
        }
        ToAppliance::FailSafeDivert { seq, reason } => {
            telemetry.incr("controller.fail_safe");
            tracing::warn!(
                line = line_id,
                seq,
                ?reason,
                "controller diverted a parcel fail-safe"
            );
            telemetry.parcel_outcome(line_id, seq, "fail-safe");
        }
        ToAppliance::Heartbeat { belt_mm_per_s, .. } => {
            telemetry.set(
                &format!("{line_id}.belt_mm_per_s"),
                u64::from(belt_mm_per_s),
            );
        }
        ToAppliance::Fault { code } => {
            telemetry.incr("controller.faults");
            tracing::error!(line = line_id, ?code, "line controller fault");
        }
    }
    Ok(true)
}
