// Pure logic (no `vscode` import): the texts users see when something goes wrong.

export const INSTALL_COMMAND = 'pip install infill-ls';

export function serverNotFoundMessage(command: string): string {
  return (
    `infill: the language server "${command}" was not found. ` +
    `Install it with \`${INSTALL_COMMAND}\` (in the Python environment of your choice), ` +
    'or set "infill.server.path" to the full path of the infill-ls executable.'
  );
}

export function serverGaveUpMessage(crashes: number): string {
  return (
    `infill: the language server stopped unexpectedly ${crashes} times in a row and will not be restarted. ` +
    'See the log for the reason, then use "infill: Restart Server".'
  );
}

export function serverStartFailedMessage(reason: string): string {
  return `infill: the language server failed to start: ${reason}. See the log for details.`;
}
