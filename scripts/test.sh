#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs what the
# tests need (oidc-provider for the interop tests, via npm into
# tests/oidc/node_modules), then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --all-targets "$@"
