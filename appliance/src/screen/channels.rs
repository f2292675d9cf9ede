//! The model's input channels, computed from what the X-ray machine delivered, for the
//! models whose manifest says `"resize": "area"` (screenline-ref 0.2 and later).
//!
//! - A **dual-energy pair** (16-bit high and low transmission, 65535 = air) gives three
//!   channels: the high- and low-energy attenuation `a = −ln(t)` and their difference
//!   `a_low − a_high`, which tells organic from metal whatever the thickness. Each energy is
//!   resized as transmission first (an area average is what a larger detector pixel would
//!   have measured), then turned into attenuation.
//! - A **pseudo-colour image** (8-bit RGB, the operators' rendering) gives its three
//!   channels in 0..1.
//!
//! The resize is an exact area average (every source pixel weighs by the share of it that
//! an output pixel covers), written out here so that training and the line compute the same
//! numbers: the training recipe reads tensors this very code wrote
//! (`appliance/examples/training_tensors.rs`). Normalisation is inside the model's graph.

pub use crate::line::image::Energy;
use image::RgbImage;

/// Channels of one image, planar (CHW).
pub const CHANNELS: usize = 3;

/// The smallest transmission counted (one grey level): fully dark pixels stay finite.
const MIN_TRANSMISSION: f32 = 1.0 / 65535.0;

/// One output pixel's source pixels along an axis: first index and weights (summing to 1).
#[derive(Debug, Clone, PartialEq)]
struct Span {
    start: usize,
    weights: Vec<f32>,
}

/// The area-average weights from `src` pixels to `dst` pixels along one axis.
fn spans(src: usize, dst: usize) -> Vec<Span> {
    let ratio = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            let (a, b) = (i as f64 * ratio, (i + 1) as f64 * ratio);
            let start = a.floor() as usize;
            let end = (b.ceil() as usize).min(src).max(start + 1);
            let weights = (start..end)
                .map(|j| (((j + 1) as f64).min(b) - (j as f64).max(a)) / ratio)
                .map(|w| w.max(0.0) as f32)
                .collect();
            Span { start, weights }
        })
        .collect()
}

/// An area-average resize from one size to another, its weights computed once.
#[derive(Debug, Clone)]
pub struct AreaResize {
    src: (usize, usize),
    dst: (usize, usize),
    across: Vec<Span>,
    along: Vec<Span>,
    /// The horizontal pass's output, kept between images.
    rows: Vec<f32>,
}

impl AreaResize {
    /// From `src_w × src_h` to `dst_w × dst_h` (every side at least 1).
    pub fn new(src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> AreaResize {
        let (src_w, src_h) = (src_w.max(1), src_h.max(1));
        let (dst_w, dst_h) = (dst_w.max(1), dst_h.max(1));
        AreaResize {
            src: (src_w, src_h),
            dst: (dst_w, dst_h),
            across: spans(src_w, dst_w),
            along: spans(src_h, dst_h),
            rows: Vec::new(),
        }
    }

    /// Whether it resizes from this source size.
    pub fn fits(&self, src_w: usize, src_h: usize) -> bool {
        self.src == (src_w, src_h)
    }

    /// Resizes the plane `value(x, y)` of the source size into `out` (`dst_w × dst_h`,
    /// row-major).
    fn run(&mut self, value: impl Fn(usize) -> f32, out: &mut [f32]) {
        let ((src_w, src_h), (dst_w, dst_h)) = (self.src, self.dst);
        self.rows.clear();
        self.rows.resize(dst_w * src_h, 0.0);
        for y in 0..src_h {
            let row = y * src_w;
            for (x, s) in self.across.iter().enumerate() {
                self.rows[y * dst_w + x] = s
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * value(row + s.start + k))
                    .sum();
            }
        }
        for (y, s) in self.along.iter().enumerate() {
            for x in 0..dst_w {
                out[y * dst_w + x] = s
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * self.rows[(s.start + k) * dst_w + x])
                    .sum();
            }
        }
        debug_assert_eq!(out.len(), dst_w * dst_h);
    }
}

/// `energy` shrunk to `width × height` by the same exact area average (transmission values,
/// rounded): a small copy of a large half, for a thumbnail's pseudo-colour.
pub fn shrink(energy: &Energy, width: u32, height: u32) -> Energy {
    let (w, h) = energy.dimensions();
    let (width, height) = (width.max(1), height.max(1));
    let mut area = AreaResize::new(w as usize, h as usize, width as usize, height as usize);
    let mut out = vec![0f32; width as usize * height as usize];
    let raw = energy.as_raw();
    area.run(|i| f32::from(raw[i]), &mut out);
    let pixels = out
        .into_iter()
        .map(|v| v.round().clamp(0.0, 65535.0) as u16)
        .collect();
    Energy::from_raw(width, height, pixels).unwrap_or_else(|| Energy::new(width, height))
}

/// Why an image cannot become the model's input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChannelsError {
    #[error("the pair's halves differ in size: high {high:?}, low {low:?}")]
    PairSizes { high: (u32, u32), low: (u32, u32) },
    #[error("the output holds {got} values; {want} wanted")]
    Output { got: usize, want: usize },
    #[error("the image is empty")]
    Empty,
}

/// Writes the three dual-energy channels (attenuation high, low, low − high) of a pair,
/// resized to `width × height`, planar, into `out` (`3 × width × height`).
pub fn pair_channels(
    high: &Energy,
    low: &Energy,
    resize: &mut Option<AreaResize>,
    (width, height): (usize, usize),
    out: &mut [f32],
) -> Result<(), ChannelsError> {
    if high.dimensions() != low.dimensions() {
        return Err(ChannelsError::PairSizes {
            high: high.dimensions(),
            low: low.dimensions(),
        });
    }
    let r = resizer(resize, high.dimensions(), (width, height), out.len())?;
    let plane = width * height;
    let (a_high, rest) = out.split_at_mut(plane);
    let (a_low, diff) = rest.split_at_mut(plane);
    let (h, l) = (high.as_raw(), low.as_raw());
    r.run(|i| f32::from(h[i]) / 65535.0, a_high);
    r.run(|i| f32::from(l[i]) / 65535.0, a_low);
    for ((ah, al), d) in a_high.iter_mut().zip(a_low.iter_mut()).zip(diff.iter_mut()) {
        *ah = -ah.max(MIN_TRANSMISSION).ln();
        *al = -al.max(MIN_TRANSMISSION).ln();
        *d = (*al - *ah).max(0.0);
    }
    Ok(())
}

/// Writes a pseudo-colour image's channels (R, G, B in 0..1), resized to `width × height`,
/// planar, into `out` (`3 × width × height`).
pub fn rgb_channels(
    rgb: &RgbImage,
    resize: &mut Option<AreaResize>,
    (width, height): (usize, usize),
    out: &mut [f32],
) -> Result<(), ChannelsError> {
    let r = resizer(resize, rgb.dimensions(), (width, height), out.len())?;
    let raw = rgb.as_raw();
    for (c, plane) in out.chunks_exact_mut(width * height).enumerate() {
        r.run(|i| f32::from(raw[3 * i + c]) / 255.0, plane);
    }
    Ok(())
}

/// The resize for this source size, made anew only when the size changes.
fn resizer(
    resize: &mut Option<AreaResize>,
    (src_w, src_h): (u32, u32),
    (width, height): (usize, usize),
    got: usize,
) -> Result<&mut AreaResize, ChannelsError> {
    if src_w == 0 || src_h == 0 || width == 0 || height == 0 {
        return Err(ChannelsError::Empty);
    }
    let want = CHANNELS * width * height;
    if got != want {
        return Err(ChannelsError::Output { got, want });
    }
    let (src_w, src_h) = (src_w as usize, src_h as usize);
    match resize {
        Some(r) if r.fits(src_w, src_h) && r.dst == (width, height) => {}
        _ => *resize = Some(AreaResize::new(src_w, src_h, width, height)),
    }
    resize.as_mut().ok_or(ChannelsError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resized(src: &[f32], (sw, sh): (usize, usize), (dw, dh): (usize, usize)) -> Vec<f32> {
        let mut r = AreaResize::new(sw, sh, dw, dh);
        let mut out = vec![0.0; dw * dh];
        r.run(|i| src[i], &mut out);
        out
    }

    #[test]
    fn weights_cover_each_output_pixel_once() {
        for (src, dst) in [(1250, 320), (320, 320), (7, 3), (3, 7), (1, 5), (1431, 320)] {
            let s = spans(src, dst);
            assert_eq!(s.len(), dst);
            for span in &s {
                let sum: f32 = span.weights.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{src}->{dst}: {sum}");
                assert!(span.start + span.weights.len() <= src);
            }
        }
    }

    #[test]
    fn an_area_average_by_hand() {
        // 3 → 2: each output covers 1.5 source pixels.
        let out = resized(&[0.0, 3.0, 6.0], (3, 1), (2, 1));
        assert_eq!(out, vec![(0.0 + 0.5 * 3.0) / 1.5, (0.5 * 3.0 + 6.0) / 1.5]);
        // 4×2 → 2×1: plain 2×2 means.
        let out = resized(&[1.0, 3.0, 5.0, 7.0, 3.0, 5.0, 7.0, 9.0], (4, 2), (2, 1));
        assert_eq!(out, vec![3.0, 7.0]);
    }

    #[test]
    fn a_flat_image_stays_flat_and_the_mean_is_kept() {
        let flat = resized(&vec![0.25; 50 * 31], (50, 31), (16, 16));
        assert!(flat.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let ramp: Vec<f32> = (0..64 * 48).map(|i| (i % 64) as f32).collect();
        let out = resized(&ramp, (64, 48), (16, 12));
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&ramp) - mean(&out)).abs() < 1e-3);
    }

    #[test]
    fn pair_channels_are_attenuations_and_their_difference() {
        let high = Energy::from_pixel(8, 4, image::Luma([65535 / 2]));
        let low = Energy::from_pixel(8, 4, image::Luma([65535 / 4]));
        let mut out = vec![0.0; 3 * 4 * 2];
        pair_channels(&high, &low, &mut None, (4, 2), &mut out).expect("channels");
        let (ah, al) = (-(0.5f32).ln(), -(0.25f32).ln());
        for v in &out[..8] {
            assert!((v - ah).abs() < 1e-4, "{v}");
        }
        for v in &out[8..16] {
            assert!((v - al).abs() < 1e-4, "{v}");
        }
        for v in &out[16..] {
            assert!((v - (al - ah)).abs() < 1e-4, "{v}");
        }
    }

    #[test]
    fn black_pixels_stay_finite_and_air_is_zero() {
        let high = Energy::from_fn(4, 1, |x, _| image::Luma([if x < 2 { 0 } else { 65535 }]));
        let low = high.clone();
        let mut out = vec![0.0; 3 * 4];
        pair_channels(&high, &low, &mut None, (4, 1), &mut out).expect("channels");
        assert!(out.iter().all(|v| v.is_finite()));
        assert!((out[0] - 65535f32.ln()).abs() < 1e-3);
        assert_eq!(out[3], 0.0);
    }

    #[test]
    fn mismatched_pairs_and_wrong_outputs_are_refused() {
        let a = Energy::new(4, 4);
        let b = Energy::new(4, 5);
        let mut out = vec![0.0; 3 * 4];
        assert!(matches!(
            pair_channels(&a, &b, &mut None, (2, 2), &mut out),
            Err(ChannelsError::PairSizes { .. })
        ));
        assert_eq!(
            pair_channels(&a, &a, &mut None, (2, 3), &mut out),
            Err(ChannelsError::Output { got: 12, want: 18 })
        );
        let empty = RgbImage::new(0, 3);
        assert_eq!(
            rgb_channels(&empty, &mut None, (2, 2), &mut out),
            Err(ChannelsError::Empty)
        );
    }

    #[test]
    fn rgb_channels_are_planar_in_zero_to_one_and_the_resize_is_reused() {
        let rgb = RgbImage::from_pixel(10, 6, image::Rgb([255, 0, 51]));
        let mut out = vec![0.0; 3 * 5 * 3];
        let mut resize = None;
        rgb_channels(&rgb, &mut resize, (5, 3), &mut out).expect("channels");
        assert!(out[..15].iter().all(|v| (v - 1.0).abs() < 1e-6));
        assert!(out[15..30].iter().all(|v| v.abs() < 1e-6));
        assert!(out[30..].iter().all(|v| (v - 0.2).abs() < 1e-6));
        assert!(resize.as_ref().is_some_and(|r| r.fits(10, 6)));
        let other = RgbImage::from_pixel(7, 7, image::Rgb([0, 0, 0]));
        rgb_channels(&other, &mut resize, (5, 3), &mut out).expect("channels");
        assert!(resize.as_ref().is_some_and(|r| r.fits(7, 7)));
    }
}
