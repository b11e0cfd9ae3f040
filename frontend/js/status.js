// Run statuses as the server names them. Their one home is server/status.py; this is
// the page's copy (the page knows the server only through its API), which
// tests/server/test_status.py keeps in step with it.

export const Status = Object.freeze({
  QUEUED: "queued",
  RUNNING: "running",
  COMPLETED: "completed",
  FAILED: "failed",
  CANCELLED: "cancelled",
  DIVERGED: "diverged",
  INTERRUPTED: "interrupted", // the server stopped while the run was queued or running
});

/** Nothing more happens to the run unless a user resumes it. */
export const TERMINAL = new Set([
  Status.COMPLETED,
  Status.FAILED,
  Status.CANCELLED,
  Status.DIVERGED,
  Status.INTERRUPTED,
]);

/** Waiting for a worker or training: the run is not over. */
export const ACTIVE = new Set([Status.QUEUED, Status.RUNNING]);

/** What POST /api/runs/{id}/resume accepts. */
export const RESUMABLE = new Set([Status.FAILED, Status.INTERRUPTED]);

// An experiment's status, from its runs'. Its home is server/experiments/design.py's
// ExperimentStatus; the names are run statuses' names.
export const ExperimentStatus = Object.freeze({
  QUEUED: Status.QUEUED, // no run has started yet
  RUNNING: Status.RUNNING, // some run is queued or running
  COMPLETED: Status.COMPLETED, // every run ended, whatever each run's outcome
  CANCELLED: Status.CANCELLED, // ended, with runs cancelled
  INTERRUPTED: Status.INTERRUPTED, // ended, with runs the server's stop left unfinished
});
