// Pure logic (no `vscode` import): finding the server executable before starting it,
// so that a missing server gets a message that says how to install it.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The environment variables that matter: PATH and, on Windows, PATHEXT (".EXE;.CMD;..."). */
export type LookupEnvironment = Record<string, string | undefined>;

/**
 * The full path of `command` if it can be run: a command with a folder in it must name an
 * executable file; a bare name is looked up in the PATH folders, as the shell would.
 * Returns undefined when nothing runnable is found.
 */
export function findExecutable(
  command: string,
  env: LookupEnvironment,
  platform: NodeJS.Platform = process.platform,
): string | undefined {
  const extensions = platform === 'win32' ? ['', ...(env['PATHEXT'] ?? '.EXE;.CMD;.BAT;.COM').split(';')] : [''];
  const candidates = command.includes('/') || (platform === 'win32' && command.includes('\\'))
    ? [command]
    : (env['PATH'] ?? '').split(platform === 'win32' ? ';' : ':').filter((dir) => dir !== '').map((dir) => path.join(dir, command));
  for (const candidate of candidates) {
    for (const extension of extensions) {
      if (isExecutableFile(candidate + extension, platform)) {
        return candidate + extension;
      }
    }
  }
  return undefined;
}

function isExecutableFile(file: string, platform: NodeJS.Platform): boolean {
  try {
    if (!fs.statSync(file).isFile()) {
      return false;
    }
    fs.accessSync(file, platform === 'win32' ? fs.constants.F_OK : fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
