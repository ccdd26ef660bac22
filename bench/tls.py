#!/usr/bin/env python3
"""sessiongate against nginx over TLS (run it through bench/tls.sh).

On 127.0.0.1 only: two fast backends, nginx (1 worker, upstream keepalive)
and sessiongate (1 worker thread, memory store), both terminating TLS with
the same ECDSA P-256 certificate, TLS 1.3 only, the same cipher suite
(TLS_AES_256_GCM_SHA384, the first one OpenSSL's client offers, which wrk
uses) and key exchange (X25519). Measured side by side in each round:

- CPU per request over TLS keep-alive connections (wrk -c64);
- CPU per new TLS handshake (wrk with `Connection: close`: every request
  is a new connection and a full handshake; wrk keeps no session to resume).

CPU is the proxy's utime + stime from /proc over the run, divided by the
requests. The result is appended to bench/RESULTS.md.
"""

import argparse
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (the helpers every bench/ script shares)

CIPHER = "TLS_AES_256_GCM_SHA384"


def make_cert(work):
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=bench.test",
            "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1")
    return os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")


def nginx_tls_config(port, backends, work, cert, key):
    os.makedirs(os.path.join(work, "nginx"), exist_ok=True)
    servers = "".join(f"    server {b};\n" for b in backends)
    return common.write_config(work, "nginx-tls.conf", f"""
worker_processes 1;
daemon off;
pid {work}/nginx-tls.pid;
error_log {work}/nginx-tls-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx;
  proxy_temp_path {work}/nginx;
  upstream app {{
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {CIPHER};
    ssl_ecdh_curve X25519;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}
}}
""")


def sessiongate_tls_config(port, backends, work, cert, key):
    servers = ", ".join(f'"http://{b}"' for b in backends)
    return common.write_config(work, "sessiongate-tls.toml", f"""
[server]
listen = "127.0.0.1:{port}"
worker_threads = 1
[server.tls]
cert = "{cert}"
key = "{key}"
[upstreams]
servers = [{servers}]
[cookie]
secrets = ["{common.SECRET}"]
[store]
kind = "memory"
[timeouts]
keepalive = "600s"
request_header = "600s"
""")


def negotiated(port):
    """The protocol, cipher and key exchange a default OpenSSL client gets."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "bench.test"],
                         input="", capture_output=True, text=True).stdout
    found = {"proto": "?", "cipher": "?", "group": "?"}
    for line in out.splitlines():
        if line.startswith("New, ") and "Cipher is" in line:
            found["proto"] = line.split(",")[1].strip()
            found["cipher"] = line.split("Cipher is", 1)[1].strip()
        if "Server Temp Key:" in line or "Negotiated TLS1.3 group:" in line:
            found["group"] = line.split(":", 1)[1].strip()
    return f"{found['proto']} {found['cipher']}, key exchange {found['group']}"


def login_cookie(port):
    context = ssl._create_unverified_context()
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/login", context=context) as response:
        return response.headers["Set-Cookie"].split(";")[0]


def measure(pid_of, url, seconds, header=None, connections=common.CONNECTIONS):
    pids = common.children(pid_of)
    before = common.cpu_seconds(pids)
    result = common.wrk(url, seconds, header=header, connections=connections)
    cpu = common.cpu_seconds(pids) - before
    result["cpu_us"] = cpu / max(result["requests"], 1) * 1e6
    return result


def idle_tls(port, pids, count=2000, batch=100):
    """KiB of resident memory per idle TLS keep-alive connection: `count`
    connections, each after one request, held open."""
    import socket
    context = ssl._create_unverified_context()
    time.sleep(0.5)
    before = common.status_kib(pids, "VmRSS")
    open_ = []
    for _ in range(count // batch):
        for _ in range(batch):
            raw = socket.create_connection(("127.0.0.1", port))
            tls = context.wrap_socket(raw, server_hostname="bench.test")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += tls.recv(65536)
            open_.append(tls)
        time.sleep(0.15)
    time.sleep(1.0)
    after = common.status_kib(pids, "VmRSS")
    for tls in open_:
        tls.close()
    return (after - before) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sessiongate-bench-tls-")
    procs = common.Processes(work)
    try:
        backends = common.start_backends(procs)
        cert, key = make_cert(work)
        nginx_port, sg_port = common.free_port(), common.free_port()
        nginx = procs.start("nginx-tls", ["nginx", "-c", nginx_tls_config(nginx_port, backends, work, cert, key)])
        common.wait_port(nginx_port, nginx)
        sg = procs.start("sessiongate-tls", [common.SESSIONGATE, "run", "--config",
                                             sessiongate_tls_config(sg_port, backends, work, cert, key)])
        common.wait_port(sg_port, sg)
        cookie = login_cookie(sg_port)
        ciphers = (negotiated(nginx_port), negotiated(sg_port))
        print(f"negotiated: nginx {ciphers[0]}; sessiongate {ciphers[1]}", flush=True)
        setups = [
            ("nginx, keep-alive", nginx.pid, nginx_port, None, common.CONNECTIONS),
            ("sessiongate, keep-alive, no cookie", sg.pid, sg_port, None, common.CONNECTIONS),
            ("sessiongate, keep-alive, valid session", sg.pid, sg_port, f"Cookie: {cookie}", common.CONNECTIONS),
            ("nginx, new handshake per request", nginx.pid, nginx_port, "Connection: close", 16),
            ("sessiongate, new handshake per request", sg.pid, sg_port, "Connection: close", 16),
        ]
        runs = {name: [] for name, *_ in setups}
        for _ in range(args.rounds):
            for name, pid, port, header, connections in setups:
                runs[name].append(measure(pid, f"https://127.0.0.1:{port}/", args.seconds, header, connections))
                time.sleep(1)
        lines = [
            "",
            f"## TLS: sessiongate against nginx ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            f"`bench/tls.sh --rounds {args.rounds} --seconds {args.seconds}`: wrk -t2 over https, medians of the rounds. "
            f"Both proxies: 1 worker, the same ECDSA P-256 certificate, TLS 1.3 only. "
            f"Negotiated with a default OpenSSL client: nginx {ciphers[0]}; "
            f"sessiongate {ciphers[1]}. Keep-alive runs use 64 connections; "
            f"handshake runs 16 connections with `Connection: close` (a full handshake per request, "
            f"wrk resumes no session).",
            "",
            "| setup | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        med = {}
        for name, *_ in setups:
            rs = runs[name]
            m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "cpu_us", "errors")}
            med[name] = m
            lines.append(f"| {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu_us']:.1f} | {m['errors']:.0f} |")
        idle_sg = idle_tls(sg_port, common.children(sg.pid))
        idle_nginx = idle_tls(nginx_port, common.children(nginx.pid))
        keep = med["sessiongate, keep-alive, no cookie"]["cpu_us"] / med["nginx, keep-alive"]["cpu_us"]
        keep_session = med["sessiongate, keep-alive, valid session"]["cpu_us"] / med["nginx, keep-alive"]["cpu_us"]
        hs = med["sessiongate, new handshake per request"]["cpu_us"] / med["nginx, new handshake per request"]["cpu_us"]
        lines += [
            "",
            f"- per request over TLS keep-alive, goal at most 1.2x nginx: {keep:.2f}x without a cookie, "
            f"{keep_session:.2f}x with a valid session (memory store): **{'met' if keep <= 1.2 else 'not met'}** (no cookie)",
            f"- per new handshake, goal at most nginx's: {hs:.2f}x: **{'met' if hs <= 1.0 else 'not met'}**",
            f"- resident memory per idle TLS keep-alive connection (2000, each after one request): "
            f"sessiongate {idle_sg:.1f} KiB, nginx {idle_nginx:.1f} KiB",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        with open(common.RESULTS, "a") as f:
            f.write(text)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
