//! The watch page and its static script (hls.js from web/node_modules).

use std::path::{Path, PathBuf};

use bytes::Bytes;

const PAGE: &str = include_str!("../../../web/watch.html");
const HLS_JS: &str = "node_modules/hls.js/dist/hls.min.js";

pub(crate) struct Assets {
    /// hls.min.js on disk, when found.
    pub hls_js: Option<PathBuf>,
}

impl Assets {
    /// Find hls.js: in `dir` when given, else in `web/` under the current
    /// directory or any ancestor of it or of the executable.
    pub fn locate(dir: Option<PathBuf>) -> Assets {
        let hls_js = match dir {
            Some(d) => Some(d.join(HLS_JS)).filter(|p| p.is_file()),
            None => {
                let mut roots: Vec<PathBuf> = Vec::new();
                if let Ok(cwd) = std::env::current_dir() {
                    roots.extend(cwd.ancestors().map(Path::to_path_buf));
                }
                if let Ok(exe) = std::env::current_exe() {
                    roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
                }
                roots
                    .into_iter()
                    .map(|r| r.join("web").join(HLS_JS))
                    .find(|p| p.is_file())
            }
        };
        if hls_js.is_none() {
            tracing::warn!("hls.js not found: run `npm ci --prefix web` for the watch page");
        }
        Assets { hls_js }
    }

    /// The watch page of `uid` (an id already checked to be URL-safe).
    pub fn page(&self, uid: &str) -> String {
        let missing = if self.hls_js.is_some() {
            ""
        } else {
            "hls.js is not installed on this node: run <code>npm ci --prefix web</code> in the Banyan checkout and restart."
        };
        PAGE.replace("{{UID}}", uid).replace("{{MISSING}}", missing)
    }

    pub async fn asset(&self, file: &str) -> Option<(Bytes, &'static str)> {
        match file {
            "hls.min.js" => {
                let path = self.hls_js.as_ref()?;
                let data = tokio::fs::read(path).await.ok()?;
                Some((Bytes::from(data), "text/javascript; charset=utf-8"))
            }
            _ => None,
        }
    }
}
