// The "start a run" form: presets, client-side validation with the server's ranges
// (docs/api.md, RunConfig), and the server's 422 messages shown next to their fields.

import { ApiError, api } from "./api.js";

// RunConfig ranges, as documented. The server checks them again.
const MAX_EVALS = 1000;
export const FIELDS = {
  arch: { kind: "choice", options: ["cnn", "mlp"] },
  optimizer: { kind: "choice", options: ["adagrad", "sgd", "momentum", "adam"] },
  learning_rate: { kind: "float", gt: 0, le: 1000 },
  batch_size: { kind: "int", ge: 1, le: 1024 },
  steps: { kind: "int", ge: 1, le: 100000 },
  eval_every: { kind: "int", ge: 1, le: 100000 },
  dropout: { kind: "float", ge: 0, lt: 1 },
  max_shift: { kind: "int", ge: 0, le: 4 },
  activation: { kind: "choice", options: ["relu", "sigmoid", "tanh"], optional: true },
  init_scale: { kind: "float", ge: 0.001, le: 1000 },
  bn_decay: { kind: "float", ge: 0, lt: 1 },
  bn_epsilon: { kind: "float", gt: 0, le: 1 },
  seed: { kind: "int", ge: 0, le: 2 ** 31 - 1 },
  train_subset: { kind: "int", ge: 1, le: 55000, optional: true },
  label: { kind: "text", optional: true, maxLength: 100 },
};

export const DEFAULTS = {
  arch: "cnn", optimizer: "adagrad", learning_rate: 0.01, batch_size: 64, steps: 5000,
  eval_every: 200, dropout: 0.5, max_shift: 1, activation: "", init_scale: 1, bn_decay: 0.5, bn_epsilon: 0.001, seed: 0, train_subset: "", label: "",
};

// Presets set the recipe; the advanced knobs (seed, subset, BN constants) stay as they are.
export const PRESETS = {
  seed: {
    name: "Seed CNN",
    values: { arch: "cnn", optimizer: "adagrad", learning_rate: 0.01, batch_size: 64, steps: 5000, eval_every: 200, dropout: 0.5, max_shift: 1, activation: "", init_scale: 1 },
  },
  paper_mlp: {
    // BN paper, section 4.1: 3 fully-connected hidden layers of 100 sigmoid units,
    // 50,000 steps of 60 examples, images as they are. The paper gives no rate;
    // plain SGD at 0.5.
    name: "Paper MLP",
    values: { arch: "mlp", optimizer: "sgd", learning_rate: 0.5, batch_size: 60, steps: 50000, eval_every: 500, dropout: 0, max_shift: 0, activation: "", init_scale: 1 },
  },
  high_lr: {
    // Plain SGD at 0.2 on the seed CNN: with BN it passes 97 % validation accuracy in
    // 400 steps; without BN it sits at chance (11 %) over the same steps (README.md).
    name: "High learning rate",
    values: { arch: "cnn", optimizer: "sgd", learning_rate: 0.2, batch_size: 64, steps: 5000, eval_every: 200, dropout: 0.5, max_shift: 1, activation: "", init_scale: 1 },
  },
};

const fmt = (n) => (Number.isInteger(n) && Math.abs(n) >= 10000 ? n.toLocaleString("en-US") : String(n));

/** Validates one raw string; returns [value, error message or null]. */
export function parseField(name, raw, badInput = false) {
  const spec = FIELDS[name];
  const text = String(raw ?? "").trim();
  if (spec.kind === "choice" && text === "" && spec.optional) return [null, null];
  if (spec.kind === "choice") return spec.options.includes(text) ? [text, null] : [null, `choose one of ${spec.options.join(", ")}`];
  if (spec.kind === "text") {
    if (spec.maxLength && text.length > spec.maxLength) return [null, `at most ${spec.maxLength} characters`];
    return [text || null, null];
  }
  if (badInput) return [null, "must be a number"];
  if (text === "") return spec.optional ? [null, null] : [null, "is required"];
  const value = Number(text);
  if (!Number.isFinite(value)) return [null, "must be a number"];
  if (spec.kind === "int" && !Number.isInteger(value)) return [null, "must be a whole number"];
  if (spec.gt !== undefined && !(value > spec.gt)) return [null, `must be greater than ${fmt(spec.gt)}`];
  if (spec.ge !== undefined && !(value >= spec.ge)) return [null, `must be at least ${fmt(spec.ge)}`];
  if (spec.lt !== undefined && !(value < spec.lt)) return [null, `must be less than ${fmt(spec.lt)}`];
  if (spec.le !== undefined && !(value <= spec.le)) return [null, `must be at most ${fmt(spec.le)}`];
  return [value, null];
}

export class RunForm {
  /** @param {HTMLFormElement} form  @param {(runs: object[]) => void} onStarted */
  constructor(form, onStarted) {
    this.form = form;
    this.onStarted = onStarted;
    this.submit = form.querySelector("[data-testid=submit]");
    this.formError = form.querySelector("[data-testid=form-error]");
    this.formStatus = form.querySelector("[data-testid=form-status]");
    this.presetButtons = [...document.querySelectorAll("[data-preset]")];
    this.fill(DEFAULTS);
    this.markPreset("seed");

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.start();
    });
    for (const b of this.presetButtons) {
      b.addEventListener("click", () => {
        this.fill(PRESETS[b.dataset.preset].values);
        this.markPreset(b.dataset.preset);
        this.clearErrors();
      });
    }
    form.addEventListener("change", (ev) => {
      if (ev.target.name === "mode") this.syncMode();
    });
    // Re-check a field that shows an error as soon as it is edited.
    form.addEventListener("input", (ev) => {
      const name = ev.target.name;
      if (name in FIELDS) this.markPreset(null);
      if (name in FIELDS && this.errorBox(name)?.textContent) this.checkField(name);
      if (name === "steps" && this.errorBox("eval_every")?.textContent) this.checkField("eval_every");
    });
    this.syncMode();
  }

  input(name) {
    return this.form.elements.namedItem(name);
  }

  errorBox(name) {
    return this.form.querySelector(`[data-error-for="${name}"]`);
  }

  fill(values) {
    for (const [name, value] of Object.entries(values)) {
      const input = this.input(name);
      if (input) input.value = value === null ? "" : String(value);
    }
  }

  markPreset(key) {
    for (const b of this.presetButtons) b.setAttribute("aria-pressed", String(b.dataset.preset === key));
  }

  get mode() {
    return this.form.elements.namedItem("mode").value;
  }

  syncMode() {
    const single = this.mode === "single";
    const bn = this.input("batch_norm");
    bn.disabled = !single;
    bn.closest(".field").classList.toggle("disabled", !single);
    this.submit.textContent = single ? "Start run" : "Start comparison";
  }

  showError(name, message) {
    const box = this.errorBox(name);
    const input = this.input(name);
    if (!box) return false;
    box.textContent = message ?? "";
    box.hidden = !message;
    if (input) {
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
    return true;
  }

  clearErrors() {
    for (const name of Object.keys(FIELDS)) this.showError(name, null);
    this.formError.hidden = true;
    this.formError.textContent = "";
  }

  checkField(name) {
    const input = this.input(name);
    const [value, error] = parseField(name, input.value, input.validity?.badInput);
    let message = error;
    if (!message && name === "eval_every") message = this.evalCountError(value);
    this.showError(name, message);
    return [value, message];
  }

  evalCountError(evalEvery) {
    const [steps] = parseField("steps", this.input("steps").value);
    if (steps === null || evalEvery === null) return null;
    const evals = Math.ceil(steps / evalEvery);
    if (evals <= MAX_EVALS) return null;
    return `${evals} evaluations for ${steps} steps is more than ${MAX_EVALS}; use at least ${Math.ceil(steps / MAX_EVALS)}`;
  }

  /** The request body, or null (with messages shown) when a field is invalid. */
  collect() {
    const body = {};
    let firstBad = null;
    for (const name of Object.keys(FIELDS)) {
      const [value, error] = this.checkField(name);
      if (error) firstBad ??= name;
      else if (value !== null) body[name] = value;
    }
    if (firstBad) {
      this.input(firstBad).focus();
      return null;
    }
    if (this.mode === "single") body.batch_norm = this.input("batch_norm").checked;
    return body;
  }

  async start() {
    this.clearErrors();
    this.formStatus.textContent = "";
    const body = this.collect();
    if (!body) return;
    this.submit.disabled = true;
    this.form.setAttribute("aria-busy", "true");
    try {
      let runs;
      if (this.mode === "single") runs = [await api.startRun(body)];
      else runs = (await api.startComparison(body)).runs;
      this.formStatus.textContent = `Started ${runs.map((r) => r.label).join(" and ")}.`;
      this.onStarted(runs);
    } catch (err) {
      this.showServerError(err);
    } finally {
      this.submit.disabled = false;
      this.form.removeAttribute("aria-busy");
    }
  }

  showServerError(err) {
    const unplaced = [];
    let first = null;
    if (err instanceof ApiError && Object.keys(err.fieldErrors).length) {
      for (const [field, message] of Object.entries(err.fieldErrors)) {
        if (field in FIELDS && this.showError(field, message)) first ??= field;
        else unplaced.push(field ? `${field}: ${message}` : message);
      }
    } else {
      unplaced.push(err.message || String(err));
    }
    if (unplaced.length) {
      this.formError.textContent = `Could not start: ${unplaced.join("; ")}`;
      this.formError.hidden = false;
    }
    if (first) this.input(first).focus();
  }
}
