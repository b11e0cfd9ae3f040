// The experiment designer: a preset opened as an editable design (base fields, up to two
// varied fields with their values, the number of seeds). While it is edited the server
// checks it (POST /api/experiments/plan): the number of runs, the estimated time from the
// runs this server has finished, and the API's own 422 messages next to their fields.
// The page repeats none of the rules: the server is the one place they live.

import { ApiError, api } from "../api.js";
import { duration } from "../format.js";
import { formSpec } from "../runs/form.js";

const PER_RUN = new Set(["batch_norm", "seed", "label"]); // set by the experiment, or not a knob
const MAX_VARIED = 2;
const CHECK_DELAY_MS = 300;

function element(tag, attributes = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children);
  return el;
}

/** A value as typed, as the API takes it: numbers as numbers, true/false, the rest as text. */
function typed(spec, text) {
  const raw = text.trim();
  if (spec?.kind === "bool") return raw === "true" ? true : raw === "false" ? false : raw;
  if (spec?.kind === "int" || spec?.kind === "float") {
    const n = Number(raw);
    return raw !== "" && Number.isFinite(n) ? n : raw; // the server names what is wrong
  }
  return raw;
}

/** A 422's messages by the field path the API names ("base.steps"), else its detail. */
function errorsByField(err) {
  const out = { ...err.fieldErrors };
  if (!Object.keys(out).length) out[""] = err.message;
  return out;
}

export class Designer {
  /**
   * @param {HTMLElement} root  the designer's section
   * @param {(experiment: object) => void} onStarted
   */
  constructor(root, onStarted) {
    this.root = root;
    this.onStarted = onStarted;
    this.form = root.querySelector("[data-testid=experiment-form]");
    this.fields = {};
    this.checkTimer = null;
    this.checking = 0; // answers to ignore: only the newest check's answer is shown
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.start();
    });
    this.form.addEventListener("input", () => this.checkSoon());
    this.form.addEventListener("change", (ev) => {
      if (ev.target.matches("[data-vary-field]")) this.syncVaried();
      this.checkSoon();
    });
  }

  async load() {
    this.fields = formSpec(await api.runSchema()).fields;
  }

  /** Opens a preset's design for editing. */
  open(preset) {
    this.preset = preset;
    const { design } = preset;
    const varied = Object.entries(design.vary);
    const base = this.form.querySelector("[data-testid=exp-base]");
    base.replaceChildren();
    for (const [name, spec] of Object.entries(this.fields)) {
      if (PER_RUN.has(name)) continue;
      base.append(this.baseField(name, spec, design.base[name] ?? spec.default));
    }
    const vary = this.form.querySelector("[data-testid=exp-vary]");
    vary.replaceChildren();
    for (let i = 0; i < MAX_VARIED; i += 1) vary.append(this.varyRow(i, varied[i]));
    this.form.querySelector("[data-testid=exp-seeds]").value = design.seeds;
    this.form.querySelector("[data-testid=exp-label]").value = design.label ?? "";
    this.root.querySelector("[data-testid=exp-design-title]").textContent = preset.title;
    this.root.querySelector("[data-testid=exp-design-hypothesis]").textContent = preset.hypothesis;
    // The preset's claim goes with its design while the box is ticked; a design edited
    // so that the claim no longer fits gets the server's 422 naming the contrast's field.
    const claimToggle = this.form.querySelector("[data-testid=exp-claim-toggle]");
    claimToggle.hidden = !design.claim;
    this.form.querySelector("[data-testid=exp-claim-on]").checked = Boolean(design.claim);
    this.form.querySelector("[data-testid=exp-claim-statement]").textContent = design.claim?.statement ?? "";
    this.form.hidden = false;
    this.syncVaried();
    this.check();
  }

  baseField(name, spec, value) {
    const id = `xb-${name}`;
    const wrap = element("div", { class: "field", "data-base-field": name });
    const label = element("label", { for: id, title: spec.help }, spec.title);
    let control;
    if (spec.kind === "choice") {
      control = element("select", { id, name });
      for (const o of spec.options) control.append(element("option", { value: o.value }, o.label));
      control.value = value ?? "";
    } else if (spec.kind === "bool") {
      control = element("select", { id, name });
      control.append(element("option", { value: "true" }, "yes"), element("option", { value: "false" }, "no"));
      control.value = String(Boolean(value));
    } else {
      const numeric = spec.kind !== "text";
      // The schema's placeholder says what an empty optional field means ("all 55,000"
      // training images), as on the run form; "none" read as "no images".
      const placeholder = spec.placeholder || (spec.optional ? "none" : null);
      control = element("input", { id, name, type: "text", inputmode: numeric ? "decimal" : null, placeholder });
      control.value = value ?? "";
    }
    control.dataset.testid = `exp-base-${name}`;
    control.setAttribute("aria-describedby", `xe-base-${name}`);
    const error = element("p", { class: "field-error", id: `xe-base-${name}`, "data-testid": `exp-error-base.${name}` });
    error.hidden = true;
    wrap.append(label, control, error);
    return wrap;
  }

  varyRow(index, [field, values] = []) {
    const row = element("div", { class: "vary-row" });
    const select = element("select", {
      id: `xv-field-${index}`, "aria-describedby": "xe-vary", "data-vary-field": index, "data-testid": `exp-vary-field-${index}`,
      "aria-label": `Varied field ${index + 1}`,
    });
    select.append(element("option", { value: "" }, "(none)"));
    for (const [name, spec] of Object.entries(this.fields)) {
      if (!PER_RUN.has(name)) select.append(element("option", { value: name }, spec.title));
    }
    select.value = field ?? "";
    const input = element("input", {
      type: "text", id: `xv-values-${index}`, "aria-describedby": "xe-vary", "data-vary-values": index, "data-testid": `exp-vary-values-${index}`,
      "aria-label": `Values of varied field ${index + 1}, separated by commas`, placeholder: "values, separated by commas",
    });
    input.value = (values ?? []).map((v) => (v === null ? "none" : String(v))).join(", ");
    row.append(select, input);
    return row;
  }

  /** A varied field takes no base value: its base input is hidden while it is varied. */
  syncVaried() {
    const varied = new Set(this.varied().map(([field]) => field));
    for (const wrap of this.form.querySelectorAll("[data-base-field]")) wrap.hidden = varied.has(wrap.dataset.baseField);
  }

  varied() {
    const out = [];
    for (let i = 0; i < MAX_VARIED; i += 1) {
      const field = this.form.querySelector(`[data-vary-field="${i}"]`)?.value;
      const text = this.form.querySelector(`[data-vary-values="${i}"]`)?.value ?? "";
      if (field) out.push([field, text]);
    }
    return out;
  }

  design() {
    const varied = this.varied();
    const skip = new Set(varied.map(([f]) => f));
    const base = {};
    for (const control of this.form.querySelectorAll("[data-base-field] [name]")) {
      const name = control.name;
      const spec = this.fields[name];
      if (skip.has(name) || control.value.trim() === "") continue; // empty: the server's default
      base[name] = typed(spec, control.value);
    }
    const vary = {};
    for (const [field, text] of varied) {
      const spec = this.fields[field];
      vary[field] = text.split(",").filter((t) => t.trim() !== "").map((t) => (t.trim() === "none" ? null : typed(spec, t)));
    }
    const seedsText = this.form.querySelector("[data-testid=exp-seeds]").value.trim();
    const seeds = /^\d+$/.test(seedsText) ? Number(seedsText) : seedsText;
    const label = this.form.querySelector("[data-testid=exp-label]").value.trim();
    const { claim, margin } = this.preset?.design ?? {};
    const claimed = claim && this.form.querySelector("[data-testid=exp-claim-on]").checked;
    return { ...(label ? { label } : {}), base, vary, seeds, ...(margin ? { margin } : {}), ...(claimed ? { claim } : {}) };
  }

  checkSoon() {
    clearTimeout(this.checkTimer);
    this.checkTimer = setTimeout(() => this.check(), CHECK_DELAY_MS);
  }

  async check() {
    clearTimeout(this.checkTimer);
    const ticket = ++this.checking;
    const summary = this.root.querySelector("[data-testid=exp-plan]");
    const power = this.root.querySelector("[data-testid=exp-power]");
    try {
      const plan = await api.planExperiment(this.design());
      if (ticket !== this.checking) return;
      this.showErrors({});
      summary.textContent = describePlan(plan);
      summary.dataset.state = "ok";
      power.textContent = describePower(plan);
      power.dataset.state = plan.warnings.length ? "warning" : "ok";
    } catch (err) {
      if (ticket !== this.checking) return;
      summary.textContent = err.status === 422 ? "Fix the fields marked below to see the runs and time." : `Cannot check the design: ${err.message}`;
      summary.dataset.state = "error";
      power.textContent = "";
      if (err.status === 422) this.showErrors(errorsByField(err));
    }
  }

  async start() {
    const button = this.form.querySelector("[data-testid=exp-start]");
    button.disabled = true;
    this.checking += 1; // a check still on its way would overwrite what the start says
    try {
      const experiment = await api.startExperiment(this.design());
      this.showErrors({});
      this.onStarted(experiment);
    } catch (err) {
      this.showErrors(err instanceof ApiError && err.status === 422 ? errorsByField(err) : { "": err.message });
    } finally {
      button.disabled = false;
    }
  }

  /** Each message next to its field: base.<name>, vary, seeds, label; the rest above Start. */
  showErrors(errors) {
    const rest = [];
    for (const box of this.form.querySelectorAll(".field-error, [data-testid=exp-form-error]")) {
      box.textContent = "";
      box.hidden = true;
    }
    for (const control of this.form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    for (const [field, raw] of Object.entries(errors)) {
      const key = field.startsWith("vary")
        ? "vary"
        : field.startsWith("base.")
          ? field.split(".").slice(0, 2).join(".")
          : field.startsWith("claim")
            ? "claim"
            : field;
      // The preset's claim compares cells of its own design: say so, and the way out, next
      // to its box (not "claim.contrasts.1.cell.learning_rate" under the Start button).
      const message =
        key === "claim"
          ? `the claim compares cells this design no longer has (${raw}): keep its values, or untick "Test the claim"`
          : raw;
      const box = this.form.querySelector(`[data-testid="exp-error-${key}"]`);
      if (!box || box.parentElement.closest("[hidden]")) { // no box, or its field is varied
        rest.push(field ? `${field}: ${message}` : message);
        continue;
      }
      box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
      box.hidden = false;
      for (const control of this.form.querySelectorAll(`[aria-describedby="${box.id}"]`)) {
        control.setAttribute("aria-invalid", "true");
      }
    }
    const formError = this.form.querySelector("[data-testid=exp-form-error]");
    formError.textContent = rest.join("; ");
    formError.hidden = !rest.length;
  }
}

/** What the seeds could detect, after correction, and any verdict they can never give. */
function describePower(plan) {
  const { power } = plan;
  const detect = (d, what) =>
    d.possible
      ? `${what} can detect an effect of about ${d.dz.toFixed(2)} standard deviations of the seed-to-seed differences (80 % of the time, tested at ${Number(d.alpha.toPrecision(2))})`
      : `${what} can never give a verdict with ${power.seeds} seeds (it takes ${d.seeds_needed})`;
  const parts = [detect(power.cell, power.cells === 1 ? "The cell's test" : `Each of the ${power.cells} cells' tests`)];
  if (power.claim) parts.push(detect(power.claim, "the claim's test"));
  const warnings = plan.warnings.map((w) => ` Warning: ${w}`).join("");
  return `${parts.join("; ")}.${warnings}`;
}

function describePlan(plan) {
  const seeds = plan.runs / (2 * plan.cells); // every cell: each seed with and without BN
  const runs = `${plan.runs} runs (${plan.cells} cell${plan.cells === 1 ? "" : "s"} × ${seeds} seed${seeds === 1 ? "" : "s"} × with and without BN)`;
  if (plan.estimated_seconds === null) {
    return `${runs} · time unknown: this server has not finished a run of this architecture yet`;
  }
  const basis = Object.entries(plan.basis).map(([arch, n]) => `${n} ${arch.toUpperCase()} run${n === 1 ? "" : "s"}`).join(", ");
  // What the estimate had to assume (another diagnostics level, another evaluation interval).
  const assumed = (plan.assumptions ?? []).map((text) => ` Assumed: ${text}.`).join("");
  return `${runs} · about ${duration(plan.estimated_seconds)} on ${plan.workers} worker${plan.workers === 1 ? "" : "s"} (from the speed of ${basis} finished here).${assumed}`;
}
