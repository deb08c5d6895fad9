#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The kernel's own NBD client (nbd-client + nbd.ko) on cowvold's exports:
# an ext4 filesystem lives on a volume, a snapshot taken after sync (and a
# freeze) passes `e2fsck -fn` and mounts with the files of that moment, and
# `cowvol restore` brings those files back into the volume.
#   tests/kernel/vm.sh tests/kernel/t-nbd-client.sh
# Each step prints "ok - ..." or "not ok - ..."; a step that later ones build
# on stops the script at its "not ok".
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NBD_SOCK=$T/nbd.sock
MNT=$T/mnt
SMNT=$T/snap-mnt
mkdir -p "$MNT" "$SMNT" "$T/files"

# --- what the test needs: fail, never skip -----------------------------------
requires nbd-client mkfs.ext4 e2fsck fsfreeze sha256sum mount umount
must "the kernel has ext4" grep -qw ext4 /proc/filesystems
must "the kernel has the nbd driver (/sys/block/nbd0)" test -d /sys/block/nbd0
# devtmpfs makes /dev/nbdN when nbd.ko registers its disks; a /dev that
# lacks them would get the node from sysfs (major 43, minor N << part_shift).
for n in 0 1; do
	[ -b /dev/nbd$n ] || mknod /dev/nbd$n b "$(cut -d: -f1 /sys/block/nbd$n/dev)" \
		"$(cut -d: -f2 /sys/block/nbd$n/dev)" 2>/dev/null
	must "/dev/nbd$n is a block device" test -b /dev/nbd$n
done

# --- the daemon -------------------------------------------------------------
start_daemon --nbd-socket "$NBD_SOCK"
must "cowvold is up" "$COWVOL" status
must "its NBD socket is at $NBD_SOCK" test -S "$NBD_SOCK"
SIZE=$((256 << 20))
must "cowvol create vol --size 256M" "$COWVOL" create vol --size 256M

# --- attaching exports with the kernel client --------------------------------
# nbd-client 3.24 configures the device through the kernel's netlink
# interface (genetlink family "nbd") by default: it negotiates (NBD_OPT_GO),
# hands the connected Unix socket to the kernel and exits, so no nbd-client
# process stays behind to be killed, and it needs neither udev nor systemd
# nor /etc/nbdtab (host and export are on the command line). -b 4096: the
# block size cowvold prefers (the chunk size) and ext4's block size.
attached=
attach() { # EXPORT DEV [nbd-client options...]
	local exp=$1 dev=$2; shift 2
	nbd-client -unix "$NBD_SOCK" "$dev" -N "$exp" -b 4096 "$@" || return 1
	attached="$attached $dev"
	# the size shows once the kernel owns the connection
	for _ in $(seq 1 50); do
		[ "$(blockdev --getsize64 "$dev" 2>/dev/null)" = "$SIZE" ] && return 0
		sleep 0.1
	done
	echo "$dev: size $(blockdev --getsize64 "$dev" 2>&1), want $SIZE"
	return 1
}
detach() { # DEV: disconnect and wait until the kernel lets go of the device
	local dev=$1
	nbd-client -d "$dev" || return 1
	for _ in $(seq 1 100); do
		[ "$(cat /sys/block/"${dev#/dev/}"/size)" = 0 ] && { attached=${attached/ $dev/}; return 0; }
		sleep 0.1
	done
	echo "$dev: still $(cat /sys/block/"${dev#/dev/}"/size) sectors after nbd-client -d"
	return 1
}
on_exit 'for d in $attached; do nbd-client -d $d >/dev/null 2>&1; done'
on_exit "umount '$SMNT' 2>/dev/null; umount '$MNT' 2>/dev/null; fsfreeze -u '$MNT' 2>/dev/null"

must "nbd-client attaches export vol to /dev/nbd0" attach vol /dev/nbd0
must "mkfs.ext4 on /dev/nbd0" mkfs.ext4 -q -F -L cowvol-vol /dev/nbd0
must "mount /dev/nbd0 (ext4)" mount -t ext4 /dev/nbd0 "$MNT"

# --- files before the snapshot ------------------------------------------------
mkdir -p "$MNT/dir/sub"
head -c 3M /dev/urandom >"$MNT/big.bin"
head -c 300K /dev/urandom >"$MNT/gone.bin"
head -c 12345 /dev/urandom >"$MNT/dir/odd.bin"
seq 1 20000 >"$MNT/dir/sub/numbers.txt"
echo "before the snapshot" >"$MNT/dir/note.txt"
: >"$MNT/empty"
(cd "$MNT" && find . -type f ! -path './lost+found/*' | LC_ALL=C sort | xargs sha256sum) >"$T/before.sha"
# keep copies outside the filesystem, to tell later what changed
cp -a "$MNT/big.bin" "$T/files/big.bin"
must "wrote 6 files (3.3 MiB) into the mounted volume" test "$(wc -l <"$T/before.sha")" = 6

# sync puts the new metadata in the journal only: a mounted ext4 writes it
# in place later and keeps needs_recovery set. A snapshot after sync alone is
# crash-consistent, no more: tried here, `e2fsck -fn` (which never replays a
# journal) passed on the filesystem as mkfs left it (11 inodes, none of the
# files), and `mount -o ro` refused it ("write access unavailable", a
# journal to replay on a read-only device). fsfreeze checkpoints the journal
# and clears needs_recovery, as device-mapper's suspend does for LVM's
# snapshots: the snapshot is taken while the filesystem is frozen.
must "sync" sync
must "fsfreeze -f the mounted volume" fsfreeze -f "$MNT"
snap_rc=0
step "cowvol snap vol@s1 (filesystem frozen)" "$COWVOL" snap vol@s1 || snap_rc=$?
must "fsfreeze -u" fsfreeze -u "$MNT"
[ "$snap_rc" = 0 ] || exit 1

# --- changes after the snapshot ---------------------------------------------
head -c 64K /dev/urandom | dd of="$MNT/big.bin" bs=64K seek=10 conv=notrunc status=none
rm "$MNT/gone.bin"
echo "after the snapshot" >>"$MNT/dir/note.txt"
head -c 2M /dev/urandom >"$MNT/new.bin"
mkdir "$MNT/newdir" && echo new >"$MNT/newdir/file"
must "sync the changes after the snapshot" sync
must "the volume shows the changes (big.bin changed, gone.bin gone, new.bin new)" \
	eval "! cmp -s '$MNT/big.bin' '$T/files/big.bin' && [ ! -e '$MNT/gone.bin' ] && [ -s '$MNT/new.bin' ]"
(cd "$MNT" && sha256sum big.bin new.bin dir/note.txt) >"$T/after.sha"

# --- the snapshot's export, read-only in the kernel ---------------------------
must "nbd-client attaches export vol@s1 to /dev/nbd1 (read-only)" attach vol@s1 /dev/nbd1 -readonly
must "the kernel sees /dev/nbd1 read-only" test "$(blockdev --getro /dev/nbd1)" = 1
if e2fsck -fn /dev/nbd1 >"$T/fsck" 2>&1; then
	ok "e2fsck -fn /dev/nbd1 (vol@s1): clean"
	tail -1 "$T/fsck" | sed 's/^/#   /'
else
	notok "e2fsck -fn /dev/nbd1 (vol@s1): exit $?"
	sed 's/^/#   /' "$T/fsck" | tail -20
fi
must "mount -o ro /dev/nbd1 (vol@s1)" mount -t ext4 -o ro /dev/nbd1 "$SMNT"
try "vol@s1 holds the 6 files with their checksums from before the snapshot" \
	eval "(cd '$SMNT' && sha256sum --strict -c '$T/before.sha')"
try "vol@s1 has no file written after the snapshot" \
	eval "[ ! -e '$SMNT/new.bin' ] && [ ! -e '$SMNT/newdir' ]"
try "vol@s1 has nothing but those 6 files (and lost+found)" \
	eval "[ \"\$(cd '$SMNT' && find . -type f ! -path './lost+found/*' | wc -l)\" = 6 ]"
try "the mounted volume keeps its new content meanwhile" \
	eval "(cd '$MNT' && sha256sum --strict -c '$T/after.sha')"

# --- restore ------------------------------------------------------------------
must "umount vol@s1" umount "$SMNT"
must "umount vol" umount "$MNT"
must "nbd-client -d /dev/nbd1 (vol@s1)" detach /dev/nbd1
must "nbd-client -d /dev/nbd0 (vol)" detach /dev/nbd0
# The kernel's disconnect (NBD_CMD_DISC, then shutdown) reaches cowvold's
# connection thread a moment later; the restore refuses while it still holds
# the volume, so give it a few seconds to notice, and no more.
restore() {
	local i
	for i in $(seq 1 50); do
		"$COWVOL" restore vol@s1 >"$T/restore" 2>&1 && {
			[ "$i" = 1 ] || echo "# (restore refused $((i - 1)) time(s) while cowvold let go of the connections)"
			return 0
		}
		grep -q 'in use' "$T/restore" || break
		sleep 0.1
	done
	cat "$T/restore"
	return 1
}
must "cowvol restore vol@s1" restore
must "nbd-client attaches vol again to /dev/nbd0" attach vol /dev/nbd0
if e2fsck -fn /dev/nbd0 >"$T/fsck" 2>&1; then
	ok "e2fsck -fn /dev/nbd0 (vol, restored): clean"
else
	notok "e2fsck -fn /dev/nbd0 (vol, restored): exit $?"
	sed 's/^/#   /' "$T/fsck" | tail -20
fi
must "mount the restored volume" mount -t ext4 /dev/nbd0 "$MNT"
try "the restored volume holds the 6 files with their checksums from before the snapshot" \
	eval "(cd '$MNT' && sha256sum --strict -c '$T/before.sha')"
try "the files written after the snapshot are gone" \
	eval "[ ! -e '$MNT/new.bin' ] && [ ! -e '$MNT/newdir' ]"
try "gone.bin, deleted after the snapshot, is back" test -s "$MNT/gone.bin"
try "the restored volume has nothing but those 6 files (and lost+found)" \
	eval "[ \"\$(cd '$MNT' && find . -type f ! -path './lost+found/*' | wc -l)\" = 6 ]"
try "umount the restored volume" umount "$MNT"
try "nbd-client -d /dev/nbd0" detach /dev/nbd0
try "cowvold still answers" "$COWVOL" status
