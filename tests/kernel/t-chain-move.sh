#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A chained userspace volume moves to the kernel engine (issue 12).  Its
# stores form a chain as the chain engine leaves them (an older store lacks
# what changed after the next snapshot was taken), but the kernel's
# snapshot-origin copies into every snapshot and reads each snapshot from
# its own store: the move first makes each store standalone, says so and
# how much it copies, and refuses (changing nothing) when there is no room.
# Each snapshot reads as before the move through /dev/mapper, after kernel
# writes, and again back in the userspace engine.
#   tests/kernel/vm.sh tests/kernel/t-chain-move.sh
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mkdir -p "$STATE"
mount -t tmpfs -o size=40M,mode=0700 cowvol-test "$STATE" || fail "cannot mount a tmpfs on $STATE"
on_exit "umount -l '$STATE'"
on_exit '[ -z "${LOOP:-}" ] || losetup -d "$LOOP" 2>/dev/null'
on_exit 'for d in cowvol-u-s1 cowvol-u-s1-cow cowvol-u-s2 cowvol-u-s2-cow cowvol-u-s3 cowvol-u-s3-cow cowvol-u cowvol-u-real; do dmsetup remove "$d" 2>/dev/null; done; true'
on_exit kill9_daemon
start_daemon
setup_chain_u

# the chain: each snapshot reads right through the newer stores, and the
# older stores alone do not (so the kernel would show them wrong)
"$COWVOL" store view "$IMG" "${STORES[@]}" "$T/view"
check "setup: u@s1 reads as before through s2's and s3's stores" cmp -s "$T/view" "$T/s1"
"$COWVOL" store view "$IMG" "${STORES[0]}" "$T/view"
check "setup: u@s1's store alone is not standalone" eval "! cmp -s '$T/view' '$T/s1'"

sums() { md5sum "${STORES[@]}" "$IMG" "$STATE/catalogue.json"; }
sums >"$T/sums.before"
LOOP=$(losetup -f --show "$IMG")

# no room on the stores' filesystem: refused, nothing changed
avail=$(df -B1 --output=avail "$STATE" | tail -1)
fallocate -l $((avail - 65536)) "$STATE/filler"
refuse "no room: the move is refused, saying what it would copy" \
	"the stores of its snapshots must first be made standalone, copying $DROPPED chunks .* into 2 stores; that needs .* which has [0-9.]+ KiB free; nothing was changed" \
	cv add "$LOOP"
rm -f "$STATE/filler"
sums >"$T/sums.now"
check "the refused move changed no store, image or catalogue" cmp -s "$T/sums.before" "$T/sums.now"
check "no cowvol-u device was made" eval "! dmsetup info cowvol-u >/dev/null 2>&1"

# with room: the stores are made standalone, then the kernel takes u
n=$(wc -l <"$T/daemon.log")
step "cowvol add $LOOP: u moves to the kernel engine" cv add "$LOOP"
check "the answer says the stores were made standalone first" grep -q "made standalone first:" "$T/out"
check "the answer says how much: $DROPPED chunks into 2 stores" grep -q "^$DROPPED chunks (.*) copied into 2 stores" "$T/out"
check "the daemon log says it before copying" eval "tail -n +$((n + 1)) '$T/daemon.log' | grep -q \"making its snapshots' stores standalone first, copying $DROPPED chunks\""
check "u is a kernel volume now" eval "cv list u --json | grep -q '\"engine\":\"kernel\"'"
check "/dev/mapper/cowvol-u reads as u did" cmp -s /dev/mapper/cowvol-u "$T/u"
for i in 1 2 3; do
	check "/dev/mapper/cowvol-u-s$i reads as u@s$i did" cmp -s "/dev/mapper/cowvol-u-s$i" "$T/s$i"
done
"$COWVOL" store view /dev/mapper/cowvol-u "${STORES[0]}" "$T/view"
check "u@s1's store alone now holds its whole view (standalone)" cmp -s "$T/view" "$T/s1"
same_status cowvol-u-s1 "${STORES[0]}"

# the kernel writes: it copies into every snapshot
head -c 1500000 /dev/urandom >"$T/w2"
dd if="$T/w2" of=/dev/mapper/cowvol-u bs=4096 seek=300 conv=notrunc,fsync status=none
dd if=/dev/mapper/cowvol-u of="$T/u.kernel" bs=1M status=none
for i in 1 2 3; do
	check "after kernel writes /dev/mapper/cowvol-u-s$i reads as before" cmp -s "/dev/mapper/cowvol-u-s$i" "$T/s$i"
done

# and back: standalone stores are a valid chain; nothing to do
step "cowvol add $IMG: u moves back to the userspace engine" cv add "$IMG"
losetup -d "$LOOP"
LOOP=
for i in 1 2 3; do
	cv cat "u@s$i" >"$T/after"
	check "cowvol cat u@s$i reads as before" cmp -s "$T/after" "$T/s$i"
	step "cowvol store check of u@s$i's store" "$COWVOL" store check "${STORES[$((i - 1))]}"
done
cv cat u >"$T/after"
check "cowvol cat u shows what the kernel wrote" cmp -s "$T/after" "$T/u.kernel"
stop_daemon || notok "cowvold exits 0"
