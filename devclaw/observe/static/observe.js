// devclaw observe: keep the page current without reloading it. The server pushes a "change" event
// (server-sent events) whenever projects.json, the audit log or a queue read changes; the page then
// fetches its own content again (?fragment=1) and swaps it in. Nothing here polls.
(function () {
  "use strict";
  var content = document.getElementById("content");
  var status = document.getElementById("live-status");
  var busy = false, again = false;

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(fragmentUrl(), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) { content.innerHTML = html; tick(); })
      .catch(function (err) { status.textContent = "update failed: " + err.message; })
      .finally(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  function format(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (d) { return d + "d " + h + "h"; }
    if (h) { return h + "h " + two(m) + "m"; }
    if (m) { return m + "m " + two(s) + "s"; }
    return s + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(since)) { el.textContent = format((now - since) / 1000); }
    });
  }

  var source = new EventSource("/api/stream");
  source.addEventListener("hello", function (e) {
    status.textContent = "live";
    status.className = "status live";
    if (String(e.data) !== content.getAttribute("data-version")) { refresh(); }
  });
  source.addEventListener("change", function (e) {
    content.setAttribute("data-version", e.data);
    refresh();
  });
  source.onerror = function () { status.textContent = "reconnecting…"; status.className = "status down"; };
  setInterval(tick, 1000);
})();
