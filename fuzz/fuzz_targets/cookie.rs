//! Cookie parsing and verification: any Cookie header bytes, any cookie value.
//! Nothing panics; the session cookie never stays in the header; only a
//! value sessiongate signed verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate::config::{CookieConfig, Secret};
use sessiongate::session::cookie::CookieCodec;

fuzz_target!(|data: &[u8]| {
    let codec = CookieCodec::new(&CookieConfig::new(vec![Secret::resolve("fuzz-secret-0123456789abcdef0123456789").unwrap()]));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(sid) = codec.verify(text) {
            assert_eq!(text, codec.sign(&sid), "a value sessiongate did not write verified");
        }
    }
    let mut headers = http::HeaderMap::new();
    for field in data.split(|&b| b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(field) {
            headers.append(http::header::COOKIE, value);
        }
    }
    let _ = codec.take_from(&mut headers);
    for value in headers.get_all(http::header::COOKIE) {
        for piece in value.as_bytes().split(|&b| b == b';') {
            let piece = piece.trim_ascii();
            assert!(
                !(piece.starts_with(b"sg_session") && piece[10..].trim_ascii_start().starts_with(b"=")),
                "the session cookie stayed in {value:?}"
            );
        }
    }
});
