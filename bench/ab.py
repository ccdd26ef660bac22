#!/usr/bin/env python3
"""A/B of sessiongate builds on one workload (used for bench/RESULTS.md).

    python3 bench/ab.py target/release/examples/bench-backend OLD_BINARY NEW_BINARY [...]

Starts the bench backend and every given sessiongate binary (memory store,
one worker thread) on free 127.0.0.1 ports, logs one session into each, then
runs `wrk -t1 -c64 -d5s` with that cookie against each in turn, ROUNDS times
(default 4), interleaved, and prints each binary's CPU time per request
(utime + stime from /proc) and the median. Build the old binary from a
worktree of the old commit.
"""
TICKS = os.sysconf("SC_CLK_TCK")
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def wait(port):
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit("no listen")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICKS
backend_bin, bins = sys.argv[1], sys.argv[2:]
work = tempfile.mkdtemp(prefix="sg-ab-")
bp = free_port()
be = subprocess.Popen([backend_bin, f"127.0.0.1:{bp}", "A"], stdout=subprocess.DEVNULL)
wait(bp)
procs = []
for b in bins:
    port = free_port()
    cfg = os.path.join(work, f"ab-{port}.toml")
    open(cfg, "w").write(f'''[server]
listen = "127.0.0.1:{port}"
worker_threads = 1
[upstreams]
servers = ["http://127.0.0.1:{bp}"]
[cookie]
secrets = ["bench-secret-0123456789abcdef0123456789abcdef"]
secure = false
[store]
kind = "memory"
[timeouts]
keepalive = "600s"
request_header = "600s"
''')
    p = subprocess.Popen([b, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login") as r:
        cookie = r.headers["Set-Cookie"].split(";")[0]
    procs.append((b, p, port, cookie))
res = {b: [] for b in bins}
for rnd in range(int(os.environ.get("ROUNDS", "4"))):
    for b, p, port, cookie in procs:
        c0 = cpu(p.pid)
        out = subprocess.run(["wrk", "-t1", "-c64", "-d5s", "-H", f"Cookie: {cookie}", f"http://127.0.0.1:{port}/x"], capture_output=True, text=True).stdout
        c1 = cpu(p.pid)
        n = int(re.search(r"(\d+) requests in", out).group(1))
        res[b].append((c1 - c0) / n * 1e6)
for b, p, _, _ in procs: p.kill()
be.kill()
for b in bins:
    v = sorted(res[b]); print(b, "us/req", [round(x, 1) for x in res[b]], "median", round(v[len(v)//2], 1))
