#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The model test of cowvold (t-model.sh), and small helpers for t-restart.sh.

  model.py run                      the model test; t-model.sh sets COWVOL,
                                    COWVOLD, STATE, SOCK, T (COWVOL_MODEL_SEED,
                                    COWVOL_MODEL_STEPS choose the run)
  model.py gen SEED BYTES OUT...    BYTES pseudo-random bytes made from SEED
                                    (several triples: one Python start)
  model.py oldnew OLD NEW GOT [BS]  each BS-byte block (default 4096) of GOT
                                    equals OLD's or NEW's; prints "old N new M"
                                    for the blocks where OLD and NEW differ
                                    (else the first bad block, and exit 1)

The model test drives the real cowvol CLI against the real cowvold: a seeded
random sequence of origin writes, snapshots, snapshot writes, restores
(waited or not, --keep or not), removals, parallel writes, clean restarts and
kill -9 at rest, on four small volumes, one of them (d) a chain of dozens of
snapshots; and full stores: with growth switched off for a moment (SIGHUP),
a snapshot with a tiny store takes more copies than it can hold, turns
invalid and stays a link of the chain that older snapshots read through.
The model keeps each volume's and each snapshot's bytes, and each snapshot's set of chunks that were copied or
written (its exceptions).  After every step every volume and snapshot must
read back equal to the model, `cowvol diff` must list exactly the snapshot's
exception chunks (so it covers every chunk where volume and snapshot differ),
and `cowvol list --json` must agree (names, states, exception counts, store
files), and one unaligned `cat --offset --length` must match (these reads go
through the CLI, four at a time, on the first step and every tenth; on the
others through the control protocol itself, over one connection).  A parallel
step takes a snapshot, runs several writes at once (byte-disjoint, often
sharing chunks) beside a cat of that snapshot, takes another, and runs more
(some into the first snapshot): each snapshot's exception count must equal
the distinct chunks written, so a chunk is copied once whatever the races.
Right after `restore --no-wait` the volume must already read as the
snapshot, and one more request (write, snapshot write, snap, rm) is either
refused ("being restored") or done after the restore's end.  Restarts must
exit 0 and keep `list --json` the same; with the daemon down every store
passes `cowvol store check`.  The first failing step stops the run with the
step, the tail of the history and the first differing offset.
"""
import array
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

MAX_SNAPS = 4  # per volume (d's chain is longer); more slows every step down
MAX_SNAPS_D = 32  # d: dozens of snapshots, a timeline's chain


class Failure(Exception):
    pass


def say(s):
    print(s, flush=True)


# --- the daemon and the CLI ---------------------------------------------------


class Ctl:
    """One connection to cowvold's control socket, in the protocol's own
    terms (doc/protocol.md): requests in, results out, a descriptor passed
    with cat.  Reconnects after a restart."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b""
        self.id = 0

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None
        self.buf = b""

    def call(self, op, args, fd=None):
        for attempt in (0, 1):
            if not self.sock:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(120)
                self.sock.connect(self.path)
            self.id += 1
            line = (json.dumps({"v": 1, "id": self.id, "op": op, "args": args}) + "\n").encode()
            try:
                if fd is None:
                    self.sock.sendall(line)
                else:
                    self.sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
                while b"\n" not in self.buf:
                    chunk = self.sock.recv(1 << 20)
                    if not chunk:
                        raise ConnectionResetError("cowvold closed the connection")
                    self.buf += chunk
            except (BrokenPipeError, ConnectionResetError):
                self.close()  # a connection from before a restart: once more
                if attempt:
                    raise
                continue
            raw, self.buf = self.buf.split(b"\n", 1)
            answer = json.loads(raw)
            if answer.get("id") != self.id:
                raise Failure(f"{op}: the answer has id {answer.get('id')}, the request {self.id}")
            if not answer.get("ok"):
                e = answer.get("error") or {}
                raise Failure(f"{op} {json.dumps(args)}: {e.get('code')}: {e.get('message')}")
            return answer.get("result")

    def cat(self, args):
        fd = os.memfd_create("cat")
        try:
            got = self.call("cat", args, fd)
            os.lseek(fd, 0, os.SEEK_SET)
            data = b""
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                data += b
            if got.get("bytes") != len(data):
                raise Failure(f"cat {json.dumps(args)} answered {got.get('bytes')} bytes, wrote {len(data)}")
            return data
        finally:
            os.close(fd)


class Env:
    def __init__(self):
        self.cowvol = os.environ["COWVOL"]
        self.cowvold = os.environ["COWVOLD"]
        self.state = os.environ["STATE"]
        self.sock = os.environ["SOCK"]
        self.tmp = os.environ["T"]
        self.log = os.path.join(self.tmp, "daemon.log")
        self.conf = os.path.join(self.tmp, "model.conf")
        self.threshold = 70
        with open(self.conf, "w") as f:
            f.write("autoextend_threshold = 70\n")
        self.pidfile = os.path.join(self.tmp, "model-daemon.pid")
        self.daemon = None
        self.nwrite = 0
        self.ctl = Ctl(self.sock)

    def start(self):
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen(
                [self.cowvold, "--state-dir", self.state, "--socket", self.sock, "--config", self.conf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        with open(self.pidfile, "w") as f:
            f.write(str(self.daemon.pid))
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(self.sock) and self.cv("status").returncode == 0:
                return
            if self.daemon.poll() is not None:
                rc = self.daemon.returncode
                self._reaped()
                raise Failure(f"cowvold exited with {rc} while starting (daemon log below)")
            time.sleep(0.05)
        raise Failure("cowvold did not answer 'status' within 30 s of starting")

    def autoextend(self, threshold):
        """Set autoextend_threshold through the config file and SIGHUP; back
        once the log says the reload applied it."""
        line = f"Reload: autoextend_threshold {self.threshold} -> {threshold}"
        with open(self.log, "rb") as f:
            seen = f.read().count(line.encode())
        with open(self.conf, "w") as f:
            f.write(f"autoextend_threshold = {threshold}\n")
        self.daemon.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(self.log, "rb") as f:
                if f.read().count(line.encode()) > seen:
                    self.threshold = threshold
                    return
            time.sleep(0.02)
        raise Failure(f"SIGHUP: the log does not say {line!r} within 30 s")

    def _reaped(self):
        self.ctl.close()
        self.daemon = None
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass

    def stop(self):
        """SIGTERM; the exit code, or 'hung' after 120 s (then killed)."""
        d = self.daemon
        self.ctl.close()  # ours goes first: the stop is not about an idle client
        d.send_signal(signal.SIGTERM)
        try:
            rc = d.wait(timeout=120)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
            rc = "hung"
        self._reaped()
        return rc

    def kill9(self):
        self.daemon.kill()
        self.daemon.wait()
        self._reaped()

    def cv(self, *args, stdin=subprocess.DEVNULL, data=None):
        if data is not None:
            return subprocess.run([self.cowvol, *args], input=data, capture_output=True)
        return subprocess.run([self.cowvol, *args], stdin=stdin, capture_output=True)

    def cv_ok(self, *args):
        r = self.cv(*args)
        if r.returncode != 0:
            raise Failure(f"cowvol {' '.join(args)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout.decode(errors="replace")

    def cat(self, target, offset=None, length=None):
        """`cowvol cat TARGET > file`, the file's bytes."""
        path = os.path.join(self.tmp, "cat.out")
        args = [self.cowvol, "cat", target]
        if offset is not None:
            args += ["--offset", str(offset)]
        if length is not None:
            args += ["--length", str(length)]
        with open(path, "wb") as f:
            r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise Failure(f"cowvol cat {target}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        with open(path, "rb") as f:
            return f.read()

    def cv_many(self, calls, jobs=4):
        """Run several read-only cowvol calls, a few at a time (the daemon
        serves them together); their outputs in order.  Any failure is one."""
        outs = [os.path.join(self.tmp, f"many{i}.out") for i in range(len(calls))]
        running = []
        failed = []

        def reap(p, i):
            err = p.communicate()[1]
            if p.returncode != 0:
                failed.append(f"cowvol {' '.join(calls[i])}: exit {p.returncode}: "
                              f"{err.decode(errors='replace').strip()}")

        for i, args in enumerate(calls):
            if len(running) >= jobs:
                reap(*running.pop(0))
            with open(outs[i], "wb") as f:
                running.append((subprocess.Popen([self.cowvol, *args], stdin=subprocess.DEVNULL, stdout=f,
                                                 stderr=subprocess.PIPE), i))
        for p, i in running:
            reap(p, i)
        if failed:
            raise Failure("; ".join(failed))
        got = []
        for o in outs:
            with open(o, "rb") as f:
                got.append(f.read())
        return got

    def write_args(self, target, off, data, mode):
        """Arguments for subprocess: stdin a regular file, or a pipe (the CLI fills a memfd)."""
        args = [self.cowvol, "write", target, "--offset", str(off)]
        if mode == "file":
            self.nwrite += 1
            path = os.path.join(self.tmp, f"w{self.nwrite % 64}.bin")
            with open(path, "wb") as f:
                f.write(data)
            return args, path
        return args, None

    def write(self, target, off, data, mode):
        args, path = self.write_args(target, off, data, mode)
        if path:
            with open(path, "rb") as f:
                return subprocess.run(args, stdin=f, capture_output=True)
        return subprocess.run(args, input=data, capture_output=True)

    def list_json(self):
        return json.loads(self.cv_ok("list", "--json"))


# --- the model ----------------------------------------------------------------------


def first_difference(want, got):
    n = min(len(want), len(got))
    if want[:n] == got[:n]:
        return n  # one is a prefix of the other
    lo, hi = 0, n  # binary search on equal prefixes (fast for big buffers)
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        if want[lo:mid] == got[lo:mid]:
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if want[i] != got[i]:
            return i
    return hi


def compare(what, want, got, chunk):
    if want == got:
        return
    i = first_difference(want, got)
    nbad = sum(1 for c in range((max(len(want), len(got)) + chunk - 1) // chunk)
               if want[c * chunk:(c + 1) * chunk] != got[c * chunk:(c + 1) * chunk])
    raise Failure(f"{what}: read back differs from the model: first differing byte at offset {i} "
                  f"(chunk {i // chunk}, +{i % chunk}); want {bytes(want[i:i + 12]).hex()} got "
                  f"{bytes(got[i:i + 12]).hex()}; {nbad} chunk(s) differ; length want {len(want)} got {len(got)}")


def chunks_of(off, n, chunk):
    return set(range(off // chunk, (off + n - 1) // chunk + 1)) if n > 0 else set()


def chunk_set_text(s):
    s = sorted(s)
    return ",".join(map(str, s[:12])) + ("..." if len(s) > 12 else "")


class Snap:
    def __init__(self, name, data):
        self.name = name
        self.data = bytearray(data)
        self.exc = set()  # the chunks its own store holds (its exceptions)
        self.valid = True  # an invalid one (a full store) stays a link of the chain
        self.cap = None  # data chunks its store can take (None: autoextend grows it)


class Vol:
    """A volume and its snapshots, a chain in self.snaps' order (oldest
    first): a snapshot's chunk that its store lacks is the next newer one's
    (DESIGN.md, "Snapshot chains"), so the model follows where each copy goes."""
    def __init__(self, name, size, chunk, data, max_snaps=MAX_SNAPS):
        self.name = name
        self.size = size
        self.chunk = chunk
        self.data = bytearray(data)
        self.snaps = {}
        self.max_snaps = max_snaps

    def valid_snaps(self):
        return [n for n, s in self.snaps.items() if s.valid]

    def chain(self):
        return list(self.snaps.values())

    def older(self, s):
        c = self.chain()
        i = c.index(s)
        return c[i - 1] if i > 0 else None

    def since(self, s):
        """The chunks that changed since @s: its store's and every newer one's."""
        c = self.chain()
        out = set()
        for x in c[c.index(s):]:
            out |= x.exc
        return out

    def give(self, start, cs):
        """Chunks @cs are about to change for @start and the older ones:
        the walk from @start to the oldest stops, for each chunk, at the
        first store that holds it; the first valid one takes the rest.  A
        store that cannot take them all is invalid: it forgets this
        write's copies, keeps what it held (read as a link), and the walk
        goes on below it."""
        c = self.chain()
        left = set(cs)
        for t in reversed(c[:c.index(start) + 1]):
            left -= t.exc
            if not left:
                return
            if not t.valid:
                continue
            if t.cap is not None and len(t.exc) + len(left) > t.cap:
                t.valid = False
                continue
            t.exc |= left
            return

    def origin_written(self, off, n):
        # one copy, into the newest valid snapshot that lacks the chunk
        if self.snaps:
            self.give(self.chain()[-1], chunks_of(off, n, self.chunk))

    def snap_written(self, s, off, n):
        # the older ones first keep what they read through @s
        cs = chunks_of(off, n, self.chunk)
        o = self.older(s)
        if o:
            self.give(o, cs)
        s.exc |= cs

    def removed(self, s):
        # the older ones take what they read through @s
        o = self.older(s)
        if o:
            self.give(o, s.exc)
        del self.snaps[s.name]

    def restored(self, s, keep):
        # the origin's old chunks go to the newer ones that lack them (the
        # walk from the newest stops at @s at the latest); then, if @s was
        # not the newest, the older ones take what they read through @s
        # (else they read it on the origin now); @s is the newest, its
        # store empty (dropped without --keep)
        self.give(self.chain()[-1], self.since(s))
        o = self.older(s)
        if o and s is not self.chain()[-1]:
            self.give(o, s.exc)
        self.data = bytearray(s.data)
        del self.snaps[s.name]
        if keep:
            s.exc = set()
            self.snaps[s.name] = s


class ModelTest:
    def __init__(self, env, seed, steps):
        self.env = env
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.vols = {}
        self.hist = []
        self.nsnap = 0
        self.step = 0
        self.counts = {}

    def note(self, s):
        self.hist.append(f"step {self.step}: {s}")

    # --- checks --------------------------------------------------------------

    def verify(self):
        env = self.env
        # the reads go through the CLI on the first step and every tenth
        # (four at a time, LeakSanitizer on), else in the protocol's own
        # terms over one connection: the daemon answers the same requests,
        # without ~20 sanitizer processes a step
        cli = self.step <= 1 or self.step % 10 == 0
        lj = env.list_json() if cli else env.ctl.call("list", {})
        listed = {v["name"]: v for v in lj["volumes"]}
        if set(listed) != set(self.vols):
            raise Failure(f"list shows volumes {sorted(listed)}, the model has {sorted(self.vols)}")
        nstores = 0
        reads = []  # (cli args, (op, args), check): every cat and diff of this step
        for v in self.vols.values():
            lv = listed[v.name]
            if lv["size"] != v.size or lv["chunk_size"] != v.chunk or lv["restore"] is not None \
                    or lv["state"] != "active":
                raise Failure(f"list --json for {v.name}: size {lv['size']} chunk {lv['chunk_size']} "
                              f"restore {lv['restore']} state {lv['state']}; want {v.size} {v.chunk} None active")
            ls = {s["name"]: s for s in lv["snapshots"]}
            if set(ls) != set(v.snaps):
                raise Failure(f"list shows snapshots {sorted(ls)} of {v.name}; the model has {sorted(v.snaps)}")
            nstores += len(v.snaps)
            reads.append((["cat", v.name], ("cat", {"target": v.name}),
                          lambda out, v=v: compare(v.name, v.data, out, v.chunk)))
            for s in v.snaps.values():
                t = f"{v.name}@{s.name}"
                if not s.valid:
                    # a full store: invalid, listed so, no exceptions of
                    # its own to show; its table stays a link of the chain
                    l = ls[s.name]
                    if l["state"] != "invalid" or "overflow" not in (l["reason"] or "") or l["exceptions"]:
                        raise Failure(f"{t} lists as {l['state']} ({l['reason']}), {l['exceptions']} exceptions; "
                                      f"want invalid (overflow), 0")
                    continue
                if ls[s.name]["state"] != "active":
                    raise Failure(f"{t} is {ls[s.name]['state']} ({ls[s.name]['reason']})")
                reads.append((["cat", t], ("cat", {"target": t}),
                              lambda out, t=t, v=v, s=s: compare(t, s.data, out, v.chunk)))
                reads.append((["diff", t, "--json"], ("diff", {"target": t}),
                              lambda d, v=v, s=s, l=ls[s.name]: self.check_diff(v, s, l, d)))
        reads.append(self.partial_read())
        if cli:
            outs = env.cv_many([a for a, _, _ in reads])
            for (args, _, check), out in zip(reads, outs):
                check(json.loads(out) if args[0] == "diff" else out)
        else:
            for _, (op, args), check in reads:
                check(env.ctl.cat(args) if op == "cat" else env.ctl.call(op, args))
        stores = [f for f in os.listdir(os.path.join(env.state, "stores")) if not f.startswith(".")]
        if len(stores) != nstores:
            raise Failure(f"{len(stores)} files in the state's stores/ folder for {nstores} snapshots")

    def check_diff(self, v, s, listed, d):
        t = f"{v.name}@{s.name}"
        got = set()
        total = 0
        prev_end = -1
        for r in d["ranges"]:
            off, n = r["offset"], r["length"]
            end = off + n
            if n <= 0 or off % v.chunk or (end % v.chunk and end != v.size) or end > v.size or off <= prev_end:
                raise Failure(f"diff {t}: range {off}+{n} is not chunk-aligned, sorted, disjoint and "
                              f"inside the volume (chunk {v.chunk}, size {v.size})")
            prev_end = end
            got |= chunks_of(off, n, v.chunk)
            total += n
        if d["bytes"] != total or d["chunk_size"] != v.chunk:
            raise Failure(f"diff {t}: bytes {d['bytes']} (ranges sum to {total}), chunk_size {d['chunk_size']}")
        differ = {c for c in range((v.size + v.chunk - 1) // v.chunk)
                  if v.data[c * v.chunk:(c + 1) * v.chunk] != s.data[c * v.chunk:(c + 1) * v.chunk]}
        if differ - got:
            raise Failure(f"diff {t} misses chunks where volume and snapshot differ: {chunk_set_text(differ - got)}")
        want = v.since(s)
        if got != want:
            raise Failure(f"diff {t} lists chunks {chunk_set_text(got)}; the chunks its store and the newer ones "
                          f"hold are {chunk_set_text(want)} (extra: {chunk_set_text(got - want)}; "
                          f"missing: {chunk_set_text(want - got)})")
        if listed["exceptions"] != len(s.exc):
            raise Failure(f"list --json: {t} has {listed['exceptions']} exceptions; its store must hold "
                          f"{len(s.exc)} chunks ({chunk_set_text(s.exc)})")

    def partial_read(self):
        """One unaligned `cat --offset --length` of a random target: its
        arguments and its check."""
        rng = self.rng
        v = rng.choice(list(self.vols.values()))
        names = [None] + v.valid_snaps()
        sname = rng.choice(names)
        data = v.data if sname is None else v.snaps[sname].data
        t = v.name if sname is None else f"{v.name}@{sname}"
        off = rng.randint(0, v.size)
        length = rng.choice([rng.randint(0, 3 * v.chunk), rng.randint(0, v.size), v.size + 1000])
        return (["cat", t, "--offset", str(off), "--length", str(length)],
                ("cat", {"target": t, "offset": off, "length": length}),
                lambda got: compare(f"cat {t} --offset {off} --length {length}", data[off:off + length],
                                    got, v.chunk))

    # --- choices ---------------------------------------------------------------

    def pick_range(self, size, chunk):
        rng = self.rng
        r = rng.random()
        if r < 0.2:  # chunk-aligned
            nch = (size + chunk - 1) // chunk
            c = rng.randrange(nch)
            k = rng.randint(1, min(4, nch - c))
            off = c * chunk
            return off, min(k * chunk, size - off)
        if r < 0.45:
            n = rng.randint(1, 512)
        elif r < 0.75:
            n = rng.randint(1, 3 * chunk)
        elif r < 0.92:
            n = rng.randint(1, size // 2)
        else:
            n = rng.randint(size // 2, size)
        n = min(n, size)
        if rng.random() < 0.5 and size > chunk:  # across a chunk boundary
            b = chunk * rng.randint(1, (size - 1) // chunk)
            off = b - rng.randint(1, min(n, b))
            off = max(0, min(off, size - n))
        else:
            off = rng.randint(0, size - n)
        return off, n

    def pick_vol(self, need_snap=False, room=0):
        # room 0 asks for no snapshot room: any volume will do
        vs = [v for v in self.vols.values()
              if (not need_snap or v.valid_snaps()) and (room == 0 or len(v.snaps) + room <= v.max_snaps)]
        return self.rng.choice(vs) if vs else None

    # --- operations ------------------------------------------------------------

    def do_write(self, v, sname=None, rng_=None):
        off, n = rng_ if rng_ else self.pick_range(v.size, v.chunk)
        data = self.rng.randbytes(n)
        mode = self.rng.choice(["file", "pipe"])
        t = v.name if sname is None else f"{v.name}@{sname}"
        self.note(f"write {t} --offset {off} ({n} bytes from a {mode})")
        r = self.env.write(t, off, data, mode)
        if r.returncode != 0 or r.stdout:
            raise Failure(f"cowvol write {t} --offset {off} ({n} bytes): exit {r.returncode}, "
                          f"stdout {r.stdout[:80]!r}, stderr {r.stderr.decode(errors='replace').strip()}")
        if sname is None:
            v.data[off:off + n] = data
            v.origin_written(off, n)
        else:
            s = v.snaps[sname]
            s.data[off:off + n] = data
            v.snap_written(s, off, n)
        return f"write {t} {off}+{n}"

    def op_write(self):
        return self.do_write(self.pick_vol())

    def op_snap_write(self):
        v = self.pick_vol(need_snap=True)
        if not v:
            return self.op_snap()
        return self.do_write(v, self.rng.choice(v.valid_snaps()))

    def op_write_past_end(self):
        v = self.pick_vol()
        rng = self.rng
        n = rng.randint(1, 2 * v.chunk)
        off = rng.randint(max(0, v.size - n + 1), v.size + rng.choice([0, 0, 4096]))
        targets = [v.name] + [f"{v.name}@{s}" for s in v.valid_snaps()]
        t = rng.choice(targets)
        self.note(f"write {t} --offset {off} ({n} bytes, past the end of {v.size})")
        r = self.env.write(t, off, rng.randbytes(n), "pipe")
        err = r.stderr.decode(errors="replace")
        if r.returncode != 1 or "past the end" not in err:
            raise Failure(f"a write past the end of {t} ({n} bytes at {off}, size {v.size}): exit "
                          f"{r.returncode}, stderr {err.strip()!r}; want exit 1, 'past the end'")
        return f"write past the end of {t} refused"

    def snap(self, v, name=None, explicit=None):
        """Take a snapshot; name None: the daemon's timestamp name."""
        args = ["snap", v.name if name is None else f"{v.name}@{name}"]
        if explicit:
            args += ["--store-size", str(explicit)]
        self.note("cowvol " + " ".join(args))
        out = self.env.cv_ok(*args)
        m = re.match(r"Created snapshot ([^@\s]+)@(\S+) \(store [^)]*\)", out)
        if not m or m.group(1) != v.name or (name is not None and m.group(2) != name):
            raise Failure(f"snap printed {out.strip()!r}")
        if name is None:
            name = m.group(2)
            if not re.fullmatch(r"\d{8}T\d{6}Z", name):
                raise Failure(f"the default snapshot name {name!r} is not a UTC timestamp YYYYMMDDTHHMMSSZ")
        v.snaps[name] = Snap(name, v.data)
        # the store's size: as asked, or 20 % of the volume, at least 1 MiB; whole chunks
        want = explicit if explicit else max(v.size // 5, 1 << 20)
        want = (want + v.chunk - 1) // v.chunk * v.chunk
        lv = self.env.list_json()["volumes"]
        got = [s for x in lv if x["name"] == v.name for s in x["snapshots"] if s["name"] == name]
        if not got or got[0]["store_size"] != want or got[0]["exceptions"] != 0:
            raise Failure(f"the new snapshot {v.name}@{name} lists as {got}; want store_size {want}, 0 exceptions")
        return name

    def op_snap(self):
        v = self.pick_vol(room=1)
        if not v:
            return self.op_rm()
        rng = self.rng
        explicit = None
        if rng.random() < 0.5:
            # big enough for every chunk: header, metadata areas, data
            nch = (v.size + v.chunk - 1) // v.chunk
            epa = v.chunk // 16
            need = (1 + (nch + epa - 1) // epa + nch) * v.chunk
            explicit = rng.randint(need, 2 * need)
        stamped = any(re.fullmatch(r"\d{8}T\d{6}Z", s) for s in v.snaps)
        if not stamped and rng.random() < 0.15:
            name = self.snap(v, None, explicit)
        else:
            self.nsnap += 1
            name = self.snap(v, f"s{self.nsnap}", explicit)
        return f"snap {v.name}@{name}" + (f" --store-size {explicit}" if explicit else "")

    def op_rm(self):
        v = self.pick_vol(need_snap=True)
        if not v:
            return self.op_write()
        s = self.rng.choice(list(v.snaps))
        self.note(f"rm {v.name}@{s}")
        out = self.env.cv_ok("rm", f"{v.name}@{s}")
        if out.strip() != f"Removed {v.name}@{s}":
            raise Failure(f"rm printed {out.strip()!r}")
        v.removed(v.snaps[s])
        return f"rm {v.name}@{s}"

    def wait_restore(self, v, what):
        deadline = time.time() + 120
        while time.time() < deadline:
            lv = [x for x in self.env.list_json()["volumes"] if x["name"] == v.name][0]
            if lv["restore"] is None:
                return
            time.sleep(0.05)
        raise Failure(f"{what}: the restore of {v.name} did not end within 120 s")

    def op_restore(self):
        v = self.pick_vol(need_snap=True)
        if not v:
            return self.op_snap()
        rng = self.rng
        s = v.snaps[rng.choice(v.valid_snaps())]
        keep = rng.random() < 0.5
        nowait = rng.random() < 0.35
        t = f"{v.name}@{s.name}"
        args = ["restore", t] + (["--keep"] if keep else []) + (["--no-wait"] if nowait else [])
        self.note("cowvol " + " ".join(args))
        out = self.env.cv_ok(*args)
        if not nowait and out.strip() != f"Restored {v.name} from {t}":
            raise Failure(f"restore printed {out.strip()!r}")
        late = None
        if nowait:
            # while it may still run, the volume reads as the snapshot, the
            # others as before; then one more request: refused while the
            # restore runs, or done after its end
            compare(f"{v.name} during its restore from {t}", s.data, self.env.cat(v.name), v.chunk)
            for o in v.snaps.values():
                if o is not s and o.valid:
                    compare(f"{v.name}@{o.name} during the restore from {t}", o.data,
                            self.env.cat(f"{v.name}@{o.name}"), v.chunk)
            late = self.late_request(v, s, keep)
            self.wait_restore(v, "restore --no-wait")
        v.restored(s, keep)
        if late:
            late()
        return " ".join(args)

    def late_request(self, v, s, keep):
        """A write, snapshot write, snap or rm just after restore --no-wait;
        returns what it did to the model after the restore, or None."""
        rng = self.rng
        kind = rng.choice(["write", "swrite", "snap", "rm"])
        sname = rng.choice(list(v.snaps) if kind == "rm" else v.valid_snaps())
        off, n = self.pick_range(v.size, v.chunk)
        data = rng.randbytes(n)
        self.nsnap += 1
        new = f"s{self.nsnap}"
        if kind == "write":
            r = self.env.write(v.name, off, data, "pipe")
            what = f"write {v.name} --offset {off} ({n} bytes)"
        elif kind == "swrite":
            r = self.env.write(f"{v.name}@{sname}", off, data, "pipe")
            what = f"write {v.name}@{sname} --offset {off} ({n} bytes)"
        elif kind == "snap" and len(v.snaps) < v.max_snaps:
            r = self.env.cv("snap", f"{v.name}@{new}")
            what = f"snap {v.name}@{new}"
        else:
            kind = "rm"
            r = self.env.cv("rm", f"{v.name}@{sname}")
            what = f"rm {v.name}@{sname}"
        err = r.stderr.decode(errors="replace").strip()
        if r.returncode == 1 and "being restored" in err:
            self.note(f"{what} during the restore: refused")
            self.counts["late request refused"] = self.counts.get("late request refused", 0) + 1
            return None
        if r.returncode == 1 and kind in ("swrite", "rm") and sname == s.name and not keep \
                and "no snapshot named" in err:
            self.note(f"{what} during the restore: the snapshot was consumed already")
            return None
        if r.returncode != 0:
            raise Failure(f"{what} just after restore --no-wait of {v.name}@{s.name}: exit {r.returncode}, "
                          f"{err!r}; want success (the restore had ended) or 'being restored'")
        self.note(f"{what} during the restore: done (the restore had ended)")
        self.counts["late request done"] = self.counts.get("late request done", 0) + 1

        def apply():
            if kind == "write":
                v.data[off:off + n] = data
                v.origin_written(off, n)
            elif kind == "swrite":
                x = v.snaps[sname]
                x.data[off:off + n] = data
                v.snap_written(x, off, n)
            elif kind == "snap":
                v.snaps[new] = Snap(new, v.data)
            else:
                v.removed(v.snaps[sname])
        return apply

    def check_stores_offline(self, listed):
        """With the daemon down every store passes `store check`, but for
        those @listed (list --json) as invalid: check finds them marked so."""
        invalid = {os.path.basename(s["store"]) for v in listed["volumes"] for s in v["snapshots"]
                   if s["state"] == "invalid"}
        d = os.path.join(self.env.state, "stores")
        for f in sorted(os.listdir(d)):
            if f.endswith(".cow"):
                r = self.env.cv("store", "check", os.path.join(d, f))
                if f in invalid:
                    if r.returncode != 1 or b"marked invalid" not in r.stdout + r.stderr:
                        raise Failure(f"cowvol store check {f} (an invalid snapshot's) with the daemon stopped: "
                                      f"exit {r.returncode}: {(r.stdout + r.stderr).decode(errors='replace').strip()}"
                                      f"; want exit 1, 'marked invalid'")
                elif r.returncode != 0:
                    raise Failure(f"cowvol store check {f} with the daemon stopped: exit {r.returncode}: "
                                  f"{(r.stdout + r.stderr).decode(errors='replace').strip()}")

    def op_restart(self):
        before = self.env.list_json()
        self.note("restart (SIGTERM, start)")
        rc = self.env.stop()
        if rc != 0:
            raise Failure(f"cowvold exited with {rc} on SIGTERM; want 0")
        self.check_stores_offline(before)
        self.env.start()
        after = self.env.list_json()
        if after != before:
            raise Failure(f"list --json after the restart differs:\n#   before {json.dumps(before)}\n"
                          f"#   after  {json.dumps(after)}")
        return "restart: exit 0, list --json unchanged"

    def op_crash(self):
        before = self.env.list_json()
        self.note("kill -9 at rest, start")
        self.env.kill9()
        self.check_stores_offline(before)
        self.env.start()
        after = self.env.list_json()
        if after != before:
            raise Failure(f"list --json after kill -9 (nothing in flight) differs:\n#   before {json.dumps(before)}\n"
                          f"#   after  {json.dumps(after)}")
        return "kill -9 at rest: list --json unchanged"

    def parallel_ranges(self, v, k):
        """k byte-disjoint ranges; often packed into a few chunks so writers share chunks."""
        rng = self.rng
        if rng.random() < 0.5:
            lo = rng.randint(0, max(0, v.size - 3 * v.chunk))
            hi = min(v.size, lo + 3 * v.chunk)
        else:
            lo, hi = 0, v.size
        pts = sorted(rng.sample(range(lo, hi + 1), 2 * k))
        return [(pts[2 * i], pts[2 * i + 1] - pts[2 * i]) for i in range(k)]

    def parallel_batch(self, v, k, watch, other=None, ko=0):
        """k writes to @v at once, ko more to its snapshot @other, with a cat of
        the snapshot @watch beside them; the chunks of @v written."""
        rng = self.rng
        jobs = [(v.name, off, n) for off, n in self.parallel_ranges(v, k)]
        if other:
            jobs += [(f"{v.name}@{other.name}", off, n) for off, n in self.parallel_ranges(v, ko)]
        procs = []
        files = []
        for t, off, n in jobs:
            data = rng.randbytes(n)
            args, path = self.env.write_args(t, off, data, "file")
            f = open(path, "rb")
            files.append(f)
            procs.append((subprocess.Popen(args, stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
                          t, off, n, data))
        wpath = os.path.join(self.env.tmp, "watch.out")
        with open(wpath, "wb") as wf:
            watcher = subprocess.Popen([self.env.cowvol, "cat", f"{v.name}@{watch.name}"], stdin=subprocess.DEVNULL,
                                       stdout=wf, stderr=subprocess.PIPE)
            werr = watcher.communicate()[1]
        bad = []
        for p, t, off, n, data in procs:
            o, e = p.communicate()
            if p.returncode != 0:
                bad.append(f"{t} {off}+{n}: exit {p.returncode} {e.decode(errors='replace').strip()}")
        for f in files:
            f.close()
        self.note(f"{len(jobs)} parallel writes: " + " ".join(f"{t}:{o}+{n}" for _, t, o, n, _ in procs))
        if bad:
            raise Failure("parallel writes failed: " + "; ".join(bad))
        if watcher.returncode != 0:
            raise Failure(f"cat {v.name}@{watch.name} beside the writes: exit {watcher.returncode} {werr!r}")
        with open(wpath, "rb") as f:
            compare(f"{v.name}@{watch.name} read while parallel writes ran", watch.data, f.read(), v.chunk)
        written = set()
        for _, t, off, n, data in procs:
            if t == v.name:
                v.data[off:off + n] = data
                v.origin_written(off, n)
                written |= chunks_of(off, n, v.chunk)
        for _, t, off, n, data in procs:
            if t != v.name:  # the snapshot's own writes, whatever the order with the origin's
                other.data[off:off + n] = data
                v.snap_written(other, off, n)
        return written

    def op_parallel(self):
        """Snapshot a, parallel writes, snapshot b, parallel writes (some to a):
        a copy happens once per chunk and snapshot, whatever the races."""
        v = self.pick_vol(room=2)
        if not v:
            return self.op_rm()
        rng = self.rng
        self.nsnap += 1
        a = v.snaps[self.snap(v, f"p{self.nsnap}a")]
        w1 = self.parallel_batch(v, rng.randint(3, 8), a)
        b = v.snaps[self.snap(v, f"p{self.nsnap}b")]
        before = set(a.exc)
        w2 = self.parallel_batch(v, rng.randint(3, 8), b, a, rng.randint(0, 3))
        sw = a.exc - before  # chunks only a's own writes gave it: b is the newest now
        ls = {s["name"]: s for x in self.env.list_json()["volumes"] if x["name"] == v.name for s in x["snapshots"]}
        # a chain: the first batch copied into a (the newest then), the
        # second into b only
        for s, w, what in ((a, w1 | sw, f"{len(w1)} distinct chunks and its own writes to {len(sw - w1)} more"),
                           (b, w2, f"{len(w2)} distinct chunks")):
            if ls[s.name]["exceptions"] != len(w):
                raise Failure(f"{v.name}@{s.name}: {ls[s.name]['exceptions']} exceptions after parallel writes "
                              f"to {what}: each chunk must be copied once")
        return f"parallel writes to {v.name}: snap {a.name}, {len(w1)} chunks, snap {b.name}, {len(w2)} chunks " \
               f"(and {len(sw)} more in {a.name} by its own writes)"

    def op_overflow(self):
        """A full store in the chain: with growth off (autoextend_threshold
        100, through SIGHUP) a snapshot with a store of 3 or 4 chunks (room
        for 1 or 2) takes more copies than it can, by an origin write while
        it is the newest or by a write into a newer one taken after it.  It
        turns invalid and forgets the copies of that write; the older
        snapshots read through what it held before and the next valid one
        takes the copies; later steps see it in the middle of the chain."""
        v = self.pick_vol(room=2)
        if not v:
            return self.op_rm()
        rng = self.rng
        nch = (v.size + v.chunk - 1) // v.chunk
        k = rng.choice([3, 4])
        cap = k - 2  # header, one metadata area, the rest data
        w = min(nch, cap + 1 + rng.randint(0, 2))
        # growth is off for a moment: the stores that may take this
        # write's copies must have room for them without growing
        listed = {s["name"]: s for x in self.env.list_json()["volumes"] if x["name"] == v.name
                  for s in x["snapshots"]}
        for s in v.snaps.values():
            size = listed[s.name]["store_size"] // v.chunk
            stride = v.chunk // 16 + 1
            room = size - 1 - ((size - 2) // stride + 1) - (1 if size % stride == 1 else 0) - len(s.exc)
            if s.valid and room < w + 1:
                return self.op_write()
        middle = rng.random() < 0.5
        self.env.autoextend(100)
        self.nsnap += 1
        tiny = v.snaps[self.snap(v, f"f{self.nsnap}", k * v.chunk)]
        tiny.cap = cap
        target = None
        if middle:
            target = self.snap(v, f"f{self.nsnap}n")
        c0 = rng.randrange(nch - w + 1)
        off = c0 * v.chunk
        self.do_write(v, target, (off, min(w * v.chunk, v.size - off)))
        if tiny.valid:
            raise Failure(f"the model kept {v.name}@{tiny.name} valid after {w} chunks into room for {cap}")
        self.env.autoextend(70)
        r = self.env.cv("cat", f"{v.name}@{tiny.name}")
        err = r.stderr.decode(errors="replace")
        if r.returncode != 1 or "invalid" not in err:
            raise Failure(f"cat of the full {v.name}@{tiny.name}: exit {r.returncode}, {err.strip()!r}; "
                          f"want exit 1, 'invalid'")
        return f"snap {v.name}@{tiny.name} --store-size {k * v.chunk}" + \
            (f", snap {v.name}@{target}" if target else "") + \
            f", {w} chunks written into {v.name}@{target or ''}: {tiny.name} invalid (full), a link of the chain"

    # --- the run ------------------------------------------------------------------

    def setup(self):
        rng = self.rng
        env = self.env
        # a: created, 4K chunks, a size in 512-byte sectors (the last chunk may be partial)
        size = rng.randint(512, 2048) * 512
        env.cv_ok("create", "a", "--size", str(size), "--chunk-size", "4K")
        self.vols["a"] = Vol("a", size, 4096, bytes(size))
        # b: created, 64K chunks
        size = rng.randint(4, 16) * 65536
        env.cv_ok("create", "b", "--size", str(size), "--chunk-size", "64K")
        self.vols["b"] = Vol("b", size, 65536, bytes(size))
        # c: an adopted image with content, 64K chunks, not a whole number of
        # chunks, maybe more than the daemon's 1 MiB transfer buffer
        size = rng.randint(512, 3072) * 512
        if size % 65536 == 0:
            size -= 512
        data = rng.randbytes(size)
        path = os.path.join(env.tmp, "c.img")
        with open(path, "wb") as f:
            f.write(data)
        out = env.cv_ok("add", path, "--chunk-size", "64K")
        if not out.startswith("Added volume c:"):
            raise Failure(f"add printed {out.strip()!r}")
        self.vols["c"] = Vol("c", size, 65536, data)
        # d: a timeline, dozens of snapshots with a few chunks changed
        # between each (the random steps go on with this chain)
        size = rng.randint(32, 64) * 4096
        env.cv_ok("create", "d", "--size", str(size), "--chunk-size", "4K")
        d = self.vols["d"] = Vol("d", size, 4096, bytes(size), MAX_SNAPS_D)
        nd = rng.randint(20, 26)
        for i in range(nd):
            c = rng.randrange(size // 4096)
            self.do_write(d, None, (c * 4096, rng.randint(1, 2) * 4096 if c + 1 < size // 4096 else 4096))
            self.snap(d, f"t{i}")
        self.note(f"create a ({self.vols['a'].size} bytes, 4K), b ({self.vols['b'].size}, 64K), "
                  f"add c ({self.vols['c'].size}, 64K), create d ({size}, 4K) with {nd} snapshots")

    OPS = [("write", 30), ("snap_write", 14), ("snap", 12), ("restore", 12), ("rm", 8),
           ("write_past_end", 3), ("parallel", 4), ("restart", 3), ("crash", 2), ("overflow", 3)]

    def run(self):
        env = self.env
        say(f"# seed {self.seed}, {self.steps} steps (COWVOL_MODEL_SEED / COWVOL_MODEL_STEPS to change)")
        t0 = time.time()
        try:
            env.start()
            self.setup()
            self.verify()
            say(f"ok - setup: volumes a, b, d (created, d with {len(self.vols['d'].snaps)} snapshots) and c (added) "
                f"read back as the model")
        except Failure as e:
            say(f"not ok - setup: {e}")
            return 1
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for self.step in range(1, self.steps + 1):
            op = self.rng.choices(names, weights)[0]
            try:
                desc = getattr(self, "op_" + op)()
                self.verify()
            except Failure as e:
                say(f"not ok - step {self.step} ({op}): {e}")
                say(f"# seed {self.seed}; the last operations:")
                for h in self.hist[-15:]:
                    say(f"#   {h}")
                return 1
            self.counts[op] = self.counts.get(op, 0) + 1
            say(f"ok - step {self.step}: {desc}; every volume and snapshot equals the model")
        listed = env.list_json()
        rc = env.stop()
        if rc != 0:
            say(f"not ok - the final SIGTERM: cowvold exited with {rc}")
            return 1
        try:
            self.check_stores_offline(listed)
        except Failure as e:
            say(f"not ok - the stores at the end: {e}")
            return 1
        say("ok - the end: cowvold exited 0 on SIGTERM and every store passes 'cowvol store check'")
        say(f"# {self.steps} steps in {time.time() - t0:.1f} s: " +
            ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        return 0


# --- helpers for t-restart.sh ---------------------------------------------------------


def gen(seed, n, out):
    with open(out, "wb") as f:
        f.write(random.Random(seed).randbytes(n))
    return 0


def oldnew(old, new, got, bs=4096):
    with open(old, "rb") as f:
        a = f.read()
    with open(new, "rb") as f:
        b = f.read()
    with open(got, "rb") as f:
        g = f.read()
    if not (len(a) == len(b) == len(g)):
        print(f"lengths differ: old {len(a)} new {len(b)} got {len(g)}")
        return 1
    nold = nnew = nsame = 0
    for o in range(0, len(g), bs):
        x = g[o:o + bs]
        if a[o:o + bs] == b[o:o + bs] and x == a[o:o + bs]:
            nsame += 1  # the write did not change this block
        elif x == b[o:o + bs]:
            nnew += 1
        elif x == a[o:o + bs]:
            nold += 1
        else:
            i = first_difference(a[o:o + bs], x)
            print(f"block at offset {o} is neither the old nor the new content (first byte off the old at "
                  f"{o + i}: got {x[i:i + 8].hex()}, old {a[o + i:o + i + 8].hex()}, new {b[o + i:o + i + 8].hex()})")
            return 1
    print(f"old {nold} new {nnew} (of {nold + nnew} blocks the write changes)")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "run":
        seed = int(os.environ.get("COWVOL_MODEL_SEED") or random.SystemRandom().randrange(1, 1 << 31))
        steps = int(os.environ.get("COWVOL_MODEL_STEPS") or 250)
        env = Env()
        try:
            return ModelTest(env, seed, steps).run()
        except Exception as e:
            say(f"not ok - model.py stopped on an exception (seed {seed}): {e!r}")
            raise
        finally:
            if env.daemon:
                env.kill9()
    if len(argv) >= 5 and len(argv) % 3 == 2 and argv[1] == "gen":
        for i in range(2, len(argv), 3):
            gen(argv[i], int(argv[i + 1]), argv[i + 2])
        return 0
    if len(argv) in (5, 6) and argv[1] == "oldnew":
        return oldnew(argv[2], argv[3], argv[4], int(argv[5]) if len(argv) == 6 else 4096)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
