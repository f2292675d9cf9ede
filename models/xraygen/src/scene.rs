//! Line-sized scenes for the large scanner profiles: a carton on a wide belt holding
//! several lots of goods of different categories, overlapping in projection, with clutter
//! and packing material on top of and between them.
//!
//! A *lot* is one group of goods of one category packed together: a genuine lot is one item
//! in its own retail box (carton walls, pulp inserts, sometimes a leaflet — as in the `Small`
//! scans), a counterfeit lot is the generator's counterfeit signature (6–12 identical
//! unpackaged items in a tight aligned grid). The parcel's *main* lot is its largest (by
//! pixel box area); its category is the parcel's category and `spec.counterfeit` decides
//! whether it is counterfeit. Every other lot has a different category (never the main
//! one's, never repeated) and is counterfeit with the profile's fixed
//! `secondary_counterfeit_probability`. The parcel is counterfeit iff any lot is.
//!
//! World units are millimetres; the canvas samples them at the profile's pitch across (x)
//! and along (y) the belt.

use std::f32::consts::PI;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::parcel::{retail_box, Grid};
use crate::physics::{Canvas, Frame, PixelBox, ORGANIC};
use crate::{goods, pseudo_colour, Item, ParcelSpec, ScanWithItems, Scanner, CATEGORY_KEYS};

/// The carton may lie turned on the belt by up to this much (radians, about 6.9°).
pub(crate) const MAX_CARTON_TURN: f32 = 0.12;
/// Air on the belt before and after the carton, millimetres (each drawn in this range).
pub(crate) const LEAD_MM: (f32, f32) = (40.0, 80.0);
/// The least air between the carton and either side of the imaged belt, millimetres.
const SIDE_MM: f32 = 15.0;
/// A genuine retail box is turned up to this much in its slot (radians, about 14°).
const RETAIL_TURN: f32 = 0.25;
/// A counterfeit grid is aligned with the carton to within this much (radians, about 2.3°).
const GRID_TURN: f32 = 0.04;
/// The share of clutter pieces that are packing material (paper, air pillows, bubble wrap).
const PACKING_SHARE: f64 = 0.35;

/// A rectangle of the carton's room, in the carton's frame (millimetres).
#[derive(Debug, Clone, Copy)]
struct Slot {
    u: f32,
    v: f32,
    w: f32,
    h: f32,
}

/// What a lot holds.
#[derive(Debug, Clone, Copy)]
enum Contents {
    /// One item in a `w` × `h` retail box.
    Retail { w: f32, h: f32 },
    /// A counterfeit grid.
    Grid(Grid),
}

/// One lot, placed but not yet drawn.
#[derive(Debug, Clone, Copy)]
struct Lot {
    category: usize,
    counterfeit: bool,
    frame: Frame,
    contents: Contents,
    /// The seed its contents are drawn from (its own stream, so that the layout and the
    /// other lots do not depend on how many random numbers a drawing takes).
    seed: u64,
}

impl Lot {
    fn pixel_box(&self, cv: &Canvas) -> Option<PixelBox> {
        match self.contents {
            Contents::Retail { w, h } => cv.pixel_box(&self.frame, w / 2.0, h / 2.0),
            Contents::Grid(g) => cv.pixel_box(&self.frame, g.half_u(), g.half_v()),
        }
    }

    /// Makes the lot smaller by `k` in both directions, about its centre.
    fn shrink(&mut self, k: f32) {
        match &mut self.contents {
            Contents::Retail { w, h } => {
                *w *= k;
                *h *= k;
            }
            Contents::Grid(g) => {
                g.gw *= k;
                g.gh *= k;
            }
        }
    }

    fn draw(&self, cv: &mut Canvas) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        match self.contents {
            Contents::Retail { w, h } => {
                retail_box(cv, &self.frame, w, h, self.category, &mut rng);
            }
            Contents::Grid(g) => {
                let item_seed: u64 = rng.gen();
                g.draw(cv, &self.frame, self.category, item_seed);
            }
        }
    }
}

/// A secondary lot's box covers at most this share of the main lot's box: the main goods
/// are the parcel's clearly largest lot, as an operator would name them. (With only "smaller"
/// a quarter of the 100100's parcels had a second lot within 5 % of the main's area: a label
/// nobody could read off the scan.)
const MAIN_MARGIN: (u64, u64) = (3, 5);

/// Whether `b`'s area is at most [`MAIN_MARGIN`] of `main`'s.
fn clearly_smaller(b: &PixelBox, main: &PixelBox) -> bool {
    area(b) * MAIN_MARGIN.1 <= area(main) * MAIN_MARGIN.0
}

fn area(b: &PixelBox) -> u64 {
    u64::from(b[2] - b[0]) * u64::from(b[3] - b[1])
}

/// Renders one parcel on a large profile. `draw.rgb` false leaves `rgb` empty (0 × 0), for
/// dataset writers that store only the dual-energy pair.
pub(crate) fn render(
    scanner: Scanner,
    spec: ParcelSpec,
    seed: u64,
    draw: crate::Draw,
) -> ScanWithItems {
    let profile = scanner.profile();
    let (det, diff) = (&profile.detector, &profile.difficulty);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(scanner.stream());
    let (sx, sy) = (det.pitch_across_mm, det.pitch_along_mm);
    let width = rng.gen_range(det.width_px.0..=det.width_px.1) as usize;
    let belt = width as f32 * sx;

    // The carton, turned a little on the belt, somewhere across it.
    let a = rng.gen_range(diff.carton_across_mm.0..=diff.carton_across_mm.1);
    let b = rng.gen_range(diff.carton_along_mm.0..=diff.carton_along_mm.1);
    let turn = rng.gen_range(-MAX_CARTON_TURN..=MAX_CARTON_TURN);
    let (ex, ey) = Frame::new(0.0, 0.0, turn).extents(a / 2.0, b / 2.0);
    let lead = rng.gen_range(LEAD_MM.0..=LEAD_MM.1);
    let trail = rng.gen_range(LEAD_MM.0..=LEAD_MM.1);
    let height = ((lead + 2.0 * ey + trail) / sy).ceil() as usize;
    let (lo, hi) = (ex + SIDE_MM, belt - ex - SIDE_MM);
    let cx = if lo < hi {
        rng.gen_range(lo..hi)
    } else {
        belt / 2.0
    };
    let carton = Frame::new(cx, lead + ey, turn);
    let mut cv = Canvas::with_pitch(width, height, sx, sy);
    cv.rect(&carton, a, b, ORGANIC, 4.0);
    cv.outline(&carton, a, b, 5.0, ORGANIC, 9.0);
    let tape = rng.gen_range(40.0..60.0);
    if a >= b {
        cv.rect(&carton, a, tape, ORGANIC, 1.5);
    } else {
        cv.rect(&carton, tape, b, ORGANIC, 1.5);
    }
    let (iw, ih) = (a - 16.0, b - 16.0);

    // The lots: slots of the room, the main one the largest.
    let n = rng.gen_range(diff.lots.0..=diff.lots.1);
    let room = Slot {
        u: 0.0,
        v: 0.0,
        w: iw,
        h: ih,
    };
    let mut slots = Vec::with_capacity(n);
    split(room, n, &mut rng, &mut slots);
    let main = (0..slots.len())
        .max_by(|&i, &j| (slots[i].w * slots[i].h).total_cmp(&(slots[j].w * slots[j].h)))
        .unwrap_or(0);
    let main_category = spec.category.min(CATEGORY_KEYS.len() - 1);
    let mut others: Vec<usize> = (0..CATEGORY_KEYS.len())
        .filter(|&c| c != main_category)
        .collect();
    others.shuffle(&mut rng);
    let mut others = others.into_iter();
    let mut lots: Vec<Lot> = Vec::with_capacity(n);
    for (k, slot) in slots.iter().enumerate() {
        let (category, counterfeit) = if k == main {
            (main_category, spec.counterfeit)
        } else {
            (
                others.next().unwrap_or(main_category),
                // Drawn either way: `exact` keeps the layout and categories.
                rng.gen_bool(diff.secondary_counterfeit_probability) && !draw.exact,
            )
        };
        lots.push(place(
            &carton,
            room,
            *slot,
            diff.overlap,
            (category, counterfeit),
            &mut rng,
        ));
    }
    // The main lot first; then the others, each kept clearly smaller than the main one
    // (MAIN_MARGIN), so that which lot is the parcel's main goods can be seen.
    lots.swap(0, main);
    let mut boxed: Vec<(Lot, PixelBox)> = Vec::with_capacity(n);
    let main_box = lots[0]
        .pixel_box(&cv)
        .or_else(|| cv.pixel_box(&carton, iw / 2.0, ih / 2.0))
        .unwrap_or([0, 0, width as u32, height as u32]);
    boxed.push((lots[0], main_box));
    for lot in &lots[1..] {
        let mut lot = *lot;
        let mut found = lot.pixel_box(&cv);
        for _ in 0..60 {
            match found {
                Some(b) if !clearly_smaller(&b, &main_box) => {
                    lot.shrink(0.9);
                    found = lot.pixel_box(&cv);
                }
                _ => break,
            }
        }
        if let Some(b) = found.filter(|b| clearly_smaller(b, &main_box)) {
            boxed.push((lot, b));
        }
    }
    for (lot, _) in &boxed {
        lot.draw(&mut cv);
    }

    // Clutter and packing material, anywhere in the carton, over and between the lots.
    for _ in 0..rng.gen_range(diff.clutter.0..=diff.clutter.1) {
        let at = carton.sub(
            rng.gen_range(-0.45..0.45) * iw,
            rng.gen_range(-0.45..0.45) * ih,
            rng.gen_range(0.0..PI),
        );
        if rng.gen_bool(PACKING_SHARE) {
            packing(&mut cv, &at, &mut rng);
        } else {
            goods::clutter(&mut cv, &at, &mut rng);
        }
    }

    let (high, low) = cv.expose_with(det, &mut rng);
    let rgb = if draw.rgb {
        pseudo_colour(&high, &low)
    } else {
        image::RgbImage::new(0, 0)
    };
    let items: Vec<Item> = boxed
        .iter()
        .map(|(lot, b)| Item {
            category: lot.category,
            counterfeit: lot.counterfeit,
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        })
        .collect();
    ScanWithItems {
        scanner,
        category: main_category,
        counterfeit: items.iter().any(|i| i.counterfeit),
        rgb,
        high,
        low,
        items,
    }
}

/// Cuts `slot` into `n` slots (guillotine cuts across the longer side, each cut within
/// ±15 % of an even share), in order.
/// A span (its centre and length) cut at `frac` of its length: the two spans, first the
/// one nearer the start.
fn cut(centre: f32, len: f32, frac: f32) -> [(f32, f32); 2] {
    let first = len * frac;
    [
        (centre - len / 2.0 + first / 2.0, first),
        (centre + first / 2.0, len - first),
    ]
}

fn split(slot: Slot, n: usize, rng: &mut ChaCha8Rng, out: &mut Vec<Slot>) {
    if n <= 1 {
        out.push(slot);
        return;
    }
    let n1 = n / 2;
    let frac = (n1 as f32 / n as f32 * rng.gen_range(0.85..1.15)).clamp(0.15, 0.85);
    let (first, second) = if slot.w >= slot.h {
        let [(u1, w1), (u2, w2)] = cut(slot.u, slot.w, frac);
        (
            Slot {
                u: u1,
                w: w1,
                ..slot
            },
            Slot {
                u: u2,
                w: w2,
                ..slot
            },
        )
    } else {
        let [(v1, h1), (v2, h2)] = cut(slot.v, slot.h, frac);
        (
            Slot {
                v: v1,
                h: h1,
                ..slot
            },
            Slot {
                v: v2,
                h: h2,
                ..slot
            },
        )
    };
    split(first, n1, rng, out);
    split(second, n - n1, rng, out);
}

/// Places a lot in its slot: the slot grows by up to `overlap` of its size (each way) and
/// moves by up to half that, into its neighbours; the lot fills most of it. The lot, turned,
/// stays inside `room` (the carton's inside): it is moved, or if need be shrunk, to fit.
fn place(
    carton: &Frame,
    room: Slot,
    slot: Slot,
    overlap: f32,
    (category, counterfeit): (usize, bool),
    rng: &mut ChaCha8Rng,
) -> Lot {
    let w = slot.w * (1.0 + overlap * rng.gen_range(0.0..=1.0));
    let h = slot.h * (1.0 + overlap * rng.gen_range(0.0..=1.0));
    let u = slot.u + overlap * rng.gen_range(-0.5..=0.5) * slot.w;
    let v = slot.v + overlap * rng.gen_range(-0.5..=0.5) * slot.h;
    let (turn, contents) = if counterfeit {
        let grid = Grid {
            gw: w * rng.gen_range(0.84..0.98),
            gh: h * rng.gen_range(0.84..0.98),
            count: rng.gen_range(6..=12),
            fill: rng.gen_range(0.86..0.95),
        };
        (rng.gen_range(-GRID_TURN..GRID_TURN), Contents::Grid(grid))
    } else {
        let (bw, bh) = (w * rng.gen_range(0.6..0.9), h * rng.gen_range(0.6..0.9));
        (
            rng.gen_range(-RETAIL_TURN..RETAIL_TURN),
            Contents::Retail { w: bw, h: bh },
        )
    };
    let (hu, hv) = match contents {
        Contents::Retail { w, h } => (w / 2.0, h / 2.0),
        Contents::Grid(g) => (g.half_u(), g.half_v()),
    };
    let (eu, ev) = Frame::new(0.0, 0.0, turn).extents(hu, hv);
    let k = (room.w / 2.0 / eu).min(room.h / 2.0 / ev).min(1.0);
    let (eu, ev) = (eu * k, ev * k);
    // max-then-min, not clamp: rounding may leave the bounds a hair crossed.
    let u = u
        .max(room.u - room.w / 2.0 + eu)
        .min(room.u + room.w / 2.0 - eu);
    let v = v
        .max(room.v - room.h / 2.0 + ev)
        .min(room.v + room.h / 2.0 - ev);
    let mut lot = Lot {
        category,
        counterfeit,
        frame: carton.sub(u, v, turn),
        contents,
        seed: rng.gen(),
    };
    lot.shrink(k);
    lot
}

/// Packing material: crumpled paper, an air pillow, or a sheet of bubble wrap.
fn packing(cv: &mut Canvas, f: &Frame, rng: &mut ChaCha8Rng) {
    match rng.gen_range(0..3) {
        0 => cv.ball(
            f,
            rng.gen_range(30.0..70.0),
            rng.gen_range(20.0..50.0),
            ORGANIC,
            rng.gen_range(8.0..16.0),
        ),
        1 => cv.pillow(
            f,
            rng.gen_range(80.0..160.0),
            rng.gen_range(50.0..100.0),
            ORGANIC,
            1.2,
        ),
        _ => {
            let (w, h) = (rng.gen_range(100.0..200.0), rng.gen_range(80.0..150.0));
            cv.rect(f, w, h, ORGANIC, 0.6);
            let pitch = 12.0;
            let (cols, rows) = ((w / pitch) as usize, (h / pitch) as usize);
            for i in 0..cols {
                for j in 0..rows {
                    let at = f.at(
                        (i as f32 + 0.5) * pitch - w / 2.0,
                        (j as f32 + 0.5) * pitch - h / 2.0,
                    );
                    cv.ball(&at, 4.5, 4.5, ORGANIC, 1.0);
                }
            }
        }
    }
}
