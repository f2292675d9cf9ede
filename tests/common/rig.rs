//! One line on real parts for a test: the real `screenline run`, the waybill reader and the
//! line controller on pseudo-terminals (the controller being the real firmware logic in the
//! host emulator), a real drop folder, and a real Mosquitto.

use super::*;
use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator, LineEvent};
use std::sync::mpsc::Receiver;

/// A running line and appliance.
pub struct Rig {
    pub app: Appliance,
    pub emulator: LineEmulator,
    events: Receiver<LineEvent>,
    /// Every line event seen so far, in order.
    pub seen: Vec<LineEvent>,
    reader_tx: std::fs::File,
    pub xray: PathBuf,
    pub data: PathBuf,
    pub console: u16,
    _reader: Pty,
    _controller: Pty,
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
        let reader = Pty::open().expect("reader pty");
        let controller = Pty::open().expect("controller pty");
        let mut emulator =
            LineEmulator::start(controller.master().expect("master"), BeltConfig::default())
                .expect("emulator");
        let events = emulator.take_events().expect("events");
        let xray = dir.join("xray");
        std::fs::create_dir_all(&xray).expect("xray dir");
        let console = free_port();
        let config = line_config_on(
            data,
            broker,
            reader.slave_path(),
            controller.slave_path(),
            &xray,
            console,
        ) + extra;
        let app = Appliance::start_with_env(dir, &config, env);
        let mut rig = Rig {
            app,
            emulator,
            events,
            seen: Vec::new(),
            reader_tx: reader.master().expect("reader master"),
            xray,
            data: data.to_owned(),
            console,
            _reader: reader,
            _controller: controller,
        };
        rig.wait(
            Duration::from_secs(60),
            "the appliance's first message to the controller",
            |s| s.contains(&LineEvent::LinkUp),
        );
        rig
    }

    /// One parcel: the waybill read, the parcel on the belt, its scan in the drop folder.
    pub fn parcel(&mut self, waybill: &str, counterfeit: bool, seed: u64) {
        send_record(&mut self.reader_tx, &valid_waybill(waybill));
        self.emulator.place_parcel(400);
        std::thread::sleep(Duration::from_millis(300));
        screenline::demo::write_scan(
            &self.xray,
            &format!("scan-{waybill}"),
            waybill,
            xraygen::ParcelSpec {
                category: 5,
                counterfeit,
            },
            seed,
        )
        .expect("scan");
    }

    /// A parcel whose scan never comes: read and on the belt only (a `no_image` parcel).
    pub fn parcel_unscanned(&mut self, waybill: &str) {
        send_record(&mut self.reader_tx, &valid_waybill(waybill));
        self.emulator.place_parcel(400);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Waits for line events until `pred` holds for everything seen.
    pub fn wait(&mut self, timeout: Duration, what: &str, pred: impl Fn(&[LineEvent]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; saw {:?}\n{}",
                self.seen,
                self.app.log_text()
            );
            if let Ok(ev) = self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.seen.push(ev);
            }
        }
    }

    /// Waits until `n` parcels have left the belt (passed, diverted or diverted fail-safe).
    pub fn wait_left(&mut self, n: usize, timeout: Duration) {
        self.wait(timeout, &format!("{n} parcels to leave the belt"), |s| {
            s.iter()
                .filter(|e| matches!(e, LineEvent::Diverted { .. } | LineEvent::Passed { .. }))
                .count()
                >= n
        });
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
}
