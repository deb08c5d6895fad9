#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers of t-load.sh (the daemon under load):
#   load.py writer NBDSOCK EXPORT OFF LEN PREFILL SEED SECONDS MODEL
#       one NBD connection writing into its own region [OFF, OFF+LEN) of
#       EXPORT for SECONDS: random offsets, sizes from 1 byte to 1 MiB, FUA
#       writes, write-zeroes, flushes, reads checked against the model, up
#       to 4 requests in flight (never overlapping).  The model starts as
#       the region of PREFILL (the volume's content before the load) and
#       changes only when the daemon acknowledges; at the end the whole
#       region is read back and compared, and the model written to MODEL.
#       Prints one JSON line of counts; exits 1 on any error.  SECONDS
#       "nN": one write over the whole region, then N requests.
#   load.py monitor PID CTLSOCK STOPFILE OUT
#       until STOPFILE exists: every second the daemon's VmRSS, threads and
#       open descriptors (from /proc/PID); five times a second the time
#       `status` takes on a new connection to CTLSOCK.  Writes the samples
#       to OUT (JSON) and exits 1 when status failed.
#   load.py rss-figures OUT
#       prints the RSS samples and the status latencies (figures, no check:
#       RSS counts the free memory malloc's arenas keep, up to 8 a core).
#   load.py heap-verdict HEAPFILE REQUESTS MARGIN
#       the leak check: HEAPFILE holds the daemon's heap in use (bytes) at
#       rest after each round of the same work (REQUESTS requests), the
#       first a warm-up; exits 1 when the median growth from one round to
#       the next is above MARGIN bytes (a one-time allocation is one step,
#       a leak is every step).
import json
import os
import random
import select
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
OPT_GO = 7
REP_ACK, REP_INFO = 1, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_WRITE_ZEROES = 0, 1, 2, 3, 6
FLAG_FUA = 1
INFLIGHT = 4


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x:
            raise EOFError("the daemon closed the connection (%d of %d bytes read)" % (len(b), n))
        b += x
    return bytes(b)


def nbd_open(path, export):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    magic, opt, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise RuntimeError("bad NBD greeting")
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    n = export.encode()
    data = struct.pack(">I", len(n)) + n + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    size = None
    while True:
        magic, o, typ, ln = struct.unpack(">QIII", recv_exact(s, 20))
        body = recv_exact(s, ln)
        if magic != REPMAGIC:
            raise RuntimeError("bad option reply magic")
        if typ == REP_INFO and struct.unpack(">H", body[:2])[0] == 0:
            size = struct.unpack(">Q", body[2:10])[0]
        elif typ == REP_ACK:
            return s, size
        elif typ != REP_INFO:
            raise RuntimeError("NBD_OPT_GO %s refused: %x %r" % (export, typ, body))


def writer(args):
    path, export, off, length, prefill, seed, seconds, out = args
    # "n300": 300 requests after one write over the whole region (the same
    # work however fast the machine), else SECONDS
    count = int(seconds[1:]) if seconds.startswith("n") else None
    off, length, seed = int(off), int(length), int(seed)
    seconds = 0.0 if count is not None else float(seconds)
    with open(prefill, "rb") as f:
        f.seek(off)
        model = bytearray(f.read(length))
    model += bytes(length - len(model))  # the prefill may be shorter: zeroes
    rng = random.Random(seed)
    st = {"export": export, "off": off, "len": length, "writes": 0, "fua": 0, "zeroes": 0, "flushes": 0,
          "reads": 0, "bytes": 0, "errors": []}
    s, size = nbd_open(path, export)
    if size is None or off + length > size:
        raise RuntimeError("export %s: size %s, region ends at %d" % (export, size, off + length))
    inflight = {}  # cookie -> (cmd, start, data, expect, length)
    cookie = 0
    rx = bytearray()  # replies received while sending

    def send_all(b):
        # read replies while the daemon cannot take more: a server that
        # is blocked sending a read's data may not read until we read
        view = memoryview(b)
        while view:
            r, w, _ = select.select([s], [s], [], 60)
            if not r and not w:
                raise TimeoutError("the daemon neither reads nor answers for 60 s")
            if r:
                x = s.recv(1 << 20)
                if not x:
                    raise EOFError("the daemon closed the connection")
                rx.extend(x)
            if w:
                view = view[s.send(view):]

    def recv_n(n):
        while len(rx) < n:
            x = s.recv(max(n - len(rx), 1 << 16))
            if not x:
                raise EOFError("the daemon closed the connection (%d of %d bytes read)" % (len(rx), n))
            rx.extend(x)
        b = bytes(rx[:n])
        del rx[:n]
        return b

    def overlaps(a, n):
        return any(c[0] != CMD_FLUSH and a < c[1] + c[4] and c[1] < a + n for c in inflight.values())

    def send(cmd, a, n, flags=0, data=b""):
        nonlocal cookie
        cookie += 1
        at = 0 if cmd == CMD_FLUSH else off + a  # a flush's offset and length: zero (the spec's MUST)
        send_all(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie, at, n) + data)
        inflight[cookie] = (cmd, a, data, bytes(model[a:a + n]) if cmd == CMD_READ else None, n)

    def collect():
        magic, err, ck = struct.unpack(">IIQ", recv_n(16))
        if magic != REPLY_MAGIC or ck not in inflight:
            raise RuntimeError("bad reply: magic %x cookie %d" % (magic, ck))
        cmd, a, data, expect, n = inflight.pop(ck)
        got = recv_n(n) if cmd == CMD_READ and err == 0 else b""
        what = {CMD_READ: "read", CMD_WRITE: "write", CMD_FLUSH: "flush", CMD_WRITE_ZEROES: "write-zeroes"}[cmd]
        if err:
            st["errors"].append("%s of %d bytes at %d: NBD error %d" % (what, n, off + a, err))
            return
        if cmd == CMD_WRITE:
            model[a:a + n] = data
        elif cmd == CMD_WRITE_ZEROES:
            model[a:a + n] = bytes(n)
        elif cmd == CMD_READ and got != expect:
            bad = next(i for i in range(n) if got[i] != expect[i])
            st["errors"].append("read of %d bytes at %d differs from what was acknowledged, first at byte %d"
                                % (n, off + a, off + a + bad))

    if count is not None:
        for a in range(0, length, 1 << 20):
            n = min(1 << 20, length - a)
            send(CMD_WRITE, a, n, 0, rng.randbytes(n))
            st["writes"] += 1
            st["bytes"] += n
            collect()
    end = time.monotonic() + seconds
    while (count is None and time.monotonic() < end or count is not None and count > 0) and not st["errors"]:
        if count is not None:
            count -= 1
        while len(inflight) >= INFLIGHT:
            collect()
        p = rng.random()
        k = rng.random()
        if k < 0.15:
            n = rng.randint(1, 4096)  # partial chunks
        elif k < 0.55:
            n = 4096 * rng.randint(1, 4)
        elif k < 0.95:
            n = rng.randint(1, 256 * 1024)
        else:
            n = rng.randint(256 * 1024, 1024 * 1024)
        n = min(n, length)
        a = rng.randrange(0, length - n + 1)
        if k < 0.55 and rng.random() < 0.7:
            a -= a % 4096  # mostly chunk-aligned, as filesystems write
        while overlaps(a, n):
            collect()
        if p < 0.04:
            while inflight:  # a flush covers what was acknowledged before it
                collect()
            send(CMD_FLUSH, 0, 0)
            st["flushes"] += 1
        elif p < 0.10:
            send(CMD_WRITE_ZEROES, a, n)
            st["zeroes"] += 1
        elif p < 0.25:
            send(CMD_READ, a, n)
            st["reads"] += 1
        else:
            fua = rng.random() < 0.05
            send(CMD_WRITE, a, n, FLAG_FUA if fua else 0, rng.randbytes(n))
            st["writes"] += 1
            st["fua"] += fua
            st["bytes"] += n
    while inflight:
        collect()
    send(CMD_FLUSH, 0, 0)
    collect()
    # the whole region back, against the model
    for a in range(0, length, 1 << 20):
        send(CMD_READ, a, min(1 << 20, length - a))
        collect()
    send_all(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_DISC, 0, 0, 0))
    s.close()
    with open(out, "wb") as f:
        f.write(model)
    st["errors"] = st["errors"][:5]
    print(json.dumps(st), flush=True)
    return 1 if st["errors"] else 0


def proc_sample(pid):
    rss = threads = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads, len(os.listdir("/proc/%d/fd" % pid))


def status_once(path):
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(path)
        t1 = time.monotonic()
        s.sendall(b'{"v": 1, "id": 1, "op": "status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            x = s.recv(65536)
            if not x:
                raise EOFError("connection closed before the answer")
            buf += x
    finally:
        s.close()
    ans = json.loads(buf)
    if not ans.get("ok"):
        raise RuntimeError("status failed: %s" % ans)
    return t1 - t0, time.monotonic() - t0


def monitor(args):
    pid, path, stopfile, out = int(args[0]), args[1], args[2], args[3]
    samples, lat, conn, errors = [], [], [], []
    t0 = time.monotonic()
    next_proc = t0
    while not os.path.exists(stopfile):
        now = time.monotonic()
        if now >= next_proc:
            rss, thr, fds = proc_sample(pid)
            samples.append({"t": round(now - t0, 2), "rss_kb": rss, "threads": thr, "fds": fds})
            next_proc += 1.0
        try:
            c, t = status_once(path)
            conn.append(c)
            lat.append(t)
        except Exception as e:  # noqa: BLE001 -- every failure is reported
            errors.append(str(e))
        time.sleep(0.2)
    with open(out, "w") as f:
        json.dump({"samples": samples, "status_latency": lat, "status_connect": conn, "errors": errors[:5],
                   "status_failures": len(errors)}, f)
    return 1 if errors else 0


def rss_figures(args):
    d = json.load(open(args[0]))
    rss = [x["rss_kb"] for x in d["samples"]]
    lat = sorted(d["status_latency"])
    if not rss or not lat:
        print("no RSS or status samples")
        return 1
    half = max(len(rss) // 2, 1)
    print("RSS start %d KiB, first half's peak %d KiB, second half's peak %d KiB, end %d KiB; "
          "status: %d samples, median %.1f ms, max %.1f ms"
          % (rss[0], max(rss[:half]), max(rss[half:] or rss), rss[-1], len(lat), 1000 * lat[len(lat) // 2],
             1000 * lat[-1]))
    print("RSS each second (MiB): " + " ".join("%.0f" % (x / 1024) for x in rss))
    return 0


def heap_verdict(args):
    heap = [int(x) for x in open(args[0]).read().split()]
    per_round, margin = int(args[1]), int(args[2])
    if len(heap) < 4:
        print("too few rounds (%d): the first is the warm-up, then at least three" % len(heap))
        return 1
    steps = sorted(b - a for a, b in zip(heap[1:], heap[2:]))
    mid = len(steps) // 2
    median = steps[mid] if len(steps) % 2 else (steps[mid - 1] + steps[mid]) / 2
    print("heap in use at rest after each round (bytes): " + " ".join(str(x) for x in heap))
    print("growth a round after the warm-up: median %d bytes (%.1f a request of %d; margin %d), steps %s"
          % (median, median / per_round, per_round, margin, steps))
    return 0 if median <= margin else 1


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"writer": writer, "monitor": monitor, "rss-figures": rss_figures, "heap-verdict": heap_verdict}[cmd]
    sys.exit(fn(args))


if __name__ == "__main__":
    main()
