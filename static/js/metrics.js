// Live figures: events received per second and the ACK latency of the console's publishes,
// each as a chart with a one-line reading beside it.

import { LiveChart } from './chart.js';

export class LiveMetrics {
  constructor({ rateCanvas, rateText, latencyCanvas, latencyText }) {
    this.rate = new LiveChart(rateCanvas, { style: 'area', colorVar: '--accent' });
    this.latency = new LiveChart(latencyCanvas, { style: 'dots', colorVar: '--ok' });
    this.rateText = rateText;
    this.latencyText = latencyText;
    this.count = 0;
    this.lastRate = 0;
    this.latencies = []; // [{t, v}] of the chart's window
    setInterval(() => this.tick(), 1000);
    this.tick();
  }

  /** `n` records arrived. */
  event(n = 1) {
    this.count += n;
  }

  /** A publish was acknowledged `ms` after it was sent. */
  ack(ms) {
    const t = Date.now();
    this.latency.add(t, ms);
    this.latencies.push({ t, v: ms });
    this.latency.draw(t);
    this.#describeLatency(t);
  }

  tick() {
    const now = Date.now();
    this.lastRate = this.count;
    this.count = 0;
    this.rate.add(now, this.lastRate);
    this.rate.draw(now);
    this.latency.draw(now);
    const peak = Math.max(0, ...this.rate.points.map((p) => p.v));
    this.rateText.textContent = `${this.lastRate} event${this.lastRate === 1 ? '' : 's'}/s now, peak ${peak} in the last minute`;
    this.#describeLatency(now);
  }

  #describeLatency(now) {
    this.latencies = this.latencies.filter((p) => p.t >= now - 60_000);
    if (this.latencies.length === 0) {
      this.latencyText.textContent = 'No ACK in the last minute: publish an event to measure';
      return;
    }
    const sorted = this.latencies.map((p) => p.v).sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    const last = this.latencies.at(-1).v;
    const n = sorted.length;
    this.latencyText.textContent = `last ${ms(last)}, median ${ms(median)} over ${n} ACK${n === 1 ? '' : 's'}`;
  }
}

function ms(value) {
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}
