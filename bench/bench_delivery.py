"""Benchmark end-to-end delivery: POST /api/v1/events to a webhook sink, beside a bare-aiohttp baseline (issue #3).

Run from the repository root:  .venv/bin/python bench/bench_delivery.py [--rates 200,1000] [--seconds 5]
    [--destinations 20] [--workers 8] [--pg] [--batch 0] [--drain 30] [--trace]

For each offered rate, two systems run in turn as subprocesses on loopback ports, each started fresh:

- ackbot: `python -m bot.cli serve` with a generated config: a temporary SQLite database (or, with --pg, a fresh
  PostgreSQL database at 127.0.0.1:5432, dropped afterwards), one API key, N signed webhook channels pointing at
  the sink's paths /d0../d{N-1} (rate_per_second 1000, so pacing never throttles) and N rules routing the label
  dest=d{i} to channel d{i};
- the baseline: a bare aiohttp app that answers POST /api/v1/events with 202 and forwards each event, shaped like
  ackbot's webhook body, to the same sink path with one shared ClientSession: no database, no rules, no signing;
  the floor for "HTTP in, HTTP out" on this machine.

The load is open-loop: events are scheduled at the offered rate (round-robin over the destinations, each with a
unique dedup_key), each carrying its scheduled time `sent_at` and a `seq` in its payload, whatever happened to the
requests before it; latencies run from that scheduled time, so queueing in front of a slow server counts. The sink
runs in this process and records when each event arrived. When the load period ends, the drain budget starts: the
run waits for the outstanding answers and then for every accepted event to reach the sink; what has not arrived
when the budget runs out is reported LOST (and counts as infinitely late in the percentiles). Ratios are ackbot over
the baseline measured in the same run, since the machine's own speed (and noise) cancels out of them.

--trace runs ackbot under a wrapper that times, by the code that opened them, the wait for a pooled connection,
on SQLite the wait for the write lock (BEGIN IMMEDIATE), and how long each transaction stayed open; and the event
loop's lag; and prints that table. It hooks ackbot's internals (core.store.db's begin hook, the pool's checkout),
so it is a diagnostic that may need adjusting when those change; the figures without it do not depend on them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    API_KEY,
    API_KEY_ENV,
    ROOT,
    SECRET_ENV,
    CpuSample,
    Sink,
    create_pg_database,
    drop_pg_database,
    free_port,
    log_size,
    logged_problems,
    ms,
    percentile,
    ratio,
    require_pg,
    run_main,
    spawn,
    stop,
    tail,
    wait_ready,
)

CLIENT_CONNECTIONS = 64

BASELINE_APP = """
import asyncio, json, sys
from aiohttp import ClientSession, web

port, sink = int(sys.argv[1]), sys.argv[2]
state = {}
pending = set()


async def forward(event):
    dest = event["scope"]["labels"]["dest"]
    doc = json.dumps({"version": 1, "type": "notify", "channel": dest, "event": event})
    headers = {"Content-Type": "application/json"}
    async with state["http"].post(f"{sink}/{dest}", data=doc, headers=headers) as response:
        await response.read()


async def events(request):
    body = await request.json()
    items = body if isinstance(body, list) else [body]
    for event in items:
        task = asyncio.create_task(forward(event))
        pending.add(task)
        task.add_done_callback(pending.discard)
    return web.json_response({"accepted": len(items)}, status=202)


async def readyz(request):
    return web.json_response({"status": "ready"})


async def session(app):
    state["http"] = ClientSession()
    yield
    await state["http"].close()


app = web.Application()
app.cleanup_ctx.append(session)
app.router.add_post("/api/v1/events", events)
app.router.add_get("/readyz", readyz)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""

# --trace: `python -c TRACER OUT ROOT serve --config ...` runs bot.cli with SQLAlchemy hooks that time, by the
# ackbot code that opened it, each pool checkout, each transaction (begin to commit or rollback) and, on SQLite, the
# wait in BEGIN IMMEDIATE for the write lock; and a 10 ms ticker that measures the event loop's lag. SIGUSR1 starts
# the measured window (forgetting the warm-up); SIGUSR2 writes the table.
TRACER = r"""
import asyncio, collections, os, runpy, signal, sys, time
import greenlet
from sqlalchemy import event
import core.runtime
import core.store.db

out, root = sys.argv[1], sys.argv[2] + "/"
sys.argv = ["bot.cli", *sys.argv[3:]]
# per opener: transactions, lock wait total/max, held total/max, pool checkouts, pool wait total/max
stats = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0])
lag = []
open_tx = {}


def opener():
    # The begin event runs in SQLAlchemy's greenlet; its parent is suspended inside the awaiting coroutines.
    current = greenlet.getcurrent()
    try:
        frame = current.parent.gr_frame if current.parent is not None else sys._getframe(1)
    except Exception:
        return "?"
    names = []
    while frame is not None and len(names) < 2:
        name = frame.f_code.co_filename
        if name.startswith((root + "core/", root + "bot/")) and not name.endswith("store/db.py"):
            names.append(f"{name[len(root):]}:{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(names) or "?"


database_init = core.store.db.Database.__init__


def traced_init(self, *args, **kwargs):
    database_init(self, *args, **kwargs)
    engine = self.engine.sync_engine
    # ackbot's own begin hook (on SQLite, the BEGIN that may wait for the write lock) runs inside the timing.
    hooks = [getattr(core.store.db, name, None) for name in ("_sqlite_begin", "_sqlite_begin_immediate")]
    hook = next((h for h in hooks if h is not None and event.contains(engine, "begin", h)), None)
    if hook is not None:
        event.remove(engine, "begin", hook)

    def begin(conn):
        started = time.perf_counter()
        if hook is not None:
            hook(conn)
        now = time.perf_counter()
        open_tx[id(conn.connection.dbapi_connection)] = (now, now - started, opener())

    def end(conn):
        item = open_tx.pop(id(conn.connection.dbapi_connection), None)
        if item is not None:
            began, wait, who = item
            held = time.perf_counter() - began
            s = stats[who]
            s[0] += 1
            s[1] += wait
            s[2] = max(s[2], wait)
            s[3] += held
            s[4] = max(s[4], held)

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)
    checkout = engine.pool._do_get

    def timed_checkout():
        started = time.perf_counter()
        try:
            return checkout()
        finally:
            waited = time.perf_counter() - started
            s = stats[opener()]
            s[5] += 1
            s[6] += waited
            s[7] = max(s[7], waited)

    engine.pool._do_get = timed_checkout


core.store.db.Database.__init__ = traced_init
runtime_start = core.runtime.Runtime.start


async def traced_start(self, *args, **kwargs):
    await runtime_start(self, *args, **kwargs)

    async def ticker():
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lag.append(time.perf_counter() - before - 0.01)

    self._bench_ticker = asyncio.create_task(ticker())


core.runtime.Runtime.start = traced_start


def begin_window(*_):
    stats.clear()
    lag.clear()


def dump():
    def q(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")

    with open(out, "w") as fh:
        fh.write(f"{'pool wait':>19}{'lock wait':>16}{'held':>20}\n")
        fh.write(f"{'avg ms':>8}{'max ms':>8}{'n':>6}{'avg ms':>8}{'max ms':>8}{'total s':>8}{'avg ms':>8}"
                 f"{'max ms':>8}  transaction opened in (innermost ackbot frame < its caller)\n")
        for who, (n, wt, wm, ht, hm, pn, pt, pm) in sorted(stats.items(), key=lambda kv: -kv[1][3]):
            fh.write(f"{1000 * pt / max(1, pn):>8.1f}{1000 * pm:>8.0f}{n:>6}{1000 * wt / max(1, n):>8.1f}"
                     f"{1000 * wm:>8.0f}{ht:>8.2f}{1000 * ht / max(1, n):>8.1f}{1000 * hm:>8.0f}  {who}\n")
        fh.write(f"event loop lag (10 ms ticker): p50 {q(lag, 50):.1f} ms, p99 {q(lag, 99):.1f} ms, "
                 f"max {max(lag, default=0) * 1000:.1f} ms over {len(lag)} ticks\n")


signal.signal(signal.SIGUSR1, begin_window)
signal.signal(signal.SIGUSR2, lambda *_: dump())
runpy.run_module("bot.cli", run_name="__main__", alter_sys=True)
"""


# ---------------------------------------------------------------- the systems under test


def ackbot_config(*, port: int, database_url: str, sink_url: str, destinations: int, workers: int) -> str:
    """The config of the ackbot under test, as YAML (JSON is YAML)."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": database_url},
        "dispatch": {"workers": workers, "poll_interval": 0.05},
        "api_keys": [{"name": "bench", "key": f"env:{API_KEY_ENV}", "tenant": "*", "scopes": ["events.write"]}],
        "channels": [
            {
                "name": f"d{i}",
                "type": "webhook",
                "settings": {
                    "url": f"{sink_url}/d{i}",
                    "secret": f"env:{SECRET_ENV}",
                    "allow_private": True,
                    "rate_per_second": 1000,
                },
            }
            for i in range(destinations)
        ],
        "rules": [
            {"name": f"to-d{i}", "match": {"labels": {"dest": f"d{i}"}}, "actions": [{"channel": f"d{i}"}]}
            for i in range(destinations)
        ],
    }
    return json.dumps(config, indent=1)


# ---------------------------------------------------------------- the load


@dataclass
class Load:
    """What the generator saw; times are time.time() seconds."""

    offered: int = 0
    start: float = 0.0
    accepted: set[int] = field(default_factory=set)
    sent_at: dict[int, float] = field(default_factory=dict)
    accepted_at: dict[int, float] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    unrouted: int = 0
    last_accept: float = 0.0
    max_lag: float = 0.0

    def refuse(self, reason: str, count: int) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + count


def event_doc(run: str, seq: int, sent_at: float, destinations: int) -> dict[str, Any]:
    dest = f"d{seq % destinations}"
    return {
        "kind": "bench.delivery",
        "severity": "high",
        "title": f"bench event {seq} to {dest}",
        "summary": "end-to-end delivery benchmark",
        "dedup_key": f"{run}-{seq}",
        "scope": {"labels": {"dest": dest}},
        "payload": {"run": run, "seq": seq, "sent_at": sent_at, "dest": dest},
    }


async def post_events(
    http: aiohttp.ClientSession, url: str, load: Load, run: str, seqs: range, due: float, destinations: int, batch: int
) -> None:
    """One POST of one event (batch 0) or an array of them; records the answer."""
    docs = [event_doc(run, seq, due, destinations) for seq in seqs]
    body = json.dumps(docs if batch else docs[0]).encode()
    for seq in seqs:
        load.sent_at[seq] = due
    try:
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.read()
            status = resp.status
    except asyncio.CancelledError:
        load.unanswered += len(seqs)
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        load.refuse(type(exc).__name__, len(seqs))
        return
    now = time.time()
    if status != 202:
        load.refuse(f"HTTP {status}", len(seqs))
        return
    with contextlib.suppress(ValueError):
        results = json.loads(answer)
        for result in results if isinstance(results, list) else [results]:
            if isinstance(result, dict) and result.get("deliveries", 1) != 1:
                load.unrouted += 1
    load.accepted.update(seqs)
    for seq in seqs:
        load.accepted_at[seq] = now
    load.last_accept = max(load.last_accept, now)


async def generate(
    http: aiohttp.ClientSession,
    url: str,
    *,
    run: str,
    rate: float,
    seconds: float,
    destinations: int,
    batch: int,
    answer_deadline: float,
) -> Load:
    """Open loop: POST k events every k/rate seconds whether or not earlier requests were answered; then wait for
    the answers until answer_deadline seconds after the last send, and give up on the rest."""
    per_post = max(1, batch)
    total = max(1, round(rate * seconds))
    load = Load(offered=total)
    tasks: set[asyncio.Task[None]] = set()
    load.start = time.time() + 0.05
    for number, first in enumerate(range(0, total, per_post)):
        due = load.start + number * per_post / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            load.max_lag = max(load.max_lag, -delay)
        seqs = range(first, min(first + per_post, total))
        task = asyncio.create_task(post_events(http, url, load, run, seqs, due, destinations, batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=answer_deadline)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    return load


async def drain(sink: Sink, load: Load, until: float) -> None:
    """Wait until every accepted event arrived, or the monotonic clock reaches until."""
    while time.monotonic() < until:
        if all(seq in sink.arrivals for seq in load.accepted):
            return
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- one run


@dataclass
class Result:
    system: str
    rate: int
    offered: int
    accepted: int
    delivered: int
    accept_rate: float
    delivered_rate: float
    e2e: list[float]
    ingest: list[float]
    to_handler: list[float]
    handler_to_sink: list[float]
    refused: dict[str, int]
    unanswered: int
    extra: int
    duplicates: int
    misrouted: int
    unrouted: int
    max_lag: float
    cpu_main: float
    cpu_rest: float
    cpu_bench: float
    errors: list[str] = field(default_factory=list)
    trace: str = ""


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def summarize(system: str, rate: int, load: Load, sink: Sink, cpu: tuple[float, float, float]) -> Result:
    """The figures of one run; undelivered accepted events count as infinitely late."""
    arrived = [seq for seq in load.accepted if seq in sink.arrivals]
    e2e = [sink.arrivals.get(seq, math.inf) - load.sent_at[seq] for seq in load.accepted]
    answered = [load.accepted_at[seq] - load.sent_at[seq] for seq in load.accepted]
    ingest = answered + [math.inf] * load.unanswered
    to_handler: list[float] = []
    handler_to_sink: list[float] = []
    for seq in arrived:
        stamp = sink.received_at.get(seq)
        if stamp is not None:
            received = epoch(stamp)
            to_handler.append(received - load.sent_at[seq])
            handler_to_sink.append(sink.arrivals[seq] - received)
    last_arrival = max((sink.arrivals[seq] for seq in arrived), default=load.start)
    return Result(
        system=system,
        rate=rate,
        offered=load.offered,
        accepted=len(load.accepted),
        delivered=len(arrived),
        accept_rate=len(load.accepted) / max(1e-9, load.last_accept - load.start) if load.accepted else 0.0,
        delivered_rate=len(arrived) / max(1e-9, last_arrival - load.start) if arrived else 0.0,
        e2e=e2e,
        ingest=ingest,
        to_handler=to_handler,
        handler_to_sink=handler_to_sink,
        refused=load.refused,
        unanswered=load.unanswered,
        extra=len(sink.arrivals) - len(arrived),
        duplicates=sink.duplicates,
        misrouted=sink.misrouted,
        unrouted=load.unrouted,
        max_lag=load.max_lag,
        cpu_main=cpu[0],
        cpu_rest=cpu[1],
        cpu_bench=cpu[2],
    )


async def run_one(
    *, system: str, rate: int, args: argparse.Namespace, sink: Sink, http: aiohttp.ClientSession, workdir: Path
) -> Result:
    """Start a fresh server, warm it up, load it, drain, stop it; return the figures."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / f"{system}-{rate}.log"
    trace = workdir / f"trace-{rate}.txt"
    tracing = args.trace and system == "ackbot"
    pg_url: str | None = None
    if system == "baseline":
        cmd = [sys.executable, "-c", BASELINE_APP, str(port), sink.url]
    else:
        if args.pg:
            pg_url = await create_pg_database()
        config = workdir / f"ackbot-{rate}.yml"
        config.write_text(
            ackbot_config(
                port=port,
                database_url=pg_url or f"sqlite+aiosqlite:///{workdir / f'ackbot-{rate}.db'}",
                sink_url=sink.url,
                destinations=args.destinations,
                workers=args.workers,
            )
        )
        cmd = [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)]
        if tracing:
            cmd = [sys.executable, "-c", TRACER, str(trace), str(ROOT), *cmd[3:]]
    try:
        proc = spawn(cmd, log)
        try:
            await wait_ready(http, base, proc, log)
            headers = {"Authorization": f"Bearer {API_KEY}"}
            connector = aiohttp.TCPConnector(limit=CLIENT_CONNECTIONS)
            async with aiohttp.ClientSession(connector=connector, headers=headers) as client:
                url = base + "/api/v1/events"
                # Warm-up, not measured: connections both ways, caches, the first rows of every table.
                warm_run = f"warm-{system}-{rate}-{secrets.token_hex(3)}"
                sink.reset(warm_run)
                count = max(args.destinations, 2 * args.workers)
                warm = await generate(
                    client,
                    url,
                    run=warm_run,
                    rate=count * 4,
                    seconds=0.25,
                    destinations=args.destinations,
                    batch=0,
                    answer_deadline=30,
                )
                await drain(sink, warm, time.monotonic() + 30)
                if not warm.accepted or len(sink.arrivals) < len(warm.accepted):
                    raise RuntimeError(f"{system}: the warm-up was not delivered ({warm.refused}):\n{tail(log)}")
                await asyncio.sleep(0.3)

                run = f"{system}-{rate}-{secrets.token_hex(3)}"
                sink.reset(run)
                if tracing:
                    proc.send_signal(signal.SIGUSR1)
                before = CpuSample(proc.pid)
                offset = log_size(log)
                deadline = time.monotonic() + args.seconds + args.drain
                load = await generate(
                    client,
                    url,
                    run=run,
                    rate=rate,
                    seconds=args.seconds,
                    destinations=args.destinations,
                    batch=args.batch,
                    answer_deadline=max(0.0, deadline - time.monotonic()),
                )
                await drain(sink, load, deadline)
                after = CpuSample(proc.pid)
                if tracing:
                    proc.send_signal(signal.SIGUSR2)
                    for _ in range(50):
                        if log_size(trace):
                            break
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.2)  # let duplicates show
        finally:
            stop(proc)
    finally:
        if pg_url is not None:
            await drop_pg_database(pg_url)
    result = summarize(system, rate, load, sink, after.since(before))
    result.errors = logged_problems(log, offset)
    if tracing:
        result.trace = trace.read_text() if trace.exists() else "(the tracer wrote nothing)\n"
    return result


# ---------------------------------------------------------------- report


HEADER = (
    f"{'system':<9}{'rate/s':>7}{'accepted/s':>11}{'delivered/s':>12}{'deliv/acc':>12}"
    f"{'e2e p50':>9}{'p99':>9}{'max':>9}{'POST p50':>10}{'p99':>9}"
    f"{'srv cpu%':>10}{'bench%':>8}{'lag ms':>8}"
)


def row(r: Result) -> str:
    delivered = f"{r.delivered}/{r.accepted}"
    cpu = f"{r.cpu_main:.0f}+{r.cpu_rest:.0f}"
    return (
        f"{r.system:<9}{r.rate:>7}{r.accept_rate:>11.0f}{r.delivered_rate:>12.0f}{delivered:>12}"
        f"{ms(percentile(r.e2e, 50)):>9}{ms(percentile(r.e2e, 99)):>9}{ms(max(r.e2e, default=math.nan)):>9}"
        f"{ms(percentile(r.ingest, 50)):>10}{ms(percentile(r.ingest, 99)):>9}"
        f"{cpu:>10}{r.cpu_bench:>8.0f}{r.max_lag * 1000:>8.0f}"
    )


def problems(r: Result, drain: float) -> Iterator[str]:
    if r.delivered != r.accepted:
        yield f"LOST {r.accepted - r.delivered} of {r.accepted} accepted events: not at the sink within the drain"
    if r.unanswered:
        yield f"{r.unanswered} of {r.offered} offered events not answered within the drain ({drain:g}s)"
    if r.refused:
        yield f"refused: {r.refused}"
    if r.extra:
        yield f"{r.extra} delivered events whose POST was not answered 202"
    if r.duplicates:
        yield f"{r.duplicates} duplicate deliveries"
    if r.misrouted:
        yield f"{r.misrouted} misrouted"
    if r.unrouted:
        yield f"{r.unrouted} answers without exactly one delivery"
    for line in r.errors:
        yield f"server log: {line}"


def report(results: list[Result], drain: float) -> None:
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for rate in sorted({r.rate for r in results}):
        pair = {r.system: r for r in results if r.rate == rate}
        for system in ("baseline", "ackbot"):
            if system in pair:
                print(row(pair[system]))
                for problem in problems(pair[system], drain):
                    print(f"{'':<16}!! {problem}")
        if len(pair) == 2:
            a, b = pair["ackbot"], pair["baseline"]
            print(
                f"{'ratio':<9}{rate:>7}{ratio(a.accept_rate, b.accept_rate):>11}"
                f"{ratio(a.delivered_rate, b.delivered_rate):>12}{'':>12}"
                f"{ratio(percentile(a.e2e, 50), percentile(b.e2e, 50)):>9}"
                f"{ratio(percentile(a.e2e, 99), percentile(b.e2e, 99)):>9}{'':>9}"
                f"{ratio(percentile(a.ingest, 50), percentile(b.ingest, 50)):>10}"
                f"{ratio(percentile(a.ingest, 99), percentile(b.ingest, 99)):>9}"
            )
            print(
                f"{'':<16}ackbot p50/p99 ms: send->handler {ms(percentile(a.to_handler, 50))}/"
                f"{ms(percentile(a.to_handler, 99))}, handler->sink {ms(percentile(a.handler_to_sink, 50))}/"
                f"{ms(percentile(a.handler_to_sink, 99))}"
            )
        print()
    print(
        "accepted/s, delivered/s: events answered 202 / at the sink, per second from the first scheduled send to the\n"
        "last answer / arrival. Latencies (ms) run from each event's scheduled send time: e2e to its arrival at the\n"
        "sink, POST to its 202; LOST: not there within the drain. ratio = ackbot / baseline. srv cpu%: the server's\n"
        "event-loop thread + its other threads, bench%: this process (load and sink), in % of one core. lag: the\n"
        "generator's worst lateness. send->handler ends at the event's received_at in the webhook body."
    )
    for r in results:
        if r.trace:
            print(f"\n--trace: ackbot at {r.rate}/s, measured window\n{r.trace}", end="")


async def bench(args: argparse.Namespace, workdir: Path) -> list[Result]:
    if args.pg:
        await require_pg()
    sink = Sink()
    await sink.start()
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession() as http:
            for rate in args.rates:
                for system in ("baseline", "ackbot"):
                    started = time.perf_counter()
                    result = await run_one(system=system, rate=rate, args=args, sink=sink, http=http, workdir=workdir)
                    results.append(result)
                    print(
                        f"  {system} at {rate}/s: {result.delivered}/{result.accepted} delivered "
                        f"({time.perf_counter() - started:.1f}s, load average {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
    finally:
        await sink.stop()
    return results


def parse_rates(text: str) -> list[int]:
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        rates = []
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("a comma-separated list of positive events/s")
    return rates


def main(argv: list[str] | None = None) -> None:
    """Run every rate against the baseline and ackbot and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", type=parse_rates, default=[200, 1000], help="offered events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration per run")
    parser.add_argument("--destinations", type=int, default=20, help="webhook channels (sink paths)")
    parser.add_argument("--workers", type=int, default=8, help="ackbot dispatch workers")
    parser.add_argument("--pg", action="store_true", help="ackbot on PostgreSQL at 127.0.0.1:5432 (a fresh database)")
    parser.add_argument("--batch", type=int, default=0, help="events per POST, as a JSON array (0: single events)")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds after the load to wait for deliveries")
    parser.add_argument("--trace", action="store_true", help="time ackbot's transactions and event loop lag")
    args = parser.parse_args(argv)
    if args.destinations < 1 or args.workers < 1 or args.batch < 0 or args.seconds <= 0 or args.drain < 0:
        parser.error("--destinations and --workers must be >= 1, --batch and --drain >= 0, --seconds > 0")

    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.1f}; ackbot on {'postgresql' if args.pg else 'sqlite'} with {args.workers} workers; "
        f"{args.destinations} destinations; {args.seconds:g}s per rate; "
        f"{f'{args.batch} events per POST' if args.batch else 'one event per POST'}; "
        f"{CLIENT_CONNECTIONS} client connections; drain {args.drain:g}s",
        flush=True,
    )
    # Ctrl-C and SIGTERM unwind through the finally blocks that stop the children and drop the database.
    results = run_main(lambda workdir: bench(args, workdir))
    report(results, args.drain)


if __name__ == "__main__":
    main()
