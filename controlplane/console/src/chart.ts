// A small SVG line chart (no chart library): points [[ts_ms, value], ...], axes with the min and
// max, the last value printed.

const NS = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export function lineChart(title: string, points: [number, number][], unit: string): HTMLElement {
  const W = 320, H = 140, P = 28;
  const box = document.createElement("figure");
  box.className = "chart";
  box.dataset.testid = `chart-${title}`;
  const cap = document.createElement("figcaption");
  const last = points.length ? points[points.length - 1][1] : null;
  cap.textContent = `${title}: ${last === null ? "no data" : fmt(last) + unit}`;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  s.append(svg("rect", { x: 0, y: 0, width: W, height: H, class: "bg" }));
  if (points.length > 0) {
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    const y0 = Math.min(0, ...ys), y1 = Math.max(...ys, y0 + 1e-9);
    const X = (x: number) => P + ((x - x0) / Math.max(1, x1 - x0)) * (W - 2 * P);
    const Y = (y: number) => H - P - ((y - y0) / (y1 - y0)) * (H - 2 * P);
    const d = points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    s.append(svg("path", { d, class: "line" }));
    for (const p of points) s.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, class: "dot" }));
    const top = svg("text", { x: 2, y: P - 6, class: "axis" });
    top.textContent = fmt(y1);
    const bottom = svg("text", { x: 2, y: H - P + 12, class: "axis" });
    bottom.textContent = fmt(y0);
    s.append(top, bottom);
  }
  box.append(cap, s);
  return box;
}

function fmt(v: number): string {
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(2);
  return v.toFixed(3);
}
