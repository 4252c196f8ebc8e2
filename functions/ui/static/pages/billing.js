// Billing: usage of each meter per day, the plan's quotas against what is in use, invoices and their lines,
// and a CSV download of the usage. Money comes from the API in integer minor units of the currency (cents)
// and is only formatted here, never computed in floating point beyond display.
import { api } from "../api.js";
import { h, clear, table, details, statusBadge, formatTime } from "../dom.js";
import { lineChart } from "../chart.js";

const USAGE_DAYS = 30;

// What each meter measures, in words (shared/billing/meters.py names them).
const METER_WORDS = {
  cpu_seconds: "CPU time",
  memory_gib_seconds: "Memory reserved",
  egress_bytes: "Network egress",
  replica_seconds: "Replica time",
  image_storage_gib_hours: "Image storage",
  listener_requests: "Listener requests",
  listener_egress_bytes: "Listener data out",
  listener_ingress_bytes: "Listener data in",
};

// Each quota of the plan, what of the usage it limits, and its unit.
const QUOTAS = [
  ["max_containers", "containers", "Containers", ""],
  ["max_memory_mb_total", "memory_mb_total", "Memory in total", " MB"],
  ["max_memory_mb_per_container", null, "Memory per container", " MB"],
  ["max_listeners", "listeners", "Listeners", ""],
  ["max_image_storage_mb", "image_storage_mb", "Image storage", " MB"],
];

export function meterName(meter) {
  return METER_WORDS[meter] ?? String(meter).replaceAll("_", " ");
}

function fractionDigits(currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

/** Integer minor units (or an exact decimal string of them) as money: formatMoney(1234, "USD") -> "$12.34". */
export function formatMoney(minor, currency, extraDigits = 0) {
  const digits = fractionDigits(currency);
  const value = Number(minor) / 10 ** digits;
  try {
    return new Intl.NumberFormat(undefined, {
      style: "currency",
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits + extraDigits,
    }).format(value);
  } catch {
    return `${value.toFixed(digits)} ${currency}`;
  }
}

function formatQuantity(quantity, unit) {
  const text = Number(quantity).toLocaleString(undefined, { maximumFractionDigits: 3 });
  return unit ? `${text} ${unit}` : text;
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export async function billingPage(ctx) {
  ctx.heading("Billing");
  const errors = ctx.errorBox();
  const planBox = h("div", {}, h("p", {}, "Loading your plan…"));
  const usageBox = h("div", {}, h("p", {}, "Loading usage…"));
  const invoicesBox = h("div", {}, h("p", {}, "Loading invoices…"));
  const download = h("a", { href: "#/billing", class: "button secondary", "data-download": "usage-csv" }, "Download usage (CSV)");
  ctx.main.append(
    h("p", {}, "What your plan allows, what you use, and what it costs. Usage is metered in windows a few minutes after the fact."),
    errors.node,
    h("section", { class: "card", "aria-labelledby": "plan-title" }, h("h2", { id: "plan-title" }, "Plan and quotas"), planBox),
    h(
      "section",
      { class: "card", "aria-labelledby": "usage-title" },
      h("h2", { id: "usage-title" }, `Usage per day (last ${USAGE_DAYS} days)`),
      usageBox,
      h("div", { class: "actions" }, download),
    ),
    h("section", { class: "card", "aria-labelledby": "invoices-title" }, h("h2", { id: "invoices-title" }, "Invoices"), invoicesBox),
  );
  const from = isoDay(new Date(Date.now() - USAGE_DAYS * 86400_000));
  download.addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      const blob = await api("GET", "/billing/usage", { query: { from, group_by: "day", format: "csv" }, accept: "text/csv" });
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: `berth-usage-${from}.csv`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      if (ctx.alive()) errors.show(error);
    }
  });

  const [plan, usage, invoices] = await Promise.allSettled([
    api("GET", "/billing/plan"),
    api("GET", "/billing/usage", { query: { from, group_by: "day" } }),
    api("GET", "/billing/invoices"),
  ]);
  if (!ctx.alive()) return;
  const failed = [plan, usage, invoices].find((result) => result.status === "rejected");
  if (failed) errors.show(failed.reason);
  if (plan.status === "fulfilled") renderPlan(planBox, plan.value);
  else clear(planBox);
  if (usage.status === "fulfilled") renderUsage(usageBox, usage.value);
  else clear(usageBox);
  if (invoices.status === "fulfilled") renderInvoices(invoicesBox, invoices.value.items);
  else clear(invoicesBox);
}

function renderPlan(box, { plan, usage, suspended }) {
  const rows = QUOTAS.map(([quota, used, label, unit]) => {
    const limit = plan.quotas[quota];
    if (used === null) return [label, "—", `${limit}${unit}`, "—"];
    const inUse = usage[used];
    const share = limit > 0 ? Math.min(100, Math.round((inUse / limit) * 100)) : 100;
    const bar = h("progress", { max: "100", value: String(share), "aria-label": `${label}: ${inUse} of ${limit}${unit} used` });
    return [label, `${inUse}${unit}`, `${limit}${unit}`, h("span", { class: "quota-use" }, bar, ` ${share}%`)];
  });
  const pairs = [
    ["Plan", h("strong", { class: "plan-name" }, plan.name)],
    ["Currency", plan.currency],
  ];
  if (plan.api_requests_per_minute !== undefined) {
    pairs.push(["API requests", plan.api_requests_per_minute === null ? "the API's default limit" : `up to ${plan.api_requests_per_minute} per minute`]);
  }
  if (suspended) pairs.push(["Account", statusBadge("suspended")]);
  const prices = Object.entries(plan.unit_prices).map(([meter, price]) => [
    meterName(meter),
    `${formatMoney(price, plan.currency, 4)} per ${plan.price_units[meter] ?? "unit"}`,
  ]);
  clear(box).append(
    details(pairs),
    table("Quotas: what your plan allows and what you use now", ["Quota", "In use", "Limit", "Used"], rows, { className: "quotas" }),
    h("h3", {}, "Prices"),
    table("Unit prices of your plan", ["Meter", "Price"], prices, { className: "prices" }),
  );
}

function renderUsage(box, report) {
  clear(box);
  if (report.items.length === 0) {
    box.append(h("p", { class: "empty" }, "No usage metered yet in this range."));
    return;
  }
  const byMeter = new Map();
  for (const item of report.items) {
    if (!byMeter.has(item.meter)) byMeter.set(item.meter, { unit: item.unit, points: [] });
    byMeter.get(item.meter).points.push([Date.parse(`${item.day}T00:00:00Z`), Number(item.quantity)]);
  }
  const charts = h("div", { class: "charts" });
  for (const [meter, { unit, points }] of byMeter) {
    points.sort(([a], [b]) => a - b);
    const chart = lineChart({
      title: meterName(meter),
      metric: meter,
      format: (value) => formatQuantity(value, unit),
      timeLabel: (t) => new Date(t).toLocaleDateString(undefined, { timeZone: "UTC" }),
    });
    chart.update([{ name: "per day", points }]);
    charts.append(chart.node);
  }
  box.append(charts);
}

function renderInvoices(box, items) {
  clear(box);
  if (items.length === 0) {
    box.append(h("p", { class: "empty" }, "No invoices yet."));
    return;
  }
  box.append(
    table(
      "Your invoices, newest first",
      ["Period", "Kind", "Status", "Total", ""],
      items.map((invoice) => [
        invoice.period,
        invoice.kind,
        statusBadge(invoice.status),
        formatMoney(invoice.total, invoice.currency),
        h("a", { href: `#/billing/invoices/${encodeURIComponent(invoice.id)}`, "aria-label": `Invoice of ${invoice.period} (${invoice.status})` }, "Details"),
      ]),
      { className: "invoices" },
    ),
  );
}

export async function invoicePage(ctx) {
  const [invoiceId] = ctx.params;
  const heading = ctx.heading("Invoice");
  const errors = ctx.errorBox();
  ctx.main.append(errors.node);
  const invoice = await api("GET", `/billing/invoices/${encodeURIComponent(invoiceId)}`);
  if (!ctx.alive()) return;
  heading.textContent = `Invoice ${invoice.period} (${invoice.status})`;
  document.title = `${heading.textContent} · Berth`;
  const money = (minor, extra = 0) => formatMoney(minor, invoice.currency, extra);
  const lines = invoice.lines.map((line) => [
    meterName(line.meter),
    formatQuantity(line.quantity, line.unit),
    `${money(line.unit_price, 4)} per ${line.price_unit}`,
    money(line.amount),
  ]);
  const totalRow = h("p", { class: "invoice-total" }, h("strong", {}, "Total: "), money(invoice.total));
  ctx.main.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "invoice-title" },
      h("h2", { id: "invoice-title" }, "Summary"),
      details([
        ["Period", `${formatTime(invoice.period_start)} – ${formatTime(invoice.period_end)}`],
        ["Kind", invoice.kind],
        ["Status", statusBadge(invoice.status)],
        ["Plan", invoice.plan],
        ["Finalized", invoice.finalized_at ? formatTime(invoice.finalized_at) : "not yet (a draft changes as usage is metered)"],
      ]),
      lines.length
        ? table("Invoice lines", ["Meter", "Quantity", "Unit price", "Amount"], lines, { className: "invoice-lines" })
        : h("p", { class: "empty" }, "No usage billed on this invoice yet."),
      totalRow,
      h("p", {}, "Each line is rounded half up to the currency's smallest unit; the total is the sum of the lines."),
      h("p", {}, h("a", { href: "#/billing" }, "Back to billing")),
    ),
  );
}
