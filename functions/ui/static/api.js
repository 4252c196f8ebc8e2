// The only module that talks to the server. The access token lives in this module's memory and nowhere
// else (never localStorage or sessionStorage); the refresh token is an HttpOnly cookie the browser sends
// only to /ui/session, so a page reload resumes the session through POST /ui/session/refresh.

let accessToken = null;
let currentUser = null;
let refreshInFlight = null;
let sessionExpiredHandler = () => {};

/** An API answer other than 2xx, or no answer at all (status 0): what the server said, in its words. */
export class ApiError extends Error {
  constructor(status, code, message, requestId = null, details = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details;
    this.retryAfter = null;
  }
}

/** The session could not be refreshed: the user must sign in again (the app shows the sign-in page). */
export class SessionExpired extends ApiError {
  constructor(message = "Your session has ended.") {
    super(401, "session_expired", message);
    this.name = "SessionExpired";
  }
}

export function onSessionExpired(handler) {
  sessionExpiredHandler = handler;
}

export function signedInUser() {
  return currentUser;
}

export function isSignedIn() {
  return accessToken !== null;
}

async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && typeof body === "object" ? body.error : null;
  const apiError = error && typeof error === "object"
    ? new ApiError(response.status, String(error.code ?? "error"), String(error.message ?? ""), error.request_id ?? null, error.details ?? null)
    : new ApiError(response.status, "http_" + response.status, `The server answered ${response.status} ${response.statusText}.`);
  const retryAfter = response.headers.get("Retry-After");
  if (retryAfter) apiError.retryAfter = Number(retryAfter) || null;
  return apiError;
}

// A call the network dropped is sent again this many times (after RETRY_DELAY_MS) when sending it twice
// does no harm: the browser aborts the calls in flight whenever the machine's network changes (a laptop
// moving between networks, a VPN coming up), which says nothing about Berth.
const NETWORK_RETRIES = 2;
const RETRY_DELAY_MS = 300;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** call() again, up to NETWORK_RETRIES times, while it fails with an error that dropped(error) says the network dropped. */
async function retried(call, dropped) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      if (!dropped(error) || attempt >= NETWORK_RETRIES) throw error;
      await pause(RETRY_DELAY_MS);
    }
  }
}

async function send(method, url, { body, headers = {}, signal, retry = method === "GET" } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", cache: "no-store", signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const once = async () => {
    try {
      return await fetch(url, init);
    } catch (cause) {
      if (signal?.aborted) throw cause; // the caller gave up on this call: not a network failure
      const error = new ApiError(0, "network_error", "Berth did not answer (the network or the server is down).");
      error.cause = cause;
      throw error;
    }
  };
  return retry ? retried(once, (error) => error.code === "network_error") : once();
}

function keepSession(body) {
  accessToken = body.access_token;
  currentUser = body.user ?? null;
  return currentUser;
}

function forgetSession() {
  accessToken = null;
  currentUser = null;
}

/** Sign in through the UI's session route: the refresh token becomes an HttpOnly cookie. */
export async function signIn(email, password) {
  // Sent again if the network dropped it: at worst the account gets a second session, which expires.
  const response = await send("POST", "/ui/session", { body: { email, password }, retry: true });
  if (!response.ok) throw await readError(response);
  return keepSession(await response.json());
}

export async function signUp(email, password) {
  let response;
  try {
    response = await send("POST", "/api/auth/signup", { body: { email, password } });
  } catch (error) {
    if (!(error instanceof ApiError) || error.code !== "network_error") throw error;
    // The answer was lost, not necessarily the sign-up: ask again. "Email taken" then may mean the first
    // call made the account, which signing in with the same password settles (a stranger's account would
    // refuse the password, and that error is shown).
    await pause(RETRY_DELAY_MS);
    response = await send("POST", "/api/auth/signup", { body: { email, password } });
    if (response.status === 409) {
      const refusal = await readError(response);
      if (refusal.code !== "email_taken") throw refusal;
      return signIn(email, password);
    }
  }
  if (!response.ok) throw await readError(response);
  return signIn(email, password);
}

const REFRESH_TIMEOUT_MS = 15_000;

/** Resume or renew the session from the cookie; true when it worked. Concurrent callers share one call. */
export function refreshSession() {
  refreshInFlight ??= (async () => {
    try {
      // Bounded: the dashboard waits on this before it shows anything; a refresh that never answers leaves
      // the user at the sign-in page rather than at "Loading the dashboard…".
      const response = await send("POST", "/ui/session/refresh", { headers: { "X-Berth-UI": "1" }, signal: AbortSignal.timeout(REFRESH_TIMEOUT_MS) });
      if (!response.ok) {
        forgetSession();
        return false;
      }
      keepSession(await response.json());
      return true;
    } catch {
      return false;
    } finally {
      refreshInFlight = null;
    }
  })();
  return refreshInFlight;
}

export async function signOut() {
  const headers = { "X-Berth-UI": "1" };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  try {
    const response = await send("DELETE", "/ui/session", { headers });
    if (!response.ok && response.status !== 401) throw await readError(response);
  } finally {
    forgetSession();
  }
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * Call the public API as the signed-in user. On a 401 the session is refreshed once and the call retried;
 * when that fails too, the app is told (it shows sign-in) and SessionExpired is thrown.
 */
export async function api(method, path, { body, query, accept, signal } = {}) {
  const url = withQuery(`/api${path}`, query);
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const headers = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
    if (accept) headers.Accept = accept; // e.g. "text/csv": the answer is returned as a Blob
    const response = await send(method, url, { body, headers, signal });
    if (response.status === 401 && attempt === 0 && (await refreshSession())) continue;
    if (response.status === 401) {
      forgetSession();
      const expired = new SessionExpired();
      sessionExpiredHandler(expired);
      throw expired;
    }
    if (!response.ok) throw await readError(response);
    if (response.status === 204) return null;
    if (accept) return response.blob();
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
  throw new SessionExpired();
}

/**
 * POST a file straight to object storage with a presigned form (fields first, then the file), reporting
 * progress as onProgress(loaded, total). Resolves on 2xx; rejects with an ApiError naming what failed.
 */
export function uploadFile(upload, file, onProgress) {
  // The same form posted again writes the same object: sent again when the network dropped it.
  return retried(() => postFile(upload, file, onProgress), (error) => error.code === "upload_network_error");
}

function postFile(upload, file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(upload.fields ?? {})) form.append(name, value);
    form.append("file", file);
    const request = new XMLHttpRequest();
    request.open("POST", upload.url);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        onProgress(file.size, file.size);
        resolve();
        return;
      }
      reject(new ApiError(request.status, "upload_refused", storageMessage(request.responseText, request.status)));
    });
    request.addEventListener("error", () => {
      reject(new ApiError(0, "upload_network_error", "The browser could not send the file to storage (the connection failed or storage does not accept this site's origin)."));
    });
    request.addEventListener("abort", () => reject(new ApiError(0, "upload_aborted", "The upload was cancelled.")));
    request.send(form);
  });
}

// S3 answers errors as XML (<Error><Code/><Message/></Error>); parsed as data, never rendered as markup.
function storageMessage(text, status) {
  try {
    const xml = new DOMParser().parseFromString(text, "application/xml");
    const message = xml.querySelector("Error > Message")?.textContent;
    const code = xml.querySelector("Error > Code")?.textContent;
    if (message || code) return `Storage refused the upload (${status}${code ? ` ${code}` : ""}): ${message ?? ""}`.trim();
  } catch {
    // fall through to the plain message
  }
  return `Storage refused the upload (HTTP ${status}).`;
}
