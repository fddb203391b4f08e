// Opens an advocacy report (amanat-review report) from disk in headless Chromium, as an
// investigator would on the offline workstation, and records every request the page makes.
// Driven by tests/test_review_report.py:
//   node report.js JOB   JOB: { chromium, pages: [{ file, screenshot }] }
// Prints JSON: per page its requests (all URLs other than the file itself), the document's
// lang and dir, the number of tables and inline SVG charts, and the text direction of the body.
'use strict';

const fs = require('fs');
const { chromium } = require('playwright-core');

const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function open(browser, item) {
  const context = await browser.newContext({ viewport: { width: 900, height: 1200 } });
  const requests = [];
  const target = `file://${item.file}`;
  context.on('request', (request) => { if (request.url() !== target) requests.push(request.url()); });
  const page = await context.newPage();
  await page.goto(target, { waitUntil: 'load' });
  const facts = await page.evaluate(() => ({
    lang: document.documentElement.lang,
    dir: document.documentElement.dir,
    direction: getComputedStyle(document.body).direction,
    tables: document.querySelectorAll('table').length,
    charts: document.querySelectorAll('figure svg').length,
    chartTexts: Array.from(document.querySelectorAll('figure svg text')).length,
  }));
  await page.emulateMedia({ media: 'print' });
  await page.screenshot({ path: item.screenshot, fullPage: true });
  await context.close();
  return { ...facts, requests };
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const browser = await chromium.launch({ executablePath: job.chromium, args: LAUNCH_ARGS });
  const results = [];
  try {
    for (const item of job.pages) { results.push(await open(browser, item)); }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify({ pages: results }));
}

main().catch((error) => { process.stderr.write(`${error.stack}\n`); process.exit(1); });
