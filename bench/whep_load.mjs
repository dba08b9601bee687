// WHEP viewers for the viewer-cost benchmark: N receive-only peer connections
// (video and audio) in one headless Chromium page, each its own WHEP session
// with its own ICE, DTLS and SRTP, as N browsers would have. No video element
// is attached, so Chromium receives, reassembles and jitter-buffers but does
// not decode: the node's side is what is measured.
//
// Usage: node bench/whep_load.mjs WHEP_URL --viewers N --hold S
// Prints `{"phase":"connected",...}` once the sessions are up (the script's
// caller starts its measurement then), and after S seconds
// `{"phase":"done",...}` with the sessions still connected and the bytes
// they received during the hold. Needs `npm ci --prefix web` and chromium.

import { launch } from '../tests/browser/chromium.mjs';

const args = process.argv.slice(2);
const opts = { url: null, viewers: 50, hold: 20 };
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--viewers') opts.viewers = Number(args[++i]);
  else if (args[i] === '--hold') opts.hold = Number(args[++i]);
  else if (!opts.url) opts.url = args[i];
}
if (!opts.url) {
  console.error('usage: whep_load.mjs WHEP_URL --viewers N --hold S');
  process.exit(2);
}

const result = { ok: false, phase: 'done', viewers: opts.viewers, connected: 0, alive: 0, bytes: 0, reason: null };
const { context, finish } = await launch('banyan-whep-load-', opts.hold + 120, result, { loopback: true });
try {
  const page = await context.newPage();
  await page.goto(new URL('/', opts.url).href).catch(() => {});
  await page.exposeFunction('report', (line) => console.log(line));
  Object.assign(result, await page.evaluate(async ({ url, viewers, hold }) => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const pcs = [];
    const refused = {};
    const open = async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const r = await fetch(url, {
        method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
      });
      if (r.status !== 201) { refused[r.status] = (refused[r.status] || 0) + 1; pc.close(); return; }
      pc.location = r.headers.get('Location');
      await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
      pcs.push(pc);
    };
    for (let i = 0; i < viewers; i++) {
      open().catch((e) => { refused[String(e)] = (refused[String(e)] || 0) + 1; });
      await sleep(20);
    }
    const deadline = Date.now() + 30000;
    const connected = () => pcs.filter((p) => p.connectionState === 'connected').length;
    while (connected() < viewers && Date.now() < deadline) await sleep(200);
    await sleep(2000);
    const bytes = async () => {
      let n = 0;
      for (const pc of pcs) {
        (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') n += s.bytesReceived || 0; });
      }
      return n;
    };
    const b0 = await bytes();
    window.report(JSON.stringify({ phase: 'connected', connected: connected(), refused }));
    await sleep(hold * 1000);
    const out = { connected: pcs.length, alive: connected(), bytes: (await bytes()) - b0, refused };
    for (const pc of pcs) {
      if (pc.location) fetch(new URL(pc.location, url).href, { method: 'DELETE' }).catch(() => {});
      pc.close();
    }
    await sleep(500);
    return out;
  }, opts));
  result.ok = result.alive > 0;
  if (!result.ok) result.reason = 'no session stayed connected';
} catch (e) {
  result.reason = `error: ${e && e.message ? e.message : e}`;
}
await finish();
