//! GraphQL analytics as Cloudflare's documentation writes it, over real
//! viewing: three live inputs (creators alpha, beta, gamma) published with
//! ffmpeg and watched by ffmpeg RTMP players for 3, 5 and 8 seconds, then
//! the query copied from Cloudflare's docs (`string!`, `Date` variables),
//! every filter operator and `AND`/`OR`, `uid_gt` seek pagination, `count`,
//! the 31-day range rule and injection attempts in filter values.

mod common;
mod pg;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ffmpeg, http, publish, Client, Input, Node, Proto};
use pg::Postgres;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Cloudflare's example, verbatim.
const CF_QUERY: &str = "query ($accountTag: string!, $start: Date, $end: Date) { viewer { accounts(filter: {accountTag: $accountTag}) { streamMinutesViewedAdaptiveGroups(filter: {date_geq: $start, date_lt: $end}, orderBy: [sum_minutesViewed_DESC], limit: 100) { sum { minutesViewed } dimensions { creator } } } } }";

/// The seconds each creator's viewer watches.
const WATCH: [(&str, u32); 3] = [("alpha", 3), ("beta", 5), ("gamma", 8)];

struct Fixture {
    node: Node,
    /// creator -> uid
    uids: BTreeMap<String, String>,
}

impl Fixture {
    fn token(&self) -> String {
        self.node.creds["apiToken"].as_str().unwrap().to_string()
    }
    fn account(&self) -> String {
        self.node.creds["accountId"].as_str().unwrap().to_string()
    }

    async fn post(&self, query: &str, variables: Value) -> (StatusCode, Value) {
        let r = http()
            .post(format!("{}/client/v4/graphql", self.node.api()))
            .bearer_auth(self.token())
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Groups by creator for `filter` (GraphQL input syntax): creator ->
    /// (minutes, count).
    async fn by_creator(&self, filter: &str) -> BTreeMap<String, (f64, u64)> {
        let q = format!(
            "query ($a: string!) {{ viewer {{ accounts(filter: {{accountTag: $a}}) {{
               streamMinutesViewedAdaptiveGroups(filter: {filter}, orderBy: [creator_ASC], limit: 100) {{
                 count sum {{ minutesViewed }} dimensions {{ creator }} }} }} }} }}"
        );
        let (s, v) = self.post(&q, json!({"a": self.account()})).await;
        groups(s, &v)
            .iter()
            .map(|g| {
                (
                    g["dimensions"]["creator"].as_str().unwrap().to_string(),
                    (
                        g["sum"]["minutesViewed"].as_f64().unwrap(),
                        g["count"].as_u64().unwrap(),
                    ),
                )
            })
            .collect()
    }

    async fn creators(&self, filter: &str) -> Vec<String> {
        self.by_creator(filter).await.into_keys().collect()
    }
}

fn groups(s: StatusCode, v: &Value) -> Vec<Value> {
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["errors"], Value::Null, "{v}");
    v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

fn utc_date(arg: &str) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", arg, "+%F"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn create(node: &Node, creator: &str) -> Input {
    let r = http()
        .post(format!(
            "{}/client/v4/accounts/{}/stream/live_inputs",
            node.api(),
            node.creds["accountId"].as_str().unwrap()
        ))
        .bearer_auth(node.creds["apiToken"].as_str().unwrap())
        .json(&json!({"defaultCreator": creator}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], json!(true), "{v}");
    Input(v["result"].clone())
}

/// Publish three inputs and watch each for its own time.
async fn fixture(extra: &[&str]) -> Fixture {
    let mut args = vec!["--analytics-flush", "1"];
    args.extend(extra);
    let node = Node::start(&args);
    let mut uids = BTreeMap::new();
    let mut publishers = Vec::new();
    let mut viewers = Vec::new();
    for (creator, _) in WATCH {
        let input = create(&node, creator).await;
        uids.insert(creator.to_string(), input.uid().to_string());
        let mut p = publish(&input, Proto::Rtmp);
        node.wait_connected(input.uid(), &mut p).await;
        publishers.push((p, input));
    }
    for ((_, input), (_, secs)) in publishers.iter().zip(WATCH) {
        let mut c = ffmpeg();
        c.arg("-i").arg(input.play_url(Proto::Rtmp)).args([
            "-c",
            "copy",
            "-t",
            &secs.to_string(),
            "-f",
            "null",
            "-",
        ]);
        viewers.push(Client::spawn(c, "RTMP viewer"));
    }
    for v in &mut viewers {
        assert!(v.wait(20.0).await.is_some(), "{} did not finish", v.what);
    }
    for (p, _) in &mut publishers {
        p.stop().await;
    }
    // Two flushes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Fixture { node, uids }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_queries_operators_pagination_and_limits() {
    cloudflare_queries(&fixture(&[]).await).await;
}

/// The same filters in the same SQL on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_queries_on_postgresql() {
    let pg = Postgres::start();
    let url = pg.url();
    cloudflare_queries(&fixture(&["--database-url", &url]).await).await;
}

async fn cloudflare_queries(f: &Fixture) {
    let today = utc_date("today");
    let tomorrow = utc_date("tomorrow");

    // The documented query, verbatim, with Cloudflare's variable types.
    let (s, v) = f
        .post(
            CF_QUERY,
            json!({"accountTag": f.account(), "start": today, "end": tomorrow}),
        )
        .await;
    let rows = groups(s, &v);
    let got: Vec<(String, f64)> = rows
        .iter()
        .map(|g| {
            (
                g["dimensions"]["creator"].as_str().unwrap().to_string(),
                g["sum"]["minutesViewed"].as_f64().unwrap(),
            )
        })
        .collect();
    let order: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(order, ["gamma", "beta", "alpha"], "{v}");
    for (creator, secs) in WATCH {
        let m = got.iter().find(|(c, _)| c == creator).unwrap().1;
        let want = f64::from(secs) / 60.0;
        let slack = (1.5 / 60.0f64).max(want * 0.15);
        assert!(
            (m - want).abs() <= slack,
            "{creator}: {m} minutes, expected {want}"
        );
    }
    // Banyan's own spelling of the same query answers the same numbers.
    let all = f.by_creator("{}").await;
    assert_eq!(all.len(), 3);
    for (creator, minutes) in &got {
        assert_eq!(all[creator].0, *minutes);
        assert!(all[creator].1 >= 1, "count of {creator}: {all:?}");
    }

    // Each operator on a text dimension.
    let cases: &[(&str, &[&str])] = &[
        (r#"{creator: "beta"}"#, &["beta"]),
        (r#"{creator_gt: "alpha"}"#, &["beta", "gamma"]),
        (r#"{creator_lt: "beta"}"#, &["alpha"]),
        (r#"{creator_geq: "beta"}"#, &["beta", "gamma"]),
        (r#"{creator_leq: "beta"}"#, &["alpha", "beta"]),
        (r#"{creator_neq: "beta"}"#, &["alpha", "gamma"]),
        (
            r#"{creator_in: ["alpha", "gamma", "zeta"]}"#,
            &["alpha", "gamma"],
        ),
        (r#"{creator_in: []}"#, &[]),
        (
            r#"{OR: [{creator: "alpha"}, {creator: "gamma"}]}"#,
            &["alpha", "gamma"],
        ),
        (
            r#"{AND: [{creator_neq: "alpha"}, {creator_neq: "gamma"}]}"#,
            &["beta"],
        ),
        (
            r#"{OR: [{AND: [{creator_geq: "b"}, {creator_lt: "c"}]}, {creator: "alpha"}]}"#,
            &["alpha", "beta"],
        ),
        (r#"{protocol: "rtmp"}"#, &["alpha", "beta", "gamma"]),
        (r#"{protocol_neq: "rtmp"}"#, &[]),
        (r#"{protocol_in: ["hls", "srt"]}"#, &[]),
    ];
    for (filter, want) in cases {
        assert_eq!(&f.creators(filter).await, want, "filter {filter}");
    }
    let beta = &f.uids["beta"];
    assert_eq!(f.creators(&format!(r#"{{uid: "{beta}"}}"#)).await, ["beta"]);
    assert_eq!(
        f.creators(&format!(r#"{{uid_neq: "{beta}"}}"#)).await,
        ["alpha", "gamma"]
    );
    assert_eq!(
        f.creators(&format!(r#"{{uid_in: ["{beta}"]}}"#)).await,
        ["beta"]
    );
    // Operators on dates and times.
    let day_cases: Vec<(String, usize)> = vec![
        (format!(r#"{{date: "{today}"}}"#), 3),
        (format!(r#"{{date_neq: "{today}"}}"#), 0),
        (format!(r#"{{date_in: ["{today}", "2020-01-01"]}}"#), 3),
        (format!(r#"{{date_gt: "{today}"}}"#), 0),
        (format!(r#"{{date_leq: "{today}"}}"#), 3),
        (format!(r#"{{date_lt: "{today}"}}"#), 0),
        (format!(r#"{{datetime_geq: "{today}T00:00:00Z"}}"#), 3),
        (format!(r#"{{datetime_lt: "{today}T00:00:00Z"}}"#), 0),
        (
            format!(r#"{{OR: [{{date_lt: "{today}"}}, {{creator: "beta"}}]}}"#),
            1,
        ),
    ];
    for (filter, n) in &day_cases {
        assert_eq!(f.by_creator(filter).await.len(), *n, "filter {filter}");
    }
    // The minute table and the daily rollup agree.
    let cut = f
        .by_creator(&format!(
            r#"{{datetime_geq: "{today}T00:00:00Z", datetime_lt: "{tomorrow}T00:00:00Z", creator_neq: "x"}}"#
        ))
        .await;
    for (c, (m, _)) in &cut {
        assert_eq!(all[c].0, *m, "{c}");
    }

    // Seek pagination on uid: one row a page, every row exactly once.
    let page = "query ($a: string!, $after: string) { viewer { accounts(filter: {accountTag: $a}) {
        streamMinutesViewedAdaptiveGroups(filter: {uid_gt: $after}, orderBy: [uid_ASC], limit: 1) {
          sum { minutesViewed } dimensions { uid } } } } }";
    let mut after = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (s, v) = f
            .post(page, json!({"a": f.account(), "after": after}))
            .await;
        let rows = groups(s, &v);
        let Some(row) = rows.first() else { break };
        assert_eq!(rows.len(), 1);
        after = row["dimensions"]["uid"].as_str().unwrap().to_string();
        seen.push(after.clone());
    }
    let mut want: Vec<String> = f.uids.values().cloned().collect();
    want.sort();
    assert_eq!(seen, want);

    // More than 31 days is refused; 31 days is allowed.
    let (s, v) = f
        .post(
            CF_QUERY,
            json!({"accountTag": f.account(), "start": "2026-01-01", "end": "2026-02-02"}),
        )
        .await;
    // A field error, as the other argument errors: no rows, the rule named.
    assert!(s == StatusCode::OK || s == StatusCode::BAD_REQUEST, "{v}");
    assert!(v["errors"].to_string().contains("31 days at most"), "{v}");
    assert_eq!(v["data"]["viewer"]["accounts"][0], Value::Null, "{v}");
    let metrics = http()
        .get(f.node.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("banyan_graphql_refused_total") && l.contains("graphql_range_days"))
        .unwrap_or_else(|| panic!("no range refusal counted:\n{metrics}"));
    assert!(refused.ends_with(" 1"), "{refused}");
    let (s, v) = f
        .post(
            CF_QUERY,
            json!({"accountTag": f.account(), "start": "2026-01-01", "end": "2026-02-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["errors"], Value::Null, "{v}");

    // Injection attempts are plain values: they match nothing and harm nothing.
    let hostile = [
        r#"{creator: "alpha' OR '1'='1"}"#,
        r#"{creator_in: ["x'); DROP TABLE view_minutes; --"]}"#,
        r#"{uid_gt: "zzz' OR 1=1 --", OR: [{protocol: "\" OR \"\"=\""}]}"#,
        r#"{creator_neq: "alpha\"; DELETE FROM view_days; --", creator_lt: "a"}"#,
    ];
    for filter in hostile {
        assert!(f.creators(filter).await.is_empty(), "{filter}");
    }
    assert_eq!(f.by_creator("{}").await, all);

    // Cloudflare's other scalar names are accepted in variable types.
    let (s, v) = f
        .post(
            "query ($a: string!, $n: uint64!, $t: Time) { viewer { accounts(filter: {accountTag: $a}) {
               streamMinutesViewedAdaptiveGroups(limit: $n, filter: {datetime_geq: $t}) { count sum { minutesViewed } } } } }",
            json!({"a": f.account(), "n": 5, "t": format!("{today}T00:00:00Z")}),
        )
        .await;
    let rows = groups(s, &v);
    assert_eq!(rows.len(), 1);
    let total: f64 = all.values().map(|(m, _)| m).sum();
    assert!((rows[0]["sum"]["minutesViewed"].as_f64().unwrap() - total).abs() < 0.002);
}
