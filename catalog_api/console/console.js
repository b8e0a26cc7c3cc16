// The web console: one page on the API's own /v1 routes, with the same authentication.
//
// No framework and no build step, so the package ships it as it is and the page needs
// no internet access. Every element is built with textContent (never innerHTML), so
// nothing a function returns or prints can run here, and the page's
// Content-Security-Policy allows scripts from this origin only. A token pasted (or
// got by logging in) is kept in sessionStorage, for this tab only, and sent as the
// X-Auth-Token header that every authentication mode of the API reads.
"use strict";

const TOKEN_KEY = "lambda-os-token";
const PAGE_LIMIT = 100;
const FINISHED = new Set(["succeeded", "failed", "timed_out"]);
const SVG = "http://www.w3.org/2000/svg";
const SAMPLE_CODE = `def handler(event, context):
    print("hello from", context.function_name)
    return {"hello": event}
`;

// -- the API ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, title, description) {
    super(description ? `${title}: ${description}` : title);
    this.status = status;
    this.title = title;
    this.description = description;
  }
}

// One request to the API: `json` is sent as JSON, `body` as given (a FormData, or
// JSON text typed by the user), with `type` its Content-Type. Answers the parsed
// JSON, the text, or null for 204; throws an ApiError with the API's own title and
// description for any other status.
async function api(method, path, { json, body, type } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["X-Auth-Token"] = token;
  if (json !== undefined) {
    body = JSON.stringify(json);
    type = "application/json";
  }
  if (type) headers["Content-Type"] = type;
  const response = await fetch(path, { method, headers, body, cache: "no-store" });
  const kind = response.headers.get("Content-Type") || "";
  if (!response.ok) {
    let title = `${response.status} ${response.statusText}`;
    let description = "";
    if (kind.startsWith("application/json")) {
      const error = await response.json();
      title = `${response.status} ${error.title || response.statusText}`;
      description = error.description || "";
    } else {
      description = (await response.text()).slice(0, 500);
    }
    throw new ApiError(response.status, title, description);
  }
  if (response.status === 204) return null;
  return kind.startsWith("application/json") ? response.json() : response.text();
}

const enc = encodeURIComponent;

// -- building the page -----------------------------------------------------------

// An element with attributes (functions under on* become listeners) and children
// (strings become text; null and false are left out; arrays are flattened).
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attrs);
  element.append(...flat(children));
  return element;
}

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  setAttributes(element, attrs);
  element.append(...flat(children));
  return element;
}

function setAttributes(element, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "value") element.value = value;
    else if (name === "checked") element.checked = Boolean(value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
}

function flat(children) {
  return children
    .flat(Infinity)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : String(child)));
}

function when(value) {
  return value ? value.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, "") : "–";
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)} ms`;
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function field(label, input, attrs = {}) {
  return h("label", attrs, h("span", {}, label), input);
}

function table(headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))),
    h("tbody", {}, rows),
  );
}

// A table whose rows come page by page from a list route ("More" follows `next`).
function pagedTable(headers, page, key, row, attrs = {}) {
  const body = h("tbody", {}, page[key].map(row));
  const more = h("button", { type: "button" }, "More");
  let next = page.next;
  more.hidden = !next;
  more.addEventListener("click", () =>
    busy(more, async () => {
      const following = await api("GET", next);
      body.append(...following[key].map(row));
      next = following.next;
      more.hidden = !next;
    }),
  );
  const empty = page[key].length ? null : h("p", { class: "muted" }, "None yet.");
  return [
    h("table", attrs, h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))), body),
    empty,
    more,
  ];
}

function definitions(pairs) {
  return h(
    "dl",
    {},
    pairs.filter(Boolean).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "–")]),
  );
}

// -- messages ----------------------------------------------------------------------

function showError(error) {
  const box = document.getElementById("error");
  const text = error instanceof ApiError ? error.message : `Request failed: ${error.message}`;
  const hint =
    error instanceof ApiError && error.status === 401
      ? " Paste a token above, or log in, and try again."
      : "";
  box.replaceChildren(text + hint);
  box.hidden = false;
  document.getElementById("notice").hidden = true;
}

function notice(text) {
  const box = document.getElementById("notice");
  box.replaceChildren(text);
  box.hidden = false;
  document.getElementById("error").hidden = true;
}

function clearMessages() {
  document.getElementById("error").hidden = true;
  document.getElementById("notice").hidden = true;
}

// Runs an action with its button disabled; an error from the API is shown, not lost.
async function busy(button, action) {
  button.disabled = true;
  try {
    clearMessages();
    await action();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// -- functions -----------------------------------------------------------------------

async function functionsPage() {
  const page = await api("GET", `/v1/functions?limit=${PAGE_LIMIT}`);
  const row = (fn) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/functions/${enc(fn.id)}` }, fn.name)),
      h("td", {}, fn.runtime),
      h("td", {}, `${fn.event_source} / ${fn.event_type}`),
      h("td", {}, `${fn.memory_mb} MB`),
      h("td", {}, `${fn.timeout_s} s`),
      h("td", {}, fn.version),
      h("td", {}, when(fn.updated_at)),
    );
  return [
    h("h2", {}, "Functions ", h("a", { href: "#/new", class: "button" }, "New function")),
    pagedTable(
      ["name", "runtime", "event source / type", "memory", "timeout", "version", "updated"],
      page,
      "functions",
      row,
      { id: "functions" },
    ),
  ];
}

async function runtimeSelect(current) {
  const { runtimes } = await api("GET", "/v1/runtimes");
  return h(
    "select",
    { name: "runtime" },
    runtimes.map((runtime) =>
      h(
        "option",
        { value: runtime.name, selected: runtime.name === current },
        `${runtime.name} (${runtime.description || runtime.image})`,
      ),
    ),
  );
}

async function newFunctionPage() {
  const file = h("input", { type: "file", name: "code-file", accept: ".py,.zip" });
  const text = h("textarea", { name: "code-text", rows: 8, spellcheck: "false" }, SAMPLE_CODE);
  const submit = h("button", { type: "submit", id: "create" }, "Create function");
  const form = h(
    "form",
    { id: "new-function", class: "grid", novalidate: true },
    field("Name", h("input", { name: "name", required: true, placeholder: "hello" })),
    field("Runtime", await runtimeSelect()),
    field("Handler", h("input", { name: "handler", placeholder: "main.handler" })),
    field("Memory (MB)", h("input", { name: "memory_mb", type: "number", value: "128" })),
    field("Timeout (s)", h("input", { name: "timeout_s", type: "number", value: "30" })),
    field("Event source", h("input", { name: "event_source", placeholder: "demo" })),
    field("Event type", h("input", { name: "event_type", placeholder: "greeting" })),
    field("Environment (JSON)", h("input", { name: "environment", placeholder: '{"KEY": "value"}' })),
    field("Description", h("input", { name: "description" })),
    field(
      "Batch size (empty: each event on its own)",
      h("input", { name: "batch_size", type: "number", min: 1, max: 1000, placeholder: "no batching" }),
    ),
    field(
      "Batch window (s)",
      h("input", { name: "batch_window_s", type: "number", min: 0, max: 300, step: "any", placeholder: "1.0" }),
    ),
    field("Code: a .py file or a .zip package", file, { class: "wide" }),
    field("…or the code of main.py", text, { class: "wide" }),
    h("div", { class: "wide" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const data = new FormData();
      for (const name of [
        "name", "runtime", "handler", "memory_mb", "timeout_s",
        "event_source", "event_type", "environment", "description",
        "batch_size", "batch_window_s",
      ]) {
        const value = form.elements[name].value.trim();
        if (value) data.append(name, value); // left out, the API's default applies
      }
      if (file.files.length) data.append("code", file.files[0]);
      else data.append("code", new Blob([text.value], { type: "text/x-python" }), "main.py");
      const created = await api("POST", "/v1/functions", { body: data });
      navigate(`#/functions/${enc(created.id)}`, `Created ${created.name} (version ${created.version}).`);
    });
  });
  return [h("h2", {}, "New function"), form];
}

function batching(fn) {
  return fn.batch_size == null
    ? "off: each event runs on its own"
    : `up to ${fn.batch_size} events a run, or what came ${fn.batch_window_s} s after the first`;
}

async function functionPage(id) {
  const fn = await api("GET", `/v1/functions/${enc(id)}`);
  const detail = h("section", { id: "execution", class: "panel", hidden: true });
  const executions = h("div", { id: "executions" });
  const metrics = h("div", { id: "metrics" });

  async function showExecution(executionId) {
    detail.hidden = false;
    detail.replaceChildren(h("p", { class: "muted" }, `Loading execution ${executionId}…`));
    const record = await awaitFinished(executionId, fn.timeout_s + 60);
    const logs = await api("GET", `/v1/executions/${enc(executionId)}/logs`);
    detail.replaceChildren(...flat(executionView(record, logs)));
  }

  async function loadExecutions() {
    const page = await api(
      "GET",
      `/v1/executions?function_id=${enc(fn.id)}&limit=${PAGE_LIMIT}`,
    );
    // The API lists executions by id (a digest), so each page is sorted here, newest first.
    page.executions.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
    const row = (record) =>
      h(
        "tr",
        { "data-id": record.id },
        h(
          "td",
          {},
          h(
            "a",
            {
              href: `#/executions/${enc(record.id)}`,
              onclick: (event) => {
                event.preventDefault();
                showExecution(record.id).catch(showError);
              },
            },
            record.id.slice(0, 12),
          ),
        ),
        h("td", { class: `status ${record.status}` }, record.status),
        h("td", {}, record.alias ? `${record.function_version} (${record.alias})` : record.function_version),
        h("td", {}, when(record.created_at)),
        h("td", {}, ms(record.duration_ms)),
        h("td", {}, record.cold_start === null ? "–" : record.cold_start ? "cold" : "warm"),
        h("td", {}, record.attempt),
      );
    executions.replaceChildren(
      ...flat(
        pagedTable(
          ["execution", "status", "version", "created", "duration", "start", "attempt"],
          page,
          "executions",
          row,
        ),
      ),
    );
  }

  const windowSelect = h(
    "select",
    { id: "metrics-window", onchange: () => loadMetrics().catch(showError) },
    [["3600", "last hour"], ["86400", "last day"], ["604800", "last 7 days"], ["2678400", "last 31 days"]]
      .map(([value, label]) => h("option", { value, selected: value === "86400" }, label)),
  );

  async function loadMetrics() {
    const figures = await api(
      "GET",
      `/v1/functions/${enc(fn.id)}/metrics?window_s=${windowSelect.value}`,
    );
    metrics.replaceChildren(...flat(metricsView(figures)));
  }

  const event = h("textarea", { id: "event", rows: 3, spellcheck: "false" }, '{"name": "world"}');
  const mode = h(
    "select",
    { id: "invoke-mode" },
    h("option", { value: "sync" }, "wait for the result"),
    h("option", { value: "async" }, "queue it (async)"),
  );
  const alias = h("select", { id: "invoke-alias", "aria-label": "alias" });
  // The aliases the panel below lists; the choice made is kept when they change.
  function showAliases(aliases) {
    const chosen = alias.value;
    alias.replaceChildren(
      ...flat([
        h("option", { value: "" }, `current version (${fn.version})`),
        aliases.map((a) => h("option", { value: a.name, selected: a.name === chosen }, `alias ${a.name}`)),
      ]),
    );
  }
  showAliases([]);
  const invoke = h("button", { type: "button", id: "invoke" }, "Invoke");
  invoke.addEventListener("click", () =>
    busy(invoke, async () => {
      detail.hidden = false;
      detail.replaceChildren(h("p", { class: "muted" }, "Running…"));
      const through = alias.value ? `&alias=${enc(alias.value)}` : "";
      const started = await api(
        "POST",
        `/v1/functions/${enc(fn.id)}/invocations?mode=${mode.value}${through}`,
        { body: event.value, type: "application/json" },
      );
      notice(`Execution ${started.id}: ${started.status}.`);
      await showExecution(started.id);
      await Promise.all([loadExecutions(), loadMetrics()]);
    }),
  );

  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () =>
    busy(refresh, () => Promise.all([loadExecutions(), loadMetrics()])),
  );

  const versions = versionsPanel(fn, showAliases);
  await Promise.all([loadExecutions(), loadMetrics(), versions.load()]);
  return [
    h("h2", {}, fn.name, " ", h("small", { class: "muted" }, fn.id)),
    definitions([
      ["runtime", fn.runtime],
      ["handler", fn.handler],
      ["memory", `${fn.memory_mb} MB`],
      ["timeout", `${fn.timeout_s} s`],
      ["event", `${fn.event_source} / ${fn.event_type}`],
      ["version", fn.version],
      ["batching", batching(fn)],
      ["code", `${fn.code_size} bytes, sha256 ${(fn.code_sha256 || "").slice(0, 16)}…`],
      ["updated", when(fn.updated_at)],
    ]),
    h(
      "div",
      { class: "columns" },
      h(
        "div",
        {},
        h(
          "section",
          { class: "panel" },
          h("h3", {}, "Invoke"),
          field("Event data (JSON)", event),
          h("div", { class: "row" }, mode, alias, invoke),
        ),
        detail,
        h("section", { class: "panel" }, h("h3", {}, "Executions ", refresh), executions),
      ),
      h(
        "div",
        {},
        h("section", { class: "panel" }, h("h3", {}, "Metrics ", windowSelect), metrics),
        versions.element,
        await configurationPanel(fn),
        codePanel(fn),
      ),
    ),
  ];
}

// Polls an execution until it has finished (an async invocation answers at once).
async function awaitFinished(executionId, timeoutS) {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    const record = await api("GET", `/v1/executions/${enc(executionId)}`);
    if (FINISHED.has(record.status) || Date.now() > deadline) return record;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

const LABELS = {
  description: "Description",
  handler: "Handler",
  event_source: "Event source",
  event_type: "Event type",
  memory_mb: "Memory (MB)",
  timeout_s: "Timeout (s)",
  max_retries: "Retries",
  concurrency: "Concurrency",
  batch_size: "Batch size (empty: each event on its own)",
  batch_window_s: "Batch window (s)",
};

async function configurationPanel(fn) {
  // An empty number is sent as null: for batch_size that switches batching off.
  const numbers = ["memory_mb", "timeout_s", "max_retries", "concurrency", "batch_size", "batch_window_s"];
  const texts = ["description", "handler", "event_source", "event_type"];
  const environment = h("textarea", { name: "environment", rows: 2 }, pretty(fn.environment || {}));
  const network = h("input", { type: "checkbox", name: "network", checked: fn.network });
  const save = h("button", { type: "submit", id: "save" }, "Save configuration");
  const remove = h("button", { type: "button", id: "delete", class: "danger" }, "Delete function");
  const form = h(
    "form",
    { id: "configuration", class: "grid", novalidate: true },
    field("Runtime", await runtimeSelect(fn.runtime)),
    texts.map((name) => field(LABELS[name], h("input", { name, value: fn[name] ?? "" }))),
    numbers.map((name) =>
      field(
        LABELS[name],
        h("input", { name, type: "number", step: "any", value: String(fn[name] ?? "") }),
      ),
    ),
    field("Environment (JSON)", environment),
    field("Network (public internet only)", network),
    h("div", { class: "row" }, save, remove),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(save, async () => {
      const changes = {};
      if (form.elements.runtime.value !== fn.runtime) changes.runtime = form.elements.runtime.value;
      for (const name of texts) {
        if (form.elements[name].value !== (fn[name] ?? "")) changes[name] = form.elements[name].value;
      }
      for (const name of numbers) {
        const value = form.elements[name].value.trim();
        if (value !== String(fn[name] ?? "")) changes[name] = value === "" ? null : Number(value);
      }
      let env;
      try {
        env = JSON.parse(environment.value || "{}");
      } catch (error) {
        throw new Error(`environment is not JSON: ${error.message}`);
      }
      if (pretty(env) !== pretty(fn.environment || {})) changes.environment = env;
      if (network.checked !== fn.network) changes.network = network.checked;
      if (!Object.keys(changes).length) {
        notice("Nothing changed.");
        return;
      }
      const updated = await api("PATCH", `/v1/functions/${enc(fn.id)}`, { json: changes });
      await route();
      notice(`Saved ${Object.keys(changes).join(", ")} of ${updated.name} (version ${updated.version}).`);
    });
  });
  remove.addEventListener("click", () => {
    if (!confirm(`Delete ${fn.name} and its code?`)) return;
    busy(remove, async () => {
      await api("DELETE", `/v1/functions/${enc(fn.id)}`);
      navigate("#/functions", `Deleted ${fn.name}.`);
    });
  });
  return h("section", { class: "panel" }, h("h3", {}, "Configuration"), form);
}

function codePanel(fn) {
  const file = h("input", { type: "file", accept: ".py,.zip", id: "new-code" });
  const upload = h("button", { type: "button" }, "Upload new code");
  const download = h("button", { type: "button" }, "Download code");
  upload.addEventListener("click", () =>
    busy(upload, async () => {
      if (!file.files.length) throw new Error("choose a .py file or a .zip package first");
      const data = new FormData();
      data.append("code", file.files[0]);
      const updated = await api("PUT", `/v1/functions/${enc(fn.id)}/code`, { body: data });
      await route();
      notice(`${updated.name} is now version ${updated.version}.`);
    }),
  );
  // A plain link would not carry the token, so the package is fetched and saved from here.
  download.addEventListener("click", () =>
    busy(download, async () => {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const response = await fetch(`/v1/functions/${enc(fn.id)}/code`, {
        headers: token ? { "X-Auth-Token": token } : {},
      });
      if (!response.ok) throw new ApiError(response.status, `${response.status} download failed`, "");
      const link = h("a", {
        href: URL.createObjectURL(await response.blob()),
        download: fn.code_filename || `${fn.name}.zip`,
      });
      link.click();
      URL.revokeObjectURL(link.href);
    }),
  );
  return h(
    "section",
    { class: "panel" },
    h("h3", {}, "Code"),
    h("div", { class: "row" }, file, upload, download),
  );
}

// -- versions and aliases -------------------------------------------------------------

function split(alias) {
  if (alias.additional_version == null) return "–";
  const share = Math.round(alias.additional_weight * 1000) / 10;
  return `${share}% of runs to version ${alias.additional_version}`;
}

// The "Versions and aliases" panel. `load` reads both lists again and redraws them,
// and hands the aliases to `onAliases` (the invoke box offers them).
function versionsPanel(fn, onAliases) {
  const base = `/v1/functions/${enc(fn.id)}`;
  const versions = h("div", { id: "versions" });
  const aliases = h("div", { id: "aliases" });
  const description = h("input", {
    id: "publish-description",
    placeholder: "description (optional)",
    "aria-label": "description of the version",
  });
  const publish = h("button", { type: "button", id: "publish" }, "Publish version");
  const name = h("input", { name: "alias", placeholder: "live" });
  const version = h("select", { name: "version" });
  const other = h("select", { name: "additional_version" });
  const weight = h("input", {
    name: "additional_weight",
    type: "number",
    min: 0,
    max: 1,
    step: "any",
    placeholder: "0.1",
  });
  const save = h("button", { type: "submit", id: "save-alias" }, "Save alias");
  const form = h(
    "form",
    { id: "alias-form", class: "grid", novalidate: true },
    field("Alias (a-z 0-9 -, a letter first)", name),
    field("Version", version),
    field("Additional version (optional)", other),
    field("Its share of the runs (0 to under 1)", weight),
    h("div", { class: "row wide" }, save),
  );
  let published = [];

  function choices(select, numbers, chosen, none) {
    select.replaceChildren(
      ...flat([
        none && h("option", { value: "" }, none),
        numbers.map((n) => h("option", { value: String(n), selected: n === chosen }, `version ${n}`)),
      ]),
    );
  }

  function versionRow(v) {
    const remove = h("button", { type: "button", class: "danger delete-version" }, "Delete");
    remove.addEventListener("click", () => {
      if (!confirm(`Delete version ${v.version} of ${fn.name}?`)) return;
      busy(remove, async () => {
        await api("DELETE", `${base}/versions/${v.version}`);
        await load();
        notice(`Deleted version ${v.version}.`);
      });
    });
    return h(
      "tr",
      { "data-version": v.version },
      h("td", {}, v.version),
      h("td", {}, when(v.published_at)),
      h("td", { title: v.code_sha256 }, `sha256 ${v.code_sha256.slice(0, 16)}…, ${v.code_size} bytes`),
      h("td", {}, v.description || "–"),
      h("td", {}, remove),
    );
  }

  function aliasRow(a) {
    const edit = h("button", { type: "button", class: "edit-alias" }, "Edit");
    const remove = h("button", { type: "button", class: "danger delete-alias" }, "Delete");
    edit.addEventListener("click", () => {
      name.value = a.name;
      version.value = String(a.version);
      other.value = a.additional_version == null ? "" : String(a.additional_version);
      weight.value = a.additional_version == null ? "" : String(a.additional_weight);
      name.focus();
    });
    remove.addEventListener("click", () => {
      if (!confirm(`Delete the alias ${a.name}? Events and invocations naming it will not run ${fn.name}.`)) return;
      busy(remove, async () => {
        await api("DELETE", `${base}/aliases/${enc(a.name)}`);
        await load();
        notice(`Deleted the alias ${a.name}.`);
      });
    });
    return h(
      "tr",
      { "data-alias": a.name },
      h("td", {}, a.name),
      h("td", {}, a.version),
      h("td", {}, split(a)),
      h("td", {}, when(a.updated_at)),
      h("td", {}, edit, " ", remove),
    );
  }

  async function load() {
    const [listed, named] = await Promise.all([
      api("GET", `${base}/versions`),
      api("GET", `${base}/aliases`),
    ]);
    published = listed.versions;
    const numbers = published.map((v) => v.version);
    const newest = numbers.length ? numbers[numbers.length - 1] : null;
    choices(version, numbers, version.value ? Number(version.value) : newest, null);
    choices(other, numbers, other.value ? Number(other.value) : null, "none");
    versions.replaceChildren(
      ...flat([
        table(["version", "published", "code", "description", ""], published.map(versionRow), {
          id: "versions-table",
        }),
        !published.length && h("p", { class: "muted" }, "None published yet."),
      ]),
    );
    aliases.replaceChildren(
      ...flat([
        table(["alias", "version", "split", "updated", ""], named.aliases.map(aliasRow), {
          id: "aliases-table",
        }),
        !named.aliases.length && h("p", { class: "muted" }, "No alias yet."),
      ]),
    );
    onAliases(named.aliases);
  }

  publish.addEventListener("click", () =>
    busy(publish, async () => {
      const before = new Set(published.map((v) => v.version));
      const text = description.value.trim();
      const made = await api("POST", `${base}/versions`, { json: text ? { description: text } : {} });
      description.value = "";
      await load();
      notice(
        before.has(made.version)
          ? `Version ${made.version} is published already: nothing has changed since.`
          : `Published version ${made.version}.`,
      );
    }),
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(save, async () => {
      const alias = name.value.trim();
      if (!alias) throw new Error("name the alias first");
      if (!version.value) throw new Error("an alias names a published version: publish one first");
      const change = { version: Number(version.value) };
      // Both or neither, as the user left them: the API says what is wrong with a half.
      if (other.value || weight.value.trim()) {
        change.additional_version = other.value ? Number(other.value) : null;
        change.additional_weight = weight.value.trim() ? Number(weight.value) : null;
      }
      const stored = await api("PUT", `${base}/aliases/${enc(alias)}`, { json: change });
      await load();
      const also = stored.additional_version == null ? "" : `, ${split(stored)}`;
      notice(`The alias ${stored.name} runs version ${stored.version}${also}.`);
    });
  });

  const element = h(
    "section",
    { class: "panel", id: "versions-panel" },
    h("h3", {}, "Versions and aliases"),
    h("h4", {}, "Published versions"),
    versions,
    h("div", { class: "row" }, description, publish),
    h("h4", {}, "Aliases"),
    aliases,
    form,
  );
  return { element, load };
}

// -- executions ----------------------------------------------------------------------

function executionView(record, logs) {
  const error = record.error;
  return [
    h("h3", {}, "Execution ", h("a", { href: `#/executions/${enc(record.id)}` }, record.id)),
    definitions([
      ["status", h("span", { class: `status ${record.status}` }, record.status)],
      ["function", h("a", { href: `#/functions/${enc(record.function_id)}` }, record.function_id)],
      ["version", record.function_version],
      ["alias", record.alias],
      ["event", record.event_id],
      record.batch_events && [
        `batch of ${record.batch_events.length}`,
        h("ol", { id: "batch-events" }, record.batch_events.map((id) => h("li", {}, id))),
      ],
      ["started", when(record.started_at)],
      ["finished", when(record.finished_at)],
      ["duration", ms(record.duration_ms)],
      ["start", record.cold_start === null ? "–" : record.cold_start ? "cold" : "warm"],
      ["CPU", ms(record.cpu_ms)],
      ["peak memory", record.peak_memory_mb == null ? "–" : `${record.peak_memory_mb} MB`],
      ["host", record.host],
      ["attempt", record.attempt],
    ]),
    h("h4", {}, "Result"),
    h("pre", { id: "result" }, record.result === null ? "–" : pretty(record.result)),
    error &&
      h(
        "div",
        {},
        h("h4", {}, "Error"),
        h(
          "pre",
          { id: "execution-error" },
          `${error.reason || ""} ${error.type || ""}: ${error.message || ""}\n${error.traceback || ""}`,
        ),
      ),
    h("h4", {}, "Logs"),
    h("pre", { id: "logs" }, logs || "(no output)"),
  ];
}

async function executionPage(id) {
  const record = await api("GET", `/v1/executions/${enc(id)}`);
  const logs = await api("GET", `/v1/executions/${enc(id)}/logs`);
  return h("section", { class: "panel", id: "execution" }, executionView(record, logs));
}

// -- charts: inline SVG, drawn here ----------------------------------------------------

function metricsView(m) {
  const spread = (figures) =>
    ["p50", "p90", "p99", "max"].map((name) => [name, figures[name]]);
  const rate = m.cold_start_rate === null ? "–" : `${Math.round(m.cold_start_rate * 100)}%`;
  return [
    h(
      "div",
      { class: "tiles" },
      tile("executions", m.executions),
      tile("errors", Object.values(m.errors).reduce((a, b) => a + b, 0)),
      tile("cold starts", `${m.cold_starts} (${rate})`),
      tile("CPU total", ms(m.cpu_ms.total)),
    ),
    m.truncated && h("p", { class: "muted" }, "Only the newest executions of the window counted."),
    h(
      "div",
      { class: "charts" },
      columns("Executions per day", m.per_day.map((d) => [d.day.slice(5), d.executions])),
      bars("Executions by status", Object.entries(m.by_status)),
      bars("Errors by reason", Object.entries(m.errors)),
      bars("Duration (ms)", spread(m.duration_ms)),
      bars("Cold starts", [["cold", m.cold_starts], ["all", m.executions]]),
      bars("Peak memory (MB)", spread(m.peak_memory_mb)),
      bars("CPU time (ms)", spread(m.cpu_ms)),
    ),
  ];
}

function tile(label, value) {
  return h("div", { class: "tile" }, h("strong", {}, value), h("span", {}, label));
}

function number(value) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : Number(value).toFixed(1);
}

// A horizontal bar chart of [label, value] pairs; a null value is drawn as "–".
function bars(title, pairs) {
  const width = 300;
  const row = 20;
  const longest = Math.max(...pairs.map(([label]) => String(label).length), 3);
  const left = Math.min(10 + longest * 6.5, 150);
  const right = 50;
  const values = pairs.map(([, value]) => value ?? 0);
  const top = Math.max(...values, 0) || 1;
  const height = Math.max(pairs.length, 1) * row + 4;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": title,
  });
  if (!pairs.length) chart.append(svg("text", { x: 4, y: 15, class: "muted" }, "no data"));
  pairs.forEach(([label, value], i) => {
    const y = i * row + 2;
    const length = ((value ?? 0) / top) * (width - left - right);
    chart.append(
      svg("text", { x: left - 6, y: y + 13, "text-anchor": "end" }, label),
      svg("rect", { x: left, y: y + 2, width: Math.max(length, 1), height: row - 6, class: "bar" }),
      svg("text", { x: left + length + 4, y: y + 13 }, number(value)),
    );
  });
  return h("figure", { class: "chart" }, h("figcaption", {}, title), chart);
}

// A column chart of [label, value] pairs, for counts over time.
function columns(title, pairs) {
  const width = 300;
  const height = 120;
  const bottom = 18;
  const top = Math.max(...pairs.map(([, value]) => value), 0) || 1;
  const step = Math.min((width - 10) / Math.max(pairs.length, 1), 48);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": title,
  });
  if (!pairs.length) chart.append(svg("text", { x: 4, y: 15, class: "muted" }, "no data"));
  const labelEvery = Math.ceil(pairs.length / 8);
  pairs.forEach(([label, value], i) => {
    const tall = (value / top) * (height - bottom - 16);
    const x = 5 + i * step;
    chart.append(
      svg("rect", {
        x: x + step * 0.15,
        y: height - bottom - tall,
        width: Math.max(step * 0.7, 1),
        height: Math.max(tall, 1),
        class: "bar",
      }),
      svg("text", { x: x + step / 2, y: height - bottom - tall - 3, "text-anchor": "middle" }, value),
      i % labelEvery === 0 &&
        svg("text", { x: x + step / 2, y: height - 4, "text-anchor": "middle" }, label),
    );
  });
  return h("figure", { class: "chart" }, h("figcaption", {}, title), chart);
}

// -- dead letters and hosts -----------------------------------------------------------

async function deadLettersPage() {
  const page = await api("GET", `/v1/deadletters?limit=${PAGE_LIMIT}`);
  const body = h("pre", { id: "dead-letter-body", hidden: true });
  const row = (letter) => {
    const replayed = h("td", {}, when(letter.replayed_at));
    const show = h("button", { type: "button" }, "Show");
    const replay = h("button", { type: "button", class: "replay" }, "Replay");
    show.addEventListener("click", () =>
      busy(show, async () => {
        const full = await api("GET", `/v1/deadletters/${enc(letter.id)}`);
        body.replaceChildren(
          `${full.id} (${full.body_encoding}${full.body_truncated ? ", truncated" : ""})\n` +
            `headers: ${pretty(full.headers)}\n\n${full.body}`,
        );
        body.hidden = false;
      }),
    );
    replay.addEventListener("click", () =>
      busy(replay, async () => {
        const replayedLetter = await api("POST", `/v1/deadletters/${enc(letter.id)}/replay`);
        replayed.replaceChildren(when(replayedLetter.replayed_at));
        notice(`Dead letter ${letter.id} is back on the events queue.`);
      }),
    );
    const link = (kind, id) => (id ? h("a", { href: `#/${kind}/${enc(id)}` }, id.slice(0, 12)) : "–");
    return h(
      "tr",
      {},
      h("td", {}, when(letter.created_at)),
      h("td", {}, letter.kind),
      h("td", {}, letter.reason),
      h("td", {}, letter.event_id || "–"),
      h("td", {}, link("functions", letter.function_id)),
      h("td", {}, link("executions", letter.execution_id)),
      replayed,
      h("td", {}, show, " ", replay),
    );
  };
  return [
    h("h2", {}, "Dead letters"),
    pagedTable(
      ["created", "kind", "reason", "event", "function", "execution", "replayed", ""],
      page,
      "deadletters",
      row,
      { id: "deadletters" },
    ),
    body,
  ];
}

async function hostsPage() {
  const { hosts } = await api("GET", "/v1/hosts");
  const { events } = await api("GET", "/v1/hosts/events");
  return [
    h("h2", {}, "Hosts"),
    table(
      ["host", "state", "memory free / total", "idle memory", "slots free / total", "running", "warm", "heartbeat"],
      hosts.map((host) =>
        h(
          "tr",
          {},
          h("td", {}, host.id),
          h("td", {}, host.state),
          h("td", {}, `${host.free_memory_mb} / ${host.memory_total_mb} MB`),
          h("td", {}, `${host.idle_memory_mb} MB`),
          h("td", {}, `${host.free_slots} / ${host.slots_total}`),
          h("td", {}, host.running),
          h("td", {}, host.warm.length),
          h("td", {}, when(host.heartbeat_at)),
        ),
      ),
      { id: "hosts" },
    ),
    hosts.length ? null : h("p", { class: "muted" }, "No host has registered (one machine runs everything)."),
    h("h3", {}, "Scaling decisions"),
    table(
      ["at", "action", "reason", "host", "error"],
      events.map((event) =>
        h(
          "tr",
          {},
          h("td", {}, when(event.at)),
          h("td", {}, event.action),
          h("td", {}, event.reason),
          h("td", {}, event.host_id || "–"),
          h("td", {}, event.error || "–"),
        ),
      ),
    ),
    events.length ? null : h("p", { class: "muted" }, "None yet."),
  ];
}

// -- authentication ------------------------------------------------------------------

function showAuthState() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("auth-state").textContent = token ? "token set" : "no token";
}

function setUpAuth() {
  const form = document.getElementById("auth");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showAuthState();
    route();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showAuthState();
    route();
  });
  const login = document.getElementById("login-button");
  login.addEventListener("click", () =>
    busy(login, async () => {
      const name = document.getElementById("login-name").value;
      const password = document.getElementById("login-password");
      const issued = await api("POST", "/v1/auth/tokens", {
        json: { name, password: password.value },
      });
      password.value = "";
      sessionStorage.setItem(TOKEN_KEY, issued.token);
      document.getElementById("login").open = false;
      showAuthState();
      await route();
      notice(`Logged in as ${name}; the token expires at ${when(issued.expires_at)}.`);
    }),
  );
  showAuthState();
}

// -- routing ---------------------------------------------------------------------------

const ROUTES = [
  [/^#\/functions$/, functionsPage],
  [/^#\/new$/, newFunctionPage],
  [/^#\/functions\/([^/]+)$/, functionPage],
  [/^#\/executions\/([^/]+)$/, executionPage],
  [/^#\/deadletters$/, deadLettersPage],
  [/^#\/hosts$/, hostsPage],
];
let shown = 0;
let pendingNotice = null;

// Goes to another page and says `message` there (a notice shown before would be cleared).
function navigate(hash, message) {
  pendingNotice = message;
  location.hash = hash;
}

// Renders the page the location's hash names; a slower, older render never replaces a newer one.
async function route() {
  const mine = ++shown;
  const hash = location.hash || "#/functions";
  for (const [pattern, page] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("current", hash.startsWith(link.getAttribute("href")));
    }
    const view = document.getElementById("view");
    try {
      const content = await page(...match.slice(1).map(decodeURIComponent));
      if (mine === shown) view.replaceChildren(...flat([content]));
    } catch (error) {
      if (mine !== shown) return;
      view.replaceChildren(h("p", { class: "muted" }, "This page could not be loaded."));
      showError(error);
    }
    if (pendingNotice) notice(pendingNotice);
    pendingNotice = null;
    return;
  }
  location.hash = "#/functions";
}

window.addEventListener("hashchange", () => {
  clearMessages();
  route();
});
document.addEventListener("DOMContentLoaded", () => {
  setUpAuth();
  route();
});
