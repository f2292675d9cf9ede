//! The item detector's arithmetic: decoding an anchor-free (CenterNet-style) detector's
//! output maps into boxes on the scan, and the box metrics `model eval` reports.
//!
//! The detector (`screenline-ref-0.2` and later) has four float32 outputs for a batch of `N`
//! images resized to the model input `W_in × H_in`, each on a grid of `Hout × Wout` cells
//! (`Hout = H_in / stride`, `Wout = W_in / stride`):
//!
//! - `heatmap` `[N, C, Hout, Wout]`: per category (`C` = 16, in label order,
//!   [`Category::ALL`]) the probability that an item's centre lies in the cell (sigmoid
//!   applied);
//! - `size` `[N, 2, Hout, Wout]`: the width and height of the item centred in the cell, in
//!   model-input pixels;
//! - `offset` `[N, 2, Hout, Wout]`: where in the cell the centre lies (x, y), in cells, 0..1;
//! - `item_counterfeit` `[N, 1, Hout, Wout]`: the probability that the item centred in the
//!   cell is counterfeit (sigmoid applied).
//!
//! [`decode`] takes one image's slices of these ([`HeadMaps`]) and the manifest's
//! [`DecodeParams`] and returns [`Detection`]s in pixels of the original scan. [`BoxEval`]
//! scores detections against labelled items ([`TruthItem`]) image by image: mAP at IoU 0.5
//! and the item-level counterfeit figures ([`BoxReport`]).
//!
//! Everything here is pure: the appliance runs the model and reads the datasets.

use crate::domain::Category;
pub use crate::domain::{BBox, Detection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// The IoU at or above which a detection and a labelled item are the same item, for every
/// figure of [`BoxReport`].
pub const MATCH_IOU: f32 = 0.5;

/// One labelled item of an evaluation image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthItem {
    /// The item's category.
    pub category: Category,
    /// The item is counterfeit.
    pub counterfeit: bool,
    /// Where the item is, in pixels of the original scan.
    pub bbox: BBox,
}

/// How the detector's maps are decoded; the model's manifest carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeParams {
    /// Model-input pixels per output cell (`W_in / Wout`), at least 1.
    pub stride: u32,
    /// Lowest heatmap value a peak may have, in `0..=1`.
    pub peak_threshold: f32,
    /// Side of the square window (in cells, odd: 1, 3, 5, …) a peak must be the maximum of
    /// within its category.
    pub peak_window: u32,
    /// Most detections kept per image (before non-maximum suppression), at least 1.
    pub max_detections: usize,
    /// Non-maximum suppression: a box whose IoU with a higher-ranked kept box is above this
    /// is dropped, whatever the two boxes' categories; in `0..=1` (1 keeps every box).
    pub nms_iou: f32,
}

/// Decoding parameters that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParamsError {
    /// `stride` is 0.
    #[error("stride must be at least 1 (model-input pixels per output cell), got 0")]
    Stride,
    /// `peak_window` is even (or 0): it has no centre cell.
    #[error("peak_window must be odd (1, 3, 5, …) so that the window has a centre cell, got {0}")]
    PeakWindow(u32),
    /// `peak_threshold` is NaN or outside `0..=1`.
    #[error("peak_threshold must be a number from 0 to 1, got {0}")]
    PeakThreshold(f32),
    /// `max_detections` is 0.
    #[error("max_detections must be at least 1, got 0")]
    MaxDetections,
    /// `nms_iou` is NaN or outside `0..=1`.
    #[error("nms_iou must be a number from 0 to 1, got {0}")]
    NmsIou(f32),
}

impl DecodeParams {
    /// Checks the parameters: a stride of at least 1, an odd window, thresholds in `0..=1`
    /// (not NaN), at least one detection.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if self.stride == 0 {
            Err(ParamsError::Stride)
        } else if self.peak_window % 2 == 0 {
            Err(ParamsError::PeakWindow(self.peak_window))
        } else if !unit(self.peak_threshold) {
            Err(ParamsError::PeakThreshold(self.peak_threshold))
        } else if self.max_detections == 0 {
            Err(ParamsError::MaxDetections)
        } else if !unit(self.nms_iou) {
            Err(ParamsError::NmsIou(self.nms_iou))
        } else {
            Ok(())
        }
    }
}

/// One image's output maps, borrowed from the batch's tensors (image `n`'s slice of each),
/// each row-major `[channel][y][x]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadMaps<'a> {
    /// `heatmap`: `categories × height × width` values.
    pub heatmap: &'a [f32],
    /// `size`: `2 × height × width` values (widths, then heights), in model-input pixels.
    pub size: &'a [f32],
    /// `offset`: `2 × height × width` values (x, then y), in cells.
    pub offset: &'a [f32],
    /// `item_counterfeit`: `height × width` values.
    pub counterfeit: &'a [f32],
    /// Heatmap channels: must be the 16 categories ([`Category::ALL`]).
    pub categories: usize,
    /// Output rows (`Hout`).
    pub height: usize,
    /// Output columns (`Wout`).
    pub width: usize,
}

/// Maps that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    /// The decoding parameters are not usable.
    #[error("decoding parameters: {0}")]
    Params(#[from] ParamsError),
    /// The heatmap does not have one channel per category.
    #[error("the heatmap has {got} category channels; the detector's labels are the {want} categories in label order")]
    Categories {
        /// Channels of the maps.
        got: usize,
        /// [`Category::ALL`]'s length.
        want: usize,
    },
    /// A map's slice does not have the length its shape says.
    #[error("the {map} map has {got} values; {want} expected for its shape")]
    Length {
        /// `heatmap`, `size`, `offset` or `item_counterfeit`.
        map: &'static str,
        /// Values in the slice.
        got: usize,
        /// Values the shape calls for.
        want: usize,
    },
    /// The shape's value count does not fit in memory's address space.
    #[error("a map of {categories} × {height} × {width} values is too large")]
    Shape {
        /// [`HeadMaps::categories`].
        categories: usize,
        /// [`HeadMaps::height`].
        height: usize,
        /// [`HeadMaps::width`].
        width: usize,
    },
    /// A scale from model input to scan is not a positive finite number.
    #[error("the scale from model input to scan must be positive and finite, got {x} × {y}")]
    Scale {
        /// `scale_x`.
        x: f32,
        /// `scale_y`.
        y: f32,
    },
}

impl HeadMaps<'_> {
    /// Checks that there is one heatmap channel per category and that every slice has the
    /// length its shape says.
    pub fn check(&self) -> Result<(), DecodeError> {
        let want_c = Category::ALL.len();
        if self.categories != want_c {
            return Err(DecodeError::Categories {
                got: self.categories,
                want: want_c,
            });
        }
        let too_large = || DecodeError::Shape {
            categories: self.categories,
            height: self.height,
            width: self.width,
        };
        let hw = self.height.checked_mul(self.width).ok_or_else(too_large)?;
        let heat = hw.checked_mul(self.categories).ok_or_else(too_large)?;
        let two = hw.checked_mul(2).ok_or_else(too_large)?;
        for (map, got, want) in [
            ("heatmap", self.heatmap.len(), heat),
            ("size", self.size.len(), two),
            ("offset", self.offset.len(), two),
            ("item_counterfeit", self.counterfeit.len(), hw),
        ] {
            if got != want {
                return Err(DecodeError::Length { map, got, want });
            }
        }
        Ok(())
    }
}

/// The detections in one image's maps, best first.
///
/// - **Peaks.** A cell is a peak of a category when its heatmap value is finite and at least
///   `peak_threshold`, no cell of the `peak_window × peak_window` window around it (clipped
///   to the map) has a greater value, and no cell of the window *earlier in row-major order*
///   has the same value — so a flat plateau gives one peak, its first cell. NaN cells are
///   never peaks and never suppress one.
/// - **Boxes.** The centre is `((x + offset_x) × stride, (y + offset_y) × stride)` in
///   model-input pixels, the box that centre ± half the cell's `size`; it is then scaled by
///   (`scale_x`, `scale_y`) — scan pixels per model-input pixel, e.g. `scan_width / W_in` —
///   and its edges clipped to at least 0 (the far edges are the caller's to clip: the scan's
///   size is not known here). A peak whose size, offset or counterfeit value is not finite,
///   or whose box is not [valid](BBox::is_valid) after clipping, is skipped: no detection
///   has a NaN in it.
/// - **Selection.** Peaks are ranked by score descending, ties by category index (label
///   order), then by cell in row-major order; the first `max_detections` are kept, then
///   class-agnostic non-maximum suppression drops every box whose IoU with a better kept box
///   is above `nms_iou` (an item seen as two categories keeps the better one). The result
///   keeps the ranking.
pub fn decode(
    maps: &HeadMaps<'_>,
    params: &DecodeParams,
    scale_x: f32,
    scale_y: f32,
) -> Result<Vec<Detection>, DecodeError> {
    params.validate()?;
    maps.check()?;
    let positive = |s: f32| s.is_finite() && s > 0.0;
    if !positive(scale_x) || !positive(scale_y) {
        return Err(DecodeError::Scale {
            x: scale_x,
            y: scale_y,
        });
    }
    let (h, w) = (maps.height, maps.width);
    let hw = h * w;
    let radius = (params.peak_window / 2) as usize;
    let stride = params.stride as f32;

    struct Candidate {
        category: usize,
        cell: usize,
        detection: Detection,
    }
    let mut candidates = Vec::new();
    for (ci, category) in Category::ALL.into_iter().enumerate() {
        let plane = &maps.heatmap[ci * hw..(ci + 1) * hw];
        for (cell, &score) in plane.iter().enumerate() {
            if !(score.is_finite() && score >= params.peak_threshold) {
                continue;
            }
            let (y, x) = (cell / w, cell % w);
            if !is_peak(plane, h, w, y, x, radius) {
                continue;
            }
            let (bw, bh) = (maps.size[cell], maps.size[hw + cell]);
            let (ox, oy) = (maps.offset[cell], maps.offset[hw + cell]);
            let counterfeit = maps.counterfeit[cell];
            if ![bw, bh, ox, oy, counterfeit].iter().all(|v| v.is_finite()) {
                continue;
            }
            let cx = (x as f32 + ox) * stride;
            let cy = (y as f32 + oy) * stride;
            let bbox = BBox {
                x0: ((cx - bw / 2.0) * scale_x).max(0.0),
                y0: ((cy - bh / 2.0) * scale_y).max(0.0),
                x1: ((cx + bw / 2.0) * scale_x).max(0.0),
                y1: ((cy + bh / 2.0) * scale_y).max(0.0),
            };
            if !bbox.is_valid() {
                continue;
            }
            candidates.push(Candidate {
                category: ci,
                cell,
                detection: Detection {
                    category,
                    score,
                    counterfeit,
                    bbox,
                },
            });
        }
    }
    candidates.sort_by(|a, b| {
        b.detection
            .score
            .total_cmp(&a.detection.score)
            .then(a.category.cmp(&b.category))
            .then(a.cell.cmp(&b.cell))
    });
    candidates.truncate(params.max_detections);
    let mut kept: Vec<Detection> = Vec::with_capacity(candidates.len());
    for c in candidates {
        if kept
            .iter()
            .all(|k| k.bbox.iou(&c.detection.bbox) <= params.nms_iou)
        {
            kept.push(c.detection);
        }
    }
    Ok(kept)
}

/// Whether the finite value at `(y, x)` is the maximum of its window, ties going to the cell
/// earliest in row-major order. NaN neighbours compare false both ways, so they never count.
fn is_peak(plane: &[f32], h: usize, w: usize, y: usize, x: usize, radius: usize) -> bool {
    let v = plane[y * w + x];
    let rows = y.saturating_sub(radius)..=y.saturating_add(radius).min(h - 1);
    for yy in rows {
        let cols = x.saturating_sub(radius)..=x.saturating_add(radius).min(w - 1);
        for xx in cols {
            if (yy, xx) == (y, x) {
                continue;
            }
            let n = plane[yy * w + xx];
            if n > v || (n == v && (yy, xx) < (y, x)) {
                return false;
            }
        }
    }
    true
}

/// The box figures of `model eval`, accumulated image by image ([`BoxEval::add`]) and read
/// out as a [`BoxReport`].
///
/// - **Average precision** (per category, at IoU [`MATCH_IOU`]): within each image the
///   category's detections, best score first (ties in the order given), are each matched to
///   the not-yet-matched labelled item of the *same* category with the highest IoU (ties: the
///   first item), if that IoU is at least 0.5; a matched detection is a true positive, any
///   other a false positive, and each item is matched at most once. Over all images the
///   detections are ranked by score; the precision–recall curve has one point per distinct
///   score (tied detections enter together, so the figure does not depend on their order),
///   and AP is the area under its all-point interpolated envelope (VOC 2010 and later): the
///   sum over recall steps of the step times the best precision at that recall or beyond.
///   A NaN score ranks last.
/// - **Counterfeit figures** use, for each labelled item, the detection of *any* category
///   with the highest IoU with it (ties: the earlier detection in the slice), when that IoU
///   is at least 0.5; a detection counts as saying "counterfeit" when its `counterfeit` is at
///   least the threshold. These are not one-to-one: one detection may be the best of two
///   items.
///
/// Labelled items with boxes that are not [valid](BBox::is_valid) are counted but can never
/// be matched.
#[derive(Debug, Clone)]
pub struct BoxEval {
    counterfeit_threshold: f32,
    /// Per category index: (score, true positive) of every detection.
    ranked: Vec<Vec<(f32, bool)>>,
    /// Per category index: labelled items.
    truths: Vec<u64>,
    images: u64,
    truth_items: u64,
    detections: u64,
    counterfeit_items: u64,
    counterfeit_found: u64,
    genuine_items: u64,
    genuine_alarmed: u64,
    false_counterfeit_detections: u64,
}

/// What [`BoxEval`] found over a dataset. Ratios over no items are `None` (JSON `null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxReport {
    /// Images added.
    pub images: u64,
    /// Labelled items over all images.
    pub truth_items: u64,
    /// Detections over all images.
    pub detections: u64,
    /// Mean of `per_category_ap50`: over the categories with at least one labelled item;
    /// `None` when there are none.
    pub map50: Option<f64>,
    /// Average precision at IoU 0.5 of each category (by key) with at least one labelled
    /// item; one without any detection has 0.
    pub per_category_ap50: BTreeMap<String, f64>,
    /// The `counterfeit` value at or above which a detection says "counterfeit".
    pub counterfeit_threshold: f32,
    /// Labelled counterfeit items.
    pub counterfeit_items: u64,
    /// Share of the counterfeit items whose best-IoU detection (IoU ≥ 0.5, any category)
    /// says counterfeit; `None` without counterfeit items.
    pub counterfeit_item_recall: Option<f64>,
    /// Labelled genuine items.
    pub genuine_items: u64,
    /// Share of the genuine items whose best-IoU detection (IoU ≥ 0.5, any category) says
    /// counterfeit; `None` without genuine items.
    pub genuine_item_false_alarm_rate: Option<f64>,
    /// Detections saying counterfeit that overlap no labelled item (of any category) at
    /// IoU ≥ 0.5.
    pub false_counterfeit_detections: u64,
}

fn category_index(c: Category) -> usize {
    Category::ALL
        .iter()
        .position(|x| *x == c)
        .unwrap_or_else(|| unreachable!("Category::ALL lists every category"))
}

/// The score a detection is ranked by: NaN ranks last.
fn rank_score(s: f32) -> f32 {
    if s.is_nan() {
        f32::NEG_INFINITY
    } else {
        s
    }
}

/// Index and IoU of the candidate with the highest IoU with `target` (the first on ties), if
/// any has an IoU of at least [`MATCH_IOU`].
fn best_match<'a>(
    target: &BBox,
    candidates: impl Iterator<Item = (usize, &'a BBox)>,
) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, b) in candidates {
        let iou = target.iou(b);
        if iou >= MATCH_IOU && best.is_none_or(|(_, m)| iou > m) {
            best = Some((i, iou));
        }
    }
    best.map(|(i, _)| i)
}

impl BoxEval {
    /// An empty evaluation; a detection says "counterfeit" when its `counterfeit` is at least
    /// `counterfeit_threshold` (a NaN threshold makes none say so).
    pub fn new(counterfeit_threshold: f32) -> BoxEval {
        let k = Category::ALL.len();
        BoxEval {
            counterfeit_threshold,
            ranked: vec![Vec::new(); k],
            truths: vec![0; k],
            images: 0,
            truth_items: 0,
            detections: 0,
            counterfeit_items: 0,
            counterfeit_found: 0,
            genuine_items: 0,
            genuine_alarmed: 0,
            false_counterfeit_detections: 0,
        }
    }

    /// Adds one image: its labelled items and the detector's detections on it.
    pub fn add(&mut self, truth: &[TruthItem], detections: &[Detection]) {
        self.images += 1;
        self.truth_items += truth.len() as u64;
        self.detections += detections.len() as u64;
        for t in truth {
            self.truths[category_index(t.category)] += 1;
        }

        // Average precision: greedy matching, best score first, within each category.
        let mut order: Vec<usize> = (0..detections.len()).collect();
        order.sort_by(|&a, &b| {
            rank_score(detections[b].score).total_cmp(&rank_score(detections[a].score))
        });
        let mut matched = vec![false; truth.len()];
        for &d in &order {
            let det = &detections[d];
            let hit = best_match(
                &det.bbox,
                truth
                    .iter()
                    .enumerate()
                    .filter(|(j, t)| t.category == det.category && !matched[*j])
                    .map(|(j, t)| (j, &t.bbox)),
            );
            if let Some(j) = hit {
                matched[j] = true;
            }
            self.ranked[category_index(det.category)].push((rank_score(det.score), hit.is_some()));
        }

        // Counterfeit figures: each item's best-IoU detection of any category.
        let says = |d: &Detection| d.counterfeit >= self.counterfeit_threshold;
        for t in truth {
            let best = best_match(&t.bbox, detections.iter().map(|d| &d.bbox).enumerate());
            let alarm = best.is_some_and(|i| says(&detections[i]));
            if t.counterfeit {
                self.counterfeit_items += 1;
                self.counterfeit_found += u64::from(alarm);
            } else {
                self.genuine_items += 1;
                self.genuine_alarmed += u64::from(alarm);
            }
        }
        self.false_counterfeit_detections += detections
            .iter()
            .filter(|d| says(d))
            .filter(|d| best_match(&d.bbox, truth.iter().map(|t| &t.bbox).enumerate()).is_none())
            .count() as u64;
    }

    /// The figures so far.
    pub fn report(&self) -> BoxReport {
        let per_category_ap50: BTreeMap<String, f64> = Category::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| self.truths[*i] > 0)
            .map(|(i, c)| {
                (
                    c.key().to_owned(),
                    average_precision(&self.ranked[i], self.truths[i]),
                )
            })
            .collect();
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let map50 = (!per_category_ap50.is_empty())
            .then(|| per_category_ap50.values().sum::<f64>() / per_category_ap50.len() as f64);
        BoxReport {
            images: self.images,
            truth_items: self.truth_items,
            detections: self.detections,
            map50,
            per_category_ap50,
            counterfeit_threshold: self.counterfeit_threshold,
            counterfeit_items: self.counterfeit_items,
            counterfeit_item_recall: ratio(self.counterfeit_found, self.counterfeit_items),
            genuine_items: self.genuine_items,
            genuine_item_false_alarm_rate: ratio(self.genuine_alarmed, self.genuine_items),
            false_counterfeit_detections: self.false_counterfeit_detections,
        }
    }
}

/// All-point interpolated average precision of ranked `(score, true positive)` detections
/// against `truths` labelled items (at least 1), tied scores entering the curve together.
fn average_precision(ranked: &[(f32, bool)], truths: u64) -> f64 {
    let mut sorted = ranked.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    // (recall, precision) after each group of tied scores.
    let mut points: Vec<(f64, f64)> = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    for (i, &(score, hit)) in sorted.iter().enumerate() {
        if hit {
            tp += 1;
        } else {
            fp += 1;
        }
        if sorted.get(i + 1).is_none_or(|next| next.0 != score) {
            points.push((tp as f64 / truths as f64, tp as f64 / (tp + fp) as f64));
        }
    }
    // The envelope: the best precision at each point's recall or beyond.
    let mut best = 0.0f64;
    for p in points.iter_mut().rev() {
        best = best.max(p.1);
        p.1 = best;
    }
    let mut ap = 0.0;
    let mut recall = 0.0;
    for (r, p) in points {
        ap += (r - recall) * p;
        recall = r;
    }
    ap
}

#[cfg(test)]
mod tests;
