use super::*;

fn meta(mode: u16) -> Meta {
    Meta {
        mode,
        uid: 1000,
        gid: 100,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn superblock_names_root_blocks_and_features() {
    let mut img = Image::new(meta(0o755));
    let root = img.root();
    img.add(root, b"f", meta(0o644), Kind::File { size: 10 })
        .unwrap();
    let b = img.to_bytes().unwrap();
    assert_eq!(b.len() % BLOCK_SIZE, 0);
    let sb = &b[SUPER_OFFSET..];
    assert_eq!(le32(sb, 0), MAGIC);
    assert_eq!(sb[12], BLOCK_BITS);
    // root is the first record, right after the superblock
    assert_eq!(
        u16::from_le_bytes([sb[14], sb[15]]),
        ((SUPER_OFFSET + 128) / 32) as u16
    );
    assert_eq!(u64::from_le_bytes(sb[16..24].try_into().unwrap()), 2);
    assert_eq!(le32(sb, 36) as usize * BLOCK_SIZE, b.len());
    assert_eq!(le32(sb, 80), INCOMPAT_CHUNKED_FILE);
    check_image(&b, b.len() as u64).unwrap();
}

#[test]
fn damaged_or_truncated_images_are_refused() {
    let b = Image::new(meta(0o755)).to_bytes().unwrap();
    assert!(check_image(&b, b.len() as u64 - 1).is_err());
    assert!(check_image(&b[..1100], b.len() as u64).is_err());
    let mut bad = b.clone();
    bad[SUPER_OFFSET] ^= 1;
    assert!(check_image(&bad, b.len() as u64).is_err());
}

#[test]
fn chunk_map_covers_the_file_with_one_entry_up_to_8_tib() {
    assert_eq!(chunk_count(1), (0, 1));
    assert_eq!(chunk_count(4096), (0, 1));
    assert_eq!(chunk_count(4097), (1, 1));
    assert_eq!(chunk_count(1 << 30), (18, 1));
    let huge = (4096u64 << 31) * 3;
    assert_eq!(chunk_count(huge), (31, 3));
}

#[test]
fn bad_names_duplicates_and_non_directories_are_refused() {
    let mut img = Image::new(meta(0o755));
    let root = img.root();
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256]] {
        assert!(matches!(
            img.add(root, bad, meta(0), Kind::Fifo),
            Err(Error::BadName(_))
        ));
    }
    let f = img.add(root, b"f", meta(0), Kind::Fifo).unwrap();
    assert!(
        matches!(img.add(root, b"f", meta(0), Kind::Fifo), Err(Error::Duplicate(p)) if p == "f")
    );
    assert!(
        matches!(img.add(f, b"x", meta(0), Kind::Fifo), Err(Error::NotADirectory(p)) if p == "f")
    );
    let d = img.add(root, b"d", meta(0), Kind::Dir).unwrap();
    assert!(matches!(
        img.hard_link(root, b"d2", d),
        Err(Error::DirectoryLink(_))
    ));
    let e = img.set_xattr(f, b"os2.x", b"").unwrap_err();
    assert!(e.to_string().contains("f: xattr os2.x"), "{e}");
}

#[test]
fn directory_blocks_are_sorted_full_and_split_where_names_overflow() {
    let entries: Vec<(Vec<u8>, u64, u8)> = (0..400)
        .map(|i| (format!("name-{i:04}-padding-padding").into_bytes(), i, 1))
        .collect();
    let (bytes, len) = dir_blocks(&entries);
    assert_eq!(bytes.len(), len);
    assert!(len > BLOCK_SIZE, "400 × 38 bytes take more than one block");
    let mut seen = 0;
    for block in bytes.chunks(BLOCK_SIZE) {
        let first_nameoff = u16::from_le_bytes([block[8], block[9]]) as usize;
        let n = first_nameoff / DIRENT_SIZE;
        for k in 0..n {
            let nid = u64::from_le_bytes(block[k * 12..k * 12 + 8].try_into().unwrap());
            assert_eq!(nid, seen as u64);
            seen += 1;
        }
    }
    assert_eq!(seen, 400);
}

#[test]
fn records_never_cross_a_block_and_inline_tails_stay_with_their_inode() {
    let mut img = Image::new(meta(0o755));
    let root = img.root();
    for i in 0..300 {
        let f = img
            .add(
                root,
                format!("f{i}").as_bytes(),
                meta(0o644),
                Kind::File { size: 1 << 20 },
            )
            .unwrap();
        img.set_xattr(
            f,
            b"trusted.overlay.redirect",
            format!("/layer/f{i}").as_bytes(),
        )
        .unwrap();
        img.add(
            root,
            format!("l{i}").as_bytes(),
            meta(0o777),
            Kind::Symlink(vec![b'x'; 700]),
        )
        .unwrap();
    }
    let order = img.breadth_first();
    let (places, _) = img.place(&order).unwrap();
    for p in &places {
        let record = INODE_SIZE + p.xattr_size + p.inline_tail;
        assert_eq!(p.offset % 32, 0);
        assert!(p.offset % BLOCK_SIZE + record <= BLOCK_SIZE);
    }
    img.to_bytes().unwrap();
}

#[test]
fn xattrs_are_inline_with_their_prefix_index() {
    let mut img = Image::new(meta(0o755));
    let root = img.root();
    img.set_xattr(root, b"trusted.overlay.opaque", b"y")
        .unwrap();
    img.set_xattr(root, b"trusted.overlay.opaque", b"y")
        .unwrap();
    let b = img.to_bytes().unwrap();
    let ino = SUPER_OFFSET + 128;
    let icount = u16::from_le_bytes([b[ino + 2], b[ino + 3]]);
    // header (12) + one entry 4 + 14 + 1 = 19 -> 20: 12 + 4 × 5
    assert_eq!(icount, 6);
    let e = ino + INODE_SIZE + XATTR_HEADER_SIZE;
    assert_eq!(&b[e..e + 4], &[14, 4, 1, 0]);
    assert_eq!(&b[e + 4..e + 19], b"overlay.opaquey");
}
