// Glass-to-glass latency of HLS pages in headless Chromium, several pages at once.
//
// Usage: node bench/hls_g2g.mjs [--seconds 20] [--skip 8] LABEL=URL [LABEL=URL ...]
// Each URL is a page with a <video>: Banyan's watch page (WebRTC as shipped, or hls.js with
// `?player=hls`), or a page of bench/hls_bench.sh's own playing nginx-rtmp's HLS. The stream must come from `clock-frames gen`
// (bench/src/bin/clock-frames.rs): every frame shows the wall clock in ms when it was made,
// as 32 black/white cells. On every frame the page presents (requestVideoFrameCallback), the
// frame is drawn to a canvas, its cells read, and `Date.now() - shown clock` taken: frame made
// at the publisher -> frame presented in the page. Frames of the first --skip seconds after
// playback starts are left out. Prints one JSON line per page (p50/p95 ms, frames, hls.js's
// own latency estimate). Needs web/node_modules (playwright-core) and /usr/bin/chromium.
//
// Each page gets its own browser context. Pages opened as tabs of one context are not all
// rendered: headless Chromium runs the rendering steps of only the newest tab at full rate, so
// an older tab's requestVideoFrameCallback fires about once a second while its video plays
// all frames. The output also gives the callbacks per second and, from
// getVideoPlaybackQuality(), the frames decoded and dropped over the same window, so such a
// measurement artifact cannot pass for choppy playback again.

import { createRequire } from 'node:module';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'web', 'package.json'));
const { chromium } = require('playwright-core');

const opts = { seconds: 20, skip: 8, pages: [] };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--seconds') opts.seconds = Number(argv[++i]);
  else if (argv[i] === '--skip') opts.skip = Number(argv[++i]);
  else {
    const eq = argv[i].indexOf('=');
    opts.pages.push({ label: argv[i].slice(0, eq), url: argv[i].slice(eq + 1) });
  }
}
if (!opts.pages.length) {
  console.error('usage: hls_g2g.mjs [--seconds N] [--skip S] LABEL=URL ...');
  process.exit(2);
}

let browser;
const hardStop = setTimeout(() => finish(1), (opts.seconds + opts.skip + 60) * 1000);
async function finish(code) {
  clearTimeout(hardStop);
  try { if (browser) await browser.close(); } catch (_) { /* closing anyway */ }
  process.exit(code);
}

// Runs in the page: resolves with the measurements.
function measure({ skip, seconds }) {
  return new Promise((resolve) => {
    const deadline = performance.now() + (skip + seconds + 30) * 1000;
    const c = document.createElement('canvas');
    c.width = 320; c.height = 240;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    const lat = []; const hlsLat = [];
    let bad = 0; let first = null; let last = -1;
    // Callbacks and playback quality over the sampled window.
    let calls = 0; let q0 = null; let t0 = null;
    const done = (reason) => {
      lat.sort((a, b) => a - b);
      const q = (f) => (lat.length ? lat[Math.round((lat.length - 1) * f)] : null);
      hlsLat.sort((a, b) => a - b);
      const v = document.querySelector('video');
      let rates = {};
      if (q0 && v) {
        const q1 = v.getVideoPlaybackQuality();
        const s = (performance.now() - t0) / 1000;
        rates = {
          callbacks_per_s: +(calls / s).toFixed(1),
          decoded_per_s: +((q1.totalVideoFrames - q0.totalVideoFrames) / s).toFixed(1),
          dropped: q1.droppedVideoFrames - q0.droppedVideoFrames,
        };
      }
      resolve({
        reason, frames: lat.length, undecodable: bad, p50_ms: q(0.5), p95_ms: q(0.95),
        min_ms: q(0), max_ms: q(1),
        hlsjs_latency_s_p50: hlsLat.length ? hlsLat[Math.floor(hlsLat.length / 2)] : null,
        ...rates,
      });
    };
    const wait = () => {
      const v = document.querySelector('video');
      if (!v || typeof v.requestVideoFrameCallback !== 'function') {
        if (performance.now() > deadline) return done('no video');
        return setTimeout(wait, 100);
      }
      const onFrame = () => {
        const at = Date.now();
        const t = performance.now();
        if (first === null) first = t;
        ctx.drawImage(v, 0, 0, 320, 240);
        const d = ctx.getImageData(0, 0, 320, 240).data;
        let w = 0;
        for (let bit = 0; bit < 32; bit++) {
          const cx = (bit % 8) * 40; const cy = (bit >> 3) * 60;
          let sum = 0; let n = 0;
          for (let y = cy + 15; y < cy + 45; y += 3) {
            for (let x = cx + 10; x < cx + 30; x += 2) {
              const o = (y * 320 + x) * 4;
              sum += (d[o] + d[o + 1] + d[o + 2]) / 3; n++;
            }
          }
          if (sum / n >= 128) w = (w | (1 << bit)) >>> 0;
        }
        const val = w & 0xffffff;
        const check = (val ^ (val >>> 8) ^ (val >>> 16) ^ 0xa5) & 0xff;
        if (t - first >= skip * 1000) {
          if (q0 === null) { q0 = v.getVideoPlaybackQuality(); t0 = t; }
          calls++;
          if ((w >>> 24) === check) {
            if (val !== last) lat.push((at - val) & 0xffffff);
            last = val;
          } else bad++;
          const h = window.hls;
          if (h && typeof h.latency === 'number' && !Number.isNaN(h.latency)) hlsLat.push(h.latency);
        }
        if (t - first >= (skip + seconds) * 1000) return done('ok');
        if (t > deadline) return done('deadline');
        v.requestVideoFrameCallback(onFrame);
      };
      v.requestVideoFrameCallback(onFrame);
      setTimeout(() => { if (first === null) done('never played'); }, (skip + seconds + 25) * 1000);
    };
    wait();
  });
}

try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required', '--mute-audio',
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
      // Banyan's watch page plays WebRTC first: ICE on loopback.
      '--allow-loopback-in-peer-connection'],
  });
  const runs = opts.pages.map(async ({ label, url }) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url, { waitUntil: 'load', timeout: 20000 });
    const r = await page.evaluate(measure, { skip: opts.skip, seconds: opts.seconds });
    return { label, ...r, errors: errors.slice(0, 3) };
  });
  for (const r of await Promise.all(runs)) console.log(JSON.stringify(r));
  await finish(0);
} catch (e) {
  console.error(String(e));
  await finish(1);
}
