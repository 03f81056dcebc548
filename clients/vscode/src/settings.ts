// Pure logic (no `vscode` import, so the unit tests run in plain Node):
// how the `infill.*` settings become the server's launch command and settings.
import * as os from 'node:os';
import * as path from 'node:path';

/** The settings section shared by VS Code, initializationOptions and workspace/configuration. */
export const SECTION = 'infill';

/** Keys under `infill.*` that configure this extension, not the server. */
const CLIENT_ONLY_KEYS = new Set(['server', 'trace']);

export interface ServerLaunch {
  command: string;
  args: string[];
}

/**
 * The server's settings from the `infill` configuration tree (as VS Code returns it):
 * everything except the client-only keys, leaving out values that mean "not set"
 * (null, undefined, empty or blank strings) so the server applies its own defaults.
 */
export function serverSettings(config: Record<string, unknown>): Record<string, unknown> {
  const settings: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (CLIENT_ONLY_KEYS.has(key) || typeof value === 'function' || isUnset(value)) {
      continue;
    }
    settings[key] = value;
  }
  return settings;
}

function isUnset(value: unknown): boolean {
  return value === null || value === undefined || (typeof value === 'string' && value.trim() === '');
}

/**
 * The command that starts the server, from `infill.server.path` and `infill.server.args`.
 * A path that starts with `~` is taken from the home directory; a relative path that names
 * a folder (`bin/infill-ls`) is taken from the workspace folder. A bare name stays a bare
 * name, to be looked up on PATH.
 */
export function serverLaunch(
  server: { path?: unknown; args?: unknown } | undefined,
  workspaceFolder: string | undefined,
  homeDir: string = os.homedir(),
): ServerLaunch {
  let command = typeof server?.path === 'string' && server.path.trim() !== '' ? server.path.trim() : 'infill-ls';
  if (command === '~' || command.startsWith('~/')) {
    command = path.join(homeDir, command.slice(1));
  } else if (!path.isAbsolute(command) && command.includes('/') && workspaceFolder !== undefined) {
    command = path.resolve(workspaceFolder, command);
  }
  const args = Array.isArray(server?.args) ? server.args.map(String) : [];
  return { command, args };
}
