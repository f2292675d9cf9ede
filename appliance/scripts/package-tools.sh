#!/usr/bin/env bash
# Installs what building and testing the Debian packages needs, on a machine that has only
# the Rust toolchain, Python 3 with pip, and apt. Safe to run again; it installs only what is
# missing. Every version is pinned:
#   - cargo-deb (crates.io, built with --locked),
#   - cargo-zigbuild and the zig compiler (the `cargo-zigbuild` and `ziglang` wheels from
#     PyPI, in a venv under target/), which link against a chosen glibc (2.28),
#   - the aarch64-unknown-linux-gnu standard library (rustup),
#   - Debian's lintian, debootstrap, qemu-user-static, binfmt-support, systemd-container.
#
#   appliance/scripts/package-tools.sh [--test]    # --test: the install-test tools as well
#
# Prints nothing else on stdout but `export PATH=…` for the venv's bin, for `eval`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

CARGO_DEB_VERSION=3.8.0
CARGO_ZIGBUILD_VERSION=0.24.0
ZIGLANG_VERSION=0.15.2
venv=$root/target/package-tools/venv

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi

if ! cargo deb --version 2>/dev/null | grep -qF " $CARGO_DEB_VERSION"; then
  echo "package-tools: cargo install cargo-deb@$CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION" >&2
fi

want="cargo-zigbuild==$CARGO_ZIGBUILD_VERSION ziglang==$ZIGLANG_VERSION"
if [ ! -f "$venv/pinned" ] || [ "$(cat "$venv/pinned")" != "$want" ]; then
  echo "package-tools: pip install $want (venv $venv)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
  echo "$want" > "$venv/pinned"
fi

for t in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done

need=()
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg-dev)
if [ "${1:-}" = --test ]; then
  command -v lintian >/dev/null 2>&1 || need+=(lintian)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
  command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "package-tools: installing ${need[*]} (Debian packages)" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

echo "export PATH=\"$venv/bin:\$PATH\""
