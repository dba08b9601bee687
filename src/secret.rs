//! Random identifiers and secrets, and the hashes tokens are stored as.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A 32-hex-digit identifier (16 bytes from the OS RNG).
pub fn new_id() -> String {
    random_hex(16)
}

/// A secret: 32 bytes from the OS RNG, as 64 hex digits. Fits an SRT
/// passphrase (10..=79 characters) and an RTMP stream key alike.
pub fn new_secret() -> String {
    random_hex(32)
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The SHA-256 of a token, in hex: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A 32-hex-digit identifier, as accounts and live inputs use.
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_are_distinct_and_well_formed() {
        let (a, b) = (new_id(), new_id());
        assert!(is_id(&a) && is_id(&b) && a != b);
        let s = new_secret();
        assert_eq!(s.len(), 64);
        assert_ne!(s, new_secret());
        assert_eq!(token_hash("x").len(), 64);
        assert!(!is_id("ABCDEF0123456789abcdef0123456789"));
    }
}
