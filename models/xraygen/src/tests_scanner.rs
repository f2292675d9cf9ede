//! Tests of the scanner profiles, [`render_scan`] and [`write_dataset_with`]: determinism,
//! `Small` unchanged, documented sizes, lots and boxes, labels, the detectors' physics, and
//! the dataset layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;
use physics::{Canvas, Frame, METAL, MIXED, ORGANIC};

const LARGE: [Scanner; 2] = [Scanner::S6550, Scanner::S100100];

/// Rows at the top of every scan that are always air: the `Small` carton leaves at least
/// about 5 px; the large profiles leave at least 40 mm of belt before the carton.
fn air_rows(scanner: Scanner) -> u32 {
    match scanner {
        Scanner::Small => 3,
        _ => 30,
    }
}

/// A fixed sample of scans per profile (rendered once, shared by the tests below).
fn sample() -> &'static [(ParcelSpec, ScanWithItems)] {
    static SAMPLE: OnceLock<Vec<(ParcelSpec, ScanWithItems)>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let mut out = Vec::new();
        for scanner in Scanner::all() {
            let n = if *scanner == Scanner::Small { 64 } else { 24 };
            for i in 0..n {
                let seed = 31_000 + i;
                // Every category, both kinds, and one index past the end.
                let spec = ParcelSpec {
                    category: if i == 5 { 99 } else { (i as usize * 7) % 16 },
                    counterfeit: i % 2 == 1,
                };
                out.push((spec, render_scan(*scanner, spec, seed)));
            }
        }
        out
    })
}

fn of(scanner: Scanner) -> impl Iterator<Item = &'static (ParcelSpec, ScanWithItems)> {
    sample().iter().filter(move |(_, s)| s.scanner == scanner)
}

type Bytes = (Vec<u8>, Vec<u16>, Vec<u16>, Vec<Item>);

fn bytes(s: &ScanWithItems) -> Bytes {
    (
        s.rgb.as_raw().clone(),
        s.high.as_raw().clone(),
        s.low.as_raw().clone(),
        s.items.clone(),
    )
}

#[test]
fn scanner_keys_round_trip() {
    assert_eq!(
        Scanner::all(),
        &[Scanner::Small, Scanner::S6550, Scanner::S100100]
    );
    for s in Scanner::all() {
        assert_eq!(Scanner::from_key(s.key()), Some(*s));
        assert_eq!(s.to_string(), s.key());
    }
    assert_eq!(Scanner::from_key("6550"), Some(Scanner::S6550));
    assert_eq!(Scanner::from_key("100100"), Some(Scanner::S100100));
    assert_eq!(Scanner::from_key("small"), Some(Scanner::Small));
    for bad in ["", "SMALL", "6550 ", "S6550", "100", "large"] {
        assert_eq!(Scanner::from_key(bad), None, "{bad:?}");
    }
    assert_eq!(Scanner::default(), Scanner::Small);
    assert!(!Scanner::Small.writes_pairs());
    assert!(LARGE.iter().all(|s| s.writes_pairs()));
}

#[test]
fn small_render_scan_gives_the_images_of_render() {
    for i in 0..40u64 {
        let spec = ParcelSpec {
            category: (i % 17) as usize,
            counterfeit: i % 3 == 0,
        };
        let seed = 500 + i;
        let old = render(spec, seed);
        let new = render_scan(Scanner::Small, spec, seed);
        assert_eq!(new.scanner, Scanner::Small);
        assert_eq!(new.rgb.as_raw(), old.rgb.as_raw(), "rgb {i}");
        assert_eq!(new.high.as_raw(), old.high.as_raw(), "high {i}");
        assert_eq!(new.low.as_raw(), old.low.as_raw(), "low {i}");
        let n = new.items.len();
        if spec.counterfeit {
            assert_eq!(n, 1, "a counterfeit grid is one lot");
        } else {
            assert!((1..=3).contains(&n), "{n} retail boxes");
        }
    }
}

fn fnv(h: &mut u64, bytes: impl Iterator<Item = u8>) {
    for b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// `render` gives the very bytes it gave before the scanner profiles were added (a hash of
/// 32 scans taken from the code before that change). Pinned to x86-64 Linux, where it was
/// taken: the float functions (exp, ln, sin) come from the platform's maths library.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn small_render_is_unchanged_byte_for_byte() {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for i in 0..32u64 {
        let spec = ParcelSpec {
            category: (i % 16) as usize,
            counterfeit: i % 3 == 0,
        };
        let s = render(spec, 9_000 + i);
        fnv(&mut h, s.rgb.as_raw().iter().copied());
        fnv(&mut h, s.high.as_raw().iter().flat_map(|v| v.to_le_bytes()));
        fnv(&mut h, s.low.as_raw().iter().flat_map(|v| v.to_le_bytes()));
    }
    assert_eq!(h, 0x6341_6ca2_0fa8_e15f);
}

#[test]
fn every_profile_is_deterministic_by_seed() {
    for scanner in Scanner::all() {
        for (spec, seed) in [
            (
                ParcelSpec {
                    category: 2,
                    counterfeit: true,
                },
                11,
            ),
            (
                ParcelSpec {
                    category: 12,
                    counterfeit: false,
                },
                12,
            ),
        ] {
            let a = render_scan(*scanner, spec, seed);
            let b = render_scan(*scanner, spec, seed);
            assert_eq!(bytes(&a), bytes(&b), "{scanner} seed {seed}");
            assert_eq!((a.category, a.counterfeit), (b.category, b.counterfeit));
        }
        let spec = ParcelSpec {
            category: 6,
            counterfeit: false,
        };
        assert_ne!(
            bytes(&render_scan(*scanner, spec, 1)),
            bytes(&render_scan(*scanner, spec, 2)),
            "{scanner}"
        );
    }
    // The profiles draw different scenes from the same seed.
    let spec = ParcelSpec {
        category: 3,
        counterfeit: false,
    };
    assert_ne!(
        render_scan(Scanner::S6550, spec, 5).items,
        render_scan(Scanner::S100100, spec, 5).items
    );
}

#[test]
fn sizes_are_in_the_documented_ranges() {
    for (_, s) in sample() {
        let d = s.scanner.profile().detector;
        let (w, h) = s.high.dimensions();
        assert!(
            (d.width_px.0..=d.width_px.1).contains(&w),
            "{}: width {w}",
            s.scanner
        );
        assert!(
            (d.height_px.0..=d.height_px.1).contains(&h),
            "{}: height {h}",
            s.scanner
        );
        assert_eq!(s.low.dimensions(), (w, h));
        assert_eq!(s.rgb.dimensions(), (w, h));
    }
    // The documented widths: about 800 and 1250 px across the belt.
    assert_eq!(Scanner::S6550.profile().detector.width_px, (812, 812));
    assert_eq!(Scanner::S100100.profile().detector.width_px, (1250, 1250));
}

#[test]
fn boxes_are_inside_the_image_and_not_empty() {
    for (_, s) in sample() {
        let (w, h) = s.high.dimensions();
        assert!(!s.items.is_empty());
        for it in &s.items {
            assert!(
                it.x0 < it.x1 && it.y0 < it.y1,
                "{}: empty box {it:?}",
                s.scanner
            );
            assert!(
                it.x1 <= w && it.y1 <= h,
                "{}: {it:?} outside {w}x{h}",
                s.scanner
            );
            assert_eq!(
                it.area(),
                u64::from(it.x1 - it.x0) * u64::from(it.y1 - it.y0)
            );
        }
    }
}

#[test]
fn lot_counts_are_in_the_profiles_ranges() {
    for scanner in Scanner::all() {
        let (lo, hi) = scanner.profile().difficulty.lots;
        let mut seen = BTreeSet::new();
        for (spec, s) in of(*scanner) {
            let n = s.items.len();
            assert!((lo..=hi).contains(&n), "{scanner}: {n} lots");
            seen.insert(n);
            if *scanner != Scanner::Small {
                let cats: BTreeSet<usize> = s.items.iter().map(|i| i.category).collect();
                assert_eq!(cats.len(), n, "{scanner}: lots of one category {spec:?}");
            }
        }
        assert!(seen.len() > 1, "{scanner}: always {seen:?} lots");
    }
}

#[test]
fn labels_follow_the_lots() {
    let mut genuine_spec_counterfeit_label = 0;
    for (spec, s) in sample() {
        let main = &s.items[0];
        let category = spec.category.min(CATEGORY_KEYS.len() - 1);
        assert_eq!(s.category, category, "{}", s.scanner);
        assert_eq!(main.category, category, "{}: main lot", s.scanner);
        assert_eq!(s.category_key(), main.category_key());
        assert_eq!(main.counterfeit, spec.counterfeit, "{}", s.scanner);
        assert_eq!(
            s.counterfeit,
            s.items.iter().any(|i| i.counterfeit),
            "{}: counterfeit iff any lot is",
            s.scanner
        );
        for other in &s.items[1..] {
            if s.scanner == Scanner::Small {
                assert!(other.area() <= main.area());
                assert_eq!(
                    (other.category, other.counterfeit),
                    (category, spec.counterfeit)
                );
            } else {
                assert!(
                    other.area() < main.area(),
                    "{}: main lot not the largest",
                    s.scanner
                );
            }
        }
        if !spec.counterfeit && s.counterfeit {
            assert_ne!(s.scanner, Scanner::Small);
            genuine_spec_counterfeit_label += 1;
        }
    }
    // Secondary lots are counterfeit sometimes (p = 0.10 each), and then so is the parcel.
    assert!(genuine_spec_counterfeit_label > 0);
}

/// `render_scan_exact` keeps `render_scan`'s layout and categories but no counterfeit
/// secondary lot: the parcel is counterfeit iff its spec says so, and a scan that had none
/// is the same bytes.
#[test]
fn exact_scans_hold_only_what_the_spec_says() {
    let (mut had_secondary, mut same) = (0, 0);
    for scanner in [Scanner::S6550, Scanner::S100100] {
        for (i, (spec, scan)) in of(scanner).enumerate() {
            let seed = 31_000 + i as u64;
            let exact = crate::render_scan_exact(scanner, *spec, seed);
            assert_eq!(exact.counterfeit, spec.counterfeit);
            assert_eq!(exact.items[0].counterfeit, spec.counterfeit);
            assert!(exact.items[1..].iter().all(|it| !it.counterfeit));
            let categories =
                |s: &ScanWithItems| s.items.iter().map(|it| it.category).collect::<Vec<_>>();
            assert_eq!(categories(&exact), categories(scan));
            if scan.items[1..].iter().any(|it| it.counterfeit) {
                had_secondary += 1;
            } else {
                assert!(
                    bytes(&exact) == bytes(scan),
                    "seed {seed}: same scene, same bytes"
                );
                same += 1;
            }
        }
    }
    assert!(had_secondary > 0 && same > 0, "{had_secondary} {same}");
}

fn mean_high(s: &ScanWithItems, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
    let mut sum = 0u64;
    for y in y0..y1 {
        for x in x0..x1 {
            sum += u64::from(s.high.get_pixel(x, y).0[0]);
        }
    }
    sum as f64 / (u64::from(x1 - x0) * u64::from(y1 - y0)) as f64
}

#[test]
fn boxes_cover_attenuated_pixels() {
    for (_, s) in sample() {
        let w = s.high.width();
        let air = mean_high(s, 0, 0, w, air_rows(s.scanner));
        assert!(air > 0.97 * 65535.0, "{}: air reads {air}", s.scanner);
        for it in &s.items {
            let inside = mean_high(s, it.x0, it.y0, it.x1, it.y1);
            assert!(
                inside < 0.98 * air,
                "{}: box {it:?} mean {inside:.0} vs air {air:.0}",
                s.scanner
            );
        }
    }
}

#[test]
fn low_energy_is_never_brighter_than_high_on_large_profiles() {
    for scanner in LARGE {
        for (_, s) in of(scanner) {
            let mut matter = (0u64, 0u64);
            for (h, l) in s.high.pixels().zip(s.low.pixels()) {
                assert!(
                    l.0[0] <= h.0[0],
                    "{scanner}: low {} > high {}",
                    l.0[0],
                    h.0[0]
                );
                if h.0[0] < 60_000 {
                    matter.0 += u64::from(h.0[0]);
                    matter.1 += u64::from(l.0[0]);
                }
            }
            // Where there is matter, low energy is attenuated clearly more.
            assert!(
                (matter.1 as f64) < 0.95 * matter.0 as f64,
                "{scanner}: {matter:?}"
            );
        }
    }
}

/// Exposes 100 × 60 mm slabs of organic, mixed and metal on a profile's detector and returns
/// (pixels across, pixels along) of the metal slab and the mean log ratio −ln(low)/−ln(high)
/// for each material.
fn slab_readings(scanner: Scanner) -> ((usize, usize), [f64; 3], f64) {
    let d = scanner.profile().detector;
    let (w, h) = (
        (400.0 / d.pitch_across_mm) as usize,
        (100.0 / d.pitch_along_mm) as usize,
    );
    let mut cv = Canvas::with_pitch(w, h, d.pitch_across_mm, d.pitch_along_mm);
    let mats = [(ORGANIC, 40.0), (MIXED, 8.0), (METAL, 3.0)];
    for (k, (m, t)) in mats.iter().enumerate() {
        cv.rect(
            &Frame::new(70.0 + 120.0 * k as f32, 50.0, 0.0),
            100.0,
            60.0,
            *m,
            *t,
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (high, low) = cv.expose_with(&d, &mut rng);
    let mut ratios = [0.0; 3];
    for (k, ratio) in ratios.iter_mut().enumerate() {
        let (cx, cy) = (70.0 + 120.0 * k as f32, 50.0);
        let (x0, x1) = (
            ((cx - 30.0) / d.pitch_across_mm) as u32,
            ((cx + 30.0) / d.pitch_across_mm) as u32,
        );
        let (y0, y1) = (
            ((cy - 15.0) / d.pitch_along_mm) as u32,
            ((cy + 15.0) / d.pitch_along_mm) as u32,
        );
        let (mut sh, mut sl) = (0.0, 0.0);
        for y in y0..y1 {
            for x in x0..x1 {
                sh += -(f64::from(high.get_pixel(x, y).0[0]) / 65535.0).ln();
                sl += -(f64::from(low.get_pixel(x, y).0[0]) / 65535.0).ln();
            }
        }
        *ratio = sl / sh;
    }
    // The metal slab's extent in pixels, and the noise of the air row at the top.
    let dark = |x: u32, y: u32| high.get_pixel(x, y).0[0] < 60_000;
    let mid_y = (50.0 / d.pitch_along_mm) as u32;
    let mid_x = (310.0 / d.pitch_across_mm) as u32;
    // Between the mixed slab (ends at 240 mm) and the canvas's edge (400 mm).
    let (from, to) = (
        (250.0 / d.pitch_across_mm) as u32,
        (395.0 / d.pitch_across_mm) as u32,
    );
    let across = (from..to).filter(|&x| dark(x, mid_y)).count();
    let along = (0..h as u32).filter(|&y| dark(mid_x, y)).count();
    let air: Vec<f64> = (0..w as u32)
        .map(|x| f64::from(high.get_pixel(x, 1).0[0]))
        .collect();
    let mean = air.iter().sum::<f64>() / air.len() as f64;
    let sd = (air.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / air.len() as f64).sqrt();
    ((across, along), ratios, sd)
}

#[test]
fn profiles_differ_as_two_vendors_machines_do() {
    let (px_a, ratio_a, noise_a) = slab_readings(Scanner::S6550);
    let (px_b, ratio_b, noise_b) = slab_readings(Scanner::S100100);
    // Pitch: a 100 mm slab covers 100 / pitch pixels across, 60 / pitch along.
    for (scanner, (across, along)) in [(Scanner::S6550, px_a), (Scanner::S100100, px_b)] {
        let d = scanner.profile().detector;
        let want = (100.0 / d.pitch_across_mm, 60.0 / d.pitch_along_mm);
        assert!(
            (across as f32 - want.0).abs() <= 2.0 && (along as f32 - want.1).abs() <= 2.0,
            "{scanner}: {across}x{along} px, want {want:?}"
        );
        // Belt direction sampled at another pitch than across it.
        assert!(
            (want.0 / 100.0 - want.1 / 60.0).abs() > 0.05,
            "{scanner}: square pixels"
        );
    }
    assert!(
        px_b.0 > px_a.0,
        "the finer machine gives objects more pixels"
    );
    // Noise: the 100100's detector is noisier.
    assert!(noise_b > 1.2 * noise_a, "noise {noise_a} vs {noise_b}");
    // Energy response: the same material reads at another ratio; the materials stay in
    // order and in the pseudo-colour bands (organic ≤ 1.75 < mixed < 2.55 < metal).
    for ratios in [ratio_a, ratio_b] {
        assert!(ratios[0] < 1.75, "organic {ratios:?}");
        assert!(ratios[1] > 1.9 && ratios[1] < 2.55, "mixed {ratios:?}");
        assert!(ratios[2] > 2.6, "metal {ratios:?}");
    }
    assert!(
        (ratio_a[2] - ratio_b[2]).abs() > 0.15,
        "{ratio_a:?} vs {ratio_b:?}"
    );
    assert!(
        (ratio_a[1] - ratio_b[1]).abs() > 0.1,
        "{ratio_a:?} vs {ratio_b:?}"
    );
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xraygen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rows(path: &Path, header: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", path.display());
    lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn read16(path: &Path) -> image::ImageBuffer<image::Luma<u16>, Vec<u16>> {
    let img = image::open(path).expect("png");
    assert_eq!(img.color(), image::ColorType::L16, "{}", path.display());
    img.to_luma16()
}

#[test]
fn dataset_of_pairs_with_boxes() {
    let dir = tmp_dir("pairs");
    let mut calls = Vec::new();
    let options = DatasetOptions {
        scanner: Scanner::S6550,
        pseudo_colour: true,
    };
    write_dataset_with(&dir, 3, 21, options, |d, t| calls.push((d, t))).expect("dataset");
    assert_eq!(calls, vec![(1, 3), (2, 3), (3, 3)]);
    let labels = rows(&dir.join("labels.csv"), "image,category,counterfeit");
    let boxes = rows(
        &dir.join("boxes.csv"),
        "image,category,counterfeit,x0,y0,x1,y1",
    );
    assert_eq!(labels.len(), 3);
    let mut by_image: BTreeMap<&str, Vec<&Vec<String>>> = BTreeMap::new();
    for b in &boxes {
        assert_eq!(b.len(), 7, "{b:?}");
        by_image.entry(&b[0]).or_default().push(b);
    }
    let labelled: BTreeSet<&str> = labels.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(labelled, by_image.keys().copied().collect::<BTreeSet<_>>());
    for (i, row) in labels.iter().enumerate() {
        assert_eq!(row.len(), 3, "{row:?}");
        assert_eq!(
            row[0],
            format!("images/{i:06}.high.png;images/{i:06}.low.png")
        );
        let s = derive_seed(21, i as u64);
        let scan = render_scan(Scanner::S6550, random_spec(s, 0.5), s);
        assert_eq!(row[1], scan.category_key());
        assert_eq!(row[2], if scan.counterfeit { "1" } else { "0" });
        let (high_name, low_name) = row[0].split_once(';').expect("pair");
        let (high, low) = (read16(&dir.join(high_name)), read16(&dir.join(low_name)));
        assert_eq!(high.dimensions(), scan.high.dimensions());
        assert_eq!(high.width(), 812);
        assert_eq!(high.as_raw(), scan.high.as_raw());
        assert_eq!(low.as_raw(), scan.low.as_raw());
        let rgb = image::open(dir.join(format!("images/{i:06}.png"))).expect("pseudo-colour");
        assert_eq!(rgb.color(), image::ColorType::Rgb8);
        assert_eq!(rgb.to_rgb8().as_raw(), scan.rgb.as_raw());
        // One boxes.csv row per lot, main lot first, the label agreeing with the lots.
        let mine = &by_image[row[0].as_str()];
        assert_eq!(mine.len(), scan.items.len());
        assert_eq!(mine[0][1], row[1]);
        let any = mine.iter().any(|b| b[2] == "1");
        assert_eq!(row[2] == "1", any);
        for (b, it) in mine.iter().zip(&scan.items) {
            let want = [
                it.category_key().to_owned(),
                u8::from(it.counterfeit).to_string(),
                it.x0.to_string(),
                it.y0.to_string(),
                it.x1.to_string(),
                it.y1.to_string(),
            ];
            assert_eq!(&b[1..], &want[..]);
        }
    }
    for tmp in ["labels.csv.tmp", "boxes.csv.tmp"] {
        assert!(!dir.join(tmp).exists(), "{tmp}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dataset_without_pseudo_colour_writes_only_the_pair() {
    let dir = tmp_dir("pairs-only");
    std::fs::create_dir_all(&dir).expect("dir");
    // A stale labels.csv from an earlier run does not survive.
    std::fs::write(dir.join("labels.csv"), "stale\n").expect("stale");
    write_dataset_with(&dir, 1, 8, Scanner::S100100, |_, _| {}).expect("dataset");
    let labels = rows(&dir.join("labels.csv"), "image,category,counterfeit");
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0][0], "images/000000.high.png;images/000000.low.png");
    let high = read16(&dir.join("images/000000.high.png"));
    let low = read16(&dir.join("images/000000.low.png"));
    assert_eq!(high.width(), 1250);
    assert_eq!(high.dimensions(), low.dimensions());
    let d = Scanner::S100100.profile().detector;
    assert!((d.height_px.0..=d.height_px.1).contains(&high.height()));
    assert!(!dir.join("images/000000.png").exists());
    let boxes = rows(
        &dir.join("boxes.csv"),
        "image,category,counterfeit,x0,y0,x1,y1",
    );
    let (lo, hi) = Scanner::S100100.profile().difficulty.lots;
    assert!((lo..=hi).contains(&boxes.len()));
    assert!(boxes.iter().all(|b| b[0] == labels[0][0]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn small_dataset_with_boxes_keeps_the_images_and_labels() {
    let (old, new) = (tmp_dir("small-old"), tmp_dir("small-new"));
    write_dataset(&old, 4, 5, |_, _| {}).expect("dataset");
    write_dataset_with(&new, 4, 5, DatasetOptions::default(), |_, _| {}).expect("dataset");
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).ok();
    assert!(read(&old, "labels.csv").is_some());
    assert_eq!(read(&old, "labels.csv"), read(&new, "labels.csv"));
    for i in 0..4 {
        let f = format!("images/{i:06}.png");
        assert!(read(&new, &f).is_some());
        assert_eq!(read(&old, &f), read(&new, &f), "{f}");
    }
    assert!(
        read(&old, "boxes.csv").is_none(),
        "write_dataset is as it was"
    );
    let labels = rows(&new.join("labels.csv"), "image,category,counterfeit");
    let boxes = rows(
        &new.join("boxes.csv"),
        "image,category,counterfeit,x0,y0,x1,y1",
    );
    for row in &labels {
        let mine: Vec<_> = boxes.iter().filter(|b| b[0] == row[0]).collect();
        assert!((1..=3).contains(&mine.len()), "{row:?}");
        assert!(mine.iter().all(|b| b[1] == row[1] && b[2] == row[2]));
    }
    assert!(boxes.iter().all(|b| labels.iter().any(|l| l[0] == b[0])));
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::remove_dir_all(&new);
}

#[test]
fn dataset_with_error_names_the_path() {
    let file = std::env::temp_dir().join(format!("xraygen-notadir2-{}", std::process::id()));
    std::fs::write(&file, b"x").expect("tmp file");
    let err = write_dataset_with(&file, 1, 1, Scanner::S6550, |_, _| {}).expect_err("must fail");
    assert!(err.to_string().contains("xraygen-notadir2"), "{err}");
    let _ = std::fs::remove_file(&file);
}
