//! Links in the simulated world: asks and answers, pulls, crashes, and
//! which nodes the stream reaches.

use rand::Rng;

use super::{Ev, World, CONNECT_TIMEOUT, LINK_IDLE, ORIGIN};
use crate::member::{Admit, Answer, ClusterNode, Event, LocalState};
use crate::sim::{name, UID};
use crate::NodeId;

impl World<'_> {
    pub(super) fn unpull(&mut self, i: u32) {
        if let Some((p, _)) = self.nodes[i as usize].upstream.take() {
            self.control += 1;
            self.nodes[p as usize].children.remove(&i);
            self.recompute(i);
        }
    }

    pub(super) fn ask_arrive(&mut self, from: u32, to: u32, attempt: u64) {
        let back = self.rtt(from, to) / 2;
        if !self.reachable(from, to) {
            let answer = Answer::Failed("unreachable".into());
            let at = self.now + CONNECT_TIMEOUT.saturating_sub(back);
            self.push(
                at,
                Ev::Answer {
                    to: from,
                    from: to,
                    attempt,
                    answer,
                },
            );
            return;
        }
        let n = &self.nodes[to as usize];
        let state = if n.served || to == ORIGIN {
            LocalState::Live
        } else if n.upstream.is_some() {
            LocalState::Reconnecting
        } else {
            LocalState::Idle
        };
        let children: Vec<NodeId> = n.children.iter().map(|c| name(*c)).collect();
        let admit =
            self.nodes[to as usize]
                .core
                .admit(self.now, UID, &name(from), &children, state);

        self.control += 1;
        let answer = match admit {
            Admit::Accept => {
                self.nodes[to as usize].children.insert(from);
                Answer::Accepted
            }
            Admit::Redirect { node, .. } => Answer::Redirect { node, link: None },
            Admit::NotHere => Answer::NotHere,
            Admit::Refuse(why) => Answer::Failed(why),
        };
        self.push(
            self.now + back,
            Ev::Answer {
                to: from,
                from: to,
                attempt,
                answer,
            },
        );
    }

    pub(super) fn answer(&mut self, to: u32, from: u32, attempt: u64, answer: Answer) {
        if !self.nodes[to as usize].alive {
            if answer == Answer::Accepted {
                self.push(
                    self.now + LINK_IDLE,
                    Ev::ChildGone {
                        parent: from,
                        child: to,
                    },
                );
            }
            return;
        }
        let accepted = answer == Answer::Accepted;
        if accepted {
            if let Some((old, _)) = self.nodes[to as usize].upstream.take() {
                self.nodes[old as usize].children.remove(&to);
            }
            self.nodes[to as usize].upstream = Some((from, attempt));
            if !self.reachable(to, from) || !self.nodes[from as usize].children.contains(&to) {
                self.push(
                    self.now + LINK_IDLE,
                    Ev::LinkDown {
                        child: to,
                        parent: from,
                        attempt,
                    },
                );
            }
            self.recompute(to);
        }
        let uid = UID.to_string();
        self.feed(
            to,
            Event::Answer {
                uid,
                attempt,
                answer,
            },
        );
        // The core holds no pull the driver does not (a stale answer).
        if accepted && self.nodes[to as usize].core.parent(UID) != Some(&name(from)) {
            self.unpull(to);
        }
    }

    pub(super) fn viewer_arrive(&mut self, v: u32) {
        let (mut node, leave) = (
            self.viewers[v as usize].node,
            self.viewers[v as usize].leave,
        );
        if !self.nodes[node as usize].alive {
            // The player picks another node of the region.
            let region = self.nodes[node as usize].region;
            let alive: Vec<u32> = self.by_region[region]
                .iter()
                .copied()
                .filter(|x| self.nodes[*x as usize].alive)
                .collect();
            if alive.is_empty() {
                return;
            }
            node = alive[self.rng.gen_range(0..alive.len())];
            self.viewers[v as usize].node = node;
        }
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.viewers += 1;
        if n.viewers == 1 && !n.served && n.gap_start.is_none() && n.wait_since.is_none() {
            n.wait_since = Some(now);
        }
        if leave < self.s.duration {
            self.push(leave, Ev::ViewerLeave(v));
        }
    }

    pub(super) fn crash(&mut self, i: u32) {
        let now = self.now;
        let n = &mut self.nodes[i as usize];
        if !n.alive {
            return;
        }
        n.alive = false;
        // A dead process keeps nothing (nor the snapshot it last read).
        n.core = ClusterNode::new(name(i), self.s.fanout, self.timing.clone());
        n.crashed_at = Some(now);
        n.viewers = 0;
        n.gap_start = None;
        n.wait_since = None;
        let children: Vec<u32> = std::mem::take(&mut n.children).into_iter().collect();
        let up = n.upstream;
        for c in &children {
            if let Some((p, a)) = self.nodes[*c as usize].upstream {
                if p == i {
                    self.push(
                        now + LINK_IDLE,
                        Ev::LinkDown {
                            child: *c,
                            parent: i,
                            attempt: a,
                        },
                    );
                }
            }
        }
        if let Some((p, _)) = up {
            self.push(
                now + LINK_IDLE,
                Ev::ChildGone {
                    parent: p,
                    child: i,
                },
            );
        }
        self.nodes[i as usize].served = false;
        for c in children {
            self.recompute(c);
        }
    }

    /// Whether `i` gets the stream now.
    pub(super) fn fed(&self, i: u32) -> bool {
        let n = &self.nodes[i as usize];
        if !n.alive {
            return false;
        }
        if i == ORIGIN {
            return true;
        }
        match n.upstream {
            Some((p, _)) => !self.cut(i, p) && self.nodes[p as usize].served,
            None => false,
        }
    }

    /// Propagate a change of `i`'s feed down its subtree.
    pub(super) fn recompute(&mut self, i: u32) {
        let mut stack = vec![i];
        // Bounded: a node changes only when its feed does, and a loop of
        // pulls is never fed.
        while let Some(x) = stack.pop() {
            let fed = self.fed(x);
            let now = self.now;
            let n = &mut self.nodes[x as usize];
            if n.served == fed {
                continue;
            }
            n.served = fed;
            if fed {
                if let Some(t) = n.gap_start.take() {
                    n.gaps.push((t, now));
                }
                if let Some(t) = n.wait_since.take() {
                    self.joins_ok.push(now - t);
                }
            } else if n.viewers > 0 && n.alive && n.wait_since.is_none() {
                n.gap_start = Some(now);
            }
            stack.extend(self.nodes[x as usize].children.iter().copied());
        }
    }
}
