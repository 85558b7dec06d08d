// meshgate-control web console: log in with an API key (or an OIDC bearer token), then the
// catalog (servers, tools, versions, health, zones), hubs (sessions, tunnels, snapshot
// currency), the approval queue (approve / reject with a comment), the audit feed with chain
// status, the kill switch, and KPI charts. The active view refreshes every 2 s.

import "./style.css";
import { api, ApiError, token, setToken } from "./api";
import type { Approval, AuditEntry, HubView, Kill, Principal, Server, Tool } from "./api";
import { age, clear, h, time } from "./dom";
import { lineChart } from "./chart";

type View = "catalog" | "hubs" | "approvals" | "audit" | "kill" | "kpis";
const VIEWS: [View, string][] = [
  ["catalog", "Catalog"],
  ["hubs", "Hubs"],
  ["approvals", "Approvals"],
  ["audit", "Audit"],
  ["kill", "Kill switch"],
  ["kpis", "KPIs"],
];

const root = document.getElementById("app") as HTMLElement;
let me: Principal | null = null;
let view: View = "catalog";
let timer: number | undefined;

function flash(msg: string, ok = false): void {
  const f = document.getElementById("flash");
  if (!f) return;
  f.textContent = msg;
  f.className = ok ? "flash ok" : "flash err";
}

async function guarded(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setToken(null);
      me = null;
      renderLogin(`Session ended: ${e.message}`);
      return;
    }
    flash(e instanceof Error ? e.message : String(e));
  }
}

// === login ===

function renderLogin(message = ""): void {
  if (timer) window.clearInterval(timer);
  clear(root);
  const input = h("input", {
    id: "token", type: "password", placeholder: "API key (mgc_…) or OIDC token",
    autocomplete: "off", "data-testid": "login-token",
  }) as HTMLInputElement;
  const err = h("p", { class: "flash err", "data-testid": "login-error" }, message);
  const form = h("form", {
    class: "login",
    onsubmit: (ev: Event) => {
      ev.preventDefault();
      setToken(input.value.trim());
      void api<Principal>("GET", "/v1/whoami")
        .then((p) => { me = p; renderShell(); })
        .catch((e: Error) => { setToken(null); err.textContent = `Login failed: ${e.message}`; });
    },
  },
    h("h1", {}, "meshgate-control"),
    h("label", { for: "token" }, "Credential"),
    input,
    h("button", { type: "submit", "data-testid": "login-submit" }, "Log in"),
    err,
  );
  root.append(form);
  input.focus();
}

// === shell ===

function renderShell(): void {
  clear(root);
  const nav = h("nav", {},
    ...VIEWS.map(([v, label]) =>
      h("button", {
        class: v === view ? "tab active" : "tab", "data-testid": `tab-${v}`,
        onclick: () => { view = v; renderShell(); },
      }, label)),
    h("span", { class: "who", "data-testid": "whoami" }, `${me?.name} (${me?.role})`),
    h("button", { class: "tab", onclick: () => { setToken(null); me = null; renderLogin(); } }, "Log out"),
  );
  const main = h("main", { id: "main", "data-testid": `view-${view}` });
  root.append(h("header", {}, h("strong", {}, "meshgate-control")), nav, h("p", { id: "flash", class: "flash" }), main);
  void refresh();
  if (timer) window.clearInterval(timer);
  timer = window.setInterval(() => { if (!document.querySelector("main :focus")) void refresh(); }, 2000);
}

async function refresh(): Promise<void> {
  const main = document.getElementById("main");
  if (!main) return;
  await guarded(async () => {
    const content = await VIEW_RENDER[view]();
    clear(main);
    main.append(content);
  });
}

const VIEW_RENDER: Record<View, () => Promise<HTMLElement>> = {
  catalog: renderCatalog,
  hubs: renderHubs,
  approvals: renderApprovals,
  audit: renderAudit,
  kill: renderKill,
  kpis: renderKpis,
};

function table(headers: string[], rows: HTMLElement[], testid: string): HTMLElement {
  return h("table", { "data-testid": testid },
    h("thead", {}, h("tr", {}, ...headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, ...rows));
}

// === catalog ===

function lifecycle(t: Tool): string {
  if (t.lifecycle === "deprecated") return `deprecated (sunset ${t.sunset ?? "?"})`;
  if (t.lifecycle === "retired") return `retired${t.replacement ? ` → ${t.replacement}` : ""}`;
  return "active";
}

async function renderCatalog(): Promise<HTMLElement> {
  const [servers, zones, hubs] = await Promise.all([
    api<Server[]>("GET", "/v1/servers"),
    api<{ name: string; description: string }[]>("GET", "/v1/zones"),
    api<{ hubs: HubView[] }>("GET", "/v1/hubs"),
  ]);
  // health: what the hubs last reported for each upstream
  const health = new Map<string, { up: number; down: number }>();
  for (const hub of hubs.hubs) {
    const ups = (hub.report?.upstreams as { name: string; up: boolean }[] | undefined) ?? [];
    for (const u of ups) {
      const e = health.get(u.name) ?? { up: 0, down: 0 };
      if (u.up) e.up++; else e.down++;
      health.set(u.name, e);
    }
  }
  const canOperate = me?.role === "operator" || me?.role === "admin";
  const srows = servers.map((s) => {
    const hl = health.get(s.name);
    const status = hl ? (hl.down ? `${hl.up} up / ${hl.down} down` : `up on ${hl.up} hub(s)`) : "no report";
    return h("tr", { "data-testid": `server-${s.name}` },
      h("td", {}, s.name), h("td", {}, s.kind), h("td", {}, s.zone || "—"), h("td", {}, s.owner || "—"),
      h("td", {}, s.version ?? "—"), h("td", {}, String(s.endpoints.length)),
      h("td", {}, s.federate ? "federated" : "not federated"), h("td", { class: hl?.down ? "bad" : "" }, status));
  });
  const trows = servers.flatMap((s) => s.tools.map((t) =>
    h("tr", { "data-testid": `tool-${s.name}-${t.name}` },
      h("td", {}, `${s.name}__${t.name}`), h("td", {}, t.version), h("td", {}, lifecycle(t)),
      h("td", {}, t.source), h("td", {}, t.approved ? "approved" : "awaiting approval"),
      h("td", {}, canOperate && !t.approved
        ? h("button", {
          "data-testid": `approve-tool-${s.name}-${t.name}`,
          onclick: () => void guarded(async () => {
            await api("POST", `/v1/servers/${encodeURIComponent(s.name)}/tools/${encodeURIComponent(t.name)}/approve`, { approved: true });
            flash(`${s.name}__${t.name} approved for federation`, true);
            await refresh();
          }),
        }, "Approve")
        : ""))));
  return h("section", {},
    h("h2", {}, "Servers"),
    table(["name", "kind", "zone", "owner", "version", "replicas", "allow-list", "health"], srows, "servers"),
    h("h2", {}, "Tools"),
    table(["exposed name", "version", "lifecycle", "source", "state", ""], trows, "tools"),
    h("h2", {}, "Zones"),
    h("ul", { "data-testid": "zones" }, ...zones.map((z) => h("li", {}, `${z.name}${z.description ? ` — ${z.description}` : ""}`))),
  );
}

// === hubs ===

async function renderHubs(): Promise<HTMLElement> {
  const v = await api<{ latest_snapshot: number; hubs: HubView[] }>("GET", "/v1/hubs");
  const rows = v.hubs.map((hub) => {
    const r = hub.report ?? {};
    const tunnels = (r.tunnels as { edge: string; transport: string }[] | undefined) ?? [];
    return h("tr", { "data-testid": `hub-${hub.id}` },
      h("td", {}, hub.id),
      h("td", {}, String(r.sessions ?? "—")),
      h("td", {}, tunnels.length ? tunnels.map((t) => `${t.edge} (${t.transport})`).join(", ") : "none"),
      h("td", {}, hub.watching ? `v${hub.watching.version}${hub.snapshot_current ? " (current)" : " (behind)"}` : "not watching"),
      h("td", { class: hub.stale ? "bad" : "" }, hub.reported_ms ? `${age(Date.now() - hub.reported_ms)} ago` : "never"));
  });
  return h("section", {},
    h("h2", {}, `Hubs — newest snapshot v${v.latest_snapshot}`),
    table(["hub", "live sessions", "tunnels", "snapshot", "last report"], rows, "hubs"));
}

// === approvals ===

async function renderApprovals(): Promise<HTMLElement> {
  const [pending, all] = await Promise.all([
    api<Approval[]>("GET", "/v1/approvals?state=pending"),
    api<Approval[]>("GET", "/v1/approvals?limit=50"),
  ]);
  const decide = (a: Approval, approve: boolean, comment: HTMLInputElement) => () =>
    void guarded(async () => {
      await api("POST", `/v1/approvals/${a.id}/decision`, { approve, comment: comment.value });
      flash(`${a.upstream}__${a.tool} for ${a.principal}: ${approve ? "approved" : "rejected"}`, true);
      await refresh();
    });
  const rows = pending.map((a) => {
    const comment = h("input", { placeholder: "comment", "data-testid": `comment-${a.id}` }) as HTMLInputElement;
    return h("tr", { "data-testid": "pending-approval", "data-id": a.id },
      h("td", {}, `${a.upstream}__${a.tool}`),
      h("td", {}, h("code", {}, JSON.stringify(a.arguments))),
      h("td", {}, a.principal), h("td", {}, a.reason || "—"), h("td", {}, a.approval_group ?? "—"),
      h("td", {}, age(a.age_ms)), h("td", {}, `${age(a.expires_ms - Date.now())}`),
      h("td", {}, comment,
        h("button", { "data-testid": `approve-${a.id}`, onclick: decide(a, true, comment) }, "Approve"),
        h("button", { class: "danger", "data-testid": `reject-${a.id}`, onclick: decide(a, false, comment) }, "Reject")));
  });
  const decided = all.filter((a) => a.state !== "pending").map((a) =>
    h("tr", { "data-testid": `decided-${a.id}` },
      h("td", {}, `${a.upstream}__${a.tool}`), h("td", {}, a.principal), h("td", { class: a.state === "approved" ? "" : "bad" }, a.state),
      h("td", {}, a.decided_by ?? "—"), h("td", {}, a.comment ?? ""), h("td", {}, age(a.age_ms))));
  return h("section", {},
    h("h2", {}, `Held calls (${pending.length})`),
    pending.length ? table(["tool", "arguments", "principal", "reason", "group", "age", "denied in", ""], rows, "approvals")
      : h("p", { "data-testid": "no-pending" }, "No call is waiting."),
    h("h2", {}, "Recent decisions"),
    table(["tool", "principal", "outcome", "by", "comment", "cycle time"], decided, "decided"));
}

// === audit ===

async function renderAudit(): Promise<HTMLElement> {
  const [feed, verify] = await Promise.all([
    api<AuditEntry[]>("GET", "/v1/audit?limit=100"),
    api<{ ok: boolean; hubs: { hub: string; ok: boolean; records?: number; error?: string }[] }>("GET", "/v1/audit/verify"),
  ]);
  const chain = verify.hubs.map((c) =>
    h("li", { class: c.ok ? "" : "bad", "data-testid": `chain-${c.hub}` },
      `${c.hub}: ${c.ok ? `chain intact (${c.records} records)` : `CHAIN BROKEN — ${c.error}`}`));
  const rows = feed.map((r) =>
    h("tr", {}, h("td", {}, time(r.ts_ms)), h("td", {}, r.hub), h("td", {}, String(r.seq)), h("td", {}, r.kind),
      h("td", {}, r.principal), h("td", {}, `${r.upstream}__${r.tool}`), h("td", {}, r.outcome),
      h("td", {}, h("code", {}, r.hash.slice(0, 12)))));
  return h("section", {},
    h("h2", {}, "Chain status"),
    h("ul", { "data-testid": "chains" }, ...(chain.length ? chain : [h("li", {}, "no audit records yet")])),
    h("h2", {}, "Feed"),
    table(["time", "hub", "seq", "kind", "principal", "tool", "outcome", "hash"], rows, "audit"));
}

// === kill switch ===

async function renderKill(): Promise<HTMLElement> {
  const kills = await api<Kill[]>("GET", "/v1/kill");
  const global = kills.find((k) => k.scope === "global");
  const reason = h("input", { placeholder: "reason (shown to callers)", "data-testid": "kill-reason" }) as HTMLInputElement;
  const scope = h("select", { "data-testid": "kill-scope" },
    h("option", { value: "global" }, "everything"), h("option", { value: "upstream" }, "one upstream"),
    h("option", { value: "tool" }, "one tool (upstream/tool)")) as HTMLSelectElement;
  const target = h("input", { placeholder: "target", "data-testid": "kill-target" }) as HTMLInputElement;
  const press = () => void guarded(async () => {
    if (!window.confirm(`Stop ${scope.value === "global" ? "ALL tool execution on every hub" : target.value}?`)) return;
    const r = await api<{ snapshot: number }>("POST", "/v1/kill", { scope: scope.value, target: scope.value === "global" ? "" : target.value, reason: reason.value });
    flash(`Kill switch pressed: snapshot v${r.snapshot} pushed to hubs`, true);
    await refresh();
  });
  const lift = (k: Kill) => () => void guarded(async () => {
    await api("POST", "/v1/kill/lift", { scope: k.scope, target: k.target });
    flash(`Lifted ${k.scope} ${k.target}`, true);
    await refresh();
  });
  return h("section", {},
    h("div", { class: global ? "banner bad" : "banner", "data-testid": "kill-state" },
      global ? `ALL TOOL EXECUTION STOPPED since ${time(global.since_ms)} by ${global.by}: ${global.reason}` : "Tools are running."),
    h("div", { class: "killform" }, scope, target, reason,
      h("button", { class: "danger big", "data-testid": "kill-press", onclick: press }, "Press the kill switch")),
    h("h2", {}, "Active kills"),
    table(["scope", "target", "reason", "by", "since", ""], kills.map((k) =>
      h("tr", { "data-testid": `kill-${k.scope}` }, h("td", {}, k.scope), h("td", {}, k.target || "—"), h("td", {}, k.reason),
        h("td", {}, k.by), h("td", {}, time(k.since_ms)),
        h("td", {}, h("button", { "data-testid": `lift-${k.scope}`, onclick: lift(k) }, "Lift")))), "kills"));
}

// === KPIs ===

async function renderKpis(): Promise<HTMLElement> {
  const k = await api<{ series: Record<string, [number, number][]> }>("GET", "/v1/kpis?window_s=3600");
  const s = k.series;
  return h("section", { class: "charts" },
    lineChart("tool boot time", s.tool_boot_ms ?? [], " ms"),
    lineChart("reconnection rate", s.reconnections_per_min ?? [], "/min"),
    lineChart("cache hit ratio", s.cache_hit_ratio ?? [], ""),
    lineChart("error rate", s.error_rate ?? [], ""),
    lineChart("approval cycle time", s.approval_cycle_ms ?? [], " ms"));
}

// === start ===

if (token()) {
  void api<Principal>("GET", "/v1/whoami").then((p) => { me = p; renderShell(); }).catch(() => { setToken(null); renderLogin(); });
} else {
  renderLogin();
}
