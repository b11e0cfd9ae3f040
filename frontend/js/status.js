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

/** What POST /api/runs/{id}/resume accepts. */
export const RESUMABLE = new Set([Status.FAILED, Status.INTERRUPTED]);
