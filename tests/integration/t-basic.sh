#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job end to end: create, write, snap, overwrite, cat the snapshot,
# diff, list, restore (consuming and --keep), rm, status; each result checked.
. "$(dirname "$0")/../lib.sh"
start_daemon || exit 1

expect 0 "status" cv status
expect_in out "engines: userspace" "status names the engines"
expect_in out "^state folder: $STATE, stores 0 B; its filesystem: .* free of .* \([0-9]+%\)$" \
	"status names the state folder, its stores and the room under it"
expect_in out "^control socket: $SOCK$" "status names the control socket"
expect_in out "^NBD: socket $T/nbd.sock, TCP off$" "status names the NBD socket and TCP"
expect 0 "status --json" cv status --json
check "status --json: integers (uptime), the places, and free space that df agrees with (within 64 MiB)" \
	"$PYTHON" -c 'import json, os, sys
s = json.load(open(sys.argv[1]))
ints = all(type(s[k]) is int for k in ("uptime", "volumes", "snapshots", "clients", "stores_bytes",
                                       "state_fs_size", "state_fs_free"))
st = os.statvfs(sys.argv[2])
free = st.f_bavail * st.f_frsize
sys.exit(not (ints and s["state_dir"] == sys.argv[2] and s["socket"] == sys.argv[3] and s["nbd_tcp"] is None
              and s["nbd_tls"] == "off" and s["stores_bytes"] == 0 and abs(s["state_fs_free"] - free) < 64 << 20))' \
	"$T/out" "$STATE" "$SOCK"
expect 0 "create a 4 MiB volume" cv create vm1 --size 4M
expect_in out "Created volume vm1: 4.0 MiB" "create says what it made"
check "the image is a 4 MiB file in the state folder" test "$(stat -c %s "$STATE/volumes/vm1.img")" = 4194304

head -c 1M /dev/urandom >"$T/v1"
expect 0 "write 1 MiB at 0" sh -c "$COWVOL write vm1 --offset 0 <'$T/v1'"
expect 0 "snap vm1@s1" cv snap vm1@s1
expect_in out "Created snapshot vm1@s1" "snap says what it made"
head -c 10000 /dev/urandom >"$T/v2"
expect 0 "overwrite 10000 bytes at 5000 (unaligned)" sh -c "$COWVOL write vm1 --offset 5000 <'$T/v2'"
cv cat vm1@s1 --length 1048576 >"$T/snap.out"
check "the snapshot still reads the old data" cmp -s "$T/snap.out" "$T/v1"
cv cat vm1 --length 1048576 >"$T/vol.out"
cp "$T/v1" "$T/model" && dd if="$T/v2" of="$T/model" bs=1 seek=5000 conv=notrunc status=none
check "the volume reads the new data" cmp -s "$T/vol.out" "$T/model"
expect 0 "diff" cv diff vm1@s1
check "diff gives the changed chunks (bytes 5000..14999: chunks 1-3) as one run" grep -qx "4096 12288" "$T/out"
expect_in out "total: 12288 bytes in 1 range" "diff sums it up"
expect 0 "diff --json" cv diff vm1@s1 --json
expect_in out '"bytes":12288' "diff --json has the total"
expect 0 "list" cv list
# bash completion of names, from the daemon
names() { bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _cowvol
	[ ${#COMPREPLY[@]} = 0 ] || printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' _ "$REPO/completion/cowvol.bash" "$COWVOL" "$@"; }
check "completion: 'cowvol cat vm' gives the volume and its snapshot" test "$(names cat vm)" = "vm1 vm1@s1 "
check "completion: 'cowvol rm vm1@' gives the snapshot" test "$(names rm vm1@)" = "vm1@s1 "
check "completion: without the daemon, no names and no error" \
	test "$(names --socket "$T/none.sock" cat vm 2>&1)" = ""
expect_in out "vm1@s1 +vm1" "list shows the snapshot under its volume"
expect 0 "list --json" cv list --json
expect_in out '"exceptions":3' "list --json counts the 3 chunks copied"
expect_in out '"store":"[^"]*\.cow"' "list --json has the store's path"

# a snapshot written to (LVM's snapshots are writable)
printf 'snapshot-only data' >"$T/sw"
expect 0 "write into the snapshot" sh -c "$COWVOL write vm1@s1 --offset 1048000 <'$T/sw'"
cv cat vm1@s1 --offset 1048000 --length 18 >"$T/sw.out"
check "the snapshot reads its own write" cmp -s "$T/sw.out" "$T/sw"
cv cat vm1 --offset 1048000 --length 18 >"$T/vw.out"
check "the volume does not see the snapshot's write" cmp -s "$T/vw.out" <(head -c 1048018 "$T/model" | tail -c 18)

# restore with --keep: the volume becomes the snapshot, the snapshot stays
cv cat vm1@s1 >"$T/s1.full"
expect 0 "restore --keep" cv restore vm1@s1 --keep
cv cat vm1 >"$T/vol.after"
check "after restore the volume equals the snapshot" cmp -s "$T/vol.after" "$T/s1.full"
cv cat vm1@s1 >"$T/s1.after"
check "the kept snapshot still reads the same" cmp -s "$T/s1.after" "$T/s1.full"
expect 0 "diff of the kept snapshot" cv diff vm1@s1
expect_in out "total: 0 bytes in 0 ranges" "the kept snapshot and the volume are the same now"

# restore consuming the snapshot, with --no-wait and list showing the end
head -c 65536 /dev/urandom >"$T/v3"
cv snap vm1@s2 >/dev/null
sh -c "$COWVOL write vm1 --offset 0 <'$T/v3'"
expect 0 "restore --no-wait" cv restore vm1@s2 --no-wait
expect_in out "started" "restore --no-wait says it started"
for _ in $(seq 1 100); do cv list --json | grep -q '"restore":null' && break; sleep 0.05; done
cv cat vm1 >"$T/vol.after2"
check "the consuming restore brought back the content" cmp -s "$T/vol.after2" "$T/s1.full"
expect 0 "list after" cv list --json
check "the consumed snapshot is gone" sh -c "! grep -q '\"name\":\"s2\"' '$T/out'"
check "its store file is gone" sh -c "[ \$(ls '$STATE/stores' | wc -l) = 1 ]"

# a store larger than the free space: refused, as lvcreate refuses more
# than the free extents; --force makes it (sparse, it takes what it copies)
big=$(($(df --output=avail -B1 "$STATE" | tail -1) + (1 << 30)))
refuse "a store larger than the free space is refused" "is more than the .* free in the state folder's filesystem.*--force" \
	cv snap vm1@big --store-size "$big"
expect 0 "with --force it is made" cv snap vm1@big --store-size "$big" --force
expect 0 "rm it" cv rm vm1@big

# rm
expect 1 "rm of a volume with snapshots is refused" cv rm vm1
expect_in err "recursive" "the refusal says --recursive"
expect 0 "rm a snapshot" cv rm vm1@s1
expect 0 "rm the volume (it holds data: --yes)" cv rm vm1 --yes
check "the image is gone" test ! -e "$STATE/volumes/vm1.img"
expect 0 "list of nothing" cv list
expect_in out "No volumes" "list says there are none"

# add adopts an image where it is, and rm leaves it there
head -c 2M /dev/urandom >"$T/disk.img"
expect 0 "add an image file" cv add "$T/disk.img" --chunk-size 64K
expect_in out "Added volume disk" "add names it after the file"
cv cat disk >"$T/disk.out"
check "the adopted volume reads the file" cmp -s "$T/disk.out" "$T/disk.img"
expect 0 "rm the adopted volume" cv rm disk
check "its image stays" test -s "$T/disk.img"

expect 0 "SIGTERM stops the daemon with exit 0" stop_daemon

# the log: on a file, each line its local time and priority word; a change
# names who asked; on the journal (JOURNAL_STREAM names standard error),
# journald's "<N>" and no time
check "each line of the log starts with its time and priority" \
	eval "! grep -avE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}[+-][0-9]{4} (info|warning|error): ' '$T/daemon.log'"
check "a change names the peer who asked: create, with root's uid and a pid" \
	grep -qE "info: Created volume vm1 .* \[uid 0, pid [0-9]+\]$" "$T/daemon.log"
check "a line of the daemon's own names no peer" grep -qE "info: Stopped cleanly$" "$T/daemon.log"
: >"$T/daemon.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$T/daemon.log") start_daemon || exit 1
cv create j --size 1M >/dev/null
stop_daemon
check "on the journal: '<N>' first, no time (journald stamps)" \
	eval "grep -q '^<6>Created volume j (1048576 bytes, chunk 4096) \[uid 0, pid [0-9]*\]$' '$T/daemon.log' &&
	      ! grep -avq '^<[0-9]>' '$T/daemon.log'"
