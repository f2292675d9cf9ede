//! The console in headless Chromium against the real `screenline demo`: the operator the demo
//! prints logs in, watches a flagged parcel appear live on the flagged queue (no reload),
//! opens it and confirms it after "opening"; the technician logs in, sees the line's links
//! and stack light, and finds the operator's review in the audit log; then English.
//! Screenshots of each step land in `target/test-artefacts/e2e_console/`.

mod common;

use common::browser::Browser;
use common::*;
use std::time::Duration;

#[test]
fn an_operator_confirms_a_live_flagged_parcel_and_the_audit_shows_it() {
    let dir = TempDir::new("console");
    let shots = artefacts_dir("e2e_console");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let console = format!("127.0.0.1:{port}");
    let mut demo = Appliance::demo(
        dir.path(),
        &["--rate", "1", "--seed", "5", "--console", &console],
    );
    // The demo prints the console's logins.
    let mut password = |who: &str| {
        demo.wait_log(Duration::from_secs(60), "login", |text| {
            text.split(&format!("{who} / "))
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .map(str::to_owned)
        })
    };
    let operator_pw = password("operator");
    let technician_pw = password("technician");

    let browser = Browser::launch(&shots);
    let mut page = browser.page();
    let long = Duration::from_secs(60);

    // Nothing without a login.
    page.goto(&format!("{base}/flagged"));
    page.wait_for("location.pathname === '/login'", long, "the login page");
    page.screenshot("01-login");
    let log_in = |page: &mut common::browser::Page, user: &str, password: &str| {
        page.fill("#user", user);
        page.fill("#password", password);
        page.click("form.login button");
        page.wait_for("location.pathname !== '/login'", long, "logged in");
    };
    log_in(&mut page, "operator", &operator_pw);
    page.wait_for(
        "location.pathname === '/flagged' && document.getElementById('rows')",
        long,
        "the flagged queue after login",
    );

    // A flagged parcel appears live: more rows, same page (the marker survives).
    page.eval("window.__sameLoad = true");
    page.wait_for(
        "document.getElementById('live').textContent.includes('实时')",
        long,
        "the live stream",
    );
    let before = page.eval("document.querySelectorAll('#rows tr').length");
    page.wait_for(
        &format!(
            "window.__sameLoad && document.querySelectorAll('#rows tr').length > {before} && document.querySelector('#rows tr .flag')"
        ),
        Duration::from_secs(90),
        "a flagged parcel to appear live",
    );
    page.screenshot("02-flagged-live");
    let record = page.eval("document.querySelector('#rows tr .flag').closest('tr').dataset.record");
    let record = record.as_str().expect("record id").to_owned();

    // Open it, confirm it.
    page.goto(&format!("{base}/parcel/{record}"));
    page.wait_for("document.getElementById('review')", long, "the parcel page");
    page.wait_for(
        "!document.getElementById('xray') || document.getElementById('xray').dataset.painted",
        long,
        "the X-ray image in the viewer",
    );
    page.press("+");
    page.screenshot("03-parcel-zoomed");
    page.press("r");
    page.fill("#note", "开箱：6 双同款运动鞋，无吊牌");
    page.click("#confirm");
    page.wait_for(
        "document.getElementById('saved') && document.querySelector('#reviews [data-finding=confirmed]')",
        long,
        "the review to be recorded",
    );
    page.screenshot("04-reviewed");

    // The audit log is the technician's: the operator is sent back.
    page.goto(&format!("{base}/audit"));
    page.wait_for(
        "!document.getElementById('audit')",
        long,
        "no audit log for an operator",
    );
    page.click("form[action='/logout'] button");
    page.wait_for("location.pathname === '/login'", long, "logged out");
    log_in(&mut page, "technician", &technician_pw);

    // The line page: links up, and the stack light as the controller reports it (green).
    page.goto(&format!("{base}/"));
    page.wait_for(
        "document.querySelector('#links [data-light] .lamp.green')",
        long,
        "a green stack light on the line page",
    );
    page.screenshot("05-line");

    // The audit log shows the operator's review.
    page.goto(&format!("{base}/audit"));
    let row = format!(
        "[...document.querySelectorAll('#audit tr')].some(tr => tr.textContent.includes('review.confirmed') && tr.textContent.includes('{record}') && tr.textContent.includes('user:operator'))"
    );
    page.wait_for(&row, long, "the review in the audit log");
    page.screenshot("06-audit");

    // And in English.
    page.click("#lang");
    page.wait_for("document.documentElement.lang === 'en'", long, "English");
    page.wait_for(&row, long, "the audit log in English");
    page.screenshot("07-audit-en");

    drop(browser);
    demo.stop_cleanly(Duration::from_secs(30));
}

/// The demo started for an attack: its console's port, its process id, and the operator's
/// password (printed in its banner).
struct Target {
    demo: Appliance,
    port: u16,
    operator_pw: String,
}

fn target(dir: &TempDir) -> Target {
    let port = free_port();
    let mut demo = Appliance::demo(
        dir.path(),
        &[
            "--rate",
            "1",
            "--seed",
            "5",
            "--console",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let operator_pw = demo.wait_log(Duration::from_secs(60), "login", |text| {
        text.split("operator / ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    });
    Target {
        demo,
        port,
        operator_pw,
    }
}

impl Target {
    fn stop(mut self) {
        self.demo.stop_cleanly(Duration::from_secs(30));
    }

    /// Logs the operator in from `from` within `bound_secs` (see `login_within`); prints how
    /// long it took, `when`.
    async fn operator_gets_in(&self, from: std::net::Ipv4Addr, bound_secs: u64, when: &str) {
        let bound = Duration::from_secs(bound_secs);
        let took = login_within(from, self.port, &self.operator_pw, bound).await;
        println!("the operator got in {took:?} {when}");
    }

    /// A burst of the operator's name (see `burst`) from `sources`: at most `allowed(seconds it
    /// lasted)` guesses are checked, and the demo's peak RSS stays under 300 MB.
    async fn bounded_burst(
        &self,
        sources: &[std::net::Ipv4Addr],
        allowed: fn(f64) -> usize,
        what: &str,
    ) {
        let start = std::time::Instant::now();
        let (checked, throttled) = burst(self.port, sources, |_| "operator".into()).await;
        let lasted = start.elapsed().as_secs_f64();
        let peak = peak_mb(self.demo.proc.0.id());
        println!(
            "{what}: {checked} checked, {throttled} throttled in {lasted:.1} s; peak RSS {peak:.0} MB"
        );
        let allowed = allowed(lasted);
        assert!(
            checked <= allowed,
            "{checked} of {} guesses {what} were checked in {lasted:.1} s",
            sources.len()
        );
        assert!(peak < 300.0, "peak RSS {peak:.0} MB");
    }
}

/// One HTTP/1.1 exchange from source address `from` (any 127.0.0.x on Linux loopback):
/// the status, the headers (lower-case names) and the body.
async fn http(
    from: std::net::Ipv4Addr,
    port: u16,
    request: &str,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind the source address");
    let mut s = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn login_request(port: u16, user: &str, password: &str) -> String {
    let body = format!("user={user}&password={password}&next=/");
    format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Peak resident memory of a process so far (VmHWM), in MB.
fn peak_mb(pid: u32) -> f64 {
    peak_kib(pid) as f64 / 1024.0
}

/// Logs `user` in from `from`, coming back when told to (Retry-After), until it works or
/// `bound` has passed; how long it took.
async fn login_within(
    from: std::net::Ipv4Addr,
    port: u16,
    password: &str,
    bound: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let (status, headers, body) =
            http(from, port, &login_request(port, "operator", password)).await;
        if status == 303 {
            return start.elapsed();
        }
        assert_eq!(
            status, 429,
            "only a wait may stand between the user and the console: {body}"
        );
        let wait: u64 = header(&headers, "retry-after")
            .and_then(|v| v.parse().ok())
            .expect("a 429 says when to come back");
        assert!(
            start.elapsed() + Duration::from_secs(wait) <= bound,
            "told to wait {wait} s more after {:?}: more than {bound:?} in all",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Concurrent wrong passwords, one from each of `sources` for the name `name(i)`: how many were answered 401 (checked) and
/// 429 (throttled); every answer is one of the two.
async fn burst(
    port: u16,
    sources: &[std::net::Ipv4Addr],
    name: fn(usize) -> String,
) -> (usize, usize) {
    let tasks: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let req = login_request(port, &name(i), &format!("wrong-guess-{i:04}"));
            let from = *from;
            tokio::spawn(async move { http(from, port, &req).await.0 })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("request task"));
    }
    assert!(
        codes.iter().all(|c| *c == 401 || *c == 429),
        "every guess is refused: {codes:?}"
    );
    (
        codes.iter().filter(|c| **c == 401).count(),
        codes.iter().filter(|c| **c == 429).count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_bursts_keep_memory_flat_and_never_keep_the_user_out() {
    let dir = TempDir::new("console-burst");
    let t = target(&dir);
    let pid = t.demo.proc.0.id();
    let home = std::net::Ipv4Addr::new(127, 0, 0, 1);
    // The operator has logged in from the station before.
    login_within(home, t.port, &t.operator_pw, Duration::from_secs(5)).await;
    println!("peak RSS before the bursts {:.0} MB", peak_mb(pid));

    // 200 at once from one address: only the free few are checked at all.
    let one = vec![std::net::Ipv4Addr::new(127, 0, 0, 2); 200];
    // 3 free, then waits of 1, 2, 4 … s: in a burst of d seconds, 3 + log2(d + 1) at most.
    let allowed = |lasted: f64| 3 + (lasted + 1.0).log2().floor() as usize;
    t.bounded_burst(&one, allowed, "from one address").await;
    t.operator_gets_in(home, 10, "after the one-address burst")
        .await;

    // 200 at once from 200 addresses: the name takes a few guesses, whatever the spread.
    let many: Vec<_> = (10..210)
        .map(|i| std::net::Ipv4Addr::new(127, 0, 0, i))
        .collect();
    // The name's 5 guesses (less what the first burst took), and one more per 12 s.
    let allowed = |lasted: f64| 5 + (lasted / 12.0).ceil() as usize;
    t.bounded_burst(&many, allowed, "from 200 addresses").await;
    // The operator at the station gets straight in; at a new address, after a bounded wait.
    t.operator_gets_in(home, 10, "at the station after the spread burst")
        .await;
    let new_place = std::net::Ipv4Addr::new(127, 0, 0, 250);
    t.operator_gets_in(new_place, 40, "from a new address after the spread burst")
        .await;

    // The most password checks an attacker can force: 200 names (each with guesses left)
    // from 200 fresh addresses. They queue for the few checks; memory stays where it was.
    let fresh: Vec<_> = (10..210)
        .map(|i| std::net::Ipv4Addr::new(127, 0, 1, i))
        .collect();
    let (checked, throttled) = burst(t.port, &fresh, |i| format!("guess-{i}")).await;
    let after_names = peak_mb(pid);
    println!("200 names from 200 addresses: {checked} checked, {throttled} refused; peak RSS {after_names:.0} MB");
    assert!(after_names < 300.0, "peak RSS {after_names:.0} MB");
    t.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_ends_at_logout_and_a_rebound_host_gets_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("console-stream");
    let t = target(&dir);
    let home = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let port = t.port;
    let (status, headers, _) =
        http(home, port, &login_request(port, "operator", &t.operator_pw)).await;
    assert_eq!(status, 303);
    let cookie = header(&headers, "set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let get = |path: &str, host: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        )
    };
    let (_, _, page) = http(home, port, &get("/", &format!("127.0.0.1:{port}"))).await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf token")
        .to_owned();

    // A page on another site whose name now points here: refused, session or not.
    let (status, _, _) = http(
        home,
        port,
        &get("/api/status", &format!("evil.example:{port}")),
    )
    .await;
    assert_eq!(status, 421);

    // The stream delivers while the session lives…
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(get("/events", &format!("127.0.0.1:{port}")).as_bytes())
        .await
        .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("event: status") {
        assert!(
            std::time::Instant::now() < deadline,
            "no event on the stream"
        );
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("the stream answers")
            .expect("read");
        assert!(n > 0, "the stream ended while the session lived");
        seen.extend_from_slice(&buf[..n]);
    }
    // …and ends within seconds of the logout.
    let body = format!("csrf={csrf}");
    let logout = format!(
        "POST /logout HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, _) = http(home, port, &logout).await;
    assert_eq!(status, 303);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut after = Vec::new();
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return after,
                Ok(n) => after.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let after = ended.expect("the stream must end within seconds of the logout");
    let text = String::from_utf8_lossy(&after);
    // At most what was on its way at the logout, then the end of the chunked body.
    assert!(
        text.matches("event: ").count() <= 3,
        "the stream kept delivering after the logout: {text}"
    );
    t.stop();
}

#[test]
fn open_redirects_stay_on_the_console_in_a_browser() {
    let dir = TempDir::new("console-redirect");
    let shots = artefacts_dir("e2e_console_redirect");
    let t = target(&dir);
    let base = format!("http://127.0.0.1:{}", t.port);
    let host = format!("127.0.0.1:{}", t.port);
    let browser = Browser::launch(&shots);
    let mut page = browser.page();
    let long = Duration::from_secs(30);
    let here = format!("location.host === '{host}' && document.readyState === 'complete'");
    // The language switch, with the targets that once left the site.
    for back in [
        "/%09/evil.example/x",
        "/%0a/evil.example/x",
        "/%5Cevil.example/x",
        "//evil.example/x",
    ] {
        page.goto(&format!("{base}/lang?to=en&back={back}"));
        page.wait_for(
            &here,
            long,
            &format!("to stay on the console after back={back}"),
        );
        let url = page.url();
        assert!(
            url.starts_with(&base) && !url.contains("evil"),
            "{back} → {url}"
        );
    }
    // The login form's next.
    page.goto(&format!("{base}/login?next=/%09/evil.example/x"));
    page.fill("#user", "operator");
    page.fill("#password", &t.operator_pw);
    page.click("form.login button");
    page.wait_for(
        &format!("{here} && location.pathname !== '/login'"),
        long,
        "logged in, on the console",
    );
    let url = page.url();
    assert!(url.starts_with(&base) && !url.contains("evil"), "{url}");
    page.screenshot("after-login");
    drop(browser);
    t.stop();
}

/// The browser rig leaves nothing running: chromedriver and every Chromium process it started
/// are gone once the browser is dropped, here while a failing test unwinds.
#[test]
fn a_failing_browser_test_leaves_no_browser_process_behind() {
    let shots = artefacts_dir("e2e_console_cleanup");
    let unwound = std::panic::catch_unwind(|| {
        let browser = Browser::launch(&shots);
        let mut page = browser.page();
        page.goto("data:text/html,<p id=here>here</p>");
        page.wait_for(
            "document.getElementById('here')",
            Duration::from_secs(30),
            "the page",
        );
        let group = browser.process_group();
        let running = live_processes_in_group(group);
        assert!(
            running.iter().any(|(_, name)| name.contains("chrom")),
            "chromedriver's group {group} holds no browser: {running:?}"
        );
        std::panic::panic_any(group)
    })
    .expect_err("the test body panics");
    let group = *unwound
        .downcast::<u32>()
        .unwrap_or_else(|other| std::panic::resume_unwind(other));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = live_processes_in_group(group);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running in chromedriver's group {group} after the browser was dropped: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes (pid, name) of process group `group` that have not exited (zombies excluded).
fn live_processes_in_group(group: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            // "pid (name) state ppid pgrp …"; the name may hold spaces and parentheses.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let mut fields = tail.split_whitespace();
            let state = fields.next()?;
            let pgrp: u32 = fields.nth(1)?.parse().ok()?;
            (pgrp == group && state != "Z" && state != "X").then_some((pid, name))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_list_kept_from_before_still_matches_other_spellings_and_asks_to_be_sent_again() {
    use common::rig::Rig;
    let site = Site::start("console-legacy-watchlist");
    let (dir, port) = (&site.dir, site.port);
    let root = "screenline/v1/T1/a1";
    let status = site.sub(&format!("{root}/status"));
    let reports = site.sub(&format!("{root}/reports/flagged"));
    // What an older version kept: the phone hashed as the regulator wrote it, no mark.
    let data = dir.path().join("data");
    {
        let store = screenline::store::Store::open(&data).expect("store");
        let raw = store.hasher().hash("13800138000");
        let kept: screenline::screen::rules::HashedWatchlist = serde_json::from_value(
            serde_json::json!({"version": "old-1", "id_keys": [], "phone_keys": [raw], "customer_keys": []}),
        )
        .expect("an old kept list");
        store.save_watchlist(&kept).expect("keep it");
    }
    let mut rig = Rig::start(dir.path(), &data, port, &[]);
    let console_port = rig.console;
    // The alarm, in the retained status and on the console.
    let msgs = status.wait_for(
        Duration::from_secs(30),
        "the watch-list alarm in the status",
        |m| {
            m.iter().any(|(_, p)| {
                serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| {
                    v["state"] == "online"
                        && v["links"]["watchlist"]["up"] == false
                        && v["links"]["watchlist"]["detail"]
                            .as_str()
                            .is_some_and(|d| d.contains("send the list again"))
                })
            })
        },
    );
    assert!(!msgs.is_empty());
    assert_eq!(
        metric(console_port, "screenline_link_up{device=\"watchlist\"}"),
        Some(0),
        "the console shows the alarm"
    );
    // It still matches: the listed phone written the way waybills write it.
    let record = valid_waybill("SF3000000000001").replace("13800138000", "+86 138-0013-8000");
    rig.line.read(&record);
    rig.line.place(400);
    let msgs = reports.wait_for(Duration::from_secs(30), "the flagged report", |m| {
        !m.is_empty()
    });
    assert!(msgs[0].1.contains("watchlisted_sender"), "{}", msgs[0].1);
    rig.app.stop_cleanly(Duration::from_secs(15));
    rig.line.shutdown();
}
