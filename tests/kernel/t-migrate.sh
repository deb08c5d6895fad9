#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A volume moves between the engines with its snapshots, whose stores are
# one format: a userspace volume's image attached as a loop device and
# added goes to the kernel engine, and its snapshot reads the same through
# /dev/mapper; adding the image file again brings it back to the
# userspace engine, with what the kernel wrote meanwhile.
#   tests/kernel/vm.sh tests/kernel/t-migrate.sh
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

on_exit '[ -z "${LOOP:-}" ] || losetup -d "$LOOP" 2>/dev/null'
on_exit remove_u
start_daemon

# a userspace volume with a snapshot
step "create u (userspace, 32 MiB)" "$COWVOL" create u --size 32M
"$COWTOOL" pattern "$T/p1" 32M 1
"$COWVOL" write u --offset 0 <"$T/p1"
step "snap u@s" "$COWVOL" snap u@s --store-size 16M
head -c 3000000 /dev/urandom >"$T/w1"
"$COWVOL" write u --offset 1000000 <"$T/w1"
"$COWVOL" cat u@s >"$T/s.before"
"$COWVOL" cat u >"$T/u.before"
check "setup: the snapshot differs from the volume" eval "! cmp -s '$T/s.before' '$T/u.before'"

# to the kernel engine: its image as a loop device
IMG=$(ls "$T"/state/volumes/u.img)
LOOP=$(losetup -f --show "$IMG")
step "cowvol add $LOOP (the image of u): u moves to the kernel engine" "$COWVOL" add "$LOOP"
check "u is a kernel volume now" eval "\"$COWVOL\" list u --json | grep -q '\"engine\":\"kernel\"'"
check "/dev/mapper/cowvol-u reads as u did" eval "cmp -s /dev/mapper/cowvol-u '$T/u.before'"
check "/dev/mapper/cowvol-u-s reads as u@s did (the same store, opened by the kernel)" \
	eval "cmp -s /dev/mapper/cowvol-u-s '$T/s.before'"
STORE=$(ls "$T"/state/stores/*.cow)
check "the kernel's status = cowvol store info of the store" eval "[ \"\$(dm_status cowvol-u-s)\" = \"\$(info_field '$STORE' allocated_sectors)/\$(info_field '$STORE' total_sectors) \$(info_field '$STORE' metadata_sectors)\" ]"
# the kernel writes: its copies go into the same store
head -c 2000000 /dev/urandom >"$T/w2"
dd if="$T/w2" of=/dev/mapper/cowvol-u bs=4096 seek=2000 conv=notrunc,fsync status=none
dd if=/dev/mapper/cowvol-u of="$T/u.kernel" bs=1M status=none
check "after kernel writes u@s still reads as before" eval "cmp -s /dev/mapper/cowvol-u-s '$T/s.before'"

# and back: the image file added again
step "cowvol add $IMG: u moves back to the userspace engine" "$COWVOL" add "$IMG"
check "u is a userspace volume again" eval "\"$COWVOL\" list u --json | grep -q '\"engine\":\"userspace\"'"
check "no cowvol-u device is left" eval "! dmsetup info cowvol-u >/dev/null 2>&1 && ! dmsetup info cowvol-u-s >/dev/null 2>&1"
losetup -d "$LOOP"; LOOP=
"$COWVOL" cat u >"$T/u.after"
"$COWVOL" cat u@s >"$T/s.after"
check "cowvol cat u shows what the kernel wrote" cmp -s "$T/u.after" "$T/u.kernel"
check "cowvol cat u@s is the snapshot still (the kernel's copies read by the userspace engine)" cmp -s "$T/s.after" "$T/s.before"
step "cowvol store check of u@s's store" "$COWVOL" store check "$STORE"

# rm of a volume that create made and that moved to the kernel engine: its
# devices go, the loop device under it stays (it is the user's), and so does
# its image (the start's sweep keeps an image with data)
step "create w, 8 MiB" "$COWVOL" create w --size 8M
"$COWTOOL" pattern "$T/p2" 8M 2
"$COWVOL" write w --offset 0 <"$T/p2"
LOOP=$(losetup -f --show "$T/state/volumes/w.img")
step "cowvol add $LOOP (the image of w): w moves to the kernel engine" "$COWVOL" add "$LOOP"
step "cowvol rm w" "$COWVOL" rm w --yes
check "no cowvol-w device is left" eval "! dmsetup info cowvol-w >/dev/null 2>&1"
check "rm left $LOOP, the loop device under w, in place" test -b "$LOOP"
check "rm left w's image, now the loop device's, in place" test -s "$T/state/volumes/w.img"
losetup -d "$LOOP"; LOOP=
stop_daemon || notok "cowvold exits 0"
