"""Live index reload: a running chat server picks up each new build between questions.

``supportbot ingest`` writes a build to the index folder (switching its ``current``
link) and publishes it to the chat database (:mod:`bot.shared_state`). Every
``SUPPORTBOT_INDEX__RELOAD_INTERVAL_S`` seconds each server looks at both; a build it
does not hold yet is loaded in a worker thread, verified (checksums, counts and
dimension against its manifest; format, model and chunking against this server:
``ingest.index.check_compatible``) and, if newer than the one served
(``ingest.index.is_newer``), swapped in with :meth:`bot.service.SupportBot.swap_index`.
Questions already being answered finish on the build they started with. A corrupt or
mismatched build is refused once, logged, and the old one kept.

So every replica serves a new build within one interval of its publication (plus the
load, ~0.1 s), with no restart, whether or not it shares the index folder's disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.config import Settings
from ingest.index import (
    IndexUnavailableError,
    KnowledgeIndex,
    MissingIndexError,
    build_files,
    check_compatible,
    check_manifest_checksum,
    current_build,
    index_from_files,
    is_newer,
    model_name_of,
)

if TYPE_CHECKING:
    from bot.service import SupportBot
    from bot.shared_state import SharedState

log = logging.getLogger(__name__)


async def _candidates(
    settings: Settings, shared: SharedState | None, held: str | None, refused: set[str]
) -> list[tuple[str, str, Callable[[], tuple[dict, dict[str, bytes]]]]]:
    """(source, build name, reader of manifest and files) for builds not held yet."""
    found: list[tuple[str, str, Callable[[], tuple[dict, dict[str, bytes]]]]] = []
    try:
        on_disk = current_build(settings.index.dir)
    except MissingIndexError:
        on_disk = None
    if on_disk is not None and on_disk.name not in (held, *refused):
        found.append(("disk", on_disk.name, lambda: build_files(on_disk)))
    if shared is not None:
        seen = (held, on_disk.name if on_disk is not None else None, *refused)
        try:
            latest = await shared.latest_build()
            if latest and latest not in seen:
                try:
                    fetched = await shared.fetch_build(latest)
                except ValueError as exc:  # damaged in the database: not a build at all
                    refused.add(latest)
                    log.error("Refused index build %s from the database: %s", latest, exc)
                    fetched = None
                if fetched is not None:
                    found.append(("database", latest, lambda: fetched))
        except Exception as exc:  # noqa: BLE001 - the database may be gone for a while
            log.warning("Cannot look for published index builds: %s", exc)
    return found


def _load(
    bot: SupportBot, source: str, name: str, read: Callable[[], tuple[dict, dict[str, bytes]]]
) -> KnowledgeIndex:
    manifest, files = read()
    # Checked as published, before the build's name is added to it below.
    check_manifest_checksum(manifest, f"of build {name} ({source})")
    if manifest.get("build") not in (None, name):
        raise IndexUnavailableError(f"build {name} names itself {manifest.get('build')!r}")
    manifest = {**manifest, "build": name}
    config_model = model_name_of(bot.embedder, bot.settings.embedding.model)
    from bot.service import index_config

    check_compatible(manifest, index_config(bot.settings), config_model)
    return index_from_files(files, manifest, f"build {name} ({source})")


async def check_for_new_build(
    bot: SupportBot, shared: SharedState | None, refused: set[str]
) -> str | None:
    """Swap in a newer build if there is one; returns its name, or None.

    Builds that fail verification or are older than the one served are added to
    ``refused`` and not tried again.
    """
    held = bot.index.manifest.get("build")
    for source, name, read in await _candidates(bot.settings, shared, held, refused):
        try:
            index = await asyncio.to_thread(_load, bot, source, name, read)
        except (IndexUnavailableError, OSError, ValueError) as exc:
            refused.add(name)
            log.error("Refused index build %s from the %s: %s Keeping %s.", name, source, exc, held)
            continue
        if not is_newer(index.manifest, bot.index.manifest):
            refused.add(name)
            log.info("Index build %s from the %s is not newer than %s; kept.", name, source, held)
            continue
        await asyncio.to_thread(bot.swap_index, index)
        log.info("Now serving index build %s (from the %s).", name, source)
        return name
    return None


async def watch_index(bot: SupportBot, shared: SharedState | None, settings: Settings) -> None:
    """Check for new builds every ``settings.index.reload_interval_s`` seconds, forever."""
    refused: set[str] = set()
    while True:
        await asyncio.sleep(settings.index.reload_interval_s)
        try:
            await check_for_new_build(bot, shared, refused)
        except Exception:
            log.exception("Checking for a new index build failed; will try again")
