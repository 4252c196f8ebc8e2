// Alerts: the webhooks notifications go to (a secret is sent once and never shown again), the rules that
// watch containers, services, listeners and quota use, and the history of alert episodes (pending, firing, resolved).
import { api } from "../api.js";
import { h, clear, field, table, statusBadge, formatTime } from "../dom.js";
import { confirmDialog } from "../dialog.js";
import { poll } from "../live.js";
import { announce } from "../messages.js";

// Each rule kind: what it watches (the one subject field it takes) and what its threshold means.
export const RULE_KINDS = [
  { kind: "container_unhealthy", label: "Container unhealthy", subject: "container_id" },
  { kind: "container_restarts", label: "Container restarts", subject: "container_id", threshold: { label: "More restarts than", hint: "Restarts within the window.", step: "1", max: "1000000" } },
  { kind: "service_unhealthy", label: "Service unhealthy", subject: "service" },
  { kind: "listener_error_rate", label: "Listener error rate", subject: "listener_id", threshold: { label: "Error rate above", hint: "A share from 0 to 1 (0.05 is 5%) of requests failing in the window.", step: "0.01", max: "1" } },
  { kind: "listener_latency_p95", label: "Listener p95 latency", subject: "listener_id", threshold: { label: "p95 latency above (ms)", hint: "Milliseconds, over the window.", step: "1", max: "1000000" } },
  { kind: "deploy_failed", label: "Deploy failed", subject: "service" },
  { kind: "quota_use", label: "Quota use", subject: "quota", threshold: { label: "Share of the quota at least", hint: "Above 0 and at most 1 (0.8 is 80%) of your plan's limit.", step: "0.01", min: "0.01", max: "1" }, noWindow: true },
];
// The plan's quotas a quota_use rule can watch (GET /api/billing/plan shows their limits and current use).
export const QUOTAS = [
  { quota: "max_containers", label: "Containers" },
  { quota: "max_memory_mb_total", label: "Memory in total" },
  { quota: "max_memory_mb_per_container", label: "Memory per container" },
  { quota: "max_listeners", label: "Listeners" },
  { quota: "max_image_storage_mb", label: "Image storage" },
];
const QUOTA_LABELS = new Map(QUOTAS.map((entry) => [entry.quota, entry.label]));
const KIND_BY_NAME = new Map(RULE_KINDS.map((entry) => [entry.kind, entry]));

export async function alertsPage(ctx) {
  ctx.heading("Alerts");
  const [containers, listeners] = await Promise.all([
    api("GET", "/containers", { query: { limit: 100 } }).catch(() => ({ items: [] })),
    api("GET", "/load-balancer/listeners", { query: { limit: 100 } }).catch(() => ({ items: [] })),
  ]);
  if (!ctx.alive()) return;
  const subjects = {
    containers: containers.items,
    listeners: listeners.items,
    services: [...new Set(containers.items.map((container) => container.service).filter(Boolean))].sort(),
  };
  const webhooks = webhooksSection(ctx);
  const rules = rulesSection(ctx, subjects);
  const history = historySection(ctx, rules);
  ctx.main.append(
    h("p", {}, "Rules watch your containers, services, listeners and quota use; when one fires or resolves, every webhook below gets a signed notification (see docs/ALERTS.md to verify it)."),
    webhooks.node,
    rules.node,
    history.node,
  );
  await Promise.all([webhooks.reload(), rules.reload()]);
}

function webhooksSection(ctx) {
  const errors = ctx.errorBox();
  const listErrors = ctx.errorBox();
  const url = h("input", { type: "url", name: "webhook_url", required: true, maxlength: "2048", autocomplete: "off", spellcheck: "false", placeholder: "https://hooks.example.com/berth" });
  const secret = h("input", { type: "password", name: "webhook_secret", required: true, maxlength: "256", autocomplete: "new-password" });
  const submit = h("button", { type: "submit", class: "primary" }, "Add webhook");
  const list = h("div", {}, h("p", {}, "Loading webhooks…"));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "add-webhook-title" },
    h("h3", { id: "add-webhook-title" }, "Add a webhook"),
    h("div", { class: "row" },
      field("Webhook URL", url, "Where notifications are POSTed (http or https)."),
      field("Signing secret", secret, "16 to 256 characters. Berth signs each notification with it; it is never shown again."),
    ),
    errors.node,
    h("div", { class: "actions" }, submit),
  );

  async function reload() {
    let page;
    try {
      page = await api("GET", "/alerts/webhooks", { query: { limit: 100 } });
    } catch (error) {
      if (ctx.alive()) listErrors.show(error);
      return;
    }
    if (!ctx.alive()) return;
    listErrors.clear();
    clear(list).append(
      page.items.length
        ? table(
            "Webhooks",
            ["URL", "Added", ""],
            page.items.map((hook) => [h("code", {}, hook.url), formatTime(hook.created_at), deleteButton(hook)]),
            { className: "webhooks" },
          )
        : h("p", { class: "empty" }, "No webhooks yet: add one above to be notified."),
    );
  }

  function deleteButton(hook) {
    const button = h("button", { type: "button", class: "danger small", "aria-label": `Delete webhook ${hook.url}` }, "Delete");
    button.addEventListener("click", async () => {
      const ok = await confirmDialog({ title: "Delete webhook?", message: `Stop sending notifications to ${hook.url}?` });
      if (!ok) return;
      try {
        await api("DELETE", `/alerts/webhooks/${encodeURIComponent(hook.id)}`);
        announce("Webhook deleted.");
        await reload();
      } catch (error) {
        listErrors.show(error);
      }
    });
    return button;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      const created = await api("POST", "/alerts/webhooks", { body: { url: url.value.trim(), secret: secret.value } });
      announce(`Webhook ${created.url} added.`);
      form.reset(); // the secret leaves the page with the form
      await reload();
    } catch (error) {
      errors.show(error);
    } finally {
      submit.disabled = false;
    }
  });

  const node = h("section", { "aria-labelledby": "webhooks-title" }, h("h2", { id: "webhooks-title" }, "Webhooks"), form, listErrors.node, list);
  return { node, reload };
}

function rulesSection(ctx, subjects) {
  const errors = ctx.errorBox();
  const listErrors = ctx.errorBox();
  const kind = h("select", { name: "kind" }, RULE_KINDS.map((entry) => h("option", { value: entry.kind }, entry.label)));
  const container = h("select", { name: "container_id" }, subjects.containers.map((item) => h("option", { value: item.id }, item.name)));
  const service = h("input", { type: "text", name: "service", list: "alert-services", maxlength: "63", autocomplete: "off", spellcheck: "false" });
  const serviceList = h("datalist", { id: "alert-services" }, subjects.services.map((name) => h("option", { value: name })));
  const listener = h("select", { name: "listener_id" }, subjects.listeners.map((item) => h("option", { value: item.id }, `${item.service} on port ${item.port}`)));
  const quota = h("select", { name: "quota" }, QUOTAS.map((entry) => h("option", { value: entry.quota }, entry.label)));
  const threshold = h("input", { type: "number", name: "threshold", min: "0", step: "any" });
  const windowSeconds = h("input", { type: "number", name: "window_seconds", min: "10", max: "86400", value: "300" });
  const forSeconds = h("input", { type: "number", name: "for_seconds", min: "0", max: "86400", value: "60" });
  const resolveAfter = h("input", { type: "number", name: "resolve_after_seconds", min: "0", max: "86400", value: "0" });
  const subjectFields = {
    container_id: field("Container", container, subjects.containers.length ? null : "You have no containers yet."),
    service: field("Service", service, subjects.services.length ? `Your services: ${subjects.services.join(", ")}.` : null),
    listener_id: field("Listener", listener, subjects.listeners.length ? null : "You have no listeners yet."),
    quota: field("Quota", quota, "One of your plan's quotas (the Billing page shows them)."),
  };
  const thresholdLabel = h("label", {}, "Threshold");
  const thresholdHint = h("p", { class: "hint" }, "");
  const thresholdField = field("Threshold", threshold);
  thresholdField.replaceChildren(thresholdLabel, threshold, thresholdHint);
  thresholdLabel.setAttribute("for", threshold.id);
  thresholdHint.id = `${threshold.id}-hint`;
  threshold.setAttribute("aria-describedby", thresholdHint.id);
  const windowField = field("Window (seconds)", windowSeconds, "How far back restarts, errors or latency are counted.");

  function showKind() {
    const entry = KIND_BY_NAME.get(kind.value);
    for (const [name, node] of Object.entries(subjectFields)) node.hidden = name !== entry.subject;
    thresholdField.hidden = !entry.threshold;
    windowField.hidden = !entry.threshold || Boolean(entry.noWindow);
    if (entry.threshold) {
      thresholdLabel.textContent = entry.threshold.label;
      thresholdHint.textContent = entry.threshold.hint;
      threshold.step = entry.threshold.step;
      threshold.min = entry.threshold.min ?? "0";
      threshold.max = entry.threshold.max;
    }
  }
  kind.addEventListener("change", showKind);
  showKind();

  const submit = h("button", { type: "submit", class: "primary" }, "Create rule");
  const list = h("div", {}, h("p", {}, "Loading rules…"));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-rule-title" },
    h("h3", { id: "create-rule-title" }, "Create a rule"),
    serviceList,
    h("div", { class: "row" },
      field("Kind", kind),
      subjectFields.container_id,
      subjectFields.service,
      subjectFields.listener_id,
      subjectFields.quota,
      thresholdField,
      windowField,
      field("Fire after (seconds)", forSeconds, "How long the condition must hold before notifying (0: at once)."),
      field("Resolve after (seconds)", resolveAfter, "How long it must stay clear before resolving."),
    ),
    errors.node,
    h("div", { class: "actions" }, submit),
  );

  const nameOfContainer = (id) => subjects.containers.find((item) => item.id === id)?.name ?? id;
  const nameOfListener = (id) => {
    const found = subjects.listeners.find((item) => item.id === id);
    return found ? `${found.service} on port ${found.port}` : id;
  };
  const subjectOf = (rule) =>
    rule.container_id
      ? `container ${nameOfContainer(rule.container_id)}`
      : rule.listener_id
        ? `listener ${nameOfListener(rule.listener_id)}`
        : rule.quota
          ? `quota ${QUOTA_LABELS.get(rule.quota) ?? rule.quota}`
          : `service ${rule.service}`;
  const kindLabel = (name) => KIND_BY_NAME.get(name)?.label ?? name;
  const describe = (rule) => `${kindLabel(rule.kind)} on ${subjectOf(rule)}`;
  let known = new Map();

  async function reload() {
    let page;
    try {
      page = await api("GET", "/alerts/rules", { query: { limit: 100 } });
    } catch (error) {
      if (ctx.alive()) listErrors.show(error);
      return;
    }
    if (!ctx.alive()) return;
    listErrors.clear();
    known = new Map(page.items.map((rule) => [rule.id, rule]));
    clear(list).append(
      page.items.length
        ? table(
            "Alert rules",
            ["Rule", "Threshold", "Fire after", "State", ""],
            page.items.map((rule) => [
              describe(rule),
              rule.threshold === null ? "—" : rule.quota ? `${Math.round(rule.threshold * 100)}% of the quota` : `${rule.threshold} (window ${rule.window_seconds} s)`,
              `${rule.for_seconds} s`,
              statusBadge(rule.state),
              deleteButton(rule),
            ]),
            { className: "rules" },
          )
        : h("p", { class: "empty" }, "No rules yet: create one above."),
    );
  }

  function deleteButton(rule) {
    const button = h("button", { type: "button", class: "danger small", "aria-label": `Delete rule ${describe(rule)}` }, "Delete");
    button.addEventListener("click", async () => {
      const ok = await confirmDialog({ title: "Delete rule?", message: `Delete the rule ${describe(rule)} and its alert history?` });
      if (!ok) return;
      try {
        await api("DELETE", `/alerts/rules/${encodeURIComponent(rule.id)}`);
        announce("Rule deleted.");
        await reload();
      } catch (error) {
        listErrors.show(error);
      }
    });
    return button;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const entry = KIND_BY_NAME.get(kind.value);
    const body = { kind: entry.kind, for_seconds: Number(forSeconds.value || 0), resolve_after_seconds: Number(resolveAfter.value || 0) };
    body[entry.subject] = { container_id: container.value, service: service.value.trim(), listener_id: listener.value, quota: quota.value }[entry.subject] || null;
    if (entry.threshold) {
      if (threshold.value !== "") body.threshold = Number(threshold.value);
      if (!entry.noWindow) body.window_seconds = Number(windowSeconds.value || 300);
    }
    submit.disabled = true;
    try {
      const rule = await api("POST", "/alerts/rules", { body });
      announce(`Rule created: ${describe(rule)}.`);
      await reload();
    } catch (error) {
      errors.show(error);
    } finally {
      submit.disabled = false;
    }
  });

  const node = h("section", { "aria-labelledby": "rules-title" }, h("h2", { id: "rules-title" }, "Rules"), form, listErrors.node, list);
  return { node, reload, describe: (ruleId, kindName) => (known.has(ruleId) ? describe(known.get(ruleId)) : kindLabel(kindName)) };
}

function historySection(ctx, rules) {
  const errors = ctx.errorBox();
  const state = h("select", { name: "state" }, [["", "All states"], ["pending", "Pending"], ["firing", "Firing"], ["resolved", "Resolved"]].map(([value, label]) => h("option", { value }, label)));
  const list = h("div", {}, h("p", {}, "Loading alert history…"));
  async function load() {
    let page;
    try {
      page = await api("GET", "/alerts", { query: { limit: 50, state: state.value } });
    } catch (error) {
      if (ctx.alive()) errors.show(error);
      return;
    }
    if (!ctx.alive()) return;
    errors.clear();
    clear(list).append(
      page.items.length
        ? table(
            "Alert history, newest first",
            ["State", "Rule", "Started", "Fired", "Resolved", "Summary"],
            page.items.map((alert) => [statusBadge(alert.state), rules.describe(alert.rule_id, alert.kind), formatTime(alert.started_at), formatTime(alert.fired_at), formatTime(alert.resolved_at), alert.summary]),
            { className: "alert-history" },
          )
        : h("p", { class: "empty" }, state.value ? `No ${state.value} alerts.` : "No alerts so far."),
    );
  }
  state.addEventListener("change", load);
  ctx.onLeave(poll(load, 5000));
  const node = h(
    "section",
    { "aria-labelledby": "history-title" },
    h("h2", { id: "history-title" }, "History"),
    h("div", { class: "row" }, field("Show", state)),
    errors.node,
    list,
  );
  return { node };
}
