//! The cluster certificate authority and the TLS configurations of links.
//!
//! Every node holds a certificate issued by the cluster CA whose DNS name is
//! the node's name. Both ends of a link present theirs and both verify the
//! other's against the CA: a peer without a CA-signed certificate cannot
//! finish the handshake, so it can neither join nor pull.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::LinkError;

/// The ALPN protocol name of the link.
pub const ALPN: &[u8] = b"banyan-link/1";

const CA_NAME: &str = "Banyan cluster CA";

fn tls_err(what: &str, e: impl std::fmt::Display) -> LinkError {
    LinkError::Tls(format!("{what}: {e}"))
}

/// The cluster certificate authority: its certificate and private key (PEM).
/// Only the operator's tooling needs the key; nodes need [`ClusterTls`].
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, LinkError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, LinkError> {
        let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|e| tls_err("CA certificate", e))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issue the certificate of node `node_name` (a DNS-like name: letters,
    /// digits, `-`, `.`), returning everything that node needs.
    pub fn issue_node_cert(&self, node_name: &str) -> Result<ClusterTls, LinkError> {
        ServerName::try_from(node_name.to_string())
            .map_err(|_| LinkError::Tls(format!("node name {node_name:?} is not a DNS name")))?;
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(|e| tls_err("CA key", e))?;
        // The issuer is identified by its name and key, which the stored
        // certificate shares with this re-signed copy.
        let issuer = ca_params()?
            .self_signed(&ca_key)
            .map_err(|e| tls_err("CA certificate", e))?;
        let key = KeyPair::generate().map_err(|e| tls_err("node key", e))?;
        let mut params =
            CertificateParams::new(vec![node_name.to_string()]).map_err(|e| tls_err("node", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &issuer, &ca_key)
            .map_err(|e| tls_err("node certificate", e))?;
        Ok(ClusterTls {
            node_name: node_name.to_string(),
            ca_pem: self.cert_pem.clone(),
            node_cert_pem: cert.pem(),
            node_key_pem: key.serialize_pem(),
        })
    }
}

/// What a node needs for its links: its name, the CA certificate it
/// trusts, its own certificate (naming it) and key (PEM).
#[derive(Clone)]
pub struct ClusterTls {
    pub node_name: String,
    pub ca_pem: String,
    pub node_cert_pem: String,
    pub node_key_pem: String,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Shorthand for [`ClusterCa::generate`].
pub fn generate_ca() -> Result<ClusterCa, LinkError> {
    ClusterCa::generate()
}

/// Shorthand for [`ClusterCa::issue_node_cert`].
pub fn issue_node_cert(ca: &ClusterCa, node_name: &str) -> Result<ClusterTls, LinkError> {
    ca.issue_node_cert(node_name)
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(what, e))?;
    if certs.is_empty() {
        return Err(LinkError::Tls(format!("{what}: no certificate")));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClusterTls {
    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, LinkError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&self.ca_pem, "CA certificate")? {
            roots.add(c).map_err(|e| tls_err("CA certificate", e))?;
        }
        Ok(Arc::new(roots))
    }

    fn identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), LinkError> {
        let chain = certs(&self.node_cert_pem, "node certificate")?;
        let key = rustls_pemfile::private_key(&mut self.node_key_pem.as_bytes())
            .map_err(|e| tls_err("node key", e))?
            .ok_or_else(|| LinkError::Tls("node key: none found".into()))?;
        Ok((chain, key))
    }

    /// The rustls server side: requires a CA-signed client certificate.
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, LinkError> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
                .build()
                .map_err(|e| tls_err("client verifier", e))?;
        let (chain, key) = self.identity()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("server config", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| tls_err("server config", e))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The rustls client side: presents the node certificate, trusts only
    /// the CA.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, LinkError> {
        let (chain, key) = self.identity()?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("client config", e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err("client config", e))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// True when the end-entity certificate `cert` (already verified against
/// the CA during the handshake) names node `name`.
pub(crate) fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&server_name).is_ok()
}
