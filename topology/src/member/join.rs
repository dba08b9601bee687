//! A member's joins: answers to its requests, failures, lost pulls, and
//! the heal path.

use std::time::Duration;

use super::{Answer, ClusterNode, Phase, Stream, MAX_REDIRECTS, NOT_HERE_TRIES};
use crate::member::{Action, Note};
use crate::NodeId;

impl ClusterNode {
    pub(super) fn answered(
        &mut self,
        now: Duration,
        uid: &str,
        attempt: u64,
        answer: Answer,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.streams.get_mut(uid) else {
            return;
        };
        let Phase::Asking {
            at,
            origin,
            hops,
            again_at: None,
            tries,
        } = s.phase.clone()
        else {
            return;
        };
        if s.attempt != attempt {
            return;
        }
        match answer {
            Answer::Accepted => {
                let note = match s.lost_at.take() {
                    Some(t) => Note::Healed {
                        uid: uid.into(),
                        parent: at.clone(),
                        origin: origin.clone(),
                        took: now.saturating_sub(t),
                    },
                    None => Note::Joined {
                        uid: uid.into(),
                        parent: at.clone(),
                        origin: origin.clone(),
                    },
                };
                s.heal_via.clear();
                s.phase = Phase::Pulling {
                    parent: at.clone(),
                    origin,
                };
                out.push(Action::Note(note));
                out.push(Action::StoreEdge {
                    uid: uid.into(),
                    parent: at,
                });
            }
            Answer::Redirect { node, .. }
                if s.avoid.contains_key(&node) && tries < NOT_HERE_TRIES =>
            {
                // Sent to the parent just lost: the asked node has not seen
                // that link close yet (it will within the idle timeout).
                // Ask it again in a moment rather than start over.
                let again = now + self.timing.retry;
                s.phase = Phase::Asking {
                    at,
                    origin,
                    hops,
                    again_at: Some(again),
                    tries: tries + 1,
                };
                out.push(Action::TickAt(again));
            }
            Answer::Redirect { node, link } => {
                let why = if s.avoid.contains_key(&node) {
                    Some(format!("sent to {node}, lost moments ago"))
                } else if hops + 1 >= MAX_REDIRECTS {
                    Some("too many redirects".to_string())
                } else if node == self.me {
                    Some("sent to this node".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    self.failed(now, uid, why, out);
                    return;
                }
                let link = self.view.member(&node).map(|m| m.link).or(link);
                s.phase = Phase::Asking {
                    at: node.clone(),
                    origin,
                    hops: hops + 1,
                    again_at: None,
                    tries: 0,
                };
                out.push(Action::Ask {
                    uid: uid.into(),
                    attempt,
                    node,
                    link,
                });
            }
            Answer::LocalPublisher => {
                out.push(Action::Note(Note::LocalPublisher { uid: uid.into() }));
                self.release(uid, out);
            }
            Answer::NotHere if at != origin && tries < NOT_HERE_TRIES => {
                let again = now + self.timing.retry;
                s.phase = Phase::Asking {
                    at,
                    origin,
                    hops,
                    again_at: Some(again),
                    tries: tries + 1,
                };
                out.push(Action::TickAt(again));
            }
            Answer::NotHere => {
                let why = format!("{at} does not have the stream");
                self.failed(now, uid, why, out)
            }
            Answer::Failed(why) => self.failed(now, uid, why, out),
        }
    }

    /// An attempt failed: ask the next node on the heal path at once, or
    /// the origin after a short wait.
    pub(super) fn failed(&mut self, now: Duration, uid: &str, why: String, out: &mut Vec<Action>) {
        out.push(Action::Note(Note::JoinFailed {
            uid: uid.into(),
            why,
        }));
        let retry = self.timing.retry;
        if let Some(s) = self.streams.get_mut(uid) {
            s.phase = Phase::Waiting;
            s.retry_at = if s.heal_via.is_empty() {
                now + retry
            } else {
                now
            };
        }
        self.step(now, uid, out);
    }

    pub(super) fn pull_ended(
        &mut self,
        now: Duration,
        uid: &str,
        attempt: u64,
        lost: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let heal_via = match self.streams.get(uid) {
            Some(Stream {
                phase: Phase::Pulling { parent, .. },
                attempt: a,
                ..
            }) if *a == attempt => self.ancestors(uid, parent),
            _ => return,
        };
        let poll = self.timing.demand_poll;
        let Some(s) = self.streams.get_mut(uid) else {
            return;
        };
        let Phase::Pulling { parent, .. } = s.phase.clone() else {
            return;
        };
        s.phase = Phase::Waiting;
        match lost {
            Some(why) => {
                out.push(Action::Note(Note::LinkLost {
                    uid: uid.into(),
                    parent: parent.clone(),
                    why,
                }));
                s.avoid.insert(parent, now);
                s.lost_at = Some(now);
                s.heal_via = heal_via;
                s.retry_at = now;
            }
            None => {
                out.push(Action::Note(Note::EndedUpstream { uid: uid.into() }));
                s.retry_at = now + poll;
            }
        }
        self.step(now, uid, out);
    }

    /// The stored ancestors of `parent` in `uid`'s tree, nearest first,
    /// without the origin (asked last anyway) and without this node.
    pub(super) fn ancestors(&self, uid: &str, parent: &NodeId) -> Vec<NodeId> {
        let origin = self.view.origin(uid).map(|o| o.node.clone());
        let mut out = Vec::new();
        let mut at = parent;
        // Bounded: a stored loop ends at a node seen before.
        while let Some(p) = self.view.parent(uid, at) {
            if Some(p) == origin.as_ref() || *p == self.me || out.contains(p) || out.len() > 64 {
                break;
            }
            out.push(p.clone());
            at = p;
        }
        out
    }
}
