// The admin API client: bearer token from the login form (kept in sessionStorage only), JSON in
// and out, errors carry the control plane's message.

const KEY = "meshgate-control-token";

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export function token(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const msg = (data as { error?: string } | null)?.error ?? (text || resp.statusText);
    throw new ApiError(resp.status, msg);
  }
  return data as T;
}

export interface Principal { name: string; role: string; via: string; groups: string[] }
export interface Tool {
  server: string; name: string; version: string; lifecycle: string;
  sunset: string | null; replacement: string | null; approved: boolean; source: string;
}
export interface Server {
  name: string; kind: string; zone: string; owner: string; endpoints: string[];
  federate: boolean; version: string | null; tools: Tool[];
}
export interface Approval {
  id: string; hub: string; upstream: string; tool: string; arguments: unknown; principal: string;
  reason: string; approval_group: string | null; state: string; created_ms: number;
  expires_ms: number; decided_ms: number | null; decided_by: string | null; comment: string | null;
  age_ms: number;
}
export interface Kill { scope: string; target: string; reason: string; by: string; since_ms: number }
export interface AuditEntry {
  hub: string; seq: number; ts_ms: number; kind: string; principal: string; upstream: string;
  tool: string; outcome: string; hash: string;
}
export interface HubView {
  id: string; report: Record<string, unknown> | null; reported_ms?: number; stale?: boolean;
  watching?: { version: number; last_seen_ms: number; polling: number } | null;
  snapshot_current?: boolean | null;
}
