//! Properties, checked on generated inputs (proptest): the cookie codec, the
//! update merge and the header encoding round-trip, and no input makes them
//! panic.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Map, Value};
use sessiongate::config::{CookieConfig, Secret};
use sessiongate::session::codec::{encode_session, parse_updates, session_size, to_ascii_json};
use sessiongate::session::cookie::{CookieCodec, Sid};

fn codec() -> CookieCodec {
    let secrets = [
        "property-secret-one-0123456789abcdef",
        "property-secret-two-0123456789abcdef",
    ]
    .iter()
    .map(|s| Secret::resolve(s).unwrap())
    .collect();
    CookieCodec::new(&CookieConfig::new(secrets))
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An update object: keys that are not reserved, values any JSON (null deletes).
fn update_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        any::<String>().prop_filter("not reserved", |k| !k.starts_with("__")),
        json_value(),
        0..8,
    )
    .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_signed_sid_verifies_to_itself(bytes in any::<[u8; 32]>()) {
        let codec = codec();
        let sid = Sid::parse(&URL_SAFE_NO_PAD.encode(bytes)).unwrap();
        prop_assert_eq!(codec.verify(&codec.sign(&sid)), Some(sid));
    }

    #[test]
    fn only_the_exact_signed_text_verifies(text in ".{0,120}") {
        let codec = codec();
        if let Some(sid) = codec.verify(&text) {
            prop_assert_eq!(text, codec.sign(&sid));
        }
    }

    #[test]
    fn a_tampered_cookie_never_verifies(bytes in any::<[u8; 32]>(), position in 0usize..87, replacement in "[A-Za-z0-9_.=+/-]") {
        let codec = codec();
        let sid = Sid::parse(&URL_SAFE_NO_PAD.encode(bytes)).unwrap();
        let signed = codec.sign(&sid);
        let mut tampered = signed.clone();
        tampered.replace_range(position..position + 1, &replacement);
        if tampered != signed {
            prop_assert_eq!(codec.verify(&tampered), None);
        }
    }

    #[test]
    fn cookie_headers_of_any_bytes_never_panic_and_never_keep_the_session_cookie(
        fields in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4),
        with_session in any::<bool>(),
    ) {
        let codec = codec();
        let mut headers = http::HeaderMap::new();
        for field in &fields {
            if let Ok(value) = http::HeaderValue::from_bytes(field) {
                headers.append(http::header::COOKIE, value);
            }
        }
        if with_session {
            // Next to a cookie that is not UTF-8 (obs-text), as a browser may send.
            let sid = Sid::generate();
            let mut value = b"x=\xff\xfe; sg_session=".to_vec();
            value.extend_from_slice(codec.sign(&sid).as_bytes());
            value.extend_from_slice(b"; y=2");
            headers.append(http::header::COOKIE, http::HeaderValue::from_bytes(&value).unwrap());
        }
        let _ = codec.take_from(&mut headers);
        for value in headers.get_all(http::header::COOKIE) {
            for piece in value.as_bytes().split(|&b| b == b';') {
                if let Some(cookie) = std::str::from_utf8(piece).ok().and_then(|p| cookie::Cookie::parse(p.trim()).ok()) {
                    prop_assert_ne!(cookie.name(), "sg_session", "left in: {:?}", value);
                }
            }
        }
    }

    #[test]
    fn any_string_becomes_printable_ascii_json_that_decodes_to_itself(text in any::<String>()) {
        let json = to_ascii_json(&Value::String(text.clone()));
        prop_assert!(json.bytes().all(|b| (0x20..0x7f).contains(&b)), "{}", json);
        let back: String = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, text);
    }

    #[test]
    fn update_headers_of_any_bytes_never_panic(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..5)) {
        let _ = parse_updates(values.iter().map(Vec::as_slice));
    }

    #[test]
    fn merged_updates_give_the_rfc7396_top_level_result_as_ascii_json(
        session in update_object(),
        updates in prop::collection::vec(update_object(), 1..4),
    ) {
        // The stored session: the values of `session` that are not null.
        let mut stored: BTreeMap<String, String> = session
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), to_ascii_json(v)))
            .collect();
        let mut expected: Map<String, Value> =
            session.into_iter().filter(|(_, v)| !v.is_null()).collect();
        for update in &updates {
            for (key, value) in update {
                match value {
                    Value::Null => expected.remove(key),
                    other => expected.insert(key.clone(), other.clone()),
                };
            }
        }
        let texts: Vec<String> = updates.iter().map(|u| Value::Object(u.clone()).to_string()).collect();
        let changes = parse_updates(texts.iter().map(String::as_bytes)).unwrap();
        changes.apply_to(&mut stored);
        let pairs = || stored.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let header = encode_session(pairs());
        prop_assert!(header.bytes().all(|b| (0x20..0x7f).contains(&b)));
        prop_assert_eq!(session_size(pairs()), header.len());
        let decoded: Value = serde_json::from_str(&header).unwrap();
        prop_assert_eq!(decoded, Value::Object(expected));
    }
}
