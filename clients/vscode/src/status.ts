// Pure logic (no `vscode` import): what the status bar item shows for each server state.

/** The object of the server's `infill/status` request and `infill/statusChanged` notification. */
export interface ServerStatus {
  state: 'loading' | 'ready' | 'error' | 'disabled';
  model?: string;
  device?: string;
  precision?: string;
  lastLatencyMs?: number | null;
  message?: string | null;
  version?: string;
}

/** What the extension knows: the server's own status, or a state of the client around it. */
export type StatusView =
  | ServerStatus
  | { state: 'starting' }
  | { state: 'restarting'; delayMs: number; attempt: number }
  | { state: 'stopped'; message: string };

export interface StatusBarContent {
  text: string;
  tooltip: string;
  /** Errors get the status bar's error colours. */
  isError: boolean;
}

/** Loading progress from the server's `$/progress` notifications. */
export interface LoadingProgress {
  message?: string;
  percentage?: number;
}

export function statusBarContent(view: StatusView, progress?: LoadingProgress): StatusBarContent {
  switch (view.state) {
    case 'starting':
      return { text: '$(loading~spin) infill', tooltip: 'infill: starting the language server', isError: false };
    case 'restarting':
      return {
        text: '$(loading~spin) infill: restarting',
        tooltip: `infill: the language server stopped; restart ${view.attempt} in ${Math.round(view.delayMs / 1000)} s`,
        isError: false,
      };
    case 'stopped':
      return { text: '$(error) infill', tooltip: `${view.message}\nClick to show the log.`, isError: true };
    case 'loading': {
      const percentage = progress?.percentage !== undefined ? ` ${Math.round(progress.percentage)}%` : '';
      const detail = progress?.message ?? view.message ?? view.model ?? '';
      return {
        text: `$(loading~spin) infill: loading${percentage}`,
        tooltip: `infill: loading the model${detail ? `: ${detail}` : ''}`,
        isError: false,
      };
    }
    case 'ready':
      return {
        text: `$(sparkle) infill: ${[shortModelName(view.model), view.precision, view.device].filter(Boolean).join(' · ')}`,
        tooltip: readyTooltip(view),
        isError: false,
      };
    case 'disabled':
      return {
        text: '$(circle-slash) infill: off',
        tooltip: 'infill: suggestions are disabled ("infill: Enable Suggestions" turns them on)',
        isError: false,
      };
    case 'error':
      return {
        text: '$(error) infill',
        tooltip: `infill: ${view.message ?? 'the language server reported an error'}\nClick to show the log.`,
        isError: true,
      };
  }
}

function readyTooltip(status: ServerStatus): string {
  const lines = [
    `infill: ready`,
    `model: ${status.model ?? '?'}`,
    `precision: ${status.precision ?? '?'}`,
    `device: ${status.device ?? '?'}`,
  ];
  if (status.lastLatencyMs !== undefined && status.lastLatencyMs !== null) {
    lines.push(`last suggestion: ${Math.round(status.lastLatencyMs)} ms`);
  }
  if (status.version) {
    lines.push(`infill-ls ${status.version}`);
  }
  return lines.join('\n');
}

/** "bigcode/starcoder2-3b" and "/models/starcoder2-3b/" both show as "starcoder2-3b". */
export function shortModelName(model: string | undefined): string | undefined {
  if (!model) {
    return undefined;
  }
  const parts = model.split(/[\\/]/).filter((part) => part !== '');
  return parts[parts.length - 1] ?? model;
}
