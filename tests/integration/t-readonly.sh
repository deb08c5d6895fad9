#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Read-only snapshots: the default for the cleanup classes number and
# timeline (snapper's automatic ones), --read-only and --writable at snap,
# cowvol set VOL@SNAP read-only=on|off as lvchange -p; enforced by cowvol
# write (EROFS) and NBD (the export's READ_ONLY flag); kept across kill -9;
# not changed under an open NBD connection.
. "$(dirname "$0")/../lib.sh"
requires nbdinfo "$PYTHON"

start_daemon || exit 1
NBD=$T/nbd.sock
RAW=$REPO/tests/integration/nbd-raw.py
cv create v --size 1M >/dev/null
"$COWTOOL" pattern "$T/A" 64K 1
cv write v <"$T/A"
cv snap v@tl --cleanup timeline >/dev/null
cv snap v@num --cleanup number >/dev/null
cv snap v@plain >/dev/null
cv snap v@numw --cleanup number --writable >/dev/null
cv snap v@ro --read-only >/dev/null
ro_of() { cv list v --json | "$PYTHON" -c 'import json,sys
for s in json.load(sys.stdin)["volumes"][0]["snapshots"]:
    if s["name"] == sys.argv[1]: print(s["read_only"])' "$1"; }
check "timeline and number snapshots are read-only by default" test "$(ro_of tl) $(ro_of num)" = "True True"
check "a plain one is writable" test "$(ro_of plain)" = False
check "--writable and --read-only are heard" test "$(ro_of numw) $(ro_of ro)" = "False True"
expect 0 "list -o name,read_only" cv list v -o name,read_only --noheadings
expect_in out "^  v@tl +ro$" "list shows ro"

"$COWTOOL" pattern "$T/B" 4K 2
refuse "cowvol write into a read-only snapshot" \
	"snapshot v@tl is read-only \('cowvol set v@tl read-only=off' makes it writable\)" eval 'cv write v@tl <"$T/B"'
check "it is unchanged" eval "cv cat v@tl | cmp -s -n 65536 - '$T/A'"
check "a writable one takes the write" eval 'cv write v@plain <"$T/B" >/dev/null'
check "NBD: the read-only snapshot's export says so" eval "nbdinfo 'nbd+unix:///v@tl?socket=$NBD' | grep -q 'is_read_only: true'"
check "NBD: the writable one's does not" eval "nbdinfo 'nbd+unix:///v@plain?socket=$NBD' | grep -q 'is_read_only: false'"

expect 0 "set v@tl read-only=off" cv set v@tl read-only=off
expect_in out "^Snapshot v@tl is writable$" "says so"
check "now it takes the write" eval 'cv write v@tl <"$T/B" >/dev/null'
check "its export is writable" eval "nbdinfo 'nbd+unix:///v@tl?socket=$NBD' | grep -q 'is_read_only: false'"
expect 0 "set v@tl read-only=on" cv set v@tl read-only=on
refuse "and refuses writes again" "is read-only" eval 'cv write v@tl <"$T/B"'

"$PYTHON" "$RAW" "$NBD" hold v@plain "$T/release" & hp=$!
for _ in $(seq 1 100); do [ -e "$T/release.ready" ] && break; sleep 0.05; done
refuse "not under an open NBD connection" "snapshot v@plain is in use by an NBD connection" cv set v@plain read-only=on
touch "$T/release"
wait $hp

kill9_daemon
start_daemon || exit 1
check "after kill -9 they are as they were" test "$(ro_of tl) $(ro_of plain) $(ro_of numw)" = "True False False"
refuse "still refused after the restart" "is read-only" eval 'cv write v@tl <"$T/B"'
stop_daemon
check "it stops cleanly" test $? = 0
