//! The proof of an uploaded certificate's name: the node fetches
//! `http://NAME:PORT/.well-known/banyan-domain/TOKEN` and expects the
//! token's value. A name whose DNS points at the node is answered by the
//! node itself (it serves its pending tokens), so pointing DNS here is the
//! proof, as with ACME's HTTP-01.

use std::time::Duration;

use super::plan::Outcome;

/// The path prefix of proof tokens.
pub const PATH: &str = "/.well-known/banyan-domain/";
/// Longest a check may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read of an answer.
const MAX_ANSWER: usize = 1024;

/// The URL the node checks.
pub fn url(domain: &str, port: u16, token: &str) -> String {
    if port == 80 {
        format!("http://{domain}{PATH}{token}")
    } else {
        format!("http://{domain}:{port}{PATH}{token}")
    }
}

/// Fetch the token and compare; `Done` (with no certificate) when it
/// matches.
pub async fn check(domain: &str, port: u16, token: &str, value: &str) -> Outcome {
    let url = url(domain, port, token);
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Retry(format!("no HTTP client: {e}")),
    };
    let how = format!(
        "point {domain}'s DNS at this node (it answers the token itself), or serve the value \
         at {url}"
    );
    let rsp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry(format!(
                "the name is not proven yet: fetching {url} failed ({e}); {how}"
            ))
        }
    };
    let status = rsp.status();
    let body = match rsp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Retry(format!("reading {url} failed ({e}); {how}")),
    };
    let got = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER)]);
    if status.is_success() && got.trim() == value {
        Outcome::Done {
            cert_pem: String::new(),
            key_pem: String::new(),
            not_before: 0,
            not_after: 0,
        }
    } else {
        Outcome::Retry(format!(
            "the name is not proven yet: {url} answered {status} without the expected value; \
             {how}"
        ))
    }
}
