# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What the cowvol guest scripts share: paths to the host's build (the guest's
# root is the host's, read-only) and comparisons of cowvol with the kernel.
# shellcheck source=tests/kernel/guest-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

[ -x "$COWVOL" ] && [ -x "$COWTOOL" ] || fail "build first: $COWVOL or $COWTOOL missing"

# info_field STORE KEY: one field of `cowvol store info --json`.
info_field() {
	"$COWVOL" store info --json "$1" | sed -n "s/^ *\"$2\":\(.*\),\?$/\1/p" | tr -d ' ,"'
}

# same_status DMNAME STORE: the kernel's status line equals cowvol's figures.
same_status() {
	local k c
	k=$(dm_status "$1")
	c="$(info_field "$2" allocated_sectors)/$(info_field "$2" total_sectors) $(info_field "$2" metadata_sectors)"
	[ "$k" = "$c" ] || fail "status of $1: kernel '$k', cowvol store info '$c'"
	ok "kernel status '$k' = cowvol store info"
}

# sizes: CHUNK -> sectors
chunk_sectors() {
	case $1 in 4K) echo 8 ;; 64K) echo 128 ;; 512K) echo 1024 ;; *) fail "chunk $1" ;; esac
}

# remove_u: the devices of a kernel volume u with a snapshot s, at exit
# (the daemon first: it holds them)
remove_u() {
	local d
	kill9_daemon
	for d in cowvol-u-s cowvol-u-s-cow cowvol-u cowvol-u-real; do dmsetup remove "$d" 2>/dev/null || true; done
}
