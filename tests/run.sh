#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the workspace.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/setup.sh"
cd "$here/.."
cargo test --workspace --locked --no-fail-fast "$@"
