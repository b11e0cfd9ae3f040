// Legend names of the plotted runs: short, and never without what tells them apart.
//
// A run's label ("learning-rate · BN · mlp · sgd 0.5 · seed 2") is too long for a legend
// entry, and cutting it anywhere can drop the one part that matters. A name starts with
// BN or no-BN and every field whose value differs between the plotted runs (the varied
// fields), then as much of the rest of the label as fits, cut at its end. The hover box
// keeps the whole label.

import { shortId } from "../format.js";

const NAME_CHARS = 40; // past this, the shared context is cut with "…"
const NOT_COMPARED = new Set(["batch_norm", "label"]);
// Shorter names for the fields a legend shows most; a field not here shows its own name.
const SHORT = {
  learning_rate: "lr", batch_size: "batch", eval_every: "eval every", train_subset: "subset",
  init_scale: "init ×", max_shift: "shift", bn_decay: "BN decay", bn_epsilon: "BN ε",
};
// Fields whose value names itself (sgd, mlp, relu).
const BARE = new Set(["arch", "optimizer", "activation"]);

function part(field, value) {
  if (field === "activation" && value === null) return "own activation";
  const text = value === null || value === undefined ? "none" : String(value);
  return BARE.has(field) ? text : `${SHORT[field] ?? field.replace(/_/g, " ")} ${text}`;
}

/** The config fields whose values differ among `runs`, in the first run's order. */
export function variedFields(runs) {
  if (runs.length < 2) return [];
  const fields = [...new Set(runs.flatMap((r) => Object.keys(r.config ?? {})))];
  return fields.filter((f) => !NOT_COMPARED.has(f) && new Set(runs.map((r) => JSON.stringify(r.config?.[f] ?? null))).size > 1);
}

/** id -> legend name for the plotted runs (see the top of this file). */
export function legendNames(runs) {
  const varied = variedFields(runs);
  const names = new Map();
  for (const run of runs) {
    const bn = run.config?.batch_norm === false ? "no-BN" : "BN";
    const head = [bn, ...varied.map((f) => part(f, run.config?.[f] ?? null))];
    const known = new Set(head);
    const rest = String(run.label || shortId(run.id)).split(" · ").filter((p) => !known.has(p) && p !== "BN" && p !== "no-BN");
    let name = head.join(" · ");
    for (const p of rest) {
      if (`${name} · ${p}`.length <= NAME_CHARS) {
        name = `${name} · ${p}`;
        continue;
      }
      // The first part that does not fit is cut at its end (a long label of one's own
      // keeps its start), or only marked when little room is left.
      const room = NAME_CHARS - name.length - 4;
      name = room >= 6 ? `${name} · ${p.slice(0, room)}…` : `${name} · …`;
      break;
    }
    names.set(run.id, name);
  }
  // Runs alike in every field (one comparison started twice): their ids tell them apart.
  const counts = new Map();
  for (const name of names.values()) counts.set(name, (counts.get(name) ?? 0) + 1);
  for (const [id, name] of names) if (counts.get(name) > 1) names.set(id, `${name} · ${shortId(id)}`);
  return names;
}
