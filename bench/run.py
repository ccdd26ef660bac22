#!/usr/bin/env python3
"""The sessiongate benchmark (run it through bench/run.sh).

Starts, on 127.0.0.1 only, two fast backends (bench/backend.rs), a private
redis-server, nginx (1 worker, upstream keepalive, round-robin), HAProxy
(1 thread, round-robin with `cookie SERVERID insert` stickiness) and
sessiongate in several configurations, then loads each with wrk, in turn,
in the same run. For each it records requests/s, p50 and p99 latency, the
proxy's CPU time per request (utime + stime from /proc over the run, divided
by the requests), its peak RSS (VmHWM), and for sessiongate the Redis
commands per request (INFO commandstats). Every setup runs once per round;
the report gives the median of the rounds. It also measures sessiongate's
memory per idle keep-alive connection with 10,000 of them open.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SESSIONGATE = os.path.join(ROOT, "target/release/sessiongate")
BACKEND = os.path.join(ROOT, "target/release/examples/bench-backend")
RESULTS = os.path.join(ROOT, "bench/RESULTS.md")
HISTORY_MARK = "<!-- everything below this line is kept when the script rewrites the file -->"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 64
IDLE_CONNECTIONS = 10_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Processes:
    """Every process the benchmark starts, stopped by PID at the end."""

    def __init__(self, work):
        self.work = work
        self.started = []

    def start(self, name, args):
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.work)
        self.started.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def children(pid):
    """pid and its child processes (nginx's workers)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def status_kib(pids, key):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


def redis_calls(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    calls = {}
    for line in out.splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            calls[m.group(1)] = int(m.group(2))
    return calls


# Commands only sessiongate's Lua scripts run, inside Redis (INFO counts them too).
INSIDE_SCRIPTS = {"hgetall", "hset", "hdel", "pexpire", "exists", "time"}


def redis_delta(before, after):
    delta = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
    delta = {k: v for k, v in delta.items() if v > 0}
    top = sum(v for k, v in delta.items() if k not in INSIDE_SCRIPTS)
    return top, sum(delta.values()), delta


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, seconds, header=None, connections=CONNECTIONS):
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        args[1:1] = ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    percentile = lambda p: re.search(rf"^\s+{p}%\s+([\d.]+(?:us|ms|s))$", out, re.M)
    if not (percentile(50) and percentile(99)):
        raise RuntimeError(f"unexpected wrk output for {url}:\n{out}")
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": to_ms(percentile(50).group(1)),
        "p99": to_ms(percentile(99).group(1)),
        "errors": 0,
    }
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = (int(bad.group(1)) if bad else 0) + (
        sum(int(g) for g in socket_errors.groups()) if socket_errors else 0)
    return result


def write_config(work, name, text):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def nginx_config(port, backends, work):
    os.makedirs(os.path.join(work, "nginx"), exist_ok=True)
    servers = "".join(f"    server {b};\n" for b in backends)
    return write_config(work, "nginx.conf", f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx;
  proxy_temp_path {work}/nginx;
  upstream app {{
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
""")


def haproxy_config(port, backends, work):
    servers = "".join(f"  server s{i} {b} cookie s{i}\n" for i, b in enumerate(backends))
    return write_config(work, "haproxy.cfg", f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  option forwardfor
frontend web
  bind 127.0.0.1:{port}
  default_backend app
backend app
  balance roundrobin
  cookie SERVERID insert indirect nocache
  http-reuse safe
{servers}""")


def sessiongate_config(port, backends, work, name, store, threads, redis_port=None):
    servers = ", ".join(f'"http://{b}"' for b in backends)
    store_section = (f'kind = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"'
                     if store == "redis" else 'kind = "memory"')
    return write_config(work, f"{name}.toml", f"""
[server]
listen = "127.0.0.1:{port}"
worker_threads = {threads}
[upstreams]
servers = [{servers}]
[cookie]
secrets = ["{SECRET}"]
secure = false
[store]
{store_section}
[timeouts]
keepalive = "600s"
request_header = "600s"
""")


def login_cookie(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login") as response:
        cookie = response.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("sg_session="), cookie
    return f"Cookie: {cookie}"


def machine():
    def first_line(args):
        try:
            out = subprocess.run(args, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; memory {mem_gib:.0f} GiB; Linux {platform.release()}",
        f"{first_line(['nginx', '-v'])}; {first_line(['haproxy', '-v'])}",
        f"{first_line(['redis-server', '--version'])}; {first_line(['wrk', '-v'])}",
        f"{first_line(['rustc', '--version'])}; sessiongate built with `cargo build --release`",
    ]


def idle_connections(port, pid, count, batch=100):
    """RSS growth of a proxy per idle keep-alive connection that served one
    request. Connections open in batches, as clients arrive, so the proxy
    needs no more than `batch` backend connections at a time."""
    time.sleep(0.5)
    before = status_kib([pid], "VmRSS")
    sockets = []
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for start in range(0, count, batch):
        opened = []
        for _ in range(min(batch, count - start)):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            opened.append(s)
        for s in opened:
            data = b""
            while b"backend" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("a connection closed")
                data += chunk
        sockets += opened
    time.sleep(1.0)
    after = status_kib([pid], "VmRSS")
    for s in sockets:
        s.close()
    return (after - before) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s per setup")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--note", default="", help="a line about this run, kept in the report")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 3

    work = tempfile.mkdtemp(prefix="sessiongate-bench-")
    procs = Processes(work)
    try:
        backends = []
        for name in "AB":
            port = free_port()
            proc = procs.start(f"backend-{name}", [BACKEND, f"127.0.0.1:{port}", name])
            wait_port(port, proc)
            backends.append(f"127.0.0.1:{port}")
        redis_port = free_port()
        redis = procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", work])
        wait_port(redis_port, redis)

        setups = []  # (name, port, pid or None, header, is_sessiongate_redis)
        setups.append(("direct to a backend", int(backends[0].split(":")[1]), None, None, False))
        port = free_port()
        proc = procs.start("nginx", ["nginx", "-p", work, "-c", nginx_config(port, backends, work)])
        wait_port(port, proc)
        setups.append(("nginx round-robin, 1 worker", port, proc.pid, None, False))
        port = free_port()
        proc = procs.start("haproxy", ["haproxy", "-db", "-f", haproxy_config(port, backends, work)])
        wait_port(port, proc)
        setups.append(("HAProxy round-robin + cookie, 1 thread", port, proc.pid, None, False))
        for name, store, threads in [("sessiongate memory, 1 thread", "memory", 1),
                                     ("sessiongate Redis, 1 thread", "redis", 1),
                                     ("sessiongate Redis, default threads", "redis", 0)]:
            port = free_port()
            config = sessiongate_config(port, backends, work, name.replace(" ", "_").replace(",", ""),
                                        store, threads, redis_port)
            env = dict(os.environ, SESSIONGATE_LOG="warn")
            log = open(os.path.join(work, f"sg-{port}.log"), "w")
            proc = subprocess.Popen([SESSIONGATE, "run", "--config", config], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
            procs.started.append(proc)
            wait_port(port, proc)
            setups.append((name, port, proc.pid, login_cookie(port), store == "redis"))

        rounds = {name: [] for name, *_ in setups}
        for round_number in range(args.rounds):
            for name, port, pid, header, uses_redis in setups:
                url = f"http://127.0.0.1:{port}/"
                wrk(url, 1, header)  # warm up: connections, pools, scripts
                pids = children(pid) if pid else []
                cpu_before = cpu_seconds(pids) if pids else 0
                calls_before = redis_calls(redis_port)
                redis_before = cpu_seconds([redis.pid])
                result = wrk(url, args.seconds, header)
                result["cpu_us"] = ((cpu_seconds(pids) - cpu_before) * 1e6 / result["requests"]) if pids else None
                redis_cpu = (cpu_seconds([redis.pid]) - redis_before) * 1e6 / result["requests"]
                result["redis_cpu_us"] = redis_cpu if uses_redis else None
                top, all_calls, _ = redis_delta(calls_before, redis_calls(redis_port))
                result["redis_top"] = top / result["requests"] if uses_redis else None
                result["redis_all"] = all_calls / result["requests"] if uses_redis else None
                result["rss_mib"] = status_kib(pids, "VmHWM") / 1024 if pids else None
                rounds[name].append(result)
                print(f"round {round_number + 1}: {name}: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms, "
                      f"cpu {result['cpu_us'] or 0:.1f} us/req, errors {result['errors']}", flush=True)

        # Requests that must cost Redis nothing: no cookie, and a forged one.
        redis_setup = next(s for s in setups if s[0] == "sessiongate Redis, 1 thread")
        url = f"http://127.0.0.1:{redis_setup[1]}/"
        zero = {}
        good = redis_setup[3]
        forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
        for label, header in [("no cookie", None), ("forged cookie", forged)]:
            before = redis_calls(redis_port)
            result = wrk(url, 2, header)
            top, all_calls, _ = redis_delta(before, redis_calls(redis_port))
            zero[label] = (all_calls, result["requests"])

        # Idle keep-alive connections.
        idle_port = free_port()
        config = sessiongate_config(idle_port, backends, work, "idle", "memory", 1)
        proc = procs.start("sessiongate-idle", [SESSIONGATE, "run", "--config", config])
        wait_port(idle_port, proc)
        per_connection = idle_connections(idle_port, proc.pid, IDLE_CONNECTIONS)
        nginx_setup = setups[1]
        nginx_per_connection = idle_connections(nginx_setup[1], children(nginx_setup[2])[-1], IDLE_CONNECTIONS)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    report(args, setups, rounds, zero, per_connection, nginx_per_connection)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(args, setups, rounds, zero, per_connection, nginx_per_connection):
    med = {name: {key: median([r[key] for r in rounds[name]])
                  for key in ["rps", "p50", "p99", "cpu_us", "rss_mib", "redis_top", "redis_all", "redis_cpu_us",
                              "errors"]}
           for name, *_ in setups}
    direct_p99 = med["direct to a backend"]["p99"]

    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    lines = [
        "# sessiongate benchmark results",
        "",
        f"Written by `bench/run.sh` on {time.strftime('%Y-%m-%d %H:%M')}: {args.rounds} round(s) of "
        f"{args.seconds} s per setup, `wrk -t2 -c{CONNECTIONS} --latency`, every setup in every round, "
        "medians shown. All processes on 127.0.0.1 of one machine, sharing its cores: compare CPU time "
        "per request more than requests/s.",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += ["Machine:", ""] + [f"- {line}" for line in machine()] + [""]
    lines += [
        "| setup | req/s | p50 ms | p99 ms | p99 over direct ms | proxy CPU µs/req | proxy peak RSS MiB | "
        "Redis commands/req (incl. inside scripts) | Redis CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, *_ in setups:
        m = med[name]
        added = None if name.startswith("direct") else m["p99"] - direct_p99
        redis = "–" if m["redis_top"] is None else f"{m['redis_top']:.2f} ({m['redis_all']:.2f})"
        lines.append(f"| {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {fmt(added, '.2f')} | "
                     f"{fmt(m['cpu_us'], '.1f')} | {fmt(m['rss_mib'], '.1f')} | {redis} | "
                     f"{fmt(m['redis_cpu_us'], '.1f')} | {m['errors']:.0f} |")
    sg = med["sessiongate Redis, 1 thread"]
    nginx = med["nginx round-robin, 1 worker"]
    haproxy = med["HAProxy round-robin + cookie, 1 thread"]
    verdict = lambda ok: "**met**" if ok else "**not met**"
    lines += [
        "",
        "Targets (sessiongate with Redis at 1 worker thread, every request with a valid session cookie):",
        "",
        f"- CPU per request at or below nginx's: {sg['cpu_us']:.1f} µs vs {nginx['cpu_us']:.1f} µs: "
        f"{verdict(sg['cpu_us'] <= nginx['cpu_us'])}",
        f"- requests/s at or above HAProxy's: {sg['rps']:.0f} vs {haproxy['rps']:.0f}: "
        f"{verdict(sg['rps'] >= haproxy['rps'])}",
        f"- one Redis command per request with a session and no update: {sg['redis_top']:.3f} "
        f"({sg['redis_all']:.2f} counting the commands the Lua script runs inside Redis): "
        f"{verdict(abs(sg['redis_top'] - 1) < 0.01)}",
    ]
    for label, (calls, requests) in zero.items():
        lines.append(f"- zero Redis commands for a request with {label}: {calls} in {requests} requests: "
                     f"{verdict(calls == 0)}")
    sg_added, nginx_added = sg["p99"] - direct_p99, nginx["p99"] - direct_p99
    lines += [
        f"- added p99 over direct at {CONNECTIONS} connections no worse than nginx's: {sg_added:.2f} ms vs "
        f"{nginx_added:.2f} ms: {verdict(sg_added <= nginx_added)}",
        f"- under 10 KB of RSS per idle keep-alive connection: {per_connection:.1f} KiB "
        f"({IDLE_CONNECTIONS} connections, each after one request; nginx: {nginx_per_connection:.1f} KiB): "
        f"{verdict(per_connection < 10000 / 1024)}",
        "",
        "HAProxy runs `cookie SERVERID insert indirect nocache`; wrk sends no cookie, so it balances "
        "round-robin and inserts its cookie in every response. The sessiongate setups send a valid "
        "session cookie (from `GET /login`), so each request loads a session and stores nothing. "
        "Redis commands counted from INFO commandstats, which also counts what the Lua scripts run.",
        "",
    ]
    history = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            text = f.read()
        if HISTORY_MARK in text:
            history = text.split(HISTORY_MARK, 1)[1]
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n" + HISTORY_MARK + history)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
