"""What every bench/ script shares: the binaries, free ports, the processes
it starts (stopped by PID), CPU and memory from /proc, Redis's command
counts, wrk, and the sessions it logs in through sessiongate.

bench/run.py, bench/tls.py, bench/metrics.py and bench/scaleout.py import
it; none of them starts anything on a port it did not pick itself.
"""

import os
import platform
import re
import signal
import socket
import subprocess
import http.client
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SESSIONGATE = os.path.join(ROOT, "target/release/sessiongate")
BACKEND = os.path.join(ROOT, "target/release/examples/bench-backend")
RESULTS = os.path.join(ROOT, "bench/RESULTS.md")
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 64


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
    """Every process a benchmark starts, stopped by PID at the end."""

    def __init__(self, work):
        self.work = work
        self.started = []

    def start(self, name, args, env=None):
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.work, env=env)
        self.started.append(proc)
        return proc

    def log(self, name):
        try:
            with open(os.path.join(self.work, f"{name}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop_all(self):
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_backends(procs, names="AB"):
    """The bench backends (bench/backend.rs), one per name: their addresses."""
    backends = []
    for name in names:
        port = free_port()
        proc = procs.start(f"backend-{name}", [BACKEND, f"127.0.0.1:{port}", name])
        wait_port(port, proc)
        backends.append(f"127.0.0.1:{port}")
    return backends


def start_redis(procs, work, name="redis"):
    """A private redis-server, no persistence: (port, process)."""
    port = free_port()
    proc = procs.start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", work,
                              "--dbfilename", f"{name}.rdb"])
    wait_port(port, proc)
    return port, proc


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


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args],
                          capture_output=True, text=True, check=True).stdout


def redis_calls(port):
    calls = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            calls[m.group(1)] = int(m.group(2))
    return calls


def redis_reads(port):
    """How many reads from its clients' sockets redis-server has processed
    (INFO stats' total_reads_processed): a pipeline that arrives at once is
    one read, so this counts round trips, whatever the commands in them
    (this call's own connection adds one or two)."""
    for line in redis_cli(port, "INFO", "stats").splitlines():
        if line.startswith("total_reads_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError(f"redis on {port}: INFO stats has no total_reads_processed")


def inside_scripts():
    """The commands that only sessiongate's Lua scripts run inside Redis, which
    INFO commandstats counts as well: the rule of `round_trips` in
    tests/common/redis.rs, read from there so that the bench and the tests
    count alike (this list if the file cannot be read)."""
    try:
        with open(os.path.join(ROOT, "tests/common/redis.rs")) as f:
            text = f.read()
        body = re.search(r"INSIDE_SCRIPTS\s*:\s*\[&str;\s*\d+\]\s*=\s*\[([^\]]*)\]", text).group(1)
        return set(re.findall(r'"([a-z]+)"', body))
    except (OSError, AttributeError):
        return {"hgetall", "hset", "hdel", "pexpire", "exists", "time"}


INSIDE_SCRIPTS = inside_scripts()


def redis_delta(before, after):
    """(round trips, every command counted, the counts by name) between two
    INFO commandstats."""
    delta = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
    delta = {k: v for k, v in delta.items() if v > 0}
    top = sum(v for k, v in delta.items() if k not in INSIDE_SCRIPTS)
    return top, sum(delta.values()), delta


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, seconds, header=None, connections=CONNECTIONS, script=None):
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        args[1:1] = ["-H", header]
    if script:
        args[1:1] = ["-s", script]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    percentile = lambda p: re.search(rf"^\s+{p}%\s+([\d.]+(?:us|ms|s))\s*$", out, re.M)
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


def sessiongate_config(work, name, port, backends, store, more="", threads=1):
    """A sessiongate configuration in work/name.toml: listening on port, the
    bench backends round-robin, the bench's cookie secret on plain HTTP;
    `store` is the body of [store], `more` the tables that follow it."""
    servers = ", ".join(f'"http://{b}"' for b in backends)
    return write_config(work, f"{name}.toml", f"""[server]
listen = "127.0.0.1:{port}"
worker_threads = {threads}
[upstreams]
servers = [{servers}]
[cookie]
secrets = ["{SECRET}"]
secure = false
[store]
{store.strip()}
{more.strip()}
""")


def redis_store(port):
    """The body of [store] for the redis-server at port."""
    return f'kind = "redis"\nurl = "redis://127.0.0.1:{port}/0"'


TIMEOUTS = '[timeouts]\nkeepalive = "600s"\nrequest_header = "600s"\n'


def login_cookie(port):
    """`Cookie: sg_session=…` of a new session stored through the gate at port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login") as response:
        cookie = response.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("sg_session="), cookie
    return f"Cookie: {cookie}"


def login_cookies(port, count, parallel=16):
    """`count` new sessions through the gate at port, `parallel` keep-alive
    connections at a time: their cookies (`sg_session=…`)."""
    def cookie(response):
        cookie = response.getheader("Set-Cookie").split(";")[0]
        assert cookie.startswith("sg_session="), cookie
        return cookie
    return requests_in_parallel(port, [("/login", None)] * count, cookie, parallel)


def read_sessions(port, cookies, parallel=16):
    """One GET / with each cookie (a cache's warm-up): the statuses."""
    return requests_in_parallel(port, [("/", c) for c in cookies], lambda r: r.status, parallel)


def requests_in_parallel(port, requests, answer, parallel):
    """GETs of (path, cookie or None) over `parallel` keep-alive connections:
    answer(response) of each, in order."""
    def some(part):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        for path, cookie in part:
            connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            response = connection.getresponse()
            response.read()
            answers.append(answer(response))
        connection.close()
        return answers
    parts = [requests[i::parallel] for i in range(parallel)]
    with ThreadPoolExecutor(parallel) as pool:
        answered = list(pool.map(some, parts))
    ordered = [None] * len(requests)
    for i, part in enumerate(answered):
        ordered[i::parallel] = part
    return ordered


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
