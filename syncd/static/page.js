// syncd's status page: one card per sync, kept current by Server-Sent Events, and by polling
// whenever the event stream is down.
//
// Everything the daemon sends reaches the page as text (textContent, properties, attributes),
// never as markup: a sync name or an error message holding <script> shows as those characters.

const API = "/api/batch-sync";
const TOKEN_KEY = "syncd.token";
const RUNS_SHOWN = 5;
// The chart shows the last hour's runs, and at least this many of the newest when the hour
// held fewer; asking for RUNS_ASKED runs covers a run every minute.
const CHART_RUNS = 20;
const RUNS_ASKED = 60;
const HOUR_MS = 3_600_000;
const SVG = "http://www.w3.org/2000/svg";
// A running sync commits many batches a second; its full status is asked for at most this often.
const STATUS_EVERY_MS = 500;
// Everything is reloaded this often, while events arrive too: the lag moves with the source's
// new rows, which no event announces.
const RELOAD_MS = { live: 10_000, running: 2_000, idle: 5_000 };

const numbers = new Intl.NumberFormat();
const relativeTime = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const cards = new Map();
let settings = null;
let live = false;
let nextReload = 0;
let reloading = null;

const byId = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const count = (n) => (n == null ? "—" : numbers.format(n));

// ---- talking to the daemon ----------------------------------------------------------------

async function call(url, init = {}) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store", ...init });
  } catch (error) {
    return { ok: false, status: 0, body: {}, message: `syncd does not answer (${error.message})` };
  }
  const body = await response.json().catch(() => ({}));
  const message = body.message ?? body.reasons?.join("; ") ?? response.statusText;
  return { ok: response.ok, status: response.status, body, message };
}

function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  return call(`${API}/${path}`, { method: "POST", headers, body: JSON.stringify(body) });
}

function failure(answer) {
  return answer.status ? `${answer.status}: ${answer.message}` : answer.message;
}

// ---- one card per sync ----------------------------------------------------------------------

class Card {
  constructor(name) {
    this.name = name;
    this.view = null;
    this.runs = null;
    this.stale = false;
    this.runsStale = false;
    this.lastLoad = 0;
    this.refreshing = null;
    this.root = byId("card-template").content.firstElementChild.cloneNode(true);
    this.root.dataset.sync = name;
    this.field("name").textContent = name;
    if (settings) this.field("batch-size").max = settings.max_batch_size;
    this.root.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    this.field("reset").addEventListener("click", () => this.reset());
    byId("cards").append(this.root);
  }

  field(name) {
    return this.root.querySelector(`[data-field="${name}"]`);
  }

  say(text) {
    this.field("message").textContent = text;
  }

  async start() {
    const body = { sync_name: this.name };
    const size = this.field("batch-size").value;
    if (size) body.batch_size = Number(size);
    const answer = await post("start", body);
    if (answer.ok) {
      this.say(`${answer.body.message} (run ${answer.body.run_id.slice(0, 8)}).`);
      const queued = answer.body.status === "queued";
      if (this.view) {
        this.show(queued
          ? { ...this.view, queued, queue_position: answer.body.queue_position }
          : { ...this.view, running: true, queued: false, run_rows_read: 0 });
      }
    } else {
      this.refused(answer);
    }
    this.refreshSoon(true);
  }

  async reset() {
    const target = this.view?.target_table ?? "the target table";
    const question = `Reset "${this.name}"? Its next run starts over from the first row.`
      + ` The rows already in ${target} are kept.`;
    if (!window.confirm(question)) return;
    const answer = await post("reset", { sync_name: this.name });
    if (answer.ok) this.say(`${answer.body.message}.`);
    else this.refused(answer);
    this.refreshSoon(true);
  }

  refused(answer) {
    if (answer.status === 401) {
      this.say("401: the daemon refused the API token. Enter the right one above.");
      askForToken(`401 Unauthorized: the daemon refused the token (${answer.message}).`);
    } else {
      this.say(`Refused, ${failure(answer)}`);
    }
  }

  // Events carry the running numbers, so the bar moves with every batch without asking again.
  onEvent(type, event) {
    if (type === "batch_committed" && this.view) {
      this.show({ ...this.view, running: true, queued: false, run_id: event.run_id,
                  run_rows_read: event.run_rows_read, rows_per_second: event.rows_per_second,
                  source_rows_estimate: event.source_rows_estimate });
    }
    this.refreshSoon(type !== "batch_committed");
  }

  refreshSoon(withRuns = false) {
    this.stale = true;
    this.runsStale ||= withRuns;
    this.refreshing ??= this.refresh().finally(() => { this.refreshing = null; });
  }

  async refresh() {
    while (this.stale) {
      await sleep(this.lastLoad + STATUS_EVERY_MS - Date.now());
      const withRuns = this.runsStale;
      this.stale = this.runsStale = false;
      this.lastLoad = Date.now();
      const status = await call(`${API}/status?sync_name=${encodeURIComponent(this.name)}`);
      // A running run's row counts up in the table too.
      if (withRuns || this.view?.running) await this.loadRuns();
      if (status.ok) this.show(status.body);
    }
  }

  async loadRuns() {
    const query = `sync_name=${encodeURIComponent(this.name)}&limit=${RUNS_ASKED}`;
    const answer = await call(`${API}/runs?${query}`);
    if (!answer.ok) return;
    this.runs = answer.body.runs;
    this.showRuns();
    if (this.view) this.show(this.view);
  }

  show(update) {
    const view = notBehind(update, this.view);
    this.view = view;
    const state = stateOf(view, this.runs);
    this.root.dataset.state = state;
    this.field("state").textContent = state;
    this.field("source").textContent = view.source ?? "—";
    this.field("target").textContent = view.target_table ?? "—";
    this.field("schedule").textContent = view.schedule ?? "none: started by hand";
    showTime(this.field("next-run"), view.next_run_at, "—");
    this.field("total-synced").textContent = count(view.total_synced);
    this.field("total-in-db").textContent = view.total_in_db == null
      ? "no table yet" : count(view.total_in_db);
    showTime(this.field("last-sync"), view.last_sync_at, "never");
    this.showFreshness(view.freshness);
    this.field("queue").hidden = !view.queued;
    this.field("queue").textContent = view.queued
      ? `Waiting for a free slot: ${ordinal(view.queue_position)} in the queue.` : "";
    this.showProgress(view);
    this.field("error-box").hidden = !view.last_error;
    this.field("error").textContent = view.last_error ?? "";
    this.showErrorRun(view.last_error);
    this.showSchemaChanges(view.schema_changes ?? []);
    this.showWork(view);
    this.showVerify(view.last_verify);
    this.field("start").disabled = view.running;
    this.field("reset").disabled = view.running;
  }

  // The bar is this run's rows read against the engine's estimate, made when the run started,
  // of the rows it has to read.
  showProgress(view) {
    this.field("progress").hidden = !view.running;
    if (!view.running) return;
    const bar = this.field("bar");
    const read = view.run_rows_read ?? 0;
    const estimate = view.source_rows_estimate;
    const rate = view.rows_per_second;
    if (estimate > 0) {
      bar.max = estimate;
      bar.value = Math.min(read, estimate);
      this.field("read").textContent = `${count(read)} of about ${count(estimate)} rows`;
    } else {
      bar.removeAttribute("value");
      this.field("read").textContent = `${count(read)} rows`;
    }
    this.field("rate").textContent = rate ? `${count(Math.round(rate))} rows/s` : "";
    const left = estimate > read && rate ? (estimate - read) / rate : null;
    this.field("eta").textContent = left == null ? "" : `about ${duration(left)} left`;
  }

  // The lag is the source's newest cursor value less the one the target has reached (the time
  // since the last success for syncs without a time cursor); unknown until both were read.
  showFreshness(freshness) {
    const badge = this.field("freshness");
    badge.hidden = !freshness;
    if (!freshness) {
      this.field("lag").textContent = "—";
      return;
    }
    const lag = freshness.lag_seconds;
    this.field("lag").textContent = lag == null ? "not known yet" : duration(lag);
    badge.textContent = freshness.stale ? "stale" : "fresh";
    badge.dataset.stale = freshness.stale;
  }

  // Which run the last error came from, and when: the newest failed run shown, if any.
  showErrorRun(error) {
    const failed = error ? this.runs?.find((run) => run.status === "failed" && run.error) : null;
    const where = this.field("error-when");
    if (!failed) {
      where.textContent = error ? `From a run older than the last ${RUNS_ASKED}.` : "";
      return;
    }
    const when = document.createElement("time");
    showTime(when, failed.finished_at ?? failed.started_at, "—");
    where.replaceChildren(`Run ${failed.run_id.slice(0, 8)}, `, when);
    where.title = `run ${failed.run_id}`;
  }

  // Work beside the runs: a verify going here, new columns being filled in, a parallel load.
  showWork(view) {
    const lines = [];
    if (view.verifying) lines.push("Verifying: comparing the target with the source…");
    const backfill = view.backfill;
    if (backfill) {
      const where = backfill.position ? `at key ${backfill.position.join(", ")}` : "not started";
      lines.push(`Filling in ${backfill.columns.join(", ")} for the rows already there: ${where}`);
    }
    const load = view.chunks;
    if (load && load.done < load.chunks) {
      lines.push(`Parallel load: ${count(load.done)} of ${count(load.chunks)} chunks done,`
        + ` ${count(load.running)} in progress, ${count(load.rows_read)} rows read`);
    }
    this.field("work").hidden = lines.length === 0;
    this.field("work").replaceChildren(...lines.map((line) => {
      const item = document.createElement("li");
      item.textContent = line;
      return item;
    }));
  }

  // The last verify, by any process: when, and equal or what differed.
  showVerify(last) {
    const line = this.field("verify");
    line.hidden = !last;
    if (!last) return;
    const when = document.createElement("time");
    showTime(when, last.finished_at, "—");
    const kinds = ["missing", "extra", "different", "pending"]
      .map((kind) => `${count(last[kind].count)} ${kind}`).join(", ");
    const verdict = last.equal ? "equal to the source" : "found differences";
    const repaired = last.repaired
      ? `; repaired: ${count(last.repaired.copied)} copied, ${count(last.repaired.deleted)} deleted`
      : "";
    line.dataset.equal = last.equal;
    line.replaceChildren(`Last verify, `, when, `: ${verdict} (${kinds})${repaired}.`);
  }

  // What the source's columns did lately, and what the sync's policy made of it.
  showSchemaChanges(changes) {
    this.field("changes-box").hidden = changes.length === 0;
    this.field("changes").replaceChildren(...changes.map((change) => {
      const item = document.createElement("li");
      const when = document.createElement("time");
      showTime(when, change.at, "—");
      const types = change.change === "type_changed"
        ? `${change.old_type} to ${change.new_type}` : change.new_type ?? change.old_type;
      item.append(`${change.column} (${types}) ${change.change.replace("_", " ")} in the`
        + ` source; ${change.action}, `, when);
      return item;
    }));
  }

  // Rows read per run, as bars oldest to newest, over the last hour or the newest
  // CHART_RUNS runs, whichever holds more; a failed run is a full-height bar of its colour.
  // Heights are logarithmic: a first load of millions beside catch-ups of hundreds would
  // otherwise leave the catch-ups, the runs that say whether the mirror keeps up, flat.
  showChart() {
    const since = Date.now() - HOUR_MS;
    const shown = this.runs
      .filter((run, index) => index < CHART_RUNS || Date.parse(run.started_at) >= since)
      .reverse();
    const inHour = this.runs.filter((run) => Date.parse(run.started_at) >= since);
    const chart = this.field("chart");
    const width = 300;
    const height = 60;
    const slot = width / Math.max(shown.length, CHART_RUNS);
    const scale = Math.log1p(Math.max(1, ...shown.map((run) => run.rows_read)));
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    chart.replaceChildren(...shown.map((run, index) => {
      const failed = run.status === "failed";
      const tall = failed ? height : Math.max(1.5, (Math.log1p(run.rows_read) / scale) * height);
      const bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("x", (index * slot + slot * 0.15).toFixed(2));
      bar.setAttribute("width", (slot * 0.7).toFixed(2));
      bar.setAttribute("y", (height - tall).toFixed(2));
      bar.setAttribute("height", tall.toFixed(2));
      bar.dataset.status = run.status;
      const title = document.createElementNS(SVG, "title");
      const rate = rateOf(run);
      title.textContent = `${new Date(run.started_at).toLocaleString()}: ${run.status},`
        + ` ${count(run.rows_read)} rows${rate == null ? "" : `, ${count(rate)} rows/s`}`;
      bar.append(title);
      return bar;
    }));
    const newest = this.runs.find((run) => rateOf(run) != null);
    const read = inHour.reduce((sum, run) => sum + run.rows_read, 0);
    const caption = `${count(read)} rows read in ${count(inHour.length)} runs in the last hour`
      + (newest ? `; the last run read ${count(rateOf(newest))} rows/s` : "");
    this.field("chart-caption").textContent = caption;
    chart.setAttribute("aria-label", `Rows read per run, on a logarithmic scale. ${caption}`);
  }

  showRuns() {
    this.showChart();
    const rows = this.runs.slice(0, RUNS_SHOWN).map((run) => {
      const row = document.createElement("tr");
      row.dataset.status = run.status;
      const started = document.createElement("time");
      showTime(started, run.started_at, "—");
      const cells = [started, run.status, count(run.rows_read),
                     run.duration_s == null ? "—" : duration(run.duration_s), run.trigger];
      for (const content of cells) {
        const cell = document.createElement("td");
        cell.append(content);
        row.append(cell);
      }
      row.cells[2].title = `${count(run.rows_written)} written, ${count(run.rows_unchanged)} unchanged`;
      if (run.error) row.cells[1].title = run.error;
      return row;
    });
    this.field("runs").replaceChildren(...rows);
    this.field("no-runs").hidden = rows.length > 0;
  }
}

// The state in one word. A failure is the newest run's; last_error alone may be older.
function stateOf(view, runs) {
  if (view.running) return "running";
  if (view.queued) return "queued";
  const newest = view.last_run_status ?? runs?.[0]?.status;
  if (newest === "failed") return "failed";
  if (view.is_complete) return "complete";
  return "idle";
}

// A status answer can be older than the batch event shown before it: the bar does not go back.
function notBehind(view, shown) {
  const sameRun = view.running && shown?.running && view.run_id === shown.run_id;
  if (!sameRun || view.run_rows_read >= shown.run_rows_read) return view;
  return { ...view, run_rows_read: shown.run_rows_read, rows_per_second: shown.rows_per_second };
}

function showTime(element, iso, otherwise) {
  if (!iso) {
    element.removeAttribute("datetime");
    element.removeAttribute("title");
    element.textContent = otherwise;
    return;
  }
  const date = new Date(iso);
  element.dateTime = iso;
  element.title = date.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
  element.textContent = relative(date);
}

function relative(date) {
  const seconds = (date - Date.now()) / 1000;
  const size = Math.abs(seconds);
  if (size < 10) return seconds < 0 ? "just now" : "in a few seconds";
  if (size < 90) return relativeTime.format(Math.round(seconds), "second");
  if (size < 90 * 60) return relativeTime.format(Math.round(seconds / 60), "minute");
  if (size < 36 * 3600) return relativeTime.format(Math.round(seconds / 3600), "hour");
  return relativeTime.format(Math.round(seconds / 86400), "day");
}

function rateOf(run) {
  if (run.status !== "succeeded" || !run.duration_s) return null;
  return Math.round(run.rows_read / run.duration_s);
}

function ordinal(position) {
  return position == null ? "somewhere" : `number ${numbers.format(position)}`;
}

function duration(seconds) {
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 90) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 90) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// ---- the whole page -------------------------------------------------------------------------

function reload() {
  reloading ??= reloadAll().finally(() => { reloading = null; });
  return reloading;
}

async function reloadAll() {
  settings ??= await loadSettings();
  const [ready, listing] = await Promise.all([call("/readyz"), call(`${API}/syncs`)]);
  showReadiness(ready);
  if (!listing.ok) {
    showProblem(`Could not load the syncs: ${failure(listing)}`);
  } else {
    showProblem(null);
    showCapacity(listing.body.runs, listing.body.pools);
    const names = new Set(listing.body.syncs.map((view) => view.sync_name));
    for (const [name, card] of cards) {
      if (!names.has(name)) {
        card.root.remove();
        cards.delete(name);
      }
    }
    for (const view of listing.body.syncs) cardFor(view.sync_name).show(view);
    byId("empty").hidden = names.size > 0;
    await Promise.all([...cards.values()].map((card) => card.loadRuns()));
  }
  nextReload = Date.now() + reloadInterval();
}

async function loadSettings() {
  const answer = await call(`${API}/page-config`);
  if (!answer.ok) return null;
  for (const card of cards.values()) card.field("batch-size").max = answer.body.max_batch_size;
  if (answer.body.token_required) {
    if (sessionStorage.getItem(TOKEN_KEY)) byId("forget-token").hidden = false;
    else askForToken(null);
  }
  return answer.body;
}

function cardFor(name) {
  if (!cards.has(name)) cards.set(name, new Card(name));
  return cards.get(name);
}

function reloadInterval() {
  if (live) return RELOAD_MS.live;
  const running = [...cards.values()].some((card) => card.view?.running);
  return running ? RELOAD_MS.running : RELOAD_MS.idle;
}

function showReadiness(ready) {
  // Unreachable is said once, by the problem banner; this one is for the daemon's own reasons.
  const reasons = ready.status === 503 ? ready.body.reasons ?? [ready.message] : [];
  byId("not-ready").hidden = reasons.length === 0;
  byId("not-ready-reasons").replaceChildren(...reasons.map((reason) => {
    const item = document.createElement("li");
    item.textContent = reason;
    return item;
  }));
}

// How busy the daemon is: its runs against max_concurrent_runs, and each database's
// connections against its max_connections. Events bring the run counts between reloads.
function showCapacity(runs, pools) {
  if (!runs) return;
  byId("capacity").hidden = false;
  byId("run-counts").textContent = `Runs: ${count(runs.running)} of ${count(runs.max_concurrent_runs)}`
    + ` running, ${count(runs.queued)} queued`;
  if (pools) {
    byId("pool-use").textContent = "Connections: " + pools
      .map((pool) => `${pool.pool} ${count(pool.in_use)} of ${count(pool.max)}`).join(", ");
  }
}

function showProblem(text) {
  byId("problem").hidden = !text;
  byId("problem").textContent = text ?? "";
}

function showUpdates() {
  byId("updates").textContent = live
    ? "Live updates"
    : `Live updates unavailable: reloading every ${reloadInterval() / 1000} s`;
  byId("updates").dataset.live = live;
}

// ---- the token ------------------------------------------------------------------------------

function askForToken(alert) {
  sessionStorage.removeItem(TOKEN_KEY);
  byId("forget-token").hidden = true;
  byId("token-alert").hidden = !alert;
  byId("token-alert").textContent = alert ?? "";
  byId("token-panel").hidden = false;
  byId("token-input").focus();
}

function useToken(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, byId("token-input").value);
  byId("token-input").value = "";
  byId("token-panel").hidden = true;
  byId("forget-token").hidden = false;
}

// ---- live updates ---------------------------------------------------------------------------

function listen() {
  const source = new EventSource(`${API}/events`);
  let opened = false;
  source.addEventListener("open", () => {
    // Back after a gap: what happened meanwhile was not told, so ask for everything.
    if (opened) reload();
    opened = true;
    live = true;
    showUpdates();
  });
  source.addEventListener("error", () => {
    live = false;
    nextReload = Math.min(nextReload, Date.now() + RELOAD_MS.idle);
    showUpdates();
    // The browser retries by itself unless the answer was not an event stream at all.
    if (source.readyState === EventSource.CLOSED) setTimeout(listen, RELOAD_MS.live);
  });
  const types = ["run_queued", "run_started", "batch_committed", "run_finished", "freshness",
                 "verify"];
  for (const type of types) {
    source.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      if (event.runs) showCapacity(event.runs, null);
      const card = cards.get(event.sync_name);
      if (card) card.onEvent(type, event);
      else reload(); // a sync this page has not seen: the configuration was reloaded
    });
  }
}

function tick() {
  for (const element of document.querySelectorAll("time[datetime]")) {
    element.textContent = relative(new Date(element.dateTime));
  }
  if (Date.now() >= nextReload) reload().then(showUpdates);
}

byId("token-form").addEventListener("submit", useToken);
byId("forget-token").addEventListener("click", () => askForToken(null));
await reload();
showUpdates();
listen();
setInterval(tick, 1000);
