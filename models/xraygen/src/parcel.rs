//! Packing a parcel: the shipping carton, how the goods sit inside it, and clutter.
//!
//! This is where genuine and counterfeit parcels differ (see the model card):
//! - genuine: 1–3 items, each in its own retail box (carton walls, pulp inserts at both
//!   ends, sometimes a leaflet), placed loosely and at odd angles;
//! - counterfeit: 6–12 identical items (same shape, same internal details) in a tight,
//!   regular, aligned grid with no retail packaging at all — how counterfeit goods travel
//!   in bulk, stripped of boxes to save volume and weight.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::goods;
use crate::physics::{Canvas, Frame, PixelBox, ORGANIC};
use crate::ParcelSpec;

/// Draws the whole parcel for `spec` onto the canvas (the `Small` scanner's scenes) and
/// returns the pixel boxes of its lots: each retail box of a genuine parcel, or the one
/// counterfeit grid. Recording the boxes draws nothing from `rng`, so the scan is the same
/// bytes it always was.
pub(crate) fn pack(cv: &mut Canvas, spec: ParcelSpec, rng: &mut ChaCha8Rng) -> Vec<PixelBox> {
    let (w, h) = (cv.width as f32, cv.height as f32);
    let (bw, bh) = (w * rng.gen_range(0.80..0.88), h * rng.gen_range(0.80..0.88));
    let carton = Frame::new(
        w / 2.0 + rng.gen_range(-4.0..4.0),
        h / 2.0 + rng.gen_range(-4.0..4.0),
        rng.gen_range(-0.06..0.06),
    );
    // Top and bottom flaps, the side walls seen edge-on, and a strip of tape.
    cv.rect(&carton, bw, bh, ORGANIC, 4.0);
    cv.outline(&carton, bw, bh, 4.0, ORGANIC, 9.0);
    if bw >= bh {
        cv.rect(&carton, bw, rng.gen_range(14.0..22.0), ORGANIC, 1.5);
    } else {
        cv.rect(&carton, rng.gen_range(14.0..22.0), bh, ORGANIC, 1.5);
    }

    let (iw, ih) = (bw - 16.0, bh - 16.0);
    let category = spec.category.min(crate::CATEGORY_KEYS.len() - 1);
    let room = Room {
        carton: &carton,
        iw,
        ih,
    };
    let lots = if spec.counterfeit {
        bulk_grid(cv, room, category, rng)
    } else {
        retail(cv, room, category, rng)
    };

    for _ in 0..rng.gen_range(0..=3) {
        let at = carton.sub(
            rng.gen_range(-0.42..0.42) * iw,
            rng.gen_range(-0.42..0.42) * ih,
            rng.gen_range(0.0..std::f32::consts::PI),
        );
        goods::clutter(cv, &at, rng);
    }
    lots
}

/// The room for the goods inside the carton's walls: the carton's frame and the room's
/// inner width and height.
#[derive(Clone, Copy)]
struct Room<'a> {
    carton: &'a Frame,
    iw: f32,
    ih: f32,
}

/// Genuine: 1–3 items, each in its own retail box with inserts. Returns the boxes' pixels.
fn retail(cv: &mut Canvas, room: Room, category: usize, rng: &mut ChaCha8Rng) -> Vec<PixelBox> {
    let Room { carton, iw, ih } = room;
    // i32, as it always was: the integer type decides which bits the range draws.
    let n: i32 = rng.gen_range(1..=3);
    let mut lots = Vec::with_capacity(3);
    let along_u = iw >= ih;
    let (len, wid) = if along_u { (iw, ih) } else { (ih, iw) };
    let slot = len / n as f32;
    for k in 0..n {
        let a = if n == 1 {
            len * rng.gen_range(0.55..0.85)
        } else {
            slot * rng.gen_range(0.72..0.95)
        };
        let b = wid * rng.gen_range(0.5..0.9);
        let along = -len / 2.0 + slot * (k as f32 + 0.5) + rng.gen_range(-0.06..0.06) * slot;
        let across = rng.gen_range(-0.4..0.4) * (wid - b);
        let turn = rng.gen_range(-0.25..0.25);
        let (f, bx, by) = if along_u {
            (carton.sub(along, across, turn), a, b)
        } else {
            (carton.sub(across, along, turn), b, a)
        };
        lots.extend(cv.pixel_box(&f, bx / 2.0, by / 2.0));
        retail_box(cv, &f, bx, by, category, rng);
    }
    lots
}

/// One retail box: carton faces and walls, pulp inserts at both ends, maybe a leaflet,
/// and the item in the middle.
pub(crate) fn retail_box(
    cv: &mut Canvas,
    f: &Frame,
    w: f32,
    h: f32,
    category: usize,
    rng: &mut ChaCha8Rng,
) {
    cv.rect(f, w, h, ORGANIC, 2.5);
    cv.outline(f, w, h, 2.0, ORGANIC, 6.0);
    let (long, short) = (w.max(h), w.min(h));
    let insert = long * rng.gen_range(0.10..0.16);
    let offset = long / 2.0 - 2.0 - insert / 2.0;
    for end in [-1.0, 1.0] {
        if w >= h {
            cv.rect(&f.at(end * offset, 0.0), insert, short - 4.0, ORGANIC, 10.0);
        } else {
            cv.rect(&f.at(0.0, end * offset), short - 4.0, insert, ORGANIC, 10.0);
        }
    }
    if rng.gen_bool(0.5) {
        cv.rect(
            &f.at(rng.gen_range(-3.0..3.0), rng.gen_range(-3.0..3.0)),
            w * 0.8,
            h * 0.8,
            ORGANIC,
            1.2,
        );
    }
    let room = long - 2.0 * insert - 8.0;
    let (iw, ih) = if w >= h {
        (room, short - 8.0)
    } else {
        (short - 8.0, room)
    };
    let scale = rng.gen_range(0.85..0.97);
    goods::item(cv, f, iw * scale, ih * scale, category, rng);
}

/// Counterfeit: 6–12 identical items in a tight, aligned grid, no packaging. Returns the
/// grid's pixels (one lot).
fn bulk_grid(cv: &mut Canvas, room: Room, category: usize, rng: &mut ChaCha8Rng) -> Vec<PixelBox> {
    let Room { carton, iw, ih } = room;
    let count: usize = rng.gen_range(6..=12);
    let (gw, gh) = (
        iw * rng.gen_range(0.84..0.98),
        ih * rng.gen_range(0.84..0.98),
    );
    let fill = rng.gen_range(0.86..0.95);
    let grid = carton.sub(
        rng.gen_range(-0.5..0.5) * (iw - gw),
        rng.gen_range(-0.5..0.5) * (ih - gh),
        rng.gen_range(-0.04..0.04),
    );
    let item_seed: u64 = rng.gen();
    let lot = Grid {
        gw,
        gh,
        count,
        fill,
    };
    lot.draw(cv, &grid, category, item_seed);
    cv.pixel_box(&grid, lot.half_u(), lot.half_v())
        .into_iter()
        .collect()
}

/// A counterfeit lot: `count` identical items in a `gw` × `gh` grid, each filling `fill`
/// of its cell (both ways).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub(crate) gw: f32,
    pub(crate) gh: f32,
    pub(crate) count: usize,
    pub(crate) fill: f32,
}

impl Grid {
    /// Columns and rows: cells as square as the grid allows, at least 2 columns.
    fn shape(&self) -> (usize, usize) {
        let count = self.count.max(4);
        let cols = ((count as f32 * self.gw / self.gh).sqrt().round() as usize).clamp(2, count / 2);
        (cols, count.div_ceil(cols))
    }

    fn cell(&self) -> (f32, f32) {
        let (cols, rows) = self.shape();
        (self.gw / cols as f32, self.gh / rows as f32)
    }

    /// Half the width of the items' union, in the grid's frame.
    pub(crate) fn half_u(&self) -> f32 {
        (self.gw - self.cell().0 * (1.0 - self.fill)) / 2.0
    }

    /// Half the height of the items' union, in the grid's frame.
    pub(crate) fn half_v(&self) -> f32 {
        (self.gh - self.cell().1 * (1.0 - self.fill)) / 2.0
    }

    /// Draws the items, every one from the same seed: identical copies.
    pub(crate) fn draw(&self, cv: &mut Canvas, grid: &Frame, category: usize, item_seed: u64) {
        let Grid {
            gw,
            gh,
            count,
            fill,
        } = *self;
        let (cols, _) = self.shape();
        let (cw, ch) = self.cell();
        for k in 0..count {
            let (i, j) = (k % cols, k / cols);
            let at = grid.at(
                (i as f32 + 0.5) * cw - gw / 2.0,
                (j as f32 + 0.5) * ch - gh / 2.0,
            );
            let mut same = ChaCha8Rng::seed_from_u64(item_seed);
            goods::item(cv, &at, cw * fill, ch * fill, category, &mut same);
        }
    }
}
