// WS /ws/experiments/{id}: the experiment's snapshot, then its updates (docs/api.md).
// Every "experiment" update carries the whole state, so resuming after a drop needs only
// the snapshot with after_seq; an update whose seq was already applied is dropped, so
// nothing is applied twice and nothing is skipped.

import { CloseCode } from "../closecodes.js";
import { LiveSocket, resumePath } from "../livesocket.js";

export class ExperimentStream {
  /**
   * @param {string} id
   * @param {object} on
   * @param {(experiment: object, seq: number) => void} on.experiment  the whole state
   * @param {(message: object) => void} on.progress  {status, progress} between states
   * @param {() => void} on.gone  the experiment does not exist (or was deleted)
   */
  constructor(id, on) {
    this.id = id;
    this.on = on;
    this.lastSeq = null; // highest seq applied; null before the first snapshot
    this.applied = []; // every seq applied, in order (the test hook reads it)
    this.socket = new LiveSocket({
      name: `experiment ${id}`,
      path: () => resumePath(`/ws/experiments/${encodeURIComponent(id)}`, this.lastSeq),
      onMessage: (msg) => this.handle(msg),
      shouldReconnect: (ev) => {
        if (ev.code !== CloseCode.NOT_FOUND) return true;
        this.on.gone();
        return false;
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
    if (msg.type === "deleted") {
      this.on.gone();
      return;
    }
    if (typeof msg.seq !== "number") return;
    const snapshot = msg.type === "experiment_snapshot";
    // A snapshot is the state as of its seq; an older one than what is shown is stale.
    // (The same seq again in a snapshot is the same state: applying it changes nothing.)
    if (this.lastSeq !== null && (snapshot ? msg.seq < this.lastSeq : msg.seq <= this.lastSeq)) return;
    if (this.lastSeq === null || msg.seq > this.lastSeq) this.applied.push(msg.seq);
    this.lastSeq = msg.seq;
    if (msg.experiment) this.on.experiment(msg.experiment, msg.seq);
    else if (msg.type === "experiment_progress") this.on.progress(msg);
  }
}
