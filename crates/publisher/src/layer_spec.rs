//! Layer specs: a tiny text format that describes an image layer, for building OCI
//! layer tars in memory (tests, and the CVMFS-correctness corpus generator), plus
//! [`snapshot`], a canonical listing of a directory tree that makes trees comparable.
//!
//! # Format
//!
//! One entry per line; blank lines and lines starting with `#` are ignored. Tokens are
//! separated by blanks; a token may be double-quoted (escapes `\n \t \r \0 \\ \" \xNN`).
//!
//! ```text
//! dir      PATH [MODE] [UID:GID] [mtime=SECS]
//! file     PATH [MODE] [UID:GID] [mtime=SECS] ["CONTENT" | size=BYTES]
//! symlink  PATH -> TARGET [UID:GID] [mtime=SECS]
//! hardlink PATH => TARGET
//! char     PATH MAJOR:MINOR [MODE] [UID:GID]
//! block    PATH MAJOR:MINOR [MODE] [UID:GID]
//! fifo     PATH [MODE] [UID:GID]
//! whiteout PATH [UID:GID]          # OCI ".wh.<name>" marker deleting PATH
//! opaque   PATH                    # OCI "PATH/.wh..wh..opq" marker
//! xattr    PATH NAME=VALUE         # adds an xattr to the entry PATH declared above
//! ```
//!
//! For example:
//!
//! ```text
//! dir /etc 0755 0:0
//! file /etc/hosts 0644 1000:1000 "127.0.0.1 localhost\n"
//! symlink /bin -> usr/bin
//! hardlink /a/c => /a/b
//! whiteout /etc/old
//! opaque /data/x
//! char /dev/null 1:3 0666
//! fifo /run/p 0600
//! xattr /etc/hosts user.k=v
//! ```
//!
//! MODE is octal (with a leading `0`). Defaults: mode 0755 for directories, 0644 for
//! files, devices and fifos, 0777 for symlinks; owner 0:0; mtime 1700000000; empty
//! content. `size=N` gives N bytes of a deterministic pattern. A hardlink takes its
//! target entry's mode, owner, mtime and xattrs (as real tar writers repeat them);
//! MODE, UID:GID and `mtime=` after the target override them. Every entry type
//! accepts the optional MODE, UID:GID and `mtime=` tokens.
//!
//! An unquoted PATH has its leading `/` removed to form the tar name (`/etc/hosts` is
//! the entry `etc/hosts`, directories get a trailing `/`). A *quoted* PATH or hardlink
//! target is used verbatim, byte for byte, so hostile names such as `"/../../x"` or
//! `"../x"` can be written too. Symlink targets are always stored verbatim.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cvmfs_graphdriver::archive::tarout::{Header, Kind as TarKind, TarWriter};

/// Default modification time of entries (2023-11-14).
pub const DEFAULT_MTIME: i64 = 1_700_000_000;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file and its content.
    File(Vec<u8>),
    /// A symlink and its target (verbatim).
    Symlink(Vec<u8>),
    /// A hardlink and the tar name of its target.
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// An OCI whiteout deleting the path.
    Whiteout,
    /// An OCI opaque marker on the directory path.
    Opaque,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Tar name without a trailing slash (e.g. `etc/hosts`), bytes as written.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// Extended attributes, in declaration order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A parse error naming the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer spec line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

struct Token {
    text: Vec<u8>,
    quoted: bool,
}

fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut text = Vec::new();
        let quoted = b[i] == b'"';
        while i < b.len() && !b[i].is_ascii_whitespace() {
            if b[i] != b'"' {
                text.push(b[i]);
                i += 1;
                continue;
            }
            // a quoted run, possibly in the middle of a token (name="a b")
            i += 1;
            loop {
                let Some(&c) = b.get(i) else {
                    return Err("unterminated quote".into());
                };
                i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let Some(&e) = b.get(i) else {
                            return Err("dangling backslash".into());
                        };
                        i += 1;
                        match e {
                            b'n' => text.push(b'\n'),
                            b't' => text.push(b'\t'),
                            b'r' => text.push(b'\r'),
                            b'0' => text.push(0),
                            b'\\' | b'"' => text.push(e),
                            b'x' => {
                                let hex = b
                                    .get(i..i + 2)
                                    .and_then(|h| std::str::from_utf8(h).ok())
                                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                                    .ok_or("bad \\x escape")?;
                                text.push(hex);
                                i += 2;
                            }
                            other => return Err(format!("unknown escape \\{}", other as char)),
                        }
                    }
                    c => text.push(c),
                }
            }
        }
        out.push(Token { text, quoted });
    }
    Ok(out)
}

fn tar_path(t: &Token) -> Vec<u8> {
    if t.quoted {
        t.text.clone()
    } else {
        let s = &t.text[..];
        let s = s.strip_prefix(b"/").unwrap_or(s);
        s.strip_suffix(b"/").unwrap_or(s).to_vec()
    }
}

fn parse_pair(t: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(t).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn is_mode(t: &Token) -> bool {
    !t.quoted
        && t.text.len() > 1
        && t.text[0] == b'0'
        && t.text.iter().all(|c| (b'0'..=b'7').contains(c))
}

/// Parse a layer spec.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        parse_line(trimmed, &mut entries).map_err(|reason| ParseError {
            line: n + 1,
            reason,
        })?;
    }
    Ok(entries)
}

/// One non-empty line: a new entry, or an `xattr` line adding to the last
/// entry with its path.
fn parse_line(line: &str, entries: &mut Vec<Entry>) -> Result<(), String> {
    let toks = tokenize(line)?;
    let word = String::from_utf8_lossy(&toks[0].text).into_owned();
    let Some(path_tok) = toks.get(1) else {
        return Err(format!("{word}: missing path"));
    };
    let path = tar_path(path_tok);
    let rest: &[Token] = &toks[2..];
    if word == "xattr" {
        return add_xattr(entries, &path, rest);
    }
    let mut e = Entry {
        path,
        kind: Kind::Dir,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: DEFAULT_MTIME,
        xattrs: Vec::new(),
    };
    let rest = entry_kind(&word, &mut e, rest, entries)?;
    for t in rest {
        entry_attribute(&mut e, t)?;
    }
    entries.push(e);
    Ok(())
}

/// `xattr PATH NAME=VALUE`.
fn add_xattr(entries: &mut [Entry], path: &[u8], rest: &[Token]) -> Result<(), String> {
    let [kv] = rest else {
        return Err("xattr: expected PATH NAME=VALUE".into());
    };
    let eq = kv
        .text
        .iter()
        .position(|c| *c == b'=')
        .ok_or("xattr: expected NAME=VALUE")?;
    let e = entries
        .iter_mut()
        .rev()
        .find(|e| e.path == path)
        .ok_or("xattr: no entry with this path above")?;
    e.xattrs
        .push((kv.text[..eq].to_vec(), kv.text[eq + 1..].to_vec()));
    Ok(())
}

/// The entry type word and its own operands (link target, device numbers);
/// returns the tokens left for attributes.
fn entry_kind<'t>(
    word: &str,
    e: &mut Entry,
    rest: &'t [Token],
    entries: &[Entry],
) -> Result<&'t [Token], String> {
    match word {
        "dir" => e.mode = 0o755,
        "file" => e.kind = Kind::File(Vec::new()),
        "fifo" => e.kind = Kind::Fifo,
        "whiteout" => e.kind = Kind::Whiteout,
        "opaque" => e.kind = Kind::Opaque,
        "symlink" | "hardlink" => return link_kind(word, e, rest, entries),
        "char" | "block" => {
            let dev = rest
                .first()
                .and_then(|t| parse_pair(&t.text))
                .ok_or_else(|| format!("{word}: expected MAJOR:MINOR after the path"))?;
            e.kind = if word == "char" {
                Kind::Char(dev.0, dev.1)
            } else {
                Kind::Block(dev.0, dev.1)
            };
            return Ok(&rest[1..]);
        }
        other => return Err(format!("unknown entry type {other:?}")),
    }
    Ok(rest)
}

/// `symlink PATH -> TARGET` / `hardlink PATH => TARGET`.
fn link_kind<'t>(
    word: &str,
    e: &mut Entry,
    rest: &'t [Token],
    entries: &[Entry],
) -> Result<&'t [Token], String> {
    let arrow: &[u8] = if word == "symlink" { b"->" } else { b"=>" };
    let (Some(a), Some(t)) = (rest.first(), rest.get(1)) else {
        return Err(format!(
            "{word}: expected PATH {} TARGET",
            String::from_utf8_lossy(arrow)
        ));
    };
    if a.text != arrow || a.quoted {
        return Err(format!(
            "{word}: expected {:?} after the path",
            String::from_utf8_lossy(arrow)
        ));
    }
    if word == "symlink" {
        e.kind = Kind::Symlink(t.text.clone());
        e.mode = 0o777;
    } else {
        let target = tar_path(t);
        // Like real writers, a hardlink's header repeats its file's
        // metadata (appliers set it on the shared inode).
        if let Some(f) = entries.iter().rev().find(|x| x.path == target) {
            (e.mode, e.uid, e.gid, e.mtime) = (f.mode, f.uid, f.gid, f.mtime);
            e.xattrs = f.xattrs.clone();
        }
        e.kind = Kind::Hardlink(target);
    }
    Ok(&rest[2..])
}

/// One attribute token: an octal mode, `uid:gid`, `mtime=`, and for files
/// `size=` or quoted content.
fn entry_attribute(e: &mut Entry, t: &Token) -> Result<(), String> {
    if is_mode(t) {
        let s = std::str::from_utf8(&t.text).unwrap_or("0");
        e.mode = u32::from_str_radix(s, 8).map_err(|x| format!("bad mode: {x}"))?;
    } else if let (false, Some(p)) = (t.quoted, parse_pair(&t.text)) {
        (e.uid, e.gid) = p;
    } else if let Some(v) = t.text.strip_prefix(b"mtime=").filter(|_| !t.quoted) {
        e.mtime = std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or("bad mtime")?;
    } else if let (Some(v), Kind::File(_)) =
        (t.text.strip_prefix(b"size=").filter(|_| !t.quoted), &e.kind)
    {
        let n: usize = std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or("bad size")?;
        e.kind = Kind::File((0..n).map(|i| (i % 251) as u8).collect());
    } else if let (true, Kind::File(_)) = (t.quoted, &e.kind) {
        e.kind = Kind::File(t.text.clone());
    } else {
        return Err(format!(
            "unexpected token {:?}",
            String::from_utf8_lossy(&t.text)
        ));
    }
    Ok(())
}

/// The tar name of `.wh.<base>` / `.wh..wh..opq` markers for `path`.
fn marker_name(path: &[u8], opaque: bool) -> Vec<u8> {
    if opaque {
        let mut n = path.to_vec();
        if !n.is_empty() {
            n.push(b'/');
        }
        n.extend_from_slice(b".wh..wh..opq");
        return n;
    }
    let (dir, base) = match path.iter().rposition(|c| *c == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    let mut n = dir.to_vec();
    n.extend_from_slice(b".wh.");
    n.extend_from_slice(base);
    n
}

/// Build an uncompressed OCI layer tar (whiteouts as `.wh.` markers), entries in the
/// order given.
pub fn to_tar(entries: &[Entry]) -> Vec<u8> {
    let mut tw = TarWriter::new(Vec::new());
    for e in entries {
        let (kind, name) = match &e.kind {
            Kind::Dir => {
                let mut n = e.path.clone();
                n.push(b'/');
                (TarKind::Dir, n)
            }
            Kind::File(_) => (TarKind::File, e.path.clone()),
            Kind::Symlink(_) => (TarKind::Symlink, e.path.clone()),
            Kind::Hardlink(_) => (TarKind::Hardlink, e.path.clone()),
            Kind::Char(..) => (TarKind::Char, e.path.clone()),
            Kind::Block(..) => (TarKind::Block, e.path.clone()),
            Kind::Fifo => (TarKind::Fifo, e.path.clone()),
            Kind::Whiteout => (TarKind::File, marker_name(&e.path, false)),
            Kind::Opaque => (TarKind::File, marker_name(&e.path, true)),
        };
        let mut h = Header::new(name, kind);
        h.mode = e.mode;
        h.uid = e.uid;
        h.gid = e.gid;
        h.mtime = e.mtime;
        h.xattrs = e.xattrs.clone();
        let mut data: &[u8] = &[];
        match &e.kind {
            Kind::File(c) => {
                h.size = c.len() as u64;
                data = c;
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => h.link = t.clone(),
            Kind::Char(a, b) | Kind::Block(a, b) => (h.dev_major, h.dev_minor) = (*a, *b),
            Kind::Whiteout | Kind::Opaque => h.mode = 0,
            _ => {}
        }
        tw.append(&h, &mut data)
            .expect("writing a tar into memory cannot fail");
    }
    tw.finish().expect("writing a tar into memory cannot fail")
}

/// Parse and build in one step.
pub fn spec_to_tar(text: &str) -> Result<Vec<u8>, ParseError> {
    Ok(to_tar(&parse(text)?))
}

/// FNV-1a, enough to tell contents apart in listings (not a security hash).
fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn esc(b: &[u8]) -> String {
    let mut s = String::new();
    for c in b {
        match c {
            b' ' => s.push_str("\\x20"),
            b'\\' => s.push_str("\\\\"),
            0x21..=0x7e => s.push(*c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

/// What [`snapshot_with`] records besides the basics.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotOptions {
    /// Include modification times (seconds) of everything but the root and whiteouts.
    pub mtimes: bool,
}

/// A canonical listing of the tree under `dir` (the root itself excluded), one line
/// per entry sorted by path: type, mode, owner, size and content hash, symlink target,
/// device numbers, hardlink peer (the first path, in listing order, of the same
/// inode), and xattrs (all but `security.selinux`). Overlay whiteouts (0/0 character
/// devices) are listed as `whiteout`.
pub fn snapshot(dir: &Path) -> io::Result<String> {
    snapshot_with(dir, SnapshotOptions::default())
}

/// [`snapshot`] with options.
pub fn snapshot_with(dir: &Path, opts: SnapshotOptions) -> io::Result<String> {
    let mut paths = Vec::new();
    collect(dir, &[], &mut paths)?;
    paths.sort();
    let mut inodes: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut out = String::new();
    for rel in paths {
        let full = dir.join(std::ffi::OsStr::from_bytes(&rel));
        let md = std::fs::symlink_metadata(&full)?;
        let ft = md.file_type();
        let typ = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() && md.rdev() == 0 {
            "whiteout"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let _ = write!(
            out,
            "/{} {typ} {:04o} {}:{}",
            esc(&rel),
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                let _ = write!(out, " link=/{}", esc(first));
            } else {
                inodes.insert((md.dev(), md.ino()), rel.clone());
            }
        }
        if ft.is_file() {
            let data = std::fs::read(&full)?;
            let _ = write!(out, " size={} hash={:016x}", data.len(), fnv64(&data));
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&full)?;
            let _ = write!(out, " -> {}", esc(t.as_os_str().as_bytes()));
        } else if (ft.is_char_device() && md.rdev() != 0) || ft.is_block_device() {
            let _ = write!(
                out,
                " dev={}:{}",
                rustix::fs::major(md.rdev() as _),
                rustix::fs::minor(md.rdev() as _)
            );
        }
        let mut names = cvmfs_graphdriver::archive::fsutil::list_xattrs(&full)?;
        names.sort();
        for name in names {
            if name == b"security.selinux" {
                continue;
            }
            if let Some(v) = cvmfs_graphdriver::archive::fsutil::get_xattr(&full, &name)? {
                let _ = write!(out, " xattr:{}={}", esc(&name), esc(&v));
            }
        }
        // A whiteout's time carries no meaning (overlayfs and Go leave it at creation).
        if opts.mtimes && typ != "whiteout" {
            let _ = write!(out, " mtime={}", md.mtime());
        }
        out.push('\n');
    }
    Ok(out)
}

fn collect(dir: &Path, prefix: &[u8], out: &mut Vec<Vec<u8>>) -> io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let is_dir = ent.file_type()?.is_dir();
        out.push(rel.clone());
        if is_dir {
            collect(&ent.path(), &rel, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let e = parse(
            r#"
            # a comment
            dir /etc 0750 0:0
            file /etc/hosts 0644 1000:1000 "127.0.0.1 localhost\n"
            xattr /etc/hosts user.k="a b"
            symlink /bin -> usr/bin
            hardlink /a/c => /a/b
            whiteout /etc/old
            opaque /data/x
            char /dev/null 1:3 0666
            block /dev/sda 8:0 0660 0:6
            fifo /run/p 0600 mtime=5
            file /big size=300
            file "/../../x"
            "#,
        )
        .unwrap();
        assert_eq!(e.len(), 11);
        assert_eq!(e[0].path, b"etc");
        assert_eq!(e[0].mode, 0o750);
        assert_eq!(e[1].kind, Kind::File(b"127.0.0.1 localhost\n".to_vec()));
        assert_eq!((e[1].uid, e[1].gid), (1000, 1000));
        assert_eq!(e[1].xattrs, vec![(b"user.k".to_vec(), b"a b".to_vec())]);
        assert_eq!(e[2].kind, Kind::Symlink(b"usr/bin".to_vec()));
        assert_eq!(e[3].kind, Kind::Hardlink(b"a/b".to_vec()));
        assert_eq!(e[6].kind, Kind::Char(1, 3));
        assert_eq!(e[6].mode, 0o666);
        assert_eq!(e[7].kind, Kind::Block(8, 0));
        assert_eq!(e[7].gid, 6);
        assert_eq!(e[8].mtime, 5);
        assert!(matches!(&e[9].kind, Kind::File(c) if c.len() == 300));
        assert_eq!(e[10].path, b"/../../x");
    }

    #[test]
    fn rejects_bad_lines_with_line_numbers() {
        let err = parse("dir /a\nfrob /b\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse("symlink /a usr").is_err());
        assert!(parse("xattr /nope user.a=b").is_err());
        assert!(parse("file /a \"unterminated").is_err());
        assert!(parse("char /a 0644").is_err());
    }

    #[test]
    fn markers_use_oci_names() {
        assert_eq!(marker_name(b"etc/old", false), b"etc/.wh.old");
        assert_eq!(marker_name(b"old", false), b".wh.old");
        assert_eq!(marker_name(b"data/x", true), b"data/x/.wh..wh..opq");
        let tar = spec_to_tar("whiteout /etc/old\nopaque /data/x\ndir /d\n").unwrap();
        let mut r = cvmfs_graphdriver::archive::tarparse::TarReader::new(&tar[..]);
        let mut names = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            names.push(String::from_utf8(e.name).unwrap());
        }
        assert_eq!(names, vec!["etc/.wh.old", "data/x/.wh..wh..opq", "d/"]);
    }
}
