// The "start a run" form: its fields, limits, defaults, labels and help come from the
// API's JSON schema of a run (RunCreate in /openapi.json, built from RunConfig on the
// server), so nothing here repeats them. Presets, client-side validation with those
// limits, and the server's 422 messages shown next to their fields.

import { ApiError, api } from "../api.js";

/** One field's spec from its JSON-schema property: kind, limits, default and texts. */
function fieldSpec(name, property) {
  // `int | None` is {"anyOf": [{"type": "integer", ...}, {"type": "null"}]}
  const variants = property.anyOf ?? [property];
  const base = { ...property, ...variants.find((v) => v.type !== "null") };
  const spec = {
    name,
    title: property.title ?? name,
    help: property.description ?? "",
    placeholder: property.placeholder ?? "",
    advanced: Boolean(property.advanced),
    optional: variants.some((v) => v.type === "null"),
    default: property.default ?? null,
    gt: base.exclusiveMinimum,
    ge: base.minimum,
    lt: base.exclusiveMaximum,
    le: base.maximum,
    maxLength: base.maxLength,
  };
  if (base.enum) {
    const labels = property.options ?? {};
    const option = (value) => {
      const [label = value || "(none)", help = ""] = labels[value] ?? [];
      return { value, label, help };
    };
    spec.kind = "choice";
    spec.options = base.enum.map(option);
    // An optional choice (`Literal[...] | None`) offers its null as the empty value, labelled
    // by the options' "" entry; choosing it sends nothing, so the server's default holds.
    if (spec.optional) spec.options.unshift(option(""));
  } else {
    spec.kind = { integer: "int", number: "float", string: "text", boolean: "bool" }[base.type];
  }
  return spec;
}

/** Field specs by name, in the schema's order, and the run's evaluation cap. */
export function formSpec(schema) {
  const fields = {};
  for (const [name, property] of Object.entries(schema.properties)) {
    const spec = fieldSpec(name, property);
    if (spec.kind) fields[name] = spec; // a type the form cannot show stays at its default
  }
  return { fields, maxEvaluations: schema.max_evaluations ?? Infinity };
}

// Presets set the recipe; the advanced knobs (seed, subset, BN constants) stay as they are.
// Each is built on `recipe`, the schema's defaults of the recipe's fields (the seed CNN).
export const PRESETS = {
  seed: {
    name: "Seed CNN",
    values: (recipe) => recipe,
  },
  paper_mlp: {
    // BN paper, section 4.1: 3 fully-connected hidden layers of 100 sigmoid units,
    // 50,000 steps of 60 examples, images as they are. The paper gives no rate;
    // plain SGD at 0.5.
    name: "Paper MLP",
    values: (recipe) => ({
      ...recipe, arch: "mlp", optimizer: "sgd", learning_rate: 0.5, batch_size: 60, steps: 50000,
      eval_every: 500, dropout: 0, max_shift: 0,
    }),
  },
  high_lr: {
    // Plain SGD at 0.2 on the seed CNN: with BN it passes 97 % validation accuracy in
    // 400 steps; without BN it sits at chance (11 %) over the same steps (README.md).
    name: "High learning rate",
    values: (recipe) => ({ ...recipe, optimizer: "sgd", learning_rate: 0.2 }),
  },
};

// "Quick look": a whole BN vs no-BN comparison in about a minute on 2 cores, for a first
// look at the answer. The "High learning rate" recipe (plain SGD at 0.2 on the seed CNN)
// cut to 200 steps, evaluated every 50, without diagnostics (the answer is the point, not
// the inside). Measured (seed 0): with BN the network learns (95.5 % validation accuracy
// at step 200, 95.46 % test accuracy), without BN it stays at chance (9.8 %) throughout:
// the curves and the headline differ at a glance, and what they show is BN letting this
// network train at a rate that stops it without. Not the seed recipe: its gap takes longer
// to show (at 300 steps 96.8 % vs 95.2 %, neither at 97 %; at 600, two minutes, BN had
// reached 97 % and no-BN not). Why 200 steps: BN's validation accuracy has levelled off
// there (95.5 % at 200, 95.6 % at 300), so the answer is the one 300 steps give, sooner.
// Timed through a real server on a quiet machine (2026-12-07, AMD EPYC, 2 cores, a fresh
// server, so its fork server started with these runs): 48 s from the POST to both twins'
// test metrics (300 steps: 66 s; 104 s before workers were forked, on a less quiet machine).
// The one place these values live: the button's label and hover text are built from them.
export const QUICK_LOOK = Object.freeze({
  preset: "high_lr",
  values: Object.freeze({ steps: 200, eval_every: 50, diagnostics: "off" }),
  takes: "about a minute",
});

const fmt = (n) => (Number.isInteger(n) && Math.abs(n) >= 10000 ? n.toLocaleString("en-US") : String(n));

/** Validates one raw string against a field spec; returns [value, error message or null]. */
export function parseField(spec, raw, badInput = false) {
  if (spec.kind === "bool") return [Boolean(raw), null];
  const text = String(raw ?? "").trim();
  if (spec.kind === "choice") {
    const values = spec.options.map((o) => o.value);
    if (!values.includes(text)) return [null, `choose one of ${values.filter(Boolean).join(", ")}`];
    return [text || null, null];
  }
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

function element(tag, attributes = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== "") el.setAttribute(key, String(value));
  }
  el.append(...children);
  return el;
}

/** Fills a field's slot with its label, control and error line. */
function renderField(slot, spec) {
  const id = `f-${spec.name}`;
  const testid = `field-${spec.name}`;
  if (spec.kind === "bool") {
    const box = element("input", { type: "checkbox", name: spec.name, id, "data-testid": testid });
    box.checked = Boolean(spec.default);
    slot.replaceChildren(element("label", { title: spec.help }, box, ` ${spec.title}`));
    return;
  }
  const label = element("label", { for: id, title: spec.help }, spec.title);
  if (spec.kind === "text" && spec.optional) label.append(" ", element("span", { class: "muted" }, "(optional)"));
  let control;
  if (spec.kind === "choice") {
    control = element("select", { id, name: spec.name, "data-testid": testid });
    for (const o of spec.options) {
      // The property, not element()'s attribute: an option without a value attribute takes
      // its text as its value, so the empty value ("the network's own") must be set as such.
      const option = element("option", { title: o.help }, o.label);
      option.value = o.value;
      control.append(option);
    }
  } else {
    const numeric = spec.kind !== "text";
    control = element("input", {
      id,
      name: spec.name,
      type: numeric ? "number" : "text",
      step: numeric ? (spec.kind === "int" ? "1" : "any") : null,
      // Exclusive bounds too: the page validates the strict inequality itself.
      min: spec.ge ?? spec.gt,
      max: spec.le ?? spec.lt,
      maxlength: spec.maxLength,
      inputmode: numeric ? (spec.kind === "int" ? "numeric" : "decimal") : null,
      placeholder: spec.placeholder,
      "aria-describedby": `e-${spec.name}`,
      "data-testid": testid,
    });
  }
  const error = element("p", {
    class: "field-error", id: `e-${spec.name}`, "data-error-for": spec.name, "data-testid": `error-${spec.name}`,
  });
  error.hidden = true;
  slot.replaceChildren(label, control, error);
}

const RETRY_MS = 3000; // a page opened while the server restarts gets its form soon after

export class RunForm {
  /** @param {HTMLFormElement} form  @param {(runs: object[]) => void} onStarted */
  constructor(form, onStarted) {
    this.form = form;
    this.onStarted = onStarted;
    this.fields = {}; // name -> spec, once the schema has arrived
    this.maxEvaluations = Infinity;
    this.recipe = {};
    this.submit = form.querySelector("[data-testid=submit]");
    this.formError = form.querySelector("[data-testid=form-error]");
    this.formStatus = form.querySelector("[data-testid=form-status]");
    this.presetButtons = [...document.querySelectorAll("[data-preset]")];
    this.quickLook = form.querySelector("[data-testid=quick-look]");
    this.submit.disabled = true;
    this.quickLook.disabled = true;
    this.quickLook.addEventListener("click", () => {
      if (form.dataset.state !== "ready") return;
      // Every field at its default (the advanced ones too), then the recipe, shortened.
      const defaults = Object.fromEntries(Object.values(this.fields).map((f) => [f.name, f.default]));
      this.fill({ ...defaults, ...this.quickLookValues() });
      this.form.elements.namedItem("mode").value = "compare";
      this.syncMode();
      this.markPreset(null);
      this.start();
    });

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (form.dataset.state === "ready") this.start();
    });
    for (const b of this.presetButtons) {
      b.addEventListener("click", () => {
        this.fill(PRESETS[b.dataset.preset].values(this.recipe));
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
      if (name in this.fields) this.markPreset(null);
      if (name in this.fields && this.errorBox(name)?.textContent) this.checkField(name);
      if (name === "steps" && this.errorBox("eval_every")?.textContent) this.checkField("eval_every");
    });
    this.load();
  }

  async load() {
    this.form.dataset.state = "loading";
    try {
      this.build(formSpec(await api.runSchema()));
    } catch (err) {
      this.formError.textContent = `Could not load the form's fields (${err.message}); retrying…`;
      this.formError.hidden = false;
      setTimeout(() => this.load(), RETRY_MS);
    }
  }

  /** Puts every field of the schema in its slot (or at the end of its section). */
  build({ fields, maxEvaluations }) {
    for (const spec of Object.values(fields)) {
      let slot = this.form.querySelector(`[data-field="${spec.name}"]`);
      if (!slot) {
        const section = this.form.querySelector(`[data-form-section=${spec.advanced ? "advanced" : "main"}]`);
        slot = element("div", { class: "field", "data-field": spec.name });
        section.append(slot);
      }
      renderField(slot, spec);
    }
    this.fields = fields;
    this.maxEvaluations = maxEvaluations;
    const defaults = Object.fromEntries(Object.values(fields).map((f) => [f.name, f.default]));
    this.recipe = Object.fromEntries(
      Object.values(fields)
        .filter((f) => !f.advanced && ["choice", "int", "float"].includes(f.kind))
        .map((f) => [f.name, f.default]),
    );
    this.fill(defaults);
    this.markPreset("seed");
    this.formError.hidden = true;
    this.formError.textContent = "";
    this.syncMode();
    this.submit.disabled = false;
    this.describeQuickLook();
    this.quickLook.disabled = false;
    this.form.dataset.state = "ready";
  }

  /** The quick look's run fields: its preset's recipe, shortened. */
  quickLookValues() {
    return { ...PRESETS[QUICK_LOOK.preset].values(this.recipe), ...QUICK_LOOK.values };
  }

  describeQuickLook() {
    const v = this.quickLookValues();
    const { name } = PRESETS[QUICK_LOOK.preset];
    const optimizer = this.fields.optimizer.options.find((o) => o.value === v.optimizer)?.label ?? v.optimizer;
    this.quickLook.textContent = `Quick look (${QUICK_LOOK.takes})`;
    this.quickLook.title =
      `A comparison, with and without BN: the "${name}" recipe (${optimizer} at ${v.learning_rate}) ` +
      `for ${fmt(v.steps)} steps, diagnostics ${v.diagnostics}: ${QUICK_LOOK.takes} on 2 cores`;
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
      if (!input) continue;
      if (input.type === "checkbox") input.checked = Boolean(value);
      else input.value = value === null ? "" : String(value);
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
    this.submit.textContent = single ? "Start run" : "Start comparison";
    // A comparison trains both with and without batch norm: the box has no say.
    const bn = this.input("batch_norm");
    if (!bn) return;
    bn.disabled = !single;
    bn.closest(".field").classList.toggle("disabled", !single);
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
    for (const name of Object.keys(this.fields)) this.showError(name, null);
    this.formError.hidden = true;
    this.formError.textContent = "";
  }

  checkField(name) {
    const input = this.input(name);
    const spec = this.fields[name];
    const raw = spec.kind === "bool" ? input.checked : input.value;
    const [value, error] = parseField(spec, raw, input.validity?.badInput);
    let message = error;
    if (!message && name === "eval_every") message = this.evalCountError(value);
    this.showError(name, message);
    return [value, message];
  }

  /** RunConfig's cap on evaluations: step 0, every eval_every steps, and the last step. */
  evalCountError(evalEvery) {
    const [steps] = parseField(this.fields.steps, this.input("steps").value);
    if (steps === null || evalEvery === null) return null;
    const evals = Math.ceil(steps / evalEvery) + 1;
    const most = this.maxEvaluations;
    if (evals <= most) return null;
    const least = Math.ceil(steps / (most - 1)); // the smallest interval that fits
    return `${evals} evaluations (step 0 included) for ${steps} steps is more than ${most}; use at least ${least}`;
  }

  /** The request body, or null (with messages shown) when a field is invalid. */
  collect() {
    const body = {};
    let firstBad = null;
    for (const name of Object.keys(this.fields)) {
      if (name === "batch_norm") continue; // the mode's, below
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
        if (field in this.fields && this.showError(field, message)) first ??= field;
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
