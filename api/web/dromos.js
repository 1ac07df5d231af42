// Dromos status page. Hand-written, no dependencies, no build step.
//
// Data: the page carries a snapshot inline (#dromos-state, the document GET /ui/state
// answers; see api/snapshot.py build_state), rendered at once; after the load event
// /ui/events (server-sent events) sends `state` (a full snapshot) and `bus` (one event of
// the Marathon or Dromos stream). Every section is re-rendered from the latest snapshot;
// the events feed only grows.
//
// Safety rule: user-provided strings (app ids, commands, labels, job names, descriptions,
// messages, log output) only ever reach the page as text nodes (h() below, textContent) or
// attribute values (title, data-*). Nothing here ever has a string parsed as HTML (a test
// greps this file for the DOM calls that would).
"use strict";

(() => {
  // ------------------------------------------------------------------ DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);

  /** An element; string children become text nodes, attrs never go through HTML parsing. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "width%") el.style.width = `${Math.max(0, Math.min(100, v))}%`;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  // ------------------------------------------------------------------ formatting

  let clockOffset = 0; // server time - browser time, ms
  const now = () => Date.now() + clockOffset;

  function num(x, digits = 2) {
    if (x === null || x === undefined) return "–";
    const t = Number(x).toFixed(digits);
    return t.includes(".") ? t.replace(/\.?0+$/, "") : t;
  }
  function mem(mib) {
    if (mib >= 1024) return `${num(mib / 1024, 1)} GiB`;
    return `${num(mib, 0)} MiB`;
  }
  function dur(sec) {
    if (sec === null || sec === undefined) return "–";
    if (sec < 1) return `${Math.round(sec * 1000)} ms`;
    if (sec < 60) return `${num(sec, 1)} s`;
    const m = Math.floor(sec / 60), r = Math.round(sec % 60);
    if (m < 60) return `${m}m ${String(r).padStart(2, "0")}s`;
    const hh = Math.floor(m / 60);
    return `${hh}h ${String(m % 60).padStart(2, "0")}m`;
  }
  function span(ms) {
    const sec = Math.max(0, Math.round(ms / 1000));
    if (sec < 60) return `${sec}s`;
    const m = Math.floor(sec / 60);
    if (m < 60) return `${m}m ${String(sec % 60).padStart(2, "0")}s`;
    const hh = Math.floor(m / 60);
    if (hh < 48) return `${hh}h ${String(m % 60).padStart(2, "0")}m`;
    return `${Math.floor(hh / 24)}d ${hh % 24}h`;
  }
  function ago(iso) {
    if (!iso) return "";
    const d = now() - Date.parse(iso);
    return d < 5000 ? "just now" : `${span(d)} ago`;
  }
  function until(iso) {
    const d = Date.parse(iso) - now();
    return d <= 0 ? "due now" : `in ${span(d)}`;
  }
  /** The browser's IANA zone: absolute times without a zone of their own are shown in it. */
  const localZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  /** The calendar fields of a moment in a zone (null zone: the browser's). */
  function fields(ms, zone) {
    const parts = {};
    const f = new Intl.DateTimeFormat("en-US", {
      timeZone: zone || undefined, year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    });
    for (const p of f.formatToParts(ms)) parts[p.type] = p.value;
    return parts;
  }

  /** "14:05:09", "Dec 5 02:00:00" or "Dec 5, 2031 02:00:00": the date only when it is not
   * today (in that zone). With `zone` (an IANA name) the time is read there, else in the
   * browser's zone; `label` appends the zone's short name ("CET", "GMT+1"). */
  function clock(iso, zone = null, label = false) {
    if (!iso) return "–";
    let d, ref;
    try { d = fields(Date.parse(iso), zone); ref = fields(now(), zone); } catch (e) { return clock(iso, null, true); }
    const t = `${d.hour}:${d.minute}:${d.second}`;
    const day = ref.year === d.year && ref.month === d.month && ref.day === d.day ? ""
      : ref.year === d.year ? `${d.month} ${d.day} ` : `${d.month} ${d.day}, ${d.year} `;
    return `${day}${t}${label ? ` ${d.timeZoneName}` : ""}`;
  }

  /** A text node's element that keeps saying how long ago `iso` was (see tick()). */
  const agoEl = (iso, tag = "span", attrs = {}) => h(tag, { ...attrs, dataset: { ago: iso } }, ago(iso));
  const shortId = (id) => (id && id.length > 22 ? `${id.slice(0, 10)}…${id.slice(-6)}` : id || "");

  function toast(text, bad = false) {
    const t = h("div", { class: bad ? "toast bad" : "toast" }, text);
    $("#toasts").append(t);
    setTimeout(() => t.remove(), 4000);
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.message || data.detail || `${r.status} ${r.statusText}`);
    return data;
  }

  // ------------------------------------------------------------------ state

  let state = null;
  const expanded = new Set(); // app ids whose task list is open

  function render() {
    if (!state) return;
    renderRuntime(state.runtime);
    renderSummary(state);
    renderServices(state.apps);
    renderCluster(state.nodes);
    renderSharing(state.sharing);
    renderJobs(state.jobs);
    renderDag(state.dag);
    renderDeployments(state.deployments);
    renderLogTargets(state);
    tick();
  }

  function renderRuntime(rt) {
    const el = $("#runtime");
    el.className = rt.available ? "pill ok" : "pill bad";
    el.textContent = rt.available ? `${rt.name} runtime` : `${rt.name} runtime unavailable: ${rt.error || "unknown"}`;
    el.title = rt.summary;
  }

  // ------------------------------------------------------------------ summary

  function card(label, value, sub, cls) {
    return h("div", { class: `card ${cls || ""}` },
      h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub));
  }

  function renderSummary(st) {
    let cap = 0, used = 0, mcap = 0, mused = 0;
    for (const n of st.nodes) { cap += n.capacity.cpus; used += n.used.cpus; mcap += n.capacity.mem; mused += n.used.mem; }
    const pct = (a, b) => (b > 0 ? Math.round((100 * a) / b) : 0);
    let want = 0, running = 0, healthy = 0, checked = 0, waiting = 0;
    for (const a of st.apps) {
      want += a.instances; running += a.counts.running; waiting += a.waiting ? a.waiting.count : 0;
      if (a.healthChecks) { healthy += a.counts.healthy; checked += a.instances; }
    }
    const jobsRunning = st.jobs.filter((j) => j.status === "running").length;
    const failing = st.jobs.filter((j) => j.state === "failure").length;
    $("#summary").replaceChildren(
      card("Nodes", String(st.nodes.length), `${pct(used, cap)}% CPU · ${pct(mused, mcap)}% memory reserved`),
      card("Services", String(st.apps.length), `${running} of ${want} instances running`),
      card("Healthy", checked ? h("span", null, String(healthy), h("small", null, ` / ${checked}`)) : "–",
        checked ? "instances passing health checks" : "no app has health checks",
        checked && healthy < checked ? "warn" : ""),
      card("Waiting", String(waiting), waiting ? "instances that cannot be placed yet" : "every instance is placed", waiting ? "warn" : ""),
      card("Jobs", String(st.jobs.length), `${jobsRunning} running now`),
      card("Failing jobs", String(failing), failing ? "last run failed" : "no job's last run failed", failing ? "alert" : ""),
    );
  }

  // ------------------------------------------------------------------ services

  function instanceBar(a) {
    const c = a.counts;
    const healthy = a.healthChecks ? c.healthy : 0;
    const unhealthy = a.healthChecks ? c.unhealthy : 0;
    const plain = Math.max(0, c.running - healthy - unhealthy);
    const missing = Math.max(0, a.instances - c.running - c.staged);
    const total = Math.max(1, a.instances, c.running + c.staged + c.killing);
    const bar = h("div", { class: "ibar", title: `${c.running} running, ${healthy} healthy, ${unhealthy} unhealthy, ${c.staged} staged, ${c.killing} stopping, ${missing} missing of ${a.instances} wanted` });
    for (const [cls, n] of [["healthy", healthy], ["running", plain], ["unhealthy", unhealthy], ["staged", c.staged], ["killing", c.killing], ["missing", missing]]) {
      if (n > 0) bar.append(h("span", { class: cls, "width%": (100 * n) / total }));
    }
    return bar;
  }

  function healthCell(a) {
    if (!a.healthChecks) return h("span", { class: "muted" }, "no checks");
    const c = a.counts;
    if (c.unhealthy > 0) return h("span", { class: "pill bad" }, `${c.unhealthy} unhealthy`);
    if (c.healthy >= a.instances && a.instances > 0) return h("span", { class: "pill ok" }, "healthy");
    if (a.instances === 0) return h("span", { class: "muted" }, "–");
    return h("span", { class: "pill wait" }, `${c.healthy} / ${a.instances} healthy`);
  }

  function statusCell(a) {
    const parts = [];
    if (a.waiting) {
      parts.push(h("div", { class: "why" },
        h("b", null, `${a.waiting.count} waiting`), " — ",
        a.waiting.delayedUntil
          ? h("span", null, "launch delayed (backoff), retry ", h("span", { dataset: { countdown: a.waiting.delayedUntil } }, until(a.waiting.delayedUntil)))
          : h("span", { class: "reason" }, a.waiting.reason),
      ));
    } else {
      const c = a.counts;
      const converged = c.running === a.instances && c.staged === 0 && c.killing === 0 &&
        (!a.healthChecks || c.healthy === a.instances);
      if (a.instances === 0 && c.running === 0) parts.push(h("span", { class: "muted" }, "suspended (0 instances)"));
      else if (converged) parts.push(h("span", { class: "ok-text" }, "✓ running as wanted"));
      else parts.push(h("span", { class: "pill info" }, c.killing ? "stopping tasks" : c.staged ? "starting" : "converging"));
    }
    const f = a.lastTaskFailure;
    if (f && f.timestamp && now() - Date.parse(f.timestamp) < 3600e3) {
      parts.push(h("div", { class: "fail-note", title: f.taskId || "" }, "last failure ", agoEl(f.timestamp), `: ${f.message || f.state}`));
    }
    return parts;
  }

  function appRows(a) {
    const open = expanded.has(a.id);
    const what = a.image ? `image ${a.image}` : a.cmd || "";
    const row = h("tr", { dataset: { app: a.id } },
      h("td", null, h("button", {
        class: "toggle", title: open ? "hide tasks" : "show tasks", "aria-expanded": open ? "true" : "false",
        onclick: () => { open ? expanded.delete(a.id) : expanded.add(a.id); renderServices(state.apps); },
      }, open ? "▾" : "▸")),
      h("td", null,
        h("div", { class: "name" }, a.id),
        what ? h("code", { class: "cmd", title: what }, what) : null,
        Object.keys(a.labels).length ? h("div", { class: "chips" }, Object.entries(a.labels).map(([k, v]) => h("span", { class: "chip label", title: `${k}=${v}` }, `${k}=${v}`))) : null),
      h("td", null,
        h("div", { class: "counts" }, `${a.counts.running} / ${a.instances} running`),
        instanceBar(a),
        h("div", { class: "counts-sub" }, [a.healthChecks ? `${a.counts.healthy} healthy` : null, `${a.counts.staged} staged`, a.counts.killing ? `${a.counts.killing} stopping` : null].filter(Boolean).join(" · "))),
      h("td", null, healthCell(a)),
      h("td", { title: `version ${a.version || "?"}\nconfig changed ${a.lastConfigChangeAt || "?"}` }, agoEl(a.version, "div"), h("div", { class: "counts-sub" }, clock(a.version, null, true))),
      h("td", null,
        h("div", null, `${num(a.resources.cpus)} CPU · ${mem(a.resources.mem)}`),
        a.constraints.length ? h("div", { class: "chips" }, a.constraints.map((c) => h("span", { class: "chip constraint" }, c.join(" ")))) : null),
      h("td", null, statusCell(a)),
    );
    const rows = [row];
    if (open) {
      const tasks = a.tasks.length
        ? h("table", { class: "tasks" },
          h("tr", null, ["task", "node", "ports", "state", "health", "started", ""].map((t) => h("th", null, t))),
          a.tasks.map((t) => h("tr", null,
            h("td", null, h("code", { title: t.id }, t.id)),
            h("td", null, t.host),
            h("td", null, t.ports.join(", ")),
            h("td", null, h("span", { class: `state ${t.state}` }, t.state.replace("TASK_", "").toLowerCase())),
            h("td", null, t.health === true ? h("span", { class: "ok-text" }, "healthy") : t.health === false ? h("span", { class: "bad-text" }, "unhealthy") : h("span", { class: "muted" }, "–")),
            h("td", { title: t.startedAt || "" }, t.startedAt ? agoEl(t.startedAt) : "–"),
            h("td", null, h("button", { class: "link", onclick: () => openLogs(t.id) }, "logs")),
          )))
        : h("p", { class: "empty" }, "No tasks.");
      rows.push(h("tr", { class: "detail" }, h("td", { colspan: "7" }, tasks)));
    }
    return rows;
  }

  function renderServices(apps) {
    const body = $("#services .body");
    if (!apps.length) {
      body.replaceChildren(h("p", { class: "empty" }, "No apps yet. Deploy one with ", h("code", null, "dromos deploy -f app.json"), " or POST it to /v2/apps."));
      return;
    }
    body.replaceChildren(h("table", { class: "grid services" },
      h("thead", null, h("tr", null, ["", "App", "Instances", "Health", "Version", "Resources", "Status"].map((t) => h("th", null, t)))),
      h("tbody", null, apps.map(appRows))));
  }

  // ------------------------------------------------------------------ deployments
  // From the snapshot (api/snapshot.py deployment_rows); the section shows while any runs.

  function deploymentNow(d) {
    if (d.state !== "waiting") return (d.currentActions || []).map((x) => h("div", null, `${x.action} ${x.app || ""}`));
    return d.waiting.map((w) => h("div", { class: "why" },
      h("b", null, `waiting: ${w.count} instance${w.count === 1 ? "" : "s"} of ${w.app}`), " — ", h("span", { class: "reason" }, w.reason)));
  }

  function renderDeployments(list) {
    const sec = $("#deployments");
    sec.hidden = !list.length;
    if (!list.length) return;
    $(".body", sec).replaceChildren(h("table", { class: "grid" },
      h("tr", null, ["Deployment", "Apps", "Progress", "Now", ""].map((t) => h("th", null, t))),
      list.map((d) => h("tr", { class: `deployment ${d.state === "waiting" ? "waiting" : ""}`, dataset: { deployment: d.id } },
        h("td", { title: d.id }, h("code", null, shortId(d.id)), agoEl(d.version, "div", { class: "counts-sub" })),
        h("td", null, (d.affectedApps || []).join(", ")),
        h("td", null,
          h("div", { class: `dbar${d.state === "waiting" ? " waiting" : ""}`, title: `${Math.round(100 * d.progress)}% done` }, h("i", { "width%": 100 * d.progress })),
          h("div", { class: "counts-sub" }, `step ${d.currentStep} of ${d.totalSteps}`, d.state === "waiting" ? [" · ", h("span", { class: "pill wait" }, "waiting")] : null)),
        h("td", null, deploymentNow(d)),
        h("td", null, h("button", {
          onclick: async (ev) => {
            ev.target.disabled = true;
            const r = await fetch(`/v2/deployments/${encodeURIComponent(d.id)}`, { method: "DELETE" });
            toast(r.ok ? `Cancelling deployment ${shortId(d.id)}` : `Cancel failed: ${r.status}`, !r.ok);
          },
        }, "Cancel"))))));
  }

  // ------------------------------------------------------------------ cluster

  function resRow(label, used, cap, fmt) {
    const pct = cap > 0 ? (100 * used) / cap : 0;
    return h("div", { class: "res" },
      h("span", { class: "lbl" }, label),
      h("div", { class: "ubar", title: `${Math.round(pct)}% reserved` }, h("i", { class: pct >= 95 ? "full" : pct >= 75 ? "high" : "", "width%": pct })),
      h("span", { class: "amt" }, `${fmt(used)} / ${fmt(cap)}`));
  }

  function renderCluster(nodes) {
    const body = $("#cluster .body");
    if (!nodes.length) { body.replaceChildren(h("p", { class: "empty" }, "No nodes: nothing can be placed. Check the runtime above.")); return; }
    body.replaceChildren(h("div", { class: "nodes" }, nodes.map((n) => h("div", { class: "node", dataset: { node: n.hostname } },
      h("div", { class: "node-head" }, h("span", { class: "name" }, n.hostname), h("span", { class: "counts-sub", title: "ports" }, n.ports)),
      Object.keys(n.attributes).length ? h("div", { class: "chips" }, Object.entries(n.attributes).map(([k, v]) => h("span", { class: "chip", title: `${k}=${v}` }, `${k}=${v}`))) : null,
      resRow("cpu", n.used.cpus, n.capacity.cpus, (x) => num(x)),
      resRow("mem", n.used.mem, n.capacity.mem, mem),
      resRow("disk", n.used.disk, n.capacity.disk, mem),
      h("div", { class: "node-tasks" },
        h("div", { class: "counts-sub" }, n.tasks.length === 1 ? "1 task" : `${n.tasks.length} tasks`),
        n.tasks.length ? h("div", { class: "chips" }, n.tasks.map((t) => h("span", {
          class: `chip ${t.kind === "run" ? "t-job" : t.state === "TASK_RUNNING" ? "t-run" : t.state === "TASK_KILLING" ? "t-kill" : "t-stage"}`,
          title: `${t.id} (${t.kind === "run" ? "job run" : t.state})`, onclick: () => openLogs(t.kind === "run" ? t.runId : t.id),
        }, t.kind === "run" ? `⏵ ${t.job}` : t.appId))) : null),
    ))));
  }

  // ------------------------------------------------------------------ teams (sharing)

  function renderSharing(sh) {
    const body = $("#sharing .body");
    if (!sh) return;
    const teams = Object.entries(sh.teams);
    const parts = [];
    if (!teams.length) parts.push(h("p", { class: "empty" }, "No quotas and nothing running."));
    else parts.push(h("div", { class: "nodes" }, teams.map(([team, u]) => h("div", { class: "node", dataset: { team } },
      h("div", { class: "node-head" }, h("span", { class: "name" }, team),
        h("span", { class: "counts-sub" }, u.borrowed.cpus || u.borrowed.mem || u.borrowed.gpus
          ? `borrowing ${num(u.borrowed.cpus)} cpus, ${mem(u.borrowed.mem)}, ${num(u.borrowed.gpus, 0)} gpus` : "within its guarantee")),
      resRow("cpu", u.used.cpus, u.guaranteed.cpus, (x) => num(x)),
      resRow("mem", u.used.mem, u.guaranteed.mem, mem),
      resRow("gpu", u.used.gpus, u.guaranteed.gpus, (x) => num(x, 0)),
    ))));
    if (sh.waiting.length) parts.push(h("div", { class: "why" }, h("b", null, "waiting"),
      h("ul", null, sh.waiting.map((w) => h("li", null, h("b", null, w.kind), " — ", w.id, ": ", w.reason)))));
    if (sh.preemptions.length) parts.push(h("div", { class: "why" }, h("b", null, "preemptions"),
      h("ul", null, sh.preemptions.slice().reverse().map((p) => h("li", null,
        `${p.preemptor} preempted ${p.victim} (${shortId(p.taskId)}) on ${p.host}, ${p.kind}: ${p.reason}`)))));
    if (sh.backfills.length) parts.push(h("div", { class: "why" }, h("b", null, "backfills"),
      h("ul", null, sh.backfills.map((b) => h("li", { dataset: { backfill: b.job } },
        h("b", null, b.job), ` ${b.from} → ${b.to}: `,
        h("progress", { max: String(b.total || 1), value: String(b.done) }),
        ` ${b.done}/${b.total} (${b.succeeded} ok, ${b.failed} failed, ${b.skipped} already ran, ${b.active} active) — ${b.status}`)))));
    body.replaceChildren(...parts);
  }

  // ------------------------------------------------------------------ jobs

  function runTitle(r) {
    if (r.trigger === "marked") return `success, marked (not run) · ${clock(r.finishedAt, null, true)}\n${r.id}`;
    const bits = [`${r.status}`, `${r.trigger} run`, clock(r.startedAt || r.scheduledFor || r.createdAt, null, true)];
    if (r.duration !== null && r.duration !== undefined) bits.push(dur(r.duration));
    if (r.exitCode !== null && r.exitCode !== undefined) bits.push(`exit ${r.exitCode}`);
    if (r.attempt) bits.push(`attempt ${r.attempt + 1}`);
    return bits.join(" · ") + (r.message ? `\n${r.message}` : "") + `\n${r.id}`;
  }

  function jobButtons(j) {
    const ran = j.runs.filter((r) => r.trigger !== "marked"); // a marked success has no output
    return h("div", { class: "actions" },
      h("button", {
        class: "primary", title: "start a manual run now",
        onclick: async (ev) => {
          const b = ev.currentTarget; b.disabled = true; b.textContent = "Starting…";
          try { const d = await post(`/ui/jobs/${encodeURIComponent(j.name)}/run`); toast(`Started ${d.run.id}`); }
          catch (e) { toast(`Run failed: ${e.message}`, true); }
          finally { b.disabled = false; b.textContent = "Run now"; }
        },
      }, "Run now"),
      h("button", {
        title: j.disabled ? "let the schedule or parents start it again" : "stop its schedule and parents from starting it",
        onclick: async (ev) => {
          ev.currentTarget.disabled = true;
          try { await post(`/ui/jobs/${encodeURIComponent(j.name)}/disabled`, { disabled: !j.disabled }); toast(`${j.name} ${j.disabled ? "enabled" : "disabled"}`); }
          catch (e) { toast(`Failed: ${e.message}`, true); ev.target.disabled = false; }
        },
      }, j.disabled ? "Enable" : "Disable"),
      ran.length ? h("button", { class: "link", onclick: () => openLogs(ran[ran.length - 1].id) }, "logs") : null);
  }

  /** When a job runs next: in the zone its schedule is read in (the zone its words name),
   * with that zone's name, the browser's own time in the tooltip, and a countdown. */
  function nextRun(j) {
    const zone = j.zone || "UTC";
    return [
      h("div", { class: "next-at", title: `${clock(j.next, null, true)} in this browser's zone (${localZone})` },
        clock(j.next, zone), " ", h("span", { class: "zone" }, zone)),
      h("div", { class: "countdown", dataset: { countdown: j.next } }, until(j.next))];
  }

  function renderJobs(jobs) {
    const body = $("#jobs .body");
    if (!jobs.length) {
      body.replaceChildren(h("p", { class: "empty" }, "No jobs yet. POST one to /scheduler/iso8601 (or /scheduler/dependency)."));
      return;
    }
    body.replaceChildren(h("table", { class: "grid jobs" },
      h("thead", null, h("tr", null, ["Job", "Schedule", "Next run", "Last runs", "Duration (successes)", ""].map((t) => h("th", null, t)))),
      h("tbody", null, jobs.map((j) => {
        const d = j.durations;
        const status = j.disabled ? h("span", { class: "pill plain" }, "disabled")
          : j.status === "running" ? h("span", { class: "pill info" }, "running")
            : j.status === "queued" ? h("span", { class: "pill wait" }, "queued") : null;
        return h("tr", { id: `job-${j.name}`, class: j.disabled ? "disabled" : "", dataset: { job: j.name } },
          h("td", null,
            h("div", null, h("span", { class: "name" }, j.name), " ", status),
            j.description ? h("div", { class: "desc" }, j.description) : null,
            h("div", { class: "tally" }, h("span", { class: "s" }, `${j.successCount} ✓`), "  ", h("span", { class: "f" }, `${j.errorCount} ✗`), j.owner ? `  · ${j.owner}` : ""),
            j.waiting ? h("div", { class: "why" }, h("b", null, "waiting"), " — ", j.waiting) : null),
          h("td", null,
            h("div", { class: "schedule-text" }, j.scheduleText),
            j.schedule ? h("code", { class: "counts-sub", title: "the schedule as written" }, j.schedule) : null),
          h("td", null, j.next
            ? nextRun(j)
            : h("span", { class: "muted" }, j.disabled ? "disabled" : j.parents.length ? "when parents succeed" : "none")),
          h("td", null, j.runs.length
            ? h("div", { class: "timeline" }, j.runs.map((r) => h("span", {
              class: `run ${r.status}${r.trigger === "marked" ? " marked" : ""}`, title: runTitle(r), dataset: { run: r.id }, onclick: r.trigger === "marked" ? null : () => openLogs(r.id),
            })))
            : h("span", { class: "muted" }, "no runs yet")),
          h("td", null, d.count
            ? [h("div", { class: "pcts" }, h("span", { class: "k" }, "p50"), dur(d.median), "  ", h("span", { class: "k" }, "p95"), dur(d.p95), "  ", h("span", { class: "k" }, "p99"), dur(d.p99)),
              h("div", { class: "counts-sub" }, `${d.count} run${d.count === 1 ? "" : "s"}, mean ${dur(d.mean)}`)]
            : h("span", { class: "muted" }, "–")),
          h("td", null, jobButtons(j)));
      }))));
  }

  // ------------------------------------------------------------------ DAG

  function renderDag(d) {
    const body = $("#dag .body");
    if (!d.nodes.length) { body.replaceChildren(h("p", { class: "empty" }, "No jobs.")); return; }
    const running = new Set(d.nodes.filter((n) => n.status === "running").map((n) => n.name));
    // Small graphs are drawn larger (up to 1.3x) to use the panel; big ones scroll.
    const room = Math.max(200, body.clientWidth - 40); // minus the panel's padding
    const zoom = Math.max(1, Math.min(1.3, room / d.width));
    const svg = s("svg", { class: "dag", viewBox: `0 0 ${d.width} ${d.height}`, width: Math.round(d.width * zoom), height: Math.round(d.height * zoom), role: "img", "aria-label": "job dependency graph" },
      s("defs", null, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa5b5" }))));
    for (const e of d.edges) {
      const mx = (e.x1 + e.x2) / 2;
      svg.append(s("path", {
        class: running.has(e.to) ? "edge active" : "edge", "marker-end": "url(#arrow)",
        d: `M ${e.x1} ${e.y1} C ${mx} ${e.y1}, ${mx} ${e.y2}, ${e.x2 - 2} ${e.y2}`,
      }, s("title", null, `${e.from} → ${e.to}`)));
    }
    const firstIsolated = d.nodes.filter((n) => n.isolated).reduce((m, n) => Math.min(m, n.y), Infinity);
    if (Number.isFinite(firstIsolated) && d.edges.length) {
      svg.append(s("line", { class: "sep", x1: 8, x2: d.width - 8, y1: firstIsolated - 6, y2: firstIsolated - 6 }));
    }
    for (const n of d.nodes) {
      const look = n.status !== "idle" ? n.status : n.state;
      svg.append(s("g", {
        class: `node ${look}${n.disabled ? " disabled" : ""}`, transform: `translate(${n.x} ${n.y})`, dataset: { job: n.name },
        onclick: () => focusJob(n.name),
      },
      s("title", null, `${n.name}\nlast result: ${n.state}${n.status !== "idle" ? `\nnow: ${n.status}` : ""}${n.disabled ? "\ndisabled" : ""}`),
      s("rect", { width: n.w, height: n.h, rx: 7 }),
      s("text", { x: n.w / 2, y: n.h / 2, "text-anchor": "middle", "dominant-baseline": "central" }, n.label)));
    }
    body.replaceChildren(h("div", { class: "dag-wrap" }, svg),
      h("div", { class: "legend" }, h("span", { class: "success" }, "last run succeeded"), h("span", { class: "failure" }, "failed"),
        h("span", { class: "running" }, "running"), h("span", { class: "fresh" }, "never ran"), h("span", { class: "disabled" }, "disabled"),
        d.nodes.some((n) => n.isolated) && d.edges.length ? h("span", { class: "plain" }, "below the line: jobs without dependencies") : null));
  }

  function focusJob(name) {
    const row = document.getElementById(`job-${name}`);
    if (!row) return;
    row.scrollIntoView({ behavior: "smooth", block: "center" });
    row.classList.add("target");
    setTimeout(() => row.classList.remove("target"), 1800);
  }

  // ------------------------------------------------------------------ events

  const MAX_EVENTS = 300;
  const seen = new Set(); // "<epoch>:<seq>" of every event shown

  function eventKind(e) {
    return e.eventType.startsWith("job_") ? "jobs" : "services";
  }

  const EVENT_LABELS = {
    status_update_event: "task", health_status_changed_event: "health", failed_health_check_event: "health check",
    unhealthy_task_kill_event: "kill", api_post_event: "api", app_terminated_event: "app deleted",
    placement_rejected: "placement", job_run_started: "job start", job_run_finished: "job end",
    job_run_retrying: "job retry", job_run_skipped: "job skip", deployment_info: "deploy",
    deployment_step_success: "deploy step", deployment_step_failure: "deploy step", deployment_success: "deployed",
    deployment_failed: "deploy failed", event_stream_attached: "stream", event_stream_detached: "stream",
    group_change_success: "group", task_preempted: "preempted",
  };
  const eventLabel = (t) => EVENT_LABELS[t] || t.replace(/_event$/, "").replace(/_/g, " ");

  function eventLook(e) {
    const t = e.eventType;
    if (t === "status_update_event") {
      const st = e.taskStatus || "";
      if (st === "TASK_RUNNING") return "good";
      if (st === "TASK_FAILED" || st === "TASK_LOST") return "bad";
      return "info";
    }
    if (t === "health_status_changed_event") return e.alive ? "good" : "bad";
    if (t === "failed_health_check_event" || t === "unhealthy_task_kill_event") return "bad";
    if (t === "placement_rejected" || t === "job_run_skipped" || t === "job_run_retrying") return "warn";
    if (t === "job_run_finished") return e.status === "success" ? "good" : "bad";
    if (t === "job_run_started" || t === "deployment_info") return "info";
    if (t === "deployment_success" || t === "deployment_step_success") return "good";
    if (t === "deployment_failed" || t === "deployment_step_failure") return "bad";
    return "";
  }

  function eventText(e) {
    const task = e.taskId ? ` ${shortId(e.taskId)}` : "";
    switch (e.eventType) {
      case "status_update_event":
        return `${e.appId}${task} → ${String(e.taskStatus || "").replace("TASK_", "")} on ${e.host}${e.message ? ` (${e.message})` : ""}`;
      case "health_status_changed_event":
        return `${e.appId}${task} is ${e.alive ? "healthy" : "unhealthy"}`;
      case "failed_health_check_event":
        return `${e.appId}${task} failed a health check`;
      case "unhealthy_task_kill_event":
        return `${e.appId}${task} killed: ${e.reason || "unhealthy"}`;
      case "api_post_event":
        return `${e.uri} changed${e.appDefinition ? ` (instances: ${e.appDefinition.instances})` : ""}`;
      case "app_terminated_event":
        return `${e.appId} deleted`;
      case "task_preempted":
        return `${e.preemptor} preempted ${e.victim}${task} (${e.kind}): ${e.reason}`;
      case "placement_rejected":
        return `${e.appId}: ${e.waiting} waiting — ${e.reason}`;
      case "job_run_started":
        return `${e.job} started on ${e.host}${e.attempt ? ` (attempt ${e.attempt + 1})` : ""}`;
      case "job_run_finished":
        if (e.trigger === "marked") return `${e.job} marked successful (not run)`;
        return `${e.job} ${e.status}${e.exitCode !== null && e.exitCode !== undefined ? ` (exit ${e.exitCode})` : ""}${e.message && e.status !== "success" ? `: ${e.message}` : ""}`;
      case "job_run_retrying":
        return `${e.job} will retry (attempt ${e.attempt + 1})${e.message ? `: ${e.message}` : ""}`;
      case "job_run_skipped":
        return `${e.job} skipped${e.message ? `: ${e.message}` : ""}`;
      case "deployment_info":
        return `deployment ${shortId(planId(e))} started: ${actions(e.currentStep)}`;
      case "deployment_step_success":
        return `deployment ${shortId(planId(e))} step ${e.step || ""} done: ${actions(e.currentStep)}`;
      case "deployment_step_failure":
        return `deployment ${shortId(planId(e))} step failed: ${actions(e.currentStep)}`;
      case "deployment_success":
        return `deployment ${shortId(planId(e))} succeeded (${targetApps(e)})`;
      case "deployment_failed":
        return `deployment ${shortId(planId(e))} failed${e.reason ? `: ${e.reason}` : ""} (${targetApps(e)})`;
      case "event_stream_attached":
        return `event stream client attached${e.remoteAddress ? ` (${e.remoteAddress})` : ""}`;
      case "event_stream_detached":
        return `event stream client detached${e.remoteAddress ? ` (${e.remoteAddress})` : ""}`;
      default: {
        const kv = Object.entries(e).filter(([k, v]) => !["eventType", "timestamp", "stream", "seq"].includes(k) && v !== null && typeof v !== "object");
        return kv.map(([k, v]) => `${k}=${v}`).join(" ");
      }
    }
  }

  const planId = (e) => e.id || (e.plan && e.plan.id) || "";
  const actions = (step) => ((step && step.actions) || []).map((a) => `${a.action} ${a.app || ""}`.trim()).join(", ");
  function targetApps(e) {
    const p = e.plan || {};
    const apps = [...((p.target && p.target.apps) || []), ...((p.original && p.original.apps) || [])].map((a) => a.id);
    return [...new Set(apps)].join(", ");
  }

  function addEvent(e, fresh) {
    const key = `${e.epoch}:${e.seq}`;
    if (seen.has(key)) return;
    seen.add(key);
    if (seen.size > 5000) seen.clear(); // bounded; the list itself keeps MAX_EVENTS
    const list = $("#event-list");
    const target = e.runId || e.taskId;
    const li = h("li", { class: `k-${eventKind(e)}${fresh ? " new" : ""}`, dataset: { type: e.eventType, seq: e.seq } },
      h("span", { class: "ev-time", title: `${e.timestamp} (shown in ${localZone})` }, clock(e.timestamp)),
      h("span", { class: `ev-type ${eventLook(e)}`, title: `${e.eventType} (${e.stream} stream)` }, eventLabel(e.eventType)),
      h("span", { class: "ev-text" }, eventText(e), target && e.trigger !== "marked" && (e.runId || e.eventType === "status_update_event") ? [" ", h("button", { class: "link", onclick: () => openLogs(e.runId || e.taskId) }, "logs")] : null));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // ------------------------------------------------------------------ logs

  let logSession = 0;

  function renderLogTargets(st) {
    const opts = [];
    for (const a of st.apps) for (const t of a.tasks) opts.push([t.id, `task of ${a.id} on ${t.host}`]);
    for (const j of st.jobs) for (const r of j.runs.slice(-5).reverse()) opts.push([r.id, `run of ${j.name}: ${r.status}`]);
    $("#log-targets").replaceChildren(...opts.map(([v, label]) => h("option", { value: v, label })));
  }

  function openLogs(id) {
    if (!id) return;
    $("#log-target").value = id;
    document.getElementById("logs").scrollIntoView({ behavior: "smooth", block: "start" });
    startLogs(id);
  }

  function pane(stream) {
    let p = $(`#log-output .log-pane[data-stream="${stream}"]`);
    if (!p) {
      p = h("div", { class: `log-pane ${stream}`, dataset: { stream } }, h("h3", null, stream), h("pre", { class: "log-text" }));
      $("#log-output").append(p);
    }
    return $("pre", p);
  }

  function appendLog(stream, text, marker) {
    const pre = pane(stream);
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
    pre.append(marker ? h("span", { class: "marker" }, text) : document.createTextNode(text));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function startLogs(id) {
    const my = ++logSession;
    const status = $("#log-status");
    $("#log-output").replaceChildren();
    status.textContent = `Loading ${id}…`;
    let cursor = null, taskId = null, tail = Number($("#log-tail").value);
    while (my === logSession) {
      const q = cursor ? `cursor=${encodeURIComponent(cursor)}` : `tail=${tail}`;
      let d;
      try {
        const r = await fetch(`/ui/logs/${encodeURIComponent(id)}?${q}`);
        d = await r.json().catch(() => ({}));
        if (!r.ok) { status.textContent = `${id}: ${d.detail || d.message || r.statusText}`; return; }
      } catch (e) {
        status.textContent = `${id}: cannot reach Dromos (${e.message})`; return;
      }
      if (my !== logSession) return;
      if (taskId !== null && d.taskId !== taskId) {
        // A job run moved on to its next attempt: start that attempt's output from the top.
        for (const p of $("#log-output").querySelectorAll("pre")) p.append(h("span", { class: "marker" }, `\n── attempt ${d.taskId} ──\n`));
        taskId = d.taskId; cursor = null; tail = -1;
        continue;
      }
      taskId = d.taskId;
      let got = false;
      for (const c of d.chunks) {
        pane(c.stream);
        if (c.text) { appendLog(c.stream, c.text); got = true; }
      }
      cursor = d.cursor;
      const follow = $("#log-follow").checked;
      const what = d.runId ? `job run ${d.runId}` : `task ${d.taskId}`;
      status.textContent = `${what} · ${d.source} · ${d.running ? (follow ? "following…" : "running") : "ended"}`;
      if (!follow || (!d.running && !got)) return;
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  $("#log-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("#log-target").value.trim();
    if (id) startLogs(id);
  });
  $("#event-filter").addEventListener("change", (ev) => { $("#event-list").dataset.filter = ev.target.value; });

  // ------------------------------------------------------------------ ticking clocks

  function tick() {
    for (const el of document.querySelectorAll("[data-ago]")) el.textContent = ago(el.dataset.ago);
    for (const el of document.querySelectorAll("[data-countdown]")) {
      el.textContent = until(el.dataset.countdown);
      el.classList.toggle("soon", Date.parse(el.dataset.countdown) - now() < 60e3);
    }
  }
  setInterval(tick, 1000);

  // ------------------------------------------------------------------ the live connection

  const conn = $("#conn");
  let lostTimer = null;

  /** Render a snapshot (the page's inline one, or one from the stream). */
  let shown = ""; // the rendered snapshot, without its serverTime
  function apply(st) {
    clockOffset = Date.parse(st.serverTime) - Date.now();
    // The stream's first snapshot is usually the one the page came with: keep the DOM.
    const key = JSON.stringify({ ...st, serverTime: null });
    if (key === shown) return;
    shown = key;
    state = st;
    render();
    document.body.dataset.ready = "1";
  }

  function connect() {
    const es = new EventSource("/ui/events");
    es.addEventListener("open", () => {
      clearTimeout(lostTimer); lostTimer = null;
      conn.className = "pill ok"; conn.textContent = "live";
    });
    es.addEventListener("error", () => {
      // The server ends each response after a while and the browser reconnects within a
      // second: only say "reconnecting" when that takes longer.
      if (!lostTimer) lostTimer = setTimeout(() => { conn.className = "pill wait"; conn.textContent = "reconnecting…"; }, 3000);
    });
    es.addEventListener("state", (m) => {
      apply(JSON.parse(m.data));
      document.body.dataset.live = "1";
      conn.title = `last update ${new Date().toLocaleTimeString()}`;
    });
    es.addEventListener("bus", (m) => addEvent(JSON.parse(m.data), document.body.dataset.ready === "1"));
  }

  // First the snapshot the page came with (the document GET /ui/state answers, inline), so
  // the page has its data by its load event, which is when headless browsers capture it
  // (--dump-dom, --screenshot); then, once loaded, the live stream.
  $("#events .panel-head").append(h("span", { class: "hint" }, `times in ${localZone}`));
  const inline = $("#dromos-state");
  if (inline && inline.textContent.trim()) apply(JSON.parse(inline.textContent));
  if (document.readyState === "complete") connect();
  else window.addEventListener("load", connect, { once: true });
})();
