//! Header rules of the pipeline: the session header names and their prefix
//! (SPEC §4), hop-by-hop fields (RFC 9110 §7.6.1) and `X-Forwarded-*`.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The session headers for a configured prefix, named once at start.
#[derive(Debug, Clone)]
pub struct SessionHeaders {
    /// The prefix in lower case, as `HeaderName`s are stored.
    prefix: String,
    /// `X-Session-Id`
    pub id: HeaderName,
    /// `X-Session-Status`
    pub status: HeaderName,
    /// `X-Session`
    pub session: HeaderName,
    /// `X-Session-Update`
    pub update: HeaderName,
    /// `X-Session-Action`
    pub action: HeaderName,
    /// `X-Session-User` (SPEC §12)
    pub user: HeaderName,
}

impl SessionHeaders {
    /// Names the headers for a prefix such as `X-Session`.
    pub fn new(prefix: &str) -> SessionHeaders {
        let name = |suffix: &str| {
            HeaderName::try_from(format!("{prefix}{suffix}"))
                .expect("the prefix is a validated token")
        };
        SessionHeaders {
            prefix: prefix.to_ascii_lowercase(),
            id: name("-Id"),
            status: name("-Status"),
            session: name(""),
            update: name("-Update"),
            action: name("-Action"),
            user: name("-User"),
        }
    }

    /// Removes every header whose name starts with the prefix, whatever its
    /// case (names are case-insensitive, RFC 9110 §5.1).
    ///
    /// A name of sessiongate's own is removed by that name; only another
    /// prefixed one is copied first (a parsed name's copy allocates).
    pub fn strip(&self, headers: &mut HeaderMap) {
        loop {
            let Some(name) = headers
                .keys()
                .find(|name| name.as_str().starts_with(&self.prefix))
            else {
                return;
            };
            match self.own().find(|own| *own == name) {
                Some(own) => headers.remove(own),
                None => {
                    let name = name.clone();
                    headers.remove(name)
                }
            };
        }
    }

    /// The names of the session headers.
    fn own(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.id,
            &self.status,
            &self.session,
            &self.update,
            &self.action,
            &self.user,
        ]
        .into_iter()
    }
}

/// Fields that describe one connection and never travel on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop fields, including every field the `Connection`
/// header names (RFC 9110 §7.6.1). `Upgrade` is kept, with `Connection:
/// upgrade`, when `keep_upgrade` is set: a protocol switch is forwarded as
/// such (RFC 9110 §7.8).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none, or only `Connection` (backends answer with
    // `Connection: keep-alive`): one pass over the names, no hashing; only
    // the fields present are removed.
    let mut present = [false; 6];
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[at] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let upgrade = headers.remove(header::UPGRADE);
    remove_connection_named(headers);
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
    if let (true, Some(upgrade)) = (keep_upgrade, upgrade) {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes `Connection` and every field it names. One `Connection` field
/// (the usual case) is taken out and its names removed as text, with no
/// allocation; several are read into a list first.
fn remove_connection_named(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::CONNECTION).iter();
    let several = fields.next().is_some() && fields.next().is_some();
    if several {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::try_from(token.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        return;
    }
    let Some(connection) = headers.remove(header::CONNECTION) else {
        return;
    };
    let Ok(text) = connection.to_str() else {
        return;
    };
    for token in text.split(',') {
        // A name that is not a valid field name matches no field.
        headers.remove(token.trim());
    }
}

/// True when a request asks to switch protocols (RFC 9110 §7.8).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client at the other end of a connection.
#[derive(Debug)]
pub struct Client {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP as a header value, made once per connection.
    ip: HeaderValue,
    /// A proxy in front (`server.trusted_proxies`), whose forwarded scheme
    /// and host stand.
    trusted: bool,
    /// It reached sessiongate over TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
    /// The last `Host` it sent that was found valid: a client names the
    /// same host on every request of a connection, and checking one costs
    /// an allocation (a copy, not the header value itself, which would
    /// keep hyper's whole read buffer alive).
    valid_host: Mutex<Option<Box<[u8]>>>,
}

impl Client {
    /// The client connected from `addr`; `trusted` when it is a proxy of ours.
    pub fn new(addr: SocketAddr, trusted: bool) -> Client {
        let ip = Bytes::from(addr.ip().to_string());
        Client {
            addr,
            ip: HeaderValue::from_maybe_shared(ip).expect("an IP address is a header value"),
            trusted,
            https: false,
            valid_host: Mutex::new(None),
        }
    }

    /// Whether `host` passes `check`, asked only when it differs from the
    /// last host of this connection that passed.
    pub fn host_passes(
        &self,
        host: &HeaderValue,
        check: impl FnOnce(&HeaderValue) -> bool,
    ) -> bool {
        let mut known = self.valid_host.lock().expect("never held across a panic");
        if known.as_deref() == Some(host.as_bytes()) {
            return true;
        }
        let passes = check(host);
        if passes {
            *known = Some(host.as_bytes().into());
        }
        passes
    }

    /// The same client, connected over TLS.
    pub fn over_tls(self, https: bool) -> Client {
        Client { https, ..self }
    }
}

/// Appends the client's address to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host` (the client's `Host`); a
/// trusted proxy's own `X-Forwarded-Proto` and `X-Forwarded-Host` stand.
pub fn set_forwarded(headers: &mut HeaderMap, client: &Client, host: Option<HeaderValue>) {
    let chain = match headers.get(&X_FORWARDED_FOR) {
        None => client.ip.clone(),
        Some(_) => {
            let mut chain = Vec::with_capacity(64);
            for hop in headers.get_all(&X_FORWARDED_FOR) {
                chain.extend_from_slice(hop.as_bytes());
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(client.ip.as_bytes());
            HeaderValue::from_bytes(&chain).expect("joined from header values and an address")
        }
    };
    headers.insert(X_FORWARDED_FOR.clone(), chain);
    if client.trusted && headers.contains_key(&X_FORWARDED_PROTO) {
        return;
    }
    let scheme = if client.https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    if client.trusted && headers.contains_key(&X_FORWARDED_HOST) {
        return;
    }
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn strip_removes_every_prefixed_header_in_any_case() {
        let names = SessionHeaders::new("X-Session");
        let mut headers = map(&[
            ("x-session", "{}"),
            ("X-SESSION-ID", "a"),
            ("x-Session-Whatever", "b"),
            ("x-session-update", "{\"a\":1}"),
            ("X-Session-Update", "{\"b\":2}"),
            ("x-other", "c"),
        ]);
        names.strip(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-other"));
    }

    #[test]
    fn connection_named_fields_and_hop_by_hop_fields_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers, false);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn one_or_several_connection_fields_remove_what_they_name_in_any_case() {
        for fields in [
            &[("connection", "keep-alive, X-Secret,, Close")][..],
            &[
                ("connection", "keep-alive"),
                ("connection", "X-SECRET, close"),
            ],
        ] {
            let mut headers = map(fields);
            headers.append("x-secret", HeaderValue::from_static("1"));
            headers.append("close", HeaderValue::from_static("1"));
            headers.append("keep-alive", HeaderValue::from_static("timeout=5"));
            headers.append("accept", HeaderValue::from_static("*/*"));
            remove_hop_by_hop(&mut headers, false);
            assert_eq!(headers.keys().collect::<Vec<_>>(), ["accept"], "{fields:?}");
        }
        let mut plain = map(&[("connection", "keep-alive"), ("content-length", "2")]);
        remove_hop_by_hop(&mut plain, true);
        assert_eq!(plain.keys().collect::<Vec<_>>(), ["content-length"]);
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_header() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&headers));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let client = Client::new("127.0.0.1:4000".parse().unwrap(), false);
        let host = Some(HeaderValue::from_static("example.com"));
        set_forwarded(&mut headers, &client, host);
        assert_eq!(
            headers["x-forwarded-for"],
            "203.0.113.7, 10.0.0.1, 127.0.0.1"
        );
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        let mut fresh = HeaderMap::new();
        set_forwarded(&mut fresh, &client, None);
        assert_eq!(fresh["x-forwarded-for"], "127.0.0.1");
        assert!(!fresh.contains_key("x-forwarded-host"));
    }

    #[test]
    fn only_a_trusted_proxy_keeps_its_forwarded_scheme_and_host() {
        let sent = || {
            map(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "shop.example"),
            ])
        };
        let host = Some(HeaderValue::from_static("internal:8080"));
        for (trusted, proto, forwarded_host) in [
            (true, "https", "shop.example"),
            (false, "http", "internal:8080"),
        ] {
            let mut headers = sent();
            let client = Client::new("10.0.0.5:4000".parse().unwrap(), trusted);
            set_forwarded(&mut headers, &client, host.clone());
            assert_eq!(headers["x-forwarded-proto"], proto);
            assert_eq!(headers["x-forwarded-host"], forwarded_host);
            assert_eq!(headers["x-forwarded-for"], "10.0.0.5");
        }
    }
}
