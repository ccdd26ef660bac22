//! Micro-benchmarks of the per-request pieces that are sessiongate's own:
//! cookie verification, the session-to-header encoding, the update merge.
//!
//!     cargo bench --bench hot_path

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sessiongate::config::{CookieConfig, Secret};
use sessiongate::session::codec::{encode_session, parse_updates, to_ascii_json};
use sessiongate::session::cookie::{CookieCodec, Sid};

fn codec(secrets: usize) -> CookieCodec {
    let secrets = (0..secrets)
        .map(|i| Secret::resolve(&format!("bench-secret-{i}-0123456789abcdef0123456789")).unwrap())
        .collect();
    CookieCodec::new(&CookieConfig::new(secrets))
}

fn cookie_verify(c: &mut Criterion) {
    let one = codec(1);
    let three = codec(3);
    let sid = Sid::generate();
    let valid = one.sign(&sid);
    let forged = format!("{}.{}", sid.as_str(), "A".repeat(43));
    c.bench_function("cookie verify: valid, 1 secret", |b| {
        b.iter(|| one.verify(black_box(&valid)))
    });
    c.bench_function("cookie verify: valid, 3 secrets", |b| {
        b.iter(|| three.verify(black_box(&valid)))
    });
    c.bench_function("cookie verify: forged tag", |b| {
        b.iter(|| one.verify(black_box(&forged)))
    });
    c.bench_function("cookie verify: garbage", |b| {
        b.iter(|| one.verify(black_box("not-a-session-cookie")))
    });
    let header = format!("theme=dark; sg_session={valid}; lang=en");
    c.bench_function("cookie take from a Cookie header of 3", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert("cookie", header.parse().unwrap());
            one.take_from(black_box(&mut headers))
        })
    });
}

fn session_encoding(c: &mut Criterion) {
    let typical: BTreeMap<String, String> = [
        ("__created", "1763743200000"),
        ("user", r#""ada""#),
        ("roles", r#"["reader","writer"]"#),
        ("cart", "[1,2,3]"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let large: BTreeMap<String, String> = (0..50)
        .map(|i| {
            (
                format!("key{i}"),
                format!(r#"{{"n":{i},"text":"{}"}}"#, "x".repeat(100)),
            )
        })
        .collect();
    for (name, fields) in [("4 fields", &typical), ("50 fields, 6 KB", &large)] {
        c.bench_function(&format!("session to X-Session text: {name}"), |b| {
            b.iter(|| {
                encode_session(
                    black_box(fields)
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
            })
        });
    }
    let text = serde_json::Value::String("Zoë 日本語 🎉 \"quoted\"".into());
    c.bench_function("ASCII JSON of a non-ASCII string", |b| {
        b.iter(|| to_ascii_json(black_box(&text)))
    });
}

fn update_merge(c: &mut Criterion) {
    let updates: [&[u8]; 2] = [
        br#"{"cart":[1,2,3,4],"last_seen":1763743200,"flash":null}"#,
        br#"{"user":{"id":7,"name":"Ada"},"csrf":"c2Vzc2lvbmdhdGU"}"#,
    ];
    c.bench_function("parse and merge 2 update headers", |b| {
        b.iter(|| parse_updates(black_box(updates)))
    });
    let changes = parse_updates(updates).unwrap();
    let session: BTreeMap<String, String> = [("user", r#""ada""#), ("cart", "[1]")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.bench_function("apply merged updates to a session", |b| {
        b.iter(|| {
            let mut fields = session.clone();
            changes.apply_to(black_box(&mut fields));
            fields
        })
    });
}

criterion_group!(benches, cookie_verify, session_encoding, update_merge);
criterion_main!(benches);
