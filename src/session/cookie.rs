//! The session cookie (SPEC §3): session ids, their HMAC-SHA256 tags, finding
//! the session cookie among a request's cookies, and `Set-Cookie` values.
//!
//! A cookie is `<name>=<sid>.<tag>`: the sid is 32 bytes from the OS CSPRNG
//! and the tag an HMAC-SHA256 of the sid text under a configured secret, both
//! base64url without padding. Verification is constant time and tries every
//! configured secret; a cookie that fails it is simply not a session.

use std::cell::RefCell;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use cookie::Cookie;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderValue;
use rand::TryRng;
use sha2::Sha256;

use crate::config::{CookieConfig, SameSite};

type HmacSha256 = Hmac<Sha256>;

/// Length of a sid's text: 32 bytes as base64url without padding.
pub const SID_LEN: usize = 43;
const TAG_LEN: usize = 43;

/// A session id: 43 base64url characters that decode to 32 random bytes,
/// held inline (making or copying one allocates nothing).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sid([u8; SID_LEN]);

impl Sid {
    /// A fresh sid from the operating system's CSPRNG.
    pub fn generate() -> Sid {
        let mut text = [0u8; SID_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(random_bytes(), &mut text)
            .expect("32 bytes are 43 base64url characters");
        debug_assert_eq!(written, SID_LEN);
        Sid(text)
    }

    /// Accepts text only if it is a well-formed sid (canonical base64url of 32 bytes).
    pub fn parse(text: &str) -> Option<Sid> {
        let mut raw = [0u8; 33];
        let text: [u8; SID_LEN] = text.as_bytes().try_into().ok()?;
        let well_formed = URL_SAFE_NO_PAD.decode_slice(text, &mut raw).ok() == Some(32);
        well_formed.then_some(Sid(text))
    }

    /// The sid's text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a sid is base64url")
    }

    /// The sid as a header value, in one buffer that every clone of the
    /// value shares (a copy of the value, such as a replay's, allocates
    /// nothing). The text is carved from a block of [`SIDS_PER_BLOCK`]
    /// sids that the thread's later sids share, so one request in that many
    /// allocates (twice: the block and its shared count); a block is freed
    /// once the last header value cut from it is.
    pub fn header_value(&self) -> HeaderValue {
        let text = SID_TEXTS.with(|texts| {
            let mut texts = texts.borrow_mut();
            if texts.capacity() < SID_LEN {
                *texts = BytesMut::with_capacity(SIDS_PER_BLOCK * SID_LEN);
            }
            texts.extend_from_slice(&self.0);
            texts.split().freeze()
        });
        HeaderValue::from_maybe_shared(text).expect("a sid is base64url")
    }
}

/// How many sids' header values share one allocation (see
/// [`Sid::header_value`]): 2.7 KiB, held at most as long as the longest
/// request among them.
const SIDS_PER_BLOCK: usize = 64;

thread_local! {
    /// What is left of this thread's current block of sid texts.
    static SID_TEXTS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

impl fmt::Debug for Sid {
    // A sid is a bearer credential: debug output shows only its start.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({}…)", &self.as_str()[..6])
    }
}

/// 32 bytes from the operating system's CSPRNG.
pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator failed");
    bytes
}

/// A new secret for `cookie.secrets`: 32 bytes from the OS CSPRNG, base64.
pub fn keygen() -> String {
    base64::engine::general_purpose::STANDARD.encode(random_bytes())
}

/// Signs and verifies session cookies and builds their `Set-Cookie` values.
///
/// The HMAC keys are prepared once; each request only clones a keyed state.
#[derive(Clone)]
pub struct CookieCodec {
    /// One keyed HMAC per secret; the first signs.
    keys: Vec<HmacSha256>,
    /// A cookie with the configured name and attributes, to copy per response.
    template: Cookie<'static>,
}

impl CookieCodec {
    /// Prepares the codec from the `[cookie]` section.
    pub fn new(config: &CookieConfig) -> CookieCodec {
        let keys = config
            .secrets
            .iter()
            .map(|s| HmacSha256::new_from_slice(&s.bytes).expect("HMAC takes keys of any length"))
            .collect();
        let mut template = Cookie::build((config.name.clone(), ""))
            .path(config.path.clone())
            .secure(config.secure)
            .http_only(config.http_only)
            .same_site(match config.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        if let Some(domain) = &config.domain {
            template = template.domain(domain.clone());
        }
        CookieCodec {
            keys,
            template: template.build(),
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        self.template.name()
    }

    /// The cookie value for a sid: `<sid>.<tag>`, signed with the first secret.
    pub fn sign(&self, sid: &Sid) -> String {
        let mut mac = self.keys[0].clone();
        mac.update(sid.as_str().as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{}.{tag}", sid.as_str())
    }

    /// The sid of a cookie value whose tag verifies under any secret.
    pub fn verify(&self, value: &str) -> Option<Sid> {
        self.check(value).ok()
    }

    /// As [`verify`](Self::verify), saying why a value is refused.
    pub fn check(&self, value: &str) -> Result<Sid, Rejection> {
        let (sid_text, tag_text) = value.split_once('.').ok_or(Rejection::Malformed)?;
        if sid_text.len() != SID_LEN || tag_text.len() != TAG_LEN {
            return Err(Rejection::Malformed);
        }
        let sid = Sid::parse(sid_text).ok_or(Rejection::Malformed)?;
        let mut tag = [0u8; 33];
        if URL_SAFE_NO_PAD.decode_slice(tag_text, &mut tag).ok() != Some(32) {
            return Err(Rejection::Malformed);
        }
        let verifies = |key: &HmacSha256| {
            let mut mac = key.clone();
            mac.update(sid_text.as_bytes());
            mac.verify_slice(&tag[..32]).is_ok()
        };
        // Every key is tried so that the time taken does not tell which one matched.
        let matched = self
            .keys
            .iter()
            .fold(false, |found, key| verifies(key) | found);
        matched.then_some(sid).ok_or(Rejection::BadSignature)
    }

    /// The `Set-Cookie` value that gives the client this session.
    pub fn set_cookie(&self, sid: &Sid) -> HeaderValue {
        let mut cookie = self.template.clone();
        cookie.set_value(self.sign(sid));
        header_value(&cookie)
    }

    /// The `Set-Cookie` value that removes the session cookie from the client.
    pub fn expire_cookie(&self) -> HeaderValue {
        let mut cookie = self.template.clone();
        cookie.make_removal();
        header_value(&cookie)
    }

    /// Takes the session cookie out of a request's `Cookie` header fields,
    /// leaving every other cookie as it was, and verifies it.
    ///
    /// Several session cookies (a stale one for a parent path or domain, or one
    /// tossed in by a sibling subdomain) are resolved by one rule: the cookies
    /// that verify must all name the same sid, otherwise none is used. Cookies
    /// that fail verification are ignored.
    pub fn take_from(&self, headers: &mut http::HeaderMap) -> Presented {
        self.take(headers, true)
    }

    /// Removes the session cookie from a request's `Cookie` header fields
    /// without reading it (a route without sessions): no HMAC is computed.
    pub fn remove_from(&self, headers: &mut http::HeaderMap) {
        self.take(headers, false);
    }

    /// A `Set-Cookie` value for this session that lasts `max_age_secs`
    /// (`Max-Age`, RFC 6265 §5.2.2): a persistent cookie.
    pub fn persistent_cookie(&self, sid: &Sid, max_age_secs: u64) -> HeaderValue {
        let mut cookie = self.template.clone();
        cookie.set_value(self.sign(sid));
        let secs = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
        cookie.set_max_age(cookie::time::Duration::seconds(secs));
        header_value(&cookie)
    }

    fn take(&self, headers: &mut http::HeaderMap, verify: bool) -> Presented {
        let mut presented = Presented::None;
        // Most requests either carry no session cookie or carry it in the
        // only Cookie field: look before taking anything apart.
        let name = self.name().as_bytes();
        let fields = headers.get_all(http::header::COOKIE);
        let mentioned = fields
            .iter()
            .any(|field| field.as_bytes().windows(name.len()).any(|w| w == name));
        if !mentioned {
            return presented;
        }
        let several = fields.iter().nth(1).is_some();
        if !several {
            // The one field (always so in HTTP/1.1): out, and back rewritten.
            let field = headers
                .remove(http::header::COOKIE)
                .expect("a Cookie field was mentioned");
            if let Some(kept) = self.take_from_field(field, verify, &mut presented) {
                headers.insert(http::header::COOKIE, kept);
            }
            return presented;
        }
        // HTTP/2 may split cookies over several fields (RFC 9113 §8.2.3): read them all.
        let fields: Vec<HeaderValue> = match headers.entry(http::header::COOKIE) {
            http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
            http::header::Entry::Vacant(_) => Vec::new(),
        };
        for field in fields {
            if let Some(kept) = self.take_from_field(field, verify, &mut presented) {
                headers.append(http::header::COOKIE, kept);
            }
        }
        presented
    }

    /// One `Cookie` field without the session cookie: the field itself when
    /// it has none, its other cookies joined again, or nothing when only the
    /// session cookie was in it. With `verify`, what each session cookie
    /// found in it amounts to is added to `presented`.
    ///
    /// Pieces are split as bytes, and a cookie is ours by its name alone:
    /// one with a value that is not UTF-8 still goes. The other pieces stay
    /// as they were sent.
    fn take_from_field(
        &self,
        field: HeaderValue,
        verify: bool,
        presented: &mut Presented,
    ) -> Option<HeaderValue> {
        let name = self.name().as_bytes();
        let pieces = || {
            field
                .as_bytes()
                .split(|&b| b == b';')
                .map(<[u8]>::trim_ascii)
        };
        let ours = |piece: &[u8]| {
            piece.contains(&b'=')
                && piece.split(|&b| b == b'=').next().map(<[u8]>::trim_ascii) == Some(name)
        };
        let (mut found, mut others_len) = (false, 0);
        for piece in pieces() {
            if ours(piece) {
                found = true;
                if !verify {
                    continue;
                }
                let value = std::str::from_utf8(piece)
                    .ok()
                    .and_then(|p| Cookie::parse(p).ok());
                let checked = value.map_or(Err(Rejection::Malformed), |c| self.check(c.value()));
                *presented = std::mem::replace(presented, Presented::None).and(checked);
            } else if !piece.is_empty() {
                others_len += piece.len() + "; ".len();
            }
        }
        if !found {
            return Some(field);
        }
        if others_len == 0 {
            return None;
        }
        // Sized exactly, so that the buffer becomes the value as it is.
        let mut rest = Vec::with_capacity(others_len - "; ".len());
        for piece in pieces().filter(|piece| !piece.is_empty() && !ours(piece)) {
            if !rest.is_empty() {
                rest.extend_from_slice(b"; ");
            }
            rest.extend_from_slice(piece);
        }
        Some(HeaderValue::from_maybe_shared(Bytes::from(rest)).expect("taken from a header value"))
    }
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    HeaderValue::try_from(cookie.to_string())
        .expect("cookie names, paths and domains are validated")
}

/// What a request's session cookies amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No session cookie, or none that verifies.
    None,
    /// Verified cookies that all name this sid.
    Valid(Sid),
    /// Verified cookies that disagree: no session is used.
    Conflicting,
    /// Session cookies were sent and none verified: no session, and the
    /// (first) reason, for the metrics.
    Rejected(Rejection),
}

/// Why a session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not `<sid>.<tag>` with a well-formed sid and tag.
    Malformed,
    /// Well-formed, but the tag verifies under no secret.
    BadSignature,
}

impl Presented {
    fn and(self, checked: Result<Sid, Rejection>) -> Presented {
        match (self, checked) {
            (Presented::None, Err(why)) => Presented::Rejected(why),
            (state, Err(_)) => state,
            (Presented::None | Presented::Rejected(_), Ok(sid)) => Presented::Valid(sid),
            (Presented::Valid(a), Ok(b)) if a == b => Presented::Valid(a),
            _ => Presented::Conflicting,
        }
    }

    /// The sid to load, if any.
    pub fn sid(self) -> Option<Sid> {
        match self {
            Presented::Valid(sid) => Some(sid),
            Presented::None | Presented::Conflicting | Presented::Rejected(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn codec(secrets: &[&str]) -> CookieCodec {
        CookieCodec::new(&CookieConfig::new(
            secrets
                .iter()
                .map(|s| Secret::resolve(s).unwrap())
                .collect(),
        ))
    }

    const A: &str = "secret-a-0123456789abcdef0123456789";
    const B: &str = "secret-b-0123456789abcdef0123456789";

    #[test]
    fn sid_header_values_cut_from_shared_blocks_each_hold_their_own_sid() {
        let sids: Vec<Sid> = (0..3 * SIDS_PER_BLOCK + 5)
            .map(|_| Sid::generate())
            .collect();
        let values: Vec<HeaderValue> = sids.iter().map(Sid::header_value).collect();
        for (sid, value) in sids.iter().zip(&values) {
            assert_eq!(value, sid.as_str());
        }
        // A value outlives the block's other values and its thread's buffer.
        let kept = values[SIDS_PER_BLOCK + 1].clone();
        drop(values);
        assert_eq!(kept, sids[SIDS_PER_BLOCK + 1].as_str());
    }

    #[test]
    fn generated_sids_are_43_url_safe_characters_and_distinct() {
        let a = Sid::generate();
        let b = Sid::generate();
        assert_eq!(a.as_str().len(), SID_LEN);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
        assert!(Sid::parse(a.as_str()).is_some());
        assert_eq!(a.header_value(), a.as_str());
    }

    #[test]
    fn signed_cookie_verifies_to_its_sid() {
        let codec = codec(&[A]);
        let sid = Sid::generate();
        assert_eq!(codec.verify(&codec.sign(&sid)), Some(sid));
    }

    #[test]
    fn tag_is_hmac_sha256_of_the_sid_text_under_the_secret_text() {
        let codec = codec(&[A]);
        let sid = Sid::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let mut mac = HmacSha256::new_from_slice(A.as_bytes()).unwrap();
        mac.update(sid.as_str().as_bytes());
        let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(codec.sign(&sid), format!("{}.{expected}", sid.as_str()));
    }

    #[test]
    fn any_configured_secret_verifies_but_only_the_first_signs() {
        let old = codec(&[B]);
        let rotated = codec(&[A, B]);
        let sid = Sid::generate();
        assert_eq!(rotated.verify(&old.sign(&sid)), Some(sid.clone()));
        assert_eq!(old.verify(&rotated.sign(&sid)), None);
        assert_eq!(codec(&[A]).verify(&old.sign(&sid)), None);
    }

    #[test]
    fn tampered_or_malformed_values_do_not_verify() {
        let codec = codec(&[A]);
        let sid = Sid::generate();
        let good = codec.sign(&sid);
        let other_tag = codec.sign(&Sid::generate());
        let (s, t) = good.split_once('.').unwrap();
        let flipped_tag = format!(
            "{s}.{}{}",
            if t.starts_with('A') { 'B' } else { 'A' },
            &t[1..]
        );
        let flipped_sid = format!(
            "{}{}.{t}",
            if s.starts_with('A') { 'B' } else { 'A' },
            &s[1..]
        );
        let cases = [
            String::new(),
            ".".into(),
            s.to_string(),
            format!("{s}."),
            format!("{s}.{}", &t[..42]),
            format!("{s}.{t}="),
            format!("{s}.{t}.{t}"),
            flipped_tag,
            flipped_sid,
            format!("{s}.{}", other_tag.split_once('.').unwrap().1),
            good.replace('-', "+").replace('_', "/"),
            "x".repeat(100_000),
        ];
        for case in cases {
            if case == good {
                continue;
            }
            assert_eq!(codec.verify(&case), None, "{case:?} verified");
        }
    }

    #[test]
    fn session_cookie_is_taken_out_and_other_cookies_pass_untouched() {
        let codec = codec(&[A]);
        let sid = Sid::generate();
        let mut headers = http::HeaderMap::new();
        headers.append(
            "cookie",
            format!("theme=dark; sg_session={}; lang=en", codec.sign(&sid))
                .parse()
                .unwrap(),
        );
        headers.append("cookie", "other=1".parse().unwrap());
        assert_eq!(codec.take_from(&mut headers), Presented::Valid(sid));
        let rest: Vec<_> = headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(rest, ["theme=dark; lang=en", "other=1"]);
    }

    #[test]
    fn a_header_holding_only_the_session_cookie_disappears() {
        let codec = codec(&[A]);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "cookie",
            format!("sg_session={}", codec.sign(&Sid::generate()))
                .parse()
                .unwrap(),
        );
        assert!(matches!(codec.take_from(&mut headers), Presented::Valid(_)));
        assert!(headers.get("cookie").is_none());
    }

    #[test]
    fn forged_session_cookie_is_removed_and_not_a_session() {
        let codec = codec(&[A]);
        let mut headers = http::HeaderMap::new();
        headers.insert("cookie", "sg_session=garbage; a=b".parse().unwrap());
        assert_eq!(
            codec.take_from(&mut headers),
            Presented::Rejected(Rejection::Malformed)
        );
        assert_eq!(headers.get("cookie").unwrap(), "a=b");
    }

    #[test]
    fn a_well_formed_cookie_with_a_wrong_tag_is_a_bad_signature() {
        let codec = codec(&[A]);
        let other = codec_for_other_secret();
        let value = other.sign(&Sid::generate());
        assert_eq!(codec.check(&value), Err(Rejection::BadSignature));
        assert_eq!(codec.check("abc.def"), Err(Rejection::Malformed));
        let mut headers = http::HeaderMap::new();
        headers.insert("cookie", format!("sg_session={value}").parse().unwrap());
        assert_eq!(
            codec.take_from(&mut headers),
            Presented::Rejected(Rejection::BadSignature)
        );
    }

    fn codec_for_other_secret() -> CookieCodec {
        codec(&[B])
    }

    #[test]
    fn a_session_cookie_with_a_value_that_is_not_utf8_is_still_taken_out() {
        // Found by fuzzing (fuzz/fuzz_targets/cookie.rs).
        let codec = codec(&[A]);
        let mut headers = http::HeaderMap::new();
        let field = b"sg_session=i\x92on=sg_session=; sg_session=x; other=\xe9";
        headers.insert("cookie", HeaderValue::from_bytes(field).unwrap());
        assert_eq!(
            codec.take_from(&mut headers),
            Presented::Rejected(Rejection::Malformed)
        );
        assert_eq!(headers["cookie"].as_bytes(), b"other=\xe9");
    }

    #[test]
    fn duplicate_session_cookies_count_only_when_the_valid_ones_agree() {
        let codec = codec(&[A]);
        let (one, two) = (Sid::generate(), Sid::generate());
        let take = |text: String| {
            let mut headers = http::HeaderMap::new();
            headers.insert("cookie", text.parse().unwrap());
            codec.take_from(&mut headers)
        };
        let same = take(format!("sg_session={0}; sg_session={0}", codec.sign(&one)));
        assert_eq!(same, Presented::Valid(one.clone()));
        let with_junk = take(format!("sg_session=junk; sg_session={}", codec.sign(&one)));
        assert_eq!(with_junk, Presented::Valid(one.clone()));
        let disagree = take(format!(
            "sg_session={}; sg_session={}",
            codec.sign(&one),
            codec.sign(&two)
        ));
        assert_eq!(disagree, Presented::Conflicting);
        assert_eq!(disagree.sid(), None);
    }

    #[test]
    fn set_cookie_carries_the_configured_attributes() {
        let codec = codec(&[A]);
        let sid = Sid::generate();
        let value = codec.set_cookie(&sid);
        let parsed = Cookie::parse(value.to_str().unwrap()).unwrap();
        assert_eq!(parsed.name(), "sg_session");
        assert_eq!(parsed.value(), codec.sign(&sid));
        assert_eq!(parsed.path(), Some("/"));
        assert_eq!(parsed.secure(), Some(true));
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(
            parsed.max_age(),
            None,
            "a browser-session cookie; the store holds the expiry"
        );
        let expired = codec.expire_cookie();
        let parsed = Cookie::parse(expired.to_str().unwrap()).unwrap();
        assert_eq!(parsed.value(), "");
        assert_eq!(parsed.max_age(), Some(cookie::time::Duration::ZERO));
        assert_eq!(parsed.path(), Some("/"));
    }

    #[test]
    fn keygen_gives_32_random_bytes_in_base64() {
        use base64::engine::general_purpose::STANDARD;
        let a = STANDARD.decode(keygen()).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, STANDARD.decode(keygen()).unwrap());
    }
}
