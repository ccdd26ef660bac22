//! Bodies stream through (SPEC §7): 200 MB up and 200 MB down, with
//! Content-Length and chunked, through the sessiongate binary, whose peak
//! resident memory (VmHWM) stays under 64 MB.

mod common;

use bytes::Bytes;
use common::{Backend, Binary, Setup, StoreKind, stream_of};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SIZE: u64 = 200 * 1024 * 1024;
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_up_and_down_keep_the_proxy_under_64_mb() {
    let backend = Backend::start("big").await;
    let binary = Binary::start(&Setup::new(StoreKind::Memory).config(&[backend.url()], None));
    let client = Client::builder(TokioExecutor::new())
        .build_http::<BoxBody<Bytes, std::convert::Infallible>>();
    let url = |path: &str| format!("http://{}{path}", binary.addr);

    for (path, framing) in [("/download", "content-length"), ("/download", "chunked")] {
        let query = if framing == "chunked" {
            "&chunked=1"
        } else {
            ""
        };
        let request = http::Request::get(url(&format!("{path}?bytes={SIZE}{query}")))
            .body(BodyExt::boxed(http_body_util::Empty::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let length = response
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(length.is_some(), framing == "content-length", "{framing}");
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        }
        assert_eq!(received, SIZE, "download, {framing}");
    }

    for framing in ["content-length", "chunked"] {
        let mut request = http::Request::post(url("/upload"));
        if framing == "content-length" {
            request = request.header("content-length", SIZE);
        }
        let response = client
            .request(request.body(stream_of(SIZE)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echo: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        assert_eq!(echo["body_bytes"], SIZE, "upload, {framing}");
        let seen = echo["headers"].as_array().unwrap();
        let chunked = seen
            .iter()
            .any(|p| p[0] == "transfer-encoding" && p[1] == "chunked");
        assert_eq!(
            chunked,
            framing == "chunked",
            "the framing reached the backend as sent"
        );
    }

    let peak = binary.peak_rss_kib();
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB after 800 MB through the proxy"
    );
    eprintln!("sessiongate peak RSS after 4 x 200 MB: {peak} KiB");
}
