#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvold makes its files through the state folder's descriptor and never
# follows a link in it (daemon/statedir.c): a link planted at the
# catalogue's temporary file is replaced, not followed (what it names stays
# as it was); a stores/ or volumes/ folder swapped for a link makes snap
# and create fail cleanly, nothing written where the link points, the
# catalogue unchanged; a link at a new image's name is refused.  A state
# folder that others may write (0777, 1777, or a group's that is neither
# root's nor the daemon's) is refused at start with one line, exit 1,
# nothing changed; made private again, it starts.
. "$(dirname "$0")/../lib.sh"

start_daemon || exit 1
must "create v" cv create v --size 1M
must "snap v@s" cv snap v@s
mkdir "$T/outside"
echo keep >"$T/outside/victim"
sum() { md5sum <"$T/outside/victim"; }
victim=$(sum)

# --- the catalogue's temporary file -----------------------------------------------
ln -s "$T/outside/victim" "$STATE/.catalogue.json.tmp"
must "with a link planted at .catalogue.json.tmp, create w works" cv create w --size 1M
check "what the link named is untouched" test "$(sum)" = "$victim"
check "the link is gone (replaced, not followed)" test ! -L "$STATE/.catalogue.json.tmp" -a ! -e "$STATE/.catalogue.json.tmp"
check "catalogue.json is a regular file that names w" eval "[ -f '$STATE/catalogue.json' ] && [ ! -L '$STATE/catalogue.json' ] && grep -q '\"w\"' '$STATE/catalogue.json'"

# --- subfolders swapped for links -----------------------------------------------------
cv list --json >"$T/list.before"
mkdir "$T/outside/stores" "$T/outside/volumes"
mv "$STATE/stores" "$STATE/stores.real"
ln -s "$T/outside/stores" "$STATE/stores"
refuse "with stores/ a link, snap fails cleanly" "cannot create the store of v@s2.*(symbolic links|Not a directory)" \
	cv snap v@s2
check "nothing was made where the link points" test -z "$(ls -A "$T/outside/stores")"
check "the list is as it was" eval "cv list --json | cmp -s - '$T/list.before'"
rm "$STATE/stores"
mv "$STATE/stores.real" "$STATE/stores"
must "stores/ back: snap v@s2 works" cv snap v@s2
cv list --json >"$T/list.before"
mv "$STATE/volumes" "$STATE/volumes.real"
ln -s "$T/outside/volumes" "$STATE/volumes"
refuse "with volumes/ a link, create fails cleanly" "cannot create .*x.img.*(symbolic links|Not a directory)" \
	cv create x --size 1M
check "nothing was made where the link points" test -z "$(ls -A "$T/outside/volumes")"
check "the list is as it was" eval "cv list --json | cmp -s - '$T/list.before'"
rm "$STATE/volumes"
mv "$STATE/volumes.real" "$STATE/volumes"
ln -s "$T/outside/victim" "$STATE/volumes/y.img"
refuse "a link at volumes/y.img: create y is refused" "cannot create .*y.img: File exists" cv create y --size 1M
check "what the link named is untouched" test "$(sum)" = "$victim"
rm "$STATE/volumes/y.img"
check "the daemon still serves v@s and v@s2" eval "cv list v | grep -q 'v@s2'"

# --- a state folder others may write --------------------------------------------------
stop_daemon
check "cowvold stops cleanly" test $? = 0
files() { (cd "$STATE" && find . -type f -print0 | sort -z | xargs -0 md5sum && find . | sort); }
files >"$T/files.before"
refused() { # MODE GROUP PATTERN
	chmod "$1" "$STATE"
	chgrp "$2" "$STATE"
	timeout 20 "$COWVOLD" --state-dir "$STATE" --socket "$T/r.sock" >"$T/r.out" 2>"$T/r.err" </dev/null
	rc=$?
	check "state folder $1 (group $2): the start is refused (exit 1, got $rc)" test $rc = 1
	check "state folder $1 (group $2): one line, saying why (/$3/)" eval \
		"[ \$(wc -l <'$T/r.err') = 1 ] && grep -qE -- '$3' '$T/r.err'"
	sed 's/^/#   /' "$T/r.err"
	check "state folder $1 (group $2): no socket, every file as it was" eval \
		"[ ! -e '$T/r.sock' ] && files | cmp -s - '$T/files.before'"
}
refused 0777 root "the state folder .*/state is writable by every user \(mode 0777\)"
refused 1777 root "is writable by every user \(mode 1777\)"
refused 0770 nogroup "is writable by the group nogroup \(mode 0770\)"
chgrp root "$STATE"
chmod 0700 "$STATE"
start_daemon || exit 1
check "chmod 0700 again: cowvold starts and lists v@s" eval "cv list v | grep -q 'v@s '"
stop_daemon
chmod 0770 "$STATE"
start_daemon || exit 1
check "0770 with root's group (the daemon's own): cowvold starts" eval "cv list v | grep -q 'v@s '"
stop_daemon
check "it stops cleanly (exit 0)" test $? = 0
