"""Benchmark memory: resident memory of `ackbot serve` with 10,000 pending approvals, beside the same process idle.

Run from the repository root:  .venv/bin/python bench/bench_memory.py [--approvals 10000] [--concurrency 16]
    [--settle 5] [--pg]

One `python -m bot.cli serve` subprocess on a fresh SQLite file (or, with --pg, a fresh PostgreSQL database), with
one API key and a console channel (its lines are at INFO, below the WARNING log level). Its resident memory (VmRSS
from /proc/<pid>/status, with RssAnon and the peak VmHWM beside it) is read:

1. idle with no approvals: after /readyz answers and --settle seconds of rest (the baseline);
2. with N pending approvals: after N approvals were opened through POST /api/v1/approvals (--concurrency at a time;
   approvers [alice], target the console channel, timeout 24h), the dispatcher has delivered every message (no
   delivery left pending), and --settle seconds of rest;
3. restarted: a new serve process on the same database (N approvals pending in it), after /readyz, one approvals
   scheduler pass and --settle seconds of rest: what the pending approvals cost at rest, without the allocator's
   high-water mark from opening them.

Each reading is taken before the pending approvals are counted through the API (GET /api/v1/approvals, 500 a page),
which is printed beside it as a check.

Printed: each figure in MiB, the ratio to the baseline and the difference per pending approval (KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    API_KEY,
    API_KEY_ENV,
    create_pg_database,
    drop_pg_database,
    free_port,
    load_average,
    log_size,
    logged_problems,
    machine,
    proc_status,
    ratio,
    require_pg,
    run_main,
    serve_command,
    spawn,
    stop,
    wait_ready,
)


def ackbot_config(*, port: int, database_url: str) -> str:
    """The config of the ackbot under test, as YAML (JSON is YAML)."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": database_url},
        "api_keys": [
            {"name": "bench", "key": f"env:{API_KEY_ENV}", "tenant": "*", "scopes": ["events.write", "notify.read"]}
        ],
        "people": [{"name": "alice", "display_name": "Alice", "identities": {"email": "alice@example.com"}}],
        "channels": [{"name": "log", "type": "console", "settings": {"rate_per_second": 1000}}],
    }
    return json.dumps(config, indent=1)


@dataclass
class Reading:
    label: str
    rss: int
    anon: int
    peak: int
    load_avg: str
    note: str = ""


def read(pid: int, label: str, note: str = "") -> Reading:
    """The process's memory now."""
    status = proc_status(pid)
    rss, anon, peak = (status.get(name, 0) for name in ("VmRSS", "RssAnon", "VmHWM"))
    return Reading(label, rss, anon, peak, load_average(), note)


async def open_approvals(client: aiohttp.ClientSession, base: str, count: int, concurrency: int) -> float:
    """Open `count` approvals, `concurrency` at a time; returns the seconds it took."""
    numbers = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for n in numbers:
            body = {
                "title": f"memory bench approval #{n}: deploy service-{n % 50} build {n} to production",
                "summary": "Opened by bench/bench_memory.py to hold a pending approval.",
                "requester": "bench",
                "approvers": ["alice"],
                "targets": ["log"],
                "timeout": "24h",
                "context": {"pipeline": n, "service": f"service-{n % 50}"},
            }
            async with client.post(base + "/api/v1/approvals", json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"POST /api/v1/approvals answered {resp.status}: {await resp.text()}")
                await resp.read()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def wait_dispatched(client: aiohttp.ClientSession, base: str, within: float) -> bool:
    """Wait until no delivery is pending (every approval's message went out)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with client.get(base + "/api/v1/deliveries", params={"status": "pending", "limit": "1"}) as resp:
            doc = await resp.json(content_type=None)
        if resp.status == 200 and not doc.get("items"):
            return True
        await asyncio.sleep(0.5)
    return False


async def count_pending(client: aiohttp.ClientSession, base: str) -> int:
    """Pending approvals, counted through the API (500 a page)."""
    total, cursor = 0, None
    while True:
        params = {"state": "pending", "limit": "500", **({"cursor": cursor} if cursor else {})}
        async with client.get(base + "/api/v1/approvals", params=params) as resp:
            doc = await resp.json(content_type=None)
        total += len(doc.get("items") or [])
        cursor = doc.get("next_cursor")
        if not cursor:
            return total


async def bench(args: argparse.Namespace, workdir: Path) -> tuple[list[Reading], list[str]]:
    if args.pg:
        await require_pg()
    pg_url = await create_pg_database() if args.pg else None
    database_url = pg_url or f"sqlite+aiosqlite:///{workdir / 'ackbot.db'}"
    readings: list[Reading] = []
    problems: list[str] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession(headers=headers) as client:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            config = workdir / "ackbot.yml"
            config.write_text(ackbot_config(port=port, database_url=database_url))
            log = workdir / "first.log"
            proc = spawn(serve_command(config), log)
            try:
                await wait_ready(http, base, proc, log)
                offset = log_size(log)  # what it logs at start-up is no problem
                await asyncio.sleep(args.settle)
                readings.append(read(proc.pid, "idle, no approvals (baseline)"))
                print(f"  baseline read ({readings[-1].rss / 1024:.1f} MiB); opening {args.approvals}", flush=True)
                took = await open_approvals(client, base, args.approvals, args.concurrency)
                dispatched = await wait_dispatched(client, base, within=args.dispatch_timeout)
                if not dispatched:
                    problems.append(f"deliveries still pending {args.dispatch_timeout:g}s after the last approval")
                await asyncio.sleep(args.settle)
                reading = read(proc.pid, f"{args.approvals} pending, same process")
                # Counted after the reading: listing them through the API allocates too.
                pending = await count_pending(client, base)
                reading.note = f"opened in {took:.0f}s ({args.approvals / took:.0f}/s); {pending} pending"
                readings.append(reading)
                print(f"  {reading.note}", flush=True)
                problems += logged_problems(log, offset)
            finally:
                stop(proc)
            log = workdir / "second.log"
            proc = spawn(serve_command(config), log)
            try:
                await wait_ready(http, base, proc, log)
                offset = log_size(log)
                await asyncio.sleep(args.settle + 1.0)  # the approvals scheduler runs once a second
                reading = read(proc.pid, f"{args.approvals} pending, restarted")
                reading.note = f"{await count_pending(client, base)} pending"
                readings.append(reading)
                problems += logged_problems(log, offset)
            finally:
                stop(proc)
    finally:
        if pg_url is not None:
            await drop_pg_database(pg_url)
    return readings, problems


def report(readings: list[Reading], problems: list[str], approvals: int) -> None:
    base = readings[0]
    print()
    header = f"{'process':<32}{'VmRSS MiB':>10}{'ratio':>8}{'KiB/appr':>10}{'RssAnon':>9}{'VmHWM':>8}  load avg"
    print(header)
    print("-" * len(header))
    for r in readings:
        per = "-" if r is base else f"{(r.rss - base.rss) / approvals:.2f}"
        print(
            f"{r.label:<32}{r.rss / 1024:>10.1f}{ratio(r.rss, base.rss):>8}{per:>10}{r.anon / 1024:>9.1f}"
            f"{r.peak / 1024:>8.1f}  {r.load_avg}"
        )
        if r.note:
            print(f"{'':<4}{r.note}")
    for line in problems:
        print(f"!! {line}")
    print(
        "\nVmRSS: resident memory; RssAnon: its anonymous part (heap); VmHWM: the peak VmRSS of that process (MiB).\n"
        "ratio: VmRSS / the baseline's; KiB/appr: (VmRSS - the baseline's) / pending approvals."
    )


def main(argv: list[str] | None = None) -> None:
    """Read the serve process's memory idle, with N pending approvals, and restarted with them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--approvals", type=int, default=10000, help="pending approvals to open")
    parser.add_argument("--concurrency", type=int, default=16, help="approvals opened at a time")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of rest before each reading")
    parser.add_argument("--dispatch-timeout", type=float, default=300.0, help="seconds to wait for the deliveries")
    parser.add_argument("--pg", action="store_true", help="ackbot on PostgreSQL at 127.0.0.1:5432 (a fresh database)")
    args = parser.parse_args(argv)
    if args.approvals < 1 or args.concurrency < 1 or args.settle < 0:
        parser.error("--approvals and --concurrency >= 1, --settle >= 0")
    print(
        f"{machine()}; ackbot on {'postgresql' if args.pg else 'sqlite'}; {args.approvals} approvals, "
        f"{args.concurrency} at a time",
        flush=True,
    )
    readings, problems = run_main(lambda workdir: bench(args, workdir))
    report(readings, problems, args.approvals)


if __name__ == "__main__":
    main()
