#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the test suites and end with one line for all: "N passed, N failed".
#   tests/run.sh [unit] [cli] [integration] [fuzz] [kernel]   (default: all)
# unit:   Criterion unit tests, built with ASan/UBSan (build/san)
# cli:    tests/cli/*.sh against the sanitizer build of the cowvol CLI
# integration: tests/integration/*.sh, the real cowvold and cowvol
# fuzz:   each libFuzzer target for FUZZ_CHECK_TIME (15) seconds
# kernel: tests/kernel/t-*.sh in a VM with Debian's kernel (dm-snapshot);
#         never skipped: without qemu and a kernel they fail loudly
set -uo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(unit cli integration fuzz kernel)
passed=0 failed=0
failures=()

count() { # NAME RC
	if [ "$2" = 0 ]; then
		passed=$((passed + 1))
		echo "PASS: $1"
	else
		failed=$((failed + 1))
		failures+=("$1")
		echo "FAIL: $1 (exit $2)"
	fi
}

run_unit() {
	local out line t p f c
	out=$(mktemp)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		build/san/unit-tests --jobs 2 2>&1 | tee "$out"
	line=$(grep -a 'Synthesis: Tested:' "$out" | tail -1)
	# LeakSanitizer reports at a test's exit, after Criterion has its verdict
	san=$(grep -acE 'ERROR: (Leak|Address)Sanitizer|runtime error:' "$out")
	rm -f "$out"
	if [ "$san" != 0 ]; then
		failed=$((failed + 1))
		failures+=("unit tests ($san sanitizer reports)")
	fi
	if [[ $line =~ Tested:\ [^0-9]*([0-9]+).*Passing:\ [^0-9]*([0-9]+).*Failing:\ [^0-9]*([0-9]+).*Crashing:\ [^0-9]*([0-9]+) ]]; then
		t=${BASH_REMATCH[1]} p=${BASH_REMATCH[2]} f=${BASH_REMATCH[3]} c=${BASH_REMATCH[4]}
		passed=$((passed + p))
		failed=$((failed + t - p))
		[ $((f + c)) = 0 ] || failures+=("unit tests ($f failing, $c crashing)")
	else
		failed=$((failed + 1))
		failures+=("unit tests (no Criterion summary: the binary crashed?)")
	fi
}

# scripts that print one "ok - ..." or "not ok - ..." line per check:
# each line counts; a script that fails without such a line counts once
run_tap() { # TIMEOUT SCRIPT...
	local limit=$1 t out rc ok bad start
	shift
	for t in "$@"; do
		out=$(mktemp)
		start=$SECONDS
		COWVOL_BUILD=build/san timeout "$limit" bash "$t" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		echo "# $t: $((SECONDS - start)) s"
		ok=$(grep -c '^ok - ' "$out") bad=$(grep -c '^not ok - ' "$out")
		rm -f "$out"
		passed=$((passed + ok))
		failed=$((failed + bad))
		[ "$bad" = 0 ] || failures+=("$t ($bad checks)")
		if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then
			failed=$((failed + 1))
			failures+=("$t (exit $rc)")
		fi
	done
}

run_cli() { run_tap 300 tests/cli/t-*.sh; }

# the real daemon and CLI (sanitizer builds)
run_integration() { run_tap 900 tests/integration/t-*.sh; }

# each libFuzzer target: first every input that once crashed it
# (tests/fuzz/regress/NAME/*, one check each), then briefly from its seed
# corpus (make fuzz: the long run).  A target runs on one core: two at a
# time, each one's lines printed when both are done.
fuzz_one() { # BINARY: its lines "RC DESCRIPTION" to stdout, the rest to stderr
	local bin=$1 name f rc dict
	name=${bin##*/fuzz-}
	for f in tests/fuzz/regress/"$name"/*; do
		[ -f "$f" ] || continue
		"$bin" -runs=1 -timeout=10 -rss_limit_mb=2048 "$f" >"build/fuzz/regress-$name.log" 2>&1
		rc=$?
		[ "$rc" = 0 ] || grep -aE 'SUMMARY|Deadly|ERROR' "build/fuzz/regress-$name.log" | tail -3 >&2
		echo "$rc fuzz $name: regression ${f##*/}"
	done
	# new inputs go to build/, never into the seed corpus in the tree
	mkdir -p "build/fuzz/check-$name"
	dict=()
	[ ! -f "tests/fuzz/$name.dict" ] || dict=(-dict="tests/fuzz/$name.dict")
	"$bin" -max_total_time="${FUZZ_CHECK_TIME:-15}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=2 "${dict[@]}" \
		-artifact_prefix=build/fuzz/crash-"$name"- "build/fuzz/check-$name" "tests/fuzz/corpus/$name" \
		2>&1 | grep -E 'DONE|Deadly|SUMMARY|ERROR' | tail -3 >&2
	echo "${PIPESTATUS[0]} fuzz $name (${FUZZ_CHECK_TIME:-15}s)"
}
run_fuzz() {
	local bin dir n=0 rc desc
	dir=$(mktemp -d)
	for bin in build/fuzz/fuzz-*; do
		[ -x "$bin" ] || continue
		n=$((n + 1))
		echo "$bin"
	done >"$dir/bins"
	export -f fuzz_one
	xargs -P 2 -I{} bash -c 'fuzz_one "$1" >"$2/${1##*/}.rc" 2>"$2/${1##*/}.log"' _ {} "$dir" <"$dir/bins"
	while read -r bin; do
		cat "$dir/${bin##*/}.log"
		[ -s "$dir/${bin##*/}.rc" ] || count "$bin ran (no result)" 1
		while read -r rc desc; do count "$desc" "$rc"; done <"$dir/${bin##*/}.rc"
	done <"$dir/bins"
	rm -rf "$dir"
	[ "$n" -gt 0 ] || count "fuzz targets built (make fuzz-build)" 1
}

run_kernel() {
	local t dir
	# the first boot prepares the VM's cache (kernel, initramfs) alone
	tests/kernel/vm.sh --mem 4096 --timeout 1200 tests/kernel/smoke.sh
	count "tests/kernel/smoke.sh (kernel VM)" $?
	# then three VMs at a time (COWVOL_VM_JOBS): qemu's emulation runs a
	# guest on one host thread and these machines have two cores, but the
	# guests wait often enough (sync, paced writers, the monitor's poll)
	# that a third one fills the gaps; each one's output is printed whole
	# when all are done.  The longest start first (t-kvol 288 s, t-kengine
	# 200 s, t-userspace-store 192 s, t-kernel-writes 99 s, the others
	# about a minute), so that no long one starts last and runs alone
	dir=$(mktemp -d)
	first="t-kvol.sh t-kengine.sh t-userspace-store.sh t-kernel-writes.sh"
	{
		for t in $first; do echo "tests/kernel/$t"; done
		for t in tests/kernel/t-*.sh; do [[ " $first " == *" ${t##*/} "* ]] || echo "$t"; done
	} | xargs -P "${COWVOL_VM_JOBS:-3}" -I{} sh -c \
		'tests/kernel/vm.sh --mem 4096 --timeout 1200 "$1" >"$2/${1##*/}.log" 2>&1; echo $? >"$2/${1##*/}.rc"' \
		_ {} "$dir"
	for t in tests/kernel/t-*.sh; do
		cat "$dir/${t##*/}.log"
		grep -o 'guest script exited .*' "$dir/${t##*/}.log" | tail -1 | sed "s|^|# $t: |"
		count "$t (kernel VM)" "$(cat "$dir/${t##*/}.rc" 2>/dev/null || echo 1)"
	done
	rm -rf "$dir"
}

for s in "${suites[@]}"; do
	case $s in
	unit | cli | integration | fuzz | kernel)
		echo "=== $s tests"
		begin=$SECONDS
		"run_$s"
		echo "# $s tests: $((SECONDS - begin)) s"
		;;
	*) echo "unknown suite '$s' (unit, cli, integration, fuzz, kernel)" >&2; exit 2 ;;
	esac
done
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
