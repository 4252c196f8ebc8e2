// Services and load balancing: listeners (external port, protocol, algorithm, weights), each with its
// instances' health and RPS, latency and bandwidth (bytes per second in from and out to its clients) charts:
// the recorded history first, then live figures polled from the listener's stats.
import { api } from "../api.js";
import { h, clear, field, details, table, statusBadge, formatNumber, formatBytes } from "../dom.js";
import { confirmDialog } from "../dialog.js";
import { lineChart, rollingSeries } from "../chart.js";
import { poll } from "../live.js";
import { announce } from "../messages.js";

export async function servicesPage(ctx) {
  ctx.heading("Services and load balancing");
  const listErrors = ctx.errorBox();
  const placeholder = h("p", {}, "Loading listeners…");
  const list = h("div", { class: "listeners" }, placeholder);
  const containers = await api("GET", "/containers", { query: { limit: 100 } }).catch((error) => {
    listErrors.show(error);
    return { items: [] };
  });
  const byId = new Map(containers.items.map((container) => [container.id, container]));
  ctx.main.append(
    createListenerForm(ctx, containers.items),
    uploadCertificateForm(ctx),
    h("section", { "aria-labelledby": "listeners-title" }, h("h2", { id: "listeners-title" }, "Listeners"), listErrors.node, list),
  );

  const cards = new Map(); // listener id -> {node, stop}
  ctx.onLeave(() => cards.forEach((card) => card.stop()));
  ctx.onLeave(
    poll(async () => {
      let page;
      try {
        page = await api("GET", "/load-balancer/listeners", { query: { limit: 100 } });
      } catch (error) {
        if (ctx.alive()) listErrors.show(error);
        return;
      }
      if (!ctx.alive()) return;
      listErrors.clear();
      const seen = new Set(page.items.map((listener) => listener.id));
      for (const [id, card] of cards) {
        if (!seen.has(id)) {
          card.stop();
          card.node.remove();
          cards.delete(id);
        }
      }
      if (page.items.length === 0) {
        placeholder.textContent = "No listeners yet: create one above to give a service an external port.";
        placeholder.className = "empty";
        list.replaceChildren(placeholder);
        return;
      }
      placeholder.remove();
      for (const listener of page.items) {
        if (!cards.has(listener.id)) {
          const card = listenerCard(ctx, listener, byId);
          cards.set(listener.id, card);
          list.append(card.node);
        }
      }
    }, 5000),
  );
}

function createListenerForm(ctx, containers) {
  const errors = ctx.errorBox();
  const services = [...new Set(containers.map((container) => container.service).filter(Boolean))].sort();
  const service = h("input", { type: "text", name: "service", required: true, list: "known-services", autocomplete: "off", spellcheck: "false" });
  const known = h("datalist", { id: "known-services" }, services.map((name) => h("option", { value: name })));
  const port = h("input", { type: "number", name: "port", min: "1", max: "65535" });
  const protocol = h("select", { name: "protocol" }, ["http", "https", "tcp"].map((value) => h("option", { value }, value)));
  // https: the certificate presented (upload one below first); listed when https is picked.
  const certificate = h("select", { name: "certificate" });
  const certificateField = field("Certificate", certificate, "TLS is terminated with it; upload one below.");
  certificateField.hidden = true;
  protocol.addEventListener("change", async () => {
    certificateField.hidden = protocol.value !== "https";
    if (protocol.value !== "https") return;
    try {
      const page = await api("GET", "/load-balancer/certificates", { query: { limit: 100 } });
      certificate.replaceChildren(...page.items.map((item) => h("option", { value: item.id }, `${item.name} (${item.hostnames.join(", ")})`)));
    } catch (error) {
      errors.show(error);
    }
  });
  const algorithm = h("select", { name: "algorithm" }, [["round_robin", "Round robin"], ["least_connections", "Least connections"], ["weighted", "Weighted"]].map(([value, label]) => h("option", { value }, label)));
  const weightsBox = h("fieldset", { class: "repeatable", hidden: true }, h("legend", {}, "Weights"), h("p", { class: "hint" }, "Relative share of requests per container (0 sends it nothing)."));
  const weightInputs = new Map();
  let drawnFor = null;
  const drawWeights = () => {
    // Only when the service changed: a redraw would throw away what the user typed.
    if (drawnFor === service.value.trim()) return;
    drawnFor = service.value.trim();
    for (const node of [...weightsBox.querySelectorAll(".field")]) node.remove();
    weightInputs.clear();
    for (const container of containers.filter((item) => item.service === service.value.trim())) {
      const input = h("input", { type: "number", min: "0", max: "1000", value: "1", name: `weight-${container.id}` });
      weightInputs.set(container.id, input);
      weightsBox.append(field(`Weight of ${container.name}`, input));
    }
    if (weightInputs.size === 0) weightsBox.append(h("div", { class: "field" }, h("p", { class: "hint" }, "No containers in this service yet.")));
  };
  algorithm.addEventListener("change", () => {
    weightsBox.hidden = algorithm.value !== "weighted";
    drawWeights();
  });
  service.addEventListener("change", drawWeights);
  const submit = h("button", { type: "submit", class: "primary" }, "Create listener");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-listener-title" },
    h("h2", { id: "create-listener-title" }, "Create a listener"),
    known,
    h("div", { class: "row" },
      field("Service", service, services.length ? `Your services: ${services.join(", ")}.` : "Give containers a service name first."),
      field("External port (optional)", port, "Leave empty and Berth picks a free one."),
      field("Protocol", protocol),
      certificateField,
      field("Algorithm", algorithm),
    ),
    weightsBox,
    errors.node,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const body = { service: service.value.trim(), protocol: protocol.value, algorithm: algorithm.value };
    if (port.value) body.port = Number(port.value);
    if (protocol.value === "https") body.certificate_ids = certificate.value ? [certificate.value] : [];
    if (algorithm.value === "weighted") body.weights = Object.fromEntries([...weightInputs].map(([id, input]) => [id, Number(input.value)]));
    submit.disabled = true;
    try {
      const listener = await api("POST", "/load-balancer/listeners", { body });
      announce(`Listener for ${listener.service} created on port ${listener.port}.`);
      ctx.navigate("/services");
    } catch (error) {
      errors.show(error, error.status === 409 ? "That port is taken; choose another or leave it empty." : undefined);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function uploadCertificateForm(ctx) {
  const errors = ctx.errorBox();
  const name = h("input", { type: "text", name: "certificate_name", required: true, maxlength: "100" });
  const chain = h("textarea", { name: "certificate_chain", required: true, rows: "4", spellcheck: "false" });
  const key = h("textarea", { name: "private_key", required: true, rows: "4", spellcheck: "false" });
  const submit = h("button", { type: "submit" }, "Upload certificate");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "upload-certificate-title" },
    h("h2", { id: "upload-certificate-title" }, "Upload a TLS certificate"),
    h("div", { class: "row" },
      field("Name", name),
      field("Certificate chain (PEM)", chain, "The certificate first, then its intermediates."),
      field("Private key (PEM)", key, "Unencrypted; stored encrypted and never shown again."),
    ),
    errors.node,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      const uploaded = await api("POST", "/load-balancer/certificates", {
        body: { name: name.value.trim(), certificate_chain: chain.value, private_key: key.value },
      });
      announce(`Certificate ${uploaded.name} uploaded for ${uploaded.hostnames.join(", ")}.`);
      form.reset();
    } catch (error) {
      errors.show(error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

const HISTORY_MINUTES = 10;
const HISTORY_STEP_SECONDS = 10;

function listenerCard(ctx, listener, containersById) {
  const errors = ctx.errorBox();
  const titleId = `listener-${listener.id}`;
  // The charts open with the recorded history (HISTORY_MINUTES at HISTORY_STEP_SECONDS), then live polls extend it.
  const keep = (HISTORY_MINUTES * 60) / HISTORY_STEP_SECONDS + 90;
  const rpsSeries = rollingSeries(keep);
  const p50 = rollingSeries(keep);
  const p95 = rollingSeries(keep);
  const p99 = rollingSeries(keep);
  const bytesIn = rollingSeries(keep);
  const bytesOut = rollingSeries(keep);
  const rps = lineChart({ title: "Requests per second", metric: "rps", format: (value) => `${formatNumber(value)} req/s` });
  const latency = lineChart({ title: "Latency", metric: "latency", format: (value) => `${formatNumber(value)} ms` });
  const bandwidth = lineChart({ title: "Bandwidth", metric: "bandwidth", format: (value) => `${formatBytes(value)}/s` });
  // Live bandwidth is the growth of lb-runtime's byte counters between two polls (none across a restart).
  let lastBytes = null;
  const totals = h("p", { class: "totals" }, "Waiting for statistics…");
  const instances = h("div", {}, h("p", {}, "Waiting for statistics…"));
  const remove = h("button", { type: "button", class: "danger small", "aria-label": `Delete the listener of ${listener.service} on port ${listener.port}` }, "Delete listener");
  const nameOf = (id) => containersById.get(id)?.name ?? id;
  const weights = Object.entries(listener.weights ?? {}).sort(([a], [b]) => nameOf(a).localeCompare(nameOf(b)));
  const node = h(
    "article",
    { class: "card listener", "aria-labelledby": titleId, dataset: { listener: listener.id } },
    h("h3", { id: titleId }, `${listener.service} on port ${listener.port}`),
    details([
      ["External address", h("code", { class: "external-address" }, `${listener.address}:${listener.port}`)],
      ["Protocol", listener.protocol],
      ["Algorithm", listener.algorithm.replace(/_/g, " ")],
      ["Weights", weights.length ? weights.map(([id, weight]) => `${nameOf(id)}: ${weight}`).join(", ") : "equal"],
      ["Health check", listener.health_check ? `${listener.health_check.type} ${listener.health_check.path ?? ""} every ${listener.health_check.interval_seconds}s` : "passive (connection failures)"],
    ]),
    totals,
    h("div", { class: "charts" }, rps.node, latency.node, bandwidth.node),
    h("h4", {}, "Instances"),
    instances,
    errors.node,
    h("div", { class: "actions" }, remove),
  );
  // Cancels the card's statistics calls: once the listener is being deleted they could only answer 404.
  const live = new AbortController();
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog({ title: "Delete listener?", message: `Stop serving ${listener.service} on port ${listener.port}? The containers keep running.` });
    if (!ok) return;
    stop();
    live.abort();
    try {
      await api("DELETE", `/load-balancer/listeners/${encodeURIComponent(listener.id)}`);
      announce(`Deleted the listener on port ${listener.port}.`);
      ctx.navigate("/services");
    } catch (error) {
      errors.show(error);
    }
  });
  let historyLoaded = false;
  async function loadHistory() {
    historyLoaded = true;
    const now = Date.now();
    let series;
    try {
      series = await api("GET", `/load-balancer/listeners/${encodeURIComponent(listener.id)}/stats`, {
        query: { from: new Date(now - HISTORY_MINUTES * 60_000).toISOString(), step: HISTORY_STEP_SECONDS },
        signal: live.signal,
      });
    } catch (error) {
      if (ctx.alive() && !live.signal.aborted) errors.show(error);
      return;
    }
    if (!ctx.alive()) return;
    for (const point of series.points) {
      const end = Date.parse(point.ts) + series.step * 1000;
      if (end > now) continue; // the step still filling: the live figures cover it
      rpsSeries.push(point.rps, end);
      p50.push(point.latency_ms?.p50, end);
      p95.push(point.latency_ms?.p95, end);
      p99.push(point.latency_ms?.p99, end);
      bytesIn.push(point.bytes_in / series.step, end);
      bytesOut.push(point.bytes_out / series.step, end);
    }
  }
  const stop = poll(async () => {
    if (!historyLoaded) await loadHistory();
    let stats;
    try {
      stats = await api("GET", `/load-balancer/listeners/${encodeURIComponent(listener.id)}/stats`, { signal: live.signal });
    } catch (error) {
      if (ctx.alive() && !live.signal.aborted) errors.show(error);
      return;
    }
    if (!ctx.alive() || live.signal.aborted) return;
    errors.clear();
    const now = Date.now();
    rpsSeries.push(stats.rps, now);
    p50.push(stats.latency_ms?.p50, now);
    p95.push(stats.latency_ms?.p95, now);
    p99.push(stats.latency_ms?.p99, now);
    const bytes = { at: now, in: stats.bytes_in ?? 0, out: stats.bytes_out ?? 0 };
    if (lastBytes && bytes.at > lastBytes.at && bytes.in >= lastBytes.in && bytes.out >= lastBytes.out) {
      const seconds = (bytes.at - lastBytes.at) / 1000;
      bytesIn.push((bytes.in - lastBytes.in) / seconds, now);
      bytesOut.push((bytes.out - lastBytes.out) / seconds, now);
    }
    lastBytes = bytes;
    rps.update([{ name: "RPS", points: rpsSeries.points }]);
    latency.update([{ name: "p50", points: p50.points }, { name: "p95", points: p95.points }, { name: "p99", points: p99.points }]);
    bandwidth.update([{ name: "In", points: bytesIn.points }, { name: "Out", points: bytesOut.points }]);
    totals.textContent = `${stats.requests} requests, ${stats.errors} errors, ${stats.active_connections} open connections, ${formatBytes(stats.bytes_in)} in, ${formatBytes(stats.bytes_out)} out`;
    const split = Object.entries(stats.regions || {}).map(([name, region]) => `${name}: ${region.requests} requests, ${region.healthy}/${region.instances} healthy`);
    if (split.length) totals.textContent += ` — by region: ${split.join("; ")}`;
    clear(instances).append(
      stats.instances.length
        ? table(
            `Instances of ${listener.service}`,
            ["Container", "Address", "Region", "Health", "Requests", "Errors", "Open"],
            stats.instances.map((instance) => [
              containersById.get(instance.id)?.name ?? instance.id,
              `${instance.address}:${instance.port}`,
              instance.region || "—",
              statusBadge(instance.status),
              String(instance.requests),
              String(instance.errors),
              String(instance.active_connections),
            ]),
          )
        : h("p", {}, "No instances: start containers in this service."),
    );
  });
  return { node, stop };
}
