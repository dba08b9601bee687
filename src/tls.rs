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

/// Check an uploaded chain for a custom domain: the key fits, the leaf
/// names the domain, and the chain is currently valid (each certificate is
/// checked up to the last one of the chain, taken as the anchor).
pub fn validate_domain_cert(domain: &str, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let ck =
        certified_key(cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| format!("{e:#}"))?;
    let name = ServerName::try_from(domain.to_string()).map_err(|_| "invalid domain name")?;
    let leaf = webpki::EndEntityCert::try_from(&ck.cert[0])
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the certificate does not cover {domain}"))?;
    let last = ck.cert.last().expect("chain checked non-empty");
    let anchor = webpki::anchor_from_trusted_cert(last)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let intermediates = if ck.cert.len() > 2 {
        &ck.cert[1..ck.cert.len() - 1]
    } else {
        &[]
    };
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    leaf.verify_for_usage(
        algs.all,
        &[anchor],
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => "the certificate has expired".to_string(),
        webpki::Error::CertNotValidYet { .. } => "the certificate is not valid yet".to_string(),
        e => format!("the certificate chain does not verify: {e}"),
    })?;
    Ok(())
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
        })
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
        Some(self.default.clone())
    }
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
