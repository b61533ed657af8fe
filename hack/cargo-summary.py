#!/usr/bin/env python3
"""Count the results in the output of one or more `cargo test` runs.

Usage: cargo-summary.py LOG

LOG holds the output of `cargo test` runs, each followed by a line
"cargo-exit: N" that the calling script writes with the run's exit status.
Prints the failing and ignored tests (one line each), then one line
"PASSED FAILED SKIPPED" for the caller to add to its own totals:
  passed  = tests reported "ok";
  failed  = tests reported "FAILED", plus one for every run that exited
            non-zero without a failing test (a build error or a crash must
            not pass);
  skipped = tests reported "ignored" (e.g. `#[ignore = "needs root"]` tests
            in a run without --include-ignored), and tests reported "ok"
            whose captured output (shown with `-- --show-output`) has a line
            starting "SKIP:": a test that found what it needs missing returns
            early, which libtest can only report as a pass.
"""

import re
import sys

RESULT = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored)")
EXIT = re.compile(r"^cargo-exit: (\d+)")
RUNNING = re.compile(r"^running \d+ tests?$")
OUTPUT = re.compile(r"^---- (.+) stdout ----$")
SUMMARY = re.compile(r"^test result: ")


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ok = failed = ignored = broken = 0
    failed_in_run = 0
    passed_here = set()  # tests reported ok in the current test binary
    skipped_here = set()  # tests whose shown output says SKIP:
    output_of = None
    lines = open(sys.argv[1], errors="replace").read().splitlines()
    for i, line in enumerate(lines):
        if RUNNING.match(line):
            passed_here, skipped_here, output_of = set(), set(), None
        m = OUTPUT.match(line)
        if m:
            output_of = m.group(1)
            continue
        if output_of and line.startswith("SKIP:"):
            skipped_here.add(output_of)
        if SUMMARY.match(line):
            for name in sorted(skipped_here & passed_here):
                ok -= 1
                ignored += 1
                print(f"test {name} ... skipped (SKIP: in its output)", file=sys.stderr)
            passed_here, skipped_here, output_of = set(), set(), None
            continue
        m = RESULT.match(line)
        if m:
            output_of = None
            if m.group(2) == "ok":
                passed_here.add(m.group(1))
                ok += 1
            elif m.group(2) == "FAILED":
                failed += 1
                failed_in_run += 1
                print(line, file=sys.stderr)
            else:
                ignored += 1
                print(line, file=sys.stderr)
            continue
        m = EXIT.match(line)
        if m:
            if m.group(1) != "0" and failed_in_run == 0:
                broken += 1
                print(f"cargo test exited {m.group(1)} without a failing test:", file=sys.stderr)
                for tail in lines[max(0, i - 40):i]:
                    print("    " + tail, file=sys.stderr)
            failed_in_run = 0
    print(ok, failed + broken, ignored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
