//! HLS viewer session ids the node issues itself (sans-IO).
//!
//! An id is `hex(issued_at u64 BE) hex(nonce u64) hex(HMAC-SHA256)`, 96 hex
//! digits; the tag covers a purpose label, the stream's uid, the issue time
//! and the nonce, under a secret shared by the cluster's nodes. So an id
//! cannot be made up, cannot be moved to another stream, and must start
//! being used within [`START_WINDOW_SECS`] of its issue (a started session
//! then lives while it keeps fetching).

use std::collections::HashMap;
use std::net::IpAddr;

use ring::hmac;

/// A session must make its first counted fetch within this long of issue.
pub const START_WINDOW_SECS: u64 = 60;
/// Issue times this far ahead of the local clock are still accepted (clocks
/// of a cluster's nodes differ a little).
const SKEW_SECS: u64 = 5;
const TAG_LEN: usize = 32;
/// Length of an id in hex digits.
pub const ID_LEN: usize = 2 * (8 + 8 + TAG_LEN);
const LABEL: &[u8] = b"banyan hls session v1\0";

/// The verdict on a session id presented with a media playlist fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Issued by a node of this cluster for this stream; `key` names the
    /// session, `issued` is its issue time (Unix seconds).
    Valid { key: u64, issued: u64 },
    /// Not an id, another stream's id, or a forgery.
    Invalid,
}

/// The key session ids are signed with.
pub struct SessionKey(hmac::Key);

impl SessionKey {
    pub fn new(secret: &[u8]) -> SessionKey {
        SessionKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A key of this process only (no cluster to share it with).
    pub fn random() -> SessionKey {
        use ring::rand::SecureRandom as _;
        let mut secret = [0u8; 32];
        // The OS RNG failing is not recoverable; a fixed key is not an option.
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .expect("OS random number generator");
        SessionKey::new(&secret)
    }

    fn message(uid: &str, issued: u64, nonce: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(LABEL.len() + uid.len() + 17);
        m.extend_from_slice(LABEL);
        m.extend_from_slice(uid.as_bytes());
        m.push(0);
        m.extend_from_slice(&issued.to_be_bytes());
        m.extend_from_slice(&nonce.to_be_bytes());
        m
    }

    /// A new id for a viewer of `uid` at `now` (Unix seconds).
    pub fn issue(&self, uid: &str, now: u64, nonce: u64) -> String {
        let tag = hmac::sign(&self.0, &Self::message(uid, now, nonce));
        let mut out = format!("{now:016x}{nonce:016x}");
        for b in tag.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Check an id presented for `uid`: any byte string is safe here.
    pub fn verify(&self, uid: &str, id: &str) -> Verdict {
        if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Verdict::Invalid;
        }
        let (Ok(issued), Ok(nonce)) = (
            u64::from_str_radix(&id[..16], 16),
            u64::from_str_radix(&id[16..32], 16),
        ) else {
            return Verdict::Invalid;
        };
        let mut tag = [0u8; TAG_LEN];
        for (i, t) in tag.iter_mut().enumerate() {
            let at = 32 + 2 * i;
            match u8::from_str_radix(&id[at..at + 2], 16) {
                Ok(b) => *t = b,
                Err(_) => return Verdict::Invalid,
            }
        }
        match hmac::verify(&self.0, &Self::message(uid, issued, nonce), &tag) {
            Ok(()) => Verdict::Valid { key: nonce, issued },
            Err(_) => Verdict::Invalid,
        }
    }
}

/// Whether a session issued at `issued` may still start at `now`.
pub fn may_start(issued: u64, now: u64) -> bool {
    issued <= now.saturating_add(SKEW_SECS) && now.saturating_sub(issued) <= START_WINDOW_SECS
}

/// Counted sessions: in total and per client address.
#[derive(Default)]
pub(crate) struct SessionCounts {
    pub total: usize,
    pub per_address: HashMap<IpAddr, usize>,
}

impl SessionCounts {
    pub fn remove(&mut self, ip: Option<IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_stream_key_and_time() {
        let k = SessionKey::new(b"cluster secret");
        let id = k.issue("a", 1000, 7);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(
            k.verify("a", &id),
            Verdict::Valid {
                key: 7,
                issued: 1000
            }
        );
        assert_eq!(k.verify("b", &id), Verdict::Invalid, "another stream");
        assert_eq!(
            SessionKey::new(b"other").verify("a", &id),
            Verdict::Invalid,
            "another cluster"
        );
        let mut forged = id.clone().into_bytes();
        forged[5] = if forged[5] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(k.verify("a", &forged), Verdict::Invalid, "moved issue time");
        for junk in ["", "zz", "0123", &"f".repeat(ID_LEN), &"é".repeat(48)] {
            assert_eq!(k.verify("a", junk), Verdict::Invalid, "{junk}");
        }
        assert!(may_start(1000, 1000 + START_WINDOW_SECS));
        assert!(!may_start(1000, 1001 + START_WINDOW_SECS));
        assert!(may_start(1003, 1000));
        assert!(!may_start(1000 + SKEW_SECS + 1, 1000));
    }
}
