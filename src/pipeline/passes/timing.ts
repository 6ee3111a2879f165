/**
 * Pass "timings": the seconds the layer pass spends per phase (statistics: forward stages and X^T X;
 * quantization: the algorithms and folds; forward: the residual updates), for the report and the
 * GPTQ benchmark.
 *
 * A phase timed inside another (AutoRound's block stage, timed as quantization, runs the layer forward
 * to judge its iterates, timed as forward) counts for the inner phase only: each second is in one
 * phase, and the phases add up to at most the pass's wall time.
 */
export type Phase = 'statistics' | 'quantization' | 'forward';

/** one timed call that has not returned (or settled): the seconds its nested timed calls took */
interface Frame {
  readonly parent: Frame | null;
  nested: number;
}

export class PhaseClock {
  readonly phases: Record<Phase, number> = { statistics: 0, quantization: 0, forward: 0 };
  private current: Frame | null = null;

  /** `now`: the clock in milliseconds (tests pass their own) */
  constructor(private readonly now: () => number = () => performance.now()) {}

  /** run f, adding its time (until its promise settles, for an async f) to `phase`, less the time of timed calls inside it */
  timed<T>(phase: Phase, f: () => T): T {
    const t = this.now();
    const frame: Frame = { parent: this.current, nested: 0 };
    this.current = frame;
    const end = () => {
      const s = (this.now() - t) / 1000;
      this.phases[phase] += s - frame.nested;
      if (frame.parent) frame.parent.nested += s;
      if (this.current === frame) this.current = frame.parent;
    };
    let r: T;
    try {
      r = f();
    } catch (e) {
      end();
      throw e;
    }
    if (r instanceof Promise) return r.finally(end) as T;
    end();
    return r;
  }
}
