// Small behaviours of the Junipeer chat that Chainlit has no setting for.
// Loaded as custom_js by the full chat, and by junipeer-widget.js inside the widget.
(function () {
  "use strict";

  // 👍 needs no dialog: Chainlit opens its comment dialog on either thumb; for a thumb up
  // we submit it at once (empty comment). The comment stays possible: the pencil next to
  // the thumbs reopens the dialog, and 👎 keeps the dialog.
  function autoSubmitThumbUp(root) {
    root.addEventListener(
      "click",
      function (event) {
        var target = event.target;
        var button = target && target.closest && target.closest(".positive-feedback-off");
        if (!button) return;
        var tries = 0;
        var timer = setInterval(function () {
          var submit = (root.querySelector ? root : document).querySelector("#submit-feedback");
          if (submit) {
            clearInterval(timer);
            submit.click();
          } else if (++tries > 40) {
            clearInterval(timer);
          }
        }, 25);
      },
      true
    );
  }

  // The comment box is limited to what the server stores (its maxlength, set by
  // bot/client_patch.py): a counter under it shows how much is left, so a long comment is
  // shortened by its writer rather than cut without a word.
  function commentCounter(root) {
    function count(textarea, counter) {
      var limit = textarea.maxLength;
      counter.textContent = textarea.value.length + " / " + limit;
      counter.style.color = textarea.value.length >= limit ? "hsl(var(--destructive))" : "";
    }
    new MutationObserver(function () {
      if (!root.querySelector("#submit-feedback")) return;
      var textarea = root.querySelector('[role="dialog"] textarea[maxlength]');
      if (!textarea || textarea.junipeerCounter) return;
      var counter = document.createElement("div");
      counter.className = "junipeer-comment-count";
      textarea.insertAdjacentElement("afterend", counter);
      textarea.junipeerCounter = counter;
      count(textarea, counter);
    }).observe(root, { childList: true, subtree: true });
    root.addEventListener(
      "input",
      function (event) {
        var textarea = event.target;
        if (textarea && textarea.junipeerCounter) count(textarea, textarea.junipeerCounter);
      },
      true
    );
  }

  // "Talk to a human" is answered below the message whose button was clicked, which may
  // be far up: bring the hand-off into view when it arrives.
  function scrollToHandoffs(root) {
    // Only added nodes are looked at: this runs on every change of the chat.
    new MutationObserver(function (records) {
      var found = null;
      for (var r = 0; r < records.length; r++) {
        var added = records[r].addedNodes;
        for (var n = 0; n < added.length; n++) {
          var node = added[n];
          if (node.nodeType !== 1) continue;
          var link = node.matches('a[href^="mailto:"][href*="subject="]')
            ? node
            : node.querySelector('a[href^="mailto:"][href*="subject="]');
          if (link) found = link;
        }
      }
      if (found) found.scrollIntoView({ block: "center" });
    }).observe(root, { childList: true, subtree: true });
  }

  // On a phone the source panel is a sheet over the whole chat: Chainlit opens it after
  // every answer with sources. There it opens only on request (a tap on a source).
  function sourcesOnRequestOnPhones(root) {
    var requested = false;
    root.addEventListener(
      "click",
      function (event) {
        var target = event.target;
        if (target && target.closest && target.closest(".element-link")) requested = true;
      },
      true
    );
    var wasOpen = false;
    function check() {
      if (window.innerWidth >= 768 && !wasOpen) return;
      var panel = root.querySelector("#side-view-content");
      var sheet = panel && panel.closest("[role=dialog]");
      var open = !!sheet && sheet.getAttribute("data-state") === "open";
      // A requested panel stays open until it closes; the next one must be asked for.
      if (wasOpen && !open) requested = false;
      wasOpen = open;
      if (!open || requested || window.innerWidth >= 768) return;
      // Chainlit may reopen it as the answer's elements arrive: close it each time, with
      // the sheet's own close button (its first button, top right).
      var close = sheet.querySelector("button");
      if (close) close.click();
    }
    new MutationObserver(check).observe(root, {
      childList: true,
      subtree: true,
      attributes: true,
      attributeFilter: ["data-state"],
    });
  }

  // In the widget, Chainlit's comment dialog and the source a chip opens are placed in the
  // middle of the merchant's page and dim all of it. Keep them, and their dimming, within
  // the widget's own frame, wherever and however large the widget is (floating, docked or
  // full screen).
  function dialogsInsideWidget(root) {
    function pin(element, left, top, width, height) {
      var style = element.style;
      style.setProperty("position", "fixed", "important");
      style.setProperty("left", left + "px", "important");
      if (top !== null) style.setProperty("top", top + "px", "important");
      style.setProperty("width", width + "px", "important");
      style.setProperty("max-width", width + "px", "important");
      style.setProperty("transform", "none", "important");
      if (height !== null) style.setProperty("height", height + "px", "important");
    }
    function place() {
      // This runs on every change of the chat: measure only when there is something to
      // place (measuring forces the browser to lay the page out).
      // A modal dialog: the comment box or a source opened from its chip (the widget's own
      // frame is a popover, not labelled).
      var modal = root.querySelector('[role="dialog"][aria-labelledby]');
      var toast = root.querySelector("[data-sonner-toast]");
      var chat = (modal || toast) && root.querySelector("#chainlit-copilot-chat");
      if (!chat) return;
      var frame = (chat.closest("[role=dialog]") || chat).getBoundingClientRect();
      var margin = Math.min(16, frame.width / 20);
      // "Feedback updated" and other notices: at the foot of the widget, not the page.
      var toaster = toast && toast.closest("[data-sonner-toaster]");
      if (toaster) {
        var toastWidth = Math.min(356, frame.width - 2 * margin);
        pin(toaster, frame.left + (frame.width - toastWidth) / 2, null, toastWidth, null);
        toaster.style.setProperty("top", "auto", "important");
        toaster.style.setProperty(
          "bottom", window.innerHeight - frame.bottom + 4 * margin + "px", "important"
        );
      }
      var dialog = modal && !modal.contains(chat) ? modal : null;
      if (!dialog) return;
      // A comment box is small; a source takes the widget's width, and scrolls within it.
      var comment = !!dialog.querySelector("#submit-feedback");
      var width = comment ? Math.min(360, frame.width - 2 * margin) : frame.width - 2 * margin;
      // Full screen on a phone, the widget's close button sits over the frame's top right
      // corner: the dialog starts below it (its own close button would be hidden).
      var button = root.querySelector("#chainlit-copilot-button");
      var over = button && button.getBoundingClientRect();
      var room =
        over && over.bottom > frame.top && over.top < frame.top + 80 && over.left < frame.right
          ? over.bottom - frame.top + margin / 2
          : margin;
      var left = frame.left + (frame.width - width) / 2;
      if (comment) {
        var height = dialog.getBoundingClientRect().height;
        pin(dialog, left, frame.top + Math.max(room, (frame.height - height) / 2), width, null);
      } else {
        // A source fills the widget below its header (its text arrives after it opens,
        // so a height measured now would not hold).
        pin(dialog, left, frame.top + room, width, frame.height - room - margin);
        dialog.style.setProperty("overflow-y", "auto", "important");
        dialog.style.setProperty("align-content", "start", "important");
      }
      var overlay = dialog.previousElementSibling;
      if (overlay && overlay.getAttribute("data-state")) {
        pin(overlay, frame.left, frame.top, frame.width, frame.height);
      }
    }
    new MutationObserver(place).observe(root, { childList: true, subtree: true });
    window.addEventListener("resize", place);
  }

  window.junipeerChatBehaviours = function (root) {
    autoSubmitThumbUp(root);
    commentCounter(root);
    scrollToHandoffs(root);
    sourcesOnRequestOnPhones(root);
    if (root !== document) dialogsInsideWidget(root);
  };
  if (!window.junipeerWidget) window.junipeerChatBehaviours(document);
})();
