#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# SIGHUP reads the config file again (cowvold(8), SIGNALS): the daemon goes
# on serving; a file with an error (a bad value, a group that does not
# exist) changes nothing and the log says why; a good one applies what can
# change at run time, one log line a change (here autoextend: a store that
# could not grow grows after the reload), and names what waits for the next
# start; SIGTERM still stops it with exit 0.
. "$(dirname "$0")/../lib.sh"

CONF=$T/cowvold.conf
printf 'autoextend_threshold = 100\n' >"$CONF"
start_daemon --config "$CONF" || exit 1
must "create v (8 MiB, 4 KiB chunks)" cv create v --size 8M --chunk-size 4K
must "snap v@a with a 1 MiB store, growth off" cv snap v@a --store-size 1M
store_size() { cv list v --json | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["volumes"][0]["snapshots"][0]["store_size"])'; }

head -c 300K /dev/urandom | cv write v >/dev/null
check "300 KiB written: the store stays 1 MiB (threshold 100: no growth)" test "$(store_size)" = 1048576

printf 'autoextend_threshold = many\n' >"$CONF"
hup "Reload of .*cowvold.conf failed" "a bad value"
check "a bad value: the error names the line" grep -q "cowvold.conf:1: autoextend_threshold must be a whole number" "$T/daemon.log"
printf 'group = cowvol-no-such-group\n' >"$CONF"
hup "Reload of .*cowvold.conf failed" "a group that does not exist"
check "a group that does not exist: named" grep -q "group 'cowvol-no-such-group' does not exist" "$T/daemon.log"
head -c 300K /dev/urandom | cv write v --offset 307200 >/dev/null
check "after the failed reloads growth is still off (1 MiB)" test "$(store_size)" = 1048576

printf 'autoextend_threshold = 50\nautoextend_percent = 100\nnbd_tcp = yes\n' >"$CONF"
hup "Reload: autoextend_threshold 100 -> 50" "threshold 50 %, +100 %"
check "the other change is logged too" grep -q "Reload: autoextend_percent 20 -> 100" "$T/daemon.log"
check "NBD over TCP waits for the next start, and the log says so" \
	grep -q "Reload: nbd_tcp changed in .*: it takes effect at the next start" "$T/daemon.log"
head -c 100K /dev/urandom | cv write v --offset 614400 >/dev/null
sz=$(store_size)
check "the next write grows the store past 1 MiB (now $sz bytes)" test "$sz" -gt 1048576
check "v@a still reads as before the writes" eval "cv cat v@a --length 4096 | cmp -s - <(head -c 4096 /dev/zero)"

hup "Reload: nothing that can change at run time changed" "the same file again"
check "the socket stayed where it was" test -S "$SOCK"
stop_daemon
rc=$?
check "SIGTERM still stops it with exit 0 (got $rc)" test $rc = 0
