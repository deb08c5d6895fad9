# SPDX-License-Identifier: GPL-2.0-or-later
# A raw NBD client for t-nbd.sh: speaks doc/proto.md of NetworkBlockDevice/nbd
# byte by byte, to send what real clients never do.
#   nbd-raw.py SOCKET SCENARIO [ARGS...]
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
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = (1 << 31) | 1, (1 << 31) | 2, (1 << 31) | 3, (1 << 31) | 6
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
        send_opt(s, OPT_STRUCTURED_REPLY)
        o, typ, _ = read_rep(s)
        report(typ == ERR_UNSUP, "NBD_OPT_STRUCTURED_REPLY gets NBD_REP_ERR_UNSUP for now")
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
        request(s, CMD_TRIM, 0, 4096, cookie=5)
        err, cookie, _ = reply(s)
        report(err == EINVAL, "NBD_CMD_TRIM (not advertised) gets EINVAL")
        request(s, 42, 0, 0, cookie=6)
        err, cookie, _ = reply(s)
        report(err == EINVAL and cookie == 6, "an unknown command gets EINVAL")
        request(s, CMD_READ, 0, 512, flags=0x8000, cookie=7)
        err, cookie, _ = reply(s)
        report(err == EINVAL, "an unknown command flag gets EINVAL")
        # several requests in flight: answered in order, each with its cookie
        for i in range(8):
            request(s, CMD_READ, i * 512, 512, cookie=100 + i)
        cookies = [reply(s, 512)[1] for _ in range(8)]
        report(cookies == list(range(100, 108)), "8 pipelined reads answered with their cookies")
        request(s, CMD_FLUSH, 0, 0, cookie=8)
        report(reply(s)[0] == 0, "NBD_CMD_FLUSH succeeds")
        s.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 9, 0, 512))
        report(closed(s), "a request with a wrong magic closes the connection")
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
