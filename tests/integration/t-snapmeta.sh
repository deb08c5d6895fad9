#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What a snapshot says it is (issue 13, as snapper's create options): its
# number (its volume's, from 1, never reused, even after the highest goes
# and across restarts), cleanup class, type (a post with its pre's number),
# description and userdata; list and list --json show them, a restart keeps
# them; a catalogue of before these fields loads unchanged, its snapshots
# numbered in the order they were taken.
. "$(dirname "$0")/../lib.sh"
requires "$PYTHON" faketime
start_daemon || exit 1

field() { # TARGET KEY: the snapshot's KEY in list --json, as JSON
	cv list --json | "$PYTHON" -c '
import json, sys
vol, snap = sys.argv[1].split("@")
for v in json.load(sys.stdin)["volumes"]:
    for s in v["snapshots"]:
        if v["name"] == vol and s["name"] == snap:
            print(json.dumps(s.get(sys.argv[2]), sort_keys=True))' "$1" "$2"
}

must "create v" cv create v --size 4M
expect 0 "snap v@a (no options)" cv snap v@a
expect_in out "Created snapshot v@a \(store .*\), number 1$" "snap says the number, 1 for the first"
expect 0 "snap a pre snapshot with a description and the number class" \
	cv snap v@pre1 --pre --cleanup number --description "before: apt upgrade"
expect_in out "number 2$" "the pre is number 2"
expect 0 "snap its post (--post NUMBER), with userdata" \
	cv snap v@post1 --post 2 --cleanup number --userdata important=yes,by=apt
expect 0 "snap a timeline one" cv snap v@t --cleanup timeline
check "a: number 1, single, cleanup none, no description, no userdata" \
	test "$(field v@a number) $(field v@a type) $(field v@a cleanup) $(field v@a description) $(field v@a userdata)" = \
	'1 "single" "none" null {}'
check "pre1: number 2, pre, cleanup number, the description" \
	test "$(field v@pre1 number) $(field v@pre1 type) $(field v@pre1 cleanup) $(field v@pre1 description)" = \
	'2 "pre" "number" "before: apt upgrade"'
check "post1: number 3, post of 2, its userdata" \
	test "$(field v@post1 number) $(field v@post1 type) $(field v@post1 pre) $(field v@post1 userdata)" = \
	'3 "post" 2 {"by": "apt", "important": "yes"}'
check "t: cleanup timeline" test "$(field v@t cleanup)" = '"timeline"'
expect 0 "list" cv list
check "list's header has #, TYPE, CLEANUP, DESCRIPTION, USERDATA" grep -qE 'CREATED +# +TYPE +CLEANUP +DESCRIPTION +USERDATA$' "$T/out"
check "list shows the post with its pre and userdata" grep -qE '^  v@post1 .* 3  post of 2 +number +important=yes,by=apt$|^  v@post1 .* 3  post of 2 +number +by=apt,important=yes$' "$T/out"
check "list shows the pre's description" grep -qE '^  v@pre1 .* 2  pre +number +before: apt upgrade$' "$T/out"

# numbers are never reused: the highest removed, the next is still higher
expect 0 "rm v@t (number 4, the highest)" cv rm v@t
expect 0 "snap v@u" cv snap v@u
check "v@u is number 5, not 4" test "$(field v@u number)" = 5
stop_daemon
start_daemon || exit 1
check "after a restart every field is as it was" \
	test "$(field v@post1 number) $(field v@post1 type) $(field v@post1 pre) $(field v@post1 userdata) $(field v@pre1 description)" = \
	'3 "post" 2 {"by": "apt", "important": "yes"} "before: apt upgrade"'
expect 0 "snap v@w after the restart" cv snap v@w
check "v@w is number 6: the next number survives the restart" test "$(field v@w number)" = 6

# a catalogue written before numbers: the fields stripped, the start
# numbers the snapshots in the file's order (the order they were taken)
stop_daemon
"$PYTHON" - "$STATE/catalogue.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for v in c["volumes"]:
    v.pop("next_number")
    for s in v["snapshots"]:
        for k in ("number", "cleanup", "type", "pre", "description", "userdata"):
            s.pop(k, None)
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
check "the old catalogue has no number left" eval "! grep -q number '$STATE/catalogue.json'"
start_daemon || exit 1
check "an old catalogue opens: a u w numbered 1 2 3 ... in order" \
	test "$(field v@a number) $(field v@pre1 number) $(field v@post1 number) $(field v@u number) $(field v@w number)" = "1 2 3 4 5"
check "its snapshots are single, cleanup none" test "$(field v@post1 type) $(field v@post1 cleanup)" = '"single" "none"'
expect 0 "snap after the old catalogue" cv snap v@x
check "the next is 6" test "$(field v@x number)" = 6

# snapshots without a name in one second (the clock frozen by libfaketime):
# the time, then the time and ".N", N its number; none refused
stop_daemon
faketime_daemon "2027-05-01 12:00:00" || exit 1
for i in 1 2 3; do expect 0 "snap v without a name ($i) in one second" cv snap v; done
check "named after the time, then with their numbers: 20270501T120000Z, .8, .9" \
	eval "[ \"\$(cv list v --json | sed -n 's/^ *\"full_name\":\"v@\(2027.*\)\",$/\1/p' | tr '\n' ' ')\" = '20270501T120000Z 20270501T120000Z.8 20270501T120000Z.9 ' ]"
