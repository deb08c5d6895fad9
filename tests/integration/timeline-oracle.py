# SPDX-License-Identifier: GPL-2.0-or-later
"""snapper's timeline cleanup, written anew from its documentation, for
t-timeline.sh to say which snapshots must be left.

  timeline-oracle.py STATE EVENT ARGS...

STATE is a JSON file (made on the first call): per volume its limits,
min-age and the timeline snapshots that exist ([name, created], oldest
first).  Events:
  limits VOL HOURLY DAILY WEEKLY MONTHLY QUARTERLY YEARLY MIN_AGE
  tick VOL EPOCH SNAP CLEAN   the clock at EPOCH: a snapshot when SNAP=1
                              (named by its UTC time), then a cleanup
                              when CLEAN=1
  show VOL                    the names that exist, one a line
Times are UTC (the test runs the daemon with TZ=UTC).  Every snapshot is
of class timeline; none is busy.
"""
import datetime as dt
import json
import os
import sys

KINDS = ("hourly", "daily", "weekly", "monthly", "quarterly", "yearly")


def unit(kind, t):
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    if kind == "hourly":
        return (d.year, d.month, d.day, d.hour)
    if kind == "daily":
        return (d.year, d.month, d.day)
    if kind == "weekly":
        y, w, _ = d.isocalendar()
        return (y, w)
    if kind == "monthly":
        return (d.year, d.month)
    if kind == "quarterly":
        return (d.year, (d.month - 1) // 3)
    return (d.year,)


def cleanup(vol, now):
    snaps = vol["snaps"]  # oldest first, created never going back
    counts = dict.fromkeys(KINDS, 0)
    keep = set()
    for i in range(len(snaps) - 1, -1, -1):  # youngest first
        name, t = snaps[i]
        for k in KINDS:
            # first of its unit: no older snapshot in the same unit
            first = i == 0 or unit(k, snaps[i - 1][1]) != unit(k, t)
            if first and counts[k] < vol["limits"][k]:
                counts[k] += 1
                keep.add(name)
        if t > now - vol["min_age"]:
            keep.add(name)  # younger than min-age
    vol["snaps"] = [s for s in snaps if s[0] in keep]


def main():
    path, event, vname = sys.argv[1], sys.argv[2], sys.argv[3]
    state = json.load(open(path)) if os.path.exists(path) else {}
    vol = state.setdefault(vname, {"snaps": [], "limits": {}, "min_age": 3600})
    a = sys.argv[4:]
    if event == "limits":
        vol["limits"] = dict(zip(KINDS, map(int, a[:6])))
        vol["min_age"] = int(a[6])
    elif event == "tick":
        now = int(a[0])
        if a[1] == "1":
            name = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            vol["snaps"].append([name, now])
        if a[2] == "1":
            cleanup(vol, now)
    elif event == "show":
        for name, _ in vol["snaps"]:
            print(name)
    json.dump(state, open(path, "w"))


main()
