//! HTTP-level tests of the console's router: every route for every role, login, CSRF,
//! throttling, reviews and their audit, masking, escaping, language.

use super::auth::Role;
use super::*;
use crate::store::{Commit, Store};
use crate::telemetry::{Device, LineCounter};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use serde_json::json;
use tower::ServiceExt;

struct Fixture {
    app: Router,
    console: Arc<Console>,
    /// The site's sharing as the console sees it: peers `a2` and `a3`.
    sightings: Arc<SightingsStatus>,
    /// Last: removed once the store in it is closed.
    dir: crate::testutil::TempDir,
}

const RECORD: &str = "0001763856000000-L1-7";
const ID_NUMBER: &str = "11010519491231002X";
const WAYBILL: &str = "SF1763856000";

async fn fixture(tag: &str) -> Fixture {
    fixture_with(tag, "").await
}

/// A fixture whose configuration has `console` as its `[console]` table's keys.
async fn fixture_with(tag: &str, console: &str) -> Fixture {
    let dir = crate::testutil::temp_dir(&format!("console-{tag}"));
    let config = crate::config::Config::parse(
        &format!(
            "site_id = \"T1\"\nappliance_id = \"a1\"\ndata_dir = \"{}\"\n[console]\n{console}\n[[lines]]\nid = \"L1\"\nreader_port = \"/dev/null\"\ncontroller_port = \"/dev/null\"\nxray_dir = \"/tmp\"\n",
            dir.display()
        ),
        std::path::Path::new("t.toml"),
    )
    .expect("config");
    let store = Store::open(&dir).expect("store");
    let image = dir.join("images").join(format!("{RECORD}.png"));
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 120, 40]))
        .save(&image)
        .expect("image");
    // Stored as the sink stores it; the declared goods carry markup, as a hostile
    // waybill's free text can.
    let record = json!({
        "record_id": RECORD, "line_id": "L1", "seq": 7, "waybill": WAYBILL,
        "entered_at": "2026-11-23T07:59:58.000Z",
        "screened_at": "2026-11-23T08:00:00.000Z", "decision": "flag",
        "reasons": [{"code": "counterfeit_suspected", "zh": "疑似侵权假冒商品", "en": "suspected counterfeit"}],
        "sender": {"name": "张三丰", "id_type": "resident_id", "id_number": ID_NUMBER, "phone": "13800138000", "address": "北京"},
        "declared": {"goods": "<script>x</script>运动鞋", "category": "apparel_footwear", "value_cny": 80.0, "quantity": 6},
        "scores": {"category": {"apparel_footwear": 0.97, "bags_leather": 0.02}, "counterfeit": 0.91},
        "model": {"name": "screenline-ref", "version": "0.1.0", "sha256": "00"},
        "image": image.display().to_string(),
    });
    let record: Record = serde_json::from_value(record).expect("a record");
    store
        .commit_counted(&[Commit {
            key: RECORD.to_owned(),
            record,
            report: None,
            waybill: Some(WAYBILL.to_owned()),
            counts: Vec::new(),
        }])
        .expect("commit");
    commit_pair(&store, &dir);
    let store = crate::store::owner::StoreHandle::start(store, &dir).expect("store thread");
    let telemetry = Arc::new(Telemetry::default());
    // The real model and rules: the Model page shows and swaps what the line screens with.
    let model_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.1");
    let env = crate::screen::model::init_runtime(None).expect("ONNX Runtime");
    let model = crate::screen::model::Model::load(&model_dir, &env, 1).expect("model");
    let rules = crate::screen::load_rules(
        &config.rules,
        store.hasher().clone(),
        Box::new(crate::screen::rules::MemoryLedger::default()),
    )
    .expect("rules");
    let sightings = Arc::new(SightingsStatus::new(
        &["a2".to_owned(), "a3".to_owned()],
        telemetry.clone(),
    ));
    let console = Arc::new(Console::new(
        telemetry,
        &config,
        Pipeline {
            store,
            model_dir,
            screener: crate::screen::Screener::new(model, rules),
            stages: Arc::new(crate::supervise::Stages::default()),
            sightings: Some(sightings.clone()),
        },
        tokio_util::sync::CancellationToken::new(),
    ));
    console
        .users
        .add("op", Role::Operator, "operator password")
        .expect("user");
    console
        .users
        .add("tech", Role::Technician, "technician password")
        .expect("user");
    let app =
        router(console.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Fixture {
        dir,
        app,
        console,
        sightings,
    }
}

/// A manual parcel whose kept scan is a dual-energy pair, with two boxes from a detector.
const PAIR_RECORD: &str = "0001763856001000-L1-8";

/// The pair's high half: a gradient, so that every pixel differs.
fn pair_high() -> image::ImageBuffer<image::Luma<u16>, Vec<u16>> {
    image::ImageBuffer::from_fn(6, 4, |x, y| {
        image::Luma([65535 - (x * 4 + y) as u16 * 2000])
    })
}

fn commit_pair(store: &Store, dir: &std::path::Path) {
    let images = dir.join("images");
    pair_high()
        .save(images.join(format!("{PAIR_RECORD}.high.png")))
        .expect("high");
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(6, 4, |x, y| {
        image::Luma([60000 - (x * 4 + y) as u16 * 2400])
    })
    .save(images.join(format!("{PAIR_RECORD}.low.png")))
    .expect("low");
    let record = json!({
        "record_id": PAIR_RECORD, "line_id": "L1", "seq": 8, "waybill": null,
        "entered_at": "2026-11-23T08:00:01.000Z",
        "screened_at": "2026-11-23T08:00:02.000Z", "decision": "manual",
        "reasons": [{"code": "counterfeit_suspected", "zh": "疑似侵权假冒商品", "en": "suspected counterfeit", "detection": 0}],
        "sender": null, "declared": null, "recipient": null,
        "scores": {"category": {"electronics": 0.9}, "counterfeit": 0.6, "detections": [
            {"category": "electronics", "score": 0.87, "counterfeit": 0.71, "bbox": {"x0": 1.0, "y0": 1.0, "x1": 4.0, "y1": 3.0}},
            {"category": "bags_leather", "score": 0.4, "counterfeit": 0.1, "bbox": {"x0": 0.0, "y0": 0.0, "x1": 2.0, "y1": 2.0}}
        ]},
        "model": {"name": "screenline-det", "version": "0.2.0", "sha256": "00"},
        "image": images.join(format!("{PAIR_RECORD}.high.png")).display().to_string(),
    });
    let record: Record = serde_json::from_value(record).expect("a pair record");
    store
        .commit_counted(&[Commit {
            key: PAIR_RECORD.to_owned(),
            record,
            report: None,
            waybill: None,
            counts: Vec::new(),
        }])
        .expect("commit");
}

/// The table row of `page` whose `attr` is `value`, up to its `</tr>`.
fn table_row(page: &str, attr: &str, value: &str) -> String {
    let start = page
        .find(&format!("{attr}=\"{value}\""))
        .unwrap_or_else(|| panic!("{attr}={value} in {page}"));
    let end = page[start..]
        .find("</tr>")
        .map_or(page.len(), |e| start + e);
    page[start..end].to_owned()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Fixture {
    async fn send(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Reply {
        self.send_as(&self.app, method, path, cookie, form, &[])
            .await
    }

    /// A form posted to `path`.
    async fn post(&self, path: &str, cookie: Option<&str>, form: &str) -> Reply {
        self.send("POST", path, cookie, Some(form)).await
    }

    /// A request through `app` (another peer address, say) with more headers; the `Host`
    /// is the console's own unless one is given.
    async fn send_as(
        &self,
        app: &Router,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header(header::HOST, "127.0.0.1:8080");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Body::from(form.unwrap_or("").to_owned()))
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("response");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 8 << 20)
            .await
            .expect("body");
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send("GET", path, cookie, None).await
    }

    /// The status a GET of `path` answers.
    async fn status(&self, path: &str, cookie: Option<&str>) -> StatusCode {
        self.get(path, cookie).await.status
    }

    /// Logs in; returns the session cookie and the CSRF token.
    async fn login(&self, user: &str, password: &str) -> (String, String) {
        let r = self
            .send(
                "POST",
                "/login",
                None,
                Some(&format!(
                    "user={user}&password={}&next=/",
                    password.replace(' ', "+")
                )),
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let set = r.headers[header::SET_COOKIE].to_str().expect("cookie");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().expect("pair").to_owned();
        let page = self.get("/", Some(&cookie)).await;
        let csrf = page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("csrf token in the page")
            .to_owned();
        (cookie, csrf)
    }
}

/// (path, who may see it): None = anyone, else the least role.
const GET_ROUTES: &[(&str, Option<Role>)] = &[
    ("/login", None),
    ("/healthz", None),
    ("/metrics", None),
    ("/static/console.js", None),
    ("/", Some(Role::Operator)),
    ("/flagged", Some(Role::Operator)),
    ("/parcel/0001763856000000-L1-7", Some(Role::Operator)),
    ("/parcel/0001763856000000-L1-7/image", Some(Role::Operator)),
    ("/parcel/0001763856000000-L1-7/pixels", Some(Role::Operator)),
    ("/static/viewer.js", None),
    ("/search?waybill=SF", Some(Role::Operator)),
    ("/settings", Some(Role::Operator)),
    ("/queue", Some(Role::Operator)),
    ("/api/queue/rows", Some(Role::Operator)),
    ("/api/alarm", Some(Role::Operator)),
    ("/api/parcels", Some(Role::Operator)),
    ("/api/status", Some(Role::Operator)),
    ("/devices", Some(Role::Technician)),
    ("/model", Some(Role::Technician)),
    ("/config", Some(Role::Technician)),
    ("/logs", Some(Role::Technician)),
    ("/audit", Some(Role::Technician)),
];

#[tokio::test]
async fn every_route_for_every_role() {
    let f = fixture("routes").await;
    let (op, _) = f.login("op", "operator password").await;
    let (tech, _) = f.login("tech", "technician password").await;
    for (path, least) in GET_ROUTES {
        let anon = f.get(path, None).await;
        let as_op = f.get(path, Some(&op)).await;
        let as_tech = f.get(path, Some(&tech)).await;
        match least {
            None => {
                for r in [&anon, &as_op, &as_tech] {
                    assert_eq!(r.status, StatusCode::OK, "{path}");
                }
            }
            Some(role) => {
                // Data (not pages) answers 401 rather than sending a browser to log in.
                if path.starts_with("/api/")
                    || path.ends_with("/image")
                    || path.ends_with("/pixels")
                {
                    assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{path}");
                } else {
                    assert_eq!(anon.status, StatusCode::SEE_OTHER, "{path}");
                    let to = anon.headers[header::LOCATION].to_str().expect("location");
                    assert!(to.starts_with("/login?next="), "{path} → {to}");
                }
                let op_status = if *role == Role::Operator {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(as_op.status, op_status, "{path} as operator");
                assert_eq!(as_tech.status, StatusCode::OK, "{path} as technician");
            }
        }
        // Every answer carries the security headers.
        assert!(
            anon.headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(anon.headers[header::X_FRAME_OPTIONS], "DENY");
    }
    // The events stream answers 401 without a session (its body never ends otherwise).
    assert_eq!(f.status("/events", None).await, StatusCode::UNAUTHORIZED);
    // POST routes refuse anonymous requests.
    for path in [
        "/parcel/x/review",
        "/config/validate",
        "/logout",
        "/model/swap",
        "/settings",
    ] {
        let r = f.send("POST", path, None, Some("csrf=x")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
    }
    for path in ["/api/queue/next", "/api/queue/undo", "/api/queue/x/decide"] {
        let r = f.send("POST", path, None, Some("csrf=x")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = f
        .send("POST", "/config/validate", Some(&op), Some("csrf=x&text="))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .send("POST", "/model/swap", Some(&op), Some("csrf=x&dir=/tmp"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Unknown records.
    assert_eq!(
        f.status("/parcel/nope", Some(&op)).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn login_failures_are_refused_throttled_and_audited() {
    let f = fixture("login").await;
    let bad = "user=op&password=wrong+password&next=/";
    let r = f.send("POST", "/login", None, Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("用户名或密码错误"), "{}", r.body);
    assert!(!r.headers.contains_key(header::SET_COOKIE));
    for _ in 1..auth::FREE_FAILURES {
        assert_eq!(
            f.send("POST", "/login", None, Some(bad)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Slowed down now, even with the right password: told when to come back.
    let good = "user=op&password=operator+password&next=/";
    let r = f.send("POST", "/login", None, Some(good)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1 && retry <= auth::MAX_DELAY.as_secs(), "{retry}");
    // Forwarded-for headers from a peer that is not a trusted proxy change nothing.
    let r = f
        .send_as(
            &f.app,
            "POST",
            "/login",
            None,
            Some(good),
            &[("x-forwarded-for", "10.9.9.9")],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let store = f.console.store().expect("store");
    let failed = store
        .read(|s| s.audit_log(100, |e| e.action == "login_failed"))
        .await
        .expect("audit");
    assert_eq!(failed.len(), auth::FREE_FAILURES as usize);
    assert_eq!(failed[0].actor, "ip:127.0.0.1");
    assert_eq!(f.console.telemetry.get(Counter::ConsoleLoginsThrottled), 2);
    // After the wait the right password gets in: a delay, not a lockout.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = f.send("POST", "/login", None, Some(good)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn overlong_names_are_refused_before_anything_is_kept() {
    let f = fixture("longname").await;
    let name = "a".repeat(auth::MAX_NAME_BYTES + 1);
    let r = f
        .post(
            "/login",
            None,
            &format!("user={name}&password=whatever+it+is"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let store = f.console.store().expect("store");
    let probe = name[..40].to_owned();
    assert!(store
        .read(move |s| s.audit_log(100, |e| e.target.contains(&probe)))
        .await
        .expect("audit")
        .is_empty());
    assert_eq!(f.console.telemetry.get(Counter::ConsoleLoginFailures), 0);
    // A body far over the login form's size is refused unread.
    let huge = format!("user={}&password=x", "b".repeat(2 << 20));
    let r = f.send("POST", "/login", None, Some(&huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// Every way of writing a target that leaves the site, and local ones that must survive.
const OFFSITE: &[&str] = &[
    "/%09/evil.example/x",
    "/%0a/evil.example/x",
    "/%0d%0a/evil.example/x",
    "//evil.example/x",
    "/%5Cevil.example/x",
    "%5C%5Cevil.example",
    "https://evil.example/",
    "evil.example",
    "/%00/evil.example",
    "/%7F/evil.example",
    "",
];

#[tokio::test]
async fn redirects_never_leave_the_site() {
    let f = fixture("redirect").await;
    for back in OFFSITE {
        let r = f.get(&format!("/lang?to=en&back={back}"), None).await;
        assert_eq!(r.headers[header::LOCATION], "/", "back={back}");
        let r = f
            .post(
                "/login",
                None,
                &format!("user=op&password=operator+password&next={back}"),
            )
            .await;
        assert_eq!(r.headers[header::LOCATION], "/", "next={back}");
    }
    let r = f.get("/lang?to=en&back=/flagged%3Fx%3D1", None).await;
    assert_eq!(r.headers[header::LOCATION], "/flagged?x=1");
}

#[tokio::test]
async fn images_are_never_cached_and_sessions_end_with_their_user() {
    let f = fixture("session").await;
    let (op, _) = f.login("op", "operator password").await;
    let img = f
        .get("/parcel/0001763856000000-L1-7/image", Some(&op))
        .await;
    assert_eq!(img.status, StatusCode::OK);
    assert_eq!(img.headers[header::CACHE_CONTROL], "no-store");
    assert!(f.console.users.remove("op").expect("remove"));
    let r = f.get("/", Some(&op)).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "a removed user's session ends"
    );
    assert_eq!(
        f.status("/api/status", Some(&op)).await,
        StatusCode::UNAUTHORIZED
    );
    // Given another role, the old session ends too.
    let (tech, _) = f.login("tech", "technician password").await;
    f.console
        .users
        .set("tech", Role::Operator, "technician password")
        .expect("demote");
    assert_eq!(
        f.status("/devices", Some(&tech)).await,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn other_host_names_are_refused() {
    let f = fixture("hosts").await;
    for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "127.0.0.1"] {
        let r = f
            .send_as(&f.app, "GET", "/login", None, None, &[("host", host)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
    }
    // A rebound name, an address the console does not listen on, junk.
    for host in [
        "evil.example",
        "evil.example:8080",
        "10.0.0.7:8080",
        "127.0.0.1.evil.example",
        "",
    ] {
        let r = f
            .send_as(&f.app, "GET", "/login", None, None, &[("host", host)])
            .await;
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{host:?}");
    }
    // A configured name is answered.
    let g = fixture_with("hosts2", "allowed_hosts = [\"screenline.site-7.local\"]").await;
    let r = g
        .send_as(
            &g.app,
            "GET",
            "/login",
            None,
            None,
            &[("host", "screenline.site-7.local:8080")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_answer_loopback_or_a_token() {
    let token = "0123456789abcdef0123";
    let f = fixture_with("metrics", &format!("metrics_token = \"{token}\"")).await;
    let remote =
        router(f.console.clone()).layer(MockConnectInfo(SocketAddr::from(([10, 0, 0, 9], 5000))));
    assert_eq!(f.get("/metrics", None).await.status, StatusCode::OK);
    let right = format!("Bearer {token}");
    for (authorization, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (
            Some("Bearer 0123456789abcdef0124"),
            StatusCode::UNAUTHORIZED,
        ),
        (Some(token), StatusCode::UNAUTHORIZED),
        (Some(right.as_str()), StatusCode::OK),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        let r = f
            .send_as(&remote, "GET", "/metrics", None, None, &headers)
            .await;
        assert_eq!(r.status, want, "{authorization:?}");
        if want == StatusCode::OK {
            assert!(r.body.contains("screenline_"), "{}", r.body);
        }
    }
    // The token never shows on the configuration page.
    let (tech, _) = f.login("tech", "technician password").await;
    assert!(!f.get("/config", Some(&tech)).await.body.contains(token));
}

#[test]
fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
    let config = crate::config::ConsoleConfig {
        trusted_proxies: vec!["10.0.0.1".parse().expect("ip")],
        ..Default::default()
    };
    let g = Guard::new(&config, Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_static("6.6.6.6, 192.0.2.7, 10.0.0.1"),
    );
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
    let stranger: IpAddr = "192.0.2.50".parse().expect("ip");
    // The last hop the proxy saw, not what the client wrote first.
    assert_eq!(
        g.client(proxy, &h),
        "192.0.2.7".parse::<IpAddr>().expect("ip")
    );
    assert!(g.https(proxy, &h));
    assert_eq!(g.client(stranger, &h), stranger);
    assert!(!g.https(stranger, &h));
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_static("not-an-address"),
    );
    assert_eq!(g.client(proxy, &h), proxy);
}

#[tokio::test]
async fn an_operator_confirms_a_flagged_parcel_and_it_is_audited() {
    let f = fixture("review").await;
    let (op, csrf) = f.login("op", "operator password").await;
    let queue = f.get("/flagged", Some(&op)).await;
    assert!(queue.body.contains(RECORD), "the parcel waits for review");
    // The page shows reasons and scores, masks the sender and escapes the waybill.
    let page = f.get(&format!("/parcel/{RECORD}"), Some(&op)).await;
    assert!(page.body.contains("疑似侵权假冒商品"));
    assert!(page.body.contains("运动鞋") && page.body.contains("0.91"));
    assert!(!page.body.contains(ID_NUMBER) && page.body.contains("11**************2X"));
    assert!(!page.body.contains("<script>x") && page.body.contains("&#60;script&#62;x"));
    // A wrong CSRF token is refused and changes nothing.
    let path = format!("/parcel/{RECORD}/review");
    let r = f
        .post(&path, Some(&op), "csrf=forged&finding=confirmed")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let store = f.console.store().expect("store");
    assert!(store
        .read(|s| s.reviews(RECORD))
        .await
        .expect("reviews")
        .is_empty());
    let r = f
        .send(
            "POST",
            &path,
            Some(&op),
            Some(&format!(
                "csrf={csrf}&finding=confirmed&note=6+pairs+of+fake+shoes"
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let reviews = store.read(|s| s.reviews(RECORD)).await.expect("reviews");
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (reviews[0].by.as_str(), reviews[0].note.as_deref()),
        ("op", Some("6 pairs of fake shoes"))
    );
    let audit = store
        .read(|s| s.audit_log(10, |e| e.action == "review.confirmed"))
        .await
        .expect("audit");
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].target.as_str()),
        ("user:op", RECORD)
    );
    assert_eq!(
        f.console
            .telemetry
            .get(Counter::Review(crate::domain::Finding::Confirmed)),
        1
    );
    // Reviewed parcels leave the queue.
    assert!(!f
        .get("/flagged", Some(&op))
        .await
        .body
        .contains(&format!("data-record=\"{RECORD}\"")));
    // The technician sees it in the audit page.
    let (tech, _) = f.login("tech", "technician password").await;
    let page = f.get("/audit", Some(&tech)).await;
    assert!(page.body.contains("review.confirmed") && page.body.contains(RECORD));
    // Logging out ends the session.
    let r = f
        .send("POST", "/logout", Some(&op), Some(&format!("csrf={csrf}")))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(f.get("/", Some(&op)).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn search_config_metrics_readiness_and_language() {
    let f = fixture("misc").await;
    let (tech, csrf) = f.login("tech", "technician password").await;
    let found = f.get("/search?waybill=SF17638", Some(&tech)).await;
    assert!(
        found.body.contains(&format!("/parcel/{RECORD}")),
        "{}",
        found.body
    );
    let none = f.get("/search?waybill=YT", Some(&tech)).await;
    assert!(none.body.contains("没有找到"));
    // Validating a pasted configuration explains what is wrong.
    let r = f
        .post(
            "/config/validate",
            Some(&tech),
            &format!("csrf={csrf}&text=site_id+%3D+1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("配置无效"), "{}", r.body);
    f.console.telemetry.incr(Counter::ParcelsDecided);
    let m = f.get("/metrics", None).await;
    assert!(
        m.body.contains("screenline_parcels_screened_total 1"),
        "{}",
        m.body
    );
    assert_eq!(
        f.status("/readyz", None).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    f.console.telemetry.link(Link::Model, true, "loaded");
    assert_eq!(f.get("/readyz", None).await.status, StatusCode::OK);
    // Language: Chinese by default, English by cookie, switched by /lang.
    assert!(f.get("/", Some(&tech)).await.body.contains("待复核"));
    let r = f.get("/lang?to=en&back=/flagged", None).await;
    assert_eq!(r.headers[header::LOCATION], "/flagged");
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .starts_with("sl_lang=en"));
    let en = f
        .get("/flagged", Some(&format!("{tech}; sl_lang=en")))
        .await;
    assert!(
        en.body.contains("Flagged") && en.body.contains("lang=\"en\""),
        "{}",
        en.body
    );
}

#[tokio::test]
async fn devices_show_each_lines_own_counters_last_heard_and_the_stack_light() {
    let f = fixture("devices").await;
    let (tech, _csrf) = f.login("tech", "technician password").await;
    let t = &f.console.telemetry;
    let reader = |line| Link::line(line, Device::Reader);
    t.link(reader("L1"), true, "open");
    t.link(reader("L2"), false, "unplugged");
    t.link(Link::line("L1", Device::Controller), true, "firmware 0.1.0");
    t.incr_line("L1", LineCounter::ReaderFramingErrors);
    t.incr_line("L2", LineCounter::ReaderFramingErrors);
    t.incr_line("L2", LineCounter::ReaderFramingErrors);
    t.seen(&reader("L1"));
    t.set_light("L1", Some(screenline_protocol::StackLight::Amber));
    let page = f.get("/devices", Some(&tech)).await.body;
    let row = |device: &str| table_row(&page, "data-device", device);
    assert!(
        row("L1.reader").contains("L1.reader.framing_errors 1"),
        "{}",
        row("L1.reader")
    );
    assert!(
        row("L2.reader").contains("L2.reader.framing_errors 2"),
        "{}",
        row("L2.reader")
    );
    assert!(!row("L1.reader").contains("L2."), "{}", row("L1.reader"));
    // L1's reader was heard; L2's never was.
    assert!(row("L1.reader").contains(&crate::time_fmt::format(
        t.last_seen(&reader("L1")).expect("seen")
    )));
    assert!(row("L2.reader").contains("—"));
    let line = f.get("/", Some(&tech)).await.body;
    assert!(
        line.contains("data-light=\"L1\"") && line.contains("lamp amber"),
        "{line}"
    );
}

/// A copy of the committed model with its manifest edited, in `dir`.
fn model_copy(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.1");
    std::fs::create_dir_all(dir).expect("dir");
    for f in ["model.onnx", "README.md"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("manifest.json")).expect("read"))
            .expect("json");
    edit(&mut m);
    std::fs::write(dir.join("manifest.json"), m.to_string()).expect("write");
    dir.to_owned()
}

#[tokio::test]
async fn a_technician_swaps_the_model_and_it_is_audited() {
    let f = fixture("swap").await;
    let (tech, csrf) = f.login("tech", "technician password").await;
    let cookie = format!("{tech}; sl_lang=en");
    let page = f.get("/model", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("screenline-ref 0.1.0"), "{}", page.body);
    // The card's metrics table, and the swap form with the CSRF token.
    assert!(page.body.contains("id=\"model-metrics\""), "{}", page.body);
    assert!(page.body.contains("counterfeit AUROC"), "{}", page.body);
    assert!(
        page.body.contains("action=\"/model/swap\""),
        "{}",
        page.body
    );

    // A stale CSRF token changes nothing.
    let r = f
        .post("/model/swap", Some(&cookie), "csrf=stale&dir=/tmp")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A folder whose manifest disagrees with its graph is refused, saying what differs.
    let bad = model_copy(&f.dir.join("bad-model"), |m| {
        m["input"]["height"] = 80.into()
    });
    let r = f
        .post(
            "/model/swap",
            Some(&cookie),
            &format!("csrf={csrf}&dir={}", bad.display()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Model not swapped"), "{}", r.body);
    assert!(
        r.body
            .contains("the manifest says height 80, the graph has 64"),
        "{}",
        r.body
    );
    let screener = &f.console.running().expect("running").screener;
    assert_eq!(screener.model_info().version, "0.1.0");

    // A good one swaps, between parcels, and the page shows it.
    let good = model_copy(&f.dir.join("good-model"), |m| m["version"] = "0.1.1".into());
    let r = f
        .post(
            "/model/swap",
            Some(&cookie),
            &format!("csrf={csrf}&dir={}", good.display()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Model swapped"), "{}", r.body);
    assert!(r.body.contains("screenline-ref 0.1.1"), "{}", r.body);
    assert_eq!(screener.model_info().version, "0.1.1");
    assert_eq!(f.console.telemetry.get(Counter::ModelSwaps), 1);
    assert_eq!(f.console.telemetry.get(Counter::ModelSwapsRefused), 1);

    let store = f.console.store().expect("store");
    let swaps = store
        .read(|s| s.audit_log(100, |e| e.action.starts_with("model.swap")))
        .await
        .expect("audit");
    assert_eq!(swaps.len(), 2, "{swaps:?}");
    let ok = swaps
        .iter()
        .find(|e| e.action == "model.swap")
        .expect("swap");
    assert_eq!(ok.actor, "user:tech");
    assert!(
        ok.detail.contains("0.1.0 -> screenline-ref 0.1.1"),
        "{}",
        ok.detail
    );
    let refused = swaps
        .iter()
        .find(|e| e.action == "model.swap_refused")
        .expect("refusal");
    assert!(refused.detail.contains("height 80"), "{}", refused.detail);
}

/// Markup in anything that comes from outside — a live parcel's waybill, sender, category
/// and reason, a link's detail, a search — is shown as text by the template engine.
#[tokio::test]
async fn hostile_text_renders_escaped_on_every_page() {
    let f = fixture("escape").await;
    let (tech, _) = f.login("tech", "technician password").await;
    const HOSTILE: &str = "<script>alert(1)</script>";
    const ESCAPED: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";
    let t = &f.console.telemetry;
    t.link(
        crate::telemetry::Link::line("L1", Device::Reader),
        false,
        format!("\"{HOSTILE}"),
    );
    t.link(
        crate::telemetry::Link::line("L9\"><b>", Device::Controller),
        true,
        "firmware 0.1.0",
    );
    t.set_light("L9\"><b>", Some(screenline_protocol::StackLight::Amber));
    t.push_parcel(crate::telemetry::ParcelSummary {
        record_id: format!("r\"{HOSTILE}"),
        line_id: "L1".into(),
        seq: 1,
        waybill: Some(HOSTILE.into()),
        decision: Decision::Flag,
        reasons: serde_json::from_value(json!([
            {"code": "counterfeit_suspected", "zh": HOSTILE, "en": HOSTILE}
        ]))
        .expect("a reason"),
        category: Some(HOSTILE.into()),
        counterfeit: Some(0.5),
        sender: Some(HOSTILE.into()),
        decided_at: std::time::SystemTime::now(),
        // Outcomes are typed: nothing from outside reaches them.
        outcome: Some(crate::telemetry::ParcelOutcome::FailSafe),
    });
    for (path, shown) in [
        ("/", 5),
        ("/devices", 1),
        (
            &*format!("/search?waybill={}", "%3Cscript%3Ealert(1)%3C/script%3E"),
            1,
        ),
    ] {
        for lang in ["zh-CN", "en"] {
            let body = f
                .get(path, Some(&format!("{tech}; sl_lang={lang}")))
                .await
                .body;
            assert!(!body.contains(HOSTILE), "{path} in {lang}: {body}");
            assert!(
                body.matches(ESCAPED).count() >= shown,
                "{path} in {lang} shows the text escaped: {body}"
            );
        }
    }
    // The attribute values too: a quote cannot end one.
    let line = f.get("/", Some(&tech)).await.body;
    assert!(
        line.contains("data-record=\"r&#34;&#60;script&#62;"),
        "{line}"
    );
    assert!(
        line.contains("data-light=\"L9&#34;&#62;&#60;b&#62;\"") && !line.contains("\"><b>"),
        "{line}"
    );
    // The badges sent with every live status are the same markup.
    let snapshot = Snapshot::take(t);
    let badges = pages::Badges::new(Lang::En, &snapshot)
        .html()
        .expect("the badges");
    assert!(
        !badges.contains(HOSTILE) && badges.contains(ESCAPED),
        "{badges}"
    );
    // And the rows the live stream sends.
    let recent = t.recent();
    let live = pages::LiveParcel::new(Lang::En, &recent[0]).expect("rendered");
    let json = serde_json::to_value(&live).expect("json");
    for row in ["row", "suspect_row"] {
        let html = json[row].as_str().expect("a row");
        assert!(
            !html.contains(HOSTILE) && html.contains(ESCAPED),
            "{row}: {html}"
        );
    }
}

/// A console in safe mode: the reason on the line and config pages (escaped), nothing to
/// read or change in a store, not ready, yet alive.
#[tokio::test]
async fn a_safe_mode_console_says_why_and_changes_nothing() {
    let dir = crate::testutil::temp_dir("console-safe");
    let why = "line 3: console.listen = \"<nowhere>\" is not an address".to_owned();
    let console = Arc::new(Console::safe_mode(
        Arc::new(Telemetry::default()),
        dir.to_path_buf(),
        why,
        tokio_util::sync::CancellationToken::new(),
    ));
    console
        .users
        .add("tech", Role::Technician, "technician password")
        .expect("user");
    let app =
        router(console.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let f = Fixture {
        dir,
        app,
        console,
        sightings: Arc::new(SightingsStatus::new(&[], Arc::new(Telemetry::default()))),
    };
    let (tech, csrf) = f.login("tech", "technician password").await;
    for path in ["/", "/config"] {
        let page = f.get(path, Some(&tech)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains("安全模式"), "{path}: {}", page.body);
        assert!(
            page.body
                .contains("console.listen = &#34;&#60;nowhere&#62;&#34;"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<nowhere>"), "{path}");
    }
    // No running configuration to show, no model to swap.
    assert!(!f
        .get("/config", Some(&tech))
        .await
        .body
        .contains("id=\"running\""));
    let model = f.get("/model", Some(&tech)).await;
    assert_eq!(model.status, StatusCode::OK);
    assert!(
        !model.body.contains("action=\"/model/swap\""),
        "{}",
        model.body
    );
    let swap = f
        .post("/model/swap", Some(&tech), &format!("csrf={csrf}&dir=/tmp"))
        .await;
    assert_eq!(swap.status, StatusCode::SERVICE_UNAVAILABLE);
    let review = f
        .post(
            &format!("/parcel/{RECORD}/review"),
            Some(&tech),
            &format!("csrf={csrf}&finding=confirmed"),
        )
        .await;
    assert_eq!(review.status, StatusCode::SERVICE_UNAVAILABLE);
    // The store's pages answer, empty.
    let queue = f.get("/flagged", Some(&tech)).await;
    assert!(queue.body.contains("id=\"empty\""), "{}", queue.body);
    assert_eq!(
        f.get(&format!("/parcel/{RECORD}"), Some(&tech))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Alive, not ready, and why.
    assert_eq!(f.get("/healthz", None).await.status, StatusCode::OK);
    let ready = f.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.contains("configuration not ready"),
        "{}",
        ready.body
    );
    let status: serde_json::Value =
        serde_json::from_str(&f.get("/api/status", Some(&tech)).await.body).expect("json");
    assert!(status["backlog"].is_null(), "{status}");
}

/// A parcel that arrives on the live stream gets the very row the page renders for it: on
/// the line page always, in the flagged queue unless it was cleared.
#[tokio::test]
async fn live_rows_are_the_pages_own_rows() {
    let f = fixture("live-rows").await;
    let (tech, _) = f.login("tech", "technician password").await;
    let parcel = |record_id: &str, decision| {
        crate::telemetry::ParcelSummary {
        record_id: record_id.into(),
        line_id: "L1".into(),
        seq: 3,
        waybill: Some("SF1763856000".into()),
        decision,
        reasons: serde_json::from_value(json!([
            {"code": "counterfeit_suspected", "zh": "疑似侵权假冒商品", "en": "suspected counterfeit"}
        ]))
        .expect("a reason"),
        category: Some("apparel_footwear".into()),
        counterfeit: Some(0.91),
        sender: Some("张* 11**************2X".into()),
        decided_at: std::time::SystemTime::now(),
        outcome: Some(crate::telemetry::ParcelOutcome::Diverted),
    }
    };
    let flagged = parcel("0001763856000000-L1-3", Decision::Flag);
    f.console.telemetry.push_parcel(flagged.clone());
    let row_of = |page: &str, id: &str| {
        let start = page
            .find(&format!("<tr data-record=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} in {page}"));
        let end = start + page[start..].find("</tr>").expect("row end") + "</tr>".len();
        page[start..end].to_owned()
    };
    for lang in [Lang::Zh, Lang::En] {
        let cookie = format!("{tech}; sl_lang={}", lang.tag());
        let live = pages::LiveParcel::new(lang, &flagged).expect("rendered");
        let json = serde_json::to_value(&live).expect("json");
        // The parcel's own fields, as before, and its rows.
        assert_eq!(json["record_id"], flagged.record_id.as_str());
        let line = f.get("/", Some(&cookie)).await.body;
        assert_eq!(
            json["row"].as_str(),
            Some(row_of(&line, &flagged.record_id).as_str())
        );
        let suspect = json["suspect_row"]
            .as_str()
            .expect("a flagged parcel's row");
        assert!(suspect.starts_with(&format!("<tr data-record=\"{}\"", flagged.record_id)));
        assert!(suspect.contains("class=\"flag\"") && suspect.contains("11**************2X"));
    }
    let cleared = parcel("0001763856000000-L1-4", Decision::Clear);
    let live = serde_json::to_value(pages::LiveParcel::new(Lang::Zh, &cleared).expect("rendered"))
        .expect("json");
    assert!(live["suspect_row"].is_null(), "{live}");
    assert!(live["row"]
        .as_str()
        .is_some_and(|r| r.contains("class=\"clear\"")));
}

/// The templates name their words by key: every page, in both languages, finds every one
/// (a missing key would show as `?`).
#[tokio::test]
async fn every_page_finds_all_its_words() {
    let f = fixture("words").await;
    let (tech, _) = f.login("tech", "technician password").await;
    f.console.telemetry.link(
        crate::telemetry::Link::line("L1", Device::Controller),
        true,
        "firmware 0.1.0",
    );
    f.console
        .telemetry
        .set_light("L1", Some(screenline_protocol::StackLight::Green));
    let missing = |body: &str| {
        [">?<", "\"?\"", ">? ", " ?<"]
            .iter()
            .any(|p| body.contains(p))
    };
    for lang in ["zh-CN", "en"] {
        let cookie = format!("{tech}; sl_lang={lang}");
        for (path, _) in GET_ROUTES {
            let r = f.get(path, Some(&cookie)).await;
            if r.headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|t| t.starts_with("text/html"))
            {
                assert!(!missing(&r.body), "{path} in {lang}: {}", r.body);
            }
        }
        let login = f.get("/login", Some(&format!("sl_lang={lang}"))).await;
        assert!(!missing(&login.body), "/login in {lang}: {}", login.body);
    }
}

/// With `[site]`, the devices page lists the site's other appliances — heard recently or
/// not, when, and how many of their sightings were folded — and this one's sightings waiting
/// for the broker.
#[tokio::test]
async fn the_devices_page_shows_the_sites_peers_and_the_sightings_backlog() {
    let f = fixture("site").await;
    let (tech, _) = f.login("tech", "technician password").await;
    f.sightings.heard("a2", 5);
    f.console
        .telemetry
        .set(crate::telemetry::Gauge::SightingsBacklog, 7);
    let page = f.get("/devices", Some(&tech)).await.body;
    let row = |peer: &str| table_row(&page, "data-peer", peer);
    let (a2, a3) = (row("a2"), row("a3"));
    assert!(
        a2.contains("class=\"clear\"") && a2.contains("<td>5</td>"),
        "{a2}"
    );
    assert!(
        a3.contains("class=\"flag\"") && a3.contains("<td>—</td>"),
        "{a3}"
    );
    assert!(page.contains("data-sightings=\"backlog\">7<"), "{page}");
}

/// The viewer's pixels: a pair as its 16-bit values, an image as its colours; only for a
/// session, never cached; the parcel page carries every tool, its key, and the boxes.
#[tokio::test]
async fn the_viewer_gets_the_16_bit_pixels_every_tool_and_the_boxes() {
    let f = fixture("pixels").await;
    let (op, _) = f.login("op", "operator password").await;
    let get_bytes = |path: String, cookie: Option<String>| {
        let app = f.app.clone();
        async move {
            let mut req = Request::builder()
                .uri(path)
                .header(header::HOST, "127.0.0.1:8080");
            if let Some(c) = cookie {
                req = req.header(header::COOKIE, c);
            }
            let res = app
                .oneshot(req.body(Body::empty()).expect("request"))
                .await
                .expect("response");
            let (parts, body) = res.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            (parts.status, parts.headers, bytes.to_vec())
        }
    };
    let (status, headers, bytes) =
        get_bytes(format!("/parcel/{PAIR_RECORD}/pixels"), Some(op.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::CONTENT_TYPE], viewer::CONTENT_TYPE);
    assert_eq!(&bytes[..6], b"SLPX\x01\x01");
    assert_eq!(
        (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4")),
            u32::from_le_bytes(bytes[12..16].try_into().expect("4"))
        ),
        (6, 4)
    );
    let high: Vec<u16> = bytes[viewer::HEADER..viewer::HEADER + 48]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(high, pair_high().into_raw(), "the 16-bit values, exactly");
    let (status, _, bytes) = get_bytes(format!("/parcel/{RECORD}/pixels"), Some(op.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes[5], 2, "a pseudo-colour image");
    assert_eq!(&bytes[viewer::HEADER..viewer::HEADER + 3], &[200, 120, 40]);
    let (status, _, _) = get_bytes(format!("/parcel/{PAIR_RECORD}/pixels"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The parcel page: every tool a button with its key; the boxes listed.
    let page = f
        .get(&format!("/parcel/{PAIR_RECORD}"), Some(&op))
        .await
        .body;
    for (tool, _) in pages::TOOLS {
        let key = pages::key_for(&format!("tool:{tool}"));
        assert!(!key.is_empty(), "{tool} has a key");
        assert!(
            page.contains(&format!("data-tool=\"{tool}\">")),
            "{tool} available on a pair: {page}"
        );
    }
    assert!(page.contains("data-kind=\"pair\""), "{page}");
    assert!(page.contains("data-box=\"1\" class=\"suspect\""), "{page}");
    assert!(page.contains("\"box\":[1.0,1.0,4.0,3.0]"), "{page}");
    // On a pseudo-colour image, high and low penetration say why they are not there.
    let page = f.get(&format!("/parcel/{RECORD}"), Some(&op)).await.body;
    assert!(page.contains("data-kind=\"rgb\""), "{page}");
    assert!(
        page.contains(
            "data-tool=\"high\" class=\"na\" aria-disabled=\"true\" title=\"高穿透与低穿透不可用"
        ),
        "{page}"
    );
    assert!(page.contains("id=\"viewer-na\""), "{page}");
}

/// One key map for the whole console: no key does two things, and every action a page
/// offers has a key.
#[test]
fn no_key_does_two_things() {
    let mut seen = std::collections::HashMap::new();
    for k in pages::KEYMAP {
        assert!(
            seen.insert(k.key, k.action).is_none(),
            "{} bound twice",
            k.key
        );
    }
    for action in [
        "judge:confirm",
        "judge:clear",
        "judge:note",
        "judge:undo",
        "queue:next",
        "alarm:ack",
    ] {
        assert!(!pages::key_for(action).is_empty(), "{action}");
    }
}

/// The alarm is never muted by default; an operator mutes it and picks the lines it
/// watches for themselves alone, and the change is audited.
#[tokio::test]
async fn an_operator_mutes_their_own_alarm_and_it_is_audited() {
    let f = fixture("alarm").await;
    let (op, csrf) = f.login("op", "operator password").await;
    let (tech, _) = f.login("tech", "technician password").await;
    let alarm = |cookie: String| {
        let f = &f;
        async move {
            serde_json::from_str::<serde_json::Value>(
                &f.get("/api/alarm", Some(&cookie)).await.body,
            )
            .expect("json")
        }
    };
    assert_eq!(alarm(op.clone()).await, json!({"muted": false}));
    let page = f.get("/settings", Some(&op)).await.body;
    assert!(
        page.contains("name=\"line\" value=\"L1\" checked"),
        "{page}"
    );
    assert!(!page.contains("id=\"muted\" checked"), "{page}");
    // A forged form changes nothing.
    let r = f.post("/settings", Some(&op), "csrf=forged&muted=1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .post("/settings", Some(&op), &format!("csrf={csrf}&muted=1"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(alarm(op.clone()).await, json!({"muted": true, "lines": []}));
    assert_eq!(
        alarm(tech.clone()).await,
        json!({"muted": false}),
        "another user's stays"
    );
    let r = f
        .post(
            "/settings",
            Some(&op),
            &format!("csrf={csrf}&line=L1&line=L9"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        alarm(op.clone()).await,
        json!({"muted": false}),
        "every line again"
    );
    let store = f.console.store().expect("store");
    let audit = store
        .read(|s| s.audit_log(10, |e| e.action == "settings"))
        .await
        .expect("audit");
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].detail, "muted=true lines=");
    assert_eq!(audit[0].detail, "muted=false lines=all");
}

/// Commits `n` flagged parcels to the fixture's store, oldest first; their ids.
async fn flagged_parcels(f: &Fixture, n: usize) -> Vec<String> {
    let store = f.console.store().expect("store");
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{:013}-L2-{i}", 1_763_856_100_000u64 + i as u64);
        let mut r = Record::example(&id, Decision::Flag);
        r.line_id = "L2".into();
        r.screened_at = std::time::SystemTime::now() - Duration::from_secs(30);
        let key = id.clone();
        store
            .write(move |s| s.commit(key.as_bytes(), &r, None))
            .await
            .expect("commit");
        ids.push(id);
    }
    ids
}

impl Fixture {
    /// `POST path` with `form` as `cookie`: the status and the JSON answer (`null` if none).
    async fn post_json(
        &self,
        path: &str,
        cookie: &str,
        form: &str,
    ) -> (StatusCode, serde_json::Value) {
        let r = self.post(path, Some(cookie), form).await;
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// Two operators taking parcels at once never get the same one; each resumes their own;
/// one cannot judge the other's.
#[tokio::test]
async fn two_operators_never_get_the_same_parcel() {
    let f = fixture("queue-two").await;
    f.console
        .users
        .add("op2", Role::Operator, "operator password 2")
        .expect("user");
    let (op1, csrf1) = f.login("op", "operator password").await;
    let (op2, csrf2) = f.login("op2", "operator password 2").await;
    // The fixture's two parcels (flagged, manual) and 20 more.
    flagged_parcels(&f, 20).await;
    let next = |cookie: String, csrf: String| {
        let f = &f;
        async move {
            let (status, j) = f
                .post_json("/api/queue/next", &cookie, &format!("csrf={csrf}"))
                .await;
            (status, j["record_id"].as_str().map(str::to_owned))
        }
    };
    // Asked again, each gets the one they have open.
    let (_, mine) = next(op1.clone(), csrf1.clone()).await;
    let (_, again) = next(op1.clone(), csrf1.clone()).await;
    assert_eq!(mine, again);
    assert_eq!(mine.as_deref(), Some(RECORD), "the oldest first");
    let (status, _) = f
        .post_json(
            &format!("/api/queue/{RECORD}/decide"),
            &op2,
            &format!("csrf={csrf2}&finding=confirmed"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "op1 has it");
    // Both judging as fast as they can, at once: 22 parcels, no one judged twice.
    let run = |cookie: String, csrf: String| {
        let f = &f;
        async move {
            let mut got = Vec::new();
            loop {
                let (status, id) = next(cookie.clone(), csrf.clone()).await;
                if status == StatusCode::NO_CONTENT {
                    return got;
                }
                let id = id.expect("a parcel");
                let (status, _) = f
                    .post_json(
                        &format!("/api/queue/{id}/decide"),
                        &cookie,
                        &format!("csrf={csrf}&finding=confirmed"),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{id}");
                got.push(id);
            }
        }
    };
    let (a, b) = tokio::join!(run(op1.clone(), csrf1), run(op2.clone(), csrf2));
    let mut all: Vec<_> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (22, 22), "op1 {a:?}, op2 {b:?}");
    assert!(!a.is_empty() && !b.is_empty());
    let store = f.console.store().expect("store");
    assert!(store
        .read(|s| s.waiting(100))
        .await
        .expect("queue")
        .is_empty());
    let reviews = store.read(|s| s.reviews(RECORD)).await.expect("reviews");
    assert_eq!(reviews.len(), 1);
    assert!(reviews[0].waited_ms.is_some());
}

/// A clear is held for the undo time and can be undone meanwhile; then it is recorded with
/// the time the parcel waited, which the metrics and the statistics' counters show. The
/// queue shows who has a parcel open; its pane masks the sender.
#[tokio::test]
async fn a_clear_can_be_undone_for_a_few_seconds_and_the_wait_is_measured() {
    let f = fixture_with("queue-undo", "[console.queue]\nundo_s = 1").await;
    let (op, csrf) = f.login("op", "operator password").await;
    let (status, j) = f
        .post_json("/api/queue/next", &op, &format!("csrf={csrf}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(j["record_id"], RECORD);
    let pane = j["pane"].as_str().expect("a pane");
    assert!(
        pane.contains("11**************2X") && !pane.contains(ID_NUMBER),
        "{pane}"
    );
    assert!(
        pane.contains("data-judge=\"confirm\"") && pane.contains("id=\"viewer\""),
        "{pane}"
    );
    assert!(!pane.contains("<script>x"), "escaped: {pane}");
    let page = f.get("/queue", Some(&op)).await.body;
    assert!(
        page.contains(&format!(
            "data-record=\"{RECORD}\" data-kind=\"flagged\" data-holder=\"op\""
        )),
        "{page}"
    );
    let decide = format!("/api/queue/{RECORD}/decide");
    let (status, j) = f
        .post_json(
            &decide,
            &op,
            &format!("csrf={csrf}&finding=cleared&note=nothing"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(j["undo_ms"], 1000);
    let store = f.console.store().expect("store");
    let reviews = || async { store.read(|s| s.reviews(RECORD)).await.expect("reviews") };
    assert!(reviews().await.is_empty(), "held");
    // Undone: open again, nothing recorded.
    let (status, j) = f
        .post_json("/api/queue/undo", &op, &format!("csrf={csrf}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(j["record_id"], RECORD);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(reviews().await.is_empty(), "undone");
    let (status, _) = f
        .post_json("/api/queue/undo", &op, &format!("csrf={csrf}"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to undo");
    // Cleared again and left alone: recorded after the undo time.
    let (status, _) = f
        .post_json(
            &decide,
            &op,
            &format!("csrf={csrf}&finding=cleared&note=nothing"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reviews = reviews().await;
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (reviews[0].finding, reviews[0].note.as_deref()),
        (Finding::Cleared, Some("nothing"))
    );
    let waited = reviews[0].waited_ms.expect("waited");
    // The fixture's parcel was decided on 2026-11-23 at 08:00.
    assert!(waited > 0, "{waited}");
    let (status, _) = f
        .post_json(&decide, &op, &format!("csrf={csrf}&finding=confirmed"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "judged already");
    let metrics = f.get("/metrics", None).await.body;
    assert!(
        metrics.contains("screenline_queue_time_to_decision_seconds_count 1"),
        "{metrics}"
    );
    let kept = store
        .read(|s| s.durable_counters())
        .await
        .expect("counters");
    assert_eq!(kept[&Counter::QueueWaitMillis], waited);
    let audit = store
        .read(|s| s.audit_log(10, |e| e.action.starts_with("review.")))
        .await
        .expect("audit");
    assert_eq!(
        audit.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["review.cleared", "review.undo"]
    );
}
