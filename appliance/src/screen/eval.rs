//! Model evaluation on a labelled dataset (`screenline model eval`): every image goes through
//! the line's own decode ([`super::decode_image`], [`super::decode_pair`]) and the model's own
//! preprocess and inference ([`Model::infer`]), so the figures describe what the line does,
//! not what a training script does.
//!
//! The arithmetic (confusion matrix, precision, recall, AUROC) is plain functions over plain
//! data, tested on cases worked by hand; [`plot_confusion`] draws the matrix as a PNG with a
//! small built-in bitmap font, so the plot needs no font files on the appliance.

use super::model::{Model, ModelError};
use crate::domain::{BBox, Category};
use crate::line::image::{decode_image, decode_pair, Decoded, ScanFile};
use screenline_core::detect::{BoxEval, BoxReport, TruthItem};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Why an evaluation could not run.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    Labels {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path} line {line}: image {image}: {why}")]
    Image {
        path: PathBuf,
        line: usize,
        image: String,
        why: String,
    },
    #[error("{path} line {line}: the model failed on {image}: {source}")]
    Model {
        path: PathBuf,
        line: usize,
        image: String,
        source: ModelError,
    },
    #[error("{path} has no images to evaluate (only a header)")]
    Empty { path: PathBuf },
    #[error("cannot write the plot {path}: {why}")]
    Plot { path: PathBuf, why: String },
}

/// One row of `labels.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The line in `labels.csv` (1-based; the header is line 1).
    pub line: usize,
    /// The image as written in the file.
    pub image: String,
    /// The pseudo-colour image, or the high-energy half of a pair.
    pub path: PathBuf,
    /// The low-energy half of a pair.
    pub low: Option<PathBuf>,
    pub category: Category,
    pub counterfeit: bool,
}

/// What the model said about one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub truth: Category,
    pub predicted: Category,
    pub counterfeit: bool,
    pub counterfeit_score: f32,
}

/// Precision and recall of one category.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryStats {
    pub category: &'static str,
    /// Samples whose true category this is.
    pub support: u64,
    /// Samples predicted as this category.
    pub predicted: u64,
    /// Of those predicted as this category, the share that were; null when none was.
    pub precision: Option<f64>,
    /// Of this category's samples, the share predicted as it; null when there were none.
    pub recall: Option<f64>,
}

/// The evaluation's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub n: u64,
    pub top1_accuracy: f64,
    /// Rank-based (Mann-Whitney U, ties averaged); null if the set has only one class.
    pub counterfeit_auroc: Option<f64>,
    /// Share of samples whose counterfeit score is on the right side of the model's
    /// threshold for the true category.
    pub counterfeit_accuracy_at_threshold: f64,
    pub counterfeit_positives: u64,
    pub per_category: Vec<CategoryStats>,
    /// Category keys, the rows' and columns' order of `confusion`.
    pub labels: Vec<&'static str>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    /// With `boxes.csv` and a detector model: mean average precision at IoU 0.5 over the
    /// categories that have items (null otherwise).
    pub map50: Option<f64>,
    /// Share of counterfeit items found (IoU ≥ 0.5) and called counterfeit at the
    /// operating threshold.
    pub counterfeit_item_recall: Option<f64>,
    /// Share of genuine items found and called counterfeit at the operating threshold.
    pub genuine_item_false_alarm_rate: Option<f64>,
    /// Every box figure (per-category AP, counts), with `boxes.csv` and a detector.
    pub boxes: Option<BoxReport>,
}

/// Reads and checks `DIR/labels.csv` (`image,category,counterfeit`); every bad row is an
/// error that names its line.
pub fn read_labels(dir: &Path) -> Result<Vec<Sample>, EvalError> {
    let path = dir.join("labels.csv");
    let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Read {
        path: path.clone(),
        source,
    })?;
    parse_labels(dir, &path, &text)
}

const LABELS_HEADER: &str = "image,category,counterfeit";

/// The data rows of a dataset CSV file, numbered from its first line (the header, which
/// must be `header`, a byte-order mark allowed), blank lines skipped.
fn rows<'a>(
    path: &Path,
    text: &'a str,
    header: &str,
) -> Result<impl Iterator<Item = (usize, &'a str)>, EvalError> {
    let bad = |line: usize, why: String| EvalError::Labels {
        path: path.to_owned(),
        line,
        why,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    match lines.next() {
        Some((_, h)) if h.trim_start_matches('\u{feff}').trim() == header => {}
        Some((n, h)) => return Err(bad(n, format!("the header is {h:?}, expected {header:?}"))),
        None => {
            return Err(bad(
                1,
                format!("the file is empty; expected the header {header:?}"),
            ))
        }
    }
    Ok(lines.filter(|(_, l)| !l.trim().is_empty()))
}

fn parse_labels(dir: &Path, path: &Path, text: &str) -> Result<Vec<Sample>, EvalError> {
    let bad = |line: usize, why: String| EvalError::Labels {
        path: path.to_owned(),
        line,
        why,
    };
    let lines = rows(path, text, LABELS_HEADER)?;
    let mut samples = Vec::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [image, category, counterfeit] = fields[..] else {
            return Err(bad(
                n,
                format!(
                    "{} fields, expected 3 (image,category,counterfeit): {line:?}",
                    fields.len()
                ),
            ));
        };
        let category = Category::from_key(category).ok_or_else(|| {
            bad(
                n,
                format!(
                    "unknown category {category:?}; expected one of {}",
                    Category::ALL.map(|c| c.key()).join(", ")
                ),
            )
        })?;
        let counterfeit = match counterfeit {
            "0" => false,
            "1" => true,
            other => return Err(bad(n, format!("counterfeit is {other:?}, expected 0 or 1"))),
        };
        let parts: Vec<&str> = image.split(';').collect();
        let rel = |p: &str| -> Result<PathBuf, EvalError> {
            let rel = Path::new(p);
            if p.is_empty()
                || rel.is_absolute()
                || rel.components().any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(bad(
                    n,
                    format!("image path {p:?} must be relative to the dataset folder, without ..",),
                ));
            }
            Ok(dir.join(rel))
        };
        let (img, low) = match parts[..] {
            [one] => (rel(one)?, None),
            [high, low] => (rel(high)?, Some(rel(low)?)),
            _ => {
                return Err(bad(
                    n,
                    format!("image {image:?}: expected one PNG or NAME.high.png;NAME.low.png"),
                ))
            }
        };
        samples.push(Sample {
            line: n,
            image: image.to_owned(),
            path: img,
            low,
            category,
            counterfeit,
        });
    }
    if samples.is_empty() {
        return Err(EvalError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(samples)
}

/// Runs every sample through the line's decode and the model; `progress(done, total)` after each.
pub fn evaluate(
    model: &mut Model,
    dataset: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Report, EvalError> {
    let labels_path = dataset.join("labels.csv");
    let samples = read_labels(dataset)?;
    let mut predictions = Vec::with_capacity(samples.len());
    let mut thresholds = Vec::with_capacity(samples.len());
    // Box figures need labelled items and a model that finds them.
    let truth = read_boxes(dataset)?.filter(|_| model.detects());
    let mut boxes = truth
        .as_ref()
        .map(|_| BoxEval::new(model.manifest().thresholds().default));
    for (i, s) in samples.iter().enumerate() {
        let (_, scores) = screen_sample(model, &labels_path, s)?;
        predictions.push(Prediction {
            truth: s.category,
            predicted: scores.top().map_or(Category::Other, |(c, _)| c),
            counterfeit: s.counterfeit,
            counterfeit_score: scores.counterfeit,
        });
        thresholds.push(model.threshold(s.category));
        if let (Some(eval), Some(truth)) = (boxes.as_mut(), truth.as_ref()) {
            let items = truth.get(&s.image).map_or(&[][..], Vec::as_slice);
            eval.add(items, &scores.detections);
        }
        progress(i + 1, samples.len());
    }
    let mut report = summarise(&predictions, &thresholds);
    if let Some(b) = boxes.map(|b| b.report()) {
        report.map50 = b.map50;
        report.counterfeit_item_recall = b.counterfeit_item_recall;
        report.genuine_item_false_alarm_rate = b.genuine_item_false_alarm_rate;
        report.boxes = Some(b);
    }
    Ok(report)
}

/// One sample through the line's decode and the model: each file read once, through a
/// checked descriptor, within the drop folder's limit.
fn screen_sample(
    model: &mut Model,
    labels_path: &Path,
    s: &Sample,
) -> Result<(Decoded, crate::domain::Scores), EvalError> {
    let image_err = |why: String| EvalError::Image {
        path: labels_path.to_owned(),
        line: s.line,
        image: s.image.clone(),
        why,
    };
    let read = |p: &Path| ScanFile::read(p).map(|f| f.bytes);
    let scan = match &s.low {
        None => decode_image(&read(&s.path).map_err(image_err)?).map(Decoded::Rgb),
        Some(low) => decode_pair(
            &read(&s.path).map_err(image_err)?,
            &read(low).map_err(image_err)?,
        ),
    }
    .map_err(image_err)?;
    let scores = model.infer(&scan).map_err(|source| EvalError::Model {
        path: labels_path.to_owned(),
        line: s.line,
        image: s.image.clone(),
        source,
    })?;
    Ok((scan, scores))
}

/// Reads `DIR/boxes.csv` (`image,category,counterfeit,x0,y0,x1,y1`, pixels of the image or
/// of a pair's high half, `x1`/`y1` exclusive), if the dataset has one: the labelled items
/// of each image, keyed by the image as `labels.csv` names it. Every bad row is an error
/// that names its line.
pub fn read_boxes(dir: &Path) -> Result<Option<BTreeMap<String, Vec<TruthItem>>>, EvalError> {
    let path = dir.join("boxes.csv");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EvalError::Read { path, source }),
    };
    parse_boxes(&path, &text).map(Some)
}

const BOXES_HEADER: &str = "image,category,counterfeit,x0,y0,x1,y1";

fn parse_boxes(path: &Path, text: &str) -> Result<BTreeMap<String, Vec<TruthItem>>, EvalError> {
    let bad = |line: usize, why: String| EvalError::Labels {
        path: path.to_owned(),
        line,
        why,
    };
    let lines = rows(path, text, BOXES_HEADER)?;
    let mut out: BTreeMap<String, Vec<TruthItem>> = BTreeMap::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [image, category, counterfeit, x0, y0, x1, y1] = fields[..] else {
            return Err(bad(
                n,
                format!(
                    "{} fields, expected 7 ({BOXES_HEADER}): {line:?}",
                    fields.len()
                ),
            ));
        };
        let category = Category::from_key(category)
            .ok_or_else(|| bad(n, format!("unknown category {category:?}")))?;
        let counterfeit = match counterfeit {
            "0" => false,
            "1" => true,
            other => return Err(bad(n, format!("counterfeit is {other:?}, expected 0 or 1"))),
        };
        let mut edges = [0f32; 4];
        for (e, v) in edges.iter_mut().zip([x0, y0, x1, y1]) {
            *e = v
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad(n, format!("box edge {v:?} is not a number of pixels")))?;
        }
        let bbox = BBox::new(edges[0], edges[1], edges[2], edges[3]);
        if !bbox.is_valid() {
            return Err(bad(
                n,
                format!("box {edges:?} is empty (x1 <= x0 or y1 <= y0)"),
            ));
        }
        out.entry(image.to_owned()).or_default().push(TruthItem {
            category,
            counterfeit,
            bbox,
        });
    }
    Ok(out)
}

/// The figures for a set of predictions; `thresholds[i]` is the counterfeit threshold that
/// applies to prediction `i`.
pub fn summarise(predictions: &[Prediction], thresholds: &[f32]) -> Report {
    let k = Category::ALL.len();
    let index = |c: Category| Category::ALL.iter().position(|x| *x == c).unwrap_or(k - 1);
    let mut confusion = vec![vec![0u64; k]; k];
    for p in predictions {
        confusion[index(p.truth)][index(p.predicted)] += 1;
    }
    let n = predictions.len() as u64;
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let per_category = Category::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let support: u64 = confusion[i].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[i]).sum();
            CategoryStats {
                category: c.key(),
                support,
                predicted,
                precision: ratio(confusion[i][i], predicted),
                recall: ratio(confusion[i][i], support),
            }
        })
        .collect();
    let scores: Vec<f32> = predictions.iter().map(|p| p.counterfeit_score).collect();
    let truth: Vec<bool> = predictions.iter().map(|p| p.counterfeit).collect();
    let right_side = predictions
        .iter()
        .zip(thresholds.iter().chain(std::iter::repeat(&0.5)))
        .filter(|(p, t)| (p.counterfeit_score >= **t) == p.counterfeit)
        .count() as u64;
    Report {
        n,
        top1_accuracy: ratio(correct, n).unwrap_or(0.0),
        counterfeit_auroc: auroc(&scores, &truth),
        counterfeit_accuracy_at_threshold: ratio(right_side, n).unwrap_or(0.0),
        counterfeit_positives: truth.iter().filter(|t| **t).count() as u64,
        per_category,
        labels: Category::ALL.map(|c| c.key()).to_vec(),
        confusion,
        map50: None,
        counterfeit_item_recall: None,
        genuine_item_false_alarm_rate: None,
        boxes: None,
    }
}

/// Area under the ROC curve from ranks (Mann-Whitney U): the chance that a random positive
/// scores above a random negative, ties counting one half. `None` without both classes.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let n = scores.len().min(positive.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0f64; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Tied scores share the mean of the ranks they span (1-based).
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    let n_pos = positive[..n].iter().filter(|p| **p).count() as f64;
    let n_neg = n as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let rank_sum: f64 = (0..n).filter(|&i| positive[i]).map(|i| ranks[i]).sum();
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |v| format!("{:.1}%", v * 100.0))
}

/// The report for people: headline figures, per-category table, confusion matrix.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "images:                       {}", r.n);
    let _ = writeln!(
        s,
        "top-1 category accuracy:      {:.2}%",
        r.top1_accuracy * 100.0
    );
    let _ = writeln!(
        s,
        "counterfeit AUROC:            {}",
        r.counterfeit_auroc
            .map_or_else(|| "n/a (one class only)".into(), |a| format!("{a:.4}"))
    );
    let _ = writeln!(
        s,
        "counterfeit accuracy at the model's thresholds: {:.2}% ({} counterfeit of {})",
        r.counterfeit_accuracy_at_threshold * 100.0,
        r.counterfeit_positives,
        r.n
    );
    if let Some(b) = &r.boxes {
        let _ = writeln!(
            s,
            "items: {} labelled, {} detected; mAP@0.5 {}; counterfeit items found and called {} of {}; genuine items called counterfeit {} of {} (threshold {:.2})",
            b.truth_items,
            b.detections,
            r.map50.map_or_else(|| "n/a".into(), |m| format!("{m:.4}")),
            pct(r.counterfeit_item_recall),
            b.counterfeit_items,
            pct(r.genuine_item_false_alarm_rate),
            b.genuine_items,
            b.counterfeit_threshold
        );
    }
    let _ = writeln!(
        s,
        "\n  # category               support  precision   recall"
    );
    for (i, c) in r.per_category.iter().enumerate() {
        let _ = writeln!(
            s,
            "{i:>3} {:<22} {:>7} {:>10} {:>8}",
            c.category,
            c.support,
            pct(c.precision),
            pct(c.recall)
        );
    }
    let _ = writeln!(
        s,
        "\nconfusion matrix (rows: true category, columns: predicted, by # above):"
    );
    let _ = write!(s, "    ");
    for j in 0..r.labels.len() {
        let _ = write!(s, "{j:>5}");
    }
    let _ = writeln!(s);
    for (i, row) in r.confusion.iter().enumerate() {
        let _ = write!(s, "{i:>3} ");
        for v in row {
            if *v == 0 {
                let _ = write!(s, "{:>5}", ".");
            } else {
                let _ = write!(s, "{v:>5}");
            }
        }
        let _ = writeln!(s);
    }
    s
}

/// 5×7 glyphs, one byte per row, bit 4 the leftmost pixel.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ' ' => [0; 7],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale`² pixels.
fn draw_text(img: &mut image::RgbImage, x: u32, y: u32, text: &str, scale: u32, colour: [u8; 3]) {
    for (n, ch) in text.chars().enumerate() {
        let gx = x + n as u32 * 6 * scale;
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5u32 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (gx + col * scale + dx, y + row as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, image::Rgb(colour));
                        }
                    }
                }
            }
        }
    }
}

fn text_width(text: &str, scale: u32) -> u32 {
    (text.chars().count() as u32 * 6).saturating_sub(1) * scale
}

/// Draws the confusion matrix as a heat map: rows the true category (numbered and named),
/// columns the predicted one (numbered), each cell shaded by its share of the row and
/// labelled with its count.
pub fn draw_confusion(r: &Report) -> image::RgbImage {
    const CELL: u32 = 44;
    const PAD: u32 = 16;
    let k = r.confusion.len() as u32;
    let name_width = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| text_width(&format!("{i:>2} {l}"), 2))
        .max()
        .unwrap_or(0);
    let left = PAD + name_width + 12;
    // Title, sub-title, column numbers: three rows of 14-px text.
    let top = PAD + 14 + 10 + 14 + 10 + 14 + 6;
    let width = left + k * CELL + PAD;
    let height = top + k * CELL + PAD + 14 + 8;
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let black = [20, 20, 20];
    let title = format!(
        "confusion matrix  n={}  top-1 {:.2}%  auroc {}",
        r.n,
        r.top1_accuracy * 100.0,
        r.counterfeit_auroc
            .map_or_else(|| "n/a".into(), |a| format!("{a:.4}"))
    );
    draw_text(&mut img, PAD, PAD, &title, 2, black);
    draw_text(
        &mut img,
        left,
        PAD + 14 + 10,
        "columns: predicted category (numbers as rows)",
        2,
        [90, 90, 90],
    );
    for j in 0..k {
        let label = j.to_string();
        let x = left + j * CELL + (CELL - text_width(&label, 2)) / 2;
        draw_text(&mut img, x, top - 14 - 4, &label, 2, black);
    }
    draw_text(
        &mut img,
        PAD,
        top + k * CELL + 8,
        "rows: true category, shade: share of the row",
        2,
        [90, 90, 90],
    );
    for (i, row) in r.confusion.iter().enumerate() {
        let i = i as u32;
        let y = top + i * CELL;
        let label = format!("{i:>2} {}", r.labels[i as usize]);
        draw_text(&mut img, PAD, y + (CELL - 14) / 2, &label, 2, black);
        let total: u64 = row.iter().sum();
        for (j, &v) in row.iter().enumerate() {
            let j = j as u32;
            let share = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            // White to deep blue; off-diagonal errors in red so a few mistakes stand out.
            let (r0, g0, b0) = if i == j {
                (8.0, 48.0, 107.0)
            } else {
                (165.0, 15.0, 21.0)
            };
            let mix = |c: f64| (255.0 - (255.0 - c) * share.sqrt()).round() as u8;
            let fill = image::Rgb([mix(r0), mix(g0), mix(b0)]);
            let x = left + j * CELL;
            for py in y + 1..y + CELL {
                for px in x + 1..x + CELL {
                    img.put_pixel(px, py, fill);
                }
            }
            if v > 0 {
                let text = v.to_string();
                let scale = if text.len() <= 3 { 2 } else { 1 };
                let colour = if share > 0.45 { [255, 255, 255] } else { black };
                let tx = x + (CELL - text_width(&text, scale)) / 2;
                let ty = y + (CELL - 7 * scale) / 2;
                draw_text(&mut img, tx, ty, &text, scale, colour);
            }
        }
    }
    // Grid lines.
    for t in 0..=k {
        for p in 0..=k * CELL {
            let grey = image::Rgb([200, 200, 200]);
            img.put_pixel(left + t * CELL, top + p, grey);
            img.put_pixel(left + p, top + t * CELL, grey);
        }
    }
    img
}

/// Writes [`draw_confusion`] as a PNG.
pub fn plot_confusion(r: &Report, path: &Path) -> Result<(), EvalError> {
    draw_confusion(r)
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| EvalError::Plot {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

/// Draws a box's outline, `width` pixels thick, clipped to the image.
fn draw_box(img: &mut image::RgbImage, b: &BBox, width: u32, colour: [u8; 3]) {
    let (w, h) = img.dimensions();
    let clip = |v: f32, max: u32| (v.max(0.0) as u32).min(max.saturating_sub(1));
    // The last pixel inside: x1 and y1 are exclusive edges.
    let (x1, y1) = (clip(b.x1 - 1.0, w), clip(b.y1 - 1.0, h));
    let (x0, y0) = (clip(b.x0, w).min(x1), clip(b.y0, h).min(y1));
    for t in 0..width {
        for x in x0..=x1 {
            for y in [y0.saturating_add(t).min(y1), y1.saturating_sub(t).max(y0)] {
                img.put_pixel(x, y, image::Rgb(colour));
            }
        }
        for y in y0..=y1 {
            for x in [x0.saturating_add(t).min(x1), x1.saturating_sub(t).max(x0)] {
                img.put_pixel(x, y, image::Rgb(colour));
            }
        }
    }
}

/// The colours of [`draw_scan`]: labelled items green, detections blue, and either red when
/// counterfeit (labelled so, or called so at the threshold).
const TRUE_GENUINE: [u8; 3] = [0, 160, 0];
const TRUE_COUNTERFEIT: [u8; 3] = [230, 0, 0];
const FOUND_GENUINE: [u8; 3] = [0, 70, 230];
const FOUND_COUNTERFEIT: [u8; 3] = [230, 0, 160];

/// The scan (its pseudo-colour view) with its labelled items (thick, label above) and the
/// model's detections (thin, numbered as in the record, with category and scores below).
pub fn draw_scan(
    scan: &Decoded,
    truth: &[TruthItem],
    detections: &[crate::domain::Detection],
    threshold: f32,
) -> image::RgbImage {
    let mut img = scan.pseudo_colour().into_owned();
    let scale = (img.width() / 400).max(1);
    for t in truth {
        let colour = if t.counterfeit {
            TRUE_COUNTERFEIT
        } else {
            TRUE_GENUINE
        };
        draw_box(&mut img, &t.bbox, 3 * scale, colour);
        let label = format!(
            "{}{}",
            t.category.key(),
            if t.counterfeit { " CF" } else { "" }
        );
        let y = (t.bbox.y0 as u32).saturating_sub(9 * scale);
        draw_text(&mut img, t.bbox.x0 as u32, y, &label, scale, colour);
    }
    for (i, d) in detections.iter().enumerate() {
        let colour = if d.counterfeit >= threshold {
            FOUND_COUNTERFEIT
        } else {
            FOUND_GENUINE
        };
        draw_box(&mut img, &d.bbox, scale, colour);
        let label = format!(
            "{} {} {:.2} cf {:.2}",
            i + 1,
            d.category.key(),
            d.score,
            d.counterfeit
        );
        let (x, y) = (d.bbox.x0 as u32 + 2 * scale, d.bbox.y1 as u32 + 2 * scale);
        draw_text(&mut img, x, y, &label, scale, colour);
    }
    img
}

/// Screens the first `count` samples of `dataset` and writes each drawn by [`draw_scan`]
/// as `DIR/NNN.png`; returns the files written.
pub fn draw_scans(
    model: &mut Model,
    dataset: &Path,
    count: usize,
    dir: &Path,
) -> Result<Vec<PathBuf>, EvalError> {
    let labels_path = dataset.join("labels.csv");
    let truth = read_boxes(dataset)?.unwrap_or_default();
    let plot_err = |path: &Path, why: String| EvalError::Plot {
        path: path.to_owned(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| plot_err(dir, e.to_string()))?;
    let mut written = Vec::new();
    for s in read_labels(dataset)?.iter().take(count) {
        let (scan, scores) = screen_sample(model, &labels_path, s)?;
        let items = truth.get(&s.image).map_or(&[][..], Vec::as_slice);
        let img = draw_scan(
            &scan,
            items,
            &scores.detections,
            model.threshold(s.category),
        );
        let path = dir.join(format!("{:03}.png", written.len()));
        img.save_with_format(&path, image::ImageFormat::Png)
            .map_err(|e| plot_err(&path, e.to_string()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_labels_with_the_domain_s_category_keys() {
        let keys: Vec<&str> = crate::domain::Category::ALL
            .iter()
            .map(|c| c.key())
            .collect();
        assert_eq!(keys, xraygen::CATEGORY_KEYS);
    }

    fn approx(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn auroc_perfect_inverted_and_chance() {
        let y = [false, false, true, true];
        assert!(approx(auroc(&[0.1, 0.2, 0.8, 0.9], &y), 1.0));
        assert!(approx(auroc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0));
        // All scores equal: every pair is a tie, worth one half.
        assert!(approx(auroc(&[0.5; 4], &y), 0.5));
    }

    #[test]
    fn auroc_counts_ties_as_half() {
        // Positives 0.4, 0.8; negatives 0.4, 0.1. Pairs: (0.4 vs 0.4) tie = 0.5,
        // (0.4 vs 0.1) = 1, (0.8 vs 0.4) = 1, (0.8 vs 0.1) = 1 → 3.5 / 4.
        let s = [0.4, 0.8, 0.4, 0.1];
        let y = [true, true, false, false];
        assert!(approx(auroc(&s, &y), 0.875));
        // One mis-ordered pair out of 2×3 = 6: 5/6.
        let s = [0.3, 0.9, 0.1, 0.2, 0.5];
        let y = [true, true, false, false, false];
        assert!(approx(auroc(&s, &y), 5.0 / 6.0));
    }

    #[test]
    fn auroc_needs_both_classes() {
        assert_eq!(auroc(&[0.1, 0.9], &[true, true]), None);
        assert_eq!(auroc(&[], &[]), None);
    }

    #[test]
    fn confusion_precision_recall() {
        use Category::*;
        let p = |truth, predicted, counterfeit, score| Prediction {
            truth,
            predicted,
            counterfeit,
            counterfeit_score: score,
        };
        // food: 3 samples, 2 right, 1 read as medicine; medicine: 1 sample, right;
        // tobacco: 1 sample read as food.
        let preds = [
            p(Food, Food, false, 0.1),
            p(Food, Food, true, 0.9),
            p(Food, Medicine, false, 0.6),
            p(Medicine, Medicine, true, 0.7),
            p(Tobacco, Food, false, 0.2),
        ];
        let r = summarise(&preds, &[0.5; 5]);
        assert_eq!(r.n, 5);
        assert!((r.top1_accuracy - 0.6).abs() < 1e-12);
        let stat = |c: Category| {
            r.per_category
                .iter()
                .find(|s| s.category == c.key())
                .unwrap()
        };
        // food: predicted 3 times (2 right + tobacco) → precision 2/3; recall 2/3.
        assert_eq!(stat(Food).support, 3);
        assert!(approx(stat(Food).precision, 2.0 / 3.0));
        assert!(approx(stat(Food).recall, 2.0 / 3.0));
        // medicine: predicted twice, once right → 1/2; its one sample right → 1.
        assert!(approx(stat(Medicine).precision, 0.5));
        assert!(approx(stat(Medicine).recall, 1.0));
        // tobacco: never predicted → no precision; recall 0.
        assert_eq!(stat(Tobacco).precision, None);
        assert!(approx(stat(Tobacco).recall, 0.0));
        assert_eq!(stat(Ppe).recall, None);
        let (f, m, t) = (1, 2, 12);
        assert_eq!(r.confusion[f][f], 2);
        assert_eq!(r.confusion[f][m], 1);
        assert_eq!(r.confusion[t][f], 1);
        assert_eq!(r.confusion.iter().flatten().sum::<u64>(), 5);
        // Scores 0.1, 0.9, 0.6, 0.7, 0.2 against truth 0,1,0,1,0: 0.6 is wrong at 0.5.
        assert!((r.counterfeit_accuracy_at_threshold - 0.8).abs() < 1e-12);
        assert!(approx(r.counterfeit_auroc, 1.0));
        assert_eq!(r.counterfeit_positives, 2);
    }

    #[test]
    fn labels_bad_rows_name_their_line() {
        let dir = Path::new("/d");
        let path = Path::new("/d/labels.csv");
        let err = |text: &str| parse_labels(dir, path, text).unwrap_err().to_string();
        let h = "image,category,counterfeit\n";
        assert!(err("a,b\n").contains("line 1: the header is \"a,b\""));
        assert!(err(&format!("{h}a.png,food,0\nb.png,shoes,1\n"))
            .contains("line 3: unknown category \"shoes\""));
        assert!(err(&format!("{h}a.png,food,2\n")).contains("line 2: counterfeit is \"2\""));
        assert!(err(&format!("{h}a.png,food\n")).contains("line 2: 2 fields, expected 3"));
        assert!(err(&format!("{h}../a.png,food,0\n")).contains("line 2: image path \"../a.png\""));
        assert!(err(&format!("{h}/etc/a.png,food,0\n")).contains("must be relative"));
        assert!(err(&format!("{h}a;b;c,food,0\n")).contains("line 2: image \"a;b;c\""));
        assert!(err(h).contains("no images"));
    }

    #[test]
    fn labels_single_images_and_pairs() {
        let dir = Path::new("/d");
        let text = "image,category,counterfeit\r\nimages/1.png,food,0\r\n\r\ns/a.high.png;s/a.low.png,tobacco,1\r\n";
        let s = parse_labels(dir, Path::new("/d/labels.csv"), text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].path, Path::new("/d/images/1.png"));
        assert_eq!((s[0].line, s[0].low.clone()), (2, None));
        assert_eq!(s[1].line, 4);
        assert_eq!(s[1].path, Path::new("/d/s/a.high.png"));
        assert_eq!(s[1].low.as_deref(), Some(Path::new("/d/s/a.low.png")));
        assert_eq!((s[1].category, s[1].counterfeit), (Category::Tobacco, true));
    }

    #[test]
    fn plot_has_a_cell_per_pair_and_shades_the_diagonal() {
        use Category::*;
        let preds: Vec<Prediction> = (0..20)
            .map(|i| Prediction {
                truth: Food,
                predicted: if i == 0 { Medicine } else { Food },
                counterfeit: i % 2 == 0,
                counterfeit_score: i as f32 / 20.0,
            })
            .collect();
        let r = summarise(&preds, &[0.5; 20]);
        let img = draw_confusion(&r);
        assert!(img.width() > 16 * 44 && img.height() > 16 * 44);
        // The food/food cell is dark blue, the food/agri_inputs cell white; pick each
        // cell's top-left inner pixel.
        let left = img.width() - 16 - 16 * 44;
        let top = img.height() - 16 - 14 - 8 - 16 * 44;
        let cell = |i: u32, j: u32| *img.get_pixel(left + j * 44 + 2, top + i * 44 + 2);
        assert!(cell(1, 1).0[2] > cell(1, 1).0[0] + 50, "{:?}", cell(1, 1));
        assert_eq!(cell(1, 0).0, [255, 255, 255]);
        // One food parcel read as medicine: a light red cell.
        let err = cell(1, 2).0;
        assert!(err[0] > err[2] && err[2] < 255, "{err:?}");
    }

    /// Singles and dual-energy pairs both go through the line's decode; a pair scores as
    /// the pseudo-colour image rendered from it.
    #[test]
    fn evaluate_reads_singles_and_pairs() {
        use crate::screen::model::{default_model_dir, init_runtime};
        let dir = crate::testutil::temp_dir("eval-pairs");
        std::fs::create_dir_all(&dir).unwrap();
        let mut csv = String::from("image,category,counterfeit\n");
        for (i, (cat, cf)) in [(5usize, false), (12, true)].into_iter().enumerate() {
            let spec = xraygen::ParcelSpec {
                category: cat,
                counterfeit: cf,
            };
            let scan = xraygen::render(spec, 7_500_000 + i as u64);
            scan.rgb.save(dir.join(format!("s{i}.png"))).unwrap();
            scan.high.save(dir.join(format!("p{i}.high.png"))).unwrap();
            scan.low.save(dir.join(format!("p{i}.low.png"))).unwrap();
            let key = spec.category_key();
            let cf = u8::from(cf);
            csv.push_str(&format!(
                "s{i}.png,{key},{cf}\np{i}.high.png;p{i}.low.png,{key},{cf}\n"
            ));
        }
        std::fs::write(dir.join("labels.csv"), csv).unwrap();
        let env = init_runtime(None).expect("ONNX Runtime");
        let mut model = Model::load(&default_model_dir().unwrap(), &env, 1).unwrap();
        let mut seen = Vec::new();
        let r = evaluate(&mut model, &dir, |done, total| seen.push((done, total))).unwrap();
        assert_eq!(seen, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
        assert_eq!(r.n, 4);
        assert_eq!(r.confusion.iter().flatten().sum::<u64>(), 4);
        // Each pair is predicted like its single (same rendering): rows hold even counts.
        for row in &r.confusion {
            for v in row {
                assert_eq!(v % 2, 0, "{:?}", r.confusion);
            }
        }
        assert_eq!(r.counterfeit_positives, 2);
    }

    #[test]
    fn boxes_csv_is_read_per_image_and_bad_rows_name_their_line() {
        let path = Path::new("/d/boxes.csv");
        let text = "image,category,counterfeit,x0,y0,x1,y1\n\
                    a.high.png;a.low.png,food,0,10,20,110,220\n\
                    a.high.png;a.low.png,tobacco,1,5,5,50,60\n\
                    b.png,ppe,0,0,0,8,8\n";
        let got = parse_boxes(path, text).expect("parses");
        assert_eq!(got.len(), 2);
        let a = &got["a.high.png;a.low.png"];
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].category, Category::Tobacco);
        assert!(a[1].counterfeit);
        assert_eq!(a[0].bbox, BBox::new(10.0, 20.0, 110.0, 220.0));
        for (bad, why) in [
            ("b.png,shoes,0,0,0,8,8", "unknown category"),
            ("b.png,ppe,2,0,0,8,8", "counterfeit is \"2\""),
            ("b.png,ppe,0,0,0,8", "6 fields"),
            ("b.png,ppe,0,9,0,8,8", "is empty"),
            ("b.png,ppe,0,-1,0,8,8", "not a number of pixels"),
            ("b.png,ppe,0,NaN,0,8,8", "not a number of pixels"),
        ] {
            let text =
                format!("image,category,counterfeit,x0,y0,x1,y1\nb.png,ppe,0,0,0,8,8\n{bad}\n");
            let e = parse_boxes(path, &text).expect_err(bad).to_string();
            assert!(e.contains("line 3") && e.contains(why), "{bad}: {e}");
        }
        let e = parse_boxes(path, "image,category\n")
            .expect_err("header")
            .to_string();
        assert!(e.contains("line 1") && e.contains("header"), "{e}");
        assert_eq!(
            read_boxes(Path::new("/nonexistent-dataset")).expect("absent"),
            None
        );
    }

    #[test]
    fn drawn_scans_show_labelled_and_found_boxes_in_their_colours() {
        let scan = Decoded::Rgb(image::RgbImage::from_pixel(
            100,
            80,
            image::Rgb([255, 255, 255]),
        ));
        let truth = [TruthItem {
            category: Category::Food,
            counterfeit: true,
            bbox: BBox::new(10.0, 20.0, 60.0, 70.0),
        }];
        let found = [crate::domain::Detection {
            category: Category::Food,
            score: 0.9,
            counterfeit: 0.2,
            bbox: BBox::new(30.0, 5.0, 90.0, 50.0),
        }];
        let img = draw_scan(&scan, &truth, &found, 0.5);
        assert_eq!(img.get_pixel(10, 45).0, TRUE_COUNTERFEIT);
        assert_eq!(img.get_pixel(89, 30).0, FOUND_GENUINE);
        assert_eq!(
            img.get_pixel(45, 40).0,
            [255, 255, 255],
            "inside stays clear"
        );
        let flagged = [crate::domain::Detection {
            counterfeit: 0.7,
            ..found[0].clone()
        }];
        assert_eq!(
            draw_scan(&scan, &[], &flagged, 0.5).get_pixel(89, 30).0,
            FOUND_COUNTERFEIT
        );
    }
}
