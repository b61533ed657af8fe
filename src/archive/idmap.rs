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
    /// Parse the JSON form shared with Go.
    pub fn from_json(text: &str) -> Result<IdMappings, serde_json::Error> {
        serde_json::from_str(text)
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
        assert_eq!(m.to_host(u32::MAX, 0), Ok((11, 0)));
        assert!(m.to_host(0, 0).is_err());
    }
}
