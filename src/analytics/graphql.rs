//! `POST /client/v4/graphql`: minutes viewed, grouped as the caller asks.
//!
//! ```graphql
//! query { viewer { accounts(filter: {accountTag: "<accountId>"}) {
//!   streamMinutesViewedAdaptiveGroups(limit: 10,
//!       orderBy: [sum_minutesViewed_DESC, creator_ASC],
//!       filter: {date_geq: "2026-11-01", date_lt: "2026-12-01", creator: "c"}) {
//!     sum { minutesViewed } dimensions { creator uid date datetime protocol } } } } }
//! ```
//!
//! The groups are exactly the dimensions selected under `dimensions`.
//! `minutesViewed` is a float (minutes, to the millisecond of media);
//! `count` is the number of minute rows (minute, live input, creator,
//! protocol) in the group. Filters follow Cloudflare's grammar (see
//! [`super::filter`]): every dimension (`date` and `datetime`, compared
//! with the start of each minute, `creator`, `uid`, `protocol`) with the
//! suffixes `_gt`, `_lt`, `_geq`, `_leq`, `_neq`, `_in`, and `AND`/`OR`
//! lists; `uid_gt` with `orderBy: [uid_ASC]` pages through the inputs. A
//! range longer than 31 days is refused. Variables may be typed with
//! Cloudflare's scalar names (`string`, `Date`, `Time`, `uint64`, ...).
//! `limit` is 1 to [`MAX_LIMIT`], 100 when absent.
//! The API token must belong to `accountTag`; another account is an error,
//! never data. Answers are `{"data": ..., "errors": null | [...]}`: HTTP 200
//! when the query ran, 400 when it could not (syntax, validation, bad
//! arguments, a cost limit), 401 without a valid token, 429 over the
//! token's request rate or the account's concurrent queries, 503 past the
//! deadline. The cost limits are in [`super::cost`].

use std::sync::{Arc, OnceLock};

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, Error, InputObject, Object, Schema,
    SimpleObject,
};
use axum::extract::FromRequest as _;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use super::cost::{self, FIELD_COST};
use super::db::{Dim, GroupQuery, GroupRow, SortKey};
use super::filter::{
    check_range, map_variable_types, minute_range, unix_epoch_julian, GroupFilter,
};
use super::Context as Analytics;
use crate::auth::{ClientIp, Refused};

/// Largest `limit`.
pub const MAX_LIMIT: i32 = 10_000;

/// The schema type.
pub type AnalyticsSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// The caller's account, put in each request's data.
struct Caller(String);

pub struct Query;

#[Object]
impl Query {
    async fn viewer(&self) -> Viewer {
        Viewer
    }
}

pub struct Viewer;

#[derive(InputObject)]
struct AccountsFilter {
    account_tag: String,
}

#[Object]
impl Viewer {
    /// The account named by `accountTag`; it must be the caller's own.
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        filter: AccountsFilter,
    ) -> Result<Vec<Account>, Error> {
        let caller = ctx.data::<Caller>()?;
        if filter.account_tag != caller.0 {
            return Err(Error::new("not authorized for this accountTag"));
        }
        Ok(vec![Account {
            id: filter.account_tag,
        }])
    }
}

pub struct Account {
    id: String,
}

/// Sort orders: on the sum or on a dimension, ascending or descending.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
enum OrderBy {
    #[graphql(name = "sum_minutesViewed_ASC")]
    SumAsc,
    #[graphql(name = "sum_minutesViewed_DESC")]
    SumDesc,
    #[graphql(name = "creator_ASC")]
    CreatorAsc,
    #[graphql(name = "creator_DESC")]
    CreatorDesc,
    #[graphql(name = "uid_ASC")]
    UidAsc,
    #[graphql(name = "uid_DESC")]
    UidDesc,
    #[graphql(name = "date_ASC")]
    DateAsc,
    #[graphql(name = "date_DESC")]
    DateDesc,
    #[graphql(name = "datetime_ASC")]
    DatetimeAsc,
    #[graphql(name = "datetime_DESC")]
    DatetimeDesc,
    #[graphql(name = "protocol_ASC")]
    ProtocolAsc,
    #[graphql(name = "protocol_DESC")]
    ProtocolDesc,
}

impl OrderBy {
    fn key(self) -> (SortKey, bool) {
        use OrderBy::*;
        match self {
            SumAsc => (SortKey::Sum, false),
            SumDesc => (SortKey::Sum, true),
            CreatorAsc => (SortKey::Dim(Dim::Creator), false),
            CreatorDesc => (SortKey::Dim(Dim::Creator), true),
            UidAsc => (SortKey::Dim(Dim::Uid), false),
            UidDesc => (SortKey::Dim(Dim::Uid), true),
            DateAsc => (SortKey::Dim(Dim::Date), false),
            DateDesc => (SortKey::Dim(Dim::Date), true),
            DatetimeAsc => (SortKey::Dim(Dim::Datetime), false),
            DatetimeDesc => (SortKey::Dim(Dim::Datetime), true),
            ProtocolAsc => (SortKey::Dim(Dim::Protocol), false),
            ProtocolDesc => (SortKey::Dim(Dim::Protocol), true),
        }
    }
}

#[derive(SimpleObject)]
struct Group {
    /// Rows of viewing in the group: one per minute, live input, creator
    /// and protocol with media delivered.
    count: u64,
    sum: Sum,
    dimensions: Dimensions,
}

#[derive(SimpleObject)]
struct Sum {
    /// Minutes of media delivered to viewers.
    minutes_viewed: f64,
}

/// The grouped dimensions; those not selected are never filled.
#[derive(SimpleObject, Default)]
struct Dimensions {
    creator: String,
    uid: String,
    /// `YYYY-MM-DD` (UTC).
    date: String,
    /// Start of the minute, `YYYY-MM-DDTHH:MM:00Z`.
    datetime: String,
    /// `rtmp`, `rtmps`, `srt`, `hls` or `webrtc`.
    protocol: String,
}

fn day_string(day: i64) -> String {
    i32::try_from(day)
        .ok()
        .and_then(|d| d.checked_add(unix_epoch_julian()))
        .and_then(|j| Date::from_julian_day(j).ok())
        .map(|d| d.to_string())
        .unwrap_or_default()
}

fn minute_string(minute: i64) -> String {
    OffsetDateTime::from_unix_timestamp(minute.saturating_mul(60))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[Object]
impl Account {
    /// Minutes viewed, grouped by the selected dimensions.
    #[graphql(complexity = "FIELD_COST + child_complexity")]
    async fn stream_minutes_viewed_adaptive_groups(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] limit: i32,
        order_by: Option<Vec<OrderBy>>,
        filter: Option<GroupFilter>,
    ) -> Result<Vec<Group>, Error> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::new(format!("limit must be 1 to {MAX_LIMIT}")));
        }
        let look = ctx.look_ahead().field("dimensions");
        let dims: Vec<Dim> = Dim::ALL
            .into_iter()
            .filter(|d| look.field(d.name()).exists())
            .collect();
        let order: Vec<(SortKey, bool)> = order_by
            .unwrap_or_default()
            .into_iter()
            .map(OrderBy::key)
            .collect();
        for (k, _) in &order {
            if let SortKey::Dim(d) = k {
                if !dims.contains(d) {
                    return Err(Error::new(format!(
                        "orderBy {0}: select dimensions {{ {0} }} to sort on it",
                        d.name()
                    )));
                }
            }
        }
        let filter = filter.unwrap_or_default();
        let (from, until) = minute_range(&filter)?;
        check_range(from, until)?;
        let cond = filter.cond(true)?;
        let q = GroupQuery {
            account_id: self.id.clone(),
            dims,
            from,
            until,
            creator: filter.creator,
            uid: filter.uid,
            protocol: filter.protocol,
            order,
            limit: limit as u32,
            cond: Some(cond),
            count: ctx.look_ahead().field("count").exists(),
        };
        if matches!((from, until), (Some(f), Some(u)) if f >= u) {
            return Ok(Vec::new());
        }
        let node = ctx.data::<Arc<Analytics>>()?;
        let rows = q.run(node.store.analytics_pool()).await.map_err(|e| {
            tracing::error!("analytics query: {e}");
            Error::new("internal error")
        })?;
        Ok(rows.into_iter().map(group).collect())
    }
}

fn group(r: GroupRow) -> Group {
    Group {
        count: u64::try_from(r.count).unwrap_or(0),
        sum: Sum {
            minutes_viewed: (r.millis as f64 / 60.0).round() / 1000.0,
        },
        dimensions: Dimensions {
            creator: r.creator.unwrap_or_default(),
            uid: r.uid.unwrap_or_default(),
            date: r.day.map(day_string).unwrap_or_default(),
            datetime: r.minute.map(minute_string).unwrap_or_default(),
            protocol: r.protocol.unwrap_or_default(),
        },
    }
}

/// The schema (built once).
pub fn schema() -> &'static AnalyticsSchema {
    static SCHEMA: OnceLock<AnalyticsSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .limit_depth(16)
            .limit_complexity(cost::MAX_COMPLEXITY)
            .finish()
    })
}

fn answer(status: StatusCode, data: Value, errors: Value) -> Response {
    (status, Json(json!({"data": data, "errors": errors}))).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    answer(status, Value::Null, json!([{ "message": message }]))
}

/// Run one GraphQL request for the account of `account_id`.
pub async fn execute(
    node: Arc<Analytics>,
    account_id: String,
    request: async_graphql::Request,
) -> (bool, Value, Value) {
    run(request.data(Caller(account_id)).data(node)).await
}

/// Run a request whose data is attached: (ran, data, errors).
async fn run(request: async_graphql::Request) -> (bool, Value, Value) {
    let resp = schema().execute(request).await;
    let data = serde_json::to_value(&resp.data).unwrap_or(Value::Null);
    let ran = !data.is_null();
    let errors = if resp.errors.is_empty() {
        Value::Null
    } else if resp
        .errors
        .iter()
        .any(|e| e.message.contains("too complex"))
    {
        metrics::counter!("banyan_graphql_refused_total", "limit" => "graphql_complexity")
            .increment(1);
        json!([{ "message": cost::complexity_message() }])
    } else {
        serde_json::to_value(&resp.errors).unwrap_or_else(|_| json!([{"message": "error"}]))
    };
    (ran, data, errors)
}

/// The axum handler of `POST /client/v4/graphql`. The token is checked
/// (with the API's failed-attempt limiter) before the body is read.
pub async fn handler(
    node: Arc<Analytics>,
    ClientIp(ip): ClientIp,
    req: axum::extract::Request,
) -> Response {
    let info = match node
        .auth
        .check(req.headers(), ip, crate::auth::Api::Graphql)
        .await
    {
        Ok(info) => info,
        Err(Refused::Token(e)) => return error(e.status(), e.message()),
        Err(Refused::Rate(r)) => return error(r.status, &r.message),
    };
    let body = match Bytes::from_request(req, &()).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), &format!("unreadable body: {}", e.body_text())),
    };
    let mut request = match decode_request(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if let Err(r) = cost::check_fields(&request.query) {
        return error(r.status, &r.message);
    }
    cloudflare_types(&mut request);
    metrics::counter!("banyan_graphql_requests_total").increment(1);
    let slot = running().start(&info.account_id, cost::MAX_CONCURRENT, cost::MAX_WAIT);
    let _slot = match slot.await {
        Ok(slot) => slot,
        Err(r) => return error(r.status, &r.message),
    };
    let run = execute(node, info.account_id.clone(), request);
    match tokio::time::timeout(cost::DEADLINE, run).await {
        Ok((ran, data, errors)) => answer(status_of(ran, &errors), data, errors),
        Err(_) => {
            let r = cost::deadline_refusal();
            error(r.status, &r.message)
        }
    }
}

/// The GraphQL requests running per account, on this node.
fn running() -> &'static cost::Running {
    static RUNNING: OnceLock<cost::Running> = OnceLock::new();
    RUNNING.get_or_init(cost::Running::default)
}

/// The request of a body `{"query": ..., "variables": ...}`.
fn decode_request(body: &[u8]) -> Result<async_graphql::Request, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("expected a JSON body {{\"query\": ..., \"variables\": ...}}: {e}"))
}

/// Map variable types written with Cloudflare's scalar names (`string`,
/// `Date`, ...) to the schema's, once the request passed the field limits
/// (the executor reuses this parse). A query that does not parse is left
/// to the executor, which answers the syntax error.
fn cloudflare_types(request: &mut async_graphql::Request) {
    if !request.query.contains('$') {
        return;
    }
    if let Ok(doc) = request.parsed_query() {
        let mut doc = doc.clone();
        map_variable_types(&mut doc);
        request.set_parsed_query(doc);
    }
}

/// 200 when the query ran (even with errors in some fields), 400 when it
/// could not run at all.
fn status_of(ran: bool, errors: &Value) -> StatusCode {
    if ran || errors.is_null() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// Decode and run a request body as the endpoint does, for the caller
/// `account_id` but with no node attached: the JSON, the GraphQL syntax,
/// validation, the depth and complexity limits and every argument are
/// handled as in service, and a query that gets as far as the store ends in
/// a field error instead. Returns the status the endpoint would answer: the
/// entry point of the `graphql_request` fuzz target.
pub async fn check_request(account_id: &str, body: &[u8]) -> StatusCode {
    match decode_request(body) {
        Ok(mut request) => {
            if let Err(r) = cost::check_fields(&request.query) {
                return r.status;
            }
            cloudflare_types(&mut request);
            let (ran, _, errors) = run(request.data(Caller(account_id.to_string()))).await;
            status_of(ran, &errors)
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(f: GroupFilter) -> (Option<i64>, Option<i64>) {
        minute_range(&f).unwrap()
    }

    use crate::analytics::filter::parse_day;

    #[test]
    fn dates_and_times_become_minute_ranges() {
        let d = parse_day("d", "2026-11-01").unwrap();
        assert_eq!(day_string(d), "2026-11-01");
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(minute_string(1), "1970-01-01T00:01:00Z");
        assert_eq!(
            range(GroupFilter {
                date_geq: Some("2026-11-01".into()),
                date_lt: Some("2026-12-01".into()),
                ..Default::default()
            }),
            (Some(d * 1440), Some((d + 30) * 1440))
        );
        assert_eq!(
            range(GroupFilter {
                date_gt: Some("2026-11-01".into()),
                date_leq: Some("2026-11-02".into()),
                ..Default::default()
            }),
            (Some((d + 1) * 1440), Some((d + 2) * 1440))
        );
        let t = d * 86_400;
        assert_eq!(
            range(GroupFilter {
                datetime_geq: Some("2026-11-01T00:00:30Z".into()),
                datetime_leq: Some("2026-11-01T00:02:00Z".into()),
                ..Default::default()
            }),
            (Some(t / 60 + 1), Some(t / 60 + 3))
        );
        assert_eq!(
            range(GroupFilter {
                datetime_gt: Some("2026-11-01T00:00:00Z".into()),
                datetime_lt: Some("2026-11-01T00:02:00Z".into()),
                ..Default::default()
            }),
            (Some(t / 60 + 1), Some(t / 60 + 2))
        );
        assert!(minute_range(&GroupFilter {
            date: Some("yesterday".into()),
            ..Default::default()
        })
        .is_err());
    }

    /// Aliases count: more analytics fields than the cap are refused
    /// before they run, and the field's cost keeps aliased queries well
    /// under the hundreds that once fit.
    #[tokio::test]
    async fn aliases_are_capped_and_costly() {
        let q = |n: usize| {
            let fields: String = (0..n)
                .map(|i| {
                    format!(
                        "a{i}: streamMinutesViewedAdaptiveGroups(limit: 1) \
                         {{ sum {{ minutesViewed }} dimensions {{ uid }} }} "
                    )
                })
                .collect();
            let query = format!(
                r#"{{ viewer {{ accounts(filter: {{accountTag: "acc"}}) {{ {fields} }} }} }}"#
            );
            json!({ "query": query }).to_string()
        };
        // Within the cap, the query gets past every limit to the store
        // (absent here, so a field error on a query that ran: 200).
        assert_eq!(check_request("acc", q(8).as_bytes()).await, StatusCode::OK);
        assert_eq!(
            check_request("acc", q(9).as_bytes()).await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            check_request("acc", q(330).as_bytes()).await,
            StatusCode::BAD_REQUEST
        );
        // The complexity alone refuses what the cap would let through were
        // it raised: 10 fields cost over the limit.
        let request: async_graphql::Request = serde_json::from_str(&q(10)).expect("request JSON");
        let (ran, _, errors) = run(request.data(Caller("acc".into()))).await;
        assert!(!ran);
        assert!(
            errors.to_string().contains("graphql_complexity"),
            "{errors}"
        );
    }

    #[test]
    fn schema_names_match_the_interface() {
        let sdl = schema().sdl();
        for needle in [
            "streamMinutesViewedAdaptiveGroups(limit: Int! = 100, orderBy: [OrderBy!], filter: GroupFilter)",
            "creator_in: [String!]",
            "OR: [GroupFilter!]",
            "uid_gt: String",
            "count: Int!",
            "sum_minutesViewed_DESC",
            "date_geq: String",
            "datetime_lt: String",
            "accountTag: String!",
            "minutesViewed: Float!",
        ] {
            assert!(sdl.contains(needle), "{needle} not in\n{sdl}");
        }
    }
}
