#!/usr/bin/env bash
# Tests the Debian packages that appliance/scripts/package.sh built (target/debian/), as a
# site would get them:
#   1. both binaries need at most glibc 2.28 (the package's floor), the unit scores <= 2.5 in
#      `systemd-analyze security`, lintian finds no errors in either package;
#   2. the ARM64 binary under qemu-user: --version, `config check` of the example, and
#      `screen` of one parcel with the packaged ARM64 ONNX Runtime: the same decision as x86-64;
#   3. the amd64 package `dpkg -i`-ed into a clean Debian 12 root (debootstrap): the unit
#      verifies, the example passes `config check`, the service's user screens a parcel, the
#      service's command line comes up in safe mode on the shipped conffile and serves /healthz;
#   4. that root booted with systemd (systemd-nspawn): the real, hardened unit on a filled-in
#      configuration screens a parcel from a simulated line (screenline-line-sim: the firmware
#      emulator on pseudo-terminals) and an X-ray drop folder, and flags it while the broker is
#      down; the package is upgraded to the next revision (N -> N+1) with the report still in
#      the outbox, and once the broker is back the regulator's subscriber receives it.
# Each step prints its time. Must run as root (debootstrap, chroot, nspawn).
#
#   tests/package-test.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
eval "$(appliance/scripts/package-tools.sh --test)"

work=$root/target/package-test
cache=$root/target/package-cache
mkdir -p "$work" "$cache"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
GLIBC_FLOOR=2.28
MAX_EXPOSURE=2.5
version=$(sed -n 's/^version = "\(.*\)"/\1/p' appliance/Cargo.toml | head -1)
deb_amd64=$(ls target/debian/screenline_"$version"-1_amd64.deb)
deb_arm64=$(ls target/debian/screenline_"$version"-1_arm64.deb)

t0=$SECONDS
step_start=$SECONDS
step() {
  echo "package-test: ---- $1 (previous step $((SECONDS - step_start)) s)"
  step_start=$SECONDS
}
fail() {
  echo "package-test: FAIL: $*" >&2
  exit 1
}
passed=0
ok() {
  echo "package-test: ok: $*"
  passed=$((passed + 1))
}

# Mounts and processes this script makes are undone however it ends.
cleanup_cmds=()
cleanup() {
  local i
  for ((i = ${#cleanup_cmds[@]} - 1; i >= 0; i--)); do eval "${cleanup_cmds[$i]}" || true; done
}
trap cleanup EXIT

# --- 1. static checks --------------------------------------------------------------------
step "glibc floor, unit exposure, lintian"
for deb in "$deb_amd64" "$deb_arm64"; do
  x=$work/x-$(basename "$deb" .deb)
  rm -rf "$x" && mkdir -p "$x" && dpkg-deb -x "$deb" "$x"
  for elf in "$x/usr/bin/screenline" "$x"/usr/lib/screenline/*.so*; do
    top=$(readelf -W -V "$elf" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
    [ "$(printf '%s\n%s\n' "$top" "$GLIBC_FLOOR" | sort -V | tail -1)" = "$GLIBC_FLOOR" ] ||
      fail "$(basename "$deb"): ${elf#"$x"} needs GLIBC_$top, above the floor $GLIBC_FLOOR"
    echo "  $(basename "$deb") ${elf#"$x"}: highest GLIBC_$top"
  done
  dpkg-deb -f "$deb" Depends | grep -q "libc6 (>= $GLIBC_FLOOR)" || fail "$deb: Depends does not state libc6 >= $GLIBC_FLOOR"
done
ok "binaries and ONNX Runtime need at most glibc $GLIBC_FLOOR, as Depends states"

unit=$work/x-$(basename "$deb_amd64" .deb)/usr/lib/systemd/system/screenline.service
exposure=$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no score"
echo "  exposure $exposure"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' || fail "unit exposure $exposure > $MAX_EXPOSURE"
ok "unit exposure $exposure <= $MAX_EXPOSURE"

for deb in "$deb_amd64" "$deb_arm64"; do
  # Overrides with reasons: packaging/lintian-overrides (README, "Debian packages").
  lintian --fail-on error "$deb" | tee "$work/lintian-$(basename "$deb").txt" ||
    fail "lintian: errors in $(basename "$deb")"
done
ok "lintian: no errors in either package"

# One parcel, the same for every step: a generated X-ray scan and a waybill with real-name data.
parcel=$work/parcel
rm -rf "$parcel" && mkdir -p "$parcel"
x86=$work/x-$(basename "$deb_amd64" .deb)
"$x86/usr/bin/screenline" dataset generate --out "$parcel/set" --count 4 --seed 7 >/dev/null
row=$(sed -n 2p "$parcel/set/labels.csv")
cp "$parcel/set/${row%%,*}" "$parcel/scan.png"
category=$(echo "$row" | cut -d, -f2)
cat > "$parcel/waybill.json" <<JSON
{"waybill":"SF1000000000001","sender":{"name":"张三","id_type":"resident_id","id_number":"11010519491231002X","phone":"13800138000","address":"北京市朝阳区某某路1号"},"recipient":{"name":"李四","phone":"13900139000","address":"上海市长宁区某某路2号"},"declared":{"goods":"样品","category":"$category","value_cny":399.0,"quantity":1},"weight_g":850,"agreement_customer":null}
JSON
# The decision and its reasons: what must agree between architectures.
verdict() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["decision"], sorted(r["code"] for r in d["reasons"]))'; }

# --- 2. ARM64 under qemu-user --------------------------------------------------------------
step "ARM64 binary under qemu-user"
# An ARM64 Debian 12 userland for the dynamic loader and libc (debootstrap's first stage:
# unpacked, never configured), the package unpacked on top, and qemu-user (static) run inside
# it with chroot: every path is the installed one and no binfmt_misc registration is needed.
arm=$work/arm64-root
if [ ! -f "$cache/arm64-$SUITE.tgz" ]; then
  rm -rf "$work/arm64-tarball" && mkdir -p "$work/arm64-tarball"
  debootstrap --arch=arm64 --variant=minbase --include=libstdc++6 \
    --make-tarball="$cache/arm64-$SUITE.tgz" "$SUITE" "$work/arm64-tarball" "$MIRROR" >"$work/debootstrap-arm64.log"
fi
rm -rf "$arm" && mkdir -p "$arm"
debootstrap --arch=arm64 --variant=minbase --foreign --include=libstdc++6 \
  --unpack-tarball="$cache/arm64-$SUITE.tgz" "$SUITE" "$arm" "$MIRROR" >>"$work/debootstrap-arm64.log"
dpkg-deb -x "$deb_arm64" "$arm"
cp "$(command -v qemu-aarch64-static)" "$arm/usr/bin/"
cp -r "$parcel" "$arm/parcel"
# No ORT_DYLIB_PATH and a HOME without a per-user ONNX Runtime: the packaged one must be found.
qarm() { env -u ORT_DYLIB_PATH HOME=/nonexistent chroot "$arm" /usr/bin/qemu-aarch64-static /usr/bin/screenline "$@"; }
qarm --version | grep -q "^screenline $version" || fail "ARM64 --version: $(qarm --version 2>&1)"
qarm config check /usr/share/doc/screenline/examples/screenline.toml || fail "ARM64 config check of the example"
arm_out=$(qarm screen --waybill /parcel/waybill.json --image /parcel/scan.png) ||
  fail "ARM64 screen"
x86_out=$(env -u ORT_DYLIB_PATH HOME=/nonexistent ORT_DYLIB_PATH="$x86/usr/lib/screenline/libonnxruntime.so.1.31.1" \
  "$x86/usr/bin/screenline" screen --waybill "$parcel/waybill.json" --image "$parcel/scan.png" --model "$x86/usr/share/screenline/models/screenline-ref-0.1")
echo "  arm64: $(echo "$arm_out" | verdict)"
echo "  amd64: $(echo "$x86_out" | verdict)"
[ "$(echo "$arm_out" | verdict)" = "$(echo "$x86_out" | verdict)" ] || fail "ARM64 and x86-64 decide differently"
echo "$arm_out" | grep -q '"model"' || fail "ARM64 screen printed no model"
ok "ARM64 under qemu: --version, config check, the same decision as x86-64"

# --- 3. dpkg -i into a clean Debian 12 root --------------------------------------------------
step "install into a clean Debian 12 root"
dbroot=$work/debian12
if [ ! -f "$cache/amd64-$SUITE.tgz" ]; then
  rm -rf "$work/amd64-tarball" && mkdir -p "$work/amd64-tarball"
  debootstrap --variant=minbase --include=systemd-sysv,libstdc++6 \
    --make-tarball="$cache/amd64-$SUITE.tgz" "$SUITE" "$work/amd64-tarball" "$MIRROR" >"$work/debootstrap-amd64.log"
fi
rm -rf "$dbroot" && mkdir -p "$dbroot"
debootstrap --variant=minbase --include=systemd-sysv,libstdc++6 \
  --unpack-tarball="$cache/amd64-$SUITE.tgz" "$SUITE" "$dbroot" "$MIRROR" >>"$work/debootstrap-amd64.log"
mount -t proc proc "$dbroot/proc"
cleanup_cmds+=("umount -l '$dbroot/proc'")
cp "$deb_amd64" "$dbroot/tmp/screenline.deb"
cp -r "$parcel" "$dbroot/tmp/parcel" && chmod -R a+rX "$dbroot/tmp/parcel"
chroot "$dbroot" dpkg -i /tmp/screenline.deb || fail "dpkg -i"
chroot "$dbroot" getent passwd screenline >/dev/null || fail "no screenline user after install"
[ "$(chroot "$dbroot" stat -c %U /var/lib/screenline)" = screenline ] ||
  fail "/var/lib/screenline missing or not the service's"
[ -L "$dbroot/etc/systemd/system/multi-user.target.wants/screenline.service" ] || fail "the service is not enabled"
grep -qx /etc/screenline/screenline.toml "$dbroot/var/lib/dpkg/info/screenline.conffiles" || fail "the configuration is no conffile"
ok "installed: user, data folder, service enabled, conffile"

# --man=no: the minimal root has no man-db to look the Documentation= page up with.
chroot "$dbroot" systemd-analyze verify --man=no /usr/lib/systemd/system/screenline.service || fail "systemd-analyze verify"
[ -f "$dbroot/usr/share/man/man1/screenline.1.gz" ] || fail "no man page"
ok "systemd-analyze verify accepts the unit"
chroot "$dbroot" screenline config check /usr/share/doc/screenline/examples/screenline.toml || fail "config check of the example"
ok "the example passes config check"

# As the service's user, with no setting at all: ONNX Runtime and the model are found.
out=$(chroot --userspec=screenline:screenline "$dbroot" env -u ORT_DYLIB_PATH HOME=/var/lib/screenline \
  screenline screen --waybill /tmp/parcel/waybill.json --image /tmp/parcel/scan.png) || fail "screen as the service's user"
[ "$(echo "$out" | verdict)" = "$(echo "$x86_out" | verdict)" ] || fail "the installed package decides differently: $out"
ok "the service's user screens a parcel: $(echo "$out" | verdict)"

# The service's own command line on the shipped conffile: safe mode, /healthz served. In a
# network namespace of its own, so that the console's fixed port meets nothing else.
chroot "$dbroot" screenline config check /etc/screenline/screenline.toml >/dev/null 2>&1 &&
  fail "the shipped conffile passes config check: the appliance would screen on placeholders"
exec_start=$(sed -n 's/^ExecStart=//p' "$dbroot/usr/lib/systemd/system/screenline.service")
unshare --net bash -c '
  set -euo pipefail
  ip link set lo up
  chroot --userspec=screenline:screenline "$1" $2 >"$3/safe-mode.log" 2>&1 &
  app=$!
  for _ in $(seq 1 300); do
    if body=$(curl -fsS http://127.0.0.1:8080/healthz 2>/dev/null); then break; fi
    kill -0 $app 2>/dev/null || { cat "$3/safe-mode.log"; exit 1; }
    sleep 0.1
  done
  echo "  /healthz: $body"
  kill -INT $app; wait $app || true
  [ -n "${body:-}" ]
' _ "$dbroot" "$exec_start" "$work" || fail "safe mode on the shipped conffile: no /healthz"
grep -q "safe mode" "$work/safe-mode.log" || fail "no safe mode: $(cat "$work/safe-mode.log")"
ok "the service's command line comes up in safe mode on the shipped conffile and serves /healthz"
umount -l "$dbroot/proc"

# --- 4. the real unit under systemd ----------------------------------------------------------
# SCREENLINE_BOOT_TEST=0 skips it (a machine without systemd-nspawn's needs).
if [ "${SCREENLINE_BOOT_TEST:-1}" = 0 ]; then
  echo "package-test: the systemd-nspawn boot test is skipped (SCREENLINE_BOOT_TEST=0)"
  echo "package-test: $passed passed, 0 failed ($((SECONDS - t0)) s)"
  exit 0
fi
step "boot the root with systemd; the hardened unit screens a parcel"
# The simulated line (the firmware emulator on pseudo-terminals) runs inside the container,
# whose /dev/pts is its own. Same profile settings as package.sh, so its build reuses the deps.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
cargo zigbuild --release --locked -p screenline-emulator --bin screenline-line-sim \
  --target x86_64-unknown-linux-gnu.2.28 >"$work/line-sim-build.log" 2>&1 ||
  { cat "$work/line-sim-build.log"; fail "building screenline-line-sim"; }
install -m 755 target/x86_64-unknown-linux-gnu/release/screenline-line-sim "$dbroot/usr/local/bin/"

# A broker on the host (the container shares its network): the status proves the hardened
# service reaches the network. It keeps its sessions on disk, and the regulator's subscriber is
# a durable one (QoS 1, fixed client id): what is published while the subscriber is away waits
# for it, so the broker can be stopped and started again without losing a report.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$work/mosquitto-state" && mkdir -m 777 "$work/mosquitto-state"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n' \
  "$port" "$work/mosquitto-state" >"$work/mosquitto.conf"
broker=""
start_broker() {
  mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
  broker=$!
  cleanup_cmds+=("kill $broker 2>/dev/null")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
subscriber=""
subscribe() {
  mosquitto_sub -p "$port" -i regulator -c -q 1 -t 'screenline/v1/T1/a1/#' -v >>"$work/feed.txt" 2>&1 &
  subscriber=$!
  cleanup_cmds+=("kill $subscriber 2>/dev/null")
}
# Stops the subscriber (its session stays), then the broker, which saves the session on SIGTERM.
stop_broker() {
  kill "$subscriber" && wait "$subscriber" || true
  kill "$broker" && wait "$broker" || true
}
: >"$work/feed.txt"
start_broker
subscribe

# The site's values, as a technician fills them in; pseudo-terminals stand for the USB-serial
# devices, so a drop-in lets the unit open them (DeviceAllow=char-pts) — nothing else changes.
cat >"$dbroot/etc/screenline/screenline.toml" <<TOML
site_id = "T1"
appliance_id = "a1"
[mqtt]
url = "mqtt://127.0.0.1:$port"
[console]
listen = "127.0.0.1:0"
[[lines]]
id = "L1"
reader_port = "/run/screenline-sim/L1-reader"
controller_port = "/run/screenline-sim/L1-controller"
xray_dir = "/var/spool/screenline/xray/L1"
TOML
chroot "$dbroot" screenline config check /etc/screenline/screenline.toml || fail "the filled-in configuration"
chroot "$dbroot" install -d -o screenline -g screenline -m 2770 /var/spool/screenline/xray/L1
mkdir -p "$dbroot/etc/systemd/system/screenline.service.d"
printf '[Service]\nDeviceAllow=char-pts rw\n' >"$dbroot/etc/systemd/system/screenline.service.d/test-pty.conf"

# The booted container mounts a fresh /tmp: the parcel goes where the boot leaves it. This
# parcel's waybill declares other goods than the scan shows, so it is flagged and reported.
rm -rf "$dbroot/srv/parcel" && cp -r "$parcel" "$dbroot/srv/parcel"
other=food
[ "$category" = food ] && other=electronics
sed -i "s/\"category\":\"$category\"/\"category\":\"$other\"/" "$dbroot/srv/parcel/waybill.json"
grep -q "\"category\":\"$other\"" "$dbroot/srv/parcel/waybill.json" || fail "the flagged parcel's waybill"
chmod -R a+rX "$dbroot/srv/parcel"
systemd-nspawn --register=no --keep-unit --console=passive -D "$dbroot" --boot >"$work/nspawn.log" 2>&1 &
nspawn=$!
# A container asked to stop powers off; one that does not within 10 s is killed, so a
# failure never hangs CI.
cleanup_cmds+=("kill $nspawn 2>/dev/null; for _ in \$(seq 1 50); do kill -0 $nspawn 2>/dev/null || break; sleep 0.2; done; kill -9 $nspawn 2>/dev/null")
leader=""
for _ in $(seq 1 300); do
  # nspawn's first child is a short-lived helper: the container's leader is its systemd.
  leader=$(ps --ppid "$nspawn" -o pid=,comm= | awk '$2 == "systemd" { print $1; exit }' || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || fail "the container did not start: $(cat "$work/nspawn.log")"
in_ct() { nsenter -t "$leader" -a "$@"; }
cleanup_cmds+=("timeout -k 5 20 nsenter -t $leader -a journalctl -b --no-pager >'$work/container-journal.txt' 2>&1")
state=""
for _ in $(seq 1 240); do
  state=$(timeout -k 5 10 nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.5
done
echo "  container: $state"

for _ in $(seq 1 300); do grep -q '"state":"online"' "$work/feed.txt" && break; sleep 0.1; done
grep -q '"state":"online"' "$work/feed.txt" || fail "no online status at the broker: $(cat "$work/feed.txt")"
ok "the hardened service reached the broker"
# The regulator's broker goes down: the flagged parcel's report can only wait in the outbox.
stop_broker

gid=$(chroot "$dbroot" getent group screenline | cut -d: -f3)
in_ct mkdir -p /run/screenline-sim
in_ct /usr/local/bin/screenline-line-sim --links /run/screenline-sim --line L1 --group "$gid" \
  --record /srv/parcel/waybill.json --image /srv/parcel/scan.png --waybill SF1000000000001 \
  --xray-dir /var/spool/screenline/xray/L1 --timeout-s 120 | tee "$work/line-sim.txt" ||
  { in_ct journalctl -u screenline --no-pager | tail -40; fail "no parcel screened by the service"; }
grep -q "^decision Divert" "$work/line-sim.txt" || fail "the appliance did not divert the flagged parcel"
active=$(in_ct systemctl is-active screenline || true)
restarts=$(in_ct systemctl show -p NRestarts --value screenline)
main_user=$(in_ct systemctl show -p User --value screenline)
echo "  screenline.service: $active, $restarts restarts, user $main_user"
[ "$active" = active ] || { in_ct journalctl -u screenline --no-pager | tail -40; fail "the service is $active"; }
[ "$restarts" = 0 ] || fail "the service restarted $restarts times"
ok "the hardened unit screened and flagged a parcel from the simulated line ($(grep '^decision' "$work/line-sim.txt"))"

# --- N -> N+1 with a report waiting in the outbox ----------------------------------------------
# The next revision of the package: the same release build (one per CI run), so this proves
# the package's upgrade path (maintainer scripts, conffile, data kept, service restarted)
# rather than a change of binary; the store's schema migration has tests of its own.
step "upgrade to the next revision with the broker down; the queued report is delivered"
next=$work/next
rm -rf "$next" && mkdir -p "$next"
cargo deb --no-build --no-strip --locked -p screenline --target x86_64-unknown-linux-gnu \
  --deb-revision 2 --output "$next/" >/dev/null || fail "building revision 2"
deb_next=$(ls "$next"/screenline_"$version"-2_amd64.deb)
cp "$deb_next" "$dbroot/srv/screenline-next.deb"
pid_before=$(in_ct systemctl show -p MainPID --value screenline)
in_ct dpkg -i /srv/screenline-next.deb >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "dpkg -i of revision 2"; }
installed=$(in_ct dpkg-query -W -f '${Version}' screenline)
[ "$installed" = "$version-2" ] || fail "after the upgrade dpkg has $installed"
grep -q '^site_id = "T1"' "$dbroot/etc/screenline/screenline.toml" || fail "the upgrade lost the site's configuration"
for _ in $(seq 1 100); do
  [ "$(in_ct systemctl is-active screenline || true)" = active ] && break
  sleep 0.1
done
pid_after=$(in_ct systemctl show -p MainPID --value screenline)
[ "$(in_ct systemctl is-active screenline || true)" = active ] || { in_ct journalctl -u screenline --no-pager | tail -40; fail "not active after the upgrade"; }
[ "$pid_after" != "$pid_before" ] || fail "the upgrade did not restart the service (pid $pid_before)"
ok "upgraded $version-1 -> $installed: configuration kept, service restarted (pid $pid_before -> $pid_after)"

# The broker is back: the new revision delivers what the old one queued.
start_broker
subscribe
for _ in $(seq 1 600); do grep -q '/reports/flagged .*SF1000000000001' "$work/feed.txt" && break; sleep 0.1; done
grep -q '/reports/flagged .*SF1000000000001' "$work/feed.txt" ||
  { in_ct journalctl -u screenline --no-pager | tail -40; fail "the report queued before the upgrade never reached the regulator"; }
ok "the report queued by revision 1 reached the regulator's subscriber through revision 2"
in_ct journalctl -u screenline --no-pager >"$work/service-journal.txt"
in_ct systemctl stop screenline
# SIGTERM asks nspawn to power the container off; the cleanup kills it if it does not.
kill "$nspawn" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.2; done

echo "package-test: $passed passed, 0 failed ($((SECONDS - t0)) s)"
