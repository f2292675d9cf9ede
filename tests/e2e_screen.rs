//! `screenline screen` on crafted parcels: every rule's reason shows, with words in both
//! languages, from the real binary, the real model and the real rule data; and the
//! split-shipment window lives in the store, so it holds across separate runs (restarts).

mod common;

use common::{run_ok, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A resident ID with a correct GB 11643 check character.
fn resident_id(first17: &str) -> String {
    let check = screenline::line::waybill::resident_id_check(first17).expect("17 digits");
    format!("{first17}{check}")
}

fn waybill(no: &str, id: &str, category: &str, goods: &str, value: f64, qty: u32) -> Value {
    json!({
        "waybill": no,
        "sender": {"name": "王五", "id_type": "resident_id", "id_number": id,
                   "phone": "13712345678", "address": "广东省深圳市南山区某某路3号"},
        "recipient": {"name": "赵六", "phone": "13900139000", "address": "上海市长宁区某某路2号"},
        "declared": {"goods": goods, "category": category, "value_cny": value, "quantity": qty},
    })
}

struct Bench {
    dir: TempDir,
    config: PathBuf,
    /// Generated images by (category, counterfeit).
    images: Vec<(String, bool, PathBuf)>,
}

impl Bench {
    fn new() -> Bench {
        let dir = TempDir::new("screen");
        let data = dir.path().join("dataset");
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_screenline"))
                .args([
                    "dataset", "generate", "--count", "48", "--seed", "20261123", "--out",
                ])
                .arg(&data),
        );
        let labels = std::fs::read_to_string(data.join("labels.csv")).expect("labels");
        let images = labels
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split(',');
                let (img, cat, cf) = (f.next()?, f.next()?, f.next()?);
                Some((cat.to_owned(), cf == "1", data.join(img)))
            })
            .collect();
        let watchlist = dir.path().join("watchlist.json");
        std::fs::write(
            &watchlist,
            json!({"version": "2026-11-01", "id_numbers": [resident_id("44030519800101001")]})
                .to_string(),
        )
        .expect("watch-list");
        let config = dir.path().join("screenline.toml");
        std::fs::write(
            &config,
            format!(
                r#"
site_id = "T1"
appliance_id = "a1"
data_dir = "{data}"
[rules]
watchlist_file = "{watchlist}"
split_min_parcels = 3
split_window_hours = 24
[[lines]]
id = "L1"
reader_port = "/dev/null"
controller_port = "/dev/null"
xray_dir = "{data}"
"#,
                data = dir.path().display(),
                watchlist = watchlist.display(),
            ),
        )
        .expect("config");
        Bench {
            dir,
            config,
            images,
        }
    }

    fn image(&self, category: &str, counterfeit: bool) -> &Path {
        self.images
            .iter()
            .find(|(c, f, _)| c == category && *f == counterfeit)
            .map(|(_, _, p)| p.as_path())
            .unwrap_or_else(|| panic!("no {category} image (counterfeit {counterfeit}) generated"))
    }

    /// Runs `screenline screen`; `data` keeps split-shipment history between runs.
    fn screen(&self, waybill: Option<&Value>, image: Option<&Path>, data: Option<&Path>) -> Value {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_screenline"));
        cmd.arg("screen").arg("--config").arg(&self.config);
        if let Some(w) = waybill {
            let path = self.dir.path().join(format!(
                "waybill-{}.json",
                w["waybill"].as_str().unwrap_or("x")
            ));
            std::fs::write(&path, w.to_string()).expect("waybill file");
            cmd.arg("--waybill").arg(path);
        }
        if let Some(i) = image {
            cmd.arg("--image").arg(i);
        }
        if let Some(d) = data {
            cmd.arg("--data").arg(d);
        }
        let out = cmd.output().expect("run screenline screen");
        assert!(
            out.status.success(),
            "screenline screen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON decision")
    }
}

fn codes(decision: &Value) -> Vec<String> {
    decision["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| {
            let zh = r["zh"].as_str().unwrap_or("");
            let en = r["en"].as_str().unwrap_or("");
            assert!(
                !zh.is_empty() && !en.is_empty(),
                "words in both languages: {r}"
            );
            assert!(!zh.is_ascii(), "the zh words are Chinese: {zh}");
            r["code"].as_str().expect("code").to_owned()
        })
        .collect()
}

#[test]
fn every_reason_shows_on_a_crafted_parcel() {
    let b = Bench::new();
    let clean_id = resident_id("11010519491231002");
    let phones = b.image("electronics", false);

    // A parcel with nothing wrong is cleared, with no reason.
    let clear = b.screen(
        Some(&waybill(
            "SF1000000000001",
            &clean_id,
            "electronics",
            "蓝牙耳机",
            399.0,
            1,
        )),
        Some(phones),
        None,
    );
    assert_eq!(clear["decision"], "clear", "{clear:#}");
    assert!(codes(&clear).is_empty());
    let top = clear["scores"]["category"]
        .as_object()
        .expect("scores")
        .iter()
        .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).expect("number"))
        .map(|(k, _)| k.clone());
    assert_eq!(top.as_deref(), Some("electronics"));

    let cases: Vec<(&str, &str, Value, Option<&Path>)> = vec![
        (
            "real_name_missing",
            "flag",
            json!({"waybill": "SF1000000000002"}),
            Some(phones),
        ),
        (
            "real_name_invalid",
            "flag",
            waybill(
                "SF1000000000003",
                "110105194912310021",
                "electronics",
                "蓝牙耳机",
                399.0,
                1,
            ),
            Some(phones),
        ),
        (
            "watchlisted_sender",
            "flag",
            waybill(
                "SF1000000000004",
                &resident_id("44030519800101001"),
                "electronics",
                "蓝牙耳机",
                399.0,
                1,
            ),
            Some(phones),
        ),
        (
            "declared_mismatch",
            "flag",
            waybill("SF1000000000005", &clean_id, "", "儿童图书", 40.0, 1),
            Some(phones),
        ),
        (
            "value_implausible",
            "clear",
            waybill(
                "SF1000000000006",
                &clean_id,
                "electronics",
                "蓝牙耳机",
                20.0,
                2,
            ),
            Some(phones),
        ),
        (
            "image_unreadable",
            "manual",
            waybill(
                "SF1000000000007",
                &clean_id,
                "electronics",
                "蓝牙耳机",
                399.0,
                1,
            ),
            Some(b.config.as_path()),
        ),
        (
            "no_image",
            "manual",
            waybill(
                "SF1000000000008",
                &clean_id,
                "electronics",
                "蓝牙耳机",
                399.0,
                1,
            ),
            None,
        ),
    ];
    for (code, decision, w, image) in &cases {
        let d = b.screen(Some(w), *image, None);
        assert!(codes(&d).contains(&code.to_string()), "{code}: {d:#}");
        assert_eq!(d["decision"], *decision, "{code}: {d:#}");
    }

    // Without a read, the image alone is screened.
    let d = b.screen(None, Some(phones), None);
    assert_eq!(codes(&d), ["no_read"], "{d:#}");
    assert_eq!(d["decision"], "manual");

    // A counterfeit image, declared truthfully.
    let (cat, _, fake) = b
        .images
        .iter()
        .find(|(_, f, _)| *f)
        .expect("a counterfeit image");
    let d = b.screen(
        Some(&waybill(
            "SF1000000000009",
            &clean_id,
            cat,
            "货物",
            5000.0,
            1,
        )),
        Some(fake),
        None,
    );
    assert!(
        codes(&d).contains(&"counterfeit_suspected".to_owned()),
        "{d:#}"
    );
    assert_eq!(d["decision"], "flag");
}

#[test]
fn split_shipments_are_counted_across_restarts() {
    let b = Bench::new();
    let store = b.dir.path().join("store");
    let sender = resident_id("32010219900307001");
    let powerbank = b.image("electronics", false);
    // Three parcels of one sender and category, each screened by a new process that opens the
    // store afresh: the third is a split shipment.
    for (i, expect_split) in [(1, false), (2, false), (3, true)] {
        let w = waybill(
            &format!("SF20000000000{i:02}"),
            &sender,
            "electronics",
            "充电宝",
            199.0,
            1,
        );
        let d = b.screen(Some(&w), Some(powerbank), Some(&store));
        let split = codes(&d).contains(&"split_shipment".to_owned());
        assert_eq!(split, expect_split, "parcel {i}: {d:#}");
        if expect_split {
            assert_eq!(d["decision"], "flag");
            let words = d["reasons"].to_string();
            assert!(words.contains("sent 3 parcels of"), "{words}");
        }
    }
    // Another sender is not affected by that history.
    let other = waybill(
        "SF2000000000009",
        &resident_id("32010219900307002"),
        "electronics",
        "充电宝",
        199.0,
        1,
    );
    let d = b.screen(Some(&other), Some(powerbank), Some(&store));
    assert!(!codes(&d).contains(&"split_shipment".to_owned()), "{d:#}");
}
