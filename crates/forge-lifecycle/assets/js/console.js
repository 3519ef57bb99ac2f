// A lab console in the browser: xterm.js over the worker's terminal WebSocket.
//
// The socket is opened with a single-use ticket from POST …/terminal/ticket (asked for with the
// bearer token in a header), never with the token in the URL. Keystrokes (Ctrl-C, Tab, arrows:
// whatever xterm.js encodes) go out as binary frames, the window size as a resize message, and
// the console's output comes back as bytes, scrollback first, so colours and full-screen programs
// work. A dropped connection is re-opened with a fresh ticket (the session lingers on the worker,
// so the same shell is still there); the session ends for good when the token expires (close
// code 1008) or the program exits (1000).
"use strict";

class ForgeConsole {
  // host: the element to draw in; opts: {worker, scenario, token() → string, container, title,
  // mode: "rw"|"ro", onPresence(participants), onState(state, text), active() → bool}
  constructor(host, opts) {
    this.host = host;
    this.opts = opts;
    this.ws = null;
    this.term = null;
    this.fit = null;
    this.retry = 0;
    this.stopped = false;
    this.state = "closed";
    this.encoder = new TextEncoder();
  }

  open() {
    if (!this.term) {
      this.term = new Terminal({
        cursorBlink: true,
        fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
        fontSize: 14,
        scrollback: 5000,
        disableStdin: this.opts.mode === "ro",
        theme: { background: "#020617", foreground: "#e2e8f0", cursor: "#60a5fa" },
      });
      this.fit = new FitAddon.FitAddon();
      this.term.loadAddon(this.fit);
      this.term.open(this.host);
      this.term.onData((d) => this.send(this.encoder.encode(d)));
      this.term.onBinary((d) => this.send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
      this.term.onResize(({ cols, rows }) => this.sendResize(cols, rows));
      new ResizeObserver(() => this.refit()).observe(this.host);
    }
    this.stopped = false;
    this.refit();
    if (!this.ws) this.connect();
  }

  refit() {
    if (!this.term || this.host.offsetParent === null) return;
    try { this.fit.fit(); } catch (_) { /* not laid out yet */ }
  }

  focus() { if (this.term) this.term.focus(); }

  send(bytes) {
    if (this.opts.mode === "ro") return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  sendResize(cols, rows) {
    if (this.opts.mode === "ro") return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "resize", cols, rows }));
    }
  }

  setState(state, text) {
    this.state = state;
    if (this.opts.onState) this.opts.onState(state, text || "");
  }

  async connect() {
    if (this.stopped) return;
    this.setState("connecting", "connecting…");
    const o = this.opts;
    let ticket;
    try {
      ticket = await Forge.api(o.token(), `${o.worker}/v1/scenarios/${o.scenario}/terminal/ticket`, {
        method: "POST",
        body: { container: o.container, mode: o.mode },
      });
    } catch (e) {
      // 401: the token; 403/404/409: not allowed or the lab is over — retrying will not help.
      if ([401, 403, 404, 409].includes(e.status)) {
        this.stopped = true;
        this.setState("closed", e.message);
      } else {
        this.later(e.message);
      }
      return;
    }
    const url = o.worker.replace(/^http/, "ws") + ticket.path;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.retry = 0;
      this.setState("open", o.mode === "ro" ? "connected (read-only)" : "connected");
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== "string") {
        this.term.write(new Uint8Array(m.data));
        return;
      }
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { this.term.write(m.data); return; }
      if (msg.type === "hello") {
        // A new connection replays the scrollback: start from a clean screen.
        this.term.reset();
        this.refit();
        this.sendResize(this.term.cols, this.term.rows);
      } else if (msg.type === "presence" && o.onPresence) {
        o.onPresence(msg.participants || []);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (o.onPresence) o.onPresence([]);
      if (ev.code === 1008) {
        this.stopped = true;
        this.setState("closed", "session ended: your access token expired; reload with a new one");
      } else if (ev.code === 1000) {
        this.stopped = true;
        this.setState("ended", "the console's program ended");
      } else if (!this.stopped) {
        this.later("connection lost");
      } else {
        this.setState("closed", "closed");
      }
    };
  }

  // Reconnects after a growing pause (1 s … 10 s), while the console should stay open.
  later(why) {
    if (this.stopped) return;
    const wait = Math.min(10000, 1000 * 2 ** this.retry);
    this.retry += 1;
    this.setState("connecting", `${why}; reconnecting in ${Math.round(wait / 1000)}s…`);
    setTimeout(() => {
      if (!this.stopped && (!this.opts.active || this.opts.active())) this.connect();
    }, wait);
  }

  // Opens the console again after its program ended.
  restart() {
    this.stopped = false;
    this.retry = 0;
    if (!this.ws) this.connect();
  }

  close() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  dispose() {
    this.close();
    if (this.term) this.term.dispose();
    this.term = null;
  }
}

// Tabs of consoles in `tabsEl` / `termsEl`, one per console of `consoles` ([{container, title,
// command}]); opts as ForgeConsole's, minus container/title. Returns {consoles, show(name),
// closeAll(), presence(): participants of every console}.
function forgeConsoleTabs(tabsEl, termsEl, stateEl, consoles, opts) {
  const open = new Map();
  const people = new Map();
  let current = null;
  tabsEl.replaceChildren();
  termsEl.replaceChildren();
  for (const c of consoles) {
    const dot = Forge.el("span", { class: "dot" });
    const tab = Forge.el("button", {
      class: "tab", role: "tab", "aria-selected": "false", "data-testid": "console-tab",
      "data-container": c.container, title: c.command ? `runs ${c.command}` : "shell",
    }, dot, c.title);
    const host = Forge.el("div", { class: "term", hidden: true, "data-testid": "terminal", "data-container": c.container });
    tabsEl.append(tab);
    termsEl.append(host);
    const con = new ForgeConsole(host, {
      ...opts,
      container: c.container,
      title: c.title,
      active: () => current === c.container,
      onState: (state, text) => {
        dot.className = "dot " + (state === "open" ? "open" : state === "connecting" ? "connecting" : "closed");
        if (current === c.container && stateEl) renderState(state, text, con);
      },
      onPresence: (list) => {
        people.set(c.container, list);
        if (opts.onPresence) opts.onPresence(all());
      },
    });
    open.set(c.container, { con, tab, host });
    tab.onclick = () => show(c.container);
  }

  function renderState(state, text, con) {
    stateEl.replaceChildren(text);
    if (state === "ended") {
      stateEl.append(" ", Forge.el("button", { class: "small", text: "Restart console", onclick: () => con.restart() }));
    }
  }

  function all() {
    return [...people.entries()].flatMap(([container, list]) => list.map((p) => ({ ...p, container })));
  }

  function show(name) {
    const entry = open.get(name);
    if (!entry) return;
    current = name;
    for (const [n, e] of open) {
      e.tab.setAttribute("aria-selected", String(n === name));
      e.host.hidden = n !== name;
    }
    entry.con.open();
    entry.con.focus();
    if (stateEl) renderState(entry.con.state, "", entry.con);
  }

  function closeAll() {
    for (const e of open.values()) e.con.dispose();
    open.clear();
    tabsEl.replaceChildren();
    termsEl.replaceChildren();
  }

  if (consoles.length) show(consoles[0].container);
  return { show, closeAll, presence: all, get: (n) => open.get(n) && open.get(n).con };
}
