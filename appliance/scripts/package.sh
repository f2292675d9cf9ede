#!/usr/bin/env bash
# Builds the Debian packages of Screenline, one per architecture:
#
#   appliance/scripts/package.sh            # amd64 and arm64 → target/debian/*.deb
#   appliance/scripts/package.sh amd64      # one of them
#
# Each package carries the `screenline` binary linked against glibc 2.28 (cargo-zigbuild and
# the zig compiler from PyPI pick the glibc; the oldest supported system, Debian 11, has 2.31),
# the same architecture's ONNX Runtime library from the pinned, hash-checked PyPI wheel in
# /usr/lib/screenline/, the reference model, the systemd unit, udev rules, sysusers.d and
# tmpfiles.d entries and the configuration (packaging/, metadata in appliance/Cargo.toml).
# Installs its tools first (appliance/scripts/package-tools.sh). One release build per
# architecture: tests/package-test.sh tests these very binaries.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
eval "$(appliance/scripts/package-tools.sh)"

# The packaged binary is stripped at link time (Debian ships no symbol tables in /usr/bin);
# the release profile's line tables stay for developers' own builds.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
triples=()
for deb_arch in "${arches[@]}"; do
  case "$deb_arch" in
    amd64) cpu=x86_64 ;;
    arm64) cpu=aarch64 ;;
    *) echo "package: unknown architecture $deb_arch (amd64 or arm64)" >&2; exit 2 ;;
  esac
  triples+=("$cpu-unknown-linux-gnu")
  # ONNX Runtime beside the binary, where the Cargo.toml assets take it from.
  appliance/scripts/install-onnxruntime.sh "target/$cpu-unknown-linux-gnu/release/onnxruntime" "$cpu" >&2
done

# Both architectures in one cargo run: build scripts and proc macros are built once.
start=$SECONDS
cargo zigbuild --release --locked -p screenline --bin screenline $(printf -- '--target %s.2.28 ' "${triples[@]}")
echo "package: release build of ${arches[*]} in $((SECONDS - start)) s" >&2

for triple in "${triples[@]}"; do
  cargo deb --no-build --no-strip --locked -p screenline --target "$triple" --output target/debian/ >/dev/null
done
ls -l target/debian/*.deb
