//! The benchmark's backend: a small, fast HTTP/1.1 server on one thread.
//! `GET /login` stores a session through sessiongate (`X-Session-Update`);
//! a path starting with `/update` stores a one-key change to it (the bench's
//! write mix); anything else answers a short text and changes nothing.
//!
//!     cargo run --release --example bench-backend -- 127.0.0.1:9101 A

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Each update stores a value the session did not hold yet.
static UPDATES: AtomicU64 = AtomicU64::new(0);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9101".into());
    let name = args.next().unwrap_or_else(|| "A".into());
    let listener = TcpListener::bind(&addr).await.expect("the address is free");
    let body = Bytes::from(format!("hello from backend {name}\n"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let mut response = Response::new(Full::new(body));
                    let headers = response.headers_mut();
                    headers.insert("content-type", "text/plain".parse().unwrap());
                    if request.uri().path() == "/login" {
                        let update =
                            r#"{"user":"bench","roles":["reader","writer"],"cart":[1,2,3]}"#;
                        headers.insert("x-session-update", update.parse().unwrap());
                    } else if request.uri().path().starts_with("/update") {
                        let n = UPDATES.fetch_add(1, Ordering::Relaxed);
                        let update = format!(r#"{{"seen":{n}}}"#);
                        headers.insert("x-session-update", update.parse().unwrap());
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
