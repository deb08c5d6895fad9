#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol cleanup (issue 13): snapper's rules carried out now, through the
# path of cowvol rm.  Ages come from libfaketime (the daemon's wall clock is
# a file the test writes), so min-age is exact; the schedule's clock has
# cleaned at 10:00 and does not again before 11:00, so what goes here is
# what cowvol cleanup removes.  Checked: --dry-run says what would go and
# removes nothing; the number rules (the youngest 2, the youngest 1
# important), min-age, empty pre/post pairs (no chunk changed between them)
# go while a pair with a change stays; a snapshot being read (a cat in
# progress) stays as busy and goes once the read ends; every removal is in
# the log with its reason; what is left reads as before.
. "$(dirname "$0")/../lib.sh"
requires "$PYTHON" faketime

names() { cv list v --json | sed -n 's/^ *"full_name":"[^@]*@\(.*\)",$/\1/p' | tr '\n' ' '; }
why() { # SNAP: its decision in cleanup --dry-run --json
	cv cleanup v --dry-run --json | "$PYTHON" -c '
import json, sys
for s in json.load(sys.stdin)["snapshots"]:
    if s["name"] == sys.argv[1]:
        print(s["why"])' "$1"
}

faketime_daemon "2027-03-10 10:00:00" || exit 1
must "create v" cv create v --size 4M
must "write v" sh -c "head -c 1M /dev/urandom | $COWVOL write v"
for s in n1 n2 n3; do
	must "snap v@$s --cleanup number" cv snap "v@$s" --cleanup number $([ $s = n2 ] && echo --userdata important=yes)
done
must "snap v@p1 --pre" cv snap v@p1 --pre
must "snap v@q1 --post p1 (nothing written between)" cv snap v@q1 --post p1
must "snap v@p2 --pre" cv snap v@p2 --pre
must "write 4 KiB into v" sh -c "head -c 4096 /dev/urandom | $COWVOL write v --offset 8192"
must "snap v@q2 --post 8 (p2's number; a chunk changed between)" cv snap v@q2 --post "$(cv list v --json | "$PYTHON" -c 'import json,sys
print([s["number"] for s in json.load(sys.stdin)["volumes"][0]["snapshots"] if s["name"] == "p2"][0])')"
must "snap v@s (no cleanup class)" cv snap v@s
expect 0 "schedule v: no timeline, --number 2 --number-important 1 --min-age 30m" \
	cv schedule v --hourly 0 --daily 0 --monthly 0 --yearly 0 --number 2 --number-important 1 --min-age 30m
wait_clock v "2027-03-10 10:00:00" || exit 1 # its cleanup at 10:00, all young
fake_now "2027-03-10 10:30:00"
wait_clock v "2027-03-10 10:30:00" || exit 1
for s in n4 n5 n6; do must "snap v@$s --cleanup number (10:30)" cv snap "v@$s" --cleanup number; done
fake_now "2027-03-10 10:50:00"
wait_clock v "2027-03-10 10:50:00" || exit 1
BEFORE="n1 n2 n3 p1 q1 p2 q2 s n4 n5 n6 "
check "at 10:50 nothing was cleaned by the clock yet (it cleaned at 10:00)" test "$(names)" = "$BEFORE"
for s in $BEFORE; do cv cat "v@$s" >"$T/$s.before"; done

expect 0 "cleanup --dry-run" cv cleanup v --dry-run
cp "$T/out" "$T/dry"
check "--dry-run names what would go, and only that" test "$(grep -c '^Would remove' "$T/dry")" = 4
for s in n1 n3 p1 q1; do expect_in out "^Would remove v@$s " "--dry-run: $s would go"; done
expect_in out "^Would remove v@n1 \(number 1\): number, beyond the limits" "--dry-run says why n1 goes"
expect_in out "^Would remove v@p1 \(number 4\): empty pre/post pair$" "--dry-run says why p1 goes"
check "--dry-run removed nothing" test "$(names)" = "$BEFORE"
check "n2 stays: the youngest important one" eval "why n2 | grep -q '^kept: number, one of the youngest important (1 of 1)'"
check "n6, n5 stay: the youngest two" eval "why n6 | grep -q '^kept: number, one of the youngest (1 of 2)' && why n5 | grep -q '(2 of 2)'"
check "n4 stays: beyond the limit, but younger than min-age (30m)" eval "why n4 | grep -qx 'kept: younger than min-age'"
check "p2 and q2 stay: a chunk changed between them" eval "why p2 | grep -q '^kept: no cleanup class' && why q2 | grep -q '^kept: no cleanup class'"

# a cat of n1 that nobody reads: the daemon holds n1 while it waits
mkfifo "$T/fifo"
exec 3<>"$T/fifo"
"$COWVOL" cat v@n1 >"$T/fifo" 2>/dev/null &
CAT=$!
on_exit "kill $CAT 2>/dev/null"
for _ in $(seq 600); do why n1 | grep -q 'kept: busy' && break; sleep 0.05; done
check "while a cat reads n1, cleanup says it is busy" eval "why n1 | grep -qx 'kept: busy'"
expect 0 "cleanup" cv cleanup v
expect_in out "^Removed v@n3 \(number 3\): number, beyond the limits" "cleanup says it removed n3, and why"
expect_in out "^3 snapshots removed\.$" "cleanup counts three"
check "n1 (busy) stays; n3, p1, q1 are gone" test "$(names)" = "n1 n2 p2 q2 s n4 n5 n6 "
kill "$CAT"
exec 3<&-
wait "$CAT" 2>/dev/null
expect 0 "cleanup once the cat is gone" cv cleanup v
expect_in out "^Removed v@n1 \(number 1\)" "n1 goes now"
check "what the rules leave" test "$(names)" = "n2 p2 q2 s n4 n5 n6 "
for s in n2 p2 q2 s n4 n5 n6; do
	cv cat "v@$s" >"$T/$s.after"
	check "v@$s reads as before the cleanup" cmp -s "$T/$s.before" "$T/$s.after"
done
check "the log has each removal with its reason" eval \
	"grep -q 'Cleanup (cowvol cleanup, pid [0-9]*) removes snapshot v@p1, number 4: removed: empty pre/post pair' '$T/daemon.log' &&
	 grep -q 'Cleanup (cowvol cleanup, pid [0-9]*) removes snapshot v@n1, number 1: removed: number, beyond the limits' '$T/daemon.log'"
check "the log has no removal by the dry run" eval "! grep -q 'Cleanup (cowvol cleanup --dry-run' '$T/daemon.log'"
expect 0 "cleanup again: nothing" cv cleanup v
expect_in out "^Nothing to remove from v\.$" "a second cleanup has nothing to remove"

# an NBD connection to n4 (what map is too): at 12:00 the clock's hourly
# cleanup would remove it (old enough now, beyond --number 2); busy, it
# stays until the connection ends
"$PYTHON" "$REPO/tests/integration/nbd-stall.py" "$T/nbd.sock" 1 --go v@n4 >"$T/stall.out" 2>&1 &
STALL=$!
on_exit "kill $STALL 2>/dev/null"
for _ in $(seq 600); do grep -q "^connected 1 alive 1" "$T/stall.out" && break; sleep 0.05; done
check "an NBD client holds v@n4" grep -q "^connected 1 alive 1" "$T/stall.out"
fake_now "2027-03-10 12:00:00"
wait_clock v "2027-03-10 12:00:00" || exit 1
check "12:00, the clock's cleanup: n4 stays, busy (its NBD connection)" test "$(names)" = "n2 p2 q2 s n4 n5 n6 "
check "cleanup --dry-run says n4 is busy" eval "why n4 | grep -qx 'kept: busy'"
kill "$STALL"
wait "$STALL" 2>/dev/null
for _ in $(seq 600); do why n4 | grep -q 'kept: busy' || break; sleep 0.05; done
expect 0 "cleanup once the NBD client is gone" cv cleanup v
expect_in out "^Removed v@n4 \(number 9\): number, beyond the limits" "n4 goes now"
