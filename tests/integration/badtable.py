#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Reads tests/bad-input.tsv (its header comment is the format) for
# t-bad-table.sh, which does the running and the checking:
#   badtable.py rows TABLE          check every row's form; print one line a
#                                   row: ID TAB KIND TAB EXPECT TAB REGEX
#   badtable.py prepare TABLE DIR   the same lines, and for each row what it
#                                   runs: DIR/ID.argv (the arguments, expanded,
#                                   each followed by a NUL; cli, daemon, store),
#                                   DIR/ID.payload (the bytes for the socket;
#                                   request), DIR/ID.cow (a copy of the base
#                                   store with the row's damage; store)
# Placeholders in the input: {NAME} is the environment's BT_NAME (the runner
# sets BT_STATE, BT_T, ...; {STORE} is the row's DIR/ID.cow); {rep:N:TEXT}
# is TEXT N times (expanded first); {file:TEXT} a new file under $BT_T
# holding TEXT, replaced by its path.
# Anything malformed exits 2 naming the line: a typo in the table must fail
# the test, never skip a row.
import json
import os
import re
import sys

KINDS = ("cli", "daemon", "request", "store")
ERRNO_NAME = re.compile(r"^E[A-Z0-9]+$")
_files = [0]


def die(msg):
    sys.stderr.write("badtable: %s\n" % msg)
    sys.exit(2)


def load(path):
    rows, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            where = "%s:%d" % (path, n)
            if len(cols) not in (5, 6):
                die("%s: %d columns, want 5 (6 for a store row): %r" % (where, len(cols), line))
            rid, kind, expect, regex, inp = cols[:5]
            recipe = cols[5] if len(cols) == 6 else None
            if not re.match(r"^[a-z0-9][a-z0-9.-]*$", rid):
                die("%s: bad id %r (a-z, 0-9, '.', '-')" % (where, rid))
            if rid in seen:
                die("%s: id %r is used already at line %d" % (where, rid, seen[rid]))
            seen[rid] = n
            if kind not in KINDS:
                die("%s: kind %r is none of %s" % (where, kind, ", ".join(KINDS)))
            if kind == "request":
                if not ERRNO_NAME.match(expect):
                    die("%s: a request row expects an error code (EINVAL...), not %r" % (where, expect))
            elif not re.match(r"^[0-9]+$", expect) or expect == "0":
                die("%s: expected exit code %r: a bad input exits non-zero" % (where, expect))
            if not regex:
                die("%s: empty error regex: every row says which error it wants" % where)
            try:
                re.compile(regex)
            except re.error as e:
                die("%s: the regex does not compile: %s" % (where, e))
            try:
                val = json.loads(inp)
            except ValueError as e:
                die("%s: the input is not JSON: %s" % (where, e))
            if kind == "request":
                if not isinstance(val, str):
                    die("%s: a request row's input is a JSON string (the bytes sent)" % where)
            elif not (isinstance(val, list) and val and all(isinstance(a, str) for a in val)):
                die("%s: a %s row's input is a JSON array of strings (the arguments)" % (where, kind))
            if (kind == "store") != (recipe is not None):
                die("%s: a store row, and only a store row, has a 6th column (the damage)" % where)
            if recipe is not None:
                parse_recipe(recipe, where)
                if not any("{STORE}" in a for a in val):
                    die("%s: a store row's arguments name {STORE}, the damaged copy" % where)
            rows.append(dict(id=rid, kind=kind, expect=expect, regex=regex, input=val,
                             recipe=recipe, where=where))
    if not rows:
        die("%s: no rows" % path)
    return rows


def expand(s, where):
    def rep(m):
        n, _, text = m.group(1).partition(":")
        return text * int(n)

    s = re.sub(r"\{rep:([0-9]+:[^{}]*)\}", rep, s)

    def one(m):
        body = m.group(1)
        if body.startswith("rep:"):
            die("%s: {rep:N:TEXT} wanted, not {%s}" % (where, body))
        if body.startswith("file:"):
            _files[0] += 1
            p = os.path.join(env("T", where), "file.%d.%d" % (os.getpid(), _files[0]))
            with open(p, "w", encoding="utf-8") as f:
                f.write(body[5:])
            return p
        return env(body, where)
    return re.sub(r"\{((?:rep|file):[^{}]*|[A-Z0-9_]+)\}", one, s)


def env(name, where):
    v = os.environ.get("BT_" + name)
    if v is None:
        die("%s: placeholder {%s}: BT_%s is not set" % (where, name, name))
    return v


# --- store damage: "BASE: EDIT; EDIT; ..." -----------------------------------
# BASE is a file $BT_BASE_<BASE> (the runner makes them); an EDIT is
#   le32 OFF VALUE | le64 OFF VALUE | bytes OFF HEX | zero OFF LEN |
#   copy FROM TO LEN | truncate SIZE
# OFF, VALUE, LEN, SIZE: integers (0x... too) joined by + and *.
def number(tok, where):
    total = 0
    for term in tok.split("+"):
        prod = 1
        for f in term.split("*"):
            try:
                prod *= int(f, 0)
            except ValueError:
                die("%s: %r is not a number (integers joined by + and *)" % (where, tok))
        total += prod
    return total


def parse_recipe(recipe, where):
    base, sep, rest = recipe.partition(":")
    if not sep or not re.match(r"^[a-z0-9]+$", base.strip()):
        die("%s: the damage is 'BASE: EDIT; ...', not %r" % (where, recipe))
    edits = []
    for e in rest.split(";"):
        w = e.split()
        if not w:
            continue
        op, a = w[0], w[1:]
        want = {"le32": 2, "le64": 2, "bytes": 2, "zero": 2, "copy": 3, "truncate": 1}.get(op)
        if want is None or len(a) != want:
            die("%s: bad edit %r" % (where, e.strip()))
        if op == "bytes":
            try:
                edits.append((op, number(a[0], where), bytes.fromhex(a[1])))
            except ValueError:
                die("%s: %r is not hex" % (where, a[1]))
        else:
            edits.append((op,) + tuple(number(x, where) for x in a))
    if not edits:
        die("%s: a store row damages its store: no edit in %r" % (where, recipe))
    return base.strip(), edits


def damage(row, out):
    base, edits = parse_recipe(row["recipe"], row["where"])
    with open(env("BASE_" + base.upper(), row["where"]), "rb") as f:
        data = bytearray(f.read())

    def put(off, b):
        if off + len(b) > len(data):
            die("%s: edit at %d goes past the base's end (%d)" % (row["where"], off, len(data)))
        data[off:off + len(b)] = b

    for e in edits:
        op = e[0]
        if op == "le32":
            put(e[1], (e[2] & 0xffffffff).to_bytes(4, "little"))
        elif op == "le64":
            put(e[1], (e[2] & 0xffffffffffffffff).to_bytes(8, "little"))
        elif op == "bytes":
            put(e[1], e[2])
        elif op == "zero":
            put(e[1], bytes(e[2]))
        elif op == "copy":
            put(e[2], bytes(data[e[1]:e[1] + e[3]]))
        elif op == "truncate":
            del data[e[1]:]
    with open(out, "wb") as f:
        f.write(data)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("rows", "prepare"):
        die("usage: badtable.py rows TABLE | prepare TABLE DIR")
    cmd, rows = sys.argv[1], load(sys.argv[2])
    if cmd == "prepare":
        if len(sys.argv) != 4:
            die("usage: badtable.py prepare TABLE DIR")
        d = sys.argv[3]
        for r in rows:
            base = os.path.join(d, r["id"])
            if r["kind"] == "request":
                with open(base + ".payload", "wb") as f:
                    f.write(expand(r["input"], r["where"]).encode("utf-8", "surrogatepass"))
                continue
            if r["kind"] == "store":
                damage(r, base + ".cow")
                os.environ["BT_STORE"] = base + ".cow"
            with open(base + ".argv", "wb") as f:
                for a in r["input"]:
                    f.write(expand(a, r["where"]).encode("utf-8", "surrogatepass") + b"\0")
    for r in rows:
        print("\t".join((r["id"], r["kind"], r["expect"], r["regex"])))


main()
