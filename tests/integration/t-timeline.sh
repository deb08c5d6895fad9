#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The daemon as snapper's timer (issue 13), under libfaketime: its wall
# clock is a file the test writes (UTC; the monotonic clock stays real).
# Two volumes on one clock, over two and a half simulated days across an
# ISO week's end: v (--hourly 5 --daily 2 --weekly 1, min-age 1h) and w
# (--daily 1 only, --min-age 90m, so min-age is what keeps its young
# snapshots).  At every step the snapshots each volume has are exactly
# those an independent model of snapper's rules leaves (timeline-oracle.py):
# a timeline snapshot at the start of every hour, none in the middle of
# one, one (not a burst) after a gap of hours, cleanup after every timeline
# snapshot and every hour.  The daemon is killed (-9) and restarted in the
# middle, with a gap and within an hour: the schedule is kept and the
# clock goes on as before.  schedule --off stops both the snapshots and
# the cleanup.  A step waits until the daemon's clock has done a round at
# its time (schedule --json's "clock"), never for a guessed while.
. "$(dirname "$0")/../lib.sh"
requires "$PYTHON" faketime
ORACLE="$PYTHON $REPO/tests/integration/timeline-oracle.py $T/oracle.json"
declare -A CLEANED=([v]= [w]=) TRIED=([v]= [w]=) ON=([v]=0 [w]=0)

epoch() { TZ=UTC date -d "$1" +%s; }
names() { # VOLUME: its snapshots' names, oldest first
	cv list "$1" --json | sed -n 's/^ *"full_name":"[^@]*@\(.*\)",$/\1/p'
}
# step TIME: move the clock to TIME, wait for its round there, and compare
# both volumes with the model (which learns what that round did)
step_to() {
	local t h vol snap clean newest
	t=$(epoch "$1")
	h=$((t / 3600))
	fake_now "$1"
	wait_clock v "$1" || exit 1
	for vol in v w; do
		snap=0 clean=0
		if [ "${ON[$vol]}" = 1 ]; then
			newest=$($ORACLE show "$vol" | tail -1)
			if [ "${TRIED[$vol]}" != "$h" ] &&
				{ [ -z "$newest" ] || [ $(($(epoch "$(echo "$newest" | sed -E 's/(....)(..)(..)T(..)(..)(..)Z/\1-\2-\3 \4:\5:\6/')") / 3600)) -lt "$h" ]; }; then
				snap=1
				TRIED[$vol]=$h
			fi
			[ "$snap" = 1 ] || [ "${CLEANED[$vol]}" != "$h" ] && clean=1
			CLEANED[$vol]=$h
		fi
		$ORACLE tick "$vol" "$t" "$snap" "$clean"
		if [ "$(names "$vol")" = "$($ORACLE show "$vol")" ]; then
			ok "$1: $vol has $(names "$vol" | wc -l) snapshots, those snapper's rules leave$([ $snap = 1 ] && echo ", a new one")"
		else
			notok "$1: $vol has the snapshots snapper's rules leave"
			diff <($ORACLE show "$vol") <(names "$vol") | sed 's/^/#   /' | head -8
		fi
	done
}
restart() { # TIME: kill -9, the clock moved to TIME, start again
	kill9_daemon
	faketime_daemon "$1" || exit 1
	CLEANED[v]= CLEANED[w]= TRIED[v]= TRIED[w]= # the clock's marks are in memory
}

T0="2027-01-02 21:30:00" # a Saturday
faketime_daemon "$T0" || exit 1
must "create v" cv create v --size 4M
must "create w" cv create w --size 4M
expect 0 "schedule v --hourly 5 --daily 2 --weekly 1 (no monthly, yearly)" \
	cv schedule v --hourly 5 --daily 2 --weekly 1 --monthly 0 --yearly 0
expect_in out "v: timeline snapshots every hour; keep hourly 5, daily 2, weekly 1, monthly 0, quarterly 0, yearly 0; number 50, important 10; min-age 1h; free-limit off" \
	"schedule says it, with snapper's defaults for what was not given"
expect 0 "schedule w --hourly 0 --daily 1 --monthly 0 --yearly 0 --min-age 90m" \
	cv schedule w --hourly 0 --daily 1 --monthly 0 --yearly 0 --min-age 90m
$ORACLE limits v 5 2 1 0 0 0 3600
$ORACLE limits w 0 1 0 0 0 0 5400
ON[v]=1 ON[w]=1
step_to "$T0" # the first round with the schedules: one snapshot each, at once

# n: no timeline, number cleanup only (--number 2): the clock cleans it
# every hour, without snapshots of its own
must "create n" cv create n --size 4M
for s in a b c d; do must "snap n@$s --cleanup number" cv snap "n@$s" --cleanup number; done
expect 0 "schedule n --hourly 0 --daily 0 --monthly 0 --yearly 0 --number 2" \
	cv schedule n --hourly 0 --daily 0 --monthly 0 --yearly 0 --number 2
expect_in out "^n: timeline snapshots off; " "schedule n says it takes no timeline snapshots"
wait_clock n "$T0" || exit 1 # its first cleanup at 21:30, all young
step_to "2027-01-02 22:00:00"
check "22:00: n keeps all four, younger than min-age (1h)" eval "[ \"\$(names n | tr '\n' ' ')\" = 'a b c d ' ]"
step_to "2027-01-02 22:40:00"
check "22:40: n still has four: the cleanup runs once an hour" eval "[ \"\$(names n | tr '\n' ' ')\" = 'a b c d ' ]"
step_to "2027-01-02 23:00:00"
check "23:00: the hour's cleanup left n the youngest two" eval "[ \"\$(names n | tr '\n' ' ')\" = 'c d ' ]"

# hour by hour, with rounds in the middle of hours that must take none
for t in "2027-01-03 00:00:00" \
	"2027-01-03 00:59:59" "2027-01-03 01:00:00" "2027-01-03 02:00:00" "2027-01-03 03:00:00" \
	"2027-01-03 04:00:00" "2027-01-03 05:00:00" "2027-01-03 05:30:00" "2027-01-03 06:00:00" \
	"2027-01-03 07:00:00" "2027-01-03 08:00:00" "2027-01-03 09:00:00" "2027-01-03 10:00:00"; do
	step_to "$t"
done
# a gap of six hours: one snapshot, no burst
step_to "2027-01-03 16:20:00"
check "after the gap: one snapshot in the six hours (16:20)" \
	eval "[ \"\$(names v | grep -c '^20270103T1[1-6]')\" = 1 ]"
# killed in the middle of an hour, started again within it: no snapshot;
# then killed, and started hours later: one
restart "2027-01-03 16:50:00"
expect 0 "after kill -9: schedule v" cv schedule v --json
expect_in out '"hourly":5,' "the restart kept v's schedule"
step_to "2027-01-03 16:50:00"
restart "2027-01-03 20:10:00"
step_to "2027-01-03 20:10:00"
for t in "2027-01-03 21:00:00" "2027-01-03 22:00:00" "2027-01-03 23:00:00" "2027-01-04 00:00:00" \
	"2027-01-04 01:00:00" "2027-01-04 02:00:00" "2027-01-04 03:00:00" "2027-01-04 04:00:00"; do
	step_to "$t"
done
check "the week's first (Monday 00:00) is kept on v" eval "names v | grep -qx 20270104T000000Z"

# --off: neither snapshots nor cleanup on v; w goes on
expect 0 "schedule v --off" cv schedule v --off
expect 0 "schedule v" cv schedule v
expect_in out "^v: no schedule$" "schedule v says it has none"
ON[v]=0
names v >"$T/v.off"
for t in "2027-01-04 05:00:00" "2027-01-04 06:00:00" "2027-01-04 09:00:00" "2027-01-06 12:00:00"; do
	step_to "$t"
done
check "v after --off: no snapshot taken, none removed" eval "names v | cmp -s - '$T/v.off'"

# Local time (TZ=Asia/Kolkata, UTC+05:30, as snapper's local hours and
# days): the clock's hours begin at :30 UTC and its days at 18:30 UTC.
# Times below are the daemon's local time; names are UTC.
stop_daemon
FAKE_TZ=Asia/Kolkata
faketime_daemon "2027-01-10 05:40:00" || exit 1
must "create x" cv create x --size 1M
expect 0 "schedule x --hourly 0 --daily 2 (local days) --min-age 0s" \
	cv schedule x --hourly 0 --daily 2 --weekly 0 --monthly 0 --yearly 0 --min-age 0s
xnames() { cv list x --json | sed -n 's/^ *"full_name":"x@\(.*\)",$/\1/p' | tr '\n' ' '; }
for _ in $(seq 600); do [ -n "$(xnames)" ] && break; sleep 0.05; done
check "05:40 IST: the first snapshot (00:10 UTC)" test "$(xnames)" = "20270110T001000Z "
fake_now "2027-01-10 05:59:59"
wait_clock x "2027-01-10 05:59:59" || exit 1
check "05:59:59 IST: none, the local hour goes on" test "$(xnames)" = "20270110T001000Z "
fake_now "2027-01-10 06:00:00"
wait_clock x "2027-01-10 06:00:00" || exit 1
check "06:00 IST (00:30 UTC, mid-hour in UTC): a new local hour, a snapshot, cleaned as not first of its day" \
	test "$(xnames)" = "20270110T001000Z "
grep -q "removes snapshot x@20270110T003000Z" "$T/daemon.log" && ok "the log has the 00:30 UTC snapshot taken and removed" ||
	notok "the log has the 00:30 UTC snapshot taken and removed"
fake_now "2027-01-10 23:30:00"
wait_clock x "2027-01-10 23:30:00" || exit 1
check "23:30 IST (18:00 UTC): still the day's first alone" test "$(xnames)" = "20270110T001000Z "
fake_now "2027-01-11 00:00:00"
wait_clock x "2027-01-11 00:00:00" || exit 1
check "00:00 IST (18:30 UTC, the same UTC day): a new local day, its first kept beside the day before's" \
	test "$(xnames)" = "20270110T001000Z 20270110T183000Z "
