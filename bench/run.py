#!/usr/bin/env python3
"""The sessiongate benchmark matrix (run it through bench/run.sh).

Starts, on 127.0.0.1 only, two fast backends (bench/backend.rs), private
redis-servers (one per target that uses Redis, so that each one's Redis CPU
and commands are its own), and these targets, each with one worker:

- nginx round-robin (upstream keepalive);
- HAProxy round-robin with `cookie SERVERID insert` stickiness;
- nginx + Lua + Redis: ngx_http_lua reads the session with one Redis GET per
  request (and stores an update with one SET);
- sessiongate with the memory store, with Redis and no cache, and with Redis
  and `[store.cache]` (SPEC §11) in tracking mode "default" and "bcast".

Every target is loaded by wrk in three workloads: one hot session (one
cookie on every request), 10,000 sessions picked at random, and the same
with 10% of the requests storing an update (the backend answers
`X-Session-Update` for a path starting with /update). The sessions are
created through each sessiongate first (`GET /login`, in parallel); nginx +
Lua gets the same session ids as Redis strings; nginx and HAProxy get the
same cookies, which they pass through.

For each target and workload, per round: requests/s, p99, the proxy's CPU
time per request (utime + stime from /proc over the run, divided by the
requests) and its ratio to nginx round-robin's in the same round and
workload, Redis round trips per request (INFO commandstats, the commands
that only sessiongate's scripts run inside Redis left out, as
tests/common/redis.rs counts), and Redis CPU per request (redis-server's
utime + stime over the run). The report gives medians over rounds, of the
ratios too. A separate, shorter run of every target and workload counts
allocations per request with perf uprobes on libc's malloc, calloc, realloc
and posix_memalign, and Redis round trips exactly with MONITOR (both slow
the process they watch, so neither runs during a measured round). It also
checks that a request without a valid cookie costs Redis nothing, and
measures memory per idle keep-alive connection.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402  (the helpers every bench/ script shares)
    CONNECTIONS,
    RESULTS,
    SESSIONGATE,
    TIMEOUTS,
    Processes,
    children,
    cpu_seconds,
    free_port,
    login_cookies,
    machine,
    read_sessions,
    redis_calls,
    redis_delta,
    redis_reads,
    redis_store,
    sessiongate_config,
    start_backends,
    start_redis,
    status_kib,
    wait_port,
    wrk,
    write_config,
)

HISTORY_MARK = "<!-- everything below this line is kept when the script rewrites the file -->"
IDLE_CONNECTIONS = 10_000
SESSIONS = 10_000
WRITE_SHARE = 0.10
TOUCH_INTERVAL_S = 60  # the caches' touch_interval
SESSION_JSON = '{"user":"bench","roles":["reader","writer"],"cart":[1,2,3]}'
LUA_PREFIX = "lua:"

WORKLOADS = [
    ("hot", "one hot session"),
    ("random", f"{SESSIONS:,} sessions at random"),
    ("write", f"{SESSIONS:,} sessions at random, {WRITE_SHARE:.0%} storing an update"),
]

NGINX = "nginx round-robin"
HAPROXY = "HAProxy sticky cookie"
NGINX_LUA = "nginx + Lua + Redis GET"
SG_MEMORY = "sessiongate memory"
SG_REDIS = "sessiongate Redis, no cache"
SG_DEFAULT = 'sessiongate Redis + cache, mode "default"'
SG_BCAST = 'sessiongate Redis + cache, mode "bcast"'
DIRECT = "direct to a backend"


class Target:
    """One proxy under test: where it listens, the PIDs whose CPU counts,
    its own redis-server if it has one, and the cookies it is loaded with."""

    def __init__(self, name, port=None, pid=None, redis=None, cookies=None, skipped=None):
        self.name = name
        self.port = port
        self.pid = pid
        self.redis = redis  # (port, pid) or None
        self.cookies = cookies or []
        self.skipped = skipped
        self.note = None  # how it ran, where that is not as named
        self.scripts = {}

    def pids(self):
        return children(self.pid) if self.pid else []


def nginx_config(port, backends, work, name="nginx", lua_redis_port=None):
    os.makedirs(os.path.join(work, name), exist_ok=True)
    servers = "".join(f"    server {b};\n" for b in backends)
    modules, http_lua, location_lua = "", "", ""
    if lua_redis_port:
        modules = ("load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
                   "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n")
        http_lua = nginx_lua_http(lua_redis_port)
        location_lua = NGINX_LUA_LOCATION
    return write_config(work, f"{name}.conf", f"""
{modules}worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name};
  proxy_temp_path {work}/{name};
{http_lua}  upstream app {{
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{
{location_lua}      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
""")


def nginx_lua_http(redis_port):
    """The http-level Lua of the nginx + Lua + Redis peer. Debian has no
    lua-resty-redis, so it speaks RESP itself over a cosocket kept in
    nginx's keepalive pool: one GET per request with a session cookie, and
    for a response with X-Session-Update one SET, from a timer (nginx's
    header filter cannot do I/O), so off the response's path."""
    return f"""  lua_socket_log_errors off;
  init_by_lua_block {{
    local function command(...)
      local parts = {{"*" .. select("#", ...) .. "\\r\\n"}}
      for _, arg in ipairs({{...}}) do
        parts[#parts + 1] = "$" .. #arg .. "\\r\\n" .. arg .. "\\r\\n"
      end
      return table.concat(parts)
    end
    local function connect()
      local sock = ngx.socket.tcp()
      sock:settimeouts(1000, 1000, 1000)
      local ok, err = sock:connect("127.0.0.1", {redis_port})
      if not ok then return nil, err end
      return sock
    end
    function session_get(key)
      local sock, err = connect()
      if not sock then return nil, err end
      sock:send(command("GET", key))
      local line, err = sock:receive("*l")
      if not line then sock:close() return nil, err end
      local n = tonumber(line:sub(2))
      local value = "{{}}"
      if n and n >= 0 then
        local data = sock:receive(n + 2)
        if not data then sock:close() return nil, "short read" end
        value = data:sub(1, n)
      end
      sock:setkeepalive(60000, 64)
      return value
    end
    function session_set(premature, key, value)
      if premature then return end
      local sock = connect()
      if not sock then return end
      sock:send(command("SET", key, value))
      if sock:receive("*l") then sock:setkeepalive(60000, 64) else sock:close() end
    end
  }}
"""


NGINX_LUA_LOCATION = f"""      access_by_lua_block {{
        local cookie = ngx.var.cookie_sg_session
        local sid = cookie and cookie:match("^([^.]+)%.")
        if sid then
          local value = session_get("{LUA_PREFIX}" .. sid)
          if not value then return ngx.exit(503) end
          ngx.req.set_header("X-Session", value)
          ngx.ctx.key = "{LUA_PREFIX}" .. sid
          ngx.ctx.value = value
        end
      }}
      header_filter_by_lua_block {{
        local update = ngx.header["X-Session-Update"]
        if update then
          ngx.header["X-Session-Update"] = nil
          if ngx.ctx.key then ngx.timer.at(0, session_set, ngx.ctx.key, ngx.ctx.value) end
        end
      }}
"""


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


def gate_config(port, backends, work, name, store, redis_port=None, cache_mode=None, with_mode=True):
    """A sessiongate target's configuration: memory or Redis, with [store.cache]
    in a tracking mode (`with_mode=False`: the table without the `mode` key)."""
    body = redis_store(redis_port) if store == "redis" else 'kind = "memory"'
    cache = ""
    if cache_mode:
        cache = f'[store.cache]\nmax_entries = {2 * SESSIONS}\ntouch_interval = "{TOUCH_INTERVAL_S}s"\n'
        cache += f'mode = "{cache_mode}"\n' if with_mode else ""
    return sessiongate_config(work, name, port, backends, body, cache + TIMEOUTS)


def config_problem(path):
    """What `sessiongate check` finds wrong with a configuration, or None."""
    out = subprocess.run([SESSIONGATE, "check", "--config", path], capture_output=True, text=True)
    if out.returncode == 0:
        return None
    why = next((line.strip() for line in (out.stderr + out.stdout).splitlines() if line.strip()), "")
    return why.replace(path, "its configuration")[:240] or f"check exited with {out.returncode}"


def start_sessiongate(procs, work, backends, name, store, redis_port=None, cache_mode=None):
    """A sessiongate target with its sessions, or a skipped one saying why
    (a configuration that does not parse yet, say). A build whose
    [store.cache] has no `mode` key yet runs mode "default" without it."""
    port = free_port()
    slug = "sg-" + "".join(c if c.isalnum() else "-" for c in name.lower())
    config = gate_config(port, backends, work, slug, store, redis_port, cache_mode)
    problem = config_problem(config)
    note = None
    if problem and cache_mode == "default" and "`mode`" in problem:
        config = gate_config(port, backends, work, slug, store, redis_port, cache_mode, with_mode=False)
        problem = config_problem(config)
        note = "[store.cache] without `mode`, which this build does not know yet"
    if problem:
        return Target(name, skipped=problem)
    proc = procs.start(slug, [SESSIONGATE, "run", "--config", config],
                       env=dict(os.environ, SESSIONGATE_LOG="warn"))
    try:
        wait_port(port, proc)
    except RuntimeError as e:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        why = next((line.strip() for line in procs.log(slug).splitlines() if line.strip()), str(e))
        return Target(name, skipped=why.replace(config, "its configuration")[:240])
    target = Target(name, port, proc.pid, cookies=login_cookies(port, SESSIONS))
    target.note = note
    read_sessions(port, target.cookies)  # a write drops the cached copy: read each once
    return target


def lua_literal(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_scripts(work, slug, cookies):
    """wrk Lua scripts of the three workloads. The random ones format every
    request once, in init, and pick one per request."""
    table = os.path.join(work, f"{slug}-cookies.lua")
    with open(table, "w") as f:
        f.write("return {\n" + "".join(f"  {lua_literal(c)},\n" for c in cookies) + "}\n")
    hot = write_config(work, f"{slug}-hot.lua", f'wrk.headers["Cookie"] = {lua_literal(cookies[0])}\n')
    common = f"""local cookies = dofile({lua_literal(table)})
local reads, updates = {{}}, {{}}
function init(args)
  math.randomseed(os.time() + tonumber(tostring({{}}):match("0x(%x+)") or "0", 16) % 1000003)
  for i, cookie in ipairs(cookies) do
    reads[i] = wrk.format("GET", "/", {{ Cookie = cookie }})
    updates[i] = wrk.format("GET", "/update", {{ Cookie = cookie }})
  end
end
"""
    random = write_config(work, f"{slug}-random.lua", common + """function request()
  return reads[math.random(#reads)]
end
""")
    write = write_config(work, f"{slug}-write.lua", common + f"""function request()
  local i = math.random(#reads)
  if math.random() < {WRITE_SHARE} then return updates[i] end
  return reads[i]
end
""")
    return {"hot": hot, "random": random, "write": write}


def seed_lua_sessions(redis_port, cookies):
    """The sessions of the nginx + Lua peer: a Redis string per sid."""
    lines = []
    for cookie in cookies:
        key = LUA_PREFIX + cookie.split("=", 1)[1].split(".", 1)[0]
        lines.append(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(SESSION_JSON)}\r\n{SESSION_JSON}\r\n")
    subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], input="".join(lines),
                   capture_output=True, text=True, check=True)


class Allocations:
    """Counts libc allocation calls of given PIDs with perf uprobes, in a
    probe group of its own (removed at the end)."""

    GROUP = "sgbench"
    FUNCTIONS = ["malloc", "calloc", "realloc", "posix_memalign"]

    def __init__(self):
        self.why_not = None
        libc = next((p for p in ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                                 "/lib64/libc.so.6", "/usr/lib64/libc.so.6"] if os.path.exists(p)), None)
        if not shutil.which("perf") or not libc:
            self.why_not = "perf or libc.so.6 not found"
            return
        self.remove()
        for function in self.FUNCTIONS:
            out = subprocess.run(["perf", "probe", "-q", "-x", libc, f"{self.GROUP}:{function}={function}"],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                # perf refuses a second uprobe where one of another group sits,
                # and then says nothing: name the probes already there.
                there = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
                there = ", ".join(line.split()[0] for line in there.splitlines() if line.strip())
                self.why_not = (f"perf probe on libc's {function} failed: "
                                f"{(out.stderr or out.stdout).strip()[:200]}"
                                + (f" (probes already set: {there[:200]}; `perf probe -d` them)" if there else ""))
                self.remove()
                return

    def remove(self):
        if shutil.which("perf"):
            subprocess.run(["perf", "probe", "-q", "-d", f"{self.GROUP}:*"], capture_output=True)

    def start(self, pids, seconds):
        """Starts counting the allocations of pids for `seconds`; None if it cannot."""
        if self.why_not or not pids:
            return None
        out = tempfile.NamedTemporaryFile(prefix="sgbench-perf-", suffix=".txt", delete=False).name
        events = ",".join(f"{self.GROUP}:{f}" for f in self.FUNCTIONS)
        perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", events,
                                 "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return perf, out

    def finish(self, counting):
        """The calls counted, once the count has ended."""
        if counting is None:
            return None
        perf, out = counting
        perf.wait()
        total = 0
        with open(out) as f:
            for line in f:
                fields = line.split(",")
                if len(fields) > 2 and fields[2].startswith(self.GROUP + ":") and fields[0].isdigit():
                    total += int(fields[0])
        os.remove(out)
        return total


class Monitor:
    """Counts, with MONITOR, the commands clients send to a redis-server:
    what a Lua script runs inside Redis shows as `[db lua]` and is left out.
    Exact whatever the commands' names, but it slows Redis down, so it runs
    only beside the allocation count, never in a measured round."""

    CLIENT_LINE = re.compile(rb'^\d+\.\d+ \[\d+ (?!lua\])[^\]]*\] "([^"]*)"')

    def __init__(self, port):
        self.count = 0
        # The cache's touches, PEXPIREAT each (then a PTTL, in batches of
        # MULTI/EXEC): sessions first read together fall due together, one
        # touch_interval later, so a short run may hold a wave of them.
        self.touches = 0
        self.proc = subprocess.Popen(["redis-cli", "-p", str(port), "MONITOR"], stdout=subprocess.PIPE)
        self.proc.stdout.readline()  # OK
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            m = self.CLIENT_LINE.match(line)
            if m:
                self.count += 1
                self.touches += m.group(1).upper() == b"PEXPIREAT"

    def stop(self):
        time.sleep(0.3)  # the last replies' commands reach the monitor
        self.proc.terminate()
        self.proc.wait()
        self.reader.join(timeout=5)
        return self.count, self.touches


def side_pass(target, workload, seconds, allocations):
    """Allocations, exact Redis commands and the cache's touches per
    request, from one wrk run of the workload with perf's uprobes and
    MONITOR attached, after the same warm-up as a measured run."""
    url = f"http://127.0.0.1:{target.port}/"
    wrk(url, 1, script=target.scripts[workload])
    counting = allocations.start(target.pids(), seconds + 1.5)
    monitor = Monitor(target.redis[0]) if target.redis else None
    time.sleep(0.5)  # perf attaches
    result = wrk(url, seconds, script=target.scripts[workload])
    requests = max(result["requests"], 1)
    trips, touches = (count / requests for count in monitor.stop()) if monitor else (None, None)
    allocs = allocations.finish(counting)
    return (None if allocs is None else allocs / requests), trips, touches


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


def measure(target, workload, seconds, warmup):
    url = f"http://127.0.0.1:{target.port}/"
    script = target.scripts[workload]
    wrk(url, warmup, script=script)  # connections, pools, scripts, caches
    pids = target.pids()
    cpu_before = cpu_seconds(pids) if pids else 0
    if target.redis:
        calls_before, redis_before = redis_calls(target.redis[0]), cpu_seconds([target.redis[1]])
        reads_before = redis_reads(target.redis[0])
    result = wrk(url, seconds, script=script)
    requests = max(result["requests"], 1)
    result["cpu_us"] = (cpu_seconds(pids) - cpu_before) * 1e6 / requests if pids else None
    result["rss_mib"] = status_kib(pids, "VmHWM") / 1024 if pids else None
    result["trips"] = result["commands"] = result["redis_cpu_us"] = result["reads"] = None
    result["by_name"] = {}
    if target.redis:
        result["redis_cpu_us"] = (cpu_seconds([target.redis[1]]) - redis_before) * 1e6 / requests
        result["reads"] = (redis_reads(target.redis[0]) - reads_before) / requests
        top, every, result["by_name"] = redis_delta(calls_before, redis_calls(target.redis[0]))
        result["trips"], result["commands"] = top / requests, every / requests
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round of 2 s per target and workload, shorter side runs (a smoke test)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--note", default="", help="a line about this run, kept in the report")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configurations, every process's log) and say where")
    parser.add_argument("--out", default=None,
                        help="the report's file (default: bench/RESULTS.md; with --quick: none, printed only)")
    args = parser.parse_args()
    if args.out is None and not args.quick:
        args.out = RESULTS
    warmup, alloc_seconds, idle_count, zero_seconds = 1, 3, IDLE_CONNECTIONS, 2
    if args.quick:
        args.rounds, args.seconds = 1, 2
        alloc_seconds, idle_count, zero_seconds = 1, 2_000, 1
    started = time.time()

    work = tempfile.mkdtemp(prefix="sessiongate-bench-")
    procs = Processes(work)
    allocations = None
    try:
        backends = start_backends(procs)
        targets = []

        sg_memory = start_sessiongate(procs, work, backends, SG_MEMORY, "memory")
        sg_targets = [sg_memory]
        for name, mode in [(SG_REDIS, None), (SG_DEFAULT, "default"), (SG_BCAST, "bcast")]:
            redis_port, redis = start_redis(procs, work, "redis-" + (mode or "nocache"))
            target = start_sessiongate(procs, work, backends, name, "redis", redis_port, mode)
            if not target.skipped:
                target.redis = (redis_port, redis.pid)
            sg_targets.append(target)
        shared_cookies = next(t.cookies for t in sg_targets if t.cookies)

        direct_port = int(backends[0].split(":")[1])
        targets.append(Target(DIRECT, direct_port, cookies=shared_cookies))
        port = free_port()
        proc = procs.start("nginx", ["nginx", "-p", work, "-c", nginx_config(port, backends, work)])
        wait_port(port, proc)
        targets.append(Target(NGINX, port, proc.pid, cookies=shared_cookies))
        port = free_port()
        proc = procs.start("haproxy", ["haproxy", "-db", "-f", haproxy_config(port, backends, work)])
        wait_port(port, proc)
        targets.append(Target(HAPROXY, port, proc.pid, cookies=shared_cookies))

        if os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so"):
            redis_port, redis = start_redis(procs, work, "redis-lua")
            seed_lua_sessions(redis_port, shared_cookies)
            port = free_port()
            proc = procs.start("nginx-lua", ["nginx", "-p", work, "-c",
                                             nginx_config(port, backends, work, "nginx-lua", redis_port)])
            wait_port(port, proc)
            targets.append(Target(NGINX_LUA, port, proc.pid, (redis_port, redis.pid), shared_cookies))
        else:
            targets.append(Target(NGINX_LUA, skipped="libnginx-mod-http-lua is not installed"))
        targets += sg_targets
        live = [t for t in targets if not t.skipped]
        for i, target in enumerate(live):
            target.scripts = wrk_scripts(work, f"t{i}", target.cookies)
        print(f"setup: {len(live)} targets, {SESSIONS:,} sessions each, "
              f"{time.time() - started:.0f} s", flush=True)
        for target in targets:
            if target.skipped:
                print(f"skipped: {target.name}: {target.skipped}", flush=True)
            elif target.note:
                print(f"note: {target.name}: {target.note}", flush=True)

        rounds = {(t.name, w): [] for t in live for w, _ in WORKLOADS}
        for round_number in range(args.rounds):
            for workload, _ in WORKLOADS:
                measured = {}
                for target in live:
                    result = measure(target, workload, args.seconds, warmup)
                    measured[target.name] = result
                    show = lambda value, spec: "-" if value is None else format(value, spec)
                    print(f"round {round_number + 1}, {workload}: {target.name}: {result['rps']:.0f} req/s, "
                          f"p99 {result['p99']:.2f} ms, cpu {show(result['cpu_us'], '.1f')} us/req, "
                          f"redis trips/req {show(result['trips'], '.3f')}, errors {result['errors']}", flush=True)
                same_round_ratios(measured)
                for name, result in measured.items():
                    rounds[(name, workload)].append(result)

        allocations = Allocations()
        side = {}
        for workload, _ in WORKLOADS:
            for target in live:
                if target.pid:
                    side[(target.name, workload)] = side_pass(target, workload, alloc_seconds, allocations)
                    allocs, trips, touches = side[(target.name, workload)]
                    show = lambda value, spec: "-" if value is None else format(value, spec)
                    print(f"side pass, {workload}: {target.name}: allocations/req {show(allocs, '.1f')}, "
                          f"redis trips/req by MONITOR {show(trips, '.3f')}, "
                          f"of them touches {show(touches, '.3f')}", flush=True)
        print(f"allocations: {allocations.why_not or 'counted'}", flush=True)

        # Requests that must cost Redis nothing: no cookie, and a forged one.
        zero = {}
        sg_redis = next(t for t in targets if t.name == SG_REDIS)
        if not sg_redis.skipped:
            good = sg_redis.cookies[0]
            forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
            for label, header in [("no cookie", None), ("a forged cookie", f"Cookie: {forged}")]:
                before = redis_calls(sg_redis.redis[0])
                result = wrk(f"http://127.0.0.1:{sg_redis.port}/", zero_seconds, header)
                _, every, _ = redis_delta(before, redis_calls(sg_redis.redis[0]))
                zero[label] = (every, result["requests"])

        # Idle keep-alive connections, against a fresh memory-store gate.
        idle_port = free_port()
        config = gate_config(idle_port, backends, work, "idle", "memory")
        proc = procs.start("sessiongate-idle", [SESSIONGATE, "run", "--config", config])
        wait_port(idle_port, proc)
        per_connection = idle_connections(idle_port, proc.pid, idle_count)
        nginx = next(t for t in targets if t.name == NGINX)
        nginx_per_connection = idle_connections(nginx.port, nginx.pids()[-1], idle_count)
    finally:
        if allocations:
            allocations.remove()
        procs.stop_all()
        if args.keep:
            print(f"kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.time() - started
    report(args, targets, rounds, side, allocations.why_not, zero, per_connection, nginx_per_connection,
           idle_count, elapsed)


def same_round_ratios(measured):
    """Ratios within one round and workload: CPU to nginx round-robin's and to
    nginx + Lua's, p99 to nginx round-robin's, Redis CPU to sessiongate
    without cache's."""
    nginx, lua, sg = measured.get(NGINX), measured.get(NGINX_LUA), measured.get(SG_REDIS)
    for result in measured.values():
        cpu = result["cpu_us"]
        result["vs_nginx"] = cpu / nginx["cpu_us"] if cpu and nginx and nginx["cpu_us"] else None
        result["vs_lua"] = cpu / lua["cpu_us"] if cpu and lua and lua["cpu_us"] else None
        result["p99_vs_nginx"] = result["p99"] / nginx["p99"] if nginx and nginx["p99"] else None
        rcpu = result["redis_cpu_us"]
        result["redis_vs_sg"] = (rcpu / sg["redis_cpu_us"]
                                 if rcpu is not None and sg and sg["redis_cpu_us"] else None)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


KEYS = ["rps", "p50", "p99", "cpu_us", "vs_nginx", "vs_lua", "p99_vs_nginx", "rss_mib", "trips", "commands",
        "redis_cpu_us", "redis_vs_sg", "errors"]


def report(args, targets, rounds, side, allocs_why_not, zero, per_connection, nginx_per_connection,
           idle_count, elapsed):
    med = {key: {k: median([r[k] for r in results]) for k in KEYS} for key, results in rounds.items()}
    for key, (allocs, trips, touches) in side.items():
        med[key]["allocs"], med[key]["monitor_trips"], med[key]["monitor_touches"] = allocs, trips, touches

    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    lines = [
        "# sessiongate benchmark results",
        "",
        f"Written by `bench/run.sh{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"in {elapsed / 60:.1f} min: {args.rounds} round(s) of {args.seconds} s per target and workload, "
        f"`wrk -t2 -c{CONNECTIONS} --latency` with a Lua script per workload, every target in every round, "
        "medians shown; ratios are medians of the ratios within each round and workload. All processes "
        "on 127.0.0.1 of one machine, sharing its cores: compare CPU time per request more than requests/s. "
        "Each proxy runs one worker (nginx 1 worker process, HAProxy 1 thread, sessiongate "
        "`worker_threads = 1`).",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += ["Machine:", ""] + [f"- {line}" for line in machine()] + [""]
    skipped = [t for t in targets if t.skipped]
    if skipped:
        lines += ["Not measured in this run:", ""]
        lines += [f"- {t.name}: {t.skipped}" for t in skipped] + [""]
    noted = [t for t in targets if t.note]
    if noted:
        lines += ["Run otherwise than named:", ""]
        lines += [f"- {t.name}: {t.note}" for t in noted] + [""]
    for workload, title in WORKLOADS:
        lines += [
            f"## {title[0].upper()}{title[1:]}",
            "",
            "| target | req/s | p50 ms | p99 ms | CPU µs/req | CPU vs nginx-rr | CPU vs nginx+Lua | "
            "Redis round trips/req: rule / MONITOR, of them touches (all commands) | Redis CPU µs/req | allocations/req | "
            "peak RSS MiB | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for target in targets:
            if target.skipped:
                continue
            m = med[(target.name, workload)]
            redis = ("–" if m["trips"] is None else
                     f"{m['trips']:.3f} / {fmt(m.get('monitor_trips'), '.3f')}, {fmt(m.get('monitor_touches'), '.3f')} "
                     f"({m['commands']:.2f})")
            lines.append(
                f"| {target.name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {fmt(m['cpu_us'], '.1f')} | "
                f"{fmt(m['vs_nginx'], '.2f')} | {fmt(m['vs_lua'], '.2f')} | {redis} | "
                f"{fmt(m['redis_cpu_us'], '.2f')} | {fmt(m.get('allocs'), '.1f')} | {fmt(m['rss_mib'], '.1f')} | "
                f"{m['errors']:.0f} |")
        lines.append("")
    lines += targets_section(targets, med, zero, per_connection, nginx_per_connection, idle_count)
    lines += [
        "How it is measured: CPU is the proxy's utime + stime from /proc over the run ÷ requests (nginx: "
        "master and worker). Redis round trips are the commands clients sent to the target's own "
        "redis-server, counted twice: from INFO commandstats over the measured run, leaving out by name "
        "the commands that only sessiongate's Lua scripts run inside Redis (the rule of `round_trips` in "
        "tests/common/redis.rs), and exactly, whatever their names, with MONITOR (a script's own commands "
        "show as `lua`) during the separate allocation run. Both can only count too many (the rule: a "
        "script's own commands whose names it does not know, such as peek.lua's PTTL; MONITOR slows "
        "Redis, so what runs by the clock, such as touches, weighs more per request), so the targets "
        "take the lower. After the MONITOR count, the cache's touches among its commands (each a "
        "PEXPIREAT and a PTTL, batched in MULTI/EXEC): the bench reads its sessions all at once, so "
        "they fall due for a touch together, one touch_interval later, and a run that falls on that "
        "moment counts a wave of them that a longer run would spread. In brackets every command "
        "commandstats counted, scripts' included. Redis CPU "
        "is that redis-server's utime + stime ÷ requests. Allocations: calls of libc's malloc, calloc, "
        "realloc and posix_memalign, counted with perf uprobes in a separate run of the same workload"
        + (f" (not counted in this run: {allocs_why_not})" if allocs_why_not else "")
        + ". Sessions: each sessiongate logs in its own 10,000 (`GET /login`) and reads each once; "
        "nginx + Lua reads the same sids from Redis strings with one GET and stores an update with one "
        "SET from a timer after the response's headers (nginx's header filter cannot do I/O, so off the "
        "response's path, where sessiongate stores before it answers); nginx and HAProxy pass the "
        "cookies through, and HAProxy inserts its SERVERID cookie in every response (wrk never sends it "
        "back). The write mix asks the backend for `/update`, which answers "
        "`X-Session-Update: {\"seen\":N}`. The caches hold "
        f"{2 * SESSIONS:,} entries with `touch_interval = \"1m\"`, and every workload warms up for 1 s "
        "before it is measured.",
        "",
    ]
    print("\n".join(lines))
    if not args.out:
        return
    history = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            text = f.read()
        if HISTORY_MARK in text:
            history = text.split(HISTORY_MARK, 1)[1]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n" + HISTORY_MARK + history)


def targets_section(targets, med, zero, per_connection, nginx_per_connection, idle_count):
    """Issue 14's targets, each against this run's medians."""
    live = {t.name for t in targets if not t.skipped}
    verdict = lambda ok: "–" if ok is None else ("**met**" if ok else "**not met**")

    def at_most(value, limit):
        return None if value is None else value <= limit

    def f(value, spec=".2f"):
        return "–" if value is None else format(value, spec)

    def trips(m):
        """Round trips per request: the lower of the two counts. Both can only
        count too many: the rule counts a script's own commands whose names
        it does not know (peek.lua's PTTL), MONITOR slows Redis and so the
        requests, which raises the per-request share of what runs by the
        clock (touches)."""
        counts = [c for c in (m["trips"], m.get("monitor_trips")) if c is not None]
        return min(counts) if counts else None

    lines = ["## Targets (issue 14)", ""]
    cached = [n for n in (SG_DEFAULT, SG_BCAST) if n in live]
    if not cached:
        lines.append("- with the cache: not measured (no cache target ran)")
    for name in cached:
        for workload in ("hot", "random"):
            m = med[(name, workload)]
            lines += [
                f"- {name}, {workload}: Redis round trips/req ≤ 0.02: {f(trips(m), '.4f')}: "
                f"{verdict(at_most(trips(m), 0.02))}; Redis CPU ≤ 10% of no cache's: "
                f"{f(m['redis_vs_sg'] and m['redis_vs_sg'] * 100, '.1f')}%: "
                f"{verdict(at_most(m['redis_vs_sg'], 0.10))}; "
                f"CPU ≤ 1.15× nginx-rr: {f(m['vs_nginx'])}×: {verdict(at_most(m['vs_nginx'], 1.15))}; "
                f"CPU ≤ 0.6× nginx+Lua: {f(m['vs_lua'])}×: {verdict(at_most(m['vs_lua'], 0.6))}",
            ]
    if SG_MEMORY in live:
        for workload in ("hot", "random"):
            m = med[(SG_MEMORY, workload)]
            lines.append(f"- {SG_MEMORY}, {workload}: CPU ≤ 1.15× nginx-rr: {f(m['vs_nginx'])}×: "
                         f"{verdict(at_most(m['vs_nginx'], 1.15))}")
    sg_names = [n for n in (SG_MEMORY, SG_REDIS, SG_DEFAULT, SG_BCAST) if n in live]
    for name in sg_names:
        per = [(w, med[(name, w)].get("allocs")) for w, _ in WORKLOADS]
        p99 = [(w, med[(name, w)]["p99_vs_nginx"]) for w, _ in WORKLOADS]
        lines.append(
            f"- {name}: allocations/req ≤ 8: " + ", ".join(f"{w} {f(a, '.1f')}" for w, a in per) + ": "
            + verdict(None if any(a is None for _, a in per) else all(a <= 8 for _, a in per))
            + "; p99 no worse than nginx-rr's: " + ", ".join(f"{w} {f(r)}×" for w, r in p99) + ": "
            + verdict(None if any(r is None for _, r in p99) else all(r <= 1 for _, r in p99)))
    for name in cached + ([SG_MEMORY] if SG_MEMORY in live else []):
        m = med[(name, "write")]
        lines.append(f"- {name}, 10% write mix: CPU ≤ 1.3× nginx-rr: {f(m['vs_nginx'])}×: "
                     f"{verdict(at_most(m['vs_nginx'], 1.3))}")
    for label, (calls, requests) in zero.items():
        lines.append(f"- zero Redis commands for a request with {label} ({SG_REDIS}): {calls} in "
                     f"{requests} requests: {verdict(calls == 0)}")
    lines += [
        f"- under 10 KB of RSS per idle keep-alive connection (memory store): {per_connection:.1f} KiB "
        f"({idle_count:,} connections, each after one request; nginx: {nginx_per_connection:.1f} KiB): "
        f"{verdict(per_connection < 10000 / 1024)}",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
