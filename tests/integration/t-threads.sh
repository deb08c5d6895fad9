#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# When a worker thread cannot be created (systemd's TasksMax, a pids
# cgroup, RLIMIT_NPROC), an NBD connection's own thread serves its
# requests: every one is answered, the data is right, the log says so once,
# and the volume is free again when the client goes.  Here cowvold runs as
# nobody, and prlimit lowers its RLIMIT_NPROC (which binds users other than
# root) until it can start a connection's thread but no worker.
. "$(dirname "$0")/../lib.sh"

[ "$(id -u)" = 0 ] || { notok "t-threads.sh runs as root (setpriv, prlimit)"; exit 1; }
requires setpriv prlimit qemu-io nbdcopy
NOBODY=$(id -u nobody)
ST=$T/st-nobody RUN=$T/run
mkdir -p "$ST" "$RUN"
chown nobody "$ST" "$RUN"
chmod 755 "$T" # nobody reaches its folders
CSOCK=$RUN/cowvold.sock
PID=
start() { # [PRLIMIT-ARGS...]: cowvold as nobody
	"$@" setpriv --reuid=nobody --regid=nogroup --clear-groups "$COWVOLD" --state-dir "$ST" --socket "$CSOCK" \
		--nbd-socket "$RUN/nbd.sock" >>"$T/daemon.log" 2>&1 </dev/null &
	PID=$!
	on_exit "kill -9 $PID 2>/dev/null"
	for _ in $(seq 200); do cv --socket "$CSOCK" status >/dev/null 2>&1 && break; sleep 0.05; done
	must "cowvold (as nobody) answers" cv --socket "$CSOCK" status
}
start
must "create v (4 MiB)" cv --socket "$CSOCK" create v --size 4M
URI=$(cv --socket "$CSOCK" export v)
head -c 1M /dev/urandom >"$T/data"
must "write 1 MiB into v" cv --socket "$CSOCK" write v <"$T/data"
# nobody's tasks at rest (cowvold's main and monitor threads), plus one:
# a connection's thread may start, no worker
sleep 0.5
n=$(ps -L -u "$NOBODY" --no-headers | wc -l)
kill -TERM "$PID"
wait "$PID"
start prlimit --nproc=$((n + 1)):$((n + 1)) --
check "cowvold runs with RLIMIT_NPROC $((n + 1))" grep -qE "^Max processes +$((n + 1)) +$((n + 1)) " "/proc/$PID/limits"
check "nbdcopy reads v whole within 60 s (no worker thread)" timeout 60 nbdcopy --connections=1 "$URI" "$T/copy"
check "what it read is v's content" cmp -s <(head -c 1M "$T/copy") "$T/data"
check "qemu-io writes 64 KiB at 2 MiB and reads them back" eval \
	"timeout 60 qemu-io -f raw -c 'write -P 0x5a 2M 64k' -c 'read -P 0x5a 2M 64k' '$URI' >'$T/qio' 2>&1"
sed 's/^/#   /' "$T/qio" | head -4
check "the log says the connection's thread served the requests" \
	grep -q "NBD: cannot start a worker thread (.*): the connection's own thread serves its requests" "$T/daemon.log"
check "said once, not per request" test "$(grep -c 'cannot start a worker thread' "$T/daemon.log")" = 1
check "the write is in v" eval "cv --socket '$CSOCK' cat v --offset 2097152 --length 65536 | cmp -s - <(head -c 65536 /dev/zero | tr '\\0' '\\132')"
check "the volume is not busy: rm v" cv --socket "$CSOCK" rm v --yes
kill -TERM "$PID"
for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -9 "$PID" 2>/dev/null && notok "cowvold stops within 30 s of SIGTERM (killed)"
wait "$PID"
rc=$?
check "cowvold stops cleanly (exit $rc)" test $rc = 0
