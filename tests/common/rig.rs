//! One line on real parts for a test: the waybill reader and the line controller on
//! pseudo-terminals (the controller being the real firmware logic in the host emulator) and a
//! real drop folder ([`Line`]); with the real `screenline run` on it and a real Mosquitto
//! behind it, a [`Rig`].

use super::*;
use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator, LineEvent};
use screenline_protocol::Verdict;
use sha2::{Digest, Sha256};
use std::sync::mpsc::Receiver;

/// One simulated line: reader, controller (firmware emulator), drop folder; what the
/// controller saw is kept in [`Line::seen`].
pub struct Line {
    pub emulator: LineEmulator,
    events: Receiver<LineEvent>,
    /// Every line event seen so far, in order.
    pub seen: Vec<LineEvent>,
    /// The reader's pseudo-terminal and our handle on its master end; `None` while unplugged.
    reader: Option<(Pty, std::fs::File)>,
    /// The stable name (as udev gives it) the appliance opens the reader by, if any.
    reader_link: Option<PathBuf>,
    controller: Pty,
    pub xray: PathBuf,
}

impl Line {
    /// A line on the default belt, its drop folder `dir/xray`.
    pub fn start(dir: &Path) -> Line {
        Line::start_with(dir, BeltConfig::default(), None)
    }

    /// A line on `belt`; with `reader_link`, the reader goes by that name (a symbolic link to
    /// its device, as udev makes), so that [`Line::unplug_reader`] and
    /// [`Line::replug_reader`] can take it away and bring it back.
    pub fn start_with(dir: &Path, belt: BeltConfig, reader_link: Option<PathBuf>) -> Line {
        let controller = Pty::open().expect("controller pty");
        let mut emulator =
            LineEmulator::start(controller.master().expect("master"), belt).expect("emulator");
        let events = emulator.take_events().expect("events");
        let xray = dir.join("xray");
        std::fs::create_dir_all(&xray).expect("xray dir");
        let mut line = Line {
            emulator,
            events,
            seen: Vec::new(),
            reader: None,
            reader_link,
            controller,
            xray,
        };
        line.replug_reader();
        line
    }

    /// The path the appliance opens the reader by.
    pub fn reader_path(&self) -> PathBuf {
        match (&self.reader_link, &self.reader) {
            (Some(link), _) => link.clone(),
            (None, Some((pty, _))) => pty.slave_path().to_owned(),
            (None, None) => unreachable!("only a linked reader is ever unplugged"),
        }
    }

    /// The configuration of an appliance on this line (see [`line_config`]).
    pub fn config(&self, data: &Path, broker: u16) -> String {
        self.config_on(data, broker, free_port())
    }

    /// [`Line::config`] with the console on `console`.
    pub fn config_on(&self, data: &Path, broker: u16, console: u16) -> String {
        line_config_on(
            data,
            broker,
            &self.reader_path(),
            self.controller.slave_path(),
            &self.xray,
            console,
        )
    }

    /// The reader reads `record` (as the scanner sends it, CRLF).
    pub fn read(&mut self, record: &str) {
        let (_, tx) = self.reader.as_mut().expect("the reader is plugged in");
        send_record(tx, record);
    }

    /// A parcel of `length_mm` passes the photo-eye; returns once it is past the eye's
    /// debounce, so that the next event is the parcel's own.
    pub fn place(&self, length_mm: u32) {
        self.emulator.place_parcel(length_mm);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// One parcel of electronics: the waybill read, the parcel on the belt, its scan
    /// `scan-<waybill>` in the drop folder.
    pub fn parcel(&mut self, waybill: &str, counterfeit: bool, seed: u64) {
        self.parcel_unscanned(waybill);
        self.scan(&format!("scan-{waybill}"), waybill, counterfeit, seed);
    }

    /// A parcel whose scan never comes: read and on the belt only (a `no_image` parcel).
    pub fn parcel_unscanned(&mut self, waybill: &str) {
        self.read(&valid_waybill(waybill));
        self.place(400);
    }

    /// The scan `stem` of electronics (genuine or `counterfeit`) naming `waybill`, written to
    /// the drop folder as the X-ray machine does.
    pub fn scan(&self, stem: &str, waybill: &str, counterfeit: bool, seed: u64) {
        screenline::demo::write_scan(&self.xray, stem, waybill, electronics(counterfeit), seed)
            .expect("scan");
    }

    /// A dual-energy scan `stem` of genuine electronics: the two halves `stem.high.png` and
    /// `stem.low.png`, each written under a temporary name and renamed into place. Returns
    /// the SHA-256 (hex) of each half as written.
    pub fn dual_scan(&self, stem: &str, seed: u64) -> Vec<String> {
        let scan = xraygen::render(electronics(false), seed);
        [("high", &scan.high), ("low", &scan.low)]
            .into_iter()
            .map(|(half, img)| {
                let tmp = self.xray.join(format!(".{stem}.{half}.png.part"));
                img.save_with_format(&tmp, image::ImageFormat::Png)
                    .expect("save");
                let sha = hex::encode(Sha256::digest(std::fs::read(&tmp).expect("read")));
                std::fs::rename(&tmp, self.xray.join(format!("{stem}.{half}.png")))
                    .expect("rename");
                sha
            })
            .collect()
    }

    /// Unplugs the reader: the device and its stable name vanish.
    pub fn unplug_reader(&mut self) {
        let link = self
            .reader_link
            .as_ref()
            .expect("unplug a reader by its name");
        let (pty, tx) = self.reader.take().expect("the reader is plugged in");
        drop(tx);
        pty.hang_up();
        std::fs::remove_file(link).expect("unlink");
    }

    /// Plugs a reader in: a new device, behind the stable name if the line has one.
    pub fn replug_reader(&mut self) {
        let pty = Pty::open().expect("reader pty");
        if let Some(link) = &self.reader_link {
            std::os::unix::fs::symlink(pty.slave_path(), link).expect("symlink");
        }
        let tx = pty.master().expect("reader master");
        self.reader = Some((pty, tx));
    }

    /// Takes line events until `pred` holds for everything seen; whether it did before
    /// `timeout`.
    pub fn poll(&mut self, timeout: Duration, pred: impl Fn(&[LineEvent]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !pred(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(ev) = self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.seen.push(ev);
            }
        }
        true
    }

    /// Waits for line events until `pred` holds for everything seen.
    pub fn wait(&mut self, timeout: Duration, what: &str, pred: impl Fn(&[LineEvent]) -> bool) {
        if !self.poll(timeout, pred) {
            panic!("timed out waiting for {what}; saw {:?}", self.seen);
        }
    }

    /// The sequence numbers the appliance sent a decision for.
    pub fn decided(&self) -> Vec<u32> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                LineEvent::DecisionReceived { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// Whether the controller received the decision `verdict` for parcel `seq`.
    pub fn decided_as(&self, seq: u32, verdict: Verdict) -> bool {
        self.seen.iter().any(|e| {
            matches!(e, LineEvent::DecisionReceived { seq: s, verdict: v, .. } if *s == seq && *v == verdict)
        })
    }

    /// Stops the controller's emulator.
    pub fn shutdown(self) {
        self.emulator.shutdown();
    }
}

/// How many parcels have left the belt among `seen` (passed, diverted or diverted fail-safe).
pub fn left_the_belt(seen: &[LineEvent]) -> usize {
    seen.iter()
        .filter(|e| matches!(e, LineEvent::Diverted { .. } | LineEvent::Passed { .. }))
        .count()
}

/// A parcel of electronics, genuine or `counterfeit`.
pub fn electronics(counterfeit: bool) -> xraygen::ParcelSpec {
    xraygen::ParcelSpec {
        category: 5,
        counterfeit,
    }
}

/// A running line and appliance.
pub struct Rig {
    pub line: Line,
    pub app: Appliance,
    pub data: PathBuf,
    pub console: u16,
}

impl Rig {
    /// Starts a line whose appliance keeps its store in `data`, talks to the broker on
    /// `broker`, and runs with `env` (e.g. `SCREENLINE_TEST_FAULTS`); waits until the
    /// appliance has spoken to the controller.
    pub fn start(dir: &Path, data: &Path, broker: u16, env: &[(&str, &str)]) -> Rig {
        Rig::start_with(dir, data, broker, env, "")
    }

    /// [`Rig::start`] with `extra` appended to the configuration file.
    pub fn start_with(
        dir: &Path,
        data: &Path,
        broker: u16,
        env: &[(&str, &str)],
        extra: &str,
    ) -> Rig {
        Rig::on(Line::start(dir), dir, data, broker, env, |c| c + extra)
    }

    /// [`Rig::start`] on `line`, the configuration file being what `edit` makes of
    /// [`Line::config_on`]'s.
    pub fn on(
        line: Line,
        dir: &Path,
        data: &Path,
        broker: u16,
        env: &[(&str, &str)],
        edit: impl FnOnce(String) -> String,
    ) -> Rig {
        let console = free_port();
        let config = edit(line.config_on(data, broker, console));
        let app = Appliance::start_with_env(dir, &config, env);
        let mut rig = Rig {
            line,
            app,
            data: data.to_owned(),
            console,
        };
        rig.wait(
            Duration::from_secs(60),
            "the appliance's first message to the controller",
            |s| s.contains(&LineEvent::LinkUp),
        );
        rig
    }

    /// Waits for line events until `pred` holds for everything seen; on failure, says what
    /// was seen and what the appliance logged.
    pub fn wait(&mut self, timeout: Duration, what: &str, pred: impl Fn(&[LineEvent]) -> bool) {
        if !self.line.poll(timeout, pred) {
            panic!(
                "timed out waiting for {what}; saw {:?}\n{}",
                self.line.seen,
                self.app.log_text()
            );
        }
    }

    /// Waits until `n` parcels have left the belt (passed, diverted or diverted fail-safe).
    pub fn wait_left(&mut self, n: usize, timeout: Duration) {
        self.wait(timeout, &format!("{n} parcels to leave the belt"), |s| {
            left_the_belt(s) >= n
        });
    }
}
