// The dashboard: polls /api/stats and the jobs API every 2 s. Its state (filters, the job shown)
// lives in the URL, so the back button and a reload bring it back; a failed poll only marks the
// page as reconnecting, so it survives the stack reloading under it.
"use strict";

const POLL_MS = 2000;
const POINTS = 60; // two minutes of history
const TOKEN_KEY = "operatorToken";

const $ = (id) => document.getElementById(id);
let previous = null; // the last /api/stats answer and when it came
let charts = {};

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const answer = await fetch(path, { ...options, headers });
  if (answer.status === 401 || answer.status === 403) {
    $("login").hidden = false;
    throw new Error("sign in with the operator token");
  }
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.message || `HTTP ${answer.status}`);
  return body;
}

function lineChart(id, series) {
  return new Chart($(id), {
    type: "line",
    data: { labels: [], datasets: series.map(([label, color]) => ({ label, data: [], borderColor: color, backgroundColor: color, pointRadius: 0, tension: 0.2 })) },
    options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } }, plugins: { legend: { labels: { boxWidth: 10 } } } },
  });
}

function push(chart, label, values) {
  chart.data.labels.push(label);
  chart.data.datasets.forEach((set, i) => set.data.push(values[i]));
  if (chart.data.labels.length > POINTS) {
    chart.data.labels.shift();
    chart.data.datasets.forEach((set) => set.data.shift());
  }
  chart.update();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function renderStats(stats) {
  const now = Date.now();
  const label = new Date(now).toLocaleTimeString();
  const workers = stats.uwsgi ? stats.uwsgi.workers : [];
  const busy = workers.filter((w) => w.status === "busy").length;
  if (previous) {
    const seconds = (now - previous.at) / 1000;
    const rate = (key, per) => Math.max(0, (stats.totals[key] - previous.stats.totals[key]) / seconds) * per;
    push(charts.requests, label, [rate("requests", 1)]);
    push(charts.jobs, label, [rate("jobs_succeeded", 60), rate("jobs_failed", 60)]);
  }
  push(charts.workers, label, [busy, workers.length - busy]);
  push(charts.spool, label, [stats.spool.pending, stats.spool.scheduled]);
  previous = { stats, at: now };

  const body = $("processes").tBodies[0];
  body.replaceChildren();
  for (const w of workers) {
    const row = body.insertRow();
    [ "worker", w.id, w.pid, w.status, w.requests, `${(w.avg_rt / 1000).toFixed(1)} ms`,
      `${(w.rss / 1048576).toFixed(0)} MB`, w.respawn_count, w.harakiri_count ].forEach((v) => cell(row, v));
  }
  (stats.uwsgi ? stats.uwsgi.spoolers : []).forEach((s, i) => {
    const row = body.insertRow();
    ["spooler", i + 1, s.pid, s.running ? "busy" : "idle", s.tasks, "", "", s.respawns, ""].forEach((v) => cell(row, v));
  });
  (stats.mules.pids || []).forEach((pid, i) => {
    const row = body.insertRow();
    ["mule", i + 1, pid, "alive", "", "", "", "", ""].forEach((v) => cell(row, v));
  });
  $("backlog").textContent =
    `Spool: ${stats.spool.pending} due, ${stats.spool.scheduled} scheduled, ${stats.spool.running ?? "?"} running. ` +
    `Mules: ${stats.mules.alive ?? "?"} of ${stats.mules.configured} alive, ${stats.mules.queued} jobs queued.`;
}

function filters() {
  const query = new URLSearchParams(location.search);
  return { status: query.get("status") || "", task: query.get("task") || "", job: query.get("job") || "" };
}

function navigate(changes) {
  const query = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value) query.set(key, value); else query.delete(key);
  }
  history.pushState(null, "", `${location.pathname}?${query}`);
  refreshJobs();
}

async function refreshJobs() {
  const { status, task, job } = filters();
  $("filter-status").value = status;
  $("filter-task").value = task;
  const query = new URLSearchParams({ limit: "20" });
  if (status) query.set("status", status);
  if (task) query.set("task", task);
  const page = await api(`/api/jobs?${query}`);
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const j of page.jobs) {
    const row = body.insertRow();
    row.dataset.jobId = j.id;
    row.dataset.task = j.task;
    if (j.id === job) row.className = "selected";
    cell(row, new Date(j.created_at).toLocaleTimeString());
    cell(row, j.task);
    cell(row, j.backend);
    cell(row, j.status, `state-${j.status}`);
    cell(row, `${j.attempts}/${j.max_attempts}`);
    cell(row, j.progress === null ? "" : `${Math.round(j.progress * 100)}%`);
    const link = document.createElement("a");
    link.href = `?${new URLSearchParams({ ...Object.fromEntries(new URLSearchParams(location.search)), job: j.id })}`;
    link.textContent = "details";
    link.addEventListener("click", (event) => { event.preventDefault(); navigate({ job: j.id }); });
    row.insertCell().append(link);
  }
  await renderDetail(job);
}

async function renderDetail(jobId) {
  $("detail").hidden = !jobId;
  if (!jobId) return;
  const j = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
  $("detail-id").textContent = j.id;
  $("detail").dataset.status = j.status;
  const fields = $("detail-fields");
  fields.replaceChildren();
  const timings = `created ${j.created_at}\nstarted ${j.started_at ?? "-"}\nfinished ${j.finished_at ?? "-"}` +
    (j.run_at ? `\ndue ${j.run_at}` : "");
  const shown = [
    ["task", j.task], ["state", j.status], ["backend", j.backend], ["attempts", `${j.attempts} of ${j.max_attempts}`],
    ["progress", j.progress === null ? "-" : `${Math.round(j.progress * 100)}% ${j.progress_message || ""}`],
    ["args", JSON.stringify(j.args)], ["result", JSON.stringify(j.result)],
    ["error", j.error ? `${j.error.type}: ${j.error.message}` : "-"], ["timings", timings],
    ["request id", j.request_id || "-"],
  ];
  for (const [name, value] of shown) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name;
    fields.append(dt, dd);
  }
  const traceback = j.error && j.error.traceback;
  $("detail-traceback").hidden = !traceback;
  $("detail-traceback").textContent = traceback || "";
  $("retry").hidden = !["failed", "cancelled"].includes(j.status);
  $("cancel").hidden = !["queued", "scheduled", "retrying"].includes(j.status);
}

async function act(method, suffix) {
  const { job } = filters();
  try {
    await api(`/api/jobs/${encodeURIComponent(job)}${suffix}`, { method });
    await refreshJobs();
  } catch (error) {
    showStatus(false, error.message);
  }
}

function showStatus(up, text) {
  $("status").textContent = text;
  $("status").classList.toggle("down", !up);
}

async function tick() {
  try {
    renderStats(await api("/api/stats"));
    await refreshJobs();
    showStatus(true, `live, updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    showStatus(false, `reconnecting: ${error.message}`);
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

async function loadTasks() {
  try {
    const { tasks } = await api("/api/tasks");
    for (const task of tasks) $("filter-task").add(new Option(task.name, task.name));
    $("filter-task").value = filters().task;
  } catch (error) {
    setTimeout(loadTasks, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  charts = {
    requests: lineChart("chart-requests", [["requests/s", "#0b5cad"]]),
    workers: lineChart("chart-workers", [["busy", "#d9480f"], ["idle", "#2b8a3e"]]),
    spool: lineChart("chart-spool", [["due", "#5f3dc4"], ["scheduled", "#adb5bd"]]),
    jobs: lineChart("chart-jobs", [["finished", "#2b8a3e"], ["failed", "#c92a2a"]]),
  };
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("login").hidden = true;
    loadTasks();
  });
  $("filter-status").addEventListener("change", (e) => navigate({ status: e.target.value, job: "" }));
  $("filter-task").addEventListener("change", (e) => navigate({ task: e.target.value, job: "" }));
  $("retry").addEventListener("click", () => act("POST", "/retry"));
  $("cancel").addEventListener("click", () => act("DELETE", ""));
  $("close").addEventListener("click", (event) => { event.preventDefault(); navigate({ job: "" }); });
  window.addEventListener("popstate", () => refreshJobs().catch((error) => showStatus(false, error.message)));
  loadTasks();
  tick();
});
