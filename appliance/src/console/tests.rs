//! HTTP-level tests of the console's router: every route for every role, login, CSRF,
//! throttling, reviews and their audit, masking, escaping, language.

use super::auth::Role;
use super::*;
use crate::store::Store;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use serde_json::json;
use tower::ServiceExt;

struct Fixture {
    dir: PathBuf,
    app: Router,
    console: Arc<Console>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const RECORD: &str = "0001763856000000-L1-7";
const ID_NUMBER: &str = "11010519491231002X";

async fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("sl-console-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = crate::config::Config::parse(
        &format!(
            "site_id = \"T1\"\nappliance_id = \"a1\"\ndata_dir = \"{}\"\n[[lines]]\nid = \"L1\"\nreader_port = \"/dev/null\"\ncontroller_port = \"/dev/null\"\nxray_dir = \"/tmp\"\n",
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
    let record = json!({
        "record_id": RECORD, "line_id": "L1", "seq": 7, "waybill": "SF<script>1",
        "screened_at": "2026-11-23T08:00:00.000Z", "decision": "flag",
        "reasons": [{"code": "counterfeit_suspected", "zh": "疑似侵权假冒商品", "en": "suspected counterfeit"}],
        "sender": {"name": "张三丰", "id_type": "resident_id", "id_number": ID_NUMBER, "phone": "13800138000"},
        "declared": {"goods": "运动鞋", "category": "apparel_footwear", "value_cny": 80.0, "quantity": 6},
        "scores": {"category": {"apparel_footwear": 0.97, "bags_leather": 0.02}, "counterfeit": 0.91},
        "model": {"name": "screenline-ref", "version": "0.1.0"},
        "image": image.display().to_string(),
    });
    store
        .commit(RECORD.as_bytes(), &record, None)
        .expect("commit");
    store.index_waybill("SF<script>1", RECORD).expect("index");
    let store = crate::store::owner::StoreHandle::start(store, &dir).expect("store thread");
    let telemetry = Arc::new(Telemetry::default());
    // The real model and rules: the Model page shows and swaps what the line screens with.
    let model_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.1");
    let env = crate::screen::model::init_runtime(None).expect("ONNX Runtime");
    let model = crate::screen::model::Model::load(&model_dir, &env, 1).expect("model");
    let rules = crate::screen::rules::RuleSet::load(
        &config.rules,
        store.hasher().clone(),
        Box::new(crate::screen::rules::MemoryLedger::default()),
    )
    .expect("rules");
    let console = Arc::new(Console::new(
        telemetry,
        store,
        &config,
        model_dir,
        crate::screen::Screener::new(model, rules),
        Arc::new(crate::supervise::Stages::default()),
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
    Fixture { dir, app, console }
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
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Body::from(form.unwrap_or("").to_owned()))
            .expect("request");
        let res = self.app.clone().oneshot(req).await.expect("response");
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
    ("/search?waybill=SF", Some(Role::Operator)),
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
                if path.starts_with("/api/") || path.ends_with("/image") {
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
    assert_eq!(
        f.get("/events", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // POST routes refuse anonymous requests.
    for path in [
        "/parcel/x/review",
        "/config/validate",
        "/logout",
        "/model/swap",
    ] {
        let r = f.send("POST", path, None, Some("csrf=x")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
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
        f.get("/parcel/nope", Some(&op)).await.status,
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
    for _ in 1..auth::MAX_FAILURES {
        f.send("POST", "/login", None, Some(bad)).await;
    }
    // Locked now, even with the right password.
    let r = f
        .send(
            "POST",
            "/login",
            None,
            Some("user=op&password=operator+password&next=/"),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let store = f.console.store.as_ref().expect("store");
    let failed = store
        .read(|s| s.audit_log(100, |e| e.action == "login_failed"))
        .await
        .expect("audit");
    assert_eq!(failed.len(), auth::MAX_FAILURES);
    assert_eq!(failed[0].actor, "ip:127.0.0.1");
    assert_eq!(f.console.telemetry.get("console.logins_throttled"), 1);
    // A next that leaves the site is ignored.
    let f2 = fixture("next").await;
    let r = f2
        .send(
            "POST",
            "/login",
            None,
            Some("user=op&password=operator+password&next=//evil.example/"),
        )
        .await;
    assert_eq!(r.headers[header::LOCATION], "/");
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
    assert!(!page.body.contains(ID_NUMBER) && page.body.contains("110***********002X"));
    assert!(!page.body.contains("SF<script>") && page.body.contains("SF&lt;script&gt;1"));
    // A wrong CSRF token is refused and changes nothing.
    let path = format!("/parcel/{RECORD}/review");
    let r = f
        .send(
            "POST",
            &path,
            Some(&op),
            Some("csrf=forged&finding=confirmed"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let store = f.console.store.as_ref().expect("store");
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
    assert_eq!(f.console.telemetry.get("reviews.confirmed"), 1);
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
    let found = f.get("/search?waybill=SF%3Cscr", Some(&tech)).await;
    assert!(
        found.body.contains(&format!("/parcel/{RECORD}")),
        "{}",
        found.body
    );
    let none = f.get("/search?waybill=YT", Some(&tech)).await;
    assert!(none.body.contains("没有找到"));
    // Validating a pasted configuration explains what is wrong.
    let r = f
        .send(
            "POST",
            "/config/validate",
            Some(&tech),
            Some(&format!("csrf={csrf}&text=site_id+%3D+1")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("配置无效"), "{}", r.body);
    f.console.telemetry.incr("parcels.decided");
    let m = f.get("/metrics", None).await;
    assert!(
        m.body.contains("screenline_parcels_decided 1"),
        "{}",
        m.body
    );
    assert_eq!(
        f.get("/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    f.console.telemetry.link("model", true, "loaded");
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
    t.link("L1.reader", true, "open");
    t.link("L2.reader", false, "unplugged");
    t.link("L1.controller", true, "firmware 0.1.0");
    t.incr_line("L1", "reader.framing_errors");
    t.incr_line("L2", "reader.framing_errors");
    t.incr_line("L2", "reader.framing_errors");
    t.seen("L1.reader");
    t.set_light("L1", Some("amber"));
    let page = f.get("/devices", Some(&tech)).await.body;
    let row = |device: &str| {
        let start = page
            .find(&format!("data-device=\"{device}\""))
            .unwrap_or_else(|| panic!("{device} in {page}"));
        let end = page[start..]
            .find("</tr>")
            .map_or(page.len(), |e| start + e);
        page[start..end].to_owned()
    };
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
        t.last_seen("L1.reader").expect("seen")
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
        .send(
            "POST",
            "/model/swap",
            Some(&cookie),
            Some("csrf=stale&dir=/tmp"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A folder whose manifest disagrees with its graph is refused, saying what differs.
    let bad = model_copy(&f.dir.join("bad-model"), |m| {
        m["input"]["height"] = 80.into()
    });
    let r = f
        .send(
            "POST",
            "/model/swap",
            Some(&cookie),
            Some(&format!("csrf={csrf}&dir={}", bad.display())),
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
    let screener = f.console.screener.as_ref().expect("screener");
    assert_eq!(screener.model_info().version, "0.1.0");

    // A good one swaps, between parcels, and the page shows it.
    let good = model_copy(&f.dir.join("good-model"), |m| m["version"] = "0.1.1".into());
    let r = f
        .send(
            "POST",
            "/model/swap",
            Some(&cookie),
            Some(&format!("csrf={csrf}&dir={}", good.display())),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Model swapped"), "{}", r.body);
    assert!(r.body.contains("screenline-ref 0.1.1"), "{}", r.body);
    assert_eq!(screener.model_info().version, "0.1.1");
    assert_eq!(f.console.telemetry.get("model.swaps"), 1);
    assert_eq!(f.console.telemetry.get("model.swaps_refused"), 1);

    let store = f.console.store.as_ref().expect("store");
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
