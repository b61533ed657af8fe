# Shared machinery of the patch generators (gen-patches.sh for the storage
# module, gen-image-patches.sh for the image module): a throw-away git
# repository holding the pristine module, anchored edits, and a deterministic
# `git format-patch` series that is either written to patches/ or compared with
# it (--check). Sourced after lib-storage.sh.
#
# Deterministic: fixed author, committer and dates, zero commit hashes, no
# signature, so the same inputs always give byte-identical patches.

export GIT_AUTHOR_NAME="cvmfs-graphdriver" GIT_AUTHOR_EMAIL="cvmfs-graphdriver@invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null

# patch_tree_init DIR SUBJECT: DIR (a writable copy of a module) becomes a git
# repository whose first commit is the pristine module. Sets $tree for g/commit/edit.
patch_tree_init() {
  tree=$1
  g init -q
  commit "$2" "Pristine module from the Go module cache."
}
g() { git -C "$tree" -c commit.gpgsign=false -c core.autocrlf=false "$@"; }
commit() { g add -A && g commit -q -m "$1" -m "$2"; }

# edit FILE ANCHOR REPLACEMENT: replace ANCHOR in $tree/FILE, failing loudly when
# it is not found exactly once (the upstream file changed: the edit has to be
# revisited for this version).
edit() {
  python3 - "$tree/$1" "$2" "$3" <<'PY'
import sys
path, anchor, replacement = sys.argv[1:4]
text = open(path).read()
if text.count(anchor) != 1:
    sys.exit(f"anchor not found exactly once in {path}: {anchor!r}")
open(path, "w").write(text.replace(anchor, replacement))
PY
}

# emit_patches NAME COUNT PATCH_DIR CHECK: format the last COUNT commits of
# $tree; CHECK=true compares them with PATCH_DIR (fails when stale), otherwise
# PATCH_DIR is replaced by them.
emit_patches() {
  local name=$1 count=$2 dir=$3 check=$4 out
  out=$(mktemp -d)
  g format-patch -q --zero-commit --no-signature --no-stat --full-index \
    --subject-prefix=PATCH -o "$out" "HEAD~$count..HEAD"
  if $check; then
    if ! diff -r -q "$dir" "$out" >/dev/null 2>&1; then
      echo "$name: $dir is stale (differs from what its generator produces):" >&2
      diff -r -u "$dir" "$out" | head -40 >&2 || true
      echo "$name: run it without --check and commit the result" >&2
      rm -rf "$out"
      return 1
    fi
    echo "$name: $dir is up to date"
  else
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$out"/*.patch "$dir/"
    echo "$name: wrote $(ls "$dir" | wc -l) patches to ${dir#"$ROOT/"}"
  fi
  rm -rf "$out"
}
