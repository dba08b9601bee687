//! The figures of a simulated run.

use super::{World, ORIGIN};
use crate::sim::name;
use crate::sim::report::{Report, Spread};
use crate::Tree;

impl World<'_> {
    /// Height of the tree of live links from the origin.
    pub(super) fn height(&self) -> usize {
        let mut depth: Vec<Option<usize>> = vec![None; self.nodes.len()];
        depth[ORIGIN as usize] = Some(0);
        let mut best = 0;
        for i in 0..self.nodes.len() as u32 {
            let mut path = Vec::new();
            let mut at = i;
            // Bounded by the node count (a loop stops it).
            let d = loop {
                if let Some(d) = depth[at as usize] {
                    break Some(d);
                }
                if path.len() > self.nodes.len() || !self.nodes[at as usize].served {
                    break None;
                }
                path.push(at);
                match self.nodes[at as usize].upstream {
                    Some((p, _)) => at = p,
                    None => break None,
                }
            };
            if let Some(mut d) = d {
                for x in path.into_iter().rev() {
                    d += 1;
                    depth[x as usize] = Some(d);
                    best = best.max(d);
                }
            }
        }
        best
    }

    pub(super) fn report(mut self) -> Report {
        let s = self.s;
        let end = s.duration;
        let secs = end.as_secs_f64().max(1.0);
        let n = s.nodes as f64;
        let mut edges = Vec::new();
        let mut over = 0;
        for (i, x) in self.nodes.iter().enumerate() {
            if !x.alive {
                continue;
            }
            if x.children.len() > s.fanout {
                over += 1;
            }
            if let Some((p, _)) = x.upstream {
                edges.push((name(i as u32), name(p)));
            }
        }
        let members_end = edges.len();
        // The planner checks the links form one tree.
        let is_tree = Tree::from_edges(name(ORIGIN), usize::MAX, edges).is_ok();
        let unserved_end = self
            .nodes
            .iter()
            .filter(|x| x.alive && x.viewers > 0 && !x.served)
            .count();
        let origin_kids = self.nodes[ORIGIN as usize].children.len() as u64;
        for x in &mut self.nodes {
            if let Some(t) = x.gap_start.take() {
                x.gaps.push((t, end));
            }
        }
        let mut gaps = Vec::new();
        let mut with_gap = 0;
        for v in &self.viewers {
            let node = &self.nodes[v.node as usize];
            let leave = v.leave.min(node.crashed_at.unwrap_or(end)).min(end);
            let mut saw = false;
            for (a, b) in &node.gaps {
                if *a >= v.arrive && *a < leave {
                    gaps.push((*b).min(leave) - *a);
                    saw = true;
                }
            }
            with_gap += usize::from(saw);
        }
        let members = members_end + 1;
        let mut bound = 1;
        let mut cap = 1usize;
        while cap < members {
            cap = cap.saturating_mul(s.fanout.max(2));
            bound += 1;
        }
        Report {
            scenario: s.name.clone(),
            nodes: s.nodes,
            viewers: s.viewers,
            fanout: s.fanout,
            duration: end,
            height_max: self.height_max,
            height_end: self.height(),
            height_bound: bound,
            members_end,
            over_fanout: over,
            is_tree,
            unserved_end,
            origin_mbps: origin_kids * s.bitrate_kbps / 1000,
            fanout_mbps: members_end as u64 * s.bitrate_kbps / 1000,
            heal: Spread::of(std::mem::take(&mut self.heals)),
            viewers_with_gap: with_gap,
            gap: Spread::of(gaps),
            join: Spread::of(std::mem::take(&mut self.joins_ok)),
            joins: self.joins,
            failed_asks: self.failed_asks,
            control_per_node_s: self.control as f64 / n / secs,
            db_writes_per_node_s: self.db_writes as f64 / n / secs,
            db_rows_read_per_node_s: self.store.rows_read as f64 / n / secs,
            crashed: self.nodes.iter().filter(|x| !x.alive).count(),
        }
    }
}
