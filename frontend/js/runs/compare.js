// The compare panel: the selected runs side by side (GET /api/compare) and export links.

import { api } from "../api.js";
import { Status, TERMINAL } from "../status.js";
import { duration, int, isNum, num, pct, shortId } from "../format.js";
import { headline } from "./headline.js";

const ROWS = [
  { key: "test_accuracy", label: "Test accuracy", fmt: (v) => pct(v), better: "max" },
  { key: "test_loss", label: "Test loss", fmt: (v) => num(v), better: "min" },
  { key: "log_loss", label: "Multiclass log loss", fmt: (v) => num(v), better: "min" },
  { key: "best_val_acc", label: "Best validation accuracy", fmt: (v, s) => (isNum(v) ? `${pct(v)} @ ${int(s.best_val_acc_step)}` : "—"), better: "max" },
  { key: "steps_to.0.97", label: "Steps to 97 %", fmt: (v) => int(v), better: "min" },
  { key: "steps_to.0.98", label: "Steps to 98 %", fmt: (v) => int(v), better: "min" },
  { key: "steps_to.0.99", label: "Steps to 99 %", fmt: (v) => int(v), better: "min" },
  {
    key: "wall_time", label: "Wall time", better: null,
    // Until the run finishes, the time of its latest evaluation (none yet: it is starting).
    fmt: (v, s, e) => {
      if (isNum(v)) return duration(v);
      if (e.points?.length) return `${duration(e.points.at(-1).elapsed)} so far`;
      return e.run.status === Status.RUNNING ? "starting…" : duration(v);
    },
  },
];

function pick(summary, key) {
  if (!summary) return null;
  if (key.startsWith("steps_to.")) return summary.steps_to?.[key.slice(9)] ?? null;
  return summary[key] ?? null;
}

export class ComparePanel {
  constructor(root, colourOf) {
    this.root = root;
    this.colourOf = colourOf;
    this.table = root.querySelector("[data-testid=compare-table]");
    this.empty = root.querySelector("[data-testid=compare-empty]");
    this.pairs = root.querySelector("[data-testid=compare-pairs]");
    this.headline = root.querySelector("[data-testid=compare-headline]");
    this.csv = root.querySelector("[data-testid=export-csv]");
    this.json = root.querySelector("[data-testid=export-json]");
    this.ids = [];
    this.asked = []; // every run asked for, beyond the cap too
    // The most runs the API compares at once (GET /api/limits); until it says, or if it
    // cannot, no cap here: the server's 422 names it.
    this.maxRuns = Infinity;
    this.timer = null;
    this.inflight = null;
    this.again = false;
  }

  /** The API's cap on the runs of one comparison; the runs shown are cut to it. */
  setMaxRuns(max) {
    this.maxRuns = max;
    this.root.querySelector("[data-testid=compare-capped]").textContent =
      `Showing the first ${max} selected runs (the most the API compares at once).`;
    this.setRuns(this.asked);
  }

  /** Shows these runs (in this order); fetches their comparison now. */
  setRuns(ids) {
    this.asked = [...ids];
    const capped = ids.slice(0, this.maxRuns);
    const changed = capped.join(",") !== this.ids.join(",");
    this.ids = capped;
    this.root.querySelector("[data-testid=compare-capped]").hidden = ids.length <= this.maxRuns;
    const any = this.ids.length > 0;
    this.root.dataset.state = any ? "loading" : "empty";
    for (const [a, format] of [[this.csv, "csv"], [this.json, "json"]]) {
      a.hidden = !any;
      if (any) a.href = api.exportUrl(this.ids, format);
    }
    if (!any) {
      this.table.replaceChildren();
      this.pairs.replaceChildren();
      this.headline.replaceChildren();
      this.headline.hidden = true;
      this.empty.hidden = false;
      return;
    }
    if (changed) this.refresh();
  }

  /** Asks for a refresh soon (several events in a row make one request). */
  refreshSoon(delayMs = 2000) {
    if (!this.ids.length) return;
    if (this.timer && delayMs > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delayMs);
  }

  async refresh() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.inflight) {
      this.again = true;
      return;
    }
    const ids = [...this.ids];
    if (!ids.length) return;
    this.inflight = api.compare(ids);
    try {
      const data = await this.inflight;
      if (ids.join(",") === this.ids.join(",")) this.render(data);
    } catch (err) {
      if (ids.join(",") === this.ids.join(",")) {
        this.empty.hidden = false;
        this.empty.textContent = `Could not compare: ${err.message}`;
      }
    } finally {
      this.inflight = null;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    }
  }

  /** The answer in words for each comparison whose two runs are shown (the first few). */
  renderHeadline(entries, pairs) {
    const byId = new Map(entries.map((e) => [e.run.id, e]));
    const shown = pairs.filter((p) => byId.has(p.bn) && byId.has(p.no_bn)).slice(0, 3);
    this.headline.hidden = !shown.length;
    this.headline.replaceChildren(
      ...shown.map((pair) => {
        const { lead, milestones } = headline(byId.get(pair.bn), byId.get(pair.no_bn));
        const box = document.createElement("div");
        box.className = "headline-pair";
        if (pair.comparison_id) box.dataset.comparisonId = pair.comparison_id;
        if (shown.length > 1) {
          const name = document.createElement("p");
          name.className = "muted small";
          name.textContent = byId.get(pair.bn).run.label.replace(/^BN · /, "");
          box.append(name);
        }
        const p = document.createElement("p");
        p.className = "headline-lead";
        p.dataset.testid = "headline-lead";
        p.textContent = lead;
        const ul = document.createElement("ul");
        ul.className = "headline-milestones";
        for (const m of milestones) {
          const li = document.createElement("li");
          li.dataset.testid = "headline-milestone";
          li.dataset.milestone = m.key;
          li.textContent = m.text;
          ul.append(li);
        }
        box.append(p, ul);
        return box;
      }),
    );
  }

  render(data) {
    const entries = data.runs ?? [];
    this.empty.hidden = entries.length > 0;
    this.empty.textContent = "Select runs in the table to compare them.";
    this.root.dataset.state = entries.every((e) => e.summary && isNum(e.summary.test_accuracy)) ? "complete" : "partial";

    const head = document.createElement("tr");
    head.append(Object.assign(document.createElement("th"), { scope: "col", textContent: "" }));
    for (const { run } of entries) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.runId = run.id;
      const sw = document.createElement("span");
      sw.className = `swatch${run.config?.batch_norm === false ? " dashed" : ""}`;
      sw.style.setProperty("--c", this.colourOf(run));
      const name = document.createElement("span");
      name.className = "cmp-name";
      name.textContent = run.label || shortId(run.id);
      name.title = name.textContent;
      const st = document.createElement("span");
      st.className = `badge badge-${run.status}`;
      st.textContent = run.status;
      th.append(sw, name, st);
      head.append(th);
    }

    const body = ROWS.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.metric = row.key;
      tr.append(Object.assign(document.createElement("th"), { scope: "row", textContent: row.label }));
      const values = entries.map((e) => pick(e.summary, row.key));
      const finite = values.filter(isNum);
      const best = row.better && finite.length > 1 ? Math[row.better](...finite) : null;
      entries.forEach((e, i) => {
        const td = document.createElement("td");
        td.className = "num";
        td.dataset.runId = e.run.id;
        td.dataset.testid = `cmp-${row.key}`;
        td.textContent = row.fmt(values[i], e.summary ?? {}, e);
        if (best !== null && values[i] === best) td.classList.add("best");
        tr.append(td);
      });
      return tr;
    });
    const thead = document.createElement("thead");
    thead.append(head);
    const tbody = document.createElement("tbody");
    tbody.append(...body);
    this.table.replaceChildren(thead, tbody);

    this.renderHeadline(entries, data.pairs ?? []);

    const label = (id) => entries.find((e) => e.run.id === id)?.run.label ?? shortId(id);
    const stepsTo98 = (id) => entries.find((e) => e.run.id === id)?.summary?.steps_to?.["0.98"];
    this.pairs.replaceChildren(
      ...(data.pairs ?? []).map((pair) => {
        const li = document.createElement("li");
        li.dataset.testid = "speedup";
        const strong = document.createElement("strong");
        if (isNum(pair.speedup)) {
          strong.textContent = `${pair.speedup.toFixed(2)}×`;
          li.append(
            "BN speedup ",
            strong,
            ` — ${label(pair.bn)} reached 98 % in ${int(stepsTo98(pair.bn))} steps, ${label(pair.no_bn)} in ${int(stepsTo98(pair.no_bn))}.`,
          );
        } else {
          strong.textContent = "n/a";
          strong.className = "none";
          const missing = [pair.bn, pair.no_bn].filter((id) => !isNum(stepsTo98(id)));
          const running = missing.some((id) => !TERMINAL.has(entries.find((e) => e.run.id === id)?.run.status));
          // Named, as a pair among several must be; then how far each got: "never
          // reached 98 %" alone leaves a newcomer asking whether it was close (a quick
          // look's BN at 95 %) or not.
          const both = missing.length > 1;
          const verb = running ? (both ? "have not reached" : "has not reached") : "never reached";
          const best = missing.map((id) => entries.find((e) => e.run.id === id)?.summary?.best_val_acc);
          const got = best.every(isNum) ? ` (best: ${best.map((x) => pct(x)).join(" and ")})` : "";
          li.append(
            "BN speedup ",
            strong,
            ` — ${missing.map(label).join(" and ")} ${verb} 98 % validation accuracy${running ? " yet" : ""}${got}.`,
          );
        }
        return li;
      }),
    );
  }
}
