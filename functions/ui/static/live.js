// Live updates by polling. Every poller stops while the tab is hidden (visibilitychange) and runs at
// once when the tab is shown again; a poll never overlaps the previous one of the same poller.
const pollers = new Set();

export const POLL_INTERVAL_MS = 2000;

/** Call ``task`` now and every ``intervalMs`` while the page is visible; returns stop(). */
export function poll(task, intervalMs = POLL_INTERVAL_MS) {
  const poller = { task, intervalMs, timer: null, running: false, stopped: false };
  pollers.add(poller);
  run(poller);
  return () => {
    poller.stopped = true;
    window.clearTimeout(poller.timer);
    pollers.delete(poller);
  };
}

async function run(poller) {
  if (poller.stopped || poller.running || document.hidden) return;
  window.clearTimeout(poller.timer);
  poller.running = true;
  try {
    await poller.task();
  } catch (error) {
    // The task shows its own errors; a failure must not stop later polls.
    console.warn("poll failed", error);
  } finally {
    poller.running = false;
  }
  if (!poller.stopped && !document.hidden) {
    poller.timer = window.setTimeout(() => run(poller), poller.intervalMs);
  }
}

document.addEventListener("visibilitychange", () => {
  for (const poller of pollers) {
    window.clearTimeout(poller.timer);
    if (!document.hidden) run(poller);
  }
  document.documentElement.dataset.live = document.hidden ? "paused" : "on";
});

/** How many pollers are active (for the live indicator). */
export function activePollers() {
  return pollers.size;
}
