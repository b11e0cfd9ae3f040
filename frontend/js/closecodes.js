// Websocket close codes the server sends. Their one home is the server's `CloseCode`
// enum (server/live/messages.py); this is the page's copy (the page knows the server
// only through its API). HTTP's status plus 4000, as the API documents them.

export const CloseCode = Object.freeze({ BAD_REQUEST: 4400, UNAUTHORIZED: 4401, FORBIDDEN: 4403, NOT_FOUND: 4404 });
