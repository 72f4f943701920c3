// A small live time-series chart on a canvas: the last `seconds` of values, redrawn on demand.

export class LiveChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{seconds?: number, style?: 'area'|'dots', unit?: string, colorVar?: string}} options
   */
  constructor(canvas, { seconds = 60, style = 'area', unit = '', colorVar = '--accent' } = {}) {
    this.canvas = canvas;
    this.seconds = seconds;
    this.style = style;
    this.unit = unit;
    this.colorVar = colorVar;
    this.points = []; // [{t, v}] in time order
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  add(t, v) {
    this.points.push({ t, v });
    this.#forget(t);
  }

  clear() {
    this.points = [];
    this.draw();
  }

  #forget(now) {
    const oldest = now - this.seconds * 1000 - 1000;
    let drop = 0;
    while (drop < this.points.length && this.points[drop].t < oldest) drop += 1;
    if (drop > 0) this.points.splice(0, drop);
  }

  draw(now = Date.now()) {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    this.#forget(now);
    const ctx = canvas.getContext('2d');
    const style = getComputedStyle(canvas);
    const color = style.getPropertyValue(this.colorVar).trim() || '#2563eb';
    const muted = style.getPropertyValue('--muted').trim() || '#6b7280';
    const grid = style.getPropertyValue('--line').trim() || '#e5e7eb';
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const w = width / ratio;
    const h = height / ratio;
    ctx.clearRect(0, 0, w, h);

    const left = 36;
    const top = 6;
    const bottom = h - 16;
    const right = w - 4;
    const max = niceCeiling(Math.max(0, ...this.points.map((p) => p.v)));
    const x = (t) => left + ((t - (now - this.seconds * 1000)) / (this.seconds * 1000)) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.strokeStyle = grid;
    ctx.fillStyle = muted;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const v of [0, max / 2, max]) {
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(formatTick(v), left - 4, y(v));
    }
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(`−${this.seconds} s`, left, h - 3);
    ctx.textAlign = 'right';
    ctx.fillText('now', right, h - 3);

    const visible = this.points.filter((p) => p.t >= now - this.seconds * 1000);
    if (visible.length === 0) return;
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 1.5;
    if (this.style === 'dots') {
      for (const p of visible) {
        ctx.beginPath();
        ctx.arc(x(p.t), y(p.v), 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
      return;
    }
    ctx.beginPath();
    visible.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p.v)) : ctx.lineTo(x(p.t), y(p.v))));
    ctx.stroke();
    ctx.lineTo(x(visible.at(-1).t), bottom);
    ctx.lineTo(x(visible[0].t), bottom);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
}

/** 1, 2, 5, 10, 20, 50, … at or above `value` (at least 1). */
function niceCeiling(value) {
  if (!(value > 1)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function formatTick(v) {
  if (v >= 1000) return `${Math.round(v / 100) / 10}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
