#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the benchmarks; each prints its figures as ratios to a baseline
# measured in the same run.  BENCH_DIR picks the folder for scratch files.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-/var/tmp}
echo "=== store: index memory and open time (1M exceptions)"
build/bench/store-bench "$dir" "${BENCH_EXCEPTIONS:-1000000}"
echo
echo "=== userspace engine: snapshot creation, first write, re-write, snapshot read"
build/bench/engine-bench "$dir" "${BENCH_ENGINE_MIB:-256}" "${BENCH_ENGINE_BS:-1M}"
echo
echo "=== NBD: fio against qemu-nbd (raw, qcow2 overlay) and cowvold (0, 1, 8 snapshots)"
bench/nbd-bench.sh
echo
echo "=== kernel engine (Debian's kernel under qemu): snapshot creation latency, suspend window, daemon memory"
bench/kernel-bench.sh
