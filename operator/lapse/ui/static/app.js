// Lapse's page: lists that follow the API live, countdowns that tick, forms that act as you.
// No build step and no dependency: the server's event stream feeds `grants`; every action is
// one POST that the server turns into the same API request kubectl lapse sends.
"use strict";

const state = {
  me: null, grants: new Map(), offset: 0, refused: {}, offers: null, hello: null,
  // Across clusters (clusters.js): each cluster's news, the filter, each cluster's offers.
  clusters: new Map(), filter: "", formCluster: "", offersBy: new Map(),
};
const ENDED = new Set(["Expired", "Denied", "Revoked", "Invalid"]);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const now = () => Date.now() + state.offset;
const syncClock = (iso) => { if (iso) state.offset = Date.parse(iso) - Date.now(); };

function span(ms) {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d${hr}h`;
  if (hr) return `${hr}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

// A countdown: the element keeps its target and the ticker rewrites it four times a second.
function countdown(iso, phase, label) {
  if (!iso || ENDED.has(phase)) return h("span", { class: "muted" }, phase === "Expired" ? "expired" : "—");
  return h("span", { class: "left", "data-until": iso, "data-label": label || "" }, "");
}

function tick() {
  for (const el of document.querySelectorAll("[data-until]")) {
    const left = Date.parse(el.dataset.until) - now();
    el.textContent = left > 0 ? `${el.dataset.label}${span(left)}` : "lapsing…";
  }
}

function phaseBadge(phase) {
  return h("span", { class: `phase phase-${phase}`, "data-phase": phase }, phase);
}

function where(g) {
  if (g.kind === "AccessRequest") return g.namespace;
  return g.namespaces && g.namespaces.length ? g.namespaces.join(", ") : "cluster-wide";
}

function storyHref(g) {
  const kind = g.kind === "BreakGlass" ? "bg" : "ar";
  const there = fleet() && g.cluster ? `/${encodeURIComponent(g.cluster)}` : "";
  return `#/grant/${kind}/${encodeURIComponent(g.namespace || "-")}/${encodeURIComponent(g.name)}${there}`;
}

function notice(text, kind) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = kind || "error";
  box.hidden = !text;
}

async function post(path, body) {
  const response = await fetch(`api/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(answer.error || `${response.status}`);
  return answer;
}

async function getJson(path) {
  const response = await fetch(path);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `${response.status}`);
  return answer;
}

// A button that sends one action, shows the API's answer, and cannot be sent twice at once.
async function perform(button, work, done) {
  button.disabled = true;
  try {
    const result = await work();
    notice(done || "Done.", "info");
    return result;
  } catch (error) {
    notice(error.message, "error");
    return null;
  } finally {
    button.disabled = false;
  }
}

function act(g, action, message, verdict) {
  return post("act", { action, kind: g.kind, namespace: g.namespace, name: g.name, message, verdict, cluster: g.cluster });
}

// ---- pages ----------------------------------------------------------------------------------

function grantsWhere(test) {
  return [...state.grants.values()].filter((g) => shown(g) && test(g)).sort((a, b) => (b.created || "").localeCompare(a.created || ""));
}

function table(rows, columns) {
  if (!rows.length) return null;
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c[0])))),
    h("tbody", {}, rows.map((g) => h("tr", { "data-name": g.name, "data-kind": g.kind, "data-cluster": fleet() ? g.cluster : null, class: away(g.cluster) ? "stale" : null },
      columns.map((c) => h("td", {}, c[1](g)))))));
}

// Across clusters, a table says where each row is.
const withCluster = (columns) => (fleet() ? [columns[0], ["Cluster", clusterChip], ...columns.slice(1)] : columns);

const nameCell = (g) => h("a", { href: storyHref(g) }, g.name);

function mine() {
  const rows = grantsWhere((g) => g.mine);
  return [
    h("h1", {}, "My access"),
    refusals("AccessRequest", "Access requests"),
    table(rows, withCluster([
      ["Name", nameCell], ["Kind", (g) => g.kind], ["Role", (g) => g.role], ["Where", where],
      ["State", (g) => phaseBadge(g.phase)], ["Time left", (g) => countdown(g.expiresAt, g.phase)],
      ["Reason", (g) => g.justification], ["Ticket / incident", (g) => g.ticket || g.incident || ""],
    ])) || h("p", { class: "empty" }, "Nothing yet. ", h("a", { href: "#/ask" }, "Ask for access"), "."),
  ];
}

function riskBlock(g) {
  if (!g.risk && !(g.capabilities || []).length) return null;
  return h("div", { class: "risk", "data-risk": "" },
    h("strong", {}, "What it gives: "), g.risk || "",
    (g.capabilities || []).length ? h("div", { class: "caps" }, g.capabilities.map((c) => h("span", {}, c))) : null);
}

function decisionForm(g) {
  const id = idOf("msg", g);
  const message = h("textarea", { id, name: "message", placeholder: "A message for the requester (required to deny)" });
  const approve = h("button", { type: "button", disabled: away(g.cluster), onclick: () => perform(approve, () => act(g, "approve", message.value), `${g.name} approved.`) }, "Approve");
  const deny = h("button", { type: "button", class: "danger", disabled: away(g.cluster), onclick: () => perform(deny, () => act(g, "deny", message.value), `${g.name} denied.`) }, "Deny");
  return h("form", { onsubmit: (e) => e.preventDefault(), "aria-label": `Decide on ${g.name}${suffix(g)}` },
    h("label", { for: id }, "Message"), message, h("div", { class: "buttons" }, approve, deny));
}

function summary(g) {
  return h("dl", {},
    h("dt", {}, "Requester"), h("dd", {}, g.requester || "—"),
    h("dt", {}, "Role"), h("dd", {}, g.role),
    h("dt", {}, "Where"), h("dd", {}, where(g)),
    h("dt", {}, "For"), h("dd", {}, g.duration || "the policy's default"),
    h("dt", {}, "Reason"), h("dd", {}, g.justification),
    g.ticket ? [h("dt", {}, "Ticket"), h("dd", {}, g.ticket)] : null,
    g.incident ? [h("dt", {}, "Incident"), h("dd", {}, g.incident)] : null,
    g.kind === "AccessRequest" && g.approval === "Approvers"
      ? [h("dt", {}, "Approvals"), h("dd", {}, `${g.approvals.filter((a) => a.decision === "Approve").length} of ${g.required}`)] : null,
    g.deadline && g.phase === "Pending" ? [h("dt", {}, "Decide within"), h("dd", {}, countdown(g.deadline, g.phase))] : null,
  );
}

function waiting() {
  const rows = grantsWhere((g) => g.waitsForMe);
  return [
    h("h1", {}, "Waiting for me"),
    rows.length
      ? h("div", { class: "cards" }, rows.map((g) => h("section", { class: `card${away(g.cluster) ? " stale" : ""}`, "data-name": g.name, "data-cluster": fleet() ? g.cluster : null, "aria-label": `${g.name}${suffix(g)}` },
          h("h3", {}, clusterChip(g), fleet() ? " " : null, h("a", { href: storyHref(g) }, `${g.namespace}/${g.name}`), " ", phaseBadge(g.phase)),
          staleNote(g), summary(g), riskBlock(g), decisionForm(g))))
      : h("p", { class: "empty" }, "No request waits for you."),
  ];
}

function reviewForm(g) {
  const notes = h("textarea", { id: idOf("notes", g), name: "notes", required: true, placeholder: "What happened, and was it right to break glass?" });
  const verdict = h("select", { id: idOf("verdict", g), name: "verdict" },
    h("option", { value: "justified" }, "Justified"), h("option", { value: "unjustified" }, "Unjustified"));
  const send = h("button", { type: "submit", disabled: away(g.cluster) }, "Record review");
  return h("form", { "aria-label": `Review ${g.name}${suffix(g)}`, onsubmit: (e) => { e.preventDefault(); perform(send, () => act(g, "review", notes.value, verdict.value), `${g.name} reviewed.`); } },
    h("label", { for: idOf("verdict", g) }, "Verdict"), verdict,
    h("label", { for: idOf("notes", g) }, "Notes"), notes, h("div", { class: "buttons" }, send));
}

function revokeButton(g) {
  const button = h("button", { type: "button", class: "danger", disabled: away(g.cluster), onclick: () => perform(button, () => act(g, "revoke", "Ended from the Lapse page"), `Revocation of ${g.name} sent.`) }, "Revoke now");
  return button;
}

function oncall() {
  const glasses = grantsWhere((g) => g.kind === "BreakGlass");
  const active = glasses.filter((g) => !ENDED.has(g.phase));
  const due = glasses.filter((g) => g.reviewDue && g.phase !== "Invalid" && g.phase !== "Denied");
  const offers = currentOffers();
  return [
    h("h1", {}, "On call"),
    refusals("BreakGlass", "Break-glasses"),
    h("h2", {}, "Active break-glasses"),
    table(active, withCluster([
      ["Name", nameCell], ["Incident", (g) => g.incident || ""], ["Who", (g) => g.requester || ""], ["Role", (g) => g.role],
      ["Where", where], ["State", (g) => phaseBadge(g.phase)], ["Time left", (g) => countdown(g.expiresAt, g.phase)],
      ["", (g) => (g.mine && g.phase === "Active" ? revokeButton(g) : "")],
    ])) || h("p", { class: "empty" }, "No glass is broken."),
    h("h2", {}, "Reviews due"),
    due.length
      ? h("div", { class: "cards" }, due.map((g) => h("section", { class: `card${away(g.cluster) ? " stale" : ""}`, "data-name": g.name, "data-cluster": fleet() ? g.cluster : null, "aria-label": `Review ${g.name}${suffix(g)}` },
          h("h3", {}, clusterChip(g), fleet() ? " " : null, h("a", { href: storyHref(g) }, g.name), " ", phaseBadge(g.phase)),
          staleNote(g), summary(g), h("p", {}, "Review due in ", countdown(g.reviewDeadline, "Pending")), riskBlock(g), reviewForm(g))))
      : h("p", { class: "empty" }, "No review is due."),
    h("h2", {}, "Break glass"),
    // The form, unless the policies (when readable) name you for no break-glass at all.
    offers && !offers.refused && !offers.breakGlass.length
      ? [clusterForm("Break glass"), h("p", { class: "empty" }, `No AccessPolicy lets you break glass${fleet() ? ` in ${formCluster()}` : ""}.`)]
      : breakGlassForm(),
  ];
}

function field(label, input, hint) {
  return h("label", {}, label, hint ? h("span", { class: "hint" }, hint) : null, input);
}

function datalist(id, values) {
  return h("datalist", { id }, values.map((v) => h("option", { value: v })));
}

function breakGlassForm() {
  const offers = (currentOffers() && currentOffers().breakGlass) || [];
  const roles = [...new Set(offers.flatMap((o) => o.roles))];
  const durations = [...new Set(offers.flatMap((o) => o.durations))];
  const role = h("input", { name: "role", required: true, list: "bg-roles", value: roles[0] || "", autocomplete: "off" });
  const duration = h("input", { name: "duration", required: true, list: "bg-durations", value: durations[0] || "30m", autocomplete: "off" });
  const namespaces = h("input", { name: "namespaces", placeholder: "empty: cluster-wide", autocomplete: "off" });
  const incident = h("input", { name: "incident", placeholder: "INC-4711", autocomplete: "off" });
  const reason = h("textarea", { name: "reason", required: true });
  const send = h("button", { type: "submit", class: "danger" }, "Break glass");
  return h("form", { "aria-label": "Break glass", onsubmit: async (e) => {
      e.preventDefault();
      const cluster = formCluster();
      const made = await perform(send, () => post("breakglass", { role: role.value, duration: duration.value, namespaces: namespaces.value, incident: incident.value, reason: reason.value, cluster }), "Glass broken.");
      if (made) location.hash = storyHref({ kind: "BreakGlass", name: made.name, cluster });
    } },
    clusterField(), datalist("bg-roles", roles), datalist("bg-durations", durations),
    field("ClusterRole", role, roles.length ? `offered to you: ${roles.join(", ")}` : null),
    field("Namespaces", namespaces, "comma-separated"), field("Duration", duration),
    field("Incident", incident), field("Reason", reason), h("div", { class: "buttons" }, send));
}

function ask() {
  const offers = (currentOffers() && currentOffers().requests) || [];
  const roleOptions = [];
  for (const o of offers) for (const r of o.roles) roleOptions.push({ ...r, policy: o });
  const role = roleOptions.length
    ? h("select", { name: "role" }, roleOptions.map((r, i) => h("option", { value: String(i) }, `${r.name} (${r.kind}) — ${r.policy.policy}, ${r.policy.approval === "Auto" ? "self-service" : "needs approval"}, up to ${r.policy.maxDuration}`)))
    : h("input", { name: "role", required: true, placeholder: "edit", autocomplete: "off" });
  const home = fleet() ? (state.clusters.get(formCluster()) || {}).defaultNamespace : state.hello && state.hello.defaultNamespace;
  const namespace = h("input", { name: "namespace", required: true, list: "ask-namespaces", autocomplete: "off", value: home || "" });
  const duration = h("input", { name: "duration", list: "ask-durations", placeholder: "the policy's default", autocomplete: "off" });
  const lists = h("div", {});
  const chosen = () => (roleOptions.length ? roleOptions[Number(role.value)] : null);
  const refresh = () => {
    const pick = chosen();
    lists.replaceChildren(datalist("ask-namespaces", pick ? pick.policy.namespaces : []), datalist("ask-durations", pick ? pick.policy.durations : []));
    if (pick && pick.policy.namespaces.length && !pick.policy.namespaces.includes(namespace.value)) namespace.value = pick.policy.namespaces[0];
    duration.placeholder = pick ? `default ${pick.policy.defaultDuration}, at most ${pick.policy.maxDuration}` : "the policy's default";
  };
  role.addEventListener("change", refresh);
  refresh();
  const reason = h("textarea", { name: "reason", required: true });
  const ticket = h("input", { name: "ticket", autocomplete: "off" });
  const send = h("button", { type: "submit" }, "Ask");
  return [
    h("h1", {}, "Ask for access"),
    currentOffers() && currentOffers().refused ? h("p", { class: "muted" }, "Policies are not readable as you; type the role and namespace.") : null,
    h("form", { "aria-label": "Ask for access", onsubmit: async (e) => {
        e.preventDefault();
        const pick = chosen();
        const body = pick
          ? { role: pick.name, roleKind: pick.kind, namespace: namespace.value, duration: duration.value, reason: reason.value, ticket: ticket.value }
          : { role: role.value, roleKind: "ClusterRole", namespace: namespace.value, duration: duration.value, reason: reason.value, ticket: ticket.value };
        const cluster = formCluster();
        const made = await perform(send, () => post("request", { ...body, cluster }), "Asked.");
        if (made) location.hash = storyHref({ kind: "AccessRequest", namespace: made.namespace, name: made.name, cluster });
      } },
      clusterField(), lists, field("Role", role), field("Namespace", namespace), field("Duration", duration),
      field("Reason", reason, "kept in the audit trail"), field("Ticket", ticket, "optional"),
      h("div", { class: "buttons" }, send)),
  ];
}

async function grantPage(kindShort, namespace, name, cluster) {
  const kind = kindShort === "bg" ? "BreakGlass" : "AccessRequest";
  const query = new URLSearchParams({ kind, name });
  if (namespace !== "-") query.set("namespace", namespace);
  if (cluster) query.set("cluster", cluster);
  let data;
  try {
    data = await getJson(`api/story?${query}`);
  } catch (error) {
    return [h("h1", {}, name), h("p", { class: "empty" }, error.message)];
  }
  syncClock(data.now);
  const g = data.grant;
  const actions = [];
  if (g.kind === "AccessRequest" && g.phase === "Pending") actions.push(h("h2", {}, "Decide"), decisionForm(g));
  if (!ENDED.has(g.phase) && g.phase !== "New") actions.push(h("h2", {}, "End it"), h("div", { class: "buttons" }, revokeButton(g)));
  if (g.kind === "BreakGlass" && g.reviewDue) actions.push(h("h2", {}, "Review"), h("div", { class: "card" }, reviewForm(g)));
  return [
    h("h1", {}, `${g.kind === "BreakGlass" ? "Break-glass" : "Access request"} ${g.name} `, phaseBadge(g.phase), fleet() ? " " : null, clusterChip(g)),
    g.message ? h("p", { "data-status-message": "" }, g.message) : null,
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-label": "Summary" },
        h("h3", {}, "What it is"), summary(g), riskBlock(g)),
      h("section", { class: "card", "aria-label": "Grant" },
        h("h3", {}, "The grant"),
        h("dl", {},
          h("dt", {}, "Subject"), h("dd", {}, g.subject || "—"),
          h("dt", {}, "Policy"), h("dd", {}, g.policy || "—"),
          h("dt", {}, "Granted"), h("dd", {}, when(g.grantedAt) || "—"),
          h("dt", {}, "Expires"), h("dd", {}, when(g.expiresAt) || "—"),
          h("dt", {}, "Time left"), h("dd", {}, countdown(g.expiresAt, g.phase)),
          h("dt", {}, "Ended"), h("dd", {}, when(g.endedAt) || "—"),
          h("dt", {}, "Binding"), h("dd", {}, g.bindings.length ? g.bindings.map((b) => `${b.kind} ${b.namespace ? b.namespace + "/" : ""}${b.name}`).join(", ") : "—"),
          g.kind === "AccessRequest" ? [h("dt", {}, "Decisions"), h("dd", {}, g.approvals.length ? g.approvals.map((a) => `${a.user} ${a.decision === "Approve" ? "approved" : "denied"}${a.comment ? `: “${a.comment}”` : ""}`).join("; ") : "—")] : null,
          g.review ? [h("dt", {}, "Review"), h("dd", {}, `${g.review.reviewer}: ${g.review.verdict}${g.review.comment ? ` — ${g.review.comment}` : ""}`)] : null,
        ))),
    actions,
    h("h2", {}, "Story"),
    data.eventsReadable ? null : h("p", { class: "muted" }, "Events are not readable as you; the story shows the status."),
    h("ol", { class: "timeline" }, data.timeline.map((e) => h("li", {},
      h("div", { class: "src" }, `${e.source} · ${when(e.at)}`), h("strong", {}, e.title), e.text ? h("div", {}, e.text) : null))),
  ];
}

// ---- access review --------------------------------------------------------------------------
// The period and filters live in `state.review`, not only in the form: the live stream redraws
// the page many times a minute, and the review is read from the API only when asked.

const REVIEW_FORMATS = [["csv", "CSV"], ["json", "JSON"], ["html", "HTML report"]];
let reviewAsk = 0;

function utcDay(offsetDays) {
  return new Date(now() + offsetDays * 86400000).toISOString().slice(0, 10);
}

function reviewState() {
  // Today, by the server's clock, is known once the stream said hello.
  if (!state.review && state.hello) {
    state.review = {
      query: { since: utcDay(-30), until: utcDay(0), role: "", namespace: state.hello.namespace || "", subject: "", cluster: fleet() ? formCluster() : "" },
      shown: null, data: null, error: null, loading: false, asked: false,
    };
  }
  return state.review;
}

function reviewUrl(query, format) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value) params.set(key, value);
  if (format) params.set("format", format);
  return `api/report?${params}`;
}

async function loadReview(query) {
  const review = reviewState();
  const ask = ++reviewAsk;
  Object.assign(review, { query, loading: true });
  if (current.page === "review") render(false);
  try {
    const data = await getJson(reviewUrl(query));
    if (ask !== reviewAsk) return;
    Object.assign(review, { data: { ...data, cluster: query.cluster }, shown: { ...query }, error: null });
    notice("");
  } catch (error) {
    if (ask !== reviewAsk) return;
    Object.assign(review, { data: null, shown: null, error: error.message });
    notice(error.message, "error");
  } finally {
    if (ask === reviewAsk) review.loading = false;
  }
  if (current.page === "review") render(false);
}

function reviewCell(row, column, text, cluster) {
  if (column === "NAME" && row.source === "cluster") return h("a", { href: storyHref({ ...row, cluster }) }, text);
  if (column === "REVIEW" && row.unreviewed) return h("span", { class: "flag", "data-unreviewed": "" }, text);
  return text;
}

function reviewTable(data) {
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Grants in the period" },
    h("table", { class: "review" },
      h("thead", {}, h("tr", {}, data.columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, data.rows.map((row) => h("tr", { "data-name": row.name, "data-kind": row.kind, class: row.unreviewed ? "unreviewed" : null },
        row.cells.map((text, i) => h("td", { "data-column": data.columns[i] }, reviewCell(row, data.columns[i], text, data.cluster))))))));
}

function reviewPage() {
  const review = reviewState();
  if (!review) return [h("h1", {}, "Access review"), h("p", { class: "muted" }, "Connecting…")];
  // The first visit shows the last 30 days at once.
  if (!review.asked) {
    review.asked = true;
    setTimeout(() => loadReview(review.query), 0);
  }
  const q = review.query;
  const input = (name, type, extra) => h("input", { name, type, value: q[name], autocomplete: "off", ...extra });
  const since = input("since", "date");
  const until = input("until", "date");
  const role = input("role", "text", { placeholder: "edit, or ClusterRole/edit" });
  const namespace = input("namespace", "text", { placeholder: state.hello.namespace ? "" : "every namespace" });
  const subject = input("subject", "text", { placeholder: "alice, or User:alice" });
  // Across clusters the review reads one cluster at a time, the one picked here.
  const cluster = fleet() ? h("select", { name: "cluster" }, [...state.clusters.keys()].map((c) => h("option", { value: c, selected: c === q.cluster }, c))) : null;
  const show = h("button", { type: "submit" }, "Show");
  const data = review.data;
  return [
    h("h1", {}, "Access review"),
    h("p", { class: "muted" }, "Every grant that held access in the period, as ",
      h("code", {}, "kubectl lapse audit report"), " lists it, read as you."),
    h("form", { class: "filters", "aria-label": "Access review period", onsubmit: (e) => {
        e.preventDefault();
        loadReview({ since: since.value, until: until.value, role: role.value.trim(), namespace: namespace.value.trim(), subject: subject.value.trim(), cluster: cluster ? cluster.value : "" });
      } },
      cluster ? field("Cluster", cluster) : null, field("Since", since, "first day, UTC"), field("Until", until, "last day, UTC"),
      field("Role", role), field("Namespace", namespace), field("Subject", subject),
      h("div", { class: "buttons" }, show)),
    review.loading ? h("p", { class: "muted", "data-loading": "" }, "Reading grants as you…") : null,
    review.error ? h("p", { class: "empty", "data-review-error": "" }, review.error) : null,
    data ? [
      h("p", { class: "summary", "data-summary": "" }, `${data.since} to ${data.until}: ${data.summaryText}`),
      data.warnings.map((w) => h("p", { class: "warning" }, `Left out: ${w}`)),
      h("div", { class: "buttons downloads" }, REVIEW_FORMATS.map(([format, label]) =>
        h("a", { class: "download", href: reviewUrl(review.shown, format), download: "" }, `Download ${label}`))),
      data.rows.length ? reviewTable(data) : h("p", { class: "empty" }, "No grant held access in this period."),
    ] : null,
  ];
}

// ---- routing and rendering ------------------------------------------------------------------

let current = { page: "mine", args: [] };
let renderId = 0;

function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "mine").split("/").map(decodeURIComponent);
  current = { page: parts[0], args: parts.slice(1) };
}

async function render(focus) {
  const id = ++renderId;
  const main = document.getElementById("main");
  let content;
  if (current.page === "grant") content = await grantPage(...current.args);
  else if (current.page === "waiting") content = waiting();
  else if (current.page === "oncall") content = oncall();
  else if (current.page === "ask") content = ask();
  else if (current.page === "review") content = reviewPage();
  else content = mine();
  if (id !== renderId) return;
  // A live update must not wipe what a person is typing: on the same page, the new fields
  // get the old fields' values back, and the focus stays where it was.
  const kept = focus ? null : keepFields(main);
  main.replaceChildren(...[content].flat(3).filter(Boolean));
  main.dataset.page = current.page;
  if (kept) restoreFields(main, kept);
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === current.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `Lapse — ${main.querySelector("h1") ? main.querySelector("h1").textContent : ""}`;
  if (focus) main.focus();
  tick();
  counts();
  banners();
}

// What can hold the focus across a re-render: fields, and the buttons a keyboard user tabs to.
const FOCUSABLE = "input, textarea, select, button";

function fieldKey(el) {
  const form = el.closest("form");
  const own = el.name || el.id || (el.tagName === "BUTTON" ? el.textContent.trim() : "");
  return `${form ? form.getAttribute("aria-label") : ""}|${el.tagName}|${own}`;
}

function keepFields(main) {
  const values = new Map();
  for (const el of main.querySelectorAll("input, textarea, select")) values.set(fieldKey(el), el.value);
  const active = main.contains(document.activeElement) ? document.activeElement : null;
  const focused = active && active.matches(FOCUSABLE) ? fieldKey(active) : null;
  const caret = focused && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
  return { values, focused, caret };
}

function restoreFields(main, kept) {
  for (const el of main.querySelectorAll("input, textarea, select")) {
    const key = fieldKey(el);
    const value = kept.values.get(key);
    if (value === undefined || el.value === value) continue;
    if (el.tagName === "SELECT" && ![...el.options].some((option) => option.value === value)) continue;
    el.value = value;
    if (el.tagName === "SELECT") el.dispatchEvent(new Event("change"));
  }
  if (!kept.focused) return;
  const again = [...main.querySelectorAll(FOCUSABLE)].find((el) => fieldKey(el) === kept.focused);
  if (!again) return;
  again.focus();
  if (kept.caret && again.setSelectionRange) again.setSelectionRange(...kept.caret);
}

function counts() {
  const waitingCount = grantsWhere((g) => g.waitsForMe).length;
  const due = grantsWhere((g) => g.kind === "BreakGlass" && g.reviewDue && g.phase !== "Invalid" && g.phase !== "Denied").length;
  document.getElementById("waiting-count").textContent = waitingCount ? String(waitingCount) : "";
  document.getElementById("oncall-count").textContent = due ? String(due) : "";
  const waitingBy = new Map();
  for (const g of state.grants.values()) if (g.waitsForMe) waitingBy.set(g.cluster, (waitingBy.get(g.cluster) || 0) + 1);
  clusterBar(waitingBy);
}

let pending = null;
function soon() {
  // Changes arrive in bursts; one render per frame is enough.
  if (pending) return;
  pending = requestAnimationFrame(() => { pending = null; render(false); });
}

let saidHello = null;
const helloSeen = new Promise((resolve) => { saidHello = resolve; });

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("api/stream");
  source.addEventListener("hello", (e) => {
    const hello = JSON.parse(e.data);
    state.hello = hello;
    state.me = hello.me;
    state.refused = hello.refused || {};
    state.grants.clear();
    state.clusters.clear();
    for (const cluster of hello.clusters || []) clusterNews(cluster);
    syncClock(hello.now);
    document.getElementById("who").textContent = hello.me ? `${hello.me.username}` : "unknown user";
    document.getElementById("who").title = hello.me ? hello.me.groups.join(", ") : "";
    document.getElementById("scope").textContent = `${hello.server} · ${hello.namespace ? `namespace ${hello.namespace}` : "all namespaces"}`;
    who();
    saidHello();
  });
  source.addEventListener("grant", (e) => {
    const g = JSON.parse(e.data);
    state.grants.set(keyOf(g), g);
    if (current.page === "grant" && current.args[2] === g.name && (current.args[3] || "") === (fleet() ? g.cluster : "")) render(false);
    else soon();
  });
  source.addEventListener("gone", (e) => { state.grants.delete(keyOf(JSON.parse(e.data))); soon(); });
  source.addEventListener("cluster", (e) => { clusterNews(JSON.parse(e.data)); soon(); });
  source.addEventListener("ready", (e) => {
    syncClock(JSON.parse(e.data).now);
    live.textContent = "live"; live.className = "live on";
    document.body.dataset.ready = "true";
    render(false);
  });
  source.addEventListener("clock", (e) => syncClock(JSON.parse(e.data).now));
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
}

async function loadOffers() {
  // Across clusters, each cluster's offers are read as it connects (clusters.js).
  await helloSeen;
  if (fleet()) return;
  try { state.offers = await getJson("api/offers"); } catch { state.offers = null; }
  if (current.page === "ask" || current.page === "oncall") render(false);
}

window.addEventListener("hashchange", () => { route(); notice(""); render(true); });
document.addEventListener("DOMContentLoaded", () => {
  route();
  render(false);
  connect();
  loadOffers();
  setInterval(tick, 250);
});
