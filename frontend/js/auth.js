// The server's access token, when it has one (docs/security.md): sent as
// `Authorization: Bearer` on every request (reads need it too, unless the server was
// started with --public-read) and as `?token=` on websockets. Kept in this tab's
// sessionStorage; a link may carry it as `#token=…`, which is then removed from the address.

const KEY = "bnlab.token";
export const TOKEN_EVENT = "bnlab:token";
export const UNAUTHORIZED_EVENT = "bnlab:unauthorized";

export function token() {
  try {
    return sessionStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: the token lasts until the page is closed */
  }
  window.dispatchEvent(new CustomEvent(TOKEN_EVENT));
}

/** Takes `#token=…` (or `?token=…`) from the address, stores it, and removes it. */
export function captureTokenFromUrl() {
  const url = new URL(location.href);
  const hash = new URLSearchParams(url.hash.slice(1));
  const found = hash.get("token") || url.searchParams.get("token");
  if (!found) return;
  setToken(found);
  hash.delete("token");
  url.searchParams.delete("token");
  url.hash = hash.toString();
  history.replaceState(null, "", url.toString());
}
