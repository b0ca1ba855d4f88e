// glagent's Kubernetes dashboard: an environment's overview (pods by
// phase, services, the Flux sync state and its actions, a details drawer
// with events, followed logs) and the environment form's namespace and
// Flux resource lists. Every call goes to the API server through kas's
// proxy, authenticated by the browser's session: the proxy's HttpOnly
// cookie, the agent in `Gitlab-Agent-Id` and the page's CSRF token in
// `X-Csrf-Token`. Everything stays live through Kubernetes watches; a
// watch that ends is listed and watched again.
"use strict";

class K8sError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The API server's (or kas's) message, verbatim.
const messageOf = async (response) => {
  const text = await response.text();
  try {
    const status = JSON.parse(text);
    if (status.message) return status.message;
  } catch {
    // Not a Status: the text itself.
  }
  return text || `${response.status} ${response.statusText}`;
};

const cluster = (proxy, agentId, csrf) => {
  const headers = (extra = {}) => ({
    "Gitlab-Agent-Id": agentId,
    "X-Csrf-Token": csrf,
    Accept: "application/json",
    ...extra,
  });
  const call = async (method, path, { body, contentType, signal } = {}) => {
    const response = await fetch(`${proxy}${path}`, {
      method,
      headers: headers(contentType ? { "Content-Type": contentType } : {}),
      body,
      signal,
      credentials: "same-origin",
    });
    if (!response.ok) throw new K8sError(response.status, await messageOf(response));
    return response;
  };
  // The lines of a streamed body, as they come.
  async function* lines(path, signal) {
    const response = await call("GET", path, { signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        if (line.trim() !== "") yield line;
      }
    }
    if (buffered.trim() !== "") yield buffered;
  }
  return {
    get: async (path, signal) => (await call("GET", path, { signal })).json(),
    patch: async (path, patch) =>
      (await call("PATCH", path, { body: JSON.stringify(patch), contentType: "application/merge-patch+json" })).json(),
    remove: async (path) => (await call("DELETE", path)).json(),
    lines,
    // Lists, then watches from the list's version; lists again when the
    // watch ends (the API server closes watches after a while) or fails.
    follow(path, { reset, event, state, failed }, signal) {
      const sep = path.includes("?") ? "&" : "?";
      (async () => {
        // After a failure, wait longer each time (1 s up to 30 s): a refused
        // list is not asked again every second.
        let failures = 0;
        while (!signal?.aborted) {
          try {
            state?.("Updating");
            const list = await call("GET", path, { signal }).then((r) => r.json());
            failures = 0;
            reset(list.items ?? []);
            state?.("Synced");
            let version = list.metadata?.resourceVersion ?? "";
            const watch = `${path}${sep}watch=true&allowWatchBookmarks=true&resourceVersion=${version}`;
            for await (const line of lines(watch, signal)) {
              const change = JSON.parse(line);
              if (change.type === "BOOKMARK") continue;
              if (change.type === "ERROR") break;
              event(change.type, change.object);
            }
          } catch (error) {
            if (signal?.aborted) return;
            failures += 1;
            failed?.(error);
          }
          if (signal?.aborted) return;
          state?.("Updating");
          const delay = Math.min(30000, 1000 * 2 ** Math.max(0, failures - 1));
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      })();
    },
  };
};

const element = (tag, attributes = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};

const badge = (text, kind) => element("span", { class: `badge ${kind}` }, text);

// Age as the dashboard says it: 3d, 4h, 12m, 40s.
const age = (timestamp) => {
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (seconds >= 86400) return `${Math.floor(seconds / 86400)}d`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h`;
  if (seconds >= 60) return `${Math.floor(seconds / 60)}m`;
  return `${seconds}s`;
};

// A small YAML writer for the drawer (objects as the API server sent them).
const yaml = (value, indent = "") => {
  const scalar = (v) => (typeof v === "string" ? (/^[\w./:@-]+$/.test(v) && !/^(true|false|null|[\d.]+)$/.test(v) ? v : JSON.stringify(v)) : String(v));
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return value
      .map((item) => {
        const inner = yaml(item, `${indent}  `);
        return typeof item === "object" && item !== null ? `${indent}- ${inner.trimStart()}` : `${indent}- ${inner}`;
      })
      .join("\n");
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    if (entries.length === 0) return "{}";
    return entries
      .map(([key, v]) =>
        v && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)
          ? `${indent}${key}:\n${yaml(v, `${indent}  `)}`
          : `${indent}${key}: ${yaml(v, indent)}`,
      )
      .join("\n");
  }
  return scalar(value);
};

// The Flux sync state, decided in GitLab's order; the first match wins.
const fluxState = (object) => {
  if (object?.spec?.suspend) return { state: "suspended", label: "Paused", kind: "neutral" };
  const conditions = object?.status?.conditions ?? [];
  if (conditions.length === 0) return { state: "unavailable", label: "Unavailable", kind: "neutral", message: "The Flux resource reports no conditions yet." };
  const find = (type, status) => conditions.find((c) => c.type === type && c.status === status);
  let c;
  if ((c = find("Ready", "False"))) return { state: "failed", label: "Failed", kind: "danger", message: c.message };
  if ((c = find("Stalled", "True"))) return { state: "stalled", label: "Stalled", kind: "danger", message: c.message };
  if ((c = find("Ready", "Unknown")) && c.reason === "Progressing")
    return { state: "reconcilingWithBadConfig", label: "Reconciling", kind: "info", message: c.message };
  if ((c = find("Reconciling", "True"))) return { state: "reconciling", label: "Reconciling", kind: "info", message: c.message };
  if ((c = find("Ready", "True"))) return { state: "reconciled", label: "Reconciled", kind: "success", message: c.message };
  return { state: "unknown", label: "Unknown", kind: "warning", message: "Unable to detect state." };
};

// `helm.toolkit.fluxcd.io/v2/namespaces/ns/helmreleases/name` → its
// object's path and a watchable list of just it.
const fluxPaths = (resource) => {
  const parts = resource.split("/");
  const name = parts.pop();
  const collection = `/apis/${parts.join("/")}`;
  return { object: `/apis/${resource}`, list: `${collection}?fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}` };
};

const overview = document.getElementById("k8s-overview");
if (overview) {
  const { agentId, flux, proxy, csrf } = overview.dataset;
  // GitLab's one namespace, or glagent's several.
  const namespaces = (overview.dataset.namespaces ?? "").split(",").filter((n) => n !== "");
  const api = cluster(proxy, agentId, csrf);
  // Every distinct refusal, as the API server (or kas) worded it.
  const errorBox = document.getElementById("k8s-error");
  const errors = new Set();
  const showError = (error) => {
    if (errors.has(error.message)) return;
    errors.add(error.message);
    errorBox.hidden = false;
    errorBox.append(element("div", {}, error.message));
  };
  const setBadge = (node, text, kind, state) => {
    node.className = `badge ${kind}`;
    node.textContent = text;
    if (state) node.dataset.state = state;
  };
  const dashboardState = document.getElementById("dashboard-state");
  // Synced once every list and watch of the page is.
  const streams = new Set();
  const synced = new Set();
  const state = (name) => {
    streams.add(name);
    return (stream) => {
      if (stream === "Synced") synced.add(name);
      else synced.delete(name);
      const all = synced.size === streams.size;
      setBadge(dashboardState, all ? "Synced" : "Updating", all ? "success" : "neutral");
    };
  };

  // The details drawer.
  const drawer = document.getElementById("drawer");
  let drawerAbort = null;
  const closeDrawer = () => {
    drawerAbort?.abort();
    drawerAbort = null;
    drawer.hidden = true;
  };
  document.getElementById("drawer-close").addEventListener("click", closeDrawer);
  const section = (title, ...content) => element("section", { "data-section": title }, element("h4", {}, title), ...content);
  const openDrawer = (object, { logsOf } = {}) => {
    closeDrawer();
    drawerAbort = new AbortController();
    const signal = drawerAbort.signal;
    const { metadata } = object;
    document.getElementById("drawer-title").textContent = `${object.kind ?? ""} ${metadata.name}`.trim();
    const labels = Object.entries(metadata.labels ?? {}).map(([k, v]) => badge(`${k}=${v}`, "neutral"));
    const annotations = Object.entries(metadata.annotations ?? {}).map(([k, v]) => element("div", {}, element("code", {}, `${k}: ${v}`)));
    const events = element("ol", { class: "activity", "data-events": "" });
    const body = document.getElementById("drawer-body");
    body.replaceChildren(
      section("Labels", ...(labels.length ? labels : ["None"])),
      section("Annotations", ...(annotations.length ? annotations : ["None"])),
      section("Status", element("pre", {}, yaml(object.status ?? {}))),
      section("Spec", element("details", {}, element("summary", {}, "Show the spec"), element("pre", {}, yaml(object.spec ?? {})))),
      section("Events", events),
    );
    if (logsOf) body.append(section("Containers", ...logsOf(object, signal)));
    drawer.hidden = false;
    const seen = new Map();
    const draw = () => {
      const newest = [...seen.values()].sort((a, b) => (b.lastTimestamp ?? b.eventTime ?? "").localeCompare(a.lastTimestamp ?? a.eventTime ?? ""));
      events.replaceChildren(
        ...(newest.length
          ? newest.map((e) => element("li", {}, element("span", { class: "when" }, e.lastTimestamp ? `${age(e.lastTimestamp)} ago` : ""), element("span", {}, badge(e.type ?? "Normal", e.type === "Warning" ? "warning" : "neutral"), ` ${e.reason ?? ""}: ${e.message ?? ""}`)))
          : [element("li", {}, "No events")]),
      );
    };
    const fieldSelector = encodeURIComponent(`involvedObject.name=${metadata.name}`);
    api.follow(
      `/api/v1/namespaces/${metadata.namespace}/events?fieldSelector=${fieldSelector}`,
      {
        reset: (items) => {
          seen.clear();
          items.forEach((e) => seen.set(e.metadata.uid, e));
          draw();
        },
        event: (type, e) => {
          if (type === "DELETED") seen.delete(e.metadata.uid);
          else seen.set(e.metadata.uid, e);
          draw();
        },
        failed: showError,
      },
      signal,
    );
  };

  // A container's log, followed for as long as the drawer is open.
  const logsOf = (pod, signal) =>
    (pod.spec?.containers ?? []).map((container) => {
      const out = element("pre", { class: "log", "data-log": container.name });
      const button = element("button", {
        type: "button",
        onclick: async () => {
          button.disabled = true;
          const path = `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/log?follow=true&container=${encodeURIComponent(container.name)}`;
          try {
            for await (const line of api.lines(path, signal)) {
              out.append(`${line}\n`);
              out.scrollTop = out.scrollHeight;
            }
          } catch (error) {
            if (!signal.aborted) out.append(`${error.message}\n`);
          }
        },
      }, `View logs of ${container.name}`);
      return element("div", {}, button, out);
    });

  // Flux: the sync badge and its actions.
  const fluxBadge = document.getElementById("flux-badge");
  if (flux && fluxBadge) {
    const paths = fluxPaths(flux);
    const message = document.getElementById("flux-message");
    let current = null;
    const draw = () => {
      const decided = current ? fluxState(current) : { state: "unavailable", label: "Unavailable", kind: "neutral", message: "The Flux resource does not exist." };
      setBadge(fluxBadge, decided.label, decided.kind, decided.state);
      message.textContent = decided.message ?? "";
    };
    fluxBadge.addEventListener("click", () => current && openDrawer(current));
    api.follow(
      paths.list,
      {
        reset: (items) => {
          current = items[0] ?? null;
          draw();
        },
        event: (type, object) => {
          current = type === "DELETED" ? null : object;
          draw();
        },
        state: state("flux"),
        failed: (error) => {
          setBadge(fluxBadge, "Unavailable", "neutral", "unavailable");
          message.textContent = error.message;
        },
      },
    );
    const patches = {
      reconcile: () => ({ metadata: { annotations: { "reconcile.fluxcd.io/requestedAt": new Date().toISOString() } } }),
      suspend: () => ({ spec: { suspend: true } }),
      resume: () => ({ spec: { suspend: false } }),
    };
    document.querySelectorAll("[data-flux-action]").forEach((button) =>
      button.addEventListener("click", async () => {
        try {
          await api.patch(paths.object, patches[button.dataset.fluxAction]());
        } catch (error) {
          showError(error);
        }
      }),
    );
  }

  // Pods by phase, the health, and the table.
  const podTable = document.querySelector("#pods tbody");
  if (namespaces.length && podTable) {
    const pods = new Map();
    const key = (object) => `${object.metadata.namespace}/${object.metadata.name}`;
    let filter = null;
    const health = document.getElementById("health");
    const tiles = document.querySelectorAll("#pod-phases [data-phase]");
    tiles.forEach((tile) =>
      tile.addEventListener("click", () => {
        filter = filter === tile.dataset.phase ? null : tile.dataset.phase;
        drawPods();
      }),
    );
    const drawPods = () => {
      const all = [...pods.values()].sort((a, b) => key(a).localeCompare(key(b)));
      const phase = (pod) => pod.status?.phase ?? "Pending";
      tiles.forEach((tile) => {
        tile.querySelector("[data-count]").textContent = all.filter((p) => phase(p) === tile.dataset.phase).length;
        tile.classList.toggle("active", filter === tile.dataset.phase);
      });
      document.getElementById("pod-count").textContent = all.length;
      const failed = all.some((p) => phase(p) === "Failed");
      setBadge(health, failed ? "Unhealthy" : "Healthy", failed ? "danger" : "success", failed ? "unhealthy" : "healthy");
      const kinds = { Running: "success", Pending: "warning", Succeeded: "info", Failed: "danger" };
      podTable.replaceChildren(
        ...all
          .filter((p) => !filter || phase(p) === filter)
          .map((pod) =>
            element(
              "tr",
              { class: "selectable", "data-pod": pod.metadata.name, onclick: () => openDrawer({ kind: "Pod", ...pod }, { logsOf }) },
              element("td", {}, element("strong", {}, pod.metadata.name)),
              element("td", { "data-field": "phase" }, badge(phase(pod), kinds[phase(pod)] ?? "neutral")),
              element("td", {}, pod.metadata.namespace),
              element("td", {}, age(pod.metadata.creationTimestamp)),
              element(
                "td",
                {},
                element("button", {
                  type: "button",
                  "data-delete-pod": pod.metadata.name,
                  onclick: async (event) => {
                    event.stopPropagation();
                    if (!window.confirm(`Delete pod ${pod.metadata.name}?`)) return;
                    try {
                      await api.remove(`/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`);
                    } catch (error) {
                      showError(error);
                    }
                  },
                }, "Delete pod"),
              ),
            ),
          ),
      );
    };
    // One list and watch per namespace; each keeps its own pods.
    for (const namespace of namespaces) {
      const mine = (pod) => pod.metadata.namespace === namespace;
      api.follow(`/api/v1/namespaces/${namespace}/pods`, {
        reset: (items) => {
          for (const [k, pod] of pods) if (mine(pod)) pods.delete(k);
          items.forEach((p) => pods.set(key(p), p));
          drawPods();
        },
        event: (type, pod) => {
          if (type === "DELETED") pods.delete(key(pod));
          else pods.set(key(pod), pod);
          drawPods();
        },
        state: state(`pods/${namespace}`),
        failed: (error) => {
          setBadge(health, "Unknown", "neutral", "unknown");
          showError(error);
        },
      });
    }

    const serviceTable = document.querySelector("#services tbody");
    const services = new Map();
    const drawServices = () => {
      const all = [...services.values()].sort((a, b) => key(a).localeCompare(key(b)));
      document.getElementById("service-count").textContent = all.length;
      serviceTable.replaceChildren(
        ...all.map((svc) =>
          element(
            "tr",
            { class: "selectable", "data-service": svc.metadata.name, onclick: () => openDrawer({ kind: "Service", ...svc }) },
            element("td", {}, element("strong", {}, svc.metadata.name)),
            element("td", {}, svc.metadata.namespace),
            element("td", {}, svc.spec?.type ?? ""),
            element("td", {}, svc.spec?.clusterIP ?? ""),
            element("td", {}, (svc.status?.loadBalancer?.ingress ?? []).map((i) => i.ip ?? i.hostname).join(", ") || "-"),
            element("td", {}, (svc.spec?.ports ?? []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol ?? "TCP"}`).join(", ")),
            element("td", {}, age(svc.metadata.creationTimestamp)),
          ),
        ),
      );
    };
    for (const namespace of namespaces) {
      const mine = (svc) => svc.metadata.namespace === namespace;
      api.follow(`/api/v1/namespaces/${namespace}/services`, {
        reset: (items) => {
          for (const [k, svc] of services) if (mine(svc)) services.delete(k);
          items.forEach((s) => services.set(key(s), s));
          drawServices();
        },
        event: (type, svc) => {
          if (type === "DELETED") services.delete(key(svc));
          else services.set(key(svc), svc);
          drawServices();
        },
        state: state(`services/${namespace}`),
        failed: showError,
      });
    }
  }
}

// The environment form: namespaces the user may list through the agent,
// and the Flux resources in the chosen namespace at the served versions.
const form = document.querySelector("[data-environment-form]");
if (form) {
  const { proxy, csrf } = form.dataset;
  const agent = form.querySelector("#environment-agent");
  const namespace = form.querySelector("#environment-namespace");
  const help = form.querySelector("#environment-namespace-help");
  const namespaces = form.querySelector("#environment-namespaces");
  const fluxList = form.querySelector("#environment-flux-resources");
  const options = (list, values) => list.replaceChildren(...values.map((value) => element("option", { value }, value)));
  const preferred = async (api, group) => {
    try {
      const found = await api.get(`/apis/${group}`);
      return found.preferredVersion?.version ?? null;
    } catch {
      return null;
    }
  };
  const loadNamespaces = async () => {
    options(namespaces, []);
    help.textContent = "";
    if (!agent.value) return;
    const api = cluster(proxy, agent.value, csrf);
    try {
      const list = await api.get("/api/v1/namespaces");
      options(namespaces, list.items.map((n) => n.metadata.name).sort());
    } catch (error) {
      help.textContent = `You don't have permission to view all the namespaces in the cluster; you can still enter its name. (${error.message})`;
    }
  };
  const loadFlux = async () => {
    options(fluxList, []);
    if (!agent.value || !namespace.value) return;
    const api = cluster(proxy, agent.value, csrf);
    const found = [];
    for (const [group, plural] of [
      ["kustomize.toolkit.fluxcd.io", "kustomizations"],
      ["helm.toolkit.fluxcd.io", "helmreleases"],
    ]) {
      const version = await preferred(api, group);
      if (!version) continue;
      try {
        const list = await api.get(`/apis/${group}/${version}/namespaces/${namespace.value}/${plural}`);
        for (const item of list.items) found.push(`${group}/${version}/namespaces/${namespace.value}/${plural}/${item.metadata.name}`);
      } catch {
        // Not allowed to list them here: the path can still be typed.
      }
    }
    options(fluxList, found);
  };
  agent.addEventListener("change", () => {
    loadNamespaces();
    loadFlux();
  });
  namespace.addEventListener("change", loadFlux);
  loadNamespaces();
  loadFlux();
}
