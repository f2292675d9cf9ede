//! `/metrics` of a running appliance, judged by Prometheus' own tool: a real line (the
//! firmware logic on pseudo-terminals, a real drop folder, a real Mosquitto) screens a
//! parcel, and `promtool check metrics` lints the console's scrape; `promtool check rules`
//! checks `docs/alerts.yml`, whose every metric must be one the scrape declares.
//!
//! `promtool` comes with Debian's `prometheus` package (tests/setup.sh installs it).

mod common;

use common::rig::Rig;
use common::*;
use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `promtool args…` with `stdin`.
fn promtool(args: &[&str], stdin: &str) -> Output {
    run_with_input(
        Command::new("promtool").args(args),
        stdin.as_bytes(),
        "Debian's `prometheus` package; tests/setup.sh installs it",
    )
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The metric names a PromQL file mentions (`screenline_…`).
fn metrics_named_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("screenline_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

#[test]
fn a_running_appliances_metrics_pass_promtool_and_the_alerts_name_only_them() {
    let site = Site::start("metrics");
    let (dir, port) = (&site.dir, site.port);
    let status = site.sub("screenline/v1/T1/a1/status");
    let mut rig = Rig::start(dir.path(), &dir.path().join("data"), port, &[]);
    status.wait_state(Duration::from_secs(30), "online");
    rig.line.parcel("SF1000000000001", true, 11);
    rig.wait_left(1, Duration::from_secs(30));
    let console = rig.console;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(console, "screenline_feed_reports_acked_total") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the flagged report was never acknowledged\n{}",
            rig.app.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let scrape = http_get(console, "/metrics");

    let lint = promtool(&["check", "metrics"], &scrape);
    assert!(
        lint.status.success() && said(&lint).trim().is_empty(),
        "promtool check metrics: {}\n{scrape}",
        said(&lint)
    );
    // Counters are typed `counter` and named `…_total`; nothing else is.
    let mut declared = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            declared.insert(name.to_owned());
        }
    }
    for want in [
        "screenline_parcels_screened_total 1",
        "screenline_parcel_decisions_total{decision=\"flag\"} 1",
        "screenline_parcel_reasons_total{reason=\"counterfeit_suspected\"} 1",
        "screenline_controller_parcel_outcomes_total{line=\"L1\",outcome=\"diverted\"} 1",
        "screenline_feed_backlog_messages 0",
        "screenline_link_up{line=\"L1\",device=\"reader\"} 1",
        "screenline_link_up{line=\"L1\",device=\"controller\"} 1",
        "screenline_link_up{device=\"broker\"} 1",
        "screenline_decision_latency_seconds_count 1",
    ] {
        assert!(
            scrape.lines().any(|l| l == want),
            "{want:?} missing from\n{scrape}"
        );
    }

    assert!(
        scrape.lines().any(
            |l| l.starts_with("screenline_flagged_parcels_total{category=\"")
                && l.ends_with("\"} 1")
        ),
        "one flagged parcel, by category\n{scrape}"
    );

    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/alerts.yml");
    let checked = promtool(&["check", "rules", rules], "");
    assert!(
        checked.status.success(),
        "promtool check rules: {}",
        said(&checked)
    );
    let named = metrics_named_in(&std::fs::read_to_string(rules).expect("docs/alerts.yml"));
    assert!(named.len() >= 5, "{named:?}");
    let unknown: Vec<_> = named.difference(&declared).collect();
    assert!(
        unknown.is_empty(),
        "docs/alerts.yml names metrics the appliance does not export: {unknown:?}"
    );

    rig.app.stop_cleanly(Duration::from_secs(15));
    rig.line.shutdown();
}
