//! One cluster member as a sans-IO state machine: membership, origin
//! leases, demand, joins, redirects, heals and leaving.
//!
//! [`ClusterNode::handle`] takes the time and one [`Event`] (a scan of the
//! local streams, a timer, the result of a database round, a link's answer)
//! and returns [`Action`]s for its driver to carry out (a database round,
//! asking a node for a stream, dropping a pull, a log line). There is no
//! clock, socket or database inside: the production driver (QUIC links and
//! PostgreSQL) and the simulator run this same code.
//!
//! Per stream a member is in one explicit phase: waiting for an origin or a
//! retry, asking a node (one request in flight, identified by its attempt
//! number, so a late answer to an abandoned attempt is ignored), pulling
//! from a parent, or releasing (the pull is dropped and the driver has not
//! yet said the local stream is gone, so no new join starts meanwhile).
//!
//! Healing: when the link to the parent is lost, the member asks the lost
//! parent's nearest live ancestor first (from the stored edges), then the
//! next one up, then the origin; the lost parent is avoided for a moment.

mod admit;
mod join;
mod types;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use admit::Admit;
pub use types::{
    Action, Answer, Event, Local, LocalState, Note, OriginOp, SyncPlan, Timing, MAX_REDIRECTS,
};
pub use view::{Member, Origin, Snapshot, View};

use crate::NodeId;

/// How often a node is asked again before the join starts over, when it
/// does not have the stream yet (it is joining too) or sends to the parent
/// just lost (it has not seen that link close yet).
const NOT_HERE_TRIES: u8 = 3;

#[derive(Debug, Clone)]
enum Phase {
    /// Wanted; waits for an origin or for `retry_at`.
    Waiting,
    /// One request to `at` in flight, or, with `again_at`, none until
    /// then (`at` is joining the stream itself: asked again, not the
    /// origin from the top).
    Asking {
        at: NodeId,
        origin: NodeId,
        hops: usize,
        again_at: Option<Duration>,
        tries: u8,
    },
    Pulling {
        parent: NodeId,
        origin: NodeId,
    },
    Releasing,
}

#[derive(Debug, Clone)]
struct Stream {
    phase: Phase,
    attempt: u64,
    idle_since: Option<Duration>,
    /// When the link to the parent was lost (a heal is under way).
    lost_at: Option<Duration>,
    /// Nodes to ask next while healing, nearest first.
    heal_via: Vec<NodeId>,
    avoid: BTreeMap<NodeId, Duration>,
    retry_at: Duration,
}

/// A pull as the admin view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullInfo {
    pub parent: Option<NodeId>,
    pub origin: Option<NodeId>,
}

/// One cluster member.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    me: NodeId,
    fanout: usize,
    timing: Timing,
    view: View,
    local: BTreeMap<String, Local>,
    streams: BTreeMap<String, Stream>,
    leases: BTreeSet<String>,
    admitted: BTreeMap<String, Vec<(NodeId, Duration)>>,
    /// Per stream, joiners recently sent below a child: `(child, joiner,
    /// when)`.
    redirected: BTreeMap<String, Vec<(NodeId, NodeId, Duration)>>,
    /// Per stream, the subtree level profiles of the current view.
    profiles: BTreeMap<String, BTreeMap<NodeId, Vec<u32>>>,
    /// Since when this node's database rounds have been succeeding.
    ok_since: Option<Duration>,
    /// The round under way: since when rounds succeed if it does, whether
    /// that is settled, its plan.
    pending: Option<(Duration, bool, SyncPlan)>,
    origins_seen: BTreeMap<String, Duration>,
    next_attempt: u64,
}

impl ClusterNode {
    pub fn new(me: NodeId, fanout: usize, timing: Timing) -> ClusterNode {
        ClusterNode {
            me,
            fanout: fanout.max(1),
            timing,
            view: View::default(),
            local: BTreeMap::new(),
            streams: BTreeMap::new(),
            leases: BTreeSet::new(),
            admitted: BTreeMap::new(),
            redirected: BTreeMap::new(),
            profiles: BTreeMap::new(),
            ok_since: None,
            pending: None,
            origins_seen: BTreeMap::new(),
            next_attempt: 0,
        }
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn fanout(&self) -> usize {
        self.fanout
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// The live origin of `uid` on another member.
    pub fn remote_origin(&self, uid: &str) -> Option<&NodeId> {
        let o = self.view.origin(uid)?;
        (o.live && o.node != self.me && self.view.member(&o.node).is_some()).then_some(&o.node)
    }

    /// Whether this node holds `uid` from another node (or is joining it).
    pub fn pulling(&self, uid: &str) -> bool {
        self.streams.contains_key(uid)
    }

    /// Whether this node is `uid`'s origin: a broadcaster publishes here
    /// and this node holds the lease.
    pub fn is_origin(&self, uid: &str) -> bool {
        !self.pulling(uid) && self.leases.contains(uid)
    }

    pub fn pull(&self, uid: &str) -> Option<PullInfo> {
        let s = self.streams.get(uid)?;
        Some(match &s.phase {
            Phase::Pulling { parent, origin } => PullInfo {
                parent: Some(parent.clone()),
                origin: Some(origin.clone()),
            },
            Phase::Asking { origin, .. } => PullInfo {
                parent: None,
                origin: Some(origin.clone()),
            },
            _ => PullInfo {
                parent: None,
                origin: None,
            },
        })
    }

    /// The parent `uid` is pulled from now.
    pub fn parent(&self, uid: &str) -> Option<&NodeId> {
        match &self.streams.get(uid)?.phase {
            Phase::Pulling { parent, .. } => Some(parent),
            _ => None,
        }
    }

    /// Take one event; the actions to carry out, in order.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Local(list) => {
                self.local = list.into_iter().map(|l| (l.uid.clone(), l)).collect();
                self.evaluate(now, &mut out);
            }
            Event::Tick => self.evaluate(now, &mut out),
            Event::SyncDue => out.push(Action::Sync(self.plan(now))),
            Event::Synced {
                snapshot,
                taken,
                linked,
            } => {
                self.synced(now, snapshot, taken, &linked, &mut out);
                self.evaluate(now, &mut out);
            }
            Event::SyncFailed => {
                self.ok_since = None;
                self.pending = None;
            }
            Event::Answer {
                uid,
                attempt,
                answer,
            } => self.answered(now, &uid, attempt, answer, &mut out),
            Event::PullEnded { uid, attempt, lost } => {
                self.pull_ended(now, &uid, attempt, lost, &mut out)
            }
            Event::Released { uid } => {
                if matches!(
                    self.streams.get(&uid).map(|s| &s.phase),
                    Some(Phase::Releasing)
                ) {
                    self.streams.remove(&uid);
                    out.push(Action::RemoveEdge { uid });
                }
            }
        }
        out
    }

    fn plan(&mut self, now: Duration) -> SyncPlan {
        let since = self.ok_since.unwrap_or(now);
        let settled = now.saturating_sub(since) >= self.timing.settle;
        let mut plan = SyncPlan {
            sweep: settled,
            ..SyncPlan::default()
        };
        for (uid, l) in &self.local {
            if self.streams.contains_key(uid) {
                continue;
            }
            let held = self.leases.contains(uid);
            match l.state {
                LocalState::Live => plan
                    .origins
                    .push((uid.clone(), OriginOp::Take { live: true })),
                LocalState::Reconnecting if held => plan
                    .origins
                    .push((uid.clone(), OriginOp::Take { live: false })),
                _ if held => plan.origins.push((uid.clone(), OriginOp::Release)),
                _ => {}
            }
        }
        for (uid, s) in &self.streams {
            if let Phase::Pulling { parent, .. } = &s.phase {
                plan.edges.push((uid.clone(), parent.clone()));
            }
        }
        self.pending = Some((since, settled, plan.clone()));
        plan
    }

    fn synced(
        &mut self,
        now: Duration,
        snapshot: Arc<Snapshot>,
        taken: Vec<(String, bool)>,
        linked: &BTreeSet<NodeId>,
        out: &mut Vec<Action>,
    ) {
        let (since, settled, plan) =
            self.pending
                .take()
                .unwrap_or((now, false, SyncPlan::default()));
        self.ok_since = Some(since);
        for (uid, op) in &plan.origins {
            if *op == OriginOp::Release && self.leases.remove(uid) {
                out.push(Action::Note(Note::LeaseReleased { uid: uid.clone() }));
            }
        }
        for (uid, got) in taken {
            if !got {
                self.leases.remove(&uid);
            } else if self.leases.insert(uid.clone()) {
                out.push(Action::Note(Note::OriginTaken { uid }));
            }
        }
        for uid in snapshot.origins.keys() {
            self.origins_seen.insert(uid.clone(), now);
        }
        let grace = self.timing.origin_grace;
        self.origins_seen
            .retain(|_, t| now.saturating_sub(*t) < grace);
        let seen = &self.origins_seen;
        let recent = |uid: &str| seen.contains_key(uid);
        self.view = self.view.next(snapshot, linked, &recent, settled);
        self.profiles.clear();
    }

    /// Start joins for streams wanted here and live elsewhere; step every
    /// stream held.
    fn evaluate(&mut self, now: Duration, out: &mut Vec<Action>) {
        let mut wake = false;
        let mut start = Vec::new();
        for (uid, l) in &self.local {
            if self.streams.contains_key(uid) {
                continue;
            }
            if l.state == LocalState::Live {
                wake |= !self.leases.contains(uid);
                continue;
            }
            // Viewers waiting (through a heal or an origin move), or any
            // subscriber of a stream that is not here at all.
            let wanted = l.viewers || (l.state == LocalState::Idle && l.subscribers);
            if wanted && self.remote_origin(uid).is_some() {
                start.push(uid.clone());
            }
        }
        if wake {
            out.push(Action::WakeSync);
        }
        for uid in start {
            self.streams.insert(
                uid,
                Stream {
                    phase: Phase::Waiting,
                    attempt: 0,
                    idle_since: None,
                    lost_at: None,
                    heal_via: Vec::new(),
                    avoid: BTreeMap::new(),
                    retry_at: now,
                },
            );
        }
        let uids: Vec<String> = self.streams.keys().cloned().collect();
        for uid in uids {
            self.step(now, &uid, out);
        }
    }

    /// Local viewers or downstream nodes use `uid`, or did within
    /// `leave_after`. Other hub subscribers (a waiting muxer) do not keep a
    /// pull alive by themselves.
    fn wanted(&mut self, now: Duration, uid: &str) -> bool {
        let l = self.local.get(uid);
        let Some(s) = self.streams.get_mut(uid) else {
            return false;
        };
        let viewers = l.is_some_and(|l| l.viewers || l.downstream > 0);
        // Before the pull starts, a waiting subscriber is the demand.
        let waiting = l.is_some_and(|l| l.state != LocalState::Live && l.subscribers)
            && s.idle_since.is_none();
        if viewers || waiting {
            s.idle_since = None;
            return true;
        }
        let since = *s.idle_since.get_or_insert(now);
        now.saturating_sub(since) < self.timing.leave_after
    }

    fn step(&mut self, now: Duration, uid: &str, out: &mut Vec<Action>) {
        let Some(phase) = self.streams.get(uid).map(|s| s.phase.clone()) else {
            return;
        };
        match phase {
            Phase::Releasing => {}
            Phase::Asking {
                at,
                origin,
                hops,
                again_at,
                tries,
            } => {
                let Some(t) = again_at else {
                    return;
                };
                if now < t {
                    return;
                }
                let Some(s) = self.streams.get_mut(uid) else {
                    return;
                };
                let link = self.view.member(&at).map(|m| m.link);
                s.phase = Phase::Asking {
                    at: at.clone(),
                    origin,
                    hops,
                    again_at: None,
                    tries,
                };
                out.push(Action::Ask {
                    uid: uid.into(),
                    attempt: s.attempt,
                    node: at,
                    link,
                });
            }
            Phase::Pulling { origin, .. } => {
                if !self.wanted(now, uid) {
                    out.push(Action::Note(Note::Leaving { uid: uid.into() }));
                    self.release(uid, out);
                } else if self.origin_moved(uid, &origin) {
                    out.push(Action::Note(Note::OriginMoved {
                        uid: uid.into(),
                        origin,
                    }));
                    out.push(Action::DropPull { uid: uid.into() });
                    if let Some(s) = self.streams.get_mut(uid) {
                        s.phase = Phase::Waiting;
                        s.heal_via.clear();
                        s.retry_at = now;
                    }
                    self.step(now, uid, out);
                }
            }
            Phase::Waiting => {
                if !self.wanted(now, uid) {
                    self.release(uid, out);
                    return;
                }
                let Some(origin) = self.remote_origin(uid).cloned() else {
                    // Live here with no pull: a broadcaster publishes here.
                    if self.local.get(uid).map(|l| l.state) == Some(LocalState::Live) {
                        out.push(Action::Note(Note::LocalPublisher { uid: uid.into() }));
                        self.release(uid, out);
                    }
                    return;
                };
                let avoid_for = self.timing.avoid;
                let next_attempt = self.next_attempt + 1;
                let Some(s) = self.streams.get_mut(uid) else {
                    return;
                };
                if now < s.retry_at {
                    out.push(Action::TickAt(s.retry_at));
                    return;
                }
                s.avoid.retain(|_, t| now.saturating_sub(*t) < avoid_for);
                let at = loop {
                    match s.heal_via.first().cloned() {
                        Some(n) if s.avoid.contains_key(&n) || n == self.me => {
                            s.heal_via.remove(0);
                        }
                        Some(n) if self.view.member(&n).is_some() => {
                            s.heal_via.remove(0);
                            break n;
                        }
                        Some(_) => {
                            s.heal_via.remove(0);
                        }
                        None => break origin.clone(),
                    }
                };
                self.next_attempt = next_attempt;
                s.attempt = next_attempt;
                let link = self.view.member(&at).map(|m| m.link);
                s.phase = Phase::Asking {
                    at: at.clone(),
                    origin,
                    hops: 0,
                    again_at: None,
                    tries: 0,
                };
                out.push(Action::Ask {
                    uid: uid.into(),
                    attempt: next_attempt,
                    node: at,
                    link,
                });
            }
        }
    }

    /// The stream's origin is known to be another node now, or its
    /// broadcaster is away. A lease missing from the view (late renewals,
    /// a slow or absent database) moves nothing: the pull shows the stream
    /// flows, and a dead origin shows as a lost link.
    fn origin_moved(&self, uid: &str, origin: &NodeId) -> bool {
        self.view
            .origin(uid)
            .is_some_and(|o| o.node != *origin || !o.live)
    }

    fn release(&mut self, uid: &str, out: &mut Vec<Action>) {
        if let Some(s) = self.streams.get_mut(uid) {
            s.phase = Phase::Releasing;
            out.push(Action::Release { uid: uid.into() });
        }
    }
}

#[cfg(test)]
mod tests;
