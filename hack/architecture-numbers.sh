#!/usr/bin/env bash
# The structure figures issue 11 asks to track, printed for the current tree:
#   - lines of Rust compiled into the library podman links (crates/driver and the
#     crates/format it depends on) and in the publisher (crates/publisher),
#   - copies of the DUCC path scheme (".layers" / ".flat" spelled as literals),
#   - places that name each on-disk file of the store format,
#   - functions longer than 100 lines outside tests,
#   - what `duplicates` finds over the whole tree (when the tool is installed).
# Read-only; run it before and after a restructuring and quote both.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import os, re

def rust_files(root, skip=()):
    for d, _, files in os.walk(root):
        if any(d.startswith(s) for s in skip):
            continue
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(d, f)

def strip_tests(text):
    # drop `#[cfg(test)] mod tests { ... }` blocks: they are not shipped code
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)

# The library podman links: the driver crate and what it depends on.
lib = list(rust_files("crates/driver/src")) + list(rust_files("crates/format/src"))
cli = list(rust_files("crates/publisher/src"))
def loc(paths):
    n = 0
    for p in paths:
        for line in strip_tests(open(p, encoding="utf-8").read()).splitlines():
            s = line.strip()
            if s and not s.startswith("//"):
                n += 1
    return n
print(f"library podman links (crates/driver + crates/format, without tests and comments): {loc(lib)} lines in {len(lib)} files")
print(f"publisher (crates/publisher: cvmfs-podman and its library half): {loc(cli)} lines in {len(cli)} files")

shipped = lib + cli
def count(pattern):
    hits = []
    for p in shipped:
        for i, line in enumerate(strip_tests(open(p, encoding="utf-8").read()).splitlines(), 1):
            if re.search(pattern, line) and not line.strip().startswith("//"):
                hits.append(f"{p}:{i}")
    return hits
for name, pat in [("DUCC path scheme \".layers\"", r'"\.layers'), ("DUCC path scheme \".flat\"", r'"\.flat')]:
    h = count(pat)
    print(f"{name}: {len(h)} literal copies ({', '.join(h)})")
for f in ["layer.json", "ownership.json", "origin.json", "layers.json", "images.json",
          "manifest.json", "tar-split", "markers"]:
    h = count(re.escape(f'"{f}') if f != "markers" else r'"markers"')
    files = sorted({x.rsplit(":", 1)[0] for x in h})
    print(f"names {f!r}: {len(h)} places in {len(files)} files ({', '.join(files)})")

long = []
fn_re = re.compile(r"^(\s*)(pub(\([a-z]+\))?\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")
for p in shipped:
    lines = strip_tests(open(p, encoding="utf-8").read()).splitlines()
    i = 0
    while i < len(lines):
        m = fn_re.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j].split("//")[0])
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break
            j += 1
        if started and j - i + 1 > 100:
            long.append((j - i + 1, f"{p}:{i+1} {m.group(6)}"))
        i += 1
long.sort(reverse=True)
print(f"functions over 100 lines (outside tests): {len(long)}")
for n, where in long:
    print(f"    {n:4d}  {where}")
PY
if command -v duplicates >/dev/null 2>&1; then
  duplicates --most 1 --seconds 120 | head -n 1 | sed 's/^/duplicates: /'
else
  echo "duplicates: tool not installed here"
fi
