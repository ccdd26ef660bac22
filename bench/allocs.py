#!/usr/bin/env python3
"""Allocations per request under continuous load, touches at their steady
rate (run it through `bench/run.sh --allocs`).

bench/run.py counts allocations in a short run after each target has sat
idle for minutes, so a gate with `[store.cache]` pays, within that run, one
touch for each of its 10,000 sessions (see bench/STEADY.md for the same
effect on round trips). Here each sessiongate target is loaded without a
pause: one hot session for a short window, then 10,000 sessions at random
for a warm-up longer than `touch_interval` and a measured window of one
interval, then, straight on, the 10% write mix for another interval. Within
a window each session is touched as often as continuous use makes it, about
once. Targets: sessiongate with the memory store, and with Redis and the
cache in modes "default" and "bcast" (each with its own redis-server), on
127.0.0.1 only.

Allocations are libc's malloc, calloc, realloc and posix_memalign calls, by
perf uprobes (bench/run.py's `Allocations`; as root), divided by the requests
wrk made in the same window. Redis commands per request are from INFO
commandstats (every command, scripts' own included) over the same window.
"""

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CONNECTIONS, Processes, machine, redis_calls, start_backends, start_redis  # noqa: E402
import run  # noqa: E402  (the matrix's targets, configurations and wrk scripts)

ALLOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ALLOCS.md")
HOT_SECONDS = 10


def load(target, script, seconds):
    """wrk on `target` with `script` for `seconds`; the requests it made."""
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", script,
                          f"http://127.0.0.1:{target.port}/"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def counted(target, redis_port, allocations, script, seconds):
    """One measured window: (allocations per request, Redis commands per
    request, None without a redis-server)."""
    before = redis_calls(redis_port) if redis_port else {}
    counting = allocations.start(target.pids(), seconds + 1)
    requests = load(target, script, seconds)
    calls = allocations.finish(counting)
    after = redis_calls(redis_port) if redis_port else {}
    commands = sum(after.values()) - sum(before.values())
    return calls / requests, (commands / requests if redis_port else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=run.TOUCH_INTERVAL_S,
                        help="each measured window at random (default: one touch interval)")
    parser.add_argument("--out", default=ALLOCS, help="the report's file ('-': printed only)")
    args = parser.parse_args()
    started = time.time()
    allocations = run.Allocations()
    if allocations.why_not:
        raise SystemExit(f"bench/allocs.py: {allocations.why_not}")
    work = tempfile.mkdtemp(prefix="sessiongate-allocs-")
    procs = Processes(work)
    rows = []
    try:
        backends = start_backends(procs)
        for name, mode in [(run.SG_MEMORY, None), (run.SG_DEFAULT, "default"), (run.SG_BCAST, "bcast")]:
            redis_port = None
            if mode:
                redis_port, _ = start_redis(procs, work, "redis-" + mode)
            target = run.start_sessiongate(procs, work, backends, name,
                                           "redis" if mode else "memory", redis_port, mode)
            if target.skipped:
                raise SystemExit(f"{name}: {target.skipped}")
            slug = "".join(c if c.isalnum() else "-" for c in name.lower())
            scripts = run.wrk_scripts(work, slug, target.cookies)
            hot = counted(target, redis_port, allocations, scripts["hot"], HOT_SECONDS)
            # Longer than touch_interval: every session's touch falls due at
            # its own time from here on, as under continuous use.
            load(target, scripts["random"], run.TOUCH_INTERVAL_S + 5)
            random = counted(target, redis_port, allocations, scripts["random"], args.seconds)
            write = counted(target, redis_port, allocations, scripts["write"], args.seconds)
            rows.append((name, hot, random, write))
            print(name, hot, random, write, flush=True)
            os.kill(target.pid, signal.SIGTERM)  # its CPU is not another's
    finally:
        allocations.remove()
        procs.stop_all()
    report = render(rows, args, (time.time() - started) / 60)
    print(report)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(report)


def render(rows, args, minutes):
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cell = lambda x: "–" if x is None else f"{x:.2f}" if x >= 0.1 else f"{x:.4f}"
    lines = [
        "# Allocations per request under continuous load",
        "",
        f"Written by `bench/run.sh --allocs` on {when} in {minutes:.1f} min: one hot session for "
        f"{HOT_SECONDS} s, then 10,000 sessions at random for a warm-up of {run.TOUCH_INTERVAL_S + 5} s "
        f"and a window of {args.seconds} s, then the 10% write mix for {args.seconds} s, without a "
        f"pause, `wrk -t2 -c{CONNECTIONS}`; the caches hold {2 * run.SESSIONS} entries with "
        f"`touch_interval = \"{run.TOUCH_INTERVAL_S}s\"`. bench/allocs.py says how it counts.",
        "",
        "Machine:",
        "",
        *[f"- {line}" for line in machine()],
        "",
        "| target | allocations/req: hot | at random | 10% write mix | Redis commands/req: hot | at random | 10% write mix |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, hot, random, write in rows:
        lines.append(f"| {name} | {cell(hot[0])} | {cell(random[0])} | {cell(write[0])} | "
                     f"{cell(hot[1])} | {cell(random[1])} | {cell(write[1])} |")
    lines += ["", "Target (issue 14): at most 8 allocations per request.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
