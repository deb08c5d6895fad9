# SPDX-License-Identifier: GPL-2.0-or-later
# A raw NBD client for t-nbd.sh: speaks doc/proto.md of NetworkBlockDevice/nbd
# byte by byte, to send what real clients never do.
#   nbd-raw.py SOCKET SCENARIO [ARGS...]    (SOCKET: a path, or tcp:HOST:PORT)
# Prints "ok - ..." / "not ok - ..." lines; exits 1 when one failed.
import os
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 1, 2, 3, 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10
OPT_STARTTLS = 5
REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
STRUCTURED_MAGIC = 0x668E33EF
REPLY_FLAG_DONE = 1
TYPE_NONE, TYPE_OFFSET_DATA, TYPE_BLOCK_STATUS, TYPE_ERROR = 0, 1, 5, (1 << 15) | 1
CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 6, 7
FLAG_FUA, FLAG_DF, FLAG_REQ_ONE = 1, 4, 8
TF_READ_ONLY, TF_SEND_TRIM, TF_SEND_WRITE_ZEROES, TF_SEND_DF = 2, 32, 64, 128
EPERM = 1
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = (1 << 31) | 1, (1 << 31) | 2, (1 << 31) | 3, (1 << 31) | 6
ERR_TLS_REQD = (1 << 31) | 5
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
EINVAL, ENOSPC = 22, 28

failed = 0


def report(good, what):
    global failed
    print(("ok - " if good else "not ok - ") + what)
    if not good:
        failed += 1


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x:
            raise EOFError("connection closed after %d of %d bytes" % (len(b), n))
        b += x
    return b


def closed(s, timeout=5):
    """True when the server closes the connection (EOF or reset)."""
    s.settimeout(timeout)
    try:
        while True:
            x = s.recv(65536)
            if not x:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def connect(path, cflags=3):
    if path.startswith("tcp:"):
        host, port = path[4:].rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
    s.settimeout(10)
    magic, opt, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT or hflags != 3:
        raise RuntimeError("bad greeting %x %x %x" % (magic, opt, hflags))
    s.sendall(struct.pack(">I", cflags))
    return s


def send_opt(s, opt, data=b"", magic=IHAVEOPT):
    s.sendall(struct.pack(">QII", magic, opt, len(data)) + data)


def read_rep(s):
    magic, opt, typ, n = struct.unpack(">QIII", recv_exact(s, 20))
    if magic != REPMAGIC:
        raise RuntimeError("bad reply magic %x" % magic)
    return opt, typ, recv_exact(s, n)


def go(s, name, opt=OPT_GO):
    n = name.encode()
    send_opt(s, opt, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    infos = {}
    while True:
        o, typ, data = read_rep(s)
        if typ == REP_INFO:
            infos[struct.unpack(">H", data[:2])[0]] = data[2:]
        else:
            return typ, data, infos


def request(s, typ, off, length, flags=0, cookie=7, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, off, length) + payload)


def reply(s, datalen=0):
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != REPLY_MAGIC:
        raise RuntimeError("bad simple reply magic %x" % magic)
    data = recv_exact(s, datalen) if err == 0 and datalen else b""
    return err, cookie, data


def chunk(s):
    """One structured reply chunk: (flags, type, cookie, payload)."""
    magic, flags, typ, cookie, n = struct.unpack(">IHHQI", recv_exact(s, 20))
    if magic != STRUCTURED_MAGIC:
        raise RuntimeError("bad structured reply magic %x" % magic)
    return flags, typ, cookie, recv_exact(s, n)


def any_reply(s):
    """A simple or structured reply without data: (error, cookie, message)."""
    magic = struct.unpack(">I", recv_exact(s, 4))[0]
    if magic == REPLY_MAGIC:
        err, cookie = struct.unpack(">IQ", recv_exact(s, 12))
        return err, cookie, ""
    if magic != STRUCTURED_MAGIC:
        raise RuntimeError("bad reply magic %x" % magic)
    flags, typ, cookie, n = struct.unpack(">HHQI", recv_exact(s, 16))
    data = recv_exact(s, n)
    if typ == TYPE_ERROR:
        err, mlen = struct.unpack(">IH", data[:6])
        return err, cookie, data[6:6 + mlen].decode()
    return 0, cookie, ""


def meta_opt(s, opt, name, queries):
    n = name.encode()
    data = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        data += struct.pack(">I", len(q)) + q.encode()
    send_opt(s, opt, data)
    got = []
    while True:
        o, typ, data = read_rep(s)
        if typ != REP_META_CONTEXT:
            return typ, got
        got.append((struct.unpack(">I", data[:4])[0], data[4:].decode()))


def main():
    path, what, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if what == "bad-option-magic":
        s = connect(path)
        send_opt(s, OPT_LIST, magic=0x1122334455667788)
        report(closed(s), "an option with a wrong magic closes the connection")
    elif what == "bad-client-flags":
        s = connect(path, cflags=0x80000003)
        report(closed(s), "unknown client flags close the connection")
    elif what == "options":
        s = connect(path)
        send_opt(s, 99, b"junk!")
        o, typ, _ = read_rep(s)
        report(o == 99 and typ == ERR_UNSUP, "an unknown option gets NBD_REP_ERR_UNSUP (%x)" % typ)
        send_opt(s, OPT_STRUCTURED_REPLY, b"x")
        o, typ, _ = read_rep(s)
        report(typ == ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY with data gets NBD_REP_ERR_INVALID")
        send_opt(s, OPT_LIST, b"x")
        o, typ, _ = read_rep(s)
        report(typ == ERR_INVALID, "NBD_OPT_LIST with data gets NBD_REP_ERR_INVALID")
        send_opt(s, OPT_GO, b"\0\0\0\x10ab")
        o, typ, _ = read_rep(s)
        report(typ == ERR_INVALID, "a malformed NBD_OPT_GO gets NBD_REP_ERR_INVALID")
        send_opt(s, OPT_LIST)
        names = []
        while True:
            o, typ, data = read_rep(s)
            if typ != REP_SERVER:
                break
            n = struct.unpack(">I", data[:4])[0]
            names.append(data[4:4 + n].decode())
        report(typ == REP_ACK and sorted(names) == sorted(args),
               "after all that, NBD_OPT_LIST still lists %s (got %s)" % (args, names))
        for name in ("nosuch", "vm1@nope", "", "bad/name", "vm1@bad@x"):
            typ, data, _ = go(s, name, OPT_INFO)
            report(typ == ERR_UNKNOWN and len(data) > 0,
                   "NBD_OPT_INFO '%s' gets NBD_REP_ERR_UNKNOWN with a message (%s)" % (name, data.decode()))
        typ, data, infos = go(s, "vm1", OPT_INFO)
        report(typ == REP_ACK and 0 in infos and 3 in infos, "NBD_OPT_INFO vm1 gives the export and block sizes")
        send_opt(s, OPT_ABORT)
        o, typ, _ = read_rep(s)
        report(typ == REP_ACK and closed(s), "NBD_OPT_ABORT is acknowledged and the connection closes")
    elif what == "export-name-unknown":
        s = connect(path)
        send_opt(s, OPT_EXPORT_NAME, b"nosuch")
        report(closed(s), "NBD_OPT_EXPORT_NAME of an unknown export closes the connection")
    elif what == "export-name":
        s = connect(path, cflags=1)  # no NO_ZEROES: 124 zero bytes follow
        send_opt(s, OPT_EXPORT_NAME, args[0].encode())
        size, flags = struct.unpack(">QH", recv_exact(s, 10))
        pad = recv_exact(s, 124)
        report(size == int(args[1]) and flags & 1 and pad == bytes(124),
               "NBD_OPT_EXPORT_NAME: size %d, flags %#x, 124 zeros" % (size, flags))
        request(s, CMD_READ, 0, 4096)
        err, _, data = reply(s, 4096)
        report(err == 0 and len(data) == 4096, "and a read through it works")
        request(s, CMD_DISC, 0, 0)
        report(closed(s), "NBD_CMD_DISC closes the connection")
    elif what == "requests":
        size = int(args[1])
        s = connect(path)
        typ, _, infos = go(s, args[0])
        report(typ == REP_ACK and struct.unpack(">Q", infos[0][:8])[0] == size, "NBD_OPT_GO %s" % args[0])
        request(s, CMD_READ, size - 512, 1024, cookie=1)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 1, "a read past the end gets EINVAL (%d)" % err)
        request(s, CMD_READ, 1 << 62, 512, cookie=2)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 2, "a read at a huge offset gets EINVAL")
        request(s, CMD_READ, 0, 64 << 20, cookie=3)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 3, "an oversized read (64 MiB) gets EINVAL")
        request(s, CMD_WRITE, size - 100, 200, cookie=4, payload=b"w" * 200)
        err, cookie, _ = reply(s)
        report(err == ENOSPC and cookie == 4, "a write past the end gets ENOSPC, its payload skipped")
        request(s, 6, size - 100, 200, cookie=41)
        err, cookie, _ = reply(s)
        report(err == ENOSPC and cookie == 41, "write-zeroes past the end gets ENOSPC")
        request(s, CMD_TRIM, size - 4096, 8192, cookie=5)
        err, cookie, _ = reply(s)
        report(err == ENOSPC and cookie == 5, "a trim past the end gets ENOSPC")
        request(s, CMD_TRIM, 0, 0, cookie=51)
        err, cookie, _ = reply(s)
        report(err == 0 and cookie == 51, "a trim of nothing succeeds")
        request(s, CMD_TRIM, 0, 4096, flags=2, cookie=52)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 52, "a trim with a flag it does not take (NO_HOLE) gets EINVAL")
        request(s, CMD_BLOCK_STATUS, 0, 4096, cookie=53)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 53, "block status without structured replies gets EINVAL")
        request(s, 42, 0, 0, cookie=6)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 6, "an unknown command gets EINVAL")
        request(s, CMD_READ, 0, 512, flags=0x8000, cookie=7)
        err, cookie, _ = reply(s)
        report(err == EINVAL, "an unknown command flag gets EINVAL")
        # several requests in flight: each answered once, with its cookie (in
        # any order: the server may serve them at once)
        for i in range(8):
            request(s, CMD_READ, i * 512, 512, cookie=100 + i)
        cookies = [reply(s, 512)[1] for _ in range(8)]
        report(sorted(cookies) == list(range(100, 108)), "8 pipelined reads answered with their cookies (%s)" % cookies)
        request(s, CMD_FLUSH, 0, 0, cookie=8)
        report(reply(s)[0] == 0, "NBD_CMD_FLUSH succeeds")
        s.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 9, 0, 512))
        report(closed(s), "a request with a wrong magic closes the connection")
    elif what == "structured":
        # args: export size, export name
        size, name = int(args[0]), args[1]
        s = connect(path)
        typ, _ = meta_opt(s, OPT_LIST_META_CONTEXT, name, [])
        report(typ == ERR_INVALID, "NBD_OPT_LIST_META_CONTEXT before structured replies: NBD_REP_ERR_INVALID")
        send_opt(s, OPT_STRUCTURED_REPLY)
        o, typ, _ = read_rep(s)
        report(o == OPT_STRUCTURED_REPLY and typ == REP_ACK, "NBD_OPT_STRUCTURED_REPLY is acknowledged")
        typ, got = meta_opt(s, OPT_LIST_META_CONTEXT, name, [])
        report(typ == REP_ACK and [g[1] for g in got] == ["base:allocation"],
               "NBD_OPT_LIST_META_CONTEXT lists base:allocation (%s)" % got)
        typ, got = meta_opt(s, OPT_LIST_META_CONTEXT, name, ["base:"])
        report(typ == REP_ACK and [g[1] for g in got] == ["base:allocation"], "the query 'base:' lists it too")
        typ, got = meta_opt(s, OPT_SET_META_CONTEXT, "nosuch", ["base:allocation"])
        report(typ == ERR_UNKNOWN, "NBD_OPT_SET_META_CONTEXT on an unknown export: NBD_REP_ERR_UNKNOWN")
        send_opt(s, OPT_SET_META_CONTEXT, struct.pack(">I", 3) + b"vm1" + struct.pack(">II", 1, 99))
        o, typ, _ = read_rep(s)
        report(typ == ERR_INVALID, "a malformed NBD_OPT_SET_META_CONTEXT: NBD_REP_ERR_INVALID")
        typ, got = meta_opt(s, OPT_SET_META_CONTEXT, name, ["x-other:thing", "base:allocation"])
        report(typ == REP_ACK and got == [(1, "base:allocation")],
               "NBD_OPT_SET_META_CONTEXT selects base:allocation, id 1 (%s)" % got)
        typ, _, infos = go(s, name)
        flags = struct.unpack(">H", infos[0][8:10])[0] if 0 in infos else 0
        report(typ == REP_ACK and flags & TF_SEND_DF and flags & TF_SEND_TRIM and flags & TF_SEND_WRITE_ZEROES,
               "NBD_OPT_GO %s: flags %#x offer DF, trim and write zeroes" % (name, flags))
        request(s, CMD_READ, 4096, 8192, flags=FLAG_DF, cookie=11)
        f, typ, cookie, data = chunk(s)
        off = struct.unpack(">Q", data[:8])[0] if len(data) >= 8 else -1
        report(f == REPLY_FLAG_DONE and typ == TYPE_OFFSET_DATA and cookie == 11 and off == 4096 and len(data) == 8 + 8192,
               "a read comes back as one NBD_REPLY_TYPE_OFFSET_DATA chunk with its offset")
        request(s, CMD_READ, 0, 0, cookie=12)
        f, typ, cookie, data = chunk(s)
        report(f == REPLY_FLAG_DONE and typ == TYPE_NONE and cookie == 12, "a read of nothing: NBD_REPLY_TYPE_NONE")
        request(s, CMD_READ, size - 512, 1024, cookie=13)
        err, cookie, msg = any_reply(s)
        report(err == EINVAL and cookie == 13 and "past the end" in msg,
               "a read past the end: an error chunk, EINVAL, with a message ('%s')" % msg)
        request(s, CMD_BLOCK_STATUS, 0, size, cookie=14)
        f, typ, cookie, data = chunk(s)
        ctx = struct.unpack(">I", data[:4])[0]
        ext = [struct.unpack(">II", data[i:i + 8]) for i in range(4, len(data), 8)]
        total = sum(e[0] for e in ext)
        report(f == REPLY_FLAG_DONE and typ == TYPE_BLOCK_STATUS and ctx == 1 and ext and 0 < total <= size
               and all(e[0] > 0 and e[1] in (0, 3) for e in ext),
               "block status: base:allocation extents covering %d of %d bytes (%d extents)" % (total, size, len(ext)))
        request(s, CMD_BLOCK_STATUS, 0, size, flags=FLAG_REQ_ONE, cookie=15)
        f, typ, cookie, data = chunk(s)
        report(typ == TYPE_BLOCK_STATUS and len(data) == 12, "block status with REQ_ONE: one extent")
        for (o2, n2, why) in ((0, 0, "of nothing"), (size - 512, 1024, "past the end")):
            request(s, CMD_BLOCK_STATUS, o2, n2, cookie=16)
            err, cookie, msg = any_reply(s)
            report(err == EINVAL and cookie == 16, "block status %s gets EINVAL (%s)" % (why, msg))
        request(s, CMD_WRITE, 0, 512, flags=FLAG_DF, cookie=17, payload=b"d" * 512)
        err, cookie, msg = any_reply(s)
        report(err == EINVAL and cookie == 17, "a write with DF (a read flag) gets EINVAL")
        request(s, CMD_FLUSH, 0, 0, cookie=18)
        err, cookie, msg = any_reply(s)
        report(err == 0 and cookie == 18, "flush succeeds")
        request(s, CMD_DISC, 0, 0)
        report(closed(s), "NBD_CMD_DISC closes the connection")
    elif what == "read-only":
        # args: export name; cowvold exports it read-only
        s = connect(path)
        typ, _, infos = go(s, args[0])
        flags = struct.unpack(">H", infos[0][8:10])[0] if 0 in infos else 0
        report(typ == REP_ACK and flags & TF_READ_ONLY and not flags & (TF_SEND_TRIM | TF_SEND_WRITE_ZEROES),
               "NBD_OPT_GO %s: read-only, no trim or write zeroes (flags %#x)" % (args[0], flags))
        request(s, CMD_WRITE, 0, 4096, cookie=21, payload=b"r" * 4096)
        err, cookie, _ = reply(s)
        report(err == EPERM and cookie == 21, "a write gets EPERM, its payload skipped (%d)" % err)
        for cmd, n in ((CMD_WRITE_ZEROES, "write zeroes"), (CMD_TRIM, "trim")):
            request(s, cmd, 0, 4096, cookie=22)
            err, cookie, _ = reply(s)
            report(err == EPERM and cookie == 22, "%s gets EPERM" % n)
        request(s, CMD_READ, 0, 4096, cookie=23)
        err, cookie, data = reply(s, 4096)
        report(err == 0 and cookie == 23 and len(data) == 4096, "reads work")
        request(s, CMD_DISC, 0, 0)
        s.close()
    elif what == "silent":
        # connect and say nothing: the server gives up on us
        s = connect(path)
        report(closed(s, timeout=float(args[0])), "a client that chooses no export is closed after a while")
    elif what == "trickle":
        # an option every 0.3 s: busy, but never choosing an export; the
        # handshake timeout (args[0] s) is a deadline for all of it
        limit = float(args[0])
        s = connect(path)
        start = time.time()
        gone = False
        while time.time() - start < limit + 5:
            try:
                send_opt(s, OPT_LIST)
                while read_rep(s)[1] == REP_SERVER:
                    pass
            except (EOFError, ConnectionResetError, BrokenPipeError):
                gone = True
                break
            time.sleep(0.3)
        took = time.time() - start
        report(gone and took < limit + 2, "a client busy with options but choosing no export is closed after %.1f s" % took)
    elif what == "oversized-write":
        s = connect(path)
        go(s, args[0])
        request(s, CMD_WRITE, 0, 64 << 20, payload=b"x" * 4096)
        report(closed(s), "a write of 64 MiB closes the connection")
    elif what == "half-write":
        s = connect(path)
        go(s, args[0])
        # 4096 bytes announced at 8192, 100 sent, then gone
        request(s, CMD_WRITE, 8192, 4096, payload=b"H" * 100)
        s.close()
        report(True, "a client went away in the middle of a write")
    elif what == "policy":
        s = connect(path)
        send_opt(s, OPT_LIST)
        o, typ, data = read_rep(s)
        report(typ == ERR_POLICY, "NBD_OPT_LIST from outside the group: NBD_REP_ERR_POLICY (%s)" % data.decode())
        typ, data, _ = go(s, args[0])
        report(typ == ERR_POLICY, "NBD_OPT_GO from outside the group: NBD_REP_ERR_POLICY")
        send_opt(s, OPT_EXPORT_NAME, args[0].encode())
        report(closed(s), "NBD_OPT_EXPORT_NAME from outside the group: closed")
    elif what == "tls-required":
        # TLS required: every option before STARTTLS but ABORT is refused
        s = connect(path)
        for o, data, name in ((OPT_LIST, b"", "NBD_OPT_LIST"), (OPT_STRUCTURED_REPLY, b"", "NBD_OPT_STRUCTURED_REPLY"),
                              (99, b"junk", "an unknown option")):
            send_opt(s, o, data)
            ro, typ, msg = read_rep(s)
            report(ro == o and typ == ERR_TLS_REQD and b"TLS" in msg,
                   "%s before STARTTLS: NBD_REP_ERR_TLS_REQD (%x: %s)" % (name, typ, msg.decode()))
        for o, name in ((OPT_INFO, "NBD_OPT_INFO"), (OPT_GO, "NBD_OPT_GO")):
            typ, msg, infos = go(s, args[0], o)
            report(typ == ERR_TLS_REQD and not infos, "%s %s before STARTTLS: NBD_REP_ERR_TLS_REQD, nothing told"
                   % (name, args[0]))
        send_opt(s, OPT_STARTTLS, b"x")
        o, typ, _ = read_rep(s)
        report(typ == ERR_INVALID, "NBD_OPT_STARTTLS with data: NBD_REP_ERR_INVALID")
        send_opt(s, OPT_ABORT)
        o, typ, _ = read_rep(s)
        report(typ == REP_ACK and closed(s), "NBD_OPT_ABORT before STARTTLS is acknowledged and closes")
        s = connect(path)
        send_opt(s, OPT_EXPORT_NAME, args[0].encode())
        report(closed(s), "NBD_OPT_EXPORT_NAME before STARTTLS closes the connection (it has no error reply)")
    elif what == "starttls-policy":
        # no TLS here: STARTTLS is refused and the negotiation goes on in plaintext
        s = connect(path)
        send_opt(s, OPT_STARTTLS)
        o, typ, msg = read_rep(s)
        report(o == OPT_STARTTLS and typ == ERR_POLICY, "NBD_OPT_STARTTLS: NBD_REP_ERR_POLICY (%s)" % msg.decode())
        typ, _, _ = go(s, args[0])
        report(typ == REP_ACK, "then NBD_OPT_GO %s works in plaintext" % args[0])
        request(s, CMD_DISC, 0, 0)
        s.close()
    elif what == "starttls-stall":
        # STARTTLS acknowledged, then half a TLS record and silence: the
        # handshake timeout (args[0] s) closes us, and only us
        limit = float(args[0])
        s = connect(path)
        start = time.time()
        send_opt(s, OPT_STARTTLS)
        o, typ, _ = read_rep(s)
        report(typ == REP_ACK, "NBD_OPT_STARTTLS is acknowledged")
        s.sendall(b"\x16\x03\x01\x02")
        open(args[1], "w").close()
        gone = closed(s, timeout=limit + 10)
        took = time.time() - start
        report(gone and took < limit + 3, "a client stalled in the TLS handshake is closed after %.1f s" % took)
    elif what == "hold":
        # keep an export open until the file args[1] exists
        s = connect(path)
        typ, _, _ = go(s, args[0])
        report(typ == REP_ACK, "holding %s open" % args[0])
        open(args[1] + ".ready", "w").close()
        deadline = time.time() + 60
        while not os.path.exists(args[1]) and time.time() < deadline:
            time.sleep(0.05)
        request(s, CMD_DISC, 0, 0)
        s.close()
    else:
        print("unknown scenario " + what)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a broken exchange is a failure, not a traceback
        print("not ok - %s: %s: %s" % (sys.argv[2], type(e).__name__, e))
        sys.exit(1)
