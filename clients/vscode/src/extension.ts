// The VS Code side: starts infill-ls with vscode-languageclient, which registers the inline
// completion provider itself when the server advertises `inlineCompletionProvider`.
// The decisions (settings, restarts, messages, status texts) live in vscode-free modules.
import * as vscode from 'vscode';
import {
  CloseAction,
  CloseHandlerResult,
  DidChangeConfigurationNotification,
  ErrorAction,
  LanguageClient,
  LanguageClientOptions,
  ServerCapabilities,
  StaticFeature,
  WorkDoneProgressBegin,
  WorkDoneProgressEnd,
  WorkDoneProgressReport,
} from 'vscode-languageclient/node';
import { findExecutable } from './executable';
import { INSTALL_COMMAND, serverGaveUpMessage, serverNotFoundMessage, serverStartFailedMessage } from './messages';
import { RestartPolicy } from './restartPolicy';
import { SECTION, serverLaunch, serverSettings } from './settings';
import { LoadingProgress, ServerStatus, StatusView, statusBarContent } from './status';

const STATUS_REQUEST = 'infill/status';
const STATUS_CHANGED_NOTIFICATION = 'infill/statusChanged';

let controller: ServerController | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('infill', { log: true });
  const statusItem = vscode.window.createStatusBarItem('infill.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'infill';
  statusItem.command = 'infill.showLog';
  statusItem.show();
  const server = new ServerController(log, statusItem);
  controller = server;
  context.subscriptions.push(
    log,
    statusItem,
    vscode.commands.registerCommand('infill.enableSuggestions', () => setSuggestionsEnabled(true)),
    vscode.commands.registerCommand('infill.disableSuggestions', () => setSuggestionsEnabled(false)),
    vscode.commands.registerCommand('infill.restartServer', () => server.restart()),
    vscode.commands.registerCommand('infill.showLog', () => log.show()),
    vscode.workspace.onDidChangeConfiguration((event) => {
      // The other settings reach the running server through workspace/configuration.
      if (event.affectsConfiguration(`${SECTION}.server`)) {
        void server.restart();
      }
    }),
  );
  await server.start();
}

/** VS Code waits for this promise, so the server gets its shutdown and exit messages. */
export async function deactivate(): Promise<void> {
  await controller?.stop();
  controller = undefined;
}

/** The server's settings as VS Code has them for `scope`, ready to send. */
function currentServerSettings(scope?: vscode.Uri): Record<string, unknown> {
  // The JSON round trip keeps the setting values and drops the accessor methods.
  return serverSettings(JSON.parse(JSON.stringify(vscode.workspace.getConfiguration(SECTION, scope))));
}

function suggestionsEnabled(document: vscode.TextDocument): boolean {
  return vscode.workspace.getConfiguration(SECTION, document).get<boolean>('enable', true);
}

/** Sets `infill.enable` where it is set now (so a workspace value does not win over it), else in user settings. */
async function setSuggestionsEnabled(enabled: boolean): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const current = config.inspect<boolean>('enable');
  const target = current?.workspaceFolderValue !== undefined
    ? vscode.ConfigurationTarget.WorkspaceFolder
    : current?.workspaceValue !== undefined
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
  await config.update('enable', enabled, target);
}

function firstWorkspaceFolder(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

/**
 * Ignores the server's `completionProvider`: VS Code shows the same suggestions as ghost text,
 * and a second request per keystroke would compete with the inline one for the model.
 */
class InlineOnlyFeature implements StaticFeature {
  fillClientCapabilities(): void {}
  preInitialize(capabilities: ServerCapabilities): void {
    // Runs before the built-in features read the capabilities (on a copy the client keeps).
    delete capabilities.completionProvider;
  }
  initialize(): void {}
  getState() {
    return { kind: 'static' as const };
  }
  clear(): void {}
}

/** Owns the language client: starting, restarting after crashes, and the status bar. */
class ServerController {
  private client: LanguageClient | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly restartPolicy = new RestartPolicy();
  private view: StatusView = { state: 'starting' };
  private progress: LoadingProgress | undefined;
  private loadingProgressToken: string | number | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly log: vscode.LogOutputChannel,
    private readonly statusItem: vscode.StatusBarItem,
  ) {}

  start(): Promise<void> {
    return this.serialized(() => this.startClient());
  }

  /** Stops the server and starts it with the current settings and a fresh count of restarts. */
  restart(): Promise<void> {
    return this.serialized(async () => {
      this.cancelRestartTimer();
      await this.stopClient();
      this.restartPolicy.reset();
      await this.startClient();
    });
  }

  stop(): Promise<void> {
    return this.serialized(async () => {
      this.cancelRestartTimer();
      await this.stopClient();
    });
  }

  /** One start or stop at a time: two quick settings changes must not start two servers. */
  private serialized(action: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(action, action);
    return this.queue;
  }

  private cancelRestartTimer(): void {
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  private async startClient(): Promise<void> {
    const folder = firstWorkspaceFolder();
    const launch = serverLaunch(vscode.workspace.getConfiguration(SECTION).get('server'), folder);
    const executable = findExecutable(launch.command, process.env);
    if (executable === undefined) {
      const message = serverNotFoundMessage(launch.command);
      this.log.error(message);
      this.show({ state: 'stopped', message });
      void this.offerInstallHelp(message);
      return;
    }
    this.log.info(`starting ${[executable, ...launch.args].join(' ')}`);
    const client: LanguageClient = new LanguageClient(
      'infill',
      'infill',
      // No `transport`: with TransportKind.stdio the client would append `--stdio` to the arguments.
      { command: executable, args: launch.args, options: { cwd: folder } },
      this.clientOptions((): LanguageClient => client),
    );
    client.registerFeature(new InlineOnlyFeature());
    this.client = client;
    client.onNotification(STATUS_CHANGED_NOTIFICATION, (status: ServerStatus) => this.show(status));
    this.restartPolicy.started(Date.now());
    this.show({ state: 'starting' });
    try {
      await client.start();
    } catch (error) {
      // A server that exits during start-up also closes the connection: wait for that
      // handler, which schedules a restart, before deciding that the start itself failed.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.client === client && this.restartTimer === undefined && this.view.state !== 'stopped') {
        const message = serverStartFailedMessage(error instanceof Error ? error.message : String(error));
        this.log.error(message);
        this.show({ state: 'stopped', message });
        void this.offerLog(message);
      }
      return;
    }
    const serverInfo = client.initializeResult?.serverInfo;
    this.log.info(`started ${serverInfo?.name ?? 'the server'} ${serverInfo?.version ?? ''}`.trimEnd());
    if (!client.initializeResult?.capabilities.inlineCompletionProvider) {
      this.log.warn('the server does not offer inline completions (textDocument/inlineCompletion): is it infill-ls?');
    }
    try {
      this.show(await client.sendRequest<ServerStatus>(STATUS_REQUEST, {}));
    } catch (error) {
      this.log.warn(`${STATUS_REQUEST} failed: ${error}`);
    }
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client?.needsStop()) {
      try {
        await client.dispose();
      } catch (error) {
        this.log.warn(`stopping the language server: ${error}`);
      }
    }
  }

  private clientOptions(currentClient: () => LanguageClient): LanguageClientOptions {
    return {
      // Every file and unsaved buffer, in any language: the model completes any text.
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.log,
      initializationOptions: () => currentServerSettings(),
      synchronize: { configurationSection: SECTION },
      initializationFailedHandler: () => false,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => this.serverStopped(currentClient()),
      },
      middleware: {
        workspace: {
          // Answer for "infill" with the same object as the initialization options.
          configuration: async (params, token, next) => {
            const answers = await next(params, token);
            if (!Array.isArray(answers)) {
              return answers;
            }
            return params.items.map((item, index) =>
              item.section === SECTION
                ? currentServerSettings(item.scopeUri ? vscode.Uri.parse(item.scopeUri) : undefined)
                : answers[index],
            );
          },
          didChangeConfiguration: async () => {
            await currentClient().sendNotification(DidChangeConfigurationNotification.type, {
              settings: { [SECTION]: currentServerSettings() },
            });
          },
        },
        // The model load's progress goes to our status bar item instead of a second one of
        // VS Code's; any other progress keeps the default display.
        handleWorkDoneProgress: (token, params, next) => {
          if (params.kind === 'begin' && this.view.state === 'loading') {
            this.loadingProgressToken = token;
          }
          if (token !== this.loadingProgressToken) {
            next(token, params);
            return;
          }
          if (params.kind === 'end') {
            this.loadingProgressToken = undefined;
          }
          this.showProgress(params);
        },
        provideInlineCompletionItems: (document, position, context, token, next) =>
          suggestionsEnabled(document) ? next(document, position, context, token) : null,
      },
    };
  }

  /** The connection closed without our asking: restart with backoff, or give up and say so. */
  private serverStopped(client: LanguageClient): CloseHandlerResult {
    if (client !== this.client) {
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const decision = this.restartPolicy.stopped(Date.now());
    if (decision.restart) {
      this.log.warn(`the language server stopped; restart ${decision.attempt} in ${decision.delayMs} ms`);
      this.show({ state: 'restarting', delayMs: decision.delayMs, attempt: decision.attempt });
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        void this.serialized(async () => {
          await this.stopClient();
          await this.startClient();
        });
      }, decision.delayMs);
    } else {
      const message = serverGaveUpMessage(decision.crashes);
      this.log.error(message);
      this.show({ state: 'stopped', message });
      void this.offerLog(message);
    }
    return { action: CloseAction.DoNotRestart, handled: true };
  }

  private showProgress(params: WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd): void {
    if (params.kind === 'end') {
      this.progress = undefined;
    } else {
      this.progress = { message: params.message ?? this.progress?.message, percentage: params.percentage };
    }
    this.render();
  }

  private show(view: StatusView): void {
    this.view = view;
    if (view.state !== 'loading') {
      this.progress = undefined;
    }
    this.render();
  }

  private render(): void {
    const content = statusBarContent(this.view, this.progress);
    this.statusItem.text = content.text;
    this.statusItem.tooltip = content.tooltip;
    this.statusItem.backgroundColor = content.isError ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  private async offerInstallHelp(message: string): Promise<void> {
    const openSettings = 'Open Settings';
    const copyCommand = `Copy "${INSTALL_COMMAND}"`;
    const choice = await vscode.window.showErrorMessage(message, openSettings, copyCommand);
    if (choice === openSettings) {
      await vscode.commands.executeCommand('workbench.action.openSettings', `${SECTION}.server.path`);
    } else if (choice === copyCommand) {
      await vscode.env.clipboard.writeText(INSTALL_COMMAND);
    }
  }

  private async offerLog(message: string): Promise<void> {
    const showLog = 'Show Log';
    const restart = 'Restart Server';
    const choice = await vscode.window.showErrorMessage(message, showLog, restart);
    if (choice === showLog) {
      this.log.show();
    } else if (choice === restart) {
      await this.restart();
    }
  }
}
