/* funboost web: confirmations, live refresh of server-rendered fragments, uPlot charts. No framework. */
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // every state-changing form with data-confirm asks first
  document.addEventListener("submit", function (ev) {
    var f = ev.target, b = ev.submitter;
    var msg = (b && b.getAttribute("data-confirm")) || (f.getAttribute && f.getAttribute("data-confirm"));
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  }, true);

  // live regions: re-fetch this page's fragment (?_partial=1) and swap it in, unless the user is typing in it
  document.querySelectorAll("[data-live]").forEach(function (el) {
    var every = parseInt(el.getAttribute("data-live"), 10);
    if (!every) { return; }
    function tick() {
      var active = document.activeElement;
      if (active && el.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) { return; }
      var url = new URL(window.location.href);
      url.searchParams.set("_partial", "1");
      fetch(url, {credentials: "same-origin"}).then(function (r) {
        if (r.status === 200) { return r.text(); }
        if (r.redirected || r.status === 401) { window.location.reload(); }
        return null;
      }).then(function (html) { if (html !== null && html !== undefined) { el.innerHTML = html; } })
        .catch(function () {});
    }
    setInterval(tick, every);
  });

  // charts
  function fmtSecs(v) { return v == null ? "-" : (v < 1e-3 ? (v * 1e6).toFixed(0) + " µs" : v < 1 ? (v * 1e3).toFixed(1) + " ms" : v.toFixed(2) + " s"); }
  var SERIES = {
    runs: [{label: "runs", stroke: "#2463eb", width: 2, key: "runs"}, {label: "failures", stroke: "#c2261b", width: 2, key: "failures"}],
    time: [{label: "avg", stroke: "#555", key: "avg", value: function (u, v) { return fmtSecs(v); }},
           {label: "p50", stroke: "#1a7f37", key: "p50", value: function (u, v) { return fmtSecs(v); }},
           {label: "p95", stroke: "#a15c00", key: "p95", value: function (u, v) { return fmtSecs(v); }}],
    depth: [{label: "remaining", stroke: "#7a3fd1", width: 2, key: "depth"}]
  };
  document.querySelectorAll("[data-chart-queue]").forEach(function (box) {
    var queue = box.getAttribute("data-chart-queue"), win = "60s", plots = {}, timer = null;
    function draw(data) {
      box.querySelectorAll(".chart").forEach(function (el) {
        var kind = el.getAttribute("data-series"), defs = SERIES[kind];
        var cols = [data.t].concat(defs.map(function (d) { return data[d.key]; }));
        el.setAttribute("data-points", String(data.t.length));
        el.setAttribute("data-nonzero", String(cols.slice(1).reduce(function (n, c) {
          return n + c.filter(function (v) { return v != null && v !== 0; }).length; }, 0)));
        if (plots[kind] && plots[kind]._win === win) { plots[kind].setData(cols); return; }
        if (plots[kind]) { plots[kind].destroy(); }
        var opts = {width: Math.max(300, el.clientWidth - 12), height: 180,
                    series: [{}].concat(defs.map(function (d) { return {label: d.label, stroke: d.stroke, width: d.width || 1.5, value: d.value, spanGaps: kind !== "runs"}; })),
                    axes: [{}, {size: 60, values: kind === "time" ? function (u, vs) { return vs.map(fmtSecs); } : undefined}],
                    scales: {x: {time: true}}};
        plots[kind] = new window.uPlot(opts, cols, el);
        plots[kind]._win = win;
      });
    }
    function load() {
      var url = "/api/series?window=" + encodeURIComponent(win) + (queue ? "&queue=" + encodeURIComponent(queue) : "");
      fetch(url, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) { if (d && window.uPlot) { draw(d); } }).catch(function () {});
    }
    box.querySelectorAll(".tab").forEach(function (b) {
      b.addEventListener("click", function () {
        box.querySelectorAll(".tab").forEach(function (x) { x.classList.remove("on"); });
        b.classList.add("on"); win = b.getAttribute("data-window"); start();
      });
    });
    function start() { if (timer) { clearInterval(timer); } load(); timer = setInterval(load, win === "60s" ? 2000 : 30000); }
    if (window.uPlot) { start(); } else { window.addEventListener("load", start); }
  });
  window.funboostCsrf = csrf;
})();
