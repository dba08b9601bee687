// Plays a stream over WHEP in headless Chromium: posts the offer of a
// receive-only peer connection (video and audio) to WHEP_URL, sets the
// answer, and counts the decoded frames a <video> presents.
//
// Usage: node tests/browser/whep.mjs PAGE_URL WHEP_URL [--seconds 8] [--timeout 30]
// PAGE_URL is any page of the node (same origin as WHEP_URL). Needs `npm ci
// --prefix web` (playwright-core) and /usr/bin/chromium (or CHROMIUM=path).
// Prints one JSON line: the POST's status and Location, the time from the
// POST to the first presented frame (`firstFrameMs`), presented frames and
// their rate over --seconds of playback, the DELETE's status and the
// connection's state after it, the video's size, and the delay
// from each frame's capture (the relay's sender clock, RTCP SR) to its
// presentation when Chromium reports it (`captureToPresentMs`: p50, p95),
// and the inbound RTP statistics of video and audio (codec, packets,
// samples, concealment, audio energy, jitter buffer delays).
// Exits 0 when frames were presented, 1 otherwise.

import { launch } from './chromium.mjs';

const args = process.argv.slice(2);
const opts = { page: null, whep: null, seconds: 8, timeout: 30 };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--seconds') opts.seconds = Number(args[++i]);
  else if (a === '--timeout') opts.timeout = Number(args[++i]);
  else if (!opts.page) opts.page = a;
  else if (!opts.whep) opts.whep = a;
}
if (!opts.page || !opts.whep) {
  console.error('usage: whep.mjs PAGE_URL WHEP_URL [--seconds N] [--timeout S]');
  process.exit(2);
}

const result = { ok: false, errors: [], reason: null };

const { context, finish } = await launch('banyan-whep-', opts.timeout, result, { loopback: true });

try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => result.errors.push(String(e)));
  await page.goto(opts.page, { waitUntil: 'load', timeout: 15000 });
  const out = await page.evaluate(async ({ whep, seconds, timeout }) => {
    const r = {};
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const v = document.createElement('video');
    v.muted = false;
    v.autoplay = true;
    v.playsInline = true;
    document.body.appendChild(v);
    const stream = new MediaStream();
    pc.ontrack = (e) => { stream.addTrack(e.track); v.srcObject = stream; };
    const frames = { n: 0, first: null, delays: [] };
    const onFrame = (now, md) => {
      frames.n += 1;
      if (frames.first === null) frames.first = now;
      if (md.captureTime !== undefined && md.expectedDisplayTime !== undefined) {
        frames.delays.push(md.expectedDisplayTime - md.captureTime);
      }
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
    await pc.setLocalDescription(await pc.createOffer());
    const t0 = performance.now();
    const res = await fetch(whep, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
    });
    r.status = res.status;
    r.location = res.headers.get('Location');
    const answer = await res.text();
    if (res.status !== 201) { r.answer = answer; return r; }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    const deadline = t0 + timeout * 1000;
    while (frames.first === null && performance.now() < deadline) {
      await new Promise((ok) => setTimeout(ok, 20));
    }
    r.connection = pc.connectionState;
    if (frames.first === null) return r;
    r.firstFrameMs = Math.round(frames.first - t0);
    const n0 = frames.n;
    const s0 = performance.now();
    await new Promise((ok) => setTimeout(ok, seconds * 1000));
    r.frames = frames.n - n0;
    r.fps = Math.round((frames.n - n0) / ((performance.now() - s0) / 1000) * 10) / 10;
    r.width = v.videoWidth;
    r.height = v.videoHeight;
    const d = frames.delays.slice(-Math.max(1, frames.n - n0)).sort((a, b) => a - b);
    if (d.length) {
      r.captureToPresentMs = {
        p50: Math.round(d[Math.floor(d.length * 0.5)]),
        p95: Math.round(d[Math.floor(d.length * 0.95)]),
      };
    }
    const stats = await pc.getStats();
    const codecs = {};
    stats.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        r.framesDecoded = s.framesDecoded;
        r.packetsLost = s.packetsLost;
        r.nackCount = s.nackCount;
        r.pliCount = s.pliCount;
        r.videoCodec = codecs[s.codecId];
        if (s.jitterBufferEmittedCount) {
          r.videoJitterBufferMs = Math.round(s.jitterBufferDelay / s.jitterBufferEmittedCount * 1000);
        }
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        r.audio = {
          codec: codecs[s.codecId],
          packets: s.packetsReceived,
          lost: s.packetsLost,
          samples: s.totalSamplesReceived,
          concealed: s.concealedSamples,
          energy: s.totalAudioEnergy,
          jitterBufferMs: s.jitterBufferEmittedCount
            ? Math.round(s.jitterBufferDelay / s.jitterBufferEmittedCount * 1000) : null,
        };
      }
    });
    r.connection = pc.connectionState;
    // Ending the session as WHEP says: DELETE on its resource, then the
    // server closes its side.
    const del = await fetch(new URL(r.location, whep), { method: 'DELETE' });
    r.deleteStatus = del.status;
    const closedBy = performance.now() + 5000;
    while (pc.connectionState === 'connected' && performance.now() < closedBy) {
      await new Promise((ok) => setTimeout(ok, 50));
    }
    r.connectionAfterDelete = pc.connectionState;
    pc.close();
    return r;
  }, { whep: opts.whep, seconds: opts.seconds, timeout: opts.timeout });
  Object.assign(result, out);
  result.ok = out.status === 201 && (out.frames || 0) > 0;
  if (!result.ok) result.reason = out.status !== 201 ? `status ${out.status}` : 'no frames';
} catch (e) {
  result.reason = String(e);
}
await finish();
