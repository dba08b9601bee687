//! Keeping the key snapshot in step with the store, one input at a time.
//!
//! * At start (and as a backstop every [`FULL_EVERY`] on a shared store) the
//!   whole table is loaded: [`Inputs::rebuild_keys`].
//! * An API change on this node applies the one row it wrote
//!   ([`Inputs::input_changed`]) or removes the one input it deleted
//!   ([`Inputs::input_deleted`]).
//! * On a store shared with other nodes, [`Inputs::refresh_keys`] reads only
//!   inputs whose `modified` is at or after the newest it has seen (less an
//!   overlap of [`OVERLAP`] for transactions that commit late and clocks
//!   that differ a little), and the tombstones `live_input_deletions` left
//!   by deletions since the newest it has seen (same overlap). Rows read
//!   twice change nothing.
//!
//! Whatever the path, an input whose secrets changed, that was disabled or
//! that is gone loses its keys first, then its sessions are ended. A row
//! older than the one already applied (by `modified`) is ignored, so a
//! refresh that read a row before an API change cannot undo it; every
//! change happens under one lock.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use banyan_relay::access::{Direction, Grant, KeyEntry};

use super::Inputs;
use crate::secret;
use crate::store::{now_micros, LiveInputRow};

/// Re-read window before the newest change seen (microseconds).
pub const OVERLAP: Duration = Duration::from_secs(30);
/// How often a shared store's refresh reloads everything anyway.
pub const FULL_EVERY: Duration = Duration::from_secs(300);
/// Tombstones older than this are pruned at each full reload.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(86_400);

/// What the node knows of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// A hash of its five secrets (the WHIP one included).
    secrets: String,
    enabled: bool,
    modified: i64,
}

/// Where the shared-store refresh stands.
#[derive(Debug, Default)]
pub struct Marks {
    /// The newest `modified` seen.
    inputs: Option<i64>,
    /// The newest tombstone seen.
    deletions: Option<i64>,
    /// When everything was last loaded.
    full_at: Option<Instant>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The two keys (publish, play) of a row.
pub fn entries(r: &LiveInputRow) -> [KeyEntry; 2] {
    let grant = |direction| Grant {
        uid: r.uid.clone(),
        account: r.account_id.clone(),
        direction,
        enabled: r.enabled,
    };
    [
        KeyEntry {
            rtmp_key: r.stream_key.clone(),
            srt_passphrase: r.srt_passphrase.clone(),
            whip_key: whip_key(r),
            grant: grant(Direction::Publish),
        },
        KeyEntry {
            rtmp_key: r.playback_key.clone(),
            srt_passphrase: r.srt_play_passphrase.clone(),
            whip_key: None,
            grant: grant(Direction::Play),
        },
    ]
}

/// The WHIP secret of a row (kept in its `options`).
fn whip_key(r: &LiveInputRow) -> Option<String> {
    crate::api::inputs::load(&r.options).webrtc_key
}

fn known(r: &LiveInputRow) -> Known {
    Known {
        secrets: secret::token_hash(&format!(
            "{}\n{}\n{}\n{}\n{}",
            r.stream_key,
            r.playback_key,
            r.srt_passphrase,
            r.srt_play_passphrase,
            whip_key(r).unwrap_or_default()
        )),
        enabled: r.enabled,
        modified: r.modified,
    }
}

/// Whether going from `old` to `new` must end the input's sessions.
fn revokes(old: &Known, new: Option<&Known>) -> bool {
    match new {
        None => true,
        Some(n) => n.secrets != old.secrets || (old.enabled && !n.enabled),
    }
}

impl Inputs {
    /// Load the whole key table (and the set of known inputs) from the
    /// store, then end the sessions of every input whose secrets changed,
    /// that was disabled, or that is gone. At start, and as the backstop of
    /// the shared-store refresh.
    pub async fn rebuild_keys(&self) -> anyhow::Result<()> {
        let mut marks = self.rebuild.lock().await;
        self.full_locked(&mut marks).await
    }

    async fn full_locked(&self, marks: &mut Marks) -> anyhow::Result<()> {
        let rows = self
            .store
            .all_inputs()
            .await
            .context("loading live inputs")?;
        crate::captions::load_declared(&self.captions, &rows);
        self.playback.set_inputs(&rows);
        let mut entries_all = Vec::with_capacity(rows.len() * 2);
        let mut access = std::collections::HashMap::with_capacity(rows.len());
        let mut newest = marks.inputs;
        for r in rows {
            newest = Some(newest.map_or(r.modified, |n| n.max(r.modified)));
            entries_all.extend(entries(&r));
            access.insert(r.uid.clone(), known(&r));
        }
        self.keys.replace(entries_all);
        let old = std::mem::replace(&mut *self.access.lock(), access.clone());
        for (uid, k) in &old {
            if revokes(k, access.get(uid)) {
                self.hub.kick(uid);
            }
        }
        marks.inputs = newest;
        marks.full_at = Some(Instant::now());
        metrics::counter!("banyan_key_refresh_total", "kind" => "full").increment(1);
        Ok(())
    }

    /// Apply one row (the caller holds the lock). Older than what is
    /// applied: ignored.
    fn apply_row(&self, r: &LiveInputRow) {
        let new = known(r);
        let old = {
            let access = self.access.lock();
            match access.get(&r.uid) {
                Some(k) if k.modified > r.modified => return,
                Some(k) if *k == new => None,
                other => other.cloned(),
            }
        };
        // Signing requirements and origins can change without the keys.
        self.playback.set_input(r);
        self.keys.set_input(&r.uid, entries(r));
        self.captions
            .set_declared(&r.uid, crate::captions::declared(&r.captions));
        self.access.lock().insert(r.uid.clone(), new.clone());
        if old.is_some_and(|o| revokes(&o, Some(&new))) {
            self.hub.kick(&r.uid);
        }
    }

    /// Remove one input (the caller holds the lock).
    fn remove_uid(&self, uid: &str) {
        if self.access.lock().remove(uid).is_none() {
            return;
        }
        self.keys.remove_input(uid);
        self.playback.remove_input(uid);
        self.captions.set_declared(uid, Vec::new());
        self.hub.kick(uid);
    }

    /// A live input was created or changed through this node's API: its keys
    /// change alone (old keys stop first, then its sessions end when its
    /// secrets changed or it was disabled).
    pub async fn input_changed(&self, row: &LiveInputRow) {
        let _one_at_a_time = self.rebuild.lock().await;
        self.apply_row(row);
    }

    /// A live input was deleted through this node's API: its keys go and
    /// its sessions end.
    pub async fn input_deleted(&self, uid: &str) {
        let _one_at_a_time = self.rebuild.lock().await;
        self.remove_uid(uid);
    }

    /// On a shared store: pick up what other nodes changed since the last
    /// look (everything every [`FULL_EVERY`]).
    pub async fn refresh_keys(&self) -> anyhow::Result<()> {
        let mut marks = self.rebuild.lock().await;
        if marks.full_at.is_none_or(|t| t.elapsed() >= FULL_EVERY) {
            self.full_locked(&mut marks).await?;
            let before = now_micros().saturating_sub(micros(TOMBSTONE_TTL));
            self.store
                .prune_deletions(before)
                .await
                .context("pruning tombstones")?;
            return Ok(());
        }
        let since = |m: Option<i64>| m.map_or(i64::MIN, |m| m.saturating_sub(micros(OVERLAP)));
        let rows = self
            .store
            .inputs_modified_since(since(marks.inputs))
            .await
            .context("loading changed live inputs")?;
        let gone = self
            .store
            .deletions_since(since(marks.deletions))
            .await
            .context("loading deleted live inputs")?;
        metrics::counter!("banyan_key_refresh_total", "kind" => "delta").increment(1);
        metrics::counter!("banyan_key_refresh_rows_total")
            .increment((rows.len() + gone.len()) as u64);
        for r in &rows {
            marks.inputs = Some(marks.inputs.map_or(r.modified, |m| m.max(r.modified)));
            self.apply_row(r);
        }
        for (uid, at) in &gone {
            marks.deletions = Some(marks.deletions.map_or(*at, |m| m.max(*at)));
            self.remove_uid(uid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uid: &str) -> LiveInputRow {
        LiveInputRow {
            stream_key: "sk".into(),
            playback_key: "pk".into(),
            srt_passphrase: "sp".into(),
            srt_play_passphrase: "spp".into(),
            ..LiveInputRow::new(uid, "acc", 1)
        }
    }

    #[test]
    fn what_ends_sessions() {
        let r = row("u");
        let k = known(&r);
        assert!(revokes(&k, None), "deleted");
        let mut meta = r.clone();
        meta.meta = r#"{"a":1}"#.into();
        meta.modified = 2;
        assert!(!revokes(&k, Some(&known(&meta))), "meta alone");
        let mut off = r.clone();
        off.enabled = false;
        assert!(revokes(&k, Some(&known(&off))), "disabled");
        assert!(!revokes(&known(&off), Some(&k)), "enabled again");
        for f in [
            |r: &mut LiveInputRow| r.stream_key = "x".into(),
            |r: &mut LiveInputRow| r.playback_key = "x".into(),
            |r: &mut LiveInputRow| r.srt_passphrase = "x".into(),
            |r: &mut LiveInputRow| r.srt_play_passphrase = "x".into(),
        ] {
            let mut rotated = r.clone();
            f(&mut rotated);
            assert!(revokes(&k, Some(&known(&rotated))), "a secret changed");
        }
        let [p, q] = entries(&r);
        assert_eq!(
            (p.grant.direction, q.grant.direction),
            (Direction::Publish, Direction::Play)
        );
        assert_eq!(
            (p.rtmp_key.as_str(), q.srt_passphrase.as_str()),
            ("sk", "spp")
        );
    }
}
