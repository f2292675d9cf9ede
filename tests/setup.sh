#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine that has the Rust
# toolchain, Python 3 with pip, and apt: Mosquitto (broker and clients, for the interop tests),
# Chromium, its WebDriver (chromedriver) and CJK fonts (for the console's browser tests),
# promtool (for the /metrics and alert-rule checks), and the pinned ONNX Runtime library.
# Safe to run again; it only installs what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi

need=()
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
# The console's browser tests: Chromium driven through chromedriver (WebDriver), and CJK
# fonts so that Chinese renders in screenshots.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || need+=(fonts-noto-cjk)
# `promtool check metrics` on a real scrape and `promtool check rules docs/alerts.yml`.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The feed's TLS test makes its CA and certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (Debian packages)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The line controller's MCU target, so the board crate builds (firmware/board).
if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf
fi

"$here/../appliance/scripts/install-onnxruntime.sh"
