// The notice line under the header: what an action did or why it failed, for 6 s.

const SHOWN_MS = 6000;
let timer = null;

/** Shows `text` ("info" or "error"), replacing the notice shown now. */
export function notice(text, kind = "info") {
  const box = document.querySelector("[data-testid=notice]");
  box.textContent = text;
  box.className = `notice notice-${kind}`;
  box.hidden = false;
  clearTimeout(timer);
  timer = setTimeout(() => {
    box.hidden = true;
  }, SHOWN_MS);
}
