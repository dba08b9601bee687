// The headless Chromium of the browser scripts (Debian's /usr/bin/chromium,
// or CHROMIUM=path, driven by playwright-core from `npm ci --prefix web`):
// a throw-away profile, the flags every script needs, a hard stop, and one
// JSON line with the script's result when it ends.

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', 'web', 'package.json'));
const { chromium } = require('playwright-core');

// Launch Chromium with a profile of its own (`prefix` names its temp dir).
// Returns the context and `finish`, which closes it, removes the profile,
// prints `result` as one JSON line and exits 0 when `result.ok`. `finish`
// also runs by itself `timeout` + 20 s after the launch (reason "hard
// timeout"), and when Chromium cannot start. `loopback`: ICE may use
// 127.0.0.1 (WebRTC against a node on loopback).
export async function launch(prefix, timeout, result, { loopback = false } = {}) {
  const userDir = mkdtempSync(join(tmpdir(), prefix));
  let context;
  let hardStop;
  const finish = async () => {
    clearTimeout(hardStop);
    try { if (context) await context.close(); } catch (_) { /* closing anyway */ }
    try { rmSync(userDir, { recursive: true, force: true }); } catch (_) { /* best effort */ }
    console.log(JSON.stringify(result));
    process.exit(result.ok ? 0 : 1);
  };
  hardStop = setTimeout(() => { result.reason = 'hard timeout'; finish(); }, (timeout + 20) * 1000);
  const args = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required', '--mute-audio'];
  if (loopback) args.push('--allow-loopback-in-peer-connection');
  try {
    context = await chromium.launchPersistentContext(userDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args,
    });
  } catch (e) {
    result.reason = `chromium did not start: ${e && e.message ? e.message : e}`;
    await finish();
  }
  return { context, finish };
}
