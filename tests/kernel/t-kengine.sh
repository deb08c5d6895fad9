#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The kernel engine's library layer against the real device-mapper, through
# cowtool's direct calls of the public API (cowvol_kernel_*, cowvol_device_*):
# volume stacks (uuids, LVM's escaping, idempotence), a snapshot of a mounted
# ext4 under a writer (e2fsck -fn passes), store view = the kernel's snapshot
# and store info = its status, two snapshots and removing one (its loop device
# goes), a block-device store, -EBUSY while mounted, a foreign device of the
# same name left alone, a "reboot" rebuilt with nothing changed, and libblkid
# (probe, signature, UUID= and LABEL=).
#   tests/kernel/vm.sh tests/kernel/t-kengine.sh
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MNT=$T/mnt
SMNT=$T/smnt
mkdir -p "$MNT" "$SMNT"

# --times: seconds since the start on each ok line
if [ "${1:-}" = --times ]; then ok() { echo "ok - $* [${SECONDS}s]"; }; fi
# same DESC GOT WANT
same() { if [ "$2" = "$3" ]; then ok "$1 ($2)"; else notok "$1: got '$2', want '$3'"; fi; }

K() { "$COWTOOL" "$@"; }
# every cowvol device: "name:uuid" lines
cowvol_devs() { dmsetup info -c --noheadings -o name,uuid | awk -F: '$2 ~ /^COWVOL-/' | sort; }
# what dmsetup knows of every device: names, uuids, open counts, states,
# tables (two calls: a process costs much under emulation)
dm_state() {
	dmsetup info -c --noheadings -o name,uuid,open,attr,events | sort
	dmsetup table | sort
}
# cowvol's devices in an order dmsetup can remove them
removal_order() {
	local devs d
	devs=$(cowvol_devs | cut -d: -f1)
	for d in $devs; do dmsetup table "$d" | grep -q ' snapshot ' && echo "$d"; done
	echo "$devs" | grep -E -- '-cow$'
	for d in $devs; do dmsetup table "$d" | grep -q ' snapshot-origin ' && echo "$d"; done
	echo "$devs" | grep -E -- '-real$'
}
majmin() { dmsetup info -c --noheadings -o major,minor "$1"; }
devno() { stat -Lc '%t %T' "$1" | { read -r a b; echo "$((16#$a)):$((16#$b))"; }; }
# the kernel's page cache of a block device read directly under dm (-real,
# a loop device) can be stale: drop it before reading those
dropc() { sync; echo 3 >/proc/sys/vm/drop_caches; }
md5() { md5sum <"$1" | cut -d' ' -f1; }
# STORE's figures from one `cowvol store info --json`, as dmsetup status
store_status() {
	"$COWVOL" store info --json "$1" | tr -d ' ,"' |
		awk -F: '{v[$1] = $2} END {print v["allocated_sectors"] "/" v["total_sectors"] " " v["metadata_sectors"]}'
}
kst() { K kstatus "$@" | awk '$1 == "usage" {print $2 " " $3; next} {print $1 "=" $2}'; }
kfield() { local f=$1; shift; K kstatus "$@" | awk -v f="$f" '$1 == f {$1 = ""; sub(/^ /, ""); print}'; }

writer=
cleanup_kengine() {
	[ -n "$writer" ] && kill "$writer" 2>/dev/null
	umount "$SMNT" 2>/dev/null
	umount "$MNT" 2>/dev/null
	for d in $(removal_order 2>/dev/null); do dmsetup remove "$d" 2>/dev/null; done
	dmsetup remove cowvol-other 2>/dev/null
	dmsetup remove cowvol-third-real 2>/dev/null
	true
}
on_exit cleanup_kengine

VU=0f000000-0000-4000-8000-000000000001
S1U=0f000000-0000-4000-8000-000000000011
S2U=0f000000-0000-4000-8000-000000000012
S3U=0f000000-0000-4000-8000-000000000013
S4U=0f000000-0000-4000-8000-000000000014
HU=0f000000-0000-4000-8000-000000000002
OU=0f000000-0000-4000-8000-000000000003
TU=0f000000-0000-4000-8000-000000000004

try "kavailable: device-mapper is usable" K kavailable
LO=$(make_loop kengine-vol.img 64M)
SECT=$(sectors "$LO")

# --- a volume ------------------------------------------------------------------
try "kvol-activate vol over $LO" K kvol-activate vol $VU "$LO"
check "/dev/mapper/cowvol-vol exists" test -b /dev/mapper/cowvol-vol
same "cowvol-vol-real is linear over $LO" "$(dmsetup table cowvol-vol-real)" "0 $SECT linear $(devno "$LO") 0"
same "cowvol-vol is snapshot-origin over cowvol-vol-real" "$(dmsetup table cowvol-vol)" "0 $SECT snapshot-origin $(majmin cowvol-vol-real)"
same "dm uuids" "$(cowvol_devs | tr '\n' ' ')" "cowvol-vol-real:COWVOL-$VU-real cowvol-vol:COWVOL-$VU "
same "kpath" "$(K kpath vol $VU)" /dev/mapper/cowvol-vol
dm_state >"$T/state1"
try "kvol-activate again" K kvol-activate vol $VU "$LO"
check "is a no-op (every device, table and count as before)" eval "dm_state | cmp -s - '$T/state1'"
same "kstatus of the volume" "$(kst vol $VU | tr '\n' ' ')" "exists=1 valid=1 overflow=0 merge_failed=0 0/0 0 open_count=0 size=$((SECT * 512)) "

LH=$(make_loop kengine-h.img 8M)
try "kvol-activate my-vol (a hyphen in the name)" K kvol-activate my-vol $HU "$LH"
same "LVM's escaping: cowvol-my--vol and cowvol-my--vol-real" \
	"$(cowvol_devs | grep my | tr '\n' ' ')" "cowvol-my--vol-real:COWVOL-$HU-real cowvol-my--vol:COWVOL-$HU "
same "kpath my-vol@my-snap" "$(K kpath my-vol $HU my-snap x)" /dev/mapper/cowvol-my--vol-my--snap
try "kvol-deactivate my-vol" K kvol-deactivate my-vol $HU
check "its devices are gone" test -z "$(cowvol_devs | grep my)"
try "kvol-deactivate my-vol again (nothing there: no-op)" K kvol-deactivate my-vol $HU
refuse "a volume name of 130 characters is refused" "too long" K kvol-activate "$(printf 'a%.0s' $(seq 130))" $HU "$LH"
refuse "a volume name starting with '-' is refused" "name" K kvol-activate -x $HU "$LH"
refuse "a snapshot named 'real' is refused" "real" K ksnap-create vol $VU "$LO" real $S4U /tmp/none.cow 4K

# --- ext4, a snapshot under a writer -----------------------------------------------
try "mkfs.ext4 -L cvlabel on cowvol-vol" mkfs.ext4 -q -F -L cvlabel /dev/mapper/cowvol-vol
try "mount it" mount /dev/mapper/cowvol-vol "$MNT"
K pattern "$MNT/a" 3M 1
K pattern "$MNT/b" 2M 2
mkdir "$MNT/d" && for i in 1 2 3 4 5; do echo "file $i" >"$MNT/d/$i"; done
sync
(cd "$MNT" && md5sum a b d/*) >"$T/sums1"
same "kstatus: the mounted volume is open once" "$(kfield open_count vol $VU)" 1
truncate -s 32M /tmp/s1.cow
(i=0; while :; do
	i=$((i + 1))
	"$COWTOOL" pattern "$MNT/w.$((i % 4))" 512K $i
	rm -f "$MNT/w.$(((i + 2) % 4))"
done) 2>/dev/null &
writer=$!
sleep 1
try "ksnap-create vol@s1 (file store, 4K chunks) while a writer runs" \
	K ksnap-create vol $VU "$LO" s1 $S1U /tmp/s1.cow 4K
sleep 1
kill "$writer"; wait "$writer" 2>/dev/null || true; writer=
check "/dev/mapper/cowvol-vol-s1 exists" test -b /dev/mapper/cowvol-vol-s1
S1LOOP=$(losetup -nO NAME -j /tmp/s1.cow)
check "the store file is on a loop device ($S1LOOP), autoclear" eval "[ -n '$S1LOOP' ] && [ \"\$(losetup -nO AUTOCLEAR '$S1LOOP' | tr -d ' ')\" = 1 ]"
same "cowvol-vol-s1-cow is linear over it" "$(dmsetup table cowvol-vol-s1-cow | cut -d' ' -f3-)" "linear $(devno "$S1LOOP") 0"
same "cowvol-vol-s1 is a snapshot of -real on -cow" "$(dmsetup table cowvol-vol-s1)" "0 $SECT snapshot $(majmin cowvol-vol-real) $(majmin cowvol-vol-s1-cow) P 8"
same "the snapshot's dm uuids" "$(cowvol_devs | grep s1 | tr '\n' ' ')" "cowvol-vol-s1-cow:COWVOL-$S1U-cow cowvol-vol-s1:COWVOL-$S1U "
try "e2fsck -fn on the snapshot (the origin was frozen: consistent)" e2fsck -fn /dev/mapper/cowvol-vol-s1
try "mount the snapshot read-only" mount -o ro,noload /dev/mapper/cowvol-vol-s1 "$SMNT"
check "its files are those of the snapshot's moment" eval "(cd '$SMNT' && md5sum -c --quiet '$T/sums1')"
umount "$SMNT"

# more origin writes after the snapshot
K pattern "$MNT/a" 1M 77
rm "$MNT/b"
K pattern "$MNT/c" 4M 3
sync
dropc
try "cowvol store view of -real and the store file" "$COWVOL" store view /dev/mapper/cowvol-vol-real /tmp/s1.cow "$T/view1"
check "= the kernel's snapshot device, byte for byte" cmp /dev/mapper/cowvol-vol-s1 "$T/view1"
try "cowvol store view of the loop device under -real" "$COWVOL" store view "$LO" /tmp/s1.cow "$T/view1b"
check "= the kernel's snapshot device too" cmp /dev/mapper/cowvol-vol-s1 "$T/view1b"
rm -f "$T/view1" "$T/view1b"
ST=$(dm_status cowvol-vol-s1)
same "cowvol store info --json = dmsetup status" "$(store_status /tmp/s1.cow)" "$ST"
same "kstatus of vol@s1 = dmsetup status" "$(kst vol $VU s1 $S1U | tr '\n' ' ')" \
	"exists=1 valid=1 overflow=0 merge_failed=0 $ST open_count=0 size=$((SECT * 512)) "
refuse "ksnap-create vol@s1 again" "exists" K ksnap-create vol $VU "$LO" s1 $S1U /tmp/s1.cow 4K
dm_state >"$T/state2"
try "ksnap-activate vol@s1 (it is active: a no-op)" K ksnap-activate vol $VU "$LO" s1 $S1U /tmp/s1.cow 4K
check "nothing changed" eval "dm_state | cmp -s - '$T/state2'"
truncate -s 32M /tmp/s4.cow
refuse "a second snapshot over a store in use by vol@s1 is refused" "in use|busy" \
	K ksnap-create vol $VU "$LO" s4 $S4U /tmp/s1.cow 4K
check "and vol@s1's store is untouched" eval "[ \"\$(dm_status cowvol-vol-s1)\" = '$ST' ] && [ -z \"\$(cowvol_devs | grep s4)\" ]"

# --- a second snapshot; removing the first --------------------------------------
truncate -s 32M /tmp/s2.cow
try "ksnap-create vol@snap-2 (64K chunks)" K ksnap-create vol $VU "$LO" snap-2 $S2U /tmp/s2.cow 64K
check "its devices: cowvol-vol-snap--2 and cowvol-vol-snap--2-cow" \
	eval "[ \"\$(cowvol_devs | grep snap | tr '\n' ' ')\" = 'cowvol-vol-snap--2-cow:COWVOL-$S2U-cow cowvol-vol-snap--2:COWVOL-$S2U ' ]"
(cd "$MNT" && md5sum a c d/*) >"$T/sums2"
K pattern "$MNT/c" 2M 4
echo more >>"$MNT/d/1"
sync
S1MD5=$(md5 /dev/mapper/cowvol-vol-s1)
S2MD5=$(md5 /dev/mapper/cowvol-vol-snap--2)
check "the two snapshots differ" test "$S1MD5" != "$S2MD5"
try "ksnap-remove vol@s1" K ksnap-remove vol $VU s1 $S1U
check "its devices are gone" test -z "$(cowvol_devs | grep s1)"
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(losetup -nO NAME -j /tmp/s1.cow)" ] && break; sleep 0.2; done
check "its store's loop device $S1LOOP is gone (autoclear)" eval "[ -z \"\$(losetup -nO NAME -j /tmp/s1.cow)\" ] && ! losetup '$S1LOOP' >/dev/null 2>&1"
same "vol@snap-2 reads as before" "$(md5 /dev/mapper/cowvol-vol-snap--2)" "$S2MD5"
try "e2fsck -fn on vol@snap-2" e2fsck -fn /dev/mapper/cowvol-vol-snap--2
mount -o ro,noload /dev/mapper/cowvol-vol-snap--2 "$SMNT"
check "vol@snap-2 has its moment's files" eval "(cd '$SMNT' && md5sum -c --quiet '$T/sums2')"
umount "$SMNT"
try "ksnap-remove vol@s1 again (gone: no-op)" K ksnap-remove vol $VU s1 $S1U

# --- a block-device store ---------------------------------------------------------
LB=$(make_loop kengine-bs.img 24M)
head -c 1M /dev/urandom >"$LB"
sync
try "ksnap-create vol@s3 on the block device $LB (64K chunks)" K ksnap-create vol $VU "$LO" s3 $S3U "$LB" 64K
same "cowvol-vol-s3-cow is linear over $LB itself" "$(dmsetup table cowvol-vol-s3-cow | cut -d' ' -f3-)" "linear $(devno "$LB") 0"
(cd "$MNT" && md5sum a c d/*) >"$T/sums3"
K pattern "$MNT/a" 2M 5
sync
dropc
try "cowvol store view of -real and the store device" "$COWVOL" store view /dev/mapper/cowvol-vol-real "$LB" "$T/view3"
check "= the kernel's snapshot device, byte for byte" cmp /dev/mapper/cowvol-vol-s3 "$T/view3"
rm -f "$T/view3"
ST3=$(dm_status cowvol-vol-s3)
same "cowvol store info of the device = dmsetup status" "$(store_status "$LB")" "$ST3"
same "kstatus usage of vol@s3" "$(kfield usage vol $VU s3 $S3U)" "$ST3"

# --- in use -------------------------------------------------------------------------
mount -o ro,noload /dev/mapper/cowvol-vol-snap--2 "$SMNT"
dm_state >"$T/state3"
refuse "ksnap-remove of a mounted snapshot: -EBUSY" "busy.*errno 16" K ksnap-remove vol $VU snap-2 $S2U
check "and nothing changed" eval "dm_state | cmp -s - '$T/state3'"
umount "$SMNT"
dm_state >"$T/state3"
refuse "kvol-deactivate of the mounted volume: -EBUSY" "busy.*errno 16" K kvol-deactivate vol $VU
check "and nothing changed" eval "dm_state | cmp -s - '$T/state3'"

# --- someone else's device of the same name -------------------------------------------
dmsetup create cowvol-other --table "0 2048 error"
dm_state >"$T/state4"
refuse "kvol-activate other over a foreign cowvol-other (no uuid)" "not this object's" K kvol-activate other $OU "$LH"
check "the foreign device is untouched, nothing made" eval "dm_state | cmp -s - '$T/state4'"
dmsetup create cowvol-third-real -u FOREIGN-1 --table "0 2048 error"
dm_state >"$T/state4"
refuse "kvol-activate third over a foreign cowvol-third-real (another uuid)" "not this object's" K kvol-activate third $TU "$LH"
check "the foreign device is untouched, nothing made" eval "dm_state | cmp -s - '$T/state4'"
refuse "kvol-deactivate other leaves the foreign device alone" "not this object's" K kvol-deactivate other $OU
check "still there" eval "dm_state | cmp -s - '$T/state4'"
dmsetup remove cowvol-other cowvol-third-real

# --- a "reboot" -------------------------------------------------------------------------
umount "$MNT"
dropc
VMD5=$(md5 /dev/mapper/cowvol-vol)
S3MD5=$(md5 /dev/mapper/cowvol-vol-s3)
cowvol_devs >"$T/devs-before"
for d in $(removal_order); do dmsetup remove "$d" || notok "dmsetup remove $d"; done
check "\"reboot\": no cowvol device is left" test -z "$(cowvol_devs)"
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(losetup -nO NAME -j /tmp/s2.cow)" ] && break; sleep 0.2; done
check "and no loop device over a store file" test -z "$(losetup -nO NAME -j /tmp/s2.cow)"
truncate -s 32M /tmp/zero.cow
refuse "ksnap-activate over a store without a header is refused" "no snapshot store|not a" \
	K ksnap-activate vol $VU "$LO" s4 $S4U /tmp/zero.cow 4K
check "and nothing was made" test -z "$(cowvol_devs)"
try "kvol-activate vol" K kvol-activate vol $VU "$LO"
try "ksnap-activate vol@snap-2 (file store)" K ksnap-activate vol $VU "$LO" snap-2 $S2U /tmp/s2.cow 64K
try "ksnap-activate vol@s3 (block-device store)" K ksnap-activate vol $VU "$LO" s3 $S3U "$LB" 64K
check "every device is back, same names and uuids" eval "cowvol_devs | cmp -s - '$T/devs-before'"
same "vol reads as before" "$(md5 /dev/mapper/cowvol-vol)" "$VMD5"
same "vol@snap-2 reads as before" "$(md5 /dev/mapper/cowvol-vol-snap--2)" "$S2MD5"
same "vol@s3 reads as before" "$(md5 /dev/mapper/cowvol-vol-s3)" "$S3MD5"
same "vol@s3's status as before" "$(dm_status cowvol-vol-s3)" "$ST3"
try "e2fsck -fn on vol@snap-2 after the rebuild" e2fsck -fn /dev/mapper/cowvol-vol-snap--2
refuse "kvol-deactivate of a volume with snapshots: -EBUSY" "snapshot" K kvol-deactivate vol $VU
check "and everything is still there" eval "cowvol_devs | cmp -s - '$T/devs-before'"

# --- libblkid ---------------------------------------------------------------------------
try "device-probe of cowvol-vol" K device-probe /dev/mapper/cowvol-vol
same "ext4, label cvlabel" "$(tr '\n' ' ' <"$T/out")" "type ext4 label cvlabel "
try "device-probe of a zeroed device" K device-probe "$LH"
same "nothing" "$(tr '\n' ' ' <"$T/out")" "type  label  "
LX=$(make_loop kengine-x.img 16M)
mkfs.ext4 -q -F -L cvstand "$LX"
XUUID=$(blkid -p -s UUID -o value "$LX")
try "device-resolve LABEL=cvstand" K device-resolve LABEL=cvstand
same "is $LX" "$(cat "$T/out")" "$LX"
try "device-resolve UUID=$XUUID" K device-resolve "UUID=$XUUID"
same "is $LX" "$(cat "$T/out")" "$LX"
VUUID=$(blkid -p -s UUID -o value /dev/mapper/cowvol-vol)
try "device-resolve LABEL=cvlabel (on $LO, and on cowvol's devices over it)" K device-resolve LABEL=cvlabel
same "is the device under the volume, not one of cowvol's" "$(cat "$T/out")" "$LO"
try "device-resolve UUID=$VUUID" K device-resolve "UUID=$VUUID"
same "is the device under the volume" "$(cat "$T/out")" "$LO"
refuse "device-resolve LABEL=nope" "No device has LABEL=nope" K device-resolve LABEL=nope
try "device-resolve of a path" K device-resolve "$LX"
same "is the path" "$(cat "$T/out")" "$LX"
same "device-signature of an ext4 device" "$(K device-signature "$LX")" "1 ext4"
head -c 16M /dev/zero >"$LX"
sync
same "device-signature of a zeroed device" "$(K device-signature "$LX")" "0"

# --- removal ---------------------------------------------------------------------------
try "ksnap-remove vol@snap-2" K ksnap-remove vol $VU snap-2 $S2U
try "ksnap-remove vol@s3" K ksnap-remove vol $VU s3 $S3U
try "kvol-deactivate vol" K kvol-deactivate vol $VU
check "no cowvol device is left" test -z "$(cowvol_devs)"
check "the block-device store was left alone" losetup "$LB"
same "kstatus of a volume that is not there" "$(kfield exists vol $VU)" 0

[ "$NOTOK" != 0 ] || ok "t-kengine: every check passed"
