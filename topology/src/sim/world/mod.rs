//! The simulated world: nodes running the core, the links between them,
//! the store, the viewers, the faults, and an event queue in virtual time.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod links;
mod measure;

use super::report::Report;
use super::store::Store;
use super::{index, name, Scenario, UID};
use crate::member::{
    Action, Answer, ClusterNode, Event, Local, LocalState, Note, SyncPlan, Timing,
};
use crate::NodeId;

const LINK_IDLE: Duration = Duration::from_millis(400);
/// A request to a dead or unreachable node fails after this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// A round against a database that refuses connections fails after this.
const DB_REFUSED: Duration = Duration::from_secs(1);
const TICK_LIMIT: Duration = Duration::from_secs(4);
const ORIGIN: u32 = 0;

#[derive(Debug, Clone)]
enum Ev {
    Sync(u32, bool),
    SyncDone(u32, bool),
    Demand(u32),
    Tick(u32),
    AskArrive {
        from: u32,
        to: u32,
        attempt: u64,
    },
    Answer {
        to: u32,
        from: u32,
        attempt: u64,
        answer: Answer,
    },
    LinkDown {
        child: u32,
        parent: u32,
        attempt: u64,
    },
    ChildGone {
        parent: u32,
        child: u32,
    },
    Released(u32),
    ViewerArrive(u32),
    ViewerLeave(u32),
    Crash(u32),
    PartitionStart,
    Sample,
}

struct Entry {
    at: Duration,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Entry) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Entry) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Entry) -> Ordering {
        // Earliest first out of the max-heap.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct SimNode {
    core: ClusterNode,
    region: usize,
    alive: bool,
    crashed_at: Option<Duration>,
    viewers: u32,
    /// The pull this node holds: parent and attempt.
    upstream: Option<(u32, u64)>,
    /// Nodes pulling from this one.
    children: BTreeSet<u32>,
    served: bool,
    gap_start: Option<Duration>,
    gaps: Vec<(Duration, Duration)>,
    wait_since: Option<Duration>,
    syncing: bool,
    plan: Option<SyncPlan>,
}

struct Viewer {
    node: u32,
    arrive: Duration,
    leave: Duration,
}

pub(crate) struct World<'a> {
    s: &'a Scenario,
    timing: Timing,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Entry>,
    rng: StdRng,
    nodes: Vec<SimNode>,
    by_region: Vec<Vec<u32>>,
    region_names: Vec<String>,
    region_rtts: BTreeMap<(String, String), Duration>,
    viewers: Vec<Viewer>,
    store: Store,
    // Figures.
    heals: Vec<Duration>,
    joins_ok: Vec<Duration>,
    joins: u64,
    failed_asks: u64,
    control: u64,
    db_writes: u64,
    height_max: usize,
}

impl<'a> World<'a> {
    pub fn new(s: &'a Scenario) -> World<'a> {
        let timing = Timing::default();
        let mut rng = StdRng::seed_from_u64(s.seed);
        let weights: u32 = s.regions.iter().map(|r| r.1).sum::<u32>().max(1);
        let pick_region = |rng: &mut StdRng| {
            let mut x = rng.gen_range(0..weights);
            for (i, r) in s.regions.iter().enumerate() {
                if x < r.1 {
                    return i;
                }
                x -= r.1;
            }
            0
        };
        let mut nodes = Vec::with_capacity(s.nodes);
        let mut by_region = vec![Vec::new(); s.regions.len()];
        for i in 0..s.nodes as u32 {
            let region = if i == ORIGIN {
                0
            } else {
                pick_region(&mut rng)
            };
            by_region[region].push(i);
            nodes.push(SimNode {
                core: ClusterNode::new(name(i), s.fanout, timing.clone()),
                region,
                alive: true,
                crashed_at: None,
                viewers: 0,
                upstream: None,
                children: BTreeSet::new(),
                served: i == ORIGIN,
                gap_start: None,
                gaps: Vec::new(),
                wait_since: None,
                syncing: false,
                plan: None,
            });
        }
        let region_names: Vec<String> = s.regions.iter().map(|r| r.0.clone()).collect();
        let mut region_rtts = BTreeMap::new();
        for (a, ra) in region_names.iter().enumerate() {
            for (b, rb) in region_names.iter().enumerate() {
                if a < b {
                    let key = if ra <= rb {
                        (ra.clone(), rb.clone())
                    } else {
                        (rb.clone(), ra.clone())
                    };
                    region_rtts.insert(key, s.region_rtt[a][b]);
                }
            }
        }
        let mut w = World {
            s,
            timing,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes,
            by_region,
            region_names,
            region_rtts,
            viewers: Vec::new(),
            store: Store::default(),
            heals: Vec::new(),
            joins_ok: Vec::new(),
            joins: 0,
            failed_asks: 0,
            control: 0,
            db_writes: 0,
            height_max: 0,
        };
        w.schedule_start(&pick_region);
        w
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn schedule_start(&mut self, pick_region: &dyn Fn(&mut StdRng) -> usize) {
        let (hb, poll) = (self.timing.heartbeat, self.timing.demand_poll);
        for i in 0..self.nodes.len() as u32 {
            let a = self.rng.gen_range(0..hb.as_micros() as u64);
            let b = self.rng.gen_range(0..poll.as_micros() as u64);
            self.push(Duration::from_micros(a), Ev::Sync(i, true));
            self.push(Duration::from_micros(b), Ev::Demand(i));
        }
        // Viewers: a lobby before the premiere, the spike after it, a long
        // tail over the whole run; heavy-tailed sessions (Pareto).
        let s = self.s;
        let dur = s.duration.as_secs_f64();
        let start = s.premiere_at.as_secs_f64();
        for v in 0..s.viewers as u32 {
            let u: f64 = self.rng.gen();
            let arrive = if u < 0.1 {
                self.rng.gen::<f64>() * start
            } else if u < 0.7 {
                start - 4.0 * (1.0 - self.rng.gen::<f64>()).ln()
            } else {
                self.rng.gen::<f64>() * dur
            };
            let session = 30.0 / (1.0 - self.rng.gen::<f64>()).powf(1.0 / 1.1);
            let region = pick_region(&mut self.rng);
            let list = &self.by_region[region];
            let node = if list.is_empty() {
                ORIGIN
            } else {
                list[self.rng.gen_range(0..list.len())]
            };
            let arrive = Duration::from_secs_f64(arrive.min(dur));
            self.viewers.push(Viewer {
                node,
                arrive,
                leave: arrive + Duration::from_secs_f64(session.min(1e6)),
            });
            self.push(arrive, Ev::ViewerArrive(v));
        }
        let f = &s.faults;
        if let Some(w) = f.crash_window {
            let candidates = self.nodes.len() as u32 - 1;
            let mut chosen = BTreeSet::new();
            while chosen.len() < f.crashes.min(candidates as usize) {
                chosen.insert(self.rng.gen_range(1..=candidates));
            }
            for n in chosen {
                let span = (w.to - w.from).as_micros() as u64;
                let at = w.from + Duration::from_micros(self.rng.gen_range(0..span.max(1)));
                self.push(at, Ev::Crash(n));
            }
        }
        if let Some((_, w)) = f.partition {
            self.push(w.from, Ev::PartitionStart);
        }
        let mut t = Duration::ZERO;
        while t <= s.duration {
            self.push(t, Ev::Sample);
            t += Duration::from_secs(1);
        }
    }

    fn rtt(&self, a: u32, b: u32) -> Duration {
        let (ra, rb) = (self.nodes[a as usize].region, self.nodes[b as usize].region);
        if ra == rb {
            // 2..10 ms, fixed per pair.
            let h = (a.min(b) as u64).wrapping_mul(2654435761) ^ (a.max(b) as u64);
            Duration::from_millis(2 + h % 9)
        } else {
            self.s.region_rtt[ra][rb]
        }
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        match self.s.faults.partition {
            Some((r, w)) if w.contains(self.now) => {
                (self.nodes[a as usize].region == r) != (self.nodes[b as usize].region == r)
            }
            _ => false,
        }
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        self.nodes[b as usize].alive && !self.cut(a, b)
    }

    /// The database lives in the first region.
    fn db_up(&self, n: u32) -> bool {
        let f = &self.s.faults;
        let outage = f.db_outage.is_some_and(|w| w.contains(self.now));
        let cut = matches!(f.partition, Some((r, w)) if w.contains(self.now)
            && self.nodes[n as usize].region == r && r != 0);
        !outage && !cut
    }

    fn statement(&self) -> Duration {
        match self.s.faults.slow_db {
            Some((w, k)) if w.contains(self.now) => self.s.db_latency * k,
            _ => self.s.db_latency,
        }
    }

    pub fn run(mut self) -> Report {
        while let Some(e) = self.queue.pop() {
            if e.at > self.s.duration {
                break;
            }
            self.now = e.at;
            self.step(e.ev);
        }
        self.now = self.s.duration;
        self.report()
    }

    fn feed(&mut self, i: u32, ev: Event) {
        let actions = self.nodes[i as usize].core.handle(self.now, ev);
        self.act(i, actions);
    }

    fn scan(&self, i: u32) -> Vec<Local> {
        let n = &self.nodes[i as usize];
        let state = if i == ORIGIN || n.upstream.is_some() {
            LocalState::Live
        } else {
            LocalState::Idle
        };
        vec![Local {
            uid: UID.into(),
            state,
            viewers: n.viewers > 0,
            subscribers: n.viewers > 0,
            downstream: n.children.len(),
        }]
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Sync(i, periodic) => self.sync(i, periodic),
            Ev::SyncDone(i, ok) => self.sync_done(i, ok),
            Ev::Demand(i) => {
                if self.nodes[i as usize].alive {
                    let local = self.scan(i);
                    self.feed(i, Event::Local(local));
                    self.push(self.now + self.timing.demand_poll, Ev::Demand(i));
                }
            }
            Ev::Tick(i) => {
                if self.nodes[i as usize].alive {
                    self.feed(i, Event::Tick);
                }
            }
            Ev::AskArrive { from, to, attempt } => self.ask_arrive(from, to, attempt),
            Ev::Answer {
                to,
                from,
                attempt,
                answer,
            } => self.answer(to, from, attempt, answer),
            Ev::LinkDown {
                child,
                parent,
                attempt,
            } => {
                let n = &mut self.nodes[child as usize];
                if n.alive && n.upstream == Some((parent, attempt)) {
                    n.upstream = None;
                    self.recompute(child);
                    let lost = Some("link idle".to_string());
                    let uid = UID.to_string();
                    self.feed(child, Event::PullEnded { uid, attempt, lost });
                }
            }
            Ev::ChildGone { parent, child } => {
                self.nodes[parent as usize].children.remove(&child);
            }
            Ev::Released(i) => {
                if self.nodes[i as usize].alive {
                    self.feed(i, Event::Released { uid: UID.into() });
                }
            }
            Ev::ViewerArrive(v) => self.viewer_arrive(v),
            Ev::ViewerLeave(v) => {
                let node = self.viewers[v as usize].node;
                let n = &mut self.nodes[node as usize];
                if n.alive {
                    n.viewers -= 1;
                    if n.viewers == 0 {
                        if let Some(t) = n.gap_start.take() {
                            n.gaps.push((t, self.now));
                        }
                        n.wait_since = None;
                    }
                }
            }
            Ev::Crash(i) => self.crash(i),
            Ev::PartitionStart => {
                let cut: Vec<(u32, u32, u64)> = (0..self.nodes.len() as u32)
                    .filter_map(|i| {
                        let (p, a) = self.nodes[i as usize].upstream?;
                        self.cut(i, p).then_some((i, p, a))
                    })
                    .collect();
                for (i, p, a) in cut {
                    let at = self.now + LINK_IDLE;
                    self.push(
                        at,
                        Ev::LinkDown {
                            child: i,
                            parent: p,
                            attempt: a,
                        },
                    );
                    self.push(
                        at,
                        Ev::ChildGone {
                            parent: p,
                            child: i,
                        },
                    );
                    self.recompute(i);
                }
            }
            Ev::Sample => {
                let h = self.height();
                self.height_max = self.height_max.max(h);
            }
        }
    }

    fn sync(&mut self, i: u32, periodic: bool) {
        if !self.nodes[i as usize].alive {
            return;
        }
        if periodic {
            self.push(self.now + self.timing.heartbeat, Ev::Sync(i, true));
        }
        if self.nodes[i as usize].syncing {
            return;
        }
        let local = self.scan(i);
        self.feed(i, Event::Local(local));
        let plan = self.nodes[i as usize]
            .core
            .handle(self.now, Event::SyncDue)
            .into_iter()
            .find_map(|a| match a {
                Action::Sync(p) => Some(p),
                _ => None,
            })
            .unwrap_or_default();
        // Heartbeat, the writes, four reads: one statement each.
        let statements = 5 + plan.origins.len() + plan.edges.len();
        let took = self.statement() * statements as u32;
        let (at, ok) = if !self.db_up(i) {
            (self.now + DB_REFUSED, false)
        } else if took > TICK_LIMIT {
            (self.now + TICK_LIMIT, false)
        } else {
            (self.now + took, true)
        };
        let n = &mut self.nodes[i as usize];
        n.syncing = true;
        n.plan = Some(plan);
        self.push(at, Ev::SyncDone(i, ok));
    }

    fn sync_done(&mut self, i: u32, ok: bool) {
        let n = &mut self.nodes[i as usize];
        n.syncing = false;
        let plan = n.plan.take().unwrap_or_default();
        if !n.alive {
            return;
        }
        if !ok || !self.db_up(i) {
            self.feed(i, Event::SyncFailed);
            return;
        }
        let t = &self.timing;
        let taken = self
            .store
            .write(self.now, i, &plan, t.lease, t.dead_after * 2);
        self.db_writes += 1 + plan.origins.len() as u64 + plan.edges.len() as u64;
        let nodes = &self.nodes;
        let snapshot = self.store.read(
            self.now,
            self.s.snapshot_every,
            t.dead_after,
            &self.region_names,
            &|x| nodes[x as usize].region,
            &self.region_rtts,
        );
        let n = &self.nodes[i as usize];
        let linked: BTreeSet<NodeId> = n
            .upstream
            .map(|(p, _)| p)
            .into_iter()
            .chain(n.children.iter().copied())
            .map(name)
            .collect();
        self.feed(
            i,
            Event::Synced {
                snapshot,
                taken,
                linked,
            },
        );
    }

    fn act(&mut self, i: u32, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Sync(_) => {}
                Action::WakeSync => {
                    if !self.nodes[i as usize].syncing {
                        self.push(self.now, Ev::Sync(i, false));
                    }
                }
                Action::Ask { attempt, node, .. } => {
                    self.control += 1;
                    let Some(to) = index(&node).filter(|x| (*x as usize) < self.nodes.len()) else {
                        let answer = Answer::Failed("unknown node".into());
                        self.push(
                            self.now,
                            Ev::Answer {
                                to: i,
                                from: i,
                                attempt,
                                answer,
                            },
                        );
                        continue;
                    };
                    if self.reachable(i, to) {
                        let at = self.now + self.rtt(i, to) / 2;
                        self.push(
                            at,
                            Ev::AskArrive {
                                from: i,
                                to,
                                attempt,
                            },
                        );
                    } else {
                        let answer = Answer::Failed("unreachable".into());
                        let at = self.now + CONNECT_TIMEOUT;
                        self.push(
                            at,
                            Ev::Answer {
                                to: i,
                                from: to,
                                attempt,
                                answer,
                            },
                        );
                    }
                }
                Action::DropPull { .. } => self.unpull(i),
                Action::Release { .. } => {
                    self.unpull(i);
                    self.push(self.now, Ev::Released(i));
                }
                Action::StoreEdge { uid, parent } => {
                    if self.db_up(i) {
                        self.store.set_edge(self.now, &uid, i, &parent);
                        self.db_writes += 1;
                    }
                }
                Action::RemoveEdge { uid } => {
                    if self.db_up(i) {
                        self.store.remove_edge(&uid, i);
                        self.db_writes += 1;
                    }
                }
                Action::TickAt(t) => self.push(t.max(self.now), Ev::Tick(i)),
                Action::Note(note) => match note {
                    Note::Healed { took, .. } => {
                        self.heals.push(took);
                        self.joins += 1;
                    }
                    Note::Joined { .. } => self.joins += 1,
                    Note::JoinFailed { .. } => self.failed_asks += 1,
                    _ => {}
                },
            }
        }
    }
}
