//! TLS for RTMPS (and HTTPS where enabled): the node's certificate, made
//! self-signed on first start unless configured, and a certificate resolver
//! that picks an account's custom ingest domain by SNI.
//!
//! Only the ring provider is compiled in; TLS 1.2 and 1.3 only.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use parking_lot::RwLock;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Write a file readable by the owner only: a new file is created 0600,
/// an existing one is set to 0600 before anything is written into it,
/// whatever its mode was.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Set an existing secret file to 0600 (a no-op when it already is); a
/// missing file is not an error.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode != 0o600 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(path = %path.display(), "secret file was mode {mode:o}; set to 600");
    }
    Ok(())
}

/// The node's own certificate and key files: configured, or a self-signed
/// pair made in the data dir on first start (`tls/cert.pem`, `tls/key.pem`,
/// key mode 0600) for `localhost`, `127.0.0.1` and the public host.
pub fn node_cert_files(
    data_dir: &Path,
    configured: Option<&(PathBuf, PathBuf)>,
    public_host: Option<&str>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let Some((c, k)) = configured {
        // The operator's own file: not changed, but a key others can read
        // is worth a warning.
        if let Ok(m) = std::fs::metadata(k) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %k.display(), "the TLS key is readable by other users (mode {:o})", m.permissions().mode() & 0o777);
            }
        }
        return Ok((c.clone(), k.clone()));
    }
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        make_private(&key).context("setting the tls key to 0600")?;
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).context("creating the tls dir")?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(h) = public_host {
        names.push(h.to_string());
    }
    let made = rcgen::generate_simple_self_signed(names).context("self-signed certificate")?;
    write_private(&key, made.key_pair.serialize_pem().as_bytes()).context("writing tls key")?;
    std::fs::write(&cert, made.cert.pem()).context("writing tls certificate")?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate for RTMPS");
    Ok((cert, key))
}

/// Parse a PEM chain and key into a certified key; checks the key matches.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .context("reading PEM certificates")?;
    if chain.is_empty() {
        return Err(anyhow!("no certificate in the PEM"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("reading the PEM private key")?
        .ok_or_else(|| anyhow!("no private key in the PEM"))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| anyhow!("the private key does not fit the certificate: {e}"))
}

/// How to make a certificate that works, for refusals.
pub const MAKE_ONE: &str = "make one with: openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
     -keyout key.pem -out cert.pem -subj /CN=NAME -addext subjectAltName=DNS:NAME \
     (or add the domain without a certificate and the node gets one by ACME)";

/// Check an uploaded chain for a custom domain: the key fits, the leaf
/// names the domain, and the chain is currently valid (each certificate is
/// checked up to the last one of the chain, taken as the anchor). A lone
/// self-signed certificate may be marked CA:TRUE (OpenSSL's `req -x509`
/// does so by default): only its dates and names count then.
pub fn validate_domain_cert(domain: &str, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let ck = certified_key(cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| format!("{e:#}; {MAKE_ONE}"))?;
    let name = ServerName::try_from(domain.to_string()).map_err(|_| "invalid domain name")?;
    let leaf = webpki::EndEntityCert::try_from(&ck.cert[0])
        .map_err(|e| format!("unreadable certificate ({e}); {MAKE_ONE}"))?;
    leaf.verify_is_valid_for_subject_name(&name).map_err(|_| {
        format!(
            "the certificate does not cover {domain}: its subjectAltName must list DNS:{domain}; \
             {MAKE_ONE}"
        )
    })?;
    let last = ck.cert.last().expect("chain checked non-empty");
    let anchor = webpki::anchor_from_trusted_cert(last)
        .map_err(|e| format!("unreadable certificate ({e}); {MAKE_ONE}"))?;
    let intermediates = if ck.cert.len() > 2 {
        &ck.cert[1..ck.cert.len() - 1]
    } else {
        &[]
    };
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let anchors = [anchor];
    let verified = leaf.verify_for_usage(
        algs.all,
        &anchors,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    match verified {
        Ok(_) => Ok(()),
        // webpki checks the dates before the basic constraints: a lone
        // self-signed CA:TRUE certificate that gets here is in its dates.
        Err(webpki::Error::CaUsedAsEndEntity) if ck.cert.len() == 1 => Ok(()),
        Err(webpki::Error::CaUsedAsEndEntity) => Err(format!(
            "the first certificate of the chain is a CA certificate (CA:TRUE), not the server's \
             own: put the server certificate first, then its intermediates; {MAKE_ONE}"
        )),
        Err(webpki::Error::CertExpired { .. }) => {
            Err(format!("the certificate has expired; {MAKE_ONE}"))
        }
        Err(webpki::Error::CertNotValidYet { .. }) => Err(format!(
            "the certificate is not valid yet (check the clock of the machine that made it); \
             {MAKE_ONE}"
        )),
        Err(webpki::Error::UnknownIssuer) => Err(format!(
            "the chain is incomplete: the last certificate does not sign the one before it; \
             upload the server certificate followed by every intermediate; {MAKE_ONE}"
        )),
        Err(e) => Err(format!(
            "the certificate chain does not verify ({e}); {MAKE_ONE}"
        )),
    }
}

/// The validity of the first certificate of a PEM chain: (notBefore,
/// notAfter) in µs since the epoch.
pub fn cert_validity(cert_pem: &str) -> Option<(i64, i64)> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let v = cert.validity();
    let micros = |t: &x509_parser::time::ASN1Time| t.timestamp().saturating_mul(1_000_000);
    Some((micros(&v.not_before), micros(&v.not_after)))
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A TLS-ALPN-01 challenge certificate for `domain`: self-signed, with the
/// critical acmeIdentifier extension holding SHA-256 of the key
/// authorization.
pub fn alpn_challenge_cert(domain: &str, key_authorization: &str) -> anyhow::Result<CertifiedKey> {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key_authorization.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(&digest));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Not `certified_key`: its consistency check parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| anyhow!("challenge key: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

/// Custom domains: lowercase name → (owning account, certificate).
pub type DomainMap = HashMap<String, (String, Arc<CertifiedKey>)>;

/// Chooses the certificate by SNI: a custom domain's own, otherwise the
/// node's. The domain map is swapped whole, so connections in progress are
/// unaffected.
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    /// Lowercase name → (owning account, certificate).
    domains: RwLock<Arc<DomainMap>>,
    /// Lowercase name → TLS-ALPN-01 challenge certificate.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// The node's own certificate when ordered by ACME (`--acme`), over
    /// the configured or self-signed one.
    own: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("domains", &self.domains.read().len())
            .finish()
    }
}

impl SniResolver {
    pub fn new(default: CertifiedKey) -> Arc<SniResolver> {
        Arc::new(SniResolver {
            default: Arc::new(default),
            domains: RwLock::new(Arc::new(HashMap::new())),
            challenges: RwLock::new(HashMap::new()),
            own: RwLock::new(None),
        })
    }

    /// Serve `ck` as the node's own certificate from now on.
    pub fn set_own(&self, ck: CertifiedKey) {
        *self.own.write() = Some(Arc::new(ck));
    }

    /// Answer TLS-ALPN-01 for `name` with `ck` (`None`: stop answering).
    pub fn set_challenge(&self, name: &str, ck: Option<CertifiedKey>) {
        let mut map = self.challenges.write();
        match ck {
            Some(ck) => map.insert(name.to_ascii_lowercase(), Arc::new(ck)),
            None => map.remove(&name.to_ascii_lowercase()),
        };
    }

    /// The names with a challenge certificate.
    pub fn challenge_names(&self) -> Vec<String> {
        self.challenges.read().keys().cloned().collect()
    }

    /// The TLS-ALPN-01 certificate for a name, if one is being answered.
    pub fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges
            .read()
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Replace the custom domains: lowercase name → (account, certificate).
    pub fn set_domains(&self, domains: DomainMap) {
        *self.domains.write() = Arc::new(domains);
    }

    /// The account owning a custom domain (for ingest to refuse another
    /// account's key arriving through it), `None` for the node's own names.
    pub fn account_of(&self, server_name: &str) -> Option<String> {
        self.domains
            .read()
            .get(&server_name.to_ascii_lowercase())
            .map(|(account, _)| account.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some((_, ck)) = self.domains.read().get(&name) {
                return Some(ck.clone());
            }
        }
        if let Some(own) = self.own.read().clone() {
            return Some(own);
        }
        Some(self.default.clone())
    }
}

/// Answers only TLS-ALPN-01: the challenge certificate of the name in SNI.
#[derive(Debug)]
struct ChallengeResolver(Arc<SniResolver>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.challenge(hello.server_name()?)
    }
}

/// The config for a ClientHello offering `acme-tls/1`: negotiates that
/// protocol and shows the challenge certificate (the connection is closed
/// after the handshake).
pub fn challenge_config(resolver: Arc<SniResolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ChallengeResolver(resolver)));
    cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// A server config (TLS 1.2+, ring) using the resolver.
pub fn server_config(resolver: Arc<SniResolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_are_0600_whatever_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        make_private(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        make_private(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn challenge_certificates_carry_the_key_authorization() {
        use sha2::Digest as _;
        let ck = alpn_challenge_cert("live.example.test", "token.thumbprint").unwrap();
        assert_eq!(ck.cert.len(), 1);
        let (_, c) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        let ext = c
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 0x20]);
        assert_eq!(
            &ext.value[2..],
            &sha2::Sha256::digest(b"token.thumbprint")[..]
        );
    }

    #[test]
    fn a_lone_self_signed_ca_certificate_is_accepted() {
        let mut p = rcgen::CertificateParams::new(vec!["push.example.test".into()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_leaf = p.self_signed(&key).unwrap().pem();
        let kp = key.serialize_pem();
        validate_domain_cert("push.example.test", &ca_leaf, &kp).unwrap();
        // First in a chain, a CA certificate is a mistake, said so.
        let (other, _) = {
            let o = rcgen::generate_simple_self_signed(vec!["x.example.test".into()]).unwrap();
            (o.cert.pem(), o.key_pair.serialize_pem())
        };
        let e = validate_domain_cert("push.example.test", &format!("{ca_leaf}{other}"), &kp)
            .unwrap_err();
        assert!(
            e.contains("put the server certificate first") || e.contains("incomplete"),
            "{e}"
        );
        assert!(e.contains("openssl req"), "says how to make one: {e}");
    }

    #[test]
    fn self_signed_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = node_cert_files(dir.path(), None, Some("live.example.test")).unwrap();
        assert_eq!(mode(&k), 0o600);
        let pem = std::fs::read(&c).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = node_cert_files(dir.path(), None, None).unwrap();
        assert_eq!(mode(&k), 0o600, "an existing key is set back to 0600");
        assert_eq!(std::fs::read(&again.0).unwrap(), pem);
        let ck = certified_key(&pem, &std::fs::read(&k).unwrap()).unwrap();
        server_config(SniResolver::new(ck)).unwrap();
    }

    #[test]
    fn domain_certificates_are_checked() {
        let made = rcgen::generate_simple_self_signed(vec!["push.example.test".into()]).unwrap();
        let (cert, key) = (made.cert.pem(), made.key_pair.serialize_pem());
        validate_domain_cert("push.example.test", &cert, &key).unwrap();
        let e = validate_domain_cert("other.example.test", &cert, &key).unwrap_err();
        assert!(e.contains("does not cover"), "{e}");
        let other = rcgen::generate_simple_self_signed(vec!["push.example.test".into()]).unwrap();
        let e = validate_domain_cert("push.example.test", &cert, &other.key_pair.serialize_pem())
            .unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(validate_domain_cert("push.example.test", "junk", &key).is_err());
    }
}
