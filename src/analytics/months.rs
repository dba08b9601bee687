//! The monthly rollup `view_months`: calendar months (UTC) of viewing time,
//! so a month-wide query reads one row per (input, creator, protocol)
//! instead of one per day.
//!
//! A month is numbered `year * 12 + (month - 1)`. A query over a range of
//! whole days reads the whole months inside it from `view_months` and the
//! days at either end from `view_days` ([`Plan`]).
//!
//! The table is made by the migration `0003_view_months`, which fills it
//! from the daily rollup with the same month arithmetic in SQL (tested
//! against [`month_of`] below); every flush then adds to it.

use time::{Date, Month};

use super::filter::unix_epoch_julian;

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

/// What reading a month of the rollup costs, in days of the daily rollup:
/// a month has at most one row per (input, creator, protocol), a day one
/// per (input, creator, protocol) seen that day; a few days is a fair guess
/// for a platform where creators stream on some days of the month.
const MONTH_COST_DAYS: i64 = 3;

/// How to read the whole days `[from, until)`: months `[months.0,
/// months.1)` from the monthly rollup, plus the days in `add` and minus the
/// days in `sub` from the daily one. A range that cuts a month reads that
/// month and subtracts the days outside it when that reads fewer days than
/// adding the days inside (a rolling 31 days, `11-02` to `12-03`, is
/// November minus its first day plus two days of December).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub months: (i64, i64),
    /// Half-open day ranges added, none empty.
    pub add: Vec<(i64, i64)>,
    /// Half-open day ranges subtracted, none empty, each inside `months`.
    pub sub: Vec<(i64, i64)>,
}

impl Plan {
    /// The plan for `[from, until)` in days, or `None` when reading the
    /// days alone is cheaper.
    pub fn new(from: i64, until: i64) -> Option<Plan> {
        if from >= until {
            return None;
        }
        let first = month_of(from)?;
        let last = month_of(until - 1)?;
        let (f0, f1) = (first_day(first)?, first_day(first + 1)?);
        let (l0, l1) = (first_day(last)?, first_day(last + 1)?);
        let mut add = Vec::new();
        let mut sub = Vec::new();
        let months = if first == last {
            let inside = until - from;
            let outside = (f1 - f0) - inside;
            if outside + MONTH_COST_DAYS >= inside {
                return None;
            }
            sub.extend([(f0, from), (until, f1)]);
            (first, first + 1)
        } else {
            // The first month: whole, or cut (add the days in it, or read
            // it and subtract the days before `from`).
            let start = if from == f0 || (from - f0) + MONTH_COST_DAYS < f1 - from {
                sub.push((f0, from));
                first
            } else {
                add.push((from, f1));
                first + 1
            };
            let end = if until == l1 || (l1 - until) + MONTH_COST_DAYS < until - l0 {
                sub.push((until, l1));
                last + 1
            } else {
                add.push((l0, until));
                last
            };
            if start >= end {
                return None;
            }
            (start, end)
        };
        add.retain(|(x, y)| x < y);
        sub.retain(|(x, y)| x < y);
        Some(Plan { months, add, sub })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sqlx::{AnyPool, Executor};

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
        let nov = 2026 * 12 + 10;
        // Exactly November.
        let p = Plan::new(day("2026-11-01"), day("2026-12-01")).unwrap();
        assert_eq!(p.months, (nov, nov + 1));
        assert!(p.add.is_empty() && p.sub.is_empty());
        // A day either side: added.
        let p = Plan::new(day("2026-10-31"), day("2026-12-02")).unwrap();
        assert_eq!(p.months, (nov, nov + 1));
        assert_eq!(
            p.add,
            vec![
                (day("2026-10-31"), day("2026-11-01")),
                (day("2026-12-01"), day("2026-12-02"))
            ]
        );
        assert!(p.sub.is_empty());
        // A rolling 31 days: November less its first day, two December days.
        let p = Plan::new(day("2026-11-02"), day("2026-12-03")).unwrap();
        assert_eq!(p.months, (nov, nov + 1));
        assert_eq!(p.sub, vec![(day("2026-11-01"), day("2026-11-02"))]);
        assert_eq!(p.add, vec![(day("2026-12-01"), day("2026-12-03"))]);
        // Most of one month: read it, subtract both ends.
        let p = Plan::new(day("2026-11-03"), day("2026-11-29")).unwrap();
        assert_eq!(p.months, (nov, nov + 1));
        assert_eq!(
            p.sub,
            vec![
                (day("2026-11-01"), day("2026-11-03")),
                (day("2026-11-29"), day("2026-12-01"))
            ]
        );
        // A cut in the middle of the range's months: days are cheaper.
        assert_eq!(Plan::new(day("2026-11-15"), day("2026-12-16")), None);
        assert_eq!(Plan::new(day("2026-11-10"), day("2026-11-20")), None);
        // Two months, the last one nearly whole.
        let p = Plan::new(day("2026-10-20"), day("2026-12-30")).unwrap();
        assert_eq!(p.months, (nov, nov + 2));
        assert_eq!(p.add, vec![(day("2026-10-20"), day("2026-11-01"))]);
        assert_eq!(p.sub, vec![(day("2026-12-30"), day("2027-01-01"))]);
        // February: 28 days are a whole month.
        let p = Plan::new(day("2026-02-01"), day("2026-03-01")).unwrap();
        assert_eq!(p.months.1 - p.months.0, 1);
        assert_eq!(Plan::new(5, 5), None);
        assert_eq!(Plan::new(6, 5), None);
    }

    /// Every plan over a year of ranges covers exactly its days: months
    /// plus added minus subtracted days, counted day by day.
    #[test]
    fn plans_cover_exactly_their_days() {
        let base = day("2026-01-01");
        for from in (base..base + 400).step_by(3) {
            for len in [1, 2, 5, 17, 28, 29, 30, 31, 45, 62, 90, 365] {
                let until = from + len;
                let Some(p) = Plan::new(from, until) else {
                    continue;
                };
                let mut n = std::collections::BTreeMap::<i64, i64>::new();
                let (m0, m1) = p.months;
                for d in first_day(m0).unwrap()..first_day(m1).unwrap() {
                    *n.entry(d).or_default() += 1;
                }
                for &(a, b) in &p.add {
                    (a..b).for_each(|d| *n.entry(d).or_default() += 1);
                }
                for &(a, b) in &p.sub {
                    (a..b).for_each(|d| *n.entry(d).or_default() -= 1);
                }
                n.retain(|_, v| *v != 0);
                let want: std::collections::BTreeMap<i64, i64> =
                    (from..until).map(|d| (d, 1)).collect();
                assert_eq!(n, want, "{from}..{until}: {p:?}");
            }
        }
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
            // A schema of its own: the test drops and refills view_months.
            let pg = crate::store::tests::PgSchema::create(&url).await;
            let store = crate::store::Store::open(&pg.url).await.unwrap();
            monthly_on(store.pool()).await;
            store.close().await;
            pg.drop().await;
        }
    }

    /// (creator, millis) of each row of a query grouped by creator.
    async fn by_creator(
        q: &crate::analytics::db::GroupQuery,
        pool: &AnyPool,
    ) -> Vec<(String, i64)> {
        let rows = q.run(pool).await.unwrap();
        rows.into_iter()
            .map(|r| (r.creator.unwrap(), r.millis))
            .collect()
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
        add("dave", "2026-11-01", 30, 50_000); // only on a subtracted day
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
        let got = by_creator(&q, pool).await;
        assert_eq!(
            got,
            vec![
                ("bob".into(), 407_000),
                ("alice".into(), 320_000),
                ("dave".into(), 50_000)
            ]
        );
        // A rolling 31 days: November less its first day, plus December's
        // first two days; dave, seen only on November 1st, is no group.
        let mut r = q.clone();
        r.from = Some(day("2026-11-02") * DAY_MINUTES);
        r.until = Some(day("2026-12-03") * DAY_MINUTES);
        assert!(r.sql().0.contains("-millis"), "{}", r.sql().0);
        let got = by_creator(&r, pool).await;
        assert_eq!(
            got,
            vec![
                ("carol".into(), 900_000),
                ("bob".into(), 407_000),
                ("alice".into(), 300_000)
            ]
        );
        // The same from the minute table (a range that cuts a day).
        let mut m = q.clone();
        m.until = Some(day("2026-12-02") * DAY_MINUTES - 1);
        m.from = Some(day("2026-10-31") * DAY_MINUTES);
        assert!(m.sql().0.contains("view_minutes"));
        let again: Vec<_> = m.run(pool).await.unwrap();
        assert_eq!(again[0].millis, 407_000);
        assert_eq!(again[1].millis, 320_000);

        // An older database: no monthly table, days only; the migration
        // fills it from the days.
        pool.execute("DROP TABLE view_months").await.unwrap();
        pool.execute(crate::store::migrate::sql(3)).await.unwrap();
        let got = q.run(pool).await.unwrap();
        assert_eq!(got[0].millis, 407_000);
        assert_eq!(got[1].millis, 320_000);
    }

    /// The month arithmetic of the migration's SQL equals [`month_of`] on
    /// SQLite and PostgreSQL: around the epoch, leap days, century years,
    /// negative days and the ends of the calendar (days outside it are left
    /// out by both).
    #[tokio::test]
    async fn migration_months_equal_month_of() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = crate::store::Store::open_sqlite(dir.path()).await.unwrap();
        months_on(sqlite.pool()).await;
        if let Ok(url) = std::env::var("BANYAN_TEST_POSTGRES") {
            // A schema of its own: the test drops and refills view_months.
            let pg = crate::store::tests::PgSchema::create(&url).await;
            let store = crate::store::Store::open(&pg.url).await.unwrap();
            months_on(store.pool()).await;
            store.close().await;
            pg.drop().await;
        }
    }

    async fn months_on(pool: &AnyPool) {
        let cal = |y: i32, m: Month, d: u8| {
            Date::from_calendar_date(y, m, d)
                .ok()
                .map(|d| i64::from(d.to_julian_day()) - i64::from(unix_epoch_julian()))
        };
        let (lo, hi) = (
            cal(-9999, Month::January, 1).unwrap(),
            cal(9999, Month::December, 31).unwrap(),
        );
        assert!(month_of(lo).is_some() && month_of(lo - 1).is_none());
        assert!(month_of(hi).is_some() && month_of(hi + 1).is_none());
        let mut days: Vec<i64> = (-800..800).collect();
        let years = [
            -9999, -4800, -401, -400, -1, 0, 1, 100, 1600, 1900, 2000, 2024, 2100, 9999,
        ];
        for y in years {
            for (m, d) in [
                (Month::January, 1),
                (Month::February, 28),
                (Month::February, 29),
                (Month::March, 1),
                (Month::December, 31),
            ] {
                if let Some(d) = cal(y, m, d) {
                    days.extend([d - 1, d, d + 1]);
                }
            }
        }
        days.extend((0..2000).map(|i| lo + i * 3659 + i % 7));
        days.extend([lo - 1, hi + 1, i64::from(i32::MIN), i64::from(i32::MAX)]);
        days.sort();
        days.dedup();
        let account = crate::secret::new_id();
        let mut tx = pool.begin().await.unwrap();
        for d in &days {
            sqlx::query(
                "INSERT INTO view_days (account_id, day, uid, creator, protocol, millis) \
                 VALUES ($1, $2, $3, 'c', 'rtmp', 1)",
            )
            .bind(&account)
            .bind(d)
            .bind(d.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        pool.execute("DROP TABLE view_months").await.unwrap();
        pool.execute(crate::store::migrate::sql(3)).await.unwrap();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT uid, month FROM view_months WHERE account_id = $1 ORDER BY uid")
                .bind(&account)
                .fetch_all(pool)
                .await
                .unwrap();
        let got: HashMap<i64, i64> = rows
            .into_iter()
            .map(|(uid, m)| (uid.parse().unwrap(), m))
            .collect();
        let want: HashMap<i64, i64> = days
            .iter()
            .filter_map(|&d| Some((d, month_of(d)?)))
            .collect();
        assert!(want.len() > 2000, "{}", want.len());
        let mut wrong: Vec<_> = days
            .iter()
            .filter(|d| got.get(d) != want.get(d))
            .map(|d| (d, got.get(d), want.get(d)))
            .collect();
        wrong.truncate(10);
        assert!(wrong.is_empty(), "(day, SQL, month_of): {wrong:?}");
    }
}
