// Publishes to a Banyan WHIP URL from headless Chromium: a canvas stream
// (a frame counter and a moving bar drawn 30 times a second) and a 440 Hz
// tone from WebAudio, H.264 and Opus, as a browser broadcaster would.
//
// Usage: node tests/browser/whip.mjs WHIP_URL [--seconds 20] [--timeout 40]
//                                             [--no-delete]
// Needs `npm ci --prefix web` (playwright-core) and /usr/bin/chromium
// (or CHROMIUM=path). Prints one JSON line and exits 0 on success, 1 on failure.
//
// Checks: the POST answers 201 with an SDP answer and a Location; the peer
// connection reaches "connected"; H.264 and Opus are the codecs sent; video
// frames are encoded and sent for --seconds. Then, unless --no-delete, a
// DELETE on the Location ends the session (200).

import { launch } from './chromium.mjs';

function parseArgs(argv) {
  const o = { url: null, seconds: 20, timeout: 40, del: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds') o.seconds = Number(argv[++i]);
    else if (a === '--timeout') o.timeout = Number(argv[++i]);
    else if (a === '--no-delete') o.del = false;
    else if (!o.url) o.url = a;
  }
  if (!o.url) {
    console.error('usage: whip.mjs WHIP_URL [--seconds N] [--timeout S] [--no-delete]');
    process.exit(2);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const result = {
  ok: false, url: opts.url, status: null, location: null, connected: false,
  videoCodec: null, audioCodec: null, encoder: null, framesSent: 0, audioPackets: 0,
  deleteStatus: null, reason: null,
};

const { context, finish } = await launch('banyan-whip-', opts.timeout, result, { loopback: true });
try {
  const page = await context.newPage();
  // A page of the node's own origin: a secure context (127.0.0.1), no CORS.
  await page.goto(new URL('/', opts.url).href).catch(() => {});
  Object.assign(result, await page.evaluate(async ({ url, seconds, timeout, del }) => {
    const out = {};
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const h264 = RTCRtpSender.getCapabilities('video').codecs
      .filter((c) => c.mimeType === 'video/H264');
    if (!h264.length) return { reason: 'this Chromium cannot send H.264' };
    // Prefer constrained baseline, packetization mode 1 (what OBS sends too).
    h264.sort((a, b) => {
      const score = (c) => (/packetization-mode=1/.test(c.sdpFmtpLine || '') ? 2 : 0)
        + (/profile-level-id=42e0/.test(c.sdpFmtpLine || '') ? 1 : 0);
      return score(b) - score(a);
    });

    const canvas = document.createElement('canvas');
    canvas.width = 640; canvas.height = 360;
    const g = canvas.getContext('2d');
    let n = 0;
    const draw = () => {
      g.fillStyle = '#204060'; g.fillRect(0, 0, 640, 360);
      g.fillStyle = '#f0c040'; g.fillRect((n * 8) % 640, 150, 60, 60);
      g.fillStyle = '#ffffff'; g.font = '48px sans-serif'; g.fillText(`frame ${n}`, 40, 80);
      n += 1;
    };
    draw();
    const timer = setInterval(draw, 1000 / 30);
    const video = canvas.captureStream(30).getVideoTracks()[0];
    const ac = new AudioContext({ sampleRate: 48000 });
    const osc = ac.createOscillator();
    osc.frequency.value = 440;
    const dest = ac.createMediaStreamDestination();
    osc.connect(dest); osc.start();
    const audio = dest.stream.getAudioTracks()[0];

    const pc = new RTCPeerConnection();
    const vt = pc.addTransceiver(video, { direction: 'sendonly' });
    vt.setCodecPreferences(h264);
    pc.addTransceiver(audio, { direction: 'sendonly' });
    await pc.setLocalDescription(await pc.createOffer());
    // No trickle: wait for the host candidates (loopback) to be gathered.
    const gathered = new Promise((r) => {
      if (pc.iceGatheringState === 'complete') r();
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') r();
      });
    });
    await Promise.race([gathered, sleep(3000)]);
    const res = await fetch(url, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    out.status = res.status;
    out.location = res.headers.get('Location');
    const answer = await res.text();
    if (res.status !== 201) { out.reason = `POST answered ${res.status}: ${answer.trim()}`; return out; }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    const deadline = Date.now() + timeout * 1000;
    while (pc.connectionState !== 'connected' && Date.now() < deadline) {
      if (pc.connectionState === 'failed') { out.reason = 'connection failed'; return out; }
      await sleep(100);
    }
    out.connected = pc.connectionState === 'connected';
    if (!out.connected) { out.reason = `not connected: ${pc.connectionState}`; return out; }
    const until = Date.now() + seconds * 1000;
    while (Date.now() < until && pc.connectionState === 'connected') await sleep(500);
    const stats = await pc.getStats();
    const codecs = {};
    stats.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    stats.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'video') {
        out.videoCodec = codecs[s.codecId] || null;
        out.encoder = s.encoderImplementation || null;
        out.framesSent = s.framesSent || 0;
      } else if (s.kind === 'audio') {
        out.audioCodec = codecs[s.codecId] || null;
        out.audioPackets = s.packetsSent || 0;
      }
    });
    if (pc.connectionState !== 'connected') out.reason = `dropped: ${pc.connectionState}`;
    if (del && out.location) {
      const d = await fetch(new URL(out.location, url).href, { method: 'DELETE' });
      out.deleteStatus = d.status;
    }
    clearInterval(timer);
    pc.close();
    return out;
  }, opts));
  const fails = [];
  if (result.reason) fails.push(result.reason);
  if (result.status !== 201) fails.push(`status ${result.status}`);
  if (!result.location) fails.push('no Location');
  if (result.videoCodec !== 'video/H264') fails.push(`video codec ${result.videoCodec}`);
  if (result.audioCodec !== 'audio/opus') fails.push(`audio codec ${result.audioCodec}`);
  if (result.framesSent < opts.seconds * 10) fails.push(`${result.framesSent} frames sent`);
  if (opts.del && result.deleteStatus !== 200) fails.push(`DELETE answered ${result.deleteStatus}`);
  result.ok = fails.length === 0;
  if (!result.ok) result.reason = fails.join('; ');
} catch (e) {
  result.reason = `error: ${e && e.message ? e.message : e}`;
}
await finish();
