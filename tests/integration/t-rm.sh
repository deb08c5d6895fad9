#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol rm as lvremove: several targets, each checked first (all or
# nothing); --older-than DURATION for a volume's snapshots, oldest first; a
# volume whose image rm deletes and that holds data needs a yes: on a
# terminal rm asks (a "y" goes on, anything else keeps it), elsewhere it
# needs --yes; an image added where it was, or holding nothing, goes
# without asking.  Every refusal changes nothing.
. "$(dirname "$0")/../lib.sh"
requires script "$PYTHON"

start_daemon || exit 1
cv create a --size 1M >/dev/null
cv create b --size 1M >/dev/null
cv create empty --size 1M >/dev/null
"$COWTOOL" pattern "$T/A" 64K 1
cv write a <"$T/A"
cv write b <"$T/A"
cv snap a@s1 >/dev/null
cv snap a@s2 >/dev/null
cv snap b@t >/dev/null
snapshots() { cv list a --json | "$PYTHON" -c 'import json,sys
print(" ".join(s["name"] for s in json.load(sys.stdin)["volumes"][0]["snapshots"]))'; }

# --- several targets: all or nothing --------------------------------------------------
cp "$STATE/catalogue.json" "$T/cat.before"
refuse "a missing one among several: nothing removed" "volume 'a' has no snapshot named 'nosuch'" \
	cv rm a@s1 b@t a@nosuch
refuse "one named twice: nothing removed" "a@s1 is named twice" cv rm a@s1 a@s1
refuse "a volume with its own snapshot: nothing removed" "a@s1 is named twice \(or with its volume\)" \
	cv rm a --recursive a@s1 --yes
check "the catalogue is unchanged" cmp -s "$T/cat.before" "$STATE/catalogue.json"
expect 0 "rm a@s1 b@t" cv rm a@s1 b@t
expect_in out "^Removed a@s1$" "says a@s1 went"
expect_in out "^Removed b@t$" "and b@t"
check "a has s2 left" test "$(snapshots)" = "s2"

# --- a volume that holds data ------------------------------------------------------------
cp "$STATE/catalogue.json" "$T/cat.before"
refuse "rm of a volume that holds data, no terminal, no --yes: refused" \
	"volume 'b' holds data \(64.0 KiB in its image .*/volumes/b.img, which rm deletes\): removing it needs --yes" \
	cv rm b
check "the catalogue is unchanged" cmp -s "$T/cat.before" "$STATE/catalogue.json"
check "list --json says what rm would delete" eval "cv list b --json | grep -q '\"rm_deletes\": *65536'"
# a terminal: script(1) gives rm one; "n" keeps the volume, "y" removes it
echo n | script -qec "$COWVOL rm b" /dev/null >"$T/tty" 2>&1
check "on a terminal rm asks" grep -q "Do you really want to remove volume b? Its image .*/b.img holds 64.0 KiB of data, and goes with it. \[y/n\]" "$T/tty"
check "'n' keeps it" eval "cv list b >/dev/null 2>&1"
echo y | script -qec "$COWVOL rm b" /dev/null >"$T/tty" 2>&1
check "'y' removes it" eval "! cv list b >/dev/null 2>&1"
expect 0 "a volume of holes only goes without asking" cv rm empty
head -c 65536 /dev/urandom >"$T/added.img"
cv add "$T/added.img" >/dev/null
expect 0 "an image added where it was goes without asking (rm keeps it)" cv rm added
check "and it is still there" test -s "$T/added.img"

# --- --older-than ------------------------------------------------------------------------
# snapshots taken 3 days, 2 days and 1 hour ago (the daemon's clock, faked)
stop_daemon
faketime_daemon "$(date -u -d '3 days ago' '+%Y-%m-%d %H:%M:%S')" || exit 1
cv snap a@3days >/dev/null
fake_now "$(date -u -d '2 days ago' '+%Y-%m-%d %H:%M:%S')"
cv snap a@2days >/dev/null
fake_now "$(date -u -d '1 hour ago' '+%Y-%m-%d %H:%M:%S')"
cv snap a@1hour >/dev/null
stop_daemon
start_daemon || exit 1
check "a has s2 (now) and three older snapshots" test "$(snapshots)" = "s2 3days 2days 1hour"
refuse "--older-than with two volumes" "--older-than takes one VOLUME" cv rm a b --older-than 1d
refuse "--older-than without a unit" "--older-than '5' is not a duration" cv rm a --older-than 5
expect 0 "rm a --older-than 1d" cv rm a --older-than 1d
check "the two older than a day went, oldest first" test "$(grep -c '^Removed' "$T/out")" = 2
check "in that order" eval "[ \"\$(sed -n 1p '$T/out')\" = 'Removed a@3days' ] && [ \"\$(sed -n 2p '$T/out')\" = 'Removed a@2days' ]"
check "s2 and 1hour stay" test "$(snapshots)" = "s2 1hour"
expect 0 "rm a --older-than 1w: none that old" cv rm a --older-than 1w
expect_in out "^No snapshot of a is older than 1w$" "says so"
cv cat a >"$T/out"
check "a still reads as written" cmp -s -n 65536 "$T/out" "$T/A"
stop_daemon
check "it stops cleanly" test $? = 0
