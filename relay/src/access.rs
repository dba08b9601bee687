//! The in-memory snapshot of who may publish or play which stream.
//!
//! The store (SQLite or PostgreSQL) is the source of truth; the binary
//! rebuilds this snapshot whenever a live input changes and swaps it in.
//! Ingest and egress look keys up here, never in the database, so a rejected
//! client costs a hash and a constant-time comparison.
//!
//! Keys are found by the SHA-256 of the presented key, then compared with
//! the stored key in constant time; the map lookup reveals nothing about the
//! stored key's bytes.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Publish,
    Play,
}

/// The live input a key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub uid: String,
    pub account: String,
    pub direction: Direction,
    /// A disabled input refuses publishing (playing is still allowed).
    pub enabled: bool,
}

/// One key of one live input, as the store knows it.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// An RTMP(S) stream key or playback key.
    pub rtmp_key: String,
    /// The SRT passphrase for the same direction.
    pub srt_passphrase: String,
    pub grant: Grant,
}

#[derive(Default)]
struct Snapshot {
    by_hash: HashMap<[u8; 32], (Vec<u8>, Grant)>,
    srt: HashMap<(String, Direction), (String, Grant)>,
}

/// The swappable key snapshot.
#[derive(Default)]
pub struct KeyTable {
    snap: RwLock<Arc<Snapshot>>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl KeyTable {
    pub fn new() -> KeyTable {
        KeyTable::default()
    }

    /// Replace every key at once.
    pub fn replace(&self, entries: impl IntoIterator<Item = KeyEntry>) {
        let mut snap = Snapshot::default();
        for e in entries {
            snap.by_hash.insert(
                digest(e.rtmp_key.as_bytes()),
                (e.rtmp_key.into_bytes(), e.grant.clone()),
            );
            snap.srt.insert(
                (e.grant.uid.clone(), e.grant.direction),
                (e.srt_passphrase, e.grant),
            );
        }
        *self.snap.write() = Arc::new(snap);
    }

    /// The grant of an RTMP(S) stream key or playback key.
    pub fn lookup_key(&self, key: &str) -> Option<Grant> {
        let snap = self.snap.read().clone();
        let (stored, grant) = snap.by_hash.get(&digest(key.as_bytes()))?;
        if bool::from(stored.as_slice().ct_eq(key.as_bytes())) {
            Some(grant.clone())
        } else {
            None
        }
    }

    /// The SRT passphrase and grant of a live input in one direction.
    pub fn srt(&self, uid: &str, direction: Direction) -> Option<(String, Grant)> {
        self.snap
            .read()
            .srt
            .get(&(uid.to_string(), direction))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, uid: &str, direction: Direction) -> KeyEntry {
        KeyEntry {
            rtmp_key: key.into(),
            srt_passphrase: format!("pass-{key}"),
            grant: Grant {
                uid: uid.into(),
                account: "acc".into(),
                direction,
                enabled: true,
            },
        }
    }

    #[test]
    fn keys_select_input_and_direction() {
        let t = KeyTable::new();
        t.replace([
            entry("pub-1", "u1", Direction::Publish),
            entry("play-1", "u1", Direction::Play),
        ]);
        assert_eq!(t.lookup_key("pub-1").unwrap().direction, Direction::Publish);
        assert_eq!(t.lookup_key("play-1").unwrap().direction, Direction::Play);
        assert!(t.lookup_key("pub-2").is_none());
        assert!(t.lookup_key("").is_none());
        assert_eq!(t.srt("u1", Direction::Play).unwrap().0, "pass-play-1");
        t.replace([entry("pub-2", "u1", Direction::Publish)]);
        assert!(
            t.lookup_key("pub-1").is_none(),
            "a rotated key stops working at once"
        );
        assert!(t.lookup_key("pub-2").is_some());
    }
}
