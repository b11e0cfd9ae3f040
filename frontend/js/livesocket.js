// Live websockets with reconnect + resync (docs/api.md, "Websockets").
//
// LiveSocket: one websocket that reconnects with exponential backoff until stop().
// RunsFeed:   WS /ws/runs, the runs table's feed.
// RunStream:  WS /ws/runs/{id}?after_seq=N, one run's points; resumes after the last
//             seq it saw, and drops anything it has already seen (dedupe by seq).
// Connections: the registry the disconnection banner and the test hook read.

import { wsUrl } from "./api.js";
import { CloseCode } from "./closecodes.js";
import { Status, TERMINAL } from "./status.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

/** Every live socket of the page, so the banner can say whether we are connected. */
class ConnectionRegistry extends EventTarget {
  constructor() {
    super();
    this.sockets = new Set();
  }
  add(socket) {
    this.sockets.add(socket);
    this.changed();
  }
  delete(socket) {
    this.sockets.delete(socket);
    this.changed();
  }
  changed() {
    this.dispatchEvent(new Event("change"));
  }
  /** The socket that has been waiting longest to reconnect, or null when all are fine. */
  trouble() {
    let worst = null;
    for (const s of this.sockets) {
      if (s.lost && (!worst || s.attempt > worst.attempt)) worst = s;
    }
    return worst;
  }
  /** Test hook: drop every live socket as a network failure would. */
  dropAll(offlineMs = 0) {
    for (const s of this.sockets) s.drop(offlineMs);
  }
  reconnectNow() {
    for (const s of this.sockets) if (s.lost) s.reconnectNow();
  }
}
export const connections = new ConnectionRegistry();

export class LiveSocket {
  /**
   * @param {object} opts
   * @param {string} opts.name         for messages ("runs feed", "run 3f9c…")
   * @param {() => string} opts.path   path to connect to; called on every (re)connect
   * @param {(msg: object) => void} opts.onMessage
   * @param {(ev: CloseEvent) => boolean} [opts.shouldReconnect]  false ends the socket
   */
  constructor({ name, path, onMessage, shouldReconnect = () => true }) {
    this.name = name;
    this.path = path;
    this.onMessage = onMessage;
    this.shouldReconnect = shouldReconnect;
    this.ws = null;
    this.wanted = false;
    this.attempt = 0; // failed attempts since the last good connection
    this.lost = false; // true from an unexpected close until the next open
    this.retryAt = 0;
    this.timer = null;
    this.holdUntil = 0;
  }

  start() {
    if (this.wanted) return;
    this.wanted = true;
    connections.add(this);
    this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.lost = false;
    connections.delete(this);
    this.discard();
  }

  /** Forget the current connection without triggering a reconnect. */
  discard(code = 1000, reason = "done") {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onmessage = ws.onclose = ws.onerror = null;
    if (ws.readyState === WebSocket.CONNECTING) {
      // Closing before the handshake ends makes Chromium log an error: close once open.
      ws.onopen = () => ws.close(code, reason);
    } else {
      ws.onopen = null;
      if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    }
  }

  connect() {
    clearTimeout(this.timer);
    if (!this.wanted) return;
    this.discard(); // at most one connection per LiveSocket
    const ws = new WebSocket(wsUrl(this.path()));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.lost = false;
      connections.changed();
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn(`${this.name}: ignoring a message that is not JSON`);
        return;
      }
      this.onMessage(msg);
    };
    ws.onerror = () => {}; // onclose follows and handles it
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!this.wanted) return;
      if (!this.shouldReconnect(ev)) {
        this.stop();
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    this.lost = true;
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const delay = Math.max(base * (0.8 + 0.4 * Math.random()), this.holdUntil - Date.now());
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
    connections.changed();
  }

  reconnectNow() {
    this.holdUntil = 0;
    this.connect();
  }

  /** Close the connection as if the network had dropped; reconnects after the backoff
   *  (and not before offlineMs). The test hook uses it. */
  drop(offlineMs = 0) {
    if (!this.wanted) return;
    this.holdUntil = Date.now() + offlineMs;
    this.discard(4000, "dropped");
    this.scheduleReconnect();
  }
}

/** A resumable stream's path: `base`, or after a drop `base?after_seq=N` with the
 *  highest seq already applied (null: nothing yet, so the whole snapshot). */
export function resumePath(base, lastSeq) {
  return lastSeq === null ? base : `${base}?after_seq=${lastSeq}`;
}

/** WS /ws/runs: the list of runs, then one message per change. */
export class RunsFeed {
  constructor({ onList, onRun, onDeleted }) {
    this.socket = new LiveSocket({
      name: "runs feed",
      path: () => "/ws/runs",
      onMessage: (msg) => {
        if (msg.type === "runs") onList(msg.runs ?? []);
        else if (msg.type === "run" && msg.run) onRun(msg.run);
        else if (msg.type === "deleted") onDeleted(msg.id);
      },
    });
  }
  start() {
    this.socket.start();
  }
}

/**
 * WS /ws/runs/{id}: one run's snapshot, then its events. Keeps the last seq seen and
 * resumes with after_seq after a drop, so every point arrives exactly once.
 */
export class RunStream {
  constructor(runId, { lastSeq = null, onRun, onPoints, onGone }) {
    this.runId = runId;
    this.lastSeq = lastSeq; // highest message seq seen; null before the first snapshot
    this.onRun = onRun;
    this.onPoints = onPoints;
    this.onGone = onGone;
    this.finished = false;
    this.socket = new LiveSocket({
      name: `run ${runId}`,
      path: () => resumePath(`/ws/runs/${encodeURIComponent(runId)}`, this.lastSeq),
      onMessage: (msg) => this.handle(msg),
      shouldReconnect: (ev) => {
        if (ev.code === CloseCode.NOT_FOUND) {
          this.onGone?.(runId);
          return false;
        }
        return !this.finished; // the server may close a finished run's stream
      },
    });
  }

  start() {
    this.socket.start();
  }
  stop() {
    this.socket.stop();
  }

  handle(msg) {
    if (msg.type === "snapshot") {
      if (msg.run) this.observe(msg.run);
      const points = (msg.points ?? []).filter((p) => this.lastSeq === null || p.seq > this.lastSeq);
      if (typeof msg.seq === "number") this.lastSeq = Math.max(this.lastSeq ?? -1, msg.seq);
      if (points.length) this.onPoints(this.runId, points);
      this.maybeFinish();
      return;
    }
    if (typeof msg.seq === "number") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already seen
      this.lastSeq = msg.seq;
    }
    if (msg.type === "eval" && msg.point) {
      this.onPoints(this.runId, [{ seq: msg.seq, ...msg.point }]);
    } else if (msg.run) {
      this.observe(msg.run);
    }
    this.maybeFinish();
  }

  observe(run) {
    this.run = run;
    this.onRun(run);
  }

  maybeFinish() {
    const run = this.run;
    if (!run || !TERMINAL.has(run.status)) return;
    if (run.status === Status.COMPLETED && !run.test_metrics) return; // the test event is coming
    this.finished = true;
    this.stop(); // nothing more will happen to this run
  }
}
