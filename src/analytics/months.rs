//! The monthly rollup `view_months`: calendar months (UTC) of viewing time,
//! so a month-wide query reads one row per (input, creator, protocol)
//! instead of one per day.
//!
//! A month is numbered `year * 12 + (month - 1)`. A query over a range of
//! whole days reads the whole months inside it from `view_months` and the
//! days at either end from `view_days` ([`Plan`]).

use std::collections::HashMap;

use sqlx::{AnyPool, Executor, Row};
use time::{Date, Month};

use super::filter::unix_epoch_julian;

pub(super) const SCHEMA: &str = "CREATE TABLE view_months (
        account_id TEXT NOT NULL,
        month BIGINT NOT NULL,
        uid TEXT NOT NULL,
        creator TEXT NOT NULL,
        protocol TEXT NOT NULL,
        millis BIGINT NOT NULL,
        PRIMARY KEY (account_id, month, uid, creator, protocol))";

fn date(day: i64) -> Option<Date> {
    let jd = i32::try_from(day.checked_add(i64::from(unix_epoch_julian()))?).ok()?;
    Date::from_julian_day(jd).ok()
}

/// The month of a day (days since 1970-01-01); `None` outside the
/// calendar's range.
pub fn month_of(day: i64) -> Option<i64> {
    let d = date(day)?;
    Some(i64::from(d.year()) * 12 + i64::from(u8::from(d.month())) - 1)
}

/// The first day of a month (days since 1970-01-01).
pub fn first_day(month: i64) -> Option<i64> {
    let year = i32::try_from(month.div_euclid(12)).ok()?;
    let m = Month::try_from(u8::try_from(month.rem_euclid(12) + 1).ok()?).ok()?;
    let d = Date::from_calendar_date(year, m, 1).ok()?;
    Some(i64::from(d.to_julian_day()) - i64::from(unix_epoch_julian()))
}

/// How to read the whole days `[from, until)`: months `[months.0,
/// months.1)` from the monthly rollup and the days left at either end from
/// the daily one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub months: (i64, i64),
    /// Half-open day ranges, none empty.
    pub days: Vec<(i64, i64)>,
}

impl Plan {
    /// The plan for `[from, until)` in days, or `None` when no whole month
    /// lies inside.
    pub fn new(from: i64, until: i64) -> Option<Plan> {
        let m0 = month_of(from)?;
        let first = if first_day(m0)? == from { m0 } else { m0 + 1 };
        // The month holding `until` ends after it: whole months end before.
        let last = month_of(until)?;
        if first >= last {
            return None;
        }
        let (a, b) = (first_day(first)?, first_day(last)?);
        let days = [(from, a), (b, until)]
            .into_iter()
            .filter(|(x, y)| x < y)
            .collect();
        Some(Plan {
            months: (first, last),
            days,
        })
    }
}

/// Create `view_months` if it does not exist; when it is new, fill it from
/// the daily rollup in the same transaction (a database of an older node),
/// so no node sees a month table that disagrees with the days.
pub async fn create(pool: &AnyPool) -> sqlx::Result<()> {
    let exists = sqlx::query("SELECT 1 FROM view_months LIMIT 1")
        .fetch_optional(pool)
        .await
        .is_ok();
    if exists {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    if let Err(e) = (&mut *tx).execute(SCHEMA).await {
        // Another node created it meanwhile (and filled it).
        tracing::debug!("view_months: {e}");
        return Ok(());
    }
    let rows = sqlx::query("SELECT account_id, day, uid, creator, protocol, millis FROM view_days")
        .fetch_all(&mut *tx)
        .await?;
    let mut months: HashMap<(String, i64, String, String, String), i64> = HashMap::new();
    for r in rows {
        let day: i64 = r.try_get("day")?;
        let Some(month) = month_of(day) else {
            continue;
        };
        let key = (
            r.try_get("account_id")?,
            month,
            r.try_get("uid")?,
            r.try_get("creator")?,
            r.try_get("protocol")?,
        );
        *months.entry(key).or_default() += r.try_get::<i64, _>("millis")?;
    }
    let n = months.len();
    for ((account, month, uid, creator, protocol), ms) in months {
        sqlx::query(
            "INSERT INTO view_months (account_id, month, uid, creator, protocol, millis) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account)
        .bind(month)
        .bind(uid)
        .bind(creator)
        .bind(protocol)
        .bind(ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if n > 0 {
        tracing::info!(rows = n, "view_months filled from view_days");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> i64 {
        super::super::filter::parse_day("t", s).unwrap()
    }

    #[test]
    fn months_and_their_first_days() {
        assert_eq!(month_of(0), Some(1970 * 12));
        assert_eq!(first_day(1970 * 12), Some(0));
        let nov = month_of(day("2026-11-17")).unwrap();
        assert_eq!(nov, 2026 * 12 + 10);
        assert_eq!(first_day(nov), Some(day("2026-11-01")));
        assert_eq!(first_day(nov + 2), Some(day("2027-01-01")));
        assert_eq!(month_of(day("2024-02-29")), Some(2024 * 12 + 1));
        assert_eq!(month_of(i64::MAX), None);
    }

    #[test]
    fn plans_split_ranges_into_months_and_days() {
        // Exactly November.
        let p = Plan::new(day("2026-11-01"), day("2026-12-01")).unwrap();
        assert_eq!(p.months, (2026 * 12 + 10, 2026 * 12 + 11));
        assert!(p.days.is_empty());
        // A day either side.
        let p = Plan::new(day("2026-10-31"), day("2026-12-02")).unwrap();
        assert_eq!(p.months, (2026 * 12 + 10, 2026 * 12 + 11));
        assert_eq!(
            p.days,
            vec![
                (day("2026-10-31"), day("2026-11-01")),
                (day("2026-12-01"), day("2026-12-02"))
            ]
        );
        // 31 days from mid-month hold no whole month.
        assert_eq!(Plan::new(day("2026-11-15"), day("2026-12-16")), None);
        // February: 28 days are a whole month.
        let p = Plan::new(day("2026-02-01"), day("2026-03-01")).unwrap();
        assert_eq!(p.months.1 - p.months.0, 1);
        assert_eq!(Plan::new(5, 5), None);
    }

    /// Month-wide answers from the monthly rollup equal the sums of the
    /// minutes, with days either side of the months, on SQLite (and
    /// PostgreSQL when `BANYAN_TEST_POSTGRES` names a database); an older
    /// database without the monthly table gets it filled from its days.
    #[tokio::test]
    async fn monthly_answers_equal_the_minutes() {
        let (_dir, pool) = crate::analytics::db::tests::sqlite().await;
        monthly_on(&pool).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            let store = crate::store::Store::open(&url).await.unwrap();
            monthly_on(store.pool()).await;
        }
    }

    async fn monthly_on(pool: &AnyPool) {
        use crate::analytics::db::{record, Dim, GroupQuery, SortKey, ViewKey, DAY_MINUTES};
        let account = crate::secret::new_id();
        let mut batch = HashMap::new();
        let mut add = |creator: &str, date: &str, minute: i64, ms: i64| {
            let k = ViewKey {
                account_id: account.clone(),
                uid: format!("u-{creator}"),
                creator: creator.into(),
                protocol: "rtmp",
                minute: day(date) * DAY_MINUTES + minute,
            };
            *batch.entry(k).or_insert(0) += ms;
        };
        add("alice", "2026-10-30", 5, 1_000); // outside
        add("alice", "2026-10-31", 5, 20_000);
        add("alice", "2026-11-10", 700, 300_000);
        add("bob", "2026-11-30", 1439, 400_000);
        add("bob", "2026-12-01", 0, 7_000);
        add("carol", "2026-12-02", 0, 900_000); // outside
        record(pool, &batch).await.unwrap();
        let q = GroupQuery {
            account_id: account.clone(),
            dims: vec![Dim::Creator],
            from: Some(day("2026-10-31") * DAY_MINUTES),
            until: Some(day("2026-12-02") * DAY_MINUTES),
            order: vec![(SortKey::Sum, true)],
            limit: 10,
            ..GroupQuery::default()
        };
        assert!(q.sql().0.contains("view_months"), "{}", q.sql().0);
        let got: Vec<_> = q
            .run(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.creator.unwrap(), r.millis))
            .collect();
        assert_eq!(
            got,
            vec![("bob".into(), 407_000), ("alice".into(), 320_000)]
        );
        // The same from the minute table (a range that cuts a day).
        let mut m = q.clone();
        m.until = Some(day("2026-12-02") * DAY_MINUTES - 1);
        m.from = Some(day("2026-10-31") * DAY_MINUTES);
        assert!(m.sql().0.contains("view_minutes"));
        let again: Vec<_> = m.run(pool).await.unwrap();
        assert_eq!(again[0].millis, 407_000);
        assert_eq!(again[1].millis, 320_000);

        // An older database: no monthly table, days only.
        pool.execute("DROP TABLE view_months").await.unwrap();
        create(pool).await.unwrap();
        let got = q.run(pool).await.unwrap();
        assert_eq!(got[0].millis, 407_000);
        assert_eq!(got[1].millis, 320_000);
        // Created once: a second start changes nothing.
        create(pool).await.unwrap();
        assert_eq!(q.run(pool).await.unwrap()[0].millis, 407_000);
    }
}
