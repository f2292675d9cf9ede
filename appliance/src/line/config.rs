//! A line's configuration (`[[lines]]`): its ports, drop folder, join windows, deadline and
//! belt geometry, with their defaults and checks.

use crate::line::waybill::Framing;
use crate::problems::Problems;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One X-ray line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// The line's id, as reports name it.
    pub id: String,
    /// The waybill reader's serial port, e.g. /dev/screenline/L1-reader.
    pub reader_port: PathBuf,
    /// Default: 9600.
    #[serde(default = "n32::<9600>")]
    pub reader_baud: u32,
    /// Default: line.
    #[serde(default = "default_framing")]
    pub reader_framing: Framing,
    /// The line controller's serial port, e.g. /dev/screenline/L1-controller.
    pub controller_port: PathBuf,
    /// Default: 115200.
    #[serde(default = "n32::<115_200>")]
    pub controller_baud: u32,
    /// The X-ray machine's drop folder.
    pub xray_dir: PathBuf,
    /// Where bad X-ray files (corrupt, truncated, oversized, a lone half of a dual-energy
    /// pair) are moved, each with a `<name>.reason.txt`. Default: `<data_dir>/quarantine/<id>/`.
    #[serde(default)]
    pub quarantine_dir: Option<PathBuf>,
    /// What happens to a screened X-ray file: `keep` (moved into the store's image folder)
    /// or `delete` (removed; the record keeps its SHA-256 only). Default: keep.
    #[serde(default)]
    pub xray_after: XrayAfter,
    /// How long the first half of a dual-energy pair waits for its partner before it is
    /// quarantined, in milliseconds. Default: 2000.
    #[serde(default = "n64::<2000>")]
    pub pair_wait_ms: u64,
    /// How long after the photo-eye a waybill read or an image may still join the parcel,
    /// in milliseconds. It must leave time to screen before the parcel reaches the diverter.
    /// Default: 1500.
    #[serde(default = "n64::<1500>")]
    pub join_window_ms: u64,
    /// How far from the photo-eye's event a waybill read may come, either side, in
    /// milliseconds. Keep it under half the time between two parcels (at 3 m/s and 300 mm,
    /// under 50): a read with two waiting parcels inside it joins neither. Default: 150.
    #[serde(default = "n64::<150>")]
    pub read_window_ms: u64,
    /// When the X-ray machine's image usually completes after the photo-eye, in milliseconds.
    /// Default: 300.
    #[serde(default = "n64::<300>")]
    pub image_delay_ms: u64,
    /// How far from that an image without a waybill may complete and still join by time, in
    /// milliseconds. Keep it under half the time between two parcels: an image with two
    /// waiting parcels inside it joins neither (both go to manual). Default: 200.
    #[serde(default = "n64::<200>")]
    pub image_window_ms: u64,
    /// How long after the photo-eye the decision must be sent: the belt time from the
    /// photo-eye to the controller's decision point. A later decision is counted and the
    /// parcel recorded as manual (the controller has diverted it already). Default: 2000.
    #[serde(default = "n64::<2000>")]
    pub decision_deadline_ms: u64,
    /// The belt's geometry, sent to the line controller (`Configure`) after every hello.
    /// Without it the controller keeps the geometry it has.
    #[serde(default)]
    pub controller: Option<ControllerGeometry>,
}

/// A line's geometry as the technician measures it, in millimetres of belt; the appliance
/// converts it to encoder counts for the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerGeometry {
    /// Encoder counts per millimetre of belt. Default: 1.
    #[serde(default = "n32::<1>")]
    pub counts_per_mm: u32,
    /// From the photo-eye to the diverter gate.
    pub eye_to_gate_mm: u32,
    /// How long the diverter stays energised for one parcel. Default: 400.
    #[serde(default = "n32::<400>")]
    pub gate_width_mm: u32,
    /// How far before the gate the decision must have arrived. Default: 300.
    #[serde(default = "n32::<300>")]
    pub decision_margin_mm: u32,
    /// How long the photo-eye's level must hold to count. Default: 5.
    #[serde(default = "n32::<5>")]
    pub debounce_mm: u32,
    /// Silence from the appliance after which the controller diverts everything.
    /// Default: 1000.
    #[serde(default = "n32::<1000>")]
    pub heartbeat_timeout_ms: u32,
}

impl ControllerGeometry {
    /// The controller's configuration message; `None` when a distance overflows the
    /// encoder's range (configuration validation reports that).
    pub fn controller_config(&self) -> Option<screenline_protocol::ControllerConfig> {
        let counts = |mm: u32| mm.checked_mul(self.counts_per_mm);
        Some(screenline_protocol::ControllerConfig {
            eye_to_gate_counts: counts(self.eye_to_gate_mm)?,
            gate_width_counts: counts(self.gate_width_mm)?,
            debounce_counts: counts(self.debounce_mm)?,
            decision_margin_counts: counts(self.decision_margin_mm)?,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            fail_safe: screenline_protocol::FailSafePolicy::DivertUndecided,
        })
    }
}

/// What happens to an X-ray file once its parcel is screened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XrayAfter {
    /// Moved into the store's image folder, named by record.
    #[default]
    Keep,
    /// A cleared parcel's files are deleted from the drop folder (its record keeps the
    /// image's SHA-256); a flagged or manual parcel's scan is archived all the same, since
    /// the operator and the regulator must be able to read it.
    Delete,
}

impl LineConfig {
    /// The line's quarantine folder, given the appliance's data folder.
    pub fn quarantine_dir(&self, data_dir: &Path) -> PathBuf {
        self.quarantine_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("quarantine").join(&self.id))
    }
}

impl LineConfig {
    /// Checks one line's own values (`lines[i]`); that lines differ from each other is the
    /// whole file's check.
    pub fn problems(&self, p: &mut Problems) {
        if !crate::problems::is_id(&self.id) {
            p.push(
                "id",
                format_args!(" = {:?}: use letters, digits, - and _", self.id),
            );
        }
        if self.read_window_ms >= self.join_window_ms
            || self.image_delay_ms + self.image_window_ms >= self.join_window_ms
        {
            p.push("", format_args!(
                ": read_window_ms ({}) and image_delay_ms + image_window_ms ({}) must be less than join_window_ms ({})",
                self.read_window_ms, self.image_delay_ms + self.image_window_ms, self.join_window_ms
            ));
        }
        p.range("pair_wait_ms", self.pair_wait_ms, 100..=60_000, "");
        p.range("join_window_ms", self.join_window_ms, 100..=10_000, "");
        if let Some(g) = &self.controller {
            let mut sub = Problems::new(&p.key("controller"));
            g.problems(&mut sub);
            p.extend(sub);
        }
        if self.join_window_ms >= self.decision_deadline_ms {
            p.push("join_window_ms", format_args!(
                " = {}: must be less than decision_deadline_ms ({}), or a parcel still waiting for its read or image is diverted before it is screened",
                self.join_window_ms, self.decision_deadline_ms
            ));
        }
    }
}

impl ControllerGeometry {
    fn problems(&self, p: &mut Problems) {
        if self.counts_per_mm == 0 {
            p.push("counts_per_mm", " = 0: must be at least 1");
        }
        if self.decision_margin_mm >= self.eye_to_gate_mm {
            p.push(
                "decision_margin_mm",
                format_args!(
                " = {}: must be less than eye_to_gate_mm ({}), or no decision can ever be in time",
                self.decision_margin_mm, self.eye_to_gate_mm
            ),
            );
        }
        if self.gate_width_mm == 0 {
            p.push(
                "gate_width_mm",
                " = 0: the diverter must stay energised over some belt",
            );
        }
        let beat = crate::line::controller::HEARTBEAT.as_millis() as u32;
        p.range(
            "heartbeat_timeout_ms",
            self.heartbeat_timeout_ms,
            2 * beat..=10_000,
            &format!(" (the appliance beats every {beat} ms)"),
        );
        if self.controller_config().is_none() {
            p.push(
                "",
                format_args!(
                    ": eye_to_gate_mm × counts_per_mm ({} × {}) is beyond the encoder's range",
                    self.eye_to_gate_mm, self.counts_per_mm
                ),
            );
        }
    }
}

fn default_framing() -> Framing {
    Framing::Line
}

/// A number key's default, given where the key is declared:
/// `#[serde(default = "n64::<1500>")]`.
fn n64<const N: u64>() -> u64 {
    N
}

/// [`n64`] for 32-bit keys.
fn n32<const N: u32>() -> u32 {
    N
}
