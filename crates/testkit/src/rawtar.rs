//! Raw tar crafting: headers exactly as an attacker writes them, no
//! normalisation by a tar library (hostile cases, the tar differential).

/// A tar stream built block by block.
#[derive(Default, Clone)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

/// The fields of one 512-byte header. Unset numeric fields are written as
/// zeros in octal; `magic`/`version` default to ustar "ustar\0" "00".
#[derive(Clone)]
pub struct Hdr {
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
    pub magic: [u8; 6],
    pub version: [u8; 2],
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
    pub prefix: Vec<u8>,
}

impl Hdr {
    pub fn new(name: &[u8], typeflag: u8, size: u64) -> Hdr {
        Hdr {
            name: name.to_vec(),
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size,
            mtime: 1_700_000_000,
            typeflag,
            linkname: Vec::new(),
            magic: *b"ustar\0",
            version: *b"00",
            uname: Vec::new(),
            gname: Vec::new(),
            devmajor: 0,
            devminor: 0,
            prefix: Vec::new(),
        }
    }
    pub fn gnu(mut self) -> Hdr {
        self.magic = *b"ustar ";
        self.version = *b" \0";
        self
    }

    /// The 512-byte block with a correct checksum (names are cut to their fields).
    pub fn block(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        put(&mut b[0..100], &self.name);
        octal(&mut b[100..108], u64::from(self.mode));
        octal(&mut b[108..116], self.uid);
        octal(&mut b[116..124], self.gid);
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.typeflag;
        put(&mut b[157..257], &self.linkname);
        b[257..263].copy_from_slice(&self.magic);
        b[263..265].copy_from_slice(&self.version);
        put(&mut b[265..297], &self.uname);
        put(&mut b[297..329], &self.gname);
        octal(&mut b[329..337], u64::from(self.devmajor));
        octal(&mut b[337..345], u64::from(self.devminor));
        put(&mut b[345..500], &self.prefix);
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
        b
    }
}

fn put(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(w)..];
    field[..s.len()].copy_from_slice(s);
}

/// One PAX record `"<len> <key>=<value>\n"` with the length counted right.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 1;
    loop {
        let total = len.to_string().len() + 1 + body.len();
        if total == len {
            break;
        }
        len = total;
    }
    [format!("{len} ").into_bytes(), body].concat()
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }
    /// A header block followed by `data` padded to 512.
    pub fn entry(mut self, h: &Hdr, data: &[u8]) -> RawTar {
        self.bytes.extend_from_slice(&h.block());
        self.data(data)
    }
    /// Raw data blocks, padded to 512.
    pub fn data(mut self, data: &[u8]) -> RawTar {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
        self
    }
    pub fn file(self, name: &str, content: &[u8]) -> RawTar {
        self.entry(
            &Hdr::new(name.as_bytes(), b'0', content.len() as u64),
            content,
        )
    }
    pub fn dir(self, name: &str) -> RawTar {
        self.entry(&Hdr::new(name.as_bytes(), b'5', 0), b"")
    }
    /// A PAX extended header (`x`) with the given records, for the next entry.
    pub fn pax(self, records: &[(&str, &[u8])]) -> RawTar {
        let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.entry(&Hdr::new(b"././@PaxHeader", b'x', body.len() as u64), &body)
    }
    /// A GNU long name (`L`) for the next entry.
    pub fn gnu_long_name(self, name: &[u8]) -> RawTar {
        let mut body = name.to_vec();
        body.push(0);
        self.entry(
            &Hdr::new(b"././@LongLink", b'L', body.len() as u64).gnu(),
            &body,
        )
    }
    /// The two zero blocks that end an archive.
    pub fn end(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 1024, 0);
        self.bytes
    }
}
