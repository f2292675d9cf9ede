//! The maintenance console (axum): server-rendered pages with a little JavaScript, live
//! updates over server-sent events, for operators (line, flagged queue, parcel review,
//! search) and technicians (also devices, model, configuration, logs, audit).
//!
//! Nothing but the login page, the language switch, the script, and the health endpoints
//! (`/healthz`, `/readyz`, `/metrics`) answers without a session; technician pages answer an
//! operator with 403. Every form that changes something carries the session's CSRF token,
//! and every change is audited in the store. Identity is always masked here.
//!
//! Against a hostile network: a `Host` the console does not go by is refused (DNS
//! rebinding); `X-Forwarded-*` is believed only from a configured proxy; redirects go to
//! local paths only; password checks run a bounded number at a time behind an atomic
//! throttle (see [`auth::LoginLimiter`]); a session ends the moment its user is removed, and
//! the live stream with it; `/metrics` answers loopback, or a bearer token.

pub mod auth;
pub mod i18n;
mod pages;
mod queue;
mod snapshot;
mod viewer;

use crate::domain::Decision;
use crate::record::Record;
use crate::report::sightings::SightingsStatus;
use crate::store::owner::StoreHandle;
use crate::store::prefs::UserPrefs;
use crate::store::queue::Waiting;
use crate::store::review::Finding;
use crate::telemetry::{Counter, Link, Live, ParcelSummary, Telemetry};
use auth::{LoginLimiter, Role, Session, Sessions, Users};
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use i18n::{t, Lang};
use serde::Deserialize;
use snapshot::Snapshot;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
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
                $c.telemetry.incr(Counter::ConsoleBadRequests);
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

/// A form posted by a viewer: their session with at least `role`, then a well-formed form
/// carrying the session's CSRF token; or the answer that refuses it, in that order.
macro_rules! posted {
    ($c:expr, $headers:expr, $role:expr, $path:expr, $f:expr) => {{
        let ctx = viewer!($c, $headers, $role, $path);
        let f = form!($c, $f);
        if let Err(r) = check_csrf(&ctx, &f.csrf) {
            return *r;
        }
        (ctx, f)
    }};
}

/// What the console serves from: its own parts (users, sessions, the login throttle, the
/// network guard) and the appliance's, as far as it runs ([`Mode`]). Built by
/// [`Console::new`] for a running appliance and [`Console::safe_mode`] for a refused
/// configuration.
pub struct Console {
    telemetry: Arc<Telemetry>,
    mode: Mode,
    users: Users,
    sessions: Sessions,
    limiter: LoginLimiter,
    data_dir: PathBuf,
    /// Cancelled when the appliance stops: live streams end with it.
    shutdown: CancellationToken,
    /// Who may reach the console, and through what.
    guard: Guard,
    /// Where passwords are checked: a bounded few at once, so memory stays flat whatever
    /// arrives.
    password_checks: PasswordChecks,
    /// Which operator has which parcel of the judging queue open.
    leases: queue::Leases,
}

/// Whether the appliance runs behind the console, or only the console does.
enum Mode {
    /// The pipeline runs: the console reads its store and swaps its model.
    Running(Running),
    /// The configuration was refused, for this reason: nothing runs but the console, and
    /// every page that can says why.
    Safe(String),
}

/// The parts of a running appliance the console uses.
struct Running {
    store: StoreHandle,
    /// The running configuration as TOML (secrets left out), for the config page; `None`
    /// if it could not be written out.
    config_toml: Option<String>,
    /// The screening stage, for the model page and the swap.
    screener: Arc<crate::screen::Screener>,
    /// The running model's folder; changes with a swap.
    model_dir: RwLock<PathBuf>,
    /// Where ONNX Runtime is and how many threads a model gets, to load a candidate the
    /// way the running one was loaded.
    ort_dylib_path: Option<PathBuf>,
    intra_threads: usize,
    /// The pipeline's stages, whose health `/healthz` reports.
    stages: Arc<crate::supervise::Stages>,
    /// With `[site]`: the peers heard and the sightings' backlog, for the devices page.
    sightings: Option<Arc<SightingsStatus>>,
    /// The configured lines' ids, for the operators' alarm settings.
    lines: Vec<String>,
}

impl Running {
    /// The running model's folder.
    fn model_dir(&self) -> PathBuf {
        self.model_dir
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The running model for its page.
    fn model(&self) -> pages::RunningModel {
        pages::RunningModel {
            info: self.screener.model_info(),
            dir: self.model_dir(),
        }
    }
}

type PasswordJob = Box<dyn FnOnce() + Send>;

/// [`PASSWORD_CHECKS`] threads of their own that run argon2 (19 MiB each while it runs),
/// behind a semaphore that a login waits on for at most [`PASSWORD_CHECK_WAIT`]. Own threads
/// rather than the blocking pool: the allocator keeps freed argon2 memory per thread, and
/// the pool may use many.
pub struct PasswordChecks {
    permits: tokio::sync::Semaphore,
    jobs: std::sync::mpsc::Sender<PasswordJob>,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        let (jobs, rx) = std::sync::mpsc::channel::<PasswordJob>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..PASSWORD_CHECKS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        // The console is gone.
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        PasswordChecks {
            permits: tokio::sync::Semaphore::new(PASSWORD_CHECKS),
            jobs,
        }
    }
}

impl PasswordChecks {
    /// Runs `check` on a password-check thread once one is free within
    /// [`PASSWORD_CHECK_WAIT`]; `None` if none was (or the threads are gone).
    async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = tokio::time::timeout(PASSWORD_CHECK_WAIT, self.permits.acquire())
            .await
            .ok()?
            .ok()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(check());
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// Password checks that may run at once.
pub const PASSWORD_CHECKS: usize = 2;
/// How long a login waits for a password check to be free before it is told to come back.
pub const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(2);

/// The console's network-facing settings (`[console]`).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Lower-case host names and address literals the console answers to.
    allowed_hosts: Vec<String>,
    /// Listening on every address: any address literal is a host of ours.
    any_address: bool,
    trusted_proxies: Vec<IpAddr>,
    metrics_token: Option<String>,
}

impl Guard {
    /// The guard a console listening on `listen` (unknown in safe mode) with `config` keeps.
    pub fn new(config: &crate::config::ConsoleConfig, listen: Option<SocketAddr>) -> Guard {
        let allowed_hosts = match &config.allowed_hosts {
            Some(hosts) => hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            None => {
                let mut v = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
                v.extend(listen.map(|l| l.ip().to_string()));
                v
            }
        };
        Guard {
            allowed_hosts,
            any_address: listen.is_none_or(|l| l.ip().is_unspecified()),
            trusted_proxies: config.trusted_proxies.clone(),
            metrics_token: config.metrics_token.clone(),
        }
    }

    /// Whether a `Host` header names this console.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        // Strip the port: `[::1]:8080`, `127.0.0.1:8080`, `name:8080`.
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h),
        };
        if name.is_empty() {
            return false;
        }
        let literal = name.parse::<IpAddr>().ok();
        self.allowed_hosts.iter().any(|a| {
            a.trim_start_matches('[').trim_end_matches(']') == name
                || literal.is_some_and(|l| a.parse::<IpAddr>().ok() == Some(l))
        }) || (self.any_address && literal.is_some())
    }

    /// The client's address: the peer's, or, from a trusted proxy, the last address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusted_proxies.contains(&ip) => continue,
                Ok(ip) => return ip,
                // A hop we cannot read was written by someone we do not trust.
                Err(_) => return peer,
            }
        }
        peer
    }

    /// Whether the client reached us over HTTPS (as a trusted proxy says).
    fn https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.trusted_proxies.contains(&peer)
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https")
    }
}

/// What a running appliance's console reads and acts on.
pub struct Pipeline {
    pub store: StoreHandle,
    /// The running model's folder.
    pub model_dir: PathBuf,
    /// The screening stage, for the model page and the swap.
    pub screener: Arc<crate::screen::Screener>,
    /// The stages, whose health `/healthz` reports.
    pub stages: Arc<crate::supervise::Stages>,
    /// With `[site]`: the peers heard and the sightings' backlog.
    pub sightings: Option<Arc<SightingsStatus>>,
}

impl Console {
    /// The console of a running appliance.
    pub fn new(
        telemetry: Arc<Telemetry>,
        config: &crate::config::Config,
        pipeline: Pipeline,
        shutdown: CancellationToken,
    ) -> Console {
        let Pipeline {
            store,
            model_dir,
            screener,
            stages,
            sightings,
        } = pipeline;
        let config_toml = toml::to_string_pretty(config)
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot show the running configuration on the console");
            })
            .ok();
        Console {
            telemetry,
            mode: Mode::Running(Running {
                store,
                config_toml,
                screener,
                model_dir: RwLock::new(model_dir),
                ort_dylib_path: config.model.ort_dylib_path.clone(),
                intra_threads: config.model.intra_threads,
                stages,
                sightings,
                lines: config.lines.iter().map(|l| l.id.clone()).collect(),
            }),
            users: Users::in_data_dir(&config.data_dir),
            sessions: Sessions::default(),
            limiter: LoginLimiter::default(),
            data_dir: config.data_dir.clone(),
            shutdown,
            guard: Guard::new(&config.console, Some(config.console.listen)),
            password_checks: PasswordChecks::default(),
            leases: queue::Leases::new(
                Duration::from_secs(config.console.queue.lease_s),
                Duration::from_secs(config.console.queue.undo_s),
            ),
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
            mode: Mode::Safe(why),
            users: Users::in_data_dir(&data_dir),
            sessions: Sessions::default(),
            limiter: LoginLimiter::default(),
            data_dir,
            shutdown,
            guard: Guard::new(&crate::config::ConsoleConfig::default(), None),
            password_checks: PasswordChecks::default(),
            leases: {
                let q = crate::config::QueueConfig::default();
                queue::Leases::new(
                    Duration::from_secs(q.lease_s),
                    Duration::from_secs(q.undo_s),
                )
            },
        }
    }

    /// The running appliance's parts; `None` in safe mode.
    fn running(&self) -> Option<&Running> {
        match &self.mode {
            Mode::Running(r) => Some(r),
            Mode::Safe(_) => None,
        }
    }

    /// The store; `None` in safe mode.
    fn store(&self) -> Option<&StoreHandle> {
        self.running().map(|r| &r.store)
    }

    /// The configured lines (none in safe mode).
    fn lines(&self) -> &[String] {
        self.running().map_or(&[], |r| r.lines.as_slice())
    }

    /// `user`'s own settings; the defaults (the alarm sounds, for every line) if there is no
    /// store or they cannot be read (logged).
    async fn prefs(&self, user: &str) -> UserPrefs {
        let Some(store) = self.store() else {
            return UserPrefs::default();
        };
        let user = user.to_owned();
        store
            .read(move |s| s.prefs(&user))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read a user's settings; the defaults apply");
                UserPrefs::default()
            })
    }

    /// Why the appliance runs in safe mode, if it does.
    fn safe_mode_reason(&self) -> Option<&str> {
        match &self.mode {
            Mode::Running(_) => None,
            Mode::Safe(why) => Some(why),
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
    Lang::from_tag(cookie(headers, LANG_COOKIE))
}

/// A local path to go back to (never another site): a path that starts with a single `/`
/// and holds no control character (browsers drop tabs and newlines, so `/\t/evil.example`
/// would be `//evil.example`) and no backslash (read as `/`); anything else is `/`.
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.chars().any(|c| c == '\\' || c.is_control()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

impl Console {
    /// The viewer if logged in with at least `role`; else the response to give instead:
    /// the login page (pages) or 401 (API), or 403 for too small a role.
    fn ctx(&self, headers: &HeaderMap, role: Role, path: &str) -> Result<Ctx, Box<Response>> {
        let lang = lang(headers);
        let session = cookie(headers, SESSION_COOKIE).and_then(|tok| self.session(tok, true));
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

    /// The session of a token while it lives and its user still exists with its role;
    /// `touch` counts this as the user being active.
    fn session(&self, token: &str, touch: bool) -> Option<Session> {
        let s = if touch {
            self.sessions.get(token)
        } else {
            self.sessions.peek(token)
        }?;
        match self.users.role(&s.user) {
            Ok(Some(role)) if role == s.role => Some(s),
            other => {
                if let Err(e) = &other {
                    self.telemetry.incr(Counter::ConsoleUserFileErrors);
                    tracing::error!(error = %e, "cannot read the console users");
                }
                tracing::info!(user = %s.user, "session ended: its user was removed or changed");
                self.sessions.end(token);
                None
            }
        }
    }

    async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) {
        if let Some(store) = self.store() {
            if let Err(e) = store.audit(actor, action, target, detail).await {
                self.telemetry.incr(Counter::ConsoleAuditErrors);
                tracing::error!(error = %e, action, "cannot write the audit log");
            }
        }
    }
}

/// A path as a query value (`next=`): every byte but the unreserved ones and `/` escaped.
fn urlencode(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC as ALL};
    const PATH: &AsciiSet = &ALL.remove(b'-').remove(b'_').remove(b'.').remove(b'/');
    utf8_percent_encode(s, PATH).to_string()
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route(
            "/login",
            get(login_page)
                .post(login)
                .layer(axum::extract::DefaultBodyLimit::max(LOGIN_BODY_MAX)),
        )
        .route("/logout", post(logout))
        .route("/lang", get(switch_lang))
        .route("/static/console.js", get(script))
        .route("/static/viewer.js", get(viewer_script))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(line_page))
        .route("/flagged", get(flagged_page))
        .route("/parcel/{id}", get(parcel_page))
        .route("/parcel/{id}/image", get(parcel_image))
        .route("/parcel/{id}/pixels", get(parcel_pixels))
        .route("/parcel/{id}/review", post(review))
        .route("/queue", get(queue_page))
        .route("/api/queue/rows", get(api_queue_rows))
        .route("/api/queue/next", post(api_queue_next))
        .route("/api/queue/undo", post(api_queue_undo))
        .route("/api/queue/{id}/decide", post(api_queue_decide))
        .route("/search", get(search_page))
        .route("/settings", get(settings_page).post(settings_save))
        .route("/api/alarm", get(api_alarm))
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
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            check_host,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// The largest login form accepted (a name of [`auth::MAX_NAME_BYTES`], a password, `next`).
const LOGIN_BODY_MAX: usize = 8 * 1024;

/// Refuses a request whose `Host` is not one the console goes by: a page on another site
/// whose name was re-pointed at this address (DNS rebinding) gets nothing.
async fn check_host(
    State(c): State<Arc<Console>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(|h| c.guard.host_allowed(h)) {
        return next.run(req).await;
    }
    c.telemetry.incr(Counter::ConsoleBadHosts);
    tracing::warn!(
        host = %host.unwrap_or("").chars().take(80).collect::<String>().escape_default(),
        "console request for another host refused (set console.allowed_hosts if this is ours)"
    );
    (
        StatusCode::MISDIRECTED_REQUEST,
        "this console does not answer to that host name; a technician can add it to console.allowed_hosts",
    )
        .into_response()
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

/// A script of the console's, revalidated on every use.
fn javascript(text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

async fn script() -> Response {
    javascript(include_str!("console.js"))
}

async fn viewer_script() -> Response {
    javascript(include_str!("viewer.js"))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let lang = lang(&headers);
    pages::login(lang, &local_path(q.next.as_deref()), None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

/// The login page again with a message and a status; `retry` for a throttled attempt.
fn login_refused(
    lang: Lang,
    next: &str,
    status: StatusCode,
    message: &str,
    retry: Option<Duration>,
) -> Response {
    let mut r = (status, pages::login(lang, next, Some(t(lang, message)))).into_response();
    if let Some(wait) = retry {
        // Whole seconds, rounded up: coming back on time is never too early.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// A login told to come back after `wait`: `why` is `throttled` (too many tries) or `busy`
/// (no password check free in time).
fn slowed(
    c: &Console,
    lang: Lang,
    next: &str,
    client: IpAddr,
    why: &str,
    wait: Duration,
) -> Response {
    c.telemetry.incr(if why == "busy" {
        Counter::ConsoleLoginsBusy
    } else {
        Counter::ConsoleLoginsThrottled
    });
    tracing::warn!(peer = %client, why, "console login slowed down");
    let message = if why == "busy" {
        "login.busy"
    } else {
        "login.locked"
    };
    login_refused(
        lang,
        next,
        StatusCode::TOO_MANY_REQUESTS,
        message,
        Some(wait),
    )
}

/// A login: the name's length checked, the throttle decided (atomically, before any
/// password is checked), then argon2 run for at most [`PASSWORD_CHECKS`] logins at once.
async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let lang = lang(&headers);
    let next = local_path(f.next.as_deref());
    let user = f.user.trim().to_owned();
    let client = c.guard.client(peer.ip(), &headers);
    if user.len() > auth::MAX_NAME_BYTES {
        // Nothing of it is kept, logged or audited.
        c.telemetry.incr(Counter::ConsoleBadRequests);
        return login_refused(lang, &next, StatusCode::BAD_REQUEST, "login.failed", None);
    }
    let attempt = match c.limiter.begin(client, &user) {
        Ok(a) => a,
        Err(wait) => return slowed(&c, lang, &next, client, "throttled", wait),
    };
    let users = c.clone();
    let (name, password) = (user.clone(), f.password);
    let Some(verified) = c
        .password_checks
        .run(move || users.users.verify(&name, &password))
        .await
    else {
        c.limiter.abandoned(attempt);
        return slowed(&c, lang, &next, client, "busy", Duration::from_secs(1));
    };
    match verified {
        Ok(Some(role)) => {
            c.limiter.succeeded(attempt);
            let token = c.sessions.start(&user, role);
            c.telemetry.incr(Counter::ConsoleLogins);
            tracing::info!(user = %user, role = role.key(), "console login");
            c.audit(&format!("user:{user}"), "login", &user, role.key())
                .await;
            let secure = c.guard.https(peer.ip(), &headers);
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
            if let Err(e) = &other {
                c.telemetry.incr(Counter::ConsoleUserFileErrors);
                tracing::error!(error = %e, "cannot read the console users");
            }
            c.limiter.failed(attempt);
            c.telemetry.incr(Counter::ConsoleLoginFailures);
            tracing::warn!(peer = %client, "console login failed");
            c.audit(&format!("ip:{client}"), "login_failed", &user, "")
                .await;
            login_refused(lang, &next, StatusCode::UNAUTHORIZED, "login.failed", None)
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
    let (ctx, _) = posted!(c, headers, Role::Operator, "/", f);
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
    let to = Lang::from_tag(q.to.as_deref());
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
        .running()
        .map(|r| r.stages.stalled(std::time::Instant::now()))
        .unwrap_or_default();
    if stalled.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let body: String = stalled.iter().map(|s| format!("{s}\n")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn readyz(State(c): State<Arc<Console>>) -> Response {
    let checks = [
        ("configuration", c.safe_mode_reason().is_none()),
        ("store", c.store().is_some()),
        ("model", c.telemetry.link_up(&Link::Model)),
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

/// Prometheus text format: every counter, link state, backlog and decision latency. Open to
/// loopback; from elsewhere only with `Authorization: Bearer <console.metrics_token>`.
async fn metrics(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !c.guard.client(peer.ip(), &headers).is_loopback() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = match (&c.guard.metrics_token, given) {
            (Some(want), Some(given)) => {
                given.len() == want.len()
                    && given
                        .bytes()
                        .zip(want.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            _ => false,
        };
        if !ok {
            c.telemetry.incr(Counter::ConsoleMetricsRefused);
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics answers loopback, or a bearer token set as console.metrics_token",
            )
                .into_response();
        }
    }
    let backlog = c.store().map(|s| s.outbox_len());
    match crate::telemetry::metrics::encode(&c.telemetry, backlog) {
        Ok(out) => (
            [(
                header::CONTENT_TYPE,
                crate::telemetry::metrics::CONTENT_TYPE,
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn line_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/");
    let backlog = c.store().map_or(0, |s| s.outbox_len() as u64);
    pages::line(
        &ctx,
        &Snapshot::take(&c.telemetry),
        &snapshot::recent(&c.telemetry),
        backlog,
        c.safe_mode_reason(),
    )
    .into_response()
}

async fn flagged_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/flagged");
    let waiting = match c.store() {
        Some(store) => store
            .read(|store| {
                let rs = store.latest_records(200, 20_000, |r| r.decision != Decision::Clear)?;
                Ok(rs
                    .into_iter()
                    .filter(|r| {
                        store
                            .reviews(&r.record_id)
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
    pages::flagged(&ctx, &waiting).into_response()
}

async fn record_and_reviews(
    c: &Console,
    id: &str,
) -> Option<(Record, Vec<crate::store::review::Review>)> {
    let store = c.store()?;
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
            pages::parcel(&ctx, &record, &reviews, q.saved.is_some()).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            pages::message(ctx.lang, Some(&ctx.session), t(ctx.lang, "notfound")),
        )
            .into_response(),
    }
}

/// A record's kept scan files (one image, or a pair's halves), or the `404` that says there
/// is no such record or it kept no scan.
async fn kept_files(c: &Console, id: &str) -> Result<Vec<PathBuf>, Box<Response>> {
    match record_and_reviews(c, id).await {
        Some((record, _)) if record.image.is_some() => Ok(record.image_files()),
        _ => Err(Box::new(StatusCode::NOT_FOUND.into_response())),
    }
}

async fn parcel_image(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/image");
    let path = match kept_files(&c, &id).await {
        Ok(files) => files[0].clone(),
        Err(r) => return *r,
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
                    // Never kept in a shared PC's browser cache.
                    (header::CACHE_CONTROL, "no-store"),
                ],
                bytes,
            )
                .into_response()
        }
        // Evicted by retention or the disk budget.
        Err(_) => StatusCode::GONE.into_response(),
    }
}

/// A kept scan's pixels for the viewer ([`viewer`]): 16-bit for a pair, never cached.
async fn parcel_pixels(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/pixels");
    let files = match kept_files(&c, &id).await {
        Ok(files) => files,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || viewer::Pixels::load(&files)).await {
        Ok(Ok(pixels)) => (
            [
                (header::CONTENT_TYPE, viewer::CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            pixels.encode(),
        )
            .into_response(),
        // Evicted by retention or the disk budget.
        Ok(Err(viewer::PixelError::Gone)) => StatusCode::GONE.into_response(),
        Ok(Err(viewer::PixelError::Unreadable(why))) => {
            tracing::error!(record = %id, error = %why, "a kept scan cannot be decoded for the viewer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the kept scan cannot be decoded",
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(record = %id, error = %e, "the pixel decoder stopped");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    finding: String,
    note: Option<String>,
}

/// The finding a form names, or the 400 that refuses it.
fn finding_of(c: &Console, f: &ReviewForm) -> Result<Finding, Box<Response>> {
    match f.finding.as_str() {
        "confirmed" => Ok(Finding::Confirmed),
        "cleared" => Ok(Finding::Cleared),
        other => {
            c.telemetry.incr(Counter::ConsoleBadRequests);
            Err(Box::new(
                (
                    StatusCode::BAD_REQUEST,
                    format!("unknown finding {other:?}"),
                )
                    .into_response(),
            ))
        }
    }
}

async fn review(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ReviewForm>, FormRejection>,
) -> Response {
    let (ctx, f) = posted!(c, headers, Role::Operator, &format!("/parcel/{id}"), f);
    let finding = match finding_of(&c, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if c.store().is_none() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let judged = c
        .judge(&ctx.session.user, &id, finding, f.note, SystemTime::now())
        .await;
    match judged {
        Ok(_) => {
            // Judged here, it is no one's in the queue any more.
            c.leases.release(&id);
            Redirect::to(&format!("/parcel/{id}?saved=1")).into_response()
        }
        Err(crate::store::StoreError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            pages::message(ctx.lang, Some(&ctx.session), t(ctx.lang, "notfound")),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

impl Console {
    /// Records `user`'s finding on a parcel, decided at `at` ([`crate::store::Store::judge`]):
    /// the review, the statistics' counters (here too), the time it waited, the audit.
    async fn judge(
        &self,
        user: &str,
        id: &str,
        finding: Finding,
        note: Option<String>,
        at: SystemTime,
    ) -> Result<crate::store::queue::Judged, crate::store::StoreError> {
        let store = self
            .store()
            .ok_or_else(|| crate::store::StoreError::Unavailable("safe mode".into()))?;
        let (rid, by) = (id.to_owned(), user.to_owned());
        // The review, its counts and the queue, in one durable write.
        let judged = store
            .write(move |s| s.judge(&rid, finding, &by, note.as_deref(), at))
            .await
            .inspect_err(|e| {
                if !matches!(e, crate::store::StoreError::NotFound(_)) {
                    self.telemetry.incr(Counter::StoreErrors);
                    tracing::error!(error = %e, record = %id, "cannot record a review");
                }
            })?;
        for (counter, n) in &judged.counted {
            self.telemetry.add(counter.clone(), *n);
        }
        let waited = judged.waited.map(|w| {
            self.telemetry.observe_queue_wait(w);
            format!("; waited {:.1} s", w.as_secs_f64())
        });
        tracing::info!(record = %id, finding = finding.key(), user, "operator review");
        self.audit(
            &format!("user:{user}"),
            &format!("review.{}", finding.key()),
            id,
            &format!(
                "decision {}{}",
                judged.review.decision.key(),
                waited.unwrap_or_default()
            ),
        )
        .await;
        Ok(judged)
    }

    /// The parcels waiting in the queue with their records, oldest first, at most `max`.
    async fn waiting(&self, max: usize) -> Vec<(Waiting, Record)> {
        let Some(store) = self.store() else {
            return Vec::new();
        };
        store
            .read(move |s| {
                Ok(s.waiting(max)?
                    .into_iter()
                    .filter_map(|w| {
                        let r = s.record(w.record_id.as_bytes()).ok().flatten()?;
                        Some((w, r))
                    })
                    .collect())
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the judging queue");
                Vec::new()
            })
    }

    /// The queue's rows as the viewer sees them now.
    fn queue_rows<'a>(&self, lang: Lang, waiting: &'a [(Waiting, Record)]) -> pages::QueueRows<'a> {
        let now = Instant::now();
        pages::QueueRows::new(lang, waiting, |id| self.leases.holder(id, now))
    }

    /// A waiting parcel's judging pane, as the queue's page script opens it.
    async fn open_pane(&self, ctx: &Ctx, id: &str) -> Response {
        let Some(store) = self.store() else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        let rid = id.to_owned();
        let found = store
            .read(move |s| {
                let Some(w) = s.queued(&rid)? else {
                    return Ok(None);
                };
                Ok(s.record(rid.as_bytes())?.map(|r| (w, r)))
            })
            .await;
        match found {
            Ok(Some((w, r))) => match pages::judge_pane(ctx.lang, &w, &r) {
                Some(pane) => Json(serde_json::json!({
                    "record_id": id,
                    "waybill": r.waybill.as_ref().map(|w| w.as_str()),
                    "pane": pane,
                }))
                .into_response(),
                None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            },
            Ok(None) => {
                self.leases.release(id);
                refused(StatusCode::CONFLICT, t(ctx.lang, "queue.gone"))
            }
            Err(e) => {
                tracing::error!(error = %e, record = %id, "cannot read a queued parcel");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// A refusal the queue's page script shows: `{"error": words}`.
fn refused(status: StatusCode, words: &str) -> Response {
    (status, Json(serde_json::json!({ "error": words }))).into_response()
}

/// How many waiting parcels the queue's page lists.
const QUEUE_SHOWN: usize = 200;
/// How many waiting parcels the next one is looked for among.
const QUEUE_SCAN: usize = 10_000;

async fn queue_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/queue");
    let waiting = c.waiting(QUEUE_SHOWN).await;
    pages::queue(&ctx, &c.queue_rows(ctx.lang, &waiting)).into_response()
}

/// The queue's rows alone, for the page script to show again.
async fn api_queue_rows(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/api/queue");
    let waiting = c.waiting(QUEUE_SHOWN).await;
    match c.queue_rows(ctx.lang, &waiting).html() {
        Some(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Opens the next parcel for the viewer: the one they have open, else the oldest nobody
/// has, leased to them; `204` if there is none.
async fn api_queue_next(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let (ctx, _) = posted!(c, headers, Role::Operator, "/api/queue", f);
    let Some(store) = c.store() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    // Another operator may judge a parcel between the queue's read and its lease: it is gone
    // then (`open_pane` answers 409 and frees the lease), and the next one is taken instead.
    let mut pane = StatusCode::NO_CONTENT.into_response();
    for _ in 0..NEXT_ATTEMPTS {
        let waiting = match store.read(|s| s.waiting(QUEUE_SCAN)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the judging queue");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        let Some(id) = c.leases.take(&ctx.session.user, &waiting, Instant::now()) else {
            return StatusCode::NO_CONTENT.into_response();
        };
        pane = c.open_pane(&ctx, &id).await;
        if pane.status() != StatusCode::CONFLICT {
            break;
        }
    }
    pane
}

/// How often `next` takes another parcel when the one it leased was judged meanwhile.
const NEXT_ATTEMPTS: usize = 4;

/// The viewer's finding on a parcel of the queue: a confirmation is recorded now; a clear is
/// held for `console.queue.undo_s`, then recorded unless undone. Refused (`409`) when
/// another operator has the parcel or it was judged already.
async fn api_queue_decide(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ReviewForm>, FormRejection>,
) -> Response {
    let (ctx, f) = posted!(c, headers, Role::Operator, "/api/queue", f);
    let finding = match finding_of(&c, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(store) = c.store() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let rid = id.clone();
    match store.read(move |s| s.queued(&rid)).await {
        Ok(Some(_)) => {}
        Ok(None) => return refused(StatusCode::CONFLICT, t(ctx.lang, "queue.gone")),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    let user = ctx.session.user.clone();
    let now = Instant::now();
    if let Err(queue::TakenBy(other)) = c.leases.claim(&user, &id, now) {
        let words = t(ctx.lang, "queue.taken_by").replace("{u}", &other);
        return refused(StatusCode::CONFLICT, &words);
    }
    let at = SystemTime::now();
    match finding {
        Finding::Confirmed => match c.judge(&user, &id, finding, f.note, at).await {
            Ok(_) => {
                c.leases.release(&id);
                Json(serde_json::json!({ "finding": finding.key() })).into_response()
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Finding::Cleared => {
            let token = c.leases.hold_clear(&user, &id, f.note, at, now);
            record_held_clear(c.clone(), user, id, token);
            Json(serde_json::json!({
                "finding": finding.key(),
                "undo_ms": c.leases.undo.as_millis() as u64,
            }))
            .into_response()
        }
    }
}

/// Records a held clear once its undo time is out (or at once when the appliance stops),
/// unless it was undone.
fn record_held_clear(c: Arc<Console>, user: String, id: String, token: u64) {
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(c.leases.undo) => {}
            _ = c.shutdown.cancelled() => {}
        }
        let Some(held) = c.leases.due(&id, token) else {
            // Undone.
            return;
        };
        if let Err(e) = c
            .judge(&user, &id, Finding::Cleared, held.note, held.at)
            .await
        {
            tracing::error!(error = %e, record = %id, "a clear could not be recorded; the parcel waits in the queue again");
        }
        c.leases.release(&id);
    });
}

/// Undoes the viewer's latest clear still within its undo time: the parcel opens again.
async fn api_queue_undo(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let (ctx, _) = posted!(c, headers, Role::Operator, "/api/queue", f);
    match c.leases.undo(&ctx.session.user, Instant::now()) {
        Some(id) => {
            c.audit(
                &format!("user:{}", ctx.session.user),
                "review.undo",
                &id,
                "clear undone before it was recorded",
            )
            .await;
            c.open_pane(&ctx, &id).await
        }
        None => refused(StatusCode::CONFLICT, t(ctx.lang, "queue.nothing_to_undo")),
    }
}

async fn settings_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<SavedQuery>,
) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/settings");
    let prefs = c.prefs(&ctx.session.user).await;
    pages::settings(&ctx, &prefs, c.lines(), q.saved.is_some()).into_response()
}

/// The settings form: a checkbox `muted`, and one `line` field per watched line.
struct SettingsForm {
    csrf: String,
    muted: bool,
    lines: Vec<String>,
}

impl SettingsForm {
    fn of(pairs: Vec<(String, String)>) -> SettingsForm {
        let mut f = SettingsForm {
            csrf: String::new(),
            muted: false,
            lines: Vec::new(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "csrf" => f.csrf = v,
                "muted" => f.muted = true,
                "line" => f.lines.push(v),
                _ => {}
            }
        }
        f
    }
}

/// Keeps a user's alarm settings (audited): muted or not, the lines watched (all of them
/// is kept as "every line", so that a line added later is watched too).
async fn settings_save(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    f: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let f = f.map(|Form(pairs)| Form(SettingsForm::of(pairs)));
    let (ctx, f) = posted!(c, headers, Role::Operator, "/settings", f);
    let Some(store) = c.store() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let known = c.lines();
    let chosen: Vec<String> = known
        .iter()
        .filter(|l| f.lines.contains(l))
        .cloned()
        .collect();
    let prefs = UserPrefs {
        muted: f.muted,
        lines: (chosen.len() < known.len()).then_some(chosen),
    };
    let detail = format!(
        "muted={} lines={}",
        prefs.muted,
        prefs
            .lines
            .as_ref()
            .map_or("all".to_owned(), |l| l.join(","))
    );
    let (user, kept) = (ctx.session.user.clone(), prefs.clone());
    if let Err(e) = store.write(move |s| s.set_prefs(&user, &kept)).await {
        c.telemetry.incr(Counter::StoreErrors);
        tracing::error!(error = %e, "cannot keep a user's settings");
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let actor = format!("user:{}", ctx.session.user);
    c.audit(&actor, "settings", &ctx.session.user, &detail)
        .await;
    Redirect::to("/settings?saved=1").into_response()
}

/// The viewer's alarm settings, for the page script.
async fn api_alarm(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/api/alarm");
    Json(c.prefs(&ctx.session.user).await).into_response()
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
    let found = match (c.store(), query.is_empty()) {
        (Some(store), false) => {
            let q = query.clone();
            store
                .read(move |s| s.find_by_waybill(&q, 100))
                .await
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    pages::search(&ctx, &query, &found).into_response()
}

/// Live updates: a `parcel` event per decided parcel, an `outcome` event when the line
/// controller reports what it did with one, a `status` event every second. The stream ends
/// at the first tick after its session does (logout, expiry, its user removed).
async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Operator, "/events");
    let lang = ctx.lang;
    let token = cookie(&headers, SESSION_COOKIE).unwrap_or("").to_owned();
    let parcels = c.telemetry.subscribe();
    let tick = tokio::time::interval(Duration::from_secs(1));
    let stream = futures_util::stream::unfold(
        (parcels, tick, c.clone()),
        move |(mut parcels, mut tick, c)| {
            let token = token.clone();
            async move {
                let event = tokio::select! {
                    // The appliance stops: the stream ends, so the server can.
                    _ = c.shutdown.cancelled() => return None,
                    p = parcels.recv() => match p {
                        Ok(Live::Parcel(p)) => pages::LiveParcel::new(lang, &p)
                            .and_then(|p| Event::default().event("parcel").json_data(&p).ok()),
                        Ok(o @ Live::Outcome { .. }) => Event::default().event("outcome").json_data(&o).ok(),
                        // A slow browser skips parcels; the next status carries the counts.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = tick.tick() => {
                        c.session(&token, false)?;
                        let snapshot = Snapshot::take(&c.telemetry);
                        let badges = pages::Badges::new(lang, &snapshot).html();
                        let s = snapshot.status(c.store().map(|s| s.outbox_len()), badges);
                        Event::default().event("status").json_data(s).ok()
                    }
                };
                let event = event.unwrap_or_else(|| Event::default().comment("skipped"));
                Some((Ok::<_, std::convert::Infallible>(event), (parcels, tick, c)))
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn api_parcels(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/parcels");
    Json::<Vec<ParcelSummary>>(snapshot::recent(&c.telemetry)).into_response()
}

async fn api_status(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let _ctx = viewer!(c, headers, Role::Operator, "/api/status");
    let backlog = c.store().map(|s| s.outbox_len());
    Json(Snapshot::take(&c.telemetry).status(backlog, None)).into_response()
}

async fn devices_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/devices");
    let site = c
        .running()
        .and_then(|r| r.sightings.as_ref())
        .map(|s| s.snapshot());
    pages::devices(
        &ctx,
        &Snapshot::take(&c.telemetry),
        site.as_ref(),
        &c.data_dir,
    )
    .into_response()
}

async fn model_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/model");
    pages::model(&ctx, c.running().map(Running::model), None).into_response()
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
    let (ctx, f) = posted!(c, headers, Role::Technician, "/model", f);
    let Some(running) = c.running() else {
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
    let screener = running.screener.clone();
    let dir = PathBuf::from(f.dir.trim());
    let (ort_path, threads) = (running.ort_dylib_path.clone(), running.intra_threads);
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
            c.telemetry.incr(Counter::ModelSwaps);
            c.telemetry.link(
                Link::Model,
                true,
                format!("{} {} ({})", s.new.name, s.new.version, s.dir.display()),
            );
            *running.model_dir.write().unwrap_or_else(|e| e.into_inner()) = s.dir.clone();
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
            pages::SwapShown::Swapped(s.clone())
        }
        Err(e) => {
            c.telemetry.incr(Counter::ModelSwapsRefused);
            tracing::warn!(error = %e, dir = %target, "model swap refused");
            c.audit(&actor, "model.swap_refused", &target, &e.to_string())
                .await;
            pages::SwapShown::Refused(e.to_string())
        }
    };
    pages::model(&ctx, Some(running.model()), Some((&f.dir, shown))).into_response()
}

async fn config_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let ctx = viewer!(c, headers, Role::Technician, "/config");
    pages::config(&ctx, c.safe_mode_reason(), running_config(&c), None).into_response()
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
    let (ctx, f) = posted!(c, headers, Role::Technician, "/config", f);
    let checked = match crate::config::Config::parse(&f.text, std::path::Path::new("(pasted)")) {
        Ok(_) => pages::Checked::Valid,
        Err(e) => pages::Checked::Invalid(e.to_string()),
    };
    pages::config(
        &ctx,
        c.safe_mode_reason(),
        running_config(&c),
        Some((&f.text, checked)),
    )
    .into_response()
}

/// The running configuration as TOML, if there is one to show.
fn running_config(c: &Console) -> Option<&str> {
    c.running().and_then(|r| r.config_toml.as_deref())
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
    pages::logs(&ctx, level, &text, &lines).into_response()
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
    let entries = match c.store() {
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
    pages::audit(&ctx, &text, &entries).into_response()
}

#[cfg(test)]
mod tests;
