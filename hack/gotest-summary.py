#!/usr/bin/env python3
"""Summarise `go test -json` output read from stdin.

Prints the test output as it arrives (like `go test -v`), then one line
"N passed, N failed, N skipped" counting top-level tests, followed by the
skipped tests with the reason each gave, and the failed tests by name.
Exit status: 0 when nothing failed, at least one test passed and every
skipped test is allowed; 1 otherwise. graphtest turns a driver that fails to
initialise into skips, so a skip is only accepted where it is expected.

Usage: go test -json ... | gotest-summary.py [--allow-skip TestName]...
"""

import json
import re
import sys


def main() -> int:
    args = sys.argv[1:]
    allowed_skips = set()
    while args:
        if len(args) >= 2 and args[0] == "--allow-skip":
            allowed_skips.add(args[1])
            args = args[2:]
        else:
            sys.exit(f"usage: {sys.argv[0]} [--allow-skip TestName]...")
    results = {}  # top-level test -> pass/fail/skip
    output = {}  # top-level test -> its output lines
    package_failed = []
    for raw in sys.stdin:
        try:
            ev = json.loads(raw)
        except json.JSONDecodeError:
            # Build errors and the like are printed as plain text.
            sys.stdout.write(raw)
            continue
        test = ev.get("Test")
        action = ev.get("Action")
        if action == "output":
            text = ev.get("Output", "")
            sys.stdout.write(text)
            sys.stdout.flush()
            if test:
                output.setdefault(test.split("/")[0], []).append(text)
            continue
        if action in ("pass", "fail", "skip"):
            if test is None:
                if action == "fail":
                    package_failed.append(ev.get("Package", "?"))
            elif "/" not in test:
                results[test] = action

    # Only Test functions count (not examples or benchmarks).
    tests = {t: r for t, r in results.items() if t.startswith("Test")}
    passed = sorted(t for t, r in tests.items() if r == "pass")
    failed = sorted(t for t, r in tests.items() if r == "fail")
    skipped = sorted(t for t, r in tests.items() if r == "skip")
    # A package that failed without a failing test (build error, panic,
    # timeout) is one failure, never a silent pass.
    extra = [p for p in package_failed if not failed]
    print()
    print(f"{len(passed)} passed, {len(failed) + len(extra)} failed, {len(skipped)} skipped")
    for t in skipped:
        reason = ""
        for line in output.get(t, []):
            m = re.match(r"^\s+\S+\.go:\d+: (.*)", line)
            if m:
                reason = m.group(1).strip()
        print(f"  skipped: {t}: {reason or '(no reason given)'}")
    for t in failed:
        print(f"  failed: {t}")
    for p in extra:
        print(f"  failed: package {p} (build error, panic or timeout; see above)")
    unexpected = [t for t in skipped if t not in allowed_skips]
    if unexpected:
        print(f"  error: unexpected skips (not allowed): {', '.join(unexpected)}")
    return 0 if not failed and not extra and not unexpected and passed else 1


if __name__ == "__main__":
    sys.exit(main())
