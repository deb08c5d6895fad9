#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cat of a snapshot while a restore from it runs: refused with EBUSY, and
# cowvold keeps serving.  (It used to read on: the restore's end freed the
# snapshot under the cat, a use-after-free that ASan reports and that took
# the daemon down.)  The cat's reader is slow, so a cat that was let in
# would still be reading when the restore ends.  A restore that ends
# before the cat arrives proves nothing: tried again, with more to copy.
. "$(dirname "$0")/../lib.sh"

MiB=$((1024 * 1024))
start_daemon || exit 1

serving() { cv status >/dev/null 2>&1; }
result=
for mib in 64 128 256; do
	cv rm v --recursive >/dev/null 2>&1
	expect 0 "create a volume of $((mib * 2)) MiB" cv create v --size $((mib * 2))M
	expect 0 "snapshot it" cv snap v@s
	head -c $((mib * MiB)) /dev/zero | tr '\0' 'x' >"$T/data"
	if cv write v --offset 0 <"$T/data" >/dev/null; then ok "write $mib MiB over it (copies to restore)"; else
		notok "write $mib MiB over it (copies to restore)"
	fi
	rm -f "$T/data"
	expect 0 "restore v@s, not waiting" cv restore v@s --no-wait
	cv cat v@s --length $((8 * MiB)) 2>"$T/cat.err" | { sleep 2; cat >/dev/null; }
	if grep -q 'being restored' "$T/cat.err"; then
		result=busy
		break
	fi
	if ! serving; then
		result=crashed
		break
	fi
	if grep -q 'no snapshot named' "$T/cat.err"; then
		echo "# the restore of $mib MiB ended before the cat came: again, with more"
		continue
	fi
	result="cat: $(cat "$T/cat.err")"
	break
done
case $result in
busy) ok "cat of a snapshot being restored: EBUSY ($(cat "$T/cat.err"))" ;;
crashed) notok "cat of a snapshot being restored: cowvold died" ;;
'') notok "cat of a snapshot being restored: every restore ended before the cat came" ;;
*) notok "cat of a snapshot being restored: $result" ;;
esac
restore_ended() {
	for _ in $(seq 1 600); do
		cv list v --json >"$T/list" 2>&1 || return 1
		grep -q '"restore": *null' "$T/list" && return 0
		sleep 0.1
	done
	return 1
}
check "cowvold still serves" serving
check "the restore ends" restore_ended
check "the restore consumed the snapshot" bash -c "grep -q '\"volumes\"' '$T/list' && ! grep -q '\"v@s\"' '$T/list'"
stop_daemon
check "cowvold stopped cleanly" test $? = 0
