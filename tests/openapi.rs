//! `docs/openapi.json` against the node: every route registered in the
//! router code (`.route(...)` in the files below) is in the document with
//! the same methods, and every documented operation is one the node serves
//! (asked over HTTP, it is not the router's "route not found" or "method
//! not allowed"). The node serves the document itself at `/openapi.json`.

mod common;

use std::collections::BTreeSet;

use common::Node;
use serde_json::Value;

/// The files that register HTTP routes of the public port, and what the
/// `{stream}` in their `format!` paths stands for.
const ROUTERS: [&str; 7] = [
    "src/api.rs",
    "src/api/domains.rs",
    "src/api/signing.rs",
    "src/cluster/admin.rs",
    "src/openapi.rs",
    "egress/src/hls/server.rs",
    "webrtc/src/http.rs",
];
const STREAM: &str = "/client/v4/accounts/{account}/stream";
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "options"];

/// A path with every `{name}` written `{}` (names may differ).
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in path.chars() {
        match c {
            '{' => {
                skip = true;
                out.push_str("{}");
            }
            '}' => skip = false,
            c if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

/// The text of the call whose `(` is at `open`, up to its `)`.
fn call_args(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced .route( call")
}

/// `(METHOD, shape)` of every `.route(path, method(..).method(..))` in `text`.
fn routes_in(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices(".route(") {
        let args = call_args(text, at + ".route".len());
        let q1 = args.find('"').expect("a path literal");
        let q2 = args[q1 + 1..].find('"').expect("closing quote") + q1 + 1;
        let mut path = args[q1 + 1..q2].to_string();
        if args[..q1].contains("format!") {
            path = path
                .replace("{stream}", STREAM)
                .replace("{{", "{")
                .replace("}}", "}");
        }
        let handlers = &args[q2 + 1..];
        let mut found = false;
        for m in METHODS {
            let pat = format!("{m}(");
            let hit = handlers.match_indices(&pat).any(|(i, _)| {
                // A method router call, not the tail of a longer name.
                i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if hit {
                out.insert((m.to_uppercase(), shape(&path)));
                found = true;
            }
        }
        assert!(found, "no method in .route({args})");
    }
    out
}

fn document() -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// `(METHOD, shape)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().unwrap() {
            assert!(METHODS.contains(&m.as_str()), "{m} {path}");
            assert!(op["summary"].is_string(), "{m} {path} has no summary");
            assert!(op["responses"].is_object(), "{m} {path} has no responses");
            assert!(op["security"].is_array(), "{m} {path}: say who may call it");
            out.insert((m.to_uppercase(), shape(path)));
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_operation_is_routed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = BTreeSet::new();
    for f in ROUTERS {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        code.extend(routes_in(&text));
    }
    assert!(code.len() > 30, "routes found in the code: {code:?}");
    let doc = documented(&document());
    let undocumented: Vec<_> = code.difference(&doc).collect();
    let unrouted: Vec<_> = doc.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
}

#[test]
fn path_parameters_are_declared() {
    let doc = document();
    let shared = &doc["components"]["parameters"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        let want: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(n, _)| n))
            .collect();
        for (m, op) in item.as_object().unwrap() {
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| match p["$ref"].as_str() {
                            Some(r) => &shared[r.rsplit('/').next().unwrap()],
                            None => p,
                        })
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, want, "{m} {path}: path parameters");
        }
    }
}

#[test]
fn route_parser_reads_chained_methods_and_formatted_paths() {
    let text = r#"
        Router::new()
            .route(&format!("{stream}/x/{{uid}}"), get(get_x).put(put_x))
            .route("/y", axum::routing::delete(forget_delete))
            .route("/{uid}/z", get(z).options(preflight))"#;
    let r = routes_in(text);
    let want: BTreeSet<(String, String)> = [
        ("GET", "/client/v4/accounts/{}/stream/x/{}"),
        ("PUT", "/client/v4/accounts/{}/stream/x/{}"),
        ("DELETE", "/y"),
        ("GET", "/{}/z"),
        ("OPTIONS", "/{}/z"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(r, want);
}

#[tokio::test]
async fn the_node_serves_the_document_and_every_documented_operation() {
    let node = Node::start(&[]);
    let http = reqwest::Client::new();
    let served = http
        .get(format!("{}/openapi.json", node.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert!(served.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let served: Value = served.json().await.unwrap();
    let doc = document();
    assert_eq!(
        served, doc,
        "the node serves docs/openapi.json as checked in"
    );

    let account = node.creds["accountId"].as_str().unwrap();
    let input = node.create_input().await;
    // The WHIP path's credential is its secret (the path segment of `webRTC.url`).
    let whip_secret = input.0["webRTC"]["url"]
        .as_str()
        .and_then(|u| u.strip_suffix("/webRTC/publish"))
        .and_then(|u| u.rsplit('/').next())
        .expect("webRTC.url")
        .to_string();
    let mut asked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/cluster/") {
            continue; // routed on cluster members only
        }
        let url = path
            .replace("{account}", account)
            .replace("{uid}", input.uid())
            .replace("{secret}", &whip_secret)
            .replace("{file}", "video.m3u8")
            .replace("{domain}", "live.example.com");
        // Any other parameter: a well-formed id nothing has.
        let url = shape(&url).replace("{}", "0123456789abcdef0123456789abcdef");
        for m in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let resp = http
                .request(method, format!("{}{url}", node.api()))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            // Without a token: refused where the document asks for one,
            // never refused for want of one where it says public.
            let public = item[m]["security"].as_array().is_some_and(Vec::is_empty);
            if public {
                assert_ne!(status, 401, "{m} {path} is documented public: {body}");
            } else {
                assert_eq!(
                    status, 401,
                    "{m} {path} is documented to need a token: {body}"
                );
            }
            assert!(
                !(status == 404 && body.contains("route not found")),
                "{m} {path}: the router has no such route"
            );
            assert!(
                !(status == 405 && body.contains("method not allowed")),
                "{m} {path}: the router does not take {m} there"
            );
            asked += 1;
        }
    }
    assert!(asked > 30, "operations asked: {asked}");
}
