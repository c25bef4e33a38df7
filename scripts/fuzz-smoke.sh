#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a few seconds, then replays
# the saved regression inputs (fuzz/regressions/<target>/*) and runs the regression
# tests (fuzz/regressions/*.rs). Fails on any crash or failing test.
#
#   scripts/fuzz-smoke.sh [SECONDS]      seconds per target (default 5)
#
# Environment:
#   FUZZ_REQUIRED=1        fail (instead of skipping) when cargo-fuzz is not installed
#   FUZZ_SANITIZER=none    cargo-fuzz sanitizer; the default `none` works on a stable
#                          toolchain. `address` needs nightly features: on stable it only
#                          works with RUSTC_BOOTSTRAP=1 (set it yourself to opt in).
#   FUZZ_TARGETS="a b"     only these targets (default: all of `cargo fuzz list`)
#
# Inputs that a run discovers go to a temporary directory: the committed seed corpora in
# fuzz/corpus/ are only read. Crash inputs land in fuzz/artifacts/<target>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-5}
SANITIZER=${FUZZ_SANITIZER:-none}
case $SECONDS_PER_TARGET in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ "${FUZZ_REQUIRED:-0}" = 1 ]; then
        echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz --locked) and FUZZ_REQUIRED=1" >&2
        exit 1
    fi
    echo "fuzz-smoke: SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz --locked); set FUZZ_REQUIRED=1 to make this an error"
    exit 0
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    echo "fuzz-smoke: a C++ compiler is needed to build libFuzzer (libfuzzer-sys)" >&2
    exit 1
fi

echo "== fuzz-smoke: $(cargo fuzz --version), $(rustc --version), sanitizer $SANITIZER, ${SECONDS_PER_TARGET}s per target"
(cd fuzz && cargo fuzz build -s "$SANITIZER")

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no fuzz targets found" >&2
    exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

pass=0
fail=0
failed=
for t in "${targets[@]}"; do
    echo "-- $t: fuzzing for ${SECONDS_PER_TARGET}s"
    mkdir -p "$scratch/$t" "fuzz/corpus/$t"
    log="$scratch/$t.log"
    ok=1
    # -timeout: one input taking over 10 s counts as a hang; -rss_limit_mb bounds memory.
    # The outer `timeout` is a safety net in case libFuzzer itself wedges.
    if ! (cd fuzz && timeout --kill-after=30 $((SECONDS_PER_TARGET + 300)) \
        cargo fuzz run -s "$SANITIZER" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1) >"$log" 2>&1; then
        ok=0
    fi
    grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done ' "$log" | sed 's/^/   /' || true
    if [ -d "fuzz/regressions/$t" ]; then
        for input in fuzz/regressions/"$t"/*; do
            [ -f "$input" ] || continue
            echo "   replaying $input"
            if ! (cd fuzz && timeout 120 cargo fuzz run -s "$SANITIZER" "$t" "../$input") >>"$log" 2>&1; then
                echo "   regression input $input crashes"
                ok=0
            fi
        done
    fi
    if [ "$ok" = 1 ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed="$failed $t"
        echo "FAILED: $t; the end of its log:"
        grep -avE '^\s+[0-9]+: |^\s+at |^#[0-9]+\s+(NEW|REDUCE|pulse)' "$log" | tail -n 40 | sed 's/^/   | /'
    fi
done

echo "-- regression tests (fuzz/regressions/*.rs)"
if ! (cd fuzz && cargo test --quiet --tests) >"$scratch/regressions.log" 2>&1; then
    fail=$((fail + 1))
    failed="$failed regression-tests"
    echo "FAILED: the regression tests; the end of their log:"
    tail -n 40 "$scratch/regressions.log" | sed 's/^/   | /'
else
    grep -E '^test result' "$scratch/regressions.log" | sed 's/^/   /' || true
fi

echo "fuzz-smoke: $pass passed, $fail failed"
if [ "$fail" -ne 0 ]; then
    echo "fuzz-smoke: failed:$failed (crash inputs in fuzz/artifacts/)" >&2
    exit 1
fi
