// Service discovery: namespaces and the services registered in them, with each instance's health.
import { api } from "../api.js";
import { h, clear, table, statusBadge } from "../dom.js";
import { poll } from "../live.js";

export async function discoveryPage(ctx) {
  ctx.heading("Service discovery");
  const errors = ctx.errorBox();
  const namespaces = h("div", {}, h("p", {}, "Loading namespaces…"));
  const services = h("div", {}, h("p", {}, "Loading services…"));
  ctx.main.append(
    h("p", {}, "What other containers find when they look a service up by name, and whether each instance passes its health check."),
    errors.node,
    h("section", { "aria-labelledby": "namespaces-title" }, h("h2", { id: "namespaces-title" }, "Namespaces"), namespaces),
    h("section", { "aria-labelledby": "services-title" }, h("h2", { id: "services-title" }, "Services"), services),
  );
  ctx.onLeave(
    poll(async () => {
      try {
        const [spaces, found] = await Promise.all([api("GET", "/service-discovery/namespaces"), api("GET", "/service-discovery/services")]);
        if (!ctx.alive()) return;
        errors.clear();
        clear(namespaces).append(
          spaces.items.length
            ? table("Namespaces", ["Name", "Description", "Services"], spaces.items.map((space) => [space.name, space.description || "—", String(space.services)]))
            : h("p", { class: "empty" }, "No namespaces yet."),
        );
        clear(services);
        if (found.items.length === 0) {
          services.append(h("p", { class: "empty" }, "No services registered: containers with a service name appear here once they run."));
          return;
        }
        for (const service of found.items) {
          services.append(
            h(
              "article",
              { class: "card" },
              h("h3", {}, `${service.name} (${service.namespace})`),
              service.dns_name
                ? h("p", { class: "dns-name" }, "Private DNS name: ", h("code", {}, service.dns_name), service.namespace === "client-containers" ? " (inside your containers on the same host)" : "")
                : null,
              service.instances.length
                ? table(
                    `Instances of ${service.name}`,
                    ["Instance", "Address", "Region", "Health", "Check output"],
                    service.instances.map((instance) => [instance.id, `${instance.address}:${instance.port}`, instance.region || "—", statusBadge(instance.status), instance.output || "—"]),
                  )
                : h("p", {}, "No instances."),
            ),
          );
        }
      } catch (error) {
        if (ctx.alive()) errors.show(error);
      }
    }, 4000),
  );
}
