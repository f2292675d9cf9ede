//! The decoder on hand-built maps, the metrics on cases worked by hand, and seeded
//! property-style checks of both.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const C: usize = 16;

/// One image's maps, built cell by cell.
struct Maps {
    heat: Vec<f32>,
    size: Vec<f32>,
    offset: Vec<f32>,
    counterfeit: Vec<f32>,
    h: usize,
    w: usize,
}

impl Maps {
    fn new(h: usize, w: usize) -> Maps {
        Maps {
            heat: vec![0.0; C * h * w],
            size: vec![1.0; 2 * h * w],
            offset: vec![0.0; 2 * h * w],
            counterfeit: vec![0.0; h * w],
            h,
            w,
        }
    }

    fn set_heat(&mut self, c: Category, y: usize, x: usize, v: f32) {
        let hw = self.h * self.w;
        self.heat[category_index(c) * hw + y * self.w + x] = v;
    }

    /// The cell's size (w, h), offset (x, y) and counterfeit value.
    fn set_cell(&mut self, y: usize, x: usize, size: (f32, f32), off: (f32, f32), cf: f32) {
        let hw = self.h * self.w;
        let i = y * self.w + x;
        self.size[i] = size.0;
        self.size[hw + i] = size.1;
        self.offset[i] = off.0;
        self.offset[hw + i] = off.1;
        self.counterfeit[i] = cf;
    }

    fn maps(&self) -> HeadMaps<'_> {
        HeadMaps {
            heatmap: &self.heat,
            size: &self.size,
            offset: &self.offset,
            counterfeit: &self.counterfeit,
            categories: C,
            height: self.h,
            width: self.w,
        }
    }
}

fn params() -> DecodeParams {
    DecodeParams {
        stride: 4,
        peak_threshold: 0.3,
        peak_window: 3,
        max_detections: 100,
        nms_iou: 0.5,
    }
}

fn b(x0: f32, y0: f32, x1: f32, y1: f32) -> BBox {
    BBox::new(x0, y0, x1, y1)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn truth(category: Category, counterfeit: bool, bbox: BBox) -> TruthItem {
    TruthItem {
        category,
        counterfeit,
        bbox,
    }
}

fn det(category: Category, score: f32, counterfeit: f32, bbox: BBox) -> Detection {
    Detection {
        category,
        score,
        counterfeit,
        bbox,
    }
}

fn summary(d: &[Detection]) -> Vec<(Category, f32)> {
    d.iter().map(|d| (d.category, d.score)).collect()
}

// ---- boxes ----

#[test]
fn iou_of_hand_computed_boxes() {
    let a = b(0.0, 0.0, 2.0, 2.0);
    // Overlap 1×1 of two 2×2 boxes: 1 / (4 + 4 - 1).
    assert_eq!(a.iou(&b(1.0, 1.0, 3.0, 3.0)), 1.0 / 7.0);
    assert_eq!(b(1.0, 1.0, 3.0, 3.0).iou(&a), 1.0 / 7.0);
    assert_eq!(a.iou(&a), 1.0);
    // A 2×2 box inside a 4×4 one: 4 / 16.
    assert_eq!(b(0.0, 0.0, 4.0, 4.0).iou(&b(1.0, 1.0, 3.0, 3.0)), 0.25);
    // Half of a 2×1 box: 1 / 2.
    assert_eq!(b(0.0, 0.0, 2.0, 1.0).iou(&b(0.0, 0.0, 1.0, 1.0)), 0.5);
    // Edges are exclusive: boxes that touch do not overlap.
    assert_eq!(a.iou(&b(2.0, 0.0, 4.0, 2.0)), 0.0);
    assert_eq!(a.iou(&b(10.0, 10.0, 12.0, 12.0)), 0.0);
    // Huge and tiny boxes neither overflow nor underflow.
    let huge = b(-3e38, -3e38, 3e38, 3e38);
    assert_eq!(huge.iou(&huge), 1.0);
    let tiny = b(0.0, 0.0, 1e-30, 1e-30);
    assert_eq!(tiny.iou(&tiny), 1.0);
}

#[test]
fn invalid_boxes_have_no_area_and_overlap_nothing() {
    let good = b(0.0, 0.0, 2.0, 3.0);
    assert!(good.is_valid());
    assert_eq!(good.area(), 6.0);
    for bad in [
        b(f32::NAN, 0.0, 2.0, 2.0),
        b(0.0, 0.0, f32::INFINITY, 2.0),
        b(0.0, f32::NEG_INFINITY, 2.0, 2.0),
        b(1.0, 0.0, 1.0, 2.0),
        b(0.0, 1.0, 2.0, 1.0),
        b(2.0, 0.0, 0.0, 2.0),
    ] {
        assert!(!bad.is_valid(), "{bad:?}");
        assert_eq!(bad.area(), 0.0, "{bad:?}");
        assert_eq!(bad.iou(&good), 0.0, "{bad:?}");
        assert_eq!(good.iou(&bad), 0.0, "{bad:?}");
        assert_eq!(bad.iou(&bad), 0.0, "{bad:?}");
    }
}

#[test]
fn detections_and_items_are_json_objects_with_category_keys() {
    let d = det(Category::Food, 0.75, 0.25, b(1.0, 2.0, 3.0, 4.0));
    let v = serde_json::to_value(&d).expect("serialize");
    assert_eq!(
        v,
        serde_json::json!({"category": "food", "score": 0.75, "counterfeit": 0.25,
            "bbox": {"x0": 1.0, "y0": 2.0, "x1": 3.0, "y1": 4.0}})
    );
    assert_eq!(serde_json::from_value::<Detection>(v).expect("back"), d);
    let t: TruthItem = serde_json::from_str(
        r#"{"category":"tobacco","counterfeit":true,"bbox":{"x0":0,"y0":0,"x1":5,"y1":5}}"#,
    )
    .expect("parse");
    assert_eq!(t, truth(Category::Tobacco, true, b(0.0, 0.0, 5.0, 5.0)));
    assert!(serde_json::from_str::<TruthItem>(
        r#"{"category":"shoes","counterfeit":true,"bbox":{"x0":0,"y0":0,"x1":5,"y1":5}}"#
    )
    .is_err());
}

// ---- parameters ----

#[test]
fn decode_params_are_validated() {
    assert_eq!(params().validate(), Ok(()));
    let with = |f: fn(&mut DecodeParams)| {
        let mut p = params();
        f(&mut p);
        p.validate()
    };
    assert_eq!(with(|p| p.stride = 0), Err(ParamsError::Stride));
    assert_eq!(with(|p| p.peak_window = 4), Err(ParamsError::PeakWindow(4)));
    assert_eq!(with(|p| p.peak_window = 0), Err(ParamsError::PeakWindow(0)));
    assert_eq!(with(|p| p.peak_window = 1), Ok(()));
    assert_eq!(
        with(|p| p.peak_threshold = 1.5),
        Err(ParamsError::PeakThreshold(1.5))
    );
    assert_eq!(
        with(|p| p.peak_threshold = -0.1),
        Err(ParamsError::PeakThreshold(-0.1))
    );
    assert!(matches!(
        with(|p| p.peak_threshold = f32::NAN),
        Err(ParamsError::PeakThreshold(v)) if v.is_nan()
    ));
    assert_eq!(with(|p| p.peak_threshold = 0.0), Ok(()));
    assert_eq!(with(|p| p.peak_threshold = 1.0), Ok(()));
    assert_eq!(
        with(|p| p.max_detections = 0),
        Err(ParamsError::MaxDetections)
    );
    assert_eq!(with(|p| p.nms_iou = 1.01), Err(ParamsError::NmsIou(1.01)));
    assert!(matches!(
        with(|p| p.nms_iou = f32::NAN),
        Err(ParamsError::NmsIou(v)) if v.is_nan()
    ));
    let msg = with(|p| p.peak_window = 4).expect_err("even").to_string();
    assert!(msg.contains("peak_window") && msg.contains("odd"), "{msg}");
}

#[test]
fn decode_params_read_from_a_manifest() {
    let p: DecodeParams = serde_json::from_str(
        r#"{"stride":4,"peak_threshold":0.3,"peak_window":3,"max_detections":100,"nms_iou":0.5}"#,
    )
    .expect("parse");
    assert_eq!(p, params());
    assert!(serde_json::from_str::<DecodeParams>(
        r#"{"stride":4,"peak_threshold":0.3,"peak_window":3,"max_detections":100,"nms_iou":0.5,"extra":1}"#
    )
    .is_err());
    assert!(serde_json::from_str::<DecodeParams>(r#"{"stride":4}"#).is_err());
}

// ---- decoding ----

#[test]
fn two_peaks_and_a_plateau_give_three_detections_best_first() {
    let mut m = Maps::new(8, 8);
    // Food at (y 2, x 3), centre offset half a cell: centre (14, 10), box 4×4.
    m.set_heat(Category::Food, 2, 3, 0.9);
    m.set_heat(Category::Food, 2, 4, 0.2);
    m.set_heat(Category::Food, 3, 3, 0.25);
    m.set_cell(2, 3, (4.0, 4.0), (0.5, 0.5), 0.8);
    // Tobacco at (6, 6): centre (24, 24).
    m.set_heat(Category::Tobacco, 6, 6, 0.7);
    m.set_cell(6, 6, (4.0, 4.0), (0.0, 0.0), 0.1);
    // A flat 2×3 plateau of medicine at rows 4–5, columns 0–2: one peak, its first cell
    // (4, 0), centre (0, 16), clipped on the left.
    for y in 4..=5 {
        for x in 0..=2 {
            m.set_heat(Category::Medicine, y, x, 0.6);
            m.set_cell(y, x, (4.0, 4.0), (0.0, 0.0), 0.3);
        }
    }
    let d = decode(&m.maps(), &params(), 1.0, 1.0).expect("decode");
    assert_eq!(
        d,
        vec![
            det(Category::Food, 0.9, 0.8, b(12.0, 8.0, 16.0, 12.0)),
            det(Category::Tobacco, 0.7, 0.1, b(22.0, 22.0, 26.0, 26.0)),
            det(Category::Medicine, 0.6, 0.3, b(0.0, 14.0, 2.0, 18.0)),
        ]
    );
}

#[test]
fn a_plateau_wider_than_the_window_is_still_one_peak() {
    let mut m = Maps::new(4, 12);
    for x in 1..=9 {
        m.set_heat(Category::Ppe, 1, x, 0.5);
        m.set_heat(Category::Ppe, 2, x, 0.5);
    }
    let mut p = params();
    p.nms_iou = 1.0;
    let d = decode(&m.maps(), &p, 1.0, 1.0).expect("decode");
    assert_eq!(d.len(), 1, "{d:?}");
    // Cell (1, 1), size 1: centre (4, 4).
    assert_eq!(d[0].bbox, b(3.5, 3.5, 4.5, 4.5));
}

#[test]
fn the_window_suppresses_lesser_cells_of_the_same_category_only() {
    let mut m = Maps::new(8, 12);
    m.set_heat(Category::Food, 3, 3, 0.8);
    m.set_heat(Category::Food, 3, 4, 0.7); // next to the 0.8
    m.set_heat(Category::Food, 3, 6, 0.6); // two cells from the 0.7, three from the 0.8
    m.set_heat(Category::Tobacco, 3, 4, 0.65); // another category is not suppressed
    let mut p = params();
    p.nms_iou = 1.0;
    let run = |window: u32| {
        let mut p = p.clone();
        p.peak_window = window;
        summary(&decode(&m.maps(), &p, 1.0, 1.0).expect("decode"))
    };
    assert_eq!(
        run(3),
        vec![
            (Category::Food, 0.8),
            (Category::Tobacco, 0.65),
            (Category::Food, 0.6)
        ]
    );
    assert_eq!(
        run(5),
        vec![(Category::Food, 0.8), (Category::Tobacco, 0.65)]
    );
    assert_eq!(
        run(1),
        vec![
            (Category::Food, 0.8),
            (Category::Food, 0.7),
            (Category::Tobacco, 0.65),
            (Category::Food, 0.6)
        ]
    );
}

#[test]
fn the_peak_threshold_is_inclusive() {
    let mut m = Maps::new(4, 8);
    m.set_heat(Category::Food, 1, 1, 0.3);
    m.set_heat(Category::Food, 1, 5, 0.299);
    let d = decode(&m.maps(), &params(), 1.0, 1.0).expect("decode");
    assert_eq!(summary(&d), vec![(Category::Food, 0.3)]);
}

#[test]
fn nan_cells_are_skipped_and_never_make_a_nan_detection() {
    let mut m = Maps::new(8, 8);
    // A NaN next to a peak neither is a peak nor suppresses it.
    m.set_heat(Category::Food, 1, 1, 0.8);
    m.set_heat(Category::Food, 1, 2, f32::NAN);
    // Peaks whose size, offset or counterfeit value is not finite are skipped.
    m.set_heat(Category::Medicine, 5, 1, 0.9);
    m.set_cell(5, 1, (f32::NAN, 4.0), (0.0, 0.0), 0.5);
    m.set_heat(Category::Cosmetics, 5, 5, 0.9);
    m.set_cell(5, 5, (4.0, 4.0), (0.0, f32::INFINITY), 0.5);
    m.set_heat(Category::Tobacco, 1, 5, 0.9);
    m.set_cell(1, 5, (4.0, 4.0), (0.0, 0.0), f32::NAN);
    // An infinite heat value is not a probability.
    m.set_heat(Category::Ppe, 3, 6, f32::INFINITY);
    let d = decode(&m.maps(), &params(), 1.0, 1.0).expect("decode");
    assert_eq!(summary(&d), vec![(Category::Food, 0.8)]);

    // Maps full of NaN: nothing, and no panic.
    let mut all_nan = Maps::new(5, 7);
    for v in all_nan
        .heat
        .iter_mut()
        .chain(all_nan.size.iter_mut())
        .chain(all_nan.offset.iter_mut())
        .chain(all_nan.counterfeit.iter_mut())
    {
        *v = f32::NAN;
    }
    assert_eq!(decode(&all_nan.maps(), &params(), 1.0, 1.0), Ok(vec![]));

    // Random maps sprinkled with NaN and infinities: every detection is finite and valid.
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_de7e);
    for _ in 0..50 {
        let mut m = Maps::new(rng.gen_range(1..12), rng.gen_range(1..12));
        let mut junk = |v: &mut f32, lo: f32, hi: f32| {
            *v = match rng.gen_range(0..10) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                _ => rng.gen_range(lo..hi),
            }
        };
        m.heat.iter_mut().for_each(|v| junk(v, 0.0, 1.0));
        m.size.iter_mut().for_each(|v| junk(v, -2.0, 30.0));
        m.offset.iter_mut().for_each(|v| junk(v, -1.0, 2.0));
        m.counterfeit.iter_mut().for_each(|v| junk(v, 0.0, 1.0));
        let mut p = params();
        p.peak_threshold = 0.0;
        for d in decode(&m.maps(), &p, 1.5, 0.5).expect("decode") {
            assert!(d.bbox.is_valid(), "{d:?}");
            assert!(d.score.is_finite() && d.counterfeit.is_finite(), "{d:?}");
            assert!(d.bbox.x0 >= 0.0 && d.bbox.y0 >= 0.0, "{d:?}");
        }
    }
}

#[test]
fn maps_of_the_wrong_shape_are_errors() {
    let m = Maps::new(4, 5);
    let ok = m.maps();
    assert_eq!(ok.check(), Ok(()));
    let short = &m.heat[..m.heat.len() - 1];
    let cases: Vec<(HeadMaps<'_>, &str, usize, usize)> = vec![
        (
            HeadMaps {
                heatmap: short,
                ..ok
            },
            "heatmap",
            319,
            320,
        ),
        (
            HeadMaps {
                size: &m.size[..39],
                ..ok
            },
            "size",
            39,
            40,
        ),
        (
            HeadMaps {
                offset: &m.heat[..41],
                ..ok
            },
            "offset",
            41,
            40,
        ),
        (
            HeadMaps {
                counterfeit: &m.size[..],
                ..ok
            },
            "item_counterfeit",
            40,
            20,
        ),
        (HeadMaps { height: 5, ..ok }, "heatmap", 320, 400),
    ];
    for (maps, map, got, want) in cases {
        assert_eq!(
            decode(&maps, &params(), 1.0, 1.0),
            Err(DecodeError::Length { map, got, want })
        );
    }
    assert_eq!(
        decode(
            &HeadMaps {
                categories: 15,
                heatmap: &m.heat[..300],
                ..ok
            },
            &params(),
            1.0,
            1.0
        ),
        Err(DecodeError::Categories { got: 15, want: 16 })
    );
    assert!(matches!(
        decode(
            &HeadMaps {
                height: usize::MAX,
                width: 2,
                ..ok
            },
            &params(),
            1.0,
            1.0
        ),
        Err(DecodeError::Shape { .. })
    ));
    for (sx, sy) in [
        (0.0, 1.0),
        (1.0, -1.0),
        (f32::NAN, 1.0),
        (1.0, f32::INFINITY),
    ] {
        assert!(matches!(
            decode(&ok, &params(), sx, sy),
            Err(DecodeError::Scale { .. })
        ));
    }
    let mut bad = params();
    bad.stride = 0;
    assert_eq!(
        decode(&ok, &bad, 1.0, 1.0),
        Err(DecodeError::Params(ParamsError::Stride))
    );
    // An empty map is not an error.
    let empty = Maps::new(0, 3);
    assert_eq!(decode(&empty.maps(), &params(), 1.0, 1.0), Ok(vec![]));
}

#[test]
fn boxes_are_scaled_to_the_scan_and_clipped_at_zero() {
    let mut m = Maps::new(6, 6);
    // Cell (y 2, x 1), offset (0.5, 0.25), stride 4: centre (6, 9); size 6×4: input box
    // [3, 7, 9, 11]; scaled by (2, 0.5): [6, 3.5, 18, 5.5].
    m.set_heat(Category::Electronics, 2, 1, 0.9);
    m.set_cell(2, 1, (6.0, 4.0), (0.5, 0.25), 0.0);
    // Cell (0, 4): centre (16, 0), size 4×6: input box [14, -3, 18, 3] → [28, 0, 36, 1.5].
    m.set_heat(Category::Food, 0, 4, 0.8);
    m.set_cell(0, 4, (4.0, 6.0), (0.0, 0.0), 0.0);
    // Cell (5, 0), offset x −3: centre x −12, box [−14, −10] wholly left of the scan: dropped.
    m.set_heat(Category::Medicine, 5, 0, 0.95);
    m.set_cell(5, 0, (4.0, 4.0), (-3.0, 0.0), 0.0);
    let d = decode(&m.maps(), &params(), 2.0, 0.5).expect("decode");
    assert_eq!(
        d.iter().map(|d| d.bbox).collect::<Vec<_>>(),
        vec![b(6.0, 3.5, 18.0, 5.5), b(28.0, 0.0, 36.0, 1.5)]
    );
}

#[test]
fn suppression_is_across_categories_and_keeps_the_higher_score() {
    let mut m = Maps::new(8, 8);
    // The same item seen as food (0.6) and as tobacco (0.9): identical boxes.
    m.set_heat(Category::Food, 4, 4, 0.6);
    m.set_heat(Category::Tobacco, 4, 4, 0.9);
    m.set_cell(4, 4, (8.0, 8.0), (0.0, 0.0), 0.0);
    let run = |m: &Maps, nms: f32| {
        let mut p = params();
        p.nms_iou = nms;
        summary(&decode(&m.maps(), &p, 1.0, 1.0).expect("decode"))
    };
    assert_eq!(run(&m, 0.5), vec![(Category::Tobacco, 0.9)]);
    assert_eq!(
        run(&m, 1.0),
        vec![(Category::Tobacco, 0.9), (Category::Food, 0.6)]
    );

    // Shifted by one cell (4 px) with 8 px boxes: IoU 32 / 96 = 1/3. Suppressed only when the
    // IoU is above nms_iou.
    let mut m = Maps::new(8, 8);
    m.set_heat(Category::Food, 4, 4, 0.6);
    m.set_cell(4, 4, (8.0, 8.0), (0.0, 0.0), 0.0);
    m.set_heat(Category::Tobacco, 4, 5, 0.9);
    m.set_cell(4, 5, (8.0, 8.0), (0.0, 0.0), 0.0);
    assert_eq!(run(&m, 0.3), vec![(Category::Tobacco, 0.9)]);
    assert_eq!(
        run(&m, 1.0 / 3.0),
        vec![(Category::Tobacco, 0.9), (Category::Food, 0.6)]
    );
}

#[test]
fn the_top_max_detections_are_kept_before_suppression() {
    let mut m = Maps::new(4, 20);
    let scored = [
        (Category::Food, 0.5),
        (Category::Medicine, 0.9),
        (Category::Cosmetics, 0.7),
        (Category::Tobacco, 0.8),
        (Category::Ppe, 0.6),
    ];
    for (i, (c, s)) in scored.iter().enumerate() {
        m.set_heat(*c, 1, 4 * i, *s);
    }
    let mut p = params();
    p.max_detections = 3;
    assert_eq!(
        summary(&decode(&m.maps(), &p, 1.0, 1.0).expect("decode")),
        vec![
            (Category::Medicine, 0.9),
            (Category::Tobacco, 0.8),
            (Category::Cosmetics, 0.7)
        ]
    );

    // The best two overlap: suppression after the cut leaves one, not the third best.
    let mut m = Maps::new(4, 20);
    m.set_heat(Category::Food, 1, 1, 0.9);
    m.set_heat(Category::Tobacco, 1, 1, 0.8);
    m.set_heat(Category::Ppe, 1, 10, 0.7);
    p.max_detections = 2;
    assert_eq!(
        summary(&decode(&m.maps(), &p, 1.0, 1.0).expect("decode")),
        vec![(Category::Food, 0.9)]
    );
}

#[test]
fn equal_scores_are_ordered_by_category_then_cell() {
    let mut m = Maps::new(8, 8);
    m.set_heat(Category::Tobacco, 1, 1, 0.5);
    m.set_heat(Category::Food, 6, 6, 0.5);
    m.set_heat(Category::Food, 1, 6, 0.5);
    m.set_heat(Category::AgriInputs, 4, 3, 0.4);
    let d = decode(&m.maps(), &params(), 1.0, 1.0).expect("decode");
    let cells: Vec<(Category, f32, f32)> = d
        .iter()
        .map(|d| (d.category, d.bbox.x0 + 0.5, d.bbox.y0 + 0.5))
        .collect();
    assert_eq!(
        cells,
        vec![
            (Category::Food, 24.0, 4.0),
            (Category::Food, 24.0, 24.0),
            (Category::Tobacco, 4.0, 4.0),
            (Category::AgriInputs, 12.0, 16.0),
        ]
    );
}

// ---- metrics ----

#[test]
fn average_precision_worked_by_hand() {
    // TP, FP, TP with two items: (½, 1), (½, ½), (1, ⅔) → ½·1 + ½·⅔.
    let tp_fp_tp = [(0.9, true), (0.8, false), (0.7, true)];
    assert!(close(average_precision(&tp_fp_tp, 2), 5.0 / 6.0));
    // The same with a third item never found: ⅓·1 + ⅓·⅔.
    assert!(close(average_precision(&tp_fp_tp, 3), 5.0 / 9.0));
    // Interpolation: TP, FP, TP, TP of three; the precision ⅔ at recall ⅔ is raised to the
    // ¾ reached at recall 1: ⅓·1 + ⅓·¾ + ⅓·¾ (not ⅓·1 + ⅓·⅔ + ⅓·¾).
    let interp = [(0.9, true), (0.8, false), (0.7, true), (0.6, true)];
    assert!(close(average_precision(&interp, 3), 5.0 / 6.0));
    // The input order does not matter, only the scores.
    let shuffled = [(0.6, true), (0.9, true), (0.7, true), (0.8, false)];
    assert!(close(average_precision(&shuffled, 3), 5.0 / 6.0));
    // A false positive ranked first: (0, 0), (1, ½).
    assert!(close(
        average_precision(&[(0.9, false), (0.8, true)], 1),
        0.5
    ));
    // Tied scores enter together, whichever order they come in.
    assert!(close(
        average_precision(&[(0.5, true), (0.5, false)], 1),
        0.5
    ));
    assert!(close(
        average_precision(&[(0.5, false), (0.5, true)], 1),
        0.5
    ));
    assert!(close(average_precision(&[], 4), 0.0));
    assert!(close(average_precision(&[(0.1, false)], 4), 0.0));
}

#[test]
fn perfect_detections_score_one() {
    let items = [
        truth(Category::Food, false, b(0.0, 0.0, 10.0, 10.0)),
        truth(Category::Food, true, b(50.0, 0.0, 70.0, 20.0)),
        truth(Category::Tobacco, true, b(0.0, 50.0, 5.0, 60.0)),
    ];
    let dets: Vec<Detection> = items
        .iter()
        .map(|t| {
            det(
                t.category,
                0.9,
                if t.counterfeit { 0.9 } else { 0.1 },
                t.bbox,
            )
        })
        .collect();
    let mut e = BoxEval::new(0.5);
    e.add(&items, &dets);
    let r = e.report();
    assert_eq!(r.map50, Some(1.0));
    assert_eq!(
        r.per_category_ap50,
        BTreeMap::from([("food".to_owned(), 1.0), ("tobacco".to_owned(), 1.0)])
    );
    assert_eq!(r.counterfeit_item_recall, Some(1.0));
    assert_eq!(r.genuine_item_false_alarm_rate, Some(0.0));
    assert_eq!(r.false_counterfeit_detections, 0);
    assert_eq!((r.images, r.truth_items, r.detections), (1, 3, 3));
}

#[test]
fn a_ranked_tp_fp_tp_list_gives_five_sixths() {
    let items = [
        truth(Category::Food, false, b(0.0, 0.0, 10.0, 10.0)),
        truth(Category::Food, false, b(20.0, 0.0, 30.0, 10.0)),
    ];
    let dets = [
        det(Category::Food, 0.9, 0.0, b(0.0, 0.0, 10.0, 10.0)),
        det(Category::Food, 0.8, 0.0, b(100.0, 0.0, 110.0, 10.0)),
        // IoU 80 / 120 with the second item: still a match.
        det(Category::Food, 0.7, 0.0, b(22.0, 0.0, 32.0, 10.0)),
    ];
    let mut e = BoxEval::new(0.5);
    // The order detections are given in does not matter.
    e.add(&items, &[dets[2].clone(), dets[0].clone(), dets[1].clone()]);
    let r = e.report();
    assert!(close(r.map50.expect("map"), 5.0 / 6.0), "{r:?}");
    assert!(close(r.per_category_ap50["food"], 5.0 / 6.0));
}

#[test]
fn each_item_is_matched_once_and_only_by_its_category() {
    // Two detections on the first item: the lesser is a false positive (TP, FP, TP).
    let items = [
        truth(Category::Food, false, b(0.0, 0.0, 10.0, 10.0)),
        truth(Category::Food, false, b(20.0, 0.0, 30.0, 10.0)),
    ];
    let dets = [
        det(Category::Food, 0.9, 0.0, b(0.0, 0.0, 10.0, 10.0)),
        det(Category::Food, 0.8, 0.0, b(0.0, 0.0, 10.0, 10.0)),
        det(Category::Food, 0.7, 0.0, b(20.0, 0.0, 30.0, 10.0)),
    ];
    let mut e = BoxEval::new(0.5);
    e.add(&items, &dets);
    assert!(close(e.report().map50.expect("map"), 5.0 / 6.0));

    // A detection of another category does not match; the category with no item is left out.
    let mut e = BoxEval::new(0.5);
    e.add(
        &[truth(Category::Food, false, b(0.0, 0.0, 10.0, 10.0))],
        &[det(Category::Tobacco, 0.9, 0.0, b(0.0, 0.0, 10.0, 10.0))],
    );
    let r = e.report();
    assert_eq!(r.map50, Some(0.0));
    assert_eq!(
        r.per_category_ap50,
        BTreeMap::from([("food".to_owned(), 0.0)])
    );
}

#[test]
fn a_detection_takes_the_unmatched_item_it_overlaps_most() {
    // Items A [0, 10] and B [5, 15] (IoU ⅓ with each other). The first detection [3, 13]
    // overlaps A by 7/13 and B by 8/12: it takes B, leaving A to the second (A itself). Had
    // it taken A, the second would overlap B by only ⅓ and be a false positive (AP ½).
    let items = [
        truth(Category::Food, false, b(0.0, 0.0, 10.0, 10.0)),
        truth(Category::Food, false, b(5.0, 0.0, 15.0, 10.0)),
    ];
    let dets = [
        det(Category::Food, 0.9, 0.0, b(3.0, 0.0, 13.0, 10.0)),
        det(Category::Food, 0.8, 0.0, b(0.0, 0.0, 10.0, 10.0)),
    ];
    let mut e = BoxEval::new(0.5);
    e.add(&items, &dets);
    assert_eq!(e.report().map50, Some(1.0));
}

#[test]
fn map_averages_over_the_categories_with_items_only() {
    let mut e = BoxEval::new(0.5);
    e.add(
        &[
            truth(Category::Food, false, b(0.0, 0.0, 10.0, 10.0)),
            truth(Category::Medicine, false, b(20.0, 0.0, 30.0, 10.0)),
        ],
        &[
            det(Category::Food, 0.9, 0.0, b(0.0, 0.0, 10.0, 10.0)),
            // Medicine: FP then TP → ½.
            det(Category::Medicine, 0.9, 0.0, b(60.0, 0.0, 70.0, 10.0)),
            det(Category::Medicine, 0.8, 0.0, b(20.0, 0.0, 30.0, 10.0)),
            // Tobacco has no item: left out of the mean.
            det(Category::Tobacco, 0.9, 0.0, b(90.0, 0.0, 99.0, 10.0)),
        ],
    );
    let r = e.report();
    assert!(close(r.map50.expect("map"), 0.75), "{r:?}");
    assert_eq!(
        r.per_category_ap50.keys().collect::<Vec<_>>(),
        vec!["food", "medicine"]
    );
    // A category with items but no detection counts, at 0; images accumulate.
    e.add(&[truth(Category::Ppe, false, b(0.0, 0.0, 10.0, 10.0))], &[]);
    let r = e.report();
    assert!(close(r.map50.expect("map"), 0.5), "{r:?}");
    assert_eq!(r.per_category_ap50["ppe"], 0.0);
    assert_eq!((r.images, r.truth_items, r.detections), (2, 3, 4));
}

#[test]
fn counterfeit_recall_and_false_alarms_on_a_small_case() {
    let (a, bb, b2) = (
        b(0.0, 0.0, 10.0, 10.0),
        b(20.0, 0.0, 30.0, 10.0),
        b(22.0, 0.0, 32.0, 10.0),
    );
    let (c, e_, f, g) = (
        b(40.0, 0.0, 50.0, 10.0),
        b(0.0, 20.0, 10.0, 30.0),
        b(20.0, 20.0, 30.0, 30.0),
        b(40.0, 20.0, 50.0, 30.0),
    );
    let items = [
        // Found as counterfeit by a detection of another category, at the threshold itself.
        truth(Category::Food, true, a),
        // Its best detection (IoU 1) says genuine; a worse one (IoU ⅔) says counterfeit.
        truth(Category::Cosmetics, true, bb),
        // Not detected.
        truth(Category::Cosmetics, true, c),
        // Genuine, but its detection says counterfeit: a false alarm.
        truth(Category::Food, false, e_),
        // Genuine and said genuine.
        truth(Category::Food, false, f),
        // Genuine; only a loose detection (IoU ¼) that says counterfeit.
        truth(Category::Food, false, g),
    ];
    let dets = [
        det(Category::Tobacco, 0.9, 0.5, a),
        det(Category::Cosmetics, 0.9, 0.3, bb),
        det(Category::Cosmetics, 0.8, 0.9, b2),
        det(Category::Food, 0.9, 0.7, e_),
        det(Category::Food, 0.9, 0.1, f),
        det(Category::Food, 0.9, 0.9, b(46.0, 20.0, 56.0, 30.0)),
        // Far from everything.
        det(Category::Food, 0.9, 0.95, b(100.0, 100.0, 110.0, 110.0)),
        det(Category::Food, 0.9, 0.2, b(200.0, 100.0, 210.0, 110.0)),
    ];
    let mut e = BoxEval::new(0.5);
    e.add(&items, &dets);
    let r = e.report();
    assert_eq!(r.counterfeit_items, 3);
    assert_eq!(r.counterfeit_item_recall, Some(1.0 / 3.0));
    assert_eq!(r.genuine_items, 3);
    assert_eq!(r.genuine_item_false_alarm_rate, Some(1.0 / 3.0));
    // The loose one and the far one.
    assert_eq!(r.false_counterfeit_detections, 2);
    assert_eq!(r.counterfeit_threshold, 0.5);

    // A stricter threshold: nothing is found, the false alarm and the far one stay.
    let mut e = BoxEval::new(0.8);
    e.add(&items, &dets);
    let r = e.report();
    assert_eq!(r.counterfeit_item_recall, Some(0.0));
    assert_eq!(r.genuine_item_false_alarm_rate, Some(0.0));
    assert_eq!(r.false_counterfeit_detections, 2);
}

#[test]
fn ratios_over_nothing_are_none_and_null() {
    let r = BoxEval::new(0.5).report();
    assert_eq!(r.map50, None);
    assert_eq!(r.counterfeit_item_recall, None);
    assert_eq!(r.genuine_item_false_alarm_rate, None);
    assert!(r.per_category_ap50.is_empty());
    let v = serde_json::to_value(&r).expect("serialize");
    assert_eq!(v["map50"], serde_json::Value::Null);
    assert_eq!(v["counterfeit_item_recall"], serde_json::Value::Null);
    assert_eq!(v["genuine_item_false_alarm_rate"], serde_json::Value::Null);

    // Only detections: still no mAP. Only genuine items: no recall, but a false-alarm rate.
    let mut e = BoxEval::new(0.5);
    e.add(&[], &[det(Category::Food, 0.9, 0.9, b(0.0, 0.0, 1.0, 1.0))]);
    let r = e.report();
    assert_eq!(r.map50, None);
    assert_eq!(r.false_counterfeit_detections, 1);
    e.add(&[truth(Category::Food, false, b(0.0, 0.0, 1.0, 1.0))], &[]);
    let r = e.report();
    assert_eq!(r.counterfeit_item_recall, None);
    assert_eq!(r.genuine_item_false_alarm_rate, Some(0.0));
    assert_eq!(r.map50, Some(0.0));
}

#[test]
fn nan_scores_rank_last_and_break_nothing() {
    let items = [
        truth(Category::Food, true, b(0.0, 0.0, 10.0, 10.0)),
        truth(Category::Food, false, b(20.0, 0.0, 30.0, 10.0)),
    ];
    let dets = [
        det(
            Category::Food,
            f32::NAN,
            f32::NAN,
            b(100.0, 0.0, 110.0, 10.0),
        ),
        det(Category::Food, 0.9, 0.9, b(0.0, 0.0, 10.0, 10.0)),
        det(Category::Food, 0.8, 0.1, b(20.0, 0.0, 30.0, 10.0)),
        det(Category::Food, 0.7, 0.1, b(f32::NAN, 0.0, 30.0, 10.0)),
    ];
    let mut e = BoxEval::new(0.5);
    e.add(&items, &dets);
    let r = e.report();
    // TP, TP, then the two false ones: AP 1.
    assert_eq!(r.map50, Some(1.0));
    assert_eq!(r.counterfeit_item_recall, Some(1.0));
    assert_eq!(r.false_counterfeit_detections, 0);
}

// ---- property-style ----

fn random_box(rng: &mut ChaCha8Rng) -> BBox {
    let (x0, y0) = (rng.gen_range(0.0..1000.0), rng.gen_range(0.0..1000.0));
    let (w, h) = (rng.gen_range(1.0..200.0), rng.gen_range(1.0..200.0));
    b(x0, y0, x0 + w, y0 + h)
}

#[test]
fn perfect_detections_of_random_items_always_give_map_one_and_full_recall() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_b0e5);
    for case in 0..100 {
        let threshold = rng.gen_range(0.05..0.95);
        let mut e = BoxEval::new(threshold);
        let mut degraded = BoxEval::new(threshold);
        let mut dropped = false;
        for _ in 0..rng.gen_range(1..20) {
            let items: Vec<TruthItem> = (0..rng.gen_range(0..10))
                .map(|_| {
                    truth(
                        Category::ALL[rng.gen_range(0..C)],
                        rng.gen_bool(0.3),
                        random_box(&mut rng),
                    )
                })
                .collect();
            let mut dets: Vec<Detection> = items
                .iter()
                .map(|t| {
                    let cf = if t.counterfeit {
                        rng.gen_range(threshold..=1.0)
                    } else {
                        rng.gen_range(0.0..threshold)
                    };
                    det(t.category, rng.gen_range(0.0..=1.0), cf, t.bbox)
                })
                .collect();
            // Shuffle.
            for i in (1..dets.len()).rev() {
                dets.swap(i, rng.gen_range(0..=i));
            }
            e.add(&items, &dets);
            if !dropped && !dets.is_empty() {
                dets.pop();
                dropped = true;
            }
            degraded.add(&items, &dets);
        }
        let r = e.report();
        if r.truth_items == 0 {
            assert_eq!(r.map50, None);
            continue;
        }
        let map = r.map50.expect("items, so a mAP");
        assert!(close(map, 1.0), "case {case}: {r:?}");
        assert!(r.per_category_ap50.values().all(|ap| close(*ap, 1.0)));
        if r.counterfeit_items > 0 {
            assert_eq!(r.counterfeit_item_recall, Some(1.0), "case {case}: {r:?}");
        }
        if r.genuine_items > 0 {
            assert_eq!(r.genuine_item_false_alarm_rate, Some(0.0), "case {case}");
        }
        assert_eq!(r.false_counterfeit_detections, 0, "case {case}");
        // One item fewer found: its category's AP, and the mean, drop below 1.
        let d = degraded.report().map50.expect("map");
        assert!(d < 1.0 - 1e-9, "case {case}: {d}");
    }
}

#[test]
fn decoding_rendered_random_items_finds_them_all() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_dec0);
    let (h, w, stride) = (48usize, 64usize, 4u32);
    let spacing = 8; // cells between items: more than the window, more than a box
    for case in 0..50 {
        let (sx, sy) = (rng.gen_range(0.5..3.0f32), rng.gen_range(0.5..3.0f32));
        let mut m = Maps::new(h, w);
        // Noise below the threshold everywhere.
        for v in m.heat.iter_mut() {
            *v = rng.gen_range(0.0..0.29);
        }
        let mut items = Vec::new();
        for gy in 0..h / spacing {
            for gx in 0..w / spacing {
                if !rng.gen_bool(0.3) {
                    continue;
                }
                let (y, x) = (gy * spacing + spacing / 2, gx * spacing + spacing / 2);
                let category = Category::ALL[rng.gen_range(0..C)];
                let score = rng.gen_range(0.3..=1.0f32);
                let size = (rng.gen_range(2.0..28.0f32), rng.gen_range(2.0..28.0f32));
                let off = (rng.gen_range(0.0..1.0f32), rng.gen_range(0.0..1.0f32));
                let counterfeit = rng.gen_bool(0.5);
                m.set_heat(category, y, x, score);
                m.set_cell(y, x, size, off, if counterfeit { 0.9 } else { 0.1 });
                let (cx, cy) = (
                    (x as f32 + off.0) * stride as f32,
                    (y as f32 + off.1) * stride as f32,
                );
                let bbox = b(
                    (cx - size.0 / 2.0) * sx,
                    (cy - size.1 / 2.0) * sy,
                    (cx + size.0 / 2.0) * sx,
                    (cy + size.1 / 2.0) * sy,
                );
                items.push((score, truth(category, counterfeit, bbox)));
            }
        }
        let d = decode(&m.maps(), &params(), sx, sy).expect("decode");
        assert_eq!(d.len(), items.len(), "case {case}");
        assert!(
            d.windows(2).all(|p| p[0].score >= p[1].score),
            "case {case}"
        );
        for (s, t) in &items {
            let found = d.iter().find(|d| d.score == *s && d.category == t.category);
            let found = found.unwrap_or_else(|| panic!("case {case}: {t:?} not decoded"));
            assert!(
                found.bbox.iou(&t.bbox) > 0.999,
                "case {case}: {found:?} {t:?}"
            );
        }
        let truth: Vec<TruthItem> = items.into_iter().map(|(_, t)| t).collect();
        let mut e = BoxEval::new(0.5);
        e.add(&truth, &d);
        let r = e.report();
        if !truth.is_empty() {
            assert_eq!(r.map50, Some(1.0), "case {case}: {r:?}");
        }
        assert_eq!(r.false_counterfeit_detections, 0);
    }
}
