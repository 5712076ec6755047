import { chromium } from '@playwright/test';
import { chromiumArgs } from '../playwright.config.mjs';
import { startRelay } from '../playwright/relay.mjs';
process.env.RELAY_BIN ??= 'target/release/relay-server';
const relay = await startRelay();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs });
const pages = (process.env.PAGES ?? 'ta.html,tb.html').split(',');
const res = Object.fromEntries(pages.map((p) => [p, []]));
const rounds = Number(process.env.R ?? 3), n = Number(process.env.N ?? 8);
for (let r = 0; r < rounds; r++) for (let i = 0; i < n; i++) for (const p of pages) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${relay.url}/${p}`);
  res[p].push(await page.waitForFunction(() => window.connectedAt).then((h) => h.jsonValue()));
  await ctx.close();
}
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return Math.round(s[s.length >> 1]); };
for (const p of pages) {
  const per = []; for (let r = 0; r < rounds; r++) per.push(med(res[p].slice(r * n, (r + 1) * n)));
  console.log(p, 'p50', med(res[p]), 'per round', per.join('/'));
}
await browser.close();
process.exit(0);
