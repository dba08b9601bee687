// Plays a Banyan watch page in headless Chromium and checks low-latency playback
// over LL-HLS (the page with `?player=hls`: hls.js, never WebRTC).
//
// Usage: node tests/browser/play.mjs WATCH_URL [--seconds 10] [--max-latency 3]
//                                              [--captions] [--timeout 40]
//                                              [--caption-text TEXT]...
//                                              [--min-fps N] [--max-dropped F]
//                                              [--max-stalls N]
// Needs `npm ci --prefix web` (playwright-core) and /usr/bin/chromium
// (or CHROMIUM=path). Prints one JSON line and exits 0 on success, 1 on failure.
//
// Checks: playback starts; video.currentTime advances by at least --seconds
// with no stall (a 1.5 s window in which currentTime did not move; with
// --max-stalls N, at most N of them: for tests whose subject is not smooth
// playback, on a machine that also runs the publishers); hls.js's
// reported latency stays under --max-latency once playing; with --captions,
// at least one cue appears in video.textTracks; with --caption-text (any
// number of them), a cue of a subtitles track (the WebVTT rendition) has
// one of these texts (lines joined by spaces).
//
// Frames are counted once playback has settled (after its first 2 s), the
// same window as the latency: `presentedFps` is distinct frames presented
// per second (requestVideoFrameCallback, a new mediaTime each), `decodedFps`
// and `droppedFrames` come from video.getVideoPlaybackQuality(), and
// `maxFrameGapMs` is the longest step of mediaTime between two presented
// frames in that window. With --min-fps, presentedFps and decodedFps must reach N; with
// --max-dropped, at most that fraction of the decoded frames may be dropped.

import { launch } from './chromium.mjs';

function parseArgs(argv) {
  const o = {
    url: null, seconds: 10, maxLatency: 3, captions: false, timeout: 40, texts: [],
    minFps: null, maxDropped: null, maxStalls: 0,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds') o.seconds = Number(argv[++i]);
    else if (a === '--max-latency') o.maxLatency = Number(argv[++i]);
    else if (a === '--captions') o.captions = true;
    else if (a === '--timeout') o.timeout = Number(argv[++i]);
    else if (a === '--caption-text') { o.captions = true; o.texts.push(argv[++i]); }
    else if (a === '--min-fps') o.minFps = Number(argv[++i]);
    else if (a === '--max-dropped') o.maxDropped = Number(argv[++i]);
    else if (a === '--max-stalls') o.maxStalls = Number(argv[++i]);
    else if (!o.url) o.url = a;
  }
  if (!o.url) {
    console.error('usage: play.mjs WATCH_URL [--seconds N] [--max-latency S] [--captions] [--timeout S]');
    process.exit(2);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const result = {
  ok: false, url: opts.url, started: false, playedSeconds: 0, stalls: 0,
  maxLatency: null, latencies: [], cues: 0, captionTracks: [], cueTexts: [], textMatched: false,
  presentedFps: null, decodedFps: null, decodedFrames: null, droppedFrames: null,
  maxFrameGapMs: null,
  errors: [], reason: null,
};

const { context, finish } = await launch('banyan-chromium-', opts.timeout, result);

try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => result.errors.push(String(e)));
  // The page plays WebRTC first; this driver checks its LL-HLS player.
  const pageUrl = new URL(opts.url);
  pageUrl.searchParams.set('player', 'hls');
  await page.goto(pageUrl.href, { waitUntil: 'load', timeout: 15000 });

  const sample = () => page.evaluate(() => {
    const v = document.getElementById('video');
    // Count presented frames from the first sample on (one hook per page).
    if (!window.__frames && typeof v.requestVideoFrameCallback === 'function') {
      const f = { distinct: 0, last: null, maxGap: 0 };
      window.__frames = f;
      const onFrame = (_now, md) => {
        if (md.mediaTime !== f.last) {
          if (f.last !== null && md.mediaTime > f.last) {
            f.maxGap = Math.max(f.maxGap, md.mediaTime - f.last);
          }
          f.distinct += 1;
          f.last = md.mediaTime;
        }
        v.requestVideoFrameCallback(onFrame);
      };
      v.requestVideoFrameCallback(onFrame);
    }
    const q = v.getVideoPlaybackQuality();
    const f = window.__frames || { distinct: 0, maxGap: 0 };
    const maxGap = f.maxGap;
    f.maxGap = 0; // the longest step since the previous sample
    const tracks = Array.from(v.textTracks).map((t) => ({
      kind: t.kind, label: t.label, language: t.language, mode: t.mode,
      cues: t.cues ? t.cues.length : 0,
      text: t.cues && t.cues.length ? t.cues[t.cues.length - 1].text : '',
      texts: t.cues ? Array.from(t.cues).slice(-50).map((c) => `${t.kind}: ${c.text.replace(/\s+/g, ' ').trim()}`) : [],
    }));
    const h = window.hls;
    return {
      t: v.currentTime, paused: v.paused, ready: v.readyState,
      latency: h && typeof h.latency === 'number' && isFinite(h.latency) ? h.latency : null,
      tracks, missing: document.getElementById('missing').textContent.trim(),
      now: performance.now(), presented: f.distinct, maxGap,
      decoded: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    };
  });

  const deadline = Date.now() + opts.timeout * 1000;
  let startT = null;
  let lastT = -1;
  let lastMove = Date.now();
  let frames0 = null;
  let frames1 = null;
  let maxGap = 0;
  while (Date.now() < deadline) {
    const s = await sample();
    if (s.missing) { result.reason = `page: ${s.missing}`; break; }
    if (startT === null && s.t > 0 && !s.paused) { startT = s.t; result.started = true; lastMove = Date.now(); }
    if (startT !== null) {
      if (s.t > lastT) { lastT = s.t; lastMove = Date.now(); }
      else if (Date.now() - lastMove > 1500) { result.stalls += 1; lastMove = Date.now(); }
      result.playedSeconds = s.t - startT;
      // Latency counts once hls.js has settled (after the first 2 s of play).
      if (s.latency !== null && result.playedSeconds > 2) {
        result.latencies.push(Number(s.latency.toFixed(3)));
        result.maxLatency = Math.max(result.maxLatency ?? 0, s.latency);
      }
      if (result.playedSeconds > 2) {
        if (frames0 === null) frames0 = s;
        else maxGap = Math.max(maxGap, s.maxGap);
        frames1 = s;
      }
    }
    result.captionTracks = s.tracks;
    result.cues = s.tracks.reduce((n, t) => n + t.cues, 0);
    for (const t of s.tracks) {
      for (const x of t.texts) {
        if (!result.cueTexts.includes(x) && result.cueTexts.length < 100) result.cueTexts.push(x);
      }
    }
    result.textMatched = opts.texts.length === 0 || result.cueTexts.some(
      (x) => x.startsWith('subtitles: ') && opts.texts.includes(x.slice('subtitles: '.length)));
    const enough = result.playedSeconds >= opts.seconds
      && (!opts.captions || (result.cues > 0 && result.textMatched));
    if (enough) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  if (frames0 && frames1 && frames1.now - frames0.now >= 1000) {
    const secs = (frames1.now - frames0.now) / 1000;
    const decoded = frames1.decoded - frames0.decoded;
    result.presentedFps = Number(((frames1.presented - frames0.presented) / secs).toFixed(1));
    result.decodedFps = Number((decoded / secs).toFixed(1));
    result.decodedFrames = decoded;
    result.droppedFrames = frames1.dropped - frames0.dropped;
    result.maxFrameGapMs = Math.round(maxGap * 1000);
  }
  const fails = [];
  if (!result.started) fails.push('playback did not start');
  if (result.playedSeconds < opts.seconds) fails.push(`played ${result.playedSeconds.toFixed(2)} s < ${opts.seconds} s`);
  if (result.stalls > opts.maxStalls) fails.push(`${result.stalls} stall(s) > ${opts.maxStalls}`);
  if (result.maxLatency === null) fails.push('hls.latency never reported');
  else if (result.maxLatency >= opts.maxLatency) fails.push(`latency ${result.maxLatency.toFixed(2)} s >= ${opts.maxLatency} s`);
  if (opts.captions && result.cues === 0) fails.push('no caption cues in video.textTracks');
  if (!result.textMatched) fails.push('no expected text in a subtitles track');
  if (opts.minFps !== null || opts.maxDropped !== null) {
    if (result.decodedFps === null) fails.push('frames not counted (played under 3 s)');
  }
  if (opts.minFps !== null && result.decodedFps !== null) {
    if (result.presentedFps < opts.minFps) fails.push(`${result.presentedFps} frames/s presented < ${opts.minFps}`);
    if (result.decodedFps < opts.minFps) fails.push(`${result.decodedFps} frames/s decoded < ${opts.minFps}`);
  }
  if (opts.maxDropped !== null && result.decodedFps !== null) {
    const total = result.decodedFrames;
    if (result.droppedFrames > opts.maxDropped * Math.max(total, 1)) {
      fails.push(`${result.droppedFrames} of ${total} frames dropped (> ${opts.maxDropped * 100}%)`);
    }
  }
  if (result.reason) fails.unshift(result.reason);
  result.reason = fails.length ? fails.join('; ') : null;
  result.ok = fails.length === 0;
} catch (e) {
  result.reason = `error: ${e && e.message ? e.message : e}`;
}
await finish();
