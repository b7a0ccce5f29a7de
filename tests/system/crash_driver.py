#!/usr/bin/python3 -I
"""Runs INSIDE the lab (tests only): start a command in a session of its own and
SIGKILL that whole session, like a power cut would, either when a line of its output
matches a pattern (a deterministic point between steps) or after a delay.

    crash_driver.py --at REGEX -- argv...
    crash_driver.py --after SECONDS -- argv...

Prints one JSON object: killed (bool), exit (int or None), output (up to the kill).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--at")
    p.add_argument("--after", type=float)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    args = p.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pattern = re.compile(args.at) if args.at else None
    deadline = time.monotonic() + args.after if args.after is not None else None
    out, pending, killed = b"", b"", False
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:  # the delay is over
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if pattern and any(pattern.search(ln.decode(errors="replace")) for ln in lines):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    code = proc.wait()
    if killed:  # the whole session: children that outlived the leader too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    json.dump({"killed": killed, "exit": None if killed else code,
               "output": out.decode(errors="replace")}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
