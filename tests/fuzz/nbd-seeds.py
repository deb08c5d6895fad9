#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Writes the seed corpus of fuzz-nbd (tests/fuzz/corpus/nbd): whole client
# sides of NBD sessions against the fuzz target's exports "vm" and "vm@s"
# (4 MiB), from the client flags on; "T0", "T1", "T2" first: a TCP connection
# with nbd_tls off, on, require (fuzz-nbd.c).  Run it again after changing it:
#   tests/fuzz/nbd-seeds.py tests/fuzz/corpus/nbd
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def name(n):
    return struct.pack(">I", len(n)) + n.encode()


def go(n, o=7, infos=()):
    return opt(o, name(n) + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos))


def meta(o, n, queries):
    return opt(o, name(n) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries))


def req(typ, off, length, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, length) + payload


FLAGS = struct.pack(">I", 3)
DISC = req(2, 0, 0)
seeds = {
    "go-rw": FLAGS + go("vm", infos=(0, 3)) + req(0, 0, 4096) + req(1, 8192, 512, payload=b"w" * 512)
    + req(1, 4096, 100, flags=1, payload=b"f" * 100) + req(3, 0, 0) + req(4, 65536, 65536)
    + req(6, 131072, 8192) + req(6, 200000, 1000, flags=2) + DISC,
    "structured": FLAGS + opt(8) + meta(10, "vm@s", ["base:allocation"]) + go("vm@s")
    + req(0, 0, 8192, flags=4) + req(7, 0, 4194304) + req(7, 4096, 1 << 20, flags=8)
    + req(1, 0, 4096, payload=bytes(4096)) + req(0, 4194000, 1000) + DISC,
    "list-info": FLAGS + opt(3) + go("vm@s", o=6) + go("nosuch", o=6) + opt(8) + meta(9, "vm", [])
    + meta(9, "vm", ["base:"]) + opt(2),
    "export-name": struct.pack(">I", 1) + opt(1, b"vm") + req(0, 1 << 20, 65536) + req(5, 0, 0) + DISC,
    "bad": FLAGS + opt(99, b"junk") + opt(3, b"x") + opt(7, b"\0\0\0\x10ab") + meta(10, "vm", ["x"])
    + go("vm") + req(0, 1 << 62, 512) + req(1, 4194300, 8, payload=b"12345678") + req(42, 0, 0)
    + struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 9, 0, 512),
}
TLS = {"off": b"T0", "on": b"T1", "require": b"T2"}
TLS_HELLO = bytes.fromhex("160301002a010000260303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
seeds.update({
    # TLS required: everything before STARTTLS is refused, EXPORT_NAME closes
    "tls-require": TLS["require"] + FLAGS + opt(3) + opt(8) + go("vm") + go("vm", o=6) + opt(99, b"x")
    + meta(9, "vm", []) + opt(5, b"junk") + opt(5) + TLS_HELLO,
    "tls-require-export-name": TLS["require"] + FLAGS + opt(1, b"vm") + req(0, 0, 512) + DISC,
    "tls-require-abort": TLS["require"] + FLAGS + opt(2),
    # TLS offered: plaintext goes on; STARTTLS later, after structured replies
    "tls-on-plain": TLS["on"] + FLAGS + opt(8) + opt(3) + go("vm") + req(0, 0, 4096) + DISC,
    "tls-on-starttls": TLS["on"] + FLAGS + opt(8) + meta(10, "vm", ["base:allocation"]) + opt(5) + TLS_HELLO
    + opt(5),
    # TCP without TLS, and the Unix socket: STARTTLS is refused, the rest goes on
    "tls-off": TLS["off"] + FLAGS + opt(5) + go("vm") + req(0, 0, 4096) + DISC,
    "starttls-unix": FLAGS + opt(5) + opt(5, b"x") + go("vm@s") + req(0, 0, 512) + DISC,
})
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "nbd")
os.makedirs(out, exist_ok=True)
for k, v in seeds.items():
    with open(os.path.join(out, k), "wb") as f:
        f.write(v)
