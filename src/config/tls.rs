//! `[server.tls]` (TLS termination, SNI certificates, the plain redirect
//! listener) and `[upstreams.tls]` (the roots https upstreams are verified
//! against). Certificate and key files are read, parsed and matched while
//! the configuration is validated, so `check` and a reload refuse a bad
//! file, naming it, and the proxy serves exactly what was checked.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[server.tls]`: when present, `server.listen` speaks TLS only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The default certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// A plain HTTP listener answering 308 to the https URL; none by default.
    #[serde(default)]
    pub redirect_listen: Option<SocketAddr>,
    /// More certificates, chosen by the client's SNI name.
    #[serde(default)]
    pub sni: Vec<SniConfig>,
    /// The certificates as read and matched with their keys (filled in by
    /// validation, never by the TOML text).
    #[serde(skip)]
    pub loaded: Option<Arc<LoadedCerts>>,
}

/// One `[[server.tls.sni]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniConfig {
    /// Host names, exact (`api.example.com`) or one-label wildcards
    /// (`*.example.com`).
    pub names: Vec<String>,
    /// Its certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

/// `[upstreams.tls]`: what https upstream servers are verified against.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// A PEM file of CA certificates to trust instead of the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Every certificate of `[server.tls]`, ready to serve.
pub struct LoadedCerts {
    /// The default certificate.
    pub default: Arc<CertifiedKey>,
    /// Exact names, lower case, and their certificate.
    pub exact: Vec<(String, Arc<CertifiedKey>)>,
    /// Wildcard suffixes (`.example.com`, from `*.example.com`) and theirs.
    pub wildcard: Vec<(String, Arc<CertifiedKey>)>,
}

impl fmt::Debug for LoadedCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LoadedCerts(default + {} SNI names)",
            self.exact.len() + self.wildcard.len()
        )
    }
}

impl LoadedCerts {
    /// The certificate for an SNI name: an exact name first, then a
    /// wildcard covering exactly one more label; else the default.
    pub fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some((_, key)) = self.exact.iter().find(|(n, _)| *n == name) {
            return key.clone();
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        self.wildcard
            .iter()
            .find(|(suffix, _)| parent.is_some_and(|p| suffix[1..] == *p))
            .map_or_else(|| self.default.clone(), |(_, key)| key.clone())
    }
}

/// The one crypto provider of the process (ring), installed for rustls.
/// Installing twice (a reload, a test, redis-rs) is fine: the first stays.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .expect("a crypto provider was just installed")
}

/// Reads a certificate chain and its key and checks that they match.
pub fn load_certified(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "{}: no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        format!(
            "{} and {} do not go together: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Reads every certificate of a PEM file; none is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read its certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM CERTIFICATE in it", path.display()));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads every certificate and key; the error names the key and file.
    pub fn load(&self) -> Result<LoadedCerts, (String, String)> {
        let default = load_certified(&self.cert, &self.key)
            .map_err(|m| ("server.tls.cert".to_string(), m))?;
        let mut loaded = LoadedCerts {
            default: Arc::new(default),
            exact: Vec::new(),
            wildcard: Vec::new(),
        };
        for (i, sni) in self.sni.iter().enumerate() {
            let key = format!("server.tls.sni[{i}]");
            if sni.names.is_empty() {
                return Err((key, "names is empty; give at least one host name".into()));
            }
            let certified =
                Arc::new(load_certified(&sni.cert, &sni.key).map_err(|m| (key.clone(), m))?);
            for name in &sni.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') && is_dns_name(&suffix[1..]) => {
                        loaded
                            .wildcard
                            .push((suffix.to_string(), certified.clone()));
                    }
                    None if is_dns_name(&name) => loaded.exact.push((name, certified.clone())),
                    _ => {
                        return Err((
                            key,
                            format!(
                                "{name:?} is not a host name or a wildcard such as *.example.com"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(loaded)
    }

    /// What `check` prints of it.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "tls        TLS 1.2 and 1.3, ALPN h2 and http/1.1; default certificate {}\n",
            self.cert.display()
        );
        for sni in &self.sni {
            text += &format!(
                "           SNI {} -> {}\n",
                sni.names.join(", "),
                sni.cert.display()
            );
        }
        if let Some(redirect) = self.redirect_listen {
            text += &format!("redirect   {redirect} answers 308 to https://<host><path>\n");
        }
        text
    }
}

impl UpstreamTlsConfig {
    /// What `check` prints of it.
    pub fn describe(&self) -> String {
        match &self.ca {
            Some(ca) => format!("https upstreams verified against {}\n", ca.display()),
            None => "https upstreams verified against the system's roots\n".into(),
        }
    }
}

/// A DNS name as certificates carry them: dot-separated labels of letters,
/// digits and hyphens.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
