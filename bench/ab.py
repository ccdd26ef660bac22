#!/usr/bin/env python3
"""A/B of sessiongate builds on one workload (used for bench/RESULTS.md).

    [STORE=redis] python3 bench/ab.py OLD_BINARY NEW_BINARY [...]

Starts the bench backend (target/release/examples/bench-backend) and every
given sessiongate binary (memory store, or with STORE=redis a private
redis-server without a cache; one worker thread) on free 127.0.0.1
ports, logs one session into each, then runs `wrk -t1 -c64 -d5s` with that
cookie against each in turn, ROUNDS times (default 4), interleaved, and
prints each binary's CPU time per request (utime + stime from /proc) and the
median. Build the old binary from a worktree of the old commit.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402  (the helpers every bench/ script shares)
    TIMEOUTS,
    Processes,
    cpu_seconds,
    free_port,
    login_cookie,
    redis_store,
    sessiongate_config,
    start_backends,
    start_redis,
    wait_port,
)


def main():
    binaries = [os.path.abspath(b) for b in sys.argv[1:]]
    if not binaries:
        raise SystemExit(__doc__)
    work = tempfile.mkdtemp(prefix="sg-ab-")
    procs = Processes(work)
    try:
        backends = start_backends(procs, "A")
        store = 'kind = "memory"'
        if os.environ.get("STORE") == "redis":
            store = redis_store(start_redis(procs, work)[0])
        gates = []
        for i, binary in enumerate(binaries):
            port = free_port()
            config = sessiongate_config(work, f"ab-{i}", port, backends, store, TIMEOUTS)
            proc = procs.start(f"ab-{i}", [binary, "run", "--config", config])
            wait_port(port, proc)
            gates.append((binary, proc.pid, port, login_cookie(port)))
        per_request = {binary: [] for binary in binaries}
        for _ in range(int(os.environ.get("ROUNDS", "4"))):
            for binary, pid, port, cookie in gates:
                before = cpu_seconds([pid])
                out = subprocess.run(["wrk", "-t1", "-c64", "-d5s", "-H", cookie,
                                      f"http://127.0.0.1:{port}/x"],
                                     capture_output=True, text=True, check=True).stdout
                spent = cpu_seconds([pid]) - before
                requests = int(re.search(r"(\d+) requests in", out).group(1))
                per_request[binary].append(spent / requests * 1e6)
        for binary, values in per_request.items():
            print(binary, "us/req", [round(v, 1) for v in values],
                  "median", round(statistics.median(values), 1))
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
