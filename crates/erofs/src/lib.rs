//! A small writer of *metadata-only* EROFS images: the whole tree of a
//! container layer (names, types, modes, owners, times, xattrs, symlink
//! targets, devices) with regular files as holes of the right size. Mounted
//! read-only (`mount -t erofs <file> <dir>`, file-backed, Linux ≥ 6.12) it
//! serves as an overlayfs metadata layer whose regular files carry
//! `trusted.overlay.metacopy` and an absolute `trusted.overlay.redirect` to
//! their data in a data-only lower (`datadir+`): the caller adds those xattrs,
//! this crate only writes what it is given.
//!
//! The on-disk format is the kernel's (`fs/erofs/erofs_fs.h`); only the plain
//! subset is written: no compression, no checksum, no shared xattrs, one
//! device, 4 KiB blocks, extended (64-byte) inodes.
//!
//! ```text
//!  byte 0          1024        1152                      block M        end
//!  +---------------+-----------+-------------------------+--------------+
//!  | (zero)        | superblock| inode records           | data blocks  |
//!  |               | 128 bytes | (meta area, from 0)     | (directory / |
//!  |               |           |                         |  symlink     |
//!  |               |           |                         |  full blocks)|
//!  +---------------+-----------+-------------------------+--------------+
//!
//!  one inode record (32-byte aligned; nid = byte offset / 32; never
//!  crosses a block boundary):
//!  +----------------+----------------------------+------------------------+
//!  | extended inode | inline xattrs: 12-byte     | layout-specific tail:  |
//!  | 64 bytes       | header + entries (4-aligned)| - directory/symlink:   |
//!  | i_format,mode, | {name_len, name_index,     |   last partial block   |
//!  | size, uid, gid,|  value_size, name, value}  |   of data (inline)     |
//!  | mtime, nlink   |                            | - regular file: block  |
//!  +----------------+----------------------------+   map of null (hole)   |
//!                                                 |   4-byte addresses     |
//!                                                 +------------------------+
//!
//!  a directory block (4096 bytes; the last one may be short):
//!  +--------+--------+-----+--------+-------+-------+-----+--------+
//!  | dirent | dirent | ... | dirent | name0 | name1 | ... | nameN  |
//!  | nid,   | 12 bytes each:         | (no NUL; each ends where the
//!  | nameoff, file_type             |  next begins, the last at the
//!  +--------+--------+-----+--------+  block's end or the first NUL)
//! ```
//!
//! Names in a directory are sorted bytewise across all of its blocks
//! (including `.` and `..`): the kernel looks names up by binary search.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;

/// log2 of the block size written.
pub const BLOCK_BITS: u8 = 12;
/// The block size written (the page size on x86-64 and most arm64 kernels).
pub const BLOCK_SIZE: usize = 1 << BLOCK_BITS;
/// Where the superblock starts.
pub const SUPER_OFFSET: usize = 1024;
/// `EROFS_SUPER_MAGIC_V1`.
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// The most entries one image may hold (as many as an ownership file lists).
pub const MAX_ENTRIES: usize = 1_000_000;

const SUPER_SIZE: usize = 128;
const INODE_SIZE: usize = 64;
const XATTR_HEADER_SIZE: usize = 12;
const XATTR_ENTRY_HEADER: usize = 4;
const DIRENT_SIZE: usize = 12;
const NULL_ADDR: u32 = u32::MAX;
const INCOMPAT_CHUNKED_FILE: u32 = 0x4;
const LAYOUT_FLAT_PLAIN: u16 = 0;
const LAYOUT_FLAT_INLINE: u16 = 2;
const LAYOUT_CHUNK_BASED: u16 = 4;
const MAX_CHUNK_BITS: u32 = 31;

/// What can go wrong building an image; each names the entry concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not a plain file name (empty, `.`, `..`, with `/` or NUL, or over 255 bytes)")]
    BadName(String),
    #[error("{0}: listed twice")]
    Duplicate(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: a directory cannot be hard-linked")]
    DirectoryLink(String),
    #[error("{path}: xattr {name}: {why}")]
    Xattr {
        path: String,
        name: String,
        why: &'static str,
    },
    #[error("{0}: inode record over one block (too many or too large xattrs)")]
    RecordTooLarge(String),
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("image over 16 TiB")]
    ImageTooLarge,
    #[error("not an EROFS image this writer made: {0}")]
    BadImage(&'static str),
    #[error("writing the image: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Owner, permission bits and modification time of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`0o7777`); the type
    /// bits come from [`Kind`].
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

/// What an entry is. Regular files are holes: their data lives elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
    Symlink(Vec<u8>),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
    Socket,
}

impl Kind {
    fn type_bits(&self) -> u16 {
        match self {
            Kind::Dir => 0o040000,
            Kind::File { .. } => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    /// The `FT_*` type a directory entry carries.
    fn dirent_type(&self) -> u8 {
        match self {
            Kind::File { .. } => 1,
            Kind::Dir => 2,
            Kind::CharDev { .. } => 3,
            Kind::BlockDev { .. } => 4,
            Kind::Fifo => 5,
            Kind::Socket => 6,
            Kind::Symlink(_) => 7,
        }
    }
}

/// An entry of an [`Image`] under construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(usize);

struct Node {
    meta: Meta,
    kind: Kind,
    /// (name index, name without its prefix, value).
    xattrs: Vec<(u8, Vec<u8>, Vec<u8>)>,
    children: BTreeMap<Vec<u8>, usize>,
    links: u32,
    subdirs: u32,
    parent: usize,
    name: Vec<u8>,
}

/// A tree to be written as one EROFS image.
pub struct Image {
    nodes: Vec<Node>,
}

/// Where one node's record and data go.
#[derive(Clone, Copy, Default)]
struct Placement {
    offset: usize,
    layout: u16,
    xattr_size: usize,
    data_len: usize,
    inline_tail: usize,
    first_block: u32,
}

impl Image {
    /// An image whose root directory has `root`'s metadata.
    pub fn new(root: Meta) -> Image {
        let node = Node {
            meta: root,
            kind: Kind::Dir,
            xattrs: Vec::new(),
            children: BTreeMap::new(),
            links: 1,
            subdirs: 0,
            parent: 0,
            name: Vec::new(),
        };
        Image { nodes: vec![node] }
    }

    pub fn root(&self) -> NodeId {
        NodeId(0)
    }

    /// Entries in the image (hard links counted once).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The entry `name` in directory `parent`, if any.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        self.nodes[parent.0].children.get(name).map(|&i| NodeId(i))
    }

    pub fn kind(&self, node: NodeId) -> &Kind {
        &self.nodes[node.0].kind
    }

    pub fn meta(&self, node: NodeId) -> Meta {
        self.nodes[node.0].meta
    }

    /// Replaces the owner, mode and time of `node` (a directory met again
    /// in a tar takes the later header's).
    pub fn set_meta(&mut self, node: NodeId, meta: Meta) {
        self.nodes[node.0].meta = meta;
    }

    /// The value of xattr `name` (full name, e.g. `trusted.overlay.opaque`).
    pub fn xattr(&self, node: NodeId, name: &[u8]) -> Option<&[u8]> {
        let (index, suffix) = split_xattr_name(name)?;
        self.nodes[node.0]
            .xattrs
            .iter()
            .find(|(i, s, _)| *i == index && s == suffix)
            .map(|(_, _, v)| v.as_slice())
    }

    /// The path of `node` (for messages), `/`-separated, without a leading `/`.
    pub fn path(&self, node: NodeId) -> String {
        let mut parts = Vec::new();
        let mut i = node.0;
        while i != 0 {
            parts.push(String::from_utf8_lossy(&self.nodes[i].name).into_owned());
            i = self.nodes[i].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    fn child_path(&self, parent: NodeId, name: &[u8]) -> String {
        let p = self.path(parent);
        let n = String::from_utf8_lossy(name);
        if p.is_empty() {
            n.into_owned()
        } else {
            format!("{p}/{n}")
        }
    }

    fn check_new_name(&self, parent: NodeId, name: &[u8]) -> Result<()> {
        let bad = name.is_empty()
            || name == b"."
            || name == b".."
            || name.len() > 255
            || name.iter().any(|&b| b == b'/' || b == 0);
        if bad {
            return Err(Error::BadName(self.child_path(parent, name)));
        }
        let p = &self.nodes[parent.0];
        if p.kind != Kind::Dir {
            return Err(Error::NotADirectory(self.path(parent)));
        }
        if p.children.contains_key(name) {
            return Err(Error::Duplicate(self.child_path(parent, name)));
        }
        if self.nodes.len() >= MAX_ENTRIES {
            return Err(Error::TooManyEntries);
        }
        Ok(())
    }

    /// Adds `name` to directory `parent`.
    pub fn add(&mut self, parent: NodeId, name: &[u8], meta: Meta, kind: Kind) -> Result<NodeId> {
        self.check_new_name(parent, name)?;
        let id = self.nodes.len();
        if kind == Kind::Dir {
            self.nodes[parent.0].subdirs += 1;
        }
        self.nodes.push(Node {
            meta,
            kind,
            xattrs: Vec::new(),
            children: BTreeMap::new(),
            links: 1,
            subdirs: 0,
            parent: parent.0,
            name: name.to_vec(),
        });
        self.nodes[parent.0].children.insert(name.to_vec(), id);
        Ok(NodeId(id))
    }

    /// Adds `name` to `parent` as another name of `target` (not a directory).
    pub fn hard_link(&mut self, parent: NodeId, name: &[u8], target: NodeId) -> Result<()> {
        self.check_new_name(parent, name)?;
        if self.nodes[target.0].kind == Kind::Dir {
            return Err(Error::DirectoryLink(self.path(target)));
        }
        self.nodes[target.0].links += 1;
        self.nodes[parent.0]
            .children
            .insert(name.to_vec(), target.0);
        Ok(())
    }

    /// Sets the xattr `name` (`user.`, `trusted.`, `security.` or a POSIX
    /// ACL) on `node`, replacing an earlier value.
    pub fn set_xattr(&mut self, node: NodeId, name: &[u8], value: &[u8]) -> Result<()> {
        let err = |why| Error::Xattr {
            path: self.path(node),
            name: String::from_utf8_lossy(name).into_owned(),
            why,
        };
        let (index, suffix) = split_xattr_name(name).ok_or_else(|| err("unsupported prefix"))?;
        if suffix.len() > 255 {
            return Err(err("name over 255 bytes"));
        }
        if value.len() > usize::from(u16::MAX) {
            return Err(err("value over 64 KiB"));
        }
        let xattrs = &mut self.nodes[node.0].xattrs;
        xattrs.retain(|(i, s, _)| !(*i == index && s == suffix));
        xattrs.push((index, suffix.to_vec(), value.to_vec()));
        Ok(())
    }

    /// The image's bytes (a whole number of blocks).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let order = self.breadth_first();
        let (places, meta_end) = self.place(&order)?;
        let data_start = meta_end.div_ceil(BLOCK_SIZE);
        let mut next_block = data_start;
        let mut places = places;
        for &i in &order {
            let p = &mut places[i];
            let blocks = (p.data_len - p.inline_tail).div_ceil(BLOCK_SIZE);
            if blocks > 0 {
                p.first_block = u32::try_from(next_block).map_err(|_| Error::ImageTooLarge)?;
                next_block += blocks;
            }
        }
        let total_blocks = u32::try_from(next_block).map_err(|_| Error::ImageTooLarge)?;
        let mut img = vec![0u8; next_block * BLOCK_SIZE];
        for (ino, &i) in order.iter().enumerate() {
            self.write_node(&mut img, i, ino as u32 + 1, &places)?;
        }
        let root_nid =
            u16::try_from(places[0].offset / 32).map_err(|_| Error::BadImage("root nid"))?;
        write_superblock(&mut img, root_nid, order.len() as u64, total_blocks);
        Ok(img)
    }

    /// Writes the image to `out`; returns its length.
    pub fn write_to(&self, out: &mut impl Write) -> Result<u64> {
        let bytes = self.to_bytes()?;
        out.write_all(&bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Every node once (hard links at their first name), parents first.
    fn breadth_first(&self) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut order = vec![0];
        seen[0] = true;
        let mut at = 0;
        while at < order.len() {
            for &c in self.nodes[order[at]].children.values() {
                if !seen[c] {
                    seen[c] = true;
                    order.push(c);
                }
            }
            at += 1;
        }
        order
    }

    /// Offsets and layouts of every record; returns them and the end of the
    /// meta area.
    fn place(&self, order: &[usize]) -> Result<(Vec<Placement>, usize)> {
        let mut places = vec![Placement::default(); self.nodes.len()];
        let mut cur = SUPER_OFFSET + SUPER_SIZE;
        for &i in order {
            let node = &self.nodes[i];
            let xattr_size = xattr_body_size(&node.xattrs);
            let data_len = self.data_len(i);
            let mut base = INODE_SIZE + xattr_size;
            let mut layout = LAYOUT_FLAT_PLAIN;
            let mut inline_tail = 0;
            if let Kind::File { size } = node.kind {
                if size > 0 {
                    layout = LAYOUT_CHUNK_BASED;
                    base += 4 * chunk_count(size).1;
                }
            } else if data_len > 0 {
                let tail = data_len % BLOCK_SIZE;
                if tail > 0 && base + tail <= BLOCK_SIZE {
                    layout = LAYOUT_FLAT_INLINE;
                    inline_tail = tail;
                }
            }
            let record = (base + inline_tail).next_multiple_of(32);
            if record > BLOCK_SIZE {
                return Err(Error::RecordTooLarge(self.path(NodeId(i))));
            }
            if cur % BLOCK_SIZE + record > BLOCK_SIZE {
                cur = cur.next_multiple_of(BLOCK_SIZE);
            }
            places[i] = Placement {
                offset: cur,
                layout,
                xattr_size,
                data_len,
                inline_tail,
                first_block: 0,
            };
            cur += record;
        }
        Ok((places, cur))
    }

    /// Bytes of a directory's dirent blocks or a symlink's target.
    fn data_len(&self, i: usize) -> usize {
        match &self.nodes[i].kind {
            Kind::Symlink(t) => t.len(),
            Kind::Dir => dir_blocks(&self.dirents(i, &[])).1,
            _ => 0,
        }
    }

    /// A directory's entries, sorted, with their nids (0 while unplaced).
    fn dirents(&self, i: usize, places: &[Placement]) -> Vec<(Vec<u8>, u64, u8)> {
        let node = &self.nodes[i];
        let nid = |j: usize| places.get(j).map_or(0, |p| (p.offset / 32) as u64);
        let mut out = Vec::with_capacity(node.children.len() + 2);
        out.push((b".".to_vec(), nid(i), 2));
        out.push((b"..".to_vec(), nid(node.parent), 2));
        for (name, &c) in &node.children {
            out.push((name.clone(), nid(c), self.nodes[c].kind.dirent_type()));
        }
        // "." and ".." sort before every name that can follow them except
        // names starting with bytes below '.', so sort the whole list.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn write_node(&self, img: &mut [u8], i: usize, ino: u32, places: &[Placement]) -> Result<()> {
        let node = &self.nodes[i];
        let p = places[i];
        let data: Vec<u8> = match &node.kind {
            Kind::Symlink(t) => t.clone(),
            Kind::Dir => dir_blocks(&self.dirents(i, places)).0,
            _ => Vec::new(),
        };
        debug_assert_eq!(data.len(), p.data_len);
        let (size, i_u) = match &node.kind {
            Kind::File { size } if *size > 0 => (*size, u32::from(chunk_count(*size).0)),
            Kind::File { .. } => (0, 0),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                (0, encode_dev(*major, *minor))
            }
            Kind::Dir | Kind::Symlink(_) => (data.len() as u64, p.first_block),
            Kind::Fifo | Kind::Socket => (0, 0),
        };
        let nlink = match node.kind {
            Kind::Dir => 2 + node.subdirs,
            _ => node.links,
        };
        let rec = &mut img[p.offset..];
        let mut w = Cursor { buf: rec, at: 0 };
        w.u16(1 | (p.layout << 1));
        w.u16(xattr_icount(p.xattr_size));
        w.u16(node.kind.type_bits() | (node.meta.mode & 0o7777));
        w.u16(0);
        w.u64(size);
        w.u32(i_u);
        w.u32(ino);
        w.u32(node.meta.uid);
        w.u32(node.meta.gid);
        w.u64(node.meta.mtime as u64);
        w.u32(node.meta.mtime_nsec);
        w.u32(nlink);
        w.at = INODE_SIZE;
        if p.xattr_size > 0 {
            w.at += XATTR_HEADER_SIZE;
            for (index, name, value) in &node.xattrs {
                w.u8(name.len() as u8);
                w.u8(*index);
                w.u16(value.len() as u16);
                w.bytes(name);
                w.bytes(value);
                w.at = w.at.next_multiple_of(4);
            }
        }
        debug_assert_eq!(w.at, INODE_SIZE + p.xattr_size);
        if p.layout == LAYOUT_CHUNK_BASED {
            if let Kind::File { size } = node.kind {
                for _ in 0..chunk_count(size).1 {
                    w.u32(NULL_ADDR);
                }
            }
        }
        let full = data.len() - p.inline_tail;
        if p.layout == LAYOUT_FLAT_INLINE {
            w.bytes(&data[full..]);
        }
        if full > 0 {
            let start = p.first_block as usize * BLOCK_SIZE;
            img[start..start + full].copy_from_slice(&data[..full]);
        }
        Ok(())
    }
}

/// Checks that `head` (at least the first 2 KiB of an image file) starts an
/// image this writer made and that `file_len` matches its block count: a
/// cached image failing this is rebuilt, never mounted.
pub fn check_image(head: &[u8], file_len: u64) -> Result<()> {
    let sb = head
        .get(SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE)
        .ok_or(Error::BadImage("shorter than its superblock"))?;
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap_or([0; 4]));
    if u32_at(0) != MAGIC {
        return Err(Error::BadImage("no EROFS magic"));
    }
    if sb[12] != BLOCK_BITS || u32_at(8) != 0 || u32_at(80) != INCOMPAT_CHUNKED_FILE {
        return Err(Error::BadImage("block size or features differ"));
    }
    if u64::from(u32_at(36)) * BLOCK_SIZE as u64 != file_len {
        return Err(Error::BadImage("file length differs from its block count"));
    }
    Ok(())
}

fn write_superblock(img: &mut [u8], root_nid: u16, inos: u64, blocks: u32) {
    let mut w = Cursor {
        buf: &mut img[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE],
        at: 0,
    };
    w.u32(MAGIC);
    w.u32(0); // checksum: unused without COMPAT_SB_CHKSUM
    w.u32(0); // feature_compat
    w.u8(BLOCK_BITS);
    w.u8(0); // sb_extslots
    w.u16(root_nid);
    w.u64(inos);
    w.u64(0); // build_time: only compact inodes use it
    w.u32(0);
    w.u32(blocks);
    w.u32(0); // meta_blkaddr: nids count from byte 0
    w.u32(0); // xattr_blkaddr: no shared xattrs
    w.at += 32; // uuid, volume name
    w.u32(INCOMPAT_CHUNKED_FILE);
    // the rest (devices, dirblkbits = 0, prefixes, packed inode) stays zero
}

/// The chunk format (chunk bits) that covers `size` with the fewest null
/// entries, and how many entries that takes.
fn chunk_count(size: u64) -> (u16, usize) {
    let blocks = size.div_ceil(BLOCK_SIZE as u64);
    let bits = (64 - (blocks - 1).leading_zeros()).min(MAX_CHUNK_BITS);
    let chunk = (BLOCK_SIZE as u64) << bits;
    (bits as u16, size.div_ceil(chunk) as usize)
}

/// Linux's `new_encode_dev`.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn split_xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    match name {
        b"system.posix_acl_access" => return Some((2, b"")),
        b"system.posix_acl_default" => return Some((3, b"")),
        _ => {}
    }
    for (prefix, index) in [(&b"user."[..], 1), (b"trusted.", 4), (b"security.", 6)] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (!rest.is_empty()).then_some((index, rest));
        }
    }
    None
}

fn xattr_body_size(xattrs: &[(u8, Vec<u8>, Vec<u8>)]) -> usize {
    if xattrs.is_empty() {
        return 0;
    }
    XATTR_HEADER_SIZE
        + xattrs
            .iter()
            .map(|(_, n, v)| (XATTR_ENTRY_HEADER + n.len() + v.len()).next_multiple_of(4))
            .sum::<usize>()
}

/// `i_xattr_icount` for an xattr body of `size` bytes (header + 4 × (n − 1)).
fn xattr_icount(size: usize) -> u16 {
    if size == 0 {
        0
    } else {
        ((size - XATTR_HEADER_SIZE) / 4 + 1) as u16
    }
}

/// Dirent blocks for sorted `entries`: the bytes (full blocks, the last one
/// short) and their length.
fn dirent_blocks_split(entries: &[(Vec<u8>, u64, u8)]) -> Vec<std::ops::Range<usize>> {
    let mut blocks = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (k, (name, _, _)) in entries.iter().enumerate() {
        let need = DIRENT_SIZE + name.len();
        if used + need > BLOCK_SIZE {
            blocks.push(start..k);
            start = k;
            used = 0;
        }
        used += need;
    }
    blocks.push(start..entries.len());
    blocks
}

fn dir_blocks(entries: &[(Vec<u8>, u64, u8)]) -> (Vec<u8>, usize) {
    let ranges = dirent_blocks_split(entries);
    let mut out = Vec::new();
    let last = ranges.len() - 1;
    for (b, r) in ranges.into_iter().enumerate() {
        let block = &entries[r];
        let mut nameoff = DIRENT_SIZE * block.len();
        let base = out.len();
        for (name, nid, ft) in block {
            out.extend_from_slice(&nid.to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(*ft);
            out.push(0);
            nameoff += name.len();
        }
        for (name, _, _) in block {
            out.extend_from_slice(name);
        }
        if b != last {
            out.resize(base + BLOCK_SIZE, 0);
        }
    }
    let len = out.len();
    (out, len)
}

/// Little-endian writes into a record.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
