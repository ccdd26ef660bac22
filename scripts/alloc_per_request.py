#!/usr/bin/env python3
"""Allocations (and CPU) per proxied request, for the hot-path work.

Starts on 127.0.0.1 only, on free ports: an nginx backend (one worker; its
responses carry `Connection: keep-alive`, as most backends' do; `/login`
answers with an `X-Session-Update`), for `--store redis` a private
redis-server, and sessiongate built with `--features count-allocations`
(one worker thread, memory or Redis store, metrics and access log off).
It logs in once, then runs wrk with that one hot session's cookie and
reads the allocation counter (SIGUSR1, a line on stderr) before and after.
Everything it starts it stops by PID.

    cargo build --release --features count-allocations
    scripts/alloc_per_request.py --store memory
    scripts/alloc_per_request.py --store redis
    scripts/alloc_per_request.py --store memory --backends 2
    scripts/alloc_per_request.py --store memory --close   # a connection per request

Allocation counts are deterministic to a fraction; the CPU figure (utime +
stime of the gate from /proc over the run, per request) is noisy on a
shared machine.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "alloc-bench-secret-0123456789abcdef0123"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"process {proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def read_counter(proc, log_path, seen):
    """Sends SIGUSR1 and returns the allocation totals from the new line."""
    proc.send_signal(signal.SIGUSR1)
    deadline = time.time() + 5
    while time.time() < deadline:
        with open(log_path) as f:
            lines = re.findall(r"sessiongate: allocations (\d+) reallocations (\d+)", f.read())
        if len(lines) > seen:
            allocs, reallocs = lines[seen]
            return int(allocs), int(reallocs)
        time.sleep(0.05)
    sys.exit("no allocation line on stderr: was sessiongate built with --features count-allocations?")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--backends", type=int, default=1,
                        help="servers in the gate's pool (nginx listens on each port)")
    parser.add_argument("--clock", action="store_true",
                        help="also count the gate's clock reads (libc clock_gettime) with perf; needs "
                             "`perf probe -x LIBC -a clock_gettime` once, as root; slows the run")
    parser.add_argument("--close", action="store_true",
                        help="a new client connection per request (Connection: close)")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/sessiongate"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="alloc-bench-")
    procs = []

    def start(argv, **kw):
        proc = subprocess.Popen(argv, **kw)
        procs.append(proc)
        return proc

    try:
        backend_ports, gate_port = [free_port() for _ in range(args.backends)], free_port()
        listens = "".join(f"    listen 127.0.0.1:{port};\n" for port in backend_ports)
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work};
  proxy_temp_path {work};
  fastcgi_temp_path {work};
  uwsgi_temp_path {work};
  scgi_temp_path {work};
  keepalive_requests 1000000;
  server {{
{listens}    location /login {{
      add_header X-Session-Update '{{"user":"bench","roles":["reader","writer"],"cart":[1,2,3]}}';
      return 200 "logged in\\n";
    }}
    location / {{ return 200 "hello from the backend\\n"; }}
  }}
}}
""")
        nginx = start(["nginx", "-p", work, "-c", os.path.join(work, "nginx.conf")],
                      stderr=subprocess.DEVNULL)
        for port in backend_ports:
            wait_listening(port, nginx)

        store = 'kind = "memory"'
        if args.store == "redis":
            redis_port = free_port()
            redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", work],
                          stdout=subprocess.DEVNULL)
            wait_listening(redis_port, redis)
            store = f'kind = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"'
        config = os.path.join(work, "gate.toml")
        with open(config, "w") as f:
            f.write(f"""
[server]
listen = "127.0.0.1:{gate_port}"
worker_threads = 1
[upstreams]
servers = [{", ".join(f'"http://127.0.0.1:{port}"' for port in backend_ports)}]
[cookie]
secrets = ["{SECRET}"]
secure = false
[store]
{store}
[timeouts]
keepalive = "600s"
request_header = "600s"
[log]
access = "off"
""")
        log_path = os.path.join(work, "gate.stderr")
        log = open(log_path, "w")
        gate = start([args.binary, "run", "--config", config], stderr=log, stdout=subprocess.DEVNULL,
                     env=dict(os.environ, SESSIONGATE_LOG="warn"))
        wait_listening(gate_port, gate)

        with urllib.request.urlopen(f"http://127.0.0.1:{gate_port}/login") as response:
            cookie = response.headers["Set-Cookie"].split(";")[0]
        url = f"http://127.0.0.1:{gate_port}/"
        wrk = ["wrk", "-t1", f"-c{args.connections}", "-H", f"Cookie: {cookie}", url]
        if args.close:
            wrk[1:1] = ["-H", "Connection: close"]
        subprocess.run(wrk[:1] + ["-d1s"] + wrk[1:], check=True, capture_output=True)
        time.sleep(0.3)

        before, seen = read_counter(gate, log_path, 0), 1
        cpu_before = cpu_seconds(gate.pid)
        perf = None
        if args.clock:
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "probe_libc:clock_gettime",
                                     "-p", str(gate.pid)], stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
        out = subprocess.run(wrk[:1] + [f"-d{args.seconds:g}s"] + wrk[1:], check=True,
                             capture_output=True, text=True).stdout
        time.sleep(0.3)
        clock = ""
        if perf:
            perf.send_signal(signal.SIGINT)
            reads = int(perf.communicate()[1].strip().splitlines()[-1].split(",")[0])
            served = int(re.search(r"(\d+) requests in", out).group(1))
            clock = f" clock_reads/request={reads / served:.2f}"
        cpu_after = cpu_seconds(gate.pid)
        after = read_counter(gate, log_path, seen)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        if "Non-2xx" in out or "Socket errors" in out:
            print(out, file=sys.stderr)
        allocs = (after[0] - before[0]) / requests
        reallocs = (after[1] - before[1]) / requests
        cpu_us = (cpu_after - cpu_before) * 1e6 / requests
        print(f"store={args.store} backends={args.backends} close={args.close} requests={requests} allocations/request={allocs:.2f} "
              f"reallocations/request={reallocs:.2f} cpu_us/request={cpu_us:.1f}{clock}")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
