//! The session as JSON text (SPEC §4): the `X-Session` header's encoding and
//! the parsing and merging of `X-Session-Update` values.
//!
//! Stored field values are compact JSON texts with every character outside
//! printable ASCII written as `\uXXXX`, so any session, whatever it holds,
//! is a valid header value (RFC 9110 §5.5) and the `X-Session` text is built
//! by joining stored texts, without parsing them again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;

use serde_json::Value;

/// The metadata prefix: session keys that start with it belong to sessiongate.
pub const META_PREFIX: &str = "__";

/// serde_json's compact output, with every non-ASCII character and DEL escaped
/// as `\uXXXX` (UTF-16 surrogate pairs above U+FFFF).
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, ch) in fragment.char_indices() {
            if ch.is_ascii() && ch != '\x7f' {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

fn write_ascii_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = serde_json::Serializer::with_formatter(out, AsciiFormatter);
    value
        .serialize(&mut serializer)
        .expect("JSON values and strings always serialize");
}

/// A JSON value as compact, printable-ASCII JSON text.
pub fn to_ascii_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_ascii_json(&mut out, value);
    String::from_utf8(out).expect("the formatter writes ASCII")
}

thread_local! {
    /// Where [`encode_session`] writes, reused: the text it returns is then
    /// copied once into a buffer of its exact size.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The scratch buffer's capacity kept between calls, at most.
const MAX_SCRATCH: usize = 64 * 1024;

/// Builds the `X-Session` text from stored fields (key, value's JSON text);
/// metadata fields are left out. The text's buffer is exactly its size, so
/// `Bytes::from` takes it as it is, with no second allocation.
pub fn encode_session<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    SCRATCH.with_borrow_mut(|out| {
        out.clear();
        out.push(b'{');
        for (key, value) in fields {
            if key.starts_with(META_PREFIX) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            write_ascii_json(out, key);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
        let text = out.to_vec();
        if out.capacity() > MAX_SCRATCH {
            *out = Vec::new();
        }
        String::from_utf8(text).expect("keys are written as ASCII and values are stored as ASCII")
    })
}

/// The length of the `X-Session` text of these fields, without building it.
pub fn session_size<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    let mut size = 2;
    let mut count: usize = 0;
    for (key, value) in fields {
        if key.starts_with(META_PREFIX) {
            continue;
        }
        let mut encoded_key = Vec::new();
        write_ascii_json(&mut encoded_key, key);
        size += encoded_key.len() + 1 + value.len();
        count += 1;
    }
    size + count.saturating_sub(1)
}

/// The net effect of one response's updates: each key's new JSON text, or
/// `None` to delete it. Applied in order, a later update of a key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes(BTreeMap<String, Option<String>>);

impl Changes {
    /// Sets `key` to the JSON text `text`: for sessiongate's own `__`
    /// metadata (a backend's updates never name such a key).
    pub fn set_meta(&mut self, key: &str, text: &str) {
        debug_assert!(key.starts_with(META_PREFIX));
        self.0.insert(key.to_string(), Some(text.to_string()));
    }

    /// The value these changes give `key`, if they set it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_deref()
    }

    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when at least one key gets a value (not only deletions).
    pub fn sets_anything(&self) -> bool {
        self.0.values().any(Option::is_some)
    }

    /// Each changed key and its new JSON text (`None`: delete).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Applies these changes to a session's fields.
    pub fn apply_to(&self, fields: &mut BTreeMap<String, String>) {
        for (key, value) in &self.0 {
            match value {
                Some(text) => fields.insert(key.clone(), text.clone()),
                None => fields.remove(key),
            };
        }
    }

    /// Changes that set every field of a session (to re-create it elsewhere).
    pub fn set_all(fields: BTreeMap<String, String>) -> Changes {
        Changes(fields.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }
}

/// Why a response's updates were not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// An update header is not a JSON object.
    #[error("update #{index} is not a JSON object: {reason}")]
    NotAnObject {
        /// Which update header (1-based).
        index: usize,
        /// The parser's explanation.
        reason: String,
    },
    /// An update names a key reserved for sessiongate's metadata.
    #[error(
        "update #{index} sets the reserved key {key:?} (keys starting with __ belong to sessiongate)"
    )]
    ReservedKey {
        /// Which update header (1-based).
        index: usize,
        /// The key.
        key: String,
    },
    /// `X-Session-Action` names an action sessiongate does not know.
    #[error(
        "unknown session action {0:?} (expected rotate, destroy, destroy-others or destroy-all, comma-separated)"
    )]
    UnknownAction(String),
    /// `X-Session-User` is not one id of 1 to 256 visible ASCII characters
    /// (the id itself is not logged).
    #[error("X-Session-User {0}")]
    BadUser(&'static str),
    /// The session would exceed `session.max_bytes`.
    #[error("the session would be {size} bytes, more than session.max_bytes = {max}")]
    TooLarge {
        /// Its size, when known.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Parses a response's `X-Session-Update` values, in order, into one change
/// (RFC 7396 at the top level only: each key takes its value whole, `null`
/// deletes). Any bad update rejects them all.
pub fn parse_updates<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Changes, UpdateError> {
    let mut changes = BTreeMap::new();
    for (i, value) in values.into_iter().enumerate() {
        let index = i + 1;
        let object: serde_json::Map<String, Value> =
            serde_json::from_slice(value).map_err(|e| UpdateError::NotAnObject {
                index,
                reason: e.to_string(),
            })?;
        for (key, value) in object {
            if key.starts_with(META_PREFIX) {
                return Err(UpdateError::ReservedKey { index, key });
            }
            let text = (!value.is_null()).then(|| to_ascii_json(&value));
            changes.insert(key, text);
        }
    }
    Ok(Changes(changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn non_ascii_is_escaped_and_decodes_to_the_same_text() {
        let original = "héllo \u{7f} 日本 🎉 \"q\" \\ \n\t\r\0";
        let text = to_ascii_json(&Value::String(original.into()));
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
        assert!(
            text.contains("\\u00e9") && text.contains("\\ud83c\\udf89") && text.contains("\\u007f")
        );
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn session_text_joins_fields_and_hides_metadata() {
        let stored = fields(&[
            ("__created", "1"),
            ("cart", "[1,2]"),
            ("name", "\"Zo\\u00eb\""),
            ("ü", "1"),
        ]);
        let text = encode_session(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(text, r#"{"cart":[1,2],"name":"Zo\u00eb","\u00fc":1}"#);
        assert_eq!(text.capacity(), text.len(), "sized exactly");
        assert_eq!(encode_session([]), "{}");
    }

    #[test]
    fn session_size_is_the_length_of_the_session_text() {
        let cases = [
            fields(&[]),
            fields(&[("a", "1")]),
            fields(&[("__created", "5"), ("a", "1"), ("b", "\"x\"")]),
            fields(&[("é\"\n🎉", "true"), ("k\u{7f}\u{1}", "null")]),
        ];
        for case in cases {
            let pairs = || case.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            assert_eq!(
                session_size(pairs()),
                encode_session(pairs()).len(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn updates_merge_at_top_level_in_order_and_null_deletes() {
        let changes = parse_updates([
            br#"{"cart":{"a":1,"b":2},"n":1}"#.as_slice(),
            br#"{"cart":{"c":3},"gone":null}"#.as_slice(),
        ])
        .unwrap();
        let mut session = fields(&[("gone", "1"), ("kept", "true")]);
        changes.apply_to(&mut session);
        assert_eq!(
            session,
            fields(&[("cart", r#"{"c":3}"#), ("kept", "true"), ("n", "1")])
        );
    }

    #[test]
    fn updates_are_stored_compact_and_ascii() {
        let changes =
            parse_updates([" { \"name\" : \"日本\" , \"list\": [ 1 , 2 ] } ".as_bytes()]).unwrap();
        let set: Vec<_> = changes.iter().collect();
        assert_eq!(
            set,
            [
                ("list", Some("[1,2]")),
                ("name", Some("\"\\u65e5\\u672c\""))
            ]
        );
    }

    #[test]
    fn big_numbers_keep_their_exact_text() {
        let changes =
            parse_updates([br#"{"id":123456789012345678901234567890,"f":0.1}"#.as_slice()])
                .unwrap();
        let set: Vec<_> = changes.iter().collect();
        assert_eq!(
            set,
            [
                ("f", Some("0.1")),
                ("id", Some("123456789012345678901234567890"))
            ]
        );
    }

    #[test]
    fn a_non_object_update_rejects_all_updates() {
        for bad in [&b"[1]"[..], b"\"s\"", b"null", b"{", b"", b"\xff"] {
            let err = parse_updates([br#"{"ok":1}"#.as_slice(), bad]).unwrap_err();
            assert!(
                matches!(err, UpdateError::NotAnObject { index: 2, .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn reserved_keys_are_refused() {
        let err = parse_updates([br#"{"__created":1}"#.as_slice()]).unwrap_err();
        assert_eq!(
            err,
            UpdateError::ReservedKey {
                index: 1,
                key: "__created".into()
            }
        );
        assert!(parse_updates([br#"{"_single":1}"#.as_slice()]).is_ok());
    }

    #[test]
    fn deletions_alone_set_nothing() {
        let changes = parse_updates([br#"{"a":null}"#.as_slice()]).unwrap();
        assert!(!changes.is_empty());
        assert!(!changes.sets_anything());
    }
}
