#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Kernel engine benchmark, in Debian's kernel under qemu (tests/kernel/vm.sh;
# this machine's kernel has no device-mapper):
#   - snapshot creation: the wall time of `cowvol snap` and the window the
#     origin stays suspended (suspend to resume), idle and under a light
#     writer, against the baseline of `dmsetup suspend` + `dmsetup resume` of
#     the same origin in the same run;
#   - cowvold's memory with one volume and 0, 10 and 100 snapshots, against an
#     idle cowvold with no volume.
# bench/kernel-bench-guest.sh does the measuring (how: its opening comment);
# this script boots the VM and prints the report.  qemu runs with TCG
# (software emulation), so absolute times are slow: read the ratios.
#
# Environment: BENCH_KERNEL_SAMPLES (samples a pass, 30), BENCH_KERNEL_WARMUP
# (2), BENCH_KERNEL_MEM_SNAPS (100), BENCH_KERNEL_TIMEOUT (seconds, 900),
# BENCH_DIR (scratch folder, /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${BENCH_KERNEL_SAMPLES:-30}
WARM=${BENCH_KERNEL_WARMUP:-2}
MEMSNAPS=${BENCH_KERNEL_MEM_SNAPS:-100}
TIMEOUT=${BENCH_KERNEL_TIMEOUT:-900}
for v in "$SAMPLES" "$WARM" "$MEMSNAPS" "$TIMEOUT"; do
	[[ $v =~ ^[0-9]+$ ]] || { echo "kernel-bench: '$v' is not a number" >&2; exit 2; }
done
if [ "$SAMPLES" -lt 1 ] || [ "$MEMSNAPS" -lt 10 ]; then
	echo "kernel-bench: want >= 1 sample and >= 10 snapshots" >&2
	exit 2
fi
if [ ! -x build/cowvol ] || [ ! -x build/cowvold ]; then
	echo "kernel-bench: build first (make)" >&2
	exit 1
fi

T=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cowvol-kernel-bench.XXXXXX")
# The binaries measured: copies taken now (the guest sees the host's files
# live, and a rebuild in build/ during the run would mix two versions), with
# the library beside them, which their rpath ($ORIGIN) finds.  In build/, as
# the guest sees the repository wherever it is (not so BENCH_DIR in /tmp).
BIN=$(mktemp -d "$PWD/build/kernel-bench-bin.XXXXXX")
trap 'rm -rf "$T" "$BIN"' EXIT
O=$T/out
chmod 755 "$BIN"
cp build/cowvol build/cowvold "$BIN/"
cp -L build/libcowvol.so.0 "$BIN/"
VERSION="$("$BIN/cowvold" --version 2>/dev/null | head -1), tree $(git describe --always --dirty 2>/dev/null || echo '?')"

# how much other work competed for this machine's CPUs during the run
psi() { awk '/^some/ { sub(/.*total=/, ""); print; exit }' /proc/pressure/cpu 2>/dev/null || true; }
psi0=$(psi)
start=$SECONDS
# the console (boot, the guest's progress) goes to stderr; the report to stdout
if ! COWVOL_VM_OUT=$O tests/kernel/vm.sh --timeout "$TIMEOUT" bench/kernel-bench-guest.sh \
	"$SAMPLES" "$WARM" "$MEMSNAPS" "$BIN" >&2; then
	echo "kernel-bench: the VM run failed (its console is above)" >&2
	exit 1
fi
vmsecs=$((SECONDS - start))
psi1=$(psi)
busy=
[ -s "$O/info" ] || { echo "kernel-bench: the guest brought back no figures" >&2; exit 1; }

get() { sed -n "s/^$1=//p" "$O/info" | tail -1; }

# stats: seconds on stdin, one a line -> "min median p90 max max-min stddev" in ms
# (p90: nearest rank; stddev: of the sample)
stats() {
	sort -g | awk '{ v[NR] = $1 * 1000; s += v[NR] }
		END {
			n = NR
			if (n == 0) { print "- - - - - -"; exit }
			med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
			r = int(0.9 * n); if (r < 0.9 * n) r++
			m = s / n; for (k = 1; k <= n; k++) q += (v[k] - m) ^ 2
			sd = n > 1 ? sqrt(q / (n - 1)) : 0
			printf "%.1f %.1f %.1f %.1f %.1f %.1f\n", v[1], med, v[r], v[n], v[n] - v[1], sd }'
}
# col FILE PHASE COLUMN: that column of the PHASE rows
col() { [ -f "$1" ] || return 0; awk -F'\t' -v p="$2" -v c="$3" '$1 == p { print $c }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else printf "-" }'; }
row() { # LABEL STATS FLOOR-MEDIAN
	local a
	read -r -a a <<<"$2"
	printf '  %-34s %7s %7s %7s %7s %8s %7s %7s\n' "$1" "${a[@]}" "$(ratio "${a[1]}" "$3")"
}

sumcols() { awk -F'\t' -v p="$2" '$1 == p { print $4 + $5 }' "$1"; }

echo "kernel:    Linux $(get kernel) (Debian's) under qemu TCG, $(get cpus) vCPUs: software emulation, times are"
echo "           many times real hardware's, so read the ratios to the baseline measured beside them"
echo "cowvold:   $VERSION (copies of build/ taken at the start)"
echo "volume:    a 256 MiB loop device (a file in the guest's tmpfs) under cowvol's kernel engine"
echo "           (snapshot-origin over a -real linear layer), ext4 on it, mounted"
echo "samples:   $SAMPLES a pass after $WARM not counted; each takes a snapshot (\`cowvol snap\`, a 16 MiB store file)"
echo "           and removes it (\`cowvol rm\`) before the next: every sample goes from 0 to 1 snapshot"
echo "writer:    64 KiB into ext4 every 0.1 s ($(get writer_kib_s) KiB/s measured); 0.25 s pause before each suspend"
echo "window:    suspend to resume, seen by the kernel: a kprobe and a kretprobe on dm_ctl_ioctl in ftrace (mono"
echo "           clock; no tracer stops the daemon): from the entry of the DM_DEV_SUSPEND that suspends the origin"
echo "           (with lockfs: ext4 frozen and flushed) to the return of the DM_DEV_SUSPEND that resumes it;"
echo "           cowvold resumes the new snapshot in between"
echo "baseline:  \`dmsetup suspend\` then \`dmsetup resume\` of the same origin (lockfs too), after each sample;"
echo "           floor = the two ioctls' own time, what any snapshot tool pays; by hand = suspend to resume"
echo "           across the two commands (holds starting the second dmsetup)"
if [ "$(get lvm)" = none ]; then
	echo "LVM:       not measured: LVM (lvm2) is not installed here"
else
	echo "LVM:       not measured ($(get lvm) exists, but this bench has no LVM volume group)"
fi

printf '\n%-36s %7s %7s %7s %7s %8s %7s %7s\n' "snapshot creation (ms)" min median p90 max max-min stddev "/floor"
for phase in idle writer; do
	case $phase in
	idle) echo "idle (ext4 mounted, no writes)" ;;
	writer) echo "light writer" ;;
	esac
	floor=$(sumcols "$O/base.tsv" "$phase" | stats)
	fm=$(echo "$floor" | cut -d' ' -f2)
	row "cowvol snap, wall time" "$(col "$O/wall.tsv" "$phase" 3 | stats)" "$fm"
	row "window, suspend to resume" "$(col "$O/window.tsv" "$phase" 3 | stats)" "$fm"
	row "  of it the suspend ioctl" "$(col "$O/window.tsv" "$phase" 4 | stats)" "$fm"
	row "baseline floor (2 ioctls)" "$floor" "$fm"
	row "  of it the suspend ioctl" "$(col "$O/base.tsv" "$phase" 4 | stats)" "$fm"
	row "baseline by hand, window" "$(col "$O/base.tsv" "$phase" 3 | stats)" "$fm"
	echo "  samples: $(col "$O/window.tsv" "$phase" 3 | wc -l) windows, $(col "$O/base.tsv" "$phase" 3 | wc -l) baselines"
done

printf '\n%-36s %7s %7s %7s %5s %7s %9s\n' "cowvold memory (KiB)" VmRSS VmHWM RssAnon fds threads "RSS/idle"
idle_rss=$(awk -F'\t' 'NR == 1 { print $2 }' "$O/mem.tsv")
while IFS=$'\t' read -r label rss hwm anon fds thr; do
	printf '  %-34s %7s %7s %7s %5s %7s %9s\n' "$label" "$rss" "$hwm" "$anon" "$fds" "$thr" "$(ratio "$rss" "$idle_rss")"
done <"$O/mem.tsv"
made=$(get mem_snaps)
awk -F'\t' -v n="$made" '
	$1 == "1 volume, 0 snapshots" { r0 = $2; a0 = $4 }
	$1 == "1 volume, " n " snapshots" { r = $2; a = $4 }
	END { if (r0 != "" && r != "" && n > 0)
		printf "  per snapshot (0 -> %d): VmRSS %+.1f KiB, RssAnon %+.1f KiB\n", n, (r - r0) / n, (a - a0) / n }' "$O/mem.tsv"
echo "  with $made snapshots: $(get mem_loops) loop devices in use (the loop module has max_loop=$(get loop_max_loop);"
echo "  more come on demand through /dev/loop-control), $(get mem_dm_devices) cowvol dm devices, $(get mem_listed_active) listed active"
printf '  cowvol snap wall time (ms) as they accumulate:'
for r in "1 10" "41 50" "$((made - 9)) $made"; do
	read -r a b <<<"$r"
	if [ "$a" -lt 1 ] || [ "$b" -gt "$made" ]; then continue; fi
	s=$(awk -F'\t' -v a="$a" -v b="$b" '$1 == "mem" && $2 >= a && $2 <= b { print $3 }' "$O/wall.tsv" | stats)
	read -r _ med _ mx _ <<<"$s"
	printf ' %s-%s median %s max %s;' "$a" "$b" "$med" "$mx"
done
echo
slow=$(awk -F'\t' '$1 == "mem" && $3 > 1 { n++ } END { print n + 0 }' "$O/wall.tsv")
[ "$slow" = 0 ] || echo "  $slow of the $made took more than 1 s"
if [ -n "$(get mem_rm_seconds)" ]; then
	echo "  cowvol rm --recursive of the volume and its $made snapshots: $(get mem_rm_seconds | awk '{ printf "%.1f", $1 }') s; cowvol dm devices left: $(get mem_dm_left)"
fi
echo "VM run:    ${vmsecs} s, boot included (memory $(get seconds_mem) s, idle pass $(get seconds_idle) s, writer pass $(get seconds_writer) s)"
load="load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
if [ -n "$psi0" ] && [ -n "$psi1" ] && [ "$vmsecs" -gt 0 ]; then
	busy=$(awk -v a="$psi0" -v b="$psi1" -v s="$vmsecs" 'BEGIN { printf "%.0f", (b - a) / 1e4 / s }')
	load="$load; some task waited for a CPU $busy % of the run (/proc/pressure/cpu)"
fi
echo "host:      $(nproc) CPUs, qemu's TCG wants 2 besides the host's own work; $load"
if [ "${busy:-0}" -ge 30 ]; then
	echo "WARNING:   the host was busy with other work: the spreads (and the slow samples) are partly its own,"
	echo "           not cowvold's; run again on a quiet machine"
fi

rc=0
if [ "$made" -lt "$MEMSNAPS" ]; then
	echo "LIMIT: only $made of $MEMSNAPS snapshots could be made (see below)"
	rc=1
fi
if [ -s "$O/errors" ]; then
	echo "PROBLEMS:"
	sed 's/^/  /' "$O/errors"
	rc=1
fi
exit "$rc"
