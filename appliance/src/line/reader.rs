//! The waybill reader source: bytes from the serial port through the framer and the payload
//! parser into [`LineInput::Read`]. A bad record is counted and logged (identity never
//! logged) and the reader goes on with the next one.

use super::waybill::{parse_record, today, Framed, Framer, Framing};
use super::LineInput;
use crate::telemetry::Telemetry;
use anyhow::Context;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

/// Reads records from an open port until it disconnects.
pub async fn session(
    line_id: &str,
    mut port: SerialStream,
    framing: Framing,
    out: &mpsc::Sender<LineInput>,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    let mut framer = Framer::new(framing);
    let mut buf = [0u8; 1024];
    loop {
        let n = port
            .read(&mut buf)
            .await
            .context("reading the waybill reader")?;
        if n == 0 {
            // After a USB unplug, Linux reports end-of-file forever: treat it as a disconnect.
            return Ok(());
        }
        for item in framer.push(&buf[..n]) {
            match item {
                Framed::Record(text) => match parse_record(&text, today()) {
                    Ok(record) => {
                        telemetry.incr("reader.records");
                        if out
                            .send(LineInput::Read(Box::new(record), Instant::now()))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        telemetry.incr("reader.bad_payload");
                        tracing::warn!(line = line_id, error = %e, "waybill record dropped");
                    }
                },
                Framed::Dropped(e) => {
                    telemetry.incr("reader.framing_errors");
                    tracing::warn!(line = line_id, error = %e, "waybill reader framing error");
                }
            }
        }
    }
}
