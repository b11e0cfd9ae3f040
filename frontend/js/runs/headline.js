// The answer of a BN vs no-BN comparison in words and numbers, read from GET /api/compare:
// the test accuracies side by side, then who reached each validation-accuracy milestone
// first and at which step. It sits under the curves, above the details (issue #28): the
// answer is what a newcomer came for.

import { TERMINAL } from "../status.js";
import { int, isNum, pct, pp } from "../format.js";

// The milestones of /api/compare's steps_to, lowest first.
export const MILESTONES = Object.freeze(["0.97", "0.98", "0.99"]);

// Guessing one of MNIST's ten digits.
const CHANCE = 0.1;

const milestoneName = (key) => `${Math.round(Number(key) * 100)} %`;

/**
 * The answer for one pair of entries of /api/compare ({run, summary}, BN's and no-BN's):
 * {lead, milestones: [{key, text}]}. Milestones stop at the first one neither run
 * reached (the higher ones would only say so again).
 */
export function headline(bn, noBn) {
  const done = (e) => TERMINAL.has(e.run.status);
  const acc = (e) => e.summary?.test_accuracy;
  let lead;
  if (isNum(acc(bn)) && isNum(acc(noBn))) {
    const diff = acc(bn) - acc(noBn);
    const who = Math.abs(diff) < 0.00005 ? "the same" : diff > 0 ? "BN ahead" : "no-BN ahead";
    lead = `Test accuracy: BN ${pct(acc(bn))}, no-BN ${pct(acc(noBn))} (${who}, ${pp(diff)}).`;
    // A run that never beat guessing did not learn at all: the answer says so in words
    // (the quick look's no-BN run), not only in a number a newcomer must interpret.
    for (const [name, e] of [["BN", bn], ["no-BN", noBn]]) {
      const best = e.summary?.best_val_acc;
      if (isNum(best) && best < CHANCE + 0.05) {
        lead += ` ${name} did not learn: its best validation accuracy, ${pct(best)}, is near chance (one digit in ten).`;
      }
    }
  } else {
    const best = (e) => (isNum(e.summary?.best_val_acc) ? pct(e.summary.best_val_acc) : "—");
    lead = `Still training: best validation accuracy so far BN ${best(bn)}, no-BN ${best(noBn)}; the test accuracy comes when both finish.`;
  }
  const milestones = [];
  for (const key of MILESTONES) {
    const at = (e) => e.summary?.steps_to?.[key];
    const name = milestoneName(key);
    const [b, n] = [at(bn), at(noBn)];
    // "never" once a run has finished; "not yet" while it may still get there.
    const missed = (e) => (done(e) ? "never reached it" : "has not reached it yet");
    let text;
    if (isNum(b) && isNum(n)) {
      if (b === n) text = `${name}: both at step ${int(b)}.`;
      else {
        const [first, firstAt, second, secondAt] = b < n ? ["BN", b, "no-BN", n] : ["no-BN", n, "BN", b];
        text = `${name}: ${first} first, at step ${int(firstAt)}; ${second} at step ${int(secondAt)} (${(secondAt / firstAt).toFixed(2)}× the steps).`;
      }
    } else if (isNum(b)) text = `${name}: BN at step ${int(b)}; no-BN ${missed(noBn)}.`;
    else if (isNum(n)) text = `${name}: no-BN at step ${int(n)}; BN ${missed(bn)}.`;
    else if (milestones.length) text = `${name}: ${done(bn) && done(noBn) ? "neither run reached it" : "not reached yet"}.`;
    else {
      // Not even the first milestone: how far each run did get is the answer (a short
      // run at a high rate: BN at 95 %, no-BN at chance).
      const best = (e) =>
        isNum(e.summary?.best_val_acc)
          ? `${pct(e.summary.best_val_acc)}${isNum(e.summary.best_val_acc_step) ? ` (step ${int(e.summary.best_val_acc_step)})` : ""}`
          : "—";
      const ended = done(bn) && done(noBn);
      text = `${name} validation accuracy: ${ended ? "neither run reached it" : "not reached yet"}; best${ended ? "" : " so far"} BN ${best(bn)}, no-BN ${best(noBn)}.`;
    }
    milestones.push({ key, text });
    if (!isNum(b) && !isNum(n)) break;
  }
  return { lead, milestones };
}
