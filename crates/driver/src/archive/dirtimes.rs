//! The directory times an unpack sets last (once everything inside a directory
//! exists), in tar order, with memory bounded independently of how many
//! directories a layer has: beyond [`MAX_IN_MEMORY`] bytes of names the list
//! continues in an unnamed temporary file.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};

use rustix::fs::{Mode, OFlags, Timestamps};

use super::fsutil::{ioe, ts};

/// Bytes of directory names kept in memory before spilling to a file.
const MAX_IN_MEMORY: usize = 4 << 20;

#[derive(Default)]
pub(crate) struct DirTimes {
    memory: Vec<(Vec<u8>, Timestamps)>,
    memory_bytes: usize,
    spill: Option<BufWriter<File>>,
}

/// An unnamed file in the temporary directory (gone when closed).
fn unnamed_file() -> io::Result<File> {
    let fd = rustix::fs::open(
        std::env::temp_dir(),
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(ioe)?;
    Ok(File::from(fd))
}

fn put_time(w: &mut impl Write, t: &rustix::fs::Timespec) -> io::Result<()> {
    w.write_all(&t.tv_sec.to_le_bytes())?;
    w.write_all(&t.tv_nsec.to_le_bytes())
}

fn get_i64(r: &mut impl Read) -> io::Result<i64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(i64::from_le_bytes(b))
}

impl DirTimes {
    /// Remember `times` for the directory at `path` ('/'-joined components).
    pub(crate) fn push(&mut self, path: Vec<u8>, times: Timestamps) -> io::Result<()> {
        if self.spill.is_none() && self.memory_bytes + path.len() <= MAX_IN_MEMORY {
            self.memory_bytes += path.len();
            self.memory.push((path, times));
            return Ok(());
        }
        if self.spill.is_none() {
            self.spill = Some(BufWriter::new(unnamed_file()?));
        }
        let w = self.spill.as_mut().expect("spill file");
        w.write_all(&(path.len() as u32).to_le_bytes())?;
        w.write_all(&path)?;
        put_time(w, &times.last_access)?;
        put_time(w, &times.last_modification)
    }

    /// Every entry in the order pushed.
    pub(crate) fn for_each(
        self,
        mut f: impl FnMut(&[u8], &Timestamps) -> io::Result<()>,
    ) -> io::Result<()> {
        for (p, t) in &self.memory {
            f(p, t)?;
        }
        let Some(w) = self.spill else {
            return Ok(());
        };
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0))?;
        let mut r = BufReader::new(file);
        loop {
            let mut len = [0u8; 4];
            match r.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let mut path = vec![0u8; u32::from_le_bytes(len) as usize];
            r.read_exact(&mut path)?;
            let (a_s, a_n) = (get_i64(&mut r)?, get_i64(&mut r)?);
            let (m_s, m_n) = (get_i64(&mut r)?, get_i64(&mut r)?);
            let times = Timestamps {
                last_access: ts(a_s, a_n),
                last_modification: ts(m_s, m_n),
            };
            f(&path, &times)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_entries_come_back_in_order() {
        let mut d = DirTimes::default();
        let n = MAX_IN_MEMORY / 1000 + 50;
        for i in 0..n {
            let name = format!("{i:01000}").into_bytes();
            let t = ts(i as i64, 7);
            d.push(
                name,
                Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .unwrap();
        }
        assert!(d.spill.is_some());
        let mut seen = 0;
        d.for_each(|p, t| {
            assert_eq!(p, format!("{seen:01000}").as_bytes());
            assert_eq!(t.last_modification.tv_sec, seen as i64);
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, n);
    }
}
