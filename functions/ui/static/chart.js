// Small SVG line charts drawn by hand: one <figure> per metric, redrawn in place on each poll. The SVG
// has a text alternative (role=img + aria-label) and the latest value is printed beside it.
import { h, clear } from "./dom.js";

const WIDTH = 320;
const HEIGHT = 120;
const PAD = { top: 8, right: 8, bottom: 18, left: 62 };

/**
 * A chart for ``metric``: chart.update([{name, points: [[timeMs, value], ...]}]) redraws it.
 * ``format(value)`` turns a value into text with its unit.
 */
export function lineChart({ title, metric, format = (value) => String(value), timeLabel = (t) => new Date(t).toLocaleTimeString() }) {
  const svg = h("svg:svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart-svg" });
  const latest = h("p", { class: "chart-latest", dataset: { metric } }, "No data yet");
  const legend = h("ul", { class: "chart-legend" });
  const figure = h("figure", { class: "chart", dataset: { metric } }, h("figcaption", {}, title), svg, latest, legend);
  svg.setAttribute("aria-label", `${title}: no data yet`);

  function update(series) {
    clear(svg);
    clear(legend);
    const all = series.flatMap((line) => line.points);
    if (all.length === 0) {
      latest.textContent = "No data yet";
      svg.setAttribute("aria-label", `${title}: no data yet`);
      return;
    }
    const times = all.map(([t]) => t);
    const values = all.map(([, v]) => v);
    const t0 = Math.min(...times);
    const t1 = Math.max(...times, t0 + 1);
    const vMax = Math.max(...values, 0) || 1;
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
    const y = (v) => HEIGHT - PAD.bottom - (v / vMax) * (HEIGHT - PAD.top - PAD.bottom);

    svg.append(
      h("svg:line", { x1: PAD.left, y1: y(0), x2: WIDTH - PAD.right, y2: y(0), class: "axis" }),
      h("svg:line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: y(0), class: "axis" }),
      axisLabel(PAD.left - 4, PAD.top + 8, format(vMax), "end"),
      axisLabel(PAD.left - 4, y(0), format(0), "end"),
      axisLabel(WIDTH - PAD.right, HEIGHT - 4, timeLabel(t1), "end"),
      axisLabel(PAD.left, HEIGHT - 4, timeLabel(t0), "start"),
    );
    const summaries = [];
    series.forEach((line, index) => {
      if (line.points.length === 0) return;
      const path = line.points.map(([t, v], i) => `${i === 0 ? "M" : "L"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      svg.append(h("svg:path", { d: path, class: `series series-${index}` }));
      if (line.points.length === 1) {
        const [[t, v]] = line.points;
        svg.append(h("svg:circle", { cx: x(t), cy: y(v), r: 2.5, class: `dot series-${index}` }));
      }
      const last = line.points[line.points.length - 1][1];
      summaries.push(`${line.name} ${format(last)}`);
      legend.append(h("li", { class: `legend-${index}` }, h("span", { class: `swatch series-${index}`, "aria-hidden": "true" }), `${line.name}: ${format(last)}`));
    });
    latest.textContent = `Now: ${summaries.join(", ")}`;
    svg.setAttribute("aria-label", `${title}, ${all.length} samples; now ${summaries.join(", ")}`);
  }

  return { node: figure, update };
}

function axisLabel(x, y, text, anchor) {
  return h("svg:text", { x, y, "text-anchor": anchor, class: "axis-label" }, text);
}

/** A rolling window of [timeMs, value] points for charts fed by polling a point-in-time value. */
export function rollingSeries(limit = 90) {
  const points = [];
  return {
    points,
    push(value, at = Date.now()) {
      if (value === null || value === undefined || Number.isNaN(Number(value))) return;
      points.push([at, Number(value)]);
      if (points.length > limit) points.splice(0, points.length - limit);
    },
  };
}
