//! The admin listener (SPEC §9): a small HTTP/1.1 server of its own, apart
//! from the proxy's listener, off unless `[admin]` is configured.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200 ready`, or `503` and the reason: the store did not answer its last check (every second), or a pool has no server in rotation |
//! | `GET /metrics` | the Prometheus text format 0.0.4 ([`crate::metrics`]) |
//! | `GET /status` | the status page: one self-contained HTML file (`status.html`) |
//! | `GET /status.json` | what the page shows ([`status`]) |
//! | `/sessions…` | needs `Authorization: Bearer <admin.token>` (constant-time compare), else 401 |
//!
//! Its upkeep runs beside it: a store ping every second (for `/readyz`),
//! and a sample of the metrics every second (the status page's history of
//! the last ten minutes).

pub mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::status::Status;
use arc_swap::ArcSwap;

use crate::config::AdminConfig;
use crate::error::StartError;
use crate::proxy::Gateway;
use crate::users_api;

/// How long a client of the admin listener may take over a request head.
const REQUEST_HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// The status page, as shipped.
const STATUS_PAGE: &str = include_str!("status.html");

/// A bound admin listener, ready to [`run`](Admin::run).
pub struct Admin {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    status: Status,
    gateway: Arc<ArcSwap<Gateway>>,
    /// `admin.token`; without one, every `/sessions…` call is refused.
    token: Option<Vec<u8>>,
}

impl Admin {
    /// Binds the admin listener.
    pub async fn bind(
        config: &AdminConfig,
        gateway: Arc<ArcSwap<Gateway>>,
    ) -> Result<Admin, StartError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Admin {
            listener,
            state: Arc::new(State {
                status: Status::new(gateway.clone()),
                gateway,
                token: config.token.as_ref().map(|t| t.bytes.clone()),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves, and runs the upkeep, until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        info!(listen = %self.local_addr(), "admin listener is serving");
        let upkeep = tokio::spawn(self.state.status.clone().upkeep(stop.clone()));
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            let state = self.state.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.answer(&request).await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_HEAD_DEADLINE);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            debug!(%error, "admin connection ended");
                        }
                    }
                    () = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        let _ = upkeep.await;
    }
}

impl State {
    async fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if path == "/sessions" || path.starts_with("/sessions/") {
            let authorised = self
                .token
                .as_ref()
                .is_some_and(|token| users_api::authorised(request.headers(), token));
            return match authorised {
                true => users_api::handle(self.gateway.load_full().sessions(), request)
                    .await
                    .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "404 Not Found\n")),
                false => {
                    let mut response = text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
                    response.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"sessiongate admin\""),
                    );
                    response
                }
            };
        }
        let known = matches!(
            path,
            "/healthz" | "/readyz" | "/metrics" | "/status" | "/status.json"
        );
        if !known {
            return text(StatusCode::NOT_FOUND, "404 Not Found\n");
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.status.not_ready() {
                None => text(StatusCode::OK, "ready\n"),
                Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.status.metrics_text(),
            ),
            "/status" => {
                let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE);
                // Nothing from elsewhere: the page works offline, and must.
                response.headers_mut().insert(
                    "content-security-policy",
                    HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; \
                         style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                    ),
                );
                response
            }
            _ => respond(
                StatusCode::OK,
                "application/json",
                self.status.json().to_string(),
            ),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}
