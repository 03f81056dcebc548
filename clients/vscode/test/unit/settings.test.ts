import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SECTION, serverLaunch, serverSettings } from '../../src/settings';

interface SettingSchema {
  type?: string | string[];
  default?: unknown;
  description?: string;
  markdownDescription?: string;
}

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '../../../package.json'), 'utf8'));
const schema: Record<string, SettingSchema> = manifest.contributes.configuration.properties;

/** The `infill` tree VS Code builds from the contributed defaults ("infill.server.path" → server.path). */
function defaultConfigTree(): Record<string, unknown> {
  const tree: Record<string, any> = {};
  for (const [key, setting] of Object.entries(schema)) {
    const parts = key.split('.').slice(1);
    let node = tree;
    for (const part of parts.slice(0, -1)) {
      node = node[part] ??= {};
    }
    node[parts[parts.length - 1]] = setting.default;
  }
  return tree;
}

describe('settings → initialization options', () => {
  it('forwards every server setting of the interface under its own name, and nothing of the client', () => {
    const options = serverSettings({
      ...defaultConfigTree(),
      model: '/models/starcoder2-3b',
    });
    // remoteModel's default is "" (not set), so it is left out.
    assert.deepEqual(Object.keys(options).sort(), [
      'apiKeyEnv', 'backend', 'contextExclude', 'contextFiles', 'contextTokens', 'debounceMs', 'device', 'enable',
      'endpoint', 'fastDecode', 'idleUnloadMinutes', 'loadWaitMs', 'logLevel', 'maxContextFiles', 'maxNewTokens',
      'model', 'multiline', 'promptLookup', 'quantization', 'requestTimeoutMs', 'template', 'timeoutMs',
      'trustRemoteCode',
    ]);
    assert.equal(options.model, '/models/starcoder2-3b');
    assert.equal(options.maxNewTokens, 64);
    assert.equal(options.contextTokens, 2048);
    assert.equal(options.debounceMs, 30);
    assert.equal(options.timeoutMs, 2000);
    assert.equal(options.quantization, 'auto');
    assert.equal(options.multiline, 'auto');
    assert.equal(options.enable, true);
    assert.equal(options.trustRemoteCode, false);
  });

  it('leaves out values that mean "not set" but keeps false and 0', () => {
    const options = serverSettings({ model: '', device: '  ', template: null, quantization: undefined, enable: false, debounceMs: 0 });
    assert.deepEqual(options, { enable: false, debounceMs: 0 });
  });

  it('passes settings it does not know yet through unchanged', () => {
    assert.deepEqual(serverSettings({ backend: 'openai', endpoint: 'http://localhost:8000' }), {
      backend: 'openai',
      endpoint: 'http://localhost:8000',
    });
  });

  it('drops the methods of a VS Code configuration object', () => {
    assert.deepEqual(serverSettings({ model: 'bigcode/starcoder2-3b', get: () => 1, has: () => true }), {
      model: 'bigcode/starcoder2-3b',
    });
  });

  it('describes and types every contributed setting in the "infill" section', () => {
    for (const [key, setting] of Object.entries(schema)) {
      assert.ok(key.startsWith(`${SECTION}.`), key);
      assert.ok(setting.type, `${key} has no type`);
      assert.ok(setting.description ?? setting.markdownDescription, `${key} has no description`);
      assert.ok('default' in setting, `${key} has no default`);
    }
  });
});

describe('settings → server command', () => {
  it('runs infill-ls from PATH with no arguments by default', () => {
    assert.deepEqual(serverLaunch(undefined, '/work'), { command: 'infill-ls', args: [] });
    assert.deepEqual(serverLaunch({ path: ' ', args: [] }, '/work'), { command: 'infill-ls', args: [] });
  });

  it('uses infill.server.path and infill.server.args', () => {
    assert.deepEqual(serverLaunch({ path: '/usr/bin/python3', args: ['-m', 'infill_ls', '--model', '/m'] }, '/work'), {
      command: '/usr/bin/python3',
      args: ['-m', 'infill_ls', '--model', '/m'],
    });
  });

  it('expands ~ and resolves relative paths against the workspace folder, but not bare names', () => {
    assert.equal(serverLaunch({ path: '~/.venv/bin/infill-ls' }, '/work', '/home/me').command, '/home/me/.venv/bin/infill-ls');
    assert.equal(serverLaunch({ path: '.venv/bin/infill-ls' }, '/work').command, '/work/.venv/bin/infill-ls');
    assert.equal(serverLaunch({ path: 'python3' }, '/work').command, 'python3');
  });
});
