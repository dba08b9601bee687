//! The Prometheus exposition: the recorder's text plus the per-stream
//! series, served on the metrics listener (`--metrics`, no token: keep it on
//! a private address) and on the public HTTP port to the admin token only.
//!
//! Per-stream series (`banyan_ingest_bitrate_bps`, `banyan_ingest_fps`) are
//! kept here rather than in the global recorder, so that no uid ever
//! enters it: `--metrics-per-stream off` (the default) exports none; the
//! other modes label them `stream`: `hashed` with a keyed hash (12 hex
//! digits of SHA-256(node key ‖ uid); the key is `<data-dir>/metrics.key`,
//! 0600, so a reader of the metrics cannot test a guessed uid), `uid` with
//! the uid itself. A stream's series goes away when it ends, and at once when
//! its input is deleted: cardinality is bounded by the live inputs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::config::PerStream;
use crate::inputs::Inputs;

/// Bytes of the key of hashed stream labels.
const KEY_LEN: usize = 32;

/// Per-stream rates and how they are labelled.
pub struct Exposition {
    mode: PerStream,
    key: [u8; KEY_LEN],
    /// uid → (bits per second, frames per second) of live streams.
    rates: Mutex<HashMap<String, (f64, f64)>>,
}

impl Exposition {
    pub fn new(mode: PerStream, key: [u8; KEY_LEN]) -> Exposition {
        Exposition {
            mode,
            key,
            rates: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any per-stream series is exported (else nothing is measured).
    pub fn per_stream(&self) -> bool {
        self.mode != PerStream::Off
    }

    /// The latest rates of a live stream.
    pub fn set(&self, uid: &str, bps: f64, fps: f64) {
        if self.per_stream() {
            self.rates.lock().insert(uid.to_string(), (bps, fps));
        }
    }

    /// A stream ended: its series goes away.
    pub fn remove(&self, uid: &str) {
        self.rates.lock().remove(uid);
    }

    /// The label of a stream's series, if they are exported.
    pub fn label(&self, uid: &str) -> Option<String> {
        match self.mode {
            PerStream::Off => None,
            PerStream::Uid => Some(format!("stream=\"{}\"", escape(uid))),
            PerStream::Hashed => Some(format!("stream=\"{}\"", stream_hash(&self.key, uid))),
        }
    }

    /// The per-stream series, in the text format, of the streams for which
    /// `keep` holds (the inputs that still exist).
    pub fn render_streams(&self, keep: impl Fn(&str) -> bool) -> String {
        let mut rows: Vec<(String, f64, f64)> = {
            let map = self.rates.lock();
            map.iter()
                .filter(|(uid, _)| keep(uid))
                .filter_map(|(uid, (b, f))| Some((self.label(uid)?, *b, *f)))
                .collect()
        };
        if rows.is_empty() {
            return String::new();
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        for (name, help, pick) in [
            (
                "banyan_ingest_bitrate_bps",
                "Ingest bitrate of a live stream, bits per second.",
                0,
            ),
            (
                "banyan_ingest_fps",
                "Ingest video frame rate of a live stream.",
                1,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (label, bps, fps) in &rows {
                let v = if pick == 0 { bps } else { fps };
                let _ = writeln!(out, "{name}{{{label}}} {v}");
            }
        }
        out
    }
}

/// The short keyed hash of a uid used as the `stream` label.
pub fn stream_hash(key: &[u8], uid: &str) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update(uid.as_bytes());
    hex::encode(&h.finalize()[..6])
}

/// A label value in the text format (uids are hex; this is a guard).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The key of hashed labels: `<data_dir>/metrics.key`, made on first start
/// (0600), kept across restarts so a stream keeps its label.
pub fn load_key(data_dir: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let path = data_dir.join("metrics.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut key = [0u8; KEY_LEN];
        if hex::decode_to_slice(text.trim(), &mut key).is_ok() {
            crate::tls::make_private(&path)?;
            return Ok(key);
        }
        tracing::warn!(path = %path.display(), "unreadable metrics key; making a new one");
    }
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    crate::tls::write_private(&path, hex::encode(key).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// What the metrics page reads.
pub struct Context {
    /// The global recorder's text.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The per-stream series.
    pub exposition: Arc<Exposition>,
    /// Which uids are live inputs (a stream's series go with its input).
    pub inputs: Arc<Inputs>,
}

/// The whole exposition of a node.
pub fn render(node: &Context) -> String {
    let mut text = node.metrics.render();
    text.push_str(
        &node
            .exposition
            .render_streams(|uid| node.inputs.is_input(uid)),
    );
    text
}

/// The answer to `GET /metrics`.
pub fn answer(node: &Context) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(node),
    )
        .into_response()
}

/// The router of the metrics listener: `GET /metrics`, nothing else.
pub fn router(node: Arc<Context>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(node): axum::extract::State<Arc<Context>>| async move {
                    answer(&node)
                },
            ),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn labels_follow_the_mode() {
        let uid = "0123456789abcdef0123456789abcdef";
        let off = Exposition::new(PerStream::Off, [1; KEY_LEN]);
        off.set(uid, 1.0, 2.0);
        assert_eq!(off.label(uid), None);
        assert_eq!(off.render_streams(|_| true), "");

        let hashed = Exposition::new(PerStream::Hashed, [1; KEY_LEN]);
        hashed.set(uid, 1000.0, 30.0);
        let text = hashed.render_streams(|_| true);
        assert!(!text.contains(uid), "{text}");
        let label = format!("stream=\"{}\"", stream_hash(&[1; KEY_LEN], uid));
        assert!(
            text.contains(&format!("banyan_ingest_fps{{{label}}} 30")),
            "{text}"
        );
        assert_ne!(
            stream_hash(&[1; KEY_LEN], uid),
            stream_hash(&[2; KEY_LEN], uid),
            "keyed"
        );
        assert_eq!(stream_hash(&[1; KEY_LEN], uid).len(), 12);

        let plain = Exposition::new(PerStream::Uid, [1; KEY_LEN]);
        plain.set(uid, 1000.0, 30.0);
        assert!(plain.render_streams(|_| true).contains(&format!(
            "banyan_ingest_bitrate_bps{{stream=\"{uid}\"}} 1000"
        )));
        // A deleted input's series is gone at once, an ended stream's too.
        assert_eq!(plain.render_streams(|_| false), "");
        plain.remove(uid);
        assert_eq!(plain.render_streams(|_| true), "");
    }

    #[test]
    fn the_key_is_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_key(dir.path()).unwrap();
        let path = dir.path().join("metrics.key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_key(dir.path()).unwrap(), a);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
