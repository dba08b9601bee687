//! What a GraphQL request may cost, checked before it runs.
//!
//! * Every `streamMinutesViewedAdaptiveGroups` field instance (each alias,
//!   each use of a fragment) counts: at most [`MAX_ANALYTICS_FIELDS`] per
//!   request, and each weighs [`FIELD_COST`] in the schema's complexity
//!   ([`MAX_COMPLEXITY`]), so aliases cannot multiply a query for free.
//! * At most [`MAX_CONCURRENT`] requests per account run at once; another
//!   waits up to [`MAX_WAIT`] for a place, then is refused (429).
//! * A request runs for at most [`DEADLINE`].
//! * The queries run on the store's own small analytics pool.
//!
//! [`count_fields`] is sans-IO (a query string in, a count out) and bounded:
//! it stops after [`MAX_VISITS`] selections however fragments nest.

use std::collections::HashMap;
use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use axum::http::StatusCode;
use parking_lot::Mutex;

/// The analytics field.
pub const ANALYTICS_FIELD: &str = "streamMinutesViewedAdaptiveGroups";
/// Analytics fields per request at most (aliases and fragment uses count).
pub const MAX_ANALYTICS_FIELDS: usize = 8;
/// The complexity of one analytics field (its children add to it).
pub const FIELD_COST: usize = 100;
/// The schema's complexity limit.
pub const MAX_COMPLEXITY: usize = 1000;
/// GraphQL requests running at once per account.
pub const MAX_CONCURRENT: usize = 2;
/// Longest query text.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// How long a request waits for one of its account's places.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// How long one request may run.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Selections [`count_fields`] visits at most (fragments expanded).
pub const MAX_VISITS: usize = 10_000;
/// Depth of nesting [`count_fields`] follows at most.
const MAX_DEPTH: usize = 32;

/// A request refused before it ran: the status and a message naming the
/// limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

fn refused(status: StatusCode, limit: &'static str, message: String) -> Refused {
    metrics::counter!("banyan_graphql_refused_total", "limit" => limit).increment(1);
    Refused { status, message }
}

/// How many analytics fields `query` selects, fragments expanded. A query
/// that does not parse counts 0 (the schema reports its syntax error).
pub fn count_fields(query: &str) -> Result<usize, Refused> {
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return Ok(0);
    };
    let mut walk = Walk {
        doc: &doc,
        visits: 0,
        fields: 0,
    };
    for (_, op) in doc.operations.iter() {
        walk.set(&op.node.selection_set.node, 0)?;
    }
    Ok(walk.fields)
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    visits: usize,
    fields: usize,
}

impl Walk<'_> {
    fn too_big() -> Refused {
        refused(
            StatusCode::BAD_REQUEST,
            "selections",
            format!(
                "query too large: over {MAX_VISITS} selections or {MAX_DEPTH} levels once \
                 fragments are expanded"
            ),
        )
    }

    fn set(&mut self, set: &SelectionSet, depth: usize) -> Result<(), Refused> {
        if depth > MAX_DEPTH {
            return Err(Self::too_big());
        }
        for sel in &set.items {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return Err(Self::too_big());
            }
            match &sel.node {
                Selection::Field(f) => {
                    if f.node.name.node.as_str() == ANALYTICS_FIELD {
                        self.fields += 1;
                        // Its children are plain values: no need to go in.
                        continue;
                    }
                    self.set(&f.node.selection_set.node, depth + 1)?;
                }
                Selection::InlineFragment(i) => self.set(&i.node.selection_set.node, depth + 1)?,
                Selection::FragmentSpread(s) => {
                    if let Some(frag) = self.doc.fragments.get(&s.node.fragment_name.node) {
                        self.set(&frag.node.selection_set.node, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Refuse a query longer than [`MAX_QUERY_BYTES`], or with more than
/// [`MAX_ANALYTICS_FIELDS`] analytics fields. The text is looked at before
/// it is parsed: a query that names the field more often than the cap is
/// refused without the cost of parsing it.
pub fn check_fields(query: &str) -> Result<(), Refused> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "graphql_query_bytes",
            format!(
                "limit graphql_query_bytes: the query is {} bytes, at most {MAX_QUERY_BYTES}",
                query.len()
            ),
        ));
    }
    let named = query.matches(ANALYTICS_FIELD).count();
    let n = if named > MAX_ANALYTICS_FIELDS {
        named
    } else {
        count_fields(query)?
    };
    if n > MAX_ANALYTICS_FIELDS {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "graphql_max_fields",
            format!(
                "limit graphql_max_fields: {n} {ANALYTICS_FIELD} fields (aliases count), \
                 at most {MAX_ANALYTICS_FIELDS} per request"
            ),
        ));
    }
    Ok(())
}

/// The message of a query over the complexity limit.
pub fn complexity_message() -> String {
    format!(
        "limit graphql_complexity: query complexity over {MAX_COMPLEXITY} (each \
         {ANALYTICS_FIELD} field costs {FIELD_COST})"
    )
}

/// Requests running per account.
#[derive(Default)]
pub struct Running {
    map: Mutex<HashMap<String, usize>>,
    /// Woken whenever a place is given back.
    freed: tokio::sync::Notify,
}

/// A running request; ends when dropped.
pub struct Slot<'a> {
    running: &'a Running,
    account: String,
}

impl Running {
    /// Start a request of `account`, or refuse it (429) when it already has
    /// `max` running. The map holds only accounts with running requests.
    pub fn try_start(&self, account: &str, max: usize) -> Result<Slot<'_>, Refused> {
        let mut map = self.map.lock();
        let n = map.entry(account.to_string()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(account);
            }
            return Err(refused(
                StatusCode::TOO_MANY_REQUESTS,
                "graphql_concurrent_queries",
                format!(
                    "limit graphql_concurrent_queries: at most {max} GraphQL queries per \
                     account at once; retry when one has finished"
                ),
            ));
        }
        *n += 1;
        Ok(Slot {
            running: self,
            account: account.to_string(),
        })
    }

    /// Start a request of `account`, waiting up to `wait` for a place.
    pub async fn start(
        &self,
        account: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Slot<'_>, Refused> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_start(account, max) {
                Ok(slot) => return Ok(slot),
                Err(e) if tokio::time::Instant::now() >= until => return Err(e),
                Err(_) => {
                    let _ = tokio::time::timeout_at(until, freed).await;
                }
            }
        }
    }

    /// Accounts with requests running.
    pub fn accounts(&self) -> usize {
        self.map.lock().len()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.running.map.lock();
        if let Some(n) = map.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.account);
            }
        }
        drop(map);
        self.running.freed.notify_waiters();
    }
}

/// The message of a request past its deadline.
pub fn deadline_refusal() -> Refused {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "graphql_deadline",
        format!(
            "limit graphql_deadline: the query ran over {} s and was stopped",
            DEADLINE.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(n: usize) -> String {
        let fields: String = (0..n)
            .map(|i| format!("a{i}: {ANALYTICS_FIELD}(limit: 1) {{ sum {{ minutesViewed }} }} "))
            .collect();
        format!(r#"{{ viewer {{ accounts(filter: {{accountTag: "x"}}) {{ {fields} }} }} }}"#)
    }

    #[test]
    fn aliases_and_fragments_count() {
        assert_eq!(count_fields(&aliases(3)).unwrap(), 3);
        assert!(check_fields(&aliases(MAX_ANALYTICS_FIELDS)).is_ok());
        let e = check_fields(&aliases(MAX_ANALYTICS_FIELDS + 1)).unwrap_err();
        assert!(e.message.contains("graphql_max_fields"), "{}", e.message);
        // A fragment used twice counts twice.
        let q = format!(
            "query {{ viewer {{ accounts(filter: {{accountTag: \"x\"}}) {{ ...F ...F \
             ... on Account {{ ...F }} }} }} }} \
             fragment F on Account {{ {ANALYTICS_FIELD}(limit: 1) {{ sum {{ minutesViewed }} }} }}"
        );
        assert_eq!(count_fields(&q).unwrap(), 3);
        assert_eq!(count_fields("{ not graphql").unwrap(), 0);
        let long = format!(
            "{{ viewer {{ __typename }} }} #{}",
            "x".repeat(MAX_QUERY_BYTES)
        );
        let e = check_fields(&long).unwrap_err();
        assert!(e.message.contains("graphql_query_bytes"), "{}", e.message);
    }

    #[test]
    fn fragment_bombs_are_bounded() {
        // Each level uses the next twice: 2^20 selections if expanded.
        let mut q = String::from("{ viewer { ...F0 } }\n");
        for i in 0..20 {
            q.push_str(&format!(
                "fragment F{i} on Viewer {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        q.push_str("fragment F20 on Viewer { __typename }\n");
        let e = count_fields(&q).unwrap_err();
        assert!(e.message.contains("too large"), "{}", e.message);
        // A cycle (invalid, but the walk must end).
        let cyc = "{ viewer { ...A } } fragment A on Viewer { ...A }";
        assert!(count_fields(cyc).is_err());
    }

    #[test]
    fn concurrency_per_account() {
        let r = Running::default();
        let a1 = r.try_start("a", 2).unwrap();
        let _a2 = r.try_start("a", 2).unwrap();
        let e = r.try_start("a", 2).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message.contains("graphql_concurrent_queries"));
        let _b = r
            .try_start("b", 2)
            .expect("another account is not affected");
        drop(a1);
        let _a3 = r.try_start("a", 2).unwrap();
        drop((_a2, _a3, _b));
        assert_eq!(r.accounts(), 0, "no state left behind");
        assert!(r.try_start("z", 0).is_err());
        assert_eq!(r.accounts(), 0);
    }

    /// The committed seeds of the fuzz targets that reach these limits keep
    /// the targets' invariants (`scripts/fuzz.sh` runs them under the
    /// fuzzer too).
    #[tokio::test]
    async fn fuzz_seeds_keep_their_invariants() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let files = |t: &str| {
            let mut v: Vec<_> = std::fs::read_dir(root.join(t))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v
        };
        let mut refused = 0;
        for f in files("graphql_request") {
            let body = std::fs::read(&f).unwrap();
            let s = super::super::graphql::check_request("acc", &body).await;
            assert!(
                s == StatusCode::OK || s == StatusCode::BAD_REQUEST,
                "{f:?}: {s}"
            );
            refused += usize::from(s == StatusCode::BAD_REQUEST);
        }
        assert!(refused >= 3, "the alias and fragment seeds are refused");
        for f in files("api_bodies") {
            let data = std::fs::read(&f).unwrap();
            let Some((&pick, body)) = data.split_first() else {
                continue;
            };
            let kind = match pick % 3 {
                0 => crate::api::BodyKind::LiveInput,
                1 => crate::api::BodyKind::Account,
                _ => crate::api::BodyKind::Domain,
            };
            if let Err(e) = crate::api::check_body(kind, body) {
                let s = e.status().as_u16();
                assert!(
                    s == 400 || (s == 413 && kind == crate::api::BodyKind::LiveInput),
                    "{f:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_request_waits_briefly_for_a_place() {
        let r = std::sync::Arc::new(Running::default());
        let held = r.try_start("a", 1).unwrap();
        let t0 = tokio::time::Instant::now();
        let e = r
            .start("a", 1, Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let r2 = r.clone();
        let waiter =
            tokio::spawn(async move { r2.start("a", 1, Duration::from_secs(5)).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap(), "the freed place went to the waiter");
        assert_eq!(r.accounts(), 0);
    }
}
