#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Stand in for systemd's notification socket: bind a Unix datagram socket
# at PATH and print every message sd_notify() sends, one field a line
# (e.g. "READY=1"), then a line "--" after each message.  Ends after a
# message with STOPPING=1, or after SECONDS (default 30) of quiet.
#   notify-listen.py PATH [SECONDS]
import os
import socket
import sys

path = sys.argv[1]
quiet = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(quiet)
print("listening", flush=True)
while True:
    try:
        msg = s.recv(65536)
    except socket.timeout:
        break
    text = msg.decode("utf-8", "replace")
    for field in text.split("\n"):
        if field:
            print(field, flush=True)
    print("--", flush=True)
    if "STOPPING=1" in text.split("\n"):
        break
