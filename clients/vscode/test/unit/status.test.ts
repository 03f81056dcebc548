import * as assert from 'node:assert/strict';
import { shortModelName, statusBarContent } from '../../src/status';

describe('status bar', () => {
  it('shows the model, precision and device when ready', () => {
    const content = statusBarContent({
      state: 'ready', model: 'bigcode/starcoder2-3b', precision: 'bf16', device: 'cuda:0', lastLatencyMs: 41.6, version: '0.1.0',
    });
    assert.equal(content.text, '$(sparkle) infill: starcoder2-3b · bf16 · cuda:0');
    assert.match(content.tooltip, /model: bigcode\/starcoder2-3b/);
    assert.match(content.tooltip, /last suggestion: 42 ms/);
    assert.equal(content.isError, false);
  });

  it('shows the loading progress from $/progress', () => {
    const content = statusBarContent({ state: 'loading', model: 'm' }, { percentage: 42.4, message: 'reading weights' });
    assert.equal(content.text, '$(loading~spin) infill: loading 42%');
    assert.match(content.tooltip, /reading weights/);
    assert.equal(statusBarContent({ state: 'loading' }).text, '$(loading~spin) infill: loading');
  });

  it('marks errors and says that a click shows the log', () => {
    const error = statusBarContent({ state: 'error', message: 'CUDA out of memory' });
    assert.equal(error.isError, true);
    assert.match(error.tooltip, /CUDA out of memory/);
    assert.match(error.tooltip, /show the log/);
    assert.equal(statusBarContent({ state: 'stopped', message: 'gave up' }).isError, true);
    assert.equal(statusBarContent({ state: 'disabled' }).text, '$(circle-slash) infill: off');
    assert.equal(statusBarContent({ state: 'disabled' }).isError, false);
  });

  it('shortens model ids and paths to their last part', () => {
    assert.equal(shortModelName('/models/starcoder2-7b/'), 'starcoder2-7b');
    assert.equal(shortModelName('bigcode/starcoder2-15b'), 'starcoder2-15b');
    assert.equal(shortModelName(''), undefined);
  });
});
