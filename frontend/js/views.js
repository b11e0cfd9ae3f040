// The page's two views, the runs or the Experiments area: the address is the state
// (`#experiments`, `#experiment=<id>`; anything else is the runs).

import { route } from "./experiments/page.js";

/** Shows the view the address names, now and whenever it changes. */
export function followViews(experiments) {
  function show() {
    const where = route();
    document.querySelector("[data-testid=runs-page]").hidden = Boolean(where);
    for (const link of document.querySelectorAll("[data-view]")) {
      const current = (link.dataset.view === "experiments") === Boolean(where);
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    experiments.show(where);
    // Charts drawn while hidden have no size: let Plotly measure them again.
    window.dispatchEvent(new Event("resize"));
  }
  window.addEventListener("hashchange", show);
  show();
}
