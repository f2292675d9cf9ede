//! The physics of one exposure: materials, the attenuation canvas that shapes are drawn
//! into, the two-energy detector read-out with photon noise, and the pseudo-colour
//! convention that X-ray operators read.
//!
//! Attenuation is linear in thickness (Beer–Lambert), so overlapping items simply add their
//! `mu · t` per pixel. Thickness is in nominal millimetres. Shapes are placed in world units:
//! for the `Small` scanner one unit is one pixel (roughly 2 mm, square); the large scanner
//! profiles draw in millimetres and sample the world at their own pitch across and along the
//! belt ([`Canvas::with_pitch`]), so the same object covers more pixels on a finer machine.

use image::{ImageBuffer, Luma, Rgb, RgbImage};
use rand::Rng;

use crate::scanner::Detector;

/// A 16-bit grey image of detector transmission, as an X-ray machine writes it.
pub(crate) type Grey16 = ImageBuffer<Luma<u16>, Vec<u16>>;

/// Linear attenuation coefficients (per mm) at the two detector energies.
///
/// The low-energy channel is attenuated more than the high one, and the ratio grows with
/// the effective atomic number Z — which is what lets a dual-energy scanner tell materials
/// apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Material {
    pub(crate) mu_high: f32,
    pub(crate) mu_low: f32,
}

impl Material {
    /// A material attenuating `mu_high` per mm at the high energy and `mu_low` at the low.
    const fn new(mu_high: f32, mu_low: f32) -> Material {
        Material { mu_high, mu_low }
    }
}

/// Low-Z matter (Z ≈ 6–8): paper, cardboard, plastics, food, liquids, textiles. Ratio ≈ 1.6.
pub(crate) const ORGANIC: Material = Material::new(0.010, 0.016);
/// Denser low-Z matter: pressed tablets, rubber with fillers. Still reads as organic.
pub(crate) const DENSE_ORGANIC: Material = Material::new(0.020, 0.034);
/// Inorganic / mixed matter (Z ≈ 10–17): glass, ceramics, aluminium, salts, circuit boards.
/// Ratio ≈ 2.3.
pub(crate) const MIXED: Material = Material::new(0.030, 0.070);
/// Metals (Z > 20): steel, copper, brass. Ratio ≈ 3.
pub(crate) const METAL: Material = Material::new(0.150, 0.450);

/// Photons per pixel reaching an empty detector at each energy; sets the noise level of the
/// `Small` scanner (the large profiles bring their own, see [`crate::Detector`]).
const PHOTONS_HIGH: f32 = 20_000.0;
const PHOTONS_LOW: f32 = 12_000.0;

/// A placement: an origin in image pixels and a rotation. Shapes are drawn in the frame's
/// local coordinates, so an item can be moved and turned as a whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    x: f32,
    y: f32,
    cos: f32,
    sin: f32,
}

impl Frame {
    /// A frame at image position (x, y), turned by `angle` radians.
    pub(crate) fn new(x: f32, y: f32, angle: f32) -> Frame {
        Frame {
            x,
            y,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    /// The same orientation, moved by (du, dv) in this frame's own coordinates.
    pub(crate) fn at(&self, du: f32, dv: f32) -> Frame {
        Frame {
            x: self.x + self.cos * du - self.sin * dv,
            y: self.y + self.sin * du + self.cos * dv,
            ..*self
        }
    }

    /// The same origin, turned further by `angle` radians.
    pub(crate) fn turn(&self, angle: f32) -> Frame {
        let (s, c) = angle.sin_cos();
        Frame {
            cos: self.cos * c - self.sin * s,
            sin: self.sin * c + self.cos * s,
            ..*self
        }
    }

    /// Moved by (du, dv), then turned by `angle`.
    pub(crate) fn sub(&self, du: f32, dv: f32, angle: f32) -> Frame {
        self.at(du, dv).turn(angle)
    }

    /// Half-extents (world units) of the axis-aligned box around a `2hx` × `2hy` rectangle
    /// centred on this frame and turned with it.
    pub(crate) fn extents(&self, hx: f32, hy: f32) -> (f32, f32) {
        (
            (self.cos * hx).abs() + (self.sin * hy).abs(),
            (self.sin * hx).abs() + (self.cos * hy).abs(),
        )
    }

    fn to_local(self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.x, y - self.y);
        (
            self.cos * dx + self.sin * dy,
            -self.sin * dx + self.cos * dy,
        )
    }
}

/// Accumulated attenuation (Σ mu·t) per pixel at both energies.
pub(crate) struct Canvas {
    pub(crate) width: usize,
    pub(crate) height: usize,
    /// World units per pixel across (x) and along (y) the belt.
    sx: f32,
    sy: f32,
    high: Vec<f32>,
    low: Vec<f32>,
}

/// A pixel rectangle: columns `x0..x1`, rows `y0..y1` (ends exclusive).
pub(crate) type PixelBox = [u32; 4];

impl Canvas {
    /// A canvas whose world unit is one pixel (the `Small` scanner).
    pub(crate) fn new(width: usize, height: usize) -> Canvas {
        Canvas::with_pitch(width, height, 1.0, 1.0)
    }

    /// A canvas sampling the world every `sx` units across and `sy` units along the belt.
    pub(crate) fn with_pitch(width: usize, height: usize, sx: f32, sy: f32) -> Canvas {
        Canvas {
            width,
            height,
            sx,
            sy,
            high: vec![0.0; width * height],
            low: vec![0.0; width * height],
        }
    }

    /// The pixels a `2hx` × `2hy` rectangle on `frame` can touch: the same rows and columns
    /// [`Canvas::fill`] visits, clipped to the image. `None` if that is empty.
    pub(crate) fn pixel_box(&self, frame: &Frame, hx: f32, hy: f32) -> Option<PixelBox> {
        let (ex, ey) = frame.extents(hx, hy);
        let (x0, y0, x1, y1) = self.span(frame, ex, ey);
        (x0 < x1 && y0 < y1).then_some([x0 as u32, y0 as u32, x1 as u32, y1 as u32])
    }

    /// Pixel columns `x0..x1` and rows `y0..y1` covering the world box of half-extents
    /// (ex, ey) around the frame's origin, clipped to the image.
    fn span(&self, frame: &Frame, ex: f32, ey: f32) -> (usize, usize, usize, usize) {
        // With a pitch of 1 these divisions are exact, so the `Small` scanner's pixels are
        // the ones it has always drawn.
        let x0 = ((frame.x - ex) / self.sx).floor().max(0.0) as usize;
        let y0 = ((frame.y - ey) / self.sy).floor().max(0.0) as usize;
        let x1 = (((frame.x + ex) / self.sx).ceil().max(0.0) as usize).min(self.width);
        let y1 = (((frame.y + ey) / self.sy).ceil().max(0.0) as usize).min(self.height);
        (x0, y0, x1, y1)
    }

    /// Adds `material` with the thickness `thick(u, v)` (local coordinates) over the
    /// rectangle |u| ≤ hx, |v| ≤ hy of `frame`. The core of every shape.
    pub(crate) fn fill(
        &mut self,
        frame: &Frame,
        hx: f32,
        hy: f32,
        material: Material,
        thick: impl Fn(f32, f32) -> f32,
    ) {
        if hx <= 0.0 || hy <= 0.0 {
            return;
        }
        // The rotated rectangle's bounding box in pixels.
        let (ex, ey) = frame.extents(hx, hy);
        let (x0, y0, x1, y1) = self.span(frame, ex, ey);
        for y in y0..y1 {
            let wy = (y as f32 + 0.5) * self.sy;
            for x in x0..x1 {
                let (u, v) = frame.to_local((x as f32 + 0.5) * self.sx, wy);
                if u.abs() > hx || v.abs() > hy {
                    continue;
                }
                let t = thick(u, v);
                if t > 0.0 {
                    let i = y * self.width + x;
                    self.high[i] += material.mu_high * t;
                    self.low[i] += material.mu_low * t;
                }
            }
        }
    }

    /// A flat slab of `w` × `h` and thickness `t`.
    pub(crate) fn rect(&mut self, f: &Frame, w: f32, h: f32, m: Material, t: f32) {
        self.fill(f, w / 2.0, h / 2.0, m, |_, _| t);
    }

    /// The walls of a box seen from above: a border of width `wall`.
    pub(crate) fn outline(&mut self, f: &Frame, w: f32, h: f32, wall: f32, m: Material, t: f32) {
        let (ix, iy) = (w / 2.0 - wall, h / 2.0 - wall);
        self.fill(f, w / 2.0, h / 2.0, m, |u, v| {
            if u.abs() > ix || v.abs() > iy {
                t
            } else {
                0.0
            }
        });
    }

    /// A flat disc or ellipse.
    pub(crate) fn ellipse(&mut self, f: &Frame, rx: f32, ry: f32, m: Material, t: f32) {
        self.fill(f, rx, ry, m, |u, v| {
            if (u / rx).powi(2) + (v / ry).powi(2) <= 1.0 {
                t
            } else {
                0.0
            }
        });
    }

    /// An ellipsoid: thickness `t` at the centre, falling off to the rim.
    pub(crate) fn ball(&mut self, f: &Frame, rx: f32, ry: f32, m: Material, t: f32) {
        self.fill(f, rx, ry, m, |u, v| {
            let q = 1.0 - (u / rx).powi(2) - (v / ry).powi(2);
            if q > 0.0 {
                t * q.sqrt()
            } else {
                0.0
            }
        });
    }

    /// A soft sack or pouch: thick in the middle, thin at the seams.
    pub(crate) fn pillow(&mut self, f: &Frame, w: f32, h: f32, m: Material, t: f32) {
        let (hx, hy) = (w / 2.0, h / 2.0);
        self.fill(f, hx, hy, m, |u, v| {
            t * (1.0 - (u / hx).powi(4)) * (1.0 - (v / hy).powi(4))
        });
    }

    /// A solid rod (capsule) along the local u axis: length `len` between the cap centres,
    /// radius `r`; thickness is the chord through it, times `k` (density/stacking factor).
    pub(crate) fn rod(&mut self, f: &Frame, len: f32, r: f32, m: Material, k: f32) {
        let half = len / 2.0;
        self.fill(f, half + r, r, m, |u, v| {
            let du = (u.abs() - half).max(0.0);
            let d2 = du * du + v * v;
            if d2 < r * r {
                2.0 * k * (r * r - d2).sqrt()
            } else {
                0.0
            }
        });
    }

    /// A hollow capsule: outer radius `r`, wall `wall`; its walls show as two dark lines.
    pub(crate) fn tube(&mut self, f: &Frame, len: f32, r: f32, wall: f32, m: Material, k: f32) {
        let half = len / 2.0;
        let ri = (r - wall).max(0.0);
        self.fill(f, half + r, r, m, |u, v| {
            let du = (u.abs() - half).max(0.0);
            let d2 = du * du + v * v;
            let outer = if d2 < r * r { (r * r - d2).sqrt() } else { 0.0 };
            let inner = if d2 < ri * ri {
                (ri * ri - d2).sqrt()
            } else {
                0.0
            };
            2.0 * k * (outer - inner)
        });
    }

    /// A cylinder lying with its axis along local v, seen from the side (a can, a bottle):
    /// length `len`, radius `r`; the shell of width `wall` is `shell`, the rest `content`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cylinder(
        &mut self,
        f: &Frame,
        len: f32,
        r: f32,
        wall: f32,
        content: Material,
        shell: Material,
        k: f32,
    ) {
        let ri = (r - wall).max(0.0);
        let chord = move |rad: f32, u: f32| {
            if u.abs() < rad {
                2.0 * (rad * rad - u * u).sqrt()
            } else {
                0.0
            }
        };
        self.fill(f, r, len / 2.0, content, |u, _| k * chord(ri, u));
        self.fill(f, r, len / 2.0, shell, |u, _| chord(r, u) - chord(ri, u));
    }

    /// A gear (or, with `teeth == 0`, a washer/disc) with a centre hole.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gear(
        &mut self,
        f: &Frame,
        r_root: f32,
        r_tip: f32,
        teeth: u32,
        r_hole: f32,
        m: Material,
        t: f32,
    ) {
        let tooth = teeth as f32 / std::f32::consts::TAU;
        self.fill(f, r_tip, r_tip, m, |u, v| {
            let rr = (u * u + v * v).sqrt();
            let on_tooth = teeth > 0 && (v.atan2(u) * tooth).rem_euclid(1.0) < 0.5;
            if rr < r_hole || rr > r_tip || (rr > r_root && !on_tooth) {
                0.0
            } else {
                t
            }
        });
    }

    /// A lobed, ellipsoid-profiled blob (vases, figurines, fruit): radius
    /// `r0 · (1 + amp · cos(lobes · θ + phase))`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn blob(
        &mut self,
        f: &Frame,
        r0: f32,
        lobes: f32,
        amp: f32,
        phase: f32,
        m: Material,
        t: f32,
    ) {
        let rmax = r0 * (1.0 + amp.abs());
        self.fill(f, rmax, rmax, m, |u, v| {
            let rr = (u * u + v * v).sqrt();
            let lim = r0 * (1.0 + amp * (lobes * v.atan2(u) + phase).cos());
            if rr < lim {
                t * (1.0 - (rr / lim).powi(2)).sqrt()
            } else {
                0.0
            }
        });
    }

    /// The upper half of a ring (a handle, an ear loop) of radius `r` and band width `bw`.
    pub(crate) fn arc(&mut self, f: &Frame, r: f32, bw: f32, m: Material, t: f32) {
        let (lo, hi) = (r - bw / 2.0, r + bw / 2.0);
        self.fill(f, hi, hi, m, |u, v| {
            let rr = (u * u + v * v).sqrt();
            if v <= 0.0 && rr >= lo && rr <= hi {
                t
            } else {
                0.0
            }
        });
    }

    /// Reads the canvas out through a two-energy detector with photon (Poisson-like) noise.
    pub(crate) fn expose(&self, rng: &mut impl Rng) -> (Grey16, Grey16) {
        let mut high = Grey16::new(self.width as u32, self.height as u32);
        let mut low = Grey16::new(self.width as u32, self.height as u32);
        for (i, (ph, pl)) in high.pixels_mut().zip(low.pixels_mut()).enumerate() {
            let (gh, gl) = gaussian_pair(rng);
            ph.0[0] = detect((-self.high[i]).exp(), PHOTONS_HIGH, gh);
            pl.0[0] = detect((-self.low[i]).exp(), PHOTONS_LOW, gl);
        }
        (high, low)
    }

    /// Reads the canvas out through a large profile's detector: its energy response
    /// ([`response`]), residual per-column gains, photon and read noise. The low channel
    /// is reported as at most the high one, as the scanners' dual-energy calibration does
    /// (low-energy photons are always attenuated at least as much), so `low <= high` holds
    /// at every pixel.
    pub(crate) fn expose_with(&self, det: &Detector, rng: &mut impl Rng) -> (Grey16, Grey16) {
        let gains: Vec<(f32, f32)> = (0..self.width)
            .map(|_| {
                let (a, b) = gaussian_pair(rng);
                (
                    1.0 + det.column_gain_spread * a,
                    1.0 + det.column_gain_spread * b,
                )
            })
            .collect();
        let read_high = (det.read_noise * det.photons_high).powi(2);
        let read_low = (det.read_noise * det.photons_low).powi(2);
        let (w, h) = (self.width as u32, self.height as u32);
        let mut high = Grey16::new(w, h);
        let mut low = Grey16::new(w, h);
        let rows = high
            .chunks_exact_mut(self.width)
            .zip(low.chunks_exact_mut(self.width));
        for (y, (row_h, row_l)) in rows.enumerate() {
            let base = y * self.width;
            for (x, (ph, pl)) in row_h.iter_mut().zip(row_l.iter_mut()).enumerate() {
                let (ah, al) = response(det, self.high[base + x], self.low[base + x]);
                let (gh, gl) = gaussian_pair(rng);
                let (kh, kl) = gains[x];
                let vh = detect_noisy((-ah).exp() * kh, det.photons_high, read_high, gh);
                let vl = detect_noisy((-al).exp() * kl, det.photons_low, read_low, gl);
                *ph = vh;
                *pl = vl.min(vh);
            }
        }
        (high, low)
    }
}

/// A detector's energy response: the attenuation (Σ mu·t) of the reference materials at
/// the two energies, as this detector measures them. The high channel is scaled by
/// `high_gain`; the low/high ratio `R ≥ 1` becomes `R^ratio_exponent`, then beam hardening
/// pulls it towards 1 for thick objects: `1 + (R' − 1) / (1 + hardening · A_high)`.
pub(crate) fn response(det: &Detector, a_high: f32, a_low: f32) -> (f32, f32) {
    if a_high <= 0.0 {
        return (0.0, a_low.max(0.0));
    }
    let ah = det.high_gain * a_high;
    let r = (a_low / a_high).max(1.0).powf(det.ratio_exponent);
    let r = 1.0 + (r - 1.0) / (1.0 + det.hardening * ah);
    (ah, ah * r)
}

/// Like [`detect`], with electronic read noise of variance `read_var` (photons²) on top.
fn detect_noisy(tr: f32, photons: f32, read_var: f32, gauss: f32) -> u16 {
    let mean = photons * tr;
    let count = mean + (mean.max(0.0) + read_var).sqrt() * gauss;
    (count / photons * 65535.0).round().clamp(1.0, 65535.0) as u16
}

/// Counts photons for transmission `tr` (Gaussian approximation of Poisson) and scales the
/// count back to the 16-bit range, never 0 so that the logarithm stays finite.
fn detect(tr: f32, photons: f32, gauss: f32) -> u16 {
    let mean = photons * tr;
    let count = mean + mean.sqrt() * gauss;
    (count / photons * 65535.0).round().clamp(1.0, 65535.0) as u16
}

/// Two independent standard normal samples (Box–Muller).
fn gaussian_pair(rng: &mut impl Rng) -> (f32, f32) {
    let u1: f32 = 1.0 - rng.gen::<f32>(); // (0, 1], keeps ln finite
    let u2: f32 = rng.gen::<f32>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

/// Converts a dual-energy pair into the operators' pseudo-colour image.
///
/// Hue comes from the ratio of low- to high-energy attenuation (organic → orange,
/// mixed/inorganic → green, metal → blue); brightness from the high-energy transmission
/// (dense → dark); where almost nothing attenuates, the image stays white.
/// The two images must have the same size; extra pixels of the larger one are ignored.
pub fn pseudo_colour(
    high: &ImageBuffer<Luma<u16>, Vec<u16>>,
    low: &ImageBuffer<Luma<u16>, Vec<u16>>,
) -> RgbImage {
    let (w, h) = (
        high.width().min(low.width()),
        high.height().min(low.height()),
    );
    RgbImage::from_fn(w, h, |x, y| {
        colour(high.get_pixel(x, y).0[0], low.get_pixel(x, y).0[0])
    })
}

const ORANGE: [f32; 3] = [1.0, 0.58, 0.12];
const GREEN: [f32; 3] = [0.25, 0.78, 0.22];
const BLUE: [f32; 3] = [0.12, 0.32, 0.95];

fn colour(high: u16, low: u16) -> Rgb<u8> {
    let th = f32::from(high.max(1)) / 65535.0;
    let tl = f32::from(low.max(1)) / 65535.0;
    let (ah, al) = (-th.ln(), -tl.ln());
    let saturation = ((ah - 0.015) / 0.12).clamp(0.0, 1.0);
    let ratio = al / ah.max(1e-3);
    let hue = if ratio <= 1.75 {
        ORANGE
    } else if ratio <= 2.15 {
        mix(ORANGE, GREEN, (ratio - 1.75) / 0.4)
    } else if ratio <= 2.55 {
        GREEN
    } else if ratio <= 2.85 {
        mix(GREEN, BLUE, (ratio - 2.55) / 0.3)
    } else {
        BLUE
    };
    let value = 0.06 + 0.94 * th.powf(0.6);
    let px = |c: f32| {
        ((1.0 - saturation + saturation * c) * value * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    Rgb([px(hue[0]), px(hue[1]), px(hue[2])])
}

fn mix(a: [f32; 3], b: [f32; 3], k: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * k,
        a[1] + (b[1] - a[1]) * k,
        a[2] + (b[2] - a[2]) * k,
    ]
}
