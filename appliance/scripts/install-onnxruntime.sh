#!/usr/bin/env bash
# Installs the pinned ONNX Runtime shared library that `screenline` loads (ort, load-dynamic).
#
# ONNX Runtime comes from the official `onnxruntime` wheel on PyPI, pinned by version and
# SHA-256, so the appliance never depends on a library left on the machine by hand and never
# needs ort's own binary download (which cannot work offline).
#
#   appliance/scripts/install-onnxruntime.sh [DEST_DIR [ARCH]]
#
# DEST_DIR defaults to $XDG_DATA_HOME/screenline/onnxruntime (~/.local/share/...), which is
# where `screenline` looks when neither `model.ort_dylib_path` nor ORT_DYLIB_PATH is set.
# ARCH (x86_64 or aarch64) defaults to this machine's; the Debian packages take each
# architecture's library from here (appliance/scripts/package.sh).
set -euo pipefail

ORT_VERSION=1.31.1
LIB=libonnxruntime.so.${ORT_VERSION}

dest=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/screenline/onnxruntime}
arch=${2:-$(uname -m)}

# Both wheels are manylinux_2_28 (glibc 2.28 and newer), as is the packaged binary.
case "$arch" in
  x86_64) WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f ;;
  aarch64) WHEEL_SHA256=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3 ;;
  *)
    echo "install-onnxruntime: no pinned wheel for $arch (x86_64 and aarch64 are)." >&2
    exit 1
    ;;
esac
PLATFORM=manylinux_2_28_${arch}
WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-${PLATFORM}.whl

if [ -f "$dest/$LIB" ] && [ -f "$dest/LICENSE" ] && [ -f "$dest/wheel.sha256" ] && [ "$(cat "$dest/wheel.sha256")" = "$WHEEL_SHA256" ]; then
  echo "ONNX Runtime $ORT_VERSION ($arch) already installed in $dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The wheel is the same whatever Python runs pip: ask for exactly this file, then check it.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform "$PLATFORM" \
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
        if name.startswith("onnxruntime/capi/libonnxruntime") or name in (
            "onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
            z.extract(name, sys.argv[2])
PY

mkdir -p "$dest"
cp "$tmp/out/onnxruntime/capi/$LIB" "$tmp/out/onnxruntime/capi/libonnxruntime_providers_shared.so" "$dest/"
# Its licence (MIT) and the notices of what it bundles, which the Debian package ships.
cp "$tmp/out/onnxruntime/LICENSE" "$tmp/out/onnxruntime/ThirdPartyNotices.txt" "$dest/"
ln -sf "$LIB" "$dest/libonnxruntime.so"
echo "$WHEEL_SHA256" > "$dest/wheel.sha256"
echo "ONNX Runtime $ORT_VERSION ($arch) installed in $dest"
