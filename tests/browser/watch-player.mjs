// Opens a Banyan watch page in headless Chromium as it is (WebRTC first,
// LL-HLS as the fallback) and reports which player it chose and what it
// presented.
//
// Usage: node tests/browser/watch-player.mjs WATCH_URL [--seconds 5] [--timeout 30]
//                                                      [--caption-text TEXT]...
// Needs `npm ci --prefix web` (playwright-core) and /usr/bin/chromium (or
// CHROMIUM=path). Prints one JSON line: `player` (the page's own label,
// "WebRTC" or "LL-HLS"), the time from load to the first presented frame
// (`firstFrameMs`), presented frames over --seconds after it, the video's
// size, the texts of the caption cues of its text tracks (`cueTexts`, lines
// joined by spaces) and the page's console warnings. Exits 0 when frames
// were presented and, with --caption-text (any number), a cue had one of
// these texts.

import { launch } from './chromium.mjs';

const args = process.argv.slice(2);
const opts = { url: null, seconds: 5, timeout: 30, texts: [] };
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--seconds') opts.seconds = Number(args[++i]);
  else if (args[i] === '--caption-text') opts.texts.push(args[++i]);
  else if (args[i] === '--timeout') opts.timeout = Number(args[++i]);
  else if (!opts.url) opts.url = args[i];
}
if (!opts.url) {
  console.error('usage: watch-player.mjs WATCH_URL [--seconds N] [--timeout S]');
  process.exit(2);
}

const result = { ok: false, player: null, warnings: [], errors: [], reason: null };

const { context, finish } = await launch('banyan-watch-', opts.timeout, result, { loopback: true });

try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => result.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'warning') result.warnings.push(m.text()); });
  await page.goto(opts.url, { waitUntil: 'load', timeout: 15000 });
  const out = await page.evaluate(async ({ seconds, timeout }) => {
    const v = document.getElementById('video');
    const t0 = performance.now();
    const f = { n: 0, first: null };
    const onFrame = (now) => {
      f.n += 1;
      if (f.first === null) f.first = now;
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
    const deadline = t0 + timeout * 1000;
    while (f.first === null && performance.now() < deadline) {
      await new Promise((ok) => setTimeout(ok, 20));
    }
    if (f.first === null) return { player: document.body.dataset.player || null };
    const n0 = f.n;
    await new Promise((ok) => setTimeout(ok, seconds * 1000));
    return {
      player: document.body.dataset.player || null,
      label: document.getElementById('player').textContent,
      firstFrameMs: Math.round(f.first - t0),
      frames: f.n - n0,
      width: v.videoWidth,
      height: v.videoHeight,
      cueTexts: Array.from(v.textTracks).flatMap((t) => Array.from(t.cues || [])
        .map((c) => String(c.text).replace(/\s*\n\s*/g, ' '))),
    };
  }, { seconds: opts.seconds, timeout: opts.timeout });
  Object.assign(result, out);
  const matched = opts.texts.length === 0
    || (out.cueTexts || []).some((t) => opts.texts.includes(t));
  result.ok = (out.frames || 0) > 0 && matched;
  if (!(out.frames > 0)) result.reason = 'no frames';
  else if (!matched) result.reason = 'no expected caption text';
} catch (e) {
  result.reason = String(e);
}
await finish();
