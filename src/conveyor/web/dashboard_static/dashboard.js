// conveyor dashboard: a one page app over the JSON API under {dashboard_path}/api/.
// No dependencies, no build step, nothing a strict Content-Security-Policy forbids.
// Every value that comes from the server is put into the page as text (textContent,
// text nodes, attribute values), never parsed as HTML: job names, tags, payloads, errors
// and log lines are users' data. Links are built from the dashboard's own path only.
"use strict";
(() => {
  const BASE = document.body.dataset.base || "";
  const API = document.body.dataset.api || BASE + "/api";
  const STATES = ["scheduled", "queued", "running", "waiting", "completed", "failed", "cancelled"];
  const RETRYABLE = new Set(["failed", "cancelled"]);
  const UNFINISHED = new Set(["scheduled", "queued", "running", "waiting"]);
  const FILTERS = ["state", "prefix", "name", "channel", "tenant", "tag"];
  const WINDOWS = { "1h": "1m", "6h": "5m", "24h": "15m", "7d": "2h" };
  const PAGE_SIZES = ["25", "50", "100", "200"];
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  // -- DOM helpers: text only ------------------------------------------------------------
  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child)); // a string: a text node
    }
    return node;
  }

  function setProps(node, props) {
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    return node;
  }

  function h(tag, props, ...children) {
    return append(setProps(document.createElement(tag), props), children);
  }

  function svg(tag, props, ...children) {
    return append(setProps(document.createElementNS(SVG, tag), props), children);
  }

  // An in-app link: its href is the dashboard's own path (never a value from the server).
  function link(href, props, ...children) {
    return h("a", { ...props, href, "data-spa": "1" }, ...children);
  }

  function cut(text, wide) {
    const value = text === null || text === undefined ? "" : String(text);
    return h("span", { class: wide ? "cut wide" : "cut", title: value }, value);
  }

  function statePill(state) {
    return h("span", { class: "state s-" + state }, state);
  }

  // -- URLs ------------------------------------------------------------------------------
  const paths = {
    overview: () => BASE || "/",
    jobs: (query) => BASE + "/jobs" + queryString(query),
    job: (id) => BASE + "/jobs/" + encodeURIComponent(String(id)),
    cron: () => BASE + "/cron",
    workers: () => BASE + "/workers",
  };

  function queryString(query) {
    if (!query) return "";
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    return text ? "?" + text : "";
  }

  // -- formatting ------------------------------------------------------------------------
  let clockOffset = 0; // server time minus this browser's time, from the last answer

  function serverNow() {
    return Date.now() + clockOffset;
  }

  function noteServerTime(iso) {
    const t = Date.parse(iso || "");
    if (!isNaN(t)) clockOffset = t - Date.now();
  }

  const pad = (n) => String(n).padStart(2, "0");

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function clockTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function relative(iso) {
    if (!iso) return "";
    const t = Date.parse(iso);
    if (isNaN(t)) return "";
    const seconds = (t - serverNow()) / 1000;
    if (Math.abs(seconds) < 1) return "now";
    return seconds > 0 ? "in " + duration(seconds) : duration(-seconds) + " ago";
  }

  // A time cell: local date and time, how long ago in its tooltip.
  function timeCell(iso) {
    return iso ? h("span", { title: relative(iso) }, when(iso)) : h("span", { class: "muted" }, "—");
  }

  const numberFormat = new Intl.NumberFormat("en-US");
  const num = (n) => numberFormat.format(n || 0);

  function attempts(job) {
    const stalls = job.stalls || 0;
    const used = job.attempts - stalls + "/" + job.max_attempts;
    return stalls ? used + " +" + stalls + " stalled" : used;
  }

  function json(value) {
    return value === undefined ? "" : JSON.stringify(value, null, 2);
  }

  function plural(n, word) {
    return num(n) + " " + word + (n === 1 ? "" : "s");
  }

  // -- API -------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options) {
    const init = {
      method: (options && options.method) || "GET",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    };
    if (options && options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, "network", "the server did not answer");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(response.status, error.code || "http",
        error.message || response.status + " " + response.statusText);
    }
    return body;
  }

  const post = (path, body) => api(path, { method: "POST", body });

  // -- toasts, confirmation, live indicator ----------------------------------------------
  function toast(message, options) {
    const bad = options && options.bad;
    const node = h("div", { class: bad ? "toast bad" : "toast" }, message);
    if (options && options.href) {
      node.append(" ", link(options.href, { class: "toast-link" }, options.linkText || "open"));
    }
    $("toasts").append(node);
    setTimeout(() => node.remove(), bad ? 9000 : 5000);
  }

  function fail(error) {
    toast(error && error.message ? error.message : String(error), { bad: true });
  }

  function confirmAction(title, text, label, danger) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").replaceChildren(...[].concat(text));
    const yes = $("confirm-yes");
    yes.textContent = label;
    yes.className = danger ? "danger primary" : "primary";
    return new Promise((resolve) => {
      const done = (answer) => {
        yes.removeEventListener("click", onYes);
        $("confirm-no").removeEventListener("click", onNo);
        dialog.removeEventListener("cancel", onNo);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const onYes = () => done(true);
      const onNo = () => done(false);
      yes.addEventListener("click", onYes);
      $("confirm-no").addEventListener("click", onNo);
      dialog.addEventListener("cancel", onNo);
      dialog.showModal();
      $("confirm-no").focus();
    });
  }

  function setLive(kind, text) {
    const node = $("live");
    node.className = "live " + kind;
    node.textContent = text;
  }

  // -- live data: the overview stream (with polling when it cannot be had) ---------------
  const overview = { data: null, listeners: new Set(), source: null, timer: null };

  function gotOverview(data) {
    overview.data = data;
    noteServerTime(data.now);
    renderBanner(data);
    for (const listener of overview.listeners) listener(data);
  }

  function onOverview(listener) {
    overview.listeners.add(listener);
    if (overview.data) listener(overview.data);
    return () => overview.listeners.delete(listener);
  }

  async function pollOverview() {
    try {
      gotOverview(await api("/overview"));
      if (!overview.source || overview.source.readyState !== 1) setLive("polling", "polling");
    } catch (e) {
      setLive("off", e.status === 0 ? "offline" : e.message);
    }
  }

  function startPolling() {
    if (overview.timer === null) {
      pollOverview();
      overview.timer = setInterval(() => { if (!document.hidden) pollOverview(); }, 5000);
    }
  }

  function stopPolling() {
    if (overview.timer !== null) clearInterval(overview.timer);
    overview.timer = null;
  }

  function startOverviewStream() {
    if (typeof EventSource !== "function") {
      startPolling();
      return;
    }
    const source = new EventSource(API + "/stream", { withCredentials: false });
    overview.source = source;
    source.addEventListener("overview", (event) => {
      stopPolling();
      setLive("on", "live");
      gotOverview(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      startPolling(); // until the stream is back
      if (source.readyState === EventSource.CLOSED) {
        // Refused (an HTTP error): poll, and try the stream again later.
        overview.source = null;
        setTimeout(startOverviewStream, 30000);
      }
    });
  }

  function renderBanner(data) {
    const banner = $("banner");
    if (data.paused && data.paused.everything) {
      banner.replaceChildren(
        "Every channel is paused: workers start no jobs.",
        h("button", { type: "button", class: "small", onclick: () => pauseAll(false) }, "Resume all"),
      );
      banner.hidden = false;
    } else {
      banner.hidden = true;
      banner.replaceChildren();
    }
  }

  async function pauseAll(pause) {
    try {
      await post(pause ? "/pause" : "/resume");
      toast(pause ? "Every channel is paused." : "Every channel is resumed.");
      pollOverview();
    } catch (e) {
      fail(e);
    }
  }

  async function pauseChannel(name, pause) {
    try {
      await post("/channels/" + encodeURIComponent(name) + (pause ? "/pause" : "/resume"));
      toast((pause ? "Paused channel " : "Resumed channel ") + name + ".");
      pollOverview();
    } catch (e) {
      fail(e);
    }
  }

  // -- router ----------------------------------------------------------------------------
  let current = null;

  function parseLocation() {
    let path = location.pathname;
    if (BASE && path.startsWith(BASE)) path = path.slice(BASE.length);
    path = path.replace(/\/+$/, "");
    const query = new URLSearchParams(location.search);
    if (path === "") return { name: "overview", query };
    if (path === "/jobs") return { name: "jobs", query };
    const match = /^\/jobs\/([0-9]{1,18})$/.exec(path);
    if (match) return { name: "job", id: match[1], query };
    if (path === "/cron") return { name: "cron", query };
    if (path === "/workers") return { name: "workers", query };
    return { name: "missing", query };
  }

  function go(href, options) {
    const state = (options && options.state) || null;
    if (options && options.replace) history.replaceState(state, "", href);
    else history.pushState(state, "", href);
    render();
    if (!(options && options.keepScroll)) window.scrollTo(0, 0);
  }

  function render() {
    if (current && current.leave) current.leave();
    const where = parseLocation();
    const section = where.name === "job" ? "jobs" : where.name;
    for (const a of document.querySelectorAll("nav [data-nav]")) {
      const here = a.dataset.nav === section;
      a.classList.toggle("active", here);
      if (here) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const root = $("view");
    root.replaceChildren();
    const view = VIEWS[where.name] || VIEWS.missing;
    current = view(root, where) || {};
    document.title = (current.title ? current.title + " · " : "") + "conveyor";
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest("a[data-spa]");
    if (!a || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", () => render());

  // Every view keeps its timers and listeners here, and drops them when it is left.
  function lifetime() {
    const undo = [];
    return {
      every(ms, fn) {
        const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
        undo.push(() => clearInterval(id));
      },
      listen(off) { undo.push(off); },
      leave() { for (const fn of undo.splice(0)) fn(); },
    };
  }

  // -- overview --------------------------------------------------------------------------
  function stateCards(counts, active, hrefFor) {
    return h("div", { class: "cards" }, STATES.map((state) =>
      link(hrefFor(state), { class: "card" + (state === active ? " active" : ""),
                             "data-state": state },
        h("span", { class: "n s-" + state }, num(counts[state])),
        h("span", { class: "label" }, state))));
  }

  function overviewView(root, where) {
    const life = lifetime();
    const windowKey = WINDOWS[where.query.get("window")] ? where.query.get("window") : "1h";
    const cards = h("div");
    const throughputBox = h("div", { class: "chart-box" }, h("p", { class: "empty" }, "loading…"));
    const failuresBox = h("div", { class: "chart-box" }, h("p", { class: "empty" }, "loading…"));
    const throughputTotals = h("div", { class: "totals" });
    const failuresTotals = h("div", { class: "totals" });
    const channels = h("div", { class: "table-wrap" });
    const workers = h("p", { class: "muted" });
    const select = h("select", { "aria-label": "Chart window", id: "chart-window",
                                  onchange: () => go(paths.overview() + queryString({ window: select.value }),
                                                     { replace: true, keepScroll: true }) },
      Object.keys(WINDOWS).map((key) => h("option", { value: key, selected: key === windowKey },
                                          "last " + key)));
    append(root, [
      h("div", { class: "view-head" },
        h("h1", null, "Overview"),
        h("button", { type: "button", id: "pause-all", onclick: () => pauseAll(true) }, "Pause all"),
        h("button", { type: "button", id: "resume-all", onclick: () => pauseAll(false) }, "Resume all")),
      cards,
      h("div", { class: "grid" },
        h("section", { class: "panel", "aria-label": "Throughput" },
          h("div", { class: "panel-head" }, h("h2", null, "Throughput"), select),
          throughputBox, throughputTotals),
        h("section", { class: "panel", "aria-label": "Failures" },
          h("div", { class: "panel-head" }, h("h2", null, "Failures")),
          failuresBox, failuresTotals)),
      h("section", { class: "panel", id: "channels" },
        h("div", { class: "panel-head" }, h("h2", null, "Channels"), workers),
        channels),
    ]);

    life.listen(onOverview((data) => {
      cards.replaceChildren(stateCards(data.counts, null, (s) => paths.jobs({ state: s })));
      channels.replaceChildren(channelTable(data));
      const w = data.workers || { count: 0, busy: 0, concurrency: 0 };
      workers.replaceChildren(link(paths.workers(), null, plural(w.count, "worker")),
        " · " + num(w.busy) + " of " + num(w.concurrency) + " slots busy");
    }));

    async function loadCharts() {
      try {
        const data = await api("/throughput" + queryString({ window: windowKey, bucket: WINDOWS[windowKey] }));
        const label = WINDOWS[windowKey];
        throughputBox.replaceChildren(barChart(data.points, [
          { key: "completed", label: "completed" }, { key: "cancelled", label: "cancelled" },
        ], "Jobs finished per " + label + ", last " + windowKey));
        failuresBox.replaceChildren(barChart(data.points, [{ key: "failed", label: "failed" }],
          "Jobs failed per " + label + ", last " + windowKey));
        throughputTotals.replaceChildren(
          h("span", null, h("span", { class: "dot completed" }), h("b", null, num(data.totals.completed)), " completed"),
          h("span", null, h("span", { class: "dot cancelled" }), h("b", null, num(data.totals.cancelled)), " cancelled"),
          h("span", null, "per " + label));
        failuresTotals.replaceChildren(
          h("span", null, h("span", { class: "dot failed" }), h("b", null, num(data.totals.failed)), " failed"),
          h("span", null, "per " + label));
      } catch (e) {
        throughputBox.replaceChildren(h("p", { class: "empty err" }, e.message));
        failuresBox.replaceChildren();
      }
    }
    loadCharts();
    life.every(15000, loadCharts);
    return { title: "Overview", leave: life.leave };
  }

  function channelTable(data) {
    if (!data.channels.length) {
      return h("p", { class: "empty" }, "No channels yet: enqueue a job and its channel shows here.");
    }
    const shown = ["queued", "scheduled", "running", "waiting", "failed", "completed"];
    return h("table", { id: "channel-table" },
      h("thead", null, h("tr", null,
        h("th", null, "Channel"), shown.map((s) => h("th", { class: "num" }, s)),
        h("th", null, "Oldest queued"), h("th", null, "Limits"), h("th", null, "Status"),
        h("th", null, ""))),
      h("tbody", null, data.channels.map((c) => h("tr", { "data-channel": c.name },
        h("td", null, link(paths.jobs({ channel: c.name }), null, cut(c.name))),
        shown.map((s) => h("td", { class: "num" },
          c.counts[s] ? link(paths.jobs({ channel: c.name, state: s }), null, num(c.counts[s]))
                      : h("span", { class: "muted" }, "0"))),
        h("td", null, c.oldest_queued_age === null ? h("span", { class: "muted" }, "—")
                                                   : h("span", { title: when(c.oldest_queued_at) },
                                                       duration(c.oldest_queued_age))),
        h("td", null, limitsText(c.limits) || h("span", { class: "muted" }, "—")),
        h("td", null, c.paused ? h("span", { class: "badge paused" }, "paused")
                               : h("span", { class: "badge" }, "active")),
        h("td", null, c.paused
          ? h("button", { type: "button", class: "small", "data-action": "resume",
                          onclick: () => pauseChannel(c.name, false) }, "Resume")
          : h("button", { type: "button", class: "small", "data-action": "pause",
                          onclick: () => pauseChannel(c.name, true) }, "Pause"))))));
  }

  // "at most 5 running · 100 per 1m · fair by tenant", or "" without limits.
  function limitsText(limits) {
    if (!limits) return "";
    const parts = [];
    if (limits.concurrency) parts.push("at most " + num(limits.concurrency) + " running");
    if (limits.rate) parts.push(num(limits.rate.n) + " per " + duration(limits.rate.per).replace(/ 0[smh]$/, ""));
    if (limits.fair_by) parts.push("fair by " + limits.fair_by);
    return parts.join(" · ");
  }

  // A bar chart of points [{start, <key>: n}], the series stacked.
  function barChart(points, series, title) {
    const W = 640, H = 170, L = 36, R = 6, T = 10, B = 22;
    const totals = points.map((p) => series.reduce((sum, s) => sum + (p[s.key] || 0), 0));
    const peak = niceCeiling(Math.max(1, ...totals));
    const plotW = W - L - R, plotH = H - T - B;
    const step = plotW / Math.max(1, points.length);
    const chart = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
                               "aria-label": title, preserveAspectRatio: "xMidYMid meet" },
      svg("title", null, title));
    for (const fraction of [0, 0.5, 1]) {
      const y = T + plotH - fraction * plotH;
      chart.append(svg("line", { class: fraction ? "grid-line" : "axis", x1: L, x2: W - R, y1: y, y2: y }),
        svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, num(Math.round(peak * fraction))));
    }
    points.forEach((point, i) => {
      let base = T + plotH;
      const x = L + i * step;
      const width = Math.max(1, step * 0.78);
      for (const s of series) {
        const value = point[s.key] || 0;
        if (!value) continue;
        const height = (value / peak) * plotH;
        base -= height;
        chart.append(svg("rect", { class: "bar-" + s.key, x: x + (step - width) / 2, y: base,
                                   width, height: Math.max(height, 0.5) }));
      }
      const parts = series.map((s) => num(point[s.key] || 0) + " " + s.label);
      chart.append(svg("rect", { class: "hit", x, y: T, width: step, height: plotH },
        svg("title", null, clockTime(point.start) + ": " + parts.join(", "))));
    });
    if (points.length) {
      const labels = [[0, "start"], [Math.floor(points.length / 2), "middle"], [points.length - 1, "end"]];
      for (const [i, where] of labels) {
        const x = L + i * step + step / 2;
        const anchor = where === "start" ? "start" : where === "end" ? "end" : "middle";
        chart.append(svg("text", { x: where === "start" ? L : where === "end" ? W - R : x, y: H - 6,
                                   "text-anchor": anchor }, clockTime(points[i].start)));
      }
    }
    return chart;
  }

  function niceCeiling(value) {
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    if (value <= 2) return 2; // whole numbers at the half-way line too
    for (const m of [1, 2, 4, 6, 8, 10]) if (m * power >= value) return m * power;
    return 10 * power;
  }

  // -- jobs ------------------------------------------------------------------------------
  let lastListHref = null; // where "Jobs" in a job's page goes back to

  const COLUMNS = [
    { key: "id", label: "ID", num: true },
    { key: "name", label: "Name" },
    { key: "state", label: "State" },
    { key: "channel", label: "Channel" },
    { key: "tenant", label: "Tenant" },
    { key: "tags", label: "Tags", sort: (j) => (j.tags || []).join(",") },
    { key: "attempts", label: "Attempts", num: true },
    { key: "progress", label: "Progress", num: true },
    { key: "created_at", label: "Created" },
    { key: "finished_at", label: "Finished" },
    { key: "error", label: "Last error" },
  ];

  function filterOf(query) {
    const out = {};
    for (const key of FILTERS) {
      const value = query.get(key);
      if (value) out[key] = value;
    }
    return out;
  }

  function describeFilter(filter) {
    const parts = [];
    if (filter.state) parts.push("state " + filter.state);
    if (filter.prefix) parts.push("name starting with “" + filter.prefix + "”");
    if (filter.name) parts.push("name “" + filter.name + "”");
    if (filter.channel) parts.push("channel “" + filter.channel + "”");
    if (filter.tenant) parts.push("tenant “" + filter.tenant + "”");
    if (filter.tag) parts.push("tag “" + filter.tag + "”");
    return parts.length ? parts.join(", ") : null;
  }

  function jobsView(root, where) {
    const life = lifetime();
    const query = where.query;
    const filter = filterOf(query);
    const before = query.get("before");
    const limit = PAGE_SIZES.includes(query.get("limit")) ? query.get("limit") : "50";
    const sort = query.get("sort") || "-id";
    lastListHref = location.pathname + location.search;
    const here = (changes) => {
      const next = { ...filter, before, limit: limit === "50" ? null : limit,
                     sort: sort === "-id" ? null : sort, ...changes };
      return paths.jobs(next);
    };

    const field = (name, label, props) => h("label", null, label,
      h("input", { type: "search", name, id: "f-" + name, value: filter[name] || "",
                   autocomplete: "off", ...props }));
    const stateSelect = h("select", { name: "state", id: "f-state" },
      h("option", { value: "" }, "any state"),
      STATES.map((s) => h("option", { value: s, selected: s === filter.state }, s)));
    const channelList = h("datalist", { id: "channel-names" });
    const form = h("form", { class: "filters", role: "search", id: "job-filters" },
      h("label", null, "Job id", h("input", { class: "id", name: "id", id: "f-id", inputmode: "numeric",
                                               placeholder: "jump to", autocomplete: "off" })),
      field("prefix", "Name starts with", { placeholder: "send-" }),
      field("channel", "Channel", { list: "channel-names" }),
      field("tenant", "Tenant"),
      field("tag", "Tag"),
      h("label", null, "State", stateSelect),
      channelList,
      h("div", { class: "buttons" },
        h("button", { type: "submit", class: "primary", id: "apply" }, "Apply"),
        h("button", { type: "button", id: "clear", onclick: () => go(paths.jobs()) }, "Clear")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const id = String(data.get("id") || "").trim().replace(/^#/, "");
      if (id) {
        if (/^[0-9]{1,18}$/.test(id)) go(paths.job(id));
        else toast("A job id is a number.", { bad: true });
        return;
      }
      const next = {};
      for (const key of FILTERS) {
        const value = key === "name" ? filter.name : String(data.get(key) || "").trim();
        if (value) next[key] = value;
      }
      next.limit = limit === "50" ? null : limit;
      next.sort = sort === "-id" ? null : sort;
      go(paths.jobs(next));
    });

    const chips = h("div");
    const described = describeFilter(filter);
    const bulk = h("div", { class: "bulk", id: "bulk" },
      h("span", { class: "label" }, described ? "Every job matching " + described + ":" : "Every job (no filter):"),
      h("button", { type: "button", "data-bulk": "retry", onclick: () => bulkAction("retry", filter, reload) }, "Retry…"),
      h("button", { type: "button", "data-bulk": "cancel", onclick: () => bulkAction("cancel", filter, reload) }, "Cancel…"),
      h("button", { type: "button", class: "danger", "data-bulk": "delete",
                    onclick: () => bulkAction("delete", filter, reload) }, "Delete…"));
    const table = h("div", { class: "table-wrap" }, h("p", { class: "empty" }, "loading…"));
    const pager = h("div", { class: "pager" });

    append(root, [
      h("div", { class: "view-head" }, h("h1", null, "Jobs")),
      h("section", { class: "panel" }, form, bulk),
      h("section", { class: "panel" }, chips, table, pager),
    ]);

    let jobs = [];
    let older = null;
    let loading = false;
    let lastLoad = 0;
    let pending = null; // a reload waiting out the throttle

    function sortedJobs() {
      const desc = sort.startsWith("-");
      const key = desc ? sort.slice(1) : sort;
      const column = COLUMNS.find((c) => c.key === key) || COLUMNS[0];
      const value = column.sort || ((job) => job[column.key]);
      const rows = jobs.slice();
      rows.sort((a, b) => {
        const x = value(a), y = value(b);
        if (x === y) return 0;
        if (x === null || x === undefined || x === "") return 1; // empty last, either way
        if (y === null || y === undefined || y === "") return -1;
        const order = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y), undefined, { numeric: true });
        return desc ? -order : order;
      });
      return rows;
    }

    function header(column) {
      const key = sort.replace(/^-/, "");
      const active = key === column.key;
      const ariaSort = active ? (sort.startsWith("-") ? "descending" : "ascending") : null;
      const next = active && !sort.startsWith("-") ? "-" + column.key : column.key;
      return h("th", { class: "sortable" + (column.num ? " num" : ""), "aria-sort": ariaSort,
                       "data-sort": column.key, tabindex: "0", scope: "col",
                       onclick: () => go(here({ sort: next === "-id" ? null : next }),
                                         { replace: true, keepScroll: true, state: history.state }),
                       onkeydown: (e) => { if (e.key === "Enter") e.target.click(); } },
        column.label);
    }

    function row(job) {
      return h("tr", { "data-id": job.id },
        h("td", { class: "num" }, link(paths.job(job.id), null, String(job.id))),
        h("td", null, link(paths.job(job.id), { class: "job-name" }, cut(job.name))),
        h("td", null, statePill(job.state)),
        h("td", null, cut(job.channel)),
        h("td", null, job.tenant === null ? h("span", { class: "muted" }, "—") : cut(job.tenant)),
        h("td", null, h("span", { class: "tags" }, (job.tags || []).map((t) => h("span", { class: "badge" }, t)))),
        h("td", { class: "num" }, attempts(job)),
        h("td", { class: "num" }, job.progress + "%"),
        h("td", null, timeCell(job.created_at)),
        h("td", null, job.finished_at ? timeCell(job.finished_at)
          : job.state === "scheduled" ? h("span", { class: "muted", title: when(job.run_at) }, "runs " + relative(job.run_at))
          : h("span", { class: "muted" }, "—")),
        h("td", null, job.error ? h("span", { class: "err" }, cut(job.error, true)) : ""));
    }

    function draw() {
      if (!jobs.length) {
        table.replaceChildren(h("p", { class: "empty" },
          before ? "No older jobs match." : "No jobs match this filter."));
      } else {
        table.replaceChildren(h("table", { id: "job-table" },
          h("thead", null, h("tr", null, COLUMNS.map(header))),
          h("tbody", null, sortedJobs().map(row))));
      }
      const stack = (history.state && history.state.stack) || [];
      pager.replaceChildren(
        h("span", { class: "muted" }, jobs.length ? "Jobs " + num(jobs[jobs.length - 1].id) + " to " +
          num(jobs[0].id) + " (newest first), " + plural(jobs.length, "job") + " on this page" : ""),
        h("label", { class: "muted" }, "Per page ",
          h("select", { id: "page-size", onchange: (e) => go(here({ before: null, limit: e.target.value === "50" ? null : e.target.value })) },
            PAGE_SIZES.map((n) => h("option", { value: n, selected: n === limit }, n)))),
        h("button", { type: "button", id: "newest", disabled: !before, onclick: () => go(here({ before: null })) }, "Newest"),
        h("button", { type: "button", id: "newer", disabled: !before, onclick: () => {
          const back = stack.slice();
          const previous = back.length ? back.pop() : null;
          go(here({ before: previous }), { state: { stack: back } });
        } }, "‹ Newer"),
        h("button", { type: "button", id: "older", disabled: older === null, onclick: () => {
          go(here({ before: older }), { state: { stack: stack.concat([before]) } });
        } }, "Older ›"));
    }

    let again = false; // asked for while a read was under way: read once more after it
    async function reload() {
      if (loading) {
        again = true;
        return;
      }
      loading = true;
      lastLoad = Date.now();
      try {
        const answer = await api("/jobs" + queryString({ ...filter, before, limit }));
        jobs = answer.jobs;
        older = answer.older;
        draw();
      } catch (e) {
        table.replaceChildren(h("p", { class: "empty err" }, e.message));
      } finally {
        loading = false;
        if (again) {
          again = false;
          reload();
        }
      }
    }

    life.listen(onOverview((data) => {
      chips.replaceChildren(stateCards(data.counts, filter.state || null,
        (s) => here({ state: s === filter.state ? null : s, before: null })));
      channelList.replaceChildren(...data.channels.map((c) => h("option", { value: c.name })));
      // The first page follows the store (at most one reload in 1.5 s, the last change
      // never missed); older pages stay as they were read.
      if (!before && pending === null) {
        pending = setTimeout(() => { pending = null; reload(); },
                             Math.max(0, 1500 - (Date.now() - lastLoad)));
      }
    }));
    life.listen(() => { if (pending !== null) clearTimeout(pending); });
    reload();
    return { title: "Jobs", leave: life.leave };
  }

  const BULK_WORDS = {
    retry: { verb: "Retry", done: "Retried", which: "failed or cancelled", danger: false },
    cancel: { verb: "Cancel", done: "Cancelled", which: "unfinished", danger: true },
    delete: { verb: "Delete", done: "Deleted", which: "not running", danger: true },
  };

  async function bulkAction(action, filter, after) {
    const words = BULK_WORDS[action];
    const described = describeFilter(filter);
    let preview;
    try {
      preview = await api("/bulk" + queryString(filter));
    } catch (e) {
      fail(e);
      return;
    }
    const count = preview[action];
    const scope = described ? "matching " + described : "in the store (no filter)";
    if (!count) {
      toast("No " + words.which + " job " + scope + ".");
      return;
    }
    const amount = (preview.capped ? "at least " : "") + plural(count, "job");
    const text = [
      words.verb + " " + amount + " (" + words.which + ") " + scope + "?",
    ];
    if (!described) text.push(h("strong", null, " This is every job in the store."));
    if (action === "delete") text.push(" Their events, logs and steps go too; this cannot be undone.");
    if (action === "cancel" && preview.by_state.running) {
      text.push(" " + plural(preview.by_state.running, "running job") + " will be asked to stop.");
    }
    const ok = await confirmAction(words.verb + " " + amount + "?", text, words.verb + " " + amount, words.danger);
    if (!ok) return;
    try {
      const answer = await post("/bulk/" + action, filter);
      toast(words.done + " " + plural(answer.count, "job") + ".");
    } catch (e) {
      fail(e);
    }
    pollOverview();
    if (after) after();
  }

  // -- one job ---------------------------------------------------------------------------
  function jobView(root, where) {
    const life = lifetime();
    const id = where.id;
    const openErrors = new Set(); // tracebacks the reader opened stay open across updates
    let job = null;
    let source = null;
    let timer = null;
    const head = h("div", { class: "detail-head" },
      link(lastListHref || paths.jobs(), { id: "back" }, "‹ Jobs"),
      h("h1", null, "Job #" + id));
    const body = h("div", null, h("p", { class: "empty" }, "loading…"));
    append(root, [head, body]);

    function act(action) {
      return async () => {
        if (action === "delete") {
          const ok = await confirmAction("Delete job #" + id + "?",
            "Its events, logs and steps go too; this cannot be undone.", "Delete", true);
          if (!ok) return;
        }
        try {
          await post("/jobs/" + encodeURIComponent(id) + "/" + action);
          toast("Job #" + id + ": " + action + " done.");
          if (action === "delete") {
            go(lastListHref || paths.jobs());
            return;
          }
          show(await api("/jobs/" + encodeURIComponent(id)));
        } catch (e) {
          fail(e);
        }
      };
    }

    function show(data) {
      job = data;
      head.replaceChildren(
        link(lastListHref || paths.jobs(), { id: "back" }, "‹ Jobs"),
        h("h1", { title: data.name }, "#" + data.id + " ", data.name),
        statePill(data.state),
        h("div", { class: "actions" },
          h("button", { type: "button", id: "job-retry", disabled: !RETRYABLE.has(data.state), onclick: act("retry") }, "Retry"),
          h("button", { type: "button", id: "job-cancel", class: "danger", disabled: !UNFINISHED.has(data.state), onclick: act("cancel") }, "Cancel"),
          h("button", { type: "button", id: "job-delete", class: "danger", disabled: data.state === "running", onclick: act("delete") }, "Delete")));
      document.title = "#" + data.id + " " + data.name + " · conveyor";
      body.replaceChildren(...detailSections(data, openErrors));
    }

    function gone() {
      body.replaceChildren(h("p", { class: "empty", id: "job-gone" }, "This job no longer exists (deleted or cleaned)."));
      for (const b of head.querySelectorAll("button")) b.disabled = true;
      stop();
    }

    async function poll() {
      try {
        show(await api("/jobs/" + encodeURIComponent(id)));
      } catch (e) {
        if (e.status === 404) gone();
        else setLive("off", e.message);
      }
    }

    function startPolling() {
      if (timer === null) timer = setInterval(() => { if (!document.hidden) poll(); }, 2000);
    }

    function stop() {
      if (source) source.close();
      source = null;
      if (timer !== null) clearInterval(timer);
      timer = null;
    }

    if (typeof EventSource === "function") {
      source = new EventSource(API + "/jobs/" + encodeURIComponent(id) + "/stream");
      source.addEventListener("job", (event) => {
        if (timer !== null) { clearInterval(timer); timer = null; }
        show(JSON.parse(event.data));
      });
      source.addEventListener("gone", gone);
      source.addEventListener("error", () => {
        if (!source) return;
        if (source.readyState === EventSource.CLOSED) {
          source = null; // refused: say why (404, 401…) by polling
          poll();
        }
        startPolling();
      });
    } else {
      poll();
      startPolling();
    }
    life.listen(stop);
    return { title: "Job #" + id, leave: life.leave };
  }

  function detailSections(job, openErrors) {
    const out = [];
    const progress = h("progress", { max: "100", value: String(job.progress), id: "job-progress",
                                     "aria-label": "Progress" });
    out.push(h("div", { class: "progress" }, progress,
      h("span", { class: "pct", id: "job-progress-text" }, job.progress + "%")));
    if (job.state === "waiting") {
      out.push(h("div", { class: "wait", id: "job-wait" }, job.wait_token
        ? ["Waiting for token ", h("code", null, job.wait_token), waitingToken(job)]
        : ["Sleeping until ", when(job.run_at), " (" + relative(job.run_at) + ")"]));
    }
    const facts = [
      ["State", statePill(job.state)],
      ["Attempts", attempts(job)],
      ["Channel", job.channel],
      ["Priority", String(job.priority)],
      ["Tenant", job.tenant === null ? "—" : job.tenant],
      ["Group", job.group === null ? "—" : job.group],
      ["Tags", (job.tags || []).length ? h("span", { class: "tags" }, job.tags.map((t) => h("span", { class: "badge" }, t))) : "—"],
      ["Depends on", (job.depends_on || []).length
        ? h("span", { class: "tags", id: "job-deps" }, job.depends_on.map((id) => link(paths.job(id), null, "#" + id)))
        : "—"],
      ["Run at", when(job.run_at)],
      ["Created", when(job.created_at)],
      ["Started", job.started_at ? when(job.started_at) : "—"],
      ["Finished", job.finished_at ? when(job.finished_at) : "—"],
    ];
    const data = h("section", { class: "panel" },
      h("h2", null, "Payload"), h("pre", { id: "job-payload" }, json(job.payload)));
    if (job.result !== null && job.result !== undefined) {
      data.append(h("h3", null, "Result"), h("pre", { id: "job-result" }, json(job.result)));
    }
    out.push(h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", null, "Job"),
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]))),
      data));

    const errors = h("section", { class: "panel", id: "job-errors" },
      h("h2", null, "Errors" + (job.errors.length ? " (" + job.errors.length + ")" : "")));
    if (!job.errors.length) errors.append(h("p", { class: "empty" }, "No attempt has failed."));
    job.errors.slice().reverse().forEach((error, i) => {
      const key = String(job.errors.length - 1 - i);
      const details = h("details", { open: i === 0 || openErrors.has(key) },
        h("summary", null, "Traceback"), h("pre", { class: "traceback" }, error.traceback || "(none)"));
      details.addEventListener("toggle", () => {
        if (details.open) openErrors.add(key); else openErrors.delete(key);
      });
      errors.append(h("div", { class: "attempt" },
        h("div", null, h("span", { class: "what" }, "Attempt " + error.attempt + " · "),
          h("span", { class: "err" }, (error.type || "Error") + ": " + (error.message || "")),
          h("span", { class: "muted" }, " · " + when(error.at))),
        error.traceback ? details : null));
    });
    out.push(errors);

    if ((job.steps || []).length || (job.tokens || []).length) {
      const durable = h("section", { class: "panel", id: "job-steps" }, h("h2", null, "Steps and waits"));
      if (job.steps.length) {
        durable.append(h("div", { class: "table-wrap" }, h("table", null,
          h("thead", null, h("tr", null, h("th", null, "Step"), h("th", null, "At"), h("th", null, "Result"))),
          h("tbody", null, job.steps.map((s) => h("tr", null,
            h("td", null, cut(s.name)), h("td", null, when(s.at)),
            h("td", { class: "mono" }, cut(JSON.stringify(s.result), true))))))));
      }
      if (job.tokens.length) {
        durable.append(h("h3", null, "Tokens"), h("div", { class: "table-wrap" }, h("table", null,
          h("thead", null, h("tr", null, ["Token", "State", "Tags", "Expires", "Created", "Completed", "Data"]
            .map((t) => h("th", null, t)))),
          h("tbody", null, job.tokens.map((t) => h("tr", null,
            h("td", { class: "mono" }, cut(t.id)), h("td", null, t.state),
            h("td", null, (t.tags || []).join(", ")), h("td", null, t.expires_at ? when(t.expires_at) : "never"),
            h("td", null, when(t.created_at)), h("td", null, t.completed_at ? when(t.completed_at) : "—"),
            h("td", { class: "mono" }, t.data === null || t.data === undefined ? "" : cut(JSON.stringify(t.data), true))))))));
      }
      out.push(durable);
    }

    const events = h("section", { class: "panel", id: "job-events" }, h("h2", null, "Events"));
    if (!job.events.length) events.append(h("p", { class: "empty" }, "No events stored."));
    else {
      events.append(h("ol", { class: "timeline" }, job.events.map((e) => h("li", null,
        h("span", { class: "muted" }, when(e.at)),
        h("span", null, h("span", { class: "state s-" + eventState(e.type) }, e.type)),
        h("span", { class: "muted attempt-no" }, e.attempt ? "attempt " + e.attempt : ""),
        h("span", { class: "data mono" }, e.data && Object.keys(e.data).length ? JSON.stringify(e.data) : "")))));
    }
    out.push(events);

    const logs = h("section", { class: "panel", id: "job-logs" }, h("h2", null, "Logs"));
    if (!job.logs.length) logs.append(h("p", { class: "empty" }, "The handler logged nothing (ctx.log)."));
    else {
      logs.append(h("div", { class: "logs" }, job.logs.map((r) => h("div", { class: "lvl-" + r.level },
        when(r.at) + "  " + String(r.level).toUpperCase().padEnd(8) + " #" + r.attempt + "  ",
        h("span", { class: "log-message" }, r.message)))));
    }
    out.push(logs);
    return out;
  }

  function waitingToken(job) {
    const token = (job.tokens || []).find((t) => t.id === job.wait_token);
    if (!token) return "";
    return token.expires_at ? " (expires " + relative(token.expires_at) + ")" : " (no expiry)";
  }

  function eventState(type) {
    const map = { enqueued: "queued", started: "running", progress: "running", retrying: "scheduled",
                  snoozed: "scheduled", stalled: "failed", orphaned: "failed", resumed: "running",
                  removed: "cancelled", cron_fired: "queued" };
    return STATES.includes(type) ? type : map[type] || "cancelled";
  }

  // -- cron ------------------------------------------------------------------------------
  function cronView(root) {
    const life = lifetime();
    const box = h("div", { class: "table-wrap" }, h("p", { class: "empty" }, "loading…"));
    append(root, [h("div", { class: "view-head" }, h("h1", null, "Cron")), h("section", { class: "panel" }, box)]);

    async function cronAct(name, action) {
      try {
        const answer = await post("/cron/" + encodeURIComponent(name) + "/" + action);
        if (action === "run") {
          toast("Schedule " + name + " enqueued job #" + answer.job_id + ".",
                { href: paths.job(answer.job_id), linkText: "open job" });
        } else {
          toast("Schedule " + name + (action === "pause" ? " paused." : " resumed."));
        }
        load();
      } catch (e) {
        fail(e);
      }
    }

    async function load() {
      try {
        const data = await api("/cron");
        noteServerTime(data.now);
        if (!data.schedules.length) {
          box.replaceChildren(h("p", { class: "empty" },
            "No schedules. Declare one with @queue.job(..., cron=\"0 2 * * *\") or queue.add_cron()."));
          return;
        }
        box.replaceChildren(h("table", { id: "cron-table" },
          h("thead", null, h("tr", null, ["Schedule", "When", "Job", "Time zone", "Next run", "Last run", "Status", ""]
            .map((t) => h("th", null, t)))),
          h("tbody", null, data.schedules.map((s) => h("tr", { "data-name": s.name },
            h("td", null, cut(s.name)),
            h("td", { class: "mono" }, s.expression),
            h("td", null, link(paths.jobs({ name: s.job }), null, cut(s.job))),
            h("td", null, s.timezone),
            h("td", null, s.paused || !s.next_run_at ? h("span", { class: "muted" }, "—")
              : h("span", { title: when(s.next_run_at) }, relative(s.next_run_at))),
            h("td", null, s.last_run_at ? h("span", { title: when(s.last_run_at) }, relative(s.last_run_at))
              : h("span", { class: "muted" }, "never")),
            h("td", null, s.paused ? h("span", { class: "badge paused" }, "paused") : h("span", { class: "badge" }, "active")),
            h("td", null,
              s.paused ? h("button", { type: "button", class: "small", "data-action": "resume", onclick: () => cronAct(s.name, "resume") }, "Resume")
                       : h("button", { type: "button", class: "small", "data-action": "pause", onclick: () => cronAct(s.name, "pause") }, "Pause"),
              " ",
              h("button", { type: "button", class: "small", "data-action": "run", onclick: () => cronAct(s.name, "run") }, "Run now")))))));
      } catch (e) {
        box.replaceChildren(h("p", { class: "empty err" }, e.message));
      }
    }
    load();
    life.every(10000, load);
    return { title: "Cron", leave: life.leave };
  }

  // -- workers ---------------------------------------------------------------------------
  function workersView(root) {
    const life = lifetime();
    const summary = h("p", { class: "muted" });
    const box = h("div", { class: "table-wrap" }, h("p", { class: "empty" }, "loading…"));
    append(root, [h("div", { class: "view-head" }, h("h1", null, "Workers"), summary),
                  h("section", { class: "panel" }, box)]);

    async function load() {
      try {
        const data = await api("/workers");
        noteServerTime(data.now);
        const busy = data.workers.reduce((n, w) => n + w.busy, 0);
        const slots = data.workers.reduce((n, w) => n + w.concurrency, 0);
        summary.textContent = plural(data.workers.length, "worker") + " · " + num(busy) + " of " + num(slots) + " slots busy";
        if (!data.workers.length) {
          box.replaceChildren(h("p", { class: "empty" },
            "No worker is running. Start one with: conveyor worker yourapp.jobs:queue"));
          return;
        }
        box.replaceChildren(h("table", { id: "worker-table" },
          h("thead", null, h("tr", null, ["Worker", "Host", "PID", "Channels", "Busy", "Running jobs", "Started", "Last seen"]
            .map((t) => h("th", null, t)))),
          h("tbody", null, data.workers.map((w) => h("tr", { "data-worker": w.id },
            h("td", { class: "mono" }, cut(w.id)),
            h("td", null, cut(w.host)),
            h("td", { class: "num" }, String(w.pid)),
            h("td", null, w.channels === null ? h("span", { class: "muted" }, "all")
              : h("span", { class: "tags" }, w.channels.map((c) => h("span", { class: "badge" }, c)))),
            h("td", null, h("span", { class: "meter", "aria-hidden": "true" },
                setWidth(h("span"), w.concurrency ? (100 * w.busy) / w.concurrency : 0)),
              num(w.busy) + "/" + num(w.concurrency)),
            h("td", null, w.running.length ? h("span", { class: "ids" },
              w.running.map((id) => link(paths.job(id), null, "#" + id))) : h("span", { class: "muted" }, "idle")),
            h("td", null, h("span", { title: when(w.started_at) }, relative(w.started_at))),
            h("td", null, h("span", { title: when(w.last_seen) }, relative(w.last_seen))))))));
      } catch (e) {
        box.replaceChildren(h("p", { class: "empty err" }, e.message));
      }
    }
    load();
    life.every(3000, load);
    return { title: "Workers", leave: life.leave };
  }

  function setWidth(node, percent) {
    node.style.width = Math.max(0, Math.min(100, percent)) + "%"; // CSSOM: allowed by the CSP
    return node;
  }

  function missingView(root) {
    append(root, [h("h1", null, "No such page"),
                  h("p", null, link(paths.overview(), null, "Back to the overview"))]);
    return { title: "Not found" };
  }

  const VIEWS = { overview: overviewView, jobs: jobsView, job: jobView, cron: cronView,
                  workers: workersView, missing: missingView };

  // -- start -----------------------------------------------------------------------------
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.setAttribute("href", paths[a.dataset.nav]());
    a.setAttribute("data-spa", "1");
  }
  // `conveyor dashboard` is opened once with ?token=…, which sets a cookie: keep the token
  // out of the address bar and the history.
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : ""));
  }
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, select, textarea");
    if (event.key === "/" && !typing && !$("confirm").open) {
      const search = $("f-prefix");
      if (search) {
        event.preventDefault();
        search.focus();
      }
    }
  });
  render();
  startOverviewStream();
})();
