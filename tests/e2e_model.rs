//! `screenline model eval` from the real binary on freshly generated held-out sets: the
//! committed models, through the line's own decode, preprocessing and inference, meet their
//! targets — the classifier (screenline-ref-0.1) on small pseudo-colour scans (top-1 ≥ 95 %,
//! counterfeit AUROC ≥ 0.95), the detector (screenline-ref-0.2) on the 6550's dual-energy
//! pairs (also mAP@0.5 ≥ 0.80, counterfeit-item recall ≥ 0.90 at a genuine-item false-alarm
//! rate ≤ 2 %), while on the 100100, which it does not meet yet, it keeps the figures it
//! reaches — and a bad dataset is refused with the line that is wrong.

mod common;

use common::TempDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Training uses dataset seeds 1 (train) and 2 (held-out) and render seeds
/// 9 000 000–9 000 039 (models/train/train.py); this one is in none of them.
const HELD_OUT_SEED: &str = "20261125";
/// 20 images per category on average: enough that one category cannot hide.
const COUNT: &str = "320";

fn screenline(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_screenline"))
        .args(args)
        .args(paths)
        .output()
        .expect("run screenline")
}

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.1")
}

/// The figures a detector must reach on a profile's held-out scans.
struct Targets {
    top1: f64,
    auroc: f64,
    map50: f64,
    counterfeit_item_recall: f64,
    genuine_item_false_alarms: f64,
}

/// The targets, which the 6550 meets.
const TARGETS: Targets = Targets {
    top1: 0.95,
    auroc: 0.95,
    map50: 0.80,
    counterfeit_item_recall: 0.90,
    genuine_item_false_alarms: 0.02,
};

/// The 100100 does not meet the targets yet (0.2.0 on this set: top-1 0.82, AUROC 1.00,
/// mAP@0.5 0.79, counterfeit-item recall 0.71, no genuine-item false alarm; the model card
/// says why). Until a model does, this guards what 0.2.0 reaches against regressions.
const NOT_YET_AT_TARGET: Targets = Targets {
    top1: 0.75,
    auroc: 0.95,
    map50: 0.70,
    counterfeit_item_recall: 0.60,
    genuine_item_false_alarms: 0.02,
};

/// Held-out seeds of the detector's check: training used 11, 12, 13 and the recipe's own
/// held-out sets 21, 22, 23 (models/train/train_detector.py); these are in none of them.
const DETECTOR_SEEDS: [(&str, &str, Targets); 2] = [
    ("6550", "20261204", TARGETS),
    ("100100", "20261205", NOT_YET_AT_TARGET),
];
/// Scans per profile: a few seconds to render and screen each.
const DETECTOR_COUNT: &str = "120";

#[test]
fn committed_model_meets_targets_on_a_held_out_set() {
    let dir = TempDir::new("model-eval");
    let data = dir.path().join("held-out");
    let out = generate(&data, COUNT, HELD_OUT_SEED, None);
    // stderr is a pipe here, not a terminal: the progress bar must stay silent.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains("generating"),
        "{stderr}"
    );

    let plot = dir.path().join("confusion.png");
    let out = screenline(
        &["model", "eval", "--json", "--plot"],
        &[&plot, &model_dir(), &data],
    );
    let (report, stdout) = json_report(&out);
    let top1 = report["top1_accuracy"].as_f64().expect("top1_accuracy");
    let auroc = report["counterfeit_auroc"]
        .as_f64()
        .expect("counterfeit_auroc");
    eprintln!("held-out seed {HELD_OUT_SEED}, n={COUNT}: top-1 {top1:.4}, AUROC {auroc:.4}");
    assert_eq!(report["n"], 320);
    assert!(top1 >= 0.95, "top-1 accuracy {top1} < 0.95: {stdout}");
    assert!(auroc >= 0.95, "counterfeit AUROC {auroc} < 0.95: {stdout}");
    assert_eq!(report["model"]["name"], "screenline-ref");
    let confusion = report["confusion"].as_array().expect("confusion");
    assert_eq!(confusion.len(), 16);
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter())
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert_eq!(total, 320);
    let per_category = report["per_category"].as_array().expect("per_category");
    assert_eq!(per_category.len(), 16);
    for c in per_category {
        assert!(c["support"].as_u64().expect("support") > 0, "{c}");
    }
    let png = image::open(&plot).expect("the plot is a PNG");
    assert!(png.width() > 700 && png.height() > 700);

    // The text report says the same numbers for people.
    let out = screenline(&["model", "eval"], &[&model_dir(), &data]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "top-1 category accuracy:      {:.2}%",
            top1 * 100.0
        )),
        "{text}"
    );
    assert!(text.contains("confusion matrix"), "{text}");
}

#[test]
fn bad_labels_are_refused_with_the_line() {
    let dir = TempDir::new("model-eval-bad");
    let data = dir.path().join("bad");
    generate(&data, "3", HELD_OUT_SEED, None);
    let labels = data.join("labels.csv");
    let mut text = std::fs::read_to_string(&labels).expect("labels");
    text.push_str("images/000000.png,shoes,0\n");
    std::fs::write(&labels, &text).expect("write labels");
    eval_refuses(&data, "labels.csv line 5: unknown category \"shoes\"");

    // A row naming a missing image fails on that row.
    let text = text.replace("images/000000.png,shoes,0\n", "images/missing.png,food,1\n");
    std::fs::write(&labels, text).expect("write labels");
    eval_refuses(&data, "line 5: image images/missing.png");
}

/// The one JSON object a successful `model eval --json` printed, and its text.
fn json_report(out: &Output) -> (Value, String) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(stdout.trim()).expect("one JSON object");
    (report, stdout)
}

/// `screenline model eval` of `data` fails, saying `why`.
fn eval_refuses(data: &std::path::Path, why: &str) {
    let out = screenline(&["model", "eval"], &[model_dir().as_path(), data]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(why), "{stderr}");
}

/// `screenline dataset generate` of `count` images with `seed` into `data`, of `scanner`
/// (the small pseudo-colour scans without one); it must succeed.
fn generate(
    data: &std::path::Path,
    count: &str,
    seed: &str,
    scanner: Option<&str>,
) -> std::process::Output {
    let mut args = vec!["dataset", "generate", "--count", count, "--seed", seed];
    if let Some(s) = scanner {
        args.extend(["--scanner", s]);
    }
    args.push("--out");
    let out = screenline(&args, &[data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_detector_meets_the_targets_on_the_6550_and_holds_its_figures_on_the_100100() {
    let dir = TempDir::new("model-eval-detector");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.2");
    for (profile, seed, want) in DETECTOR_SEEDS {
        let data = dir.path().join(profile);
        generate(&data, DETECTOR_COUNT, seed, Some(profile));
        assert!(data.join("boxes.csv").is_file());
        let drawn = dir.path().join(format!("drawn-{profile}"));
        let out = screenline(
            &["model", "eval", "--json", "--draw-count", "3", "--draw"],
            &[&drawn, &model, &data],
        );
        let (r, stdout) = json_report(&out);
        let figure = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {stdout}"));
        let (top1, auroc, map50) = (
            figure("top1_accuracy"),
            figure("counterfeit_auroc"),
            figure("map50"),
        );
        let (recall, false_alarms) = (
            figure("counterfeit_item_recall"),
            figure("genuine_item_false_alarm_rate"),
        );
        eprintln!(
            "{profile}, seed {seed}, n={DETECTOR_COUNT}: top-1 {top1:.4}, AUROC {auroc:.4}, mAP@0.5 {map50:.4}, \
             counterfeit-item recall {recall:.4}, genuine-item false alarms {false_alarms:.4}"
        );
        assert!(top1 >= want.top1, "{profile}: top-1 {top1}");
        assert!(auroc >= want.auroc, "{profile}: AUROC {auroc}");
        assert!(map50 >= want.map50, "{profile}: mAP@0.5 {map50}");
        assert!(
            recall >= want.counterfeit_item_recall,
            "{profile}: counterfeit-item recall {recall}"
        );
        assert!(
            false_alarms <= want.genuine_item_false_alarms,
            "{profile}: genuine-item false alarms {false_alarms}"
        );
        assert_eq!(r["model"]["version"], "0.2.0");
        // The drawings: the scans at their own size, with labelled and found boxes.
        for k in 0..3 {
            let png = image::open(drawn.join(format!("{k:03}.png"))).expect("a drawn scan");
            assert!(png.width() >= 800, "{profile}: drawn at the scan's size");
        }
    }
}
