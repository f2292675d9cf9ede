//! The one place the console reads the telemetry: counters, links, stack lights and the
//! latest parcels, taken at one moment, for the pages (through their views in `pages.rs`),
//! the live status and `/api/status`.

use crate::telemetry::{
    light_key, Counter, Counters, Device, Lights, Link, LinkId, LinkState, Links, ParcelSummary,
    Telemetry,
};
use serde::Serialize;
use std::time::SystemTime;

/// What the telemetry said at one moment.
pub(super) struct Snapshot {
    counters: Counters,
    /// Every link with its name as the pages show it (`L1.reader`, `broker`, …) and when its
    /// device was last heard from.
    links: Vec<(Link, String, Option<SystemTime>)>,
    states: Links,
    lights: Lights,
}

/// One link as a page shows it.
pub(super) struct LinkView<'a> {
    /// The device: `L1.reader`, `L1.controller`, `broker`, `model`, …
    pub name: &'a str,
    pub link: &'a Link,
    pub state: &'a LinkState,
    /// When its device was last heard from; `None` if never.
    pub last_seen: Option<SystemTime>,
}

/// One line's stack light, as its controller last reported it.
pub(super) struct StackLight<'a> {
    pub line: &'a str,
    /// `green`, `amber`, `red`, `off`; `unknown` while the controller has not said.
    pub light: &'static str,
}

impl Snapshot {
    /// The counters, the links and the stack lights as they are now.
    pub fn take(telemetry: &Telemetry) -> Snapshot {
        let states = telemetry.links();
        let links = states
            .keys()
            .map(|link| (link.clone(), link.to_string(), telemetry.last_seen(link)))
            .collect();
        Snapshot {
            counters: telemetry.counters(),
            links,
            states,
            lights: telemetry.lights(),
        }
    }

    /// A counter's value (0 before it first counts).
    pub fn counter(&self, c: &Counter) -> u64 {
        self.counters.get(c)
    }

    /// Every link, by name.
    pub fn links(&self) -> impl Iterator<Item = LinkView<'_>> {
        self.links.iter().filter_map(|(link, name, last_seen)| {
            Some(LinkView {
                name,
                link,
                state: self.states.get(link)?,
                last_seen: *last_seen,
            })
        })
    }

    /// The stack light of every line whose controller link is known.
    pub fn stack_lights(&self) -> impl Iterator<Item = StackLight<'_>> {
        self.links.iter().filter_map(|(link, _, _)| match link {
            Link::Line(LinkId {
                line,
                device: Device::Controller,
            }) => Some(StackLight {
                line,
                light: self.lights.get(line).map_or("unknown", light_key),
            }),
            _ => None,
        })
    }

    /// The counters that belong to a link's device: a line's device (`L1.reader`) has that
    /// line's own, the broker the feed's, the model the screen stage's, the store its own.
    pub fn device_counters(&self, link: &Link) -> Vec<(String, u64)> {
        self.counters.of_link(link)
    }

    /// The line's state for `/api/status` and the live stream, with the outbox's backlog
    /// (`None` without a store) and, for the live stream, the badges rendered.
    pub fn status(self, backlog: Option<usize>, badges: Option<String>) -> Status {
        Status {
            links: self.states,
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
    links: Links,
    stack_lights: Lights,
    counters: Counters,
    backlog: Option<usize>,
    /// The links' badges, rendered (live stream only).
    #[serde(skip_serializing_if = "Option::is_none")]
    badges: Option<String>,
}
