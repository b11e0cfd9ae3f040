// BN Lab dashboard: the page's entry. Starts each part; each module does one job
// (frontend/README.md has the map). No framework.

import { api } from "./api.js";
import { TOKEN_EVENT, captureTokenFromUrl } from "./auth.js";
import { watchConnections } from "./banner.js";
import { ExperimentsPage } from "./experiments/page.js";
import { showHealth } from "./health.js";
import { RunsFeed, connections } from "./livesocket.js";
import { notice } from "./notice.js";
import { RunsPage } from "./runs/page.js";
import { TERMINAL } from "./status.js";
import { setupTokenForm } from "./tokenform.js";
import { followViews } from "./views.js";

captureTokenFromUrl(); // before any socket opens

const runs = new RunsPage();
watchConnections();
setupTokenForm();

const experiments = new ExperimentsPage(document.querySelector("[data-testid=experiments-page]"), {
  notice,
  openRuns: (cellRuns) => runs.openRuns(cellRuns),
});
followViews(experiments);

new RunsFeed({
  onList: (list) => runs.onList(list),
  onRun: (run) => {
    runs.upsertRun(run, "feed");
    if (run.experiment_id) experiments.runChanged();
    // A run that ended is one more the designer's estimate can learn from.
    if (TERMINAL.has(run.status)) experiments.runEnded();
  },
  onDeleted: (id) => runs.removeRun(id),
}).start();
showHealth();
// A token entered after the page opened: the health line could not be read without it.
window.addEventListener(TOKEN_EVENT, showHealth);
runs.start();
// The server's limits, once: without them (an older server, a failed request) the page
// caps nothing itself and the server's answer says what is too much.
api.limits().then(
  (limits) => {
    if (Number.isInteger(limits?.compare_max_runs)) runs.compare.setMaxRuns(limits.compare_max_runs);
  },
  () => {},
);

// Test hook (read-only, see frontend/README.md): what the page holds per run, and a way
// to drop every live socket as a network failure would.
window.bnlab = Object.freeze({
  pointsFor: (runId) => runs.store.points(runId).map((p) => ({ seq: p.seq, step: p.step })),
  selected: () => [...runs.state.selected],
  socket: Object.freeze({
    drop: (offlineMs = 0) => connections.dropAll(offlineMs),
    connected: () => !connections.trouble(),
  }),
  // The open experiment: every stream seq it applied, in order, its charts' draws, and
  // whether every chart asked for has been drawn.
  experiment: Object.freeze({
    appliedSeqs: () => [...(experiments.view.stream?.applied ?? [])],
    draws: () => experiments.view.painter.draws,
    painted: () => experiments.view.painter.idle(),
  }),
});
