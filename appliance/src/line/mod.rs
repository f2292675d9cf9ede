//! The line's sources — waybill reader, line-controller link, X-ray drop folder — and the join
//! that makes one [`Parcel`] of them.
//!
//! Each source is a task that feeds one bounded channel per line; the join task owns the
//! line's [`join::Joiner`] and passes complete parcels on to screening. While the reader is
//! down, parcels still leave the join (as `no_read`) and so go to manual inspection: a dead
//! reader never clears a parcel.

pub mod config;
pub mod controller;
pub mod dropfile;
pub mod image;
pub mod quarantine;
pub mod reader;
pub mod serial;
pub mod xray;

pub use screenline_core::{invariants, join, waybill};

use crate::domain::{Parcel, XrayScan};
use crate::telemetry::{Device, LineCounter, LinkId, Telemetry};
use config::LineConfig;
use screenline_protocol::ToController;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use waybill::ReadRecord;

/// An input to a line's join.
#[derive(Debug)]
pub enum LineInput {
    /// A waybill record read at this instant.
    Read(Box<ReadRecord>, Instant),
    /// The photo-eye saw parcel `seq` of controller epoch `epoch`.
    Entered {
        seq: u32,
        epoch: Option<screenline_protocol::Epoch>,
        at: Instant,
        wall: SystemTime,
    },
    /// An image complete in the drop folder.
    Image(XrayScan, Instant),
}

/// Starts one line's sources and its join. Parcels go to `parcels`; decisions for the line
/// controller are taken from the returned sender.
pub fn spawn(
    set: &mut crate::supervise::StageSet,
    stages: &Arc<crate::supervise::Stages>,
    line: &LineConfig,
    data_dir: &std::path::Path,
    parcels: mpsc::Sender<Parcel>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> mpsc::Sender<ToController> {
    let (input_tx, input_rx) = mpsc::channel::<LineInput>(256);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<ToController>(64);

    {
        let reader = LinkId::new(&line.id, Device::Reader);
        let link = serial::Link::new(
            reader.clone(),
            line.reader_port.clone(),
            line.reader_baud,
            telemetry.clone(),
            shutdown.clone(),
        );
        set.spawn(
            reader.to_string(),
            reader::run(
                line.id.clone(),
                link,
                line.reader_framing,
                input_tx.clone(),
                telemetry.clone(),
            ),
        );
    }
    {
        let (id, out) = (line.id.clone(), input_tx.clone());
        let geometry = line.controller.and_then(|g| g.controller_config());
        let controller = LinkId::new(&id, Device::Controller);
        let mut link = serial::Link::new(
            controller.clone(),
            line.controller_port.clone(),
            line.controller_baud,
            telemetry.clone(),
            shutdown.clone(),
        );
        let telemetry = telemetry.clone();
        set.spawn(controller.to_string(), async move {
            let mut epochs = controller::Epochs::random();
            while let Some(port) = link.open().await {
                let r = tokio::select! {
                    r = controller::session(&id, port, geometry, &mut epochs, &mut cmd_rx, &out, &telemetry) => r,
                    _ = link.shutdown().cancelled() => return,
                };
                link.closed(r);
            }
        });
    }
    let policy = xray::XrayPolicy::for_line(line, data_dir);
    set.spawn(
        LinkId::new(&line.id, Device::Xray).to_string(),
        xray::watch(
            line.id.clone(),
            line.xray_dir.clone(),
            policy.clone(),
            input_tx,
            telemetry.clone(),
            shutdown.clone(),
        ),
    );
    let join_stage = stages.stage(format!("{}.join", line.id));
    set.spawn(
        format!("{}.join", line.id),
        run_join(
            join::Joiner::new(
                line.id.clone(),
                join::JoinTiming {
                    window: Duration::from_millis(line.join_window_ms),
                    read_window: Duration::from_millis(line.read_window_ms),
                    image_delay: Duration::from_millis(line.image_delay_ms),
                    image_window: Duration::from_millis(line.image_window_ms),
                },
            ),
            input_rx,
            policy,
            parcels,
            telemetry,
            join_stage,
            shutdown,
        ),
    );
    cmd_tx
}

async fn run_join(
    mut joiner: join::Joiner,
    mut inputs: mpsc::Receiver<LineInput>,
    policy: xray::XrayPolicy,
    parcels: mpsc::Sender<Parcel>,
    telemetry: Arc<Telemetry>,
    stage: crate::supervise::Stage,
    shutdown: CancellationToken,
) {
    loop {
        let deadline = joiner
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            input = inputs.recv() => match input {
                None => return,
                Some(LineInput::Read(r, at)) => joiner.on_read(*r, at),
                Some(LineInput::Entered { seq, epoch, at, wall }) => joiner.on_entered(seq, epoch, at, wall),
                Some(LineInput::Image(scan, at)) => joiner.on_image(scan, at),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let working = stage.work();
        let left = joiner.poll(Instant::now());
        for note in joiner.take_notes() {
            telemetry.incr_line(joiner.line_id(), LineCounter::JoinNote(note));
        }
        for (scan, why) in joiner.take_orphans() {
            policy.orphaned(joiner.line_id(), &scan, why, &telemetry);
        }
        drop(working);
        for parcel in left {
            telemetry.incr_line(&parcel.line_id, LineCounter::JoinParcels);
            telemetry.incr_line(&parcel.line_id, LineCounter::Joined(join::outcome(&parcel)));
            if parcels.send(parcel).await.is_err() {
                return;
            }
        }
    }
}
