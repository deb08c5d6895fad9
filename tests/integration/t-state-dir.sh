#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The state folder belongs to one daemon: a second cowvold on it (another
# socket, or the same one) exits at once with one line naming the holder's
# PID, and changes nothing: no socket of its own, the first one's socket
# still answering, the catalogue and every file under the folder as they
# were.  The lock goes with its holder: after kill -9 a new daemon starts.
# --socket and --nbd-socket never remove a file that is not a socket.  A
# catalogue that parses but is wrong (null, missing, another type) stops the
# start with an error naming the place, before the sweep of strays: every
# store and image stays.
. "$(dirname "$0")/../lib.sh"

start_daemon || exit 1
must "create v" cv create v --size 1M
must "snap v@s" cv snap v@s
# every file under the state folder but the lock, which each start that
# takes it rewrites with its PID
files() { (cd "$STATE" && find . -type f ! -path ./lock -print0 | sort -z | xargs -0 md5sum && find . | sort); }
files >"$T/files.before"
cv list --json >"$T/list.before"

second() { # NAME SOCKET: a second cowvold on $STATE; its exit code
	timeout 20 "$COWVOLD" --state-dir "$STATE" --socket "$2" --nbd-socket "$T/$1-nbd.sock" \
		>"$T/$1.out" 2>"$T/$1.err" </dev/null
}
for how in other same; do
	if [ $how = other ]; then sock=$T/second.sock; else sock=$SOCK; fi
	second $how "$sock"
	rc=$?
	check "$how socket: a second cowvold on the state folder exits 1 at once (got $rc)" test $rc = 1
	check "$how socket: one line, naming the holder's PID $DAEMON_PID" eval \
		"[ \$(wc -l <'$T/$how.err') = 1 ] && grep -q 'state folder .* is in use by cowvold (PID $DAEMON_PID)' '$T/$how.err'"
	sed 's/^/#   /' "$T/$how.err"
	check "$how socket: it made no NBD socket" test ! -e "$T/$how-nbd.sock"
	check "$how socket: every file under the state folder as it was" eval "files | cmp -s - '$T/files.before'"
	check "$how socket: the first daemon still answers, its list unchanged" eval \
		"cv list --json | cmp -s - '$T/list.before'"
done
check "no socket was made for the second daemon" test ! -e "$T/second.sock"

# --- sockets: a path that is not a socket is left alone ----------------------------
echo keep >"$T/notasock"
cp "$T/notasock" "$T/notasock.nbd"
timeout 20 "$COWVOLD" --state-dir "$T/st2" --socket "$T/notasock" --nbd-socket "$T/n2.sock" \
	>"$T/ns.out" 2>"$T/ns.err" </dev/null
rc=$?
check "--socket naming a regular file: cowvold exits 1 (got $rc)" test $rc = 1
check "and says it is not a socket" grep -q "notasock exists and is not a socket" "$T/ns.err"
check "the file is still there, unchanged" eval "echo keep | cmp -s - '$T/notasock'"
"$COWVOLD" --state-dir "$T/st2" --socket "$T/s2.sock" --nbd-socket "$T/notasock.nbd" >"$T/ns2.log" 2>&1 </dev/null &
p2=$!
for _ in $(seq 200); do cv --socket "$T/s2.sock" status >/dev/null 2>&1 && break; sleep 0.05; done
check "--nbd-socket naming a regular file: the control socket is served" eval "cv --socket '$T/s2.sock' status >/dev/null"
check "the log says why NBD is off" grep -q "notasock.nbd exists and is not a socket" "$T/ns2.log"
kill -TERM $p2
wait $p2
rc=$?
check "that daemon stops cleanly (exit $rc)" test $rc = 0
check "the file named by --nbd-socket is still there, unchanged" eval "echo keep | cmp -s - '$T/notasock.nbd'"

# --- a catalogue that parses but is wrong ---------------------------------------------
stop_daemon
cp "$STATE/catalogue.json" "$T/cat.good"
files >"$T/files.good"
# each variant: FILE<TAB>what the error must say
"$PYTHON" - "$T/cat.good" "$T" >"$T/variants" <<'PY'
import json, sys
good, t = sys.argv[1], sys.argv[2]
def variant(name, change, says):
    c = json.load(open(good))
    change(c)
    path = f"{t}/cat-{name}.json"
    json.dump(c, open(path, "w"))
    print(f"{path}\t{says}")
v = lambda c: c["volumes"][0]
variant("snapshots-null", lambda c: v(c).update(snapshots=None), 'volume 1 \\(v\\): "snapshots" is null')
variant("snapshots-missing", lambda c: v(c).pop("snapshots"), '"snapshots" is missing')
variant("volumes-missing", lambda c: c.pop("volumes"), 'the top: "volumes" is missing')
variant("volumes-object", lambda c: c.update(volumes={}), '"volumes" is object, want array')
variant("size-text", lambda c: v(c).update(size="1M"), '"size" is string, want int')
variant("owned-number", lambda c: v(c).update(owned=1), '"owned" is int, want boolean')
variant("snapshot-list", lambda c: v(c).update(snapshots=[[]]), 'volume v, snapshot 1 is array, want object')
variant("store-null", lambda c: v(c)["snapshots"][0].update(store=None), 'snapshot 1 \\(s\\): "store" is null')
variant("restore-text", lambda c: v(c).update(restore="s"), '"restore" is string, want object')
variant("lent-text", lambda c: v(c).update(lent="nobody"), '"lent" is string, want object')
variant("lent-root", lambda c: v(c).update(lent={"uid": 0, "dev": 1, "ino": 2}), 'volume 1 \\(v\\), lent: "uid" is not a user other than root')
variant("lent-no-ino", lambda c: v(c).update(lent={"uid": 1000, "dev": 1}), 'lent: "ino" is missing')
variant("chain-text", lambda c: v(c).update(chain="yes"), 'volume 1 \\(v\\): "chain" is string, want boolean')
variant("flattened-number", lambda c: v(c).update(restore={"snapshot": "s", "keep": False, "flattened": 1}),
        'volume 1 \\(v\\), restore: "flattened" is int, want boolean')
variant("mode-unknown", lambda c: v(c).update(restore={"snapshot": "s", "keep": False, "mode": "sideways"}),
        'volume 1 \\(v\\), restore: "mode" is neither "chain" nor "consume"')
variant("snap-size-big", lambda c: v(c)["snapshots"][0].update(size=v(c)["size"] + 512),
        'volume v, snapshot 1 \\(s\\): "size" is not from 1 byte to the volume.s size')
# what a snapshot says it is, the volume's next number and schedule (issue 13)
sn = lambda c: v(c)["snapshots"][0]
def dup(c):
    t = dict(sn(c)); t["name"] = "s2"; t["uuid"] = "0" * 8 + t["uuid"][8:]; v(c)["snapshots"].append(t)
variant("number-zero", lambda c: sn(c).update(number=0), 'snapshot 1 \\(s\\): "number" is out of range')
variant("number-text", lambda c: sn(c).update(number="1"), '"number" is string, want int')
variant("number-twice", dup, 'snapshot 2 \\(s2\\): "number" is another snapshot')
variant("cleanup-bad", lambda c: sn(c).update(cleanup="weekly"), '"cleanup" is not none, number or timeline')
variant("type-bad", lambda c: sn(c).update(type="middle"), '"type" is not single, pre or post')
variant("post-no-pre", lambda c: sn(c).update(type="post"), '"pre" is missing for a post snapshot')
variant("pre-on-single", lambda c: sn(c).update(pre=1), '"pre" is given for a snapshot that is not a post')
variant("description-control", lambda c: sn(c).update(description="a\x1bb"), '"description" it contains the control character 0x1b')
variant("description-long", lambda c: sn(c).update(description="d" * 1025), '"description" it is 1025 bytes long')
variant("userdata-text", lambda c: sn(c).update(userdata="important=yes"), '"userdata" is string, want object')
variant("userdata-number", lambda c: sn(c).update(userdata={"important": 1}), '"userdata" has a value that is not a string')
variant("userdata-key-comma", lambda c: sn(c).update(userdata={"a,b": "c"}), '"userdata" has a key with .=. or .,.')
variant("userdata-key-empty", lambda c: sn(c).update(userdata={"": "c"}), '"userdata" key 1 must be 1 to 64')
variant("next-number-low", lambda c: v(c).update(next_number=1), '"next_number" is not above every snapshot')
variant("schedule-text", lambda c: v(c).update(schedule="hourly"), '"schedule" is string, want object')
variant("schedule-negative", lambda c: v(c).update(schedule={"hourly": -1}), 'schedule: "hourly" is out of range')
variant("schedule-min-age-text", lambda c: v(c).update(schedule={"min_age": "1h"}), 'schedule: "min_age" is string, want int')
variant("schedule-free-limit-100", lambda c: v(c).update(schedule={"free_limit": 100}), 'schedule: "free_limit" is out of range')
PY
while IFS=$'\t' read -r f says; do
	id=${f##*/cat-}
	id=${id%.json}
	cp "$f" "$STATE/catalogue.json"
	timeout 20 "$COWVOLD" --state-dir "$STATE" --socket "$SOCK" >"$T/bad.out" 2>&1 </dev/null
	rc=$?
	check "catalogue $id: the start is refused (exit 1, got $rc)" test $rc = 1
	check "catalogue $id: the error names the place (/$says/)" grep -qE -- "$says" "$T/bad.out"
	grep -a Catalogue "$T/bad.out" | head -1 | sed 's/^/#   /'
	cp "$T/cat.good" "$STATE/catalogue.json"
	check "catalogue $id: every store and image stays, nothing else changed" eval "files | cmp -s - '$T/files.good'"
done <"$T/variants"
check "34 variants were tried" test "$(wc -l <"$T/variants")" = 34
start_daemon || exit 1
check "the good catalogue back: v@s is served" eval "cv list v | grep -q 'v@s'"

kill9_daemon
start_daemon || exit 1
check "after kill -9 the lock is gone with its holder: a new daemon starts and lists v@s" eval \
	"cv list v | grep -q 'v@s'"
stop_daemon
check "it stops cleanly (exit 0)" test $? = 0
