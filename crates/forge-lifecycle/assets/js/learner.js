// The learner's page (/access/{id}): status and time left (with a warning near the end), the
// objectives with the last check's result and hints, check, submit with a confirmation, a
// console tab per console the lab gives learners, who is watching, and once scored the signed
// score with each criterion and how to verify the bundle offline.
"use strict";

(() => {
  const { $, el, api } = Forge;
  const ID = location.pathname.split("/").filter(Boolean).pop();
  const KEY = "forge-token-" + ID;
  let token = null;
  let info = null;
  let tabs = null;
  let scoreShown = false;
  let timers = [];

  const ENDED = ["completed", "failed", "timeout"];

  function start(t) {
    token = t;
    refresh();
    timers.push(setInterval(refresh, 3000), setInterval(tick, 1000));
  }

  function stop() {
    timers.forEach(clearInterval);
    timers = [];
  }

  async function refresh() {
    try {
      info = await api(token, `/access/${ID}/info`);
    } catch (e) {
      if (e.status === 401 || e.status === 404) {
        stop();
        $("status").textContent = "not available";
        Forge.askToken($("token-box"), KEY, start,
          e.status === 401 ? "That token was not accepted (expired?)." : "This token does not open this lab.");
      } else {
        $("status").textContent = "cannot reach the platform: " + e.message;
      }
      return;
    }
    render();
  }

  function render() {
    document.title = `${info.title || info.template} · FrostGate Forge`;
    $("title").textContent = info.title || info.template;
    $("status").textContent = info.status + (info.error ? ` — ${info.error}` : "");
    $("status").className = "pill " + info.status;
    $("objectives-text").textContent = info.objectives_text;
    renderObjectives(info.objectives);
    const running = info.status === "running";
    $("check").disabled = !running || $("check").dataset.busy === "1";
    $("submit").disabled = !running;
    if (running && !tabs) {
      tabs = forgeConsoleTabs($("tabs"), $("terms"), $("term-state"), info.consoles, {
        worker: info.worker_url,
        scenario: ID,
        token: () => token,
        mode: "rw",
        onPresence: renderWatchers,
      });
    }
    if (ENDED.includes(info.status)) {
      if (tabs) { tabs.closeAll(); tabs = null; }
      $("console-panel").hidden = true;
      $("check").disabled = $("submit").disabled = true;
      if (info.status !== "failed") showScore();
    }
    tick();
  }

  function renderObjectives(objectives) {
    const list = $("objectives");
    list.replaceChildren(...objectives.map((o) => {
      const mark = o.passed === true ? ["ok", "✔"] : o.passed === false ? ["no", "✘"] : ["unknown", "○"];
      return el("li", { id: "obj-" + o.id, "data-testid": "objective", "data-passed": String(o.passed) },
        el("span", { class: "mark " + mark[0], "aria-label": o.passed === true ? "met" : o.passed === false ? "not met" : "not checked" }, mark[1]),
        el("span", {}, o.description || o.id),
        o.hint ? el("span", { class: "hint" }, "hint: " + o.hint) : null);
    }));
  }

  function tick() {
    if (!info) return;
    const secs = (Date.parse(info.expires_at) - Date.now()) / 1000;
    const running = ["pending", "creating", "running"].includes(info.status);
    const banner = $("time-banner");
    $("timer").className = "timer";
    if (!running || secs <= 0) {
      $("left").textContent = running ? "0m 00s" : "–";
      banner.hidden = true;
      return;
    }
    $("left").textContent = Forge.duration(secs);
    if (secs <= 60) {
      $("timer").className = "timer danger";
      banner.className = "banner danger";
      banner.textContent = "Less than a minute left: the lab is scored as it is when time runs out.";
      banner.hidden = false;
    } else if (secs <= 300) {
      $("timer").className = "timer warn";
      banner.className = "banner warn";
      banner.textContent = `${Math.ceil(secs / 60)} minutes left. Check your work and submit before the time runs out.`;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  function renderWatchers(people) {
    const others = new Map();
    for (const p of people) {
      if (p.role === "owner") continue;
      const k = p.sub + p.mode;
      if (!others.has(k)) others.set(k, p);
    }
    const banner = $("watch-banner");
    if (!others.size) { banner.hidden = true; return; }
    const who = [...others.values()].map((p) =>
      `${p.sub} (${p.mode === "ro" ? "watching" : "can type"})`).join(", ");
    banner.textContent = `An instructor is in your console: ${who}.`;
    banner.hidden = false;
  }

  async function check() {
    const btn = $("check");
    btn.disabled = true;
    btn.dataset.busy = "1";
    $("result").textContent = "checking…";
    try {
      const r = await api(token, `${info.worker_url}/v1/scenarios/${ID}/check`, { method: "POST" });
      $("result").textContent = `${r.passed} of ${r.total} objectives met (score ${r.score.toFixed(2)}).`;
      renderObjectives(info.objectives.map((o) => {
        const c = r.criteria.find((x) => x.criterion_id === o.id);
        return c ? { ...o, passed: c.passed, hint: c.passed ? null : (c.hint || c.message) } : o;
      }));
      renderAlerts(r.alerts || []);
    } catch (e) {
      $("result").textContent = "check failed: " + e.message;
    } finally {
      btn.dataset.busy = "";
      btn.disabled = !info || info.status !== "running";
    }
  }

  // What the lab's agents (a defender, say) raised: shown as they said it, oldest first.
  function renderAlerts(alerts) {
    const list = $("alerts");
    list.replaceChildren(...alerts.map((a) =>
      el("li", { "data-testid": "alert" }, `${new Date(a.at).toLocaleTimeString()} ${a.agent}: ${a.message}`)));
    list.hidden = alerts.length === 0;
  }

  async function submit() {
    const ok = await Forge.confirmDialog(
      "Submit now? Your lab is evaluated as it is, the signed score is published, and the lab is removed. You cannot work in it afterwards.",
      "Submit and end the lab", "Keep working");
    if (!ok) return;
    try {
      await api(token, `${info.worker_url}/v1/scenarios/${ID}/submit`, { method: "POST" });
      $("result").textContent = "Submitted; scoring and signing…";
      $("submit").disabled = $("check").disabled = true;
    } catch (e) {
      $("result").textContent = "submit failed: " + e.message;
    }
  }

  async function showScore() {
    if (scoreShown) return;
    let s;
    try {
      s = await api(token, `${info.scoreboard_url}/v1/scores/${ID}`);
    } catch (_) {
      return; // not published yet; the next refresh asks again
    }
    scoreShown = true;
    stop();
    $("result").textContent = "Scored and signed.";
    $("score-panel").hidden = false;
    $("score-value").textContent = s.score.value.toFixed(2);
    $("score-summary").textContent = ` ${s.score.passed} of ${s.score.total} criteria met · signed ${s.computed_at}`;
    const byId = new Map(info.objectives.map((o) => [o.id, o]));
    $("score-criteria").replaceChildren(
      el("tr", {}, el("th", { text: "" }), el("th", { text: "objective" }), el("th", { text: "weight" }), el("th", { text: "note" })),
      ...s.criteria.map((c) => el("tr", { "data-testid": "score-criterion" },
        el("td", { class: c.passed ? "ok" : "no" }, c.passed ? "✔" : "✘"),
        el("td", {}, (byId.get(c.criterion_id) || {}).description || c.criterion_id),
        el("td", {}, String(c.weight)),
        el("td", { class: "muted" }, c.passed ? "" : (c.message || "")))));
    const base = `${info.scoreboard_url}/v1/scores/${ID}`;
    const files = Object.keys(s.files || {});
    $("downloads").replaceChildren(
      ...files.map((f) => el("button", { class: "secondary small", text: f,
        onclick: () => Forge.download(token, `${base}/${f}`, f).catch((e) => Forge.toast(e.message)) })),
      el("button", { class: "secondary small", text: "forge-verdict-keys.json",
        onclick: () => Forge.download(null, `${info.scoreboard_url}/v1/keys/verdict`, "forge-verdict-keys.json").catch((e) => Forge.toast(e.message)) }));
    $("verify-dir").textContent =
      `# in the directory with the five downloaded files\nforge bundle verify . --public-key forge-verdict-keys.json`;
    $("verify-url").textContent =
      `forge bundle verify ${base} --token "$FORGE_TOKEN" --public-key forge-verdict-keys.json`;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("check").onclick = check;
    $("submit").onclick = submit;
    const t = Forge.takeToken(KEY);
    if (t) start(t);
    else Forge.askToken($("token-box"), KEY, start);
  });
})();
