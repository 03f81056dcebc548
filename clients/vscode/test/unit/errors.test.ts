import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findExecutable } from '../../src/executable';
import { serverGaveUpMessage, serverNotFoundMessage, serverStartFailedMessage } from '../../src/messages';
import { RestartPolicy } from '../../src/restartPolicy';

describe('finding the server executable', () => {
  let dir: string;
  let bin: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'infill-test-'));
    bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  function writeFile(file: string, mode: number): string {
    fs.writeFileSync(file, '#!/bin/sh\n');
    fs.chmodSync(file, mode);
    return file;
  }

  it('finds a bare name in a PATH folder', () => {
    const server = writeFile(path.join(bin, 'infill-ls'), 0o755);
    assert.equal(findExecutable('infill-ls', { PATH: [path.join(dir, 'empty'), bin].join(':') }, 'linux'), server);
  });

  it('reports a missing server as not found', () => {
    assert.equal(findExecutable('infill-ls', { PATH: bin }, 'linux'), undefined);
    assert.equal(findExecutable('infill-ls', {}, 'linux'), undefined);
    assert.equal(findExecutable(path.join(bin, 'infill-ls'), { PATH: bin }, 'linux'), undefined);
  });

  it('skips files that cannot be run and folders with the same name', () => {
    writeFile(path.join(bin, 'infill-ls'), 0o644);
    fs.mkdirSync(path.join(dir, 'infill-ls'));
    assert.equal(findExecutable('infill-ls', { PATH: `${bin}:${dir}` }, 'linux'), undefined);
  });

  it('takes a path with a folder as it is, without looking at PATH', () => {
    const server = writeFile(path.join(dir, 'infill-ls'), 0o755);
    assert.equal(findExecutable(server, { PATH: '' }, 'linux'), server);
    writeFile(path.join(bin, 'infill-ls'), 0o755);
    assert.equal(findExecutable('./infill-ls', { PATH: bin }, 'linux'), undefined);
  });

  it('on Windows, tries the PATHEXT extensions', () => {
    const server = writeFile(path.join(bin, 'infill-ls.EXE'), 0o644);
    assert.equal(findExecutable('infill-ls', { PATH: bin, PATHEXT: '.COM;.EXE' }, 'win32'), server);
  });
});

describe('error messages', () => {
  it('says how to install a missing server and where to set its path', () => {
    const message = serverNotFoundMessage('infill-ls');
    assert.match(message, /"infill-ls" was not found/);
    assert.match(message, /pip install infill-ls/);
    assert.match(message, /infill\.server\.path/);
  });

  it('says how often the server crashed and what to do', () => {
    assert.match(serverGaveUpMessage(6), /6 times/);
    assert.match(serverGaveUpMessage(6), /Restart Server/);
    assert.match(serverStartFailedMessage('spawn EACCES'), /spawn EACCES/);
  });
});

describe('restarting a server that stopped', () => {
  const options = { maxRestarts: 3, firstDelayMs: 1000, maxDelayMs: 3000, healthyRunMs: 60_000 };

  it('restarts with growing delays, then gives up', () => {
    const policy = new RestartPolicy(options);
    policy.started(0);
    assert.deepEqual(policy.stopped(10), { restart: true, delayMs: 1000, attempt: 1 });
    policy.started(1010);
    assert.deepEqual(policy.stopped(1020), { restart: true, delayMs: 2000, attempt: 2 });
    policy.started(3020);
    assert.deepEqual(policy.stopped(3030), { restart: true, delayMs: 3000, attempt: 3 });
    policy.started(6030);
    assert.deepEqual(policy.stopped(6040), { restart: false, crashes: 4 });
    assert.deepEqual(policy.stopped(6050), { restart: false, crashes: 4 });
  });

  it('starts counting again after the server ran for a healthy while', () => {
    const policy = new RestartPolicy(options);
    policy.started(0);
    policy.stopped(10);
    policy.started(1010);
    policy.stopped(1020);
    policy.started(2020);
    assert.deepEqual(policy.stopped(2020 + 60_000), { restart: true, delayMs: 1000, attempt: 1 });
  });

  it('gives the full number of restarts again after a restart by hand', () => {
    const policy = new RestartPolicy(options);
    for (let i = 0; i < 4; i++) {
      policy.stopped(0);
    }
    assert.equal(policy.stopped(0).restart, false);
    policy.reset();
    assert.deepEqual(policy.stopped(0), { restart: true, delayMs: 1000, attempt: 1 });
  });
});
