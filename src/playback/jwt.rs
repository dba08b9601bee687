//! Playback tokens: RS256 JSON Web Tokens as Cloudflare Stream signs them
//! (sans-IO: bytes and times in, results out).
//!
//! Header `{"alg": "RS256", "kid": <key id>}`; claims `{"sub": <input uid>,
//! "kid", "exp", "nbf"?, "accessRules"?}`. Access rules are evaluated in
//! order, the first that matches decides; when none matches the request is
//! allowed. Rule types: `any`, `ip.src` (a list of CIDRs or addresses).
//! A rule this node cannot evaluate (`ip.geoip.country`, or anything else)
//! makes the whole token invalid: it fails closed.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

/// At most this many access rules in a token, and addresses per rule.
pub const MAX_RULES: usize = 16;
pub const MAX_RULE_IPS: usize = 64;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm is not RS256")]
    Algorithm,
    #[error("bad claims: {0}")]
    Claims(String),
    #[error("bad signature")]
    Signature,
}

/// An IP network (`a.b.c.d/n`, `x::/n`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    len: u8,
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Net { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(i)) << 96,
                self.len,
            ),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), self.len),
            _ => return false,
        };
        if bits == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - u32::from(bits));
        a & mask == b & mask
    }
}

/// One access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Any { allow: bool },
    IpSrc { allow: bool, nets: Vec<Net> },
}

impl Rule {
    fn matches(&self, client: Option<IpAddr>) -> Option<bool> {
        match self {
            Rule::Any { allow } => Some(*allow),
            Rule::IpSrc { allow, nets } => {
                let ip = client?;
                nets.iter().any(|n| n.contains(ip)).then_some(*allow)
            }
        }
    }
}

/// Whether `rules` let `client` play. An `ip.src` rule with no known client
/// address decides against the request.
pub fn allowed(rules: &[Rule], client: Option<IpAddr>) -> bool {
    for r in rules {
        if client.is_none() && matches!(r, Rule::IpSrc { .. }) {
            return false;
        }
        if let Some(allow) = r.matches(client) {
            return allow;
        }
    }
    true
}

#[derive(Deserialize)]
struct RawRule {
    #[serde(rename = "type")]
    kind: String,
    action: String,
    #[serde(default)]
    ip: Option<Vec<String>>,
}

/// Parse Cloudflare's `accessRules` array.
pub fn parse_rules(v: &Value) -> Result<Vec<Rule>, String> {
    let raw: Vec<RawRule> = serde_json::from_value(v.clone())
        .map_err(|e| format!("accessRules must be a list of rules: {e}"))?;
    if raw.len() > MAX_RULES {
        return Err(format!("accessRules: at most {MAX_RULES} rules"));
    }
    raw.into_iter()
        .map(|r| {
            let allow = match r.action.as_str() {
                "allow" => true,
                "block" => false,
                a => return Err(format!("accessRules: action {a:?} is not allow or block")),
            };
            match r.kind.as_str() {
                "any" => Ok(Rule::Any { allow }),
                "ip.src" => {
                    let ips = r.ip.unwrap_or_default();
                    if ips.is_empty() || ips.len() > MAX_RULE_IPS {
                        return Err(format!(
                            "accessRules: ip.src needs 1 to {MAX_RULE_IPS} addresses"
                        ));
                    }
                    let nets = ips
                        .iter()
                        .map(|s| {
                            Net::parse(s).ok_or_else(|| format!("accessRules: bad CIDR {s:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(Rule::IpSrc { allow, nets })
                }
                t => Err(format!(
                    "accessRules: rule type {t:?} cannot be evaluated by this node"
                )),
            }
        })
        .collect()
}

/// The checked claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub rules: Vec<Rule>,
}

/// A parsed, not yet verified token.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub kid: String,
    /// `header.payload`: what the signature covers.
    pub signed: &'a str,
    pub signature: Vec<u8>,
    pub claims: Claims,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// Parse a token (any bytes: never panics). Checks the shape, the
/// algorithm and the claims' types, not the signature nor the times.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
    let payload: Value = serde_json::from_slice(&b64(p)?).map_err(|_| JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JwtError::Algorithm);
    }
    let kid = header
        .get("kid")
        .or_else(|| payload.get("kid"))
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Claims("no kid".into()))?
        .to_string();
    let sub = payload
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| JwtError::Claims("sub".into()))?
        .to_string();
    let exp = payload
        .get("exp")
        .and_then(int)
        .ok_or_else(|| JwtError::Claims("exp".into()))?;
    let nbf = match payload.get("nbf") {
        None | Some(Value::Null) => None,
        Some(v) => Some(int(v).ok_or_else(|| JwtError::Claims("nbf".into()))?),
    };
    let rules = match payload.get("accessRules") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_rules(v).map_err(JwtError::Claims)?,
    };
    Ok(Parsed {
        kid,
        signed: &token[..h.len() + 1 + p.len()],
        signature: b64(s)?,
        claims: Claims {
            sub,
            exp,
            nbf,
            rules,
        },
    })
}

/// Whether the claims are in force at `now` (Unix seconds).
pub fn in_time(c: &Claims, now: i64) -> bool {
    now < c.exp && c.nbf.is_none_or(|nbf| nbf <= now)
}

/// Verify the RS256 signature with the public key (`n`, `e` big-endian).
pub fn verify(p: &Parsed<'_>, n: &[u8], e: &[u8]) -> Result<(), JwtError> {
    ring::signature::RsaPublicKeyComponents { n, e }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            p.signed.as_bytes(),
            &p.signature,
        )
        .map_err(|_| JwtError::Signature)
}

/// Sign `claims` (a JSON object) with a PKCS#1 DER private key.
pub fn sign(key_der: &[u8], kid: &str, claims: &Value) -> anyhow::Result<String> {
    let key = ring::signature::RsaKeyPair::from_der(key_der)
        .map_err(|e| anyhow::anyhow!("unusable signing key: {e}"))?;
    let header = serde_json::json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        out.as_bytes(),
        &mut sig,
    )
    .map_err(|_| anyhow::anyhow!("signing failed"))?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn networks() {
        let n = Net::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.9.9".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Net::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        assert!(Net::parse("1.2.3.4")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        for bad in ["1.2.3.4/33", "x/8", "", "1.2.3.4/-1"] {
            assert!(Net::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rules_in_order_and_fail_closed() {
        let rules = parse_rules(&json!([
            {"type": "ip.src", "ip": ["127.0.0.0/8"], "action": "allow"},
            {"type": "any", "action": "block"}
        ]))
        .unwrap();
        assert!(allowed(&rules, ip("127.0.0.1")));
        assert!(!allowed(&rules, ip("192.0.2.1")));
        assert!(!allowed(&rules, None));
        let block =
            parse_rules(&json!([{"type": "ip.src", "ip": ["192.0.2.0/24"], "action": "block"}]))
                .unwrap();
        assert!(!allowed(&block, ip("192.0.2.9")));
        assert!(allowed(&block, ip("198.51.100.1")), "no rule matched");
        assert!(allowed(&[], ip("1.1.1.1")));
        for bad in [
            json!([{"type": "ip.geoip.country", "country": ["US"], "action": "allow"}]),
            json!([{"type": "any", "action": "maybe"}]),
            json!([{"type": "ip.src", "ip": [], "action": "allow"}]),
            json!({"type": "any"}),
        ] {
            assert!(parse_rules(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_sign_verify() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
        let claims = json!({"sub": "abc", "kid": "k1", "exp": 2000, "nbf": 1000,
                            "accessRules": [{"type": "any", "action": "allow"}]});
        let token = sign(der.as_bytes(), "k1", &claims).unwrap();
        let p = parse(&token).unwrap();
        assert_eq!(p.kid, "k1");
        assert_eq!(p.claims.sub, "abc");
        verify(&p, &n, &e).unwrap();
        assert!(in_time(&p.claims, 1000) && in_time(&p.claims, 1999));
        assert!(!in_time(&p.claims, 999) && !in_time(&p.claims, 2000));

        // A changed payload, a foreign key, another algorithm: refused.
        let other = json!({"sub": "abd", "kid": "k1", "exp": 2000});
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(other.to_string());
        parts[1] = &forged_payload;
        let forged = parts.join(".");
        assert_eq!(
            verify(&parse(&forged).unwrap(), &n, &e),
            Err(JwtError::Signature)
        );
        let key2 = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let (n2, e2) = (key2.n().to_bytes_be(), key2.e().to_bytes_be());
        assert_eq!(verify(&p, &n2, &e2), Err(JwtError::Signature));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(parse(&none).unwrap_err(), JwtError::Algorithm);
        for junk in ["", "a.b", "a.b.c.d", "...", "e30.e30.", "\u{0}.\u{1}.\u{2}"] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
    }
}
