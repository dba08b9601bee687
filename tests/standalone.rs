//! The binary as an operator runs it: started outside the checkout it serves
//! a whole watch page (hls.js embedded at build time); its logs are plain
//! text without terminal escapes when written to a file, or one JSON object
//! a line with `--log-format json`; it says on first start where the
//! credentials are and which URLs to give publishers and players.

mod common;

use common::Node;
use reqwest::StatusCode;

/// A working directory with nothing of the checkout in it or above it.
fn outside() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temp dir");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!d.path().starts_with(manifest), "temp dir inside the checkout");
    d
}

#[tokio::test]
async fn watch_page_and_hls_js_from_any_directory() {
    let cwd = outside();
    let node = Node::start_in(Some(cwd.path()), &[]);
    let input = node.create_input().await;
    let http = reqwest::Client::new();

    let page = http
        .get(format!("{}/{}/watch", node.api(), input.uid()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("/watch-assets/hls.min.js"), "{page}");
    assert!(page.contains(input.uid()), "the page names its input");

    let js = http
        .get(format!("{}/watch-assets/hls.min.js", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let ctype = js.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/javascript"), "{ctype}");
    let js = js.bytes().await.unwrap();
    let vendored = include_bytes!("../web/vendor/hls.min.js");
    assert_eq!(js.len(), vendored.len(), "served hls.js is the vendored file");
    assert!(js == vendored[..], "served hls.js differs from web/vendor");
    let text = std::str::from_utf8(&js).unwrap();
    // The UMD bundle of hls.js 1.x: exports the Hls class with isSupported.
    assert!(text.contains("module.exports") && text.contains(".Hls="));
    assert!(text.contains("isSupported") && text.contains("lowLatencyMode"));

    let lic = http
        .get(format!("{}/watch-assets/hls.js.LICENSE", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(lic.status(), StatusCode::OK);
    assert!(lic.text().await.unwrap().contains("Apache License, Version 2.0"));

    let none = http
        .get(format!("{}/watch-assets/hls.js", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    assert!(
        !node.log_text().contains("hls.js not found"),
        "{}",
        node.log_text()
    );
}
