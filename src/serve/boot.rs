//! Start-up and shutdown helpers of a node: the data dir, the default
//! account and credentials, the ready line, the signals that stop it.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::Context as _;

use crate::node::{Credentials, Urls};
use crate::secret;
use crate::store::Store;

/// Create the data dir (0700) if needed; warn if an existing one is open to
/// others.
pub(super) fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    } else {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), "data dir is accessible to other users (mode {:o})", mode & 0o777);
        }
    }
    Ok(())
}

/// Load or create the default account and the tokens of credentials.json.
/// Cluster members (`shared`) use the cluster's one default account.
pub(crate) async fn bootstrap(
    store: &Store,
    path: &Path,
    shared: bool,
) -> anyhow::Result<Credentials> {
    if path.exists() {
        let text = std::fs::read_to_string(path).context("reading credentials.json")?;
        let creds: Credentials = serde_json::from_str(&text).context("parsing credentials.json")?;
        if store.account_exists(&creds.account_id).await? {
            return Ok(creds);
        }
        tracing::warn!(path = %path.display(), "credentials.json names an account the store does not have; making new credentials");
    }
    let mut account_id = secret::new_id();
    if shared {
        account_id = crate::cluster::shared_account(store, &account_id).await?;
    }
    let created = !store.account_exists(&account_id).await?;
    if created {
        store.create_account(&account_id, "default").await?;
    }
    let api_token = secret::new_secret();
    let admin_token = secret::new_secret();
    store
        .add_token(&secret::token_hash(&api_token), &account_id, false)
        .await?;
    store
        .add_token(&secret::token_hash(&admin_token), &account_id, true)
        .await?;
    if created {
        tracing::info!(account = %account_id, "created the default account and this node's tokens");
    } else {
        tracing::info!(account = %account_id, "joined the cluster's default account with this node's own tokens");
    }
    Ok(Credentials {
        account_id,
        api_token,
        admin_token,
        api: String::new(),
    })
}

/// Print the one JSON line on stdout that says the node is ready, with the
/// real addresses: `{"ready":true,"http":..,"rtmp":..|null,"rtmps":..,
/// "srt":..,"api":..,"dataDir":..,"credentials":..,"metrics":..}`.
pub(super) fn ready_line(urls: &Urls, data_dir: &Path, creds: &Path) {
    let a = &urls.addrs;
    let line = serde_json::json!({
        "ready": true,
        "http": a.http.to_string(),
        "rtmp": a.rtmp.map(|r| r.to_string()),
        "rtmps": a.rtmps.to_string(),
        "srt": a.srt.to_string(),
        "webrtc": a.webrtc.to_string(),
        "api": urls.api_url(),
        "https": a.https.map(|h| h.to_string()),
        "dataDir": data_dir.display().to_string(),
        "credentials": creds.display().to_string(),
        "metrics": a.metrics.to_string(),
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(super) async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
