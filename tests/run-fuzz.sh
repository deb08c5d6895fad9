#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run every libFuzzer target for SECONDS each, from its seed corpus
# (tests/fuzz/corpus/NAME); new inputs go to build/fuzz/corpus-NAME, crashes
# to build/fuzz/. Exit non-zero when a target finds a crash.
#   tests/run-fuzz.sh [SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
rc=0
for bin in build/fuzz/fuzz-*; do
	name=${bin##*/fuzz-}
	work=build/fuzz/corpus-$name
	mkdir -p "$work"
	echo "=== fuzz $name: ${secs}s"
	"$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=2 \
		-artifact_prefix=build/fuzz/crash-"$name"- -print_final_stats=1 \
		"$work" "tests/fuzz/corpus/$name" 2>&1 | grep -E '^(#[0-9]+.*(DONE|INITED)|stat::(number_of_executed_units|peak_rss_mb|new_units_added)|==[0-9]+==|SUMMARY|.*(Deadly|crash-))' || true
	[ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz $name: FAILED (see build/fuzz/crash-$name-*)"; rc=1; }
done
exit $rc
