//! The one place the console reads the telemetry: counters, links, stack lights and the
//! latest parcels, taken at one moment, for the pages (through their views in `pages.rs`),
//! the live status and `/api/status`. When the telemetry's types change, this is what
//! changes with them.

use crate::telemetry::{LinkState, ParcelSummary, Telemetry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The suffix of a line controller's link name (`L1.controller`): the lines whose stack
/// light the console shows.
const CONTROLLER: &str = ".controller";

/// What the telemetry said at one moment.
pub(super) struct Snapshot {
    counters: BTreeMap<String, u64>,
    links: BTreeMap<String, LinkState>,
    lights: BTreeMap<String, String>,
    /// When each link's device was last heard from.
    seen: BTreeMap<String, SystemTime>,
}

/// One link as a page shows it.
pub(super) struct Link<'a> {
    /// The device: `L1.reader`, `L1.controller`, `broker`, `model`, …
    pub name: &'a str,
    pub state: &'a LinkState,
    /// When its device was last heard from; `None` if never.
    pub last_seen: Option<SystemTime>,
}

/// One line's stack light, as its controller last reported it.
pub(super) struct StackLight<'a> {
    pub line: &'a str,
    /// `green`, `amber`, `red`, `off`; `unknown` while the controller has not said.
    pub light: &'a str,
}

impl Snapshot {
    /// The counters, the links and the stack lights as they are now.
    pub fn take(telemetry: &Telemetry) -> Snapshot {
        let links = telemetry.links();
        let seen = links
            .keys()
            .filter_map(|name| Some((name.clone(), telemetry.last_seen(name)?)))
            .collect();
        Snapshot {
            counters: telemetry.counters(),
            links,
            lights: telemetry.lights(),
            seen,
        }
    }

    /// A counter's value (0 before it first counts).
    pub fn counter(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// Every link, by name.
    pub fn links(&self) -> impl Iterator<Item = Link<'_>> {
        self.links.iter().map(|(name, state)| Link {
            name,
            state,
            last_seen: self.seen.get(name).copied(),
        })
    }

    /// The stack light of every line whose controller link is known.
    pub fn stack_lights(&self) -> impl Iterator<Item = StackLight<'_>> {
        self.links
            .keys()
            .filter_map(|name| name.strip_suffix(CONTROLLER))
            .map(|line| StackLight {
                line,
                light: self.lights.get(line).map_or("unknown", String::as_str),
            })
    }

    /// The counters that belong to a device: a line's device (`L1.reader`) has that line's
    /// own (`L1.reader.…`), the broker the feed's, the model the screen stage's, the store
    /// (`store`) its own.
    pub fn device_counters(&self, device: &str) -> Vec<(&str, u64)> {
        let prefix = match device {
            "broker" => "feed.".to_owned(),
            "model" => "screen.".to_owned(),
            _ => format!("{device}."),
        };
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix.as_str()))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    /// The line's state for `/api/status` and the live stream, with the outbox's backlog
    /// (`None` without a store) and, for the live stream, the badges rendered.
    pub fn status(self, backlog: Option<usize>, badges: Option<String>) -> Status {
        Status {
            links: self.links,
            stack_lights: self.lights,
            counters: self.counters,
            backlog,
            badges,
        }
    }
}

/// The latest decided parcels, newest first.
pub(super) fn recent(telemetry: &Telemetry) -> Vec<ParcelSummary> {
    telemetry.recent()
}

/// The line's state for `/api/status` and the live stream.
#[derive(Serialize)]
pub(super) struct Status {
    links: BTreeMap<String, LinkState>,
    stack_lights: BTreeMap<String, String>,
    counters: BTreeMap<String, u64>,
    backlog: Option<usize>,
    /// The links' badges, rendered (live stream only).
    #[serde(skip_serializing_if = "Option::is_none")]
    badges: Option<String>,
}
