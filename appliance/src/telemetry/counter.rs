//! The appliance's counters and gauges as one typed set. Every writer (the line's sources,
//! the sink, the store's counters, the feed, the console) and every reader (the regulator's
//! statistics, the demo's summary, the console, `/metrics`) names a counter by a variant
//! here, so a misspelt counter does not compile.
//!
//! Each counter has two spellings, both given here and nowhere else:
//!
//! - its **key** (`parcels.flag`, `L1.reader.records`): the name the store keeps the
//!   regulator's statistics under, and the console's JSON shows — unchanged from the
//!   string-named counters of before, so an old store's counts read back as they are;
//! - its **metric**: a Prometheus family (`screenline_parcel_decisions_total`) with labels
//!   (`decision="flag"`), following Prometheus' naming conventions.
//!
//! Adding a counter is one variant and its arm in [`Counter::key`] and [`Counter::metric`]
//! (or [`LineCounter`]'s).

use super::link::{Device, ParcelOutcome};
use crate::domain::{Category, Decision, Finding, ReasonCode};
use screenline_core::join::{JoinNote, JoinOutcome};
use screenline_core::sighting::Refusal;

/// Labels of one series: name and value.
pub type Labels = Vec<(&'static str, String)>;

/// Where a counter or gauge goes in `/metrics`: family name (without the `screenline_`
/// prefix, and for a counter without `_total`, which the encoder adds), help, labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Labels,
}

fn metric(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        labels: Vec::new(),
    }
}

fn labelled(name: &'static str, help: &'static str, labels: Labels) -> Metric {
    Metric { name, help, labels }
}

/// A counter: only ever grows (the store's statistics counters move between keys when a
/// record is committed again, which the store does on its own keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    // The regulator's statistics, kept in the store (see `is_durable`).
    /// Parcels decided.
    ParcelsDecided,
    /// Parcels decided so.
    Decided(Decision),
    /// Decisions carrying this reason.
    Reason(ReasonCode),
    /// Flagged parcels carrying this reason.
    FlaggedReason(ReasonCode),
    /// Flagged parcels whose top category is this one.
    FlaggedCategory(Category),
    /// Operators' reviews with this finding.
    Review(Finding),
    /// Cleared parcels drawn for re-review.
    RereviewsDrawn,
    /// Re-reviews with this finding (a confirmation: a cleared parcel was suspect after all).
    Rereview(Finding),
    /// Parcels judged from the queue within this time of their arrival.
    QueueDecided(DecisionTime),
    /// Milliseconds parcels waited in the queue before they were judged, summed.
    QueueWaitMillis,
    /// Regulator commands applied.
    CommandsAccepted,
    /// Regulator commands refused.
    CommandsRefused,

    // Regulator commands, while the process runs.
    /// Regulator commands refused for one reason (the refusal's key, or `busy`).
    CommandsRefusedBy(&'static str),
    /// Regulator commands that could not be audited.
    CommandAuditErrors,
    /// Answers to unverified commands dropped for want of room.
    CommandAnswersDropped,

    /// A counter of one line.
    Line(String, LineCounter),

    // The site's sightings (split shipments across appliances).
    /// Own sightings the broker acknowledged.
    SightingsSent,
    /// Peers' sightings folded into the split-shipment ledger.
    SightingsReceived,
    /// Peers' sightings the ledger had already (redeliveries).
    SightingsDuplicate,
    /// Peers' sightings refused, per reason.
    SightingsRefused(Refusal),
    /// The sightings connection's errors.
    SightingsConnectionErrors,

    // Deciding and storing.
    /// Decisions made past the line's decision point.
    DecisionsLate,
    /// Parcels not stored when decided (diverted; held for a retry).
    SinkStoreFailed,
    /// Decisions not handed to a full controller queue.
    SinkDecisionsNotSent,
    /// Held parcels still not stored when the appliance stopped.
    SinkLostAtStop,
    /// Group commits (one transaction, one flush each).
    StoreGroups,
    /// Records committed.
    StoreCommitted,
    /// Parcels or reviews the store could not take.
    StoreErrors,
    /// Damaged stores moved aside at start.
    StoreSetAside,
    /// Audit entries pruned by retention.
    StoreAuditPruned,
    /// Retention sweeps that failed.
    StoreSweepErrors,
    /// Records past retention removed.
    StoreExpiredRecords,
    /// Cleared parcels' images removed for the disk budget.
    StoreEvictedImages,
    /// Cleared records slimmed.
    StoreSlimmedRecords,
    /// Times the disk budget was reached with nothing left to remove.
    StoreBudgetAlarms,

    // The regulator feed.
    /// Flagged reports the broker acknowledged.
    FeedReportsAcked,
    /// Statistics messages the broker acknowledged.
    FeedStatsAcked,
    /// Statistics periods queued.
    FeedStatsQueued,
    /// Statistics periods that could not be queued.
    FeedStatsErrors,
    /// Broker connections lost or refused.
    FeedConnectionErrors,

    // The appliance.
    /// Links that went up or down.
    LinkChanges,
    /// Times a stage stalled (the watchdog stops).
    StageStalls,
    /// Models swapped in from the console.
    ModelSwaps,
    /// Model swaps refused (the new model failed its checks).
    ModelSwapsRefused,

    // The console.
    /// Logins accepted.
    ConsoleLogins,
    /// Logins refused (wrong name or password).
    ConsoleLoginFailures,
    /// Logins told to wait (too many tries).
    ConsoleLoginsThrottled,
    /// Logins told to wait (too many at once).
    ConsoleLoginsBusy,
    /// Requests refused as malformed.
    ConsoleBadRequests,
    /// Requests refused for their `Host`.
    ConsoleBadHosts,
    /// Failures reading or writing the users file.
    ConsoleUserFileErrors,
    /// Console actions that could not be audited.
    ConsoleAuditErrors,
    /// `/metrics` requests refused (not loopback, no valid token).
    ConsoleMetricsRefused,
}

/// How long a parcel waited in the judging queue, from its arrival to an operator's
/// decision, in the regulator's statistics' classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecisionTime {
    Within1m,
    Within5m,
    Within30m,
    Over30m,
}

impl DecisionTime {
    /// Every class, shortest first.
    pub const ALL: [DecisionTime; 4] = [
        DecisionTime::Within1m,
        DecisionTime::Within5m,
        DecisionTime::Within30m,
        DecisionTime::Over30m,
    ];

    /// The class of a wait.
    pub fn of(waited: std::time::Duration) -> DecisionTime {
        match waited.as_secs() {
            0..60 => DecisionTime::Within1m,
            60..300 => DecisionTime::Within5m,
            300..1800 => DecisionTime::Within30m,
            _ => DecisionTime::Over30m,
        }
    }

    /// Its key in counters and statistics.
    pub fn key(self) -> &'static str {
        match self {
            DecisionTime::Within1m => "within_1m",
            DecisionTime::Within5m => "within_5m",
            DecisionTime::Within30m => "within_30m",
            DecisionTime::Over30m => "over_30m",
        }
    }
}

/// A counter of one line's devices and join.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineCounter {
    /// Waybill records read.
    ReaderRecords,
    /// Waybill records whose payload was refused.
    ReaderBadPayloads,
    /// Waybill reader framing errors (too long, not UTF-8).
    ReaderFramingErrors,
    /// A serial device's port opened.
    SerialOpens(Device),
    /// A serial device's port lost.
    SerialDisconnects(Device),
    /// Hellos from the line controller (each starts an epoch).
    ControllerEpochs,
    /// Frames of another protocol version.
    ControllerVersionMismatches,
    /// Frames that failed their checks.
    ControllerBadFrames,
    /// Parcels the photo-eye saw enter.
    ControllerParcelsEntered,
    /// Faults the controller reported.
    ControllerFaults,
    /// Decisions the controller ignored as of an earlier epoch.
    ControllerStaleDecisions,
    /// Decisions dropped before sending, as of an earlier epoch.
    ControllerStaleDecisionsDropped,
    /// What the controller did with a parcel.
    Outcome(ParcelOutcome),
    /// X-ray files taken from the drop folder.
    XrayFiles,
    /// X-ray scans handed to the join.
    XrayImages,
    /// Scans deleted from the drop folder after screening (images not kept).
    XrayDeleted,
    /// Scans archived into the store.
    XrayArchived,
    /// Sidecars no image came for.
    XrayOrphanSidecars,
    /// Sidecars that could not be read.
    XrayBadSidecars,
    /// Files quarantined, by kind (`too_many_pixels`, `symlink`, …).
    XrayQuarantined(&'static str),
    /// Files that could not be quarantined.
    XrayQuarantineErrors,
    /// Parcels leaving the join.
    JoinParcels,
    /// Parcels leaving the join with a read, an image, both or neither.
    Joined(JoinOutcome),
    /// Reads and images the join could not use.
    JoinNote(JoinNote),
}

fn decision_key(d: Decision) -> &'static str {
    d.key()
}

fn join_outcome_key(o: JoinOutcome) -> &'static str {
    match o {
        JoinOutcome::Joined => "joined",
        JoinOutcome::NoRead => "no_read",
        JoinOutcome::NoImage => "no_image",
        JoinOutcome::NoReadNoImage => "no_read_no_image",
    }
}

fn join_note_key(n: JoinNote) -> &'static str {
    match n {
        JoinNote::DoubleRead => "double_reads",
        JoinNote::OrphanRead => "orphan_reads",
        JoinNote::OrphanImage => "orphan_images",
        JoinNote::AmbiguousRead => "ambiguous_reads",
        JoinNote::AmbiguousImage => "ambiguous_images",
    }
}

fn join_note_label(n: JoinNote) -> &'static str {
    match n {
        JoinNote::DoubleRead => "double_read",
        JoinNote::OrphanRead => "orphan_read",
        JoinNote::OrphanImage => "orphan_image",
        JoinNote::AmbiguousRead => "ambiguous_read",
        JoinNote::AmbiguousImage => "ambiguous_image",
    }
}

impl LineCounter {
    /// The key without the line (`reader.records`).
    fn key(&self) -> String {
        match self {
            LineCounter::ReaderRecords => "reader.records".into(),
            LineCounter::ReaderBadPayloads => "reader.bad_payload".into(),
            LineCounter::ReaderFramingErrors => "reader.framing_errors".into(),
            LineCounter::SerialOpens(d) => format!("{}.opens", d.key()),
            LineCounter::SerialDisconnects(d) => format!("{}.disconnects", d.key()),
            LineCounter::ControllerEpochs => "controller.epochs".into(),
            LineCounter::ControllerVersionMismatches => "controller.version_mismatch".into(),
            LineCounter::ControllerBadFrames => "controller.bad_frames".into(),
            LineCounter::ControllerParcelsEntered => "controller.parcels_entered".into(),
            LineCounter::ControllerFaults => "controller.faults".into(),
            LineCounter::ControllerStaleDecisions => "controller.stale_decisions".into(),
            LineCounter::ControllerStaleDecisionsDropped => {
                "controller.stale_decisions_dropped".into()
            }
            LineCounter::Outcome(o) => format!("controller.{}", o.label()),
            LineCounter::XrayFiles => "xray.files".into(),
            LineCounter::XrayImages => "xray.images".into(),
            LineCounter::XrayDeleted => "xray.deleted".into(),
            LineCounter::XrayArchived => "xray.archived".into(),
            LineCounter::XrayOrphanSidecars => "xray.orphan_sidecars".into(),
            LineCounter::XrayBadSidecars => "xray.bad_sidecars".into(),
            LineCounter::XrayQuarantined(kind) => format!("xray.quarantined.{kind}"),
            LineCounter::XrayQuarantineErrors => "xray.quarantine_errors".into(),
            LineCounter::JoinParcels => "join.parcels".into(),
            LineCounter::Joined(o) => format!("join.{}", join_outcome_key(*o)),
            LineCounter::JoinNote(n) => format!("join.{}", join_note_key(*n)),
        }
    }

    /// The keys it adds to besides its own (`xray.quarantined` for every kind).
    fn aggregate(&self) -> Option<&'static str> {
        match self {
            LineCounter::XrayQuarantined(_) => Some("xray.quarantined"),
            _ => None,
        }
    }

    /// Whether the console's JSON shows the sum over the lines too (`reader.records`), as
    /// it always has; a serial port's counters are the port's alone.
    fn summed_over_lines(&self) -> bool {
        !matches!(
            self,
            LineCounter::SerialOpens(_) | LineCounter::SerialDisconnects(_)
        )
    }

    fn metric(&self, line: &str) -> Metric {
        let line_only = |name, help| labelled(name, help, vec![("line", line.to_owned())]);
        let with = |name, help, key: &'static str, value: &str| {
            labelled(
                name,
                help,
                vec![("line", line.to_owned()), (key, value.to_owned())],
            )
        };
        match self {
            LineCounter::ReaderRecords => {
                line_only("reader_records", "Waybill records read, per line.")
            }
            LineCounter::ReaderBadPayloads => line_only(
                "reader_bad_payloads",
                "Waybill records dropped for their payload, per line.",
            ),
            LineCounter::ReaderFramingErrors => line_only(
                "reader_framing_errors",
                "Waybill reader framing errors (too long, not UTF-8), per line.",
            ),
            LineCounter::SerialOpens(d) => with(
                "serial_opens",
                "Serial ports opened, per line and device.",
                "device",
                d.key(),
            ),
            LineCounter::SerialDisconnects(d) => with(
                "serial_disconnects",
                "Serial ports lost (unplugged, closed, failed), per line and device.",
                "device",
                d.key(),
            ),
            LineCounter::ControllerEpochs => line_only(
                "controller_epochs",
                "Hellos from the line controller, each starting an epoch, per line.",
            ),
            LineCounter::ControllerVersionMismatches => line_only(
                "controller_version_mismatches",
                "Line-controller frames of another protocol version, per line.",
            ),
            LineCounter::ControllerBadFrames => line_only(
                "controller_bad_frames",
                "Line-controller frames that failed their checks, per line.",
            ),
            LineCounter::ControllerParcelsEntered => line_only(
                "controller_parcels_entered",
                "Parcels the photo-eye saw enter the tunnel, per line.",
            ),
            LineCounter::ControllerFaults => line_only(
                "controller_faults",
                "Faults the line controller reported, per line.",
            ),
            LineCounter::ControllerStaleDecisions => line_only(
                "controller_stale_decisions",
                "Decisions the line controller ignored as of an earlier epoch, per line.",
            ),
            LineCounter::ControllerStaleDecisionsDropped => line_only(
                "controller_stale_decisions_dropped",
                "Decisions dropped before sending as of an earlier epoch, per line.",
            ),
            LineCounter::Outcome(o) => with(
                "controller_parcel_outcomes",
                "What the line controller did with decided parcels, per line and outcome.",
                "outcome",
                o.label(),
            ),
            LineCounter::XrayFiles => line_only(
                "xray_files",
                "Files taken from the X-ray drop folder, per line.",
            ),
            LineCounter::XrayImages => {
                line_only("xray_images", "X-ray scans handed to the join, per line.")
            }
            LineCounter::XrayDeleted => line_only(
                "xray_scans_deleted",
                "X-ray scans deleted from the drop folder after screening, per line.",
            ),
            LineCounter::XrayArchived => line_only(
                "xray_scans_archived",
                "X-ray scans archived into the store, per line.",
            ),
            LineCounter::XrayOrphanSidecars => line_only(
                "xray_orphan_sidecars",
                "X-ray sidecars no image came for, per line.",
            ),
            LineCounter::XrayBadSidecars => line_only(
                "xray_bad_sidecars",
                "X-ray sidecars that could not be read, per line.",
            ),
            LineCounter::XrayQuarantined(kind) => with(
                "xray_quarantined_files",
                "X-ray files quarantined, per line and reason.",
                "reason",
                kind,
            ),
            LineCounter::XrayQuarantineErrors => line_only(
                "xray_quarantine_errors",
                "X-ray files that could not be quarantined, per line.",
            ),
            LineCounter::JoinParcels => {
                line_only("join_parcels", "Parcels leaving the join, per line.")
            }
            LineCounter::Joined(o) => with(
                "join_outcomes",
                "Parcels leaving the join with a read and an image or without, per line.",
                "outcome",
                join_outcome_key(*o),
            ),
            LineCounter::JoinNote(n) => with(
                "join_unused_inputs",
                "Reads and images the join could not use, per line and why.",
                "why",
                join_note_label(*n),
            ),
        }
    }
}

impl Counter {
    /// Counter `c` of line `line`.
    pub fn line(line: &str, c: LineCounter) -> Counter {
        Counter::Line(line.to_owned(), c)
    }

    /// The counter's own key (`parcels.flag`, `L1.reader.records`): what the store keeps a
    /// statistics counter under.
    pub fn key(&self) -> String {
        match self {
            Counter::ParcelsDecided => "parcels.decided".into(),
            Counter::Decided(d) => format!("parcels.{}", decision_key(*d)),
            Counter::Reason(r) => format!("reasons.{}", r.key()),
            Counter::FlaggedReason(r) => format!("flagged.reason.{}", r.key()),
            Counter::FlaggedCategory(c) => format!("flagged.category.{}", c.key()),
            Counter::Review(f) => format!("reviews.{}", f.key()),
            Counter::RereviewsDrawn => "rereviews.drawn".into(),
            Counter::Rereview(f) => format!("rereviews.{}", f.key()),
            Counter::QueueDecided(t) => format!("queue.decided.{}", t.key()),
            Counter::QueueWaitMillis => "queue.wait_ms".into(),
            Counter::CommandsAccepted => "cmd.accepted".into(),
            Counter::CommandsRefused => "cmd.refused".into(),
            Counter::CommandsRefusedBy(why) => format!("cmd.refused.{why}"),
            Counter::CommandAuditErrors => "cmd.audit_errors".into(),
            Counter::CommandAnswersDropped => "cmd.answers_dropped".into(),
            Counter::Line(line, c) => format!("{line}.{}", c.key()),
            Counter::SightingsSent => "sightings.sent".into(),
            Counter::SightingsReceived => "sightings.received".into(),
            Counter::SightingsDuplicate => "sightings.duplicate".into(),
            Counter::SightingsRefused(why) => format!("sightings.refused.{}", why.code()),
            Counter::SightingsConnectionErrors => "sightings.connection_errors".into(),
            Counter::DecisionsLate => "decisions.late".into(),
            Counter::SinkStoreFailed => "sink.store_failed".into(),
            Counter::SinkDecisionsNotSent => "sink.decisions_not_sent".into(),
            Counter::SinkLostAtStop => "sink.lost_at_stop".into(),
            Counter::StoreGroups => "store.groups".into(),
            Counter::StoreCommitted => "store.committed".into(),
            Counter::StoreErrors => "store.errors".into(),
            Counter::StoreSetAside => "store.set_aside".into(),
            Counter::StoreAuditPruned => "store.audit_pruned".into(),
            Counter::StoreSweepErrors => "store.sweep_errors".into(),
            Counter::StoreExpiredRecords => "store.expired_records".into(),
            Counter::StoreEvictedImages => "store.evicted_images".into(),
            Counter::StoreSlimmedRecords => "store.slimmed_records".into(),
            Counter::StoreBudgetAlarms => "store.budget_alarms".into(),
            Counter::FeedReportsAcked => "feed.reports_acked".into(),
            Counter::FeedStatsAcked => "feed.stats_acked".into(),
            Counter::FeedStatsQueued => "feed.stats_queued".into(),
            Counter::FeedStatsErrors => "feed.stats_errors".into(),
            Counter::FeedConnectionErrors => "feed.connection_errors".into(),
            Counter::LinkChanges => "links.changes".into(),
            Counter::StageStalls => "supervise.stalls".into(),
            Counter::ModelSwaps => "model.swaps".into(),
            Counter::ModelSwapsRefused => "model.swaps_refused".into(),
            Counter::ConsoleLogins => "console.logins".into(),
            Counter::ConsoleLoginFailures => "console.login_failures".into(),
            Counter::ConsoleLoginsThrottled => "console.logins_throttled".into(),
            Counter::ConsoleLoginsBusy => "console.logins_busy".into(),
            Counter::ConsoleBadRequests => "console.bad_requests".into(),
            Counter::ConsoleBadHosts => "console.bad_hosts".into(),
            Counter::ConsoleUserFileErrors => "console.user_file_errors".into(),
            Counter::ConsoleAuditErrors => "console.audit_errors".into(),
            Counter::ConsoleMetricsRefused => "console.metrics_refused".into(),
        }
    }

    /// Every key the console's JSON adds this counter to: its own, and for a line's
    /// counter the sum over the lines (`reader.records`) and over kinds
    /// (`xray.quarantined`, `L1.xray.quarantined`).
    pub(super) fn keys(&self) -> Vec<String> {
        let Counter::Line(line, c) = self else {
            return match self {
                // And all reasons together.
                Counter::SightingsRefused(_) => vec![self.key(), "sightings.refused".into()],
                _ => vec![self.key()],
            };
        };
        let own = c.key();
        let mut keys = vec![format!("{line}.{own}")];
        if let Some(all) = c.aggregate() {
            keys.push(format!("{line}.{all}"));
            keys.push(all.to_owned());
        }
        if c.summed_over_lines() {
            keys.push(own);
        }
        keys
    }

    /// Whether the store keeps it: the counters the regulator's statistics are made of,
    /// which a restart must not lose.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Counter::ParcelsDecided
                | Counter::Decided(_)
                | Counter::Reason(_)
                | Counter::FlaggedReason(_)
                | Counter::FlaggedCategory(_)
                | Counter::Review(_)
                | Counter::RereviewsDrawn
                | Counter::Rereview(_)
                | Counter::QueueDecided(_)
                | Counter::QueueWaitMillis
                | Counter::CommandsAccepted
                | Counter::CommandsRefused
        )
    }

    /// Whether `/metrics` shows it. The queue's wait classes and sum are for the
    /// regulator's statistics; `/metrics` has the same as a histogram
    /// (`screenline_queue_time_to_decision_seconds`).
    pub fn in_metrics(&self) -> bool {
        !matches!(self, Counter::QueueDecided(_) | Counter::QueueWaitMillis)
    }

    /// The durable counter kept under `key`, if it is one (see [`Counter::key`]).
    pub fn from_key(key: &str) -> Option<Counter> {
        fn find<T: Copy>(all: &[T], key: &str, name: impl Fn(T) -> &'static str) -> Option<T> {
            all.iter().copied().find(|t| name(*t) == key)
        }
        let (head, rest) = key.split_once('.')?;
        Some(match (head, rest) {
            ("parcels", "decided") => Counter::ParcelsDecided,
            ("parcels", d) => Counter::Decided(find(&Decision::ALL, d, decision_key)?),
            ("reasons", r) => Counter::Reason(find(&ReasonCode::ALL, r, ReasonCode::key)?),
            ("flagged", rest) => match rest.split_once('.')? {
                ("reason", r) => {
                    Counter::FlaggedReason(find(&ReasonCode::ALL, r, ReasonCode::key)?)
                }
                ("category", c) => Counter::FlaggedCategory(Category::from_key(c)?),
                _ => return None,
            },
            ("reviews", f) => Counter::Review(find(&Finding::ALL, f, Finding::key)?),
            ("rereviews", "drawn") => Counter::RereviewsDrawn,
            ("rereviews", f) => Counter::Rereview(find(&Finding::ALL, f, Finding::key)?),
            ("queue", "wait_ms") => Counter::QueueWaitMillis,
            ("queue", rest) => Counter::QueueDecided(find(
                &DecisionTime::ALL,
                rest.strip_prefix("decided.")?,
                DecisionTime::key,
            )?),
            ("cmd", "accepted") => Counter::CommandsAccepted,
            ("cmd", "refused") => Counter::CommandsRefused,
            _ => return None,
        })
    }

    /// Where it goes in `/metrics`.
    pub fn metric(&self) -> Metric {
        let one = |name, help, key: &'static str, value: &str| {
            labelled(name, help, vec![(key, value.to_owned())])
        };
        // Families of one counter per result: one name and help each.
        let commands = |r| {
            one(
                "regulator_commands",
                "Regulator commands, per result.",
                "result",
                r,
            )
        };
        let swaps = |r| {
            one(
                "model_swaps",
                "Model swaps from the console, per result.",
                "result",
                r,
            )
        };
        let logins = |r| one("console_logins", "Console logins, per result.", "result", r);
        match self {
            Counter::ParcelsDecided => metric(
                "parcels_screened",
                "Parcels decided: cleared, flagged or sent to manual inspection.",
            ),
            Counter::Decided(d) => one(
                "parcel_decisions",
                "Parcels decided, per decision.",
                "decision",
                d.key(),
            ),
            Counter::Reason(r) => one(
                "parcel_reasons",
                "Decisions carrying a reason, per reason.",
                "reason",
                r.key(),
            ),
            Counter::FlaggedReason(r) => one(
                "flagged_parcel_reasons",
                "Flagged parcels carrying a reason, per reason.",
                "reason",
                r.key(),
            ),
            Counter::FlaggedCategory(c) => one(
                "flagged_parcels",
                "Flagged parcels, per top category the model saw.",
                "category",
                c.key(),
            ),
            Counter::Review(f) => one(
                "operator_reviews",
                "Operators' reviews of opened parcels, per finding.",
                "finding",
                f.key(),
            ),
            Counter::RereviewsDrawn => metric(
                "rereviews_drawn",
                "Cleared parcels drawn for re-review in the judging queue.",
            ),
            Counter::Rereview(f) => one(
                "rereviews",
                "Re-reviews of cleared parcels, per finding (confirmed: suspect after all).",
                "finding",
                f.key(),
            ),
            Counter::QueueDecided(t) => one(
                "queue_decisions",
                "Parcels judged from the queue, per time since their arrival.",
                "within",
                t.key(),
            ),
            Counter::QueueWaitMillis => metric(
                "queue_wait_milliseconds",
                "Milliseconds parcels waited in the judging queue, summed.",
            ),
            Counter::CommandsAccepted => commands("accepted"),
            Counter::CommandsRefused => commands("refused"),
            Counter::CommandsRefusedBy(why) => one(
                "regulator_commands_refused",
                "Regulator commands refused, per reason.",
                "reason",
                why,
            ),
            Counter::CommandAuditErrors => metric(
                "regulator_command_audit_errors",
                "Regulator commands that could not be audited.",
            ),
            Counter::CommandAnswersDropped => metric(
                "regulator_command_answers_dropped",
                "Answers to unverified regulator commands dropped for want of room.",
            ),
            Counter::Line(line, c) => c.metric(line),
            Counter::SightingsSent => {
                metric("sightings_sent", "Own sightings the broker acknowledged.")
            }
            Counter::SightingsReceived => metric(
                "sightings_received",
                "Peers' sightings folded into the split-shipment ledger.",
            ),
            Counter::SightingsDuplicate => metric(
                "sightings_duplicate",
                "Peers' sightings the ledger already had (redeliveries).",
            ),
            Counter::SightingsRefused(why) => one(
                "sightings_refused",
                "Peers' sightings refused, per reason.",
                "reason",
                why.code(),
            ),
            Counter::SightingsConnectionErrors => metric(
                "sightings_connection_errors",
                "Sightings connections lost or refused.",
            ),
            Counter::DecisionsLate => metric(
                "decisions_late",
                "Decisions made after the parcel passed the line's decision point.",
            ),
            Counter::SinkStoreFailed => metric(
                "parcels_store_failed",
                "Parcels that could not be stored when decided: no pass sent, diverted.",
            ),
            Counter::SinkDecisionsNotSent => metric(
                "decisions_not_sent",
                "Decisions not handed to the line controller (its queue was full).",
            ),
            Counter::SinkLostAtStop => metric(
                "parcels_lost_at_stop",
                "Held parcels still not stored when the appliance stopped.",
            ),
            Counter::StoreGroups => metric(
                "store_commit_groups",
                "Group commits of records (one transaction and one flush each).",
            ),
            Counter::StoreCommitted => metric("store_records_committed", "Records committed."),
            Counter::StoreErrors => metric(
                "store_errors",
                "Parcels and reviews the store could not take.",
            ),
            Counter::StoreSetAside => {
                metric("store_set_aside", "Damaged stores moved aside at start.")
            }
            Counter::StoreAuditPruned => metric(
                "store_audit_entries_pruned",
                "Audit entries removed by retention.",
            ),
            Counter::StoreSweepErrors => {
                metric("store_sweep_errors", "Retention sweeps that failed.")
            }
            Counter::StoreExpiredRecords => {
                metric("store_records_expired", "Records removed past retention.")
            }
            Counter::StoreEvictedImages => metric(
                "store_images_evicted",
                "Cleared parcels' images removed for the disk budget.",
            ),
            Counter::StoreSlimmedRecords => metric(
                "store_records_slimmed",
                "Cleared parcels' records slimmed by retention.",
            ),
            Counter::StoreBudgetAlarms => metric(
                "store_budget_alarms",
                "Times the disk budget was reached with nothing left that may go.",
            ),
            Counter::FeedReportsAcked => metric(
                "feed_reports_acked",
                "Flagged reports the broker acknowledged.",
            ),
            Counter::FeedStatsAcked => metric(
                "feed_stats_acked",
                "Statistics messages the broker acknowledged.",
            ),
            Counter::FeedStatsQueued => metric(
                "feed_stats_queued",
                "Statistics periods queued for the regulator.",
            ),
            Counter::FeedStatsErrors => metric(
                "feed_stats_errors",
                "Statistics periods that could not be queued.",
            ),
            Counter::FeedConnectionErrors => metric(
                "feed_connection_errors",
                "Broker connections lost or refused.",
            ),
            Counter::LinkChanges => metric("link_changes", "Links that went up or down."),
            Counter::StageStalls => metric(
                "stage_stalls",
                "Times a pipeline stage stalled (the systemd watchdog stops).",
            ),
            Counter::ModelSwaps => swaps("accepted"),
            Counter::ModelSwapsRefused => swaps("refused"),
            Counter::ConsoleLogins => logins("accepted"),
            Counter::ConsoleLoginFailures => logins("refused"),
            Counter::ConsoleLoginsThrottled => logins("throttled"),
            Counter::ConsoleLoginsBusy => logins("busy"),
            Counter::ConsoleBadRequests => metric(
                "console_bad_requests",
                "Console requests refused as malformed.",
            ),
            Counter::ConsoleBadHosts => metric(
                "console_bad_hosts",
                "Console requests refused for their Host header.",
            ),
            Counter::ConsoleUserFileErrors => metric(
                "console_user_file_errors",
                "Failures reading or writing the console's users file.",
            ),
            Counter::ConsoleAuditErrors => metric(
                "console_audit_errors",
                "Console actions that could not be audited.",
            ),
            Counter::ConsoleMetricsRefused => metric(
                "console_metrics_refused",
                "/metrics requests refused (not loopback, no valid bearer token).",
            ),
        }
    }

    /// Counters `/metrics` shows from the start, at zero until they move: what alerts and
    /// `rate()` need to exist before the first parcel.
    pub(super) fn always_shown() -> Vec<Counter> {
        let mut all = vec![
            Counter::ParcelsDecided,
            Counter::DecisionsLate,
            Counter::SinkStoreFailed,
            Counter::StoreErrors,
            Counter::FeedReportsAcked,
            Counter::FeedConnectionErrors,
            Counter::CommandsAccepted,
            Counter::CommandsRefused,
            Counter::StageStalls,
        ];
        all.extend(Decision::ALL.map(Counter::Decided));
        all
    }
}

/// A gauge: a value that goes up and down, set by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gauge {
    /// Messages waiting in the outbox for the broker.
    FeedBacklog,
    /// Bytes the store uses on disk (records and images).
    StoreBytes,
    /// Records past retention kept because their reports are unsent.
    StoreRetentionHeld,
    /// Parcels held in memory for a store retry.
    SinkHeld,
    /// Parcels in the last inference batch.
    ScreenLastBatch,
    /// Microseconds the last inference batch took, from its oldest parcel.
    ScreenLastLatencyMicros,
    /// A line's belt speed in mm/s, as its controller reports it.
    BeltSpeedMillimetresPerSecond(String),
    /// Own sightings waiting for the broker.
    SightingsBacklog,
    /// Own sightings dropped unsent since start: too old for any peer to count, or past the
    /// outbox's cap.
    SightingsDropped,
    /// Senders × categories in the split-shipment ledger.
    SightingsLedgerKeys,
}

impl Gauge {
    /// The gauge's key in the console's JSON (`feed.backlog`, `L1.belt_mm_per_s`).
    pub fn key(&self) -> String {
        match self {
            Gauge::FeedBacklog => "feed.backlog".into(),
            Gauge::StoreBytes => "store.bytes".into(),
            Gauge::StoreRetentionHeld => "store.retention_held".into(),
            Gauge::SinkHeld => "sink.held".into(),
            Gauge::ScreenLastBatch => "screen.last_batch".into(),
            Gauge::ScreenLastLatencyMicros => "screen.last_latency_us".into(),
            Gauge::BeltSpeedMillimetresPerSecond(line) => format!("{line}.belt_mm_per_s"),
            Gauge::SightingsBacklog => "sightings.backlog".into(),
            Gauge::SightingsDropped => "sightings.dropped".into(),
            Gauge::SightingsLedgerKeys => "sightings.ledger_keys".into(),
        }
    }

    /// Where it goes in `/metrics`, and the factor from its value to the metric's base
    /// unit (seconds, metres).
    pub fn metric(&self) -> (Metric, f64) {
        match self {
            Gauge::FeedBacklog => (
                metric(
                    "feed_backlog_messages",
                    "Messages (flagged reports, statistics) waiting for the broker.",
                ),
                1.0,
            ),
            Gauge::StoreBytes => (
                metric(
                    "store_used_bytes",
                    "Bytes the store uses on disk, records and images.",
                ),
                1.0,
            ),
            Gauge::StoreRetentionHeld => (
                metric(
                    "store_retention_held_records",
                    "Records past retention kept because their reports are unsent.",
                ),
                1.0,
            ),
            Gauge::SinkHeld => (
                metric(
                    "sink_held_parcels",
                    "Parcels held in memory for a store retry (diverted meanwhile).",
                ),
                1.0,
            ),
            Gauge::ScreenLastBatch => (
                metric(
                    "screen_last_batch_parcels",
                    "Parcels in the last inference batch.",
                ),
                1.0,
            ),
            Gauge::ScreenLastLatencyMicros => (
                metric(
                    "screen_last_batch_latency_seconds",
                    "Time the last inference batch took, from its oldest parcel's image.",
                ),
                1e-6,
            ),
            Gauge::BeltSpeedMillimetresPerSecond(line) => (
                labelled(
                    "belt_speed_meters_per_second",
                    "A line's belt speed, as its controller reports it.",
                    vec![("line", line.clone())],
                ),
                1e-3,
            ),
            Gauge::SightingsBacklog => (
                metric(
                    "sightings_backlog_messages",
                    "Own sightings waiting for the broker.",
                ),
                1.0,
            ),
            Gauge::SightingsDropped => (
                metric(
                    "sightings_dropped_messages",
                    "Own sightings dropped unsent since start (too old, or past the outbox's cap).",
                ),
                1.0,
            ),
            Gauge::SightingsLedgerKeys => (
                metric(
                    "split_ledger_keys",
                    "Senders by category in the split-shipment ledger.",
                ),
                1.0,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable_examples() -> Vec<Counter> {
        let mut all = vec![
            Counter::ParcelsDecided,
            Counter::CommandsAccepted,
            Counter::CommandsRefused,
        ];
        all.extend(Decision::ALL.map(Counter::Decided));
        all.extend(ReasonCode::ALL.map(Counter::Reason));
        all.extend(ReasonCode::ALL.map(Counter::FlaggedReason));
        all.extend(Category::ALL.map(Counter::FlaggedCategory));
        all.extend(Finding::ALL.map(Counter::Review));
        all.extend(DecisionTime::ALL.map(Counter::QueueDecided));
        all.push(Counter::QueueWaitMillis);
        all.push(Counter::RereviewsDrawn);
        all.extend(Finding::ALL.map(Counter::Rereview));
        all
    }

    #[test]
    fn every_durable_counter_reads_back_from_its_key() {
        for c in durable_examples() {
            assert!(c.is_durable(), "{c:?}");
            assert_eq!(Counter::from_key(&c.key()), Some(c.clone()), "{}", c.key());
        }
        for volatile in [
            Counter::CommandsRefusedBy("stale"),
            Counter::FeedReportsAcked,
            Counter::line("L1", LineCounter::ReaderRecords),
        ] {
            assert!(!volatile.is_durable());
            assert_eq!(Counter::from_key(&volatile.key()), None);
        }
        for unknown in [
            "parcels.",
            "reasons.nope",
            "flagged.reason",
            "cmd.refused.stale",
            "",
        ] {
            assert_eq!(Counter::from_key(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn the_keys_are_the_names_the_store_and_the_console_always_used() {
        assert_eq!(Counter::Decided(Decision::Flag).key(), "parcels.flag");
        assert_eq!(
            Counter::FlaggedReason(ReasonCode::CounterfeitSuspected).key(),
            "flagged.reason.counterfeit_suspected"
        );
        assert_eq!(
            Counter::FlaggedCategory(Category::Electronics).key(),
            "flagged.category.electronics"
        );
        assert_eq!(
            Counter::Review(Finding::Confirmed).key(),
            "reviews.confirmed"
        );
        assert_eq!(
            Counter::line("L1", LineCounter::ReaderRecords).keys(),
            ["L1.reader.records", "reader.records"]
        );
        assert_eq!(
            Counter::line("L2", LineCounter::XrayQuarantined("symlink")).keys(),
            [
                "L2.xray.quarantined.symlink",
                "L2.xray.quarantined",
                "xray.quarantined",
                "xray.quarantined.symlink"
            ]
        );
        assert_eq!(
            Counter::line("L1", LineCounter::SerialOpens(Device::Reader)).keys(),
            ["L1.reader.opens"]
        );
        assert_eq!(
            Counter::line("L1", LineCounter::Outcome(ParcelOutcome::FailSafe)).key(),
            "L1.controller.fail_safe"
        );
    }

    #[test]
    fn metric_names_follow_prometheus_conventions() {
        let mut all = durable_examples();
        all.extend([
            Counter::CommandsRefusedBy("busy"),
            Counter::line("L1", LineCounter::XrayQuarantined("symlink")),
            Counter::line("L1", LineCounter::Joined(JoinOutcome::NoRead)),
            Counter::ConsoleLoginsBusy,
            Counter::StoreBudgetAlarms,
        ]);
        for c in all {
            let m = c.metric();
            assert!(
                !m.name.ends_with("_total"),
                "{}: the encoder adds _total",
                m.name
            );
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            // No label is glued into a name: the key's variable part is a label value.
            for (_, v) in &m.labels {
                assert!(!m.name.contains(v.as_str()), "{} {v}", m.name);
            }
            assert!(m.help.ends_with('.'), "{}", m.help);
        }
    }
}
