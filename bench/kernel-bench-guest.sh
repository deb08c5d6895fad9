#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The guest half of bench/kernel-bench.sh: it runs as root inside Debian's
# kernel under qemu (tests/kernel/vm.sh) and leaves raw figures in
# $VM_WORK/out, which bench/kernel-bench.sh turns into the report.
#
# 1. Memory: a fresh cowvold, idle with no volume; then one kernel volume
#    (a 64 MiB loop device) with 0, 10 and MEMSNAPS snapshots (1 MiB stores);
#    after a restart with them; after `cowvol rm --recursive`.  VmRSS,
#    VmHWM, RssAnon from /proc/PID/status, open descriptors, threads; the
#    wall time of each `cowvol snap`.
# 2. Snapshot creation: a 256 MiB loop device under cowvol, ext4, mounted;
#    a pass idle, then a pass with a light writer.  A sample takes one
#    snapshot (`cowvol snap`, 16 MiB store), then removes it (`cowvol rm`,
#    not measured), so every sample goes from 0 to 1 snapshot; after it,
#    the baseline: `dmsetup suspend` + `dmsetup resume` of the same origin.
#    The suspend window comes from the kernel: a kprobe on dm_ctl_ioctl
#    (the device-mapper control ioctl: its command, the dm_ioctl's flags and
#    name read from the caller's memory) and a kretprobe on it, in ftrace
#    with the mono clock; no tracer stops the daemon.  Window: from the entry
#    of the DM_DEV_SUSPEND that suspends the origin (DM_SUSPEND_FLAG, with
#    lockfs: ext4 is frozen and flushed from there) to the return of the
#    DM_DEV_SUSPEND that resumes it.  Markers in trace_marker say which
#    sample each event belongs to.
#
#   bench/kernel-bench-guest.sh [SAMPLES [WARMUP [MEMSNAPS [BINDIR]]]]
# SAMPLES a pass (30), WARMUP samples not counted at the start of a pass (2),
# MEMSNAPS snapshots for the memory figures (100), BINDIR where cowvol and
# cowvold are (the repository's build/).  (vm.sh passes arguments, not the
# environment.)
#
# Files in out/: info (key=value), mem.tsv, wall.tsv, window.tsv, base.tsv,
# errors (what went wrong, if anything), cowvold.log.
set -euo pipefail
[ "${COWVOL_IN_VM:-}" = 1 ] || { echo "run me through bench/kernel-bench.sh" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${4:-$REPO/build}
COWVOL=$BUILD/cowvol
COWVOLD=$BUILD/cowvold
N=${1:-30}
WARM=${2:-2}
MEMSNAPS=${3:-100}
OUT=$VM_WORK/out
mkdir -p "$OUT"
: >"$OUT/errors"
T=$(mktemp -d /tmp/kbench.XXXXXX)
export COWVOL_SOCKET=$T/cowvold.sock

say() { echo "# $*"; }
info() { echo "$1=$2" >>"$OUT/info"; }
err() { echo "$*" >>"$OUT/errors"; echo "kernel-bench: $*" >&2; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

info kernel "$(uname -r)"
info cpus "$(nproc)"
info loop_max_loop "$(cat /sys/module/loop/parameters/max_loop 2>/dev/null || echo ?)"
info lvm "$(command -v lvcreate || echo none)"

daemon=
start_daemon() { # cowvold on $T/state, logging to $T/cowvold.log
	"$COWVOLD" --state-dir "$T/state" --socket "$COWVOL_SOCKET" >>"$T/cowvold.log" 2>&1 &
	daemon=$!
	for _ in $(seq 1 200); do "$COWVOL" status >/dev/null 2>&1 && return 0; sleep 0.1; done
	err "cowvold did not start: $(tail -3 "$T/cowvold.log")"
	exit 1
}
stop_daemon() {
	alive || return 0
	kill -TERM "$daemon" 2>/dev/null || true
	wait "$daemon" 2>/dev/null || true
	daemon=
}
alive() { [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; }
check_alive() { # WHERE
	alive && return 0
	err "cowvold died ($1); its log ends: $(tail -5 "$T/cowvold.log" | tr '\n' '|')"
	exit 0 # the figures so far still go home
}
# mem LABEL: a row of mem.tsv (KiB, KiB, KiB, count, count)
mem() {
	local st=/proc/$daemon/status
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" \
		"$(awk '/^VmRSS:/ {print $2}' "$st")" "$(awk '/^VmHWM:/ {print $2}' "$st")" \
		"$(awk '/^RssAnon:/ {print $2}' "$st")" "$(find "/proc/$daemon/fd" -mindepth 1 | wc -l)" \
		"$(awk '/^Threads:/ {print $2}' "$st")" >>"$OUT/mem.tsv"
}
loops_in_use() { losetup -l -n -O NAME | wc -l; }

# --- 1. memory ----------------------------------------------------------------------
t_mem=$SECONDS
say "memory: an idle cowvold"
start_daemon
"$COWVOL" status >/dev/null
mem "idle, no volume"
truncate -s 64M "$T/mem.img"
MEMDEV=$(losetup -f --show "$T/mem.img")
"$COWVOL" add "$MEMDEV" --name m >/dev/null
mem "1 volume, 0 snapshots"
say "memory: $MEMSNAPS snapshots with 1 MiB stores"
made=0
for i in $(seq 1 "$MEMSNAPS"); do
	t0=$(now)
	if ! "$COWVOL" snap "m@s$i" --store-size 1M >"$T/snap.out" 2>&1; then
		err "snapshot $i of $MEMSNAPS failed (loop devices in use: $(loops_in_use)): $(tr '\n' ' ' <"$T/snap.out")"
		check_alive "after snapshot $i failed"
		break
	fi
	printf 'mem\t%s\t%s\n' "$i" "$(elapsed "$t0" "$(now)")" >>"$OUT/wall.tsv"
	made=$i
	[ "$i" = 10 ] && mem "1 volume, 10 snapshots"
	[ $((i % 25)) = 0 ] && say "  $i"
done
check_alive "after $made snapshots"
info mem_snaps "$made"
[ "$made" -ge 10 ] && [ "$made" != 10 ] && mem "1 volume, $made snapshots"
info mem_loops "$(loops_in_use)"
info mem_dm_devices "$(dmsetup ls | grep -c '^cowvol-')"
info mem_listed_active "$("$COWVOL" list m | grep -cE '^ +m@s[0-9]+ .* active ' || true)"
stop_daemon
start_daemon
mem "after a restart, $made snapshots"
say "memory: cowvol rm --recursive"
t0=$(now)
if "$COWVOL" rm m --recursive --yes >"$T/rm.out" 2>&1; then
	info mem_rm_seconds "$(elapsed "$t0" "$(now)")"
else
	err "cowvol rm m --recursive failed: $(tr '\n' ' ' <"$T/rm.out")"
fi
check_alive "after rm --recursive"
info mem_dm_left "$(dmsetup ls | grep -c '^cowvol-' || true)"
stop_daemon
losetup -d "$MEMDEV"
info seconds_mem $((SECONDS - t_mem))

# --- 2. snapshot creation --------------------------------------------------------------
TR=/sys/kernel/tracing
mountpoint -q "$TR" || mount -t tracefs nodev "$TR"
echo 0 >"$TR/tracing_on"
echo mono >"$TR/trace_clock"
echo 8192 >"$TR/buffer_size_kb"
# dm_ctl_ioctl(file, command, user): struct dm_ioctl has flags at byte 28,
# name at byte 48 (include/uapi/linux/dm-ioctl.h)
# shellcheck disable=SC2016 # $argN, $retval: the kernel's fetch arguments
echo 'p:cvb_dm dm_ctl_ioctl cmd=$arg2:x32 flags=+u28($arg3):x32 name=+u48($arg3):ustring' >>"$TR/kprobe_events"
# shellcheck disable=SC2016
echo 'r:cvb_dm_ret dm_ctl_ioctl ret=$retval:s32' >>"$TR/kprobe_events"
echo 'cmd == 0xc138fd06' >"$TR/events/kprobes/cvb_dm/filter" # DM_DEV_SUSPEND
echo 'comm == "cowvold" || comm == "dmsetup"' >"$TR/events/kprobes/cvb_dm_ret/filter"
echo 1 >"$TR/events/kprobes/cvb_dm/enable"
echo 1 >"$TR/events/kprobes/cvb_dm_ret/enable"
: >"$TR/trace"
mark() { echo "cvbench: $*" >"$TR/trace_marker"; }

truncate -s 256M "$T/lat.img"
LATDEV=$(losetup -f --show "$T/lat.img")
start_daemon
"$COWVOL" add "$LATDEV" --name lat >/dev/null
ORIGIN=cowvol-lat
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "/dev/mapper/$ORIGIN"
mkdir -p "$T/mnt"
mount "/dev/mapper/$ORIGIN" "$T/mnt"
info lat_fs "$(findmnt -no FSTYPE "$T/mnt")"

writer=
start_writer() { # 64 KiB every 0.1 s into 16 files, a light load
	(
		n=0
		trap 'echo "$n" >"$T/writer.n"; exit 0' TERM
		while :; do
			head -c 65536 /dev/urandom >"$T/mnt/w.$((n % 16))"
			n=$((n + 1))
			sleep 0.1
		done
	) &
	writer=$!
	writer_t0=$(now)
}
stop_writer() {
	kill -TERM "$writer"
	wait "$writer" 2>/dev/null || true
	info writer_kib_s "$(awk -v n="$(cat "$T/writer.n")" -v s="$(elapsed "$writer_t0" "$(now)")" 'BEGIN { printf "%.0f", n * 64 / s }')"
	writer=
}

# one_snap PHASE I: take lat@b (timed), then remove it
one_snap() {
	local t0 t1
	mark "$1 $2 snap"
	t0=$(now)
	if ! "$COWVOL" snap lat@b --store-size 16M >"$T/snap.out" 2>&1; then
		err "$1: cowvol snap lat@b failed: $(tr '\n' ' ' <"$T/snap.out")"
		check_alive "$1"
		return 1
	fi
	t1=$(now)
	[ "$2" -le 0 ] || printf '%s\t%s\t%s\n' "$1" "$2" "$(elapsed "$t0" "$t1")" >>"$OUT/wall.tsv"
	mark "$1 $2 rm"
	if ! "$COWVOL" rm lat@b >"$T/rm.out" 2>&1; then
		err "$1: cowvol rm lat@b failed: $(tr '\n' ' ' <"$T/rm.out")"
		return 1
	fi
}

# by_hand PHASE I: the baseline, dmsetup suspend then resume of the origin
by_hand() {
	mark "$1 $2 hand"
	if ! dmsetup suspend "$ORIGIN" || ! dmsetup resume "$ORIGIN"; then
		err "$1 $2: dmsetup suspend/resume $ORIGIN failed"
		dmsetup resume "$ORIGIN" || true
	fi
}

# pass PHASE PAUSE: WARM + N samples; PAUSE seconds before each measured
# suspend, so each sees the same time of writes since the one before
pass() {
	local phase=$1 pause=$2 t=$SECONDS
	say "snapshot creation: $phase, $WARM + $N samples"
	echo 1 >"$TR/tracing_on"
	for i in $(seq $((1 - WARM)) "$N"); do
		[ "$pause" = 0 ] || sleep "$pause"
		one_snap "$phase" "$i" || break
		[ "$pause" = 0 ] || sleep "$pause"
		by_hand "$phase" "$i"
	done
	echo 0 >"$TR/tracing_on"
	cat "$TR/trace" >>"$T/trace"
	cat "$TR/per_cpu"/cpu*/stats | awk '/^(overrun|dropped events):/ && $NF > 0 { bad = 1 } END { exit bad }' ||
		err "$phase: ftrace lost events (its per-CPU stats show overruns)"
	: >"$TR/trace"
	info "seconds_$phase" $((SECONDS - t))
}

pass idle 0
start_writer
pass writer 0.25
stop_writer
check_alive "the snapshot creation passes"
umount "$T/mnt"
"$COWVOL" rm lat --recursive --yes >/dev/null || err "cowvol rm lat --recursive failed"
stop_daemon
echo 0 >"$TR/events/kprobes/cvb_dm/enable"
echo 0 >"$TR/events/kprobes/cvb_dm_ret/enable"
echo '-:cvb_dm' >>"$TR/kprobe_events"
echo '-:cvb_dm_ret' >>"$TR/kprobe_events"
cp "$T/trace" "$OUT/trace"

# The trace: each DM_DEV_SUSPEND paired with the next return of the same
# thread (a thread is in one ioctl at a time).  window.tsv: PHASE I window
# suspend-ioctl (seconds) for cowvold; base.tsv: PHASE I window-by-hand
# suspend-ioctl resume-ioctl for dmsetup.
awk -v o="$ORIGIN" -v wout="$OUT/window.tsv" -v bout="$OUT/base.tsv" '
	function hex(s,   i, c, v) {
		v = 0; s = tolower(s); sub(/^0x/, "", s)
		for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)) - 1; v = v * 16 + c }
		return v
	}
	function bit(v, b) { return int(v / b) % 2 }
	function flush(   key) {
		if (kind == "snap" && i > 0) {
			if (ws == "" || we == "") { printf "%s %s: no suspend window of %s in the trace\n", phase, i, o > "/dev/stderr" }
			else printf "%s\t%s\t%.6f\t%.6f\n", phase, i, we - ws, sd > wout
		}
		if (kind == "hand" && i > 0) {
			if (hs == "" || he == "") { printf "%s %s: no dmsetup suspend/resume in the trace\n", phase, i > "/dev/stderr" }
			else printf "%s\t%s\t%.6f\t%.6f\t%.6f\n", phase, i, he - hs, hsd, hrd > bout
		}
		ws = we = sd = hs = he = hsd = hrd = ""
	}
	{
		ts = ""
		for (f = 1; f <= NF; f++) if ($f ~ /^[0-9]+\.[0-9]+:$/) { ts = substr($f, 1, length($f) - 1); ev = $(f + 1); break }
		if (ts == "") next
		pid = $1; sub(/.*-/, "", pid)
	}
	ev == "tracing_mark_write:" && $(f + 2) == "cvbench:" { flush(); phase = $(f + 3); i = $(f + 4); kind = $(f + 5); next }
	ev == "cvb_dm:" {
		fl = $0; sub(/.* flags=/, "", fl); sub(/ .*/, "", fl)
		nm = $0; sub(/.* name="/, "", nm); sub(/"$/, "", nm)
		open[pid] = 1; t0[pid] = ts; flags[pid] = hex(fl); name[pid] = nm; comm[pid] = $1
		next
	}
	ev == "cvb_dm_ret:" && open[pid] {
		open[pid] = 0
		if (name[pid] != o || $NF != "ret=0") next
		susp = bit(flags[pid], 2); lockfs = !bit(flags[pid], 1024); d = ts - t0[pid]
		if (kind == "snap" && comm[pid] ~ /^cowvold-/) {
			if (susp && lockfs && ws == "") { ws = t0[pid]; sd = d }
			else if (!susp && ws != "" && we == "") we = ts
		}
		if (kind == "hand" && comm[pid] ~ /^dmsetup-/) {
			if (susp && hs == "") { hs = t0[pid]; hsd = d }
			else if (!susp && hs != "" && he == "") { he = ts; hrd = d }
		}
	}
	END { flush() }' "$T/trace" 2>>"$OUT/errors"

# priorities 0-3 (emerg .. err) in the log, or a sanitizer's report
bad='^<[0-3]>|AddressSanitizer|runtime error'
grep -qE "$bad" "$T/cowvold.log" &&
	err "cowvold logged errors: $(grep -E "$bad" "$T/cowvold.log" | head -3 | tr '\n' '|')"
losetup -d "$LATDEV" 2>/dev/null || true
cp "$T/cowvold.log" "$OUT/cowvold.log"
say "done"
