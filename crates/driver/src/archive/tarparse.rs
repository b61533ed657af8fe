//! The one tar header parser: every consumer of a layer tar (the unpacker
//! [`apply_tar`](super::apply_tar), the publisher's tar-split recorder) sees the
//! entries this module resolves, never a header it parsed on its own.
//!
//! It reads the stream block by block and folds ustar, GNU and PAX headers into one
//! [`TarEntry`] per file: PAX `x` records, GNU `L`/`K` long names, the ustar
//! `prefix`, base-256 numbers, old GNU sparse (`S`) and PAX sparse 0.0/0.1/1.0 maps.
//! The meaning of every field follows Go's `archive/tar` (the reader podman and
//! containers/storage use). Where another reader could see a different name, size
//! or type than Go does — a key given twice, a GNU long name *and* a PAX path,
//! a ustar prefix under an unknown version, a NUL inside a long name, a number that
//! does not parse — the entry is refused instead of guessed at.
//!
//! An optional [`TarObserver`] is told every byte the parser consumes, classified
//! as header bytes or entry content, so a recorder (tar-split) describes exactly
//! the bytes that were unpacked.
//!
//! The parser stops after the end-of-archive marker (two zero blocks) and never
//! reads ahead: after [`TarReader::next_entry`] returned `None`, the inner reader
//! is positioned right after the marker.

use std::io::{self, Read};

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// Longest PAX header or GNU long name accepted (Go's `maxSpecialFileSize`).
pub const MAX_EXTENSION: u64 = 1 << 20;
/// Most sparse map entries accepted (bounds memory; real maps are short).
pub const MAX_SPARSE_ENTRIES: usize = 1 << 16;

/// PAX records as (key, value) pairs, in the order given.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// A time from a header: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct TarTime {
    pub sec: i64,
    pub nsec: u32,
}

/// The data map of a sparse file: `(offset, length)` segments of the file's
/// `real_size` bytes; the archive holds the segments' bytes back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    pub real_size: u64,
    pub segments: Vec<(u64, u64)>,
}

/// One entry, with every extension header applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Final name, raw bytes (PAX `path`, GNU long name, ustar prefix, sparse name).
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    /// Type flag, with Go's reading of the old NUL type (a file, or a directory
    /// when the name ends in `/`).
    pub typeflag: u8,
    /// Logical size (Go's `Header.Size`; a sparse file's real size).
    pub size: u64,
    /// Bytes of data that follow in the archive (after the sparse map of a PAX
    /// 1.0 sparse file, which the parser reads itself).
    pub stored: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: TarTime,
    pub atime: Option<TarTime>,
    pub devmajor: u32,
    pub devminor: u32,
    /// `SCHILY.xattr.*` records (name without the prefix, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: Option<SparseMap>,
    /// Offset of the entry's first header block in the stream.
    pub offset: u64,
}

impl TarEntry {
    /// The name for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Why a stream was refused: `entry` names the entry (or where it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarError {
    pub entry: String,
    pub reason: String,
}

impl std::fmt::Display for TarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {:?}: {}", self.entry, self.reason)
    }
}

impl std::error::Error for TarError {}

/// Told every byte the parser consumes, in stream order.
pub trait TarObserver {
    /// Header blocks, extension data, padding and the end-of-archive blocks.
    fn header_bytes(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// An entry's headers are complete; its content follows.
    fn entry(&mut self, entry: &TarEntry) -> Result<(), String>;
    /// Archived bytes of the current entry (a sparse file's map and data included).
    fn content(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The current entry's content is complete.
    fn entry_end(&mut self) -> Result<(), String>;
}

/// Header-only types: Go reads no data for them whatever the size field says.
fn header_only(t: u8) -> bool {
    matches!(t, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// Extension headers collected for the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    first_offset: Option<u64>,
    /// Two headers of one kind for the entry: refused once it is known.
    conflict: Option<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

/// Streaming reader of tar entries. `Read` reads the current entry's archived data.
pub struct TarReader<'o, R> {
    inner: R,
    observer: Option<&'o mut dyn TarObserver>,
    /// Archived data of the current entry still unread.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    /// Consumed bytes.
    offset: u64,
    /// An entry is current (its end not yet reported).
    in_entry: bool,
    ended: bool,
    current: String,
    /// The last entry's name, for errors in the headers after it.
    last_name: Option<String>,
    failed: Option<TarError>,
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Go's `parseNumeric`: base-256 when the high bit is set, else octal.
fn numeric(field: &[u8]) -> Option<i64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, c) in field.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    return None;
                }
                x = (x << 8) | u64::from(c);
            }
            if x >> 63 > 0 {
                return None;
            }
            return Some(if inv == 0xff { !(x as i64) } else { x as i64 });
        }
    }
    octal(field)
}

/// Go's `parseOctal`: spaces and NULs trimmed at both ends, then octal digits up
/// to the first NUL.
fn octal(field: &[u8]) -> Option<i64> {
    let trim = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !trim(b)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !trim(b))
        .map_or(start, |e| e + 1);
    let s = cstr(&field[start..end]);
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for c in s {
        if !(b'0'..=b'7').contains(c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    i64::try_from(v).ok()
}

/// A decimal number as PAX records and sparse maps carry them (digits only).
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Go's `parsePAXTime` ("123", "123.456", "-1.5").
pub fn pax_time(v: &[u8]) -> Option<TarTime> {
    let (neg, digits) = match v.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (int, frac) = match digits.iter().position(|b| *b == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &b""[..]),
    };
    let sec = i64::try_from(decimal(int)?).ok()?;
    let mut nsec: i64 = 0;
    for (i, c) in frac.iter().enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        if i < 9 {
            nsec += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
        }
    }
    let (sec, nsec) = if neg {
        if nsec > 0 {
            (-sec - 1, 1_000_000_000 - nsec)
        } else {
            (-sec, 0)
        }
    } else {
        (sec, nsec)
    };
    Some(TarTime {
        sec,
        nsec: nsec as u32,
    })
}

/// PAX records `"%d %s=%s\n"`, refusing what Go refuses.
pub fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, String> {
    let mut out: PaxRecords = Vec::new();
    let mut sparse_pairs = 0usize;
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or("PAX record without a length")?;
        let len = decimal(&data[..sp]).ok_or("PAX record with a bad length")? as usize;
        if len < 5 || len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("PAX record with a bad length".into());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        let shown = String::from_utf8_lossy(k);
        if k.is_empty() || k.contains(&0) {
            return Err(format!("PAX record with a bad key {shown:?}"));
        }
        if matches!(k, b"path" | b"linkpath" | b"uname" | b"gname") && v.contains(&0) {
            return Err(format!("PAX record {shown} contains a NUL byte"));
        }
        match k {
            // GNU sparse 0.0: alternating repeated keys, kept in order
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let want: &[u8] = if sparse_pairs % 2 == 0 {
                    b"GNU.sparse.offset"
                } else {
                    b"GNU.sparse.numbytes"
                };
                if k != want || v.contains(&b',') {
                    return Err("GNU sparse 0.0 records out of order".into());
                }
                sparse_pairs += 1;
            }
            _ => {}
        }
        out.push((k.to_vec(), v.to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// A value for messages: lossy UTF-8, cut to a readable length.
fn shown(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// Refuse a key given twice in one PAX header (Go keeps the last; another
/// reader may keep the first). The repeated GNU sparse 0.0 keys are a list.
fn check_duplicates(recs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    for (i, (k, v)) in recs.iter().enumerate() {
        if k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes" {
            continue;
        }
        if let Some((_, v2)) = recs[i + 1..].iter().find(|(k2, _)| k2 == k) {
            return Err(format!(
                "PAX record {} given twice ({} and {}; readers disagree on which counts)",
                String::from_utf8_lossy(k),
                shown(v),
                shown(v2)
            ));
        }
    }
    Ok(())
}

fn pax_get<'a>(pax: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    pax.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// Header format, as Go's `getFormat` guesses it.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Format {
    V7,
    Ustar,
    Gnu,
}

/// The fields of one header block.
struct Raw {
    name: Vec<u8>,
    linkname: Vec<u8>,
    typeflag: u8,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: i64,
    atime: Option<i64>,
    devmajor: i64,
    devminor: i64,
    format: Format,
}

/// The entry as the header alone describes it (extensions applied later).
fn entry_from_header(raw: &Raw, first_offset: Option<u64>) -> TarEntry {
    TarEntry {
        name: raw.name.clone(),
        linkname: raw.linkname.clone(),
        typeflag: raw.typeflag,
        size: raw.size as u64,
        stored: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: TarTime {
            sec: raw.mtime,
            nsec: 0,
        },
        atime: raw.atime.map(|sec| TarTime { sec, nsec: 0 }),
        devmajor: 0,
        devminor: 0,
        xattrs: Vec::new(),
        sparse: None,
        offset: first_offset.unwrap_or(0),
    }
}

/// Checksum, format and fields of a header block; `Err` names what is wrong.
fn parse_block(b: &[u8; BLOCK]) -> Result<Raw, String> {
    let stored = octal(&b[148..156]).ok_or("header checksum field is not octal")?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { *x };
        unsigned += i64::from(x);
        signed += i64::from(x as i8);
    }
    if stored != unsigned && stored != signed {
        return Err("header checksum mismatch (corrupt or not a tar)".into());
    }
    let name = cstr(&b[0..100]).to_vec();
    let shown = String::from_utf8_lossy(&name).into_owned();
    let (magic, version, prefix) = (&b[257..263], &b[263..265], cstr(&b[345..500]));
    let format = match magic {
        b"ustar\0" if &b[508..512] == b"tar\0" => {
            return Err("star format headers are not supported".into())
        }
        b"ustar\0" if version != b"00" && !prefix.is_empty() => {
            return Err(format!(
                "ustar header of {shown:?} with version {:?} and a prefix (readers disagree on the name)",
                String::from_utf8_lossy(version)
            ))
        }
        b"ustar\0" => Format::Ustar,
        b"ustar " if version == b" \0" => Format::Gnu,
        b"ustar " => {
            return Err(format!(
                "GNU magic with version {:?} (readers disagree on the format)",
                String::from_utf8_lossy(version)
            ))
        }
        _ => Format::V7,
    };
    let num = |field: &[u8], what: &str| {
        numeric(field).ok_or_else(|| format!("{what} field is not a number"))
    };
    let mut raw = Raw {
        name,
        linkname: cstr(&b[157..257]).to_vec(),
        typeflag: b[156],
        size: num(&b[124..136], "size")?,
        mode: num(&b[100..108], "mode")?,
        uid: num(&b[108..116], "uid")?,
        gid: num(&b[116..124], "gid")?,
        mtime: num(&b[136..148], "mtime")?,
        atime: None,
        devmajor: 0,
        devminor: 0,
        format,
    };
    if format != Format::V7 {
        raw.devmajor = num(&b[329..337], "devmajor")?;
        raw.devminor = num(&b[337..345], "devminor")?;
    }
    match format {
        Format::Ustar if !prefix.is_empty() => {
            let mut n = prefix.to_vec();
            n.push(b'/');
            n.extend_from_slice(&raw.name);
            raw.name = n;
        }
        Format::Gnu => {
            // Go falls back to reading these bytes as a prefix when they do not
            // parse (old Go writers): refuse rather than pick one reading.
            let (a, c) = (&b[345..357], &b[357..369]);
            let t = |f: &[u8]| (f[0] != 0).then(|| numeric(f)).flatten();
            if (a[0] != 0 && t(a).is_none()) || (c[0] != 0 && t(c).is_none()) {
                return Err("GNU header with unreadable atime/ctime fields".into());
            }
            raw.atime = t(a).filter(|v| *v != 0);
        }
        _ => {}
    }
    Ok(raw)
}

impl<'o, R: Read> TarReader<'o, R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            observer: None,
            remaining: 0,
            pad: 0,
            offset: 0,
            in_entry: false,
            ended: false,
            current: "at the start of the archive".into(),
            last_name: None,
            failed: None,
        }
    }

    /// Report every consumed byte to `observer`.
    pub fn with_observer(mut self, observer: &'o mut dyn TarObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True once the end of the archive was reached.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Why the stream was refused, once it was (also after a failed `read`).
    pub fn failure(&self) -> Option<&TarError> {
        self.failed.as_ref()
    }

    /// The inner reader (reading from it desynchronises the parser).
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader, positioned after the last byte consumed.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn err(&self, reason: impl Into<String>) -> TarError {
        TarError {
            entry: self.current.clone(),
            reason: reason.into(),
        }
    }

    fn observe(
        &mut self,
        f: impl FnOnce(&mut dyn TarObserver) -> Result<(), String>,
    ) -> Result<(), TarError> {
        match self.observer.as_deref_mut() {
            Some(o) => f(o).map_err(|r| self.err(r)),
            None => Ok(()),
        }
    }

    /// Fill `buf` as far as the stream goes; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("reading tar: {e}"))),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// Exactly `n` header bytes, reported to the observer.
    fn header_data(&mut self, n: usize, what: &str) -> Result<Vec<u8>, TarError> {
        let mut buf = vec![0u8; n];
        if self.fill(&mut buf)? != n {
            return Err(self.err(format!("truncated tar: the stream ends inside {what}")));
        }
        self.observe(|o| o.header_bytes(&buf))?;
        Ok(buf)
    }

    /// One header block; `None` at a clean end of the stream.
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut b = [0u8; BLOCK];
        match self.fill(&mut b)? {
            0 => Ok(None),
            BLOCK => {
                self.observe(|o| o.header_bytes(&b))?;
                Ok(Some(b))
            }
            _ => Err(self.err("truncated tar: the stream ends inside a header")),
        }
    }

    /// Skip what is left of the current entry (reporting it) and its padding.
    fn finish_entry(&mut self) -> Result<(), TarError> {
        let mut scratch = vec![0u8; 64 * 1024];
        while self.remaining > 0 {
            let n = self.read_content(&mut scratch)?;
            if n == 0 {
                break;
            }
        }
        if self.in_entry {
            self.in_entry = false;
            self.observe(|o| o.entry_end())?;
        }
        if self.pad > 0 {
            let pad = std::mem::take(&mut self.pad) as usize;
            self.header_data(pad, "the padding after an entry's content")?;
        }
        Ok(())
    }

    fn read_content(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("reading tar content: {e}"))),
            }
        };
        if n == 0 {
            return Err(self.err("truncated tar: the stream ends inside this entry's content"));
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        self.observe(|o| o.content(&buf[..n]))?;
        Ok(n)
    }

    /// The next entry, or `None` after the end-of-archive marker (or a stream
    /// that stops cleanly at a header boundary, as Go accepts).
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.next_inner();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.ended {
            return Ok(None);
        }
        self.finish_entry()?;
        self.current = match &self.last_name {
            Some(n) => format!("after {n}"),
            None => "at the start of the archive".into(),
        };
        let mut pending = Pending::default();
        loop {
            let start = self.offset;
            let Some(b) = self.block()? else {
                return self.end(&pending);
            };
            if b.iter().all(|x| *x == 0) {
                match self.block()? {
                    None => return self.end(&pending),
                    Some(b2) if b2.iter().all(|x| *x == 0) => return self.end(&pending),
                    Some(_) => return Err(self.err("a header follows a single zero block")),
                }
            }
            pending.first_offset.get_or_insert(start);
            let raw = parse_block(&b).map_err(|r| self.err(r))?;
            if raw.size < 0 {
                return Err(self.err("negative size"));
            }
            match raw.typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    let data = self.extension(&raw)?;
                    if let Some(e) = self.apply_extension(&raw, data, &mut pending)? {
                        return Ok(Some(e));
                    }
                }
                _ => return self.entry(raw, &b, pending).map(Some),
            }
        }
    }

    fn end(&mut self, pending: &Pending) -> Result<Option<TarEntry>, TarError> {
        if !pending.is_empty() {
            return Err(self.err("an extension header is not followed by an entry"));
        }
        self.ended = true;
        Ok(None)
    }

    /// The data of an extension header (without its padding).
    fn extension(&mut self, raw: &Raw) -> Result<Vec<u8>, TarError> {
        let size = raw.size as u64;
        if size > MAX_EXTENSION {
            return Err(self.err(format!(
                "extension header of {size} bytes is larger than {MAX_EXTENSION}"
            )));
        }
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let mut data = self.header_data(padded as usize, "an extension header")?;
        data.truncate(size as usize);
        Ok(data)
    }

    /// Fold an extension header into `pending`; a global header is an entry of
    /// its own (Go returns it as one).
    fn apply_extension(
        &mut self,
        raw: &Raw,
        data: Vec<u8>,
        pending: &mut Pending,
    ) -> Result<Option<TarEntry>, TarError> {
        let twice = |what: &str| {
            format!("two {what} headers for one entry (readers disagree on which counts)")
        };
        match raw.typeflag {
            b'x' => {
                // Conflicts are refused with the entry they belong to.
                if pending.pax.is_some() {
                    pending.conflict.get_or_insert_with(|| twice("PAX"));
                }
                let recs = parse_pax(&data).map_err(|r| self.err(r))?;
                pending.pax = Some(recs);
            }
            b'g' => {
                if !pending.is_empty() {
                    return Err(self.err("extension headers before a global PAX header"));
                }
                let recs = parse_pax(&data).map_err(|r| self.err(r))?;
                self.current = String::from_utf8_lossy(&raw.name).into_owned();
                check_duplicates(&recs).map_err(|r| self.err(r))?;
                let mut name = raw.name.clone();
                if let Some(p) = pax_get(&recs, b"path").filter(|p| !p.is_empty()) {
                    name = p.to_vec();
                }
                let e = TarEntry {
                    name,
                    linkname: Vec::new(),
                    typeflag: b'g',
                    size: 0,
                    stored: 0,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: TarTime::default(),
                    atime: None,
                    devmajor: 0,
                    devminor: 0,
                    xattrs: Vec::new(),
                    sparse: None,
                    offset: pending.first_offset.unwrap_or(0),
                };
                self.start_entry(&e, 0)?;
                return Ok(Some(e));
            }
            _ => {
                // GNU long name/link: Go cuts at the first NUL; refuse anything
                // after it but padding NULs, which another reader might keep.
                let end = data.iter().rposition(|b| *b != 0).map_or(0, |e| e + 1);
                let value = &data[..end];
                if value.is_empty() {
                    // Go ignores an empty long name; another reader may not.
                    return Err(self.err("empty GNU long name"));
                }
                if value.contains(&0) {
                    return Err(TarError {
                        entry: String::from_utf8_lossy(value).into_owned(),
                        reason: "GNU long name contains a NUL byte".into(),
                    });
                }
                let slot = if raw.typeflag == b'L' {
                    &mut pending.long_name
                } else {
                    &mut pending.long_link
                };
                if let Some(old) = slot {
                    let what = if raw.typeflag == b'L' { "name" } else { "link" };
                    pending.conflict.get_or_insert_with(|| {
                        format!(
                            "two GNU long {what} headers for one entry ({} and {}; readers disagree on which counts)",
                            shown(old),
                            shown(value)
                        )
                    });
                }
                *slot = Some(value.to_vec());
            }
        }
        Ok(None)
    }

    fn start_entry(&mut self, e: &TarEntry, stored: u64) -> Result<(), TarError> {
        self.current = e.display();
        self.last_name = Some(self.current.clone());
        self.remaining = stored;
        self.pad = (BLOCK as u64 - stored % BLOCK as u64) % BLOCK as u64;
        self.in_entry = true;
        self.observe(|o| o.entry(e))
    }

    /// Resolve a file header with its pending extensions: PAX records, then
    /// GNU long names, then the numeric fields, the type and sparse maps.
    fn entry(
        &mut self,
        raw: Raw,
        block: &[u8; BLOCK],
        pending: Pending,
    ) -> Result<TarEntry, TarError> {
        let pax = pending.pax.clone().unwrap_or_default();
        self.current = String::from_utf8_lossy(&raw.name).into_owned();
        if let Some(c) = &pending.conflict {
            return Err(self.err(c.clone()));
        }
        check_duplicates(&pax).map_err(|r| self.err(r))?;
        let mut e = entry_from_header(&raw, pending.first_offset);
        self.current = e.display();
        let (uid, gid) = self.apply_pax(&mut e, &pax, (raw.uid, raw.gid))?;
        self.apply_gnu_long_names(&mut e, &pax, pending)?;
        self.current = e.display();
        self.check_numeric_fields(&mut e, &raw, uid, gid)?;
        self.resolve_typeflag(&mut e)?;
        let stored = if header_only(e.typeflag) { 0 } else { e.size };
        e.stored = stored;
        let old_gnu_sparse = e.typeflag == b'S';
        let pax_sparse = self.apply_sparse_headers(&mut e, &raw, block, &pax)?;
        self.current = e.display();
        // The map of an old GNU sparse file may continue in extension blocks,
        // which belong to the header bytes.
        let mut segments = None;
        if old_gnu_sparse {
            segments = Some(self.old_gnu_map(block)?);
        }
        if old_gnu_sparse || pax_sparse.is_some() {
            if header_only(e.typeflag) {
                return Err(self.err("sparse map on an entry without data"));
            }
            // The observer learns it is sparse now; a 1.0 map is read below,
            // as part of the entry's archived data.
            e.sparse = Some(SparseMap {
                real_size: e.size,
                segments: Vec::new(),
            });
        }
        self.start_entry(&e, stored)?;
        match pax_sparse {
            Some(true) => segments = Some(self.map_1_0()?),
            Some(false) => segments = Some(self.map_0_1(&pax)?),
            None => {}
        }
        if let Some(segments) = segments {
            self.check_sparse(&segments, e.size)?;
            e.sparse = Some(SparseMap {
                real_size: e.size,
                segments,
            });
        }
        e.stored = self.remaining;
        Ok(e)
    }

    /// PAX records over the header's fields; returns the (still signed) uid
    /// and gid, checked later with the header's own.
    fn apply_pax(
        &self,
        e: &mut TarEntry,
        pax: &[(Vec<u8>, Vec<u8>)],
        (mut uid, mut gid): (i64, i64),
    ) -> Result<(i64, i64), TarError> {
        for (k, v) in pax {
            // Go: an empty value keeps the header's field.
            if v.is_empty() {
                continue;
            }
            let bad = || format!("PAX record {} has a bad value", String::from_utf8_lossy(k));
            let int = |v: &[u8]| decimal(v).and_then(|n| i64::try_from(n).ok());
            match k.as_slice() {
                b"path" => e.name = v.clone(),
                b"linkpath" => e.linkname = v.clone(),
                b"uid" => uid = int(v).ok_or_else(|| self.err(bad()))?,
                b"gid" => gid = int(v).ok_or_else(|| self.err(bad()))?,
                b"size" => e.size = int(v).ok_or_else(|| self.err(bad()))? as u64,
                b"mtime" => e.mtime = pax_time(v).ok_or_else(|| self.err(bad()))?,
                b"atime" => e.atime = Some(pax_time(v).ok_or_else(|| self.err(bad()))?),
                b"ctime" => {
                    pax_time(v).ok_or_else(|| self.err(bad()))?;
                }
                _ => {
                    if let Some(x) = k.strip_prefix(b"SCHILY.xattr.") {
                        e.xattrs.push((x.to_vec(), v.clone()));
                    }
                }
            }
        }
        Ok((uid, gid))
    }

    /// GNU long name/link headers; one entry may not carry both a GNU long
    /// name and a PAX path (readers disagree on which counts).
    fn apply_gnu_long_names(
        &self,
        e: &mut TarEntry,
        pax: &[(Vec<u8>, Vec<u8>)],
        pending: Pending,
    ) -> Result<(), TarError> {
        let both = |what: &str, gnu: &[u8], key: &str, pax: &[u8]| {
            format!(
                "a GNU long {what} {} and a PAX {key} {} for one entry (readers disagree on which counts)",
                shown(gnu),
                shown(pax)
            )
        };
        if let (Some(g), Some(p)) = (&pending.long_name, pax_get(pax, b"path")) {
            return Err(self.err(both("name", g, "path", p)));
        }
        if let (Some(g), Some(p)) = (&pending.long_link, pax_get(pax, b"linkpath")) {
            return Err(self.err(both("link", g, "linkpath", p)));
        }
        if let Some(n) = pending.long_name {
            e.name = n;
        }
        if let Some(l) = pending.long_link {
            e.linkname = l;
        }
        Ok(())
    }

    /// Mode, owners and device numbers in the ranges the unpacker can apply.
    fn check_numeric_fields(
        &self,
        e: &mut TarEntry,
        raw: &Raw,
        uid: i64,
        gid: i64,
    ) -> Result<(), TarError> {
        e.mode = u32::try_from(raw.mode)
            .map_err(|_| self.err(format!("mode {} out of range", raw.mode)))?;
        e.uid = u64::try_from(uid).map_err(|_| self.err(format!("negative uid {uid}")))?;
        e.gid = u64::try_from(gid).map_err(|_| self.err(format!("negative gid {gid}")))?;
        e.devmajor = u32::try_from(raw.devmajor)
            .map_err(|_| self.err(format!("device major {} out of range", raw.devmajor)))?;
        e.devminor = u32::try_from(raw.devminor)
            .map_err(|_| self.err(format!("device minor {} out of range", raw.devminor)))?;
        Ok(())
    }

    /// The old-style empty type flag becomes what its name says; a regular
    /// file named like a directory is refused (Go and others disagree).
    fn resolve_typeflag(&self, e: &mut TarEntry) -> Result<(), TarError> {
        if e.typeflag == 0 {
            e.typeflag = if e.name.ends_with(b"/") { b'5' } else { b'0' };
        } else if matches!(e.typeflag, b'0' | b'7' | b'S') && e.name.ends_with(b"/") {
            return Err(self.err(
                "a regular file whose name ends in '/' (Go makes a file, other readers a directory)",
            ));
        }
        Ok(())
    }

    /// Real size and name from old GNU or PAX sparse headers (never both);
    /// returns the PAX sparse kind (see `pax_sparse_kind`).
    fn apply_sparse_headers(
        &mut self,
        e: &mut TarEntry,
        raw: &Raw,
        block: &[u8; BLOCK],
        pax: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Option<bool>, TarError> {
        let old_gnu_sparse = e.typeflag == b'S';
        if old_gnu_sparse {
            if raw.format != Format::Gnu {
                return Err(self.err("old GNU sparse entry in a non-GNU header"));
            }
            let real = numeric(&block[483..495]).ok_or_else(|| self.err("bad sparse real size"))?;
            e.size = u64::try_from(real).map_err(|_| self.err("negative sparse real size"))?;
        }
        let pax_sparse = self.pax_sparse_kind(pax)?;
        if old_gnu_sparse && pax_sparse.is_some() {
            return Err(self.err("old GNU and PAX sparse headers for one entry"));
        }
        if pax_sparse.is_some() {
            if let Some(n) = pax_get(pax, b"GNU.sparse.name").filter(|n| !n.is_empty()) {
                if pax_get(pax, b"path").is_some_and(|p| !p.is_empty()) {
                    return Err(self.err("a PAX path and a GNU sparse name for one entry"));
                }
                e.name = n.to_vec();
                self.current = e.display();
            }
            let size = pax_get(pax, b"GNU.sparse.size")
                .filter(|v| !v.is_empty())
                .or_else(|| pax_get(pax, b"GNU.sparse.realsize").filter(|v| !v.is_empty()));
            if let Some(s) = size {
                e.size = decimal(s).ok_or_else(|| self.err("bad GNU sparse size"))?;
            }
        }
        Ok(pax_sparse)
    }

    /// `Some(true)` for PAX sparse 1.0 (map in the data), `Some(false)` for
    /// 0.0/0.1 (map in the records), `None` when not sparse.
    fn pax_sparse_kind(&self, pax: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<bool>, TarError> {
        let major = pax_get(pax, b"GNU.sparse.major").unwrap_or(b"");
        let minor = pax_get(pax, b"GNU.sparse.minor").unwrap_or(b"");
        let has_map = pax_get(pax, b"GNU.sparse.map").is_some()
            || pax_get(pax, b"GNU.sparse.offset").is_some();
        match (major, minor) {
            (b"0", b"0") | (b"0", b"1") => Ok(Some(false)),
            (b"1", b"0") => Ok(Some(true)),
            (b"", b"") if has_map => Ok(Some(false)),
            (b"", b"") => {
                if pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
                    return Err(self.err("GNU sparse records without a sparse map"));
                }
                Ok(None)
            }
            (ma, mi) => Err(self.err(format!(
                "unsupported GNU sparse format {}.{}",
                String::from_utf8_lossy(ma),
                String::from_utf8_lossy(mi)
            ))),
        }
    }

    fn map_0_1(&self, pax: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<(u64, u64)>, TarError> {
        let bad = |why: &str| self.err(format!("bad GNU sparse map: {why}"));
        let n = pax_get(pax, b"GNU.sparse.numblocks")
            .and_then(decimal)
            .ok_or_else(|| bad("no valid numblocks"))?;
        if pax_get(pax, b"GNU.sparse.map").is_some() && pax_get(pax, b"GNU.sparse.offset").is_some()
        {
            return Err(bad("both 0.0 and 0.1 maps"));
        }
        let nums: Vec<u64> = match pax_get(pax, b"GNU.sparse.map") {
            Some(b"") => Vec::new(),
            Some(m) => m
                .split(|c| *c == b',')
                .map(decimal)
                .collect::<Option<_>>()
                .ok_or_else(|| bad("not numbers"))?,
            None => pax
                .iter()
                .filter(|(k, _)| k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes")
                .map(|(_, v)| decimal(v))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("not numbers"))?,
        };
        if nums.len() as u64 != n.saturating_mul(2) {
            return Err(bad("numblocks does not match the map"));
        }
        if nums.len() / 2 > MAX_SPARSE_ENTRIES {
            return Err(bad("too many segments"));
        }
        Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    /// PAX sparse 1.0: decimal numbers, one per line, at the start of the data,
    /// padded to a block.
    fn map_1_0(&mut self) -> Result<Vec<(u64, u64)>, TarError> {
        let mut text: Vec<u8> = Vec::new();
        let mut pos = 0usize;
        let mut next = |me: &mut Self, text: &mut Vec<u8>| -> Result<u64, TarError> {
            loop {
                if let Some(nl) = text[pos..].iter().position(|b| *b == b'\n') {
                    let v = decimal(&text[pos..pos + nl])
                        .ok_or_else(|| me.err("bad GNU sparse 1.0 map number"))?;
                    pos += nl + 1;
                    return Ok(v);
                }
                if text.len() as u64 + BLOCK as u64 > MAX_EXTENSION {
                    return Err(me.err("GNU sparse 1.0 map too long"));
                }
                let mut blk = [0u8; BLOCK];
                let mut got = 0;
                while got < BLOCK {
                    let n = me.read_content(&mut blk[got..])?;
                    if n == 0 {
                        return Err(me.err("truncated tar: inside a sparse map"));
                    }
                    got += n;
                }
                text.extend_from_slice(&blk);
            }
        };
        let n = next(self, &mut text)?;
        if n as usize > MAX_SPARSE_ENTRIES {
            return Err(self.err("GNU sparse 1.0 map has too many segments"));
        }
        let mut m = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let off = next(self, &mut text)?;
            let len = next(self, &mut text)?;
            m.push((off, len));
        }
        Ok(m)
    }

    /// The map in an old GNU sparse header and its extension blocks.
    fn old_gnu_map(&mut self, block: &[u8; BLOCK]) -> Result<Vec<(u64, u64)>, TarError> {
        let mut m = Vec::new();
        let mut area: Vec<u8> = block[386..483].to_vec();
        let (mut entries, mut ext_flag) = (4usize, block[482]);
        loop {
            for i in 0..entries {
                let e = &area[i * 24..i * 24 + 24];
                if e[0] == 0 {
                    break;
                }
                let off = numeric(&e[..12]).and_then(|v| u64::try_from(v).ok());
                let len = numeric(&e[12..]).and_then(|v| u64::try_from(v).ok());
                let (Some(off), Some(len)) = (off, len) else {
                    return Err(self.err("bad old GNU sparse map"));
                };
                if m.len() >= MAX_SPARSE_ENTRIES {
                    return Err(self.err("old GNU sparse map has too many segments"));
                }
                m.push((off, len));
            }
            if ext_flag == 0 {
                return Ok(m);
            }
            let blk = self.header_data(BLOCK, "a sparse map extension block")?;
            area = blk[..504].to_vec();
            entries = 21;
            ext_flag = blk[504];
        }
    }

    /// Go's `validateSparseEntries`, and the data must be exactly the segments.
    fn check_sparse(&self, segs: &[(u64, u64)], size: u64) -> Result<(), TarError> {
        let mut last_end = 0u64;
        let mut data = 0u64;
        for &(off, len) in segs {
            let end = off
                .checked_add(len)
                .filter(|e| *e <= i64::MAX as u64)
                .ok_or_else(|| self.err("sparse segment overflows"))?;
            if off < last_end || end > size {
                return Err(self.err("sparse segments overlap or exceed the real size"));
            }
            last_end = end;
            data += len;
        }
        if data != self.remaining {
            return Err(self.err(format!(
                "sparse map describes {data} bytes of data, the archive holds {}",
                self.remaining
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for TarReader<'_, R> {
    /// Reads the current entry's archived data (a sparse file's segments back to
    /// back); 0 at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_content(buf).map_err(|e| {
            self.failed.get_or_insert(e.clone());
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        })
    }
}

/// A tar name as the unpacker resolves it: components beneath the layer root,
/// empty and `.` components dropped, `..` taking one back. `None` when a `..`
/// would climb above the root.
pub fn clean_components(name: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_go() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"  644 \0"), Some(0o644));
        assert_eq!(octal(b"\0\0\0"), Some(0));
        assert_eq!(octal(b"12\x0034\0"), Some(0o12));
        assert_eq!(octal(b"0009\0"), None);
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]), Some(5));
        assert_eq!(numeric(&[0xff; 8]), Some(-1));
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"1700000000.25"),
            Some(TarTime {
                sec: 1700000000,
                nsec: 250_000_000
            })
        );
        assert_eq!(
            pax_time(b"-1.5"),
            Some(TarTime {
                sec: -2,
                nsec: 500_000_000
            })
        );
        assert_eq!(pax_time(b"x"), None);
        assert_eq!(pax_time(b"1.x"), None);
    }

    #[test]
    fn pax_duplicates_refused() {
        let r = |k: &str, v: &str| {
            let body = format!("{k}={v}\n");
            let mut n = body.len() + 2;
            if (n.to_string().len() + 1 + body.len()) != n {
                n += 1;
            }
            format!("{n} {body}")
        };
        let two = format!("{}{}", r("path", "a"), r("path", "b"));
        let recs = parse_pax(two.as_bytes()).unwrap();
        assert!(check_duplicates(&recs).unwrap_err().contains("twice"));
        let ok = format!("{}{}", r("path", "a"), r("size", "1"));
        assert_eq!(parse_pax(ok.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn cleaning_keeps_names_beneath_the_root() {
        let c = |s: &str| {
            clean_components(s.as_bytes()).map(|v| String::from_utf8(v.join(&b'/')).unwrap())
        };
        assert_eq!(c("a/b/../c/./d/"), Some("a/c/d".into()));
        assert_eq!(c("/etc/passwd"), Some("etc/passwd".into()));
        assert_eq!(c("../x"), None);
        assert_eq!(c("a/../../x"), None);
        assert_eq!(c("a/..b"), Some("a/..b".into()));
    }
}
