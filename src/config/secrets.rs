//! Secrets as the configuration gives them: inline, `env:NAME` or
//! `file:/path`, with the permission check on files. A secret's text never
//! appears in an error or in `Debug` output.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// The least a secret may hold: 256 bits, what `sessiongate keygen` prints.
pub const MIN_SECRET_BYTES: usize = 32;

/// A cookie-signing secret, resolved from where the configuration says it is.
#[derive(Clone)]
pub struct Secret {
    /// Where it came from, for messages: `inline`, `env:NAME` or `file:/path`.
    pub origin: String,
    /// The secret's text, as bytes: the HMAC key.
    pub bytes: Vec<u8>,
    /// Set when a `file:` secret can be read by other users.
    pub readable_by_others: bool,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, {} bytes)", self.origin, self.bytes.len())
    }
}

/// An `env:`, `file:` or inline entry, resolved: where it came from and its
/// text (from a variable or a file, without surrounding whitespace such as
/// a final newline; inline, as written). What is required of the text (a length, not empty) is the
/// caller's rule.
pub(crate) struct Resolved {
    /// `inline`, `env:NAME` or `file:/path`, for messages.
    pub origin: String,
    /// The text, without surrounding whitespace.
    pub text: String,
    /// Set when a `file:` entry can be read by other users.
    pub readable_by_others: bool,
}

/// Resolves an entry that may name where its text is; `what` names it in
/// errors ("secret", "password"). The error never contains the text.
pub(crate) fn resolve(entry: &str, what: &str) -> Result<Resolved, String> {
    let (origin, text, readable_by_others) = if let Some(name) = entry.strip_prefix("env:") {
        let value = std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"))?;
        (entry.to_string(), value.trim().to_string(), false)
    } else if let Some(path) = entry.strip_prefix("file:") {
        let value =
            read_secret_file(path).map_err(|e| format!("cannot read {what} file {path}: {e}"))?;
        (
            entry.to_string(),
            value.trim().to_string(),
            readable_by_others(path),
        )
    } else {
        ("inline".to_string(), entry.to_string(), false)
    };
    Ok(Resolved {
        origin,
        text,
        readable_by_others,
    })
}

impl Secret {
    /// Resolves one `cookie.secrets` entry: the secret itself, `env:NAME` or
    /// `file:/path` (surrounding whitespace, such as a final newline, is not
    /// part of the secret). The error never contains the secret.
    pub fn resolve(entry: &str) -> Result<Secret, String> {
        let Resolved {
            origin,
            text,
            readable_by_others,
        } = resolve(entry, "secret")?;
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret from {origin} is {} bytes; at least {MIN_SECRET_BYTES} are needed \
                 (`sessiongate keygen` makes one)",
                text.len()
            ));
        }
        Ok(Secret {
            origin,
            bytes: text.into_bytes(),
            readable_by_others,
        })
    }
}

/// The most a secret file may hold: a key, not a disk (nor `/dev/zero`).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret_file(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other("it is larger than 64 KiB"));
    }
    Ok(text)
}

#[cfg(unix)]
fn readable_by_others(path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &str) -> bool {
    false
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entry = String::deserialize(d)?;
        Secret::resolve(&entry).map_err(de::Error::custom)
    }
}
