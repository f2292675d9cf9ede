//! One simulated line for an installed appliance: the line controller (the real firmware core
//! behind a pseudo-terminal) and the waybill reader (a second pseudo-terminal), reachable by
//! the names a site's udev rule would give them, and an X-ray machine that drops one image
//! into the line's drop folder. Sends one parcel down the belt and waits for the appliance's
//! decision: the package's install test runs it beside the real systemd service.
//!
//! ```text
//! screenline-line-sim --links DIR --line L1 --group GID --record FILE --image FILE.png \
//!     --waybill NO --xray-dir DIR [--timeout-s 120]
//! ```
//!
//! Prints every line event, one per line, and `decision VERDICT` once the appliance has
//! decided; exits 0 when the parcel has left the belt by the appliance's decision, 1 when the
//! controller fell back to its fail-safe, 2 on a timeout or bad arguments.

use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator, LineEvent};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// When the X-ray machine finishes its image after the photo-eye, as on a real line.
const IMAGE_DELAY: Duration = Duration::from_millis(300);
/// A parcel of ordinary length.
const PARCEL_MM: u32 = 400;

struct Args {
    links: PathBuf,
    line: String,
    group: u32,
    record: PathBuf,
    image: PathBuf,
    waybill: String,
    xray_dir: PathBuf,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut links, mut line, mut group, mut record) = (None, None, None, None);
    let (mut image, mut waybill, mut xray_dir, mut timeout) = (None, None, None, 120u64);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--links" => links = Some(PathBuf::from(value()?)),
            "--line" => line = Some(value()?),
            "--group" => group = Some(value()?.parse().map_err(|e| format!("--group: {e}"))?),
            "--record" => record = Some(PathBuf::from(value()?)),
            "--image" => image = Some(PathBuf::from(value()?)),
            "--waybill" => waybill = Some(value()?),
            "--xray-dir" => xray_dir = Some(PathBuf::from(value()?)),
            "--timeout-s" => timeout = value()?.parse().map_err(|e| format!("--timeout-s: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    fn need<T>(v: Option<T>, name: &str) -> Result<T, String> {
        v.ok_or(format!("{name} is required"))
    }
    Ok(Args {
        links: need(links, "--links")?,
        line: need(line, "--line")?,
        group: need(group, "--group")?,
        record: need(record, "--record")?,
        image: need(image, "--image")?,
        waybill: need(waybill, "--waybill")?,
        xray_dir: need(xray_dir, "--xray-dir")?,
        timeout: Duration::from_secs(timeout),
    })
}

/// Gives a pseudo-terminal to the service's group and names it as udev would.
fn expose(pty: &Pty, group: u32, link: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(pty.slave_path(), None, Some(group))?;
    std::fs::set_permissions(pty.slave_path(), std::fs::Permissions::from_mode(0o660))?;
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(pty.slave_path(), link)
}

/// Waits for the first event that `done` picks, printing every event on the way.
fn wait_for<T>(
    events: &Receiver<LineEvent>,
    deadline: Instant,
    mut done: impl FnMut(&LineEvent) -> Option<T>,
) -> Option<T> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) => {
                println!("{e:?}");
                if let Some(t) = done(&e) {
                    return Some(t);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Drops the image as an X-ray machine does: the sidecar naming the waybill, then the image
/// renamed into place, so that the appliance never sees half a file.
fn drop_image(args: &Args) -> std::io::Result<()> {
    let scan = format!("{}-sim-0001", args.line);
    let sidecar = format!("{{\"waybill\":\"{}\"}}", args.waybill);
    std::fs::write(args.xray_dir.join(format!("{scan}.json")), sidecar)?;
    let part = args.xray_dir.join(format!(".{scan}.png.part"));
    std::fs::copy(&args.image, &part)?;
    std::fs::rename(&part, args.xray_dir.join(format!("{scan}.png")))
}

fn run(args: &Args) -> Result<u8, String> {
    let record = std::fs::read_to_string(&args.record)
        .map_err(|e| format!("{}: {e}", args.record.display()))?;
    let reader = Pty::open().map_err(|e| format!("reader pseudo-terminal: {e}"))?;
    let controller = Pty::open().map_err(|e| format!("controller pseudo-terminal: {e}"))?;
    for (pty, role) in [(&reader, "reader"), (&controller, "controller")] {
        let link = args.links.join(format!("{}-{role}", args.line));
        expose(pty, args.group, &link).map_err(|e| format!("{}: {e}", link.display()))?;
        println!(
            "{role} {} -> {}",
            link.display(),
            pty.slave_path().display()
        );
    }
    let master = controller
        .master()
        .map_err(|e| format!("controller: {e}"))?;
    let mut emulator =
        LineEmulator::start(master, BeltConfig::default()).map_err(|e| format!("emulator: {e}"))?;
    let events = emulator.take_events().ok_or("the emulator's events")?;
    let deadline = Instant::now() + args.timeout;
    let _ = std::io::stdout().flush();

    // The controller says hello twice: at boot, and in answer to the appliance's hello when
    // it opens the port. The appliance gives an epoch for each, and a parcel that enters
    // before the second would be diverted fail-safe when it comes (the epoch changed).
    let mut epochs = 0;
    wait_for(&events, deadline, |e| {
        if matches!(e, LineEvent::EpochAssigned { .. }) {
            epochs += 1;
        }
        (epochs == 2).then_some(())
    })
    .ok_or("the appliance never gave the line controller its epoch")?;
    let mut reader_tx = reader.master().map_err(|e| format!("reader: {e}"))?;
    reader_tx
        .write_all(format!("{}\r\n", record.trim()).as_bytes())
        .map_err(|e| format!("reader write: {e}"))?;
    emulator.place_parcel(PARCEL_MM);
    std::thread::sleep(IMAGE_DELAY);
    drop_image(args).map_err(|e| format!("{}: {e}", args.xray_dir.display()))?;

    let outcome = wait_for(&events, deadline, |e| match e {
        LineEvent::DecisionReceived { verdict, .. } => {
            println!("decision {verdict:?}");
            None
        }
        LineEvent::Diverted { .. } | LineEvent::Passed { .. } => Some(0),
        LineEvent::FailSafe { .. } => Some(1),
        _ => None,
    })
    .ok_or("the parcel never left the belt")?;
    let _ = std::io::stdout().flush();
    emulator.shutdown();
    Ok(outcome)
}

fn main() -> std::process::ExitCode {
    let result = parse_args().and_then(|a| run(&a));
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("screenline-line-sim: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
