//! Reading JSON lists that come from outside without letting their length
//! decide how much is parsed.

use std::marker::PhantomData;

/// A JSON list read with serde that refuses its `max + 1`st element as it
/// arrives, so an oversized list costs no more than `max` parsed entries.
pub struct CappedSeq<T> {
    pub max: usize,
    /// What the list is, for the error ("field \"markers\"").
    pub what: &'static str,
    pub _entries: PhantomData<T>,
}

impl<T> CappedSeq<T> {
    pub fn new(max: usize, what: &'static str) -> CappedSeq<T> {
        CappedSeq {
            max,
            what,
            _entries: PhantomData,
        }
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for CappedSeq<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: a list of at most {} entries", self.what, self.max)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(4096));
        while let Some(x) = seq.next_element()? {
            if v.len() == self.max {
                return Err(serde::de::Error::custom(format!(
                    "{}: more than {} entries",
                    self.what, self.max
                )));
            }
            v.push(x);
        }
        Ok(v)
    }
}
