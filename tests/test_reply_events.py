"""The socket events of a reply: a quick one skips the loading signal, a slow one shows it.

Every socket event makes the browser re-render the chat before it can draw the next one,
so a reply quicker than ``SUPPORTBOT_CHAT__SHOW_LOADING_AFTER_S`` is sent without
Chainlit's "task start" (evals/browser_bench.py measures the gain). Socket clients still
get "task end" as the end of every reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_load import ChatServer, merchant_server
from tests.test_security import Tab


@pytest.fixture(scope="module")
def index_dir(real_bot: Any, real_index_dir: Path) -> Path:
    return real_index_dir


@pytest.fixture(scope="module")
def default_server(
    tmp_path_factory: pytest.TempPathFactory, index_dir: Path
) -> Iterator[ChatServer]:
    yield from merchant_server(
        tmp_path_factory.mktemp("events-default"), index_dir, show_loading_after_s="0.3"
    )


@pytest.fixture(scope="module")
def eager_server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[ChatServer]:
    # Every reply counts as slow: the loading signal comes before anything else.
    yield from merchant_server(
        tmp_path_factory.mktemp("events-eager"), index_dir, show_loading_after_s="0"
    )


async def _reply_events(url: str, question: str) -> list[tuple[str, Any]]:
    async with Tab(url) as tab:
        reply = await tab.ask(question)
        return reply["events"]


def _names(events: list[tuple[str, Any]]) -> list[str]:
    out = []
    for event, data in events:
        if event == "new_message" and isinstance(data, dict):
            event += ":" + str(data.get("type"))
        out.append(event)
    return out


def test_a_quick_reply_skips_the_loading_signal_and_still_ends(default_server: ChatServer) -> None:
    names = _names(asyncio.run(_reply_events(default_server.url, "what is error 2000637")))
    assert "task_start" not in names
    assert names[0] == "new_message:run"
    assert names[-1] == "task_end"
    # The answer's button arrives just before the answer, so the page draws them together.
    answer = names.index("new_message:assistant_message")
    assert names[answer - 1] == "action"
    log = default_server.log.read_text()
    assert "Reply complete in" in log
    assert "Replied in" in log


def test_a_slow_reply_shows_the_loading_signal(eager_server: ChatServer) -> None:
    names = _names(asyncio.run(_reply_events(eager_server.url, "what is error 2000637")))
    assert names.count("task_start") == 1
    assert names.index("task_start") < names.index("new_message:assistant_message")
    assert names[-1] == "task_end"
