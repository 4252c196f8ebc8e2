// Every error is shown in words: what went wrong (the server's own message) and what to do next.
import { h, clear } from "./dom.js";

const NEXT_BY_CODE = {
  network_error: "Check your connection, then try again; if it persists, the Berth server may be down.",
  upload_network_error: "Check your connection and that the storage endpoint is reachable from this browser, then upload again.",
  upload_refused: "Check the file is a `docker save` archive under the size limit, then upload again.",
  upload_aborted: "Choose the file and upload again when you are ready.",
  session_expired: "Sign in again; you will come back to this page.",
  invalid_credentials: "Check the email address and password, then try again.",
  invalid_json: "Reload the page and try again.",
  quota_exceeded: "Delete something you no longer need, or ask for a larger plan, then try again.",
  account_suspended: "Your account is suspended: you can still sign in and read everything, but nothing new can start. Contact your administrator.",
};

// The plan quotas as a person reads them (shared/billing/plan_store.py QUOTA_FIELDS).
const QUOTA_WORDS = {
  max_containers: ["containers", ""],
  max_memory_mb_per_container: ["memory per container", " MB"],
  max_memory_mb_total: ["memory in total", " MB"],
  max_listeners: ["listeners", ""],
  max_image_storage_mb: ["image storage", " MB"],
  max_replicas_per_service: ["replicas per service", ""],
};

/** A quota refusal in words: which quota, its limit and the current use (from the error's details). */
export function describeQuota(details) {
  if (!details || typeof details !== "object" || !("quota" in details)) return null;
  const [name, unit] = QUOTA_WORDS[details.quota] ?? [String(details.quota).replaceAll("_", " "), ""];
  return `Quota reached: ${name} (your plan's limit ${details.limit}${unit}, in use ${details.used}${unit}).`;
}

const NEXT_BY_STATUS = {
  0: "Check your connection, then try again.",
  400: "Check the values you entered and try again.",
  401: "Sign in again.",
  403: "You are not allowed to do this; sign in with an account that is.",
  404: "It may have been deleted; go back to the list and refresh.",
  409: "The item changed meanwhile; look at its current state, then try again.",
  413: "Choose a smaller file or fewer items, then try again.",
  422: "Correct the fields named above and submit again.",
  429: "Too many requests: wait a few seconds, then try again.",
  500: "Something went wrong on the server; try again, and quote the reference if it keeps happening.",
  501: "This part of Berth is not available on this server yet.",
  502: "A part of Berth did not answer; try again in a moment.",
  503: "A part of Berth is busy or unavailable; try again in a moment.",
  504: "A part of Berth took too long to answer; try again in a moment.",
};

/** {message, next, reference} for any thrown value; ``next`` overrides the generic advice when given. */
export function describeError(error, next) {
  if (!(error && typeof error === "object" && "status" in error)) {
    return { message: `Unexpected error: ${error?.message ?? String(error)}`, next: "Reload the page and try again.", reference: null };
  }
  let advice = next ?? NEXT_BY_CODE[error.code] ?? NEXT_BY_STATUS[error.status] ?? (error.status >= 500 ? NEXT_BY_STATUS[500] : NEXT_BY_STATUS[400]);
  if (error.status === 429 && error.retryAfter) advice = `Too many requests: wait ${error.retryAfter} seconds, then try again.`;
  let message = error.message || `The request failed (HTTP ${error.status}).`;
  if (error.code === "quota_exceeded") {
    const words = describeQuota(error.details);
    if (words) message = `${words} ${message}`;
  }
  return { message, next: advice, reference: error.requestId ?? null };
}

/** An error box (role=alert, so screen readers announce it) that shows one error at a time. */
export function errorBox() {
  const box = h("div", { class: "error-box", role: "alert", hidden: true });
  return {
    node: box,
    show(error, next) {
      const { message, next: advice, reference } = describeError(error, next);
      clear(box);
      box.append(
        h("p", { class: "error-message" }, h("strong", {}, "Error: "), message),
        h("p", { class: "error-next" }, advice),
        reference ? h("p", { class: "error-reference" }, `Reference: ${reference}`) : null,
      );
      box.hidden = false;
    },
    clear() {
      clear(box);
      box.hidden = true;
    },
  };
}

let announceTimer = null;

/** Polite status messages (saved, deleted, ...) for everyone, including screen-reader users. */
export function announce(text) {
  const region = document.getElementById("status");
  if (!region) return;
  region.textContent = "";
  window.clearTimeout(announceTimer);
  // A fresh text node after clearing makes screen readers announce repeated messages too.
  window.setTimeout(() => {
    region.textContent = text;
    announceTimer = window.setTimeout(() => {
      region.textContent = "";
    }, 8000);
  }, 30);
}
