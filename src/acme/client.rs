//! The ACME client side of one order (RFC 8555) with `instant-acme`:
//! the node's account, the order, publishing the challenge answer where
//! every node can give it, and the CA's verdict in words.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};

use super::plan::Outcome;
use super::Challenge;

/// Longest one HTTP exchange with the CA may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// instant-acme's HTTP client: reqwest with the node's trusted roots
/// (rustls on ring).
struct Http(reqwest::Client);

impl instant_acme::HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = reqwest::Body::wrap(body);
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::from(rsp)))
        })
    }
}

fn http_client(roots: &[reqwest::Certificate]) -> anyhow::Result<Box<Http>> {
    let mut b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(3));
    for r in roots {
        b = b.add_root_certificate(r.clone());
    }
    Ok(Box::new(Http(b.build()?)))
}

/// The node's ACME account on `directory`: restored from the stored
/// credentials (shared by every node of a cluster) or created once.
pub async fn account(
    store: &crate::store::Store,
    directory: &str,
    email: Option<&str>,
    roots: &[reqwest::Certificate],
    sealer: &super::Sealer,
) -> anyhow::Result<Account> {
    let name = format!("acme_account:{directory}");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT value FROM node_secrets WHERE name = $1")
            .bind(&name)
            .fetch_optional(store.pool())
            .await?;
    let creds = match stored {
        Some(json) => json,
        None => {
            let contact = email.map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (_, creds) = Account::builder_with_http(http_client(roots)?)
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    directory.to_string(),
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating the ACME account: {e}"))?;
            // Another node may have made one at the same time: the first
            // stored is used by all.
            store
                .cluster_secret(&name, &sealer.seal(&serde_json::to_string(&creds)?)?)
                .await?
        }
    };
    // Sealed like the domains' keys when a secret key file is configured.
    let creds: AccountCredentials = serde_json::from_str(&sealer.open(&creds)?)?;
    Account::builder_with_http(http_client(roots)?)
        .from_credentials(creds)
        .await
        .map_err(|e| anyhow::anyhow!("loading the ACME account: {e}"))
}

/// Where a challenge answer is published.
pub trait Publish: Send + Sync {
    /// Answer HTTP-01 `token` for `domain` with `key_auth`.
    fn http01(
        &self,
        domain: &str,
        token: &str,
        key_auth: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Answer TLS-ALPN-01 for `domain` with `key_auth`.
    fn tls_alpn01(
        &self,
        domain: &str,
        key_auth: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The CA's problem in words, and whether retrying as is may help.
fn problem_outcome(p: &Problem) -> Outcome {
    let kind = p
        .r#type
        .as_deref()
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:");
    let mut words = p.detail.clone().unwrap_or_else(|| "no detail".into());
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            words.push_str("; ");
            words.push_str(d);
        }
    }
    let reason = format!("the CA refused ({kind}): {words}");
    match kind {
        "badNonce" | "rateLimited" | "serverInternal" => Outcome::Retry(reason),
        _ => Outcome::Refused(reason),
    }
}

fn outcome_of(e: instant_acme::Error) -> Outcome {
    match e {
        instant_acme::Error::Api(p) => problem_outcome(&p),
        e => Outcome::Retry(format!("talking to the CA failed: {e}")),
    }
}

/// Order a certificate for `domain`: answer the challenge, wait for the
/// CA's verdict, send a CSR for a fresh P-256 key. `Done` carries the
/// chain and the key as PEM.
pub async fn order(
    account: &Account,
    domain: &str,
    challenge: Challenge,
    publish: &impl Publish,
) -> Outcome {
    match order_inner(account, domain, challenge, publish).await {
        Ok(o) => o,
        Err(e) => outcome_of(e),
    }
}

async fn order_inner(
    account: &Account,
    domain: &str,
    challenge: Challenge,
    publish: &impl Publish,
) -> Result<Outcome, instant_acme::Error> {
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let kind = match challenge {
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Challenge::Http01 => ChallengeType::Http01,
    };
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut a = a?;
        match a.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Ok(Outcome::Refused(format!(
                    "the CA's authorization for {domain} is {other:?}"
                )))
            }
        }
        let Some(mut ch) = a.challenge(kind.clone()) else {
            return Ok(Outcome::Refused(format!(
                "the CA offers no {kind:?} challenge for {domain}"
            )));
        };
        let key_auth = ch.key_authorization();
        let published = match challenge {
            Challenge::Http01 => publish.http01(domain, &ch.token, key_auth.as_str()).await,
            Challenge::TlsAlpn01 => publish.tls_alpn01(domain, key_auth.as_str()).await,
        };
        if let Err(e) = published {
            return Ok(Outcome::Retry(format!(
                "publishing the challenge answer failed: {e:#}"
            )));
        }
        ch.set_ready().await?;
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(90));
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        // The reason is in the failed challenge.
        let mut reason = format!("the order for {domain} is {status:?}");
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            a.refresh().await?;
            if let Some(p) = a.challenges.iter().find_map(|c| c.error.clone()) {
                if let Outcome::Refused(r) | Outcome::Retry(r) = problem_outcome(&p) {
                    reason = r;
                }
            }
        }
        return Ok(Outcome::Refused(reason));
    }
    let key = rcgen::KeyPair::generate().map_err(|_| instant_acme::Error::Crypto)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .map_err(|_| instant_acme::Error::Str("a CSR for this name"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|_| instant_acme::Error::Crypto)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&retry).await?;
    let Some((not_before, not_after)) = crate::tls::cert_validity(&chain) else {
        return Ok(Outcome::Retry(
            "the CA sent an unreadable certificate".into(),
        ));
    };
    Ok(Outcome::Done {
        cert_pem: chain,
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_reasons() {
        let p: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:connection",
            "detail": "Connection refused",
            "status": 400
        }))
        .unwrap();
        assert_eq!(
            problem_outcome(&p),
            Outcome::Refused("the CA refused (connection): Connection refused".into())
        );
        let p: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:badNonce", "detail": "JWS has an invalid anti-replay nonce"
        }))
        .unwrap();
        assert!(matches!(problem_outcome(&p), Outcome::Retry(_)));
    }
}
