#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# add adopts only what the caller could open itself (doc/protocol.md, "add"):
# a member of the group, who may add, lends the daemon a file by passing its
# own read-write descriptor of it; the daemon keeps that very file (device
# and inode).  A root-only file, reached directly, through a symlink or
# through "..", a read-only descriptor, a descriptor of another file, no
# descriptor at all, a kernel interface (/proc, /sys) and a character
# device are refused, and nothing changes.  The raw-protocol requests skip
# the CLI's own checks.  Root may still add what it names.  Needs root
# (groupadd, setpriv).
. "$(dirname "$0")/../lib.sh"

test_group t-adopt.sh
RAW="$PYTHON $(dirname "$0")/rawsock.py"

printf 'group = %s\n' "$GROUP" >"$T/cowvold.conf"
start_daemon --config "$T/cowvold.conf" || exit 1

# root's secret, 0600, and the member's own image, both 1 MiB
chmod 0711 "$T"
mkdir -m 0755 "$T/root"
head -c $((1024 * 1024)) /dev/urandom >"$T/root/secret.img"
chmod 0600 "$T/root/secret.img"
mkdir -m 0755 "$T/pub"
ln -s "$T/root/secret.img" "$T/pub/link.img"
mkdir -m 0777 "$T/pub/sub"
head -c $((1024 * 1024)) /dev/urandom >"$T/mine.src"
as_member cp "$T/mine.src" "$T/pub/sub/mine.img"
as_member chmod 0600 "$T/pub/sub/mine.img"
cp "$T/root/secret.img" "$T/secret.before"
state_sum() { find "$STATE" -type f ! -name lock -print0 | sort -z | xargs -0 sha256sum; }
state_sum >"$T/sum.before"

# --- through the CLI -------------------------------------------------------------
expect 1 "a member cannot add root's 0600 image" as_member "$COWVOL" add "$T/root/secret.img"
expect_in err "cannot open $T/root/secret.img for reading and writing: Permission denied" \
	"the refusal says the member cannot open it"
expect 1 "nor through a symlink to it" as_member "$COWVOL" add "$T/pub/link.img"
expect 1 "nor through .." as_member "$COWVOL" add "$T/pub/sub/../../root/secret.img"

# --- the raw protocol, skipping the CLI --------------------------------------------
raw_add() { # PATH [FILE MODE]: an add request as the member
	local path=$1
	shift
	printf '{"v":1,"id":1,"op":"add","args":{"path":"%s","name":"stolen"}}\n' "$path" |
		as_member $RAW "$SOCK" "$@"
}
refused() { # DESC PATTERN PATH [FILE MODE]
	local d=$1 pat=$2
	shift 2
	raw_add "$@" >"$T/raw" 2>&1
	if grep -q "ok=false code=EACCES" "$T/raw" && grep -q -- "$pat" "$T/raw"; then
		ok "raw add, $d: refused (EACCES)"
	else
		notok "raw add, $d: refused (EACCES) with \"$pat\""
		sed 's/^/#   /' "$T/raw" | head -3
	fi
}
refused "root's image, no descriptor" "opened by the caller" "$T/root/secret.img"
refused "root's image, with a descriptor of the member's own file" "is not $T/root/secret.img" \
	"$T/root/secret.img" "$T/pub/sub/mine.img" rw
refused "a symlink to root's image, with the member's own file" "is not $T/pub/link.img" \
	"$T/pub/link.img" "$T/pub/sub/mine.img" rw
refused "root's image through .., with the member's own file" "is not $T/pub/sub/../../root/secret.img" \
	"$T/pub/sub/../../root/secret.img" "$T/pub/sub/mine.img" rw
refused "the member's own image, passed read-only" "not open for reading and writing" \
	"$T/pub/sub/mine.img" "$T/pub/sub/mine.img" r
refused "the member's own image, no descriptor" "opened by the caller" "$T/pub/sub/mine.img"

# kernel interfaces and character devices, whoever asks
expect 1 "a member cannot add /dev/null (a character device it may open)" as_member "$COWVOL" add /dev/null
expect_in err "/dev/null is a character device" "the refusal says it is a character device"
expect 1 "root cannot add /dev/null either" cv add /dev/null
expect_in err "character device" "root is told it is a character device"
PROCFILE=/proc/sys/vm/drop_caches
expect 1 "root cannot add $PROCFILE (a kernel interface)" cv add "$PROCFILE"
expect_in err "$PROCFILE is a kernel interface" "the refusal says it is a kernel interface"
SYSFILE=$(find /sys/kernel -maxdepth 3 -type f -perm -u+w -size +0 2>/dev/null | head -1)
[ -n "$SYSFILE" ] || SYSFILE=/sys/kernel/uevent_helper
expect 1 "root cannot add $SYSFILE" cv add "$SYSFILE"
expect_in err "kernel interface" "the refusal says it is a kernel interface"

check "root's image is unchanged" cmp -s "$T/root/secret.img" "$T/secret.before"
state_sum >"$T/sum.after"
check "nothing changed in the state folder" cmp -s "$T/sum.before" "$T/sum.after"
expect 0 "list as root" cv list --json
check "no volume was added" eval "! grep -q '\"name\"' '$T/out'"

# --- what the member may add: its own file -------------------------------------------
expect 0 "a member adds its own image" as_member "$COWVOL" add "$T/pub/sub/mine.img"
expect 0 "the member reads it back" as_member "$COWVOL" cat mine
check "it is the member's file" cmp -s "$T/out" "$T/mine.src"
member_write() { head -c 4096 /dev/zero | as_member "$COWVOL" write mine --offset 0; }
expect 0 "the member writes to it" member_write
check "the write landed in the member's own file" \
	eval "cmp -s -n 4096 /dev/zero '$T/pub/sub/mine.img'"
check "root's image is still unchanged" cmp -s "$T/root/secret.img" "$T/secret.before"
# the catalogue keeps which file the member lent: swapped for root's
# behind the daemon's back, it is not served after a restart
lent() { "$PYTHON" -c 'import json, sys
for v in json.load(open(sys.argv[1]))["volumes"]:
    if v["name"] == "mine":
        print(v["lent"]["uid"], v["lent"]["ino"])' "$STATE/catalogue.json"; }
check "the catalogue keeps who lent mine, and which file ($(lent))" \
	test "$(lent)" = "65534 $(stat -c %i "$T/pub/sub/mine.img")"
stop_daemon
mv "$T/pub/sub/mine.img" "$T/pub/sub/mine.real"
ln -s "$T/root/secret.img" "$T/pub/sub/mine.img"
start_daemon --config "$T/cowvold.conf" || exit 1
expect 1 "mine, swapped for a link to root's image, is not served" as_member "$COWVOL" cat mine
check "the log says it is no longer the image the member added" \
	grep -q "Volume mine: $T/pub/sub/mine.img is no longer the image uid 65534 added" "$T/daemon.log"
stop_daemon
rm "$T/pub/sub/mine.img"
as_member cp "$T/pub/sub/mine.real" "$T/pub/sub/mine.img"
start_daemon --config "$T/cowvold.conf" || exit 1
expect 0 "a copy of its own in its place (another inode, still the member's) is served" \
	as_member "$COWVOL" cat mine --length 4096
rm -f "$T/pub/sub/mine.real"

# a descriptor lends only its own access: an O_PATH one (no permission
# needed) of root's FIFO must not make the daemon open it as root
mkfifo -m 0600 "$T/pub/rootfifo"
timeout 20 cat "$T/pub/rootfifo" >"$T/leak" &
LEAKPID=$!
printf '{"v":1,"id":1,"op":"cat","args":{"target":"mine","length":4096}}\n' |
	as_member $RAW "$SOCK" "$T/pub/rootfifo" path >"$T/raw" 2>&1
check "cat into an O_PATH descriptor of root's FIFO is refused" \
	grep -q "ok=false code=EBADF message=the descriptor passed with cat is not open for writing" "$T/raw"
printf '{"v":1,"id":1,"op":"write","args":{"target":"mine","length":4096}}\n' |
	as_member $RAW "$SOCK" "$T/pub/sub/mine.img" path >"$T/raw" 2>&1
check "write from an O_PATH descriptor is refused" \
	grep -q "ok=false code=EBADF message=the descriptor passed with write is not open for reading" "$T/raw"
printf '{"v":1,"id":1,"op":"cat","args":{"target":"mine","length":4096}}\n' |
	as_member $RAW "$SOCK" "$T/pub/sub/mine.img" r >"$T/raw" 2>&1
check "cat into a read-only descriptor is refused" \
	grep -q "ok=false code=EBADF message=the descriptor passed with cat is not open for writing" "$T/raw"
sleep 0.5
kill "$LEAKPID" 2>/dev/null
wait "$LEAKPID" 2>/dev/null
check "nothing reached root's FIFO" test ! -s "$T/leak"
expect 0 "rm the member's volume" as_member "$COWVOL" rm mine
check "rm keeps the member's file" test -s "$T/pub/sub/mine.img"

# the raw protocol with the right descriptor works as the CLI does
raw_add "$T/pub/sub/mine.img" "$T/pub/sub/mine.img" rw >"$T/raw" 2>&1
check "raw add of the member's own image with its descriptor works" grep -q "ok=true" "$T/raw"
expect 0 "rm it" cv rm stolen

# root may still add what it names, and the CLI passes its descriptor
expect 0 "root adds its own image" cv add "$T/root/secret.img"
expect 0 "root reads it" cv cat secret
check "root's volume is root's file" cmp -s "$T/out" "$T/secret.before"
expect 0 "rm root's volume" cv rm secret
printf '{"v":1,"id":1,"op":"add","args":{"path":"%s"}}\n' "$T/root/secret.img" | $RAW "$SOCK" >"$T/raw"
check "root's raw add without a descriptor still works" grep -q "ok=true" "$T/raw"
expect 0 "rm it" cv rm secret

stop_daemon
check "cowvold stopped cleanly (exit 0)" test $? = 0
