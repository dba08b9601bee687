//! The events a member takes, the actions it returns, and their parts.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Snapshot;
use crate::NodeId;

/// The durations of the protocol.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Period of the database round (heartbeat, leases, snapshot).
    pub heartbeat: Duration,
    /// A member whose heartbeat is older than this is dead.
    pub dead_after: Duration,
    /// An origin lease lasts this long unless renewed.
    pub lease: Duration,
    /// Period of the scan of local streams.
    pub demand_poll: Duration,
    /// A pull nobody here uses for this long is dropped.
    pub leave_after: Duration,
    /// After an outage, how long this node's writes must succeed before the
    /// database's staleness is believed.
    pub settle: Duration,
    /// How long an origin lease missing from the database is still believed
    /// while its node is a member.
    pub origin_grace: Duration,
    /// How long an accepted child counts before its pull shows as served.
    pub admit_hold: Duration,
    /// How long a lost parent is avoided.
    pub avoid: Duration,
    /// Wait before asking again after a failed attempt.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        let ms = Duration::from_millis;
        Timing {
            heartbeat: ms(500),
            dead_after: ms(1500),
            lease: ms(1500),
            demand_poll: ms(150),
            leave_after: ms(5000),
            settle: ms(2500),
            origin_grace: ms(4000),
            admit_hold: ms(2000),
            avoid: ms(2000),
            retry: ms(100),
        }
    }
}

/// Most redirects one join follows.
pub const MAX_REDIRECTS: usize = 16;

/// A stream in the local hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    Idle,
    Live,
    /// The publisher left and may come back.
    Reconnecting,
}

/// One local stream as the driver sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub uid: String,
    pub state: LocalState,
    /// Viewers of any protocol watch it here.
    pub viewers: bool,
    /// Anything subscribes to it in the hub (a waiting player, a muxer).
    pub subscribers: bool,
    /// Nodes this one serves it to.
    pub downstream: usize,
}

/// What a node answered an [`Action::Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It serves the stream to this node now.
    Accepted,
    Redirect {
        node: NodeId,
        link: Option<SocketAddr>,
    },
    /// The node does not have the stream (it may be joining it itself).
    NotHere,
    /// A broadcaster publishes the stream on this node.
    LocalPublisher,
    Failed(String),
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// The local streams now (every stream the node knows of).
    Local(Vec<Local>),
    /// A time asked for with [`Action::TickAt`] came.
    Tick,
    /// Time for a database round.
    SyncDue,
    /// The database round asked for succeeded. `taken`: per origin lease
    /// asked for, whether this node holds it; `linked`: peers this node
    /// holds an open link to.
    Synced {
        snapshot: Arc<Snapshot>,
        taken: Vec<(String, bool)>,
        linked: BTreeSet<NodeId>,
    },
    /// The database round failed (or took too long).
    SyncFailed,
    /// The answer to [`Action::Ask`].
    Answer {
        uid: String,
        attempt: u64,
        answer: Answer,
    },
    /// A pull ended by itself: `lost` with the reason when the link failed,
    /// `None` when the stream ended upstream.
    PullEnded {
        uid: String,
        attempt: u64,
        lost: Option<String>,
    },
    /// After [`Action::Release`]: the pull is dropped and the stream is no
    /// longer live here.
    Released { uid: String },
}

/// One origin lease operation of a database round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginOp {
    /// Take or renew the lease (`live`: the broadcaster is connected).
    Take {
        live: bool,
    },
    Release,
}

/// The writes of one database round; the driver then reads a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub origins: Vec<(String, OriginOp)>,
    /// `(uid, parent)` edges of the streams this node pulls.
    pub edges: Vec<(String, NodeId)>,
    /// Delete stale edges.
    pub sweep: bool,
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Heartbeat, write the plan, read a snapshot, answer with
    /// [`Event::Synced`] or [`Event::SyncFailed`].
    Sync(SyncPlan),
    /// Run a database round soon (a broadcaster needs the origin lease).
    WakeSync,
    /// Ask `node` for `uid`; pull on acceptance; answer [`Event::Answer`].
    Ask {
        uid: String,
        attempt: u64,
        node: NodeId,
        link: Option<SocketAddr>,
    },
    /// Drop the pull of `uid` (a new one follows).
    DropPull {
        uid: String,
    },
    /// Drop the pull of `uid` if any; answer [`Event::Released`] once the
    /// stream is not live here.
    Release {
        uid: String,
    },
    StoreEdge {
        uid: String,
        parent: NodeId,
    },
    RemoveEdge {
        uid: String,
    },
    /// Feed [`Event::Tick`] at this time.
    TickAt(Duration),
    Note(Note),
}

/// Things worth a log line or a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Joined {
        uid: String,
        parent: NodeId,
        origin: NodeId,
    },
    Healed {
        uid: String,
        parent: NodeId,
        origin: NodeId,
        took: Duration,
    },
    JoinFailed {
        uid: String,
        why: String,
    },
    LinkLost {
        uid: String,
        parent: NodeId,
        why: String,
    },
    EndedUpstream {
        uid: String,
    },
    OriginMoved {
        uid: String,
        origin: NodeId,
    },
    Leaving {
        uid: String,
    },
    LocalPublisher {
        uid: String,
    },
    OriginTaken {
        uid: String,
    },
    LeaseReleased {
        uid: String,
    },
}
