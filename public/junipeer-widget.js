// The Junipeer help widget for a merchant's page: one script tag and one call.
//
//   <script src="https://SERVER/public/junipeer-widget.js"></script>
//   <script>
//     junipeerHelp.mount({
//       server: "https://SERVER",
//       // Optional: what the page shows, used for the widget's first suggestion.
//       context: { error: "Customer name cannot be empty (2000637)", page: "Integration settings" }
//     });
//   </script>
//
// junipeerHelp.setContext({...}) updates the context later (e.g. when a new error shows).
// Everything (the widget, its styles, fonts and logo) comes from SERVER; nothing else.
(function () {
  "use strict";
  var context = {};

  // The chat server asks the page for its context when a conversation starts.
  window.addEventListener("chainlit-call-fn", function (event) {
    var detail = event.detail || {};
    if (detail.name === "page_context" && typeof detail.callback === "function") {
      detail.callback(context);
    }
  });

  function load(src, done) {
    var script = document.createElement("script");
    script.src = src;
    script.onload = done;
    document.head.appendChild(script);
  }

  // A font declared inside the widget's shadow root is not used by Chromium: the widget's
  // Inter is declared on the page, from the chat server (its files are relative to the CSS).
  function addFont(server) {
    var link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = server + "/public/fonts/inter.css";
    document.head.appendChild(link);
  }

  window.junipeerHelp = {
    setContext: function (value) {
      context = Object.assign({}, value || {});
    },
    mount: function (options) {
      var server = String(options.server || "").replace(/\/+$/, "");
      this.setContext(options.context);
      window.junipeerWidget = true;
      // Websocket only: one connection that stays on one replica behind a load balancer
      // (a widget on another site usually cannot keep the sticky-session cookie).
      window.transports = ["websocket"];
      addFont(server);
      load(server + "/copilot/index.js", function () {
        window.mountChainlitWidget({
          chainlitServer: server,
          theme: "light",
          customCssUrl: server + "/public/widget.css",
          button: { imageUrl: server + "/public/favicon.svg" },
        });
        load(server + "/public/junipeer.js", function () {
          var host = document.getElementById("chainlit-copilot");
          if (host && host.shadowRoot) window.junipeerChatBehaviours(host.shadowRoot);
        });
      });
    },
  };
})();
