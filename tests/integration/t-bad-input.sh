#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Bad input changes nothing (the plain cases, one input and its error, are
# the rows of tests/bad-input.tsv, run by t-bad-table.sh; here the ones that
# need more than one step): each bad path, write or request
# line gets a clear error (exit 1 when cowvold refuses it, exit 2 when the
# CLI sees wrong usage first), the catalogue, the list and every image and
# store stay byte for byte the same, and the daemon keeps serving.  Also:
# damaged stores at start (truncated, bad magic) show as invalid snapshots
# without taking the rest down; a full state folder fails snap, create and rm
# cleanly and recovers once there is room; garbage on the socket gets the
# protocol's EPROTO / E2BIG / EINVAL answers (doc/protocol.md).
# Needs root (tmpfs mount, mknod).
. "$(dirname "$0")/../lib.sh"

RAW=$(dirname "$0")/rawsock.py
MiB=$((1024 * 1024))

# --- helpers -------------------------------------------------------------------------
# everything a request could change: the catalogue file and every image and
# store (by content), the daemon's list (data_percent, allocated included)
state_snapshot() { # FILE
	{
		cv list --json
		find "$STATE" -type f -print0 | sort -z | xargs -0 sha256sum
		find "$STATE" | sort
	} >"$1" 2>&1
}
unchanged() {
	state_snapshot "$T/state.now"
	if cmp -s "$T/state.base" "$T/state.now"; then return 0; fi
	diff "$T/state.base" "$T/state.now" | head -6 | sed 's/^/#   /'
	return 1
}
serving() { cv status >/dev/null 2>&1; }

# refused RC PATTERN DESC CMD...: CMD exits RC, its error matches PATTERN,
# nothing changed, and the daemon still answers status
refused() {
	local want=$1 pat=$2 d=$3
	shift 3
	state_snapshot "$T/state.base"
	expect "$want" "$d: exit $want" "$@"
	expect_in err "$pat" "$d: says /$pat/"
	check "$d: nothing changed" unchanged
	check "$d: cowvold still serves" serving
}

# raw CODE PATTERN DESC PAYLOAD: the payload sent as is on a connection of
# its own; the first answer has error code CODE and a message matching
# PATTERN; nothing changed; the daemon still serves others
raw() { printf '%s' "$4" | raw_pipe "$1" "$2" "$3"; }
# raw_pipe CODE PATTERN DESC < PAYLOAD: the same, for payloads no shell
# string can hold (NUL bytes) or too long for an argument
raw_pipe() {
	local code=$1 pat=$2 d=$3
	state_snapshot "$T/state.base"
	"$PYTHON" "$RAW" "$SOCK" >"$T/raw" 2>&1
	if head -1 "$T/raw" | grep -q "ok=false code=$code "; then ok "$d: answered $code"; else
		notok "$d: answered $code"
		sed 's/^/#   /' "$T/raw" | head -3
	fi
	if head -1 "$T/raw" | grep -qE -- "message=.*$pat"; then ok "$d: message says /$pat/"; else
		notok "$d: message says /$pat/"
		sed 's/^/#   /' "$T/raw" | head -3
	fi
	check "$d: nothing changed" unchanged
	check "$d: cowvold still serves" serving
}
req() { # OP ARGS-JSON: one request line
	printf '{"v":1,"id":42,"op":"%s","args":%s}\n' "$1" "$2"
}

start_daemon || exit 1

# --- setup: v1 with three snapshots of distinct content; v64 with 64 KiB chunks ---
setup_v1_v64
for x in v1 v1@s1 v1@s2 v1@s3; do cv cat "$x" >"$T/ref.$x"; done
check "setup: v1@s1 reads as first written" cmp -s "$T/ref.v1@s1" "$T/A"

# --- limits (the refusals are rows of tests/bad-input.tsv, t-bad-table.sh) ---------------
L64=$(printf 'y%.0s' $(seq 64))
# the limit is 64: a 64-character name is fine
expect 0 "a 64-character volume name is accepted" cv create "$L64" --size 1M
expect 0 "a 64-character snapshot name is accepted" cv snap "$L64@$L64"
expect 0 "and removed" cv rm "$L64" --recursive
expect 0 "a store of exactly 3 chunks is accepted" cv snap v64@three --store-size 192K
expect 0 "and removed" cv rm v64@three

# --- write past the end -----------------------------------------------------------------
write_end() { cv write v1 --offset $((4 * MiB - 4096)) <"$T/B"; }
write_beyond() { cv write v1 --offset $((4 * MiB + 4096)) <"$T/B"; }
write_pipe_end() { head -c 8192 "$T/B" | cv write v1 --offset $((4 * MiB - 512)); }
refused 1 "past the end.*nothing was written" "write of 8K at 4 KiB before the end" write_end
refused 1 "past the end" "write starting past the end" write_beyond
refused 1 "past the end" "write from a pipe past the end" write_pipe_end
expect 0 "v1 reads as before the refused writes" cv cat v1
check "v1's bytes are unchanged" cmp -s "$T/out" "$T/ref.v1"

# --- add: bad paths ------------------------------------------------------------------------
head -c 4096 /dev/zero >"$T/bad name.img"
mknod "$T/blk" b 7 200 2>/dev/null
if [ -b "$T/blk" ]; then
	# a block device goes to the kernel engine: here (no device-mapper in
	# this kernel) it is refused, and says why
	refused 1 "block devices.*device-mapper|device-mapper.*block devices" "add of a block device node" cv add "$T/blk"
else
	notok "mknod a block device node for the add test"
fi
refused 1 "bad volume name.*contains ' '" "add of a file whose name is no volume name" cv add "$T/bad name.img"

# --- stores damaged while the daemon was down ---------------------------------------------------
cv list --json >"$T/list.json"
store_of() { # SNAPNAME
	"$PYTHON" -c 'import json,sys
for v in json.load(open(sys.argv[1]))["volumes"]:
    for s in v["snapshots"]:
        if s["full_name"] == sys.argv[2]: print(s["store"])' "$T/list.json" "$1"
}
S1=$(store_of v1@s1)
S2=$(store_of v1@s2)
stop_daemon
check "cowvold stopped cleanly before the damage" test $? = 0
truncate -s 100 "$S1"
printf 'XXXX' | dd of="$S2" conv=notrunc status=none
cp "$STATE/catalogue.json" "$T/catalogue.damaged"
sha256sum "$S1" "$S2" >"$T/damaged.sum"
start_daemon
check "cowvold starts with a truncated and a corrupt store" serving
cv list --json >"$T/list.json"
state_of() { # SNAPNAME
	"$PYTHON" -c 'import json,sys
for v in json.load(open(sys.argv[1]))["volumes"]:
    for s in v["snapshots"]:
        if s["full_name"] == sys.argv[2]: print(s["state"], "reason" if s["reason"] else "noreason")' "$T/list.json" "$1"
}
check "list --json: v1@s1 (truncated store) is invalid, with a reason" test "$(state_of v1@s1)" = "invalid reason"
check "list --json: v1@s2 (bad magic) is invalid, with a reason" test "$(state_of v1@s2)" = "invalid reason"
check "list --json: v1@s3 is still active" test "$(state_of v1@s3)" = "active noreason"
expect 0 "cowvol list works" cv list
check "the table shows v1@s1 and v1@s2 as invalid" \
	eval "grep -E '^ +v1@s1 .*invalid' '$T/out' >/dev/null && grep -E '^ +v1@s2 .*invalid' '$T/out' >/dev/null"
refused 1 "v1@s1.*(invalid|cannot be opened|unusable)" "cat of the snapshot whose store is truncated" cv cat v1@s1
check "that cat wrote nothing" test ! -s "$T/out"
refused 1 "v1@s2.*(invalid|cannot be opened|unusable)" "cat of the snapshot whose store has a bad magic" cv cat v1@s2
refused 1 "v1@s1.*(invalid|unavailable|cannot be opened)" "diff of the snapshot whose store is truncated" cv diff v1@s1
refused 1 "v1@s2.*invalid" "restore of the snapshot whose store has a bad magic" cv restore v1@s2
expect 0 "the volume still reads" cv cat v1
check "the volume reads as before" cmp -s "$T/out" "$T/ref.v1"
expect 0 "the other snapshot still reads" cv cat v1@s3
check "v1@s3 reads as before" cmp -s "$T/out" "$T/ref.v1@s3"
check "the daemon left the damaged stores as they were (evidence kept)" sha256sum --quiet -c "$T/damaged.sum"
check "the catalogue still lists the damaged snapshots (not dropped at start)" \
	cmp -s "$T/catalogue.damaged" "$STATE/catalogue.json"
# writes go on; the valid snapshot still gets its copies
head -c 4096 /dev/urandom >"$T/E"
expect 0 "writing v1 still works" cv write v1 --offset 0 <"$T/E"
expect 0 "v1@s3 reads after the write" cv cat v1@s3
check "v1@s3 still reads as before the write (its copy-on-write works)" cmp -s "$T/out" "$T/ref.v1@s3"
expect 0 "an invalid snapshot can be removed" cv rm v1@s1
check "its store file is gone" test ! -e "$S1"

# --- garbage on the socket ---------------------------------------------------------------------
requires "$PYTHON" # raw requests
STATUS='{"v":1,"id":3,"op":"status"}'
raw EPROTO "not a JSON object" "'hello' line" "hello
$STATUS
"
check "'hello' line: the connection is closed after the error (the next request is not answered)" \
	test "$(grep -c '^id=' "$T/raw")" = 1
# the limit is 64 KiB with the newline: exactly that is a request (one more
# byte is row req.line-64k-plus-1 of tests/bad-input.tsv)
pad_request() { # TOTAL-BYTES
	"$PYTHON" -c 'import sys
head, tail = "{\"v\":1,\"id\":9,\"op\":\"status\",\"pad\":\"", "\"}"
n = int(sys.argv[1]) - len(head) - len(tail) - 1
sys.stdout.write(head + "x" * n + tail + "\n")' "$1"
}
pad_request 65536 | "$PYTHON" "$RAW" "$SOCK" >"$T/raw" 2>&1
check "a request of exactly 64 KiB with its newline is served" grep -q '^id=9 ok=true' "$T/raw"

raw EPROTO "protocol version" "v=2" '{"v":2,"id":5,"op":"status"}
'"$STATUS"'
'
check "v=2: the answer carries the request's id" grep -q '^id=5 ok=false' "$T/raw"
check "v=2: the connection stays usable (the next request is answered)" grep -q '^id=3 ok=true' "$T/raw"
cv create victim --size 1M >/dev/null
raw EINVAL "control character|bad volume name" "rm --recursive of 'victim\\u0000junk'" \
	"$(req rm '{"target":"victim\u0000junk","recursive":true}')
"
check "the volume 'victim' is still there" eval "cv list --json | grep -q '\"name\": *\"victim\"'"
# answers are UTF-8 (doc/protocol.md), even when the name was not ASCII
raw EINVAL "bad volume name" "a volume name with a non-ASCII letter (été)" "$(req create '{"name":"été","size":1048576}')
"
check "that answer is valid UTF-8 JSON" eval "! grep -q '^notutf8' '$T/raw'"
OP64="$(printf 'o%.0s' $(seq 63))é"
raw EINVAL "unknown operation" "an unknown op cut at 64 bytes inside a UTF-8 character" \
	"$(printf '{"v":1,"id":42,"op":"%s"}' "$OP64")
"
check "that answer is valid UTF-8 JSON too" eval "! grep -q '^notutf8' '$T/raw'"

# --- a full state folder -----------------------------------------------------------------------
SMALL=$T/small
S2STATE=$SMALL/state
S2SOCK=$T/small.sock
D2_PID=
mkdir -p "$SMALL"
mount -t tmpfs -o size=3M tmpfs "$SMALL"
check "a 3 MiB tmpfs for the second daemon's state" mountpoint -q "$SMALL"
on_exit '[ -z "$D2_PID" ] || { kill -9 "$D2_PID"; wait "$D2_PID"; } 2>/dev/null; ! mountpoint -q "$SMALL" || umount "$SMALL"'
c2() { "$COWVOL" --socket "$S2SOCK" "$@"; }
start2() {
	"$COWVOLD" --state-dir "$S2STATE" --socket "$S2SOCK" >>"$T/daemon2.log" 2>&1 &
	D2_PID=$!
	for _ in $(seq 1 200); do
		[ -S "$S2SOCK" ] && c2 status >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}
check "a second cowvold on the tmpfs starts" start2
expect 0 "create w (8M, sparse) on the small state folder" c2 create w --size 8M
expect 0 "snap w@first with a 512K store" c2 snap w@first --store-size 512K
dd if=/dev/zero of="$SMALL/filler" bs=4k status=none 2>/dev/null
check "the tmpfs is full (filler written to ENOSPC)" test "$(df --output=avail -k "$SMALL" | tail -1 | tr -d ' ')" = 0
parseable() { "$PYTHON" -c 'import json,sys; json.load(open(sys.argv[1]))' "$S2STATE/catalogue.json"; }
full_case() { # PATTERN DESC CMD...
	local pat=$1 d=$2
	shift 2
	cp "$S2STATE/catalogue.json" "$T/cat2.before"
	c2 list --json >"$T/list2.before"
	find "$S2STATE" | sort >"$T/files2.before"
	expect 1 "full disk: $d: exit 1" "$@"
	expect_in err "$pat" "full disk: $d: says /$pat/"
	check "full disk: $d: the catalogue is byte for byte the same" cmp -s "$T/cat2.before" "$S2STATE/catalogue.json"
	check "full disk: $d: the catalogue is parseable JSON" parseable
	c2 list --json >"$T/list2.after"
	check "full disk: $d: list is the same" cmp -s "$T/list2.before" "$T/list2.after"
	find "$S2STATE" | sort >"$T/files2.after"
	check "full disk: $d: no file left over (store, image, temporary catalogue)" \
		cmp -s "$T/files2.before" "$T/files2.after"
	check "full disk: $d: cowvold still serves" eval "c2 status >/dev/null"
}
full_case "a store of 1.0 MiB is more than the 0 B free in the state folder's filesystem.*--force" \
	"snap w@second (more than the free space, as lvcreate refuses)" c2 snap w@second --store-size 1M
full_case "No space left" "snap w@second --force (its store is preallocated)" c2 snap w@second --store-size 1M --force
full_case "catalogue.*No space left" "create w2 (the catalogue cannot be saved)" c2 create w2 --size 1M
full_case "catalogue.*No space left" "rm w@first (the catalogue cannot be saved)" c2 rm w@first
check "w@first's store is still there" eval "[ \$(ls '$S2STATE/stores' | wc -l) = 1 ]"
full_case "catalogue.*No space left" "schedule w w (named twice; the catalogue cannot be saved)" \
	c2 schedule w w --hourly 3
check "full disk: w has no schedule after the refused one" eval "c2 schedule w | grep -qx 'w: no schedule'"
full_case "No space left" "snap w@third with a description (no room: nothing of it stays)" \
	c2 snap w@third --description "what it is" --store-size 1M --force
rm -f "$SMALL/filler"
expect 0 "with the filler gone, the same snap succeeds" c2 snap w@second --store-size 1M
expect 0 "and the same create" c2 create w2 --size 1M
expect 0 "and the same schedule" c2 schedule w --hourly 3 --daily 0 --monthly 0 --yearly 0
kill -TERM "$D2_PID"
wait "$D2_PID"
check "the second cowvold stops cleanly (exit 0)" test $? = 0
D2_PID=
check "the second cowvold starts again on that catalogue" start2
expect 0 "list after the restart" c2 list
check "w, w@first, w@second and w2 survived" \
	eval "grep -qE '^ +w@first ' '$T/out' && grep -qE '^ +w@second ' '$T/out' && grep -qE '^w2 ' '$T/out' && grep -qE '^w ' '$T/out'"
kill -TERM "$D2_PID"
wait "$D2_PID"
D2_PID=
umount "$SMALL"

stop_daemon
check "cowvold stops cleanly at the end (exit 0)" test $? = 0
