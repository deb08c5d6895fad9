# shellcheck shell=bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Helpers for scripts that tests/kernel/vm.sh runs in the guest. Source it:
#   . "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"
# It sets -euo pipefail and sources tests/lib.sh (checks, the daemon, the
# EXIT trap); at exit it removes the dm devices made with dm_create (newest
# first), detaches the loops made with make_loop and deletes their files.
# Do not replace the trap: add steps with on_exit.
#
# The state lives in files, not variables, because helpers are mostly called
# in $(...) subshells, where a variable set would be lost.

set -euo pipefail
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

_gl_state=$T/.guest
mkdir "$_gl_state"
: >"$_gl_state/dm"
: >"$_gl_state/loop"

# the dm devices and loops go last, after the script's own exit steps and
# the daemon
_gl_cleanup() {
	local line
	kill9_daemon
	while read -r line; do
		dmsetup remove --retry "$line" >/dev/null 2>&1 ||
			echo "guest-lib: cannot remove dm device $line" >&2
	done < <(tac "$_gl_state/dm")
	while read -r dev file; do
		losetup -d "$dev" 2>/dev/null || echo "guest-lib: cannot detach $dev" >&2
		case "$file" in /tmp/*) rm -f -- "$file" ;; esac
	done < <(tac "$_gl_state/loop")
}
on_exit _gl_cleanup

[ -e /dev/mapper/control ] ||
	fail "no device-mapper in this kernel (run the script through tests/kernel/vm.sh)"

# make_loop FILE SIZE: size FILE (a bare name goes in /tmp) to SIZE with
# truncate (existing data is kept, new space reads as zeros), attach it to a
# free loop device and print that device.
make_loop() {
	local file=$1 size=$2 dev
	case "$file" in */*) ;; *) file=/tmp/$file ;; esac
	truncate -s "$size" -- "$file"
	dev=$(losetup -f --show -- "$file") || fail "losetup $file"
	echo "$dev $file" >>"$_gl_state/loop"
	echo "$dev"
}

# dm_create NAME TABLE: dmsetup create NAME with a one-line TABLE; the device
# is removed at exit. Prints /dev/mapper/NAME.
dm_create() {
	local name=$1; shift
	dmsetup create "$name" --table "$*" || fail "dmsetup create $name: $*"
	echo "$name" >>"$_gl_state/dm"
	echo "/dev/mapper/$name"
}

# dm_track NAME: remove a dm device made some other way (e.g. by cowvol) at
# exit too.
dm_track() { echo "$1" >>"$_gl_state/dm"; }

# sectors DEV: its size in 512-byte sectors.
sectors() { blockdev --getsz "$1"; }

# dm_status NAME: the status fields after the target type, e.g. for a
# snapshot "16/16384 16". One line per target.
dm_status() { dmsetup status "$1" | cut -d' ' -f4-; }

# hex_bytes DEV COUNT [OFFSET]: COUNT bytes at byte OFFSET as "53 6e ...",
# read with O_DIRECT so the page cache cannot hide what the kernel wrote.
hex_bytes() {
	local dev=$1 count=$2 off=${3:-0} bs=4096
	dd if="$dev" bs=$bs skip=$((off / bs)) count=$(((off % bs + count + bs - 1) / bs)) \
		iflag=direct status=none |
		od -An -tx1 -v -j $((off % bs)) -N "$count" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//'
}
