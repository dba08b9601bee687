//! Private keys of domains at rest: sealed with AES-256-GCM under a key
//! from the node's configuration (`--secret-key-file`), or kept as PEM
//! when none is configured. A sealed value is `sealed:v1:` and base64 of
//! nonce ‖ ciphertext.

use base64::Engine as _;
use ring::aead;
use sha2::Digest as _;

const PREFIX: &str = "sealed:v1:";

/// The sealing key, or none (keys stored as they are).
#[derive(Clone, Default)]
pub struct Sealer(Option<[u8; 32]>);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sealer(on)"
        } else {
            "Sealer(off)"
        })
    }
}

impl Sealer {
    /// A sealer keyed by SHA-256 of `secret` (a file's contents).
    pub fn new(secret: &[u8]) -> Sealer {
        Sealer(Some(sha2::Sha256::digest(secret).into()))
    }

    fn key(k: &[u8; 32]) -> aead::LessSafeKey {
        // Invariant: 32 bytes is AES-256's key length.
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, k).expect("key length"))
    }

    /// Seal a PEM for storage (unchanged without a key).
    pub fn seal(&self, pem: &str) -> anyhow::Result<String> {
        let Some(k) = &self.0 else {
            return Ok(pem.to_string());
        };
        let mut nonce = [0u8; 12];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
        let mut data = pem.as_bytes().to_vec();
        Self::key(k)
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("sealing a key failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// The PEM of a stored value: a sealed one needs the same key.
    pub fn open(&self, stored: &str) -> anyhow::Result<String> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let Some(k) = &self.0 else {
            anyhow::bail!("the key is sealed and this node has no secret_key_file");
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| anyhow::anyhow!("a sealed key is not base64"))?;
        if raw.len() < 12 + 16 {
            anyhow::bail!("a sealed key is too short");
        }
        let (nonce, data) = raw.split_at(12);
        let mut data = data.to_vec();
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("a sealed key's nonce is malformed"))?;
        let plain = Self::key(k)
            .open_in_place(nonce, aead::Aad::empty(), &mut data)
            .map_err(|_| anyhow::anyhow!("a sealed key does not open with this secret_key_file"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| anyhow::anyhow!("a sealed key is not text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_key() {
        let s = Sealer::new(b"cluster secret");
        let sealed = s.seal("-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("PRIVATE"));
        assert_eq!(s.open(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
        assert!(Sealer::new(b"other").open(&sealed).is_err());
        assert!(Sealer::default().open(&sealed).is_err());
        assert_eq!(Sealer::default().seal("pem").unwrap(), "pem");
        assert_eq!(s.open("plain pem").unwrap(), "plain pem");
        for bad in ["sealed:v1:!!", "sealed:v1:AAAA", "sealed:v1:"] {
            assert!(s.open(bad).is_err(), "{bad}");
        }
    }
}
