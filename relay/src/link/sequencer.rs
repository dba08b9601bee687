//! The order in which one pull's groups reach the local publisher, sans-IO:
//! the [`Sequencer`] takes what each group stream yields ([`GroupEvent`])
//! and the time, and says what to publish or abandon ([`Action`]).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::frame::{Frame, MediaInfo};

/// What a group stream yields to its pull.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GroupEvent {
    Info(MediaInfo),
    Frame(Frame),
    /// The group arrived whole.
    Finished,
    /// The group was reset or broke.
    Failed,
}

/// What the pull does with the local publisher.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Info(MediaInfo),
    Frame(Frame),
    /// Abandon group `seq`; `counted` when it was still incomplete.
    Cancel {
        seq: u64,
        counted: bool,
    },
}

struct PendingGroup {
    items: Vec<GroupEvent>,
    done: bool,
}

/// Orders the groups of one pull into the publisher, sans-IO.
///
/// Items of the current group are published as they arrive. Items of newer
/// groups wait while the current one is incomplete; when it finishes, the
/// next group is published in order. If a newer group has waited `grace`
/// (or more than `max_pending` items wait), the current group and every
/// waiting one but the newest are abandoned and the newest goes on: loss on
/// the link costs the tail of a group, not the live edge.
pub(crate) struct Sequencer {
    cur: Option<u64>,
    cur_done: bool,
    pending: BTreeMap<u64, PendingGroup>,
    pending_items: usize,
    deadline: Option<Instant>,
    grace: Duration,
    max_pending: usize,
}

impl Sequencer {
    pub(crate) fn new(grace: Duration, max_pending: usize) -> Sequencer {
        Sequencer {
            cur: None,
            cur_done: false,
            pending: BTreeMap::new(),
            pending_items: 0,
            deadline: None,
            grace,
            max_pending: max_pending.max(1),
        }
    }

    /// When to call [`Sequencer::on_timeout`].
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A group this old will never be published.
    pub(crate) fn is_stale(&self, seq: u64) -> bool {
        self.cur
            .is_some_and(|c| seq < c || (seq == c && self.cur_done))
    }

    fn publish(out: &mut Vec<Action>, ev: GroupEvent) {
        match ev {
            GroupEvent::Info(i) => out.push(Action::Info(i)),
            GroupEvent::Frame(f) => out.push(Action::Frame(f)),
            GroupEvent::Finished | GroupEvent::Failed => {}
        }
    }

    pub(crate) fn on_event(&mut self, seq: u64, ev: GroupEvent, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_stale(seq) {
            if !matches!(ev, GroupEvent::Finished | GroupEvent::Failed) {
                out.push(Action::Cancel {
                    seq,
                    counted: false,
                });
            }
            return out;
        }
        let end = matches!(ev, GroupEvent::Finished | GroupEvent::Failed);
        let current = match self.cur {
            None => true,
            Some(c) => c == seq || (self.cur_done && seq > c && self.pending.is_empty()),
        };
        if current {
            if self.cur != Some(seq) {
                self.cur = Some(seq);
                self.cur_done = false;
            }
            if end {
                self.cur_done = true;
                self.advance(now, &mut out);
            } else {
                Self::publish(&mut out, ev);
            }
            return out;
        }
        // A newer group while the current one is incomplete.
        let g = self.pending.entry(seq).or_insert(PendingGroup {
            items: Vec::new(),
            done: false,
        });
        match ev {
            GroupEvent::Finished => g.done = true,
            GroupEvent::Failed => {
                self.pending_items -= g.items.len();
                self.pending.remove(&seq);
            }
            ev => {
                g.items.push(ev);
                self.pending_items += 1;
            }
        }
        if self.cur_done {
            self.advance(now, &mut out);
        } else if self.pending_items > self.max_pending {
            self.force(now, &mut out);
        } else if self.deadline.is_none() && !self.pending.is_empty() {
            self.deadline = Some(now + self.grace);
        }
        out
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.deadline.is_some_and(|d| now >= d) {
            self.force(now, &mut out);
        }
        out
    }

    /// The current group is done: publish waiting groups in order.
    fn advance(&mut self, now: Instant, out: &mut Vec<Action>) {
        while self.cur_done {
            let Some((s, g)) = self.pending.pop_first() else {
                break;
            };
            self.pending_items -= g.items.len();
            self.cur = Some(s);
            self.cur_done = g.done;
            for ev in g.items {
                Self::publish(out, ev);
            }
        }
        self.deadline = if self.pending.is_empty() {
            None
        } else {
            Some(now + self.grace)
        };
    }

    /// Give up on the current group and all waiting ones but the newest.
    fn force(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(newest) = self.pending.keys().next_back().copied() else {
            self.deadline = None;
            return;
        };
        if let Some(c) = self.cur {
            if !self.cur_done {
                out.push(Action::Cancel {
                    seq: c,
                    counted: true,
                });
            }
        }
        let older: Vec<u64> = self.pending.range(..newest).map(|(s, _)| *s).collect();
        for s in older {
            if let Some(g) = self.pending.remove(&s) {
                self.pending_items -= g.items.len();
                out.push(Action::Cancel {
                    seq: s,
                    counted: !g.done,
                });
            }
        }
        self.cur_done = true;
        self.advance(now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn f(dts: i64) -> GroupEvent {
        GroupEvent::Frame(Frame::video(dts, dts, false, Bytes::new()))
    }

    fn frames(out: &[Action]) -> Vec<i64> {
        out.iter()
            .filter_map(|a| match a {
                Action::Frame(f) => Some(f.dts),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn groups_in_order_pass_straight_through() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_millis(100), 100);
        assert_eq!(frames(&s.on_event(0, f(1), now)), vec![1]);
        assert_eq!(frames(&s.on_event(0, f(2), now)), vec![2]);
        assert!(s.on_event(0, GroupEvent::Finished, now).is_empty());
        assert_eq!(frames(&s.on_event(1, f(3), now)), vec![3]);
        assert_eq!(s.deadline(), None);
        assert!(s.is_stale(0));
    }

    #[test]
    fn a_newer_group_waits_for_the_older_one_then_follows() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_millis(100), 100);
        s.on_event(0, f(1), now);
        assert!(s.on_event(1, f(10), now).is_empty());
        assert!(s.on_event(1, f(11), now).is_empty());
        assert_eq!(s.deadline(), Some(now + Duration::from_millis(100)));
        assert_eq!(frames(&s.on_event(0, f(2), now)), vec![2]);
        assert_eq!(
            frames(&s.on_event(0, GroupEvent::Finished, now)),
            vec![10, 11]
        );
        assert_eq!(s.deadline(), None);
        assert_eq!(frames(&s.on_event(1, f(12), now)), vec![12]);
    }

    #[test]
    fn a_stuck_group_is_abandoned_after_the_grace() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_millis(100), 100);
        s.on_event(0, f(1), now);
        s.on_event(1, f(10), now);
        s.on_event(2, f(20), now);
        assert!(s.on_timeout(now + Duration::from_millis(50)).is_empty());
        let out = s.on_timeout(now + Duration::from_millis(100));
        assert!(out.contains(&Action::Cancel {
            seq: 0,
            counted: true
        }));
        assert!(out.contains(&Action::Cancel {
            seq: 1,
            counted: true
        }));
        assert_eq!(frames(&out), vec![20]);
        // The abandoned groups' late frames are dropped.
        let late = s.on_event(0, f(2), now);
        assert_eq!(frames(&late), Vec::<i64>::new());
        assert_eq!(frames(&s.on_event(2, f(21), now)), vec![21]);
    }

    #[test]
    fn too_many_waiting_items_force_the_switch() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(10), 3);
        s.on_event(0, f(1), now);
        for i in 0..3 {
            assert!(frames(&s.on_event(1, f(10 + i), now)).is_empty());
        }
        assert_eq!(frames(&s.on_event(1, f(13), now)), vec![10, 11, 12, 13]);
    }

    #[test]
    fn a_failed_current_group_lets_the_next_one_go() {
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(10), 100);
        s.on_event(0, f(1), now);
        s.on_event(1, f(10), now);
        assert_eq!(frames(&s.on_event(0, GroupEvent::Failed, now)), vec![10]);
    }
}
