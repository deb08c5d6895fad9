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
echo "=== snapshot chains: first write with 1/8/64 snapshots, store disk use, oldest of 64 read, middle removal, restore, 1,000 snapshots"
build/bench/chain-bench "$dir" "${BENCH_CHAIN_WRITE_MIB:-16}" "${BENCH_CHAIN_READ_MIB:-32}" "${BENCH_CHAIN_RESTORE_MIB:-32}" \
	"${BENCH_CHAIN_CHUNK:-4K}" "${BENCH_CHAIN_BS:-1M}" "${BENCH_CHAIN_MANY:-1000}" "${BENCH_CHAIN_RESTORE_SNAPS:-8}"
echo
echo "=== NBD: fio against qemu-nbd (raw, qcow2 overlay) and cowvold (0, 1, 8 snapshots)"
bench/nbd-bench.sh
echo
echo "=== kernel engine (Debian's kernel under qemu): snapshot creation latency, suspend window, daemon memory"
bench/kernel-bench.sh
