//! User and group ID mappings between a container's view and the host.
//!
//! The JSON form is shared with the Go side (it is what `cvmfs_driver_*` receive):
//! `{"uids":[{"container_id":0,"host_id":100000,"size":65536}],"gids":[...]}`.
//! Semantics follow containers/storage `pkg/idtools`: an empty list maps that kind of
//! ID one-to-one, and an ID outside every range of a non-empty list is an error.

use serde::{Deserialize, Serialize};

/// One contiguous range: container IDs `container_id .. container_id+size` are host IDs
/// `host_id .. host_id+size`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// The UID and GID ranges of one user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct IdMappings {
    #[serde(default)]
    pub uids: Vec<IdMap>,
    #[serde(default)]
    pub gids: Vec<IdMap>,
}

/// Most ranges per list: the kernel's limit for one `uid_map`/`gid_map`
/// (`UID_GID_MAP_MAX_EXTENTS`); no user namespace can have more.
pub const MAX_RANGES: usize = 340;

/// Why a mapping cannot describe a user namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdMap {
    #[error("{kind} range {index} ({range}) has size 0")]
    Empty {
        kind: &'static str,
        index: usize,
        range: String,
    },
    #[error("{kind} range {index} ({range}) runs past {max}: IDs end at {max} - 1 (the kernel's limit; {max} is the invalid ID -1)", max = u32::MAX)]
    Overflow {
        kind: &'static str,
        index: usize,
        range: String,
    },
    #[error("{kind} ranges {first} and {second} overlap on the {side} side ({a} and {b})")]
    Overlap {
        kind: &'static str,
        first: usize,
        second: usize,
        side: &'static str,
        a: String,
        b: String,
    },
    #[error("{count} {kind} ranges, more than the kernel accepts ({MAX_RANGES})")]
    TooMany { kind: &'static str, count: usize },
}

impl IdMap {
    fn describe(&self) -> String {
        format!(
            "container_id {} host_id {} size {}",
            self.container_id, self.host_id, self.size
        )
    }
}

/// Check one list as the kernel checks a `uid_map` written to it: no empty
/// range, no range reaching ID 4294967295 (`(uid_t)-1`) or wrapping past it,
/// no two ranges overlapping on either side.
fn validate_ranges(kind: &'static str, ranges: &[IdMap]) -> Result<(), InvalidIdMap> {
    if ranges.len() > MAX_RANGES {
        return Err(InvalidIdMap::TooMany {
            kind,
            count: ranges.len(),
        });
    }
    for (index, m) in ranges.iter().enumerate() {
        if m.size == 0 {
            return Err(InvalidIdMap::Empty {
                kind,
                index,
                range: m.describe(),
            });
        }
        let fits = |start: u32| u64::from(start) + u64::from(m.size) <= u64::from(u32::MAX);
        if !fits(m.container_id) || !fits(m.host_id) {
            return Err(InvalidIdMap::Overflow {
                kind,
                index,
                range: m.describe(),
            });
        }
    }
    // Sizes are checked: every range is [start, start + size) within u32.
    let overlaps = |a: u32, b: u32, sa: u32, sb: u32| {
        let (a, b) = (u64::from(a), u64::from(b));
        a < b + u64::from(sb) && b < a + u64::from(sa)
    };
    for (i, a) in ranges.iter().enumerate() {
        for (j, b) in ranges.iter().enumerate().skip(i + 1) {
            let side = if overlaps(a.container_id, b.container_id, a.size, b.size) {
                "container"
            } else if overlaps(a.host_id, b.host_id, a.size, b.size) {
                "host"
            } else {
                continue;
            };
            return Err(InvalidIdMap::Overlap {
                kind,
                first: i,
                second: j,
                side,
                a: a.describe(),
                b: b.describe(),
            });
        }
    }
    Ok(())
}

/// An ID that no range of a mapping covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {id} has no {direction} mapping")]
pub struct UnmappedId {
    /// `"uid"` or `"gid"`.
    pub kind: &'static str,
    pub id: u32,
    /// `"host"` (container -> host failed) or `"container"` (host -> container failed).
    pub direction: &'static str,
}

fn map_one(id: u32, ranges: &[IdMap], to_host: bool) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    for m in ranges {
        let (from, to) = if to_host {
            (m.container_id, m.host_id)
        } else {
            (m.host_id, m.container_id)
        };
        // u64 arithmetic: a range may end exactly at 2^32.
        if u64::from(id) >= u64::from(from) && u64::from(id) < u64::from(from) + u64::from(m.size) {
            return u32::try_from(u64::from(to) + u64::from(id - from)).ok();
        }
    }
    None
}

impl IdMappings {
    /// Parse the JSON form shared with Go and [`validate`](IdMappings::validate) it.
    pub fn from_json(text: &str) -> Result<IdMappings, String> {
        let m: IdMappings = serde_json::from_str(text).map_err(|e| e.to_string())?;
        m.validate().map_err(|e| e.to_string())?;
        Ok(m)
    }

    /// Whether these ranges could be a user namespace's: see
    /// [`MAX_RANGES`] and [`InvalidIdMap`]. Every driver entry point taking
    /// mappings checks this first, so ID arithmetic never meets a range
    /// that overflows or overlaps.
    pub fn validate(&self) -> Result<(), InvalidIdMap> {
        validate_ranges("uid", &self.uids)?;
        validate_ranges("gid", &self.gids)
    }

    /// True when no range is given at all: every ID maps to itself (Go's `Empty()`).
    pub fn is_identity(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Map a container (uid, gid) to the host.
    pub fn to_host(&self, uid: u32, gid: u32) -> Result<(u32, u32), UnmappedId> {
        let u = map_one(uid, &self.uids, true).ok_or(UnmappedId {
            kind: "uid",
            id: uid,
            direction: "host",
        })?;
        let g = map_one(gid, &self.gids, true).ok_or(UnmappedId {
            kind: "gid",
            id: gid,
            direction: "host",
        })?;
        Ok((u, g))
    }

    /// Map a host (uid, gid) into the container.
    pub fn to_container(&self, uid: u32, gid: u32) -> Result<(u32, u32), UnmappedId> {
        let u = map_one(uid, &self.uids, false).ok_or(UnmappedId {
            kind: "uid",
            id: uid,
            direction: "container",
        })?;
        let g = map_one(gid, &self.gids, false).ok_or(UnmappedId {
            kind: "gid",
            id: gid,
            direction: "container",
        })?;
        Ok((u, g))
    }

    /// Host IDs of the container's root (0:0), falling back to 0 for a kind whose
    /// list does not cover container ID 0 (as Go's `GetRootUIDGID` does for an
    /// empty list).
    pub fn root_pair(&self) -> (u32, u32) {
        (
            map_one(0, &self.uids, true).unwrap_or(0),
            map_one(0, &self.gids, true).unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn userns() -> IdMappings {
        IdMappings {
            uids: vec![
                IdMap {
                    container_id: 0,
                    host_id: 100000,
                    size: 1000,
                },
                IdMap {
                    container_id: 1000,
                    host_id: 5000,
                    size: 1,
                },
            ],
            gids: vec![IdMap {
                container_id: 0,
                host_id: 200000,
                size: 65536,
            }],
        }
    }

    #[test]
    fn json_form_matches_go() {
        let m = IdMappings::from_json(
            r#"{"uids":[{"container_id":0,"host_id":100000,"size":65536}],"gids":[]}"#,
        )
        .unwrap();
        assert_eq!(m.uids[0].host_id, 100000);
        assert!(m.gids.is_empty());
        assert!(!m.is_identity());
        let back = serde_json::to_string(&m).unwrap();
        assert_eq!(
            back,
            r#"{"uids":[{"container_id":0,"host_id":100000,"size":65536}],"gids":[]}"#
        );
        assert!(IdMappings::from_json("{}").unwrap().is_identity());
    }

    #[test]
    fn maps_both_ways_and_rejects_unmapped() {
        let m = userns();
        assert_eq!(m.to_host(0, 0), Ok((100000, 200000)));
        assert_eq!(m.to_host(999, 7), Ok((100999, 200007)));
        assert_eq!(m.to_host(1000, 0), Ok((5000, 200000)));
        assert_eq!(m.to_container(5000, 200001), Ok((1000, 1)));
        let err = m.to_host(1001, 0).unwrap_err();
        assert_eq!(err.id, 1001);
        assert_eq!(err.to_string(), "uid 1001 has no host mapping");
        assert!(m.to_container(0, 200000).is_err());
        // an empty list is one-to-one for that kind only
        let only_uids = IdMappings {
            uids: m.uids.clone(),
            gids: vec![],
        };
        assert_eq!(only_uids.to_host(1, 42), Ok((100001, 42)));
        assert_eq!(m.root_pair(), (100000, 200000));
    }

    #[test]
    fn range_ending_at_u32_max_does_not_overflow() {
        let m = IdMappings {
            uids: vec![IdMap {
                container_id: u32::MAX - 1,
                host_id: 10,
                size: 2,
            }],
            gids: vec![],
        };
        // Mapping itself never overflows, even on a range validate refuses.
        assert_eq!(m.to_host(u32::MAX, 0), Ok((11, 0)));
        assert!(m.to_host(0, 0).is_err());
        assert!(matches!(m.validate(), Err(InvalidIdMap::Overflow { .. })));
    }

    fn one(container_id: u32, host_id: u32, size: u32) -> IdMap {
        IdMap {
            container_id,
            host_id,
            size,
        }
    }

    #[test]
    fn ranges_the_kernel_would_refuse_are_refused() {
        let uids = |v: Vec<IdMap>| IdMappings {
            uids: v,
            gids: vec![],
        };
        // The issue's case: host_id 4294967295 with size 4294967295.
        let e = uids(vec![one(0, u32::MAX, u32::MAX)])
            .validate()
            .unwrap_err();
        assert!(matches!(e, InvalidIdMap::Overflow { index: 0, .. }), "{e}");
        assert!(
            e.to_string().contains("host_id 4294967295 size 4294967295"),
            "{e}"
        );
        // The last usable ID is 4294967294: a range may end just there.
        uids(vec![one(0, 1, u32::MAX - 1)]).validate().unwrap();
        uids(vec![one(u32::MAX - 1, 5, 1)]).validate().unwrap();
        for bad in [
            one(u32::MAX, 0, 1),
            one(0, u32::MAX, 1),
            one(1, 0, u32::MAX),
            one(u32::MAX / 2 + 1, 0, u32::MAX / 2 + 1),
        ] {
            let e = uids(vec![bad.clone()]).validate().unwrap_err();
            assert!(matches!(e, InvalidIdMap::Overflow { .. }), "{bad:?}: {e}");
        }
        let e = uids(vec![one(0, 100000, 0)]).validate().unwrap_err();
        assert!(e.to_string().contains("size 0"), "{e}");
        // Overlaps on either side, in either order, including containment.
        for (a, b, side) in [
            (one(0, 100000, 10), one(5, 200000, 10), "container"),
            (one(100, 100000, 10), one(0, 200000, 101), "container"),
            (one(0, 100000, 10), one(10, 100009, 5), "host"),
            (one(10, 0, 100), one(0, 50, 1), "host"),
        ] {
            let e = IdMappings {
                uids: vec![],
                gids: vec![a.clone(), b.clone()],
            }
            .validate()
            .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("gid ranges 0 and 1 overlap on the {side} side")),
                "{a:?} {b:?}: {e}"
            );
        }
        // Adjacent ranges are fine.
        uids(vec![one(0, 100000, 10), one(10, 100010, 10)])
            .validate()
            .unwrap();
        let many: Vec<IdMap> = (0..=MAX_RANGES as u32)
            .map(|i| one(i, 1000 + i, 1))
            .collect();
        let e = uids(many).validate().unwrap_err();
        assert!(matches!(e, InvalidIdMap::TooMany { count: 341, .. }), "{e}");
        // from_json validates: the C ABI's only way in.
        let e = IdMappings::from_json(
            r#"{"uids":[{"container_id":0,"host_id":4294967295,"size":4294967295}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("runs past 4294967295"), "{e}");
        userns().validate().unwrap();
    }
}
