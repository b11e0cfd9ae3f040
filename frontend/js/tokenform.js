// The *Access token* button and form (only servers started with a token need one): the
// token is kept for this tab by auth.js; saving it reconnects every live socket.

import { TOKEN_EVENT, UNAUTHORIZED_EVENT, setToken, token } from "./auth.js";
import { connections } from "./livesocket.js";
import { notice } from "./notice.js";

const $ = (sel) => document.querySelector(sel);

/** Wires the header's token button, the banner's token hint and the form. */
export function setupTokenForm() {
  const form = $("[data-testid=token-form]");
  const input = $("[data-testid=token-input]");
  const button = $("[data-testid=token-button]");

  function open(reason = "") {
    form.hidden = false;
    $("[data-testid=token-reason]").textContent = reason;
    input.value = token();
    input.focus();
  }
  function renderButton() {
    button.textContent = token() ? "Access token ✓" : "Access token";
  }

  button.addEventListener("click", () => {
    if (form.hidden) open();
    else form.hidden = true;
  });
  $("[data-testid=conn-token]").addEventListener("click", () => open("The server refuses the live connection without its token."));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    form.hidden = true;
    connections.reconnectNow();
    notice(token() ? "Access token saved for this tab." : "Access token removed.");
  });
  $("[data-testid=token-cancel]").addEventListener("click", () => {
    form.hidden = true;
  });
  window.addEventListener(UNAUTHORIZED_EVENT, (ev) => open(ev.detail));
  window.addEventListener(TOKEN_EVENT, renderButton);
  renderButton();
}
