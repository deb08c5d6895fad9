#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The clients and the checker of t-kill.sh (kill -9 of cowvold while clients
write through NBD and the CLI).

  killmodel.py nbd SOCKET TAG LOG READY
        the raw NBD client TAG (NBD_CLIENTS: its export and region): writes
        (plain, FUA, write zeroes) of seeded data at random places in its
        region, one request in flight, a
        flush now and then, until the connection breaks or it is killed
  killmodel.py cli STATE TAG LOG
        the CLI client: `cowvol write` into each volume's CLI region, and now
        and then `cowvol snap` / `cowvol rm` of its snapshots, until a command
        fails or it is killed
  killmodel.py init STATE     after the setup: state file and baselines
  killmodel.py wait-flush LOG...   until a new flush is logged (at most 2 s)
  killmodel.py check STATE ROUND TKILL
        after the restart: prints ok/not ok lines, then takes what it read
        as the baselines of the next round

The logs (one line an event, written before the request is sent and after
its reply arrived, so each names what may have reached the daemon; the
lines that make a promise are fsynced):
  W ID OFF LEN KIND T   a write (KIND plain, fua, zero) about to be sent at T
  A ID T                its reply came at T, success
  F ID T                a flush was acknowledged at T; it covers every write
                        up to ID (one request in flight: all were acknowledged
                        before the flush was sent)
  E T MESSAGE           an error at T; the client stops
The CLI log:
  W ID VOL OFF LEN T    `cowvol write VOL --offset OFF` started at T
  S NAME VOL NW T       `cowvol snap VOL@NAME` started at T after NW writes
                        to VOL (all of them returned 0)
  D NAME VOL T          `cowvol rm VOL@NAME` started at T
  R RC T [MESSAGE]      the last command ended with RC at T

What the checker holds for guaranteed, per 4 KiB block (each block belongs to
one client, and each client has one request in flight at a time, so its
writes are a sequence and the block's possible contents are the block's
states after a prefix of that sequence: a kill may cut a write only between
pages):
  - a block of a volume or snapshot export holds the state after its last
    durable write (acknowledged before an acknowledged flush was sent, an
    acknowledged FUA write, a `cowvol write` that returned 0) or after one of
    the client's later writes; a block no client wrote holds the baseline;
  - a snapshot taken in this round holds, in each NBD client's region, the
    state after a write acknowledged before `cowvol snap` started, or after
    one sent before it returned; in the CLI regions exactly the state after
    the CLI's earlier writes; elsewhere the baseline;
  - a snapshot from an earlier round holds its baseline exactly;
  - a snapshot whose `snap` returned 0 is listed, one whose `rm` returned 0 is
    not, an interrupted one either way; every volume and snapshot is active,
    no restore runs, and the stores folder holds one store a snapshot;
  - no request or command failed before the kill.
"""
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BS = 4096
INF = float("inf")


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


# The layout: volumes, their chunk sizes, and who writes where.  Region
# bounds are 4 KiB aligned, some not chunk-aligned (two clients share a
# chunk of kb).
MIB = 1 << 20
VOLS = {"ka": (8 * MIB, 4096), "kb": (8 * MIB, 65536)}
PIN = "kb@pin"  # a snapshot exported to an NBD client; never removed
NBD_CLIENTS = {  # tag: (export, offset, length)
    "n1": ("ka", 0, 3 * MIB + 20480),
    "n2": ("kb", 0, 3 * MIB + 36864),
    "n3": (PIN, 4 * MIB, 3 * MIB),
}
CLI_REGION = {"ka": (3 * MIB + 20480, 5 * MIB), "kb": (3 * MIB + 36864, 5 * MIB)}  # [start, end)
MAX_SNAPS = 3  # the CLI's snapshots a volume


def wdata(seed, tag, rnd, wid, n):
    return random.Random(f"{seed}/{tag}/{rnd}/{wid}").randbytes(n)


class Log:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def put(self, line, sync=False):
        os.write(self.fd, (line + "\n").encode())
        if sync:
            os.fsync(self.fd)


def pick(rng, off, length):
    """A write inside [off, off+length): 4 KiB aligned or not."""
    if rng.random() < 0.7:
        nb = rng.randint(1, 16)
        b = rng.randrange(length // BS - nb + 1)
        return off + b * BS, nb * BS
    n = rng.randint(1, 40000)
    return off + rng.randint(0, length - n), n


# --- the NBD client ------------------------------------------------------------


def nbd_client(sock, tag, logpath, ready):
    export, off, length = NBD_CLIENTS[tag]
    raw = load("nbdraw", "nbd-raw.py")
    seed, rnd = os.environ["KILL_SEED"], os.environ["KILL_ROUND"]
    rng = random.Random(f"{seed}/{tag}/{rnd}")
    log = Log(logpath)
    try:
        s = raw.connect(sock)
        typ, _, _ = raw.go(s, export)
        if typ != raw.REP_ACK:
            log.put(f"E {time.time()} NBD_OPT_GO {export}: reply {typ:#x}", True)
            return 1
        s.settimeout(60)
    except Exception as e:
        log.put(f"E {time.time()} connecting: {type(e).__name__}: {e}", True)
        return 1
    open(ready, "w").close()
    wid = 0
    last_acked = 0
    while True:
        try:
            if wid > 0 and rng.random() < 0.12:
                raw.request(s, raw.CMD_FLUSH, 0, 0, cookie=1 << 40)
                err, _, _ = raw.reply(s)
                if err:
                    log.put(f"E {time.time()} flush: error {err}", True)
                    return 1
                log.put(f"F {last_acked} {time.time()}", True)
                continue
            wid += 1
            o, n = pick(rng, off, length)
            r = rng.random()
            kind = "zero" if r < 0.08 else "fua" if r < 0.16 else "plain"
            if kind == "zero":
                cmd, flags, payload = raw.CMD_WRITE_ZEROES, 0, b""
            else:
                cmd, flags = raw.CMD_WRITE, raw.FLAG_FUA if kind == "fua" else 0
                payload = wdata(seed, tag, rnd, wid, n)
            log.put(f"W {wid} {o} {n} {kind} {time.time()}")
            raw.request(s, cmd, o, n, flags=flags, cookie=wid, payload=payload)
            err, cookie, _ = raw.reply(s)
            if err or cookie != wid:
                log.put(f"E {time.time()} write {wid}: error {err}, cookie {cookie}", True)
                return 1
            log.put(f"A {wid} {time.time()}", kind == "fua")
            last_acked = wid
        except Exception as e:  # the daemon went away
            log.put(f"E {time.time()} {type(e).__name__}: {e}", True)
            return 1


# --- the CLI client ----------------------------------------------------------------


def cli_client(statepath, tag, logpath):
    st = json.load(open(statepath))
    seed, rnd = os.environ["KILL_SEED"], os.environ["KILL_ROUND"]
    cowvol, tmp = os.environ["COWVOL"], os.environ["T"]
    rng = random.Random(f"{seed}/{tag}/{rnd}")
    log = Log(logpath)
    snaps = {v: list(st["snaps"][v]) for v in VOLS}  # the CLI's, oldest first
    nw = {v: 0 for v in VOLS}
    wid = nsnap = 0
    data = os.path.join(tmp, "cli.data")

    def run(args, **kw):
        r = subprocess.run([cowvol, *args], capture_output=True, **kw)
        msg = r.stderr.decode(errors="replace").strip().replace("\n", " ")[:200]
        log.put(f"R {r.returncode} {time.time()} {msg}", True)
        return r.returncode == 0

    while True:
        v = rng.choice(sorted(VOLS))
        # most of the time each volume has a young snapshot: the engine
        # defers the writes that need copies until a commit, which a kill
        # must not lose once a flush returned
        r = rng.random()
        if (r < 0.05 and len(snaps[v]) > 1) or (r < 0.15 and len(snaps[v]) >= MAX_SNAPS):
            name = snaps[v].pop(0)
            log.put(f"D {name} {v} {time.time()}", True)
            if not run(["rm", f"{v}@{name}"]):
                return 1
        elif r < 0.15:
            nsnap += 1
            name = f"r{rnd}c{nsnap}"
            log.put(f"S {name} {v} {nw[v]} {time.time()}", True)
            if not run(["snap", f"{v}@{name}"]):
                return 1
            snaps[v].append(name)
        else:
            wid += 1
            a, b = CLI_REGION[v]
            o, n = pick(rng, a, b - a)
            with open(data, "wb") as f:
                f.write(wdata(seed, tag, rnd, wid, n))
            log.put(f"W {wid} {v} {o} {n} {time.time()}", True)
            with open(data, "rb") as f:
                if not run(["write", v, "--offset", str(o)], stdin=f):
                    return 1
            nw[v] += 1


# --- the checker ----------------------------------------------------------------------


def digest(b):
    return hashlib.blake2b(b, digest_size=16).digest()


class Seq:
    """One client's writes (in order) into one address space, and each
    touched block's states: blocks[b] = [(k, digest of b after write k)]
    with (0, baseline) first."""

    def __init__(self, base, writes, seed, tag, rnd):
        self.writes = writes  # [(id, off, len, kind)], ids 1..n in order
        self.blocks = {}
        cur = {}
        for wid, off, n, kind in writes:
            data = bytes(n) if kind == "zero" else wdata(seed, tag, rnd, wid, n)
            for b in range(off // BS, (off + n - 1) // BS + 1):
                if b not in cur:
                    cur[b] = bytearray(base[b * BS:(b + 1) * BS])
                    self.blocks[b] = [(0, digest(cur[b]))]
                lo, hi = max(off, b * BS), min(off + n, (b + 1) * BS)
                cur[b][lo - b * BS:hi - b * BS] = data[lo - off:hi - off]
                self.blocks[b].append((wid, digest(cur[b])))

    def candidates(self, b, lo, hi):
        """Digests of block b after a prefix of k writes, lo <= k <= hi
        (None: b untouched, the baseline)."""
        states = self.blocks.get(b)
        if states is None:
            return None
        start = max(i for i, (k, _) in enumerate(states) if k <= lo)
        return [d for k, d in states[start:] if k <= hi]

    def which(self, b, d):
        return [k for k, x in self.blocks.get(b, []) if x == d]


class Checker:
    def __init__(self, statepath, rnd, tkill):
        self.statepath = statepath
        self.st = json.load(open(statepath))
        self.rnd = rnd
        self.tkill = tkill
        self.seed = os.environ["KILL_SEED"]
        self.cowvol = os.environ["COWVOL"]
        self.tmp = os.environ["T"]
        self.dir = os.path.dirname(statepath)
        self.bad = 0
        self.stats = self.st.setdefault("stats", {})

    def say(self, good, what):
        print(("ok - " if good else "not ok - ") + f"round {self.rnd}: " + what, flush=True)
        if not good:
            self.bad += 1
        return good

    def count(self, key, n=1):
        self.stats[key] = self.stats.get(key, 0) + n

    def base(self, target):
        with open(os.path.join(self.dir, target + ".img"), "rb") as f:
            return f.read()

    def cat(self, target):
        path = os.path.join(self.tmp, "kill.cat")
        with open(path, "wb") as f:
            r = subprocess.run([self.cowvol, "cat", target], stdout=f, stderr=subprocess.PIPE)
        if r.returncode:
            self.say(False, f"cowvol cat {target}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
            return None
        with open(path, "rb") as f:
            return f.read()

    def logs(self, name):
        path = os.path.join(self.dir, f"r{self.rnd}-{name}.log")
        with open(path) as f:
            return [ln.split(" ", 5) for ln in f.read().splitlines()]

    def failed_early(self, who, t, msg):
        # an error observed before the kill: the daemon failed while it ran
        if t < self.tkill:
            self.say(False, f"{who} failed before the kill ({t - self.tkill:+.3f} s): {msg}")

    # --- the logs -------------------------------------------------------------

    def read_nbd(self, tag):
        writes, sent, acked, fua, durable = [], {}, {}, set(), 0
        for ln in self.logs(tag):
            if ln[0] == "W":
                writes.append((int(ln[1]), int(ln[2]), int(ln[3]), ln[4]))
                sent[int(ln[1])] = float(ln[5])
            elif ln[0] == "A":
                acked[int(ln[1])] = float(ln[2])
                if writes[-1][3] == "fua":
                    fua.add(int(ln[1]))
            elif ln[0] == "F":
                durable = int(ln[1])
                self.count("nbd flushes")
            elif ln[0] == "E":
                self.failed_early(f"NBD client {tag}", float(ln[1]), " ".join(ln[2:]))
        self.count("nbd writes", len(writes))
        self.count("nbd writes acknowledged", len(acked))
        return writes, sent, acked, fua, durable

    def read_cli(self):
        ev = []  # (kind, fields, rc, tstart, tend)
        for ln in self.logs("cli"):
            if ln[0] == "R":
                k, f, _, t0 = ev[-1][:4]
                ev[-1] = (k, f, int(ln[1]), t0, float(ln[2]))
                if int(ln[1]):
                    self.failed_early(f"the CLI client's {k} {' '.join(f)}", float(ln[2]),
                                      f"exit {ln[1]}: {' '.join(ln[3:])}")
            else:
                ev.append((ln[0], ln[1:-1], None, float(ln[-1]), None))
        return ev

    # --- checks ---------------------------------------------------------------

    def compare(self, target, got, want_base, seqs):
        """seqs: [(Seq, lo, hi, durable_set)] for the regions; elsewhere the
        baseline.  lo: the last write certainly in; durable_set: writes
        durable on their own (FUA)."""
        if got is None:
            return False
        if len(got) != len(want_base):
            return self.say(False, f"{target}: {len(got)} bytes, want {len(want_base)}")
        owned = {}
        for q in seqs:
            for b in q[0].blocks:
                owned[b] = q
        nblocks = len(got) // BS
        newer = 0
        for b in range(nblocks):
            g = got[b * BS:(b + 1) * BS]
            q = owned.get(b)
            if q is None:
                if g != want_base[b * BS:(b + 1) * BS]:
                    return self.say(False, f"{target}: block at {b * BS} (written by no client) differs from "
                                           f"its baseline")
                continue
            seq, lo, hi, fua = q
            lo_b = max([lo] + [k for k, _ in seq.blocks[b] if k in fua])
            d = digest(g)
            cands = seq.candidates(b, lo_b, hi)
            if d not in cands:
                held = seq.which(b, d)
                why = (f"it holds the state after write {held[-1]}, older than write {lo_b} which must be there"
                       if held else "it is no state the writes could leave")
                return self.say(False, f"{target}: block at {b * BS}: {why} (states possible: after writes "
                                       f"{lo_b}..{hi} of the {len(seq.blocks[b]) - 1} touching it)")
            if d != cands[0]:
                newer += 1
        if not seqs:
            return self.say(True, f"{target} is as it was before the round")
        self.count("blocks newer than their last durable write", newer)
        return self.say(True, f"{target} holds every durable write ({len(seqs)} client region(s); {newer} blocks "
                              f"hold later writes)")

    def run(self):
        st = self.st
        listing = subprocess.run([self.cowvol, "list", "--json"], capture_output=True)
        try:
            lj = json.loads(listing.stdout)
            vols = {v["name"]: v for v in lj["volumes"]}
        except Exception as e:
            self.say(False, f"list --json parses ({e}; exit {listing.returncode})")
            return 1
        self.say(sorted(vols) == sorted(VOLS), f"list --json lists the volumes {sorted(vols)}")
        for v in vols.values():
            self.say(v["state"] == "active" and v["restore"] is None and all(s["state"] == "active" for s in
                     v["snapshots"]), f"{v['name']} and its snapshots are active, no restore "
                     f"({v['state']}, {v['restore']}, {[s['state'] for s in v['snapshots']]})")
        nbd = {tag: self.read_nbd(tag) for tag in NBD_CLIENTS}
        cli = self.read_cli()

        # the catalogue: snapshots sure to be there, sure to be gone, or either
        sure = {v: set(st["snaps"][v]) | ({"pin"} if v == "kb" else set()) for v in VOLS}
        maybe = {v: set() for v in VOLS}
        for k, f, rc, _, _ in cli:
            if k == "S":
                (sure if rc == 0 else maybe)[f[1]].add(f[0])
            elif k == "D":
                sure[f[1]].discard(f[0])
                if rc != 0:
                    maybe[f[1]].add(f[0])
                else:
                    self.count("snapshots removed")
        for k, f, rc, _, _ in cli:
            if k == "S" and rc == 0:
                self.count("snapshots taken")
            if k in "SD" and rc != 0:
                self.count(f"{'snap' if k == 'S' else 'rm'} cut by the kill")
        listed = {}
        for v in VOLS:
            names = {s["name"] for s in vols.get(v, {"snapshots": []})["snapshots"]}
            listed[v] = names
            self.say(sure[v] <= names <= sure[v] | maybe[v],
                     f"{v} lists the snapshots {sorted(names)} (sure: {sorted(sure[v])}, either way: "
                     f"{sorted(maybe[v])})")
            for n in maybe[v]:
                self.count("interrupted snap/rm found done" if (n in names) != (n in st["snaps"][v])
                           else "interrupted snap/rm found undone")
        stores = [f for f in os.listdir(os.path.join(os.environ["STATE"], "stores")) if not f.startswith(".")]
        nsnaps = sum(len(s) for s in listed.values())
        self.say(len(stores) == nsnaps, f"the stores folder holds one store a snapshot ({len(stores)} files, "
                                        f"{nsnaps} snapshots)")

        # the volumes and the pinned snapshot: durable writes are there
        seqs = {}
        got = {}
        for tag, (export, off, length) in NBD_CLIENTS.items():
            writes, sent, acked, fua, durable = nbd[tag]
            seqs[tag] = Seq(self.base(export), writes, self.seed, tag, self.rnd)
        cli_writes = {v: [] for v in VOLS}
        for k, f, rc, t0, t1 in cli:
            if k == "W":
                cli_writes[f[1]].append((int(f[0]), int(f[2]), int(f[3]), rc))
        cseq, cdone = {}, {}
        for v in VOLS:
            ws = cli_writes[v]
            cseq[v] = Seq(self.base(v), [(i, o, n, "plain") for i, o, n, _ in ws], self.seed, "cli", self.rnd)
            cdone[v] = max([i for i, _, _, rc in ws if rc == 0], default=0)
            self.count("cli writes", len(ws))
        for target in list(VOLS) + [PIN]:
            got[target] = self.cat(target)
            regs = []
            for tag, (export, off, length) in NBD_CLIENTS.items():
                if export == target:
                    writes, sent, acked, fua, durable = nbd[tag]
                    regs.append((seqs[tag], durable, INF, fua))
            if target in VOLS:
                regs.append((cseq[target], cdone[target], INF, set()))
            self.compare(target, got[target], self.base(target), regs)

        # the CLI's snapshots
        for v in VOLS:
            for name in sorted(listed[v] - {"pin"}):
                t = f"{v}@{name}"
                got[t] = self.cat(t)
                if name in st["snaps"][v]:
                    self.compare(t + " (older)", got[t], self.base(t), [])
                    continue
                k, f, rc, t0, t1 = [e for e in cli if e[0] == "S" and e[1][0] == name][0]
                t1 = t1 if rc == 0 else INF
                regs = []
                for tag, (export, off, length) in NBD_CLIENTS.items():
                    if export == v:
                        writes, sent, acked, fua, durable = nbd[tag]
                        lo = max([i for i, t in acked.items() if t < t0], default=0)
                        hi = max([i for i, t in sent.items() if t < t1], default=0)
                        regs.append((seqs[tag], lo, hi, set()))
                # the CLI region: exactly the state after its earlier writes
                nprev = int(f[2])
                upto = cli_writes[v][nprev - 1][0] if nprev else 0
                regs.append((cseq[v], upto, upto, set()))
                self.compare(t + f" (taken in this round{'' if rc == 0 else ', interrupted'})", got[t],
                             self.base(v), regs)

        # the next round starts from what is there
        if self.bad == 0:
            for t, data in got.items():
                with open(os.path.join(self.dir, t + ".img"), "wb") as fo:
                    fo.write(data)
            for t in os.listdir(self.dir):
                if t.endswith(".img") and t[:-4] not in got:
                    os.unlink(os.path.join(self.dir, t))
            st["snaps"] = {v: sorted(listed[v] - {"pin"}, key=lambda n: [int(x) for x in n[1:].split("c")])
                           for v in VOLS}
            with open(self.statepath, "w") as fo:
                json.dump(st, fo)
        return 1 if self.bad else 0


def init(statepath):
    cowvol = os.environ["COWVOL"]
    d = os.path.dirname(statepath)
    for t in list(VOLS) + [PIN]:
        with open(os.path.join(d, t + ".img"), "wb") as f:
            subprocess.run([cowvol, "cat", t], stdout=f, check=True)
    lj = json.loads(subprocess.run([cowvol, "list", "--json"], capture_output=True, check=True).stdout)
    snaps = {v["name"]: [s["name"] for s in v["snapshots"] if s["name"] != "pin"] for v in lj["volumes"]}
    for v in VOLS:
        for n in snaps[v]:
            with open(os.path.join(d, f"{v}@{n}.img"), "wb") as f:
                subprocess.run([cowvol, "cat", f"{v}@{n}"], stdout=f, check=True)
    with open(statepath, "w") as f:
        json.dump({"snaps": snaps}, f)
    return 0


def wait_flush(logs):
    """Until one of the logs gets a new flush line (at most 2 s)."""
    def flushes():
        n = 0
        for p in logs:
            with open(p, "rb") as f:
                n += f.read().count(b"\nF ")
        return n
    first = flushes()
    end = time.time() + 2
    while time.time() < end:
        if flushes() > first:
            return 0
        time.sleep(0.001)
    return 1


def stats(statepath):
    st = json.load(open(statepath)).get("stats", {})
    print(", ".join(f"{k} {v}" for k, v in sorted(st.items())))
    return 0


def main(a):
    if len(a) == 6 and a[1] == "nbd":
        return nbd_client(a[2], a[3], a[4], a[5])
    if len(a) == 5 and a[1] == "cli":
        return cli_client(a[2], a[3], a[4])
    if len(a) == 3 and a[1] == "init":
        return init(a[2])
    if len(a) >= 3 and a[1] == "wait-flush":
        return wait_flush(a[2:])
    if len(a) == 3 and a[1] == "stats":
        return stats(a[2])
    if len(a) == 5 and a[1] == "check":
        try:
            return Checker(a[2], int(a[3]), float(a[4])).run()
        except Exception as e:
            print(f"not ok - round {a[3]}: the checker stopped: {type(e).__name__}: {e}", flush=True)
            raise
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
