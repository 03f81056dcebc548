// End-to-end check in a real VS Code: drives code-server in Debian's Chromium with playwright-core.
// Run by tests/test_vscode.py, which starts code-server with the extension installed:
//   node test/e2e/ghostText.mjs '{"url": ..., "file": "main.py", "type": "...", "model": "...",
//     "missingServer": "...", "screenshot": "...", "timeoutMs": ...}'
// 1. waits for the model to load (recording the status bar texts), types, waits for the ghost text, accepts it with Tab, saves;
// 2. runs "infill: Disable Suggestions" and waits for the status bar to say so;
// 3. points infill.server.path at a server that does not exist (a live settings change)
//    and waits for the notification that says how to install it.
// Prints one JSON object on stdout: what was shown. Progress goes to stderr.
import { chromium } from 'playwright-core';

const options = JSON.parse(process.argv[2]);
const log = (message) => console.error(`[e2e ${new Date().toISOString().slice(11, 23)}] ${message}`);

// Known to work with Debian's Chromium on these machines (see shared NOTES.md).
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const GHOST_TEXT = '.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text';

const browser = await chromium.launch({ executablePath: options.chromium ?? '/usr/bin/chromium', args: CHROMIUM_FLAGS });
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(options.timeoutMs);
try {
  log(`opening ${options.url}`);
  await page.goto(options.url);
  await page.locator('.monaco-workbench .part.statusbar').waitFor();

  // The model loads in the background; the status bar says when it is ready.
  // Record every text the infill item shows on the way (starting, loading N%, ready).
  await page.evaluate(() => {
    window.infillStatusTexts = [];
    const record = () => {
      for (const item of document.querySelectorAll('.part.statusbar .statusbar-item')) {
        const text = item.textContent.trim();
        if (text.startsWith('infill') && window.infillStatusTexts.at(-1) !== text) {
          window.infillStatusTexts.push(text);
        }
      }
    };
    new MutationObserver(record).observe(document.querySelector('.part.statusbar'), {
      subtree: true, childList: true, characterData: true,
    });
    record();
  });
  const status = page.locator('.part.statusbar .statusbar-item', { hasText: 'infill' }).first();
  await status.waitFor();
  await page.waitForFunction(
    ({ model }) => [...document.querySelectorAll('.part.statusbar .statusbar-item')]
      .some((item) => item.textContent.includes(`infill: ${model}`)),
    { model: options.model },
  );
  const readyStatus = (await status.innerText()).trim();
  const statusTexts = await page.evaluate(() => window.infillStatusTexts);
  log(`status bar: ${statusTexts.join(' → ')}`);

  log(`opening ${options.file}`);
  await page.keyboard.press('Control+P');
  await page.locator('.quick-input-widget input').waitFor();
  await page.keyboard.type(options.file);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: options.file }).first().waitFor();
  await page.keyboard.press('Enter');
  const editor = page.locator('.editor-instance .monaco-editor').first();
  await editor.locator('.view-lines').waitFor();
  // Click into the text so that the editor, not another panel, has the keyboard.
  await editor.locator('.view-lines').click();
  await page.keyboard.press('Control+End');

  log(`typing ${JSON.stringify(options.type)}`);
  await page.keyboard.type(options.type, { delay: 40 });
  await page.locator(GHOST_TEXT).first().waitFor();
  // Let the ghost text settle: a later keystroke's answer may replace the first one.
  await page.waitForTimeout(500);
  // The first line is drawn token by token inside the cursor's line, the others as lines below it.
  const ghostText = await page.evaluate(() => {
    const firstLine = [...document.querySelectorAll('.monaco-editor .ghost-text-decoration')].map((span) => span.textContent);
    const otherLines = [...document.querySelectorAll('.monaco-editor .ghost-text .view-line')].map((line) => line.textContent);
    return [firstLine.join(''), ...otherLines].join('\n').replaceAll('\u00a0', ' ');
  });
  log(`ghost text: ${JSON.stringify(ghostText)}`);
  await page.screenshot({ path: options.screenshot });

  await page.keyboard.press('Tab');
  await page.locator(GHOST_TEXT).first().waitFor({ state: 'detached' });
  await page.keyboard.press('Control+S');
  await page.locator('.tabs-container .tab.active.dirty').waitFor({ state: 'detached' });
  log('accepted with Tab and saved');

  // The command changes infill.enable; the server hears of it and reports the new state.
  log('running "infill: Disable Suggestions"');
  await page.keyboard.press('Control+Shift+P');
  await page.locator('.quick-input-widget input').waitFor();
  await page.keyboard.type('infill: Disable Suggestions');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Disable Suggestions' }).first().waitFor();
  await page.keyboard.press('Enter');
  await page.locator('.part.statusbar .statusbar-item', { hasText: 'infill: off' }).waitFor();
  const disabledStatus = (await status.innerText()).trim();
  log(`status bar: ${disabledStatus}`);

  log(`setting infill.server.path to ${options.missingServer} in the Settings editor`);
  await page.keyboard.press('Control+Comma');
  await page.locator('.settings-editor').waitFor();
  await page.keyboard.type('infill.server.path');
  // A machine-scoped setting: in code-server it lives in the Remote tab.
  await page.locator('.settings-editor .settings-tabs-widget .action-label', { hasText: 'Remote' }).click();
  const pathInput = page.locator('.settings-editor .setting-item-text input').first();
  await pathInput.waitFor();
  await pathInput.fill(options.missingServer);
  await pathInput.press('Tab');
  const notification = page.locator('.notifications-toasts .notification-toast', { hasText: 'was not found' }).first();
  await notification.waitFor();
  const notFoundMessage = (await notification.locator('.notification-list-item-message').innerText()).trim();
  log(`notification: ${notFoundMessage}`);
  console.log(JSON.stringify({ statusTexts, readyStatus, ghostText, disabledStatus, notFoundMessage }));
} catch (error) {
  if (options.failureScreenshot) {
    await page.screenshot({ path: options.failureScreenshot }).catch(() => {});
  }
  throw error;
} finally {
  await browser.close();
}
