// Services and releases (/api/services): declared replicas of one configuration, changed by numbered
// releases that the worker rolls out. The list, a create form, and per service: its replicas grouped by
// release, a deploy form followed until the release settles, the release history with rollback, scaling and
// deletion (the name typed to confirm). Everything shown is text (dom.js); nothing is parsed as HTML.
import { api } from "../api.js";
import { h, clear, field, details, table, statusBadge, formatTime } from "../dom.js";
import { confirmDialog } from "../dialog.js";
import { repeatableRows, splitCommand } from "../forms.js";
import { poll } from "../live.js";
import { announce } from "../messages.js";

const SETTLED = new Set(["healthy", "failed", "rolled_back", "superseded"]);
const path = (name, ...rest) => ["/services", encodeURIComponent(name), ...rest].join("/");

async function readyImages() {
  const page = await api("GET", "/images", { query: { limit: 100 } });
  return page.items.filter((item) => item.status === "ready");
}

function healthCheckFields() {
  const type = h("select", { name: "health_type" }, [["", "None"], ["http", "HTTP"], ["tcp", "TCP"]].map(([value, label]) => h("option", { value }, label)));
  const checkPath = h("input", { type: "text", name: "health_path", placeholder: "/", autocomplete: "off", spellcheck: "false" });
  const interval = h("input", { type: "number", name: "health_interval", min: "1", max: "300", value: "10" });
  return {
    nodes: [field("Health check", type), field("Health check path (HTTP)", checkPath), field("Check every (seconds)", interval)],
    value() {
      if (!type.value) return null;
      const check = { type: type.value, interval_seconds: Number(interval.value) || 10 };
      if (type.value === "http" && checkPath.value.trim()) check.path = checkPath.value.trim();
      return check;
    },
    chosen: () => type.value !== "",
  };
}

// --- the list ----------------------------------------------------------------------------------------

export async function deploymentsPage(ctx) {
  ctx.heading("Services and releases");
  const listErrors = ctx.errorBox();
  const list = h("div", {}, h("p", {}, "Loading services…"));
  ctx.main.append(
    h("p", { class: "hint" }, "A service runs replicas of one release; a deploy makes a new release and replaces the replicas a few at a time, rolling back on its own when the new ones fail their health check."),
    createServiceForm(ctx),
    h("section", { "aria-labelledby": "services-list-title" }, h("h2", { id: "services-list-title" }, "Your services"), listErrors.node, list),
  );
  ctx.onLeave(
    poll(async () => {
      let page;
      try {
        page = await api("GET", "/services", { query: { limit: 100 } });
      } catch (error) {
        if (ctx.alive()) listErrors.show(error);
        return;
      }
      if (!ctx.alive()) return;
      listErrors.clear();
      clear(list).append(
        page.items.length
          ? table(
              "Services",
              ["Name", "Ready", "Release", "Status", "Private DNS name"],
              page.items.map((service) => [
                h("a", { href: `#/deployments/${encodeURIComponent(service.name)}` }, service.name),
                `${service.running_replicas} of ${service.replicas}`,
                String(service.release),
                h("span", { dataset: { serviceStatus: service.name } }, statusBadge(service.release_status)),
                h("code", {}, service.dns_name),
              ]),
            )
          : h("p", { class: "empty" }, "No services yet: create one above."),
      );
    }),
  );
}

function createServiceForm(ctx) {
  const errors = ctx.errorBox();
  const name = h("input", { type: "text", name: "service_name", required: true, maxlength: "63", autocomplete: "off", spellcheck: "false" });
  const image = h("select", { name: "image", required: true }, h("option", { value: "" }, "Loading images…"));
  const replicas = h("input", { type: "number", name: "replicas", min: "0", max: "200", value: "2", required: true });
  const port = h("input", { type: "number", name: "container_port", min: "1", max: "65535", value: "8080" });
  const check = healthCheckFields();
  const regions = repeatableRows({
    legend: "Regions",
    addLabel: "Add region",
    hint: "Optional: at least this many replicas run in each region named (a region of your hosts).",
    columns: [{ key: "name", label: "Region" }, { key: "min", label: "Minimum", type: "number", min: "1", max: "200" }],
  });
  const settle = h("input", { type: "number", name: "min_healthy_seconds", min: "0", max: "299", value: "5", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Create service");
  readyImages().then(
    (images) => {
      image.replaceChildren(h("option", { value: "" }, images.length ? "Choose an image" : "No ready image: upload one first"), ...images.map((item) => h("option", { value: item.id }, `${item.name}:${item.tag}`)));
    },
    (error) => errors.show(error),
  );
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-service-title" },
    h("h2", { id: "create-service-title" }, "Create a service"),
    h("div", { class: "row" },
      field("Service name", name, "A DNS label: it becomes NAME.internal."),
      field("Image", image),
      field("Replicas", replicas),
      field("Container port (optional)", port),
      ...check.nodes,
      field("Healthy for (seconds)", settle, "How long a new replica must pass its check before a deploy moves on."),
    ),
    regions.node,
    errors.node,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const body = { name: name.value.trim(), image_id: image.value, replicas: Number(replicas.value) };
    if (port.value) body.ports = [{ container_port: Number(port.value) }];
    if (check.chosen()) body.health_check = check.value();
    body.update_policy = { min_healthy_seconds: Number(settle.value) };
    const minimums = regions.values().map((region) => ({ name: region.name, min: Number(region.min) || 1 }));
    if (minimums.length) body.regions = minimums;
    submit.disabled = true;
    try {
      const created = await api("POST", "/services", { body });
      announce(`Service ${created.name} created; release ${created.release} is rolling out.`);
      ctx.navigate(`/deployments/${encodeURIComponent(created.name)}`);
    } catch (error) {
      errors.show(error, error.status === 409 ? "Pick another name, or delete the service of that name first." : undefined);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

// --- one service -------------------------------------------------------------------------------------

export async function deploymentDetailPage(ctx) {
  const [name] = ctx.params;
  ctx.heading(`Service ${name}`);
  const errors = ctx.errorBox();
  const summary = h("div", {}, h("p", {}, "Loading…"));
  const progress = h("div", { class: "card release-progress", role: "status", "aria-live": "polite", hidden: true });
  const replicas = h("div", {});
  const history = h("div", {});
  const state = { service: null, releases: [], following: null, historyKey: "" };

  const refresh = async () => {
    let service, releases, containers;
    try {
      [service, releases, containers] = await Promise.all([
        api("GET", path(name)),
        api("GET", path(name, "releases"), { query: { limit: 100 } }),
        api("GET", "/containers", { query: { service: name, limit: 100 } }),
      ]);
    } catch (error) {
      if (!ctx.alive()) return;
      if (error.status === 404) {
        clear(summary).append(h("p", {}, "This service does not exist (any more). "), h("a", { href: "#/deployments" }, "Back to your services"));
        return;
      }
      errors.show(error);
      return;
    }
    if (!ctx.alive()) return;
    errors.clear();
    state.service = service;
    state.releases = releases.items;
    drawSummary(summary, service);
    drawReplicas(replicas, service, containers.items.filter((item) => item.desired_state !== "deleted" && item.status !== "deleted"));
    const key = JSON.stringify(releases.items.map((item) => [item.number, item.status, item.reason]));
    if (key !== state.historyKey) {
      state.historyKey = key;
      drawHistory(ctx, history, name, releases.items, service, () => refresh(), (number) => follow(number));
    }
    drawProgress();
  };

  // The release being followed (just deployed or rolled back to): its status and ready replicas, until it settles.
  const follow = (number) => {
    state.following = number;
    progress.hidden = false;
    refresh();
  };
  const drawProgress = () => {
    const number = state.following ?? (state.releases[0] && !SETTLED.has(state.releases[0].status) ? state.releases[0].number : null);
    if (number === null) {
      progress.hidden = true;
      return;
    }
    const release = state.releases.find((item) => item.number === number);
    if (!release) return;
    const mine = state.service.replicas_by_release.find((item) => item.release === number);
    const ready = mine ? mine.running : 0;
    const old = state.service.replicas_by_release.filter((item) => item.release !== number).reduce((sum, item) => sum + item.total, 0);
    const settled = SETTLED.has(release.status);
    progress.hidden = false;
    clear(progress).append(
      h("h2", {}, `Release ${number}: `, statusBadge(release.status)),
      h("progress", { max: String(Math.max(state.service.replicas, 1)), value: String(ready), "aria-label": `Ready replicas of release ${number}` }),
      h("p", { class: "progress-text", dataset: { releaseProgress: String(number) } },
        settled
          ? `Release ${number} is ${release.status.replace("_", " ")}${release.reason ? `: ${release.reason}` : "."}`
          : `${ready} of ${state.service.replicas} replicas of release ${number} ready${old ? `, ${old} old replica(s) still running` : ""}.`),
    );
    if (settled && state.following === number) {
      state.following = null;
      announce(`Release ${number} of ${name} is ${release.status.replace("_", " ")}.`);
    }
  };

  ctx.main.append(
    errors.node,
    summary,
    progress,
    h("section", { "aria-labelledby": "replicas-title" }, h("h2", { id: "replicas-title" }, "Replicas by release"), replicas),
    deployForm(ctx, name, follow),
    scaleForm(ctx, name, () => state.service, refresh),
    h("section", { "aria-labelledby": "releases-title" }, h("h2", { id: "releases-title" }, "Release history"), history),
    deleteSection(ctx, name),
  );
  ctx.onLeave(poll(refresh));
}

function drawSummary(node, service) {
  const policy = service.update_policy;
  const check = service.health_check;
  clear(node).append(
    details([
      ["Private DNS name", h("code", {}, service.dns_name)],
      ["Replicas", h("span", { class: "service-ready" }, `${service.running_replicas} of ${service.replicas} ready`)],
      ["Current release", h("span", {}, `${service.release} `, statusBadge(service.release_status))],
      ["Image", h("a", { href: `#/images/${encodeURIComponent(service.image_id)}` }, service.image_id)],
      ["Command", service.command ? h("code", {}, service.command.join(" ")) : "the image's"],
      ["Environment", service.env_names.length ? service.env_names.join(", ") : "none"],
      ["Secret environment", service.secret_env_names.length ? service.secret_env_names.join(", ") : "none"],
      ["Ports", service.ports.length ? service.ports.map((port) => `${port.container_port}/${port.protocol}`).join(", ") : "none"],
      ["Health check", check ? `${check.type} ${check.path ?? ""} on port ${check.port} every ${check.interval_seconds}s` : "none (running counts as ready)"],
      ["Regions", service.regions.length ? service.regions.map((region) => `${region.name} (at least ${region.min})`).join(", ") : "any"],
      ["Update policy", `max surge ${policy.max_surge}, max unavailable ${policy.max_unavailable}, healthy for ${policy.min_healthy_seconds}s, deadline ${policy.healthy_deadline_seconds}s, automatic rollback ${policy.auto_rollback ? "on" : "off"}`],
    ]),
  );
}

function drawReplicas(node, service, containers) {
  const groups = new Map();
  for (const container of containers) {
    const key = container.release ?? "none";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(container);
  }
  const numbers = [...groups.keys()].sort((a, b) => Number(b) - Number(a));
  clear(node).append(
    ...(numbers.length
      ? numbers.map((number) => {
          const counts = service.replicas_by_release.find((item) => item.release === number);
          return h(
            "div",
            { class: "release-group", dataset: { release: String(number) } },
            h("h3", {}, `Release ${number}`, number === service.release ? " (current)" : "", counts ? ` — ${counts.running} of ${counts.total} ready` : ""),
            table(
              `Replicas of release ${number}`,
              ["Replica", "Status", "Desired", "Created"],
              groups.get(number).map((container) => [
                h("a", { href: `#/containers/${encodeURIComponent(container.id)}` }, container.name),
                statusBadge(container.status),
                container.desired_state,
                formatTime(container.created_at),
              ]),
            ),
          );
        })
      : [h("p", { class: "empty" }, service.replicas ? "No replicas yet: they are being placed." : "Scaled to 0: no replicas.")]),
  );
}

function drawHistory(ctx, node, name, releases, service, refresh, follow) {
  const errors = ctx.errorBox();
  const rollback = async (target) => {
    const words = target ? `release ${target}` : "the previous healthy release";
    const ok = await confirmDialog({
      title: "Roll back?",
      message: `Roll ${name} back to ${words}? A new release with its configuration replaces the current replicas${service.release_status === "rolling" || service.release_status === "pending" ? ", and the release rolling now stops" : ""}.`,
      confirmLabel: "Roll back",
      danger: false,
    });
    if (!ok) return;
    errors.clear();
    try {
      const release = await api("POST", path(name, "rollback"), { body: target ? { release: target } : {} });
      announce(`Release ${release.number} of ${name} rolls back to ${words}.`);
      follow(release.number);
      refresh();
    } catch (error) {
      errors.show(error);
    }
  };
  const previous = h("button", { type: "button", class: "secondary" }, "Roll back to the previous healthy release");
  previous.addEventListener("click", () => rollback(null));
  clear(node).append(
    table(
      `Releases of ${name}, newest first`,
      ["Release", "Status", "Reason", "Image", "Created", "Finished", ""],
      releases.map((release) => {
        const button = release.number !== service.release && ["healthy", "superseded"].includes(release.status)
          ? h("button", { type: "button", class: "secondary small", "aria-label": `Roll back to release ${release.number}` }, "Roll back to this")
          : null;
        button?.addEventListener("click", () => rollback(release.number));
        return [
          String(release.number),
          h("span", { dataset: { releaseStatus: String(release.number) } }, statusBadge(release.status)),
          release.reason ?? "—",
          h("code", {}, release.image_id.slice(0, 8)),
          formatTime(release.created_at),
          formatTime(release.finished_at),
          button ?? "",
        ];
      }),
    ),
    errors.node,
    h("div", { class: "actions" }, previous),
  );
}

function deployForm(ctx, name, follow) {
  const errors = ctx.errorBox();
  const image = h("select", { name: "deploy_image" }, h("option", { value: "" }, "Keep the current image"));
  const command = h("input", { type: "text", name: "deploy_command", autocomplete: "off", spellcheck: "false", placeholder: "keep the current command" });
  const env = repeatableRows({
    legend: "Environment",
    hint: "Given, these replace the whole environment; leave empty to keep the current one.",
    addLabel: "Add variable",
    columns: [{ key: "name", label: "Name" }, { key: "value", label: "Value" }],
  });
  const check = healthCheckFields();
  const keepCheck = h("input", { type: "checkbox", name: "keep_health_check", checked: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Deploy");
  readyImages().then(
    (images) => image.append(...images.map((item) => h("option", { value: item.id }, `${item.name}:${item.tag}`))),
    (error) => errors.show(error),
  );
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "deploy-title" },
    h("h2", { id: "deploy-title" }, "Deploy a change"),
    h("p", { class: "hint" }, "What you leave as it is stays as in the current release."),
    h("div", { class: "row" }, field("Image", image), field("Command", command, "Arguments separated by spaces; quote with ' or \".")),
    env.node,
    h("div", { class: "field inline" }, keepCheck, h("label", { for: "keep-health-check" }, "Keep the current health check")),
    h("div", { class: "row" }, ...check.nodes),
    errors.node,
    h("div", { class: "actions" }, submit),
  );
  keepCheck.id = "keep-health-check";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const body = {};
    if (image.value) body.image_id = image.value;
    try {
      if (command.value.trim()) body.command = splitCommand(command.value.trim());
    } catch (error) {
      errors.show(error, "Close the quote and deploy again.");
      return;
    }
    const variables = env.values();
    if (variables.length) body.env = Object.fromEntries(variables.map((row) => [row.name, row.value]));
    if (!keepCheck.checked) body.health_check = check.value();
    submit.disabled = true;
    try {
      const release = await api("POST", path(name, "deploy"), { body });
      announce(`Release ${release.number} of ${name} created; it rolls out now.`);
      follow(release.number);
    } catch (error) {
      errors.show(error, error.status === 409 ? "A release is still rolling: wait for it to settle (or roll back), then deploy." : undefined);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function scaleForm(ctx, name, current, refresh) {
  const errors = ctx.errorBox();
  const replicas = h("input", { type: "number", name: "scale_replicas", min: "0", max: "200", required: true });
  const submit = h("button", { type: "submit" }, "Scale");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "scale-title" },
    h("h2", { id: "scale-title" }, "Scale"),
    h("div", { class: "row" }, field("Replicas", replicas, "No new release: replicas of the current one are added or drained and removed.")),
    errors.node,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      const service = await api("PATCH", path(name), { body: { replicas: Number(replicas.value) } });
      announce(`${name} scaled from ${current()?.replicas ?? "?"} to ${service.replicas} replicas.`);
      refresh();
    } catch (error) {
      errors.show(error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** Deleting needs the service's name typed, as the API does ({"confirm": name}). */
function typedNameDialog(name) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const input = h("input", { type: "text", id: "confirm-name", autocomplete: "off", spellcheck: "false" });
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const confirm = h("button", { type: "submit", class: "danger", disabled: true }, "Delete service");
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", { id: "delete-service-title" }, "Delete service?"),
      h("p", { id: "delete-service-message" }, `This removes ${name}, its listeners and every replica (each drained first). Type the service's name to confirm.`),
      h("div", { class: "field" }, h("label", { for: "confirm-name" }, "Service name"), input),
      h("div", { class: "actions" }, cancel, confirm),
    );
    const dialog = h("dialog", { class: "confirm-dialog", "aria-labelledby": "delete-service-title", "aria-describedby": "delete-service-message" }, form);
    let answered = false;
    const finish = (answer) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(answer);
    };
    input.addEventListener("input", () => {
      confirm.disabled = input.value !== name;
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value === name) finish(true);
    });
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

function deleteSection(ctx, name) {
  const errors = ctx.errorBox();
  const remove = h("button", { type: "button", class: "danger" }, "Delete service");
  remove.addEventListener("click", async () => {
    if (!(await typedNameDialog(name))) return;
    errors.clear();
    try {
      await api("DELETE", path(name), { body: { confirm: name } });
      announce(`Service ${name} deleted; its replicas drain and stop.`);
      ctx.navigate("/deployments");
    } catch (error) {
      errors.show(error);
    }
  });
  return h("section", { class: "card", "aria-labelledby": "delete-title" }, h("h2", { id: "delete-title" }, "Delete"), errors.node, h("div", { class: "actions" }, remove));
}
