//! The body of a live-input notification, in the shape Cloudflare sends,
//! and its `Webhook-Signature` header.
//!
//! ```json
//! {"name": "Live Webhook", "text": "Notification type: Stream Live Input\n...",
//!  "data": {"notification_name": "Stream Live Input", "input_id": "<uid>",
//!           "event_type": "live_input.connected", "updated_at": "<RFC 3339>"},
//!  "ts": <unix seconds>}
//! ```
//!
//! `live_input.errored` adds `data.live_input_errored = {"error": {"code",
//! "message"}, "video_codec", "audio_codec"}`. The signature header is
//! `time=<unix seconds>,sig1=<hex HMAC-SHA256(secret, "<time>.<body>")>`,
//! made when the request is sent.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// What happened to a live input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Connected,
    Disconnected,
    /// A refused publish or a broken stream, with Banyan's error code.
    Errored(ErrorCode),
}

/// The codes of `live_input.errored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A publish to a disabled input.
    InputDisabled,
    /// A second publisher while the input is live.
    AlreadyPublishing,
    /// A key that does not allow publishing this input (its playback key,
    /// or a key used on another account's domain).
    KeyRefused,
    /// The publisher's session broke on malformed protocol data.
    MalformedStream,
    /// Damaged MPEG-TS was dropped from the stream.
    DamagedMedia,
}

impl ErrorCode {
    /// From an ingest refusal or breakage reason.
    pub fn from_reason(reason: &str) -> ErrorCode {
        match reason {
            "disabled" => ErrorCode::InputDisabled,
            "busy" => ErrorCode::AlreadyPublishing,
            "damaged_ts" => ErrorCode::DamagedMedia,
            "protocol" => ErrorCode::MalformedStream,
            _ => ErrorCode::KeyRefused,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::InputDisabled => "ERR_INPUT_DISABLED",
            ErrorCode::AlreadyPublishing => "ERR_ALREADY_PUBLISHING",
            ErrorCode::KeyRefused => "ERR_KEY_REFUSED",
            ErrorCode::MalformedStream => "ERR_MALFORMED_STREAM",
            ErrorCode::DamagedMedia => "ERR_DAMAGED_MEDIA",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InputDisabled => "a publish was refused: the live input is disabled",
            ErrorCode::AlreadyPublishing => {
                "a publish was refused: the live input already has a publisher"
            }
            ErrorCode::KeyRefused => "a publish was refused: the key does not allow publishing",
            ErrorCode::MalformedStream => "the publisher's session broke on malformed data",
            ErrorCode::DamagedMedia => "damaged media was dropped from the stream",
        }
    }
}

impl EventKind {
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::Connected => "live_input.connected",
            EventKind::Disconnected => "live_input.disconnected",
            EventKind::Errored(_) => "live_input.errored",
        }
    }

    /// The `result` label of the events metric.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Errored(_) => "errored",
        }
    }
}

/// The notification body for input `uid` at `at` (microseconds since the
/// Unix epoch).
pub fn body(uid: &str, kind: EventKind, at: i64) -> String {
    let updated_at = time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let event_type = kind.event_type();
    let mut data = json!({
        "notification_name": "Stream Live Input",
        "input_id": uid,
        "event_type": event_type,
        "updated_at": updated_at,
    });
    if let EventKind::Errored(code) = kind {
        data["live_input_errored"] = json!({
            "error": {"code": code.code(), "message": code.message()},
            "video_codec": "",
            "audio_codec": "",
        });
    }
    json!({
        "name": "Live Webhook",
        "text": format!(
            "Notification type: Stream Live Input\nInput ID: {uid}\nEvent type: {event_type}\n\
             Updated at: {updated_at}"
        ),
        "data": data,
        "ts": at.div_euclid(1_000_000),
    })
    .to_string()
}

/// The `Webhook-Signature` header value for `body` sent at `time` (Unix
/// seconds).
pub fn signature(secret: &str, time: i64, body: &str) -> String {
    // Invariant: HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(time.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "time={time},sig1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_cloudflares_shape() {
        let v: serde_json::Value = serde_json::from_str(&body(
            "eb222fcca08eeb1ae84c981ebe8aeeb6",
            EventKind::Disconnected,
            1_642_074_221_855_717,
        ))
        .unwrap();
        assert_eq!(v["ts"], 1_642_074_221);
        assert_eq!(v["data"]["notification_name"], "Stream Live Input");
        assert_eq!(v["data"]["input_id"], "eb222fcca08eeb1ae84c981ebe8aeeb6");
        assert_eq!(v["data"]["event_type"], "live_input.disconnected");
        assert_eq!(v["data"]["updated_at"], "2022-01-13T11:43:41.855717Z");
        assert!(v["text"]
            .as_str()
            .unwrap()
            .contains("Event type: live_input.disconnected"));
        assert!(v["data"].get("live_input_errored").is_none());
        let e: serde_json::Value =
            serde_json::from_str(&body("u", EventKind::Errored(ErrorCode::InputDisabled), 0))
                .unwrap();
        assert_eq!(e["data"]["event_type"], "live_input.errored");
        assert_eq!(
            e["data"]["live_input_errored"]["error"]["code"],
            "ERR_INPUT_DISABLED"
        );
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as
        // "<time>.<body>" would be: "what do ya want for nothing?".
        let sig = signature("Jefe", 0, "what do ya want for nothing?");
        // HMAC over "0.what do ya want for nothing?" differs from the RFC
        // vector; recompute the RFC one through the same primitive.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            sig,
            format!("time=0,sig1={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(signature("Jefe", 1, "x"), signature("Jefe", 2, "x"));
    }
}
