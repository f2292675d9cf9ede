//! The links whose state the appliance shows (a line's serial devices and drop folder, the
//! store, the broker, the model, …), a line's stack light, and what the line controller did
//! with a decided parcel. Each has one spelling, given here: the names the console's JSON,
//! the status topic and the logs have always used (`L1.reader`, `store`, `fail-safe`).

use screenline_protocol::StackLight;
use serde::{Serialize, Serializer};
use std::fmt;

/// A device of a line. (Variants in the order of their names: the console lists links
/// sorted, as it did when they were strings.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// The line controller (serial).
    Controller,
    /// The waybill reader (serial).
    Reader,
    /// The X-ray machine's drop folder.
    Xray,
}

impl Device {
    /// The device's name (`reader`, `controller`, `xray`).
    pub fn key(self) -> &'static str {
        match self {
            Device::Reader => "reader",
            Device::Controller => "controller",
            Device::Xray => "xray",
        }
    }
}

/// One device of one line: `L1.reader`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    /// The line's id, as configured (`[[lines]] id`).
    pub line: String,
    pub device: Device,
}

impl LinkId {
    /// Device `device` of line `line`.
    pub fn new(line: &str, device: Device) -> LinkId {
        LinkId {
            line: line.to_owned(),
            device,
        }
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.line, self.device.key())
    }
}

/// Anything with a state on the console's devices page and in the status topic. (Lines
/// first, then the rest in the order of their names, as the console always listed them.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// A line's device.
    Line(LinkId),
    /// The MQTT broker.
    Broker,
    /// The configuration (down only in safe mode).
    Config,
    /// The disk budget.
    Disk,
    /// The ONNX model.
    Model,
    /// Every stage of the pipeline working (the watchdog's view).
    Pipeline,
    /// Retention: whether anything is held past its time.
    Retention,
    /// The sled store.
    Store,
    /// The regulator's watch-list.
    Watchlist,
}

impl Link {
    /// Device `device` of line `line`.
    pub fn line(line: &str, device: Device) -> Link {
        Link::Line(LinkId::new(line, device))
    }

    /// The link's line and device names, as the metrics label them: a line's device has
    /// both, an appliance-wide link only a device (`store`).
    pub fn labels(&self) -> (Option<&str>, &'static str) {
        match self {
            Link::Line(id) => (Some(&id.line), id.device.key()),
            other => (None, other.appliance_key().unwrap_or_default()),
        }
    }

    fn appliance_key(&self) -> Option<&'static str> {
        Some(match self {
            Link::Line(_) => return None,
            Link::Config => "config",
            Link::Store => "store",
            Link::Disk => "disk",
            Link::Retention => "retention",
            Link::Broker => "broker",
            Link::Model => "model",
            Link::Watchlist => "watchlist",
            Link::Pipeline => "pipeline",
        })
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Line(id) => id.fmt(f),
            other => f.write_str(other.appliance_key().unwrap_or_default()),
        }
    }
}

/// As its name: the key of the console's and the status topic's `links` maps.
impl Serialize for Link {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The name of what a stack light shows (`green`, `amber`, `red`, `off`), as the console's
/// JSON has it.
pub fn light_key(light: StackLight) -> &'static str {
    match light {
        StackLight::Off => "off",
        StackLight::Green => "green",
        StackLight::Amber => "amber",
        StackLight::Red => "red",
    }
}

/// Every state of a stack light.
pub const LIGHTS: [StackLight; 4] = [
    StackLight::Off,
    StackLight::Green,
    StackLight::Amber,
    StackLight::Red,
];

/// What the line controller reported it did with a decided parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ParcelOutcome {
    /// Let through to the exit.
    #[serde(rename = "passed")]
    Passed,
    /// Diverted to the reject lane, as decided.
    #[serde(rename = "diverted")]
    Diverted,
    /// Diverted to manual inspection because no decision came in time.
    #[serde(rename = "fail-safe")]
    FailSafe,
}

impl ParcelOutcome {
    /// The outcome's name on the console (`passed`, `diverted`, `fail-safe`).
    pub fn key(self) -> &'static str {
        match self {
            ParcelOutcome::Passed => "passed",
            ParcelOutcome::Diverted => "diverted",
            ParcelOutcome::FailSafe => "fail-safe",
        }
    }

    /// The outcome as a metric label and in counter names (`fail_safe`).
    pub fn label(self) -> &'static str {
        match self {
            ParcelOutcome::Passed => "passed",
            ParcelOutcome::Diverted => "diverted",
            ParcelOutcome::FailSafe => "fail_safe",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_names_the_console_and_the_status_topic_use() {
        assert_eq!(Link::line("L1", Device::Reader).to_string(), "L1.reader");
        assert_eq!(Link::line("L2", Device::Xray).to_string(), "L2.xray");
        assert_eq!(Link::Store.to_string(), "store");
        let map: std::collections::BTreeMap<Link, u8> =
            [(Link::line("L1", Device::Controller), 1), (Link::Broker, 0)]
                .into_iter()
                .collect();
        assert_eq!(
            serde_json::to_string(&map).expect("json"),
            r#"{"L1.controller":1,"broker":0}"#
        );
        // Sorted as their names were, so the console lists them in the order it always did.
        let mut links = vec![
            Link::Watchlist,
            Link::Store,
            Link::line("L2", Device::Reader),
            Link::Retention,
            Link::Pipeline,
            Link::Model,
            Link::line("L1", Device::Xray),
            Link::Disk,
            Link::Config,
            Link::line("L1", Device::Reader),
            Link::Broker,
            Link::line("L1", Device::Controller),
        ];
        let mut names: Vec<String> = links.iter().map(ToString::to_string).collect();
        links.sort();
        names.sort();
        assert_eq!(
            links.iter().map(ToString::to_string).collect::<Vec<_>>(),
            names
        );
        assert_eq!(
            serde_json::to_string(&ParcelOutcome::FailSafe).expect("json"),
            r#""fail-safe""#
        );
    }
}
