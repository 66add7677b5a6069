// txgateway's status page: reads the admin API of the listener that served
// it (GET pools, sessions, sessions/socketio, nodes, metrics) with the token
// the operator typed,
// computes rates from successive scrapes of /metrics, and draws them.
//
// Rules kept here (docs/operations.md, "Status page"):
//   - the token lives in this tab's sessionStorage, is sent only in the
//     Authorization header of same-origin fetches, and never in a URL;
//   - every value read from the gateway is written with textContent or as
//     an attribute of an element made here, never parsed as HTML;
//   - every history is bounded (HISTORY points), one refresh at a time.
(function () {
  "use strict";

  var TOKEN_KEY = "txgateway.admin.token";
  var HISTORY = 90;          // points kept per chart series
  var TIMEOUT = 8000;        // ms a request may take
  var ACTIONS_KEPT = 20;     // lines of the actions log
  var SOCKETIO_LISTED = 50;  // Socket.IO sessions listed (the oldest)
  var SVG = "http://www.w3.org/2000/svg";

  var state = {
    token: null,
    interval: 2000,
    paused: false,
    timer: null,
    busy: false,
    previous: null,          // {t, metrics} of the last scrape
    history: { messages: [], handshake: [], sessions: [], transports: [] },
    rows: new Map(),         // "pool\u0000backend" -> row parts
    pools: new Map(),        // pool -> its table body
    updates: 0,
    blockedUntil: 0
  };

  function $(id) { return document.getElementById(id); }

  function setText(id, text) {
    var el = typeof id === "string" ? $(id) : id;
    if (el && el.textContent !== text) el.textContent = text;
  }

  function make(tag, cls, text) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // ------------------------------------------------------------------
  // Numbers.

  function fmt(n, digits) {
    if (n === null || n === undefined || !isFinite(n)) return "-";
    var a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
    if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
    return n.toFixed(digits === undefined ? 1 : digits);
  }

  function fmtBytes(n) {
    if (n === null || !isFinite(n)) return "-";
    var units = ["B", "KiB", "MiB", "GiB"];
    var i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  function fmtMs(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    var ms = seconds * 1000;
    return (ms >= 100 ? String(Math.round(ms)) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)) + " ms";
  }

  // ------------------------------------------------------------------
  // The Prometheus text format: "name{label="value",...} value [timestamp]".

  function parseValue(text) {
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return Number(text);
  }

  function parseMetrics(text) {
    var samples = new Map();   // name -> [{labels, value}]
    var lines = text.split("\n");
    for (var n = 0; n < lines.length; n++) {
      var line = lines[n];
      if (!line || line.charCodeAt(0) === 35) continue;   // "#"
      var i = 0;
      while (i < line.length && line[i] !== "{" && line[i] !== " ") i++;
      var name = line.slice(0, i);
      var labels = {};
      if (line[i] === "{") {
        i++;
        while (i < line.length && line[i] !== "}") {
          var eq = line.indexOf("=", i);
          if (eq < 0) break;
          var key = line.slice(i, eq).trim();
          i = eq + 2;  // past ="
          var value = "";
          while (i < line.length && line[i] !== '"') {
            if (line[i] === "\\" && i + 1 < line.length) {
              var c = line[i + 1];
              value += c === "n" ? "\n" : c;
              i += 2;
            } else {
              value += line[i++];
            }
          }
          labels[key] = value;
          i++;  // past the closing quote
          if (line[i] === ",") i++;
        }
        i++;  // past "}"
      }
      var rest = line.slice(i).trim().split(/\s+/);
      if (!name || !rest[0]) continue;
      var list = samples.get(name);
      if (!list) samples.set(name, list = []);
      list.push({ labels: labels, value: parseValue(rest[0]) });
    }
    return samples;
  }

  function sum(metrics, name, filter) {
    var list = metrics.get(name);
    if (!list) return null;
    var total = 0;
    for (var i = 0; i < list.length; i++) {
      if (!filter || filter(list[i].labels)) total += list[i].value;
    }
    return total;
  }

  // The increase of a counter between two scrapes (a restart resets it).
  // A family missing from a scrape has counted nothing yet (labelled
  // counters appear at their first count).
  function increase(now, before, name, filter) {
    if (!before) return null;
    var a = sum(now, name, filter) || 0, b = sum(before, name, filter) || 0;
    return a >= b ? a - b : a;
  }

  // Quantile q of the observations made between two scrapes of a
  // histogram, as Prometheus' histogram_quantile computes it.
  function quantile(q, now, before, name) {
    var bounds = new Map();
    function add(metrics, sign) {
      var list = metrics.get(name + "_bucket") || [];
      for (var i = 0; i < list.length; i++) {
        var le = parseValue(list[i].labels.le);
        bounds.set(le, (bounds.get(le) || 0) + sign * list[i].value);
      }
    }
    add(now, 1);
    add(before, -1);
    var les = Array.from(bounds.keys()).sort(function (x, y) { return x - y; });
    if (!les.length) return null;
    var total = bounds.get(les[les.length - 1]);
    if (!(total > 0)) return null;
    var rank = q * total, lower = 0, below = 0;
    for (var i = 0; i < les.length; i++) {
      var count = bounds.get(les[i]);
      if (count >= rank) {
        if (les[i] === Infinity) return lower;
        var share = count > below ? (rank - below) / (count - below) : 1;
        return lower + (les[i] - lower) * share;
      }
      lower = les[i];
      below = count;
    }
    return lower;
  }

  // ------------------------------------------------------------------
  // Charts: hand-drawn SVG polylines, one per series, gaps where no value.

  var W = 320, H = 120, LEFT = 34, BOTTOM = 14, TOP = 6;

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function svgEl(tag, attrs) {
    var el = document.createElementNS(SVG, tag);
    for (var k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }

  function drawChart(figureId, series, points, format) {
    var figure = $(figureId);
    var svg = figure.querySelector("svg");
    var legend = figure.querySelector(".legend");
    if (!svg) {
      svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
      figure.appendChild(svg);
      legend = make("div", "legend");
      figure.appendChild(legend);
    }
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = 0;
    points.forEach(function (p) {
      series.forEach(function (s) { var v = p[s.key]; if (v !== null && isFinite(v) && v > max) max = v; });
    });
    max = niceMax(max);
    var plotW = W - LEFT - 2, plotH = H - TOP - BOTTOM;
    [0, 0.5, 1].forEach(function (f) {
      var y = TOP + plotH * (1 - f);
      svg.appendChild(svgEl("line", { x1: LEFT, x2: W - 2, y1: y, y2: y, "class": "grid" }));
      var label = svgEl("text", { x: LEFT - 4, y: y + 3, "text-anchor": "end", "class": "axis" });
      label.textContent = format(max * f);
      svg.appendChild(label);
    });
    var span = (HISTORY - 1) * state.interval / 1000;
    var note = svgEl("text", { x: LEFT, y: H - 2, "class": "axis" });
    note.textContent = "-" + Math.round(span) + " s";
    svg.appendChild(note);
    var now = svgEl("text", { x: W - 2, y: H - 2, "text-anchor": "end", "class": "axis" });
    now.textContent = "now";
    svg.appendChild(now);
    var offset = HISTORY - points.length;
    series.forEach(function (s, k) {
      var run = [];
      function flush() {
        if (run.length > 1) {
          svg.appendChild(svgEl("polyline", { points: run.join(" "), "class": "line k" + k }));
        } else if (run.length === 1) {
          var xy = run[0].split(",");
          svg.appendChild(svgEl("circle", { cx: xy[0], cy: xy[1], r: 1.5, "class": "line k" + k }));
        }
        run = [];
      }
      points.forEach(function (p, i) {
        var v = p[s.key];
        if (v === null || v === undefined || !isFinite(v)) { flush(); return; }
        var x = LEFT + plotW * (offset + i) / (HISTORY - 1);
        var y = TOP + plotH * (1 - Math.min(v, max) / max);
        run.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      flush();
    });
    while (legend.firstChild) legend.removeChild(legend.firstChild);
    var last = points[points.length - 1] || {};
    series.forEach(function (s, k) {
      legend.appendChild(make("span", "k" + k, s.label + " " + format(last[s.key])));
    });
  }

  function remember(list, point) {
    list.push(point);
    while (list.length > HISTORY) list.shift();
  }

  // ------------------------------------------------------------------
  // The admin API.

  function ApiError(status, message, retryAfter) {
    this.status = status;
    this.message = message;
    this.retryAfter = retryAfter;
  }

  function api(path, options) {
    options = options || {};
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, TIMEOUT);
    var headers = { "Authorization": "Bearer " + state.token };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, {
      method: options.method || "GET",
      headers: headers,
      body: options.body,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      referrerPolicy: "no-referrer",
      signal: controller.signal
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      var read = type.indexOf("application/json") === 0 ? response.json() : response.text();
      return read.then(function (body) {
        if (!response.ok) {
          var message = body && typeof body === "object" && typeof body.message === "string"
            ? body.message : response.status + " " + response.statusText;
          throw new ApiError(response.status, message,
                             Number(response.headers.get("retry-after")) || 0);
        }
        return body;
      }, function () {
        throw new ApiError(response.status, "unreadable answer (" + response.status + ")");
      });
    }, function (error) {
      throw new ApiError(0, error && error.name === "AbortError"
        ? "no answer within " + TIMEOUT / 1000 + " s" : "cannot reach the admin API");
    }).finally(function () { clearTimeout(timer); });
  }

  function encodePath(pool, backend) {
    return "pools/" + encodeURIComponent(pool) + "/backends/" + encodeURIComponent(backend);
  }

  // ------------------------------------------------------------------
  // Signing in and out.

  function showLogin(message) {
    document.body.dataset.state = "signed-out";
    $("dashboard").hidden = true;
    $("login").hidden = false;
    setText("login-message", message || "");
    setText("state", "not signed in");
    $("token").focus();
  }

  function signOut(message) {
    state.token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage off */ }
    stop();
    showLogin(message);
  }

  function signIn(token) {
    state.token = token;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage off */ }
    $("token").value = "";
    $("login").hidden = true;
    $("dashboard").hidden = false;
    document.body.dataset.state = "loading";
    setText("state", "loading");
    schedule(0);
  }

  function stop() {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
  }

  function schedule(delay) {
    stop();
    if (state.token === null || state.paused) return;
    state.timer = setTimeout(refresh, delay);
  }

  // ------------------------------------------------------------------
  // One refresh: every endpoint, then the page.

  function refresh() {
    state.timer = null;
    if (state.busy || state.token === null) return;
    state.busy = true;
    var started = performance.now();
    // The pools first, alone: a wrong token then costs one failed
    // authentication (the listener blocks an address after 10 a minute),
    // not one per endpoint.
    api("pools").then(function (pools) {
      return Promise.all([
        pools,
        api("sessions"),
        api("nodes").catch(function (error) {
          if (error.status === 404) return null;   // a gateway without GET /nodes
          throw error;
        }),
        api("metrics"),
        api("sessions/socketio?limit=" + SOCKETIO_LISTED).catch(function (error) {
          if (error.status === 404) return null;   // a gateway without Socket.IO listing
          throw error;
        })
      ]);
    }).then(function (answers) {
      var scrape = { t: started, metrics: parseMetrics(answers[3]) };
      render(answers[0], answers[1], answers[2], scrape, answers[4]);
      state.previous = scrape;
      state.updates++;
      document.body.dataset.updates = String(state.updates);
      document.body.dataset.state = "live";
      setText("state", (state.paused ? "paused" : "live") + " · updated " +
              new Date().toLocaleTimeString());
    }, failed).finally(function () {
      state.busy = false;
      var wait = Math.max(0, state.blockedUntil - Date.now());
      schedule(Math.max(wait, state.interval - (performance.now() - started)));
    });
  }

  function failed(error) {
    if (!(error instanceof ApiError)) {
      error = new ApiError(0, String(error && error.message || error));
    }
    if (error.status === 401) {
      signOut("The gateway refused this token.");
      return;
    }
    document.body.dataset.state = "error";
    if (error.status === 429) {
      state.blockedUntil = Date.now() + 1000 * (error.retryAfter || 60);
      setText("state", "this address is blocked for " + (error.retryAfter || 60) +
              " s after failed tokens");
      return;
    }
    setText("state", "error: " + error.message);
  }

  function render(pools, sessions, nodes, scrape, socketio) {
    var m = scrape.metrics, before = state.previous ? state.previous.metrics : null;
    var dt = state.previous ? (scrape.t - state.previous.t) / 1000 : null;
    function rate(name, filter) {
      var d = increase(m, before, name, filter);
      return d === null || !(dt > 0) ? null : d / dt;
    }
    function is(key, value) { return function (labels) { return labels[key] === value; }; }

    // Figures.
    var open = sum(m, "txgateway_client_connections_open");
    var tunnels = sum(m, "txgateway_connections_open", is("mode", "transparent"));
    var overWs = sum(m, "txgateway_connections_open", function (l) {
      return l.mode === "session" && l.transport === "websocket";
    });
    var overPoll = sum(m, "txgateway_connections_open", function (l) {
      return l.mode === "session" && l.transport === "longpoll";
    });
    var engines = sessions.socketio || { sessions: 0, polling: 0, websocket: 0, upgrading: 0, pools: {} };
    setText("fig-connections", fmt(open));
    setText("fig-connections-detail", fmt(tunnels) + " tunnels · " + fmt(overWs) + " ws · " +
            fmt(overPoll) + " polling · " + fmt(engines.sessions) + " socket.io");
    setText("fig-sessions", fmt(sessions.sessions));
    setText("fig-sessions-detail", fmt(sessions.attached) + " attached · " +
            fmt(sessions.detached) + " detached");
    setText("fig-socketio", fmt(engines.sessions));
    setText("fig-socketio-detail", fmt(engines.polling) + " polling · " + fmt(engines.websocket) + " ws");
    var up = rate("txgateway_messages_total", is("direction", "up"));
    var down = rate("txgateway_messages_total", is("direction", "down"));
    var upBytes = rate("txgateway_message_bytes_total", is("direction", "up"));
    var downBytes = rate("txgateway_message_bytes_total", is("direction", "down"));
    setText("fig-up", fmt(up));
    setText("fig-up-detail", upBytes === null ? "" : fmtBytes(upBytes) + "/s");
    setText("fig-down", fmt(down));
    setText("fig-down-detail", downBytes === null ? "" : fmtBytes(downBytes) + "/s");
    var hs = "txgateway_handshake_duration_seconds";
    var p50 = before ? quantile(0.5, m, before, hs) : null;
    var p95 = before ? quantile(0.95, m, before, hs) : null;
    var handshakes = rate(hs + "_count");
    setText("fig-handshake", fmtMs(p50));
    setText("fig-handshake-detail", handshakes === null ? "" : handshakes > 0
            ? "p95 " + fmtMs(p95) + " · " + fmt(handshakes) + "/s" : "none in the interval");
    var refusals = rate("txgateway_refusals_total");
    setText("fig-refusals", fmt(refusals));
    setText("fig-refusals-detail", "total " + fmt(sum(m, "txgateway_refusals_total") || 0));
    var lag = sum(m, "txgateway_event_loop_lag_last_seconds");
    setText("fig-lag", fmtMs(lag));
    var cpu = rate("txgateway_process_cpu_seconds_total");
    var rss = sum(m, "txgateway_process_resident_memory_bytes");
    setText("fig-process", cpu === null ? "-" : fmt(cpu * 100) + "% CPU");
    setText("fig-process-detail", rss === null ? "" : fmtBytes(rss) + " resident");

    // Charts.
    var h = state.history;
    remember(h.messages, { up: up, down: down });
    remember(h.handshake, { p50: p50 === null ? null : p50 * 1000, p95: p95 === null ? null : p95 * 1000 });
    remember(h.sessions, { attached: sessions.attached, detached: sessions.detached });
    remember(h.transports, { tunnels: tunnels, ws: overWs, poll: overPoll, sio: engines.sessions });
    drawChart("chart-messages", [{ key: "up", label: "up" }, { key: "down", label: "down" }],
              h.messages, function (v) { return fmt(v); });
    drawChart("chart-handshake", [{ key: "p50", label: "p50" }, { key: "p95", label: "p95" }],
              h.handshake, function (v) { return fmt(v, 2); });
    drawChart("chart-sessions", [{ key: "attached", label: "attached" },
                                 { key: "detached", label: "detached" }],
              h.sessions, function (v) { return fmt(v); });
    drawChart("chart-transports", [{ key: "tunnels", label: "tunnels" },
                                   { key: "ws", label: "session ws" },
                                   { key: "poll", label: "session polling" },
                                   { key: "sio", label: "socket.io" }],
              h.transports, function (v) { return fmt(v); });

    renderPools(pools, sessions);
    renderSessions(sessions, overWs, overPoll, tunnels);
    renderEngines(engines, socketio);
    renderNodes(nodes);
  }

  // ------------------------------------------------------------------
  // Pools: one table per pool, one row per backend, kept across refreshes
  // (so that a weight being typed is not overwritten).

  var COLUMNS = ["backend", "state", "rotation", "weight", "load", "other nodes", "sessions", ""];

  function poolTable(name) {
    var body = state.pools.get(name);
    if (body) return body;
    var section = make("div", "pool");
    section.dataset.pool = name;
    section.appendChild(make("h3", "", "pool " + name));
    var table = make("table", "grid");
    var head = make("thead"), row = make("tr");
    COLUMNS.forEach(function (c) { row.appendChild(make("th", "", c)); });
    head.appendChild(row);
    table.appendChild(head);
    body = make("tbody");
    table.appendChild(body);
    section.appendChild(table);
    $("pools").appendChild(section);
    state.pools.set(name, body);
    return body;
  }

  function backendRow(pool, backend) {
    var key = pool + "\u0000" + backend.name;
    var row = state.rows.get(key);
    if (row) return row;
    var tr = make("tr");
    tr.dataset.pool = pool;
    tr.dataset.backend = backend.name;
    var cells = {};
    ["name", "state", "rotation", "weight", "load", "others", "sessions", "actions"].forEach(function (c) {
      cells[c] = make("td");
      tr.appendChild(cells[c]);
    });
    cells.weight.className = cells.others.className = cells.sessions.className = "num";
    cells.name.appendChild(make("div", "", backend.name));
    cells.name.appendChild(make("div", "muted", backend.url));
    var badge = make("span", "badge");
    cells.state.appendChild(badge);
    var rotation = make("span", "badge");
    cells.rotation.appendChild(rotation);
    var bar = make("span", "bar"), fill = make("span");
    bar.appendChild(fill);
    var loadText = make("span");
    cells.load.appendChild(bar);
    cells.load.appendChild(loadText);
    var actions = make("div", "actions");
    cells.actions.appendChild(actions);
    var toggle = make("button");
    toggle.type = "button";
    var weight = make("input");
    weight.type = "number";
    weight.min = "1";
    weight.max = "10000";
    weight.step = "1";
    weight.setAttribute("aria-label", "weight of " + backend.name);
    var setWeight = make("button", "", "Set weight");
    setWeight.type = "button";
    setWeight.dataset.action = "weight";
    actions.appendChild(toggle);
    actions.appendChild(weight);
    actions.appendChild(setWeight);
    row = { tr: tr, cells: cells, badge: badge, rotation: rotation, bar: bar, fill: fill,
            loadText: loadText, toggle: toggle, weight: weight, seen: 0 };
    toggle.addEventListener("click", function () {
      act(pool, backend.name, toggle.dataset.action);
    });
    setWeight.addEventListener("click", function () {
      act(pool, backend.name, "weight", weight.value);
    });
    weight.addEventListener("keydown", function (event) {
      if (event.key === "Enter") act(pool, backend.name, "weight", weight.value);
    });
    poolTable(pool).appendChild(tr);
    state.rows.set(key, row);
    return row;
  }

  function renderPools(answer, sessions) {
    var generation = state.updates + 1;
    var byPool = sessions.pools || {};
    var enginesByPool = (sessions.socketio || {}).pools || {};
    (answer.pools || []).forEach(function (pool) {
      var counts = (byPool[pool.name] || {}).backends || {};
      var engineCounts = (enginesByPool[pool.name] || {}).backends || {};
      var most = 1;
      pool.backends.forEach(function (b) { most = Math.max(most, b.connections); });
      pool.backends.forEach(function (b) {
        var row = backendRow(pool.name, b);
        row.seen = generation;
        var c = row.cells;
        row.badge.className = "badge " + (b.state === "healthy" ? "healthy" : "down");
        setText(row.badge, b.state);
        var rotation = b.removed ? "removed" : b.draining ? "draining" : "active";
        row.rotation.className = "badge " + rotation;
        setText(row.rotation, rotation);
        row.tr.dataset.state = b.state;
        row.tr.dataset.draining = String(b.draining);
        setText(c.weight, String(b.weight));
        var total = b.connections + (b.other_nodes || 0);
        // Against its limit, which counts every node's connections; else
        // against the busiest backend of the pool on this node.
        var share = b.limit ? total / b.limit : b.connections / most;
        row.fill.style.width = Math.round(Math.min(1, share) * 100) + "%";
        row.bar.className = "bar" + (b.limit && total >= b.limit ? " full" : "");
        setText(row.loadText, (b.limit ? total + " / " + b.limit : String(b.connections)) +
                (b.available ? "" : " (not available)"));
        setText(c.others, String(b.other_nodes || 0));
        var s = counts[b.name], e = engineCounts[b.name];
        setText(c.sessions, (s ? s.attached + " + " + s.detached + " detached" : "0") +
                (e && e.sessions ? " · " + e.sessions + " socket.io" : ""));
        row.toggle.dataset.action = b.draining ? "enable" : "drain";
        setText(row.toggle, b.draining ? "Enable" : "Drain");
        row.toggle.disabled = b.removed;
        if (document.activeElement !== row.weight && !row.weight.value) {
          row.weight.placeholder = String(b.weight);
        }
      });
    });
    state.rows.forEach(function (row, key) {
      if (row.seen !== generation) {
        row.tr.remove();
        state.rows.delete(key);
      }
    });
    state.pools.forEach(function (body, name) {
      if (!body.firstChild) {
        body.closest(".pool").remove();
        state.pools.delete(name);
      }
    });
  }

  function renderSessions(s, overWs, overPoll, tunnels) {
    setText("sessions-attached", fmt(s.attached));
    setText("sessions-detached", fmt(s.detached));
    setText("sessions-switching", fmt(s.switching));
    setText("sessions-paused", fmt(s.paused));
    setText("sessions-failovers", fmt(s.failovers));
    setText("sessions-moves", fmt(s.moves));
    setText("sessions-websocket", fmt(overWs));
    setText("sessions-longpoll", fmt(overPoll));
    setText("sessions-tunnels", fmt(tunnels));
    var mover = s.mover || {};
    setText("sessions-drained", fmt(mover.drained));
    setText("sessions-rebalanced", fmt(mover.rebalanced));
    setText("sessions-moving", fmt(mover.moving));
  }

  function renderEngines(counts, listing) {
    setText("socketio-polling", fmt(counts.polling));
    setText("socketio-websocket", fmt(counts.websocket));
    setText("socketio-upgrading", fmt(counts.upgrading));
    var body = $("socketio").tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    if (!listing) {
      setText("socketio-summary", "This gateway does not list its Socket.IO sessions.");
      return;
    }
    setText("socketio-summary", listing.count
      ? (listing.listed < listing.count ? "The oldest " + listing.listed + " of " : "") +
        listing.count + " Socket.IO session(s) on this gateway."
      : "No Socket.IO session on this gateway.");
    (listing.sessions || []).forEach(function (e) {
      var tr = make("tr");
      tr.dataset.transport = e.transport;
      tr.dataset.backend = e.backend || "";
      var sid = make("td");
      sid.appendChild(make("code", "", e.sid));
      tr.appendChild(sid);
      tr.appendChild(make("td", "", e.transport + (e.upgrading ? " (upgrading)" : "")));
      tr.appendChild(make("td", "", e.address || "-"));
      tr.appendChild(make("td", "", (e.pool || "-") + " / " + (e.backend || "-")));
      tr.appendChild(make("td", "num", fmt(e.age) + " s"));
      tr.appendChild(make("td", "num", fmtBytes(e.waiting)));
      tr.appendChild(make("td", "", e.node || "-"));
      body.appendChild(tr);
    });
  }

  function renderNodes(answer) {
    var body = $("nodes").tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    if (!answer) {
      setText("nodes-summary", "This gateway does not list its nodes.");
      return;
    }
    setText("node-id", answer.node || "-");
    var count = (answer.nodes || []).length;
    setText("nodes-summary", answer.shared
      ? count + " live node(s) share sessions through Redis" +
        (answer.age === null || answer.age === undefined ? "" : " (read " + fmt(answer.age) + " s ago)")
      : "One node: sessions are not shared (no Redis session map).");
    (answer.nodes || []).forEach(function (n) {
      var tr = make("tr");
      tr.dataset.node = n.node;
      var name = make("td");
      name.appendChild(make("code", "", n.node));
      if (n.self) name.appendChild(make("span", "muted", " (this node)"));
      tr.appendChild(name);
      tr.appendChild(make("td", "num", fmt(n.sessions)));
      tr.appendChild(make("td", "num", fmt(n.relayed)));
      body.appendChild(tr);
    });
  }

  // ------------------------------------------------------------------
  // Actions: drain, enable, weight.

  function logAction(text, ok) {
    var list = $("actions");
    var item = make("li", ok ? "" : "failed", new Date().toLocaleTimeString() + "  " + text);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > ACTIONS_KEPT) list.removeChild(list.lastChild);
  }

  function act(pool, backend, action, value) {
    var what = action + " " + pool + "/" + backend;
    var options = { method: "POST", body: "" };
    if (action === "weight") {
      var weight = Number(value);
      if (!Number.isInteger(weight)) {
        logAction(what + ": type a whole number first", false);
        return;
      }
      options.body = JSON.stringify({ weight: weight });
      what += " = " + weight;
    }
    api(encodePath(pool, backend) + "/" + action, options).then(function (answer) {
      logAction(what + ": done (" + (answer.draining ? "draining" : "in rotation") +
                ", weight " + answer.weight + ")", true);
      var row = state.rows.get(pool + "\u0000" + backend);
      if (row && action === "weight") row.weight.value = "";
    }, function (error) {
      if (error.status === 401) { signOut("The gateway refused this token."); return; }
      logAction(what + ": " + error.message, false);
    }).finally(function () {
      if (!state.busy) schedule(0);
    });
  }

  // ------------------------------------------------------------------
  // Start.

  function start() {
    $("login-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", function () { signOut(""); });
    $("pause").addEventListener("click", function () {
      state.paused = !state.paused;
      setText("pause", state.paused ? "Resume" : "Pause");
      if (state.paused) {
        stop();
        setText("state", "paused");
      } else {
        schedule(0);
      }
    });
    $("interval").addEventListener("change", function () {
      state.interval = Number($("interval").value) || 2000;
      schedule(0);
    });
    var kept = null;
    try { kept = sessionStorage.getItem(TOKEN_KEY); } catch (e) { /* storage off */ }
    if (kept) signIn(kept); else showLogin("");
  }

  // The pure parts, for a test to check against known scrapes.
  window.TxGatewayStatus = Object.freeze({ parseMetrics: parseMetrics, increase: increase,
                                           quantile: quantile });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
