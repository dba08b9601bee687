//! `.../stream/ingest_domains`: custom RTMPS ingest names.
//!
//! `{"domain"}` alone starts an ACME order (the node proves the name to
//! the CA and gets the certificate); `{"domain","certificate","privateKey"}`
//! uploads the account's own, served once the node has fetched the proof
//! token at `http://NAME/.well-known/banyan-domain/TOKEN` (the node answers
//! it itself when the name's DNS points here). A domain is served by SNI
//! and binds keys only while `active`. The node's `--public-host` and the
//! names under it are reserved; a name held by one account (not `failed`)
//! cannot be added by another.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ok, ok_list, rfc3339, ApiError, ApiResult, Auth, JsonBody, St};
use crate::acme::plan::{self, Due};
use crate::store::{now_micros, DomainRow};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DomainBody {
    domain: Option<String>,
    certificate: Option<String>,
    private_key: Option<String>,
}

pub(super) fn valid_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A checked request: the name, and the uploaded (certificate, key) if any.
#[derive(Debug)]
pub(super) struct NewDomain {
    domain: String,
    upload: Option<(String, String)>,
}

/// Check a body as the endpoint does before it touches the store.
pub(super) fn new_domain(body: DomainBody) -> Result<NewDomain, ApiError> {
    let Some(domain) = body.domain else {
        return Err(ApiError::bad_request(
            "domain is required (with certificate and privateKey to upload your own; \
             without them the node gets one by ACME)",
        ));
    };
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !valid_domain(&domain) {
        return Err(ApiError::bad_request(format!(
            "not a domain name: {domain:?}"
        )));
    }
    let upload = match (body.certificate, body.private_key) {
        (Some(cert), Some(key)) => {
            crate::tls::validate_domain_cert(&domain, &cert, &key)
                .map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
            Some((cert, key))
        }
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "certificate and privateKey go together: give both to upload your own, or \
                 neither for a certificate by ACME",
            ))
        }
    };
    Ok(NewDomain { domain, upload })
}

/// Whether `domain` is the node's own name or under it.
fn reserved(domain: &str, public_host: Option<&str>) -> bool {
    public_host.is_some_and(|h| {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        domain == h || domain.ends_with(&format!(".{h}"))
    })
}

fn domain_json(node: &St, d: &DomainRow) -> Value {
    let when = |t: i64| (t > 0).then(|| rfc3339(t));
    let mut v = json!({
        "domain": d.domain,
        "created": rfc3339(d.created),
        "status": d.status,
        "method": d.method,
        "error": (!d.error.is_empty()).then_some(&d.error),
        "expiresOn": when(d.expires),
        "renewedAt": when(d.renewed),
    });
    if d.method == plan::UPLOAD && !d.verify_token.is_empty() {
        let port = match node.acme.settings.domain_verify_port {
            0 => node.urls.addrs.http.port(),
            p => p,
        };
        v["verification"] = json!({
            "http": {
                "url": crate::acme::verify::url(&d.domain, port, &d.verify_token),
                "body": d.verify_value,
            }
        });
    }
    v
}

async fn add_domain(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<DomainBody>,
) -> ApiResult {
    auth.scope(&account)?;
    let NewDomain { domain, upload } = new_domain(body)?;
    if reserved(&domain, node.urls.public_host.as_deref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            10002,
            format!(
                "{domain} is this node's own name (or under it) and is reserved; use a name of \
                 your own"
            ),
        ));
    }
    let existing = node.store.domain(&domain).await?;
    match &existing {
        Some(d) if d.account_id != account && d.status != plan::FAILED => {
            return Err(ApiError::conflict(format!(
                "{domain} is held by another account"
            )))
        }
        Some(d) if d.account_id == account && d.status != plan::FAILED => {
            return Err(ApiError::conflict(format!(
                "{domain} is already added (status {}); delete it first to start over",
                d.status
            )))
        }
        _ => {}
    }
    let count = node
        .store
        .list_domains(Some(&account))
        .await?
        .iter()
        .filter(|d| d.domain != domain)
        .count();
    if count >= node.quotas.max_ingest_domains {
        return Err(ApiError::conflict(format!(
            "at most {} ingest domains per account",
            node.quotas.max_ingest_domains
        )));
    }
    if !node.acme.allow_order(&account) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            10431,
            format!(
                "too many domain additions: at most {} per account per hour \
                 (max_domain_orders); try again later",
                node.acme.settings.max_domain_orders
            ),
        ));
    }
    // A failed row (of this or another account) gives the name up.
    if let Some(d) = &existing {
        node.store.delete_domain(&d.account_id, &d.domain).await?;
    }
    let now = now_micros();
    let mut row = DomainRow {
        domain,
        account_id: account,
        created: now,
        modified: now,
        status: plan::PENDING.into(),
        method: plan::ACME.into(),
        ..Default::default()
    };
    if let Some((cert, key)) = upload {
        row.method = plan::UPLOAD.into();
        row.cert_pem = cert;
        row.key_pem = node.acme.sealer.seal(&key)?;
        row.verify_token = crate::secret::new_secret();
        row.verify_value = crate::secret::new_secret();
    }
    node.store
        .insert_domain(&row)
        .await
        .map_err(|_| ApiError::conflict(format!("{} is already registered", row.domain)))?;
    tracing::info!(account = %row.account_id, domain = %row.domain, method = %row.method,
        "ingest domain added");
    if row.method == plan::UPLOAD {
        // Check at once: a name already pointed here is proven now.
        let port = match node.acme.settings.domain_verify_port {
            0 => node.urls.addrs.http.port(),
            p => p,
        };
        let outcome =
            crate::acme::verify::check(&row.domain, port, &row.verify_token, &row.verify_value)
                .await;
        row = plan::apply(&row, Due::Verify, outcome, now_micros(), rand::random());
        node.store.update_domain(&row).await?;
        node.domains.reload().await?;
    }
    node.acme.wake();
    let status = if row.status == plan::ACTIVE {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_status(status, ok(domain_json(&node, &row))))
}

fn with_status(status: StatusCode, r: Response) -> Response {
    let mut r = r.into_response();
    *r.status_mut() = status;
    r
}

async fn list_domains(
    State(node): State<St>,
    auth: Auth,
    Path(account): Path<String>,
) -> ApiResult {
    auth.scope(&account)?;
    let list = node.store.list_domains(Some(&account)).await?;
    Ok(ok_list(
        list.iter().map(|d| domain_json(&node, d)).collect(),
    ))
}

async fn get_domain(
    State(node): State<St>,
    auth: Auth,
    Path((account, domain)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    match node.store.domain(&domain.to_ascii_lowercase()).await? {
        Some(d) if d.account_id == account => Ok(ok(domain_json(&node, &d))),
        _ => Err(ApiError::not_found("ingest domain")),
    }
}

async fn remove_domain(
    State(node): State<St>,
    auth: Auth,
    Path((account, domain)): Path<(String, String)>,
) -> ApiResult {
    auth.scope(&account)?;
    let domain = domain.to_ascii_lowercase();
    if !node.store.delete_domain(&account, &domain).await? {
        return Err(ApiError::not_found("ingest domain"));
    }
    node.store.drop_challenges(&domain, 0).await?;
    node.domains.reload().await?;
    tracing::info!(account = %account, domain = %domain, "ingest domain removed");
    Ok(ok(Value::Null))
}

/// Largest token accepted in a challenge path.
const MAX_TOKEN: usize = 256;

/// HTTP-01: the key authorization of a token, from the store (any node).
async fn acme_challenge(State(node): State<St>, Path(token): Path<String>) -> Response {
    if token.len() > MAX_TOKEN {
        return StatusCode::NOT_FOUND.into_response();
    }
    match node.store.challenge(&format!("http:{token}")).await {
        Ok(Some(v)) => {
            metrics::counter!("banyan_acme_http01_answers_total").increment(1);
            tracing::info!("answered an HTTP-01 challenge");
            v.into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// An upload's proof token, answered by the node itself.
async fn banyan_proof(State(node): State<St>, Path(token): Path<String>) -> Response {
    if token.len() > MAX_TOKEN {
        return StatusCode::NOT_FOUND.into_response();
    }
    match node.store.verification_value(&token).await {
        Ok(Some(v)) => v.into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The routes of ingest domains and their public proof paths.
pub(super) fn routes(stream: &str) -> Router<St> {
    Router::new()
        .route(
            &format!("{stream}/ingest_domains"),
            axum::routing::post(add_domain).get(list_domains),
        )
        .route(
            &format!("{stream}/ingest_domains/{{domain}}"),
            get(get_domain).delete(remove_domain),
        )
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .route("/.well-known/banyan-domain/{token}", get(banyan_proof))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_reservations() {
        assert!(valid_domain("push.example.com"));
        for bad in ["localhost", "a..b", "-a.b", "A.b", "a_b.c", ""] {
            assert!(!valid_domain(bad), "{bad}");
        }
        let host = Some("live.example.com");
        assert!(reserved("live.example.com", host));
        assert!(reserved("a.live.example.com", host));
        assert!(!reserved("xlive.example.com", host));
        assert!(!reserved("example.com", host));
        assert!(!reserved("live.example.com", None));
    }

    #[test]
    fn bodies() {
        let parse = |s: &str| new_domain(serde_json::from_str(s).unwrap());
        let d = parse(r#"{"domain":"Push.Example.com."}"#).unwrap();
        assert_eq!(
            (d.domain.as_str(), d.upload.is_none()),
            ("push.example.com", true)
        );
        let e = parse(r#"{"domain":"push.example.com","certificate":"x"}"#).unwrap_err();
        assert!(e.message.contains("go together"), "{}", e.message);
        let e = parse(r#"{}"#).unwrap_err();
        assert!(e.message.contains("ACME"), "{}", e.message);
    }
}
