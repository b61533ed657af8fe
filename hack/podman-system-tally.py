#!/usr/bin/env python3
"""Tally of hack/test-podman-system.sh: reads LOGS/<run>/<file>.tap and
LOGS/<run>/times, prints the per-file table, writes it as markdown (--out) and
ends with "N passed, N failed, N skipped".

A test is a cvmfs-only failure when it passes in its reference run (overlay
for cvmfs; overlay-repo, the image in a read-only overlay store, for
cvmfs-repo, or overlay when that did not run) and fails in the cvmfs run; each counts as failed unless tests/podman-system/
known-differences.txt names it ("run<TAB>file<TAB>test<TAB>reason"), then it
counts as skipped with its reason printed. A listed test that no longer fails
is reported and counts as failed, so the list cannot go stale. Tests failing
with overlay too depend on this machine (no network, no systemd), not on the
driver: they count as skipped and are listed by name.
"""
import argparse
import datetime
import os
import re
import sys

TAP_RESULT = re.compile(r"^(ok|not ok) (\d+) (.*?)(?: # (skip|SKIP)\b.*)?$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)$")
NAME_PREFIX = re.compile(r"^[\[|]\d{3}[\]|] ")


def parse_tap(path):
    """{test name: 'pass'|'fail'|'skip'}; tests the plan announced but that
    never reported (a timeout, a crash) are 'fail' under their number."""
    results, planned = {}, 0
    if not os.path.exists(path):
        return results, 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = TAP_PLAN.match(line)
            if m:
                planned = int(m.group(1))
                continue
            m = TAP_RESULT.match(line)
            if not m:
                continue
            name = NAME_PREFIX.sub("", m.group(3))
            if m.group(4):
                results[name] = "skip"
            else:
                results[name] = "pass" if m.group(1) == "ok" else "fail"
    for n in range(len(results) + 1, planned + 1):
        results[f"(test #{n} never reported)"] = "fail"
    if planned == 0 and not results:
        results["(the file did not run: no TAP plan)"] = "fail"
    return results, planned


def read_times(path):
    times = {}
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            if len(parts) == 2:
                times[parts[0]] = int(parts[1])
    return times


def read_known(path):
    known = {}
    if path and os.path.exists(path):
        for lineno, line in enumerate(open(path), 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 4 or not all(p.strip() for p in parts):
                sys.exit(f"{path}:{lineno}: need run<TAB>file<TAB>test<TAB>reason: {line!r}")
            known[(parts[0], parts[1], parts[2])] = parts[3]
    return known


def counts(results):
    c = {"pass": 0, "fail": 0, "skip": 0}
    for status in results.values():
        c[status] += 1
    return c


def classify(res, runs, files, known, logs):
    """Counts and lists: passes and skips of every run; each failure held
    against its run's reference (REFERENCE below); broken harness; stale
    known-differences lines."""
    reference = {"cvmfs": "overlay", "cvmfs-repo": "overlay-repo" if "overlay-repo" in runs else "overlay"}
    c = {"passed": 0, "failed": 0, "skipped": 0, "regressions": [], "known_hits": [], "stale": [],
         "env_fail": {}, "broken": []}
    for f in files:
        for r in runs:
            n = counts(res[(r, f)])
            c["passed"] += n["pass"]
            c["skipped"] += n["skip"]
            for name, status in res[(r, f)].items():
                if status == "fail":
                    classify_failure(c, res, reference.get(r), r, f, name, known)
    # A harness that cannot run the suite must not look like parity: every
    # file needs passing tests in the reference runs and a setup_suite that worked.
    for f in files:
        for r in runs:
            if "setup_suite" in res[(r, f)] or (r not in reference and counts(res[(r, f)])["pass"] == 0):
                c["broken"].append((r, f))
    for r in runs:
        if os.path.exists(os.path.join(logs, r, "store-after.failed")):
            c["broken"].append((r, "(store check after the suite: see store-after.txt)"))
    for key in known:
        r, f, name = key
        if r in runs and f in files and res[(r, f)].get(name) != "fail":
            c["stale"].append(key)
    c["failed"] += len(c["broken"]) + len(c["stale"])
    return c


def classify_failure(c, res, cmp, r, f, name, known):
    """One failing test of run R: a cvmfs-only failure when its reference run
    CMP passed or skipped it, else a failure of the environment."""
    ref_status = res[(cmp, f)].get(name) if cmp else None
    key = (r, f, name)
    if cmp and ref_status in ("pass", "skip"):
        if key in known:
            c["known_hits"].append((key, known[key]))
            c["skipped"] += 1
        else:
            c["regressions"].append(key)
            c["failed"] += 1
    elif cmp and ref_status is None:
        c["regressions"].append((r, f, name + f" (not run with {cmp})"))
        c["failed"] += 1
    else:
        c["env_fail"].setdefault((f, name), []).append(r)
        c["skipped"] += 1


def render_table(res, times, runs, files, regressions):
    header = ["file"] + [f"{r} pass/fail/skip (s)" for r in runs] + ["cvmfs-only failures"]
    rows = []
    tot = {r: {"pass": 0, "fail": 0, "skip": 0, "secs": 0} for r in runs}
    for f in files:
        row = [f]
        for r in runs:
            n = counts(res[(r, f)])
            secs = times[r].get(f, 0)
            for k in n:
                tot[r][k] += n[k]
            tot[r]["secs"] += secs
            row.append(f"{n['pass']}/{n['fail']}/{n['skip']} ({secs})")
        row.append(str(sum(1 for k in regressions if k[1] == f)))
        rows.append(row)
    rows.append(["**total**"] + [f"**{t['pass']}/{t['fail']}/{t['skip']} ({t['secs']})**" for t in tot.values()]
                + [f"**{len(regressions)}**"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines), tot


def render_notes(c):
    notes = []
    if c["regressions"]:
        notes.append("\nFailing with cvmfs, passing with overlay (counted as failed):")
        notes += [f"- {r}: {f}: {n}" for r, f, n in c["regressions"]]
    if c["broken"]:
        notes.append("\nThe suite did not run (setup_suite failed, or nothing passed with overlay; counted as failed):")
        notes += [f"- {r}: {f}" for r, f in c["broken"]]
    if c["known_hits"]:
        notes.append("\nKnown differences (tests/podman-system/known-differences.txt; counted as skipped):")
        notes += [f"- {r}: {f}: {n} — {why}" for (r, f, n), why in c["known_hits"]]
    if c["stale"]:
        notes.append("\nListed in known-differences.txt but not failing (remove the line; counted as failed):")
        notes += [f"- {r}: {f}: {n}" for r, f, n in c["stale"]]
    if c["env_fail"]:
        notes.append("\nFailing in an overlay run (or in its reference run as well), so not a driver "
                     "difference (this machine: no network, no systemd; a read-only image store; "
                     "counted as skipped):")
        notes += [f"- {f}: {n} ({', '.join(rs)})" for (f, n), rs in sorted(c["env_fail"].items())]
    return "\n".join(notes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--podman", required=True)
    ap.add_argument("--set", required=True)
    ap.add_argument("--known")
    ap.add_argument("--out")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    runs = a.runs.split()
    known = read_known(a.known)
    res = {(r, f): parse_tap(os.path.join(a.logs, r, f + ".tap"))[0] for r in runs for f in a.files}
    times = {r: read_times(os.path.join(a.logs, r, "times")) for r in runs}
    c = classify(res, runs, a.files, known, a.logs)
    table, tot = render_table(res, times, runs, a.files, c["regressions"])
    notes = render_notes(c)
    print(table)
    print(notes)
    summary = f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
    if a.out:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(a.out, "w") as out:
            out.write("# podman system tests with the cvmfs driver\n\n")
            out.write(f"`make test-podman-system` (hack/test-podman-system.sh), {now}.\n\n")
            out.write(f"- podman: {a.podman}\n- files: {len(a.files)} ({a.set} set)\n")
            out.write(f"- runs: {', '.join(runs)}; wall time per run: "
                      + ", ".join(f"{r} {tot[r]['secs']} s" for r in runs) + "\n")
            out.write(f"- result: {summary}\n\n")
            out.write("pass/fail/skip per file and run, seconds in brackets.\n\n")
            out.write(table + "\n" + notes + "\n")
    print(summary)
    return 0 if c["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
