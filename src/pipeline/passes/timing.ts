/**
 * Pass "timings": the seconds the layer pass spends per phase (statistics: forward stages and X^T X;
 * quantization: the algorithms and folds; forward: the residual updates), for the report and the
 * GPTQ benchmark.
 */
export type Phase = 'statistics' | 'quantization' | 'forward';

export class PhaseClock {
  readonly phases: Record<Phase, number> = { statistics: 0, quantization: 0, forward: 0 };

  /** run f, adding its time (until its promise settles, for an async f) to `phase` */
  timed<T>(phase: Phase, f: () => T): T {
    const t = performance.now();
    const r = f();
    if (r instanceof Promise) return r.finally(() => void (this.phases[phase] += (performance.now() - t) / 1000)) as T;
    this.phases[phase] += (performance.now() - t) / 1000;
    return r;
  }
}
