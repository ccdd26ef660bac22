//! `[cookie]`: the session cookie's name, attributes and signing secrets.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

use super::is_token_byte;
use super::secrets::Secret;

/// `[cookie]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// The cookie's name.
    #[serde(default = "default_cookie_name", deserialize_with = "cookie_name")]
    pub name: String,
    /// The first secret signs; every secret verifies (key rotation).
    #[serde(deserialize_with = "secret_list")]
    pub secrets: Vec<Secret>,
    /// The `Secure` attribute.
    #[serde(default = "yes")]
    pub secure: bool,
    /// The `HttpOnly` attribute.
    #[serde(default = "yes")]
    pub http_only: bool,
    /// The `SameSite` attribute.
    #[serde(default)]
    pub same_site: SameSite,
    /// The `Path` attribute.
    #[serde(default = "default_cookie_path", deserialize_with = "cookie_path")]
    pub path: String,
    /// The `Domain` attribute; none by default (a host-only cookie).
    #[serde(default)]
    pub domain: Option<String>,
    /// Every `Set-Cookie` of a session carries `Max-Age`, the session's
    /// remaining absolute lifetime (otherwise only sessions that asked with
    /// `X-Session-Action: persist`).
    #[serde(default)]
    pub persistent: bool,
}

impl CookieConfig {
    /// The default cookie (`sg_session`, `Secure`, `HttpOnly`, `SameSite=Lax`,
    /// `Path=/`) signed with these secrets.
    pub fn new(secrets: Vec<Secret>) -> CookieConfig {
        CookieConfig {
            name: default_cookie_name(),
            secrets,
            secure: true,
            http_only: true,
            same_site: SameSite::default(),
            path: default_cookie_path(),
            domain: None,
            persistent: false,
        }
    }
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// `SameSite=Strict`
    Strict,
    /// `SameSite=Lax`
    #[default]
    Lax,
    /// `SameSite=None` (requires `secure = true`)
    None,
}

fn yes() -> bool {
    true
}

fn default_cookie_name() -> String {
    "sg_session".to_string()
}

fn default_cookie_path() -> String {
    "/".to_string()
}

/// `cookie.secrets`: a non-empty list. Whatever else was written is not
/// repeated in the error: it may be a secret without its brackets.
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<Secret>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of secrets, as in secrets = [\"env:SESSIONGATE_SECRET\"]")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Secret>, A::Error> {
            let mut secrets = Vec::new();
            while let Some(secret) = seq.next_element()? {
                secrets.push(secret);
            }
            if secrets.is_empty() {
                return Err(de::Error::custom(
                    "the list is empty; give at least one secret",
                ));
            }
            Ok(secrets)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<Secret>, E> {
            Err(E::custom(
                "must be a list, as in secrets = [\"env:SESSIONGATE_SECRET\"] (the value is not shown)",
            ))
        }
    }
    d.deserialize_any(Visitor)
}

/// RFC 6265 §4.1.1: a cookie name is an RFC 9110 token.
fn cookie_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(de::Error::custom(format!(
            "{name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
        )));
    }
    Ok(name)
}

fn cookie_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b == b';' || !(0x20..0x7f).contains(&b))
    {
        return Err(de::Error::custom(format!(
            "{path:?} is not a cookie path (it starts with / and holds no ';' or control characters)"
        )));
    }
    Ok(path)
}
