//! Recording a tar-split of a layer while it streams past, in the JSON-lines format
//! of github.com/vbatts/tar-split (`tar/storage`), which containers/storage reads from
//! `<id>.tar-split.gz` to rebuild the exact layer tar for `podman push`/`save`.
//!
//! Each line is one entry: a *segment* (`type` 2) carries raw archive bytes (headers,
//! extension headers, padding, the end-of-archive blocks and anything after them),
//! base64 in `payload`; a *file* (`type` 1) names an entry whose content is fetched
//! from the unpacked layer on reassembly, with its `size` and the CRC-64 (ISO) of the
//! content in `payload`. Concatenating segments and file contents in `position`
//! order gives back the tar byte for byte. We cut segments where tar-split's own
//! disassembler does: everything between two file contents is one segment.
//!
//! The recorder parses nothing itself: it observes the one tar parser
//! ([`cvmfs_graphdriver::archive::tarparse`]) that also feeds the unpacker, so it describes the
//! very bytes, names and sizes that were unpacked.
//!
//! Besides the tar-split it keeps what later steps need of the entries, bounded
//! independently of how many there are: the whiteout markers and the entries not
//! owned by root (up to [`MAX_KEPT_NAMES`] bytes of names), and the sets of owners.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use cvmfs_format::tarsplit::{TarSplitEntry, ENTRY_FILE};
use cvmfs_graphdriver::archive::tarparse::{self, TarEntry, TarObserver, TarReader};
use cvmfs_graphdriver::archive::WHITEOUT_PREFIX;

/// Most bytes of entry names kept for later steps (markers, owners).
pub const MAX_KEPT_NAMES: usize = 16 << 20;
/// Size of the chunks trailing data is cut into (tar-split uses 1 MiB too).
const TRAILER_CHUNK: usize = 1 << 20;

/// CRC-64 with the ISO polynomial, as Go's `hash/crc64` with `crc64.ISO`.
#[derive(Clone)]
pub struct Crc64 {
    state: u64,
}

fn crc64_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // reversed ISO polynomial x^64 + x^4 + x^3 + x + 1
        const POLY: u64 = 0xD800_0000_0000_0000;
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut crc = i as u64;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
            *slot = crc;
        }
        t
    })
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64 {
    pub fn new() -> Crc64 {
        Crc64 { state: 0 }
    }
    pub fn update(&mut self, data: &[u8]) {
        let t = crc64_table();
        let mut crc = !self.state;
        for b in data {
            crc = t[((crc as u8) ^ b) as usize] ^ (crc >> 8);
        }
        self.state = !crc;
    }
    pub fn sum(&self) -> u64 {
        self.state
    }
}

/// Standard base64 with padding (what Go's encoding/json uses for `[]byte`).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Go's `filepath.Clean`, on bytes: what tar-split compares to find duplicates.
pub fn go_clean(name: &[u8]) -> Vec<u8> {
    let rooted = name.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|p| *p != b"..") {
                    parts.pop();
                } else if !rooted {
                    parts.push(c);
                }
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::new();
    if rooted {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// One non-extension entry of the archive, as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry name (PAX `path` / GNU long name applied), raw bytes.
    pub name: Vec<u8>,
    pub typeflag: u8,
    /// Bytes the tar-split takes from the layer's file on reassembly. 0 for a
    /// sparse file: its archived form (map and data fragments) is not the
    /// file's content, so those bytes are kept in the tar-split itself.
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// A hardlink's target name (raw bytes), empty for other entries.
    pub linkname: Vec<u8>,
}

/// What the recorder keeps of a layer's entries for later steps (the marker
/// list, `ownership.json`), in archive order: every entry whose last component
/// is a whiteout marker, every hardlink (it shares its target's owner,
/// whatever its own header says) and every entry not owned by 0:0, while their names fit
/// in [`MAX_KEPT_NAMES`]. `complete` is false when some were dropped for that cap.
#[derive(Debug, Clone, Default)]
pub struct KeptEntries {
    pub list: Vec<EntryInfo>,
    pub complete: bool,
    /// Every uid and gid of the layer's entries.
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
    names_bytes: usize,
}

impl KeptEntries {
    pub fn new() -> KeptEntries {
        KeptEntries {
            complete: true,
            ..KeptEntries::default()
        }
    }

    /// Consider one entry.
    pub fn add(&mut self, e: EntryInfo) {
        if !matches!(e.typeflag, b'g' | b'x') {
            self.uids.insert(e.uid);
            self.gids.insert(e.gid);
        }
        let base = e
            .name
            .rsplit(|b| *b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"");
        let marker = base.starts_with(WHITEOUT_PREFIX.as_bytes());
        if !marker && e.typeflag != b'1' && (e.uid, e.gid) == (0, 0) {
            return;
        }
        if self.names_bytes + e.name.len() > MAX_KEPT_NAMES {
            self.complete = false;
            return;
        }
        self.names_bytes += e.name.len();
        self.list.push(e);
    }
}

impl From<Vec<EntryInfo>> for KeptEntries {
    /// Every entry of `list` kept (a complete list, as tests and tools build it).
    fn from(list: Vec<EntryInfo>) -> KeptEntries {
        let mut k = KeptEntries::new();
        for e in &list {
            k.uids.insert(e.uid);
            k.gids.insert(e.gid);
        }
        k.names_bytes = list.iter().map(|e| e.name.len()).sum();
        k.list = list;
        k
    }
}

impl std::ops::Deref for KeptEntries {
    type Target = [EntryInfo];
    fn deref(&self) -> &[EntryInfo] {
        &self.list
    }
}

/// The layer path an entry name unpacks to, as a digest: duplicates are found
/// without keeping names. Names the unpacker refuses (climbing above the root)
/// are compared as Go cleans them.
fn name_key(name: &[u8]) -> [u8; 16] {
    let norm = match tarparse::clean_components(name) {
        Some(c) => c.join(&b'/'),
        None => go_clean(name),
    };
    let d = Sha256::digest(&norm);
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// The tar-split recorder, an observer of the tar parser. Write its JSON lines
/// to `out`.
pub struct TarSplitter<W: Write> {
    out: W,
    /// Raw bytes of the segment being collected.
    raw: Vec<u8>,
    current: Option<EntryInfo>,
    sparse: bool,
    crc: Crc64,
    position: u64,
    seen: HashSet<[u8; 16]>,
    kept: KeptEntries,
    reject_devices: bool,
}

impl<W: Write> TarSplitter<W> {
    pub fn new(out: W) -> TarSplitter<W> {
        TarSplitter {
            out,
            raw: Vec::new(),
            current: None,
            sparse: false,
            crc: Crc64::new(),
            position: 0,
            seen: HashSet::new(),
            kept: KeptEntries::new(),
            reject_devices: false,
        }
    }

    /// Refuse character and block devices (an unprivileged publisher cannot
    /// create them, and should say so before unpacking anything of the entry).
    pub fn reject_devices(mut self, yes: bool) -> Self {
        self.reject_devices = yes;
        self
    }

    fn emit_segment(&mut self) -> Result<(), String> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let line = TarSplitEntry::segment(base64(&self.raw), self.position);
        self.raw.clear();
        self.write_line(&line)
    }

    fn write_line(&mut self, entry: &TarSplitEntry) -> Result<(), String> {
        self.out
            .write_all(entry.to_json().as_bytes())
            .map_err(|e| format!("writing tar-split: {e}"))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| format!("writing tar-split: {e}"))?;
        self.position += 1;
        Ok(())
    }

    fn emit_file(&mut self, e: &EntryInfo, crc: Option<u64>) -> Result<(), String> {
        if !self.seen.insert(name_key(&e.name)) {
            return Err(
                "duplicate entry (the same path twice in one layer; the tar-split could not rebuild it)"
                    .into(),
            );
        }
        let (name, name_raw) = match std::str::from_utf8(&e.name) {
            Ok("") => (None, None),
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(base64(&e.name))),
        };
        let entry = TarSplitEntry {
            name,
            name_raw,
            payload: crc.map(|c| base64(&c.to_be_bytes())),
            position: self.position,
            size: (e.size > 0).then_some(e.size),
            kind: ENTRY_FILE,
        };
        self.write_line(&entry)
    }

    /// Bytes after the end-of-archive marker: kept as raw segments.
    pub fn trailer(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let room = TRAILER_CHUNK - self.raw.len();
            let n = room.min(data.len());
            self.raw.extend_from_slice(&data[..n]);
            if self.raw.len() >= TRAILER_CHUNK {
                self.emit_segment()?;
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// The stream ended: flush the last segment; returns the writer and what
    /// was kept of the entries.
    pub fn finish(mut self) -> Result<(W, KeptEntries), String> {
        if self.current.is_some() {
            return Err("the archive ends in the middle of an entry (truncated)".into());
        }
        self.emit_segment()?;
        self.out
            .flush()
            .map_err(|e| format!("writing tar-split: {e}"))?;
        Ok((self.out, self.kept))
    }
}

impl<W: Write> TarObserver for TarSplitter<W> {
    fn header_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.raw.extend_from_slice(bytes);
        Ok(())
    }

    fn entry(&mut self, e: &TarEntry) -> Result<(), String> {
        if self.reject_devices && matches!(e.typeflag, b'3' | b'4') {
            return Err("device node refused (publishing unprivileged, or --no-devices)".into());
        }
        let info = EntryInfo {
            name: e.name.clone(),
            typeflag: e.typeflag,
            // Sparse files (old GNU `S`, GNU PAX formats 0.0/0.1/1.0): the
            // archive holds a map and the data fragments, the layer the expanded
            // file. The tar-split keeps the archived bytes as raw segments and
            // records the file with size 0, so reassembly reproduces the tar byte
            // for byte without reading the layer's file. (Go's tar-split records
            // the expanded content instead, which does not reassemble to the
            // diffID.)
            size: if e.sparse.is_some() { 0 } else { e.size },
            mode: e.mode,
            uid: u32::try_from(e.uid).unwrap_or(u32::MAX),
            gid: u32::try_from(e.gid).unwrap_or(u32::MAX),
            linkname: if e.typeflag == b'1' {
                e.linkname.clone()
            } else {
                Vec::new()
            },
            mtime: e.mtime.sec,
        };
        // A global header is an entry of its own for tar-split, without content.
        if e.typeflag == b'g' || e.sparse.is_none() {
            self.emit_segment()?;
        }
        self.sparse = e.sparse.is_some();
        self.crc = Crc64::new();
        self.current = Some(info);
        Ok(())
    }

    fn content(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.sparse {
            self.raw.extend_from_slice(bytes);
            // bounded segments: sparse data can be large
            if self.raw.len() >= TRAILER_CHUNK {
                self.emit_segment()?;
            }
        } else {
            self.crc.update(bytes);
        }
        Ok(())
    }

    fn entry_end(&mut self) -> Result<(), String> {
        let info = self.current.take().ok_or("entry end without an entry")?;
        let crc = (info.size > 0 && info.typeflag != b'g').then(|| self.crc.sum());
        self.emit_file(&info, crc)?;
        self.kept.add(info);
        Ok(())
    }
}

/// Record the tar-split of a whole uncompressed layer `input` (nothing is
/// unpacked), trailing bytes after the end-of-archive marker included.
pub fn record<R: Read, W: Write>(input: R, out: W) -> Result<(W, KeptEntries), String> {
    let mut split = TarSplitter::new(out);
    let mut rest = {
        let mut tar = TarReader::new(input).with_observer(&mut split);
        while tar.next_entry().map_err(|e| e.to_string())?.is_some() {}
        tar.into_inner()
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading layer: {e}")),
        };
        split.trailer(&buf[..n])?;
    }
    split.finish()
}
