// The dashboard's only script besides htmx: copy buttons, confirmations, and pausing polls.
// Served from the app's own origin (the Content-Security-Policy allows nothing else); no inline
// handlers, no eval.
"use strict";

document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  var text = source.textContent.trim();
  var done = function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 2000);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
  } else {
    selectText(source);
  }
});

function selectText(element) {
  var range = document.createRange();
  range.selectNodeContents(element);
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// <form data-confirm="..."> asks before a destructive POST.
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// Polling fragments (hx-trigger="every 2s, refresh") skip their request while the tab is
// hidden, and refresh at once when it is shown again.
// They also skip while the user is typing in one of their inputs, which a swap would wipe.
document.addEventListener("htmx:beforeRequest", function (event) {
  var element = event.detail.elt;
  if (!element.hasAttribute("data-pause-hidden")) return;
  var active = document.activeElement;
  var typing = active && active.tagName === "INPUT" && element.contains(active);
  if (document.hidden || typing) event.preventDefault();
});
document.addEventListener("visibilitychange", function () {
  if (document.hidden || !window.htmx) return;
  document.querySelectorAll("[data-pause-hidden]").forEach(function (element) {
    window.htmx.trigger(element, "refresh");
  });
});

// A page that answers a POST (a new key, a rotated secret, a refused form) replaces its history
// entry with the page's GET address (<body data-get-url>): reloading it, or coming back to it,
// then shows that page again instead of sending the form a second time.
(function () {
  var url = document.body && document.body.getAttribute("data-get-url");
  if (url && window.history && window.history.replaceState) {
    window.history.replaceState(null, "", url);
  }
})();
