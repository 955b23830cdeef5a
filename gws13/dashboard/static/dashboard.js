// gws13 dashboard: draws snapshots of gws13.metrics() pushed over a WebSocket.
// Plain DOM and SVG; no library, no build step.  Text from the server (room
// names, close codes) only ever goes into textContent.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const WINDOW = 300;  // seconds kept for the time charts
  let shownWindow = 60;  // seconds shown: grows with the history, from one minute to WINDOW
  let history = [];    // [t, open, messages in, messages out]
  let last = null;     // the latest snapshot
  let retry = 500;

  const $ = (id) => document.getElementById(id);

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }

  function size(svg) {
    const box = svg.viewBox.baseVal;
    return [box.width, box.height];
  }

  function fmt(n) {
    if (n === null || n === undefined) return "–";
    if (typeof n !== "number") return String(n);
    if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }

  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // a time chart: several series of [t, value] over the last WINDOW seconds
  function lineChart(svg, series, now) {
    clear(svg);
    const [w, h] = size(svg);
    const left = 44, bottom = 20, top = 8, right = 8;
    let max = 0;
    for (const s of series) for (const p of s.points) max = Math.max(max, p[1]);
    max = niceMax(max);
    const span = shownWindow;
    const x = (t) => left + (w - left - right) * (1 - (now - t) / span);
    const y = (v) => top + (h - top - bottom) * (1 - v / max);
    for (const frac of [0, 0.5, 1]) {
      const v = max * frac;
      svg.appendChild(el("line", {class: frac ? "grid" : "axis", x1: left, x2: w - right, y1: y(v), y2: y(v)}));
      svg.appendChild(el("text", {x: left - 6, y: y(v) + 4, "text-anchor": "end"}, fmt(v)));
    }
    const step = span > 120 ? 60 : span > 60 ? 30 : 15;
    for (let ago = Math.floor(span / step) * step; ago >= 0; ago -= step) {
      svg.appendChild(el("text", {x: x(now - ago), y: h - 4, "text-anchor": ago ? "middle" : "end"},
                         ago ? "-" + (ago % 60 ? ago + "s" : ago / 60 + "m") : "now"));
    }
    let points = 0;
    for (const s of series) {
      const shown = s.points.filter((p) => now - p[0] <= span);
      points += shown.length;
      if (!shown.length) continue;
      const d = shown.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
      svg.appendChild(el("path", {class: "series " + s.name, d: d, "data-series": s.name}));
    }
    svg.setAttribute("data-points", points);
  }

  // a bar chart of [label, value, extra class] pairs
  function barChart(svg, bars, empty) {
    clear(svg);
    const [w, h] = size(svg);
    const left = 36, bottom = 22, top = 14, right = 8;
    svg.setAttribute("data-bars", bars.length);
    if (!bars.length) {
      svg.appendChild(el("text", {x: w / 2, y: h / 2, "text-anchor": "middle"}, empty));
      return;
    }
    const max = niceMax(Math.max(...bars.map((b) => b[1])));
    const slot = (w - left - right) / bars.length;
    const y = (v) => top + (h - top - bottom) * (1 - v / max);
    svg.appendChild(el("line", {class: "axis", x1: left, x2: w - right, y1: y(0), y2: y(0)}));
    svg.appendChild(el("text", {x: left - 6, y: y(max) + 4, "text-anchor": "end"}, fmt(max)));
    bars.forEach((b, i) => {
      const bw = Math.max(2, slot * 0.7);
      const bx = left + i * slot + (slot - bw) / 2;
      const rect = el("rect", {class: "bar " + (b[2] || ""), x: bx.toFixed(1), y: y(b[1]).toFixed(1),
                               width: bw.toFixed(1), height: (y(0) - y(b[1])).toFixed(1)});
      rect.appendChild(el("title", {}, b[0] + ": " + b[1]));
      svg.appendChild(rect);
      svg.appendChild(el("text", {x: bx + bw / 2, y: h - 6, "text-anchor": "middle"}, b[0]));
      if (b[1]) svg.appendChild(el("text", {class: "count", x: bx + bw / 2, y: y(b[1]) - 3,
                                            "text-anchor": "middle"}, fmt(b[1])));
    });
  }

  function rates(index) {
    const out = [];
    for (let i = 1; i < history.length; i++) {
      const dt = history[i][0] - history[i - 1][0];
      if (dt > 0) out.push([history[i][0], Math.max(0, (history[i][index] - history[i - 1][index]) / dt)]);
    }
    return out;
  }

  function rttBars(rtt) {
    const bars = [];
    let previous = 0;
    for (const [bound, cumulative] of rtt.buckets) {
      const label = bound === "+Inf" ? ">" + bars.length : (bound * 1000 >= 1 ? fmt(bound * 1000) : String(bound * 1000));
      bars.push([label, cumulative - previous]);
      previous = cumulative;
    }
    // the ">" bucket is labelled with the last finite bound
    if (bars.length > 1) bars[bars.length - 1][0] = ">" + bars[bars.length - 2][0];
    return bars;
  }

  function render() {
    if (!last) return;
    const s = last;
    const now = s.time;
    const recorded = history.length ? now - history[0][0] : 0;
    shownWindow = Math.max(60, Math.min(WINDOW, Math.ceil(recorded / 60) * 60));
    for (const node of document.querySelectorAll(".window")) node.textContent = String(shownWindow / 60);
    $("open").textContent = fmt(s.server_connections_open);
    $("total").textContent = fmt(s.handshakes_accepted);
    $("messages").textContent = fmt(s.messages_received) + " · " + fmt(s.messages_sent);
    $("bytes").textContent = fmt(s.bytes_received) + " · " + fmt(s.bytes_sent);
    const refused = Object.entries(s.handshakes_refused).map(([k, v]) => k + ": " + v);
    $("refused").textContent = refused.length ? refused.join(", ") : "none";
    const rin = rates(2), rout = rates(3);
    $("rate-in").textContent = rin.length ? fmt(rin[rin.length - 1][1]) : "–";
    $("rate-out").textContent = rout.length ? fmt(rout[rout.length - 1][1]) : "–";
    lineChart($("chart-open"), [{name: "open", points: history.map((p) => [p[0], p[1]])}], now);
    lineChart($("chart-rate"), [{name: "in", points: rin}, {name: "out", points: rout}], now);
    barChart($("chart-rtt"), s.ping_rtt.count ? rttBars(s.ping_rtt) : [], "no pings answered yet");
    const codes = Object.entries(s.closes_by_code).sort((a, b) => Number(a[0]) - Number(b[0]));
    barChart($("chart-closes"), codes.map(([code, n]) => [code, n, code === "1000" || code === "1001" ? "" : "abnormal"]),
             "no connection closed yet");
    const hub = s.hub;
    if (hub) {
      const rooms = Object.entries(hub.rooms).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 30);
      $("room-count").textContent = Object.keys(hub.rooms).length + " rooms, " + hub.connections + " members";
      barChart($("chart-rooms"), rooms.map(([room, n]) => [room, n, "room"]), "no rooms");
      const redis = hub.redis;
      const node = $("redis");
      if (redis) {
        const up = redis.connected && redis.subscribed;
        node.textContent = (up ? "connected" : "DOWN") + " · " + redis.reconnects + " reconnects · " +
          redis.errors + " errors · outbox " + redis.outbox;
        node.className = "value small " + (up ? "ok" : "down");
      } else {
        node.textContent = hub.backend + " hub (no Redis)";
      }
    } else {
      barChart($("chart-rooms"), [], "no hub given to gws13.dashboard.app()");
    }
    document.body.setAttribute("data-updated", String(now));
  }

  function connect() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url.href);
    ws.onopen = () => {
      retry = 500;
      $("status").textContent = "live";
      $("status").className = "status on";
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "hello") {
        history = msg.history.slice();
        $("interval").textContent = msg.interval;
      } else {
        const s = msg.snapshot;
        history.push([s.time, s.server_connections_open, s.messages_received, s.messages_sent]);
        while (history.length > 2 && s.time - history[0][0] > WINDOW + 5) history.shift();
      }
      last = msg.snapshot;
      render();
    };
    ws.onclose = () => {
      $("status").textContent = "disconnected";
      $("status").className = "status off";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  connect();
})();
