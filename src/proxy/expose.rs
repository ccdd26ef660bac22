//! `[session.expose]` (SPEC §12): chosen session keys handed to the backend
//! as plain headers, so that an unmodified app (or an `auth_request`
//! location) can read the login. A JSON string goes as its text, any other
//! value as compact JSON; an absent key sends nothing. A client's own
//! header of such a name is always removed first.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::session::codec::to_ascii_json;

/// The exposed headers, named once at start.
#[derive(Debug, Clone, Default)]
pub struct Expose {
    /// Each header and the session key it carries.
    headers: Vec<(HeaderName, String)>,
}

impl Expose {
    /// From `[session.expose]` (names checked when the config was read).
    pub fn new(table: &std::collections::BTreeMap<String, String>) -> Expose {
        let headers = table
            .iter()
            .map(|(name, key)| {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("checked in config");
                (name, key.clone())
            })
            .collect();
        Expose { headers }
    }

    /// Removes a client's own headers of the exposed names.
    pub fn strip(&self, headers: &mut HeaderMap) {
        for (name, _) in &self.headers {
            headers.remove(name);
        }
    }

    /// Sets the exposed headers from the session's `X-Session` text.
    pub fn add(&self, headers: &mut HeaderMap, session_json: &[u8]) {
        if self.headers.is_empty() || session_json == b"{}" {
            return;
        }
        let Ok(Value::Object(session)) = serde_json::from_slice::<Value>(session_json) else {
            return;
        };
        for (name, key) in &self.headers {
            let Some(value) = session.get(key) else {
                continue;
            };
            // A string as its text, unless it holds what a header cannot
            // (controls, non-ASCII): then, as everything else, its JSON.
            let text = match value {
                Value::String(text) if text.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                    HeaderValue::from_str(text).ok()
                }
                _ => None,
            };
            let value = text.unwrap_or_else(|| {
                HeaderValue::from_str(&to_ascii_json(value)).expect("ASCII JSON is a header value")
            });
            headers.insert(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_goes_as_its_text_anything_else_as_json_and_absent_as_nothing() {
        let table = [
            ("X-User", "user"),
            ("X-Roles", "roles"),
            ("X-Team", "team"),
            ("X-Name", "name"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let expose = Expose::new(&table);
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("forged"));
        headers.insert("x-team", HeaderValue::from_static("forged"));
        expose.strip(&mut headers);
        assert!(headers.is_empty());
        expose.add(
            &mut headers,
            br#"{"user":"ada","roles":["admin",1],"name":"Ad\u00e9"}"#,
        );
        assert_eq!(headers["x-user"], "ada");
        assert_eq!(headers["x-roles"], r#"["admin",1]"#);
        assert_eq!(headers["x-name"], r#""Ad\u00e9""#);
        assert!(!headers.contains_key("x-team"));
    }
}
