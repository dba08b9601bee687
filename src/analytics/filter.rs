//! Cloudflare's GraphQL filter grammar on the analytics dimensions, turned
//! into SQL with bound parameters only.
//!
//! Every dimension takes `dim`, `dim_gt`, `dim_lt`, `dim_geq`, `dim_leq`,
//! `dim_neq` and `dim_in`, and `AND: [filter]` / `OR: [filter]` combine
//! filters (all the fields of one filter object are ANDed). Times are kept
//! as half-open minute bounds, so a condition on `date` or `datetime` runs
//! on the daily rollup when all its bounds fall on a day boundary. Variable
//! types may use Cloudflare's scalar names (`string`, `Date`, `Time`,
//! `uint64`, ...), mapped to the schema's own before validation.

use async_graphql::parser::types::{BaseType, ExecutableDocument, Type};
use async_graphql::{Error, InputObject, Name};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use super::db::{Param, DAY_MINUTES};

/// Most leaf conditions (and `_in` values) in one filter.
pub const MAX_CONDITIONS: usize = 200;

/// Longest query range, in days (both bounds given).
pub const MAX_RANGE_DAYS: i64 = 31;

/// A text dimension column (a fixed name, never from input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCol {
    Creator,
    Uid,
    Protocol,
}

impl TextCol {
    fn column(self) -> &'static str {
        match self {
            TextCol::Creator => "creator",
            TextCol::Uid => "uid",
            TextCol::Protocol => "protocol",
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Lt,
    Geq,
    Leq,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Neq => "<>",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Geq => ">=",
            Op::Leq => "<=",
        }
    }
}

/// A boolean condition on the rows of one account.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// All hold (empty: true).
    All(Vec<Cond>),
    /// One holds (empty: false).
    Any(Vec<Cond>),
    Text(TextCol, Op, String),
    TextIn(TextCol, Vec<String>),
    /// Minute `>= m`.
    TimeGe(i64),
    /// Minute `< m`.
    TimeLt(i64),
}

impl Cond {
    /// Whether every time bound is a day boundary (the rollup answers it).
    pub fn day_aligned(&self) -> bool {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().all(Cond::day_aligned),
            Cond::TimeGe(m) | Cond::TimeLt(m) => m.rem_euclid(DAY_MINUTES) == 0,
            Cond::Text(..) | Cond::TextIn(..) => true,
        }
    }

    /// Whether no leaf is on time (the monthly rollup answers it).
    pub fn timeless(&self) -> bool {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().all(Cond::timeless),
            Cond::TimeGe(_) | Cond::TimeLt(_) => false,
            Cond::Text(..) | Cond::TextIn(..) => true,
        }
    }

    /// Leaf conditions and `_in` values, to bound the SQL.
    pub fn size(&self) -> usize {
        match self {
            Cond::All(v) | Cond::Any(v) => 1 + v.iter().map(Cond::size).sum::<usize>(),
            Cond::TextIn(_, v) => 1 + v.len(),
            _ => 1,
        }
    }

    /// The SQL of the condition on a table whose time bucket is `minute`
    /// (`daily` false) or `day`; values are pushed to `params`.
    pub fn sql(&self, daily: bool, params: &mut Vec<Param>) -> String {
        let mark = |p: Param, params: &mut Vec<Param>| {
            params.push(p);
            format!("${}", params.len())
        };
        match self {
            Cond::All(v) if v.is_empty() => "1 = 1".into(),
            Cond::Any(v) if v.is_empty() => "1 = 0".into(),
            Cond::All(v) | Cond::Any(v) => {
                let join = if matches!(self, Cond::All(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = v.iter().map(|c| c.sql(daily, params)).collect();
                format!("({})", parts.join(join))
            }
            Cond::Text(col, op, value) => {
                let m = mark(Param::Text(value.clone()), params);
                format!("{} {} {m}", col.column(), op.sql())
            }
            Cond::TextIn(_, values) if values.is_empty() => "1 = 0".into(),
            Cond::TextIn(col, values) => {
                let marks: Vec<String> = values
                    .iter()
                    .map(|v| mark(Param::Text(v.clone()), params))
                    .collect();
                format!("{} IN ({})", col.column(), marks.join(", "))
            }
            Cond::TimeGe(m) | Cond::TimeLt(m) => {
                let op = if matches!(self, Cond::TimeGe(_)) {
                    ">="
                } else {
                    "<"
                };
                let (col, v) = if daily {
                    ("day", m.div_euclid(DAY_MINUTES))
                } else {
                    ("minute", *m)
                };
                format!("{col} {op} {}", mark(Param::Int(v), params))
            }
        }
    }
}

/// The minute `[from, until)` of one day (days since 1970-01-01).
pub fn day_cond(op: Op, day: i64) -> Cond {
    let (lo, hi) = (day * DAY_MINUTES, (day + 1) * DAY_MINUTES);
    range_cond(op, lo, hi)
}

/// A condition on the minute bucket `m` compared with the time `t` (Unix
/// seconds): a bucket stands for the start of its minute.
pub fn time_cond(op: Op, t: i64) -> Cond {
    let m = t.div_euclid(60);
    if t.rem_euclid(60) == 0 {
        range_cond(op, m, m + 1)
    } else {
        // No bucket equals t; the ones after it start at m + 1.
        match op {
            Op::Eq => Cond::Any(Vec::new()),
            Op::Neq => Cond::All(Vec::new()),
            Op::Gt | Op::Geq => Cond::TimeGe(m + 1),
            Op::Lt | Op::Leq => Cond::TimeLt(m + 1),
        }
    }
}

/// A comparison with a value whose buckets are `[lo, hi)`.
fn range_cond(op: Op, lo: i64, hi: i64) -> Cond {
    match op {
        Op::Eq => Cond::All(vec![Cond::TimeGe(lo), Cond::TimeLt(hi)]),
        Op::Neq => Cond::Any(vec![Cond::TimeLt(lo), Cond::TimeGe(hi)]),
        Op::Gt => Cond::TimeGe(hi),
        Op::Geq => Cond::TimeGe(lo),
        Op::Lt => Cond::TimeLt(lo),
        Op::Leq => Cond::TimeLt(hi),
    }
}

/// A filter: every field optional, all of them ANDed. The plain date and
/// `datetime` bounds and the plain text equalities of the outermost filter
/// give the query range; everything else becomes a [`Cond`].
#[derive(InputObject, Default)]
#[graphql(rename_fields = "snake_case")]
pub(crate) struct GroupFilter {
    pub date: Option<String>,
    pub date_geq: Option<String>,
    pub date_gt: Option<String>,
    pub date_lt: Option<String>,
    pub date_leq: Option<String>,
    pub datetime: Option<String>,
    pub datetime_geq: Option<String>,
    pub datetime_gt: Option<String>,
    pub datetime_lt: Option<String>,
    pub datetime_leq: Option<String>,
    pub creator: Option<String>,
    pub uid: Option<String>,
    pub protocol: Option<String>,
    pub date_neq: Option<String>,
    pub date_in: Option<Vec<String>>,
    pub datetime_neq: Option<String>,
    pub datetime_in: Option<Vec<String>>,
    pub creator_gt: Option<String>,
    pub creator_lt: Option<String>,
    pub creator_geq: Option<String>,
    pub creator_leq: Option<String>,
    pub creator_neq: Option<String>,
    pub creator_in: Option<Vec<String>>,
    pub uid_gt: Option<String>,
    pub uid_lt: Option<String>,
    pub uid_geq: Option<String>,
    pub uid_leq: Option<String>,
    pub uid_neq: Option<String>,
    pub uid_in: Option<Vec<String>>,
    pub protocol_gt: Option<String>,
    pub protocol_lt: Option<String>,
    pub protocol_geq: Option<String>,
    pub protocol_leq: Option<String>,
    pub protocol_neq: Option<String>,
    pub protocol_in: Option<Vec<String>>,
    #[graphql(name = "AND")]
    pub and: Option<Vec<GroupFilter>>,
    #[graphql(name = "OR")]
    pub or: Option<Vec<GroupFilter>>,
}

impl GroupFilter {
    /// The conditions of this filter. For the outermost filter (`outer`),
    /// those [`minute_range`] and the plain equalities already give are
    /// left out.
    pub(crate) fn cond(&self, outer: bool) -> Result<Cond, Error> {
        let mut all = Vec::new();
        let texts = [
            (
                TextCol::Creator,
                "creator",
                &self.creator,
                [
                    &self.creator_gt,
                    &self.creator_lt,
                    &self.creator_geq,
                    &self.creator_leq,
                    &self.creator_neq,
                ],
                &self.creator_in,
            ),
            (
                TextCol::Uid,
                "uid",
                &self.uid,
                [
                    &self.uid_gt,
                    &self.uid_lt,
                    &self.uid_geq,
                    &self.uid_leq,
                    &self.uid_neq,
                ],
                &self.uid_in,
            ),
            (
                TextCol::Protocol,
                "protocol",
                &self.protocol,
                [
                    &self.protocol_gt,
                    &self.protocol_lt,
                    &self.protocol_geq,
                    &self.protocol_leq,
                    &self.protocol_neq,
                ],
                &self.protocol_in,
            ),
        ];
        let ops = [Op::Gt, Op::Lt, Op::Geq, Op::Leq, Op::Neq];
        for (col, _, eq, others, inl) in texts {
            if let (false, Some(v)) = (outer, eq) {
                all.push(Cond::Text(col, Op::Eq, v.clone()));
            }
            for (op, v) in ops.iter().zip(others) {
                if let Some(v) = v {
                    all.push(Cond::Text(col, *op, v.clone()));
                }
            }
            if let Some(list) = inl {
                all.push(Cond::TextIn(col, list.clone()));
            }
        }
        let days = [
            (Op::Eq, "date", &self.date),
            (Op::Geq, "date_geq", &self.date_geq),
            (Op::Gt, "date_gt", &self.date_gt),
            (Op::Lt, "date_lt", &self.date_lt),
            (Op::Leq, "date_leq", &self.date_leq),
        ];
        let times = [
            (Op::Eq, "datetime", &self.datetime),
            (Op::Geq, "datetime_geq", &self.datetime_geq),
            (Op::Gt, "datetime_gt", &self.datetime_gt),
            (Op::Lt, "datetime_lt", &self.datetime_lt),
            (Op::Leq, "datetime_leq", &self.datetime_leq),
        ];
        if !outer {
            for (op, name, v) in days {
                if let Some(v) = v {
                    all.push(day_cond(op, parse_day(name, v)?));
                }
            }
            for (op, name, v) in times {
                if let Some(v) = v {
                    all.push(time_cond(op, parse_time(name, v)?));
                }
            }
        }
        if let Some(v) = &self.date_neq {
            all.push(day_cond(Op::Neq, parse_day("date_neq", v)?));
        }
        if let Some(list) = &self.date_in {
            let any = list
                .iter()
                .map(|v| parse_day("date_in", v).map(|d| day_cond(Op::Eq, d)));
            all.push(Cond::Any(any.collect::<Result<_, _>>()?));
        }
        if let Some(v) = &self.datetime_neq {
            all.push(time_cond(Op::Neq, parse_time("datetime_neq", v)?));
        }
        if let Some(list) = &self.datetime_in {
            let any = list
                .iter()
                .map(|v| parse_time("datetime_in", v).map(|t| time_cond(Op::Eq, t)));
            all.push(Cond::Any(any.collect::<Result<_, _>>()?));
        }
        if let Some(list) = &self.and {
            let v = list.iter().map(|f| f.cond(false));
            all.push(Cond::All(v.collect::<Result<_, _>>()?));
        }
        if let Some(list) = &self.or {
            let v = list.iter().map(|f| f.cond(false));
            all.push(Cond::Any(v.collect::<Result<_, _>>()?));
        }
        let cond = Cond::All(all);
        if cond.size() > MAX_CONDITIONS {
            metrics::counter!("banyan_graphql_refused_total", "limit" => "graphql_filter_size")
                .increment(1);
            return Err(Error::new(format!(
                "filter too large: {MAX_CONDITIONS} conditions and values at most"
            )));
        }
        Ok(cond)
    }
}

/// Refuse a range longer than [`MAX_RANGE_DAYS`].
pub(crate) fn check_range(from: Option<i64>, until: Option<i64>) -> Result<(), Error> {
    if let (Some(f), Some(u)) = (from, until) {
        if u - f > MAX_RANGE_DAYS * DAY_MINUTES {
            metrics::counter!("banyan_graphql_refused_total", "limit" => "graphql_range_days")
                .increment(1);
            return Err(Error::new(format!(
                "query time range is too large: {} days requested, {MAX_RANGE_DAYS} days at most",
                (u - f + DAY_MINUTES - 1) / DAY_MINUTES
            )));
        }
    }
    Ok(())
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub(crate) fn parse_day(field: &str, s: &str) -> Result<i64, Error> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = Date::parse(s, &fmt)
        .map_err(|_| Error::new(format!("{field}: expected a date YYYY-MM-DD, got {s:?}")))?;
    Ok(i64::from(d.to_julian_day()) - i64::from(unix_epoch_julian()))
}

pub(crate) fn unix_epoch_julian() -> i32 {
    OffsetDateTime::UNIX_EPOCH.date().to_julian_day()
}

/// Unix seconds of an RFC 3339 time.
pub(crate) fn parse_time(field: &str, s: &str) -> Result<i64, Error> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Error::new(format!("{field}: expected an RFC 3339 time, got {s:?}")))
}

/// The half-open minute range `[from, until)` the filter allows.
pub(crate) fn minute_range(f: &GroupFilter) -> Result<(Option<i64>, Option<i64>), Error> {
    let mut from: Option<i64> = None;
    let mut until: Option<i64> = None;
    let mut lo = |m: i64| from = Some(from.map_or(m, |f| f.max(m)));
    // Day bounds, in minutes.
    let day = |name: &str, v: &Option<String>| v.as_deref().map(|s| parse_day(name, s)).transpose();
    let sec =
        |name: &str, v: &Option<String>| v.as_deref().map(|s| parse_time(name, s)).transpose();
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    if let Some(d) = day("date", &f.date)? {
        lows.push(d * DAY_MINUTES);
        highs.push((d + 1) * DAY_MINUTES);
    }
    if let Some(d) = day("date_geq", &f.date_geq)? {
        lows.push(d * DAY_MINUTES);
    }
    if let Some(d) = day("date_gt", &f.date_gt)? {
        lows.push((d + 1) * DAY_MINUTES);
    }
    if let Some(d) = day("date_lt", &f.date_lt)? {
        highs.push(d * DAY_MINUTES);
    }
    if let Some(d) = day("date_leq", &f.date_leq)? {
        highs.push((d + 1) * DAY_MINUTES);
    }
    // A minute bucket m stands for the time m*60; compare that with t.
    if let Some(t) = sec("datetime", &f.datetime)? {
        let m = t.div_euclid(60);
        if t.rem_euclid(60) == 0 {
            lows.push(m);
            highs.push(m + 1);
        } else {
            // No minute starts at t: nothing matches.
            lows.push(m + 1);
            highs.push(m + 1);
        }
    }
    if let Some(t) = sec("datetime_geq", &f.datetime_geq)? {
        lows.push(t.div_euclid(60) + i64::from(t.rem_euclid(60) != 0));
    }
    if let Some(t) = sec("datetime_gt", &f.datetime_gt)? {
        lows.push(t.div_euclid(60) + 1);
    }
    if let Some(t) = sec("datetime_lt", &f.datetime_lt)? {
        highs.push(t.div_euclid(60) + i64::from(t.rem_euclid(60) != 0));
    }
    if let Some(t) = sec("datetime_leq", &f.datetime_leq)? {
        highs.push(t.div_euclid(60) + 1);
    }
    for m in lows {
        lo(m);
    }
    for m in highs {
        until = Some(until.map_or(m, |u: i64| u.min(m)));
    }
    Ok((from, until))
}

/// The schema's name of a Cloudflare scalar used in a variable type.
fn schema_scalar(name: &str) -> Option<&'static str> {
    Some(match name {
        "string" | "Date" | "Time" | "DateTime" => "String",
        "uint64" | "uint32" | "uint16" | "uint8" | "int64" | "int32" | "int" => "Int",
        "float64" | "float32" => "Float",
        "bool" => "Boolean",
        _ => return None,
    })
}

fn map_type(t: &mut Type) {
    match &mut t.base {
        BaseType::Named(name) => {
            if let Some(s) = schema_scalar(name.as_str()) {
                *name = Name::new(s);
            }
        }
        BaseType::List(inner) => map_type(inner),
    }
}

/// Rewrite the variable types of a parsed query from Cloudflare's scalar
/// names to the schema's (`$accountTag: string!` becomes `String!`).
pub fn map_variable_types(doc: &mut ExecutableDocument) {
    let ops: Vec<_> = match &mut doc.operations {
        async_graphql::parser::types::DocumentOperations::Single(op) => vec![op],
        async_graphql::parser::types::DocumentOperations::Multiple(ops) => {
            ops.values_mut().collect()
        }
    };
    for op in ops {
        for var in &mut op.node.variable_definitions {
            map_type(&mut var.node.var_type.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_become_bound_sql() {
        let c = Cond::All(vec![
            Cond::Any(vec![
                Cond::Text(TextCol::Creator, Op::Neq, "x' OR 1=1 --".into()),
                Cond::TextIn(TextCol::Uid, vec!["a".into(), "b".into()]),
            ]),
            day_cond(Op::Eq, 2),
        ]);
        assert!(c.day_aligned());
        let mut params = vec![Param::Text("acc".into())];
        let sql = c.sql(true, &mut params);
        assert_eq!(
            sql,
            "((creator <> $2 OR uid IN ($3, $4)) AND (day >= $5 AND day < $6))"
        );
        assert_eq!(params[1], Param::Text("x' OR 1=1 --".into()));
        assert_eq!(params[4], Param::Int(2));
        assert_eq!(params[5], Param::Int(3));
        assert_eq!(c.size(), 9);
        let t = time_cond(Op::Geq, 90);
        assert_eq!(t, Cond::TimeGe(2));
        assert!(!t.day_aligned());
        assert_eq!(time_cond(Op::Eq, 90), Cond::Any(Vec::new()));
        assert_eq!(Cond::Any(Vec::new()).sql(false, &mut params), "1 = 0");
    }

    #[test]
    fn cloudflare_scalar_names_map() {
        let mut doc = async_graphql::parser::parse_query(
            "query ($a: string!, $s: Date, $t: [Time!], $n: uint64) { x }",
        )
        .unwrap();
        map_variable_types(&mut doc);
        let (_, op) = doc.operations.iter().next().unwrap();
        let types: Vec<String> = op
            .node
            .variable_definitions
            .iter()
            .map(|v| v.node.var_type.node.to_string())
            .collect();
        assert_eq!(types, ["String!", "String", "[String!]", "Int"]);
    }
}

#[cfg(test)]
mod hostile_tests {
    use axum::http::StatusCode;

    /// Filters nested thousands deep or with thousands of values are
    /// refused or answered, never a crash or an unbounded statement.
    #[tokio::test]
    async fn deep_and_wide_filters_are_bounded() {
        for n in [50usize, 3000] {
            let deep = format!(
                r#"{{ viewer {{ accounts(filter: {{accountTag: "acct"}}) {{ streamMinutesViewedAdaptiveGroups(limit: 1, filter: {}{{creator: "a"}}{}) {{ count }} }} }} }}"#,
                "{OR: [".repeat(n),
                "]}".repeat(n)
            );
            let body = serde_json::json!({ "query": deep }).to_string();
            let s = crate::analytics::graphql::check_request("acct", body.as_bytes()).await;
            assert!(
                s == StatusCode::OK || s == StatusCode::BAD_REQUEST,
                "{n}: {s}"
            );
        }
    }
}
