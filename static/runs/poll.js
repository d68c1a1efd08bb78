// Back off polling while the server errors: every failed poll doubles the wait before the
// next one (up to a minute); the first success returns to the normal rhythm. htmx keeps its own
// timer; this cancels the ticks that fall inside the back-off window.
(function () {
  "use strict";
  var MAX_BACKOFF_MS = 60000;
  var state = new WeakMap();

  function info(el) {
    var s = state.get(el);
    if (!s) {
      s = { failures: 0, until: 0 };
      state.set(el, s);
    }
    return s;
  }

  function polled(evt) {
    var el = evt.detail && evt.detail.elt;
    return el && el.hasAttribute && el.hasAttribute("data-poll") ? el : null;
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var el = polled(evt);
    if (el && Date.now() < info(el).until) {
      evt.preventDefault();
    }
  });

  function failed(evt) {
    var el = polled(evt);
    if (!el) return;
    var s = info(el);
    s.failures += 1;
    var period = parseFloat((el.getAttribute("hx-trigger") || "").replace(/[^0-9.]/g, "")) || 4;
    s.until = Date.now() + Math.min(period * 1000 * Math.pow(2, s.failures), MAX_BACKOFF_MS);
    el.setAttribute("data-poll-backoff", String(s.failures));
  }
  document.addEventListener("htmx:responseError", failed);
  document.addEventListener("htmx:sendError", failed);

  document.addEventListener("htmx:afterRequest", function (evt) {
    var el = polled(evt);
    if (el && evt.detail.successful) {
      var s = info(el);
      s.failures = 0;
      s.until = 0;
      el.removeAttribute("data-poll-backoff");
    }
  });
})();
