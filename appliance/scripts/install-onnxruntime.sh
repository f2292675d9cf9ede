#!/usr/bin/env bash
# Installs the pinned ONNX Runtime shared library that `screenline` loads (ort, load-dynamic).
#
# ONNX Runtime comes from the official `onnxruntime` wheel on PyPI, pinned by version and
# SHA-256, so the appliance never depends on a library left on the machine by hand and never
# needs ort's own binary download (which cannot work offline).
#
#   appliance/scripts/install-onnxruntime.sh [DEST_DIR]
#
# DEST_DIR defaults to $XDG_DATA_HOME/screenline/onnxruntime (~/.local/share/...), which is
# where `screenline` looks when neither `model.ort_dylib_path` nor ORT_DYLIB_PATH is set.
set -euo pipefail

ORT_VERSION=1.31.1
WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
LIB=libonnxruntime.so.${ORT_VERSION}

dest=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/screenline/onnxruntime}

if [ "$(uname -m)" != x86_64 ]; then
  echo "install-onnxruntime: only x86-64 Linux is pinned so far (this is $(uname -m))." >&2
  exit 1
fi

if [ -f "$dest/$LIB" ] && [ -f "$dest/wheel.sha256" ] && [ "$(cat "$dest/wheel.sha256")" = "$WHEEL_SHA256" ]; then
  echo "ONNX Runtime $ORT_VERSION already installed in $dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The wheel is the same whatever Python runs pip: ask for exactly this file, then check it.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  -d "$tmp" "onnxruntime==${ORT_VERSION}"
got=$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)
if [ "$got" != "$WHEEL_SHA256" ]; then
  echo "install-onnxruntime: $WHEEL has SHA-256 $got, expected $WHEEL_SHA256 — refusing it." >&2
  exit 1
fi

python3 - "$tmp/$WHEEL" "$tmp/out" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/libonnxruntime"):
            z.extract(name, sys.argv[2])
PY

mkdir -p "$dest"
cp "$tmp/out/onnxruntime/capi/$LIB" "$tmp/out/onnxruntime/capi/libonnxruntime_providers_shared.so" "$dest/"
ln -sf "$LIB" "$dest/libonnxruntime.so"
echo "$WHEEL_SHA256" > "$dest/wheel.sha256"
echo "ONNX Runtime $ORT_VERSION installed in $dest"
