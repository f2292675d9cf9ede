#!/usr/bin/env python3
"""Training recipe for Screenline's reference detector (screenline-ref 0.2).

The model sees a scan as the line computes it (appliance/src/screen/channels.rs): three
channels resized by an exact area average to SIZE x SIZE — for a dual-energy pair the
high- and low-energy attenuation and their difference, for a pseudo-colour image its RGB in
0..1. The tensors come from the appliance's own code (`cargo run --release --example
training_tensors`), so training cannot preprocess differently from the line.

One network, two outputs families:
- per parcel: category probabilities (softmax) and a counterfeit score (sigmoid), as 0.1;
- per item (lot): an anchor-free CenterNet-style head at stride 8 — a centre heat map per
  category (sigmoid), the box size in input pixels, the centre's sub-cell offset, and the
  item's counterfeit score (sigmoid) — decoded in Rust (screenline_core::detect).
Normalisation is inside the graph (the manifest's channels are raw).

    python models/train/train_detector.py --kind pair --out /tmp/screenline-ref-0.2 \
        --profiles 6550,100100

Seeds: training sets use seed 11 (6550), 12 (100100), 13 (small); held-out sets 21, 22, 23,
never trained on, never used for normalisation or model selection.
See models/screenline-ref-0.2/README.md for the figures of the committed model.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

from recipe import CATEGORY_KEYS, REPO, auroc, file_sha256, log

K = len(CATEGORY_KEYS)
STRIDE = 8
QUANTUM = 4096.0
TRAIN_SEEDS = {"6550": 11, "100100": 12, "small": 13}
HELDOUT_SEEDS = {"6550": 21, "100100": 22, "small": 23}


# --- data -------------------------------------------------------------------------------

def tensors(args, profile: str, count: int, seed: int) -> Path:
    """A tensor set from the appliance's training_tensors example (reused if complete)."""
    out = Path(args.data) / f"{args.kind}-{profile}-s{seed}-n{count}-{args.size}"
    if (out / "labels.csv").exists() and sum(1 for _ in (out / "labels.csv").open()) == count + 1:
        log(f"reusing {out}")
        return out
    log(f"rendering {count} {profile} scans (seed {seed}) into {out}")
    tool = [args.tensors_bin] if args.tensors_bin else [
        "cargo", "run", "--release", "--locked", "-q", "-p", "screenline", "--example", "training_tensors", "--"]
    cmd = tool + ["--scanner", profile, "--count", str(count), "--seed", str(seed), "--size", str(args.size),
           "--kind", args.kind, "--threads", str(args.threads), "--out", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True)
    return out


class Split:
    """One tensor set in memory: inputs (u16), parcel labels, and items per image."""

    def __init__(self, folder: Path, size: int):
        self.x = np.load(folder / "x.npy", mmap_mode="r")
        self.cat, self.cf, self.items = [], [], []
        dims = []
        with (folder / "labels.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                self.cat.append(CATEGORY_KEYS.index(row["category"]))
                self.cf.append(float(row["counterfeit"]))
                dims.append((int(row["width"]), int(row["height"])))
                self.items.append([])
        with (folder / "boxes.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                i = int(row["index"])
                w, h = dims[i]
                sx, sy = size / w, size / h
                self.items[i].append((CATEGORY_KEYS.index(row["category"]), float(row["counterfeit"]),
                                      float(row["x0"]) * sx, float(row["y0"]) * sy,
                                      float(row["x1"]) * sx, float(row["y1"]) * sy))
        self.cat = np.array(self.cat, dtype=np.int64)
        self.cf = np.array(self.cf, dtype=np.float32)
        self.dims = dims

    def __len__(self):
        return len(self.cat)


def gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: a centre that far off still gives a box of IoU >= min_overlap."""
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def targets(items, out: int, flip_x: bool, flip_y: bool, size: int):
    """Heat map, size, offset, counterfeit and mask targets of one image at stride 8."""
    hm = np.zeros((K, out, out), np.float32)
    wh = np.zeros((2, out, out), np.float32)
    off = np.zeros((2, out, out), np.float32)
    cf = np.zeros((1, out, out), np.float32)
    mask = np.zeros((out, out), np.float32)
    ys, xs = np.mgrid[0:out, 0:out]
    for c, fake, x0, y0, x1, y1 in items:
        if flip_x:
            x0, x1 = size - x1, size - x0
        if flip_y:
            y0, y1 = size - y1, size - y0
        w, h = x1 - x0, y1 - y0
        if w <= 1 or h <= 1:
            continue
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = min(int(cx), out - 1), min(int(cy), out - 1)
        r = max(0.0, gaussian_radius(h / STRIDE, w / STRIDE))
        sigma = (2 * int(r) + 1) / 6
        g = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma * sigma))
        hm[c] = np.maximum(hm[c], g)
        wh[:, iy, ix] = (w, h)
        off[:, iy, ix] = (cx - ix, cy - iy)
        cf[0, iy, ix] = fake
        mask[iy, ix] = 1.0
    return hm, wh, off, cf, mask


# --- model ------------------------------------------------------------------------------

def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DetNet(nn.Module):
    """Backbone to stride 32, a small feature pyramid back to stride 8, two head families."""

    def __init__(self, mean, std, width: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.s1 = cbr(3, 24, 2)
        self.s2 = cbr(24, 32, 2)
        self.s3 = nn.Sequential(cbr(32, 64, 2), cbr(64, 64))
        self.s4 = nn.Sequential(cbr(64, 96, 2), cbr(96, 96))
        self.s5 = nn.Sequential(cbr(96, 128, 2), cbr(128, 128))
        self.lat3 = nn.Conv2d(64, width, 1)
        self.lat4 = nn.Conv2d(96, width, 1)
        self.lat5 = nn.Conv2d(128, width, 1)
        self.head = cbr(width, width)
        self.hm = nn.Conv2d(width, K, 1)
        self.wh = nn.Conv2d(width, 2, 1)
        self.off = nn.Conv2d(width, 2, 1)
        self.icf = nn.Conv2d(width, 1, 1)
        nn.init.constant_(self.hm.bias, -2.19)
        # The parcel heads also read the item heads (detached, so they cannot bend them): a
        # parcel's category is its main lot's, the largest box, and it is counterfeit when any
        # lot is (models/xraygen/PROFILES.md, "Lots and labels").
        self.cls = nn.Linear(128 + width + 2 * K, K)
        self.pcf = nn.Linear(128 + width + 1, 1)
        self.largest_weight = nn.Parameter(torch.tensor(4.0))
        self.any_weight = nn.Parameter(torch.tensor(1.0))
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        x = (x - self.mean) / self.std
        f3 = self.s3(self.s2(self.s1(x)))
        f4 = self.s4(f3)
        f5 = self.s5(f4)
        p = self.lat4(f4) + F.interpolate(self.lat5(f5), scale_factor=2, mode="nearest")
        p = self.lat3(f3) + F.interpolate(p, scale_factor=2, mode="nearest")
        h = self.head(p)
        hm, wh, icf = self.hm(h), F.softplus(self.wh(h)) * STRIDE, self.icf(h)
        heat = torch.sigmoid(hm).detach()
        side = x.shape[2] * x.shape[3]
        area = (wh[:, 0] * wh[:, 1]).detach().unsqueeze(1) / side
        largest = (heat * area).amax((2, 3))  # per category: its most confident large box
        strongest = heat.amax((2, 3))
        fake = (heat.amax(1, keepdim=True) * torch.sigmoid(icf).detach()).amax((2, 3)).clamp(1e-4, 1 - 1e-4)
        pooled = self.dropout(torch.cat([F.adaptive_avg_pool2d(f5, 1).flatten(1),
                                         F.adaptive_max_pool2d(h, 1).flatten(1)], 1))
        cls = self.cls(torch.cat([pooled, largest * 10, strongest], 1)) + \
            self.largest_weight * torch.log(largest + 1e-3)
        pcf = self.pcf(torch.cat([pooled, fake], 1)) + self.any_weight * torch.log(fake / (1 - fake))
        return cls, pcf, hm, wh, torch.sigmoid(self.off(h)), icf


class Exported(nn.Module):
    """What goes into the ONNX file: probabilities, not logits."""

    def __init__(self, net: DetNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        cls, pcf, hm, wh, off, icf = self.net(image)
        return (torch.softmax(cls, 1), torch.sigmoid(pcf), torch.sigmoid(hm), wh, off, torch.sigmoid(icf))


OUTPUT_NAMES = ["category_probs", "counterfeit", "heatmap", "size", "offset", "item_counterfeit"]


def focal(pred_logits, gt):
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = torch.sigmoid(pred_logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - gt) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


# --- main -------------------------------------------------------------------------------

def batches(split: Split, idx: np.ndarray, args, rng, train: bool):
    out = args.size // STRIDE
    for i in range(0, len(idx), args.batch):
        b = np.sort(idx[i:i + args.batch])
        x = torch.from_numpy(np.asarray(split.x[b], dtype=np.float32) / QUANTUM)
        fx = train and rng.random() < 0.5
        fy = train and rng.random() < 0.5
        if fx:
            x = x.flip(3)
        if fy:
            x = x.flip(2)
        t = [targets(split.items[j], out, fx, fy, args.size) for j in b]
        yield (b, x, *(torch.from_numpy(np.stack(z)) for z in zip(*t)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model folder to write (model file and metrics)")
    ap.add_argument("--kind", choices=["pair", "rgb"], default="pair")
    ap.add_argument("--profiles", default="6550,100100", help="scanner profiles to train on")
    ap.add_argument("--data", default="/tmp/screenline-tensors", help="where tensor sets go (not the repo)")
    ap.add_argument("--tensors-bin", help="a built training_tensors example (default: cargo run --release)")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--train-count", type=int, default=4000, help="scans per profile")
    ap.add_argument("--heldout-count", type=int, default=400, help="scans per profile")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--file", default=None, help="default: model.onnx (pair), model-rgb.onnx (rgb)")
    ap.add_argument("--version", default="0.2.0")
    args = ap.parse_args()
    args.file = args.file or ("model.onnx" if args.kind == "pair" else "model-rgb.onnx")

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profiles = args.profiles.split(",")

    trains = [Split(tensors(args, p, args.train_count, TRAIN_SEEDS[p]), args.size) for p in profiles]
    helds = {p: Split(tensors(args, p, args.heldout_count, HELDOUT_SEEDS[p]), args.size) for p in profiles}
    # Normalisation from the training sets only (a sample of them), float64 sums.
    sample = np.concatenate([np.asarray(s.x[:400], dtype=np.float64) / QUANTUM for s in trains])
    mean = sample.mean(axis=(0, 2, 3)).round(4).tolist()
    std = np.maximum(sample.std(axis=(0, 2, 3)), 1e-3).round(4).tolist()
    log(f"channels mean {mean} std {std}")

    net = DetNet(mean, std)
    params = sum(p.numel() for p in net.parameters())
    log(f"DetNet: {params} parameters, input {args.size}, stride {STRIDE}")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * sum(math.ceil(len(s) / args.batch) for s in trains)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)

    t_train = time.time()
    for epoch in range(args.epochs):
        net.train()
        # Batches of one profile each (sizes of their items differ), profiles interleaved.
        plan = []
        for k, s in enumerate(trains):
            perm = rng.permutation(len(s))
            plan += [(k, perm[i:i + args.batch]) for i in range(0, len(perm), args.batch)]
        rng.shuffle(plan)
        sums, n = np.zeros(5), 0
        for k, idx in plan:
            split = trains[k]
            for b, x, hm, wh, off, cf, mask in batches(split, idx, args, rng, True):
                cls, pcf, hm_logit, wh_p, off_p, icf = net(x)
                m = mask.unsqueeze(1)
                npos = mask.sum().clamp(min=1)
                l_hm = focal(hm_logit, hm)
                l_wh = (torch.abs(wh_p - wh) * m).sum() / npos / args.size * 10
                l_off = (torch.abs(off_p - off) * m).sum() / npos
                l_icf = (F.binary_cross_entropy_with_logits(icf, cf, reduction="none") * m).sum() / npos
                l_parcel = F.cross_entropy(cls, torch.from_numpy(split.cat[b])) + \
                    F.binary_cross_entropy_with_logits(pcf[:, 0], torch.from_numpy(split.cf[b]))
                loss = l_hm + l_wh + l_off + l_icf + l_parcel
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                sums += [float(v.detach()) for v in (l_hm, l_wh, l_off, l_icf, l_parcel)]
                n += 1
        s = sums / max(n, 1)
        log(f"epoch {epoch + 1}/{args.epochs}: heat {s[0]:.3f} size {s[1]:.3f} offset {s[2]:.3f} "
            f"item-cf {s[3]:.3f} parcel {s[4]:.3f}, {time.time() - t_train:.0f} s")
    train_seconds = time.time() - t_train
    log(f"training took {train_seconds:.0f} s on {torch.get_num_threads()} threads")

    exported = Exported(net).eval()
    torch.save(net.state_dict(), Path(args.data) / f"detnet-{args.kind}.pt")
    model_path = out / args.file
    dyn = {name: {0: "N"} for name in ["image"] + OUTPUT_NAMES}
    torch.onnx.export(exported, torch.zeros(1, 3, args.size, args.size), str(model_path), dynamo=False,
                      opset_version=17, input_names=["image"], output_names=OUTPUT_NAMES, dynamic_axes=dyn)
    sha = file_sha256(model_path)
    log(f"exported {model_path} ({model_path.stat().st_size} bytes, sha256 {sha})")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    first = helds[profiles[0]]
    x8 = np.asarray(first.x[:8], dtype=np.float32) / QUANTUM
    with torch.no_grad():
        ref = exported(torch.from_numpy(x8))
    got = session.run(OUTPUT_NAMES, {"image": x8})
    drift = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, got))
    log(f"torch vs onnxruntime max difference: {drift:.2e}")
    if drift > 1e-3:
        log("torch and ONNX Runtime disagree: the export is broken")
        return 1
    held = {}
    for p, split in helds.items():
        probs, fake = [], []
        for i in range(0, len(split), 64):
            xb = np.asarray(split.x[i:i + 64], dtype=np.float32) / QUANTUM
            pr, cf = session.run(["category_probs", "counterfeit"], {"image": xb})[:2]
            probs.append(pr)
            fake.append(cf[:, 0])
        probs, fake = np.concatenate(probs), np.concatenate(fake)
        held[p] = {"n": len(split), "top1_accuracy": float((probs.argmax(1) == split.cat).mean()),
                   "counterfeit_auroc": auroc(fake, split.cf),
                   "counterfeit_accuracy_at_0.5": float(((fake >= 0.5) == (split.cf > 0.5)).mean())}
        log(f"held-out {p} (seed {HELDOUT_SEEDS[p]}, n={len(split)}): top-1 {held[p]['top1_accuracy']:.4f}, "
            f"counterfeit AUROC {held[p]['counterfeit_auroc']:.4f}, "
            f"accuracy @0.5 {held[p]['counterfeit_accuracy_at_0.5']:.4f} (box metrics: screenline model eval)")
    report = {"kind": args.kind, "profiles": profiles, "size": args.size, "stride": STRIDE,
              "parameters": params, "mean": mean, "std": std, "train_seconds": round(train_seconds, 1),
              "epochs": args.epochs, "train_count_per_profile": args.train_count,
              "train_seeds": {p: TRAIN_SEEDS[p] for p in profiles},
              "heldout_seeds": {p: HELDOUT_SEEDS[p] for p in profiles}, "heldout": held,
              "torch_onnx_max_difference": drift, "onnx_bytes": model_path.stat().st_size, "sha256": sha}
    (out / f"train-{args.kind}.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"metrics written to {out / f'train-{args.kind}.json'}")
    write_manifest(out, args, sha)
    return 0


def write_manifest(out: Path, args, sha: str) -> None:
    """Adds (or replaces) this kind's variant in the folder's schema-2 manifest."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if manifest.get("schema") != "screenline.model.v2":
        manifest = {
            "schema": "screenline.model.v2", "name": "screenline-ref", "version": args.version,
            "labels": CATEGORY_KEYS, "variants": [],
            "outputs": dict(zip(["category", "counterfeit", "heatmap", "size", "offset", "item_counterfeit"],
                                OUTPUT_NAMES)),
            "detection": {"stride": STRIDE, "peak_threshold": 0.3, "peak_window": 3, "max_detections": 16,
                          "nms_iou": 0.5},
            "thresholds": {"default": 0.5, "per_category": {k: 0.5 for k in CATEGORY_KEYS}},
        }
    manifest["version"] = args.version
    variant = {"kind": args.kind, "file": args.file, "sha256": sha,
               "input": {"name": "image", "width": args.size, "height": args.size, "channels": 3,
                         "layout": "NCHW", "resize": "area"}}
    manifest["variants"] = [v for v in manifest["variants"] if v["kind"] != args.kind] + [variant]
    manifest["variants"].sort(key=lambda v: v["kind"] != "pair")
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"manifest {path}: variants {[v['kind'] for v in manifest['variants']]}")


if __name__ == "__main__":
    sys.exit(main())
