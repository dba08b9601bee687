//! The client subcommands: `banyan inputs|accounts|tokens|admin|domains|analytics ...`,
//! thin callers of the HTTP API. They read `<data-dir>/credentials.json`,
//! or take `--api`, `--account` and `--token`, and print the result as
//! pretty JSON on stdout (errors on stderr, exit status 1).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::node::{credentials_path, Credentials};

/// Where the API is and who is calling.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Data dir whose credentials.json to use.
    #[arg(
        long,
        env = "BANYAN_DATA_DIR",
        global = true,
        default_value = "./banyan-data"
    )]
    data_dir: PathBuf,
    /// API base URL, e.g. http://127.0.0.1:8080 [default: from credentials.json]
    #[arg(long, env = "BANYAN_API", global = true)]
    api: Option<String>,
    /// Account id [default: from credentials.json]
    #[arg(long, env = "BANYAN_ACCOUNT", global = true)]
    account: Option<String>,
    /// API token (the admin token for `accounts`) [default: from credentials.json]
    #[arg(long, env = "BANYAN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum InputsCmd {
    /// Create a live input.
    Create(InputFields),
    /// List live inputs.
    List,
    /// Show one live input.
    Get { uid: String },
    /// Change a live input's name, creator or enabled flag.
    Update {
        uid: String,
        #[command(flatten)]
        fields: InputFields,
        /// Enable publishing again.
        #[arg(long, conflicts_with = "disabled")]
        enabled: bool,
    },
    /// Delete a live input (its sessions are disconnected).
    Delete { uid: String },
    /// New stream, playback and SRT secrets (sessions are disconnected).
    RotateKeys { uid: String },
}

#[derive(Debug, Args)]
pub struct InputFields {
    /// meta.name
    #[arg(long)]
    name: Option<String>,
    /// defaultCreator
    #[arg(long)]
    creator: Option<String>,
    /// Refuse publishing.
    #[arg(long)]
    disabled: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCmd {
    /// Create an account (prints its API token once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List accounts.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create an API token for the account (prints its secret once).
    Create {
        /// A name to recognise it by in `list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the account's API tokens (ids and names, never secrets).
    List,
    /// Revoke a token: it is refused from the next request on.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum OutputsCmd {
    /// Add a simulcast output to a live input: while the input is live, it
    /// is re-published to URL (rtmp://, rtmps:// or srt://).
    Create {
        /// The live input's uid.
        input: String,
        #[arg(long)]
        url: String,
        /// The destination's stream key (required for rtmp:// and rtmps://).
        #[arg(long, env = "BANYAN_OUTPUT_STREAM_KEY", default_value = "")]
        stream_key: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List a live input's outputs, with their status and last error.
    List { input: String },
    /// Start pushing (at once, also while the input is live).
    Enable { input: String, output: String },
    /// Stop pushing.
    Disable { input: String, output: String },
    /// Delete an output.
    Delete { input: String, output: String },
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Replace the admin token by a new one (the old one stops working) and
    /// write the new one into the data dir's credentials.json (0600); the
    /// token is printed only when there is no such file to hold it.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum DomainsCmd {
    /// Add a custom RTMPS ingest domain: without --cert/--key the node gets
    /// its certificate by ACME; with them, the upload is served once the
    /// name is proven (see the README's "Custom domains").
    Add {
        domain: String,
        /// PEM certificate chain file.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// PEM private key file.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// List the account's ingest domains.
    List,
    /// Show one ingest domain (status, error, expiry, proof token).
    Get { domain: String },
    /// Remove an ingest domain.
    Remove { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum AnalyticsCmd {
    /// Minutes viewed per creator, as a table.
    Creators {
        /// First day, YYYY-MM-DD, UTC [default: 30 days ago]
        #[arg(long, alias = "from")]
        since: Option<String>,
        /// Last day included, YYYY-MM-DD, UTC [default: today]
        #[arg(long)]
        until: Option<String>,
        /// Most creators listed, by minutes viewed
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

struct Client {
    http: reqwest::Client,
    api: String,
    account: String,
    token: String,
}

impl Conn {
    fn client(&self, admin: bool) -> anyhow::Result<Client> {
        let creds = || -> anyhow::Result<Credentials> {
            let path = credentials_path(&self.data_dir);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (or pass --api, --account and --token)",
                    path.display()
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let need_file = self.api.is_none() || self.account.is_none() || self.token.is_none();
        let file = if need_file { Some(creds()?) } else { None };
        let pick = |given: &Option<String>, from: fn(&Credentials) -> &String| {
            given
                .clone()
                .or_else(|| file.as_ref().map(|c| from(c).clone()))
                .ok_or_else(|| anyhow!("missing connection setting"))
        };
        let token_from: fn(&Credentials) -> &String = if admin {
            |c| &c.admin_token
        } else {
            |c| &c.api_token
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            api: pick(&self.api, |c| &c.api)?
                .trim_end_matches('/')
                .to_string(),
            account: pick(&self.account, |c| &c.account_id)?,
            token: pick(&self.token, token_from)?,
        })
    }
}

impl Client {
    fn stream(&self, rest: &str) -> String {
        format!(
            "{}/client/v4/accounts/{}/stream/{rest}",
            self.api, self.account
        )
    }

    /// Call the API and return `result`, or fail with the envelope's errors.
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {}", self.api))?;
        let status = resp.status();
        let env: Value = resp
            .json()
            .await
            .with_context(|| format!("reading the answer ({status})"))?;
        if env["success"] == json!(true) {
            return Ok(env["result"].clone());
        }
        let msgs: Vec<String> = env["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{} ({})", e["message"].as_str().unwrap_or("?"), e["code"]))
                    .collect()
            })
            .unwrap_or_default();
        bail!("{status}: {}", msgs.join("; "))
    }
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn input_body(f: &InputFields, enabled: Option<bool>) -> Value {
    let mut b = json!({});
    if let Some(n) = &f.name {
        b["meta"] = json!({"name": n});
    }
    if let Some(c) = &f.creator {
        b["defaultCreator"] = json!(c);
    }
    if let Some(e) = enabled {
        b["enabled"] = json!(e);
    }
    b
}

pub async fn inputs(conn: Conn, cmd: InputsCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = conn.client(false)?;
    let v = match cmd {
        InputsCmd::Create(f) => {
            let body = input_body(&f, Some(!f.disabled));
            c.call(Method::POST, c.stream("live_inputs"), Some(body))
                .await?
        }
        InputsCmd::List => c.call(Method::GET, c.stream("live_inputs"), None).await?,
        InputsCmd::Get { uid } => {
            c.call(Method::GET, c.stream(&format!("live_inputs/{uid}")), None)
                .await?
        }
        InputsCmd::Update {
            uid,
            fields,
            enabled,
        } => {
            let e = if fields.disabled {
                Some(false)
            } else if enabled {
                Some(true)
            } else {
                None
            };
            let body = input_body(&fields, e);
            c.call(
                Method::PUT,
                c.stream(&format!("live_inputs/{uid}")),
                Some(body),
            )
            .await?
        }
        InputsCmd::Delete { uid } => {
            c.call(
                Method::DELETE,
                c.stream(&format!("live_inputs/{uid}")),
                None,
            )
            .await?
        }
        InputsCmd::RotateKeys { uid } => {
            c.call(
                Method::POST,
                c.stream(&format!("live_inputs/{uid}/rotate_keys")),
                None,
            )
            .await?
        }
    };
    print(&v)
}

pub async fn accounts(conn: Conn, cmd: AccountsCmd) -> anyhow::Result<()> {
    let c = conn.client(true)?;
    let url = format!("{}/client/v4/accounts", c.api);
    let v = match cmd {
        AccountsCmd::Create { name } => {
            c.call(reqwest::Method::POST, url, Some(json!({"name": name})))
                .await?
        }
        AccountsCmd::List => c.call(reqwest::Method::GET, url, None).await?,
    };
    print(&v)
}

pub async fn tokens(conn: Conn, cmd: TokensCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = conn.client(false)?;
    let url = format!("{}/client/v4/accounts/{}/tokens", c.api, c.account);
    let v = match cmd {
        TokensCmd::Create { name } => {
            let body = name.map_or_else(|| json!({}), |n| json!({"name": n}));
            c.call(Method::POST, url, Some(body)).await?
        }
        TokensCmd::List => c.call(Method::GET, url, None).await?,
        TokensCmd::Revoke { id } => c.call(Method::DELETE, format!("{url}/{id}"), None).await?,
    };
    print(&v)
}

pub async fn outputs(conn: Conn, cmd: OutputsCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = conn.client(false)?;
    let url = |input: &str| c.stream(&format!("live_inputs/{input}/outputs"));
    let v = match cmd {
        OutputsCmd::Create {
            input,
            url: dest,
            stream_key,
            disabled,
        } => {
            let body = json!({"url": dest, "streamKey": stream_key, "enabled": !disabled});
            c.call(Method::POST, url(&input), Some(body)).await?
        }
        OutputsCmd::List { input } => c.call(Method::GET, url(&input), None).await?,
        OutputsCmd::Enable { input, output } => {
            let body = json!({"enabled": true});
            c.call(Method::PUT, format!("{}/{output}", url(&input)), Some(body))
                .await?
        }
        OutputsCmd::Disable { input, output } => {
            let body = json!({"enabled": false});
            c.call(Method::PUT, format!("{}/{output}", url(&input)), Some(body))
                .await?
        }
        OutputsCmd::Delete { input, output } => {
            c.call(Method::DELETE, format!("{}/{output}", url(&input)), None)
                .await?
        }
    };
    print(&v)
}

pub async fn admin(conn: Conn, cmd: AdminCmd) -> anyhow::Result<()> {
    let AdminCmd::Rotate = cmd;
    let c = conn.client(true)?;
    let v = c
        .call(
            reqwest::Method::POST,
            format!("{}/client/v4/admin/rotate", c.api),
            None,
        )
        .await?;
    let new = v["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in the answer"))?;
    let path = credentials_path(&conn.data_dir);
    let saved = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut creds: Credentials = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if creds.admin_token == c.token || creds.admin_token == new {
                creds.admin_token = new.to_string();
                crate::tls::write_private(&path, serde_json::to_string_pretty(&creds)?.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                true
            } else {
                false
            }
        }
        Err(_) => false,
    };
    if saved {
        print(&json!({"rotated": true, "credentials": path.display().to_string()}))
    } else {
        print(&json!({"rotated": true, "token": new}))
    }
}

pub async fn domains(conn: Conn, cmd: DomainsCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = conn.client(false)?;
    let v = match cmd {
        DomainsCmd::Add { domain, cert, key } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let body = match (cert, key) {
                (Some(cert), Some(key)) => {
                    json!({"domain": domain, "certificate": read(&cert)?, "privateKey": read(&key)?})
                }
                _ => json!({ "domain": domain }),
            };
            c.call(Method::POST, c.stream("ingest_domains"), Some(body))
                .await?
        }
        DomainsCmd::List => {
            c.call(Method::GET, c.stream("ingest_domains"), None)
                .await?
        }
        DomainsCmd::Get { domain } => {
            c.call(
                Method::GET,
                c.stream(&format!("ingest_domains/{domain}")),
                None,
            )
            .await?
        }
        DomainsCmd::Remove { domain } => {
            c.call(
                Method::DELETE,
                c.stream(&format!("ingest_domains/{domain}")),
                None,
            )
            .await?
        }
    };
    print(&v)
}

pub async fn analytics(conn: Conn, cmd: AnalyticsCmd) -> anyhow::Result<()> {
    let AnalyticsCmd::Creators {
        since,
        until,
        limit,
    } = cmd;
    let c = conn.client(false)?;
    let today = time::OffsetDateTime::now_utc().date();
    let since = since.unwrap_or_else(|| (today - time::Duration::days(30)).to_string());
    let until = until.unwrap_or_else(|| today.to_string());
    for d in [&since, &until] {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(d, &fmt).with_context(|| format!("not a YYYY-MM-DD date: {d}"))?;
    }
    let query = "query ($account: String!, $since: String!, $until: String!, $limit: Int!) { \
         viewer { accounts(filter: {accountTag: $account}) { \
         streamMinutesViewedAdaptiveGroups(limit: $limit, \
         orderBy: [sum_minutesViewed_DESC, creator_ASC], \
         filter: {date_geq: $since, date_leq: $until}) { \
         sum { minutesViewed } dimensions { creator } } } } }";
    let variables = json!({"account": c.account, "since": since, "until": until, "limit": limit});
    let resp = c
        .http
        .post(format!("{}/client/v4/graphql", c.api))
        .bearer_auth(&c.token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .with_context(|| format!("calling {}", c.api))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .with_context(|| format!("reading the answer ({status})"))?;
    if !v["errors"].is_null() {
        let msgs: Vec<&str> = v["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["message"].as_str()).collect())
            .unwrap_or_default();
        bail!("{status}: {}", msgs.join("; "));
    }
    let groups = v["data"]["viewer"]["accounts"][0]["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rows: Vec<(String, f64)> = groups
        .iter()
        .map(|g| {
            let creator = g["dimensions"]["creator"].as_str().unwrap_or("");
            let name = if creator.is_empty() {
                "(none)"
            } else {
                creator
            };
            (
                name.to_string(),
                g["sum"]["minutesViewed"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    println!("{}", creators_table(&since, &until, &rows));
    Ok(())
}

/// The table `banyan analytics creators` prints.
fn creators_table(since: &str, until: &str, rows: &[(String, f64)]) -> String {
    let width = rows
        .iter()
        .map(|(c, _)| c.chars().count())
        .chain(["CREATOR".len()])
        .max()
        .unwrap_or(7);
    let mut out = format!("Minutes viewed per creator, {since} to {until} (UTC)\n");
    out.push_str(&format!("{:<width$}  {:>12}\n", "CREATOR", "MINUTES"));
    let mut total = 0.0;
    for (c, m) in rows {
        total += m;
        out.push_str(&format!("{c:<width$}  {m:>12.2}\n"));
    }
    out.push_str(&format!("{:<width$}  {total:>12.2}", "TOTAL"));
    if rows.is_empty() {
        out.push_str("\n(no viewing in this range)");
    }
    out
}
