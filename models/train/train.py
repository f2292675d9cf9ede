#!/usr/bin/env python3
"""Training recipe for Screenline's reference classifier (screenline-ref).

Generates a training set (xraygen, seed 1) and a held-out set (seed 2, never trained on),
preprocesses exactly like the appliance (RGB -> bilinear 64x64 -> x/255 -> (x-mean)/std ->
NCHW), trains a small two-headed CNN on the CPU, exports ONNX (opset 17, softmax and sigmoid
inside the graph), checks it with ONNX Runtime on the held-out set and on fresh render()
calls, and writes model.onnx + manifest.json into the model folder.

    python models/train/train.py --out models/screenline-ref-0.1

See models/screenline-ref-0.1/README.md for the numbers of the committed model.
"""

from __future__ import annotations

import argparse
import csv
import json
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
from PIL import Image

from recipe import CATEGORY_KEYS, REPO, auroc, file_sha256, log

SIZE = 64
SCALE = 1.0 / 255.0
TRAIN_SEED, HELDOUT_SEED = 1, 2
# render() seeds for the final spot check; datasets use derive_seed(1|2, i), never these.
VERIFY_SEEDS = range(9_000_000, 9_000_040)


# --- data -------------------------------------------------------------------------------

def xraygen_bins(args) -> Path:
    """The directory with the xraygen example binaries, building them if needed."""
    if args.bin_dir:
        return Path(args.bin_dir)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    subprocess.run(["cargo", "build", "--release", "-p", "xraygen", "--examples"], cwd=REPO, check=True)
    return target / "release" / "examples"


def dataset(bins: Path, root: Path, count: int, seed: int) -> Path:
    """A dataset folder from xraygen's write_dataset (reused if already complete)."""
    out = root / f"xraygen-s{seed}-n{count}"
    labels = out / "labels.csv"
    if labels.exists() and sum(1 for _ in labels.open()) == count + 1:
        log(f"reusing {out}")
        return out
    log(f"generating {count} images (seed {seed}) into {out}")
    subprocess.run([str(bins / "generate"), "--out", str(out), "--count", str(count), "--seed", str(seed)],
                   check=True)
    return out


def preprocess(path: Path) -> np.ndarray:
    """RGB -> bilinear 64x64 -> float32 in [0, 1], HWC. The appliance does exactly this."""
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) * np.float32(SCALE)


def load(folder: Path):
    xs, cats, fakes = [], [], []
    with (folder / "labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            xs.append(preprocess(folder / row["image"]))
            cats.append(CATEGORY_KEYS.index(row["category"]))
            fakes.append(float(row["counterfeit"]))
    return np.stack(xs), np.array(cats, dtype=np.int64), np.array(fakes, dtype=np.float32)


def to_nchw(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


# --- model ------------------------------------------------------------------------------

def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class ScreenNet(nn.Module):
    """Four conv blocks (64 -> 4 px), global average pool, two heads. Returns logits."""

    def __init__(self, widths=(16, 32, 64, 96)):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers.append(block(cin, w))
            cin = w
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.category = nn.Linear(cin, len(CATEGORY_KEYS))
        self.counterfeit = nn.Linear(cin, 1)

    def forward(self, x):
        z = self.dropout(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
        return self.category(z), self.counterfeit(z)


class Exported(nn.Module):
    """What goes into the ONNX file: probabilities, not logits."""

    def __init__(self, net: ScreenNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        cat, fake = self.net(image)
        return torch.softmax(cat, dim=1), torch.sigmoid(fake)


# --- metrics ----------------------------------------------------------------------------

def evaluate(session: ort.InferenceSession, x: np.ndarray, cats: np.ndarray, fakes: np.ndarray) -> dict:
    probs, fake_p = [], []
    for i in range(0, len(x), 256):
        p, f = session.run(["category_probs", "counterfeit"], {"image": x[i:i + 256]})
        probs.append(p)
        fake_p.append(f[:, 0])
    probs, fake_p = np.concatenate(probs), np.concatenate(fake_p)
    pred = probs.argmax(1)
    per_cat = {k: float((pred[cats == c] == c).mean()) if (cats == c).any() else float("nan")
               for c, k in enumerate(CATEGORY_KEYS)}
    return {
        "n": int(len(x)),
        "top1_accuracy": float((pred == cats).mean()),
        "counterfeit_auroc": auroc(fake_p, fakes),
        "counterfeit_accuracy_at_0.5": float(((fake_p >= 0.5) == (fakes > 0.5)).mean()),
        "per_category_recall": per_cat,
    }


# --- main -------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "models" / "screenline-ref-0.1"), help="model folder to write")
    ap.add_argument("--data", default="/tmp/screenline-data", help="where generated datasets go (not the repo)")
    ap.add_argument("--bin-dir", help="folder with prebuilt xraygen examples (generate, render); default: cargo build")
    ap.add_argument("--train-count", type=int, default=8000)
    ap.add_argument("--heldout-count", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--version", default="0.1.0")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    bins = xraygen_bins(args)

    train_dir = dataset(bins, data, args.train_count, TRAIN_SEED)
    held_dir = dataset(bins, data, args.heldout_count, HELDOUT_SEED)
    t0 = time.time()
    xtr, ctr, ftr = load(train_dir)
    xho, cho, fho = load(held_dir)
    log(f"loaded {len(xtr)} train / {len(xho)} held-out images in {time.time() - t0:.0f} s")

    # float64 accumulators: float32 sums over ~30M pixels stall at 2**24 and give nonsense.
    mean = xtr.reshape(-1, 3).mean(0, dtype=np.float64).round(4)
    std = xtr.reshape(-1, 3).std(0, dtype=np.float64).round(4)
    log(f"mean {mean.tolist()} std {std.tolist()}")
    xtr_n = torch.from_numpy(to_nchw(xtr, mean.astype(np.float32), std.astype(np.float32)))
    xho_n = to_nchw(xho, mean.astype(np.float32), std.astype(np.float32))
    ctr_t, ftr_t = torch.from_numpy(ctr), torch.from_numpy(ftr)

    net = ScreenNet()
    params = sum(p.numel() for p in net.parameters())
    log(f"ScreenNet: {params} parameters")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(xtr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)

    t_train = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = rng.permutation(len(xtr))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), args.batch):
            idx = torch.from_numpy(perm[i:i + args.batch])
            xb = xtr_n[idx]
            # A parcel can lie any way round on the belt: flips are free, honest augmentation.
            if rng.random() < 0.5:
                xb = xb.flip(3)
            if rng.random() < 0.5:
                xb = xb.flip(2)
            cat_logits, fake_logits = net(xb)
            loss = F.cross_entropy(cat_logits, ctr_t[idx]) + \
                F.binary_cross_entropy_with_logits(fake_logits[:, 0], ftr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            total += len(idx)
            correct += int((cat_logits.argmax(1) == ctr_t[idx]).sum())
        log(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / total:.3f}, "
            f"train acc {correct / total:.3f}, {time.time() - t_train:.0f} s")
    train_seconds = time.time() - t_train
    log(f"training took {train_seconds:.0f} s on {torch.get_num_threads()} threads")

    # Export a wrapper that is itself in eval mode: the exporter restores the *wrapper's*
    # mode afterwards, and a wrapper left in training mode would flip BatchNorm and Dropout
    # back to training for the torch-vs-ONNX comparison below.
    exported = Exported(net).eval()
    torch.save(net.state_dict(), data / "screennet.pt")
    model_path = out / "model.onnx"
    torch.onnx.export(
        exported, torch.zeros(1, 3, SIZE, SIZE), str(model_path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["category_probs", "counterfeit"],
        dynamic_axes={"image": {0: "N"}, "category_probs": {0: "N"}, "counterfeit": {0: "N"}},
    )
    exported.eval()
    sha = file_sha256(model_path)
    log(f"exported {model_path} ({model_path.stat().st_size} bytes, sha256 {sha})")

    manifest = {
        "schema": "screenline.model.v1",
        "name": "screenline-ref",
        "version": args.version,
        "file": "model.onnx",
        "sha256": sha,
        "input": {"name": "image", "width": SIZE, "height": SIZE, "channels": 3, "layout": "NCHW",
                  "colour": "rgb", "resize": "bilinear", "scale": SCALE,
                  "mean": mean.tolist(), "std": std.tolist()},
        "labels": CATEGORY_KEYS,
        "outputs": {"category": "category_probs", "counterfeit": "counterfeit"},
        "thresholds": {"default": 0.5, "per_category": {k: 0.5 for k in CATEGORY_KEYS}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    # Check the exported file, not the torch module: this is what the appliance runs.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = exported(torch.from_numpy(xho_n[:8]))
    got = session.run(None, {"image": xho_n[:8]})
    drift = max(float(np.abs(ref[0].numpy() - got[0]).max()), float(np.abs(ref[1].numpy() - got[1]).max()))
    log(f"torch vs onnxruntime max difference: {drift:.2e}")
    if drift > 1e-3:
        log("torch and ONNX Runtime disagree: the export is broken, not writing metrics")
        return 1
    held = evaluate(session, xho_n, cho, fho)
    log(f"held-out (seed {HELDOUT_SEED}, n={held['n']}): top-1 accuracy {held['top1_accuracy']:.4f}, "
        f"counterfeit AUROC {held['counterfeit_auroc']:.4f}, "
        f"counterfeit accuracy @0.5 {held['counterfeit_accuracy_at_0.5']:.4f}")
    for k, v in held["per_category_recall"].items():
        log(f"  recall {k:22s} {v:.3f}")

    spot = verify_render(session, bins, data, mean.astype(np.float32), std.astype(np.float32))
    report = {"parameters": params, "torch_onnx_max_difference": drift,
              "train_seconds": round(train_seconds, 1), "epochs": args.epochs,
              "train_count": args.train_count, "heldout": held, "render_spot_check": spot,
              "onnx_bytes": model_path.stat().st_size, "sha256": sha}
    (data / "last_run.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"metrics written to {data / 'last_run.json'}")
    return 0


def verify_render(session, bins: Path, data: Path, mean, std) -> dict:
    """20 counterfeit + 20 genuine parcels straight from render(spec, seed), fresh seeds."""
    folder = data / "spot"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, seed in enumerate(VERIFY_SEEDS):
        counterfeit = k % 2 == 1
        key = CATEGORY_KEYS[(k // 2) % len(CATEGORY_KEYS)]
        path = folder / f"{seed}.png"
        subprocess.run([str(bins / "render"), "--category", key, "--counterfeit", str(int(counterfeit)),
                        "--seed", str(seed), "--out", str(path)], check=True)
        x = to_nchw(preprocess(path)[None], mean, std)
        probs, fake = session.run(["category_probs", "counterfeit"], {"image": x})
        rows.append((key, counterfeit, float(fake[0, 0]), CATEGORY_KEYS[int(probs[0].argmax())]))
    fake_ok = sum((p >= 0.5) == c for _, c, p, _ in rows if c)
    genuine_ok = sum((p >= 0.5) == c for _, c, p, _ in rows if not c)
    cat_ok = sum(k == pred for k, _, _, pred in rows)
    log(f"render() spot check: counterfeit flagged {fake_ok}/20, genuine cleared {genuine_ok}/20, "
        f"category right {cat_ok}/40")
    for key, c, p, pred in rows:
        log(f"  {key:22s} counterfeit={int(c)} score={p:.3f} predicted={pred}")
    return {"counterfeit_flagged": fake_ok, "genuine_cleared": genuine_ok, "category_correct": cat_ok, "n": 40}


if __name__ == "__main__":
    sys.exit(main())
