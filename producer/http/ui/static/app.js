// The imagejobs results console: views of the tenant's own jobs, read from the JSON API with its key.
// Every value from the API reaches the page as text (textContent / attributes), never as markup.
"use strict";

const KEY_SLOT = "imagejobs.api_key";
const REFRESH_MS = 2000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATUSES = ["queued", "submitting", "running", "succeeded", "failed", "cancelled"];
const SVG_NS = "http://www.w3.org/2000/svg";

let refreshTimer = null;

// ---------- small helpers ----------

/** An element with attributes and children; strings become text nodes (never parsed as HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = String(text);
  return node;
}

function apiKey() { return sessionStorage.getItem(KEY_SLOT); }

class ApiFailure extends Error {
  constructor(status, body) {
    const detail = body && body.error ? body.error : {};
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.param = detail.param || null;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${apiKey()}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    signOut();
  }
  if (!response.ok) throw new ApiFailure(response.status, body);
  return body;
}

function when(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
}

function duration(job) {
  const end = job.finished_at || Math.floor(Date.now() / 1000);
  const seconds = Math.max(0, end - job.created_at);
  return seconds < 120 ? `${seconds}s` : `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
}

function cost(job) { return job.cost ? `${job.cost.amount} ${job.cost.currency}` : ""; }

function statusBadge(status) { return el("span", { class: `status status-${status}`, "data-status": status }, status); }

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function failure(error) { return el("p", { class: "error", role: "alert" }, error.message); }

function every(ms, action) {
  stopRefreshing();
  refreshTimer = setInterval(() => { action().catch(() => {}); }, ms);
}

function stopRefreshing() {
  if (refreshTimer !== null) clearInterval(refreshTimer);
  refreshTimer = null;
}

// ---------- signing in ----------

function signOut() {
  sessionStorage.removeItem(KEY_SLOT);
  stopRefreshing();
  route();
}

async function signIn(event) {
  event.preventDefault();
  const key = document.getElementById("api-key").value.trim();
  const message = document.getElementById("sign-in-error");
  sessionStorage.setItem(KEY_SLOT, key);
  try {
    await api("/v1/images/generations?limit=1");
    message.textContent = "";
    document.getElementById("api-key").value = "";
    location.hash = "#/jobs";
    route();
  } catch (error) {
    sessionStorage.removeItem(KEY_SLOT);
    message.textContent = error.status === 401 ? "That API key is not valid." : error.message;
  }
}

// ---------- the job list ----------

const listState = { status: "", model: "", created_after: "", created_before: "", q: "" };

function listQuery(cursor) {
  const params = new URLSearchParams({ limit: "50" });
  for (const [name, value] of Object.entries(listState)) {
    if (!value) continue;
    params.set(name, name.startsWith("created_") ? new Date(value).toISOString() : value);
  }
  if (cursor) params.set("cursor", cursor);
  return `/v1/images/generations?${params}`;
}

function jobRow(job) {
  const image = job.data[0];
  const thumb = image ? el("img", { class: "thumb", src: image.url, alt: `image of ${job.id}` }) : "";
  return el("tr", { "data-job-id": job.id },
    el("td", {}, thumb),
    el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "job-link" }, job.id)),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, job.model_name ? `${job.model} (${job.model_name})` : job.model),
    el("td", { class: "prompt" }, job.prompt || ""),
    el("td", {}, cost(job)),
    el("td", {}, duration(job)),
    el("td", {}, when(job.created_at)),
  );
}

async function jobsView() {
  const body = el("tbody", { id: "job-rows" });
  const error = el("p", { class: "error", role: "alert" });
  const more = el("button", { type: "button", id: "more", hidden: true }, "Older jobs");
  let cursor = null;
  let shown = 1; // pages shown: a refresh reloads as many pages as were loaded

  async function load() {
    const rows = [];
    let next = null;
    for (let page = 0; page < shown; page += 1) {
      const answer = await api(listQuery(next));
      rows.push(...answer.data.map(jobRow));
      next = answer.next_cursor;
      if (!next) break;
    }
    body.replaceChildren(...rows);
    cursor = next;
    more.hidden = !cursor;
    error.textContent = "";
  }
  more.addEventListener("click", () => { shown += 1; load().catch((e) => { error.textContent = e.message; }); });

  const models = el("select", { name: "model" }, el("option", { value: "" }, "any model"));
  api("/v1/models").then((answer) => {
    for (const card of answer.data) models.append(el("option", { value: card.id }, card.id));
    models.value = listState.model;
  }).catch(() => {});
  const statuses = el("select", { name: "status" }, el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s }, s)));
  const filters = el("form", { id: "filters", class: "filters" },
    el("label", {}, "Status ", statuses),
    el("label", {}, "Model ", models),
    el("label", {}, "From ", el("input", { type: "datetime-local", name: "created_after" })),
    el("label", {}, "To ", el("input", { type: "datetime-local", name: "created_before" })),
    el("label", {}, "Prompt ", el("input", { type: "search", name: "q", placeholder: "text in the prompt" })),
  );
  for (const [name, value] of Object.entries(listState)) filters.elements[name].value = value;
  let typing = null;
  const apply = () => {
    for (const name of Object.keys(listState)) listState[name] = filters.elements[name].value.trim();
    shown = 1;
    load().catch((e) => { error.textContent = e.message; });
  };
  filters.addEventListener("change", apply);
  filters.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(apply, 300); });
  filters.addEventListener("submit", (event) => { event.preventDefault(); apply(); });

  const table = el("table", { class: "jobs" },
    el("thead", {}, el("tr", {}, ["", "Job", "Status", "Model", "Prompt", "Cost", "Duration", "Created (UTC)"]
      .map((title) => el("th", {}, title)))),
    body);
  show(el("h1", {}, "Jobs"), filters, error, table, more);
  await load().catch((e) => { error.textContent = e.message; });
  every(REFRESH_MS, load);
}

// ---------- one job ----------

function definitionList(pairs) {
  return el("dl", {}, pairs.filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

async function jobView(jobId) {
  const id = encodeURIComponent(jobId);
  const heading = el("h1", {}, "Job ", el("code", {}, jobId), " ");
  const summary = el("div", { id: "summary" });
  const images = el("div", { id: "images", class: "images" });
  const request = el("pre", { id: "request" });
  const events = el("tbody", { id: "timeline" });
  const hooks = el("tbody", { id: "webhooks" });
  const message = el("p", { id: "job-message", role: "status" });
  const cancel = el("button", { type: "button", id: "cancel", hidden: true }, "Cancel job");
  const redeliver = el("button", { type: "button", id: "redeliver", hidden: true }, "Redeliver webhook");
  let badge = null;

  cancel.addEventListener("click", async () => {
    try {
      await api(`/v1/images/generations/${id}/cancel`, { method: "POST" });
      message.textContent = "Cancelled.";
      await load();
    } catch (error) { message.textContent = error.message; }
  });
  redeliver.addEventListener("click", async () => {
    try {
      await api(`/v1/images/generations/${id}/webhooks/redeliver`, { method: "POST" });
      message.textContent = "Webhook sent again.";
      await load();
    } catch (error) { message.textContent = error.message; }
  });

  async function load() {
    const [job, timeline, log] = await Promise.all([
      api(`/v1/images/generations/${id}`),
      api(`/v1/images/generations/${id}/timeline`),
      api(`/v1/images/generations/${id}/webhooks`),
    ]);
    const newBadge = statusBadge(job.status);
    if (badge) badge.replaceWith(newBadge); else heading.append(newBadge);
    badge = newBadge;
    summary.replaceChildren(definitionList([
      ["Model", job.model_name ? `${job.model} (${job.model_name})` : job.model],
      ["Served by", job.upstream_model], ["Provider", timeline.request.provider],
      ["Channel", timeline.request.channel], ["Operation", job.operation], ["Priority", job.priority],
      ["Created (UTC)", when(job.created_at)], ["Finished (UTC)", when(job.finished_at)],
      ["Duration", duration(job)], ["Polls", job.poll_count], ["Submit attempts", job.submit_attempts],
      ["Cost", cost(job)], ["Error", job.error ? `${job.error.code}: ${job.error.message}` : ""],
    ]));
    images.replaceChildren(...job.data.map((image, index) => el("figure", {},
      el("a", { href: image.url, target: "_blank", rel: "noopener", class: "image-link" },
        el("img", { src: image.url, alt: `image ${index + 1}`, class: "result" })),
      el("figcaption", {}, [image.width && image.height ? `${image.width}×${image.height} ` : "", image.content_type]),
    )));
    if (!job.data.length) images.replaceChildren(el("p", {}, TERMINAL.has(job.status) ? "No images." : "Not ready yet."));
    request.textContent = JSON.stringify(timeline.request, null, 2);
    events.replaceChildren(...timeline.data.map((event) => el("tr", {},
      el("td", {}, event.at.replace("T", " ").slice(0, 23)),
      el("td", {}, event.from_status || ""), el("td", {}, event.to_status), el("td", {}, event.detail || ""))));
    hooks.replaceChildren(...log.data.map((attempt) => el("tr", {},
      el("td", {}, attempt.attempt), el("td", {}, attempt.event_type), el("td", {}, attempt.state),
      el("td", {}, attempt.response_status ?? ""), el("td", {}, attempt.latency_ms ?? ""),
      el("td", {}, attempt.error || ""), el("td", {}, attempt.url))));
    cancel.hidden = TERMINAL.has(job.status);
    redeliver.hidden = !(TERMINAL.has(job.status) && timeline.request.callback_url);
    if (TERMINAL.has(job.status)) stopRefreshing();
  }

  const table = (id2, titles, tbody) => el("table", { id: `${id2}-table` },
    el("thead", {}, el("tr", {}, titles.map((t) => el("th", {}, t)))), tbody);
  show(el("p", {}, el("a", { href: "#/jobs" }, "← all jobs")), heading, message, el("div", { class: "actions" }, cancel, redeliver),
    summary, el("h2", {}, "Images"), images,
    el("h2", {}, "Timeline"), table("timeline", ["At (UTC)", "From", "To", "Detail"], events),
    el("h2", {}, "Webhook attempts"), table("webhooks", ["#", "Event", "State", "HTTP", "ms", "Error", "URL"], hooks),
    el("h2", {}, "Request"), request);
  try { await load(); } catch (error) { show(failure(error)); return; }
  every(REFRESH_MS, load);
}

// ---------- costs ----------

const PALETTE = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00"];

/** A stacked bar per day (one colour per model), drawn as SVG. */
function costChart(rows, currency) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const totals = days.map((day) => rows.filter((r) => r.day === day).reduce((sum, r) => sum + Number(r.amount), 0));
  const peak = Math.max(...totals, 0) || 1;
  const width = 640, height = 240, left = 60, bottom = 30, top = 10;
  const band = (width - left) / Math.max(days.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `cost per day in ${currency}` });
  const scale = (amount) => (amount / peak) * (height - bottom - top);
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, stroke: "#888" }));
  chart.append(svg("text", { x: left - 6, y: top + 10, "text-anchor": "end", class: "axis" }, peak.toFixed(2)));
  chart.append(svg("text", { x: left - 6, y: height - bottom, "text-anchor": "end", class: "axis" }, "0"));
  days.forEach((day, i) => {
    let base = height - bottom;
    for (const model of models) {
      const row = rows.find((r) => r.day === day && r.model === model);
      if (!row) continue;
      const h = scale(Number(row.amount));
      base -= h;
      const bar = svg("rect", { x: left + i * band + band * 0.15, y: base, width: band * 0.7, height: h,
        fill: PALETTE[models.indexOf(model) % PALETTE.length], "data-model": model, "data-day": day });
      bar.append(svg("title", {}, `${day} ${model}: ${row.amount} ${currency}`));
      chart.append(bar);
    }
    chart.append(svg("text", { x: left + (i + 0.5) * band, y: height - 10, "text-anchor": "middle", class: "axis" },
      day.slice(5)));
  });
  const legend = el("ul", { class: "legend" }, models.map((model, i) => el("li", {},
    el("span", { class: "swatch", "data-colour": i % PALETTE.length }), model)));
  return el("figure", { class: "cost-chart" }, chart, legend);
}

async function costsView() {
  const period = el("select", { id: "period" },
    [7, 30, 90, 365].map((days) => el("option", { value: days, selected: days === 30 }, `last ${days} days`)));
  const out = el("div", { id: "costs" });
  async function load() {
    const since = new Date(Date.now() - Number(period.value) * 86400000).toISOString();
    const report = await api(`/v1/costs?since=${encodeURIComponent(since)}`);
    const currencies = [...new Set(report.data.map((r) => r.currency))];
    out.replaceChildren(
      el("p", { id: "cost-totals" }, report.totals.length
        ? report.totals.map((t) => `${t.amount} ${t.currency} over ${t.jobs} jobs`).join("; ") : "Nothing billed."),
      ...currencies.map((currency) => costChart(report.data.filter((r) => r.currency === currency), currency)),
      el("table", { id: "cost-table" },
        el("thead", {}, el("tr", {}, ["Day", "Model", "Jobs", "Amount"].map((t) => el("th", {}, t)))),
        el("tbody", {}, report.data.map((r) => el("tr", {}, el("td", {}, r.day), el("td", {}, r.model),
          el("td", {}, r.jobs), el("td", {}, `${r.amount} ${r.currency}`))))));
  }
  period.addEventListener("change", () => { load().catch((e) => out.replaceChildren(failure(e))); });
  show(el("h1", {}, "Costs"), el("label", {}, "Period ", period), out);
  await load().catch((e) => out.replaceChildren(failure(e)));
}

// ---------- playground ----------

/** The field for one parameter, from its JSON Schema (enum → select, number → bounded input, …). */
function field(name, schema, required) {
  const base = schema.anyOf ? schema.anyOf[0] : schema;
  const choices = schema.anyOf ? schema.anyOf.flatMap((s) => s.enum || []) : base.enum;
  const attrs = { name, id: `param-${name}`, required: required || null, "data-type": base.type };
  let input;
  if (choices) {
    input = el("select", attrs, required ? null : el("option", { value: "" }, "(default)"),
      choices.map((choice) => el("option", { value: choice }, choice)));
    input.dataset.type = typeof choices[0] === "number" ? "number" : "string";
  } else if (base.type === "integer" || base.type === "number") {
    input = el("input", { ...attrs, type: "number", min: base.minimum, max: base.maximum,
      step: base.type === "integer" ? 1 : "any" });
  } else if (base.type === "array") {
    input = el("textarea", { ...attrs, rows: 2, placeholder: base.items && base.items.type === "object"
      ? "a JSON list" : "one per line", maxlength: null });
    input.dataset.items = base.items ? base.items.type : "string";
  } else if (name === "prompt" || name === "negative_prompt") {
    input = el("textarea", { ...attrs, rows: 3, maxlength: base.maxLength });
  } else {
    input = el("input", { ...attrs, type: "text", maxlength: base.maxLength, placeholder: base.description });
  }
  if (schema.default !== undefined && input.tagName !== "SELECT") input.placeholder = `default: ${schema.default}`;
  const limits = [base.minimum !== undefined ? `≥ ${base.minimum}` : "", base.maximum !== undefined ? `≤ ${base.maximum}` : "",
    base.maxLength ? `≤ ${base.maxLength} characters` : "", base.maxItems ? `≤ ${base.maxItems} items` : ""]
    .filter(Boolean).join(", ");
  return el("div", { class: "field" }, el("label", { for: attrs.id }, name, required ? " *" : ""), input,
    limits ? el("small", {}, limits) : null);
}

function fieldValue(input) {
  const raw = input.value.trim();
  if (!raw) return undefined;
  if (input.dataset.type === "integer" || input.dataset.type === "number") return Number(raw);
  if (input.dataset.type === "array") {
    return input.dataset.items === "object" ? JSON.parse(raw) : raw.split("\n").map((s) => s.trim()).filter(Boolean);
  }
  return raw;
}

async function playgroundView() {
  let catalog;
  try { catalog = (await api("/v1/models")).data.filter((card) => card.available); }
  catch (error) { show(failure(error)); return; }
  const model = el("select", { id: "model", name: "model" }, catalog.map((card) => el("option", { value: card.id },
    `${card.id} (${card.owned_by}${card.availability === "emulated" ? ", emulated" : ""})`)));
  const fields = el("fieldset", { id: "fields" });
  const message = el("p", { id: "playground-message", role: "status" });
  const form = el("form", { id: "playground" }, el("label", {}, "Model ", model), fields,
    el("button", { type: "submit", id: "submit" }, "Submit job"), message);

  function schemaOf(card) {
    const variant = card.variant_param ? form.elements[card.variant_param] : null;
    if (variant && variant.value && card.variants[variant.value]) return card.variants[variant.value].parameters;
    return card.parameters;
  }
  function build(keepVariant) {
    const card = catalog.find((c) => c.id === model.value);
    if (!card) { fields.replaceChildren(el("p", {}, "No model can be served now.")); return; }
    const schema = keepVariant ? schemaOf(card) : card.parameters;
    const chosen = card.variant_param && form.elements[card.variant_param] ? form.elements[card.variant_param].value : null;
    const required = new Set(schema.required || []);
    const names = Object.keys(schema.properties).sort((a, b) =>
      (a === card.variant_param ? -2 : a === "prompt" ? -1 : 0) - (b === card.variant_param ? -2 : b === "prompt" ? -1 : 0));
    fields.replaceChildren(el("legend", {}, `Parameters of ${card.id}`),
      ...names.map((name) => field(name, schema.properties[name], required.has(name))));
    if (card.variant_param) {
      const variant = form.elements[card.variant_param];
      if (keepVariant && chosen) variant.value = chosen;
      variant.addEventListener("change", () => build(true));
    }
  }
  model.addEventListener("change", () => build(false));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model: model.value, async: true };
    try {
      for (const input of fields.querySelectorAll("[name]")) {
        const value = fieldValue(input);
        if (value !== undefined) body[input.name] = value;
      }
    } catch (error) { message.textContent = `Bad value: ${error.message}`; return; }
    try {
      const job = await api("/v1/images/generations", { method: "POST", body });
      message.replaceChildren("Submitted ", el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, id: "submitted" }, job.id));
    } catch (error) {
      message.textContent = error.param ? `${error.param}: ${error.message}` : error.message;
    }
  });
  show(el("h1", {}, "Playground"), form);
  build(false);
}

// ---------- routing ----------

function route() {
  stopRefreshing();
  const signedIn = Boolean(apiKey());
  document.getElementById("sign-in").hidden = signedIn;
  document.getElementById("nav").hidden = !signedIn;
  if (!signedIn) { show(); document.getElementById("api-key").focus(); return; }
  const [, view, id] = (location.hash || "#/jobs").split("/");
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.dataset.view === view);
  if (view === "jobs" && id) jobView(decodeURIComponent(id));
  else if (view === "costs") costsView();
  else if (view === "playground") playgroundView();
  else jobsView();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  route();
});
