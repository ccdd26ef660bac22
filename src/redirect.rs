//! `server.tls.redirect_listen`: a plain HTTP listener that answers every
//! request with `308 Permanent Redirect` (RFC 9110 §15.4.9) to the same
//! host, path and query over https. It serves no session and no backend.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Accepts on `listener` until `stopping`, redirecting to https on
/// `tls_port`; a request head must come within `deadline`.
pub async fn serve(
    listener: TcpListener,
    tls_port: u16,
    deadline: Duration,
    stopping: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "redirect listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping.cancelled() => return,
        };
        let service = service_fn(move |request: Request<Incoming>| async move {
            Ok::<_, Infallible>(redirect(&request, tls_port))
        });
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(deadline)
                .keep_alive(false);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = connection => if let Err(error) = served {
                    debug!(%peer, %error, "redirect connection ended with an error");
                },
                () = stopping.cancelled() => {}
            }
        });
    }
}

/// The answer to one request: 308 to `https://<host><path?query>` (with
/// `:port` unless it is 443), or 400 without a usable `Host`.
pub fn redirect<B>(request: &Request<B>, tls_port: u16) -> Response<Full<Bytes>> {
    let host = request
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            let host = request.headers().get(HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = host.parse().ok()?;
            Some(authority.host().to_string())
        });
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = host.and_then(|host| {
        let port = match tls_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        HeaderValue::try_from(format!("https://{host}{port}{path}")).ok()
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    match location {
        Some(location) => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(LOCATION, location);
        }
        None => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: &str, port: u16) -> String {
        let request = Request::builder()
            .uri(uri)
            .header(HOST, host)
            .body(())
            .unwrap();
        let response = redirect(&request, port);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        response.headers()[LOCATION].to_str().unwrap().to_string()
    }

    #[test]
    fn the_redirect_keeps_host_path_and_query_and_names_a_non_default_port() {
        assert_eq!(
            location("/a/b?c=1", "shop.example:80", 443),
            "https://shop.example/a/b?c=1"
        );
        assert_eq!(
            location("/", "shop.example", 8443),
            "https://shop.example:8443/"
        );
    }
}
