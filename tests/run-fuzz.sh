#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run every libFuzzer target (or those named) for SECONDS each, from its
# seed corpus (tests/fuzz/corpus/NAME) and dictionary (tests/fuzz/NAME.dict,
# if any); new inputs go to
# build/fuzz/corpus-NAME, crashes to build/fuzz/crash-NAME-*, each target's
# whole log to build/fuzz/log-NAME.  Ends with one line a target: executions,
# coverage (cov: edges, ft: features), corpus, new units, peak RSS, crashes.
# Exit non-zero when a target finds a crash.
#   tests/run-fuzz.sh [SECONDS [NAME...]]
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
bins=()
if [ $# -gt 0 ]; then
	for n in "$@"; do bins+=("build/fuzz/fuzz-$n"); done
else
	bins=(build/fuzz/fuzz-*)
fi
rc=0
summary=()
stat() { # KEY LOG
	sed -n "s/^stat::$1: *//p" "$2" | tail -1
}
for bin in "${bins[@]}"; do
	[ -n "$bin" ] || continue
	name=${bin##*/fuzz-}
	if [ ! -x "$bin" ]; then
		echo "fuzz $name: $bin is not built (make fuzz-build)"
		rc=1
		continue
	fi
	work=build/fuzz/corpus-$name
	log=build/fuzz/log-$name
	mkdir -p "$work"
	stamp=$(mktemp)
	echo "=== fuzz $name: ${secs}s"
	dict=()
	[ ! -f "tests/fuzz/$name.dict" ] || dict=(-dict="tests/fuzz/$name.dict")
	"$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=2 "${dict[@]}" \
		-artifact_prefix=build/fuzz/crash-"$name"- -print_final_stats=1 \
		"$work" "tests/fuzz/corpus/$name" >"$log" 2>&1
	brc=$?
	grep -aE '^(#[0-9]+.*(DONE|INITED)|stat::|==[0-9]+==|SUMMARY|.*(Deadly|crash-))' "$log"
	done_line=$(grep -aE '^#[0-9]+.*DONE' "$log" | tail -1)
	[ -n "$done_line" ] || done_line=$(grep -aE '^#[0-9]+' "$log" | tail -1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
	corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$done_line")
	crashes=$(find build/fuzz -maxdepth 1 -name "crash-$name-*" -newer "$stamp" | wc -l)
	rm -f "$stamp"
	line="fuzz $name: ${secs}s, $(stat number_of_executed_units "$log") execs ($(stat average_exec_per_sec "$log")/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, new units $(stat new_units_added "$log"), peak RSS $(stat peak_rss_mb "$log") MB, crashes $crashes"
	if [ "$brc" != 0 ]; then
		line+=" FAILED (exit $brc; see $log, build/fuzz/crash-$name-*)"
		rc=1
	fi
	echo "$line"
	summary+=("$line")
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $rc
