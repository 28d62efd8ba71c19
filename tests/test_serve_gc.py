"""`ackbot serve` takes what lives as long as the process out of the garbage collector's view once it has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestServer

from bot.app import build_runtime, create_app, freeze_after_startup
from tests.conftest import make_config


@pytest.fixture
def unfrozen() -> Iterator[None]:
    # The test process runs many apps: what this one froze goes back to the collector afterwards.
    yield
    gc.unfreeze()


async def test_the_objects_of_a_started_app_are_frozen(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    runtime = build_runtime(make_config(sqlite_url), run_dispatcher=False)
    app = create_app(runtime)
    freeze_after_startup(app)
    started_when_frozen: list[bool] = []
    real_freeze = gc.freeze

    def freeze() -> None:
        started_when_frozen.append(runtime.http is not None and runtime.dispatcher is not None)
        real_freeze()

    monkeypatch.setattr(gc, "freeze", freeze)
    before = gc.get_freeze_count()
    async with TestServer(app):
        assert started_when_frozen == [True]
        assert gc.get_freeze_count() > before + 10_000
