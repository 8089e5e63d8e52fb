#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs what the
# tests need (oidc-provider for the interop tests, via npm into
# tests/oidc/node_modules), then runs every Rust test. `--features
# fuzzing` compiles the fuzz harness (`sidekey::fuzz`, out of the default
# build) so tests/fuzz_regressions.rs runs too; the feature only adds that
# module, so the one build serves every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --all-targets --features fuzzing "$@"
