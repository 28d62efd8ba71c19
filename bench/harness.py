"""Shared plumbing of the benchmarks that run `ackbot serve` as a subprocess on loopback.

Used by bench_delivery.py, bench_ingest.py, bench_clicks.py and bench_memory.py:

- children: `spawn` a server with its output in a log file and a clean environment (no ACKBOT_* overrides from the
  caller's shell, the benchmark's secrets, a WARNING log), `wait_ready` on /readyz, `stop` it (SIGTERM, then
  SIGKILL), and `kill_all_children` whatever happens;
- PostgreSQL: a fresh database per run (`create_pg_database` / `drop_pg_database`), or why it is unreachable;
- the webhook `Sink` the delivery benchmarks send to;
- figures: `percentile`, `ms`, `ratio`, per-thread CPU (`CpuSample`), resident memory (`rss_kib`), the distinct
  problems a child logged (`logged_problems`), and the machine line every benchmark prints first (`machine`);
- `run_main`: asyncio.run with Ctrl-C/SIGTERM unwinding through the cleanup, inside a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
PG_BASE = os.environ.get("ACKBOT_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
API_KEY = "bench-key-" + secrets.token_hex(12)
API_KEY_ENV = "ACKBOT_BENCH_API_KEY"
SECRET_ENV = "ACKBOT_BENCH_WEBHOOK_SECRET"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

T = TypeVar("T")

# Every child process, so that whatever happens (an error, Ctrl-C) none outlives the benchmark.
_CHILDREN: list[subprocess.Popen[bytes]] = []


# ---------------------------------------------------------------- figures


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of values (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    """Seconds as milliseconds for a table: "-" for none, LOST for never."""
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "LOST"
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def ratio(a: float, b: float) -> str:
    """a / b as "0.42x"; "-" when either is not a finite number or b is zero."""
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return "-"
    return f"{a / b:.2f}x" if a / b < 100 else f"{a / b:.0f}x"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of a process (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


@dataclass
class CpuSample:
    """CPU used so far by a server (per thread) and by this process."""

    pid: int
    wall: float = field(default_factory=time.perf_counter)
    threads: dict[int, float] = field(default_factory=dict)
    own: float = field(default_factory=time.process_time)

    def __post_init__(self) -> None:
        self.threads = thread_cpu(self.pid)

    def since(self, start: CpuSample) -> tuple[float, float, float]:
        """Percent of one core since start: the server's main (event loop) thread, its other threads, this process."""
        wall = max(1e-9, self.wall - start.wall)
        main = self.threads.get(self.pid, 0.0) - start.threads.get(self.pid, 0.0)
        rest = sum(v - start.threads.get(t, 0.0) for t, v in self.threads.items() if t != self.pid)
        return 100 * main / wall, 100 * rest / wall, 100 * (self.own - start.own) / wall

    def server_seconds(self, start: CpuSample) -> float:
        """CPU seconds the server used since start, all its threads."""
        return sum(v - start.threads.get(t, 0.0) for t, v in self.threads.items())


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, ...); empty if the process is gone."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                out[name] = int(parts[0])
    return out


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS) of a process in KiB; 0 if it is gone."""
    return proc_status(pid).get("VmRSS", 0)


def memory_total_mib() -> int:
    """The machine's memory (MemTotal) in MiB; 0 where /proc/meminfo is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    """What the figures were measured on: CPUs, memory, Python, aiohttp, the load average now."""
    return (
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, {os.cpu_count()} cpus, "
        f"{memory_total_mib()} MiB memory, {platform.system()} {platform.release()}, load average {load_average()}"
    )


def tail(log: Path) -> str:
    """The end of a child's output."""
    return log.read_text(errors="replace")[-3000:]


def log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def logged_problems(log: Path, offset: int) -> list[str]:
    """The distinct WARNING, ERROR and exception lines a child logged after offset (ids cut), most frequent first."""
    with log.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        for level in (" WARNING ", " ERROR ", " CRITICAL "):
            if level in line:
                key = level.strip() + " " + line.split(level, 1)[1].strip()
                break
        else:
            if not (line[:1].isalpha() and ("Error: " in line or "Exception: " in line)):
                continue
            key = line
        key = re.sub(r"\b(?=\w*\d)\w{12,}\b", "<id>", key)[:160]
        counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {key}" for key, n in sorted(counts.items(), key=lambda item: -item[1])[:6]]


# ---------------------------------------------------------------- the sink


class Sink:
    """An aiohttp server on 127.0.0.1 answering 200 on any path; records when each event of the current run arrived.

    It reads ackbot's webhook body ({"event": {"payload": {"run", "seq", "dest"}, "received_at"}}): events of another
    run, or without those fields, count as strays.
    """

    def __init__(self) -> None:
        self.port = 0
        self.run = ""
        self.arrivals: dict[int, float] = {}
        self.received_at: dict[int, str] = {}
        self.duplicates = 0
        self.misrouted = 0
        self.strays = 0
        self._runner: web.AppRunner | None = None

    def reset(self, run: str) -> None:
        """Record a new run; events of any other run (late warm-up deliveries) count as strays."""
        self.run = run
        self.arrivals = {}
        self.received_at = {}
        self.duplicates = self.misrouted = self.strays = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        try:
            event = json.loads(body)["event"]
            payload = event["payload"]
            run, seq = payload["run"], int(payload["seq"])
        except (ValueError, KeyError, TypeError):
            self.strays += 1
            return web.Response(status=200)
        if run != self.run:
            self.strays += 1
        elif seq in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[seq] = now
            if "received_at" in event:
                self.received_at[seq] = event["received_at"]
            if request.path != "/" + payload["dest"]:
                self.misrouted += 1
        return web.Response(status=200)


# ---------------------------------------------------------------- children


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ACKBOT_* overrides, plus the benchmark's secrets, a quiet log and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACKBOT_")}
    env.update({API_KEY_ENV: API_KEY, SECRET_ENV: "whsec-" + secrets.token_hex(16), "ACKBOT_LOG_LEVEL": "WARNING"})
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def serve_command(config: Path) -> list[str]:
    """`ackbot serve --config FILE`, run by this interpreter from the working tree."""
    return [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)]


def spawn(cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child with its output in log_path; it is registered for killing on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(env), stdout=log, stderr=subprocess.STDOUT)
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ValueError):
        _CHILDREN.remove(proc)


def kill_all_children() -> None:
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _CHILDREN.remove(proc)


async def wait_ready(
    http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes], log: Path, path: str = "/readyz"
) -> None:
    """Poll base+path until it answers 200; fail with the child's output if it exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with http.get(base + path, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.args!r} not ready after {READY_TIMEOUT:.0f}s:\n{tail(log)}")


# ---------------------------------------------------------------- --profile: where the server's CPU goes

# `python -c SAMPLER OUT serve --config ...` runs bot.cli with a statistical profiler: SIGUSR1 starts a SIGPROF timer
# (every 2 ms of the process's CPU time) whose handler, which runs in the main (event loop) thread, records the
# Python stack it interrupted; SIGUSR2 stops it and writes the summary to OUT. Samples that land in select() are CPU
# spent by other threads (aiosqlite's connection threads, the resolver) while the loop waited. SQLAlchemy's sync
# code runs in greenlets: "inclusive" follows each greenlet's parent, so database work counts toward its callers.
SAMPLER = r"""
import collections, gc, os, runpy, signal, sys, time
import greenlet
out, root = sys.argv[1], sys.argv[2] + "/"
sys.argv = ["bot.cli", *sys.argv[3:]]
by_package, by_function, inclusive, total = collections.Counter(), collections.Counter(), collections.Counter(), [0]
# BENCH_PROFILE_STACKS=FILE also writes every sampled stack, folded (flamegraph.pl's input: "a;b;c count").
stacks_out, stacks = os.environ.get("BENCH_PROFILE_STACKS"), collections.Counter()
# Garbage collections during the window, by generation: (count, total seconds, longest), timed by gc.callbacks.
collections_by_gen, gc_started = {}, [0.0]


def on_gc(phase, info):
    if not sampling[0]:
        return
    if phase == "start":
        gc_started[0] = time.perf_counter()
        return
    took = time.perf_counter() - gc_started[0]
    count, total, longest = collections_by_gen.get(info["generation"], (0, 0.0, 0.0))
    collections_by_gen[info["generation"]] = (count + 1, total + took, max(longest, took))


sampling = [False]
gc.callbacks.append(on_gc)


def where(code):
    name = code.co_filename
    if "site-packages/" in name:
        rel = name.split("site-packages/", 1)[1]
        return rel.split("/", 1)[0].removesuffix(".py"), f"{rel}:{code.co_name}"
    if name.startswith(root):
        rel = name[len(root):]
        return rel.split("/", 1)[0], f"{rel}:{code.co_name}"
    rel = name.rsplit("/python3", 1)[-1].split("/", 1)[-1] if "/python3" in name else name
    package = rel.split("/", 1)[0].removesuffix(".py")
    if package == "selectors":
        package = "(select: waiting; other threads' CPU)"
    return "stdlib " + package, f"{rel}:{code.co_name}"


def frames(frame):
    # A greenlet's stack ends at the greenlet: SQLAlchemy's sync code runs in one whose parent is the coroutine
    # that awaits it, so the walk goes on into the parent's suspended stack.
    current = greenlet.getcurrent()
    while frame is not None:
        yield frame
        frame = frame.f_back
        if frame is None and current is not None and current.parent is not None:
            current = current.parent
            frame = current.gr_frame


def sample(signum, frame):
    total[0] += 1
    package, function = where(frame.f_code)
    by_package[package] += 1
    by_function[function] += 1
    seen = set()
    stack = []
    for frame in frames(frame):
        package, function = where(frame.f_code)
        stack.append(function)
        if package in ("core", "bot") and function not in seen and not function.startswith("bot/cli.py"):
            seen.add(function)
            inclusive[function] += 1
    if stacks_out:
        stacks[";".join(reversed(stack))] += 1


def start(*_):
    by_package.clear(), by_function.clear(), inclusive.clear(), stacks.clear(), collections_by_gen.clear()
    sampling[0] = True
    total[0] = 0
    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)


def dump(*_):
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    sampling[0] = False
    n = max(1, total[0])
    lines = [f"{total[0]} samples of the server's CPU (every 2 ms of process CPU time)", "by package (running frame):"]
    lines += [f"  {100 * v / n:5.1f}%  {k}" for k, v in by_package.most_common(12)]
    lines += ["top functions (running frame):"]
    lines += [f"  {100 * v / n:5.1f}%  {k}" for k, v in by_function.most_common(12)]
    lines += ["garbage collections (generation: count, total ms, longest ms):"]
    lines += [
        f"  gen{gen}: {count}, {1000 * total:.1f}, {1000 * longest:.1f}"
        for gen, (count, total, longest) in sorted(collections_by_gen.items())
    ]
    lines += ["ackbot functions on the stack (inclusive):"]
    lines += [f"  {100 * v / n:5.1f}%  {k}" for k, v in inclusive.most_common(30)]
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    if stacks_out:
        with open(stacks_out, "w") as fh:
            fh.writelines(f"{stack} {count}\n" for stack, count in stacks.items())


signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, dump)
runpy.run_module("bot.cli", run_name="__main__", alter_sys=True)
"""


# --calls: `python -c CALLS OUT serve --config ...` counts the function calls the server's event-loop thread makes
# between SIGUSR1 and SIGUSR2 (sys.setprofile: Python functions, and functions written in C such as a socket's
# send or json.dumps), and writes "python C" to OUT. Unlike CPU time, the count does not move with the speed of a
# shared machine (two runs of the same code agree within a fraction of a percent), so it shows what a change did
# to the work per request where CPU time cannot tell a 10% change from the machine's own swings. It is a proxy:
# a call to a C function that hashes a kilobyte counts as one, like a call that returns a constant. The hook
# makes the server a few times slower; compare counts at a rate it still keeps up with.
CALLS = r"""
import runpy, signal, sys
out = sys.argv[1]
sys.argv = ["bot.cli", *sys.argv[3:]]
counts = [0, 0]


def count(frame, event, arg):
    if event == "call":
        counts[0] += 1
    elif event == "c_call":
        counts[1] += 1


def start(*_):
    counts[0] = counts[1] = 0
    sys.setprofile(count)


def dump(*_):
    sys.setprofile(None)
    with open(out, "w") as fh:
        fh.write(f"{counts[0]} {counts[1]}\n")


signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, dump)
runpy.run_module("bot.cli", run_name="__main__", alter_sys=True)
"""


def counted_command(config: Path, out: Path) -> list[str]:
    """`ackbot serve --config FILE` under CALLS: SIGUSR1 starts counting calls, SIGUSR2 writes the counts to out."""
    return [sys.executable, "-c", CALLS, str(out), str(ROOT), "serve", "--config", str(config)]


def calls_report(text: str, requests: int, what: str) -> str:
    """The counts CALLS wrote, per request."""
    try:
        python, c = (int(part) for part in text.split())
    except ValueError:
        return f"(nothing was counted: {text.strip()!r})\n"
    n = max(1, requests)
    return (
        f"{python + c} function calls during {requests} {what}: {(python + c) / n:.0f} a {what.rstrip('s')} "
        f"({python / n:.0f} Python, {c / n:.0f} C)\n"
    )


def profiled_command(config: Path, out: Path) -> list[str]:
    """`ackbot serve --config FILE` under SAMPLER: SIGUSR1 starts sampling, SIGUSR2 writes the summary to out."""
    return [sys.executable, "-c", SAMPLER, str(out), str(ROOT), "serve", "--config", str(config)]


async def read_profile(out: Path, within: float = 5.0) -> str:
    """The summary SAMPLER wrote after SIGUSR2 (it is written from a signal handler: wait for it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if log_size(out):
            await asyncio.sleep(0.1)
            return await asyncio.to_thread(out.read_text)
        await asyncio.sleep(0.05)
    return "(the profiler wrote nothing)\n"


# ---------------------------------------------------------------- PostgreSQL


def pg_dsn(database: str) -> str:
    return PG_BASE.replace("+asyncpg", "") + "/" + database


async def pg_unreachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import asyncpg

        conn = await asyncpg.connect(pg_dsn("postgres"), timeout=3)
        await conn.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def create_pg_database() -> str:
    """A fresh PostgreSQL database; returns its SQLAlchemy URL."""
    import asyncpg

    name = f"ackbot_bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(pg_dsn("postgres"), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{PG_BASE}/{name}"


async def drop_pg_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_dsn("postgres"), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


async def require_pg() -> None:
    """Exit with the reason when --pg was asked for and PostgreSQL does not answer."""
    why = await pg_unreachable()
    if why is not None:
        raise SystemExit(f"--pg: PostgreSQL is not reachable at {PG_BASE} ({why})")


# ---------------------------------------------------------------- the main function


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(main: Callable[[Path], Coroutine[Any, Any, T]], *, prefix: str = "ackbot-bench-") -> T:
    """asyncio.run(main(temporary directory)); every child is killed and the directory removed, whatever happens.

    With ACKBOT_BENCH_WORKDIR=DIR in the environment, the directory is made inside DIR and kept (servers' logs).

    Ctrl-C and SIGTERM both unwind through the finally blocks that stop the children and drop databases (SIGINT
    explicitly: a shell starting this in the background hands it down ignored); they exit 130.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    keep = os.environ.get("ACKBOT_BENCH_WORKDIR")
    try:
        with contextlib.ExitStack() as stack:
            if keep:
                workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=keep))
                print(f"logs, configs and SQLite files are kept in {workdir}", file=sys.stderr)
            else:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
            try:
                return asyncio.run(main(workdir))
            finally:
                kill_all_children()
    except KeyboardInterrupt:
        print("interrupted: the servers are stopped and the temporary files removed", file=sys.stderr)
        raise SystemExit(130) from None
