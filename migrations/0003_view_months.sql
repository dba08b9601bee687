-- The monthly rollup of viewing time: calendar months (UTC), numbered
-- `year * 12 + (month - 1)`, filled from the daily rollup in the same
-- transaction, so no node sees a month table that disagrees with the days.
CREATE TABLE view_months (
    account_id TEXT NOT NULL,
    month BIGINT NOT NULL,
    uid TEXT NOT NULL,
    creator TEXT NOT NULL,
    protocol TEXT NOT NULL,
    millis BIGINT NOT NULL,
    PRIMARY KEY (account_id, month, uid, creator, protocol));

-- The month of a day (days since 1970-01-01) in integer arithmetic that
-- SQLite and PostgreSQL compute alike (division truncates toward zero on
-- both; the era is floored by hand): the civil calendar from a day count,
-- with years starting on March 1st (`mp` is the month from March, 0..11).
-- Days outside the years -9999..9999 are left out, as the node's own
-- rollup (`analytics::months::month_of`) leaves them out.
INSERT INTO view_months (account_id, month, uid, creator, protocol, millis)
SELECT account_id, month, uid, creator, protocol, SUM(millis)
FROM (
    SELECT account_id, uid, creator, protocol, millis,
        CASE WHEN mp < 10 THEN y * 12 + mp + 2 ELSE (y + 1) * 12 + mp - 10 END AS month
    FROM (
        SELECT account_id, uid, creator, protocol, millis,
            yoe + era * 400 AS y,
            (5 * (doe - (365 * yoe + yoe / 4 - yoe / 100)) + 2) / 153 AS mp
        FROM (
            SELECT account_id, uid, creator, protocol, millis, era, doe,
                (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365 AS yoe
            FROM (
                SELECT account_id, uid, creator, protocol, millis, era,
                    z - era * 146097 AS doe
                FROM (
                    SELECT account_id, uid, creator, protocol, millis, z,
                        (CASE WHEN z >= 0 THEN z ELSE z - 146096 END) / 146097 AS era
                    FROM (
                        SELECT account_id, uid, creator, protocol, millis, day + 719468 AS z
                        FROM view_days
                        WHERE day >= -4371587 AND day <= 2932896
                    ) AS d
                ) AS e
            ) AS f
        ) AS g
    ) AS h
) AS m
GROUP BY account_id, month, uid, creator, protocol;
