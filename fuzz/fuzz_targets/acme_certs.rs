//! What an ACME server sends back as a certificate chain (PEM), read for
//! its validity dates, and what an account uploads (checked as the API
//! does): no panic on any bytes. Raw bytes are tried both as PEM text and
//! as the DER inside a PEM block.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = banyan::tls::cert_validity(&text);
    let wrapped = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(data)
    );
    if let Some((from, to)) = banyan::tls::cert_validity(&wrapped) {
        let _ = to.saturating_sub(from);
    }
    let _ = banyan::tls::validate_domain_cert("push.example.test", &wrapped, &text);
});
