//! Unit tests of the API's body checks and shapes.

use super::*;

#[test]
fn instream_ids_and_domains() {
    for ok in ["CC1", "CC4", "SERVICE1", "SERVICE63"] {
        assert!(valid_instream_id(ok), "{ok}");
    }
    for bad in [
        "CC0",
        "CC5",
        "SERVICE0",
        "SERVICE64",
        "SERVICE01",
        "cc1",
        "",
    ] {
        assert!(!valid_instream_id(bad), "{bad}");
    }
}

#[test]
fn bodies_are_checked_as_their_endpoints_do() {
    let ok = |kind, body: &str| check_body(kind, body.as_bytes()).map_err(|e| e.message);
    assert_eq!(ok(BodyKind::LiveInput, ""), Ok(()));
    assert_eq!(
        ok(
            BodyKind::LiveInput,
            r#"{"meta":{"a":[1]},"captions":[{"instreamId":"CC1","language":"en"}]}"#
        ),
        Ok(())
    );
    assert_eq!(
        ok(
            BodyKind::LiveInput,
            r#"{"deleteRecordingAfterDays":45,"preferLowLatency":true,
                "recording":{"mode":"automatic","hideLiveViewerCount":true}}"#
        ),
        Ok(())
    );
    assert_eq!(
        ok(BodyKind::LiveInput, r#"{"deleteRecordingAfterDays":null}"#),
        Ok(())
    );
    for bad in [
        r#"{"deleteRecordingAfterDays":29}"#,
        r#"{"deleteRecordingAfterDays":1e300}"#,
        r#"{"deleteRecordingAfterDays":"45"}"#,
    ] {
        let e = ok(BodyKind::LiveInput, bad).unwrap_err();
        assert!(e.contains("deleteRecordingAfterDays"), "{bad}: {e}");
    }
    assert!(ok(BodyKind::LiveInput, r#"{"preferLowLatency":"yes"}"#).is_err());
    assert_eq!(ok(BodyKind::Account, r#"{"name":"yoga"}"#), Ok(()));
    assert_eq!(ok(BodyKind::Token, ""), Ok(()));
    assert_eq!(ok(BodyKind::Token, r#"{"name":"ci"}"#), Ok(()));
    for (kind, body) in [
        (
            BodyKind::LiveInput,
            r#"{"captions":[{"instreamId":"CC9","language":"en"}]}"#,
        ),
        (BodyKind::LiveInput, r#"{"enabled":"yes"}"#),
        (BodyKind::LiveInput, "[1,2"),
        (BodyKind::Account, r#"{"name":" "}"#),
        (BodyKind::Token, r#"{"name":7}"#),
        (BodyKind::Domain, r#"{"domain":"push_example.com"}"#),
        (
            BodyKind::Domain,
            r#"{"domain":"push.example.com","certificate":"x","privateKey":"y"}"#,
        ),
    ] {
        let e = check_body(kind, body.as_bytes()).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body}: {e:?}");
    }
}

#[test]
fn meta_is_limited_as_the_endpoint_does() {
    let pad = |n: usize| format!(r#"{{"meta":{{"a":"{}"}}}}"#, "x".repeat(n));
    // {"a":"xx..."} is 8 bytes plus the string.
    let limit = crate::quota::DEFAULT_MAX_META_BYTES;
    assert!(check_body(BodyKind::LiveInput, pad(limit - 8).as_bytes()).is_ok());
    let e = check_body(BodyKind::LiveInput, pad(limit - 7).as_bytes()).unwrap_err();
    assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(e.message.contains("max_meta_bytes"), "{}", e.message);
    let m: Map<String, Value> = serde_json::from_str(r#"{"a":[1,"\u00e9"]}"#).unwrap();
    assert_eq!(meta_len(&m), Value::Object(m.clone()).to_string().len());
}

#[test]
fn times_are_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_500_000), "1970-01-01T00:00:01.5Z");
}
