// Images: upload a `docker save` archive straight to storage (presigned POST, with progress), follow its
// processing, then read the inspection, the scan findings by severity and the optimisation report.
import { api, uploadFile } from "../api.js";
import { h, clear, field, details, table, statusBadge, formatBytes, formatTime } from "../dom.js";
import { confirmDialog } from "../dialog.js";
import { poll } from "../live.js";
import { announce } from "../messages.js";

const FINAL = new Set(["ready", "rejected", "failed"]);
const SEVERITIES = ["critical", "high", "medium", "low", "info"];
const ARCHIVE_HINT = "Check the file is a `docker save` archive (docker save my/app:1 > app.tar) and upload again.";

/** A Docker-style name from a file name: "My App_v2.tar" -> "my-app_v2". */
function nameFromFile(fileName) {
  const base = fileName.replace(/\.(tar|tar\.gz|tgz)$/i, "").toLowerCase();
  const cleaned = base.replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return cleaned || "image";
}

export async function imagesPage(ctx) {
  ctx.heading("Images");
  ctx.main.append(uploadForm(ctx));
  const listErrors = ctx.errorBox();
  const list = h("div", { class: "list", "aria-busy": "true" }, h("p", {}, "Loading images…"));
  ctx.main.append(h("section", { "aria-labelledby": "images-list-title" }, h("h2", { id: "images-list-title" }, "Your images"), listErrors.node, list));

  const stop = poll(async () => {
    try {
      const page = await api("GET", "/images", { query: { limit: 100 } });
      if (!ctx.alive()) return;
      listErrors.clear();
      list.removeAttribute("aria-busy");
      clear(list);
      if (page.items.length === 0) {
        list.append(h("p", { class: "empty" }, "No images yet: upload a `docker save` archive above."));
        return;
      }
      list.append(
        table(
          "Images and their processing status",
          ["Image", "Status", "Size", "Uploaded"],
          page.items.map((image) => [
            h("a", { href: `#/images/${encodeURIComponent(image.id)}` }, `${image.name}:${image.tag}`),
            statusBadge(image.status),
            formatBytes(image.size_bytes ?? image.upload_bytes),
            formatTime(image.created_at),
          ]),
        ),
      );
    } catch (error) {
      if (ctx.alive()) listErrors.show(error);
    }
  });
  ctx.onLeave(stop);
}

function uploadForm(ctx) {
  const errors = ctx.errorBox();
  const file = h("input", { type: "file", name: "archive", accept: ".tar,application/x-tar", required: true });
  const name = h("input", { type: "text", name: "name", required: true, autocomplete: "off", spellcheck: "false", pattern: "[a-z0-9]+([._\\-]+[a-z0-9]+)*(/[a-z0-9]+([._\\-]+[a-z0-9]+)*)*" });
  const tag = h("input", { type: "text", name: "tag", value: "latest", required: true, autocomplete: "off", spellcheck: "false" });
  const progress = h("progress", { max: "100", value: "0", "aria-label": "Upload progress" });
  const progressText = h("span", { class: "progress-text" }, "");
  const progressRow = h("div", { class: "progress-row", hidden: true }, progress, progressText);
  const submit = h("button", { type: "submit", class: "primary" }, "Upload image");

  file.addEventListener("change", () => {
    if (file.files[0] && !name.value) name.value = nameFromFile(file.files[0].name);
  });

  const form = h(
    "form",
    { class: "card", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload an image"),
    field("Image archive (docker save)", file, "A .tar file made by `docker save`; it goes straight to storage."),
    h("div", { class: "row" }, field("Name", name, "Lower-case letters, digits and . _ - (like a Docker name)."), field("Tag", tag)),
    progressRow,
    errors.node,
    h("div", { class: "actions" }, submit),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    const archive = file.files[0];
    if (!archive) {
      errors.show({ status: 400, code: "no_file", message: "Choose an image archive first." }, "Pick the .tar file `docker save` wrote, then upload.");
      file.focus();
      return;
    }
    submit.disabled = true;
    progressRow.hidden = false;
    progress.value = 0;
    progressText.textContent = "Creating the image…";
    let stage = "create";
    try {
      const image = await api("POST", "/images", { body: { name: name.value.trim(), tag: tag.value.trim() || "latest" } });
      stage = "upload";
      await uploadFile(image.upload, archive, (loaded, total) => {
        const percent = total ? Math.floor((loaded / total) * 100) : 0;
        progress.value = percent;
        progressText.textContent = `Uploading: ${percent}% (${formatBytes(loaded)} of ${formatBytes(total)})`;
      });
      stage = "complete";
      progressText.textContent = "Uploaded; starting processing…";
      await api("POST", `/images/${encodeURIComponent(image.id)}/complete`);
      announce(`Uploaded ${image.name}:${image.tag}; Berth is processing it.`);
      ctx.navigate(`/images/${encodeURIComponent(image.id)}`);
    } catch (error) {
      if (!ctx.alive()) return;
      progressRow.hidden = true;
      const next = {
        create: undefined,
        upload: error.code === "upload_network_error" ? undefined : ARCHIVE_HINT,
        complete: ARCHIVE_HINT,
      }[stage];
      errors.show(error, next);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function imageDetailPage(ctx) {
  const [imageId] = ctx.params;
  const heading = ctx.heading("Image");
  const errors = ctx.errorBox();
  const statusArea = h("section", { class: "card", "aria-labelledby": "image-status-title" });
  const reports = h("div", { class: "reports" });
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete image");
  ctx.main.append(
    h("p", {}, h("a", { href: "#/images" }, "← All images")),
    errors.node,
    statusArea,
    reports,
    h("div", { class: "actions" }, deleteButton),
  );

  let image = null;
  let lastRendered = "";
  deleteButton.addEventListener("click", async () => {
    const label = image ? `${image.name}:${image.tag}` : "this image";
    const ok = await confirmDialog({ title: "Delete image?", message: `Delete ${label}? Containers can no longer be created from it.` });
    if (!ok) return;
    try {
      await api("DELETE", `/images/${encodeURIComponent(imageId)}`);
      announce(`Deleted ${label}.`);
      ctx.navigate("/images");
    } catch (error) {
      errors.show(error, error.status === 409 ? "Delete the containers that use this image first, then try again." : undefined);
    }
  });

  const stop = poll(async () => {
    try {
      image = await api("GET", `/images/${encodeURIComponent(imageId)}`);
    } catch (error) {
      if (ctx.alive()) errors.show(error);
      return;
    }
    if (!ctx.alive()) return;
    errors.clear();
    heading.textContent = `Image ${image.name}:${image.tag}`;
    document.title = `Image ${image.name}:${image.tag} · Berth`;
    renderStatus(statusArea, image);
    const key = `${image.status}:${image.updated_at}`;
    if (key !== lastRendered) {
      lastRendered = key;
      clear(reports);
      if (image.status === "ready") {
        reports.append(
          h("p", {}, h("a", { href: `#/containers?image=${encodeURIComponent(image.id)}`, class: "button-link" }, "Run a container from this image")),
          inspection(image),
          findings(image),
          optimisation(image),
        );
      }
    }
    if (FINAL.has(image.status)) stop();
  });
  ctx.onLeave(stop);
}

function renderStatus(area, image) {
  clear(area);
  const progress = image.progress;
  area.append(
    h("h2", { id: "image-status-title" }, "Status"),
    h("p", { class: "image-status" }, statusBadge(image.status), progress && !FINAL.has(image.status) ? ` ${progress.stage} (${progress.percent}%)` : ""),
  );
  if (progress && !FINAL.has(image.status)) {
    area.append(h("progress", { max: "100", value: String(progress.percent ?? 0), "aria-label": `Processing: ${progress.stage}` }));
  }
  if (image.status === "pending_upload") {
    area.append(h("p", {}, "Waiting for the archive: upload it from the Images page."));
  }
  if (image.status === "rejected" || image.status === "failed") {
    area.append(
      h("div", { class: "error-box", role: "alert" },
        h("p", {}, h("strong", {}, image.status === "rejected" ? "Rejected: " : "Failed: "), image.reason ?? "no reason given"),
        h("p", {}, image.status === "rejected" ? ARCHIVE_HINT : "Upload the archive again; if it fails again, quote this image's id to your administrator: " + image.id),
      ),
    );
  }
}

function inspection(image) {
  const list = (values) => (values && values.length ? values.join(" ") : "—");
  return h(
    "section",
    { class: "card", "aria-labelledby": "inspection-title" },
    h("h2", { id: "inspection-title" }, "Inspection"),
    details([
      ["Size", formatBytes(image.size_bytes)],
      ["Layers", String(image.layers?.length ?? 0)],
      ["Platform", `${image.os ?? "?"}/${image.architecture ?? "?"}`],
      ["Exposed ports", list(image.exposed_ports)],
      ["Entrypoint", list(image.entrypoint)],
      ["Command", list(image.cmd)],
      ["Working directory", image.working_dir || "—"],
      ["User", image.user || "root (not set)"],
      ["Environment variables", list(image.env_names)],
    ]),
    image.layers?.length
      ? table("Layers", ["#", "Size", "Files", "Digest"], image.layers.map((layer, index) => [String(index + 1), formatBytes(layer.size_bytes), String(layer.files ?? "—"), h("code", {}, String(layer.digest ?? "").slice(0, 19))]))
      : null,
  );
}

function findings(image) {
  const all = image.scan?.findings ?? [];
  const section = h("section", { class: "card", "aria-labelledby": "findings-title" }, h("h2", { id: "findings-title" }, `Scan findings (${all.length})`));
  if (all.length === 0) {
    section.append(h("p", {}, "No findings: no secrets, setuid binaries or root user detected."));
    return section;
  }
  const known = SEVERITIES.filter((severity) => all.some((finding) => finding.severity === severity));
  const others = [...new Set(all.map((finding) => finding.severity))].filter((severity) => !SEVERITIES.includes(severity));
  for (const severity of [...known, ...others]) {
    const group = all.filter((finding) => finding.severity === severity);
    section.append(
      h("h3", { class: `severity severity-${severity.replace(/[^a-z]/g, "")}` }, `${severity[0].toUpperCase()}${severity.slice(1)} (${group.length})`),
      h("ul", { class: "findings", dataset: { severity } }, group.map((finding) => h("li", {}, h("code", {}, finding.path), ` ${finding.kind}: ${finding.detail}`))),
    );
  }
  return section;
}

function optimisation(image) {
  const report = image.optimization;
  const section = h("section", { class: "card", "aria-labelledby": "optimisation-title" }, h("h2", { id: "optimisation-title" }, "Optimisation"));
  if (!report) {
    section.append(h("p", {}, "No optimisation report."));
    return section;
  }
  section.append(
    details([
      ["Wasted space", `${formatBytes(report.wasted_bytes)} (files overwritten or deleted by later layers)`],
      ["Efficiency", `${(report.efficiency * 100).toFixed(1)}%`],
    ]),
  );
  if (report.largest_files?.length) {
    section.append(table("Largest files", ["Path", "Size", "Layer"], report.largest_files.map((file) => [h("code", {}, String(file.path)), formatBytes(file.size_bytes), String(file.layer ?? "—")])));
  }
  return section;
}
