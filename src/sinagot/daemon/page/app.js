// The status page: reads the daemon's read-only API and draws it, again every few seconds.
// Everything from the daemon goes into the page as text (textContent, append of strings),
// never as markup; links are only followed to http(s) addresses.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const view = document.getElementById("view");
  let shownRoute = null; // the route whose skeleton is in the page
  let timer = null;
  let states = [];
  let datasetNames = [];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function link(url, text) {
    const href = safeHref(url);
    if (href === null) return el("span", {}, text);
    return el("a", { href, rel: "noopener noreferrer", target: "_blank" }, text);
  }

  function when(epoch) {
    if (epoch === null || epoch === undefined) return el("span", { class: "muted" }, "never");
    const seconds = Math.round(epoch - Date.now() / 1000);
    let text = "now";
    if (seconds > 0) text = `in ${span(seconds)}`;
    else if (seconds < 0) text = `${span(-seconds)} ago`;
    return el("span", { title: new Date(epoch * 1000).toLocaleString() }, text);
  }

  function span(seconds) {
    if (seconds < 120) return `${seconds} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function badge(word) {
    return el("span", { class: `badge ${word}` }, word);
  }

  function firstLine(text) {
    if (!text) return "";
    const line = text.split("\n").find((part) => part.trim()) || "";
    return line.length > 240 ? `${line.slice(0, 239)}\u2026` : line;
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
    }
    return body;
  }

  function route() {
    const hash = window.location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?", 2);
    const params = new URLSearchParams(query || "");
    const job = path.match(/^\/jobs\/(\d{1,18})$/);
    if (job) return { kind: "job", key: path, id: job[1], params };
    if (path === "/jobs") return { kind: "jobs", key: path, params };
    return { kind: "datasets", key: "/", params };
  }

  function drawHeader(status) {
    const daemon = document.getElementById("daemon");
    const workers = status.workers;
    daemon.replaceChildren(
      el("span", { id: "daemon-status" }, status.status),
      ` \u00b7 ${workers.busy}/${workers.max} workers busy, ${status.queued} queued`,
      ` \u00b7 up ${span(Math.round(status.uptime))} \u00b7 Sinagot ${status.version}`
    );
    document.getElementById("banners").replaceChildren(
      ...status.banners.map((b) => el("div", { class: `banner ${b.kind}` }, b.text))
    );
    document.getElementById("nav-datasets").className = route().kind === "datasets" ? "current" : "";
    document.getElementById("nav-jobs").className = route().kind === "datasets" ? "" : "current";
  }

  function jobsLink(params, text) {
    const query = new URLSearchParams(params).toString();
    return el("a", { href: `#/jobs?${query}` }, text);
  }

  function drawDatasets(status) {
    const head = el("tr", {}, el("th", {}, "Dataset"), el("th", {}, "Health"),
      el("th", {}, "Last poll"), el("th", {}, "Next poll"), el("th", { class: "num" }, "Sessions"),
      ...states.map((s) => el("th", { class: "num" }, s)), el("th", {}, "Last error"));
    const rows = status.datasets.map((d) => el("tr", { "data-dataset": d.name },
      el("td", {}, jobsLink({ dataset: d.name }, d.name)),
      el("td", {}, badge(d.health), d.failures ? ` ${d.failures} failed in a row` : null),
      el("td", {}, when(d.last_poll)),
      el("td", {}, when(d.next_poll)),
      el("td", { class: "num" }, d.sessions),
      ...states.map((s) => el("td", { class: `num count-${d.jobs[s] || 0}` },
        d.jobs[s] ? jobsLink({ dataset: d.name, state: s }, d.jobs[s]) : "0")),
      el("td", { class: "error" }, firstLine(d.last_error))));
    const table = status.datasets.length
      ? el("table", { id: "datasets" }, el("thead", {}, head), el("tbody", {}, ...rows))
      : el("p", { class: "muted", id: "datasets" }, "No dataset is served.");
    view.replaceChildren(el("h2", {}, `Datasets (${status.datasets.length})`), table);
  }

  function setFilter(name, value) {
    const current = route().params;
    if (value) current.set(name, value);
    else current.delete(name);
    window.location.hash = `#/jobs?${current.toString()}`;
  }

  function jobsSkeleton(params) {
    const stateSelect = el("select", { id: "filter-state" }, el("option", { value: "" }, "any"),
      ...states.map((s) => el("option", { value: s }, s)));
    stateSelect.value = params.get("state") || "";
    stateSelect.addEventListener("change", () => setFilter("state", stateSelect.value));
    const datasetSelect = el("select", { id: "filter-dataset" }, el("option", { value: "" }, "any"),
      ...datasetNames.map((n) => el("option", { value: n }, n)));
    datasetSelect.value = params.get("dataset") || "";
    datasetSelect.addEventListener("change", () => setFilter("dataset", datasetSelect.value));
    const search = el("input", { id: "filter-session", type: "search", placeholder: "part of a label",
      autocomplete: "off", spellcheck: "false" });
    search.value = params.get("session") || "";
    let typing = null;
    search.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => setFilter("session", search.value.trim()), 300);
    });
    view.replaceChildren(
      el("h2", {}, "Jobs"),
      el("div", { class: "filters" },
        el("label", {}, "State", stateSelect),
        el("label", {}, "Dataset", datasetSelect),
        el("label", {}, "Session", search)),
      el("div", { id: "jobs-result" }, el("p", { class: "muted" }, "Loading\u2026")));
  }

  function drawJobs(jobs) {
    const head = el("tr", {}, el("th", { class: "num" }, "Job"), el("th", {}, "Dataset"),
      el("th", {}, "Session"), el("th", {}, "State"), el("th", { class: "num" }, "Attempts"),
      el("th", {}, "Updated"), el("th", {}, "Last error"));
    const rows = jobs.map((j) => el("tr", { "data-job": j.id },
      el("td", { class: "num" }, el("a", { href: `#/jobs/${j.id}` }, j.id)),
      el("td", {}, j.dataset),
      el("td", {}, el("a", { href: `#/jobs/${j.id}` }, j.session)),
      el("td", {}, badge(j.state)),
      el("td", { class: "num" }, j.attempts),
      el("td", {}, when(j.updated)),
      el("td", { class: "error" }, firstLine(j.last_error))));
    const result = document.getElementById("jobs-result");
    result.replaceChildren(jobs.length
      ? el("table", { id: "jobs" }, el("thead", {}, head), el("tbody", {}, ...rows))
      : el("p", { class: "muted", id: "jobs" }, "No job matches."));
  }

  function drawJob(job) {
    const facts = [
      ["Dataset", job.dataset], ["Session", job.session], ["State", badge(job.state)],
      ["Attempts", job.attempts], ["Session stamp", job.last_modified],
      ["Created", when(job.created)], ["Updated", when(job.updated)],
    ];
    if (job.not_before > Date.now() / 1000) facts.push(["Next attempt", when(job.not_before)]);
    const history = job.history.map((t) => el("tr", {}, el("td", { class: "when" }, when(t.at)),
      el("td", {}, badge(t.state)), el("td", {}, t.detail)));
    const errors = job.history.filter((t) => t.state === "failed" || /fail|error/i.test(t.detail));
    const links = job.links.map((l) => el("tr", {}, el("td", {}, l.derivative),
      el("td", {}, link(l.files, "files")), el("td", {}, link(l.provenance, "provenance"))));
    view.replaceChildren(
      el("h2", {}, `Job ${job.id}: ${job.dataset}/${job.session}`),
      el("dl", { id: "job" }, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("h3", {}, "Last error"),
      job.last_error ? el("pre", { class: "error", id: "job-error" }, job.last_error)
        : el("p", { class: "muted", id: "job-error" }, "none"),
      el("h3", {}, `Attempts and changes (${job.history.length}, ${errors.length} with an error)`),
      el("table", { id: "job-history" }, el("thead", {}, el("tr", {}, el("th", {}, "When"),
        el("th", {}, "State"), el("th", {}, "Detail"))), el("tbody", {}, ...history)),
      el("h3", {}, "Log tail"),
      job.log_tail.length ? el("pre", { id: "job-log" }, job.log_tail.join("\n"))
        : el("p", { class: "muted", id: "job-log" }, "no log lines"),
      el("h3", {}, "Derivatives on the server"),
      job.links.length
        ? el("table", { id: "job-links" }, el("thead", {}, el("tr", {}, el("th", {}, "Derivative"),
          el("th", {}, "Files"), el("th", {}, "Provenance"))), el("tbody", {}, ...links))
        : el("p", { class: "muted", id: "job-links" }, "This dataset's store has no web address."));
  }

  // A refresh started later (a filter changed) wins over one still in flight.
  let generation = 0;

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    const current = route();
    const stale = () => mine !== generation;
    try {
      const status = await getJSON("/api/status");
      if (stale()) return;
      states = status.states;
      datasetNames = status.datasets.map((d) => d.name);
      drawHeader(status);
      if (current.kind === "datasets") {
        drawDatasets(status);
      } else if (current.kind === "jobs") {
        const query = new URLSearchParams();
        for (const name of ["state", "dataset", "session"]) {
          if (current.params.get(name)) query.set(name, current.params.get(name));
        }
        const jobs = (await getJSON(`/api/jobs?${query.toString()}`)).jobs;
        if (stale()) return;
        if (shownRoute !== current.key) jobsSkeleton(current.params);
        drawJobs(jobs);
      } else {
        const job = await getJSON(`/api/jobs/${current.id}`);
        if (stale()) return;
        drawJob(job);
      }
      shownRoute = current.key;
      document.getElementById("updated").textContent =
        `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (error) {
      if (stale()) return;
      document.getElementById("banners").replaceChildren(
        el("div", { class: "banner unreachable" }, `The daemon does not answer: ${error.message}`));
    } finally {
      if (!stale()) timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  window.addEventListener("hashchange", () => {
    if (route().key !== shownRoute) shownRoute = null;
    else if (route().kind === "jobs") shownRoute = route().key; // a filter: keep the inputs
    refresh();
  });
  refresh();
})();
