//! The goods: one drawing per category, each with a signature of shape, material and
//! internal structure that survives down-scaling to the classifier's input size.
//!
//! Every item is drawn centred in a footprint of `w` × `h` pixels of its frame. Element
//! sizes scale with the footprint, so the same item can sit alone in a retail box or be
//! one of a dozen in a counterfeit grid.

use std::f32::consts::{FRAC_PI_2, PI, TAU};

use rand::Rng;

use crate::physics::{Canvas, Frame, Material, DENSE_ORGANIC, METAL, MIXED, ORGANIC};

/// Draws one item of category `category` (an index into `CATEGORY_KEYS`).
pub(crate) fn item(
    cv: &mut Canvas,
    f: &Frame,
    w: f32,
    h: f32,
    category: usize,
    rng: &mut impl Rng,
) {
    // Each drawing assumes a landscape footprint; turn portrait ones.
    let (f, w, h) = if w < h {
        (f.turn(FRAC_PI_2), h, w)
    } else {
        (*f, w, h)
    };
    let g = Goods {
        cv,
        f,
        w,
        h,
        s: (w * h).sqrt() / 80.0,
    };
    match category {
        0 => g.agri_inputs(rng),
        1 => g.food(rng),
        2 => g.medicine(rng),
        3 => g.cosmetics(rng),
        4 => g.medical_devices(rng),
        5 => g.electronics(rng),
        6 => g.auto_parts(rng),
        7 => g.decoration(rng),
        8 => g.explosive_precursors(rng),
        9 => g.childrens_products(rng),
        10 => g.apparel_footwear(rng),
        11 => g.bags_leather(rng),
        12 => g.tobacco(rng),
        13 => g.ppe(rng),
        14 => g.publications(rng),
        _ => g.other(rng),
    }
}

/// A small everyday object that can turn up in any parcel (and overlap anything).
pub(crate) fn clutter(cv: &mut Canvas, f: &Frame, rng: &mut impl Rng) {
    match rng.gen_range(0..6) {
        0 => cv.ellipse(f, 5.0, 5.0, METAL, 1.8), // coin
        1 => {
            // pen with a metal tip
            let len = rng.gen_range(40.0..70.0);
            cv.rod(f, len, 2.5, ORGANIC, 1.5);
            cv.rod(&f.at(len / 2.0, 0.0), 4.0, 0.8, METAL, 1.0);
        }
        2 => cv.ball(
            f,
            rng.gen_range(8.0..16.0),
            rng.gen_range(6.0..12.0),
            ORGANIC,
            12.0,
        ), // paper wad
        3 => cv.gear(f, 13.0, 13.0, 0, 8.0, ORGANIC, 14.0), // tape roll
        4 => {
            // a key
            cv.rect(f, 22.0, 5.0, METAL, 1.5);
            cv.gear(&f.at(-13.0, 0.0), 6.0, 6.0, 0, 2.0, METAL, 1.5);
        }
        _ => cv.rod(f, rng.gen_range(50.0..90.0), 1.5, MIXED, 2.0), // cable
    }
}

struct Goods<'a> {
    cv: &'a mut Canvas,
    f: Frame,
    w: f32,
    h: f32,
    /// Element scale: 1.0 for an 80 × 80 footprint.
    s: f32,
}

impl Goods<'_> {
    fn pick(&self, rng: &mut impl Rng, fx: f32, fy: f32) -> Frame {
        self.f.at(
            rng.gen_range(-fx..=fx) * self.w,
            rng.gen_range(-fy..=fy) * self.h,
        )
    }

    /// Fertiliser or seed sacks: a woven pouch full of inorganic granules.
    fn agri_inputs(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        self.cv.pillow(&self.f, w * 0.95, h * 0.9, ORGANIC, 16.0);
        self.cv
            .rect(&self.f.at(-w * 0.44, 0.0), 3.0 * s, h * 0.9, ORGANIC, 10.0);
        let n = ((w * h) * 0.012) as usize;
        for _ in 0..n.clamp(20, 400) {
            let r = rng.gen_range(1.3..2.3) * s.max(0.7);
            let at = self.pick(rng, 0.42, 0.38);
            self.cv.ball(&at, r, r, MIXED, 3.0 * r);
        }
    }

    /// Tinned food (steel shell, liquid inside) or irregular organic produce.
    fn food(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        if rng.gen_bool(0.55) {
            let n = rng.gen_range(1..=3);
            let r = (w / n as f32 * 0.42).min(h * 0.45);
            for k in 0..n {
                let du = (k as f32 + 0.5) * w / n as f32 - w / 2.0;
                let at = self.f.at(du, 0.0);
                self.cv
                    .cylinder(&at, h * 0.85, r, 1.0 * s, ORGANIC, METAL, 1.0);
                for end in [-1.0, 1.0] {
                    self.cv.rect(
                        &at.at(0.0, end * h * 0.42),
                        2.0 * r,
                        1.5 * s,
                        METAL,
                        0.25 * r,
                    );
                }
            }
        } else {
            for _ in 0..rng.gen_range(3..=6) {
                let at = self.pick(rng, 0.28, 0.22).turn(rng.gen_range(0.0..PI));
                let (rx, ry) = (rng.gen_range(0.14..0.28) * w, rng.gen_range(0.18..0.35) * h);
                self.cv.blob(
                    &at,
                    rx.min(ry * 1.4),
                    2.0,
                    0.2,
                    0.0,
                    ORGANIC,
                    rng.gen_range(25.0..50.0),
                );
            }
        }
    }

    /// Blister packs: a grid of small round tablets under foil.
    fn medicine(self, rng: &mut impl Rng) {
        let (w, h) = (self.w, self.h);
        let packs = rng.gen_range(1..=2);
        let cols = rng.gen_range(4..=6);
        let rows = rng.gen_range(2..=3);
        let ph = h * 0.9 / packs as f32;
        for p in 0..packs {
            let at = self.f.at(0.0, (p as f32 + 0.5) * ph - h * 0.45);
            self.cv.rect(&at, w * 0.92, ph * 0.92, ORGANIC, 3.0);
            self.cv.rect(&at, w * 0.92, ph * 0.92, MIXED, 0.6);
            let (cw, rh) = (w * 0.86 / cols as f32, ph * 0.8 / rows as f32);
            let r = cw.min(rh) * 0.32;
            for i in 0..cols {
                for j in 0..rows {
                    let pill = at.at(
                        (i as f32 + 0.5) * cw - w * 0.43,
                        (j as f32 + 0.5) * rh - ph * 0.4,
                    );
                    self.cv.ball(&pill, r, r, DENSE_ORGANIC, 3.5 * r);
                }
            }
        }
    }

    /// Bottles of liquid (glass or plastic) with metal caps and a pump tube.
    fn cosmetics(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        let n = rng.gen_range(1..=3);
        let glass = rng.gen_bool(0.5);
        let slot = w / n as f32;
        let r = (slot * 0.33).min(h * 0.3);
        for k in 0..n {
            let at = self.f.at((k as f32 + 0.5) * slot - w / 2.0, h * 0.08);
            let body = h * 0.72;
            let shell = if glass { MIXED } else { ORGANIC };
            self.cv.cylinder(&at, body, r, 1.6 * s, ORGANIC, shell, 1.0);
            let cap = at.at(0.0, -body / 2.0 - h * 0.07);
            self.cv.rect(&cap, r * 1.1, h * 0.14, METAL, 2.5);
            self.cv
                .rod(&at.turn(FRAC_PI_2), body * 0.85, 0.8 * s, ORGANIC, 2.0);
        }
    }

    /// Catheters and tubing, a syringe with a needle, small metal clips and springs.
    fn medical_devices(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        let tubes = rng.gen_range(2..=4);
        for k in 0..tubes {
            let at = self.f.sub(
                0.0,
                (k as f32 + 0.5) * h * 0.5 / tubes as f32 - h * 0.45,
                rng.gen_range(-0.08..0.08),
            );
            self.cv.tube(
                &at,
                w * 0.8,
                rng.gen_range(2.5..4.0) * s,
                1.0 * s,
                ORGANIC,
                3.0,
            );
        }
        let syringe = self.f.at(-w * 0.1, h * 0.22);
        self.cv
            .tube(&syringe, w * 0.45, 5.0 * s, 1.2 * s, ORGANIC, 2.5);
        self.cv
            .rod(&syringe.at(-w * 0.08, 0.0), w * 0.4, 1.2 * s, ORGANIC, 2.0);
        self.cv
            .rod(&syringe.at(w * 0.32, 0.0), w * 0.15, 0.6 * s, METAL, 1.0);
        for _ in 0..rng.gen_range(3..=6) {
            let at = self.pick(rng, 0.4, 0.4).turn(rng.gen_range(0.0..PI));
            self.cv.outline(&at, 6.0 * s, 3.0 * s, 1.0 * s, METAL, 1.5);
        }
    }

    /// A circuit board with metal components, chips and a battery block.
    fn electronics(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        self.cv.rect(&self.f, w * 0.92, h * 0.8, MIXED, 4.0);
        let n = ((w * h) / 300.0) as usize;
        for _ in 0..n.clamp(6, 40) {
            let r = rng.gen_range(1.2..2.5) * s;
            let at = self.pick(rng, 0.42, 0.36);
            self.cv.ball(&at, r, r, METAL, 3.0);
        }
        for _ in 0..rng.gen_range(2..=4) {
            let at = self.pick(rng, 0.3, 0.28);
            let side = rng.gen_range(8.0..14.0) * s;
            self.cv.rect(&at, side, side, MIXED, 5.0);
            self.cv
                .outline(&at, side + 2.0 * s, side + 2.0 * s, 1.0 * s, METAL, 0.8);
        }
        let battery = self.f.at(w * 0.3, 0.0);
        self.cv.rect(&battery, w * 0.3, h * 0.62, MIXED, 22.0);
        self.cv
            .outline(&battery, w * 0.3, h * 0.62, 1.2 * s, METAL, 2.0);
    }

    /// Dense metal: gears, brake discs with bolt holes, or spark plugs.
    fn auto_parts(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        match rng.gen_range(0..3) {
            0 => {
                let teeth = rng.gen_range(12..=24);
                let at = self.f.at(-w * 0.05, 0.0);
                self.cv
                    .gear(&at, h * 0.38, h * 0.46, teeth, h * 0.12, METAL, 7.0);
                if w > 1.4 * h {
                    let small = self.f.at(w * 0.33, 0.0);
                    self.cv
                        .gear(&small, h * 0.2, h * 0.26, teeth / 2, h * 0.07, METAL, 7.0);
                }
            }
            1 => {
                let (ro, ri, rb) = (h * 0.46, h * 0.14, h * 0.05);
                let holes: Vec<(f32, f32)> = (0..5)
                    .map(|k| {
                        let a = k as f32 * TAU / 5.0;
                        (h * 0.25 * a.cos(), h * 0.25 * a.sin())
                    })
                    .collect();
                self.cv.fill(&self.f, ro, ro, METAL, |u, v| {
                    let rr = (u * u + v * v).sqrt();
                    let in_hole = holes
                        .iter()
                        .any(|&(x, y)| (u - x).powi(2) + (v - y).powi(2) < rb * rb);
                    if rr > ro || rr < ri || in_hole {
                        0.0
                    } else {
                        6.0
                    }
                });
            }
            _ => {
                let n = rng.gen_range(2..=4);
                for k in 0..n {
                    let at = self.f.at(0.0, (k as f32 + 0.5) * h / n as f32 - h / 2.0);
                    self.cv
                        .rod(&at.at(-w * 0.15, 0.0), w * 0.4, 3.0 * s, MIXED, 2.0);
                    self.cv
                        .rod(&at.at(w * 0.2, 0.0), w * 0.3, 4.0 * s, METAL, 1.0);
                    self.cv
                        .rect(&at.at(w * 0.1, 0.0), 4.0 * s, 11.0 * s, METAL, 8.0);
                }
            }
        }
    }

    /// Ceramic and glass ornaments: irregular lobed shapes, baubles.
    fn decoration(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        let n = rng.gen_range(2..=4);
        for k in 0..n {
            let at = self.f.at(
                (k as f32 + 0.5) * w / n as f32 - w / 2.0,
                rng.gen_range(-0.1..0.1) * h,
            );
            let r0 = (w / n as f32 * 0.4).min(h * 0.33) * rng.gen_range(0.8..1.0);
            let lobes = rng.gen_range(3..=7) as f32;
            self.cv.blob(
                &at,
                r0,
                lobes,
                rng.gen_range(0.15..0.35),
                rng.gen_range(0.0..TAU),
                MIXED,
                rng.gen_range(5.0..10.0),
            );
        }
        if rng.gen_bool(0.5) {
            for k in 0..8 {
                let a = k as f32 * TAU / 8.0;
                let at = self.f.at(a.cos() * h * 0.3, a.sin() * h * 0.3);
                self.cv.ball(&at, 3.0 * s, 3.0 * s, MIXED, 4.0 * s);
            }
        }
    }

    /// Liquid containers full of dense organic: jerrycans or big plastic bottles, no metal.
    fn explosive_precursors(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        if rng.gen_bool(0.6) {
            let body = self.f.at(0.0, h * 0.06);
            self.cv
                .pillow(&body, w * 0.85, h * 0.8, DENSE_ORGANIC, 60.0);
            self.cv
                .outline(&body, w * 0.85, h * 0.8, 2.0 * s, ORGANIC, 8.0);
            let handle = self.f.at(-w * 0.2, -h * 0.36);
            self.cv
                .outline(&handle, w * 0.3, h * 0.14, 2.5 * s, ORGANIC, 10.0);
            self.cv.ball(
                &self.f.at(w * 0.3, -h * 0.38),
                5.0 * s,
                4.0 * s,
                ORGANIC,
                16.0,
            );
        } else {
            let n = rng.gen_range(2..=3);
            let slot = w / n as f32;
            let r = (slot * 0.42).min(h * 0.4);
            for k in 0..n {
                let at = self.f.at((k as f32 + 0.5) * slot - w / 2.0, h * 0.05);
                self.cv
                    .cylinder(&at, h * 0.8, r, 1.5 * s, DENSE_ORGANIC, ORGANIC, 1.6);
                self.cv
                    .rect(&at.at(0.0, -h * 0.44), r * 0.7, h * 0.08, ORGANIC, 2.0 * r);
            }
        }
    }

    /// Plastic toys (a figure or a car) with a couple of small batteries.
    fn childrens_products(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        if rng.gen_bool(0.5) {
            let c = self.f;
            self.cv
                .ball(&c.at(-w * 0.1, 0.0), w * 0.22, h * 0.3, ORGANIC, 30.0);
            self.cv
                .ball(&c.at(w * 0.22, 0.0), h * 0.2, h * 0.2, ORGANIC, 25.0);
            for (du, dv, a) in [
                (-0.15, -0.32, 1.2),
                (-0.15, 0.32, -1.2),
                (-0.38, -0.15, 0.3),
                (-0.38, 0.15, -0.3),
            ] {
                self.cv
                    .rod(&c.sub(w * du, h * dv, a), h * 0.22, h * 0.07, ORGANIC, 1.5);
            }
        } else {
            self.cv.rect(&self.f, w * 0.8, h * 0.5, ORGANIC, 12.0);
            self.cv
                .rect(&self.f.at(w * 0.05, 0.0), w * 0.35, h * 0.35, ORGANIC, 8.0);
            for (du, dv) in [(-0.28, -0.3), (0.28, -0.3), (-0.28, 0.3), (0.28, 0.3)] {
                let wheel = self.f.at(w * du, h * dv);
                self.cv
                    .gear(&wheel, h * 0.14, h * 0.14, 0, h * 0.05, ORGANIC, 25.0);
            }
        }
        let bay = self.f.at(-w * 0.05, h * 0.05);
        self.cv.rect(&bay, 16.0 * s, 12.0 * s, ORGANIC, 4.0);
        let n = rng.gen_range(1..=3);
        for k in 0..n {
            let at = bay.at(0.0, (k as f32 - (n - 1) as f32 / 2.0) * 4.8 * s);
            self.cv.rod(&at, 10.0 * s, 2.2 * s, METAL, 0.5);
        }
    }

    /// A pair of shoes (thick rubber soles, heel to toe) or folded clothes with buttons.
    fn apparel_footwear(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        if rng.gen_bool(0.7) {
            for (dv, dir) in [(-0.25, 1.0), (0.25, -1.0)] {
                let shoe = self.f.at(0.0, h * dv);
                self.cv.pillow(&shoe, w * 0.95, h * 0.46, ORGANIC, 8.0);
                self.cv.ellipse(
                    &shoe.at(dir * w * 0.16, 0.0),
                    w * 0.3,
                    h * 0.2,
                    DENSE_ORGANIC,
                    10.0,
                );
                self.cv.ellipse(
                    &shoe.at(-dir * w * 0.3, 0.0),
                    w * 0.16,
                    h * 0.16,
                    DENSE_ORGANIC,
                    12.0,
                );
                self.cv.rect(
                    &shoe.at(-dir * w * 0.08, 0.0),
                    w * 0.24,
                    h * 0.2,
                    DENSE_ORGANIC,
                    6.0,
                );
            }
        } else {
            let layers = rng.gen_range(3..=6);
            for k in 0..layers {
                let at = self.f.at(k as f32 * 1.5 * s, k as f32 * 1.5 * s);
                self.cv.rect(&at, w * 0.86, h * 0.8, ORGANIC, 5.0);
            }
            for k in 0..5 {
                let at = self.f.at(0.0, (k as f32 - 2.0) * h * 0.15);
                self.cv.ball(&at, 2.5 * s, 2.5 * s, METAL, 1.2);
            }
        }
    }

    /// A handbag: leather pouch, a handle, metal buckles and a zipper.
    fn bags_leather(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        let body = self.f.at(0.0, h * 0.12);
        self.cv.pillow(&body, w * 0.9, h * 0.72, ORGANIC, 14.0);
        self.cv
            .arc(&self.f.at(0.0, -h * 0.22), h * 0.26, 3.0 * s, ORGANIC, 12.0);
        for _ in 0..rng.gen_range(2..=4) {
            let at = body.at(
                rng.gen_range(-0.35..0.35) * w,
                rng.gen_range(-0.2..0.25) * h,
            );
            self.cv.outline(&at, 7.0 * s, 5.0 * s, 1.3 * s, METAL, 2.0);
        }
        let pitch = 3.0 * s;
        let teeth = (w * 0.8 / pitch) as usize;
        for k in 0..teeth {
            let at = body.at(k as f32 * pitch - w * 0.4, -h * 0.3);
            self.cv.ball(&at, 0.9 * s, 0.9 * s, METAL, 1.5);
        }
    }

    /// A carton of cigarette packs: many thin parallel cylinders, stacked deep.
    fn tobacco(self, _rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        self.cv.rect(&self.f, w * 0.95, h * 0.92, ORGANIC, 3.0);
        self.cv
            .outline(&self.f, w * 0.95, h * 0.92, 1.5 * s, ORGANIC, 6.0);
        let (cols, rows) = (5, 2);
        let (pw, ph) = (w * 0.9 / cols as f32, h * 0.86 / rows as f32);
        let r = (1.6 * s).max(0.9);
        let sticks = ((pw * 0.9) / (2.2 * r)).max(2.0) as usize;
        for i in 0..cols {
            for j in 0..rows {
                let pack = self.f.at(
                    (i as f32 + 0.5) * pw - w * 0.45,
                    (j as f32 + 0.5) * ph - h * 0.43,
                );
                self.cv
                    .outline(&pack, pw * 0.95, ph * 0.95, 1.0 * s, ORGANIC, 5.0);
                for k in 0..sticks {
                    let at = pack.at((k as f32 + 0.5) * pw * 0.9 / sticks as f32 - pw * 0.45, 0.0);
                    self.cv.rod(&at.turn(FRAC_PI_2), ph * 0.8, r, ORGANIC, 5.0);
                }
            }
        }
    }

    /// Face masks: a stack of thin folded sheets, each with a metal nose strip and ear loops;
    /// or a folded protective gown.
    fn ppe(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        if rng.gen_bool(0.75) {
            let n = rng.gen_range(3..=7);
            let step = h * 0.3 / n as f32;
            for k in 0..n {
                let at = self.f.at(k as f32 * step * 0.3, k as f32 * step - h * 0.15);
                self.cv.rect(&at, w * 0.66, h * 0.5, ORGANIC, 3.0);
                self.cv
                    .rect(&at.at(0.0, -h * 0.24), w * 0.4, 1.3 * s, METAL, 1.0);
                for side in [-1.0, 1.0] {
                    let loop_at = at.sub(side * w * 0.38, 0.0, side * FRAC_PI_2);
                    self.cv.arc(&loop_at, h * 0.18, 1.0 * s, ORGANIC, 4.0);
                }
            }
        } else {
            for k in 0..4 {
                let at = self.f.at(0.0, (k as f32 - 1.5) * 2.0 * s);
                self.cv.rect(&at, w * 0.9, h * 0.85, ORGANIC, 3.0);
            }
            self.cv
                .rect(&self.f.at(-w * 0.2, 0.0), 1.5 * s, h * 0.85, ORGANIC, 10.0);
            self.cv
                .rect(&self.f.at(w * 0.2, 0.0), 1.5 * s, h * 0.85, ORGANIC, 10.0);
        }
    }

    /// Books (thick slabs of paper) or discs in jewel cases.
    fn publications(self, rng: &mut impl Rng) {
        let (w, h, s) = (self.w, self.h, self.s);
        if rng.gen_bool(0.7) {
            let n = rng.gen_range(1..=3);
            let hard = rng.gen_bool(0.5);
            for _ in 0..n {
                let at = self.pick(rng, 0.04, 0.04).turn(rng.gen_range(-0.08..0.08));
                self.cv
                    .rect(&at, w * 0.82, h * 0.85, ORGANIC, rng.gen_range(22.0..40.0));
                if hard {
                    self.cv
                        .outline(&at, w * 0.84, h * 0.87, 2.0 * s, ORGANIC, 10.0);
                }
            }
        } else {
            let n = rng.gen_range(1..=2);
            let slot = w / n as f32;
            for k in 0..n {
                let at = self.f.at((k as f32 + 0.5) * slot - w / 2.0, 0.0);
                let side = (slot * 0.92).min(h * 0.92);
                self.cv.rect(&at, side, side, ORGANIC, 6.0);
                self.cv.outline(&at, side, side, 1.5 * s, ORGANIC, 8.0);
                self.cv
                    .gear(&at, side * 0.42, side * 0.42, 0, side * 0.07, ORGANIC, 3.0);
                self.cv
                    .gear(&at, side * 0.42, side * 0.42, 0, side * 0.16, MIXED, 1.5);
            }
        }
    }

    /// Anything else: a few random shapes of random materials.
    fn other(self, rng: &mut impl Rng) {
        let (w, h) = (self.w, self.h);
        for _ in 0..rng.gen_range(2..=4) {
            let at = self.pick(rng, 0.25, 0.25).turn(rng.gen_range(0.0..PI));
            let material: Material = match rng.gen_range(0..6) {
                0..=2 => ORGANIC,
                3 | 4 => MIXED,
                _ => METAL,
            };
            let t = if material.mu_high > 0.1 {
                rng.gen_range(1.0..4.0)
            } else {
                rng.gen_range(5.0..30.0)
            };
            let (a, b) = (rng.gen_range(0.15..0.45) * w, rng.gen_range(0.15..0.45) * h);
            match rng.gen_range(0..4) {
                0 => self.cv.rect(&at, a, b, material, t),
                1 => self.cv.ball(&at, a / 2.0, b / 2.0, material, t),
                2 => self.cv.rod(&at, a, b / 5.0, material, t / b.max(1.0) * 2.0),
                _ => self.cv.gear(&at, b / 2.0, b / 2.0, 0, b / 5.0, material, t),
            }
        }
    }
}
