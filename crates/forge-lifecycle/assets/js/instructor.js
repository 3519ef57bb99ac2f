// The instructor's view (/instructor): the tenant's live labs (learner, template, state, time
// left, progress of the last check), refreshed within a second; a drop-in console into any of
// them, read-only or read-write (audited, and the learner sees it); more time; end a lab;
// the ended labs' scores and bundles; fairness per track and template; the console-access
// entries of the audit log; the LLM proposals that wait for an instructor's approval (when the
// platform has an LLM endpoint), with approve and reject. Everything is the caller's tenant's:
// the APIs scope it.
"use strict";

(() => {
  const { $, el, api } = Forge;
  const KEY = "forge-token-instructor";
  let token = null;
  let cfg = null;
  let labs = [];
  let drop = null; // {id, mode, tabs}
  let timers = [];
  const scores = new Map();

  async function start(t) {
    token = t;
    cfg = await Forge.config();
    const c = Forge.claims(token);
    $("who").textContent = `${c.sub || "?"} · tenant ${c.tenant_id || "?"}`;
    const ok = await refreshLabs();
    if (!ok) return;
    $("main").hidden = false;
    refreshEnded();
    refreshFairness();
    refreshAudit();
    timers.push(setInterval(refreshLabs, 700), setInterval(tick, 1000),
      setInterval(refreshEnded, 5000), setInterval(refreshFairness, 15000), setInterval(refreshAudit, 5000));
    refreshPending();
    timers.push(setInterval(refreshPending, 3000));
  }

  function stop() {
    timers.forEach(clearInterval);
    timers = [];
  }

  // A refusal of the token: say why, stop, and (for a bad token) ask for another.
  function refused(e) {
    stop();
    $("main").hidden = true;
    const roles = (Forge.claims(token).roles || []).join(", ") || "none";
    if (e.status === 401) {
      Forge.askToken($("token-box"), KEY, start, "That token was not accepted (expired?).");
      return;
    }
    $("denied").textContent = e.status === 403
      ? `This view is for instructors: it needs the forge.instructor role, and this token has ${roles}.`
      : `Cannot load the labs: ${e.message}`;
    $("denied").hidden = false;
  }

  async function refreshLabs() {
    let r;
    try {
      r = await api(token, `${cfg.orchestrator_url}/v1/scenarios?status=active`);
    } catch (e) {
      if (e.status === 401 || e.status === 403) { refused(e); return false; }
      $("labs-updated").textContent = "(cannot refresh: " + e.message + ")";
      return true;
    }
    labs = r.scenarios.map((l) => ({ ...l, seen: Date.now() }));
    $("denied").hidden = true;
    $("labs-updated").textContent = "updated " + new Date().toLocaleTimeString();
    renderLabs();
    return true;
  }

  function progress(l) {
    const c = l.last_check;
    if (!c) return el("span", { class: "muted" }, "no check yet");
    return el("span", {}, el("b", {}, `${c.passed}/${c.total}`), " ",
      el("span", { class: "muted small" }, Forge.ago(c.checked_at)));
  }

  function left(l) {
    return Math.max(0, l.seconds_left - (Date.now() - l.seen) / 1000);
  }

  function renderLabs() {
    $("labs-empty").hidden = labs.length > 0;
    $("labs").replaceChildren(...labs.map((l) => {
      const running = l.status === "running";
      return el("tr", { "data-testid": "lab-row", "data-scenario": l.scenario_id },
        el("td", { "data-label": "learner" }, l.owner_sub),
        el("td", { "data-label": "lab" }, el("div", {}, l.template, el("div", { class: "muted small mono" }, l.scenario_id))),
        el("td", { "data-label": "state" }, el("span", { class: "pill " + l.status }, l.status)),
        el("td", { class: "mono", "data-label": "time left", "data-left": l.scenario_id }, Forge.duration(left(l))),
        el("td", { "data-label": "progress" }, progress(l)),
        el("td", { "data-label": "actions" }, el("div", { class: "actions" },
          el("button", { class: "small", "data-testid": "watch", disabled: !running, text: "Watch",
            title: "read-only drop-in: you see the learner's console, your keys are not sent",
            onclick: () => dropIn(l, "ro") }),
          el("button", { class: "small secondary", "data-testid": "join", disabled: !running, text: "Join",
            title: "read-write drop-in: you can type in the learner's console",
            onclick: () => dropIn(l, "rw") }),
          el("button", { class: "small secondary", "data-testid": "extend", text: "+15 min",
            onclick: () => extend(l, 15) }),
          el("button", { class: "small danger", "data-testid": "end", text: "End",
            onclick: () => end(l) }))));
    }));
  }

  function tick() {
    for (const l of labs) {
      const cell = document.querySelector(`[data-left="${l.scenario_id}"]`);
      if (cell) cell.textContent = Forge.duration(left(l));
    }
  }

  async function dropIn(l, mode) {
    let info;
    try {
      info = await api(token, `/access/${l.scenario_id}/info`);
    } catch (e) {
      Forge.toast("cannot open the lab: " + e.message);
      return;
    }
    leave();
    $("dropin").hidden = false;
    $("dropin-what").textContent = `${l.owner_sub}'s lab ${l.template} (${l.scenario_id}): `;
    $("dropin-mode").textContent = mode === "ro" ? "read-only" : "read-write";
    $("dropin-mode").className = "pill " + mode;
    $("dropin-switch").textContent = mode === "ro" ? "Switch to read-write" : "Switch to read-only";
    $("dropin-switch").onclick = () => dropIn(l, mode === "ro" ? "rw" : "ro");
    const tabs = forgeConsoleTabs($("dropin-tabs"), $("dropin-terms"), $("dropin-state"), info.consoles, {
      worker: cfg.worker_url,
      scenario: l.scenario_id,
      token: () => token,
      mode,
    });
    drop = { id: l.scenario_id, mode, tabs };
    $("dropin").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function leave() {
    if (drop) drop.tabs.closeAll();
    drop = null;
    $("dropin").hidden = true;
  }

  async function extend(l, minutes) {
    try {
      const r = await api(token, `${cfg.orchestrator_url}/v1/scenarios/${l.scenario_id}/extend`, {
        method: "POST", body: { minutes } });
      Forge.toast(`${l.owner_sub}'s lab now ends at ${new Date(r.expires_at).toLocaleTimeString()}`);
      refreshLabs();
    } catch (e) {
      Forge.toast("cannot extend: " + e.message);
    }
  }

  async function end(l) {
    const ok = await Forge.confirmDialog(
      `End ${l.owner_sub}'s lab now? It is removed without a score; the learner sees it ended.`, "End the lab");
    if (!ok) return;
    try {
      await api(token, `${cfg.orchestrator_url}/v1/scenarios/${l.scenario_id}`, { method: "DELETE" });
      if (drop && drop.id === l.scenario_id) leave();
      Forge.toast("ended " + l.scenario_id);
      refreshLabs();
    } catch (e) {
      Forge.toast("cannot end: " + e.message);
    }
  }

  async function refreshEnded() {
    let r;
    try {
      r = await api(token, `${cfg.orchestrator_url}/v1/scenarios?status=ended&limit=25`);
    } catch (_) { return; }
    $("ended").replaceChildren(...r.scenarios.map((l) => {
      const cell = el("td", {});
      if (l.status === "failed") cell.append(el("span", { class: "muted" }, l.error || "no score"));
      else showScore(cell, l);
      cell.setAttribute("data-label", "score");
      return el("tr", { "data-testid": "ended-row", "data-scenario": l.scenario_id },
        el("td", { "data-label": "learner" }, l.owner_sub),
        el("td", { "data-label": "lab" }, el("div", {}, l.template, el("div", { class: "muted small mono" }, l.scenario_id))),
        el("td", { "data-label": "state" }, el("span", { class: "pill " + l.status }, l.status)),
        el("td", { class: "small", "data-label": "ended" }, Forge.ago(l.ended_at)),
        cell);
    }));
  }

  async function showScore(cell, l) {
    let s = scores.get(l.scenario_id);
    if (!s) {
      try {
        s = await api(token, `${cfg.scoreboard_url}/v1/scores/${l.scenario_id}`);
        scores.set(l.scenario_id, s);
      } catch (_) {
        cell.append(el("span", { class: "muted" }, "scoring…"));
        return;
      }
    }
    const base = `${cfg.scoreboard_url}/v1/scores/${l.scenario_id}`;
    cell.append(el("span", {}, el("b", {}, s.score.value.toFixed(2)), ` (${s.score.passed}/${s.score.total}) `,
      el("button", { class: "small secondary", text: "bundle",
        title: "download score.json, evidence.tar.zst, manifest.json and verdict.sig",
        onclick: async () => {
          for (const f of Object.keys(s.files || {})) {
            await Forge.download(token, `${base}/${f}`, `${l.scenario_id}-${f}`).catch((e) => Forge.toast(e.message));
          }
        } })));
  }

  async function refreshFairness() {
    let f;
    try {
      f = await api(token, `${cfg.observer_url}/v1/fairness`);
    } catch (e) {
      $("fairness-note").textContent = "fairness statistics unavailable: " + e.message;
      return;
    }
    const pct = (x) => `${Math.round(x * 100)}%`;
    $("fairness").replaceChildren(
      el("tr", {}, ...["track", "tier", "template", "labs", "mean", "pass rate"].map((h) => el("th", { text: h }))),
      ...f.groups.map((g) => el("tr", {}, el("td", {}, g.track), el("td", {}, g.tier), el("td", {}, g.template),
        el("td", {}, String(g.count)), el("td", {}, g.mean_score.toFixed(2)), el("td", {}, pct(g.pass_rate)))));
    const uneven = (f.disparities || []).filter((d) => d.pass_rate_ratio < 0.8);
    $("fairness-note").textContent = f.groups.length === 0 ? "No scored labs yet."
      : uneven.length ? "Uneven: " + uneven.map((d) => `${d.track}/${d.tier}: ${d.hardest} passes ${pct(d.pass_rate_ratio)} as often as ${d.easiest}`).join("; ")
        : "Templates of the same track and tier pass about equally often.";
  }

  async function refreshAudit() {
    let events;
    try {
      events = await api(token, `${cfg.observer_url}/v1/audit/recent?event_type=scenario.terminal`);
    } catch (_) { return; }
    const rows = events.slice(-15).reverse();
    $("console-audit").replaceChildren(
      el("tr", {}, ...["when", "who", "lab", "console", "mode"].map((h) => el("th", { text: h }))),
      ...rows.map((e) => {
        const d = e.details || {};
        return el("tr", { "data-testid": "audit-row", "data-scenario": e.resource_id, "data-dropin": String(!!d.dropin) },
          el("td", { class: "small" }, Forge.ago(e.timestamp)),
          el("td", {}, e.actor, d.dropin ? el("span", { class: "muted small" }, ` in ${d.owner}'s lab`) : null),
          el("td", { class: "mono small" }, e.resource_id),
          el("td", {}, d.container || ""),
          el("td", {}, d.mode || ""));
      }));
  }

  // Pending LLM proposals of the running labs, asked of each lab's host (they live in its
  // worker's memory). Without an LLM endpoint (409 llm_disabled) the panel stays hidden.
  let llmOff = false;
  let llmSeen = false; // a worker answered: proposals are on
  async function refreshPending() {
    if (llmOff) return;
    const rows = [];
    for (const l of labs.filter((x) => x.status === "running")) {
      let r;
      try {
        r = await api(token, `${cfg.worker_url}/v1/scenarios/${l.scenario_id}/proposals?status=pending_approval`);
      } catch (e) {
        if (e.code === "llm_disabled") { llmOff = true; $("approvals").hidden = true; return; }
        continue;
      }
      llmSeen = true;
      for (const p of r.proposals) rows.push({ l, p });
    }
    $("approvals").hidden = !llmSeen;
    $("pending-empty").hidden = rows.length > 0;
    $("pending").replaceChildren(...rows.map(({ l, p }) => el("tr", { "data-testid": "pending-row", "data-proposal": p.proposal_id },
      el("td", { "data-label": "learner" }, l.owner_sub),
      el("td", { "data-label": "lab" }, el("div", {}, l.template, el("div", { class: "muted small mono" }, l.scenario_id))),
      el("td", { "data-label": "proposal" }, el("div", {}, `${p.kind || p.asked_kind}`, p.container ? ` in ${p.container}` : ""),
        p.command ? el("div", { class: "mono small" }, p.command) : null,
        el("div", { class: "muted small" }, p.rationale || "")),
      el("td", { class: "small", "data-label": "why approval" }, (p.approval_reasons || []).join("; ")),
      el("td", { class: "small", "data-label": "asked by" }, p.asked_by, " ", el("span", { class: "muted" }, Forge.ago(p.asked_at))),
      el("td", { "data-label": "actions" }, el("div", { class: "actions" },
        el("button", { class: "small", "data-testid": "approve", text: "Approve",
          onclick: () => decide(l, p, "approve") }),
        el("button", { class: "small danger", "data-testid": "reject", text: "Reject",
          onclick: () => decide(l, p, "reject") }))))));
  }

  async function decide(l, p, verdict) {
    if (verdict === "approve") {
      const ok = await Forge.confirmDialog(
        `Run \`${p.command || p.kind}\` in ${l.owner_sub}'s lab${p.container ? " (" + p.container + ")" : ""}?`, "Approve and run");
      if (!ok) return;
    }
    try {
      const r = await api(token, `${cfg.worker_url}/v1/scenarios/${l.scenario_id}/proposals/${p.proposal_id}/${verdict}`,
        { method: "POST" });
      const out = r.output ? ` (exit ${r.output.exit_code})` : "";
      Forge.toast(`${p.proposal_id}: ${r.status}${out}`);
    } catch (e) {
      Forge.toast(`cannot ${verdict}: ` + e.message);
    }
    refreshPending();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("dropin-close").onclick = leave;
    const t = Forge.takeToken(KEY);
    if (t) start(t);
    else Forge.askToken($("token-box"), KEY, start);
  });
})();
