//! Screenline: the software of a parcel-screening edge appliance for postal X-ray lines.
//!
//! The appliance is a pipeline: the line's sources (waybill reader, line-controller link,
//! X-ray drop folder, in [`line`]) are joined into a parcel, screened ([`screen`]), decided,
//! sent back to the line controller, stored ([`store`]) and reported to the regulator
//! ([`report`]); [`console`] shows it to the people on site. [`app`] assembles the stages and
//! [`demo`] runs it all against simulated lines.

pub mod app;
pub mod config;
pub mod console;
pub mod demo;
pub mod line;
pub mod logbuf;
pub mod offline;
pub mod report;
pub mod safe_mode;
pub mod screen;
pub mod sink;
pub mod store;
pub mod supervise;
pub mod telemetry;
#[cfg(test)]
mod testutil;

// The domain, as pure code (its own crate: no I/O), under the names the appliance has
// always used.
pub use screenline_core::{domain, keys, problems, record, time_fmt};
