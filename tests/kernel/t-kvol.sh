#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Block devices under cowvold's kernel engine, through the cowvol CLI: add
# (by path, UUID=, LABEL=), a snapshot of a mounted ext4 while a writer runs
# (e2fsck -fn passes on it), list (FS, LABEL, DATA%), diff from the store,
# two snapshots and removing one, a block-device store (refused while it
# carries a filesystem, unless --force), rm refused while mounted, and the
# stacks rebuilt from the catalogue after kill -9 and after a "reboot" (every
# dm device gone), with nothing lost.
#   tests/kernel/vm.sh tests/kernel/t-kvol.sh
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MNT=$T/mnt
SMNT=$T/smnt
mkdir -p "$MNT" "$SMNT"

# cowvol's devices in an order dmsetup can remove them: snapshots, their
# -cow layers, origins, their -real layers
removal_order() {
	local all
	all=$(cowvol_devices)
	echo "$all" | grep -vE -- '-(cow|real)$' | while read -r d; do
		[ -n "$d" ] && dmsetup table "$d" | grep -q ' snapshot ' && echo "$d"
	done
	echo "$all" | grep -E -- '-cow$'
	echo "$all" | grep -vE -- '-(cow|real)$' | while read -r d; do
		[ -n "$d" ] && dmsetup table "$d" | grep -q ' snapshot-origin ' && echo "$d"
	done
	echo "$all" | grep -E -- '-real$'
}
# everything cowvol made goes at exit
cleanup_kvol() {
	kill9_daemon
	umount "$SMNT" 2>/dev/null || true
	umount "$MNT" 2>/dev/null || true
	for d in $(removal_order 2>/dev/null); do
		dmsetup remove "$d" 2>/dev/null || true
	done
	true
}
on_exit cleanup_kvol
# cowvol devices: "name uuid" lines, sorted
cowvol_devices() { dmsetup info -c --noheadings -o name,uuid | awk -F: '$2 ~ /^COWVOL-/ {print $1}' | sort; }

ORIGIN=$(make_loop kvol-origin.img 64M)
STOREDEV=$(make_loop kvol-store.img 24M)
THIRD=$(make_loop kvol-third.img 16M)
start_daemon

# --- add ------------------------------------------------------------------------
step "cowvol add $ORIGIN --name data" "$COWVOL" add "$ORIGIN" --name data
check "/dev/mapper/cowvol-data exists" test -b /dev/mapper/cowvol-data
check "as snapshot-origin over cowvol-data-real" eval "dmsetup table cowvol-data | grep -q ' snapshot-origin ' && dmsetup table cowvol-data-real | grep -q ' linear '"
check "dm uuids carry COWVOL-" eval "dmsetup info -c --noheadings -o uuid cowvol-data | grep -q '^COWVOL-' && dmsetup info -c --noheadings -o uuid cowvol-data-real | grep -q '^COWVOL-.*-real$'"
refuse "adding the same device twice" "already" "$COWVOL" add "$ORIGIN" --name again
refuse "a device that does not exist" "No such|cannot" "$COWVOL" add /dev/nonexistent --name x
step "mkfs.ext4 -L payload on the volume" mkfs.ext4 -q -F -L payload /dev/mapper/cowvol-data
step "mount it" mount /dev/mapper/cowvol-data "$MNT"
for i in 1 2 3; do head -c $((i * 300000)) /dev/urandom >"$MNT/f$i"; done
sync
(cd "$MNT" && sha256sum f1 f2 f3) >"$T/sums-before"
step "cowvol list" "$COWVOL" list
check "list shows FS ext4 and LABEL payload" grep -qE '^data .* ext4 +payload ' "$T/out"
step "cowvol list --json" "$COWVOL" list --json
check "engine kernel, dm_path, fstype" eval "grep -q '\"engine\":\"kernel\"' '$T/out' && grep -q '\"dm_path\":\"/dev/mapper/cowvol-data\"' '$T/out' && grep -q '\"fstype\":\"ext4\"' '$T/out'"

# --- a snapshot of the mounted filesystem while a writer runs ------------------
(while :; do head -c 65536 /dev/urandom >"$MNT/busy.$((RANDOM % 8))"; done) 2>/dev/null &
writer=$!
sleep 0.5
step "cowvol snap data@s1 (mounted, a writer running)" "$COWVOL" snap data@s1 --store-size 16M
sleep 0.5
kill "$writer"; wait "$writer" 2>/dev/null || true
check "/dev/mapper/cowvol-data-s1 exists" test -b /dev/mapper/cowvol-data-s1
check "a snapshot table over -real and -cow" eval "dmsetup table cowvol-data-s1 | grep -qE ' snapshot [0-9]+:[0-9]+ [0-9]+:[0-9]+ P 8$'"
step "e2fsck -fn on the snapshot (frozen at the snapshot: consistent)" e2fsck -fn /dev/mapper/cowvol-data-s1
step "mount the snapshot read-only" mount -o ro,noload /dev/mapper/cowvol-data-s1 "$SMNT"
check "its files are those of the snapshot's moment" eval "(cd '$SMNT' && sha256sum -c --quiet '$T/sums-before')"
umount "$SMNT"
# after the snapshot: change the volume
head -c 500000 /dev/urandom >"$MNT/f1"
rm "$MNT/f2"
sync
step "cowvol list after writes" "$COWVOL" list data
check "the snapshot's DATA% is above 0" eval "\"\$COWVOL\" list data --json | tr -d ' \n' | grep -qE '\"name\":\"s1\"[^}]*\"data_percent\":(0\.[0-9]*[1-9]|[1-9])'"
step "cowvol diff data@s1 (read from the store)" "$COWVOL" diff data@s1
check "diff names changed ranges" eval "grep -qE '^[0-9]+ +[0-9]+' '$T/out' || grep -q 'total:' '$T/out'"
S1_STORE=$("$COWVOL" list data --json | sed -n 's/.*"store":"\([^"]*\.cow\)".*/\1/p' | head -1)
check "the store is a file in the state folder ($S1_STORE)" test -f "$S1_STORE"
fsfreeze -f "$MNT" # the status and the store, read at one moment
check "the kernel's status = cowvol store info of the store" eval "[ \"\$(dm_status cowvol-data-s1)\" = \"\$(info_field '$S1_STORE' allocated_sectors)/\$(info_field '$S1_STORE' total_sectors) \$(info_field '$S1_STORE' metadata_sectors)\" ]"
step "cowvol store view of the origin (-real) and the store" "$COWVOL" store view /dev/mapper/cowvol-data-real "$S1_STORE" "$T/view.out"
check "equals the kernel's snapshot device byte for byte" cmp -s "$T/view.out" /dev/mapper/cowvol-data-s1
fsfreeze -u "$MNT"
dd if=/dev/mapper/cowvol-data-s1 of="$T/s1.before" bs=1M status=none

# --- a second snapshot on a block device ---------------------------------------
mkfs.ext4 -q -F "$STOREDEV"
refuse "--store on a device with a filesystem is refused" "ext4.*--force" "$COWVOL" snap data@s2 --store "$STOREDEV"
check "and nothing was made" eval "! dmsetup info cowvol-data-s2 >/dev/null 2>&1"
# the descriptor passed with --store must be of the device named, root's too
# (cowvol passes its own; a raw request here passes another device's)
printf '{"v":1,"id":1,"op":"snap","args":{"volume":"data","name":"s2","store":"%s","force":true}}\n' "$STOREDEV" |
	"$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/../integration/rawsock.py" "$SOCK" "$THIRD" rw >"$T/raw"
check "snap --store with a descriptor of another device is refused (EACCES)" \
	grep -q "ok=false code=EACCES message=permission denied: the descriptor passed with snap is not $STOREDEV" "$T/raw"
printf '{"v":1,"id":1,"op":"add","args":{"path":"%s","name":"other"}}\n' "$THIRD" |
	"$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/../integration/rawsock.py" "$SOCK" "$STOREDEV" rw >"$T/raw"
check "add of a device with a descriptor of another is refused (EACCES)" \
	grep -q "ok=false code=EACCES message=permission denied: the descriptor passed with add is not $THIRD" "$T/raw"
check "and nothing was made" eval "! dmsetup info cowvol-data-s2 >/dev/null 2>&1 && ! dmsetup info cowvol-other >/dev/null 2>&1"
step "--store with --force" "$COWVOL" snap data@s2 --store "$STOREDEV" --force
check "/dev/mapper/cowvol-data-s2 exists" test -b /dev/mapper/cowvol-data-s2
step "e2fsck -fn on data@s2" e2fsck -fn /dev/mapper/cowvol-data-s2
refuse "cat of a kernel volume points to its device" "/dev/mapper/cowvol-data" "$COWVOL" cat data
refuse "a snapshot named 'real' is refused" "real" "$COWVOL" snap data@real

# --- in use ---------------------------------------------------------------------
mount -o ro,noload /dev/mapper/cowvol-data-s2 "$SMNT"
refuse "rm of a mounted snapshot" "in use" "$COWVOL" rm data@s2
check "it is still there" test -b /dev/mapper/cowvol-data-s2
umount "$SMNT"
refuse "rm of a volume with snapshots" "snapshot" "$COWVOL" rm data

# --- kill -9 and restart: the stacks stay; a "reboot": rebuilt ----------------
cowvol_devices >"$T/devs-before"
kill9_daemon
start_daemon
check "after kill -9 and a restart the devices are the same" eval "cowvol_devices | cmp -s - '$T/devs-before'"
step "list after the restart" "$COWVOL" list data
check "both snapshots active" eval "grep -cE '^ +data@s[12] .* active ' '$T/out' | grep -qx 2"
stop_daemon || notok "cowvold exits 0 on SIGTERM"
umount "$MNT"
for d in $(removal_order); do dmsetup remove "$d" || notok "dmsetup remove $d"; done
check "\"reboot\": no cowvol device is left" test -z "$(cowvol_devices)"
start_daemon
check "cowvold rebuilt every device from the catalogue" eval "cowvol_devices | cmp -s - '$T/devs-before'"
dd if=/dev/mapper/cowvol-data-s1 of="$T/s1.after" bs=1M status=none
check "data@s1 reads as before the reboot" cmp -s "$T/s1.before" "$T/s1.after"
step "e2fsck -fn on data@s1 after the rebuild" e2fsck -fn /dev/mapper/cowvol-data-s1
step "the volume mounts again" mount /dev/mapper/cowvol-data "$MNT"
check "the volume kept its later writes (f2 gone)" test ! -e "$MNT/f2"

# --- rm ---------------------------------------------------------------------------
step "rm data@s1" "$COWVOL" rm data@s1
check "its devices are gone" eval "! dmsetup info cowvol-data-s1 >/dev/null 2>&1 && ! dmsetup info cowvol-data-s1-cow >/dev/null 2>&1"
check "its store file is gone" test ! -e "$S1_STORE"
check "data@s2 is intact (e2fsck -fn)" e2fsck -fn /dev/mapper/cowvol-data-s2
refuse "rm --recursive of a mounted volume" "in use" "$COWVOL" rm data --recursive
check "and nothing was removed: data@s2 is still there" test -b /dev/mapper/cowvol-data-s2
umount "$MNT"
step "rm --recursive data" "$COWVOL" rm data --recursive
check "no cowvol device is left" test -z "$(cowvol_devices)"
check "the store device was left alone (not a file of ours)" test -b "$STOREDEV"

# --- UUID= and LABEL= -------------------------------------------------------------
mkfs.ext4 -q -F -L lbl "$ORIGIN"
uuid=$(blkid -s UUID -o value "$ORIGIN")
step "cowvol add LABEL=lbl" "$COWVOL" add LABEL=lbl
check "named after the label, over $ORIGIN" eval "\"$COWVOL\" list --json | grep -q '\"name\":\"lbl\"' && \"$COWVOL\" list --json | grep -q '\"path\":\"$ORIGIN\"'"
step "rm lbl" "$COWVOL" rm lbl
step "cowvol add UUID=$uuid --name byuuid" "$COWVOL" add "UUID=$uuid" --name byuuid
check "/dev/mapper/cowvol-byuuid exists" test -b /dev/mapper/cowvol-byuuid
step "rm byuuid" "$COWVOL" rm byuuid
refuse "an unknown LABEL" "No device has LABEL=nope" "$COWVOL" add LABEL=nope

# --- refusals: a device in use, a name taken by someone else's dm device -----------
mkfs.ext4 -q -F "$THIRD"
mount "$THIRD" "$SMNT"
refuse "adding a mounted device" "in use" "$COWVOL" add "$THIRD" --name held
check "nothing was made" eval "! dmsetup info cowvol-held-real >/dev/null 2>&1 && ! \"$COWVOL\" list --json | grep -q '\"name\":\"held\"'"
umount "$SMNT"
dmsetup create cowvol-clash --table "0 8 error"
refuse "a name whose dm device is someone else's" "not this object's" "$COWVOL" add "$THIRD" --name clash
check "that device is untouched" eval "dmsetup table cowvol-clash | grep -q '^0 8 error' && ! dmsetup info cowvol-clash-real >/dev/null 2>&1"
check "and no volume was recorded" eval "! \"$COWVOL\" list --json | grep -q '\"name\":\"clash\"'"
dmsetup remove cowvol-clash

# --- restore: snapshot-merge -------------------------------------------------------
# wait_restored VOLUME: until list shows no restore (60 s at most)
wait_restored() {
	for _ in $(seq 1 300); do
		"$COWVOL" list "$1" --json | grep -q '"restore":null' && return 0
		sleep 0.2
	done
	return 1
}
step "cowvol add $ORIGIN --name r" "$COWVOL" add "$ORIGIN" --name r
# no lazy init: ext4 would zero its inode tables in the background later,
# a burst of copies no store of this size could take
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/cowvol-r
mount /dev/mapper/cowvol-r "$MNT"
for i in 1 2 3; do head -c $((i * 200000)) /dev/urandom >"$MNT/g$i"; done
(cd "$MNT" && sha256sum g1 g2 g3) >"$T/g-sums"
sync
step "snap r@a" "$COWVOL" snap r@a --store-size 16M
head -c 400000 /dev/urandom >"$MNT/g1"
rm "$MNT/g3"
echo later >"$MNT/later"
sync
step "restore r@a while r is mounted: recorded" "$COWVOL" restore r@a
check "it says the merge waits for the next activation" grep -q "next activation" "$T/out"
check "list shows the restore pending" eval "\"$COWVOL\" list r --json | grep -q '\"restore\":{'"
check "the volume's table is still snapshot-origin" eval "dmsetup table cowvol-r | grep -q ' snapshot-origin '"
umount "$MNT"
step "cowvol activate r (unmounted now): the merge starts" "$COWVOL" activate r
check "wait for the merge to end" wait_restored r
check "the volume's table is snapshot-origin again" eval "dmsetup table cowvol-r | grep -q ' snapshot-origin '"
check "r@a is consumed (devices gone)" eval "! dmsetup info cowvol-r-a >/dev/null 2>&1 && ! dmsetup info cowvol-r-a-cow >/dev/null 2>&1"
check "and gone from the list" eval "! \"$COWVOL\" list r --json | grep -q '\"name\":\"a\"'"
step "e2fsck -fn on the restored volume" e2fsck -fn /dev/mapper/cowvol-r
mount /dev/mapper/cowvol-r "$MNT"
check "the files are back as at the snapshot" eval "(cd '$MNT' && sha256sum -c --quiet '$T/g-sums')"
check "the later file is gone" test ! -e "$MNT/later"
umount "$MNT"
step "snap r@b" "$COWVOL" snap r@b --store-size 16M
mount /dev/mapper/cowvol-r "$MNT"; echo changed >"$MNT/g2"; umount "$MNT"
step "restore r@b --keep, unmounted: waits until done" "$COWVOL" restore r@b --keep
check "it said Restored" grep -q "Restored r from r@b" "$T/out"
check "r@b is kept, active again" eval "dmsetup table cowvol-r-b | grep -q ' snapshot ' && \"$COWVOL\" list r | grep -qE '^ +r@b .* active '"
step "e2fsck -fn on the kept r@b" e2fsck -fn /dev/mapper/cowvol-r-b
mount /dev/mapper/cowvol-r "$MNT"
check "r has g2 as at r@b" eval "(cd '$MNT' && sha256sum -c --quiet '$T/g-sums')"

# --- the monitor: growth before overflow ---------------------------------------------
step "snap r@grow with a 2 MiB store (autoextend 70 %, +20 %)" "$COWVOL" snap r@grow --store-size 2M
# the load: writes at a pace the monitor (every 2 s) can follow, 64 KiB
# every 0.4 s, 2.5 MiB in all: more than the store
paced_load() { for i in $(seq 1 40); do head -c 65536 /dev/urandom >"$MNT/$1.$i"; sync; sleep 0.4; done; }
paced_load slow
sz=$("$COWVOL" list r --json | "$PYTHON" -c "import json, sys; print([s['store_size'] for s in json.load(sys.stdin)['volumes'][0]['snapshots'] if s['name'] == 'grow'][0])")
check "the monitor grew the store (now ${sz:-?} bytes, from 2097152)" test "${sz:-0}" -gt 2097152
check "the log says so" grep -q "r@grow: store .* extended" "$T/daemon.log"
check "r@grow is still valid" eval "\"$COWVOL\" list r | grep -qE '^ +r@grow .* active '"
step "rm r@grow" "$COWVOL" rm r@grow

# --- overflow with growth off: only the snapshot is lost -------------------------------
stop_daemon || notok "cowvold exits 0 on SIGTERM"
printf 'autoextend_threshold = 100\n' >"$T/nogrow.conf"
start_daemon --config "$T/nogrow.conf"
step "snap r@small with the same 2 MiB store, growth off" "$COWVOL" snap r@small --store-size 2M
paced_load again
(cd "$MNT" && sha256sum g1 g2 g3 slow.* again.*) >"$T/r-sums"
invalid=0
for _ in $(seq 1 30); do
	"$COWVOL" list r | grep -qE '^ +r@small .* invalid' && { invalid=1; break; }
	sleep 0.5
done
check "r@small became invalid" test "$invalid" = 1
check "list says why" eval "\"$COWVOL\" list r | grep -E '^ +r@small' | grep -q 'invalid: '"
logged() { for _ in $(seq 1 25); do grep -q "$1" "$T/daemon.log" && return 0; sleep 0.2; done; return 1; }
check "the monitor logs it: the volume and the other snapshots are intact" logged "r@small is now invalid.*intact"
check "the volume's files are all there" eval "(cd '$MNT' && sha256sum -c --quiet '$T/r-sums')"
check "r@b is still valid: its 16 MiB held the load" eval "\"$COWVOL\" list r | grep -qE '^ +r@b .* active '"
check "r@b is intact (e2fsck -fn)" e2fsck -fn /dev/mapper/cowvol-r-b
umount "$MNT"
step "rm r --recursive" "$COWVOL" rm r --recursive
stop_daemon || notok "cowvold exits 0 on SIGTERM"
check "cowvold logged no sanitizer report" eval "! grep -qE 'AddressSanitizer|runtime error' '$T/daemon.log'"
