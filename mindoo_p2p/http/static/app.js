// The node's web page: reads the local HTTP API (authenticated by the cookie that the
// one-time login link set) and follows the event stream. Data is inserted as text only.
"use strict";

const MAX_EVENTS = 200;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function problem(text) {
  const p = document.getElementById("problem");
  p.textContent = text;
  p.hidden = !text;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(message);
  }
  return body;
}

function completionText(sync) {
  if (!sync) return "";
  return sync.percent === null || sync.percent === undefined
    ? sync.state
    : `${sync.state} (${sync.percent}%)` + (sync.eta_s ? `, ETA ${sync.eta_s} s` : "");
}

function renderTenants(tenants, status) {
  const missing = new Map();
  const sync = new Map();
  for (const db of status.databases || []) {
    missing.set(db.tenant_id + "/" + db.database, db.missing);
    sync.set(db.tenant_id + "/" + db.database, db.sync);
  }
  const onlyHere = new Map();
  for (const row of status.durability || []) {
    onlyHere.set(row.tenant_id + "/" + row.database, row.only_here);
  }
  const body = document.querySelector("#tenants tbody");
  body.replaceChildren();
  for (const tenant of tenants) {
    const databases = tenant.databases.length ? tenant.databases : [null];
    for (const db of databases) {
      const row = document.createElement("tr");
      row.className = "tenant";
      cell(row, tenant.name, "tenant-name");
      cell(row, tenant.admin ? "admin" : "member");
      cell(row, tenant.members);
      cell(row, db ? db.name : "(no database)", "database-name");
      cell(row, db ? db.documents : "");
      cell(row, db ? db.entries : "");
      cell(row, db ? missing.get(tenant.id + "/" + db.name) : "");
      cell(row, db ? completionText(sync.get(tenant.id + "/" + db.name)) : "", "database-sync");
      cell(row, db ? onlyHere.get(tenant.id + "/" + db.name) : "", "only-here");
      body.appendChild(row);
    }
  }
}

function peerState(peer) {
  if (peer.syncing) {
    const progress = peer.progress || {};
    return progress.received !== undefined
      ? `syncing (${progress.received} in, ${progress.sent} out)`
      : "syncing";
  }
  return peer.connected ? "connected" : "disconnected";
}

function renderPeers(peers) {
  const body = document.querySelector("#peers tbody");
  body.replaceChildren();
  for (const peer of peers) {
    const row = document.createElement("tr");
    row.className = "peer";
    const state = peerState(peer);
    cell(row, peer.name || peer.peer_id, "id peer-id");
    cell(row, state, "peer-state " + (peer.connected ? "connected" : "disconnected"));
    cell(row, peer.address);
    const last = peer.last_session;
    cell(row, last ? `${last.role}, ${last.elapsed_ms} ms, ${last.received} in, ${last.sent} out` : "");
    cell(
      row,
      (peer.databases || []).map((d) => `${d.tenant}/${d.database}: ${completionText(d)}`).join("; "),
      "peer-sync",
    );
    cell(row, peer.last_error);
    body.appendChild(row);
  }
}

function describe(event) {
  switch (event.type) {
    case "peer":
      return `peer ${event.peer_id} ${event.connected ? "connected" : "disconnected"}`;
    case "sync":
      return `sync ${event.state} with ${event.peer_id}` +
        (event.tenant_name ? ` (${event.tenant_name})` : "") +
        (event.received !== undefined ? `: ${event.received} in, ${event.sent} out` : "") +
        (event.error ? `: ${event.error}` : "");
    case "entry":
      return `entry ${event.kind} in ${event.tenant_name || event.tenant}/${event.database}` +
        ` (${event.origin})`;
    case "rejected":
      return `${event.count} entries refused: ${event.kind}`;
    case "conflict":
    case "conflict_resolved":
      return `${event.type === "conflict" ? "conflict" : "conflict resolved"} in` +
        ` ${event.tenant_name || event.tenant}/${event.database} ${event.document_id}` +
        (event.fields.length ? `: ${event.fields.join(", ")}` : "");
    default:
      return JSON.stringify(event);
  }
}

function addEvent(event) {
  const list = document.getElementById("events");
  const item = document.createElement("li");
  item.className = "event event-" + event.type;
  item.textContent = describe(event);
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

let refreshing = null;

async function refresh() {
  try {
    const [status, tenants] = await Promise.all([getJson("/api/status"), getJson("/api/tenants")]);
    document.getElementById("node").textContent =
      `peer ${status.peer_id} · ${status.entries} entries · home ${status.home}`;
    renderTenants(tenants.tenants, status);
    renderPeers(status.peers);
    problem("");
    return true;
  } catch (error) {
    problem(`${error.message}`);
    return false;
  }
}

function refreshSoon() {
  if (refreshing) return;
  refreshing = setTimeout(() => { refreshing = null; refresh(); }, 500);
}

function follow() {
  const source = new EventSource("/api/events");
  const stream = document.getElementById("stream");
  source.onopen = () => { stream.textContent = "event stream: live"; };
  source.onerror = () => { stream.textContent = "event stream: reconnecting…"; };
  source.onmessage = (message) => addEvent(JSON.parse(message.data));
  const types = ["peer", "sync", "entry", "rejected", "penalty", "resync", "lagged", "conflict",
    "conflict_resolved"];
  for (const type of types) {
    source.addEventListener(type, (message) => {
      addEvent(JSON.parse(message.data));
      if (type !== "entry" || document.querySelectorAll("#events li").length < 50) refreshSoon();
    });
  }
}

async function start() {
  if (!(await refresh())) return;
  try {
    const recent = await getJson("/api/events/recent");
    for (const event of recent.events) addEvent(event);
  } catch (error) {
    problem(error.message);
  }
  document.body.dataset.ready = "true";
  follow();
}

start();
