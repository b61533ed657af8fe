#!/usr/bin/env python3
"""Run shell commands one after the other and time them as one operation.

    measure.py MARKER CMD [CMD...]   -> one JSON line on stdout

first_s: seconds from the start of the first command to the first output line
that contains MARKER (the entrypoint's first line); total_s: to the end of the
last command; maxrss_kib: the largest peak RSS of any of the commands (as
wait4 reports it: the command itself, i.e. podman, or its largest waited-for
child); rc: the first non-zero exit status, else 0. The commands' output is
kept in the "out" field (last 2000 characters) for the log.

With MEASURE_TIMEOUT set (seconds), a command still running that long after
the start is killed with its whole process group: "timed_out" is then true,
total_s is the timeout and rc is -9 (first_s stays valid if the marker came).

With MEASURE_AT_FIRST set, that shell command runs when the MARKER line
arrives (while the entrypoint goes on) and its output is the "at_first" field:
e.g. the local disk used at the moment the entrypoint started.

With MEASURE_UNTIL_FIRST=1 the command running when the MARKER line arrives
is killed with its process group right then (not a failure: rc stays 0,
total_s is first_s), for measurements of the time to first output alone.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

marker, cmds = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
first = None
rc = 0
maxrss = 0
out = []
at_first_cmd = os.environ.get("MEASURE_AT_FIRST")
at_first = None
timeout = float(os.environ.get("MEASURE_TIMEOUT") or 0)
timed_out = False
until_first = os.environ.get("MEASURE_UNTIL_FIRST") == "1"
stopped_at_first = False


def kill_group(p):
    global timed_out
    timed_out = True
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


for cmd in cmds:
    # Its own process group, so that a timeout kills podman and its children.
    p = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    timer = None
    if timeout:
        timer = threading.Timer(max(0.0, timeout - (time.monotonic() - t0)), kill_group, (p,))
        timer.start()

    def reader(p=p):
        global first, at_first, stopped_at_first
        for line in iter(p.stdout.readline, b""):
            if first is None and marker.encode() in line:
                first = time.monotonic() - t0
                if at_first_cmd:
                    r = subprocess.run(["/bin/sh", "-c", at_first_cmd], capture_output=True)
                    at_first = r.stdout.decode().strip()
                if until_first:
                    stopped_at_first = True
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            out.append(line.decode(errors="replace"))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    _, status, ru = os.wait4(p.pid, 0)
    if timer:
        timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    # Whatever still holds the pipe (a runaway conmon) must not hang us.
    th.join(timeout=5)
    maxrss = max(maxrss, ru.ru_maxrss)
    if stopped_at_first:
        break
    if p.returncode != 0 and rc == 0:
        rc = p.returncode
        break
total = timeout if timed_out else (first if stopped_at_first else time.monotonic() - t0)
print(json.dumps(dict(first_s=first, total_s=total, maxrss_kib=maxrss, rc=rc, timed_out=timed_out,
                      at_first=at_first, out="".join(out)[-2000:])))
