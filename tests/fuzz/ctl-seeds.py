#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Writes the seed corpus of fuzz-ctl (tests/fuzz/corpus/ctl): what clients
# send on the control socket (doc/protocol.md), against the fuzz target's
# state folder: volume "vm" (4 MiB) with snapshot "vm@s", image files
# $STATE/spare.img (1 MiB) and $STATE/odd.img (1000 bytes); "$STATE" stands
# for the folder's path.  Every operation with valid and invalid arguments,
# other versions, pipelined and partial lines, lines that are not JSON or
# are too long.  Run it again after changing it:
#   tests/fuzz/ctl-seeds.py tests/fuzz/corpus/ctl
import json
import os
import sys

MIB = 1 << 20


def req(op, args=None, id=1, v=1):
    r = {"v": v, "id": id, "op": op}
    if args is not None:
        r["args"] = args
    return json.dumps(r, separators=(",", ":"))


def lines(*ls):
    return ("\n".join(ls) + "\n").encode()


seeds = {
    # one valid request an operation (as the CLI sends them)
    "status": lines(req("status")),
    "create": lines(req("create", {"name": "vm2", "size": 8 * MIB, "chunk_size": 8192}),
                    req("list", {"volume": "vm2"}, id=2)),
    "add": lines(req("add", {"path": "$STATE/spare.img"}), req("add", {"path": "$STATE/spare.img", "name": "x"}, 2),
                 req("rm", {"target": "spare"}, 3)),
    "snap": lines(req("snap", {"volume": "vm", "name": "t", "store_size": 2 * MIB}), req("snap", {"volume": "vm"}, 2),
                  req("list", None, 3)),
    "list": lines(req("list"), req("list", {"volume": "vm"}, 2)),
    "restore": lines(req("write", {"target": "vm", "offset": 0, "length": 8192}),
                     req("restore", {"snapshot": "vm@s", "keep": True}, 2),
                     req("restore-wait", {"volume": "vm"}, 3), req("list", None, 4)),
    "restore-consume": lines(req("write", {"target": "vm", "offset": 4096, "length": 4096}),
                             req("restore", {"snapshot": "vm@s"}, 2), req("restore-wait", {"volume": "vm",
                                                                                           "progress": True}, 3),
                             req("restore-wait", {"volume": "vm"}, 4), req("rm", {"target": "vm"}, 5)),
    "rm": lines(req("rm", {"target": "vm@s"}), req("rm", {"target": "vm"}, 2)),
    "rm-recursive": lines(req("rm", {"target": "vm", "recursive": True})),
    "activate": lines(req("activate", {"volume": "vm"})),
    "cat": lines(req("cat", {"target": "vm@s", "offset": 0, "length": 65536}),
                 req("cat", {"target": "vm", "offset": 4190000, "length": 1000000}, 2)),
    "write": lines(req("write", {"target": "vm", "offset": 0, "length": 65536}),
                   req("write", {"target": "vm@s", "offset": 8192, "length": 4096}, 2),
                   req("diff", {"target": "vm@s"}, 3)),
    "write-short": lines(req("write", {"target": "vm", "offset": 0, "length": 100000})),
    "diff": lines(req("diff", {"target": "vm@s"})),
    "export": lines(req("export", {"target": "vm@s"}), req("export", {"target": "vm"}, 2)),
    "resize": lines(req("resize", {"volume": "vm", "add": MIB}), req("cat", {"target": "vm@s", "offset": MIB}, 2),
                    req("write", {"target": "vm", "offset": 4 * MIB, "length": 65536}, 3),
                    req("resize", {"volume": "vm", "size": MIB, "force": True}, 4), req("list", None, 5)),
    # names taken already
    "exists": lines(req("snap", {"volume": "vm", "name": "s"}), req("create", {"name": "vm", "size": MIB}, 2),
                    req("add", {"path": "$STATE/spare.img", "name": "sp"}, 3),
                    req("add", {"path": "$STATE/spare.img", "name": "sp2"}, 4),
                    req("add", {"path": "$STATE/spare.img", "name": "sp"}, 5)),
    # everything against a volume while a restore runs (64 copies to make)
    "while-restoring": lines(*[req("write", {"target": "vm", "offset": k * 65536, "length": 65536}, k)
                               for k in range(4)],
                             req("restore", {"snapshot": "vm@s", "keep": True}, 10), req("list", None, 11),
                             req("cat", {"target": "vm@s", "length": 4096}, 12),
                             req("cat", {"target": "vm", "length": 4096}, 13),
                             req("restore", {"snapshot": "vm@s"}, 14), req("rm", {"target": "vm@s"}, 15),
                             req("snap", {"volume": "vm"}, 16), req("write", {"target": "vm", "length": 1}, 17),
                             req("export", {"target": "vm@s"}, 18), req("diff", {"target": "vm@s"}, 19),
                             req("restore-wait", {"volume": "vm", "progress": True}, 20),
                             req("restore-wait", {"volume": "vm"}, 21), req("list", None, 22)),
    # a store at its smallest, then more copies than it holds: it grows
    "small-store": lines(req("snap", {"volume": "vm", "name": "t", "store_size": 8192}),
                         req("snap", {"volume": "vm", "name": "u", "store_size": 12288}, 2),
                         *[req("write", {"target": "vm", "offset": k * 65536, "length": 65536}, 3 + k) for k in range(8)],
                         req("list", None, 20), req("diff", {"target": "vm@u"}, 21),
                         req("cat", {"target": "vm@u", "offset": 0, "length": 524288}, 22)),
    # what a snapshot says it is, cleanup and schedule (issue 13)
    "snap-meta": lines(req("snap", {"volume": "vm", "name": "p", "type": "pre", "cleanup": "number",
                                    "description": "before", "userdata": "important=yes,a=b"}),
                       req("snap", {"volume": "vm", "name": "q", "pre": "p", "cleanup": "number"}, 2),
                       req("snap", {"volume": "vm", "name": "t", "cleanup": "timeline", "type": "single"}, 3),
                       req("snap", {"volume": "vm", "name": "u", "pre": "s"}, 4),
                       req("snap", {"volume": "vm", "name": "u", "userdata": "a=b,a=c"}, 5),
                       req("snap", {"volume": "vm", "name": "u", "description": "x\ty"}, 6),
                       req("list", None, 7)),
    "cleanup": lines(req("snap", {"volume": "vm", "name": "n1", "cleanup": "number"}),
                     req("snap", {"volume": "vm", "name": "n2", "cleanup": "number"}, 2),
                     req("cleanup", {"volume": "vm", "dry_run": True}, 3),
                     req("schedule", {"volumes": ["vm"], "hourly": 0, "daily": 0, "monthly": 0, "yearly": 0,
                                      "number": 1, "min_age": 0}, 4),
                     req("cleanup", {"volume": "vm"}, 5), req("list", None, 6),
                     req("cleanup", {"volume": "vm@s"}, 7), req("cleanup", {"volume": "nosuch"}, 8)),
    "schedule": lines(req("schedule", {"volumes": ["vm"]}),
                      req("schedule", {"volumes": ["vm"], "hourly": 24, "daily": 7, "weekly": 4, "min_age": 3600,
                                       "free_limit": 20}, 2),
                      req("schedule", {"volumes": ["vm", "vm"], "quarterly": 1, "number_important": 3}, 3),
                      req("schedule", {"volumes": ["vm"], "off": True}, 4),
                      req("schedule", {"volumes": ["vm"], "off": True, "hourly": 1}, 5),
                      req("schedule", {"volumes": ["vm", "nosuch"], "hourly": 1}, 6),
                      req("schedule", {"volumes": []}, 7), req("schedule", {"volumes": "vm"}, 8),
                      req("schedule", {"volumes": ["vm"], "hourly": -1, "min_age": 99999999999}, 9)),
    # the descriptor-less data requests (no "length", or a large one)
    "cat-nofd": lines(req("cat", {"target": "vm"}), req("cat", {"target": "vm@s", "length": 1 << 30}, 2)),
    "write-nofd": lines(req("write", {"target": "vm", "length": 1 << 30})),
    # invalid arguments
    "bad-names": lines(req("create", {"name": ".x", "size": MIB}), req("create", {"name": "a b", "size": MIB}, 2),
                       req("create", {"name": "x" * 65, "size": MIB}, 3),
                       req("create", {"name": "vm\u0000x", "size": MIB}, 4),
                       req("snap", {"volume": "vm", "name": "-s"}, 5), req("rm", {"target": "vm@"}, 6),
                       req("rm", {"target": "@s"}, 7), req("cat", {"target": "vm@s@t", "length": 1}, 8),
                       req("diff", {"target": "vm"}, 9), req("list", {"volume": "nosuch"}, 10),
                       req("create", {"name": "\u00e9t\u00e9", "size": MIB}, 11)),
    "bad-sizes": lines(req("create", {"name": "a", "size": 0}), req("create", {"name": "a", "size": 1000}, 2),
                       req("create", {"name": "a", "size": 1 << 51}, 3),
                       req("create", {"name": "a", "size": MIB, "chunk_size": 3000}, 4),
                       req("create", {"name": "a", "size": MIB, "chunk_size": 1 << 20}, 5),
                       req("create", {"name": "a", "size": -512}, 6),
                       req("create", {"name": "a", "size": 9223372036854775807}, 7),
                       req("snap", {"volume": "vm", "store_size": 4096}, 8),
                       req("snap", {"volume": "vm", "store_size": -1}, 9),
                       req("write", {"target": "vm", "offset": 4194304, "length": 1}, 10),
                       req("write", {"target": "vm", "offset": -1, "length": 1}, 11),
                       req("cat", {"target": "vm", "offset": 9999999, "length": 1}, 12)),
    "bad-args": lines(req("status", {"verbose": True}), req("create", {"name": "a"}, 2),
                      req("create", {"name": 1, "size": MIB}, 3), req("create", {"name": "a", "size": "1M"}, 4),
                      req("rm", {"target": "vm", "recursive": 1}, 5), req("snap", {"volume": "vm", "store": "/dev/x"}, 6),
                      req("snap", {"volume": "vm", "store": "/dev/x", "store_size": MIB}, 7),
                      req("restore", {"snapshot": "vm"}, 8), req("restore-wait", {}, 9),
                      req("add", {"path": "relative.img"}, 10), req("add", {"path": "$STATE/odd.img"}, 11),
                      req("add", {"path": "$STATE/nosuch.img"}, 12), req("add", {"path": "$STATE/volumes"}, 13),
                      req("add", {"path": "$STATE/volumes/vm.img"}, 14),
                      req("add", {"path": "$STATE/spare.img", "chunk_size": 5}, 15),
                      req("add", {"path": "$STATE/spare.img", "name": "vm"}, 16),
                      req("nosuch", None, 17), req("", None, 18), req("status", None, 19, v=2)),
    # the request line itself
    "versions": lines(req("status", v=0), req("status", v=2, id=2), '{"v":"1","id":3,"op":"status"}',
                      '{"v":1.0,"id":4,"op":"status"}', '{"id":5,"op":"status"}', req("status", id=6)),
    "fields": lines('{"v":1,"op":"status"}', '{"v":1,"id":"x","op":"status"}', '{"v":1,"id":-9223372036854775808,"op":"status"}',
                    '{"v":1,"id":2,"op":5}', '{"v":1,"id":3}', '{"v":1,"id":4,"op":"status","args":[]}',
                    '{"v":1,"id":5,"op":"status","args":null}', '{"v":1,"id":6,"op":"status","extra":1}',
                    '{"v":1,"id":7,"op":"list","args":{"volume":"vm","volume":"nosuch"}}'),
    "pipelined": lines(*[req(op, a, id=i) for i, (op, a) in enumerate([
        ("status", None), ("create", {"name": "b", "size": MIB}), ("snap", {"volume": "b", "name": "1"}),
        ("list", None), ("diff", {"target": "b@1"}), ("rm", {"target": "b", "recursive": True}), ("list", None)])]),
    "not-json": b"hello\n" + lines(req("status")),
    "not-object": lines('[1,2,3]', req("status")),
    "trailing": lines(req("status") + " x", req("status")),
    "two-on-a-line": lines(req("status") + req("status")),
    "empty-line": b"\n" + lines(req("status")),
    "crlf": (req("status") + "\r\n").encode(),
    "no-newline": lines(req("status")) + req("list").encode(),
    "nul": lines(req("status")).replace(b"status", b"sta\0tus"),
    "utf8": lines(req("create", {"name": "vol\u2603", "size": MIB})) + b'{"v":1,"id":1,"op":"\xff\xfe"}\n',
    "deep": (b'{"v":1,"id":1,"op":"status","args":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}\n"),
    "long-line": lines('{"v":1,"id":1,"op":"status","pad":"' + "x" * 65000 + '"}'),
    # 64 KiB without a newline: E2BIG (libFuzzer's -max_len=65536 keeps it whole)
    "too-long": (b'{"v":1,"id":1,"op":"status","pad":"' + b"x" * 65536)[:65536],
}
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "ctl")
os.makedirs(out, exist_ok=True)
for k, v in seeds.items():
    with open(os.path.join(out, k), "wb") as f:
        f.write(v)
