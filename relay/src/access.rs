//! The in-memory snapshot of who may publish or play which stream.
//!
//! The store (SQLite or PostgreSQL) is the source of truth; the binary
//! loads the whole snapshot at start ([`KeyTable::replace`]) and then
//! changes it by the one input that changed ([`KeyTable::set_input`],
//! [`KeyTable::remove_input`]): the cost of a change does not grow with the
//! number of inputs.
//! Ingest and egress look keys up here, never in the database, so a rejected
//! client costs a hash and a constant-time comparison.
//!
//! Keys are found by the SHA-256 of the presented key, then compared with
//! the stored key in constant time; the map lookup reveals nothing about the
//! stored key's bytes.

use std::collections::HashMap;

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
    /// The WHIP secret (`webRTC.url`) of a publish entry: a secret of its
    /// own, valid only for WebRTC publishing.
    pub whip_key: Option<String>,
    pub grant: Grant,
}

#[derive(Default)]
struct Snapshot {
    by_hash: HashMap<[u8; 32], (Vec<u8>, Grant)>,
    /// WHIP secrets, apart from the RTMP keys so that neither opens the other.
    whip: HashMap<[u8; 32], (Vec<u8>, Grant)>,
    srt: HashMap<(String, Direction), (String, Grant)>,
    /// The key digests of each input, so that a change removes its old keys.
    by_uid: HashMap<String, Vec<[u8; 32]>>,
}

impl Snapshot {
    fn insert(&mut self, e: KeyEntry) {
        let h = digest(e.rtmp_key.as_bytes());
        self.by_uid.entry(e.grant.uid.clone()).or_default().push(h);
        self.by_hash
            .insert(h, (e.rtmp_key.into_bytes(), e.grant.clone()));
        if let Some(w) = e.whip_key.filter(|w| !w.is_empty()) {
            let wh = digest(w.as_bytes());
            self.by_uid.entry(e.grant.uid.clone()).or_default().push(wh);
            self.whip.insert(wh, (w.into_bytes(), e.grant.clone()));
        }
        self.srt.insert(
            (e.grant.uid.clone(), e.grant.direction),
            (e.srt_passphrase, e.grant),
        );
    }

    fn remove(&mut self, uid: &str) {
        for h in self.by_uid.remove(uid).unwrap_or_default() {
            // Only the input's own entry (a digest collision is not a case).
            if self.by_hash.get(&h).is_some_and(|(_, g)| g.uid == uid) {
                self.by_hash.remove(&h);
            }
            if self.whip.get(&h).is_some_and(|(_, g)| g.uid == uid) {
                self.whip.remove(&h);
            }
        }
        for d in [Direction::Publish, Direction::Play] {
            self.srt.remove(&(uid.to_string(), d));
        }
    }
}

/// The key snapshot: replaced whole at start, then changed per input. A
/// lookup holds the read lock for one hash-map probe.
#[derive(Default)]
pub struct KeyTable {
    snap: RwLock<Snapshot>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// A key's grant: found by its digest, then compared in constant time.
fn lookup(map: &HashMap<[u8; 32], (Vec<u8>, Grant)>, key: &str) -> Option<Grant> {
    let (stored, grant) = map.get(&digest(key.as_bytes()))?;
    bool::from(stored.as_slice().ct_eq(key.as_bytes())).then(|| grant.clone())
}

impl KeyTable {
    pub fn new() -> KeyTable {
        KeyTable::default()
    }

    /// Replace every key at once.
    pub fn replace(&self, entries: impl IntoIterator<Item = KeyEntry>) {
        let mut snap = Snapshot::default();
        for e in entries {
            snap.insert(e);
        }
        *self.snap.write() = snap;
    }

    /// Replace the keys of one input (`uid`) by `entries` (its publish and
    /// play keys): its old keys stop working as the new ones start.
    pub fn set_input(&self, uid: &str, entries: impl IntoIterator<Item = KeyEntry>) {
        let mut snap = self.snap.write();
        snap.remove(uid);
        for e in entries {
            debug_assert_eq!(e.grant.uid, uid);
            snap.insert(e);
        }
    }

    /// Remove every key of one input.
    pub fn remove_input(&self, uid: &str) {
        self.snap.write().remove(uid);
    }

    /// How many inputs have keys.
    pub fn inputs(&self) -> usize {
        self.snap.read().by_uid.len()
    }

    /// The grant of an RTMP(S) stream key or playback key.
    pub fn lookup_key(&self, key: &str) -> Option<Grant> {
        lookup(&self.snap.read().by_hash, key)
    }

    /// The grant of a WHIP secret (constant-time compare, as keys).
    pub fn lookup_whip(&self, key: &str) -> Option<Grant> {
        lookup(&self.snap.read().whip, key)
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
            whip_key: (direction == Direction::Publish).then(|| format!("whip-{key}")),
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

    #[test]
    fn whip_secrets_stand_apart() {
        let t = KeyTable::new();
        t.replace([
            entry("pub-1", "u1", Direction::Publish),
            entry("play-1", "u1", Direction::Play),
        ]);
        assert_eq!(t.lookup_whip("whip-pub-1").unwrap().uid, "u1");
        // Neither secret opens the other door.
        assert!(t.lookup_key("whip-pub-1").is_none());
        assert!(t.lookup_whip("pub-1").is_none());
        assert!(t.lookup_whip("whip-play-1").is_none());
        t.set_input("u1", [entry("pub-1b", "u1", Direction::Publish)]);
        assert!(t.lookup_whip("whip-pub-1").is_none(), "rotated");
        assert!(t.lookup_whip("whip-pub-1b").is_some());
        t.remove_input("u1");
        assert!(t.lookup_whip("whip-pub-1b").is_none(), "deleted");
    }

    #[test]
    fn one_input_changes_alone() {
        let t = KeyTable::new();
        t.replace([
            entry("pub-1", "u1", Direction::Publish),
            entry("play-1", "u1", Direction::Play),
            entry("pub-2", "u2", Direction::Publish),
            entry("play-2", "u2", Direction::Play),
        ]);
        assert_eq!(t.inputs(), 2);
        // Rotation of u1: the old keys stop, the new ones work, u2 is untouched.
        t.set_input(
            "u1",
            [
                entry("pub-1b", "u1", Direction::Publish),
                entry("play-1b", "u1", Direction::Play),
            ],
        );
        assert!(t.lookup_key("pub-1").is_none());
        assert!(t.lookup_key("play-1").is_none());
        assert_eq!(t.lookup_key("pub-1b").unwrap().uid, "u1");
        assert_eq!(t.srt("u1", Direction::Play).unwrap().0, "pass-play-1b");
        assert_eq!(t.lookup_key("pub-2").unwrap().uid, "u2");
        assert_eq!(t.srt("u2", Direction::Publish).unwrap().0, "pass-pub-2");
        // Disabling keeps the keys with the flag cleared.
        let mut off = entry("pub-1b", "u1", Direction::Publish);
        off.grant.enabled = false;
        t.set_input("u1", [off, entry("play-1b", "u1", Direction::Play)]);
        assert!(!t.lookup_key("pub-1b").unwrap().enabled);
        // A new input joins; a deleted one leaves with both directions.
        t.set_input("u3", [entry("pub-3", "u3", Direction::Publish)]);
        assert_eq!(t.inputs(), 3);
        t.remove_input("u2");
        assert!(t.lookup_key("pub-2").is_none());
        assert!(t.lookup_key("play-2").is_none());
        assert!(t.srt("u2", Direction::Publish).is_none());
        assert!(t.srt("u2", Direction::Play).is_none());
        assert_eq!(t.inputs(), 2);
        t.remove_input("nope");
        assert_eq!(t.lookup_key("pub-3").unwrap().uid, "u3");
    }
}
