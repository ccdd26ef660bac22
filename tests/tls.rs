//! TLS termination: curl and a rustls client run the session flow over TLS;
//! HTTP/2 is chosen by ALPN; SNI picks the certificate; TLS 1.1 is refused;
//! a client that never sends its hello is cut at the handshake deadline;
//! the backend hears `X-Forwarded-Proto: https`; the plain redirect
//! listener answers 308; an idle TLS keep-alive connection stays small; a
//! client still sending a refused head reads its 431.

mod common;
mod edge_support;

use std::time::{Duration, Instant};

use common::{Backend, Binary, TempDir, oversized_head, send_all_then_read};
use edge_support::{
    EdgeProxy, Pki, TlsClient, backend_of, client_config, config, connect_tls, curl, leaf_der,
    seen_header, tls_table,
};
use tokio::io::AsyncReadExt;

struct Site {
    pki: Pki,
    proxy: EdgeProxy,
    backends: Vec<Backend>,
}

/// sessiongate over TLS (default certificate for shop.test, an SNI one
/// for api.test and *.api.test) in front of two backends.
async fn site(extra_server: &str, rest: &str) -> Site {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("shop", &["shop.test"], "ec");
    let (api_cert, api_key) = pki.leaf("api", &["api.test", "*.api.test"], "rsa-pkcs1");
    let backends = vec![Backend::start("one").await, Backend::start("two").await];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let server = format!(
        "{extra_server}{}[[server.tls.sni]]\nnames = [\"api.test\", \"*.api.test\"]\ncert = {:?}\nkey = {:?}\n",
        tls_table(&cert, &key),
        api_cert.display().to_string(),
        api_key.display().to_string()
    );
    let proxy = EdgeProxy::start(&config(&server, &urls, "", rest)).await;
    Site {
        pki,
        proxy,
        backends,
    }
}

fn resolve(site: &Site, name: &str) -> String {
    format!("{name}:{}:127.0.0.1", site.proxy.addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_runs_the_session_flow_over_tls_with_http1_and_http2() {
    let site = site("", "").await;
    let jar = TempDir::new("jar");
    let jar = jar.0.join("cookies");
    let jar = jar.to_str().unwrap().to_string();
    let ca = site.pki.ca().display().to_string();
    let url = format!("https://shop.test:{}/cart", site.proxy.addr.port());
    let resolve = resolve(&site, "shop.test");
    for (round, version) in [("--http1.1", "1.1"), ("--http2", "2")]
        .into_iter()
        .enumerate()
    {
        let (flag, expected) = version;
        let update = format!("x-test-update: {{\"n\":{round}}}");
        let run = |extra: &[&str]| {
            let mut args = vec![
                "-sS",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                flag,
                "-c",
                &jar,
                "-b",
                &jar,
                "-w",
                "\n%{http_version}",
            ];
            args.extend_from_slice(extra);
            args.push(&url);
            let (code, out, err) = curl(&args);
            assert_eq!(code, 0, "curl failed: {err}");
            let (body, proto) = out.rsplit_once('\n').unwrap();
            assert_eq!(proto, expected, "negotiated protocol");
            body.to_string()
        };
        let first = tokio::task::block_in_place(|| run(&["-H", &update]));
        assert_eq!(
            seen_header(&first, "x-forwarded-proto").as_deref(),
            Some("https")
        );
        let second = tokio::task::block_in_place(|| run(&[]));
        assert_eq!(
            seen_header(&second, "x-session-status").as_deref(),
            Some("active"),
            "the cookie set over TLS comes back ({version:?})"
        );
        assert_eq!(
            seen_header(&second, "x-session").as_deref(),
            Some(format!("{{\"n\":{round}}}").as_str())
        );
    }
    let _ = &site.backends;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rustls_client_runs_the_session_flow_and_balances_over_both_backends() {
    let site = site("", "").await;
    let mut client = TlsClient::connect(site.proxy.addr, "shop.test", &site.pki.ca()).await;
    let (response, _) = client
        .get(
            "shop.test",
            "/login",
            &[("x-test-update", "{\"user\":\"ada\"}")],
        )
        .await;
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    assert!(cookie.contains("Secure"), "{cookie}");
    let mut backends = Vec::new();
    for _ in 0..4 {
        let (response, body) = client.get("shop.test", "/", &[("cookie", &pair)]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            seen_header(&body, "x-session").as_deref(),
            Some("{\"user\":\"ada\"}")
        );
        assert_eq!(
            seen_header(&body, "x-forwarded-proto").as_deref(),
            Some("https")
        );
        backends.push(backend_of(&body));
    }
    assert!(backends.contains(&"one".into()) && backends.contains(&"two".into()));
}

#[tokio::test]
async fn alpn_chooses_h2_and_a_client_without_alpn_gets_http1() {
    let site = site("", "").await;
    let ca = site.pki.ca();
    let h2 = connect_tls(
        site.proxy.addr,
        "shop.test",
        client_config(&ca, &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // HTTP/2 over it, with no prior-knowledge guess on the server's side.
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://shop.test/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let plain = connect_tls(site.proxy.addr, "shop.test", client_config(&ca, &[]))
        .await
        .unwrap();
    assert_eq!(plain.get_ref().1.alpn_protocol(), None);
}

#[tokio::test]
async fn sni_picks_the_certificate_and_anything_else_gets_the_default() {
    let site = site("", "").await;
    let ca = site.pki.ca();
    let dir = &site.pki.dir.0;
    let shop = leaf_der(&dir.join("shop.pem"));
    let api = leaf_der(&dir.join("api.pem"));
    for (name, expected) in [
        ("api.test", &api),
        ("v2.api.test", &api),
        ("shop.test", &shop),
        ("other.test", &shop),
    ] {
        // Verification is off the point here: take whatever is served.
        let config = client_config(&ca, &[]);
        let mut config = (*config).clone();
        config
            .dangerous()
            .set_certificate_verifier(std::sync::Arc::new(AcceptAny));
        let tls = connect_tls(site.proxy.addr, name, std::sync::Arc::new(config))
            .await
            .unwrap();
        let served = &tls.get_ref().1.peer_certificates().unwrap()[0];
        assert_eq!(served, expected, "SNI {name}");
    }
    // a.b.api.test is two labels below api.test: the wildcard does not cover it.
    let config = client_config(&ca, &[]);
    let mut config = (*config).clone();
    config
        .dangerous()
        .set_certificate_verifier(std::sync::Arc::new(AcceptAny));
    let tls = connect_tls(site.proxy.addr, "a.b.api.test", std::sync::Arc::new(config))
        .await
        .unwrap();
    assert_eq!(&tls.get_ref().1.peer_certificates().unwrap()[0], &shop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_refused_and_1_2_is_served() {
    let site = site("", "").await;
    let addr = format!("127.0.0.1:{}", site.proxy.addr.port());
    let s_client = |version: &str| {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr,
                "-servername",
                "shop.test",
                version,
            ])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let (ok, text) = tokio::task::block_in_place(|| s_client("-tls1_1"));
    assert!(!ok, "TLS 1.1 was accepted:\n{text}");
    assert!(
        text.contains("SSL alert number"),
        "not refused by an alert from the server:\n{text}"
    );
    let (ok, text) = tokio::task::block_in_place(|| s_client("-tls1_2"));
    assert!(ok && text.contains("TLSv1.2"), "TLS 1.2:\n{text}");
}

/// Over TLS too, a client still sending a head refused with 431 reads the
/// 431: the proxy reads and drops the rest rather than reset the connection.
#[tokio::test]
async fn a_tls_client_still_sending_a_refused_head_reads_its_431() {
    let site = site("max_header_bytes = 8192\n", "").await;
    for _ in 0..3 {
        let tls = connect_tls(
            site.proxy.addr,
            "shop.test",
            client_config(&site.pki.ca(), &[b"http/1.1"]),
        )
        .await
        .unwrap();
        let head = oversized_head("shop.test", 16_000_000);
        let response = send_all_then_read(tls, &[head.as_bytes()]).await;
        assert!(
            response.starts_with("HTTP/1.1 431"),
            "the client read {response:.200}"
        );
    }
    assert!(site.backends.iter().all(|b| b.seen().is_empty()));
}

#[tokio::test]
async fn a_silent_client_is_cut_at_the_handshake_deadline() {
    let site = site("", "[timeouts]\nrequest_header = \"1s\"\n").await;
    let mut silent = tokio::net::TcpStream::connect(site.proxy.addr)
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the proxy closed the connection within 5 s");
    let elapsed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_https() {
    let port = common::free_port();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("shop", &["shop.test"], "ec-sec1");
    let backend = Backend::start("one").await;
    let server = format!(
        "{}redirect_listen = \"127.0.0.1:{port}\"\n",
        tls_table(&cert, &key)
    );
    let proxy = EdgeProxy::start(&config(&server, &[backend.url()], "", "")).await;
    let mut plain = tokio::net::TcpStream::connect(proxy.redirect.unwrap())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut plain,
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_string(&mut answer))
        .await
        .expect("the redirect listener closes after its answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    let location = format!(
        "location: https://shop.test:{}/a/b?c=1\r\n",
        proxy.addr.port()
    );
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    assert!(backend.seen().is_empty());
}

/// Measured: the binary's resident memory per idle TLS keep-alive
/// connection (each served one request, then parked), as
/// `tests/idle_connections.rs` measures it for plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_keepalive_connections_stay_small() {
    const CONNECTIONS: usize = 500;
    let pki = Pki::new();
    let (cert, key) = pki.leaf("shop", &["shop.test"], "ec");
    let backend = Backend::start("idle").await;
    let text = config(&tls_table(&cert, &key), &[backend.url()], "", "")
        .replace("listen = \"127.0.0.1:0\"\n", "");
    let binary = Binary::start(&text);
    let ca = pki.ca();
    let warm = TlsClient::connect(binary.addr, "shop.test", &ca).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = binary.rss_kib();
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS / 50 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.push(async {
                let mut client = TlsClient::connect(binary.addr, "shop.test", &ca).await;
                let (response, _) = client.get("shop.test", "/", &[]).await;
                assert_eq!(response.status(), 200);
                client
            });
        }
        open.extend(futures_util::future::join_all(batch).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_connection = binary.rss_kib().saturating_sub(before) as f64 / CONNECTIONS as f64;
    eprintln!(
        "idle TLS keep-alive connection: {per_connection:.1} KiB each ({CONNECTIONS} connections)"
    );
    assert!(
        per_connection < 64.0,
        "{per_connection:.1} KiB per idle TLS connection"
    );
    drop(open);
}

/// A verifier that takes any certificate (to look at what SNI served).
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// deploy/edge/sessiongate.toml passes `check` once its certificate and
/// secret exist (here: the test's own), and prints its routing table; its
/// systemd unit passes `systemd-analyze verify` where that is installed.
#[test]
fn the_edge_deploy_files_pass_check_and_systemd_analyze() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("edge", &["example.com"], "ec");
    let dir = TempDir::new("edge-deploy");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, common::SECRET_A).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/edge/sessiongate.toml"))
        .unwrap()
        .replace("/etc/sessiongate/tls/fullchain.pem", cert.to_str().unwrap())
        .replace("/etc/sessiongate/tls/privkey.pem", key.to_str().unwrap())
        .replace(
            "file:/run/credentials/sessiongate.service/cookie-secret",
            &format!("file:{}", secret.display()),
        );
    let copy = dir.0.join("config.toml");
    std::fs::write(&copy, text).unwrap();
    let (code, output) = common::sessiongate(
        &["check".as_ref(), "--config".as_ref(), copy.as_os_str()],
        &[],
    );
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("routes[0]") && output.contains("pool assets:"),
        "{output}"
    );
    let installed = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        let unit_dir = TempDir::new("edge-unit");
        let unit = unit_dir.0.join("sessiongate.service");
        // The binary it names must exist for verify; point it at ours.
        let text = std::fs::read_to_string(root.join("deploy/edge/sessiongate.service"))
            .unwrap()
            .replace(
                "/usr/local/bin/sessiongate",
                env!("CARGO_BIN_EXE_sessiongate"),
            );
        std::fs::write(&unit, text).unwrap();
        let verify = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verify.stderr);
        let ours: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("sessiongate.service"))
            .collect();
        assert!(ours.is_empty(), "{said}");
    }
}

/// An https upstream: verified against `[upstreams.tls] ca`, the URL's host
/// as the name checked; the same server against the system's roots (which
/// do not hold the test CA) is refused with a 502. The TLS server here is a
/// second sessiongate terminating TLS in front of a plain backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("upstream", &["upstream.test"], "ec");
    let backend = Backend::start("behind-tls").await;
    let tls_front =
        EdgeProxy::start(&config(&tls_table(&cert, &key), &[backend.url()], "", "")).await;
    let https = format!("https://127.0.0.1:{}", tls_front.addr.port());
    let ca = format!(
        "[upstreams.tls]\nca = {:?}\n",
        pki.ca().display().to_string()
    );
    let verified = EdgeProxy::start(&config("", std::slice::from_ref(&https), &ca, "")).await;
    let browser = common::Browser::new(verified.addr);
    for _ in 0..3 {
        let reply = browser.get("/through-tls").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "behind-tls");
    }
    let unverified = EdgeProxy::start(&config("", &[https], "", "")).await;
    let reply = common::Browser::new(unverified.addr).get("/").await;
    assert_eq!(reply.status, 502, "an unknown CA must not be trusted");
}
