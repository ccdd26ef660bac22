//! The admin API of users and devices (SPEC §12), for the admin listener
//! to mount: it answers `/sessions…` once the listener has checked the
//! bearer token ([`authorised`] does that check, in constant time).
//!
//! | request | answer |
//! |---|---|
//! | `GET /sessions?user=<id>` | `200 {"user": "<id>", "sessions": [{"sid", "created", "expires"}]}`, oldest first |
//! | `DELETE /sessions?user=<id>` | `200 {"destroyed": <n>}` |
//! | `DELETE /sessions/<sid>` | `204`, or `404` when there is no such session |
//!
//! A missing or malformed `user` is a 400, another method a 405, a store
//! that does not answer a 503; the bodies are JSON.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tracing::warn;

use crate::session::Sessions;
use crate::session::cookie::Sid;
use crate::session::store::{BoundSession, valid_user};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Whether `headers` carry `Authorization: Bearer <token>`. Compared in
/// constant time: both sides go through HMAC-SHA256 and the tags are
/// compared with `verify_slice`, so neither the token's bytes nor its
/// length show in the time taken.
pub fn authorised(headers: &HeaderMap, token: &[u8]) -> bool {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let (Some(presented), false) = (presented, token.is_empty()) else {
        return false;
    };
    let tag = |bytes: &[u8]| {
        let mut mac =
            HmacSha256::new_from_slice(b"sessiongate admin token").expect("any key length");
        mac.update(bytes);
        mac
    };
    let expected = tag(token).finalize().into_bytes();
    tag(presented.as_bytes()).verify_slice(&expected).is_ok()
}

/// Answers a `/sessions…` request (already authorised); `None` for any
/// other path.
pub async fn handle<B>(sessions: &Sessions, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = request.uri().path();
    let method = request.method();
    if path == "/sessions" {
        let Some(user) = query_user(request.uri().query()) else {
            return Some(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "?user= must name one id of 1 to 256 visible ASCII characters"}),
            ));
        };
        return Some(match *method {
            Method::GET | Method::HEAD => match sessions.store().sessions_of(&user).await {
                Ok(bound) => reply(StatusCode::OK, listing(&user, &bound)),
                Err(error) => unavailable(&error),
            },
            Method::DELETE => match sessions.store().revoke_user(&user, None).await {
                Ok(destroyed) => {
                    sessions.revoked(destroyed);
                    reply(StatusCode::OK, json!({ "destroyed": destroyed }))
                }
                Err(error) => unavailable(&error),
            },
            _ => not_allowed("GET, HEAD, DELETE"),
        });
    }
    let sid = path.strip_prefix("/sessions/")?;
    if method != Method::DELETE {
        return Some(not_allowed("DELETE"));
    }
    let Some(sid) = Sid::parse(sid) else {
        return Some(reply(
            StatusCode::NOT_FOUND,
            json!({"error": "no such session"}),
        ));
    };
    Some(match sessions.store().revoke_sid(&sid).await {
        Ok(true) => {
            sessions.revoked(1);
            empty(StatusCode::NO_CONTENT)
        }
        Ok(false) => reply(StatusCode::NOT_FOUND, json!({"error": "no such session"})),
        Err(error) => unavailable(&error),
    })
}

/// The `user` of a query string, if it is a valid id.
fn query_user(query: Option<&str>) -> Option<String> {
    let mut users = form_urlencoded::parse(query?.as_bytes()).filter(|(k, _)| k == "user");
    let (_, user) = users.next()?;
    (users.next().is_none() && valid_user(&user)).then(|| user.into_owned())
}

/// `{"user": …, "sessions": [{"sid", "created", "expires"}]}`, as the API
/// answers and `sessiongate sessions list --json` prints.
pub fn listing(user: &str, bound: &[BoundSession]) -> Value {
    let sessions: Vec<Value> = bound
        .iter()
        .map(|b| {
            json!({
                "sid": b.sid.as_str(),
                "created": rfc3339(b.created_ms),
                "expires": rfc3339(b.expires_ms),
            })
        })
        .collect();
    json!({ "user": user, "sessions": sessions })
}

/// ms since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": "method not allowed"}),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn unavailable(error: &crate::session::store::StoreError) -> Response<Full<Bytes>> {
    warn!(%error, "admin API: the session store did not answer");
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "the session store did not answer"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_right_bearer_token_is_authorised() {
        let token = b"0123456789abcdef0123456789abcdef";
        assert!(authorised(
            &bearer("Bearer 0123456789abcdef0123456789abcdef"),
            token
        ));
        assert!(authorised(
            &bearer("bearer 0123456789abcdef0123456789abcdef"),
            token
        ));
        for wrong in [
            "Bearer 0123456789abcdef0123456789abcdeF",
            "Bearer 0123456789abcdef",
            "Bearer ",
            "Basic 0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert!(!authorised(&bearer(wrong), token), "{wrong}");
        }
        assert!(!authorised(&HeaderMap::new(), token));
        assert!(
            !authorised(&bearer("Bearer "), b""),
            "no token configured, no access"
        );
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_763_743_200_123), "2025-11-21T16:40:00.123Z");
    }
}
