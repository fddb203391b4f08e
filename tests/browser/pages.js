// Drives Debian's /usr/bin/chromium through every source page of a running Amanat server.
// Run by tests/test_pages_browser.py:  node pages.js JOB.json  -> prints one JSON result.
//
// JOB: { base, locales: [...], screenshot_locales: [...], screenshot_dir,
//        reply_codename,  (a source with a reply waiting: its page shows a delete form)
//        submissions: [{ locale, answers: {name: value|[values]},
//                        files: [{ field, name, mimeType, text }] }] }
//
// Two kinds of browser context, as the pages are really met:
//  * JavaScript enabled, only to inject axe-core: every page in every locale is audited at 320 px
//    wide, and the page width is measured there (no sideways scrolling) once its stylesheet has
//    applied, and again with style.css blocked (the HTML alone must fit too);
//  * JavaScript disabled (Tor Browser at "Safest"): testimonies are submitted with plain HTML
//    forms, and phone-sized screenshots (360x740) are saved.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const PHONE = { width: 360, height: 740 };
const NARROW = { width: 320, height: 640 };

async function axe(page) {
  // Injected over the DevTools protocol (Runtime.evaluate), which the page's CSP does not govern,
  // so the pages are audited with their strict CSP in force.
  if (!(await page.evaluate(() => Boolean(window.axe)))) { await page.evaluate(AXE_SOURCE); }
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')),
    }));
  });
}

// Waits until the page is the one the reader gets: loaded, fonts ready, and its stylesheets
// applied (styled) or absent (unstyled). A page measured before style.css applies measures the
// browser's default layout, which is what made the 320 px check flaky.
async function settle(page, styled) {
  await page.waitForLoadState('load');
  const sheets = await page.evaluate(async () => {
    await document.fonts.ready;
    return [...document.querySelectorAll('link[rel="stylesheet"]')].map((link) => {
      try { return link.sheet ? link.sheet.cssRules.length : -1; } catch (e) { return -2; }
    });
  });
  if (styled && (sheets.length === 0 || sheets.some((rules) => rules <= 0))) {
    throw new Error(`stylesheets not applied at measurement time: ${JSON.stringify(sheets)}`);
  }
  if (!styled && sheets.some((rules) => rules > 0)) {
    throw new Error('a stylesheet applied although the unstyled variant blocks it');
  }
}

async function measure(page) {
  return page.evaluate(() => {
    const width = document.documentElement.scrollWidth;  // the context is 320 px wide
    // When the page is too wide, name what sticks out, so a failure explains itself.
    const wide = width <= 320 ? [] : [...document.querySelectorAll('body *')]
      .filter((el) => { const b = el.getBoundingClientRect(); return b.left < -1 || b.right > 321; })
      .slice(0, 5)
      .map((el) => `<${el.tagName.toLowerCase()} id="${el.id}" class="${el.className}"> `
        + `${Math.round(el.getBoundingClientRect().width)} px: ${(el.textContent || '').slice(0, 60)}`);
    return {
      lang: document.documentElement.getAttribute('lang'),
      dir: document.documentElement.getAttribute('dir'),
      scripts: document.scripts.length,
      width, wide,
    };
  });
}

async function audit(page, locale, name, results, styled) {
  await settle(page, styled);
  const html = await measure(page);
  const record = { locale, page: name, url: new URL(page.url()).pathname, ...html,
    width320: html.width };
  if (styled) {
    results.audits.push({ ...record, violations: await axe(page) });
  } else {
    results.unstyled.push(record);
  }
}

async function fillAnswers(page, answers) {
  for (const [name, value] of Object.entries(answers)) {
    const values = Array.isArray(value) ? value : [value];
    const control = page.locator(`[name="${name}"]`).first();
    const type = await control.getAttribute('type');
    if (type === 'radio' || type === 'checkbox') {
      for (const v of values) { await page.check(`[name="${name}"][value="${v}"]`); }
    } else {
      await control.fill(values[0]);
    }
  }
}

// Every page in one locale, with JavaScript on (for axe only). styled=false blocks style.css:
// the page the reader sees while the stylesheet is still on its way over Tor, or never arrives.
async function auditLocale(browser, job, locale, styled, results) {
  const { base } = job;
  // Audited at 320 px, the narrowest phone: a page must not scroll sideways there.
  const context = await browser.newContext({ viewport: NARROW, locale: locale.replace('_', '-') });
  if (!styled) { await context.route('**/static/style.css', (route) => route.abort()); }
  const page = await context.newPage();
  const check = (name) => audit(page, locale, name, results, styled);
  try {
    await page.goto(`${base}/?l=${locale}`);
    await check('landing');
    await page.click('#start');
    const codename = (await page.textContent('#codename')).trim();
    const lastGroup = codename.split(' ').pop();
    await check('codename');
    // A wrong last group: the page explains and shows the codename again.
    await page.fill('#codename-check', lastGroup === '0000' ? '1111' : '0000');
    await page.click('#confirm-codename');
    await page.waitForSelector('#start-error');
    await check('codename-error');
    await page.fill('#codename-check', lastGroup);
    await page.click('#confirm-codename');
    await page.waitForSelector('#submit-form');
    await page.click('#show-codename summary');  // audited open: the codename shown again
    await check('submit');
    // A date that cannot exist: the page comes back with the errors next to the fields.
    await fillAnswers(page, { message: 'axe', q_when: '31/2/2024', q_documents: ['none', 'acc'] });
    await page.click('#submit-form [type="submit"]');
    await page.waitForSelector('#q-errors');
    await check('submit-errors');
    await page.fill('[name="q_when"]', '2024');
    await page.uncheck('[name="q_documents"][value="none"]');
    // A long name without spaces: the list of what arrived must still fit 320 px.
    await page.setInputFiles('#files', { name: `${'testimony_of_the_night_raid_'.repeat(4)}.pdf`,
      mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 axe', 'utf8') });
    await page.click('#submit-form [type="submit"]');
    await page.waitForSelector('#submitted');
    await check('success');
    await page.goto(`${base}/login`);
    await check('login');
    await page.fill('#login-form [name="codename"]', '1234');
    await page.click('#login-form [type="submit"]');
    await page.waitForSelector('#login-error');
    await check('login-error');
    await page.fill('#login-form [name="codename"]', codename);
    await page.click('#login-form [type="submit"]');
    await page.waitForSelector('#received li .filename');
    await check('replies');
    // Another source, with a reply waiting: each reply has its delete form.
    await page.goto(`${base}/login`);
    await page.fill('#login-form [name="codename"]', job.reply_codename);
    await page.click('#login-form [type="submit"]');
    await page.waitForSelector('form[id^="delete-reply"]');
    await check('reply-delete');
    await page.goto(`${base}/no-such-page`);
    await check('error');
  } catch (error) {
    results.errors.push(`${locale} ${styled ? 'audit' : 'unstyled'}: ${error.message}`);
  } finally {
    await context.close();
  }
}

async function shot(page, dir, name) {
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

// A whole testimony with JavaScript off: landing, codename, questionnaire, success.
async function submitWithoutJavaScript(browser, base, job, submission, results) {
  const { locale } = submission;
  const context = await browser.newContext({
    viewport: PHONE, javaScriptEnabled: false, locale: locale.replace('_', '-'),
  });
  const page = await context.newPage();
  const shots = job.screenshot_locales.includes(locale);
  const record = { locale, screenshots: [] };
  try {
    await page.goto(`${base}/?l=${locale}`);
    if (shots) { record.screenshots.push(await shot(page, job.screenshot_dir, `landing-${locale}`)); }
    await page.click('#start');
    record.codename = (await page.textContent('#codename')).trim();
    if (shots) { record.screenshots.push(await shot(page, job.screenshot_dir, `codename-${locale}`)); }
    await page.reload();  // the codename stays
    record.reloaded = (await page.textContent('#codename')).trim();
    await page.fill('#codename-check', record.codename.split(' ').pop());
    await page.click('#confirm-codename');
    await page.waitForSelector('#submit-form');
    if (shots) { record.screenshots.push(await shot(page, job.screenshot_dir, `submit-${locale}`)); }
    await fillAnswers(page, submission.answers);
    for (const { field, name, mimeType, text } of submission.files || []) {
      await page.setInputFiles(`#submit-form input[name="${field}"]`,
        { name, mimeType, buffer: Buffer.from(text, 'utf8') });
    }
    if (shots) {
      const file = path.join(job.screenshot_dir, `submit-${locale}-full.png`);
      await page.screenshot({ path: file, fullPage: true });
      record.screenshots.push(file);
    }
    await page.click('#submit-form [type="submit"]');
    await page.waitForSelector('#submitted');
    record.submitted = (await page.textContent('#submitted')).trim();
    record.lang = await page.getAttribute('html', 'lang');
    record.dir = await page.getAttribute('html', 'dir');
    await page.reload();  // a GET: nothing is sent again
    record.reloaded_submitted = Boolean(await page.$('#submitted'));
    if (job.submissions[0].locale === locale) {
      await page.goto(`${base}/login`);
      await page.fill('#login-form [name="codename"]', job.reply_codename);
      await page.click('#login-form [type="submit"]');
      await page.click('form[id^="delete-reply"] [type="submit"]');
      await page.waitForSelector('#submit-form');
      record.replies_left = await page.$$eval('form[id^="delete-reply"]', (forms) => forms.length);
    }
  } catch (error) {
    results.errors.push(`${locale} submission: ${error.message}`);
  } finally {
    await context.close();
  }
  results.submissions.push(record);
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  fs.mkdirSync(job.screenshot_dir, { recursive: true });
  const results = { audits: [], unstyled: [], submissions: [], errors: [] };
  const browser = await chromium.launch({ executablePath: job.chromium || '/usr/bin/chromium',
    args: LAUNCH_ARGS });
  try {
    // Two locales at a time: each audit mostly waits on the server and on axe.
    const queue = job.locales.flatMap((locale) => [[locale, true], [locale, false]]);
    const worker = async () => {
      while (queue.length) { await auditLocale(browser, job, ...queue.shift(), results); }
    };
    await Promise.all([worker(), worker()]);
    for (const submission of job.submissions) {
      await submitWithoutJavaScript(browser, job.base, job, submission, results);
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => { process.stderr.write(`${error.stack}\n`); process.exit(1); });
