// Pure logic (no `vscode` import): when to restart a server that stopped on its own.

export interface RestartPolicyOptions {
  /** Restarts allowed in a row before giving up. */
  maxRestarts: number;
  /** Wait before the first restart; each further restart waits twice as long. */
  firstDelayMs: number;
  maxDelayMs: number;
  /** A server that ran this long before stopping counts as healthy: the count starts over. */
  healthyRunMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicyOptions = {
  maxRestarts: 5,
  firstDelayMs: 1_000,
  maxDelayMs: 30_000,
  healthyRunMs: 3 * 60_000,
};

export type RestartDecision = { restart: true; delayMs: number; attempt: number } | { restart: false; crashes: number };

export class RestartPolicy {
  private restarts = 0;
  private startedAtMs = 0;

  constructor(private readonly options: RestartPolicyOptions = DEFAULT_RESTART_POLICY) {}

  /** Call when the server is started (by the user or by a restart). */
  started(nowMs: number): void {
    this.startedAtMs = nowMs;
  }

  /** Call when the user restarts the server by hand: they get the full number of retries again. */
  reset(): void {
    this.restarts = 0;
  }

  /** Call when the server stopped without being asked to: restart it after a delay, or give up. */
  stopped(nowMs: number): RestartDecision {
    if (nowMs - this.startedAtMs >= this.options.healthyRunMs) {
      this.restarts = 0;
    }
    if (this.restarts >= this.options.maxRestarts) {
      return { restart: false, crashes: this.restarts + 1 };
    }
    const delayMs = Math.min(this.options.firstDelayMs * 2 ** this.restarts, this.options.maxDelayMs);
    this.restarts += 1;
    return { restart: true, delayMs, attempt: this.restarts };
  }
}
