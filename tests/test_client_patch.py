"""The fixes to Chainlit's chat client (bot/client_patch.py).

They apply to the installed bundles, refuse other code, a message is redrawn exactly when
what it shows changes, and the widget takes its fonts from its own server.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import client_patch
from evals.browser_bench import CHROMIUM_ARGS


def _bundles() -> list[Path]:
    from chainlit.server import build_dir, copilot_build_dir

    return [*Path(build_dir, "assets").glob("index-*.js"), Path(copilot_build_dir, "index.js")]


@pytest.mark.parametrize("bundle", _bundles(), ids=lambda p: p.parent.parent.name + "/" + p.name)
def test_both_fixes_apply_to_the_installed_chainlit(bundle: Path) -> None:
    original = bundle.read_text(encoding="utf-8")
    patched = client_patch.patch_bundle(original)
    assert patched.count(client_patch._SAME_MESSAGE) == 1
    # The buttons no longer call useChatMessages(): one call fewer, the rest unchanged.
    hook = client_patch._CHAT_MESSAGES_HOOK.search(original).group(1)
    assert patched.count(f"={hook}()") == original.count(f"={hook}()") - 1
    mark = patched.index(client_patch._BUTTONS_MARK)
    assert f"={hook}()" not in patched[mark - 1000 : mark]


@pytest.mark.parametrize("bundle", _bundles(), ids=lambda p: p.parent.parent.name + "/" + p.name)
def test_a_rated_answer_can_take_a_comment_of_bounded_length(bundle: Path) -> None:
    original = bundle.read_text(encoding="utf-8")
    patched = client_patch.patch_bundle(original, comment_limit=1234)
    rated = client_patch._THUMB_UP_STATE.search(patched).group(1)
    # The comment button shows once the answer is rated, not only once it has a comment.
    button = patched.index('"chat.messages.feedback.negative"')
    assert f"||{rated}!==void 0)&&" in patched[button : button + 80]
    box = patched.index('"chat.messages.feedback.dialog.yourFeedback"')
    assert "maxLength:1234,placeholder:" in patched[box - 60 : box]
    assert patched.count("maxLength:1234,") == 1


def test_the_widget_asks_its_own_server_for_the_theme_fonts() -> None:
    from chainlit.server import copilot_build_dir

    original = Path(copilot_build_dir, "index.js").read_text(encoding="utf-8")
    patched = client_patch.patch_widget_bundle(original)
    # The chat fixes, and a "/public/…" font is resolved against the widget's server.
    assert patched.count(client_patch._SAME_MESSAGE) == 1
    loader = client_patch._THEME_LOADER.search(patched)
    start = patched.index(".custom_fonts.forEach(", loader.end())
    assert f'.startsWith("/")?{loader.group(1)}.buildEndpoint(' in patched[start : start + 200]
    assert len(patched) - len(client_patch.patch_bundle(original)) < 60  # nothing else
    with pytest.raises(client_patch.PatchNotApplicable):
        client_patch.patch_widget_bundle(original.replace(".custom_fonts.forEach(", ".f("))


def test_other_code_is_refused_not_half_patched() -> None:
    with pytest.raises(client_patch.PatchNotApplicable):
        client_patch.patch_bundle("const x=1;")
    only_buttons = next(iter(_bundles())).read_text(encoding="utf-8")
    only_buttons = only_buttons.replace(client_patch._MESSAGE_MARK, '"ai-message"')
    with pytest.raises(client_patch.PatchNotApplicable):
        client_patch.patch_bundle(only_buttons)


@pytest.fixture(scope="module")
def js() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed: run `apt-get install -y chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


# Props are built in the page: memo() compares by identity, which must survive.
_CASES = """(same) => {
  const answer = { id: "answer", steps: [] };
  const question = { id: "question", steps: [{ id: "run", steps: [answer] }] };
  const mine = { id: "a1", forId: "answer" };
  const other = { id: "a2", forId: "elsewhere" };
  const source = { id: "e1", forId: "answer" };
  const props = (message, actions, elements) =>
    ({ message, actions, elements, indent: 0, isRunning: false, isScorable: false });
  const changed = { ...question, steps: [...question.steps, { id: "late", steps: [] }] };
  return {
    unrelated: same(props(question, [mine], [source]),
                    props(question, [mine, other], [source, other])),
    ownAction: same(props(question, [], []), props(question, [mine], [])),
    ownElementRemoved: same(props(question, [mine], [source]), props(question, [mine], [])),
    messageChanged: same(props(question, [mine], [source]), props(changed, [mine], [source])),
  };
}"""


def test_a_message_is_redrawn_only_for_its_own_actions_and_elements(js: Any) -> None:
    same = js.evaluate_handle(f"() => {client_patch._SAME_MESSAGE}")
    result = js.evaluate(_CASES, same)
    # Another answer's button or source: nothing this message shows changes.
    assert result["unrelated"] is True
    # Its answer's button arrives (the answer is a step of the run under the question).
    assert result["ownAction"] is False
    # Its source is removed from the panel (a newer answer came): its link must go.
    assert result["ownElementRemoved"] is False
    # The message itself changed (a new step): always redrawn.
    assert result["messageChanged"] is False
