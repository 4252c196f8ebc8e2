// Containers: the create form, the live list with start/stop/restart/delete, and a detail page with
// events, logs that follow new lines, and CPU/memory/network/filesystem charts from the stats history.
import { api } from "../api.js";
import { h, clear, field, details, table, statusBadge, formatBytes, formatTime, formatNumber } from "../dom.js";
import { confirmDialog } from "../dialog.js";
import { repeatableRows, splitCommand } from "../forms.js";
import { lineChart } from "../chart.js";
import { poll } from "../live.js";
import { announce } from "../messages.js";

const NAME_PATTERN = "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?";

export async function containersPage(ctx) {
  ctx.heading("Containers");
  const listErrors = ctx.errorBox();
  const list = h("div", { class: "list", "aria-busy": "true" }, h("p", {}, "Loading containers…"));
  ctx.main.append(
    await createForm(ctx),
    h("section", { "aria-labelledby": "containers-list-title" }, h("h2", { id: "containers-list-title" }, "Your containers"), listErrors.node, list),
  );
  const refresh = async () => {
    try {
      const page = await api("GET", "/containers", { query: { limit: 100 } });
      if (!ctx.alive()) return;
      listErrors.clear();
      list.removeAttribute("aria-busy");
      renderList(list, page.items, listErrors, refresh);
    } catch (error) {
      if (ctx.alive()) listErrors.show(error);
    }
  };
  ctx.onLeave(poll(refresh));
}

function portsText(ports) {
  if (!ports?.length) return "—";
  return ports.map((port) => (port.host_port ? `${port.host_ip}:${port.host_port} → ${port.container_port}/${port.protocol ?? "tcp"}` : `${port.container_port}/${port.protocol ?? "tcp"}`)).join(", ");
}

function renderList(list, items, errors, refresh) {
  // Keep focus on the button the user is on across the redraw (keyboard users).
  const focused = document.activeElement?.closest?.("[data-row-action]")?.dataset.rowAction ?? null;
  clear(list);
  if (items.length === 0) {
    list.append(h("p", { class: "empty" }, "No containers yet: create one above from a ready image."));
    return;
  }
  list.append(
    table(
      "Containers with their live status",
      ["Name", "Service", "Status", "Ports", "Actions"],
      items.map((container) => [
        h("a", { href: `#/containers/${encodeURIComponent(container.id)}` }, container.name),
        container.service ?? "—",
        h("span", { dataset: { containerStatus: container.name } }, statusBadge(container.status), container.reason ? h("span", { class: "reason" }, ` ${container.reason}`) : null),
        portsText(container.ports),
        actionButtons(container, errors, refresh),
      ]),
      { className: "containers" },
    ),
  );
  if (focused) list.querySelector(`[data-row-action="${CSS.escape(focused)}"]`)?.focus();
}

/** Start / Stop / Restart / Delete for one container; Delete asks first. */
export function actionButtons(container, errors, refresh, { afterDelete } = {}) {
  const act = async (verb, label) => {
    try {
      await api("POST", `/containers/${encodeURIComponent(container.id)}/${verb}`);
      announce(`${label} ${container.name}: requested.`);
      await refresh();
    } catch (error) {
      errors.show(error);
    }
  };
  const button = (verb, label, extra = {}) =>
    h("button", { type: "button", class: "small secondary", "aria-label": `${label} ${container.name}`, dataset: { rowAction: `${verb}:${container.id}` }, ...extra }, label);
  const running = container.desired_state === "running";
  const start = button("start", "Start", { disabled: running });
  const stop = button("stop", "Stop", { disabled: !running });
  const restart = button("restart", "Restart");
  const remove = button("delete", "Delete", { class: "small danger" });
  start.addEventListener("click", () => act("start", "Start"));
  stop.addEventListener("click", () => act("stop", "Stop"));
  restart.addEventListener("click", () => act("restart", "Restart"));
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog({ title: "Delete container?", message: `Delete ${container.name}? It is stopped and removed, with its logs.` });
    if (!ok) return;
    try {
      await api("DELETE", `/containers/${encodeURIComponent(container.id)}`);
      announce(`Deleted ${container.name}.`);
      if (afterDelete) afterDelete();
      else await refresh();
    } catch (error) {
      errors.show(error);
    }
  });
  return h("div", { class: "row-actions" }, start, stop, restart, remove);
}

async function createForm(ctx) {
  const errors = ctx.errorBox();
  const image = h("select", { name: "image", required: true }, h("option", { value: "" }, "Loading images…"));
  const name = h("input", { type: "text", name: "name", required: true, pattern: NAME_PATTERN, maxlength: "63", autocomplete: "off", spellcheck: "false" });
  const service = h("input", { type: "text", name: "service", pattern: NAME_PATTERN, maxlength: "63", autocomplete: "off", spellcheck: "false" });
  const replicas = h("input", { type: "number", name: "replicas", min: "1", max: "10", value: "1", required: true });
  const command = h("input", { type: "text", name: "command", autocomplete: "off", spellcheck: "false" });
  const cpu = h("input", { type: "number", name: "cpu", min: "0.1", max: "2", step: "0.1", value: "0.5", required: true });
  const memory = h("input", { type: "number", name: "memory_mb", min: "16", step: "1", value: "256", required: true });
  const restart = h("select", { name: "restart_policy" }, ["no", "always", "on-failure"].map((policy) => h("option", { value: policy }, policy)));
  const ports = repeatableRows({
    legend: "Ports",
    addLabel: "Add port",
    hint: "Container ports to publish; Berth picks the host port.",
    columns: [
      { key: "container_port", label: "Container port", type: "number", min: "1", max: "65535" },
      { key: "protocol", label: "Protocol", options: ["tcp", "udp"] },
    ],
  });
  const env = repeatableRows({ legend: "Environment", addLabel: "Add variable", columns: [{ key: "name", label: "Variable" }, { key: "value", label: "Value" }] });
  const secrets = repeatableRows({
    legend: "Secret environment",
    addLabel: "Add secret",
    hint: "Sealed when stored; only the names are shown afterwards.",
    columns: [{ key: "name", label: "Secret" }, { key: "value", label: "Secret value", type: "password" }],
  });
  const healthType = h("select", { name: "health_type" }, [["", "None"], ["http", "HTTP"], ["tcp", "TCP"]].map(([value, label]) => h("option", { value }, label)));
  const healthPort = h("input", { type: "number", name: "health_port", min: "1", max: "65535" });
  const healthPath = h("input", { type: "text", name: "health_path", placeholder: "/", autocomplete: "off", spellcheck: "false" });
  const healthInterval = h("input", { type: "number", name: "health_interval", min: "1", max: "300", value: "10" });
  const healthTimeout = h("input", { type: "number", name: "health_timeout", min: "1", max: "60", value: "2" });
  const healthRetries = h("input", { type: "number", name: "health_retries", min: "1", max: "10", value: "3" });
  const healthStart = h("input", { type: "number", name: "health_start", min: "0", max: "600", value: "0" });
  const healthFields = h(
    "div",
    { class: "row", hidden: true },
    field("Health port", healthPort, "Default: the first published port."),
    field("Health path (HTTP)", healthPath),
    field("Interval (s)", healthInterval),
    field("Timeout (s)", healthTimeout),
    field("Retries", healthRetries),
    field("Start period (s)", healthStart),
  );
  healthType.addEventListener("change", () => {
    healthFields.hidden = healthType.value === "";
    healthPath.disabled = healthType.value !== "http";
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Create container");

  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "Create a container"),
    h("div", { class: "row" },
      field("Image", image, "Only ready images are listed."),
      field("Name", name, "A DNS label: a-z, 0-9 and inner dashes. With several replicas, -1, -2, … is appended."),
      field("Service (optional)", service, "Containers of one service share a listener and a discovery name."),
      field("Replicas", replicas),
    ),
    field("Command (optional)", command, "Overrides the image's command; quote arguments with spaces: sh -c 'echo hi'."),
    h("div", { class: "row" }, field("CPU (cores)", cpu), field("Memory (MB)", memory), field("Restart policy", restart)),
    ports.node,
    env.node,
    secrets.node,
    h("fieldset", { class: "repeatable" }, h("legend", {}, "Health check"), field("Type", healthType), healthFields),
    errors.node,
    h("div", { class: "actions" }, submit),
  );

  try {
    const images = await api("GET", "/images", { query: { limit: 100 } });
    const ready = images.items.filter((item) => item.status === "ready");
    clear(image);
    image.append(h("option", { value: "" }, ready.length ? "Choose an image" : "No ready image: upload one first"));
    for (const item of ready) image.append(h("option", { value: item.id, selected: item.id === ctx.query.image }, `${item.name}:${item.tag}`));
  } catch (error) {
    errors.show(error);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    let body;
    try {
      body = buildBody();
    } catch (problem) {
      errors.show({ status: 400, code: "form", message: problem.message }, "Correct the field and submit again.");
      return;
    }
    const count = Math.max(1, Math.min(10, Number(replicas.value) || 1));
    submit.disabled = true;
    const created = [];
    try {
      for (let index = 1; index <= count; index += 1) {
        const replicaName = count > 1 ? `${body.name}-${index}` : body.name;
        created.push(await api("POST", "/containers", { body: { ...body, name: replicaName } }));
      }
      announce(`Created ${created.map((container) => container.name).join(", ")}; starting.`);
      name.value = "";
      ctx.navigate("/containers"); // redraw the form and the list, which now holds the new ones
    } catch (error) {
      const done = created.length ? ` (created so far: ${created.map((container) => container.name).join(", ")})` : "";
      errors.show({ ...error, message: `${error.message}${done}` }, error.status === 503 ? "No container host is ready yet; wait a few seconds and try again." : undefined);
    } finally {
      submit.disabled = false;
    }
  });

  function buildBody() {
    if (!image.value) throw new Error("Choose an image (only ready images can run).");
    const body = {
      image_id: image.value,
      name: name.value.trim(),
      cpu: Number(cpu.value),
      memory_mb: Number(memory.value),
      restart_policy: restart.value,
      ports: ports.values().map((row) => ({ container_port: Number(row.container_port), protocol: row.protocol })),
      env: Object.fromEntries(env.values().map((row) => [row.name, row.value])),
      secret_env: Object.fromEntries(secrets.values().map((row) => [row.name, row.value])),
    };
    if (service.value.trim()) body.service = service.value.trim();
    if (command.value.trim()) {
      try {
        body.command = splitCommand(command.value.trim());
      } catch (problem) {
        throw new Error(`Command: ${problem.message}.`);
      }
    }
    if (healthType.value) {
      const check = {
        type: healthType.value,
        interval_seconds: Number(healthInterval.value),
        timeout_seconds: Number(healthTimeout.value),
        retries: Number(healthRetries.value),
        start_period_seconds: Number(healthStart.value),
      };
      if (healthPort.value) check.port = Number(healthPort.value);
      if (healthType.value === "http" && healthPath.value.trim()) check.path = healthPath.value.trim();
      body.health_check = check;
    }
    return body;
  }

  return form;
}

export async function containerDetailPage(ctx) {
  const [containerId] = ctx.params;
  const path = `/containers/${encodeURIComponent(containerId)}`;
  const heading = ctx.heading("Container");
  const errors = ctx.errorBox();
  const summary = h("section", { class: "card", "aria-labelledby": "summary-title" }, h("h2", { id: "summary-title" }, "Details"));
  const summaryBody = h("div", {}, h("p", {}, "Loading…"));
  const actions = h("div", { class: "actions" });
  summary.append(summaryBody, actions);

  const charts = {
    cpu: lineChart({ title: "CPU", metric: "cpu", format: (value) => `${formatNumber(value)}%` }),
    memory: lineChart({ title: "Memory", metric: "memory", format: formatBytes }),
    network: lineChart({ title: "Network (per second)", metric: "network", format: (value) => `${formatBytes(value)}/s` }),
    filesystem: lineChart({ title: "Filesystem", metric: "filesystem", format: formatBytes }),
  };
  const chartSection = h("section", { class: "card", "aria-labelledby": "charts-title" }, h("h2", { id: "charts-title" }, "Resource use"), h("div", { class: "charts" }, Object.values(charts).map((chart) => chart.node)));

  const follow = h("input", { type: "checkbox", checked: true, id: "follow-logs" });
  const logList = h("ol", { class: "logs", role: "log", "aria-label": "Container logs", tabindex: "0" });
  const logSection = h(
    "section",
    { class: "card", "aria-labelledby": "logs-title" },
    h("h2", { id: "logs-title" }, "Logs"),
    h("div", { class: "field inline" }, follow, h("label", { for: "follow-logs" }, "Follow new lines")),
    logList,
  );
  const eventList = h("div", {}, h("p", {}, "Loading…"));
  const eventSection = h("section", { class: "card", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), eventList);

  ctx.main.append(h("p", {}, h("a", { href: "#/containers" }, "← All containers")), errors.node, summary, chartSection, logSection, eventSection);

  let lastState = "";
  const refreshContainer = async () => {
    try {
      const container = await api("GET", path);
      if (!ctx.alive()) return;
      errors.clear();
      heading.textContent = `Container ${container.name}`;
      document.title = `Container ${container.name} · Berth`;
      clear(summaryBody).append(containerDetails(container));
      const state = `${container.desired_state}`;
      if (state !== lastState) {
        lastState = state;
        clear(actions).append(actionButtons(container, errors, refreshContainer, { afterDelete: () => ctx.navigate("/containers") }));
      }
    } catch (error) {
      if (ctx.alive()) errors.show(error);
    }
  };
  ctx.onLeave(poll(refreshContainer));

  ctx.onLeave(
    poll(async () => {
      try {
        const stats = await api("GET", `${path}/stats`);
        if (ctx.alive()) drawStats(charts, stats);
      } catch (error) {
        if (ctx.alive() && error.status !== 404) errors.show(error);
      }
    }),
  );

  // Logs: the last 200 lines, then only what is new (since the newest timestamp seen; that instant is
  // asked for again, so lines already shown at it are skipped).
  let since = null;
  let seenAtSince = new Set();
  ctx.onLeave(
    poll(async () => {
      let answer;
      try {
        answer = await api("GET", `${path}/logs`, { query: since ? { since, tail: 1000 } : { tail: 200 } });
      } catch (error) {
        if (ctx.alive() && error.status !== 404) errors.show(error);
        return;
      }
      if (!ctx.alive()) return;
      const atBottom = logList.scrollTop + logList.clientHeight >= logList.scrollHeight - 8;
      for (const line of answer.lines) {
        const key = `${line.ts}|${line.stream}|${line.text}`;
        if (line.ts === since && seenAtSince.has(key)) continue;
        if (line.ts !== since) {
          since = line.ts;
          seenAtSince = new Set();
        }
        seenAtSince.add(key);
        logList.append(h("li", { class: `log-${line.stream === "stderr" ? "stderr" : "stdout"}` }, h("time", { datetime: line.ts }, formatTime(line.ts)), " ", h("span", { class: "log-text" }, line.text)));
      }
      if (logList.childElementCount === 0) {
        logList.append(h("li", { class: "log-empty" }, "No log lines yet."));
      } else if (logList.firstElementChild?.classList.contains("log-empty") && logList.childElementCount > 1) {
        logList.firstElementChild.remove();
      }
      while (logList.childElementCount > 2000) logList.firstElementChild.remove();
      if (follow.checked && (atBottom || answer.lines.length)) logList.scrollTop = logList.scrollHeight;
    }),
  );

  ctx.onLeave(
    poll(async () => {
      try {
        const events = await api("GET", `${path}/events`, { query: { limit: 20 } });
        if (!ctx.alive()) return;
        clear(eventList).append(
          events.items.length
            ? table("Status changes, newest first", ["When", "Status", "Desired", "Reason"], events.items.map((event) => [formatTime(event.ts), statusBadge(event.status), event.desired_state, event.reason ?? "—"]))
            : h("p", {}, "No events yet."),
        );
      } catch (error) {
        if (ctx.alive() && error.status !== 404) errors.show(error);
      }
    }, 4000),
  );
}

function containerDetails(container) {
  const check = container.health_check;
  return details([
    ["Status", h("span", { dataset: { containerStatus: container.name } }, statusBadge(container.status))],
    ["Desired state", container.desired_state],
    ["Reason", container.reason ?? "—"],
    ["Service", container.service ?? "—"],
    ["Image", h("a", { href: `#/images/${encodeURIComponent(container.image_id)}` }, container.image_id)],
    ["Ports", portsText(container.ports)],
    ["Command", container.command?.length ? h("code", {}, container.command.join(" ")) : "image default"],
    ["Environment", container.env_names?.length ? container.env_names.join(", ") : "—"],
    ["Secret environment", container.secret_env_names?.length ? container.secret_env_names.join(", ") : "—"],
    ["CPU", `${container.cpu} cores`],
    ["Memory", `${container.memory_mb} MB`],
    ["Restart policy", container.restart_policy],
    ["Restarts", String(container.restart_count ?? 0)],
    ["Exit code", container.exit_code ?? "—"],
    ["Health check", check ? `${check.type} on port ${check.port}${check.path ? ` ${check.path}` : ""}, every ${check.interval_seconds}s` : "none"],
    ["Created", formatTime(container.created_at)],
  ]);
}

function drawStats(charts, stats) {
  const samples = [...(stats.history ?? [])];
  if (stats.latest && !samples.some((sample) => sample.ts === stats.latest.ts)) samples.push(stats.latest);
  samples.sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
  const at = (sample) => Date.parse(sample.ts);
  charts.cpu.update([{ name: "CPU", points: samples.map((s) => [at(s), s.cpu_percent]) }]);
  charts.memory.update([{ name: "Used", points: samples.map((s) => [at(s), s.memory_bytes]) }]);
  const rate = (key) => {
    const points = [];
    for (let i = 1; i < samples.length; i += 1) {
      const seconds = (at(samples[i]) - at(samples[i - 1])) / 1000;
      if (seconds > 0) points.push([at(samples[i]), Math.max(0, (samples[i][key] - samples[i - 1][key]) / seconds)]);
    }
    return points;
  };
  charts.network.update([{ name: "Received", points: rate("net_rx_bytes") }, { name: "Sent", points: rate("net_tx_bytes") }]);
  charts.filesystem.update([{ name: "Written layer", points: samples.filter((s) => s.fs_bytes !== null && s.fs_bytes !== undefined).map((s) => [at(s), s.fs_bytes]) }]);
}
