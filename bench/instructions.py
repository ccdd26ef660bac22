#!/usr/bin/env python3
"""User-space instructions per request, counted by valgrind's callgrind:
sessiongate (memory store; Redis without a cache; or the cache in "default"
mode; Redis is a private redis-server; one worker thread, one hot session)
and nginx round-robin, over the same bench backends, one after the other.

    bench/run.sh --instructions [--store memory|redis|cache] [--seconds N] [BINARY ...]

callgrind counts instructions, not seconds, so the counts repeat on a busy
shared machine where CPU time does not: use it to A/B a change to the hot
path (give the binaries to compare, built from worktrees). It counts no
kernel time and runs each program about 50x slower, so the counts say how
much user-space work a request takes, not how long it takes. Under
valgrind, sha2 finds no SHA extensions and hashes in software, so the
cookie's HMAC weighs more here than on the CPU itself.

Each target starts under callgrind; after a warm-up its counters are zeroed
(`callgrind_control -z`), `wrk -t1 -c8` runs for the given seconds, and the
counters are dumped (`callgrind_control -d`). The report gives each
target's instructions per request, the ratio to nginx, and for sessiongate
the inclusive instructions per request of the parts of a request named in
PARTS, read with callgrind_annotate.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402  (the helpers every bench/ script shares)
    SESSIONGATE,
    Processes,
    free_port,
    login_cookie,
    start_backends,
    start_redis,
    wait_port,
)
from run import gate_config, nginx_config  # noqa: E402

# (label, function name as callgrind_annotate prints it after its file
# part, matched exactly; a name ending in `*` sums every function it
# begins); inclusive, so they nest.
PARTS = [
    ("the service: session, headers, upstream", "sessiongate::proxy::Gateway::handle::{{closure}}"),
    ("  the upstream connection (hyper's client, driven in the request's task)", "sessiongate::proxy::pool::Sender::drive"),
    ("  the cookie and the session (request filter)", "sessiongate::proxy::Gateway::request_filter"),
    ("    the cookie's HMAC check", "sessiongate::session::cookie::CookieCodec::check"),
    ("  the upstream request's headers", "sessiongate::proxy::Gateway::upstream_request"),
    ("  the replay copy of a GET's headers", "sessiongate::proxy::upstream::ReplayCopy::of"),
    ("  the response filter", "sessiongate::proxy::Gateway::response_filter"),
    ("the client's request head (hyper's server: read and parse)", "hyper::proto::h1::conn::Conn<I,B,T>::poll_read_head"),
    ("HeaderMap appends (everywhere)", "http::header::map::HeaderMap<T>::try_append2"),
    ("memcpy (libc's, whichever variant this CPU runs)", "__memcpy*"),
    ("memmove (the same)", "__memmove*"),
    ("malloc (inclusive)", "malloc"),
    ("free (inclusive)", "free"),
]


def count(procs, work, name, command, port, cookie, seconds):
    """Runs `command` under callgrind: (requests, instructions, dump file)."""
    out = os.path.join(work, f"{name}.callgrind")
    proc = procs.start(name, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + command,
                       env=dict(os.environ, SESSIONGATE_LOG="warn"))
    wait_port(port, proc, timeout=60)
    cookie = cookie(port)
    load = ["wrk", "-t1", "-c8", "-H", cookie, f"http://127.0.0.1:{port}/x"]
    subprocess.run(load[:3] + ["-d2s"] + load[3:], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
    wrk = subprocess.run(load[:3] + [f"-d{seconds}s"] + load[3:], capture_output=True, text=True, check=True)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    requests = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
    dump = None
    for _ in range(100):
        dumps = glob.glob(f"{out}.{proc.pid}.*")
        if dumps:
            dump = dumps[0]
            break
        time.sleep(0.1)
    if dump is None:
        raise RuntimeError(f"callgrind wrote no dump for {name}")
    time.sleep(0.5)
    with open(dump, errors="replace") as f:
        text = f.read()
    total = int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))
    return requests, total, dump


def inclusive(dump):
    """function name -> inclusive instructions, from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?) \[", line)
        if m:
            name = m.group(2)
            costs.setdefault(name, int(m.group(1).replace(",", "")))
    return costs


def part_cost(costs, function):
    """The inclusive cost of `function`, or the sum over a `prefix*`; None
    if no function matches. Recursive copies such as `f'2` never match, as
    they are inside `f`."""
    matched = [cost for name, cost in costs.items()
               if (name.split(":", 1)[1] == function if not function.endswith("*")
                   else name.split(":", 1)[1].startswith(function[:-1]))]
    return sum(matched) if matched else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "redis", "cache"], default="memory")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("binaries", nargs="*", default=[SESSIONGATE])
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sg-instructions-")
    procs = Processes(work)
    rows = []
    try:
        backends = start_backends(procs, "AB")
        redis_port = start_redis(procs, work)[0] if args.store != "memory" else None
        for i, binary in enumerate(args.binaries):
            port = free_port()
            store = "memory" if args.store == "memory" else "redis"
            config = gate_config(port, backends, work, f"sg-{i}", store, redis_port,
                                 "default" if args.store == "cache" else None)
            requests, total, dump = count(procs, work, f"sg-{i}", [os.path.abspath(binary), "run", "--config", config],
                                          port, login_cookie, args.seconds)
            rows.append((f"sessiongate ({args.store}) {binary}", requests, total, dump))
        if not args.no_nginx:
            port = free_port()
            config = nginx_config(port, backends, work)
            with open(config) as f:
                text = f.read().replace("daemon off;", "daemon off;\nmaster_process off;")
            with open(config, "w") as f:
                f.write(text)
            requests, total, dump = count(procs, work, "nginx", ["nginx", "-c", config, "-e", os.path.join(work, "nginx-error.log")],
                                          port, lambda _: "Cookie: sg_session=x", args.seconds)
            rows.append(("nginx round-robin", requests, total, None))
    finally:
        procs.stop_all()
    nginx = next((total / requests for name, requests, total, _ in rows if name.startswith("nginx")), None)
    print(f"User-space instructions per request (callgrind), wrk -t1 -c8, {args.seconds} s, one hot session\n")
    print("| target | requests | instructions/req | vs nginx-rr |\n|---|---:|---:|---:|")
    for name, requests, total, _ in rows:
        ratio = f"{total / requests / nginx:.2f}x" if nginx else "-"
        print(f"| {name} | {requests} | {total / requests:,.0f} | {ratio} |")
    for name, requests, total, dump in rows:
        if dump is None:
            continue
        costs = inclusive(dump)
        print(f"\n{name}: inclusive instructions per request\n\n| part | instructions/req | share |\n|---|---:|---:|")
        for label, function in PARTS:
            cost = part_cost(costs, function)
            if cost is not None:
                print(f"| {label} | {cost / requests:,.0f} | {100 * cost / total:.1f}% |")


if __name__ == "__main__":
    main()
