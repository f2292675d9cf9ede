//! Unit tests: determinism, variety, every category, the counterfeit signature, and the
//! dataset layout.

use super::*;

fn bytes(scan: &Scan) -> (Vec<u8>, Vec<u16>, Vec<u16>) {
    (
        scan.rgb.as_raw().clone(),
        scan.high.as_raw().clone(),
        scan.low.as_raw().clone(),
    )
}

#[test]
fn same_seed_gives_identical_bytes() {
    for counterfeit in [false, true] {
        let spec = ParcelSpec {
            category: 5,
            counterfeit,
        };
        assert_eq!(bytes(&render(spec, 42)), bytes(&render(spec, 42)));
    }
    assert_eq!(random_spec(7, 0.5), random_spec(7, 0.5));
}

#[test]
fn different_seeds_differ() {
    let spec = ParcelSpec {
        category: 1,
        counterfeit: false,
    };
    assert_ne!(bytes(&render(spec, 1)), bytes(&render(spec, 2)));
    let specs: Vec<ParcelSpec> = (0..64).map(|s| random_spec(s, 0.5)).collect();
    assert!(specs.iter().any(|s| s.counterfeit) && specs.iter().any(|s| !s.counterfeit));
    assert!(
        specs
            .iter()
            .map(|s| s.category)
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 10
    );
}

#[test]
fn random_spec_respects_probability_bounds() {
    assert!((0..50).all(|s| !random_spec(s, 0.0).counterfeit));
    assert!((0..50).all(|s| random_spec(s, 1.0).counterfeit));
    assert!((0..50).all(|s| !random_spec(s, f64::NAN).counterfeit));
    assert!((0..50).all(|s| random_spec(s, 7.0).counterfeit));
}

/// Share of pixels that are clearly not background.
fn coverage(scan: &Scan) -> f64 {
    let dark = scan
        .rgb
        .pixels()
        .filter(|p| p.0.iter().map(|&c| u32::from(c)).sum::<u32>() < 600)
        .count();
    dark as f64 / (scan.rgb.width() * scan.rgb.height()) as f64
}

#[test]
fn every_category_renders_a_plausible_scan() {
    for (category, key) in CATEGORY_KEYS.iter().enumerate() {
        for counterfeit in [false, true] {
            let scan = render(
                ParcelSpec {
                    category,
                    counterfeit,
                },
                1000 + category as u64,
            );
            let (w, h) = scan.rgb.dimensions();
            assert!(
                (224..=288).contains(&w) && (224..=288).contains(&h),
                "{w}x{h}"
            );
            assert_eq!(scan.high.dimensions(), (w, h));
            assert_eq!(scan.low.dimensions(), (w, h));
            let c = coverage(&scan);
            assert!(
                c > 0.05 && c < 0.97,
                "{} counterfeit={counterfeit}: coverage {c}",
                key
            );
            // Corners are air: white-ish.
            let corner = scan.rgb.get_pixel(1, 1).0;
            assert!(corner.iter().all(|&v| v > 200), "corner {corner:?}");
            // Low energy is attenuated at least as much as high energy where there is matter.
            let (sh, sl): (u64, u64) = scan
                .high
                .pixels()
                .zip(scan.low.pixels())
                .fold((0, 0), |(a, b), (h, l)| {
                    (a + u64::from(h.0[0]), b + u64::from(l.0[0]))
                });
            assert!(sl < sh, "{}: low {sl} >= high {sh}", key);
        }
    }
}

#[test]
fn out_of_range_category_renders_as_other() {
    let a = render(
        ParcelSpec {
            category: 99,
            counterfeit: false,
        },
        5,
    );
    let b = render(
        ParcelSpec {
            category: 15,
            counterfeit: false,
        },
        5,
    );
    assert_eq!(bytes(&a), bytes(&b));
    assert_eq!(
        ParcelSpec {
            category: 99,
            counterfeit: false
        }
        .category_key(),
        "other"
    );
}

#[test]
fn counterfeit_differs_from_genuine() {
    for (category, key) in CATEGORY_KEYS.iter().enumerate() {
        let genuine = render(
            ParcelSpec {
                category,
                counterfeit: false,
            },
            77,
        );
        let fake = render(
            ParcelSpec {
                category,
                counterfeit: true,
            },
            77,
        );
        assert_ne!(bytes(&genuine), bytes(&fake), "{key}");
    }
}

#[test]
fn metal_renders_blue_and_organic_orange() {
    use physics::{Canvas, Frame, METAL, ORGANIC};
    let mut cv = Canvas::new(64, 32);
    cv.rect(&Frame::new(16.0, 16.0, 0.0), 20.0, 20.0, ORGANIC, 40.0);
    cv.rect(&Frame::new(48.0, 16.0, 0.0), 20.0, 20.0, METAL, 3.0);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (high, low) = cv.expose(&mut rng);
    let rgb = pseudo_colour(&high, &low);
    let organic = rgb.get_pixel(16, 16).0;
    let metal = rgb.get_pixel(48, 16).0;
    assert!(organic[0] > organic[2], "organic {organic:?}");
    assert!(metal[2] > metal[0], "metal {metal:?}");
}

#[test]
fn dataset_layout_and_labels() {
    let dir = std::env::temp_dir().join(format!("xraygen-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut calls = Vec::new();
    write_dataset(&dir, 5, 9, |done, total| calls.push((done, total))).expect("dataset");
    assert_eq!(calls, (1..=5).map(|d| (d, 5)).collect::<Vec<_>>());
    let csv = std::fs::read_to_string(dir.join("labels.csv")).expect("labels.csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("image,category,counterfeit"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 5);
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 3, "{row}");
        assert_eq!(fields[0], format!("images/{i:06}.png"));
        assert!(category_index(fields[1]).is_some(), "{row}");
        assert!(fields[2] == "0" || fields[2] == "1", "{row}");
        let img = image::open(dir.join(fields[0])).expect("png").to_rgb8();
        let s = derive_seed(9, i as u64);
        let spec = random_spec(s, DATASET_COUNTERFEIT_PROBABILITY);
        assert_eq!(fields[1], spec.category_key());
        assert_eq!(img.as_raw(), render(spec, s).rgb.as_raw());
    }
    assert!(!dir.join("labels.csv.tmp").exists());
    // Same seed, same dataset.
    let again = dir.join("again");
    write_dataset(&again, 5, 9, |_, _| {}).expect("dataset");
    assert_eq!(
        std::fs::read(again.join("labels.csv")).ok(),
        Some(csv.into_bytes())
    );
    assert_eq!(
        std::fs::read(again.join("images/000003.png")).ok(),
        std::fs::read(dir.join("images/000003.png")).ok()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dataset_error_names_the_path() {
    let file = std::env::temp_dir().join(format!("xraygen-notadir-{}", std::process::id()));
    std::fs::write(&file, b"x").expect("tmp file");
    let err = write_dataset(&file, 1, 1, |_, _| {}).expect_err("must fail");
    assert!(err.to_string().contains("xraygen-notadir"), "{err}");
    let _ = std::fs::remove_file(&file);
}
