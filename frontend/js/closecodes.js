// Websocket close codes the server sends. Their one home is the server's `CloseCode`
// enum (server/live/messages.py); this is the page's copy (the page knows the server
// only through its API), which tests/server/test_status.py keeps in step with it.

export const CloseCode = Object.freeze({
  TOO_SLOW: 4008, // the page fell behind its queue: it reconnects with after_seq
  BAD_REQUEST: 4400,
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  NOT_FOUND: 4404,
});
