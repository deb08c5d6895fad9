#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Hostile NBD clients for t-stall.sh and t-conns.sh: open N connections to
# cowvold's NBD socket (a Unix path, or HOST:PORT for TCP); with --go,
# choose EXPORT and then, with COUNT and LEN, send COUNT reads of LEN bytes
# each that are never read back; without --go they stay idle before
# choosing an export.  Prints "connected N alive N refused N" once they are
# up (alive: not closed by the daemon a second later), then holds them
# until killed.
# With "write" after LEN, the requests are writes whose payload never comes.
#   nbd-stall.py ADDR N [--go EXPORT [COUNT LEN [write]]]
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_GO = 7
REP_ACK = 1
REQ_MAGIC = 0x25609513
CMD_READ, CMD_WRITE = 0, 1


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x:
            raise EOFError("closed")
        b += x
    return b


def connect(addr):
    if "/" in addr:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    # a small receive buffer: replies pile up at the daemon, not here
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # blocking: a full listen queue makes it wait, not fail
    s.settimeout(None)
    s.connect(target)
    s.settimeout(30)
    return s


def choose(s, export):
    magic, opt, _flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    name = export.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    while True:
        _m, _o, rtype, rlen = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, rlen)
        if rtype == REP_ACK:
            return
        if rtype & (1 << 31):
            raise RuntimeError("export refused")


def main():
    addr, n = sys.argv[1], int(sys.argv[2])
    go = sys.argv[3:4] == ["--go"]
    conns, refused = [], 0
    for _ in range(n):
        try:
            s = connect(addr)
            if go:
                choose(s, sys.argv[4])
                count, length = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (0, 0)
                cmd = CMD_WRITE if sys.argv[7:8] == ["write"] else CMD_READ
                for i in range(count):
                    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, i, 0, length))
            conns.append(s)
        except (OSError, EOFError, RuntimeError, AssertionError, struct.error):
            refused += 1
    # the daemon closes what is over its budget at once: count those too
    time.sleep(1)
    alive = 0
    for s in conns:
        s.setblocking(False)
        try:
            alive += 0 if s.recv(1, socket.MSG_PEEK) == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print("connected %d alive %d refused %d" % (len(conns), alive, refused), flush=True)
    while True:
        time.sleep(3600)


main()
