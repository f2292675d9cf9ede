//! The waybill reader source: bytes from the serial port through the framer and the payload
//! parser into [`LineInput::Read`]. A bad record is counted and logged (identity never
//! logged) and the reader goes on with the next one.

use super::waybill::{parse_record, today, Framed, Framer, Framing};
use super::LineInput;
use crate::telemetry::{Device, LineCounter, Link, Telemetry};
use anyhow::Context;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

/// The reader's link for a line's lifetime: opens the port, reads until it disconnects,
/// reopens with backoff ([`super::serial::Link`]), until shutdown. While it is down no read
/// reaches the join, so the line's parcels leave it as `no_read` — manual inspection.
pub async fn run(
    line_id: String,
    mut link: super::serial::Link,
    framing: Framing,
    out: mpsc::Sender<LineInput>,
    telemetry: std::sync::Arc<Telemetry>,
) {
    while let Some(port) = link.open().await {
        let r = tokio::select! {
            r = session(&line_id, port, framing, &out, &telemetry) => r,
            _ = link.shutdown().cancelled() => return,
        };
        if out.is_closed() {
            return;
        }
        {
            tracing::warn!(line = %line_id, "waybill reader disconnected: parcels go to manual inspection until it is back");
        }
        link.closed(r);
    }
}

/// Reads records from an open port until it disconnects.
pub async fn session(
    line_id: &str,
    mut port: SerialStream,
    framing: Framing,
    out: &mpsc::Sender<LineInput>,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    let mut framer = Framer::new(framing);
    let device = Link::line(line_id, Device::Reader);
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
        telemetry.seen(&device);
        for item in framer.push(&buf[..n]) {
            match item {
                Framed::Record(text) => match parse_record(&text, today()) {
                    Ok(record) => {
                        telemetry.incr_line(line_id, LineCounter::ReaderRecords);
                        if out
                            .send(LineInput::Read(Box::new(record), Instant::now()))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        telemetry.incr_line(line_id, LineCounter::ReaderBadPayloads);
                        tracing::warn!(line = line_id, error = %e, "waybill record dropped");
                    }
                },
                Framed::Dropped(e) => {
                    telemetry.incr_line(line_id, LineCounter::ReaderFramingErrors);
                    tracing::warn!(line = line_id, error = %e, "waybill reader framing error");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Counter, LinkId};
    use screenline_emulator::pty::Pty;
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn next_read(rx: &mut mpsc::Receiver<LineInput>) -> String {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(LineInput::Read(r, _))) => r.waybill.waybill.to_string(),
            other => panic!("expected a read, got {other:?}"),
        }
    }

    /// Unplug and replug on real pseudo-terminals, by a udev-style symlink: the link goes
    /// down, is reopened with backoff once the device is back, and reads flow again.
    #[tokio::test]
    async fn an_unplugged_reader_is_reopened_when_it_comes_back() {
        let dir = crate::testutil::temp_dir("reader");
        let name = dir.join("L1-reader");
        let telemetry = Arc::new(Telemetry::default());
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(16);

        // No device yet: the link waits, down.
        let reader = Link::line("L1", Device::Reader);
        let link = crate::line::serial::Link::new(
            LinkId::new("L1", Device::Reader),
            name.clone(),
            9600,
            telemetry.clone(),
            shutdown.clone(),
        );
        let task = tokio::spawn(run("L1".into(), link, Framing::Line, tx, telemetry.clone()));
        until("the link reported down", || {
            telemetry.link_state(&reader).is_some_and(|l| !l.up)
        })
        .await;

        let pty = Pty::open().expect("pty");
        std::os::unix::fs::symlink(pty.slave_path(), &name).expect("symlink");
        until("the link up", || telemetry.link_up(&reader)).await;
        let mut master = pty.master().expect("master");
        master.write_all(b"SF1000000000001\r\n").expect("write");
        assert_eq!(next_read(&mut rx).await, "SF1000000000001");

        // Unplug: the device and its name vanish.
        drop(master);
        pty.hang_up();
        std::fs::remove_file(&name).expect("unlink");
        until("the link down", || !telemetry.link_up(&reader)).await;
        let count = |c| telemetry.get(Counter::line("L1", c));
        assert_eq!(count(LineCounter::SerialDisconnects(Device::Reader)), 1);
        let detail = telemetry.links()[&reader].detail.clone();
        assert!(detail.contains("L1-reader"), "{detail}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!telemetry.link_up(&reader));

        // Replug: a new device node behind the same name.
        let pty = Pty::open().expect("pty");
        std::os::unix::fs::symlink(pty.slave_path(), &name).expect("symlink");
        until("the link up again", || telemetry.link_up(&reader)).await;
        assert_eq!(count(LineCounter::SerialOpens(Device::Reader)), 2);
        let mut master = pty.master().expect("master");
        master.write_all(b"SF1000000000002\r\n").expect("write");
        assert_eq!(next_read(&mut rx).await, "SF1000000000002");

        shutdown.cancel();
        task.await.expect("reader task");
    }
}
