// The status page: renders /api/status in the reader's language from i18n/<lang>.json.
// Every word shown comes from the catalogue; the API sends codes, numbers and names only.
// No inline script, no eval: the Content-Security-Policy allows only this file.
"use strict";
(() => {
  const root = document.documentElement;
  const REFRESH_MS = Number(root.dataset.refreshMs) || 5000;
  const TIMEOUT_MS = Math.max(3000, REFRESH_MS - 500);
  const STORE = "edge-agent-lang";
  const LANGS = ["vi", "en"];
  const $ = (id) => document.getElementById(id);
  const catalogues = {};
  let lang = initialLanguage();
  let last = null; // the last status that arrived
  let lastAt = 0; // when it arrived (client clock, ms)
  let clockOffset = 0; // node time minus phone time, seconds
  let answering = true;
  let refreshes = 0;
  let events = null;

  function initialLanguage() {
    const asked = new URLSearchParams(location.search).get("lang");
    if (LANGS.includes(asked)) return asked;
    try {
      const kept = localStorage.getItem(STORE);
      if (LANGS.includes(kept)) return kept;
    } catch (e) { /* storage may be off: the node's default then */ }
    return LANGS.includes(root.dataset.lang) ? root.dataset.lang : "vi";
  }

  // ---- catalogue and formats ---------------------------------------------------------
  const cat = () => catalogues[lang];
  function t(path) {
    let node = cat();
    for (const part of path.split(".")) node = node && typeof node === "object" ? node[part] : undefined;
    return typeof node === "string" ? node : "";
  }
  const nowS = () => Date.now() / 1000 + clockOffset;

  function num(x, digits) {
    if (typeof x !== "number" || !isFinite(x)) return "–";
    const sep = cat().number;
    const negative = x < 0;
    let [whole, frac] = Math.abs(x).toFixed(digits).split(".");
    if (frac) frac = frac.replace(/0+$/, "");
    whole = whole.replace(/\B(?=(\d{3})+(?!\d))/g, sep.group);
    return (negative ? "−" : "") + whole + (frac ? sep.decimal + frac : "");
  }
  function value(x) {
    if (typeof x !== "number") return "–";
    const a = Math.abs(x);
    return num(x, a >= 100 ? 0 : a >= 10 ? 1 : 2);
  }
  function duration(s) {
    if (typeof s !== "number" || !isFinite(s)) return "–";
    const d = cat().duration;
    s = Math.max(0, s);
    if (s < 60) return fill(d.s, { n: Math.round(s) }, "int");
    if (s < 3600) return fill(d.min, { n: Math.round(s / 60) }, "int");
    if (s < 36000) {
      const h = Math.floor(s / 3600);
      const m = Math.round((s - h * 3600) / 60);
      return m ? fill(d.h_min, { h, m }, "int") : fill(d.h, { n: h }, "int");
    }
    if (s < 172800) return fill(d.h, { n: Math.round(s / 3600) }, "int");
    return fill(d.d, { n: Math.round(s / 86400) }, "int");
  }
  function bytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return fill(cat().bytes[units[i]], { n: i === 0 ? num(n, 0) : num(n, n >= 100 ? 0 : 1) });
  }
  const pad = (n) => String(n).padStart(2, "0");
  function clock(ts) {
    if (typeof ts !== "number") return "–";
    const d = new Date((ts - clockOffset) * 1000);
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return hm;
    return hm + " " + pad(d.getDate()) + "/" + pad(d.getMonth() + 1);
  }
  // "{name}" or "{name:type}" with type int, num, dur, elapsed, ago, time, bytes.
  function fill(template, ctx, defaultType) {
    return String(template || "").replace(/\{(\w+)(?::(\w+))?\}/g, (_, key, type) => {
      const v = ctx[key];
      if (v === undefined || v === null) return "–";
      switch (type || defaultType) {
        case "int": return typeof v === "number" ? num(v, 0) : String(v);
        case "num": return num(v, 1);
        case "dur": return duration(v);
        case "elapsed": return duration(nowS() - v);
        case "ago": return fill(cat().duration.ago, { d: duration(nowS() - v) });
        case "time": return clock(v);
        case "bytes": return bytes(v);
        default: return String(v);
      }
    });
  }
  function componentName(name, label) {
    const names = cat().component;
    const cut = name.indexOf(":");
    const kind = cut < 0 ? name : name.slice(0, cut);
    const id = cut < 0 ? "" : name.slice(cut + 1);
    if (!id) return names[kind + "_group"] || names[kind] || fill(names.other, { name });
    return fill(names[kind] || names.other, { name: label || id });
  }
  function reasonWords(r) {
    const outbox = (last && last.outbox) || {};
    const ctx = Object.assign({}, r.params || {}, {
      component: componentName(r.component, r.label),
      state: t("state." + (r.severity || r.state)),
      pending_rows: outbox.pending_rows,
      pending_bytes: outbox.pending_bytes,
    });
    const known = cat().reason[r.code] || cat().reason_fallback;
    return { text: fill(known.text, ctx), todo: fill(known.todo, ctx) };
  }
  const quantityName = (q) => cat().quantity[q] || q;
  const className = (c) => cat().class[c] || c;
  function withUnit(v, unit) {
    if (unit === "s") return duration(v);
    if (unit === "By") return bytes(v);
    const shown = unit in cat().unit ? cat().unit[unit] : unit;
    return value(v) + (shown ? (shown === "%" || shown.startsWith("°") ? "" : " ") + shown : "");
  }

  // ---- DOM helpers ---------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function facts(dl, rows) {
    dl.replaceChildren();
    for (const [label, content, key] of rows) {
      dl.append(el("dt", { text: label }), el("dd", { "data-k": key || null }, content));
    }
  }
  const pill = (state) => el("span", { class: "pill " + state, text: t("state." + state) });

  // ---- sections ------------------------------------------------------------------------
  function renderVerdict() {
    const box = $("verdict");
    const list = $("verdict-reasons");
    list.replaceChildren();
    if (last && !answering) {
      // Never a green banner for a node that stopped answering: say so, then what it said.
      box.className = "verdict unknown stale";
      $("verdict-title").textContent = t("ui.no_answer");
      list.append(el("li", { text: fill(t("ui.last_verdict"), { verdict: t("verdict." + last.verdict) }) }));
    } else {
      const state = last ? last.verdict : "unknown";
      box.className = "verdict " + state;
      $("verdict-title").textContent = t("verdict." + state);
    }
    if (!last) return;
    if (!last.reasons.length && answering) list.append(el("li", { text: t("ui.all_good") }));
    for (const r of last.reasons) {
      const words = reasonWords(r);
      list.append(el("li", { "data-code": r.code },
        words.text, words.todo ? " — " : "", words.todo ? el("span", { class: "todo", text: words.todo }) : null));
    }
  }
  function renderFreshness() {
    const p = $("freshness");
    if (!last) { p.textContent = answering ? t("ui.loading") : t("ui.never"); return; }
    p.textContent = answering
      ? fill(t("ui.updated"), { time: clock(last.time) })
      : fill(t("ui.stale"), { age: duration((Date.now() - lastAt) / 1000) });
  }
  function renderSync() {
    const s = last.sync;
    let link;
    if (!s.enabled) link = t("ui.link_off");
    else if (s.connected) link = fill(t("ui.link_up"), s);
    else if (s.state === "starting") link = t("ui.link_starting");
    else link = fill(t("ui.link_down"), s);
    const drops = Object.entries(s.dropped || {}).filter(([, n]) => n > 0)
      .map(([why, n]) => (cat().drop[why] || why) + ": " + num(n, 0)).join(", ");
    const rows = [[t("ui.link"), el("span", {}, s.enabled ? pill(s.connected ? "ok" : s.state) : "", " ", link), "link"]];
    if (s.enabled) {
      rows.push([t("ui.last_ack"), s.last_ack_at ? fill(t("ui.last_ack_at"), { at: s.last_ack_at }) : t("ui.no_ack_yet"), "last-ack"]);
      rows.push([t("ui.reconnects"), num(s.reconnects, 0), "reconnects"]);
      if (s.connect_failures) rows.push([t("ui.connect_failures"), num(s.connect_failures, 0), "connect-failures"]);
    }
    rows.push([t("ui.pending"), fill(t("ui.pending_value"), { rows: s.pending_rows, bytes: s.pending_bytes }), "pending"]);
    rows.push([t("ui.oldest"), s.pending_rows ? duration(s.oldest_pending_age_s) : t("ui.nothing_waiting"), "oldest"]);
    rows.push([t("ui.drops"), drops || t("ui.no_drops"), "drops"]);
    if (s.enabled) rows.push([t("ui.send_rate"), fill(t("ui.send_rate_value"), { rate: s.send_rate_per_s || 0 }), "send-rate"]);
    facts($("sync"), rows);
  }
  function aqiBand(a) {
    if (a.category && cat().aqi[a.category]) return cat().aqi[a.category];
    const v = a.value;
    const bands = [[50, "good"], [100, "moderate"], [150, "poor"], [200, "bad"], [300, "very_bad"]];
    for (const [top, name] of bands) if (v <= top) return cat().aqi[name];
    return cat().aqi.hazardous;
  }
  function sensorLabel(name) {
    const sensor = last.sensors.find((s) => s.name === name);
    return (sensor && sensor.label) || name;
  }
  function renderAirQuality() {
    const list = $("aqi");
    const items = last.air_quality || [];
    $("aqi-section").hidden = !items.length;
    list.replaceChildren();
    for (const a of items) {
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      if (Array.isArray(a.color)) swatch.style.backgroundColor = "rgb(" + a.color.slice(0, 3).map(Number).join(",") + ")";
      const label = lang === "vi" && a.label_vi ? a.label_vi : aqiBand(a);
      list.append(el("li", {}, swatch, el("div", {},
        el("span", { class: "index", text: num(a.value, 0) }), " ", el("strong", { text: label }),
        el("p", { class: "muted", text: fill(t("ui.aqi_at"), { sensor: sensorLabel(a.sensor), ts: a.ts }) }))));
    }
  }
  function spark(series, name, unit) {
    const vals = series.values;
    const known = vals.map((v, i) => [i, v]).filter(([, v]) => typeof v === "number");
    const box = svg("svg", { class: "spark", viewBox: "0 0 " + (vals.length - 1) + " 24", preserveAspectRatio: "none", role: "img" });
    if (!known.length) { box.setAttribute("aria-label", t("ui.spark_empty")); return box; }
    const lo = Math.min(...known.map(([, v]) => v));
    const hi = Math.max(...known.map(([, v]) => v));
    const y = (v) => (hi === lo ? 12 : 22 - ((v - lo) / (hi - lo)) * 20).toFixed(2);
    box.setAttribute("aria-label", fill(t("ui.spark_label"), { quantity: name, min: withUnit(lo, unit), max: withUnit(hi, unit) }));
    box.append(svg("polyline", { points: known.map(([i, v]) => i + "," + y(v)).join(" ") }));
    const [li, lv] = known[known.length - 1];
    box.append(svg("circle", { cx: li, cy: y(lv), r: 1.2 }));
    return box;
  }
  function renderSensors() {
    const box = $("sensors");
    box.replaceChildren();
    $("sensors-section").hidden = !last.sensors.length;
    for (const s of last.sensors) {
      const card = el("article", { class: "card", "data-sensor": s.name });
      card.append(el("h3", {}, el("span", { text: s.label || s.name }), pill(s.state)));
      if (s.reason && s.state !== "ok") card.append(el("p", { class: "muted", text: reasonWords({ component: "sensor:" + s.name, label: s.label, ...s.reason }).text }));
      if (!s.values.length) { card.append(el("p", { class: "muted", text: t("ui.no_values") })); box.append(card); continue; }
      const table = el("table", { class: "values" });
      for (const v of s.values) {
        const name = quantityName(v.quantity);
        const shown = el("td", { class: "value", "data-quantity": v.quantity }, v.value === null ? "–" : withUnit(v.value, v.unit));
        if (v.quality && v.quality !== "ok") shown.append(el("span", { class: "quality", text: cat().quality[v.quality] || v.quality }));
        table.append(el("tr", {}, el("th", { scope: "row", text: name }), shown, el("td", { class: "chart" }, spark(v.spark, name, v.unit))));
      }
      card.append(table);
      box.append(card);
    }
  }
  function thumbnail(c) {
    const figure = el("figure", { class: "thumb" });
    const img = el("img", { src: c.thumbnail.url + "?t=" + Math.round(last.time), alt: fill(t("ui.thumbnail_alt"), { name: c.label || c.name }) });
    figure.append(img);
    const boxes = c.thumbnail.boxes.filter((b) => Array.isArray(b.box) && Array.isArray(b.frame_size));
    if (boxes.length) {
      const [w, h] = boxes[0].frame_size;
      const overlay = svg("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none", "aria-hidden": "true" });
      for (const b of boxes) {
        const [x1, y1, x2, y2] = b.box;
        overlay.append(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
      }
      figure.append(overlay);
    }
    return figure;
  }
  function renderCameras() {
    const box = $("cameras");
    box.replaceChildren();
    $("cameras-section").hidden = !last.cameras.length;
    for (const c of last.cameras) {
      const card = el("article", { class: "card", "data-camera": c.name });
      card.append(el("h3", {}, el("span", { text: c.label || c.name }), pill(c.state)));
      let status;
      if (c.state === "stopped") status = t("ui.camera_stopped");
      else if (c.online) status = fill(t("ui.camera_online"), c);
      else status = fill(t("ui.camera_offline"), c);
      const counts = Object.entries(c.today.counts).sort((a, b) => b[1] - a[1])
        .map(([label, n]) => className(label) + " " + num(n, 0)).join(", ");
      const fps = { analysed: c.fps_analysed, target: c.fps_target, source: c.fps_source };
      const rows = [
        [t("ui.fps"), fill(t(c.fps_source ? "ui.fps_value" : "ui.fps_value_nosource"), fps), "fps"],
        [t("ui.last_detection"), c.last_detection ? fill(t("ui.last_detection_value"), { label: className(c.last_detection.label), ts: c.last_detection.ts }) : t("ui.no_detection"), "last-detection"],
        [t("ui.today"), counts || t("ui.nothing_today"), "today"],
      ];
      if (c.frames_dropped) rows.push([t("ui.frames_dropped"), num(c.frames_dropped, 0), "dropped"]);
      const dl = el("dl", { class: "facts" });
      facts(dl, rows);
      card.append(el("p", {}, status));
      if (c.reason && c.state !== "ok") card.append(el("p", { class: "muted", text: reasonWords({ component: "camera:" + c.name, label: c.label, ...c.reason }).text }));
      card.append(dl);
      if (c.thumbnail) card.append(thumbnail(c));
      box.append(card);
    }
  }
  function renderHost() {
    const h = last.host;
    const rows = [];
    if (typeof h.cpu_percent === "number") rows.push([t("ui.cpu"), withUnit(h.cpu_percent, "%"), "cpu"]);
    if (typeof h.memory_used_percent === "number") rows.push([t("ui.memory"), withUnit(h.memory_used_percent, "%"), "memory"]);
    if (typeof h.disk_used_percent === "number") rows.push([t("ui.disk"), fill(t("ui.disk_value"), { used: h.disk_used_percent, free: h.disk_free_bytes }), "disk"]);
    const perHour = (last.outbox || {}).disk_write_bytes_per_hour;
    if (typeof perHour === "number") rows.push([t("ui.flash_writes"), fill(t("ui.flash_writes_value"), { per_hour: perHour, per_day: perHour * 24 }), "flash-writes"]);
    if (typeof h.temperature_c === "number") rows.push([t("ui.temperature"), withUnit(h.temperature_c, "Cel"), "temperature"]);
    if (typeof h.uptime_s === "number") rows.push([t("ui.uptime"), duration(h.uptime_s), "uptime"]);
    const synced = h.clock_synchronised;
    rows.push([t("ui.clock"), t(synced === true ? "ui.clock_ok" : synced === false ? "ui.clock_bad" : "ui.clock_unknown"), "clock"]);
    facts($("host"), rows);
  }
  function renderProblems() {
    const list = $("problems");
    list.replaceChildren();
    if (!last.problems.length) { list.append(el("li", { class: "muted", text: t("ui.no_problems") })); return; }
    for (const p of last.problems) {
      const label = (last.components.find((c) => c.name === p.component) || {}).label;
      const words = reasonWords({ ...p, label });
      list.append(el("li", { "data-code": p.code },
        el("span", { class: "when", text: clock(p.time) }),
        el("span", { class: "pill " + p.severity, text: t("severity." + p.severity) }), " ", words.text,
        el("span", { class: "muted", text: " · " + (p.end ? fill(t("ui.problem_ended"), p) : t("ui.problem_ongoing")) })));
    }
  }
  function renderAccess() {
    const access = last.access;
    $("no-code").hidden = access.configured;
    $("login").hidden = !access.configured || access.logged_in;
    $("unlocked").hidden = !access.logged_in;
    $("events-section").hidden = !access.logged_in;
    if (access.logged_in && events) renderEvents();
  }
  function renderEvents() {
    const list = $("events");
    list.replaceChildren();
    if (!events.events.length) list.append(el("li", { class: "muted", text: t("ui.no_events") }));
    for (const e of events.events.slice(0, 20)) {
      const d = e.data || {};
      const camera = d.camera ? componentName("camera:" + d.camera) : "";
      let words;
      if (e.kind === "detection") words = fill(t("ui.event_detection"), { camera, label: className(d.label), zone: d.zone });
      else if (e.kind === "camera") words = fill(t("ui.event_camera"), { camera, state: t("state." + (d.state || d.event)) || d.event });
      else if (e.kind === "count") words = fill(t("ui.event_count"), { camera, zone: d.zone || d.line });
      else words = fill(t("ui.event_other"), { kind: e.kind });
      list.append(el("li", {}, el("span", { class: "when", text: clock(e.ts) }), words));
    }
    const log = $("log");
    log.replaceChildren();
    for (const r of events.log.slice(0, 20)) {
      log.append(el("li", {}, el("span", { class: "when", text: clock(r.time) }), r.level + " " + r.logger + ": " + r.message));
    }
  }
  function renderComponents() {
    const list = $("components");
    list.replaceChildren();
    for (const c of last.components) {
      const item = el("li", {}, componentName(c.name, c.label), " ", pill(c.state));
      if (c.reason) item.append(el("span", { class: "muted", text: " · " + reasonWords({ component: c.name, label: c.label, state: c.state, ...c.reason }).text }));
      const tech = [c.reason && c.reason.text, c.last_error].filter(Boolean).join(" · ");
      if (tech) item.append(el("span", { class: "tech", lang: "en", text: t("ui.technical") + ": " + tech }));
      list.append(item);
    }
  }

  function render() {
    root.lang = lang;
    document.title = t("ui.title") + (last ? " · " + last.node.id : "");
    const other = lang === "vi" ? "en" : "vi";
    const button = $("lang");
    button.textContent = t("ui.switch_to");
    button.lang = other;
    for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
    renderVerdict();
    renderFreshness();
    if (!last) return;
    $("node").textContent = fill(t("ui.node"), { id: last.node.id });
    $("place").textContent = fill(t("ui.place"), last.node);
    $("version").textContent = fill(t("ui.version"), last.node);
    renderSync();
    renderAirQuality();
    renderCameras();
    renderSensors();
    renderHost();
    renderProblems();
    renderAccess();
    renderComponents();
  }

  // ---- data ----------------------------------------------------------------------------
  async function loadCatalogue(which) {
    if (!catalogues[which]) {
      const response = await fetch("i18n/" + which + ".json");
      if (!response.ok) throw new Error("catalogue " + which + ": " + response.status);
      catalogues[which] = await response.json();
    }
    return catalogues[which];
  }
  async function getJSON(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(url, { cache: "no-store", credentials: "same-origin", signal: abort.signal });
      if (!response.ok) throw new Error(url + ": " + response.status);
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }
  async function refresh() {
    try {
      const status = await getJSON("api/status");
      last = status;
      lastAt = Date.now();
      clockOffset = status.time - lastAt / 1000;
      answering = true;
      events = status.access.logged_in ? await getJSON("api/events").catch(() => events) : null;
    } catch (e) {
      answering = false; // keep showing the last data, with its age
    }
    refreshes += 1;
    render();
    document.body.dataset.refreshes = String(refreshes);
    setTimeout(refresh, REFRESH_MS);
  }

  $("lang").addEventListener("click", async () => {
    const next = lang === "vi" ? "en" : "vi";
    try { await loadCatalogue(next); } catch (e) { return; }
    lang = next;
    try { localStorage.setItem(STORE, lang); } catch (e) { /* not kept: fine */ }
    render();
  });
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = $("login-msg");
    message.textContent = "";
    try {
      const response = await fetch("login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ code: $("code").value }),
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) { $("code").value = ""; await refreshNow(); return; }
      if (response.status === 429) message.textContent = fill(t("ui.rate_limited"), { wait: body.retry_after_s || 60 });
      else if (body.error === "wrong_code") message.textContent = t("ui.wrong_code");
      else if (body.error === "not_configured") message.textContent = t("ui.no_code");
      else message.textContent = t("ui.login_error");
    } catch (e) {
      message.textContent = t("ui.login_error");
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await fetch("logout", { method: "POST", credentials: "same-origin" }); } catch (e) { /* offline */ }
    await refreshNow();
  });
  async function refreshNow() {
    try {
      last = await getJSON("api/status");
      lastAt = Date.now();
      answering = true;
      events = last.access.logged_in ? await getJSON("api/events").catch(() => null) : null;
    } catch (e) {
      answering = false;
    }
    render();
  }
  setInterval(() => { if (catalogues[lang] && !answering) renderFreshness(); }, 1000);

  loadCatalogue(lang)
    .catch(() => { lang = "vi"; return loadCatalogue("vi"); })
    .then(() => { render(); refresh(); })
    .catch(() => { $("verdict-title").textContent = "…"; });
})();
