#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# NBD benchmark: fio's nbd engine (libnbd) against
#   - qemu-nbd serving a raw image: the baseline, every ratio is to it;
#   - qemu-nbd serving a qcow2 overlay whose backing file is that image;
#   - cowvold serving a volume (a copy of the image) with 0, 1 and 8 snapshots;
# all on one filesystem, measured in the same run.  Workloads: 4 KiB random
# write and read, 1 MiB sequential write, at queue depth 1 and 16.
#
# Each run is one fio job, so one NBD connection: fio's nbd engine connects
# once a job and keeps up to iodepth requests in flight on it (nbd_aio_*,
# checked below with fio's "IO depths"); nrfiles adds no connection,
# numjobs would add one a job.  qemu-nbd does not offer multi-conn on a
# writable export (and serves one client at a time by default), so one
# connection is what its clients use too.  Every write run ends with a flush
# (end_fsync: NBD_CMD_FLUSH), counted in its time, so that work a server
# defers (cowvold's group commit, qcow2's metadata) is paid for.
#
# Writes land in the first REGION MiB.  Where there is a layer (the qcow2
# overlay, the snapshots) each write workload starts on a fresh one and is
# measured twice:
#   - first write: one pass over the region (at most SECONDS), every write
#     the first to its place since the snapshot / overlay was made (cowvold
#     copies every chunk it touches into every snapshot; qcow2 allocates a
#     64 KiB cluster on the first write into it and copies from the backing
#     file what the write does not cover);
#   - re-write: the region written in full once more (not measured), then
#     SECONDS of the same workload: nothing left to copy or allocate.
# Reads cover the whole volume, on a fresh overlay / fresh snapshots.  Every
# run starts with all the files in the page cache (they are read first), so
# the figures are the servers' own costs, not the disk's.
#
# fio runs on CPU 0 and the server on the other CPUs (BENCH_NBD_PIN=0: no
# pinning): at queue depth 1 a request costs mostly the wakeups between
# client and server, and whether the scheduler puts them on one CPU or two
# changed the figure up to 8 times from run to run (on a 2-CPU VM).
#
# Environment: BENCH_DIR (scratch folder, default /var/tmp), BENCH_NBD_MIB
# (volume size, 1024), BENCH_NBD_REGION_MIB (256), BENCH_NBD_SECONDS (4),
# BENCH_NBD_PIN (1), COWVOL_BUILD (where cowvold and cowvol are, default build).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh bench

BUILD=${COWVOL_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
MIB=${BENCH_NBD_MIB:-1024}
REGION=${BENCH_NBD_REGION_MIB:-256}
SECS=${BENCH_NBD_SECONDS:-4}
dir=${BENCH_DIR:-/var/tmp}
NCPU=$(nproc)
if [ "${BENCH_NBD_PIN:-1}" = 1 ] && [ "$NCPU" -ge 2 ]; then
	CLIENT=(taskset -c 0)
	cpus=1
	[ "$NCPU" = 2 ] || cpus=1-$((NCPU - 1))
	SERVER=(taskset -c "$cpus")
	PINNED="fio on CPU 0, the servers on CPU $cpus"
else
	CLIENT=()
	SERVER=()
	PINNED="no CPU pinning"
fi
[ "$REGION" -le "$MIB" ] || { echo "nbd-bench: the region is larger than the volume" >&2; exit 1; }
fio --enghelp=nbd >/dev/null 2>&1 || { echo "nbd-bench: this fio has no nbd engine" >&2; exit 1; }

T=$(mktemp -d "$dir/cowvol-nbd-bench.XXXXXX")
QEMU_PID=
COWVOLD_PID=
cleanup() {
	[ -n "$QEMU_PID" ] && { kill "$QEMU_PID"; wait "$QEMU_PID"; } 2>/dev/null
	[ -n "$COWVOLD_PID" ] && { kill "$COWVOLD_PID"; wait "$COWVOLD_PID"; } 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
export COWVOL_SOCKET=$T/cowvold.sock
cv() { "$BUILD/cowvol" "$@"; }

# the server answers: its export has the volume's size
wait_nbd() {
	for _ in $(seq 1 200); do
		[ "$(nbdinfo --size "$URI" 2>/dev/null)" = $((MIB << 20)) ] && return 0
		sleep 0.05
	done
	echo "nbd-bench: no NBD server at $URI" >&2
	return 1
}

# qemu-nbd as a user starts it: its defaults (--cache=writeback, the host's
# page cache, flushed by NBD_CMD_FLUSH; --aio=threads; --detect-zeroes=off;
# --discard=ignore), spelled out; -t to serve one connection after another.
QEMU_OPTS="--cache=writeback --aio=threads"
start_qemu() { # FORMAT FILE
	# shellcheck disable=SC2086
	"${SERVER[@]}" qemu-nbd -t -k "$T/qemu.sock" -x img -f "$1" $QEMU_OPTS "$2" 2>>"$T/qemu.log" &
	QEMU_PID=$!
	URI="nbd+unix:///img?socket=$T/qemu.sock"
	wait_nbd
}
stop_qemu() {
	kill "$QEMU_PID"
	wait "$QEMU_PID" 2>/dev/null || true
	QEMU_PID=
}
fresh_overlay() {
	[ -z "$QEMU_PID" ] || stop_qemu
	rm -f "$T/overlay.qcow2"
	qemu-img create -q -f qcow2 -b "$T/raw.img" -F raw "$T/overlay.qcow2"
	start_qemu qcow2 "$T/overlay.qcow2"
}

# cowvold: a store as large as the volume, so no store grows during a run
NSNAP=0
snapshots() { # N: remove the snapshots there are, take N new ones
	sync
	for i in $(seq 1 "$NSNAP"); do cv rm "vol@s$i" >/dev/null; done
	for i in $(seq 1 "$1"); do cv snap "vol@s$i" --store-size "${MIB}M" >/dev/null; done
	NSNAP=$1
}

# run_fio RW BS QD MODE: one fio job on one connection to $URI; prints
# bytes/s.  MODE: first (one pass over the region, at most SECS), timed (SECS
# in the region), read (SECS over the whole volume), fill (the region once,
# 1M at a time, unmeasured).
run_fio() {
	local rw=$1 bs=$2 qd=$3 mode=$4 out=$T/fio.terse
	local a=(--name=bench --ioengine=nbd "--uri=$URI" "--rw=$rw" "--bs=$bs" "--iodepth=$qd"
		--output-format=terse "--output=$out")
	case $mode in
	first) a+=("--size=${REGION}M" "--runtime=$SECS" --end_fsync=1) ;;
	timed) a+=("--size=${REGION}M" "--runtime=$SECS" --time_based --end_fsync=1) ;;
	read) a+=("--runtime=$SECS" --time_based) ;;
	fill) a+=("--size=${REGION}M" --end_fsync=1) ;;
	esac
	sync # no writeback of an earlier run in this one
	# every file in the page cache: this machine may page out page cache
	# that stayed idle for a while (DAMON), which left the images of a
	# server measured later half on disk
	find "$T" -type f -exec cat {} + >/dev/null
	if ! "${CLIENT[@]}" fio "${a[@]}" >"$T/fio.log" 2>&1; then
		cat "$T/fio.log" >&2
		return 1
	fi
	# terse v3: read KiB, ms in fields 6 and 9, write in 47 and 50;
	# the share of submissions at depth 16 (fio's "IO depths") in 97
	awk -F';' -v w="$([ "${rw%read}" = "$rw" ] && echo 1 || echo 0)" -v qd="$qd" '
		{ kib = w ? $47 : $6; ms = w ? $50 : $9
		  if (qd >= 16 && $97 + 0 < 75)
			printf "nbd-bench: warning: depth 16 in only %s of submissions\n", $97 > "/dev/stderr"
		  printf "%.0f\n", kib * 1024 / (ms > 0 ? ms : 1) * 1000 }' "$out"
}

WORKLOADS=("4k randwrite qd1" "4k randwrite qd16" "4k randread qd1" "4k randread qd16"
	"1M seqwrite qd1" "1M seqwrite qd16")
declare -A RES
wl_params() { # "4k randwrite qd16" -> rw bs qd
	local b w q
	read -r b w q <<<"$1"
	[ "$w" = seqwrite ] && w="write"
	echo "$w ${b/k/K} ${q#qd}"
}
is_write() { [ "${1/write/}" != "$1" ]; }

progress() { printf '# %s\n' "$*" >&2; }

# measure KEY: every workload on the server at $URI as it stands
measure() {
	for wl in "${WORKLOADS[@]}"; do
		progress "$1: $wl"
		# shellcheck disable=SC2046
		if is_write "$wl"; then RES["$wl|$1"]=$(run_fio $(wl_params "$wl") timed)
		else RES["$wl|$1"]=$(run_fio $(wl_params "$wl") read); fi
	done
}

# measure_layered KEY RESET: reads on a fresh layer; each write workload on a
# fresh layer, first writes, then re-writes
measure_layered() {
	local key=$1 reset=$2
	for wl in "${WORKLOADS[@]}"; do
		is_write "$wl" && continue
		$reset
		progress "$key: $wl"
		# shellcheck disable=SC2046
		RES["$wl|$key"]=$(run_fio $(wl_params "$wl") read)
	done
	for wl in "${WORKLOADS[@]}"; do
		is_write "$wl" || continue
		$reset
		progress "$key: $wl, first write"
		# shellcheck disable=SC2046
		RES["$wl|$key first"]=$(run_fio $(wl_params "$wl") first)
		run_fio write 1M 16 fill >/dev/null
		progress "$key: $wl, re-write"
		# shellcheck disable=SC2046
		RES["$wl|$key re"]=$(run_fio $(wl_params "$wl") timed)
	done
}

# --- the images: random data, on one filesystem ------------------------------------
progress "making a $MIB MiB image in $T"
dd if=/dev/urandom of="$T/raw.img" bs=1M count="$MIB" status=none
cp "$T/raw.img" "$T/vol.img"
sync

start_qemu raw "$T/raw.img"
measure raw
stop_qemu

measure_layered qcow2 fresh_overlay
stop_qemu

"${SERVER[@]}" "$BUILD/cowvold" --state-dir "$T/state" --socket "$COWVOL_SOCKET" >"$T/cowvold.log" 2>&1 &
COWVOLD_PID=$!
for _ in $(seq 1 200); do
	cv status >/dev/null 2>&1 && break
	sleep 0.05
done
CHUNK=$(cv add "$T/vol.img" --name vol | sed -n 's/.*(chunk size \([^)]*\)).*/\1/p')
URI=$(cv export vol)
wait_nbd
measure cow0
one() { snapshots 1; }
eight() { snapshots 8; }
measure_layered cow1 one
measure_layered cow8 eight
snapshots 0

# --- the tables -----------------------------------------------------------------------
label() {
	case $1 in
	raw) echo "qemu-nbd raw (baseline)" ;;
	qcow2) echo "qemu-nbd qcow2 overlay" ;;
	"qcow2 first") echo "qemu-nbd qcow2 overlay, first write" ;;
	"qcow2 re") echo "qemu-nbd qcow2 overlay, re-write" ;;
	cow0) echo "cowvold, no snapshot" ;;
	cow1) echo "cowvold, 1 snapshot" ;;
	"cow1 first") echo "cowvold, 1 snapshot, first write (copy)" ;;
	"cow1 re") echo "cowvold, 1 snapshot, re-write" ;;
	cow8) echo "cowvold, 8 snapshots" ;;
	"cow8 first") echo "cowvold, 8 snapshots, first write (copy)" ;;
	"cow8 re") echo "cowvold, 8 snapshots, re-write" ;;
	esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
rate() { # BYTES/S BS -> IOPS, or MB/s for 1M
	if [ "$2" = 4K ]; then awk -v r="$1" 'BEGIN { printf "%.0f", r / 4096 }'
	else awk -v r="$1" 'BEGIN { printf "%.1f", r / 1e6 }'; fi
}

FS=$(findmnt -no FSTYPE -T "$T" 2>/dev/null || stat -f -c %T "$T")
echo "client:   fio $(fio --version | sed 's/^fio-//'), nbd engine: one job, one connection a run; $PINNED"
echo "baseline: $(qemu-nbd --version | head -1): -t $QEMU_OPTS (its defaults)"
echo "          qcow2 overlay: qemu-img create's defaults (64 KiB clusters), backing file the raw image"
echo "cowvold:  $("$BUILD/cowvold" --version 2>/dev/null | head -1) ($BUILD), chunk size ${CHUNK:-?}, stores of $MIB MiB"
echo "files:    $FS in $dir: a $MIB MiB volume of random data, all in the page cache at the start of each run"
echo "runs:     ${SECS} s; writes in the first $REGION MiB, each run ending with a flush (NBD_CMD_FLUSH, counted);"
echo "          first write: each place written for the first time since the snapshot or overlay was made;"
echo "          re-write: the same after the region was written once; reads over the whole volume"
echo "vs raw:   the ratio to qemu-nbd serving the raw image, same workload, same run"
for wl in "${WORKLOADS[@]}"; do
	read -r _ bs _ <<<"$(wl_params "$wl")"
	base=${RES[$wl|raw]}
	unit="MB/s"
	[ "$bs" = 4K ] && unit=IOPS
	printf '\n%-42s %10s %7s\n' "$wl" "$unit" "vs raw"
	if is_write "$wl"; then
		rows=(raw "qcow2 first" "qcow2 re" cow0 "cow1 first" "cow1 re" "cow8 first" "cow8 re")
	else
		rows=(raw qcow2 cow0 cow1 cow8)
	fi
	for k in "${rows[@]}"; do
		v=${RES[$wl|$k]}
		extra=
		[ "$k" = "cow1 re" ] && extra="   vs qcow2 re-write: $(ratio "$v" "${RES[$wl|qcow2 re]}")"
		printf '  %-40s %10s %7s%s\n' "$(label "$k")" "$(rate "$v" "$bs")" "$(ratio "$v" "$base")" "$extra"
	done
done
echo
printf '%-22s %20s %36s\n' "targets (ratios," "cowvold no snapshot" "cowvold 1 snapshot, re-write"
printf '%-22s %20s %36s\n' "want >= 1.00)" "/ qemu-nbd raw" "/ qemu-nbd qcow2 overlay, re-write"
for wl in "${WORKLOADS[@]}"; do
	re=-
	is_write "$wl" && re=$(ratio "${RES[$wl|cow1 re]}" "${RES[$wl|qcow2 re]}")
	printf '  %-20s %20s %36s\n' "$wl" "$(ratio "${RES[$wl|cow0]}" "${RES[$wl|raw]}")" "$re"
done
