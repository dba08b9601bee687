//! Storage of viewing time, the same SQL on SQLite and PostgreSQL.
//!
//! Two tables with the same columns apart from the time bucket:
//! `view_minutes` (`minute` = Unix minute, UTC) and `view_days` (`day` =
//! days since 1970-01-01, UTC), both keyed by `(account_id, bucket, uid,
//! creator, protocol)` and holding `millis`, milliseconds of media
//! delivered. Every flush upserts both, and the monthly rollup
//! `view_months` ([`super::months`]), in one transaction; a query uses the
//! daily table when it neither groups by `datetime` nor cuts a day in two,
//! and reads the whole months of its range from the monthly one when it
//! groups by neither `date` nor `datetime`.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use super::filter::Cond;
use super::months::{self, Plan};

/// Minutes in a day.
pub const DAY_MINUTES: i64 = 1440;

/// One bucket of viewing time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewKey {
    pub account_id: String,
    pub uid: String,
    pub creator: String,
    pub protocol: &'static str,
    /// Unix minute (UTC).
    pub minute: i64,
}

/// One row of a rollup: (account, uid, creator, protocol, bucket).
type RollupKey<'a> = (&'a str, &'a str, &'a str, &'a str, i64);

/// Add a batch of viewing time (milliseconds per bucket), in one
/// transaction: either all of it lands or none of it. The minute, day and
/// month rollups are written together, so they always agree.
pub async fn record(pool: &AnyPool, batch: &HashMap<ViewKey, i64>) -> sqlx::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut minutes: HashMap<RollupKey, i64> = HashMap::with_capacity(batch.len());
    let mut days: HashMap<RollupKey, i64> = HashMap::new();
    let mut by_month: HashMap<RollupKey, i64> = HashMap::new();
    for (k, &ms) in batch {
        let key = |bucket| {
            (
                k.account_id.as_str(),
                k.uid.as_str(),
                k.creator.as_str(),
                k.protocol,
                bucket,
            )
        };
        *minutes.entry(key(k.minute)).or_default() += ms;
        let day = k.minute.div_euclid(DAY_MINUTES);
        *days.entry(key(day)).or_default() += ms;
        if let Some(month) = months::month_of(day) {
            *by_month.entry(key(month)).or_default() += ms;
        }
    }
    let mut tx = pool.begin().await?;
    for (table, bucket, rows) in [
        ("view_minutes", "minute", minutes),
        ("view_days", "day", days),
        ("view_months", "month", by_month),
    ] {
        // Table and column names are these constants; values are bound.
        let sql = format!(
            "INSERT INTO {table} (account_id, {bucket}, uid, creator, protocol, millis) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (account_id, {bucket}, uid, creator, protocol) \
             DO UPDATE SET millis = {table}.millis + excluded.millis"
        );
        for ((account, uid, creator, protocol, at), ms) in rows {
            sqlx::query(&sql)
                .bind(account)
                .bind(at)
                .bind(uid)
                .bind(creator)
                .bind(protocol)
                .bind(ms)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}

/// The account and `defaultCreator` of each of these live inputs (inputs
/// that no longer exist are absent).
pub async fn owners(
    pool: &AnyPool,
    uids: &[&str],
) -> sqlx::Result<HashMap<String, (String, String)>> {
    let mut out = HashMap::with_capacity(uids.len());
    for chunk in uids.chunks(200) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT uid, account_id, default_creator FROM live_inputs WHERE uid IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(*u);
        }
        for r in q.fetch_all(pool).await? {
            out.insert(
                r.try_get("uid")?,
                (r.try_get("account_id")?, r.try_get("default_creator")?),
            );
        }
    }
    Ok(out)
}

/// A dimension to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    Creator,
    Uid,
    Date,
    Datetime,
    Protocol,
}

impl Dim {
    pub const ALL: [Dim; 5] = [
        Dim::Creator,
        Dim::Uid,
        Dim::Date,
        Dim::Datetime,
        Dim::Protocol,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dim::Creator => "creator",
            Dim::Uid => "uid",
            Dim::Date => "date",
            Dim::Datetime => "datetime",
            Dim::Protocol => "protocol",
        }
    }

    /// The output column alias.
    fn alias(self) -> &'static str {
        match self {
            Dim::Creator => "d_creator",
            Dim::Uid => "d_uid",
            Dim::Date => "d_date",
            Dim::Datetime => "d_datetime",
            Dim::Protocol => "d_protocol",
        }
    }
}

/// What to sort on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Sum,
    Dim(Dim),
}

/// A grouped query of one account's viewing time.
#[derive(Debug, Clone, Default)]
pub struct GroupQuery {
    pub account_id: String,
    /// Group by these, in this order (no duplicates).
    pub dims: Vec<Dim>,
    /// Minutes `>= from` (Unix minute).
    pub from: Option<i64>,
    /// Minutes `< until` (Unix minute).
    pub until: Option<i64>,
    pub creator: Option<String>,
    pub uid: Option<String>,
    pub protocol: Option<String>,
    /// `(key, descending)`; keys on dimensions must be grouped by.
    pub order: Vec<(SortKey, bool)>,
    pub limit: u32,
    /// Further conditions (operators, `AND`/`OR`), ANDed with the above.
    pub cond: Option<Cond>,
    /// Also count the minute rows of each group (answered from the minute
    /// table).
    pub count: bool,
}

/// One group of the answer; dimensions not grouped by are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupRow {
    pub millis: i64,
    pub creator: Option<String>,
    pub uid: Option<String>,
    /// Days since 1970-01-01.
    pub day: Option<i64>,
    /// Unix minute.
    pub minute: Option<i64>,
    pub protocol: Option<String>,
    /// Rows of the table in the group (minute rows when `count` was asked).
    pub count: i64,
}

impl GroupQuery {
    /// Whether the daily rollup answers this query exactly.
    fn daily(&self) -> bool {
        !self.dims.contains(&Dim::Datetime)
            && self.from.is_none_or(|m| m.rem_euclid(DAY_MINUTES) == 0)
            && self.until.is_none_or(|m| m.rem_euclid(DAY_MINUTES) == 0)
            && self.cond.as_ref().is_none_or(Cond::day_aligned)
            && !self.count
    }

    /// The monthly plan of this query, when whole months of its range can
    /// be read from the monthly rollup.
    fn monthly(&self) -> Option<Plan> {
        if !self.daily()
            || self.dims.contains(&Dim::Date)
            || !self.cond.as_ref().is_none_or(Cond::timeless)
        {
            return None;
        }
        let (from, until) = (self.from?, self.until?);
        Plan::new(from.div_euclid(DAY_MINUTES), until.div_euclid(DAY_MINUTES))
    }

    /// The conditions other than time, on the columns every table has.
    fn filters(&self, daily: bool, params: &mut Vec<Param>) -> Vec<String> {
        params.push(Param::Text(self.account_id.clone()));
        let mut wh = vec![format!("account_id = ${}", params.len())];
        let cols = [
            ("creator", &self.creator),
            ("uid", &self.uid),
            ("protocol", &self.protocol),
        ];
        for (col, v) in cols {
            if let Some(v) = v {
                params.push(Param::Text(v.clone()));
                wh.push(format!("{col} = ${}", params.len()));
            }
        }
        if let Some(c) = self.cond.as_ref().filter(|c| **c != Cond::All(Vec::new())) {
            wh.push(c.sql(daily, params));
        }
        wh
    }

    /// The SQL and its parameters (all bound, nothing spliced from input).
    pub fn sql(&self) -> (String, Vec<Param>) {
        let mut params = Vec::new();
        if let Some(plan) = self.monthly() {
            let mut wh = self.filters(true, &mut params);
            params.push(Param::Int(plan.months.0));
            params.push(Param::Int(plan.months.1));
            let n = params.len();
            wh.push(format!("month >= ${} AND month < ${n}", n - 1));
            let mut from = format!(
                "(SELECT uid, creator, protocol, millis FROM view_months WHERE {}",
                wh.join(" AND ")
            );
            for (ranges, sign) in [(&plan.add, ""), (&plan.sub, "-")] {
                if ranges.is_empty() {
                    continue;
                }
                let mut wh = self.filters(true, &mut params);
                let mut any = Vec::new();
                for (a, b) in ranges {
                    params.push(Param::Int(*a));
                    params.push(Param::Int(*b));
                    let n = params.len();
                    any.push(format!("(day >= ${} AND day < ${n})", n - 1));
                }
                wh.push(format!("({})", any.join(" OR ")));
                from.push_str(&format!(
                    " UNION ALL SELECT uid, creator, protocol, {sign}millis FROM view_days WHERE {}",
                    wh.join(" AND ")
                ));
            }
            from.push_str(") AS t");
            // A group seen only on subtracted days nets to nothing: not a
            // group of this range.
            let having = !plan.sub.is_empty() && !self.dims.is_empty();
            return self.finish(&from, "", true, having, params);
        }
        let daily = self.daily();
        let (table, bucket) = if daily {
            ("view_days", "day")
        } else {
            ("view_minutes", "minute")
        };
        let mut wh = self.filters(daily, &mut params);
        if let Some(m) = self.from {
            let v = if daily { m.div_euclid(DAY_MINUTES) } else { m };
            params.push(Param::Int(v));
            wh.push(format!("{bucket} >= ${}", params.len()));
        }
        if let Some(m) = self.until {
            let v = if daily { m.div_euclid(DAY_MINUTES) } else { m };
            params.push(Param::Int(v));
            wh.push(format!("{bucket} < ${}", params.len()));
        }
        let wh = format!(" WHERE {}", wh.join(" AND "));
        self.finish(table, &wh, daily, false, params)
    }

    /// SELECT, GROUP BY, ORDER BY and LIMIT over `from` (a table or a
    /// subquery) with its `WHERE` clause.
    fn finish(
        &self,
        from: &str,
        wh: &str,
        daily: bool,
        having: bool,
        mut params: Vec<Param>,
    ) -> (String, Vec<Param>) {
        let expr = |d: Dim| -> String {
            match d {
                Dim::Creator => "creator".into(),
                Dim::Uid => "uid".into(),
                Dim::Protocol => "protocol".into(),
                Dim::Datetime => "minute".into(),
                Dim::Date if daily => "day".into(),
                Dim::Date => format!("minute / {DAY_MINUTES}"),
            }
        };
        let mut select: Vec<String> = self
            .dims
            .iter()
            .map(|d| format!("{} AS {}", expr(*d), d.alias()))
            .collect();
        select.push("CAST(SUM(millis) AS BIGINT) AS total".into());
        if self.count {
            select.push("CAST(COUNT(*) AS BIGINT) AS n".into());
        }
        let mut sql = format!("SELECT {} FROM {from}{wh}", select.join(", "));
        if !self.dims.is_empty() {
            let g: Vec<String> = self.dims.iter().map(|d| expr(*d)).collect();
            sql.push_str(&format!(" GROUP BY {}", g.join(", ")));
            if having {
                sql.push_str(" HAVING SUM(millis) <> 0");
            }
        }
        let mut order: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        for (k, desc) in &self.order {
            if seen.contains(k) {
                continue;
            }
            seen.push(*k);
            let col = match k {
                SortKey::Sum => "total",
                SortKey::Dim(d) => d.alias(),
            };
            order.push(format!("{col} {}", if *desc { "DESC" } else { "ASC" }));
        }
        // Ties are broken by the dimensions, so answers are deterministic.
        for d in &self.dims {
            if !seen.contains(&SortKey::Dim(*d)) {
                order.push(format!("{} ASC", d.alias()));
            }
        }
        if !order.is_empty() {
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        params.push(Param::Int(i64::from(self.limit)));
        sql.push_str(&format!(" LIMIT ${}", params.len()));
        (sql, params)
    }

    /// Run the query.
    pub async fn run(&self, pool: &AnyPool) -> sqlx::Result<Vec<GroupRow>> {
        let (sql, params) = self.sql();
        // Not a named prepared statement: PostgreSQL plans a cached one
        // generically after five runs, and the generic plan of the monthly
        // union misjudges every range (23 ms with the values, 55 ms
        // without); planning with the values costs well under 1 ms.
        let mut q = sqlx::query(&sql).persistent(false);
        for p in params {
            q = match p {
                Param::Int(i) => q.bind(i),
                Param::Text(t) => q.bind(t),
            };
        }
        let rows = q.fetch_all(pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            // A sum over no rows (no grouping, nothing matched) is NULL.
            let Some(millis) = r.try_get::<Option<i64>, _>("total")? else {
                continue;
            };
            let mut g = GroupRow {
                millis,
                count: if self.count { r.try_get("n")? } else { 0 },
                ..GroupRow::default()
            };
            for d in &self.dims {
                match d {
                    Dim::Creator => g.creator = Some(r.try_get(d.alias())?),
                    Dim::Uid => g.uid = Some(r.try_get(d.alias())?),
                    Dim::Protocol => g.protocol = Some(r.try_get(d.alias())?),
                    Dim::Date => g.day = Some(r.try_get(d.alias())?),
                    Dim::Datetime => g.minute = Some(r.try_get(d.alias())?),
                }
            }
            out.push(g);
        }
        Ok(out)
    }
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Text(String),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) async fn sqlite() -> (tempfile::TempDir, AnyPool) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open_sqlite(dir.path()).await.unwrap();
        (dir, store.pool().clone())
    }

    fn key(
        account: &str,
        uid: &str,
        creator: &str,
        protocol: &'static str,
        minute: i64,
    ) -> ViewKey {
        ViewKey {
            account_id: account.into(),
            uid: uid.into(),
            creator: creator.into(),
            protocol,
            minute,
        }
    }

    /// Record, group, filter and sort on SQLite, and on PostgreSQL when
    /// `BANYAN_TEST_POSTGRES` names a database URL.
    #[tokio::test]
    async fn record_and_group() {
        let (_dir, pool) = sqlite().await;
        record_and_group_on(&pool).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            let store = crate::store::Store::open(&url).await.unwrap();
            record_and_group_on(store.pool()).await;
        }
    }

    async fn record_and_group_on(pool: &AnyPool) {
        let a = crate::secret::new_id();
        let b = crate::secret::new_id();
        let day0 = 20_000 * DAY_MINUTES;
        let mut batch = HashMap::new();
        batch.insert(key(&a, "u1", "alice", "rtmp", day0 + 10), 60_000);
        batch.insert(key(&a, "u1", "alice", "hls", day0 + 10), 30_000);
        batch.insert(
            key(&a, "u2", "bob", "rtmp", day0 + DAY_MINUTES + 5),
            120_000,
        );
        batch.insert(key(&b, "u3", "carol", "rtmp", day0 + 10), 999_000);
        record(pool, &batch).await.unwrap();
        // A second flush adds to the same buckets.
        let mut more = HashMap::new();
        more.insert(key(&a, "u1", "alice", "rtmp", day0 + 10), 6_000);
        record(pool, &more).await.unwrap();

        let q = GroupQuery {
            account_id: a.clone(),
            dims: vec![Dim::Creator],
            order: vec![(SortKey::Sum, true)],
            limit: 10,
            ..GroupQuery::default()
        };
        assert!(q.daily());
        let rows = q.run(pool).await.unwrap();
        let got: Vec<(Option<String>, i64)> =
            rows.iter().map(|r| (r.creator.clone(), r.millis)).collect();
        assert_eq!(
            got,
            vec![
                (Some("bob".into()), 120_000),
                (Some("alice".into()), 96_000)
            ]
        );

        // By minute, first day only, ascending by sum.
        let q = GroupQuery {
            account_id: a.clone(),
            dims: vec![Dim::Datetime, Dim::Protocol],
            from: Some(day0),
            until: Some(day0 + DAY_MINUTES),
            order: vec![(SortKey::Sum, false)],
            limit: 10,
            ..GroupQuery::default()
        };
        assert!(!q.daily());
        let rows = q.run(pool).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].protocol.as_deref(), Some("hls"));
        assert_eq!(rows[0].millis, 30_000);
        assert_eq!(rows[1].minute, Some(day0 + 10));

        // Date from the minute table (a range cutting a day) equals the rollup.
        let mut q = GroupQuery {
            account_id: a.clone(),
            dims: vec![Dim::Date, Dim::Uid],
            from: Some(day0 + 1),
            order: vec![(SortKey::Dim(Dim::Date), true)],
            limit: 1,
            ..GroupQuery::default()
        };
        let rows = q.run(pool).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].day, Some(20_001));
        assert_eq!(rows[0].uid.as_deref(), Some("u2"));
        q.from = Some(day0);
        q.creator = Some("alice".into());
        let rows = q.run(pool).await.unwrap();
        assert_eq!(rows[0].millis, 96_000);
        assert_eq!(rows[0].day, Some(20_000));

        // No grouping: one total; nothing matched: no row.
        let q = GroupQuery {
            account_id: b.clone(),
            limit: 5,
            ..GroupQuery::default()
        };
        assert_eq!(q.run(pool).await.unwrap()[0].millis, 999_000);
        let q = GroupQuery {
            account_id: crate::secret::new_id(),
            limit: 5,
            ..GroupQuery::default()
        };
        assert!(q.run(pool).await.unwrap().is_empty());
    }
}
