//! The console's pages: one typed view per page, built here from the typed records, the
//! store's entries and a telemetry [`Snapshot`], and rendered by an askama template in
//! `appliance/templates/` (checked when the appliance is compiled). Every page extends
//! `base.html`; the engine escapes every value. Identity arrives masked
//! ([`crate::domain::mask`]): a record's sender through
//! [`crate::domain::Sender::masked`], a live parcel's as the telemetry holds it.

use super::auth::{Role, Session};
use super::i18n::{t, Lang};
use super::snapshot::Snapshot;
use super::Ctx;
use crate::domain::{Category, Decision, ModelInfo, Reason};
use crate::logbuf::LogLine;
use crate::record::{Record, StoredSender};
use crate::report::sightings::SightingsSnapshot;
use crate::screen::swap::Swapped;
use crate::store::audit::AuditEntry;
use crate::store::prefs::UserPrefs;
use crate::store::queue::Waiting;
use crate::store::review::{Finding, Review};
use crate::telemetry::{Counter, Link, ParcelOutcome, ParcelSummary};
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A page as rendered, ready to answer with.
pub(super) struct Page(askama::Result<String>);

impl Page {
    fn of(view: &impl Template) -> Page {
        Page(view.render())
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot render a console page");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// What every page's frame shows (`base.html`): title, navigation, the viewer, the words
/// the page script needs, the language switch.
struct Layout {
    lang: Lang,
    title: String,
    /// Empty without a session.
    nav: Vec<NavItem>,
    me: Option<Me>,
    words: ScriptJson,
    /// Where the language switch comes back to (URL-encoded).
    back: String,
}

struct NavItem {
    href: &'static str,
    word: &'static str,
    on: bool,
}

struct Me {
    user: String,
    role: &'static str,
    csrf: String,
}

/// Every viewer's pages, then the technician's.
const NAV: &[(&str, &str)] = &[
    ("/", "nav.line"),
    ("/queue", "nav.queue"),
    ("/flagged", "nav.flagged"),
    ("/search", "nav.search"),
    ("/settings", "nav.settings"),
];
const NAV_TECHNICIAN: &[(&str, &str)] = &[
    ("/devices", "nav.devices"),
    ("/model", "nav.model"),
    ("/config", "nav.config"),
    ("/logs", "nav.logs"),
    ("/audit", "nav.audit"),
];

impl Layout {
    /// The frame of a page titled `title`, whose navigation item is `active`.
    fn new(lang: Lang, session: Option<&Session>, title: &str, active: &str) -> Layout {
        let nav = match session {
            None => Vec::new(),
            Some(s) => {
                let extra = if s.role == Role::Technician {
                    NAV_TECHNICIAN
                } else {
                    &[]
                };
                NAV.iter()
                    .chain(extra)
                    .map(|&(href, key)| NavItem {
                        href,
                        word: t(lang, key),
                        on: href == active,
                    })
                    .collect()
            }
        };
        Layout {
            lang,
            title: title.to_owned(),
            nav,
            me: session.map(|s| Me {
                user: s.user.clone(),
                role: t(
                    lang,
                    match s.role {
                        Role::Operator => "role.operator",
                        Role::Technician => "role.technician",
                    },
                ),
                csrf: s.csrf.clone(),
            }),
            words: ScriptJson::words(lang),
            back: super::urlencode(active),
        }
    }

    /// The frame of a logged-in viewer's page, titled by its navigation word.
    fn page(ctx: &Ctx, title_key: &str, active: &str) -> Layout {
        Layout::new(ctx.lang, Some(&ctx.session), t(ctx.lang, title_key), active)
    }

    /// The word for `key` in the page's language.
    fn t(&self, key: &str) -> &'static str {
        t(self.lang, key)
    }
}

/// JSON for a `<script type="application/json">` element, with every `<` written `\u003c`
/// so that no text in it can close the element. The template writes it unescaped (`|safe`):
/// a script element's text is not HTML-decoded, so entities would corrupt the JSON.
struct ScriptJson(String);

impl ScriptJson {
    /// The words the page script needs (no inline script: the CSP forbids it): the live
    /// marker's and the outcomes' (rows and badges arrive rendered).
    fn words(lang: Lang) -> ScriptJson {
        const KEYS: &[&str] = &[
            "disconnected",
            "live",
            "outcome.passed",
            "outcome.diverted",
            "outcome.fail-safe",
            "outcome.pending",
            "alarm.unarmed",
            "alarm.armed",
            "alarm.ringing",
            "alarm.muted",
            "alarm.no_sound",
            "queue.none",
            "queue.confirmed",
            "queue.cleared",
            "queue.recorded",
            "queue.undone",
            "queue.failed",
            "queue.nothing_to_undo",
        ];
        let mut words: serde_json::Map<String, Value> = KEYS
            .iter()
            .map(|k| ((*k).to_owned(), Value::from(t(lang, k))))
            .collect();
        words.insert("lang".into(), Value::from(lang.tag()));
        // The page's one key map: what each key does, for the page script.
        words.insert(
            "keys".into(),
            Value::Object(
                KEYMAP
                    .iter()
                    .map(|k| (k.key.to_owned(), Value::from(k.action)))
                    .collect(),
            ),
        );
        ScriptJson::of(&Value::Object(words))
    }

    /// Any JSON value, safe inside a script element.
    fn of(value: &Value) -> ScriptJson {
        ScriptJson(value.to_string().replace('<', "\\u003c"))
    }
}

impl std::fmt::Display for ScriptJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---- The key map and the X-ray viewer (`viewer.html`, `viewer.js`).

/// One key of the page's key map and what it does.
pub(super) struct Key {
    /// The key as the browser names it (`KeyboardEvent.key`).
    pub key: &'static str,
    /// `tool:<viewer tool>`, `judge:<action>`, `queue:next` or `alarm:ack`.
    pub action: &'static str,
}

/// The whole console's keys: one key map for every page, each key doing one thing
/// (`=` is `+` without the shift key). Letters work in either case.
pub(super) const KEYMAP: &[Key] = &[
    Key {
        key: "c",
        action: "tool:colour",
    },
    Key {
        key: "g",
        action: "tool:grey",
    },
    Key {
        key: "v",
        action: "tool:negative",
    },
    Key {
        key: "h",
        action: "tool:high",
    },
    Key {
        key: "l",
        action: "tool:low",
    },
    Key {
        key: "o",
        action: "tool:organic",
    },
    Key {
        key: "i",
        action: "tool:inorganic",
    },
    Key {
        key: "e",
        action: "tool:edges",
    },
    Key {
        key: "+",
        action: "tool:zoom-in",
    },
    Key {
        key: "=",
        action: "tool:zoom-in",
    },
    Key {
        key: "-",
        action: "tool:zoom-out",
    },
    Key {
        key: "r",
        action: "tool:reset",
    },
    Key {
        key: "b",
        action: "tool:boxes",
    },
    Key {
        key: "s",
        action: "judge:confirm",
    },
    Key {
        key: "p",
        action: "judge:clear",
    },
    Key {
        key: "n",
        action: "judge:note",
    },
    Key {
        key: "u",
        action: "judge:undo",
    },
    Key {
        key: "Enter",
        action: "queue:next",
    },
    Key {
        key: "a",
        action: "alarm:ack",
    },
];

/// The key shown for an action (its first in [`KEYMAP`]).
pub(super) fn key_for(action: &str) -> &'static str {
    KEYMAP
        .iter()
        .find(|k| k.action == action)
        .map_or("", |k| k.key)
}

/// The viewer's tools in toolbar order: (tool, word key). `high` and `low` need the 16-bit
/// energies of a pair.
pub(super) const TOOLS: &[(&str, &str)] = &[
    ("colour", "tool.colour"),
    ("grey", "tool.grey"),
    ("negative", "tool.negative"),
    ("high", "tool.high"),
    ("low", "tool.low"),
    ("organic", "tool.organic"),
    ("inorganic", "tool.inorganic"),
    ("edges", "tool.edges"),
    ("zoom-in", "tool.zoom-in"),
    ("zoom-out", "tool.zoom-out"),
    ("reset", "tool.reset"),
    ("boxes", "tool.boxes"),
];

/// The viewer of one kept scan (`viewer.html`), rendered into the parcel page and the
/// queue's judging pane.
#[derive(Template)]
#[template(path = "viewer.html")]
pub(super) struct Viewer<'a> {
    record_id: &'a str,
    /// `pair` (16-bit dual energy) or `rgb` (one pseudo-colour image).
    kind: &'static str,
    tools: Vec<ToolButton>,
    /// Why some tools are not available, if some are not.
    unavailable: Option<&'static str>,
    boxes: Vec<BoxRow>,
    /// What the viewer script needs: the pixels' address, the boxes, the words.
    data: ScriptJson,
    words: ViewerWords,
}

struct ViewerWords {
    title: &'static str,
    boxes: &'static str,
    no_boxes: &'static str,
    loading: &'static str,
    help: &'static str,
}

struct ToolButton {
    tool: &'static str,
    key: &'static str,
    word: &'static str,
    /// Why it is not available here, if it is not.
    why: Option<&'static str>,
}

/// A detection as the viewer lists it beside the image.
struct BoxRow {
    /// Counted from 1, as the reasons name boxes.
    n: usize,
    category: &'static str,
    score: String,
    counterfeit: String,
    /// Most likely counterfeit: drawn red.
    suspect: bool,
}

impl<'a> Viewer<'a> {
    /// The viewer of `r`'s kept scan; `None` if it kept none.
    pub(super) fn of(lang: Lang, r: &'a Record) -> Option<Viewer<'a>> {
        let files = r.image_files();
        let kind = match files.len() {
            1 => "rgb",
            2 => "pair",
            _ => return None,
        };
        let na = t(lang, "viewer.rgb_only");
        let tools = TOOLS
            .iter()
            .map(|&(tool, word)| ToolButton {
                tool,
                key: key_for(&format!("tool:{tool}")),
                word: t(lang, word),
                why: (kind == "rgb" && matches!(tool, "high" | "low")).then_some(na),
            })
            .collect();
        let detections = r
            .scores
            .as_ref()
            .map_or(&[][..], |s| s.detections.as_slice());
        let boxes: Vec<BoxRow> = detections
            .iter()
            .enumerate()
            .map(|(i, d)| BoxRow {
                n: i + 1,
                category: d.category.label(lang),
                score: format!("{:.2}", d.score),
                counterfeit: format!("{:.2}", d.counterfeit),
                suspect: d.counterfeit >= 0.5,
            })
            .collect();
        let data = serde_json::json!({
            "record": r.record_id,
            "kind": kind,
            "pixels": format!("/parcel/{}/pixels", r.record_id),
            "boxes": detections.iter().enumerate().map(|(i, d)| serde_json::json!({
                "n": i + 1,
                "label": format!("{} {} {:.2}", i + 1, d.category.label(lang), d.score),
                "box": [d.bbox.x0, d.bbox.y0, d.bbox.x1, d.bbox.y1],
                "suspect": d.counterfeit >= 0.5,
            })).collect::<Vec<_>>(),
            "words": {
                "unavailable": na,
                "failed": t(lang, "viewer.failed"),
                "gone": t(lang, "viewer.gone"),
                "zoom": t(lang, "viewer.zoom"),
                "tools": TOOLS
                    .iter()
                    .map(|&(tool, word)| (tool.to_owned(), Value::from(t(lang, word))))
                    .collect::<serde_json::Map<_, _>>(),
            },
        });
        Some(Viewer {
            record_id: &r.record_id,
            kind,
            tools,
            unavailable: (kind == "rgb").then_some(na),
            boxes,
            data: ScriptJson::of(&data),
            words: ViewerWords {
                title: t(lang, "image"),
                boxes: t(lang, "viewer.boxes"),
                no_boxes: t(lang, "viewer.no_boxes"),
                loading: t(lang, "viewer.loading"),
                help: t(lang, "viewer.help"),
            },
        })
    }

    /// The viewer's markup; `None` (and logged) if it cannot be rendered.
    pub(super) fn html(&self) -> Option<String> {
        self.render()
            .inspect_err(|e| tracing::error!(error = %e, "cannot render the viewer"))
            .ok()
    }
}

// ---- Pieces several pages share (`parts.html`).

/// A decision, coloured by its class.
struct DecisionView {
    key: &'static str,
    word: &'static str,
}

impl DecisionView {
    fn new(lang: Lang, d: Decision) -> DecisionView {
        let word = match d {
            Decision::Clear => "decision.clear",
            Decision::Flag => "decision.flag",
            Decision::Manual => "decision.manual",
        };
        DecisionView {
            key: d.key(),
            word: t(lang, word),
        }
    }
}

/// A reason in the viewer's language, with its code for the page script and the tests.
struct ReasonView<'a> {
    code: &'static str,
    words: &'a str,
}

fn reasons(lang: Lang, reasons: &[Reason]) -> Vec<ReasonView<'_>> {
    reasons
        .iter()
        .map(|r| ReasonView {
            code: r.code.key(),
            words: match lang {
                Lang::Zh => &r.zh,
                Lang::En => &r.en,
            },
        })
        .collect()
}

/// What the line controller reported it did with a parcel; `pending` until it has.
struct OutcomeView {
    key: &'static str,
    word: &'static str,
}

impl OutcomeView {
    fn new(lang: Lang, outcome: Option<ParcelOutcome>) -> OutcomeView {
        let (key, word) = match outcome {
            Some(ParcelOutcome::Passed) => ("passed", "outcome.passed"),
            Some(ParcelOutcome::Diverted) => ("diverted", "outcome.diverted"),
            Some(ParcelOutcome::FailSafe) => ("fail-safe", "outcome.fail-safe"),
            None => ("pending", "outcome.pending"),
        };
        OutcomeView {
            key,
            word: t(lang, word),
        }
    }
}

/// Up or down, as a class and a word.
struct StateView {
    class: &'static str,
    word: &'static str,
}

impl StateView {
    /// With the line page's classes (`up`, `down`).
    fn badge(lang: Lang, up: bool) -> StateView {
        StateView {
            class: if up { "up" } else { "down" },
            word: t(lang, if up { "up" } else { "down" }),
        }
    }

    /// With the tables' classes (`clear`, `flag`).
    fn cell(lang: Lang, up: bool) -> StateView {
        StateView {
            class: if up { "clear" } else { "flag" },
            word: t(lang, if up { "up" } else { "down" }),
        }
    }
}

/// A named count.
struct Count {
    name: String,
    value: u64,
}

fn category_label(lang: Lang, key: Option<&str>) -> String {
    match key {
        None => "—".to_owned(),
        Some(k) => Category::from_key(k).map_or_else(|| k.to_owned(), |c| c.label(lang).to_owned()),
    }
}

/// A record's sender, masked; a cleared record keeps none to show.
fn masked_sender(record: &Record) -> String {
    match &record.sender {
        Some(StoredSender::Full(s)) => s.masked(),
        _ => "—".to_owned(),
    }
}

/// The time of day of an instant (`HH:MM:SS`, UTC).
fn clock(t: SystemTime) -> String {
    crate::time_fmt::format(t)
        .get(11..19)
        .unwrap_or_default()
        .to_owned()
}

/// At most the first `n` characters of an RFC 3339 text (its seconds, say).
fn prefix(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

// ---- Login and messages.

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    next: &'a str,
    error: Option<&'a str>,
}

/// The login form, with `error` said above it; `next` is where a login goes.
pub(super) fn login(lang: Lang, next: &str, error: Option<&str>) -> Page {
    Page::of(&LoginPage {
        layout: Layout::new(lang, None, t(lang, "login"), "/login"),
        next,
        error,
    })
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    layout: Layout,
    text: &'a str,
}

/// A page with one message (errors, refusals).
pub(super) fn message(lang: Lang, session: Option<&Session>, text: &str) -> Page {
    Page::of(&MessagePage {
        layout: Layout::new(lang, session, text, ""),
        text,
    })
}

// ---- The line.

/// Link states and each line's stack light (`badges.html`): on the line page, and sent
/// again, rendered, with every live status.
#[derive(Template)]
#[template(path = "badges.html")]
pub(super) struct Badges<'a> {
    links: Vec<LinkBadge<'a>>,
    lights: Vec<LightBadge<'a>>,
    /// The stack light's word.
    stack: &'static str,
}

struct LinkBadge<'a> {
    name: &'a str,
    detail: &'a str,
    class: &'static str,
    word: &'static str,
}

struct LightBadge<'a> {
    line: &'a str,
    /// The lamp's class: what the controller reports.
    light: &'a str,
    word: &'static str,
}

impl<'a> Badges<'a> {
    pub(super) fn new(lang: Lang, snapshot: &'a Snapshot) -> Badges<'a> {
        Badges {
            links: snapshot
                .links()
                .map(|l| {
                    let state = StateView::badge(lang, l.state.up);
                    LinkBadge {
                        name: l.name,
                        detail: &l.state.detail,
                        class: state.class,
                        word: state.word,
                    }
                })
                .collect(),
            lights: snapshot
                .stack_lights()
                .map(|s| LightBadge {
                    line: s.line,
                    light: s.light,
                    word: t(
                        lang,
                        match s.light {
                            "green" => "light.green",
                            "amber" => "light.amber",
                            "red" => "light.red",
                            "off" => "light.off",
                            _ => "light.unknown",
                        },
                    ),
                })
                .collect(),
            stack: t(lang, "stack"),
        }
    }

    /// The badges alone, for the live status; `None` (and logged) if they cannot be.
    pub(super) fn html(&self) -> Option<String> {
        self.render()
            .inspect_err(|e| tracing::error!(error = %e, "cannot render the link badges"))
            .ok()
    }
}

#[derive(Template)]
#[template(path = "line.html")]
struct LinePage<'a> {
    layout: Layout,
    safe_mode: Option<&'a str>,
    cards: Vec<CounterCard>,
    badges: Badges<'a>,
    rows: Vec<LineRow<'a>>,
}

/// A counter the page script keeps current (`data-counter`).
struct CounterCard {
    /// The counter's key in the live status (`parcels.decided`).
    key: String,
    word: &'static str,
    value: u64,
}

/// One parcel on the line page (`line_row.html`); the live stream sends it rendered.
#[derive(Template)]
#[template(path = "line_row.html")]
struct LineRow<'a> {
    record_id: &'a str,
    time: String,
    line_id: &'a str,
    seq: u32,
    waybill: &'a str,
    sender: &'a str,
    decision: DecisionView,
    reasons: Vec<ReasonView<'a>>,
    category: String,
    score: String,
    outcome: OutcomeView,
}

impl<'a> LineRow<'a> {
    fn new(lang: Lang, p: &'a ParcelSummary) -> LineRow<'a> {
        LineRow {
            record_id: &p.record_id,
            time: clock(p.decided_at),
            line_id: &p.line_id,
            seq: p.seq,
            waybill: p.waybill.as_deref().unwrap_or("—"),
            sender: p.sender.as_deref().unwrap_or("—"),
            decision: DecisionView::new(lang, p.decision),
            reasons: reasons(lang, &p.reasons),
            category: category_label(lang, p.category.as_deref()),
            score: p
                .counterfeit
                .map_or_else(|| "—".to_owned(), |s| format!("{s:.2}")),
            outcome: OutcomeView::new(lang, p.outcome),
        }
    }
}

/// The rows the line page starts with; the live stream adds the rest.
const LINE_ROWS: usize = 100;

/// The live line: counters, links, the latest parcels (`recent`, newest first), and why
/// the appliance runs in safe mode if it does.
pub(super) fn line(
    ctx: &Ctx,
    snapshot: &Snapshot,
    recent: &[ParcelSummary],
    backlog: u64,
    safe_mode: Option<&str>,
) -> Page {
    let lang = ctx.lang;
    let counter = |c: Counter, word: &'static str| CounterCard {
        key: c.key(),
        word: t(lang, word),
        value: snapshot.counter(&c),
    };
    let cards = vec![
        counter(Counter::ParcelsDecided, "decided"),
        counter(Counter::Decided(Decision::Clear), "cleared"),
        counter(Counter::Decided(Decision::Flag), "flagged"),
        counter(Counter::Decided(Decision::Manual), "manual"),
        counter(Counter::FeedReportsAcked, "reported"),
        CounterCard {
            // Not a counter: the live status carries the backlog beside them.
            key: "backlog".to_owned(),
            word: t(lang, "backlog"),
            value: backlog,
        },
        counter(Counter::DecisionsLate, "late"),
    ];
    let rows = recent
        .iter()
        .take(LINE_ROWS)
        .map(|p| LineRow::new(lang, p))
        .collect();
    Page::of(&LinePage {
        layout: Layout::page(ctx, "nav.line", "/"),
        safe_mode,
        cards,
        badges: Badges::new(lang, snapshot),
        rows,
    })
}

// ---- The flagged queue, a parcel, search.

#[derive(Template)]
#[template(path = "flagged.html")]
struct FlaggedPage<'a> {
    layout: Layout,
    rows: Vec<SuspectRow<'a>>,
}

/// One parcel in the flagged queue (`suspect_row.html`); the live stream sends it rendered.
#[derive(Template)]
#[template(path = "suspect_row.html")]
struct SuspectRow<'a> {
    record_id: &'a str,
    has_image: bool,
    time: String,
    waybill: &'a str,
    decision: DecisionView,
    reasons: Vec<ReasonView<'a>>,
    sender: String,
    line_id: &'a str,
}

/// The queue of flagged and manual parcels not yet reviewed.
pub(super) fn flagged(ctx: &Ctx, waiting: &[Record]) -> Page {
    let lang = ctx.lang;
    let rows = waiting
        .iter()
        .map(|r| SuspectRow {
            record_id: &r.record_id,
            has_image: r.image.is_some(),
            time: clock(r.screened_at),
            waybill: r.waybill.as_ref().map_or("—", |w| w.as_str()),
            decision: DecisionView::new(lang, r.decision),
            reasons: reasons(lang, &r.reasons),
            sender: masked_sender(r),
            line_id: &r.line_id,
        })
        .collect();
    Page::of(&FlaggedPage {
        layout: Layout::page(ctx, "nav.flagged", "/flagged"),
        rows,
    })
}

/// A decided parcel for the live stream: as the telemetry has it, with its row for the
/// line page and, unless it was cleared, its row for the flagged queue, rendered by the
/// same templates as the pages' own rows (the page script only inserts them).
#[derive(Serialize)]
pub(super) struct LiveParcel<'a> {
    #[serde(flatten)]
    parcel: &'a ParcelSummary,
    row: String,
    suspect_row: Option<String>,
}

impl<'a> LiveParcel<'a> {
    /// `None` (and logged) if a row cannot be rendered.
    pub(super) fn new(lang: Lang, p: &'a ParcelSummary) -> Option<LiveParcel<'a>> {
        let rendered = || -> askama::Result<LiveParcel<'a>> {
            let suspect_row = match p.decision {
                Decision::Clear => None,
                Decision::Flag | Decision::Manual => Some(
                    SuspectRow {
                        record_id: &p.record_id,
                        // Whether its image was kept is the store's to say; the thumbnail
                        // stays empty where there is none.
                        has_image: true,
                        time: clock(p.decided_at),
                        waybill: p.waybill.as_deref().unwrap_or("—"),
                        decision: DecisionView::new(lang, p.decision),
                        reasons: reasons(lang, &p.reasons),
                        sender: p.sender.clone().unwrap_or_else(|| "—".to_owned()),
                        line_id: &p.line_id,
                    }
                    .render()?,
                ),
            };
            Ok(LiveParcel {
                parcel: p,
                row: LineRow::new(lang, p).render()?,
                suspect_row,
            })
        };
        rendered()
            .inspect_err(|e| tracing::error!(error = %e, "cannot render a live parcel's rows"))
            .ok()
    }
}

#[derive(Template)]
#[template(path = "parcel.html")]
struct ParcelPage<'a> {
    layout: Layout,
    f: Facts<'a>,
    saved: bool,
    reviews: Vec<ReviewView<'a>>,
    csrf: &'a str,
    keys: JudgeKeys,
}

/// What the parcel page and the queue's judging pane show of a parcel.
struct Facts<'a> {
    record_id: &'a str,
    waybill: &'a str,
    line_id: &'a str,
    seq: u32,
    time: String,
    /// The viewer, rendered; `None` without a kept scan.
    viewer: Option<String>,
    decision: DecisionView,
    reasons: Vec<ReasonView<'a>>,
    declared: Option<DeclaredView<'a>>,
    sender: String,
    model: String,
    scores: Vec<ScoreBar>,
}

impl<'a> Facts<'a> {
    fn of(lang: Lang, r: &'a Record) -> Facts<'a> {
        let mut scores = Vec::new();
        if let Some(sc) = &r.scores {
            let mut by_score = sc.category.clone();
            by_score.sort_by(|a, b| b.1.total_cmp(&a.1));
            scores.extend(
                by_score
                    .into_iter()
                    .take(TOP_CATEGORIES)
                    .map(|(c, p)| ScoreBar::new(c.label(lang), "", p)),
            );
            scores.push(ScoreBar::new(t(lang, "counterfeit"), "cf", sc.counterfeit));
        }
        Facts {
            record_id: &r.record_id,
            waybill: r.waybill.as_ref().map_or("—", |w| w.as_str()),
            line_id: &r.line_id,
            seq: r.seq,
            time: crate::time_fmt::format(r.screened_at),
            viewer: Viewer::of(lang, r).and_then(|v| v.html()),
            decision: DecisionView::new(lang, r.decision),
            reasons: reasons(lang, &r.reasons),
            declared: r.declared.as_ref().map(|d| DeclaredView {
                goods: &d.goods,
                category: category_label(lang, Some(&d.category)),
                value_cny: format!("{:.2}", d.value_cny),
                quantity: d.quantity,
            }),
            sender: masked_sender(r),
            model: r
                .model
                .as_ref()
                .map_or_else(String::new, |m| format!("{} {}", m.name, m.version)),
            scores,
        }
    }
}

/// The keys of a judgement, shown on its buttons.
struct JudgeKeys {
    confirm: &'static str,
    clear: &'static str,
    note: &'static str,
    undo: &'static str,
    next: &'static str,
}

impl JudgeKeys {
    fn new() -> JudgeKeys {
        JudgeKeys {
            confirm: key_for("judge:confirm"),
            clear: key_for("judge:clear"),
            note: key_for("judge:note"),
            undo: key_for("judge:undo"),
            next: key_for("queue:next"),
        }
    }
}

struct DeclaredView<'a> {
    goods: &'a str,
    category: String,
    value_cny: String,
    quantity: u32,
}

/// A score as a bar and its value.
struct ScoreBar {
    label: &'static str,
    /// `cf` for the counterfeit score.
    class: &'static str,
    /// The bar's width, 0 to 100.
    percent: String,
    value: String,
}

impl ScoreBar {
    fn new(label: &'static str, class: &'static str, p: f32) -> ScoreBar {
        let p = f64::from(p);
        ScoreBar {
            label,
            class,
            percent: format!("{:.0}", (p * 100.0).clamp(0.0, 100.0)),
            value: format!("{p:.2}"),
        }
    }
}

struct ReviewView<'a> {
    finding: &'static str,
    at: &'a str,
    by: &'a str,
    word: &'static str,
    note: Option<&'a str>,
}

/// The categories a parcel page shows, most likely first.
const TOP_CATEGORIES: usize = 4;

/// One parcel: image, reasons, scores, declared goods, masked sender, reviews, the review
/// form; `saved` after a review was recorded.
pub(super) fn parcel(ctx: &Ctx, r: &Record, reviews: &[Review], saved: bool) -> Page {
    let lang = ctx.lang;
    let reviews = reviews
        .iter()
        .map(|rv| ReviewView {
            finding: rv.finding.key(),
            at: prefix(&rv.at, 19),
            by: &rv.by,
            word: t(
                lang,
                match rv.finding {
                    Finding::Confirmed => "review.confirmed",
                    Finding::Cleared => "review.cleared",
                },
            ),
            note: rv.note.as_deref(),
        })
        .collect();
    Page::of(&ParcelPage {
        layout: Layout::page(ctx, "parcel", "/flagged"),
        f: Facts::of(lang, r),
        saved,
        reviews,
        csrf: &ctx.session.csrf,
        keys: JudgeKeys::new(),
    })
}

// ---- The judging queue.

/// The words of a fragment rendered outside a page (`words.t("key")`).
struct Words(Lang);

impl Words {
    fn t(&self, key: &str) -> &'static str {
        t(self.0, key)
    }
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage<'a> {
    layout: Layout,
    rows: String,
    waiting: usize,
    csrf: &'a str,
    keys: JudgeKeys,
}

/// The waiting parcels (`queue_rows.html`), sent again as the queue changes.
#[derive(Template)]
#[template(path = "queue_rows.html")]
pub(super) struct QueueRows<'a> {
    rows: Vec<QueueRow<'a>>,
    words: Words,
}

struct QueueRow<'a> {
    record_id: &'a str,
    kind: &'static str,
    kind_word: &'static str,
    time: String,
    line_id: &'a str,
    waybill: &'a str,
    reasons: Vec<ReasonView<'a>>,
    /// The operator who has it open, if anyone.
    holder: Option<String>,
}

impl<'a> QueueRows<'a> {
    /// The queue's rows: each waiting parcel (oldest first) with its record and who has it.
    pub(super) fn new(
        lang: Lang,
        waiting: &'a [(Waiting, Record)],
        holder: impl Fn(&str) -> Option<String>,
    ) -> QueueRows<'a> {
        QueueRows {
            rows: waiting
                .iter()
                .map(|(w, r)| QueueRow {
                    record_id: &w.record_id,
                    kind: w.kind.key(),
                    kind_word: t(lang, &format!("queue.kind.{}", w.kind.key())),
                    time: clock(w.arrived()),
                    line_id: &r.line_id,
                    waybill: r.waybill.as_ref().map_or("—", |w| w.as_str()),
                    reasons: reasons(lang, &r.reasons),
                    holder: holder(&w.record_id),
                })
                .collect(),
            words: Words(lang),
        }
    }

    /// The rows alone; `None` (and logged) if they cannot be rendered.
    pub(super) fn html(&self) -> Option<String> {
        self.render()
            .inspect_err(|e| tracing::error!(error = %e, "cannot render the queue's rows"))
            .ok()
    }
}

/// The judging queue: the waiting parcels (`rows`, rendered) and the pane the next one
/// opens in.
pub(super) fn queue(ctx: &Ctx, rows: &QueueRows<'_>) -> Page {
    Page::of(&QueuePage {
        layout: Layout::page(ctx, "nav.queue", "/queue"),
        rows: rows.html().unwrap_or_default(),
        waiting: rows.rows.len(),
        csrf: &ctx.session.csrf,
        keys: JudgeKeys::new(),
    })
}

/// One parcel opened from the queue (`judge.html`): the viewer, the reasons, the judgement's
/// keys and note.
#[derive(Template)]
#[template(path = "judge.html")]
struct JudgePane<'a> {
    f: Facts<'a>,
    kind: &'static str,
    kind_word: &'static str,
    keys: JudgeKeys,
    words: Words,
}

/// The judging pane of a waiting parcel; `None` (and logged) if it cannot be rendered.
pub(super) fn judge_pane(lang: Lang, w: &Waiting, r: &Record) -> Option<String> {
    JudgePane {
        f: Facts::of(lang, r),
        kind: w.kind.key(),
        kind_word: t(lang, &format!("queue.kind.{}", w.kind.key())),
        keys: JudgeKeys::new(),
        words: Words(lang),
    }
    .render()
    .inspect_err(|e| tracing::error!(error = %e, "cannot render the judging pane"))
    .ok()
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    layout: Layout,
    query: &'a str,
    rows: Vec<SearchRow<'a>>,
}

struct SearchRow<'a> {
    record_id: &'a str,
    time: String,
    waybill: &'a str,
    line_id: &'a str,
    decision: DecisionView,
    reasons: Vec<ReasonView<'a>>,
}

/// The search form, and what `query` found (nothing said before a query).
pub(super) fn search(ctx: &Ctx, query: &str, found: &[Record]) -> Page {
    let lang = ctx.lang;
    let rows = found
        .iter()
        .map(|r| SearchRow {
            record_id: &r.record_id,
            time: crate::time_fmt::format(r.screened_at),
            waybill: r.waybill.as_ref().map_or("", |w| w.as_str()),
            line_id: &r.line_id,
            decision: DecisionView::new(lang, r.decision),
            reasons: reasons(lang, &r.reasons),
        })
        .collect();
    Page::of(&SearchPage {
        layout: Layout::page(ctx, "nav.search", "/search"),
        query,
        rows,
    })
}

// ---- The operator's own settings.

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage<'a> {
    layout: Layout,
    saved: bool,
    muted: bool,
    lines: Vec<WatchedLine<'a>>,
    csrf: &'a str,
}

struct WatchedLine<'a> {
    id: &'a str,
    on: bool,
}

/// The viewer's alarm settings: muted or not, the lines watched among `lines`.
pub(super) fn settings<'a>(
    ctx: &'a Ctx,
    prefs: &UserPrefs,
    lines: &'a [String],
    saved: bool,
) -> Page {
    Page::of(&SettingsPage {
        layout: Layout::page(ctx, "nav.settings", "/settings"),
        saved,
        muted: prefs.muted,
        lines: lines
            .iter()
            .map(|l| WatchedLine {
                id: l,
                on: prefs.watches(l),
            })
            .collect(),
        csrf: &ctx.session.csrf,
    })
}

// ---- The technician's pages.

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage<'a> {
    layout: Layout,
    devices: Vec<DeviceRow<'a>>,
    disk: Option<DiskRow>,
    site: Option<SiteView<'a>>,
}

/// The site's other appliances and this one's sightings (with `[site]`).
struct SiteView<'a> {
    peers: Vec<PeerRow<'a>>,
    backlog: u64,
    ledger_keys: u64,
}

/// A peer appliance: heard recently (up) or not, when, and how many of its sightings were
/// folded.
struct PeerRow<'a> {
    id: &'a str,
    state: StateView,
    last_heard: String,
    folded: u64,
}

struct DeviceRow<'a> {
    name: &'a str,
    state: StateView,
    since: String,
    last_seen: String,
    detail: &'a str,
    counters: Vec<Count>,
}

struct DiskRow {
    state: StateView,
    dir: String,
    free_gib: String,
    total_gib: String,
    counters: Vec<Count>,
}

/// Free and total bytes of the filesystem holding `path`.
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((
        st.blocks_available() as u64 * frsize,
        st.blocks() as u64 * frsize,
    ))
}

fn counts(snapshot: &Snapshot, link: &Link) -> Vec<Count> {
    snapshot
        .device_counters(link)
        .into_iter()
        .map(|(name, value)| Count { name, value })
        .collect()
}

/// Every link with its device's counters, and the data folder's disk.
pub(super) fn devices(
    ctx: &Ctx,
    snapshot: &Snapshot,
    site: Option<&SightingsSnapshot>,
    data_dir: &Path,
) -> Page {
    let lang = ctx.lang;
    let devices = snapshot
        .links()
        .map(|l| DeviceRow {
            name: l.name,
            state: StateView::cell(lang, l.state.up),
            since: crate::time_fmt::format(l.state.since),
            last_seen: l
                .last_seen
                .map_or_else(|| "—".to_owned(), crate::time_fmt::format),
            detail: &l.state.detail,
            counters: counts(snapshot, l.link),
        })
        .collect();
    let disk = disk_space(data_dir).map(|(free, total)| {
        let gib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 30) as f64);
        DiskRow {
            // Less than a tenth free is a problem.
            state: StateView::cell(lang, free * 10 > total),
            dir: data_dir.display().to_string(),
            free_gib: gib(free),
            total_gib: gib(total),
            counters: counts(snapshot, &Link::Store),
        }
    });
    let site = site.map(|s| SiteView {
        peers: s
            .peers
            .iter()
            .map(|p| PeerRow {
                id: &p.appliance_id,
                state: StateView::cell(lang, p.recent),
                last_heard: p
                    .last_heard
                    .map_or_else(|| "—".to_owned(), crate::time_fmt::format),
                folded: p.folded,
            })
            .collect(),
        backlog: s.backlog,
        ledger_keys: s.ledger_keys,
    });
    Page::of(&DevicesPage {
        layout: Layout::page(ctx, "nav.devices", "/devices"),
        devices,
        disk,
        site,
    })
}

/// The rows of the model card's metrics table (the first table under a heading that
/// mentions metrics), as (metric, value) with the Markdown emphasis taken out.
fn card_metrics(card: &str) -> Vec<CardMetric> {
    let mut rows = Vec::new();
    let mut in_section = false;
    for line in card.lines() {
        if line.starts_with("## ") {
            if !rows.is_empty() {
                break;
            }
            in_section = line.to_lowercase().contains("metrics");
            continue;
        }
        if !in_section {
            continue;
        }
        let line = line.trim();
        if let Some(inner) = line.strip_prefix('|').and_then(|l| l.strip_suffix('|')) {
            let cells: Vec<&str> = inner.split('|').map(str::trim).collect();
            if cells.len() >= 2 && !cells[0].starts_with("---") && cells[0] != "metric" {
                let clean = |s: &str| s.replace("**", "").replace('`', "");
                rows.push(CardMetric {
                    metric: clean(cells[0]),
                    value: clean(cells[1]),
                });
            }
        } else if !rows.is_empty() {
            break;
        }
    }
    rows
}

struct CardMetric {
    metric: String,
    value: String,
}

/// The running model, as the model page shows it.
pub(super) struct RunningModel {
    pub info: ModelInfo,
    pub dir: PathBuf,
}

/// What a swap just did, shown above the model page.
pub(super) enum SwapShown {
    Swapped(Swapped),
    Refused(String),
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage<'a> {
    layout: Layout,
    swap: Option<SwapShown>,
    running: Option<RunningModelView>,
    labels: Option<String>,
    metrics: Vec<CardMetric>,
    /// The swap form with what was typed into it; `None` in safe mode.
    swap_form: Option<&'a str>,
    csrf: &'a str,
    card: Option<String>,
}

struct RunningModelView {
    name: String,
    version: String,
    sha256: String,
    folder: String,
}

/// The running model (`None` in safe mode), its categories, card and metrics, the swap form
/// (with what was typed), and what a swap just did.
pub(super) fn model(
    ctx: &Ctx,
    running: Option<RunningModel>,
    swapped: Option<(&str, SwapShown)>,
) -> Page {
    let lang = ctx.lang;
    let dir = running.as_ref().map(|m| m.dir.as_path());
    let manifest = dir.and_then(|d| crate::screen::model::Manifest::read(d).ok());
    let labels = manifest.map(|m| {
        m.labels()
            .iter()
            .map(|k| category_label(lang, Some(k)))
            .collect::<Vec<_>>()
            .join("、")
    });
    let card = dir.and_then(|d| std::fs::read_to_string(d.join("README.md")).ok());
    let metrics = card.as_deref().map(card_metrics).unwrap_or_default();
    let (typed, swap) = match swapped {
        Some((typed, shown)) => (typed, Some(shown)),
        None => ("", None),
    };
    Page::of(&ModelPage {
        layout: Layout::page(ctx, "nav.model", "/model"),
        swap,
        swap_form: running.as_ref().map(|_| typed),
        running: running.map(|m| RunningModelView {
            folder: m.dir.display().to_string(),
            name: m.info.name,
            version: m.info.version,
            sha256: m.info.sha256,
        }),
        labels,
        metrics,
        csrf: &ctx.session.csrf,
        card,
    })
}

/// What validating a pasted configuration found.
pub(super) enum Checked {
    Valid,
    Invalid(String),
}

#[derive(Template)]
#[template(path = "config.html")]
struct ConfigPage<'a> {
    layout: Layout,
    safe_mode: Option<&'a str>,
    running: Option<&'a str>,
    checked: Option<Checked>,
    pasted: &'a str,
    csrf: &'a str,
}

/// Why the appliance runs in safe mode (if it does), the running configuration (if there is
/// one to show), and the validation form with what was pasted and checked.
pub(super) fn config(
    ctx: &Ctx,
    safe_mode: Option<&str>,
    running: Option<&str>,
    validated: Option<(&str, Checked)>,
) -> Page {
    let (pasted, checked) = match validated {
        Some((text, checked)) => (text, Some(checked)),
        None => ("", None),
    };
    Page::of(&ConfigPage {
        layout: Layout::page(ctx, "nav.config", "/config"),
        safe_mode,
        running,
        checked,
        pasted,
        csrf: &ctx.session.csrf,
    })
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage<'a> {
    layout: Layout,
    levels: Vec<LevelOption>,
    text: &'a str,
    lines: Vec<LogRow<'a>>,
}

struct LevelOption {
    name: &'static str,
    selected: bool,
}

struct LogRow<'a> {
    at: &'a str,
    class: &'static str,
    level: &'a str,
    target: &'a str,
    text: &'a str,
}

/// The recent log lines at `level` and above that contain `text`.
pub(super) fn logs(ctx: &Ctx, level: tracing::Level, text: &str, lines: &[LogLine]) -> Page {
    let levels = [
        tracing::Level::ERROR,
        tracing::Level::WARN,
        tracing::Level::INFO,
    ]
    .into_iter()
    .map(|l| LevelOption {
        name: l.as_str(),
        selected: l == level,
    })
    .collect();
    let lines = lines
        .iter()
        .map(|l| LogRow {
            // The time of day, to the millisecond.
            at: l.at.get(11..23).unwrap_or(&l.at),
            class: match l.level.as_str() {
                "ERROR" => "flag",
                "WARN" => "manual",
                _ => "",
            },
            level: &l.level,
            target: &l.target,
            text: &l.text,
        })
        .collect();
    Page::of(&LogsPage {
        layout: Layout::page(ctx, "nav.logs", "/logs"),
        levels,
        text,
        lines,
    })
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    layout: Layout,
    text: &'a str,
    entries: Vec<AuditRow<'a>>,
}

struct AuditRow<'a> {
    at: &'a str,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: &'a str,
}

/// The audit log's latest entries that contain `text`.
pub(super) fn audit(ctx: &Ctx, text: &str, entries: &[AuditEntry]) -> Page {
    let entries = entries
        .iter()
        .map(|e| AuditRow {
            at: prefix(&e.at, 19),
            actor: &e.actor,
            action: &e.action,
            target: &e.target,
            detail: &e.detail,
        })
        .collect();
    Page::of(&AuditPage {
        layout: Layout::page(ctx, "nav.audit", "/audit"),
        text,
        entries,
    })
}
