//! Screenline's domain, as pure code: no files, no network, no database, no runtime.
//!
//! - [`domain`]: parcels, waybills, categories, decisions and reasons, and masking.
//! - [`waybill`]: the reader's framing and payload, the real-name checks (GB 11643 and the
//!   other documents), normalisation of identities.
//! - [`join`]: which read and which scan belong to which parcel on the belt.
//! - [`rules`]: the regulator's rules and the policy that turns reasons into a decision,
//!   with their configuration ([`rules::config`]).
//! - [`record`]: what is kept and reported of a screened parcel.
//! - [`detect`]: the item detector's output maps decoded into boxes, and the box metrics.
//! - [`keys`]: keyed hashing of personal data.
//! - [`sighting`]: the pseudonymous sightings a site's appliances share (split shipments).
//! - [`problems`]: configuration problems, key by key; [`time_fmt`]: RFC 3339 times.
//! - [`invariants`]: the byte-stream decoders' invariants (the fuzz targets' and CI's).
//!
//! The appliance (`screenline`), its benches and its fuzz targets depend on this crate.
#![deny(missing_docs, unsafe_code)]

pub mod detect;
pub mod domain;
pub mod invariants;
pub mod join;
pub mod keys;
pub mod problems;
pub mod record;
pub mod rules;
pub mod sighting;
pub mod time_fmt;
pub mod waybill;
