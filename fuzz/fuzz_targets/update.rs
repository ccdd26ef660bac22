//! Update parsing and merge: any bytes as X-Session-Update values. Nothing
//! panics; an accepted update merges into a session whose X-Session text is
//! printable ASCII JSON of exactly the length `session_size` says.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sessiongate::session::codec::{encode_session, parse_updates, session_size};

fuzz_target!(|data: &[u8]| {
    let values: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let Ok(changes) = parse_updates(values.iter().copied()) else {
        return;
    };
    let mut session = BTreeMap::from([("kept".to_string(), "[1,2]".to_string())]);
    changes.apply_to(&mut session);
    let pairs = || session.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let text = encode_session(pairs());
    assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "not printable ASCII: {text:?}");
    assert_eq!(session_size(pairs()), text.len());
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("the session text is JSON");
    assert!(parsed.is_object());
});
