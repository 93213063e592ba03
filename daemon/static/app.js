// Live updates for the Outpost pages: values, device states and the
// overview's figures follow the gateway through Server-Sent Events.
// The pages are complete without this file; it only keeps them fresh.
(function () {
  "use strict";
  if (!window.EventSource || !document.querySelector("[data-live],[data-live-value],[data-live-status],[data-live-uplink],[data-live-alarms]")) {
    return;
  }
  function index(attr) {
    var m = {};
    document.querySelectorAll("[" + attr + "]").forEach(function (el) {
      var k = el.getAttribute(attr);
      (m[k] = m[k] || []).push(el);
    });
    return m;
  }
  var values = index("data-live-value");
  var status = index("data-live-status");
  var alarms = index("data-live-alarms");
  var uplinks = index("data-live-uplink");
  var tiles = index("data-live");
  function set(list, text, cls) {
    (list || []).forEach(function (el) {
      if (el.textContent !== text) {
        el.textContent = text;
        el.classList.remove("flash");
        void el.offsetWidth;
        el.classList.add("flash");
      }
      if (cls !== undefined) { el.className = cls; }
    });
  }
  var es = new EventSource("/events");
  es.onmessage = function (e) {
    var u;
    try { u = JSON.parse(e.data); } catch (err) { return; }
    u.values.forEach(function (v) {
      set(values[v[0] + "/" + v[1]], v[3] ? v[2] + " " + v[3] : v[2]);
      set(values["q:" + v[0] + "/" + v[1]], v[4], v[4] === "good" ? "ok" : "bad");
    });
    u.alarms.forEach(function (a) {
      set(alarms[a[0]], a[1]);
    });
    u.status.forEach(function (s) {
      set(status[s[0]], s[1], "status " + s[1]);
    });
    set(tiles.ingest, u.ingest);
    set(tiles.online, u.online);
    u.uplinks.forEach(function (l) {
      set(uplinks["state:" + l.name], l.connected ? "connected" : "disconnected", l.connected ? "ok" : "bad");
      set(uplinks["backlog:" + l.name], String(l.backlog));
      set(uplinks["rate:" + l.name], l.rate);
    });
    document.body.setAttribute("data-live-updates", String((+document.body.getAttribute("data-live-updates") || 0) + 1));
  };
})();
