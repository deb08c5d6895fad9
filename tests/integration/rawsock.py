#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Send stdin, byte for byte, to cowvold's control socket, close the sending
# side, and print each answer line in one normalised form:
#   id=ID ok=true|false code=CODE message=MESSAGE
# (or "notjson: LINE" for a line that is not a JSON object, "notutf8: ..."
# for one that is not UTF-8), then "closed" when the daemon closed the
# connection. The tests use it for what the cowvol CLI never sends.
#   rawsock.py SOCKET [FILE r|w|rw|path] < PAYLOAD
# With FILE, it is opened (as whoever runs this) for reading, writing, both,
# or O_PATH (no access at all), and the descriptor goes with the payload
# (SCM_RIGHTS).
import json
import os
import socket
import sys

def main():
    path = sys.argv[1]
    payload = sys.stdin.buffer.read()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    try:
        if len(sys.argv) > 3:
            mode = {"rw": os.O_RDWR, "r": os.O_RDONLY, "w": os.O_WRONLY, "path": os.O_PATH}[sys.argv[3]]
            fd = os.open(sys.argv[2], mode)
            n = socket.send_fds(s, [payload], [fd])
            os.close(fd)
            s.sendall(payload[n:])
        else:
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon may close first (a line too long); read what it said
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
    for raw in buf.split(b"\n"):
        if not raw:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            print("notutf8: %r" % raw)
            continue
        try:
            o = json.loads(text)
        except ValueError:
            o = None
        if not isinstance(o, dict):
            print("notjson: %s" % text)
            continue
        err = o.get("error") or {}
        print("id=%s ok=%s code=%s message=%s" % (
            o.get("id"), json.dumps(o.get("ok")), err.get("code", "-"), err.get("message", "-")))
    print("closed")

main()
