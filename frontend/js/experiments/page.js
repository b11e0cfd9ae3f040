// The Experiments area: the presets (one per claim of the BN paper), the designer, the
// list of experiments and one experiment's view. Its address is its state: `#experiments`
// opens the area, `#experiment=<id>` one experiment, so a link can be bookmarked, shared
// and reloaded.

import { api } from "../api.js";
import { Designer } from "./designer.js";
import { ExperimentView } from "./view.js";

// The list follows the runs feed: a run of an experiment changed, so its row may have.
// At most one reload per interval however many runs report.
const LIST_REFRESH_MS = 2000;

/** What the address asks for: {experiment: id} or {experiments: true}, or null (the runs). */
export function route(hash = location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const id = params.get("experiment");
  if (id) return { experiment: id };
  return params.has("experiments") ? { experiments: true } : null;
}

export class ExperimentsPage {
  /**
   * @param {HTMLElement} root  <main data-testid=experiments-page>
   * @param {{openRuns: (runs: object[]) => void, notice: (text: string, kind?: string) => void}} host
   */
  constructor(root, host) {
    this.root = root;
    this.view = new ExperimentView(root.querySelector("[data-testid=experiment-view]"), host);
    this.designer = new Designer(root.querySelector("[data-testid=experiment-designer]"), (experiment) => {
      location.hash = `experiment=${encodeURIComponent(experiment.id)}`;
      this.refreshList();
    });
    this.presetList = root.querySelector("[data-testid=experiment-presets]");
    this.list = root.querySelector("[data-testid=experiments-list]");
    this.listTimer = null;
    this.loaded = null;
  }

  /** Loads the presets and the run schema once, the first time the area opens. */
  load() {
    this.loaded ??= (async () => {
      const [presets] = await Promise.all([api.presets(), this.designer.load()]);
      this.presets = presets;
      this.view.presets = presets;
      if (this.view.experiment) this.view.renderHead(); // its hypothesis, now known
      this.renderPresets();
      this.root.dataset.state = "ready";
    })().catch((err) => {
      this.loaded = null;
      this.presetList.textContent = `Could not load the presets (${err.message}); reopen the tab to retry.`;
    });
    return this.loaded;
  }

  /** Shows what `where` (from route()) asks for; null hides the area. */
  async show(where) {
    this.root.hidden = !where;
    if (!where) {
      this.view.close();
      return;
    }
    this.refreshList();
    const viewSection = this.root.querySelector("[data-testid=experiment-view]");
    viewSection.hidden = !where.experiment;
    if (where.experiment) this.view.show(where.experiment);
    else this.view.close();
    await this.load();
  }

  /** A run of some experiment changed (runs feed): reload the list soon, if it is shown. */
  runChanged() {
    if (this.root.hidden || this.listTimer) return;
    this.listTimer = setTimeout(() => {
      this.listTimer = null;
      this.refreshList();
    }, LIST_REFRESH_MS);
  }

  /** A run ended (runs feed): the open design's estimate may know more now. */
  runEnded() {
    if (!this.designer.form.hidden) this.designer.checkSoon();
  }

  renderPresets() {
    const items = this.presets.map((preset) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "preset";
      button.dataset.testid = `exp-preset-${preset.name}`;
      const title = document.createElement("strong");
      title.textContent = preset.title;
      const hypothesis = document.createElement("span");
      hypothesis.className = "muted small";
      hypothesis.textContent = preset.hypothesis;
      button.append(title, hypothesis);
      button.addEventListener("click", () => {
        for (const b of this.presetList.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
        this.designer.open(preset);
      });
      li.append(button);
      return li;
    });
    this.presetList.replaceChildren(...items);
  }

  async refreshList() {
    let experiments;
    try {
      experiments = await api.experiments();
    } catch {
      return; // the banner reports connection trouble
    }
    const current = route()?.experiment;
    const items = experiments.map((e) => {
      const li = document.createElement("li");
      li.dataset.testid = "experiment-item";
      li.dataset.experimentId = e.id;
      const link = document.createElement("a");
      link.href = `#experiment=${encodeURIComponent(e.id)}`;
      link.className = "link";
      if (e.id === current) link.setAttribute("aria-current", "page");
      link.textContent = e.label || e.id;
      const runs = e.progress.runs;
      const total = Object.values(runs).reduce((a, b) => a + b, 0);
      const finished = (runs.completed ?? 0) + (runs.diverged ?? 0); // the runs with a result
      const meta = document.createElement("span");
      meta.className = "muted small";
      meta.textContent = ` ${finished} of ${total} runs finished · ${new Date(e.created_at).toLocaleString()}`;
      const badge = document.createElement("span");
      badge.className = `badge badge-${e.status}`;
      badge.textContent = e.status;
      li.append(link, " ", badge, meta);
      return li;
    });
    this.list.replaceChildren(...items);
    this.root.querySelector("[data-testid=experiments-empty]").hidden = experiments.length > 0;
  }
}
