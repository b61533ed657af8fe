//! Reading what a source hands out, bounded and verified: documents read whole
//! up to a cap, blobs read to exactly their declared size and checked against
//! their digest at the end, and the compression a blob's first bytes show.
//! Nothing here knows where the bytes come from.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::oci::MAX_MANIFEST_BYTES;
use crate::{digest_hex, Error, Result};

/// The hex SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    crate::layer::hex(&Sha256::digest(b))
}

/// Check that `bytes` have digest `digest` (`what` names them in the error).
pub fn verify_bytes(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let want = digest_hex(digest).map_err(|e| e.context(what))?;
    let have = sha256_hex(bytes);
    if have != want {
        return Err(Error::msg(format!(
            "{what} {digest}: digest mismatch, the content is sha256:{have}"
        )));
    }
    Ok(())
}

/// How a layer blob is compressed, as its first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression the magic number at the start of `head` shows.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Read at most [`MAX_MANIFEST_BYTES`]; more is an error.
pub fn read_limited(r: impl Read, what: &str) -> Result<Vec<u8>> {
    read_capped(r, MAX_MANIFEST_BYTES, what).map_err(|e| match e.0.ends_with(TOO_LARGE) {
        true => Error::msg(format!(
            "{what}: larger than {MAX_MANIFEST_BYTES} bytes (oversized manifest or config), refused"
        )),
        false => e,
    })
}

const TOO_LARGE: &str = "bytes, refused";

/// Read at most `cap` bytes; more is an error (at most `cap + 1` are consumed).
pub fn read_capped(mut r: impl Read, cap: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r)
        .take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::msg(format!("{what}: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(Error::msg(format!(
            "{what}: larger than {cap} bytes, refused"
        )));
    }
    Ok(buf)
}

/// The first thing that went wrong with a blob stream, kept beside the reader:
/// a decompressor or tar parser reading through it may turn the reader's error
/// into a vaguer one of its own.
#[derive(Clone, Default)]
pub struct BlobFault(Arc<Mutex<Option<String>>>);

impl BlobFault {
    fn set(&self, msg: &str) {
        self.0
            .lock()
            .unwrap()
            .get_or_insert_with(|| msg.to_string());
    }
    /// The blob's own error, if it had one; else `other`.
    pub fn or(&self, other: Error) -> Error {
        match self.0.lock().unwrap().take() {
            Some(m) => Error::msg(m),
            None => other,
        }
    }
}

/// A blob read to exactly its declared size: one byte more, or the end before
/// it, fails the read at once, and at the end the digest must match. At most
/// `size + 1` bytes are ever taken from the inner reader.
pub struct ExactBlob<R> {
    inner: R,
    digest: String,
    size: u64,
    got: u64,
    hash: Sha256,
    fault: BlobFault,
    ended: bool,
}

impl<R: Read> ExactBlob<R> {
    pub fn new(inner: R, digest: &str, size: u64) -> ExactBlob<R> {
        ExactBlob {
            inner,
            digest: digest.to_string(),
            size,
            got: 0,
            hash: Sha256::new(),
            fault: BlobFault::default(),
            ended: false,
        }
    }
    pub fn fault(&self) -> BlobFault {
        self.fault.clone()
    }
    fn fail(&mut self, why: String) -> io::Error {
        let msg = format!("blob {}: {why}", self.digest);
        self.fault.set(&msg);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
    fn at_end(&mut self) -> io::Result<()> {
        if self.got < self.size {
            let (got, size) = (self.got, self.size);
            return Err(self.fail(format!(
                "shorter than the declared {size} bytes: the stream ended after {got}"
            )));
        }
        let have = crate::layer::hex(&self.hash.clone().finalize());
        if digest_hex(&self.digest).ok() != Some(have.as_str()) {
            return Err(self.fail(format!(
                "digest mismatch, the {} bytes served are sha256:{have}",
                self.got
            )));
        }
        self.ended = true;
        Ok(())
    }
}

impl<R: Read> Read for ExactBlob<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ended || buf.is_empty() {
            return Ok(0);
        }
        // one byte past the declared size is enough to know it is too long
        let room = (self.size - self.got.min(self.size)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(e.to_string())),
        };
        if n == 0 {
            self.at_end()?;
            return Ok(0);
        }
        self.got += n as u64;
        if self.got > self.size {
            let size = self.size;
            return Err(self.fail(format!(
                "longer than the declared {size} bytes, refused at byte {}",
                self.got
            )));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_blob_reads_to_the_declared_size_and_no_further() {
        let data = b"hello world".to_vec();
        let digest = format!("sha256:{}", sha256_hex(&data));
        let mut ok = Vec::new();
        ExactBlob::new(&data[..], &digest, 11)
            .read_to_end(&mut ok)
            .unwrap();
        assert_eq!(ok, data);
        // endless: refused one byte past the declared size
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                b.fill(b'x');
                self.0 += b.len() as u64;
                Ok(b.len())
            }
        }
        let mut r = ExactBlob::new(Endless(0), &digest, 11);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("longer than the declared 11 bytes"),
            "{e}"
        );
        assert_eq!(r.inner.0, 12, "bytes taken from the stream");
        let e = ExactBlob::new(&data[..5], &digest, 11)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("shorter than the declared 11"),
            "{e}"
        );
        let e = ExactBlob::new(&b"hello worlD"[..], &digest, 11)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
    }
}
