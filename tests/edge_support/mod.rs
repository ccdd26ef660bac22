//! Support for the edge tests (TLS, routes, reload, persistent cookies):
//! a throwaway CA and certificates made with the openssl CLI, a sessiongate
//! started in-process from a configuration *file* (so that it can be
//! reloaded), and a rustls client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sessiongate::reload::Reloader;
use sessiongate::{Config, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::common::TempDir;

/// A throwaway CA in its own directory, which signs leaf certificates.
pub struct Pki {
    pub dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pki {
    /// A new CA (EC P-256), valid for two days.
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        openssl(
            &dir.0,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sessiongate test CA",
            ],
        );
        Pki { dir }
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> PathBuf {
        self.dir.0.join("ca.pem")
    }

    /// A leaf certificate for `names` (DNS names, and 127.0.0.1) signed by
    /// the CA; `kind` is `ec` (PKCS#8 key), `ec-sec1` or `rsa-pkcs1`.
    /// Returns (chain path: leaf then CA, key path).
    pub fn leaf(&self, file: &str, names: &[&str], kind: &str) -> (PathBuf, PathBuf) {
        let dir = &self.dir.0;
        let key = format!("{file}.key");
        match kind {
            "ec" | "ec-sec1" => openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-out",
                    &key,
                ],
            ),
            "rsa-pkcs1" => openssl(dir, &["genrsa", "-traditional", "-out", &key, "2048"]),
            other => panic!("unknown key kind {other}"),
        }
        if kind == "ec-sec1" {
            openssl(dir, &["ec", "-in", &key, "-out", &key]);
        }
        let csr = format!("{file}.csr");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={}", names[0]),
            ],
        );
        let mut san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        san.push("IP:127.0.0.1".into());
        let ext = format!("{file}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .unwrap();
        let leaf = format!("{file}.leaf.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &leaf,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        let chain = dir.join(format!("{file}.pem"));
        let mut text = std::fs::read_to_string(dir.join(&leaf)).unwrap();
        text += &std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        std::fs::write(&chain, text).unwrap();
        (chain, dir.join(key))
    }
}

/// The `[server.tls]` lines for a certificate and key.
pub fn tls_table(cert: &Path, key: &Path) -> String {
    format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// The leaf (first) certificate of a PEM chain file.
pub fn leaf_der(chain: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(chain)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// sessiongate running in-process from a configuration file, which a test
/// may rewrite and [`reload`](EdgeProxy::reload).
pub struct EdgeProxy {
    pub addr: SocketAddr,
    pub redirect: Option<SocketAddr>,
    pub file: PathBuf,
    reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

impl EdgeProxy {
    /// Starts sessiongate on this configuration text (written to a file).
    pub async fn start(config: &str) -> EdgeProxy {
        let dir = TempDir::new("edge");
        let file = dir.0.join("config.toml");
        std::fs::write(&file, config).unwrap();
        let parsed = Config::load(&file).expect("test config is valid");
        let server = Server::bind(&parsed).await.expect("sessiongate binds");
        let addr = server.local_addr();
        let redirect = server.redirect_addr();
        let reloader = Reloader::new(server.live().clone(), file.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        EdgeProxy {
            addr,
            redirect,
            file,
            reloader,
            stop: Some(stop),
            done: Some(done),
            _dir: dir,
        }
    }

    /// Writes a new configuration and reloads it, as SIGHUP does.
    pub fn reload(&self, config: &str) -> Result<(), String> {
        std::fs::write(&self.file, config).unwrap();
        self.reloader.reload().map_err(|e| e.to_string())
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

impl Drop for EdgeProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A rustls client trusting `ca`, offering `alpn`.
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` with SNI `name`.
pub async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// An HTTP/1.1 client on one TLS connection.
pub struct TlsClient {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl TlsClient {
    pub async fn connect(addr: SocketAddr, name: &str, ca: &Path) -> TlsClient {
        let tls = connect_tls(addr, name, client_config(ca, &[b"http/1.1"]))
            .await
            .unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        TlsClient { sender }
    }

    /// One GET with these headers; the status, headers and body text.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Response<()>, String) {
        let mut request = Request::get(path).header("host", host);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.sender.ready().await.unwrap();
        let response = self
            .sender
            .send_request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, ()),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// The value of one header the backend saw, from its JSON echo.
pub fn seen_header(echo: &str, name: &str) -> Option<String> {
    let echo: serde_json::Value = serde_json::from_str(echo).unwrap();
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0].as_str() == Some(name))
        .map(|pair| pair[1].as_str().unwrap().to_string())
}

/// The backend that answered, from its JSON echo.
pub fn backend_of(echo: &str) -> String {
    let echo: serde_json::Value = serde_json::from_str(echo).unwrap();
    echo["backend"].as_str().unwrap().to_string()
}

/// Runs curl with these arguments; (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let output = Command::new("curl").args(args).output().expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A configuration: these lines for `[server]` (after `listen`), the
/// default pool's servers, more text after `[upstreams]`, and the rest.
pub fn config(server: &str, servers: &[String], upstreams: &str, rest: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\
         [upstreams]\nservers = [{}]\n{upstreams}\n\
         [cookie]\nsecrets = [{:?}]\n\
         [store]\nkind = \"memory\"\n\
         {rest}\n",
        servers.join(", "),
        crate::common::SECRET_A,
    )
}
