// A source with JavaScript on (Tor Browser "Standard"/"Safer") sends a large file through the
// submit page's resumable uploads while the connection breaks. Run by tests/test_resumable_browser.py:
//   node resumable.js JOB.json  -> prints one JSON result.
// JOB: { base, chromium, file, message }
'use strict';

const fs = require('fs');
const { chromium } = require('playwright-core');

const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const result = { errors: [], statuses: [] };
  const browser = await chromium.launch({ executablePath: job.chromium, args: LAUNCH_ARGS });
  try {
    const context = await browser.newContext({ viewport: { width: 360, height: 740 } });
    const page = await context.newPage();
    result.console = [];
    page.on('console', (message) => result.console.push(message.text()));
    page.on('pageerror', (error) => result.errors.push(`page error: ${error.message}`));
    await page.goto(`${job.base}/start`);
    const codename = (await page.textContent('#codename')).trim();
    await page.fill('#codename-check', codename.split(' ').pop());
    await page.click('#confirm-codename');
    await page.waitForSelector('#submit-form');
    result.resumeOn = await page.isVisible('#resume-on');
    result.resumeOff = await page.isVisible('#resume-off');
    result.endpoint = await page.getAttribute('#resumable', 'data-endpoint');
    await page.fill('[name="message"]', job.message);
    await page.setInputFiles('#files', job.file);
    // Record what the source reads while it goes (progress, "trying again").
    await page.exposeFunction('recordStatus', (text) => result.statuses.push(text));
    await page.evaluate(() => {
      const status = document.getElementById('upload-status');
      new MutationObserver(() => window.recordStatus(status.textContent))
        .observe(status, { childList: true, characterData: true, subtree: true });
    });
    await page.click('#submit-form [type="submit"]');
    await page.waitForSelector('#submitted', { timeout: 240000 });
    result.submitted = (await page.textContent('#submitted')).trim();
    await context.close();
  } catch (error) {
    result.errors.push(error.message);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => { process.stderr.write(`${error.stack}\n`); process.exit(1); });
