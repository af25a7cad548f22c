// A small time-series chart on canvas: one sample per second, the last five minutes, a few
// series, a rounded y scale. No library: this is all the console needs.

export const WINDOW_S = 300;

const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706"];

/** The smallest "round" number (1, 2, 2.5, 5 × 10^k) at or above `v`. */
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * p >= v) return m * p;
  }
  return 10 * p;
}

export class Chart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {string[]} series   names, one per line drawn
   * @param {(v: number) => string} format   axis and value labels
   */
  constructor(canvas, series, format) {
    this.canvas = canvas;
    this.series = series;
    this.format = format;
    this.points = []; // [t seconds, v0, v1, …], oldest first
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(canvas);
  }

  /** Adds a sample at server time `t` (seconds). */
  push(t, values) {
    this.points.push([t, ...values]);
    while (this.points.length > 0 && this.points[0][0] < t - WINDOW_S) this.points.shift();
    this.draw();
  }

  /** Forgets every sample (the server restarted). */
  reset() {
    this.points = [];
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = c.clientWidth || 300;
    const cssH = c.clientHeight || 120;
    if (c.width !== Math.round(cssW * dpr) || c.height !== Math.round(cssH * dpr)) {
      c.width = Math.round(cssW * dpr);
      c.height = Math.round(cssH * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    const left = 52;
    const right = cssW - 6;
    const top = 8;
    const bottom = cssH - 18;
    const tNow = this.points.length ? this.points[this.points.length - 1][0] : 0;
    const tMin = tNow - WINDOW_S;
    let max = 0;
    for (const p of this.points) for (let i = 1; i < p.length; i++) max = Math.max(max, p[i]);
    const yMax = niceCeil(max);
    const x = (t) => left + ((t - tMin) / WINDOW_S) * (right - left);
    const y = (v) => bottom - (v / yMax) * (bottom - top);

    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    g.lineWidth = 1;
    for (const frac of [0, 0.5, 1]) {
      const yy = Math.round(y(yMax * frac)) + 0.5;
      g.strokeStyle = frac === 0 ? "#9ca3af" : "#e5e7eb";
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(right, yy);
      g.stroke();
      g.fillStyle = "#6b7280";
      g.textAlign = "right";
      g.fillText(this.format(yMax * frac), left - 6, yy);
    }
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillText("−5 min", left, cssH - 4);
    g.textAlign = "right";
    g.fillText("now", right, cssH - 4);

    for (let s = this.series.length - 1; s >= 0; s--) {
      const color = PALETTE[s % PALETTE.length];
      const line = new Path2D();
      let first = null;
      let last = null;
      let prevT = null;
      for (const p of this.points) {
        const px = x(p[0]);
        const py = y(p[s + 1]);
        // A gap longer than a few polls (the page was hidden, the server away) is left open.
        if (prevT === null || p[0] - prevT > 5) line.moveTo(px, py);
        else line.lineTo(px, py);
        if (first === null) first = px;
        last = px;
        prevT = p[0];
      }
      if (s === 0 && first !== null && this.series.length === 1) {
        const fill = new Path2D(line);
        fill.lineTo(last, bottom);
        fill.lineTo(first, bottom);
        g.fillStyle = color + "22";
        g.fill(fill);
      }
      g.strokeStyle = color;
      g.lineWidth = 1.6;
      g.stroke(line);
    }
  }
}

/** Colour of series `i`, for legends. */
export function seriesColor(i) {
  return PALETTE[i % PALETTE.length];
}
