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
use serde_json::value::RawValue;

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

fn write_ascii_json<T: serde::Serialize + ?Sized>(out: impl io::Write, value: &T) {
    let mut serializer = serde_json::Serializer::with_formatter(out, AsciiFormatter);
    value
        .serialize(&mut serializer)
        .expect("JSON values and strings always serialize");
}

/// The length of a string's text as [`write_ascii_json`] writes it,
/// counted without writing it anywhere.
fn ascii_json_len(text: &str) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    write_ascii_json(&mut count, text);
    count.0
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
            write_ascii_json(&mut *out, key);
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
        size += ascii_json_len(key) + 1 + value.len();
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

    /// How many keys change.
    pub fn len(&self) -> usize {
        self.0.len()
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

    /// A session's fields as these changes would leave them, without
    /// changing them (in no particular order).
    pub fn over<'a>(
        &'a self,
        fields: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        let kept = fields
            .iter()
            .filter(|(key, _)| !self.0.contains_key(key.as_str()))
            .map(|(key, value)| (key.as_str(), value.as_str()));
        kept.chain(self.iter().filter_map(|(key, value)| Some((key, value?))))
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
        let mut reserved = None;
        let mut parser = serde_json::Deserializer::from_slice(value);
        let parsed = serde::de::DeserializeSeed::deserialize(
            UpdateInto {
                changes: &mut changes,
                reserved: &mut reserved,
            },
            &mut parser,
        )
        .and_then(|()| parser.end());
        if let Some(key) = reserved {
            return Err(UpdateError::ReservedKey { index, key });
        }
        parsed.map_err(|e| UpdateError::NotAnObject {
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(Changes(changes))
}

/// One update's object, read straight into the changes: each value's text
/// is taken as the backend wrote it when that is already compact printable
/// ASCII (as most are), and written again only otherwise. A reserved key
/// stops the parse and is handed back.
struct UpdateInto<'c> {
    changes: &'c mut BTreeMap<String, Option<String>>,
    reserved: &'c mut Option<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for UpdateInto<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, parser: D) -> Result<(), D::Error> {
        parser.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UpdateInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key.starts_with(META_PREFIX) {
                *self.reserved = Some(key);
                return Err(serde::de::Error::custom("a reserved key"));
            }
            let raw: &RawValue = map.next_value()?;
            let found = scan(raw.get());
            if found.depth > MAX_VALUE_DEPTH {
                return Err(serde::de::Error::custom(format_args!(
                    "the value of {key:?} nests more than {MAX_VALUE_DEPTH} levels deep"
                )));
            }
            let text = match raw.get() {
                "null" => None,
                text if found.compact => Some(text.to_string()),
                text => {
                    let value: Value =
                        serde_json::from_str(text).map_err(serde::de::Error::custom)?;
                    Some(to_ascii_json(&value))
                }
            };
            self.changes.insert(key, text);
        }
        Ok(())
    }
}

/// How deeply a stored value may nest. serde_json parses at most 127
/// levels, and a value sits one level inside its session's object, as
/// `X-Session` is parsed again (`[session.expose]`, and backends).
const MAX_VALUE_DEPTH: usize = 126;

/// What [`scan`] finds in a JSON text that serde_json has accepted as one
/// value (a raw value: it checks no surrogate and no nesting depth).
struct Scan {
    /// Already as the formatter writes it: printable ASCII only, no
    /// whitespace outside strings, and no `\uD800`–`\uDFFF` escape (only
    /// the parser pairs surrogates up, or refuses a lone one).
    compact: bool,
    /// The deepest nesting of arrays and objects.
    depth: usize,
}

fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let (mut compact, mut in_string) = (true, false);
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        compact &= (0x20..0x7f).contains(&byte);
        match (in_string, byte) {
            (true, b'\\') => {
                if let [
                    b'u',
                    b'd' | b'D',
                    b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F',
                    ..,
                ] = bytes[at + 1..]
                {
                    compact = false;
                }
                at += 1; // the escaped character
            }
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (true, _) => {}
            (false, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, b' ') => compact = false,
            (false, _) => {}
        }
        at += 1;
    }
    Scan {
        compact,
        depth: deepest,
    }
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
    fn a_compact_ascii_value_is_kept_as_written_and_any_other_is_written_again() {
        let update = r#"{"kept":{"a":[1,"x y",true]},"quote":"say \"hi, you\"","spaced":[1, 2],"nl":
{"b" :null},"uni":"caf\u00e9 bar","utf8":"café","gone":null,"dup":1,"dup":2}"#;
        let changes = parse_updates([update.as_bytes()]).unwrap();
        let set: BTreeMap<_, _> = changes.iter().collect();
        let expected: BTreeMap<_, _> = [
            ("dup", Some("2")),
            ("gone", None),
            ("kept", Some(r#"{"a":[1,"x y",true]}"#)),
            ("nl", Some(r#"{"b":null}"#)),
            ("quote", Some(r#""say \"hi, you\"""#)),
            ("spaced", Some("[1,2]")),
            ("uni", Some(r#""caf\u00e9 bar""#)),
            ("utf8", Some(r#""caf\u00e9""#)),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
        let compact = |text: &str| scan(text).compact;
        assert!(compact(r#""a \" b""#));
        assert!(
            compact(r#""\\u00e9 \\ud800""#),
            "escaped backslashes, not escapes"
        );
        assert!(!compact(r#""a \" b" "#));
        assert!(!compact("[1,\t2]"));
        assert!(!compact("\"\u{7f}\""));
        assert!(!compact(r#""\ud83c\udf89""#), "surrogates go to the parser");
    }

    #[test]
    fn a_lone_surrogate_escape_is_refused_and_a_pair_is_kept() {
        let err = parse_updates([br#"{"s":"\ud800"}"#.as_slice()]).unwrap_err();
        assert!(
            matches!(err, UpdateError::NotAnObject { index: 1, .. }),
            "{err}"
        );
        let changes = parse_updates([br#"{"s":"\uD83C\uDF89"}"#.as_slice()]).unwrap();
        assert_eq!(changes.get("s"), Some(r#""\ud83c\udf89""#));
    }

    #[test]
    fn a_value_nested_deeper_than_a_session_can_be_parsed_again_is_refused() {
        // With a space inside, the value takes the parser's path.
        let nested = |depth: usize, space: &str| {
            format!("[{space}{}{}", "[".repeat(depth - 1), "]".repeat(depth))
        };
        for space in ["", " "] {
            let deepest = format!(r#"{{"v":{}}}"#, nested(MAX_VALUE_DEPTH, space));
            let changes = parse_updates([deepest.as_bytes()]).unwrap();
            let session = encode_session(changes.iter().map(|(k, v)| (k, v.unwrap())));
            serde_json::from_str::<Value>(&session).expect("the session parses again");
            let deeper = format!(r#"{{"v":{}}}"#, nested(MAX_VALUE_DEPTH + 1, space));
            let err = parse_updates([deeper.as_bytes()]).unwrap_err();
            assert!(
                matches!(err, UpdateError::NotAnObject { index: 1, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn changes_over_fields_are_what_applying_them_leaves() {
        let stored = fields(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let changes = parse_updates([br#"{"b":null,"c":30,"d":4}"#.as_slice()]).unwrap();
        let over: BTreeMap<String, String> = changes
            .over(&stored)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut applied = stored.clone();
        changes.apply_to(&mut applied);
        assert_eq!(over, applied);
        assert_eq!(applied, fields(&[("a", "1"), ("c", "30"), ("d", "4")]));
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
