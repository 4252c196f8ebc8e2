// Berth's dashboard: a hash router over a few pages, all built from the public API.
import { api, isSignedIn, onSessionExpired, refreshSession } from "./api.js";
import { h, clear } from "./dom.js";
import { announce, errorBox } from "./messages.js";
import { signInPage, signUpPage } from "./pages/auth.js";
import { imagesPage, imageDetailPage } from "./pages/images.js";
import { containersPage, containerDetailPage } from "./pages/containers.js";
import { servicesPage } from "./pages/services.js";
import { deploymentsPage, deploymentDetailPage } from "./pages/deployments.js";
import { discoveryPage } from "./pages/discovery.js";
import { alertsPage } from "./pages/alerts.js";
import { accountPage } from "./pages/account.js";
import { billingPage, invoicePage } from "./pages/billing.js";

const ROUTES = [
  { pattern: /^\/signin$/, page: signInPage, public: true },
  { pattern: /^\/signup$/, page: signUpPage, public: true },
  { pattern: /^\/images$/, page: imagesPage, section: "images" },
  { pattern: /^\/images\/([^/]+)$/, page: imageDetailPage, section: "images" },
  { pattern: /^\/containers$/, page: containersPage, section: "containers" },
  { pattern: /^\/containers\/([^/]+)$/, page: containerDetailPage, section: "containers" },
  { pattern: /^\/services$/, page: servicesPage, section: "services" },
  { pattern: /^\/deployments$/, page: deploymentsPage, section: "deployments" },
  { pattern: /^\/deployments\/([^/]+)$/, page: deploymentDetailPage, section: "deployments" },
  { pattern: /^\/discovery$/, page: discoveryPage, section: "discovery" },
  { pattern: /^\/alerts$/, page: alertsPage, section: "alerts" },
  { pattern: /^\/billing$/, page: billingPage, section: "billing" },
  { pattern: /^\/billing\/invoices\/([^/]+)$/, page: invoicePage, section: "billing" },
  { pattern: /^\/account$/, page: accountPage, section: "account" },
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanups = [];
let generation = 0;

/** The current route: path and query of the hash (#/containers/abc?x=1 -> "/containers/abc", {x: "1"}). */
export function currentRoute() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?", 2);
  return { path, query: Object.fromEntries(new URLSearchParams(search)), raw };
}

export function navigate(path) {
  if (window.location.hash === `#${path}`) render();
  else window.location.hash = path;
}

/** Send the user to sign in, and back to ``raw`` (the page they were on) afterwards. */
export function requireSignIn(reason) {
  const { raw, path } = currentRoute();
  if (reason) announce(reason);
  // Several calls may be refused at once: the first one decides where to come back to.
  if (path === "/signin" || path === "/signup") return;
  navigate(`/signin?next=${encodeURIComponent(raw)}`);
}

function render() {
  for (const cleanup of cleanups.splice(0)) cleanup();
  generation += 1;
  const mine = generation;
  const { path, query } = currentRoute();
  if (!path.startsWith("/")) return; // an in-page anchor, not a route
  if (path === "/") {
    navigate(isSignedIn() ? "/containers" : "/signin");
    return;
  }
  const route = ROUTES.find((candidate) => candidate.pattern.test(path));
  nav.hidden = !isSignedIn();
  for (const link of nav.querySelectorAll("a")) {
    if (route && link.dataset.section === route.section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  if (!route) {
    pageHeading("Page not found");
    main.append(h("p", {}, "There is no page at this address. "), h("p", {}, h("a", { href: "#/containers" }, "Go to your containers")));
    return;
  }
  if (!route.public && !isSignedIn()) {
    requireSignIn();
    return;
  }
  const params = path.match(route.pattern).slice(1).map(decodeURIComponent);
  // Each page draws into a root of its own: once the user has left, a late answer of the old page
  // lands in a detached node and never on the new page.
  const root = h("div", { class: "page" });
  main.append(root);
  const alive = () => mine === generation;
  const context = {
    main: root,
    params,
    query,
    heading: (text) => pageHeading(text, root),
    /** False once the user has left the page: late answers must not touch the new page. */
    alive,
    onLeave: (cleanup) => (alive() ? cleanups.push(cleanup) : cleanup()),
    navigate,
    errorBox,
  };
  Promise.resolve(route.page(context)).catch((error) => {
    if (!context.alive() || error?.name === "SessionExpired") return;
    const box = errorBox();
    root.append(box.node);
    box.show(error);
  });
}

/** Every page has one <h1>; focus moves to it on navigation so screen readers announce the new page. */
function pageHeading(text, parent = main) {
  const heading = h("h1", { tabindex: "-1" }, text);
  parent.append(heading);
  document.title = `${text} · Berth`;
  heading.focus({ preventScroll: true });
  return heading;
}

onSessionExpired(() => requireSignIn("Your session has ended; sign in again to continue."));

window.addEventListener("hashchange", render);

async function start() {
  const { path, query } = currentRoute();
  if (path === "/signup") {
    render();
    return;
  }
  const resumed = await refreshSession(); // resume the session from its HttpOnly cookie
  const next = query.next ?? "";
  if (resumed && path === "/signin") {
    // Already signed in (a reload of the sign-in page): go where the user was heading.
    navigate(next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/signin") ? next : "/containers");
    return;
  }
  render();
}

start();

