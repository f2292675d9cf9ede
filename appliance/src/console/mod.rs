//! The maintenance console (axum): server-rendered pages with a little JavaScript, live
//! updates over server-sent events, for operators (line, flagged queue, parcel review,
//! search) and technicians (also devices, model, configuration, logs, audit).
//!
//! Nothing but the login page, the language switch, the script, and the health endpoints
//! (`/healthz`, `/readyz`, `/metrics`) answers without a session; technician pages answer an
//! operator with 403. Every form that changes something carries the session's CSRF token,
//! and every change is audited in the store. Identity is always masked here.

pub mod auth;
pub mod i18n;
mod pages;

use crate::store::owner::StoreHandle;
use crate::store::review::Finding;
use crate::telemetry::{Live, ParcelSummary, Telemetry};
use auth::{LoginLimiter, Role, Session, Sessions, Users};
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use i18n::{t, Lang};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Session cookie name.
const SESSION_COOKIE: &str = "sl_session";
/// Language cookie name.
const LANG_COOKIE: &str = "sl_lang";

/// The form, or a 400 for a malformed one — only once the viewer is known.
macro_rules! form {
    ($c:expr, $f:expr) => {
        match $f {
            Ok(Form(f)) => f,
            Err(e) => {
                $c.telemetry.incr("console.bad_requests");
                tracing::warn!(error = %e, "malformed console form");
                return (StatusCode::BAD_REQUEST, e.body_text()).into_response();
            }
        }
    };
}

macro_rules! viewer {
    ($c:expr, $headers:expr, $role:expr, $path:expr) => {
        match $c.ctx(&$headers, $role, $path) {
            Ok(x) => x,
            Err(r) => return *r,
        }
    };
}

/// What the console serves from.
pub struct Console {
    pub telemetry: Arc<Telemetry>,
    /// None in safe mode (no valid configuration, nothing running).
    pub store: Option<StoreHandle>,
    pub users: Users,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    /// The running configuration as TOML, for the config page.
    pub config_toml: Option<String>,
    /// Why the appliance runs in safe mode, if it does.
    pub safe_mode: Option<String>,
    pub data_dir: PathBuf,
    /// The running model's folder; changes with a swap.
    pub model_dir: std::sync::RwLock<Option<PathBuf>>,
    /// The screening stage, for the model swap; None in safe mode.
    pub screener: Option<Arc<crate::screen::Screener>>,
    /// Where ONNX Runtime is and how many threads a model gets, to load a candidate the
    /// way the running one was loaded.
    pub ort_dylib_path: Option<PathBuf>,
    pub intra_threads: usize,
    /// The pipeline's stages, whose health `/healthz` reports; None in safe mode.
    pub stages: Option<Arc<crate::supervise::Stages>>,
    /// Cancelled when the appliance stops: live streams end with it.
    pub shutdown: CancellationToken,
}

impl Console {
    /// The console of a running appliance.
    pub fn new(
        telemetry: Arc<Telemetry>,
        store: StoreHandle,
        config: &crate::config::Config,
        model_dir: PathBuf,
        screener: Arc<crate::screen::Screener>,
        stages: Arc<crate::supervise::Stages>,
        shutdown: CancellationToken,
    ) -> Console {
        Console {
            telemetry,
            store: Some(store),
            users: Users::in_data_dir(&config.data_dir),
            sessions: Sessions::default(),
            limiter: LoginLimiter::default(),
            config_toml: toml::to_string_pretty(config).ok(),
            safe_mode: None,
            data_dir: config.data_dir.clone(),
            model_dir: std::sync::RwLock::new(Some(model_dir)),
            screener: Some(screener),
            ort_dylib_path: config.model.ort_dylib_path.clone(),
            intra_threads: config.model.intra_threads,
            stages: Some(stages),
            shutdown,
        }
    }

    /// The console alone, showing why the configuration was refused.
    pub fn safe_mode(
        telemetry: Arc<Telemetry>,
        data_dir: PathBuf,
        why: String,
        shutdown: CancellationToken,
    ) -> Console {
        Console {
            telemetry,
            store: None,
            users: Users::in_data_dir(&data_dir),
            sessions: Sessions::default(),
            limiter: LoginLimiter::default(),
            config_toml: None,
            safe_mode: Some(why),
            data_dir,
            model_dir: std::sync::RwLock::new(None),
            screener: None,
            ort_dylib_path: None,
            intra_threads: 1,
            stages: None,
            shutdown,
        }
    }
}

/// A request's viewer: who, in which language.
pub(crate) struct Ctx {
    pub session: Session,
    pub lang: Lang,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn lang(headers: &HeaderMap) -> Lang {
    Lang::from_cookie(cookie(headers, LANG_COOKIE))
}

/// A local path to go back to (never another site).
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

impl Console {
    /// The viewer if logged in with at least `role`; else the response to give instead:
    /// the login page (pages) or 401 (API), or 403 for too small a role.
    fn ctx(&self, headers: &HeaderMap, role: Role, path: &str) -> Result<Ctx, Box<Response>> {
        let lang = lang(headers);
        let session = cookie(headers, SESSION_COOKIE).and_then(|tok| self.sessions.get(tok));
        match session {
            None if path.starts_with("/api/") || path == "/events" => Err(Box::new(
                (StatusCode::UNAUTHORIZED, t(lang, "login.expired")).into_response(),
            )),
            None => Err(Box::new(
                Redirect::to(&format!("/login?next={}", urlencode(path))).into_response(),
            )),
            Some(s) if s.role < role => Err(Box::new(
                (
                    StatusCode::FORBIDDEN,
                    pages::message(lang, Some(&s), t(lang, "forbidden")),
                )
                    .into_response(),
            )),
            Some(session) => Ok(Ctx { session, lang }),
        }
    }

    async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) {
        if let Some(store) = &self.store {
            if let Err(e) = store.audit(actor, action, target, detail).await {
                self.telemetry.incr("console.audit_errors");
                tracing::error!(error = %e, action, "cannot write the audit log");
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang", get(switch_lang))
        .route("/static/console.js", get(script))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(line_page))
        .route("/flagged", get(flagged_page))
        .route("/parcel/{id}", get(parcel_page))
        .route("/parcel/{id}/image", get(parcel_image))
        .route("/parcel/{id}/review", post(review))
        .route("/search", get(search_page))
        .route("/events", get(events))
        .route("/api/parcels", get(api_parcels))
        .route("/api/status", get(api_status))
        .route("/devices", get(devices_page))
        .route("/model", get(model_page))
        .route("/model/swap", post(model_swap))
        .route("/config", get(config_page))
        .route("/config/validate", post(config_validate))
        .route("/logs", get(logs_page))
        .route("/audit", get(audit_page))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Serves the console until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    shutdown: CancellationToken,
) {
    let app = router(console).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "console stopped");
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console.js"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let lang = lang(&headers);
    Html(pages::login(lang, &local_path(q.next.as_deref()), None)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let lang = lang(&headers);
    let next = local_path(f.next.as_deref());
    let user = f.user.trim().to_owned();
    if let Some(wait) = c.limiter.wait(peer.ip(), &user) {
        c.telemetry.incr("console.logins_throttled");
        tracing::warn!(peer = %peer.ip(), "console login throttled");
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Html(pages::login(lang, &next, Some(t(lang, "login.locked")))),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let users = c.clone();
    let (name, password) = (user.clone(), f.password);
    let verified = tokio::task::spawn_blocking(move || users.users.verify(&name, &password)).await;
    match verified {
        Ok(Ok(Some(role))) => {
            c.limiter.succeeded(&user);
            let token = c.sessions.start(&user, role);
            c.telemetry.incr("console.logins");
            tracing::info!(user = %user, role = role.key(), "console login");
            c.audit(&format!("user:{user}"), "login", &user, role.key())
                .await;
            let secure = headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https");
            let cookie = format!(
                "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                auth::ABSOLUTE.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        other => {
            if let Ok(Err(e)) = &other {
                c.telemetry.incr("console.user_file_errors");
                tracing::error!(error = %e, "cannot read the console users");
            }
            c.limiter.failed(peer.ip(), &user);
            c.telemetry.incr("console.login_failures");
            tracing::warn!(peer = %peer.ip(), "console login failed");
            c.audit(&format!("ip:{}", peer.ip()), "login_failed", &user, "")
                .await;
            (
                StatusCode::UNAUTHORIZED,
                Html(pages::login(lang, &next, Some(t(lang, "login.failed")))),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let ctx = match c.ctx(&headers, Role::Operator, "/") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let f = form!(c, f);
    if let Err(r) = check_csrf(&ctx, &f.csrf) {
        return *r;
    }
    if let Some(tok) = cookie(&headers, SESSION_COOKIE) {
        c.sessions.end(tok);
    }
    c.audit(
        &format!("user:{}", ctx.session.user),
        "logout",
        &ctx.session.user,
        "",
    )
    .await;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sl_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

fn check_csrf(ctx: &Ctx, token: &str) -> Result<(), Box<Response>> {
    // Constant-time enough: both are 64 hex characters from our own generator.
    let ok = token.len() == ctx.session.csrf.len()
        && token
            .bytes()
            .zip(ctx.session.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        tracing::warn!(user = %ctx.session.user, "console form with a wrong CSRF token");
        Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                pages::message(ctx.lang, Some(&ctx.session), t(ctx.lang, "csrf")),
            )
                .into_response(),
        ))
    }
}

#[derive(Deserialize)]
struct LangQuery {
    to: Option<String>,
    back: Option<String>,
}

async fn switch_lang(Query(q): Query<LangQuery>) -> Response {
    let to = Lang::from_cookie(q.to.as_deref());
    let mut r = Redirect::to(&local_path(q.back.as_deref())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Path=/; SameSite=Strict; Max-Age=31536000",
        to.tag()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Liveness, from the stages' own state (`supervise.rs`): 503 naming every stalled stage.
/// In safe mode nothing runs but the console, which is alive if it answers.
async fn healthz(State(c): State<Arc<Console>>) -> Response {
    let stalled = c
        .stages
        .as_ref()
        .map(|s| s.stalled(std::time::Instant::now()))
        .unwrap_or_default();
    if stalled.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let body: String = stalled.iter().map(|s| format!("{s}\n")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn readyz(State(c): State<Arc<Console>>) -> Response {
    let checks = [
        ("configuration", c.safe_mode.is_none()),
        ("store", c.store.is_some()),
        ("model", c.telemetry.link_up("model")),
    ];
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body: String = checks
        .iter()
        .map(|(n, ok)| format!("{n} {}\n", if *ok { "ok" } else { "not ready" }))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// Prometheus text format: every counter, link state, backlog and decision latency.
async fn metrics(State(c): State<Arc<Console>>) -> Response {
    let mut out = String::new();
    let name = |s: &str| -> String {
        s.chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect()
    };
    for (k, v) in c.telemetry.counters() {
        let n = format!("screenline_{}", name(&k));
        out.push_str(&format!("# TYPE {n} gauge\n{n} {v}\n"));
    }
    out.push_str("# TYPE screenline_link_up gauge\n");
    for (k, l) in c.telemetry.links() {
        out.push_str(&format!(
            "screenline_link_up{{link=\"{}\"}} {}\n",
            k.replace(['\\', '"', '\n'], "_"),
            u8::from(l.up)
        ));
    }
    if let Some(store) = &c.store {
        out.push_str(&format!(
            "# TYPE screenline_outbox_backlog gauge\nscreenline_outbox_backlog {}\n",
            store.outbox_len()
        ));
    }
    out.push_str("# TYPE screenline_decision_latency_seconds summary\n");
    for q in [0.5, 0.9, 0.99] {
        if let Some(us) = c.telemetry.quantile("decision_latency_us", q) {
            out.push_str(&format!(
                "screenline_decision_latency_seconds{{quantile=\"{q}\"}} {}\n",
                us as f64 / 1e6
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn line_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/");
    Html(pages::line(&ctx, &c)).into_response()
}

async fn flagged_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/flagged");
    let waiting = match &c.store {
        Some(store) => store
            .read(|store| {
                let rs = store.latest_records(200, 20_000, |r| r["decision"] != "clear")?;
                Ok(rs
                    .into_iter()
                    .filter(|r| {
                        store
                            .reviews(r["record_id"].as_str().unwrap_or(""))
                            .map(|v| v.is_empty())
                            .unwrap_or(true)
                    })
                    .collect())
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read records for the flagged queue");
                Vec::new()
            }),
        None => Vec::new(),
    };
    Html(pages::flagged(&ctx, &waiting)).into_response()
}

async fn record_and_reviews(
    c: &Console,
    id: &str,
) -> Option<(serde_json::Value, Vec<crate::store::review::Review>)> {
    let store = c.store.as_ref()?;
    let id = id.to_owned();
    store
        .read(move |s| {
            Ok(s.record(id.as_bytes())?
                .map(|r| (r, s.reviews(&id).unwrap_or_default())))
        })
        .await
        .ok()?
}

#[derive(Deserialize)]
struct SavedQuery {
    saved: Option<String>,
}

async fn parcel_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<SavedQuery>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, &format!("/parcel/{id}"));
    match record_and_reviews(&c, &id).await {
        Some((record, reviews)) => {
            Html(pages::parcel(&ctx, &record, &reviews, q.saved.is_some())).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            pages::message(ctx.lang, Some(&ctx.session), t(ctx.lang, "notfound")),
        )
            .into_response(),
    }
}

async fn parcel_image(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/image");
    let Some((record, _)) = record_and_reviews(&c, &id).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(path) = record["image"].as_str().map(PathBuf::from) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mime = match path.extension().and_then(|e| e.to_str()) {
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("tif" | "tiff") => "image/tiff",
                _ => "image/png",
            };
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "private, max-age=3600"),
                ],
                bytes,
            )
                .into_response()
        }
        // Evicted by retention or the disk budget.
        Err(_) => StatusCode::GONE.into_response(),
    }
}

#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    finding: String,
    note: Option<String>,
}

async fn review(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ReviewForm>, FormRejection>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, &format!("/parcel/{id}"));
    let f = form!(c, f);
    if let Err(r) = check_csrf(&ctx, &f.csrf) {
        return *r;
    }
    let finding = match f.finding.as_str() {
        "confirmed" => Finding::Confirmed,
        "cleared" => Finding::Cleared,
        other => {
            c.telemetry.incr("console.bad_requests");
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown finding {other:?}"),
            )
                .into_response();
        }
    };
    let Some(store) = &c.store else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let counter = format!("reviews.{}", finding.key());
    let (rid, user, note, name) = (
        id.clone(),
        ctx.session.user.clone(),
        f.note.clone(),
        counter.clone(),
    );
    // The review and its count in one durable write.
    match store
        .write(move |s| {
            let r = s.review(&rid, finding, &user, note.as_deref())?;
            s.count(&name)?;
            Ok(r)
        })
        .await
    {
        Ok(r) => {
            c.telemetry.incr(&counter);
            tracing::info!(record = %id, finding = finding.key(), user = %ctx.session.user, "operator review");
            c.audit(
                &format!("user:{}", ctx.session.user),
                &format!("review.{}", finding.key()),
                &id,
                &format!("decision {}", r.decision),
            )
            .await;
            Redirect::to(&format!("/parcel/{id}?saved=1")).into_response()
        }
        Err(crate::store::StoreError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            pages::message(ctx.lang, Some(&ctx.session), t(ctx.lang, "notfound")),
        )
            .into_response(),
        Err(e) => {
            c.telemetry.incr("store.errors");
            tracing::error!(error = %e, record = %id, "cannot record a review");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    waybill: Option<String>,
}

async fn search_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/search");
    let query = q.waybill.unwrap_or_default().trim().to_owned();
    let found = match (&c.store, query.is_empty()) {
        (Some(store), false) => {
            let q = query.clone();
            store
                .read(move |s| s.find_by_waybill(&q, 100))
                .await
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    Html(pages::search(&ctx, &query, &found)).into_response()
}

/// Live updates: a `parcel` event per decided parcel, an `outcome` event when the line
/// controller reports what it did with one, a `status` event every second.
async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/events");
    let lang = ctx.lang;
    let parcels = c.telemetry.subscribe();
    let tick = tokio::time::interval(Duration::from_secs(1));
    let stream = futures_util::stream::unfold(
        (parcels, tick, c.clone()),
        move |(mut parcels, mut tick, c)| async move {
            let event = tokio::select! {
                // The appliance stops: the stream ends, so the server can.
                _ = c.shutdown.cancelled() => return None,
                p = parcels.recv() => match p {
                    Ok(Live::Parcel(p)) => Event::default().event("parcel").json_data(&p).ok(),
                    Ok(o @ Live::Outcome { .. }) => Event::default().event("outcome").json_data(&o).ok(),
                    // A slow browser skips parcels; the next status carries the counts.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                _ = tick.tick() => {
                    let mut s = status(&c);
                    s["badges"] = pages::links_badges(lang, &c).into();
                    Event::default().event("status").json_data(s).ok()
                }
            };
            let event = event.unwrap_or_else(|| Event::default().comment("skipped"));
            Some((Ok::<_, std::convert::Infallible>(event), (parcels, tick, c)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn status(c: &Console) -> serde_json::Value {
    serde_json::json!({
        "links": c.telemetry.links(),
        "stack_lights": c.telemetry.lights(),
        "counters": c.telemetry.counters(),
        "backlog": c.store.as_ref().map(|s| s.outbox_len()),
    })
}

async fn api_parcels(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/parcels");
    Json::<Vec<ParcelSummary>>(c.telemetry.recent()).into_response()
}

async fn api_status(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/status");
    Json(status(&c)).into_response()
}

async fn devices_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/devices");
    Html(pages::devices(&ctx, &c)).into_response()
}

async fn model_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/model");
    Html(pages::model(&ctx, &c, None)).into_response()
}

#[derive(Deserialize)]
struct SwapForm {
    csrf: String,
    dir: String,
}

/// Swaps the running model for a candidate folder (see `screen::swap`): verified, warmed
/// up and self-tested off the async workers, swapped between two parcels, audited either way.
async fn model_swap(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    f: Result<Form<SwapForm>, FormRejection>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/model");
    let f = form!(c, f);
    if let Err(r) = check_csrf(&ctx, &f.csrf) {
        return *r;
    }
    let Some(screener) = c.screener.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(
                ctx.lang,
                Some(&ctx.session),
                t(ctx.lang, "model.unavailable"),
            ),
        )
            .into_response();
    };
    let dir = PathBuf::from(f.dir.trim());
    let (ort_path, threads) = (c.ort_dylib_path.clone(), c.intra_threads);
    let candidate = dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        let env = crate::screen::model::init_runtime(ort_path.as_deref())?;
        crate::screen::swap::swap(&screener, &candidate, &env, threads)
    })
    .await
    .unwrap_or_else(|e| {
        Err(crate::screen::swap::SwapError::Load(
            crate::screen::model::ModelError::Ort(format!("the loader stopped: {e}")),
        ))
    });
    let actor = format!("user:{}", ctx.session.user);
    let target = dir.display().to_string();
    let shown = match &result {
        Ok(s) => {
            c.telemetry.incr("model.swaps");
            c.telemetry.link(
                "model",
                true,
                format!("{} {} ({})", s.new.name, s.new.version, s.dir.display()),
            );
            if let Ok(mut d) = c.model_dir.write() {
                *d = Some(s.dir.clone());
            }
            c.audit(
                &actor,
                "model.swap",
                &target,
                &format!(
                    "{} {} -> {} {} sha256 {}; self-test {}/{}",
                    s.old.name,
                    s.old.version,
                    s.new.name,
                    s.new.version,
                    s.new.sha256,
                    s.self_test.correct,
                    s.self_test.images
                ),
            )
            .await;
            Ok(s.clone())
        }
        Err(e) => {
            c.telemetry.incr("model.swaps_refused");
            tracing::warn!(error = %e, dir = %target, "model swap refused");
            c.audit(&actor, "model.swap_refused", &target, &e.to_string())
                .await;
            Err(e.to_string())
        }
    };
    Html(pages::model(&ctx, &c, Some((&f.dir, shown)))).into_response()
}

async fn config_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/config");
    Html(pages::config(&ctx, &c, None)).into_response()
}

#[derive(Deserialize)]
struct ConfigForm {
    csrf: String,
    text: String,
}

async fn config_validate(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    f: Result<Form<ConfigForm>, FormRejection>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/config");
    let f = form!(c, f);
    if let Err(r) = check_csrf(&ctx, &f.csrf) {
        return *r;
    }
    let result = crate::config::Config::parse(&f.text, std::path::Path::new("(pasted)"))
        .map(|_| ())
        .map_err(|e| e.to_string());
    Html(pages::config(&ctx, &c, Some((&f.text, result)))).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    level: Option<String>,
    q: Option<String>,
}

async fn logs_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/logs");
    let level = q
        .level
        .as_deref()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let text = q.q.unwrap_or_default();
    let lines = crate::logbuf::recent(level, &text, 500);
    Html(pages::logs(&ctx, level, &text, &lines)).into_response()
}

#[derive(Deserialize)]
struct AuditQuery {
    q: Option<String>,
}

async fn audit_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/audit");
    let text = q.q.unwrap_or_default();
    let entries = match &c.store {
        Some(store) => {
            let text = text.clone();
            store
                .read(move |s| {
                    s.audit_log(300, |e| {
                        text.is_empty()
                            || [&e.actor, &e.action, &e.target, &e.detail]
                                .iter()
                                .any(|f| f.contains(text.as_str()))
                    })
                })
                .await
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    Html(pages::audit(&ctx, &text, &entries)).into_response()
}

#[cfg(test)]
mod tests;
