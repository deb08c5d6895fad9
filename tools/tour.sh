#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The tour `make run` gives: an origin image, an exception store in the
# kernel's format, copy-on-write of a few chunks through libcowvol (what the
# userspace engine does on an origin write), then the offline commands.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
dir=${TOUR_DIR:-$B/tour}
rm -rf "$dir" && mkdir -p "$dir"
say() { printf '\n$ %s\n' "$*"; "$@"; }

echo "# An 8 MiB origin image with some data, and a copy of how it looks now"
"$B/tests/cowtool" pattern "$dir/origin.img" 8M 1
cp "$dir/origin.img" "$dir/before.img"
say "$B/cowvol" store create "$dir/snap.cow" --size 4M --chunk-size 4K
echo
echo "# 300 origin chunks are overwritten; each old chunk is copied into the store"
echo "# and its exception committed (data, flush, metadata, flush) before the write"
"$B/tests/cowtool" fill "$dir/origin.img" "$dir/snap.cow" 300 7 16
say "$B/cowvol" store info "$dir/snap.cow"
say "$B/cowvol" store check "$dir/snap.cow"
printf '\n$ %s | head -5\n' "$B/cowvol store dump $dir/snap.cow"
"$B/cowvol" store dump "$dir/snap.cow" | head -5
say "$B/cowvol" store view "$dir/origin.img" "$dir/snap.cow" "$dir/snapshot.img"
printf '\n$ cmp %s %s && echo "the snapshot shows the origin as it was"\n' "$dir/snapshot.img" "$dir/before.img"
cmp "$dir/snapshot.img" "$dir/before.img" && echo "the snapshot shows the origin as it was"
echo
echo "# The same store activates in the kernel: losetup it and the origin, then"
echo "#   dmsetup create snap --table \"0 16384 snapshot /dev/loopO /dev/loopC P 8\""
