"""Benchmark ingest: events/s into POST /api/v1/events, beside a bare-aiohttp validate-and-202 baseline (issue #8).

Run from the repository root:  .venv/bin/python bench/bench_ingest.py [--seconds 5] [--concurrency 16]
    [--batch 100] [--modes single,batch] [--variants none,console,webhook] [--warmup 1] [--pg]

Closed loop: --concurrency clients each POST, wait for the answer and POST again, for --warmup seconds (not counted)
and then --seconds (measured: the events of the requests answered 202 inside the window, per second). Each request
carries one event (mode "single") or a JSON array of --batch events (mode "batch"); every event has its own
dedup_key, so each one opens a new alert. Every system runs as a fresh subprocess on loopback:

- baseline: a bare aiohttp app that reads the body, parses the JSON, validates each event with ackbot's own pydantic
  EventIn model and answers 202: the floor for "HTTP + JSON + validation" on this machine;
- ackbot, `python -m bot.cli serve` on a fresh SQLite file (or, with --pg, a fresh PostgreSQL database), one API key,
  in one of these variants:
  - none: no rules: each event is stored with its alert; no delivery, so the dispatcher stays idle;
  - console: one rule sending every event to a console channel (a log line at INFO, below the WARNING log level):
    one delivery per event, written in the ingest transaction and then dispatched (cheaply) by the workers;
  - webhook: one rule sending every event to a signed webhook channel pointing at a loopback sink in this process:
    ingest competes with real dispatch (delivered/s is shown too).

--profile runs each ackbot under a statistical profiler (see SAMPLER in harness.py) and prints where its CPU went
during the window: by package, by function, and the ackbot functions on the stack. --calls instead counts the
function calls of the server's event-loop thread per event stored in the window (see CALLS in harness.py), a measure
of its work that does not move with the machine's speed.

Printed: events/s, requests/s, request latency p50/p99, the server's CPU (event-loop thread + other threads) and
this process's (the load generator) in % of one core, the ratio ackbot / baseline of the same mode, and for ackbot
the events per intake transaction during the window (from its /metrics). The issue #8 target: single-event ingest
at least 35% of the bare-aiohttp rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    API_KEY,
    API_KEY_ENV,
    SECRET_ENV,
    CpuSample,
    Sink,
    calls_report,
    counted_command,
    create_pg_database,
    drop_pg_database,
    free_port,
    load_average,
    log_size,
    logged_problems,
    machine,
    ms,
    percentile,
    profiled_command,
    ratio,
    read_profile,
    require_pg,
    run_main,
    serve_command,
    spawn,
    stop,
    wait_ready,
)

TARGET_RATIO = 0.35
VARIANTS = ("none", "console", "webhook")
MODES = ("single", "batch")

BASELINE_APP = """
import json, sys
from aiohttp import web
from core.models.events import EventIn

port = int(sys.argv[1])


async def events(request):
    body = json.loads(await request.read())
    items = body if isinstance(body, list) else [body]
    for item in items:
        EventIn.model_validate(item)
    return web.json_response({"accepted": len(items)}, status=202)


async def readyz(request):
    return web.json_response({"status": "ready"})


app = web.Application(client_max_size=1024 * 1024 + 1)
app.router.add_post("/api/v1/events", events)
app.router.add_get("/readyz", readyz)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


def ackbot_config(*, port: int, database_url: str, variant: str, sink_url: str) -> str:
    """The config of the ackbot under test, as YAML (JSON is YAML)."""
    channels: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    if variant == "console":
        channels = [{"name": "log", "type": "console", "settings": {"rate_per_second": 1000}}]
    elif variant == "webhook":
        settings = {"url": f"{sink_url}/d0", "secret": f"env:{SECRET_ENV}", "allow_private": True}
        channels = [{"name": "d0", "type": "webhook", "settings": {**settings, "rate_per_second": 1000}}]
    if channels:
        rules = [{"name": "all", "match": {"kinds": ["bench.*"]}, "actions": [{"channel": channels[0]["name"]}]}]
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": database_url},
        "api_keys": [{"name": "bench", "key": f"env:{API_KEY_ENV}", "tenant": "*", "scopes": ["events.write"]}],
        "channels": channels,
        "rules": rules,
    }
    return json.dumps(config, indent=1)


# ---------------------------------------------------------------- the load


@dataclass
class Load:
    """What the clients saw: per answered request (time.time() seconds) when it started and ended, its events."""

    done: list[tuple[float, float, int]] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    def events_in(self, start: float, end: float) -> float:
        """Events answered per the window, each request counted for the share of its duration inside the window
        (a batch that takes longer than the window still counts, pro rata)."""
        total = 0.0
        for began, ended, count in self.done:
            overlap = min(ended, end) - max(began, start)
            if overlap > 0:
                total += count * overlap / max(1e-9, ended - began)
        return total

    def requests_in(self, start: float, end: float) -> list[tuple[float, float, int]]:
        """The requests that overlapped the window."""
        return [(b, e, n) for b, e, n in self.done if e > start and b < end]


def event_doc(run: str, seq: int) -> dict[str, Any]:
    return {
        "kind": "bench.ingest",
        "severity": "medium",
        "title": f"bench event {seq}",
        "summary": "ingest benchmark",
        "dedup_key": f"{run}-{seq}",
        "scope": {"namespace": "prod", "labels": {"dest": "d0", "team": "bench"}},
        "payload": {"run": run, "seq": seq, "dest": "d0"},
    }


async def client_loop(
    http: aiohttp.ClientSession, url: str, *, run: str, seqs: itertools.count[int], batch: int, until: float, load: Load
) -> None:
    """POST, wait for the answer, POST again, until time.time() passes `until`."""
    headers = {"Content-Type": "application/json"}
    while time.time() < until:
        docs = [event_doc(run, next(seqs)) for _ in range(max(1, batch))]
        body = json.dumps(docs if batch else docs[0]).encode()
        started = time.time()
        try:
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            load.refused[type(exc).__name__] = load.refused.get(type(exc).__name__, 0) + len(docs)
            await asyncio.sleep(0.01)
            continue
        if status == 202:
            load.done.append((started, time.time(), len(docs)))
        else:
            load.refused[f"HTTP {status}"] = load.refused.get(f"HTTP {status}", 0) + len(docs)


async def closed_loop(
    http: aiohttp.ClientSession, url: str, *, run: str, concurrency: int, batch: int, until: float
) -> Load:
    """`concurrency` clients until time.time() passes `until`; returns once every answer is in."""
    load = Load()
    seqs = itertools.count()
    await asyncio.gather(
        *(client_loop(http, url, run=run, seqs=seqs, batch=batch, until=until, load=load) for _ in range(concurrency))
    )
    return load


# ---------------------------------------------------------------- one run


async def intake_groups(http: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """The server's intake transactions so far, from /metrics: (events in them, transactions)."""
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    totals = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in totals:
            if line.startswith(f"ackbot_intake_group_events_{kind} "):
                totals[kind] = float(line.split()[1])
    return totals["sum"], totals["count"]


@dataclass
class Result:
    mode: str
    system: str
    events_per_s: float
    requests_per_s: float
    latencies: list[float]
    cpu: tuple[float, float, float]
    load_avg: str
    delivered_per_s: float = math.nan
    backlog: str = ""
    refused: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    profile: str = ""
    group_events: float = math.nan  # ackbot: events per intake transaction during the window


async def run_one(
    *, mode: str, system: str, args: argparse.Namespace, sink: Sink, http: aiohttp.ClientSession, workdir: Path
) -> Result:
    """Start a fresh server, load it for warm-up + window without a pause, measure the window, stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    name = f"{system.replace('/', '-')}-{mode}"
    log = workdir / f"{name}.log"
    profile = workdir / f"{name}.profile"
    batch = args.batch if mode == "batch" else 0
    profiling = args.profile and system != "baseline"
    calling = args.calls and system != "baseline"
    pg_url: str | None = None
    try:
        if system == "baseline":
            cmd = [sys.executable, "-c", BASELINE_APP, str(port)]
        else:
            variant = system.removeprefix("ackbot/")
            if args.pg:
                pg_url = await create_pg_database()
            config = workdir / f"{name}.yml"
            database_url = pg_url or f"sqlite+aiosqlite:///{workdir / f'{name}.db'}"
            config.write_text(ackbot_config(port=port, database_url=database_url, variant=variant, sink_url=sink.url))
            if profiling:
                cmd = profiled_command(config, profile)
            elif calling:
                cmd = counted_command(config, profile)
            else:
                cmd = serve_command(config)
        proc = spawn(cmd, log)
        try:
            await wait_ready(http, base, proc, log)
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with aiohttp.ClientSession(connector=connector, headers=headers) as client:
                run = f"{name}-{time.time_ns()}"
                sink.reset(run)
                offset = log_size(log)
                start = time.time() + args.warmup
                end = start + args.seconds
                clients = asyncio.create_task(
                    closed_loop(
                        client, base + "/api/v1/events", run=run, concurrency=args.concurrency, batch=batch, until=end
                    )
                )
                await asyncio.sleep(max(0.0, start - time.time()))
                if profiling or calling:
                    proc.send_signal(signal.SIGUSR1)
                groups_before = await intake_groups(http, base) if system != "baseline" else (0.0, 0.0)
                before = CpuSample(proc.pid)
                await asyncio.sleep(max(0.0, end - time.time()))
                after = CpuSample(proc.pid)
                groups_after = await intake_groups(http, base) if system != "baseline" else (0.0, 0.0)
                if profiling or calling:
                    proc.send_signal(signal.SIGUSR2)
                load_avg = load_average()
                load = await clients
                delivered = sum(1 for t in sink.arrivals.values() if start <= t <= end)
                backlog = ""
                if system == "ackbot/webhook":
                    accepted = sum(n for _, _, n in load.done)
                    deadline = time.time() + args.drain
                    while time.time() < deadline:
                        if len(sink.arrivals) >= accepted:
                            break
                        await asyncio.sleep(0.1)
                    backlog = f"{len(sink.arrivals)}/{accepted} delivered {args.drain:g}s after the load"
                if profiling:
                    profile_text = await read_profile(profile)
                elif calling:
                    counted = round(load.events_in(start, end))
                    profile_text = calls_report(await read_profile(profile), counted, "events")
        finally:
            stop(proc)
    finally:
        if pg_url is not None:
            await drop_pg_database(pg_url)
    window = load.requests_in(start, end)
    result = Result(
        mode=mode,
        system=system,
        events_per_s=load.events_in(start, end) / args.seconds,
        requests_per_s=len([1 for _, e, _ in window if e <= end]) / args.seconds,
        latencies=[e - b for b, e, _ in window],
        cpu=after.since(before),
        load_avg=load_avg,
        backlog=backlog,
        refused=load.refused,
        profile=profile_text if profiling or calling else "",
    )
    if system == "ackbot/webhook":
        result.delivered_per_s = delivered / args.seconds
    groups = groups_after[1] - groups_before[1]
    if groups:
        result.group_events = (groups_after[0] - groups_before[0]) / groups
    result.errors = logged_problems(log, offset)
    return result


# ---------------------------------------------------------------- report

HEADER = (
    f"{'mode':<8}{'system':<16}{'events/s':>10}{'req/s':>8}{'ratio':>8}{'p50 ms':>8}{'p99 ms':>8}"
    f"{'srv cpu%':>10}{'bench%':>8}{'deliv/s':>9}  load avg"
)


def report(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for mode in args.modes:
        rows = [r for r in results if r.mode == mode]
        base = next((r for r in rows if r.system == "baseline"), None)
        for r in rows:
            rel = ratio(r.events_per_s, base.events_per_s) if base is not None else "-"
            cpu = f"{r.cpu[0]:.0f}+{r.cpu[1]:.0f}"
            delivered = "-" if math.isnan(r.delivered_per_s) else f"{r.delivered_per_s:.0f}"
            print(
                f"{mode:<8}{r.system:<16}{r.events_per_s:>10.0f}{r.requests_per_s:>8.0f}{rel:>8}"
                f"{ms(percentile(r.latencies, 50)):>8}{ms(percentile(r.latencies, 99)):>8}"
                f"{cpu:>10}{r.cpu[2]:>8.0f}{delivered:>9}  {r.load_avg}"
            )
            if not math.isnan(r.group_events):
                print(f"{'':<24}{r.group_events:.1f} events per intake transaction")
            if r.backlog:
                print(f"{'':<24}webhook backlog: {r.backlog}")
            if r.refused:
                print(f"{'':<24}!! refused: {r.refused}")
            for line in r.errors:
                print(f"{'':<24}!! server log: {line}")
        print()
    base = next((r for r in results if r.mode == "single" and r.system == "baseline"), None)
    singles = [r for r in results if r.mode == "single" and r.system != "baseline"]
    if base is not None and singles:
        print(f"issue #8 target: single-event ingest >= {TARGET_RATIO:.0%} of the bare-aiohttp rate")
        for r in singles:
            share = r.events_per_s / base.events_per_s if base.events_per_s else math.nan
            verdict = "met" if share >= TARGET_RATIO else "NOT met"
            print(f"  {r.system:<16}{share:>7.0%}  {verdict}")
        print()
    print(
        "events/s: events answered 202 per second of the measured window (a request that straddles the window\n"
        "counts for the share of its duration inside it); req/s: requests answered inside it. ratio: ackbot /\n"
        "baseline of the same mode. p50/p99: latency of the requests that overlapped the window. srv cpu%: the\n"
        "server's event-loop thread + its other threads, bench%: this process (the clients and the sink), in % of\n"
        "one core. deliv/s: webhook deliveries at the sink during the window. load avg: 1/5/15-minute load\n"
        "average at the end of the window."
    )
    for r in results:
        if r.profile:
            what = "--calls" if args.calls else "--profile"
            print(f"\n{what}: {r.system}, {r.mode}, measured window\n{r.profile}", end="")


async def bench(args: argparse.Namespace, workdir: Path) -> list[Result]:
    if args.pg:
        await require_pg()
    sink = Sink()
    await sink.start()
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession() as http:
            for mode in args.modes:
                for system in ("baseline", *(f"ackbot/{v}" for v in args.variants)):
                    started = time.perf_counter()
                    result = await run_one(mode=mode, system=system, args=args, sink=sink, http=http, workdir=workdir)
                    results.append(result)
                    print(
                        f"  {mode} {system}: {result.events_per_s:.0f} events/s "
                        f"({time.perf_counter() - started:.1f}s, load average {result.load_avg})",
                        flush=True,
                    )
    finally:
        with contextlib.suppress(Exception):
            await sink.stop()
    return results


def names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        if not chosen or any(c not in allowed for c in chosen):
            raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(allowed)}")
        return chosen

    return parse


def main(argv: list[str] | None = None) -> None:
    """Run every mode against the baseline and each ackbot variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the window, not counted")
    parser.add_argument("--concurrency", type=int, default=16, help="clients, each with one request in flight")
    parser.add_argument("--batch", type=int, default=100, help="events per POST in the batch mode")
    parser.add_argument("--modes", type=names(MODES), default=list(MODES), help="single,batch")
    parser.add_argument("--variants", type=names(VARIANTS), default=list(VARIANTS), help="none,console,webhook")
    parser.add_argument("--pg", action="store_true", help="ackbot on PostgreSQL at 127.0.0.1:5432 (a fresh database)")
    parser.add_argument("--drain", type=float, default=30.0, help="webhook variant: seconds to wait for the backlog")
    parser.add_argument("--profile", action="store_true", help="sample where ackbot's CPU goes during the window")
    parser.add_argument("--calls", action="store_true", help="count ackbot's function calls during the window")
    args = parser.parse_args(argv)
    if args.profile and args.calls:
        parser.error("--profile and --calls each need the server to themselves: choose one")
    if args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or not 1 <= args.batch <= 1000:
        parser.error("--seconds > 0, --warmup >= 0, --concurrency >= 1, 1 <= --batch <= 1000")
    print(
        f"{machine()}; ackbot on {'postgresql' if args.pg else 'sqlite'}; closed loop, {args.concurrency} clients; "
        f"{args.seconds:g}s measured after {args.warmup:g}s warm-up; batch mode {args.batch} events per POST",
        flush=True,
    )
    results = run_main(lambda workdir: bench(args, workdir))
    report(results, args)


if __name__ == "__main__":
    main()
