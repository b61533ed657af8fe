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
//! The recorder is push-based ([`TarSplitter::feed`]) so it can watch the very bytes
//! that are being unpacked and hashed, without a second pass over the stream.

use std::collections::HashSet;
use std::io::Write;

/// Longest extension header (PAX or GNU long name) we accept.
const MAX_EXTENSION: u64 = 1 << 20;
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
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Reading the data of an extension header (PAX `x`/`g`, GNU `L`/`K`).
    Extension { kind: u8, remaining: u64 },
    /// Streaming the content of a file entry; a sparse one's archived bytes are
    /// raw segment bytes instead.
    Data { remaining: u64, sparse: bool },
    /// The extension blocks of an old GNU sparse header (`S`), then its data.
    SparseExt { data: u64 },
    /// Skipping the padding after a file's content (kept for the next segment).
    Padding { remaining: u64 },
    /// One zero block seen; a second one ends the archive.
    Zero,
    /// After the end-of-archive marker: everything else is one more segment.
    Trailer,
}

/// Pending overrides from extension headers for the next entry.
#[derive(Default, Debug)]
struct Pending {
    path: Option<Vec<u8>>,
    size: Option<u64>,
    sparse: bool,
    /// GNU PAX sparse formats 0.1/1.0 keep the real name here (the header's
    /// is `GNUSparseFile.<pid>/<name>`).
    sparse_name: Option<Vec<u8>>,
}

/// The streaming tar-split recorder. Write its JSON lines to `out`.
pub struct TarSplitter<W: Write> {
    out: W,
    state: State,
    block: Vec<u8>,
    ext_data: Vec<u8>,
    /// Size (unpadded) of the extension header being read.
    pending_ext_size: u64,
    /// Raw bytes of the segment being collected.
    raw: Vec<u8>,
    pending: Pending,
    current: Option<EntryInfo>,
    /// Bytes the current entry occupies in the archive (before padding).
    stored: u64,
    crc: Crc64,
    position: u64,
    seen: HashSet<Vec<u8>>,
    entries: Vec<EntryInfo>,
    error: Option<String>,
    reject_devices: bool,
}

fn octal(field: &[u8]) -> Option<u64> {
    // GNU base-256 for large values
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            let mut v: u64 = u64::from(first & 0x7f);
            for b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
            }
            return Some(v);
        }
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// True for types whose header carries no data in the archive.
fn header_only(t: u8) -> bool {
    matches!(t, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

impl<W: Write> TarSplitter<W> {
    pub fn new(out: W) -> TarSplitter<W> {
        TarSplitter {
            out,
            state: State::Header,
            block: Vec::with_capacity(512),
            ext_data: Vec::new(),
            pending_ext_size: 0,
            raw: Vec::new(),
            pending: Pending::default(),
            current: None,
            stored: 0,
            crc: Crc64::new(),
            position: 0,
            seen: HashSet::new(),
            entries: Vec::new(),
            error: None,
            reject_devices: false,
        }
    }

    /// Refuse character and block devices (an unprivileged publisher cannot
    /// create them, and should say so before unpacking anything of the entry).
    pub fn reject_devices(mut self, yes: bool) -> Self {
        self.reject_devices = yes;
        self
    }

    /// The first error met (the stream is not a tar tar-split can describe).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Entries seen so far, in archive order.
    pub fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    fn emit_segment(&mut self) -> Result<(), String> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let line = serde_json::json!({
            "type": 2,
            "payload": base64(&self.raw),
            "position": self.position,
        });
        self.raw.clear();
        self.write_line(&line)
    }

    fn write_line(&mut self, v: &serde_json::Value) -> Result<(), String> {
        serde_json::to_writer(&mut self.out, v).map_err(|e| format!("writing tar-split: {e}"))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| format!("writing tar-split: {e}"))?;
        self.position += 1;
        Ok(())
    }

    fn emit_file(&mut self, e: &EntryInfo, crc: Option<u64>) -> Result<(), String> {
        let cleaned = go_clean(&e.name);
        if !self.seen.insert(cleaned) {
            return Err(format!(
                "entry {:?}: duplicate entry (the same path twice in one layer)",
                String::from_utf8_lossy(&e.name)
            ));
        }
        let mut m = serde_json::Map::new();
        m.insert("type".into(), 1.into());
        match std::str::from_utf8(&e.name) {
            Ok(s) if !s.is_empty() => {
                m.insert("name".into(), s.into());
            }
            Ok(_) => {}
            Err(_) => {
                m.insert("name_raw".into(), base64(&e.name).into());
            }
        }
        if e.size > 0 {
            m.insert("size".into(), e.size.into());
        }
        m.insert(
            "payload".into(),
            match crc {
                Some(c) => base64(&c.to_be_bytes()).into(),
                None => serde_json::Value::Null,
            },
        );
        m.insert("position".into(), self.position.into());
        self.write_line(&serde_json::Value::Object(m))
    }

    /// Observe the next bytes of the stream. After an error, further input is ignored.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        while !data.is_empty() {
            match self.step(data) {
                Ok(n) => data = &data[n..],
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    /// Consume a prefix of `data`, return how much.
    fn step(&mut self, data: &[u8]) -> Result<usize, String> {
        match &mut self.state {
            State::Header | State::Zero => {
                let need = 512 - self.block.len();
                let n = need.min(data.len());
                self.block.extend_from_slice(&data[..n]);
                if self.block.len() == 512 {
                    let block = std::mem::take(&mut self.block);
                    self.raw.extend_from_slice(&block);
                    self.header(&block)?;
                    self.block = block;
                    self.block.clear();
                }
                Ok(n)
            }
            State::Extension { kind, remaining } => {
                let kind = *kind;
                let n = (*remaining).min(data.len() as u64) as usize;
                *remaining -= n as u64;
                let done = *remaining == 0;
                self.raw.extend_from_slice(&data[..n]);
                self.ext_data.extend_from_slice(&data[..n]);
                if done {
                    self.extension_done(kind)?;
                }
                Ok(n)
            }
            State::Data { remaining, sparse } => {
                let n = (*remaining).min(data.len() as u64) as usize;
                *remaining -= n as u64;
                let done = *remaining == 0;
                if *sparse {
                    self.raw.extend_from_slice(&data[..n]);
                    // bounded segments: sparse data can be large
                    if self.raw.len() >= TRAILER_CHUNK {
                        self.emit_segment()?;
                    }
                } else {
                    self.crc.update(&data[..n]);
                }
                if done {
                    self.file_done()?;
                }
                Ok(n)
            }
            State::SparseExt { data: len } => {
                let len = *len;
                let need = 512 - self.block.len();
                let n = need.min(data.len());
                self.block.extend_from_slice(&data[..n]);
                if self.block.len() == 512 {
                    self.raw.extend_from_slice(&self.block);
                    let more = self.block[504] != 0;
                    self.block.clear();
                    if !more {
                        self.start_data(len, true)?;
                    }
                }
                Ok(n)
            }
            State::Padding { remaining } => {
                let n = (*remaining).min(data.len() as u64) as usize;
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = State::Header;
                }
                self.raw.extend_from_slice(&data[..n]);
                Ok(n)
            }
            State::Trailer => {
                let room = TRAILER_CHUNK - self.raw.len();
                let n = room.min(data.len());
                self.raw.extend_from_slice(&data[..n]);
                if self.raw.len() >= TRAILER_CHUNK {
                    self.emit_segment()?;
                }
                Ok(n)
            }
        }
    }

    fn header(&mut self, b: &[u8]) -> Result<(), String> {
        if b.iter().all(|x| *x == 0) {
            if matches!(self.state, State::Zero) {
                // end of archive: these blocks, and whatever follows, are raw bytes
                self.state = State::Trailer;
            } else {
                self.state = State::Zero;
            }
            return Ok(());
        }
        if matches!(self.state, State::Zero) {
            return Err("invalid tar: a header follows a single zero block".into());
        }
        // checksum: sum of the block with the checksum field as spaces
        let stored = octal(&b[148..156]).ok_or("invalid tar header: bad checksum field")?;
        let sum: u64 = b
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*x)
                }
            })
            .sum();
        if sum != stored {
            return Err(format!(
                "invalid tar header after {:?}: checksum mismatch (corrupt or not a tar)",
                self.entries
                    .last()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .unwrap_or_default()
            ));
        }
        let typeflag = b[156];
        let size = octal(&b[124..136]).ok_or("invalid tar header: bad size")?;
        match typeflag {
            b'x' | b'g' | b'L' | b'K' => {
                if size > MAX_EXTENSION {
                    return Err(format!(
                        "extension header of {size} bytes is larger than {MAX_EXTENSION}"
                    ));
                }
                self.ext_data.clear();
                self.pending_ext_size = size;
                let padded = size.div_ceil(512) * 512;
                if typeflag == b'g' {
                    // a global header is an entry of its own for tar-split
                    self.current = Some(EntryInfo {
                        name: cstr(&b[0..100]).to_vec(),
                        typeflag,
                        size: 0,
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        mtime: 0,
                    });
                }
                if padded == 0 {
                    self.extension_done(typeflag)?;
                } else {
                    // padding of extension data belongs to the header bytes
                    self.state = State::Extension {
                        kind: typeflag,
                        remaining: padded,
                    };
                    // ext_data keeps the padding too; trimmed when parsed
                    self.ext_data.reserve(padded as usize);
                }
                return Ok(());
            }
            _ => {}
        }
        let magic = &b[257..263];
        let mut name = cstr(&b[0..100]).to_vec();
        if magic == b"ustar\0" {
            let prefix = cstr(&b[345..500]);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&name);
                name = p;
            }
        }
        let pending = std::mem::take(&mut self.pending);
        if let Some(p) = pending.path {
            name = p;
        }
        // Sparse files (old GNU `S`, GNU PAX formats 0.0/0.1/1.0): the archive
        // holds a map and the data fragments, the layer the expanded file. The
        // tar-split keeps the archived bytes as raw segments and records the
        // file with size 0, so reassembly reproduces the tar byte for byte
        // without reading the layer's file. (Go's tar-split records the
        // expanded content instead, which does not reassemble to the diffID.)
        let gnu_sparse = typeflag == b'S';
        let sparse = gnu_sparse || pending.sparse;
        if let Some(p) = pending.sparse_name {
            name = p;
        }
        let size = pending.size.unwrap_or(size);
        if self.reject_devices && matches!(typeflag, b'3' | b'4') {
            return Err(format!(
                "entry {:?}: device node refused (publishing unprivileged, or --no-devices)",
                String::from_utf8_lossy(&name)
            ));
        }
        let info = EntryInfo {
            name,
            typeflag,
            size: if sparse { 0 } else { size },
            mode: octal(&b[100..108]).unwrap_or(0) as u32,
            uid: octal(&b[108..116]).unwrap_or(0) as u32,
            gid: octal(&b[116..124]).unwrap_or(0) as u32,
            mtime: octal(&b[136..148]).unwrap_or(0) as i64,
        };
        let data_len = if header_only(typeflag) { 0 } else { size };
        if !sparse {
            self.emit_segment()?;
        }
        self.entries.push(info.clone());
        self.crc = Crc64::new();
        self.current = Some(info);
        self.stored = data_len;
        if gnu_sparse && b[482] != 0 {
            // extension blocks of the sparse map follow the header
            self.state = State::SparseExt { data: data_len };
            return Ok(());
        }
        self.start_data(data_len, sparse)
    }

    fn start_data(&mut self, data_len: u64, sparse: bool) -> Result<(), String> {
        if data_len == 0 {
            self.file_done()
        } else {
            self.state = State::Data {
                remaining: data_len,
                sparse,
            };
            Ok(())
        }
    }

    fn extension_done(&mut self, kind: u8) -> Result<(), String> {
        let size = std::mem::take(&mut self.pending_ext_size) as usize;
        let data = std::mem::take(&mut self.ext_data);
        let data = &data[..size.min(data.len())];
        self.state = State::Header;
        match kind {
            b'L' => self.pending.path = Some(cstr(data).to_vec()),
            b'K' => {}
            b'x' => {
                for (k, v) in parse_pax(data)? {
                    match k.as_slice() {
                        b"path" => self.pending.path = Some(v),
                        b"size" => {
                            let s = std::str::from_utf8(&v)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .ok_or("invalid PAX size record")?;
                            self.pending.size = Some(s);
                        }
                        b"GNU.sparse.name" => {
                            self.pending.sparse = true;
                            self.pending.sparse_name = Some(v);
                        }
                        k if k.starts_with(b"GNU.sparse.") => self.pending.sparse = true,
                        _ => {}
                    }
                }
            }
            b'g' => {
                let info = self.current.take().unwrap_or(EntryInfo {
                    name: Vec::new(),
                    typeflag: b'g',
                    size: 0,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                });
                self.emit_segment()?;
                self.emit_file(&info, None)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn file_done(&mut self) -> Result<(), String> {
        let info = self.current.take().expect("a file entry is current");
        let crc = (info.size > 0).then(|| self.crc.sum());
        self.emit_file(&info, crc)?;
        let data_len = std::mem::take(&mut self.stored);
        let pad = (512 - data_len % 512) % 512;
        self.state = if pad > 0 {
            State::Padding { remaining: pad }
        } else {
            State::Header
        };
        Ok(())
    }

    /// The stream ended: flush the last segment. Errors if the archive stopped
    /// inside an entry.
    pub fn finish(mut self) -> Result<(W, Vec<EntryInfo>), String> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.state {
            State::Trailer | State::Header if self.block.is_empty() => {}
            _ => {
                return Err(format!(
                    "the archive ends in the middle of an entry (truncated) after {:?}",
                    self.entries
                        .last()
                        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                        .unwrap_or_default()
                ))
            }
        }
        self.emit_segment()?;
        self.out
            .flush()
            .map_err(|e| format!("writing tar-split: {e}"))?;
        Ok((self.out, self.entries))
    }
}

/// PAX records as (key, value) pairs.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Parse PAX records `"%d %s=%s\n"`.
fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or("invalid PAX record")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("invalid PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("invalid PAX record".into());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or("invalid PAX record (no =)")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}
