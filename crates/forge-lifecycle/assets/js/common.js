// What every FrostGate Forge page shares: the bearer token (from the URL fragment, which the
// browser never sends, kept in this tab's session storage), JSON API calls with it, the services'
// URLs, and small DOM and formatting helpers. No framework; no inline script (the pages' CSP).
"use strict";

const Forge = (() => {
  const $ = (id) => document.getElementById(id);

  // Builds an element; children are nodes or text (never parsed as HTML).
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // The token of this page: `#token=…` once (then removed from the address bar), afterwards
  // from session storage under `key`.
  function takeToken(key) {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) {
      sessionStorage.setItem(key, fromHash);
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(key);
  }

  // The token's claims, for display only (the services verify it).
  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
    } catch (_) {
      return {};
    }
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // A JSON request with the bearer token; errors carry the API's status, code and message.
  async function api(token, url, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (token) headers.Authorization = "Bearer " + token;
    let body = opts.body;
    if (body !== undefined && typeof body !== "string") {
      body = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
    let r;
    try {
      r = await fetch(url, { ...opts, headers, body });
    } catch (e) {
      throw new ApiError(0, "unreachable", "the service cannot be reached (" + e.message + ")");
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = data.error || {};
      throw new ApiError(r.status, err.code || "", err.message || r.statusText || "request failed");
    }
    return data;
  }

  // Downloads `url` with the token, saved as `name`.
  async function download(token, url, name) {
    const r = await fetch(url, { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (!r.ok) throw new ApiError(r.status, "", "cannot download " + name);
    const blob = await r.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  let configPromise = null;
  function config() {
    configPromise = configPromise || fetch("/web/config.json").then((r) => r.json());
    return configPromise;
  }

  function duration(secs) {
    secs = Math.max(0, Math.floor(secs));
    const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
    return h > 0 ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
  }

  function ago(iso) {
    if (!iso) return "–";
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.max(s, 0)}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    return `${Math.floor(s / 3600)}h ago`;
  }

  let toastTimer = null;
  function toast(text) {
    let t = $("toast");
    if (!t) {
      t = el("div", { id: "toast", class: "toast", role: "status" });
      document.body.append(t);
    }
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  // Asks for a token in `box` (an element with an input and a button); calls `done(token)`.
  function askToken(box, key, done, why) {
    box.hidden = false;
    const input = box.querySelector("input");
    const why_ = box.querySelector("[data-why]");
    if (why_) why_.textContent = why || "";
    box.querySelector("button").onclick = () => {
      const t = input.value.trim();
      if (!t) return;
      sessionStorage.setItem(key, t);
      box.hidden = true;
      done(t);
    };
  }

  // Shows a modal dialog with `text`; resolves true when `confirmLabel` is chosen.
  function confirmDialog(text, confirmLabel, cancelLabel = "Cancel") {
    return new Promise((resolve) => {
      const yes = el("button", { class: "danger", "data-testid": "confirm-yes", text: confirmLabel });
      const no = el("button", { class: "secondary", "data-testid": "confirm-no", text: cancelLabel });
      const d = el("dialog", { "data-testid": "confirm" }, el("p", { text }), el("div", { class: "actions" }, no, yes));
      const close = (v) => { d.close(); d.remove(); resolve(v); };
      yes.onclick = () => close(true);
      no.onclick = () => close(false);
      d.addEventListener("cancel", () => close(false));
      document.body.append(d);
      d.showModal();
    });
  }

  return { $, el, takeToken, claims, api, ApiError, download, config, duration, ago, toast, askToken, confirmDialog };
})();
