"""Fixes to Chainlit 2.12's chat client, applied to its bundles as the server sends them.

Chainlit's React client re-renders every answer already in the conversation on each socket
event of a new reply, so the time from Send to a complete answer grew with the length of
the conversation (measured with evals/browser_bench.py: about 110 ms for the first questions
of a conversation, 160-200 ms after 30, most of it redrawing the buttons under old
answers). Two causes, both in components that take no setting:

- the buttons under each message (copy, thumbs, actions) read the whole message list
  only to know whether the conversation has started, so every new message re-renders
  all of them; they now read just that flag;
- a message is redrawn whenever the conversation's list of actions or elements changes,
  even when none of them belong to it; it is now redrawn only when its own change (the
  actions and elements whose ``forId`` is the message or one of its steps).

What a message shows is computed from exactly those, so nothing shown changes.

The feedback buttons: Chainlit draws the comment button only once a comment exists, and a
second click on the chosen thumb takes the rating back, so after a 👍 (saved at once, see
public/junipeer.js) no comment could be added; it is now drawn once the answer is rated.
Its comment box gets the length the server stores as its ``maxlength``: a longer comment
was refused by the server (HTTP 413), and the rating with it.

One more for the widget only: it links the fonts of ``public/theme.json`` ("/public/…")
as written, so on a merchant's site they were asked of that site (a 404) instead of the
chat server; they are now resolved against the server, as Chainlit does for starter icons.

The
bundles are minified: the code is found by strings and shapes that survive minification.
When a pattern is not found (another Chainlit version) the bundle is served unchanged and
a warning is logged; tests/test_client_patch.py checks that each applies to the installed one.
"""

from __future__ import annotations

import re

_ID = r"[\w$]+"

# useChatMessages: `X=()=>{let t=USE(MESSAGES),e=USE(FIRST);return{threadId:USE(T),
# messages:t,firstInteraction:e}}` gives the hook's name, useRecoilValue and the atom.
_CHAT_MESSAGES_HOOK = re.compile(
    rf"({_ID})=\(\)=>\{{let t=({_ID})\(({_ID})\),e=\2\(({_ID})\);"
    rf"return\{{threadId:\2\(({_ID})\),messages:t,firstInteraction:e\}}\}}"
)
# The message buttons' container, by its class list.
_BUTTONS_MARK = '"-ml-1.5 flex items-center flex-wrap"'
# The message component, by its class list; its memo() ends where the list of Chainlit's
# run names is declared.
_MESSAGE_MARK = '"ai-message flex gap-4 w-full"'
_RUN_NAMES = re.compile(rf',({_ID})=\["on_chat_start","on_message","on_audio_end"\]')

# memo() comparison for a message: equal when its own props are the same objects and the
# actions and elements for it or its steps are the same (by identity, in order).
_SAME_MESSAGE = (
    "(a,b)=>{if(a.message!==b.message||a.isRunning!==b.isRunning||a.indent!==b.indent"
    "||a.isScorable!==b.isScorable||a.scorableRun!==b.scorableRun)return!1;"
    "if(a.actions===b.actions&&a.elements===b.elements)return!0;"
    "const ids=new Set;(function w(m){ids.add(m.id);(m.steps||[]).forEach(w)})(a.message);"
    "const same=(x,y)=>{if(x===y)return!0;const f=x.filter(i=>ids.has(i.forId)),"
    "g=y.filter(i=>ids.has(i.forId));return f.length===g.length&&f.every((i,k)=>i===g[k])};"
    "return same(a.actions,b.actions)&&same(a.elements,b.elements)}"
)


# The widget's theme loader: `CLIENT.get("/public/theme.json")…s.custom_fonts.forEach(h=>
# {const l=document.createElement("link");l.rel="stylesheet",l.href=h,` (CLIENT: its API
# client, whose buildEndpoint() Chainlit itself uses for "/public" starter icons).
_THEME_LOADER = re.compile(rf'({_ID})\.get\("/public/theme\.json"\)')
_FONT_LINK = re.compile(
    rf'\.custom_fonts\.forEach\(({_ID})=>\{{const ({_ID})=document\.createElement\("link"\);'
    rf'\2\.rel="stylesheet",\2\.href=\1,'
)


# The thumbs under an answer: which one is chosen (its state variable), the comment button
# drawn after them only `COMMENT&&`, and the comment box, by its placeholder's text.
_THUMB_UP_STATE = re.compile(rf'className:({_ID})===1\?"text-green-600 positive-feedback-on"')
_COMMENT_BUTTON = re.compile(rf'"chat\.messages\.feedback\.negative"\}}\)\}}\)\]\}}\),({_ID})&&')
_COMMENT_BOX = re.compile(
    rf'placeholder:{_ID}\("chat\.messages\.feedback\.dialog\.yourFeedback"\),'
)
# Longest comment the server stores (SUPPORTBOT_SECURITY__MAX_COMMENT_CHARS' default).
COMMENT_LIMIT = 2_000


class PatchNotApplicable(ValueError):
    """The bundle does not have the code a fix expects (another Chainlit version)."""


def _buttons_read_only_first_interaction(bundle: str) -> str:
    hook = _CHAT_MESSAGES_HOOK.search(bundle)
    mark = bundle.find(_BUTTONS_MARK)
    if hook is None or mark < 0:
        raise PatchNotApplicable("message buttons or useChatMessages not found")
    name, use_value, first_atom = hook.group(1), hook.group(2), hook.group(4)
    start = bundle.rfind("{firstInteraction:", max(0, mark - 1000), mark)
    call = re.compile(rf"\{{firstInteraction:({_ID})\}}={re.escape(name)}\(\)")
    found = call.match(bundle, start) if start >= 0 else None
    if found is None:
        raise PatchNotApplicable("the message buttons' useChatMessages() call not found")
    return f"{bundle[:start]}{found.group(1)}={use_value}({first_atom}){bundle[found.end() :]}"


def _message_redrawn_for_its_own_changes(bundle: str) -> str:
    mark = bundle.find(_MESSAGE_MARK)
    run_names = _RUN_NAMES.search(bundle, mark) if mark >= 0 else None
    if run_names is None or bundle[run_names.start() - 1] != ")":
        raise PatchNotApplicable("the message component's memo() not found")
    end = run_names.start() - 1  # the ")" closing memo(component)
    if bundle.rfind(".memo(", mark - 3000, mark) < 0:
        raise PatchNotApplicable("the message component is not memoised")
    return f"{bundle[:end]},{_SAME_MESSAGE}{bundle[end:]}"


def _comment_after_any_rating(bundle: str, limit: int) -> str:
    """The comment button once an answer is rated, and a comment box of bounded length.

    Chainlit draws the comment button ("pencil") only once a comment exists, and a second
    click on the chosen thumb takes the rating back: after a 👍, which is saved without a
    dialog (public/junipeer.js), a comment could no longer be added. The box had no limit
    either: a longer comment was refused by the server, and its 👎 with it.
    """
    state = _THUMB_UP_STATE.search(bundle)
    button = _COMMENT_BUTTON.search(bundle, state.end()) if state else None
    box = _COMMENT_BOX.search(bundle, button.end()) if button else None
    if box is None or box.start() - state.end() > 3000:
        raise PatchNotApplicable("the feedback buttons' comment button or box not found")
    rated, comment = state.group(1), button.group(1)
    return (
        f"{bundle[: button.start(1)]}({comment}||{rated}!==void 0)&&"
        f"{bundle[button.end() : box.start()]}maxLength:{int(limit)},{bundle[box.start() :]}"
    )


def patch_bundle(bundle: str, comment_limit: int = COMMENT_LIMIT) -> str:
    """Return the Chainlit client bundle with the fixes.

    Args:
        bundle: The bundle's text.
        comment_limit: The longest feedback comment the server stores.

    Raises:
        PatchNotApplicable: a fix does not find its code.
    """
    redraws = _message_redrawn_for_its_own_changes(_buttons_read_only_first_interaction(bundle))
    return _comment_after_any_rating(redraws, comment_limit)


def _widget_fonts_from_its_server(bundle: str) -> str:
    loader = _THEME_LOADER.search(bundle)
    link = _FONT_LINK.search(bundle, loader.end()) if loader else None
    if link is None or link.start() - loader.end() > 500:
        raise PatchNotApplicable("the widget's theme font loader not found")
    client, url, element = loader.group(1), link.group(1), link.group(2)
    served = f'{element}.href={url}.startsWith("/")?{client}.buildEndpoint({url}):{url},'
    return f"{bundle[: link.end() - len(f'{element}.href={url},')]}{served}{bundle[link.end() :]}"


def patch_widget_bundle(bundle: str, comment_limit: int = COMMENT_LIMIT) -> str:
    """Return the widget's (copilot) bundle with the chat fixes and its fonts from the server.

    Raises:
        PatchNotApplicable: any fix does not find its code.
    """
    return _widget_fonts_from_its_server(patch_bundle(bundle, comment_limit))
