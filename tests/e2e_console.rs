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
        "!document.getElementById('xray') || document.getElementById('xray').complete",
        long,
        "the X-ray image",
    );
    page.click("#xray");
    page.screenshot("03-parcel-zoomed");
    page.click("#xray");
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

    drop(page);
    drop(browser);
    assert!(
        demo.interrupt(Duration::from_secs(30)),
        "demo stops cleanly on Ctrl-C"
    );
}
