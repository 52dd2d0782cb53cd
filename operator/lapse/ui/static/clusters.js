// The page across clusters (`kubectl lapse ui --contexts a,b` or `--all-contexts`): which
// cluster each object is in, which clusters answer, and the filter. Every object keeps its
// cluster's name, and every action sends it back, so the server acts in that cluster alone.
// On a one-cluster page none of this is drawn, except the banner when the cluster is away.
"use strict";

const fleet = () => Boolean(state.hello && state.hello.fleet);

// Two clusters may hold objects of the same name (and, in principle, uid).
const keyOf = (g) => `${g.cluster || ""}\n${g.uid}`;

// The filter narrows every list and count to one cluster; "" shows them all.
const shown = (g) => !state.filter || g.cluster === state.filter;

function away(name) {
  const cluster = state.clusters.get(name || "");
  return Boolean(cluster && cluster.state === "unreachable");
}

function clusterChip(g) {
  if (!fleet()) return null;
  return h("span", { class: `cluster${away(g.cluster) ? " away" : ""}`, "data-cluster": g.cluster, title: `in cluster ${g.cluster}` }, g.cluster);
}

// A field's id and a form's name, unique across clusters (the same name may live in two).
const suffix = (g) => (fleet() ? ` in ${g.cluster}` : "");
const idOf = (prefix, g) => (fleet() ? `${prefix}-${g.cluster}-${g.uid}` : `${prefix}-${g.uid}`);

// Why a kind cannot be listed, by cluster: the sentences a list shows instead of rows.
function refusals(kind, label) {
  const lines = [];
  for (const cluster of state.clusters.values()) {
    const why = (cluster.refused || {})[kind];
    if (!why || (state.filter && cluster.name !== state.filter)) continue;
    const where = fleet() ? ` in ${cluster.name}` : "";
    lines.push(h("p", { class: "empty" }, `${label} cannot be listed as you${where}: ${why}`));
  }
  return lines;
}

function staleNote(g) {
  if (!away(g.cluster)) return null;
  return h("p", { class: "stale-note" }, `${fleet() ? g.cluster : "The cluster"} does not answer: this is what it said last.`);
}

function banners() {
  const box = document.getElementById("banners");
  const down = [...state.clusters.values()].filter((c) => c.state === "unreachable");
  box.replaceChildren(...down.map((c) => h("p", { class: "banner", "data-unreachable": c.name || "" },
    h("strong", {}, fleet() ? `${c.name} is unreachable` : "The cluster is unreachable"),
    `: ${c.why || "no answer"}. What it said last stays shown; the page reconnects by itself.`)));
  box.hidden = !down.length;
}

const STATE_WORDS = { connected: "live", connecting: "connecting", unreachable: "unreachable" };

function clusterBar(waitingBy) {
  const bar = document.getElementById("clusters");
  bar.hidden = !fleet();
  if (!fleet()) return;
  const focused = bar.contains(document.activeElement) ? document.activeElement.dataset.filter : null;
  const chip = (name, ...content) => h("button", {
    type: "button", class: "chip", "data-filter": name, "aria-pressed": String(state.filter === name),
    onclick: () => { state.filter = name; render(false); },
  }, ...content);
  const all = [...state.clusters.values()];
  bar.replaceChildren(h("span", { class: "muted" }, "Clusters"),
    chip("", "All"),
    ...all.map((c) => chip(c.name, c.name,
      h("span", { class: `state state-${c.state}`, "data-state": c.state, title: c.why || "" }, STATE_WORDS[c.state] || c.state),
      waitingBy.get(c.name) ? h("span", { class: "count", title: "waiting for you" }, String(waitingBy.get(c.name))) : null)));
  if (focused !== null && focused !== undefined) {
    const again = bar.querySelector(`[data-filter="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

// The cluster a form acts in: the one chosen in it, else the filtered one, else the first.
function formCluster() {
  const names = [...state.clusters.keys()];
  if (state.formCluster && names.includes(state.formCluster)) return state.formCluster;
  if (state.filter) return state.filter;
  return names[0] || "";
}

function clusterField() {
  if (!fleet()) return null;
  const select = h("select", { name: "cluster", onchange: () => { state.formCluster = select.value; render(false); } },
    [...state.clusters.values()].map((c) => h("option", { value: c.name, selected: c.name === formCluster() },
      `${c.name}${c.state === "unreachable" ? " (unreachable)" : ""}`)));
  return field("Cluster", select, "where it is asked");
}

// What the forms offer, by cluster: each cluster's policies are its own.
function currentOffers() {
  return fleet() ? state.offersBy.get(formCluster()) || null : state.offers;
}

async function loadClusterOffers(name) {
  try { state.offersBy.set(name, await getJson(`api/offers?${new URLSearchParams({ cluster: name })}`)); } catch { state.offersBy.delete(name); }
  if (current.page === "ask" || current.page === "oncall") render(false);
}

function clusterNews(info) {
  const before = state.clusters.get(info.name);
  state.clusters.set(info.name, info);
  // A cluster that answers again (or for the first time) may offer the forms something.
  if (fleet() && info.state === "connected" && (!before || before.state !== "connected")) loadClusterOffers(info.name);
  if (!fleet()) state.refused = info.refused || {};
  who();
}

function who() {
  const names = [...new Set([...state.clusters.values()].filter((c) => c.me).map((c) => c.me.username))];
  const el = document.getElementById("who");
  if (!fleet()) return;
  el.textContent = names.length ? names.join(", ") : "unknown user";
  document.getElementById("scope").textContent = [...state.clusters.values()]
    .map((c) => `${c.name}: ${c.server} · ${!c.scoped ? c.state : c.namespace ? `namespace ${c.namespace}` : "all namespaces"}`).join(" | ");
}

// A form holding only the cluster picker: where a cluster offers nothing, another may.
function clusterForm(label) {
  return fleet() ? h("form", { "aria-label": label, onsubmit: (e) => e.preventDefault() }, clusterField()) : null;
}
