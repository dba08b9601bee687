//! The watch page and its static script, embedded at build time: the page
//! from `web/watch.html`, hls.js from `web/vendor/` (see its README: version,
//! integrity and SHA-256 in `hls.lock`, checked by a test below).

use bytes::Bytes;

const PAGE: &str = include_str!("../../../web/watch.html");
const HLS_JS: &[u8] = include_bytes!("../../../web/vendor/hls.min.js");
const HLS_LICENSE: &[u8] = include_bytes!("../../../web/vendor/hls.js.LICENSE");

/// The watch page of `uid` (an id already checked to be URL-safe).
pub(crate) fn page(uid: &str) -> String {
    PAGE.replace("{{UID}}", uid)
}

/// A static file of the watch page by name, with its content type.
pub(crate) fn asset(file: &str) -> Option<(Bytes, &'static str)> {
    match file {
        "hls.min.js" => Some((Bytes::from_static(HLS_JS), "text/javascript; charset=utf-8")),
        "hls.js.LICENSE" => Some((Bytes::from_static(HLS_LICENSE), "text/plain; charset=utf-8")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded script is the file `hls.lock` names, byte for byte.
    #[test]
    fn embedded_hls_js_matches_lock() {
        let lock = include_str!("../../../web/vendor/hls.lock");
        let want = lock
            .lines()
            .find_map(|l| l.strip_prefix("sha256 = "))
            .map(|v| v.trim().trim_matches('"'))
            .expect("sha256 line in hls.lock");
        let got = ring::digest::digest(&ring::digest::SHA256, HLS_JS);
        let hex: String = got.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want, "web/vendor/hls.min.js differs from hls.lock");
        let version = lock
            .lines()
            .find_map(|l| l.strip_prefix("version = "))
            .map(|v| v.trim().trim_matches('"'))
            .expect("version line in hls.lock");
        // The bundle states its own version.
        let js = std::str::from_utf8(HLS_JS).expect("UTF-8 script");
        assert!(
            js.contains(&format!("\"{version}\"")),
            "hls.min.js is not version {version}"
        );
    }

    #[test]
    fn assets_and_page() {
        let (js, ctype) = asset("hls.min.js").unwrap();
        assert!(js.len() > 100_000 && ctype.starts_with("text/javascript"));
        let (lic, _) = asset("hls.js.LICENSE").unwrap();
        assert!(std::str::from_utf8(&lic)
            .unwrap()
            .contains("Apache License"));
        assert!(asset("../Cargo.toml").is_none());
        let p = page("abc");
        assert!(p.contains("const uid = \"abc\"") && !p.contains("{{"));
    }
}
