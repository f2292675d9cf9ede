//! The console's pages, rendered on the server. Every value from outside goes through
//! [`esc`]; identity goes through [`crate::domain::mask`].

use super::auth::{Role, Session};
use super::i18n::{t, Lang};
use super::{Console, Ctx};
use crate::domain::{Category, Decision, Reason};
use crate::logbuf::LogLine;
use crate::record::{Record, StoredSender};
use crate::store::audit::AuditEntry;
use crate::store::review::Review;
use crate::telemetry::{light_key, Counter, Device, Link, LinkId};
use axum::response::Html;
use serde_json::Value;
use std::fmt::Write;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font-family:system-ui,"Noto Sans CJK SC","Noto Sans SC","Microsoft YaHei",sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
header{background:#1d2430;color:#fff;padding:8px 20px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
header h1{font-size:17px;margin:0 12px 0 0}
header nav a{color:#cfd6e4;text-decoration:none;padding:4px 8px;border-radius:4px}
header nav a.on{background:#3a4558;color:#fff}
header .me{margin-left:auto;display:flex;gap:10px;align-items:center;font-size:14px}
header .me a,header .me button{color:#cfd6e4;background:none;border:1px solid #56627a;border-radius:4px;padding:3px 8px;cursor:pointer;font:inherit;text-decoration:none}
main{padding:16px 20px}
h2{font-size:18px;margin:4px 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:14px}
.card{background:#fff;border-radius:6px;padding:8px 14px;min-width:110px;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:24px}
.badges span{display:inline-block;margin:0 8px 6px 0;padding:3px 10px;border-radius:12px;font-size:13px}
.up{background:#d8f3dc}.down{background:#ffd6d6}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e5e7eb;font-size:14px;vertical-align:top}
th{background:#eef0f3}
.flag{color:#b00020;font-weight:600}.manual{color:#a15c00;font-weight:600}.clear{color:#1b7f3b}
small,.muted{color:#667}
.panel{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px #0002;margin-bottom:14px}
.grid{display:grid;grid-template-columns:minmax(320px,1.2fr) 1fr;gap:16px}
.xraybox{overflow:auto;max-height:75vh;background:#111;border-radius:6px;text-align:center}
.xray{max-width:100%;cursor:zoom-in;image-rendering:auto}
.xray.zoomed{max-width:none;width:250%;cursor:zoom-out}
.thumb{width:72px;height:72px;object-fit:cover;border-radius:4px;background:#111}
.bar{background:#e5e7eb;border-radius:3px;height:10px;width:160px;display:inline-block;vertical-align:middle}
.bar i{display:block;height:10px;border-radius:3px;background:#3b6fd8}
.bar.cf i{background:#b00020}
form.inline{display:inline}
button.primary{background:#b00020;color:#fff;border:0;border-radius:5px;padding:9px 16px;font-size:15px;cursor:pointer}
button.secondary{background:#1b7f3b;color:#fff;border:0;border-radius:5px;padding:9px 16px;font-size:15px;cursor:pointer}
input[type=text],input[type=password],input[type=search],textarea,select{font:inherit;padding:6px 8px;border:1px solid #c5cad3;border-radius:4px}
textarea{width:100%;box-sizing:border-box}
.ok{background:#d8f3dc;padding:8px 12px;border-radius:5px}.err{background:#ffd6d6;padding:8px 12px;border-radius:5px;white-space:pre-wrap}
.login{max-width:340px;margin:10vh auto;background:#fff;padding:24px;border-radius:8px;box-shadow:0 2px 8px #0002}
.login label{display:block;margin:12px 0 4px}.login input{width:100%;box-sizing:border-box}
.login button{margin-top:16px;width:100%}
pre{white-space:pre-wrap;background:#fff;padding:12px;border-radius:6px;box-shadow:0 1px 2px #0002;font-size:13px}
#live{font-size:13px;color:#9fe3b0}#live.off{color:#ffb4b4}
.lamp{display:inline-block;width:10px;height:10px;border-radius:50%;vertical-align:middle}
.lamp.green{background:#1fa34a}.lamp.amber{background:#f0a000}.lamp.red{background:#d0312d}.lamp.off,.lamp.unknown{background:#bbb}
"#;

/// Words the page script needs, as JSON in the page (no inline script: the CSP forbids it).
fn script_words(lang: Lang) -> String {
    let keys = [
        "decision.clear",
        "decision.flag",
        "decision.manual",
        "disconnected",
        "live",
        "up",
        "down",
        "outcome.passed",
        "outcome.diverted",
        "outcome.fail-safe",
        "outcome.pending",
    ];
    let mut words = serde_json::Map::new();
    for k in keys {
        words.insert(k.to_owned(), Value::from(t(lang, k)));
    }
    words.insert("lang".into(), Value::from(lang.tag()));
    let cats: serde_json::Map<String, Value> = Category::ALL
        .iter()
        .map(|c| (c.key().to_owned(), Value::from(c.label(lang))))
        .collect();
    words.insert("categories".into(), Value::Object(cats));
    // JSON in a script element: `<` escaped so that no text can close it.
    Value::Object(words).to_string().replace('<', "\\u003c")
}

fn layout(
    lang: Lang,
    session: Option<&Session>,
    title: &str,
    active: &str,
    body: &str,
) -> Html<String> {
    let mut nav = String::new();
    if let Some(s) = session {
        let mut items = vec![
            ("/", "nav.line"),
            ("/flagged", "nav.flagged"),
            ("/search", "nav.search"),
        ];
        if s.role == Role::Technician {
            items.extend([
                ("/devices", "nav.devices"),
                ("/model", "nav.model"),
                ("/config", "nav.config"),
                ("/logs", "nav.logs"),
                ("/audit", "nav.audit"),
            ]);
        }
        nav.push_str("<nav>");
        for (href, key) in items {
            let on = if href == active { " class=\"on\"" } else { "" };
            let _ = write!(nav, "<a href=\"{href}\"{on}>{}</a>", t(lang, key));
        }
        nav.push_str("</nav>");
    }
    let me = match session {
        Some(s) => format!(
            "<span>{} · {}</span><form class=\"inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>{}</button></form>",
            esc(&s.user),
            t(lang, &format!("role.{}", s.role.key())),
            esc(&s.csrf),
            t(lang, "logout")
        ),
        None => String::new(),
    };
    Html(format!(
        r#"<!doctype html>
<html lang="{tag}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {app}</title><style>{STYLE}</style>
<script type="application/json" id="words">{words}</script>
<script src="/static/console.js" defer></script></head>
<body><header><h1>{app}</h1>{nav}<span id="live"></span><div class="me">{me}<a id="lang" href="/lang?to={other}&back={back}">{switch}</a></div></header>
<main>{body}</main></body></html>"#,
        tag = lang.tag(),
        title = esc(title),
        app = t(lang, "app"),
        words = script_words(lang),
        other = lang.other().tag(),
        back = super::urlencode(active),
        switch = t(lang, "switch"),
    ))
}

/// A page of a logged-in viewer, titled by its navigation word.
fn page(ctx: &Ctx, title_key: &str, active: &str, body: &str) -> Html<String> {
    layout(
        ctx.lang,
        Some(&ctx.session),
        t(ctx.lang, title_key),
        active,
        body,
    )
}

/// A page with one message (errors, refusals).
pub fn message(lang: Lang, session: Option<&Session>, text: &str) -> Html<String> {
    layout(
        lang,
        session,
        text,
        "",
        &format!(
            "<div class=\"panel\"><p>{}</p><p><a href=\"/\">{}</a></p></div>",
            esc(text),
            t(lang, "nav.line")
        ),
    )
}

pub fn login(lang: Lang, next: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"err\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    layout(
        lang,
        None,
        t(lang, "login"),
        "/login",
        &format!(
            r#"<form class="login" method="post" action="/login">
<h2>{login}</h2>{error}
<label for="user">{user}</label><input id="user" name="user" type="text" autocomplete="username" required autofocus>
<label for="password">{password}</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button class="secondary" type="submit">{login}</button></form>"#,
            login = t(lang, "login"),
            user = t(lang, "user"),
            password = t(lang, "password"),
            next = esc(next),
        ),
    )
    .0
}

fn decision_cell(lang: Lang, d: Decision) -> String {
    let key = d.key();
    format!(
        "<span class=\"{key}\">{}</span>",
        t(lang, &format!("decision.{key}"))
    )
}

fn reasons_html(lang: Lang, reasons: &[Reason]) -> String {
    if reasons.is_empty() {
        return "—".into();
    }
    reasons
        .iter()
        .map(|r| {
            let words = match lang {
                Lang::Zh => &r.zh,
                Lang::En => &r.en,
            };
            format!("<div data-code=\"{}\">{}</div>", r.code.key(), esc(words))
        })
        .collect()
}

fn category_label(lang: Lang, key: Option<&str>) -> String {
    key.map(|k| {
        Category::from_key(k)
            .map(|c| c.label(lang).to_owned())
            .unwrap_or_else(|| k.to_owned())
    })
    .unwrap_or_else(|| "—".into())
}

/// The live line: counters, links, the latest parcels.
pub fn line(ctx: &Ctx, c: &Console) -> Html<String> {
    let lang = ctx.lang;
    let counters = c.telemetry.counters();
    let n = |k: Counter| counters.get(&k);
    let backlog = c.store.as_ref().map_or(0, |s| s.outbox_len() as u64);
    let mut body = String::new();
    if let Some(why) = &c.safe_mode {
        let _ = write!(
            body,
            "<p class=\"err\">{}\n\n{}</p>",
            t(lang, "config.safe"),
            esc(why)
        );
    }
    body.push_str("<div class=\"cards\">");
    for (key, word, v) in [
        ("parcels.decided", "decided", n(Counter::ParcelsDecided)),
        (
            "parcels.clear",
            "cleared",
            n(Counter::Decided(Decision::Clear)),
        ),
        (
            "parcels.flag",
            "flagged",
            n(Counter::Decided(Decision::Flag)),
        ),
        (
            "parcels.manual",
            "manual",
            n(Counter::Decided(Decision::Manual)),
        ),
        (
            "feed.reports_acked",
            "reported",
            n(Counter::FeedReportsAcked),
        ),
        ("backlog", "backlog", backlog),
        ("decisions.late", "late", n(Counter::DecisionsLate)),
    ] {
        let _ = write!(
            body,
            "<div class=\"card\"><small>{}</small><b data-counter=\"{key}\">{v}</b></div>",
            t(lang, word)
        );
    }
    body.push_str("</div>");
    let _ = write!(
        body,
        "<div class=\"badges\" id=\"links\">{}</div>",
        links_badges(lang, c)
    );
    let _ = write!(
        body,
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody id=\"rows\" data-live=\"all\">",
        t(lang, "col.time"),
        t(lang, "col.line"),
        t(lang, "col.waybill"),
        t(lang, "col.sender"),
        t(lang, "col.decision"),
        t(lang, "col.reasons"),
        t(lang, "col.category"),
        t(lang, "col.score"),
        t(lang, "col.diverter"),
    );
    for p in c.telemetry.recent().iter().take(100) {
        let _ = write!(
            body,
            "<tr data-record=\"{}\"><td>{}</td><td>{} #{}</td><td><a href=\"/parcel/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.record_id),
            esc(crate::time_fmt::format(p.decided_at).get(11..19).unwrap_or("")),
            esc(&p.line_id),
            p.seq,
            esc(&p.record_id),
            esc(p.waybill.as_deref().unwrap_or("—")),
            esc(p.sender.as_deref().unwrap_or("—")),
            decision_cell(lang, p.decision),
            reasons_html(lang, &p.reasons),
            esc(&category_label(lang, p.category.as_deref())),
            p.counterfeit.map_or("—".into(), |s| format!("{s:.2}")),
            outcome_cell(lang, p.outcome.map(|o| o.key())),
        );
    }
    body.push_str("</tbody></table>");
    page(ctx, "nav.line", "/", &body)
}

fn outcome_cell(lang: Lang, outcome: Option<&str>) -> String {
    let key = outcome
        .filter(|o| ["passed", "diverted", "fail-safe"].contains(o))
        .unwrap_or("pending");
    format!(
        "<span data-outcome=\"{key}\">{}</span>",
        t(lang, &format!("outcome.{key}"))
    )
}

/// Link states and each line's stack light; sent again with every live status.
pub fn links_badges(lang: Lang, c: &Console) -> String {
    let mut out = String::new();
    for (name, l) in c.telemetry.links() {
        let _ = write!(
            out,
            "<span class=\"{}\" title=\"{}\">{} {}</span>",
            if l.up { "up" } else { "down" },
            esc(&l.detail),
            esc(&name.to_string()),
            t(lang, if l.up { "up" } else { "down" })
        );
    }
    // What the lamps show, as the controller reports it; unknown while its link is down.
    let lights = c.telemetry.lights();
    for name in c.telemetry.links().keys() {
        if let Link::Line(LinkId {
            line,
            device: Device::Controller,
        }) = name
        {
            let light = lights.get(line).map_or("unknown", light_key);
            let _ = write!(
                out,
                "<span data-light=\"{}\">{} {} <i class=\"lamp {}\"></i> {}</span>",
                esc(line),
                esc(line),
                t(lang, "stack"),
                esc(light),
                t(lang, &format!("light.{light}"))
            );
        }
    }
    out
}

/// A record's sender, masked; a cleared record keeps none to show.
fn masked_sender(record: &Record) -> String {
    match &record.sender {
        Some(StoredSender::Full(s)) => s.masked(),
        _ => "—".into(),
    }
}

/// The seconds of an RFC 3339 time (`HH:MM:SS`).
fn clock(t: std::time::SystemTime) -> String {
    crate::time_fmt::format(t)
        .get(11..19)
        .unwrap_or_default()
        .to_owned()
}

/// The queue of flagged and manual parcels not yet reviewed.
pub fn flagged(ctx: &Ctx, waiting: &[Record]) -> Html<String> {
    let lang = ctx.lang;
    let mut body = format!(
        "<h2>{}</h2><p class=\"muted\">{}</p><table><thead><tr><th></th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody id=\"rows\" data-live=\"suspects\">",
        t(lang, "nav.flagged"),
        t(lang, "queue.hint"),
        t(lang, "col.time"),
        t(lang, "col.waybill"),
        t(lang, "col.decision"),
        t(lang, "col.reasons"),
        t(lang, "col.sender"),
        t(lang, "col.line"),
    );
    for r in waiting {
        let id = &r.record_id;
        let thumb = if r.image.is_some() {
            format!(
                "<img class=\"thumb\" src=\"/parcel/{}/image\" alt=\"\">",
                esc(id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-record=\"{id}\"><td><a href=\"/parcel/{id}\">{thumb}</a></td><td>{}</td><td><a href=\"/parcel/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            clock(r.screened_at),
            esc(r.waybill.as_ref().map_or("—", |w| w.as_str())),
            decision_cell(lang, r.decision),
            reasons_html(lang, &r.reasons),
            esc(&masked_sender(r)),
            esc(&r.line_id),
            id = esc(id),
        );
    }
    body.push_str("</tbody></table>");
    if waiting.is_empty() {
        let _ = write!(
            body,
            "<p class=\"muted\" id=\"empty\">{}</p>",
            t(lang, "queue.empty")
        );
    }
    page(ctx, "nav.flagged", "/flagged", &body)
}

fn bar(p: f64, class: &str) -> String {
    format!(
        "<span class=\"bar {class}\"><i style=\"width:{:.0}%\"></i></span> {p:.2}",
        (p * 100.0).clamp(0.0, 100.0)
    )
}

/// One parcel: image, reasons, scores, declared goods, masked sender, reviews, review form.
pub fn parcel(ctx: &Ctx, r: &Record, reviews: &[Review], saved: bool) -> Html<String> {
    let lang = ctx.lang;
    let id = &r.record_id;
    let image = if r.image.is_some() {
        format!(
            "<div class=\"xraybox\"><img class=\"xray\" id=\"xray\" src=\"/parcel/{}/image\" alt=\"{}\" title=\"{}\"></div>",
            esc(id),
            t(lang, "image"),
            t(lang, "image.zoom")
        )
    } else {
        format!("<p class=\"muted\">{}</p>", t(lang, "image.none"))
    };
    let mut scores = String::new();
    if let Some(sc) = &r.scores {
        let mut v = sc.category.clone();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (c, p) in v.into_iter().take(4) {
            let _ = write!(
                scores,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(c.label(lang)),
                bar(f64::from(p), "")
            );
        }
        let _ = write!(
            scores,
            "<tr><td>{}</td><td>{}</td></tr>",
            t(lang, "counterfeit"),
            bar(f64::from(sc.counterfeit), "cf")
        );
    }
    let declared = r.declared.as_ref().map_or_else(String::new, |d| {
        format!(
            "<tr><td>{}</td><td>{} · {}</td></tr><tr><td>{}</td><td>¥{:.2}</td></tr><tr><td>{}</td><td>{}</td></tr>",
            t(lang, "declared"),
            esc(&d.goods),
            esc(&category_label(lang, Some(&d.category))),
            t(lang, "value"),
            d.value_cny,
            t(lang, "quantity"),
            d.quantity,
        )
    });
    let mut history = String::new();
    for rv in reviews {
        let _ = write!(
            history,
            "<li data-finding=\"{}\">{} · {} · {}{}</li>",
            rv.finding.key(),
            esc(rv.at.get(..19).unwrap_or(&rv.at)),
            esc(&rv.by),
            t(lang, &format!("review.{}", rv.finding.key())),
            rv.note
                .as_deref()
                .map(|n| format!(" — {}", esc(n)))
                .unwrap_or_default()
        );
    }
    if history.is_empty() {
        history = format!("<li class=\"muted\">{}</li>", t(lang, "review.none"));
    }
    let saved = if saved {
        format!(
            "<p class=\"ok\" id=\"saved\">{}</p>",
            t(lang, "review.saved")
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<h2>{parcel} {waybill} <small>{line} #{seq} · {time}</small></h2>{saved}
<div class="grid"><div>{image}</div><div>
<div class="panel"><b>{decision_w}</b>: {decision}<div id="reasons" style="margin-top:6px">{reasons}</div></div>
<div class="panel"><table>{declared}<tr><td>{sender_w}</td><td>{sender}</td></tr><tr><td>{model_w}</td><td>{model}</td></tr></table></div>
<div class="panel"><b>{scores_w}</b><table>{scores}</table></div>
<div class="panel"><b>{reviews_w}</b><ul id="reviews">{history}</ul>
<form method="post" action="/parcel/{id}/review" id="review">
<input type="hidden" name="csrf" value="{csrf}">
<label for="note">{note_w}</label><textarea id="note" name="note" rows="2" maxlength="500"></textarea>
<p><button class="primary" name="finding" value="confirmed" id="confirm">{confirm}</button>
<button class="secondary" name="finding" value="cleared" id="clear">{clear}</button></p></form></div>
</div></div>"#,
        parcel = t(lang, "parcel"),
        waybill = esc(r.waybill.as_ref().map_or("—", |w| w.as_str())),
        line = esc(&r.line_id),
        seq = r.seq,
        time = crate::time_fmt::format(r.screened_at),
        decision_w = t(lang, "col.decision"),
        decision = decision_cell(lang, r.decision),
        reasons = reasons_html(lang, &r.reasons),
        sender_w = t(lang, "col.sender"),
        sender = esc(&masked_sender(r)),
        model_w = t(lang, "model"),
        model = esc(&r
            .model
            .as_ref()
            .map_or_else(String::new, |m| format!("{} {}", m.name, m.version))),
        scores_w = t(lang, "scores"),
        reviews_w = t(lang, "reviews"),
        id = esc(id),
        csrf = esc(&ctx.session.csrf),
        note_w = t(lang, "review.note"),
        confirm = t(lang, "review.confirm"),
        clear = t(lang, "review.clear"),
    );
    page(ctx, "parcel", "/flagged", &body)
}

pub fn search(ctx: &Ctx, query: &str, found: &[Record]) -> Html<String> {
    let lang = ctx.lang;
    let mut body = format!(
        "<h2>{}</h2><form method=\"get\" action=\"/search\"><input type=\"search\" name=\"waybill\" value=\"{}\" placeholder=\"{}\" autofocus> <button>{}</button></form><br>",
        t(lang, "nav.search"),
        esc(query),
        t(lang, "search.hint"),
        t(lang, "search.go")
    );
    if !query.is_empty() {
        if found.is_empty() {
            let _ = write!(body, "<p class=\"muted\">{}</p>", t(lang, "search.none"));
        } else {
            let _ = write!(
                body,
                "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
                t(lang, "col.time"),
                t(lang, "col.waybill"),
                t(lang, "col.line"),
                t(lang, "col.decision"),
                t(lang, "col.reasons")
            );
            for r in found {
                let id = esc(&r.record_id);
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td><a href=\"/parcel/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    crate::time_fmt::format(r.screened_at),
                    esc(r.waybill.as_ref().map_or("", |w| w.as_str())),
                    esc(&r.line_id),
                    decision_cell(lang, r.decision),
                    reasons_html(lang, &r.reasons)
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    page(ctx, "nav.search", "/search", &body)
}

/// Free and total bytes of the filesystem holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((
        st.blocks_available() as u64 * frsize,
        st.blocks() as u64 * frsize,
    ))
}

/// Counters that belong to a device.
fn device_counters(link: &Link, counters: &crate::telemetry::Counters) -> String {
    counters
        .of_link(link)
        .iter()
        .map(|(k, v)| format!("{} {v}", esc(k)))
        .collect::<Vec<_>>()
        .join("<br>")
}

pub fn devices(ctx: &Ctx, c: &Console) -> Html<String> {
    let lang = ctx.lang;
    let counters = c.telemetry.counters();
    let mut body = format!(
        "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t(lang, "nav.devices"),
        t(lang, "device"),
        t(lang, "state"),
        t(lang, "since"),
        t(lang, "last_seen"),
        t(lang, "detail"),
        t(lang, "errors")
    );
    for (link, l) in c.telemetry.links() {
        let name = link.to_string();
        let seen = c
            .telemetry
            .last_seen(&link)
            .map_or_else(|| "—".to_owned(), crate::time_fmt::format);
        let _ = write!(
            body,
            "<tr data-device=\"{}\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&name),
            esc(&name),
            if l.up { "clear" } else { "flag" },
            t(lang, if l.up { "up" } else { "down" }),
            esc(&crate::time_fmt::format(l.since)),
            esc(&seen),
            esc(&l.detail),
            device_counters(&link, &counters)
        );
    }
    if let Some((free, total)) = disk_space(&c.data_dir) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td></td><td>{} — {:.1} / {:.1} GiB {}</td><td>{}</td></tr>",
            t(lang, "disk"),
            if free * 10 > total { "clear" } else { "flag" },
            t(lang, if free * 10 > total { "up" } else { "down" }),
            esc(&c.data_dir.display().to_string()),
            gib(free),
            gib(total),
            t(lang, "disk.free"),
            device_counters(&Link::Store, &counters)
        );
    }
    body.push_str("</tbody></table>");
    page(ctx, "nav.devices", "/devices", &body)
}

/// The rows of the model card's metrics table (the first table under a heading that
/// mentions metrics), as (metric, value) with the Markdown emphasis taken out.
fn card_metrics(card: &str) -> Vec<(String, String)> {
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
                rows.push((clean(cells[0]), clean(cells[1])));
            }
        } else if !rows.is_empty() {
            break;
        }
    }
    rows
}

pub fn model(
    ctx: &Ctx,
    c: &Console,
    swapped: Option<(&str, Result<crate::screen::swap::Swapped, String>)>,
) -> Html<String> {
    let lang = ctx.lang;
    let mut body = String::new();
    match &swapped {
        Some((_, Ok(s))) => {
            let _ = write!(
                body,
                "<p class=\"ok\" id=\"swap-result\">{}: {} {} → {} {} ({} {}/{})</p>",
                t(lang, "model.swapped"),
                esc(&s.old.name),
                esc(&s.old.version),
                esc(&s.new.name),
                esc(&s.new.version),
                t(lang, "model.selftest"),
                s.self_test.correct,
                s.self_test.images
            );
        }
        Some((_, Err(e))) => {
            let _ = write!(
                body,
                "<p class=\"err\" id=\"swap-result\">{}\n{}</p>",
                t(lang, "model.refused"),
                esc(e)
            );
        }
        None => {}
    }
    let model_dir = c.model_dir.read().ok().and_then(|d| d.clone());
    let _ = write!(body, "<h2>{}</h2>", t(lang, "model.running"));
    if let Some(screener) = &c.screener {
        let info = screener.model_info();
        let _ = write!(
            body,
            "<div class=\"panel\"><table><tr><td>{}</td><td id=\"model-version\">{} {}</td></tr><tr><td>{}</td><td><code>{}</code></td></tr><tr><td>{}</td><td><code>{}</code></td></tr></table></div>",
            t(lang, "model.version"),
            esc(&info.name),
            esc(&info.version),
            t(lang, "model.sha"),
            esc(&info.sha256),
            t(lang, "model.folder"),
            esc(&model_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()),
        );
    }
    let manifest = model_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("manifest.json")).ok())
        .and_then(|s| serde_json::from_str::<crate::screen::model::Manifest>(&s).ok());
    if let Some(m) = &manifest {
        let labels: Vec<String> = m
            .labels
            .iter()
            .map(|k| category_label(lang, Some(k)))
            .collect();
        let _ = write!(
            body,
            "<div class=\"panel\"><table><tr><td>{}</td><td>{}</td></tr></table></div>",
            t(lang, "model.labels"),
            esc(&labels.join("、"))
        );
    }
    let card = model_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("README.md")).ok());
    if let Some(card) = &card {
        let metrics = card_metrics(card);
        if !metrics.is_empty() {
            let _ = write!(
                body,
                "<h2>{}</h2><div class=\"panel\"><table id=\"model-metrics\">",
                t(lang, "model.metrics")
            );
            for (k, v) in metrics {
                let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", esc(&k), esc(&v));
            }
            body.push_str("</table></div>");
        }
    }
    if c.screener.is_some() {
        let typed = swapped.as_ref().map(|(d, _)| *d).unwrap_or("");
        let _ = write!(
            body,
            "<h2>{}</h2><p class=\"muted\">{}</p><form method=\"post\" action=\"/model/swap\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"text\" name=\"dir\" size=\"60\" value=\"{}\" placeholder=\"/usr/share/screenline/models/…\"> <button class=\"secondary\">{}</button></form>",
            t(lang, "model.swap"),
            t(lang, "model.swap_help"),
            esc(&ctx.session.csrf),
            esc(typed),
            t(lang, "model.swap"),
        );
    }
    if let Some(card) = &card {
        let _ = write!(
            body,
            "<h2>{}</h2><pre>{}</pre>",
            t(lang, "model.card"),
            esc(card)
        );
    }
    page(ctx, "nav.model", "/model", &body)
}

pub fn config(
    ctx: &Ctx,
    c: &Console,
    validated: Option<(&str, Result<(), String>)>,
) -> Html<String> {
    let lang = ctx.lang;
    let mut body = String::new();
    if let Some(why) = &c.safe_mode {
        let _ = write!(
            body,
            "<p class=\"err\">{}\n\n{}</p>",
            t(lang, "config.safe"),
            esc(why)
        );
    }
    if let Some(text) = &c.config_toml {
        let _ = write!(
            body,
            "<h2>{}</h2><pre id=\"running\">{}</pre>",
            t(lang, "config.running"),
            esc(text)
        );
    }
    let (pasted, result) = match &validated {
        Some((text, Ok(()))) => (
            *text,
            format!(
                "<p class=\"ok\" id=\"result\">{}</p>",
                t(lang, "config.valid")
            ),
        ),
        Some((text, Err(e))) => (
            *text,
            format!(
                "<p class=\"err\" id=\"result\">{}\n{}</p>",
                t(lang, "config.invalid"),
                esc(e)
            ),
        ),
        None => ("", String::new()),
    };
    let _ = write!(
        body,
        "<h2>{}</h2><p class=\"muted\">{}</p>{result}<form method=\"post\" action=\"/config/validate\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><textarea name=\"text\" rows=\"14\">{}</textarea><p><button class=\"secondary\">{}</button></p></form>",
        t(lang, "config.validate"),
        t(lang, "config.paste"),
        esc(&ctx.session.csrf),
        esc(pasted),
        t(lang, "config.validate"),
    );
    page(ctx, "nav.config", "/config", &body)
}

pub fn logs(ctx: &Ctx, level: tracing::Level, text: &str, lines: &[LogLine]) -> Html<String> {
    let lang = ctx.lang;
    let mut options = String::new();
    for l in [
        tracing::Level::ERROR,
        tracing::Level::WARN,
        tracing::Level::INFO,
    ] {
        let _ = write!(
            options,
            "<option{}>{l}</option>",
            if l == level { " selected" } else { "" }
        );
    }
    let mut body = format!(
        "<h2>{}</h2><form method=\"get\" action=\"/logs\">{} <select name=\"level\">{options}</select> {} <input type=\"search\" name=\"q\" value=\"{}\"> <button>{}</button></form><br><table><tbody>",
        t(lang, "nav.logs"),
        t(lang, "logs.level"),
        t(lang, "logs.text"),
        esc(text),
        t(lang, "logs.filter")
    );
    for l in lines {
        let class = match l.level.as_str() {
            "ERROR" => "flag",
            "WARN" => "manual",
            _ => "",
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(l.at.get(11..23).unwrap_or(&l.at)),
            esc(&l.level),
            esc(&l.target),
            esc(&l.text)
        );
    }
    body.push_str("</tbody></table>");
    page(ctx, "nav.logs", "/logs", &body)
}

pub fn audit(ctx: &Ctx, text: &str, entries: &[AuditEntry]) -> Html<String> {
    let lang = ctx.lang;
    let mut body = format!(
        "<h2>{}</h2><form method=\"get\" action=\"/audit\"><input type=\"search\" name=\"q\" value=\"{}\"> <button>{}</button></form><br><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody id=\"audit\">",
        t(lang, "nav.audit"),
        esc(text),
        t(lang, "logs.filter"),
        t(lang, "col.time"),
        t(lang, "audit.actor"),
        t(lang, "audit.action"),
        t(lang, "audit.target"),
        t(lang, "detail")
    );
    for e in entries {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(e.at.get(..19).unwrap_or(&e.at)),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.target),
            esc(&e.detail)
        );
    }
    body.push_str("</tbody></table>");
    page(ctx, "nav.audit", "/audit", &body)
}
