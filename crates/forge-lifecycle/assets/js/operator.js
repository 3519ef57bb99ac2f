// The operator's page (/operator): the lab hosts (their leases, labs and capacity), recent
// failures of the tenant's labs, and whether the signed audit log verifies. For the
// forge.orchestrator or forge.observer roles; each section says which role it needs when the
// token lacks it.
"use strict";

(() => {
  const { $, el, api } = Forge;
  const KEY = "forge-token-operator";
  let token = null;
  let cfg = null;
  let timers = [];

  async function start(t) {
    token = t;
    cfg = await Forge.config();
    const c = Forge.claims(token);
    $("who").textContent = `${c.sub || "?"} · tenant ${c.tenant_id || "?"}`;
    const ok = await refreshHosts();
    if (!ok) return;
    $("main").hidden = false;
    refreshAudit();
    refreshFailures();
    timers.push(setInterval(refreshHosts, 5000), setInterval(refreshAudit, 15000), setInterval(refreshFailures, 10000));
  }

  function refused(e) {
    timers.forEach(clearInterval);
    timers = [];
    $("main").hidden = true;
    if (e.status === 401) {
      Forge.askToken($("token-box"), KEY, start, "That token was not accepted (expired?).");
      return;
    }
    const roles = (Forge.claims(token).roles || []).join(", ") || "none";
    $("denied").textContent = e.status === 403
      ? `This page is for operators: it needs forge.orchestrator or forge.observer, and this token has ${roles}.`
      : `Cannot load the hosts: ${e.message}`;
    $("denied").hidden = false;
  }

  async function refreshHosts() {
    let r;
    try {
      r = await api(token, `${cfg.orchestrator_url}/v1/hosts`);
    } catch (e) {
      if (e.status === 401 || e.status === 403) { refused(e); return false; }
      $("capacity").textContent = "cannot refresh: " + e.message;
      return true;
    }
    const used = r.capacity ? Math.min(100, Math.round((r.active / r.capacity) * 100)) : 0;
    $("capacity").textContent =
      `${r.active} of ${r.capacity} lab slots in use on ${r.hosts.filter((h) => h.live).length} live host(s); ${r.pending} spawn(s) waiting for a slot.`;
    $("capacity-bar").style.width = used + "%";
    $("hosts").replaceChildren(...r.hosts.map((h) => el("tr", { "data-testid": "host-row" },
      el("td", { "data-label": "host" }, el("div", {}, h.host_id, el("div", { class: "muted small mono" }, h.url))),
      el("td", { "data-label": "lease" }, el("span", { class: "pill " + (h.live ? "running" : "failed") }, h.live ? "live" : "expired")),
      el("td", { "data-label": "labs" }, String(h.active)),
      el("td", { "data-label": "capacity" }, String(h.capacity)),
      el("td", { class: "small", "data-label": "heartbeat" }, Forge.ago(h.heartbeat_at)),
      el("td", { class: "small", "data-label": "up since" }, Forge.ago(h.started_at)))));
    return true;
  }

  async function refreshAudit() {
    let s;
    try {
      s = await api(token, `${cfg.observer_url}/v1/audit/status`);
    } catch (e) {
      $("audit").replaceChildren(el("p", { class: "muted" }, "unavailable: " + e.message));
      return;
    }
    $("audit").replaceChildren(
      el("p", { class: s.verified ? "ok" : "no", "data-testid": "audit-verified", "data-verified": String(s.verified) },
        s.verified ? "✔ verifies: signatures, hash chain and head" : "✘ does not verify: " + (s.error || "")),
      el("p", { class: "small" }, `${s.events} events, ${s.checkpoints} checkpoints, last seq ${s.last_seq}`),
      el("p", { class: "small muted mono" }, `head ${s.head_hash}`),
      el("p", { class: "small muted" }, `keys ${s.key_ids.join(", ")} · checked ${Forge.ago(s.checked_at)} · ${s.log}`),
      el("p", { class: "small muted" }, "The same check offline: forge audit verify"));
  }

  async function refreshFailures() {
    let r;
    try {
      r = await api(token, `${cfg.orchestrator_url}/v1/scenarios?status=failed&limit=20`);
    } catch (e) {
      $("failures").replaceChildren();
      $("failures-note").textContent = e.status === 403
        ? "Failures name learners: they need forge.orchestrator or forge.instructor."
        : "unavailable: " + e.message;
      return;
    }
    $("failures-note").textContent = r.scenarios.length ? "" : "No failed labs.";
    $("failures").replaceChildren(
      el("tr", {}, ...["when", "lab", "host", "why"].map((h) => el("th", { text: h }))),
      ...r.scenarios.map((l) => el("tr", { "data-testid": "failure-row" },
        el("td", { class: "small" }, Forge.ago(l.ended_at || l.updated_at)),
        el("td", {}, l.template, el("div", { class: "muted small mono" }, l.scenario_id)),
        el("td", { class: "small" }, l.host_id || "–"),
        el("td", { class: "small" }, l.error || ""))));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const t = Forge.takeToken(KEY);
    if (t) start(t);
    else Forge.askToken($("token-box"), KEY, start);
  });
})();
