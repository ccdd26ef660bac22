//! `[session.expose]` (SPEC §12): which session keys go to the backend as
//! plain headers. Each name must be a header name that a proxy may set:
//! not a hop-by-hop field, nor one that frames the message or that
//! sessiongate sets itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de};

/// Header names that `[session.expose]` may not take.
const RESERVED: [&str; 14] = [
    "host",
    "cookie",
    "connection",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Reads the table, checking every header name.
pub(super) fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(d)?;
    let mut seen = std::collections::BTreeSet::new();
    for (name, key) in &table {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(de::Error::custom(format!("{name:?} is not a header name")));
        }
        if RESERVED.contains(&lower.as_str()) {
            return Err(de::Error::custom(format!(
                "{name:?} cannot carry a session key (sessiongate or HTTP itself sets it)"
            )));
        }
        if !seen.insert(lower) {
            return Err(de::Error::custom(format!("{name:?} is named twice")));
        }
        if key.is_empty() || key.starts_with(crate::session::codec::META_PREFIX) {
            return Err(de::Error::custom(format!(
                "{name:?} = {key:?}: not a session key a backend can set"
            )));
        }
    }
    Ok(table)
}

/// What `check` adds to its session line: the per-user limit and the
/// exposed headers, when set.
pub(super) fn describe(session: &super::SessionConfig) -> String {
    let mut text = String::new();
    if session.max_per_user > 0 {
        text.push_str(&format!(", at most {} per user", session.max_per_user));
    }
    if !session.expose.is_empty() {
        let exposed: Vec<String> = session
            .expose
            .iter()
            .map(|(name, key)| format!("{name} ({key})"))
            .collect();
        text.push_str(&format!(", exposes {}", exposed.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    fn parse(expose: &str) -> Result<Config, String> {
        let text = format!(
            "[upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n[cookie]\n\
             secrets = [\"0123456789abcdef0123456789abcdef\"]\n\
             [session]\nmax_per_user = 3\n[session.expose]\n{expose}\n"
        );
        Config::parse(&text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn exposed_headers_are_checked_when_the_config_is_read() {
        let config = parse("\"X-User\" = \"user\"\n\"X-Roles\" = \"roles\"").unwrap();
        assert_eq!(config.session.max_per_user, 3);
        let described = config.describe();
        assert!(
            described.contains("at most 3 per user, exposes X-Roles (roles), X-User (user)"),
            "{described}"
        );
        assert_eq!(config.session.expose["X-User"], "user");
        for (bad, why) in [
            ("\"X User\" = \"user\"", "not a header name"),
            ("\"Cookie\" = \"user\"", "cannot carry"),
            ("\"X-User\" = \"__user\"", "not a session key"),
            ("\"X-User\" = \"a\"\n\"x-user\" = \"b\"", "named twice"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.starts_with("test.toml:"), "{bad}: {error}");
        }
    }
}
