#!/usr/bin/env python3
"""The cache under continuous load: Redis round trips per request, touches
included, over windows longer than `touch_interval` (run it through
`bench/run.sh --steady`).

bench/run.py measures every target in short windows, one target after the
other, so that each sessiongate with `[store.cache]` sits idle for minutes
between its windows: every session's stored expiry then lags by more than
`touch_interval` (1 minute) when its window starts, and the window pays one
touch for each of the 10,000 sessions. Under continuous load a session is
touched at most once per interval, whenever its window starts. This script
measures that: each target is loaded without a pause (wrk, 10,000 sessions
at random) for a warm-up and then for a measured window of two intervals,
one target at a time, on 127.0.0.1 only: nginx round-robin, sessiongate
with Redis and no cache, and with the cache in modes "default" and "bcast",
each with its own redis-server.

Columns: requests/s, p99, CPU per request and its ratio to nginx
round-robin's (one window each, not same-round medians: read them as an
indication), Redis commands per request (INFO commandstats, as bench/run.py
counts its round trips) and the touches' PEXPIREATs among them, Redis
socket reads per request (round trips: a pipeline is one), and Redis CPU per
request and its ratio to the no-cache gate's.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Processes, free_port, machine, start_backends, start_redis, wait_port  # noqa: E402
import run  # noqa: E402  (the matrix's targets, configurations and wrk scripts)

TOUCH_INTERVAL_S = run.TOUCH_INTERVAL_S
STEADY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "STEADY.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=2 * TOUCH_INTERVAL_S,
                        help="the measured window per target (default: two touch intervals)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default=STEADY, help="the report's file ('-': printed only)")
    args = parser.parse_args()
    started = time.time()
    work = tempfile.mkdtemp(prefix="sessiongate-steady-")
    procs = Processes(work)
    try:
        backends = start_backends(procs)
        gates = []
        for name, mode in [(run.SG_REDIS, None), (run.SG_DEFAULT, "default"), (run.SG_BCAST, "bcast")]:
            redis_port, redis = start_redis(procs, work, "redis-" + (mode or "nocache"))
            target = run.start_sessiongate(procs, work, backends, name, "redis", redis_port, mode)
            if target.skipped:
                raise SystemExit(f"{name}: {target.skipped}")
            target.redis = (redis_port, redis.pid)
            gates.append(target)
        port = free_port()
        proc = procs.start("nginx", ["nginx", "-p", work, "-c", run.nginx_config(port, backends, work)])
        wait_port(port, proc)
        targets = [run.Target(run.NGINX, port, proc.pid, cookies=gates[0].cookies)] + gates
        for i, target in enumerate(targets):
            target.scripts = run.wrk_scripts(work, f"t{i}", target.cookies)
        results = {}
        for target in targets:
            # run.py's measure: `warmup` s of load, then the measured window,
            # back to back (two wrk runs with no pause in between).
            r = results[target.name] = run.measure(target, "random", args.seconds, args.warmup)
            r["touches"] = r["by_name"].get("pexpireat", 0) / max(r["requests"], 1) if target.redis else None
            trips = "-" if r["trips"] is None else f"{r['trips']:.4f}"
            reads = "-" if r["reads"] is None else f"{r['reads']:.4f}"
            print(f"{target.name}: {r['rps']:.0f} req/s, cpu {r['cpu_us']:.1f} us/req, "
                  f"redis commands/req {trips}, reads/req {reads}, errors {r['errors']}", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, targets, results, time.time() - started)
    print(text)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)


def report(args, targets, results, elapsed):
    nginx = results[run.NGINX]
    no_cache = results[run.SG_REDIS]
    ratio = lambda a, b: "-" if a is None or not b else f"{a / b:.2f}×"
    lines = [
        "# The cache under continuous load",
        "",
        f"`bench/run.sh --steady` (bench/steady.py), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{elapsed / 60:.1f} minutes.",
        "",
        "Machine:",
        "",
    ] + [f"- {line}" for line in machine()] + [
        "",
        f"Each target, one at a time, under {run.SESSIONS:,} sessions picked at random (`wrk -t2 -c64`): "
        f"{args.warmup} s of load, then, without a pause, a measured window of {args.seconds} s "
        f"(`touch_interval` is {TOUCH_INTERVAL_S} s, `max_entries` {2 * run.SESSIONS:,}). Round trips are "
        "counted two ways on the target's own redis-server: commands, as bench/run.py counts its round "
        "trips (INFO commandstats, the commands inside sessiongate's scripts left out; a touch is a "
        "PEXPIREAT and a PTTL, and a batch of them one MULTI … EXEC), and socket reads (INFO stats' "
        "total_reads_processed: a pipeline that arrives at once is one read, so this counts round trips, and the no-cache gate's concurrent requests share theirs, one per request still waited for; "
        "the bench's own INFO calls add a few). One window per target: the CPU ratios are an "
        "indication, bench/run.py's same-round medians are the measure.",
        "",
        "| target | req/s | p99 ms | CPU µs/req | CPU vs nginx-rr | Redis commands/req | of which touches "
        "| Redis socket reads/req | Redis CPU µs/req | Redis CPU vs no cache | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target in targets:
        r = results[target.name]
        show = lambda value, spec: "-" if value is None else format(value, spec)
        lines.append(
            f"| {target.name} | {r['rps']:,.0f} | {r['p99']:.2f} | {r['cpu_us']:.1f} "
            f"| {ratio(r['cpu_us'], nginx['cpu_us'])} | {show(r['trips'], '.4f')} | {show(r['touches'], '.4f')} "
            f"| {show(r['reads'], '.4f')} | {show(r['redis_cpu_us'], '.2f')} | {ratio(r['redis_cpu_us'], no_cache['redis_cpu_us'])} "
            f"| {r['errors']} |")
    lines.append("")
    for target in targets:
        r = results[target.name]
        if r.get("by_name"):
            counts = ", ".join(f"{k} {v:,}" for k, v in sorted(r["by_name"].items()))
            lines.append(f"- {target.name}: {r['requests']:,} requests; Redis commands: {counts}")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
