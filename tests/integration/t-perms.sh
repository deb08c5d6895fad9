#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Who may do what (doc/protocol.md, "Who may do what"): the socket is 0660,
# group = the configured group; someone outside it cannot even connect and is
# told why; once the socket is opened to all (0666) they get `status` and a
# clear "permission denied" for every other operation, which changes nothing;
# members of the configured group (as a supplementary or as the primary
# group) may list, snap, cat and write like root.  Needs root (groupadd,
# setpriv).
. "$(dirname "$0")/../lib.sh"

test_group t-perms.sh
check "setpriv is installed (util-linux)" eval "command -v setpriv >/dev/null"

# nobody, outside the group; and nobody with the group
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
as_primary() { setpriv --reuid=nobody --regid="$GID" --clear-groups "$@"; }

printf '# who may use volumes besides root\ngroup = %s\n' "$GROUP" >"$T/cowvold.conf"
start_daemon --config "$T/cowvold.conf" || exit 1

# a volume with data and a snapshot, made by root
head -c $((1024 * 1024)) /dev/urandom >"$T/data"
cv create v1 --size 1M >/dev/null
cv write v1 <"$T/data" >/dev/null
cv snap v1@s1 >/dev/null
head -c 4096 /dev/urandom >"$T/other"
cv write v1 --offset 0 <"$T/other" >/dev/null
cv cat v1 >"$T/v1.root"
cv cat v1@s1 >"$T/s1.root"
check "setup: v1 and v1@s1 read back as written" \
	eval "cmp -s -n 4096 '$T/v1.root' '$T/other' && cmp -s '$T/s1.root' '$T/data'"

# --- the socket ------------------------------------------------------------------
check "socket mode is 0660 (is $(stat -c %a "$SOCK"))" test "$(stat -c %a "$SOCK")" = 660
check "socket group is $GROUP (is $(stat -c %G "$SOCK"))" test "$(stat -c %G "$SOCK")" = "$GROUP"
check "socket owner is root" test "$(stat -c %U "$SOCK")" = root
check "state folder is private to root (0700)" test "$(stat -c %a:%U "$STATE")" = 700:root
check "nobody cannot read an image behind the daemon's back" \
	eval "! as_nobody cat '$STATE/volumes/v1.img' >/dev/null 2>&1"

expect 1 "nobody (not in $GROUP) cannot connect: exit 1" as_nobody "$COWVOL" status
expect_in err "permission denied" "the refusal says permission denied"
expect_in err "$SOCK" "the refusal names the socket"
# the CLI cannot know the daemon's config, but it can see the socket's group
expect_in err "$GROUP" "the refusal names the group that may connect ($GROUP, the socket's group)"

# --- status only, for anyone who can connect --------------------------------------
chmod 0666 "$SOCK"
cv list --json >"$T/list.before"
cp "$STATE/catalogue.json" "$T/catalogue.before"
state_sum() { find "$STATE" -type f -print0 | sort -z | xargs -0 sha256sum; }
state_sum >"$T/sum.before"

expect 0 "nobody may run status once the socket is 0666" as_nobody "$COWVOL" status
expect_in out "^cowvold .*protocol 1" "status answers nobody"
expect 0 "nobody may run status --json" as_nobody "$COWVOL" status --json
expect_in out '"volumes": *1' "status --json shows the count of volumes to nobody"
check "but not where things are (the state folder, the sockets, the free space)" \
	eval "! grep -qE 'state_dir|socket|state_fs|stores_bytes|nbd_tls' '$T/out'"

# each operation but status: exit 1, "permission denied", names the group
nobody_write() { as_nobody "$COWVOL" write v1 --offset 0 <"$T/data"; }
nobody_write_stdin_pipe() { head -c 4096 /dev/zero | as_nobody "$COWVOL" write v1@s1; }
denied() { # DESC CMD...
	local d=$1
	shift
	expect 1 "nobody: $d: exit 1" "$@"
	if grep -q "permission denied" "$T/err" && grep -q "group '$GROUP'" "$T/err"; then
		ok "nobody: $d: says permission denied, needs group '$GROUP'"
	else
		notok "nobody: $d: says permission denied, needs group '$GROUP'"
		sed 's/^/#   /' "$T/err" | head -3
	fi
}
denied "list" as_nobody "$COWVOL" list
denied "list --json" as_nobody "$COWVOL" list --json
denied "create" as_nobody "$COWVOL" create v2 --size 1M
# a file nobody can open, so the request reaches the daemon (the CLI opens
# what it adds as the caller first)
denied "add" as_nobody "$COWVOL" add /dev/null
denied "snap" as_nobody "$COWVOL" snap v1@s2
denied "snap (default name)" as_nobody "$COWVOL" snap v1
denied "rm a snapshot" as_nobody "$COWVOL" rm v1@s1
denied "rm a volume" as_nobody "$COWVOL" rm v1 --recursive
denied "cat a volume" as_nobody "$COWVOL" cat v1
denied "cat a snapshot" as_nobody "$COWVOL" cat v1@s1
check "nobody's cat wrote nothing" test ! -s "$T/out"
denied "write (stdin a file)" nobody_write
denied "write (stdin a pipe)" nobody_write_stdin_pipe
denied "diff" as_nobody "$COWVOL" diff v1@s1
denied "restore" as_nobody "$COWVOL" restore v1@s1
denied "restore --keep --no-wait" as_nobody "$COWVOL" restore v1@s1 --keep --no-wait
denied "cleanup" as_nobody "$COWVOL" cleanup v1
denied "cleanup --dry-run" as_nobody "$COWVOL" cleanup v1 --dry-run
denied "schedule (set)" as_nobody "$COWVOL" schedule v1 --hourly 1
denied "schedule --off" as_nobody "$COWVOL" schedule v1 --off
denied "schedule (show)" as_nobody "$COWVOL" schedule v1

cv list --json >"$T/list.after"
state_sum >"$T/sum.after"
check "nothing changed: list --json as root is the same" cmp -s "$T/list.before" "$T/list.after"
check "nothing changed: the catalogue file is byte for byte the same" \
	cmp -s "$T/catalogue.before" "$STATE/catalogue.json"
check "nothing changed: every image and store is byte for byte the same" \
	cmp -s "$T/sum.before" "$T/sum.after"
# the image, the store, the catalogue and the daemon's lock
check "nothing changed: no file was added in the state folder or next to the data" \
	eval "[ \$(find '$STATE' -type f | wc -l) = 4 ] && [ ! -e '$STATE/volumes/v2.img' ]"
expect 0 "root still reads v1 as before" cv cat v1
check "v1's content is unchanged" cmp -s "$T/out" "$T/v1.root"
expect 0 "the daemon still serves root (status)" cv status

# --- members of the group ------------------------------------------------------
expect 0 "a member (supplementary group $GROUP) may list" as_member "$COWVOL" list
expect_in out "v1@s1" "the member's list shows v1@s1"
expect 0 "a member may snap" as_member "$COWVOL" snap v1@bymember
check "root sees the member's snapshot" eval "cv list --json | grep -q '\"full_name\": *\"v1@bymember\"'"
expect 0 "a member may cat a snapshot" as_member "$COWVOL" cat v1@s1
check "the member reads v1@s1 as root does" cmp -s "$T/out" "$T/s1.root"
expect 0 "a member may cat the volume" as_member "$COWVOL" cat v1
check "the member reads v1 as root does" cmp -s "$T/out" "$T/v1.root"
expect 0 "a member may diff" as_member "$COWVOL" diff v1@s1
check "the member's diff shows the 4 KiB changed after s1" \
	eval "[ \"\$(cat '$T/out')\" = \"\$(printf '0 4096\\ntotal: 4096 bytes in 1 range')\" ]"
member_write() { as_member "$COWVOL" write v1 --offset 8192 <"$T/other"; }
expect 0 "a member may write" member_write
expect 0 "root reads the member's write" cv cat v1 --offset 8192 --length 4096
check "the member's write landed" cmp -s "$T/out" "$T/other"
expect 0 "a member may rm a snapshot" as_member "$COWVOL" rm v1@bymember
check "the snapshot is gone for root too" eval "! cv list --json | grep -q 'v1@bymember'"
expect 0 "someone whose primary group is $GROUP may list" as_primary "$COWVOL" list
expect_in out "v1@s1" "the primary-group member's list shows v1@s1"

# --- back to 0660: nobody is out again, members are in -------------------------------
chmod 0660 "$SOCK"
expect 1 "with the socket 0660 again, nobody cannot connect" as_nobody "$COWVOL" status
expect 0 "and a member still can" as_member "$COWVOL" status

stop_daemon
check "cowvold stopped cleanly (exit 0)" test $? = 0
