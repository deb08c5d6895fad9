#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# schedule --free-limit (issue 13, snapper's FREE_LIMIT): the state folder
# on a 32 MiB tmpfs; five number snapshots, each with 3 MiB copied into
# it, all within --number 10.  Once the free space is under the limit the
# cleanup removes them oldest first, each removal logged with the free
# space it found under the limit, until the free space is back above it;
# without a free limit (before) nothing goes.  The change of the schedule
# wakes the clock, which runs the cleanup.  Needs root (mount).
. "$(dirname "$0")/../lib.sh"
FD=$T/fd
mkdir -p "$FD"
mount -t tmpfs -o size=32M,mode=0755 tmpfs "$FD"
mountpoint -q "$FD" || { notok "a 32 MiB tmpfs for the state folder"; exit 1; }
ok "a 32 MiB tmpfs for the state folder"
on_exit 'kill9_daemon; ! mountpoint -q "$FD" || umount "$FD"'
STATE=$FD/state
start_daemon || exit 1

free_pct() { stat -f -c '%a %b' "$FD" | awk '{ print int($1 * 100 / $2) }'; }
names() { cv list v --json | sed -n 's/^ *"full_name":"[^@]*@\(.*\)",$/\1/p' | tr '\n' ' '; }

must "create v (4 MiB)" cv create v --size 4M
must "fill v" sh -c "head -c 4M /dev/urandom | $COWVOL write v"
expect 0 "schedule v: --number 10, no timeline, --min-age 0s, no free limit" \
	cv schedule v --hourly 0 --daily 0 --monthly 0 --yearly 0 --number 10 --min-age 0s
for i in 1 2 3 4 5; do
	must "snap v@n$i --cleanup number" cv snap "v@n$i" --cleanup number --store-size 4M
	must "3 MiB written after n$i" sh -c "head -c 3M /dev/urandom | $COWVOL write v --offset $((i % 2 * 1048576))"
done
expect 0 "cleanup without a free limit" cv cleanup v
check "nothing went: five within --number 10" test "$(names)" = "n1 n2 n3 n4 n5 "
LIMIT=$(($(free_pct) + 15))
check "the free space ($(free_pct) %) is under the limit we set ($LIMIT %)" test "$(free_pct)" -lt "$LIMIT"
expect 0 "schedule v --free-limit $LIMIT" cv schedule v --free-limit "$LIMIT"
expect_in out "free-limit $LIMIT%" "schedule shows the free limit"
# the clock runs the cleanup at once on a schedule's change: wait for it
for _ in $(seq 600); do [ "$(free_pct)" -ge "$LIMIT" ] && break; sleep 0.05; done
expect 0 "cleanup v afterwards" cv cleanup v
expect_in out "^Nothing to remove from v\.$" "the clock's cleanup left nothing for cowvol cleanup"
LEFT=$(names)
echo "# left: $LEFT; free $(free_pct) %"
check "the free space is back at or above the limit ($(free_pct) % >= $LIMIT %)" test "$(free_pct)" -ge "$LIMIT"
check "some went, oldest first: what is left is the youngest ones" \
	eval "case '$LEFT' in 'n2 n3 n4 n5 '|'n3 n4 n5 '|'n4 n5 '|'n5 '|'') true ;; *) false ;; esac && [ '$LEFT' != 'n1 n2 n3 n4 n5 ' ]"
check "each removal found the free space under the limit, and says so" eval \
	"grep 'the free limit ($LIMIT %)' '$T/daemon.log' | grep -q 'v@n1' &&
	 ! grep 'the free limit ($LIMIT %)' '$T/daemon.log' | grep -qv 'Cleanup ([^)]*) removes snapshot v@n[0-9], number [0-9]: the free space of .* ([0-9]* %) is under the free limit'"
GONE=$(grep -c "the free limit ($LIMIT %)" "$T/daemon.log")
check "no more went than needed: $GONE removal(s), and with one fewer the space would be short" \
	test "$GONE" = $((5 - $(echo "$LEFT" | wc -w)))
for l in $(grep -o "removes snapshot v@n[0-9], number [0-9]: the free space of [^(]*([0-9]* %)" "$T/daemon.log" | sed 's/.*(\([0-9]*\) %)/\1/'); do
	check "a removal found $l % free, under $LIMIT %" test "$l" -lt "$LIMIT"
done
