// A live input's lifecycle through Cloudflare's official TypeScript SDK (npm
// `cloudflare`), with only its base URL pointed at a Banyan node.
//
//   node tests/sdk/lifecycle.mjs manage   create, get, list, update, rotate keys;
//                                         prints {"uid", "rtmpUrl", "rtmpKey"}
//   node tests/sdk/lifecycle.mjs delete UID   get (expects "connected"), delete,
//                                         then get answers 404
//
// Environment: BANYAN_API (http://host:port), BANYAN_ACCOUNT, BANYAN_TOKEN.
// Every check throws with what arrived; the exit status is 0 only if all pass.

import { createRequire } from 'node:module';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', 'web', 'package.json'));
const Cloudflare = require('cloudflare').default ?? require('cloudflare');

const api = process.env.BANYAN_API;
const account_id = process.env.BANYAN_ACCOUNT;
const cf = new Cloudflare({
  apiToken: process.env.BANYAN_TOKEN,
  baseURL: `${api}/client/v4`,
  maxRetries: 0,
});

const isTime = (t) => typeof t === 'string' && !Number.isNaN(Date.parse(t));

function checkFull(li, what) {
  const s = JSON.stringify(li);
  assert.match(li.uid, /^[0-9a-f]{32}$/, `${what}: uid in ${s}`);
  assert.ok(isTime(li.created) && isTime(li.modified), `${what}: times in ${s}`);
  for (const k of ['rtmps', 'rtmpsPlayback']) {
    assert.match(li[k].url, /^rtmps:\/\//, `${what}: ${k}.url in ${s}`);
    assert.ok(li[k].streamKey.length >= 32, `${what}: ${k}.streamKey in ${s}`);
  }
  for (const k of ['srt', 'srtPlayback']) {
    assert.match(li[k].url, /^srt:\/\//, `${what}: ${k}.url in ${s}`);
    assert.ok(li[k].passphrase.length >= 10, `${what}: ${k}.passphrase in ${s}`);
    assert.equal(typeof li[k].streamId, 'string', `${what}: ${k}.streamId in ${s}`);
  }
  assert.ok(li.webRTC.url.startsWith(`${api}/`) && li.webRTC.url.endsWith('/webRTC/publish'),
    `${what}: webRTC ${li.webRTC.url}`);
  const webrtcKey = li.webRTC.url.split('/').at(-3);
  assert.match(webrtcKey, /^[0-9a-f]{64}$/, `${what}: webRTC secret`);
  for (const other of [li.rtmps.streamKey, li.rtmpsPlayback.streamKey, li.srt.passphrase,
    li.srtPlayback.passphrase]) {
    assert.notEqual(webrtcKey, other, `${what}: the WebRTC secret is distinct`);
  }
  assert.equal(li.webRTCPlayback.url, `${api}/${li.uid}/webRTC/play`, `${what}: webRTCPlayback`);
  assert.ok(typeof li.enabled === 'boolean', `${what}: enabled in ${s}`);
  assert.ok(typeof li.preferLowLatency === 'boolean', `${what}: preferLowLatency in ${s}`);
  assert.ok('keysRotatedAt' in li, `${what}: keysRotatedAt in ${s}`);
  const statuses = [null, 'connected', 'reconnected', 'reconnecting', 'client_disconnect',
    'ttl_exceeded', 'failed_to_connect', 'failed_to_reconnect', 'new_configuration_accepted'];
  assert.ok(statuses.includes(li.status), `${what}: status ${li.status}`);
}

async function manage() {
  const created = await cf.stream.liveInputs.create({
    account_id,
    meta: { name: 'sdk lifecycle' },
    defaultCreator: 'creator-sdk',
    deleteRecordingAfterDays: 45,
    preferLowLatency: true,
    recording: { mode: 'automatic', timeoutSeconds: 10, hideLiveViewerCount: true },
  });
  checkFull(created, 'create');
  assert.deepEqual(created.meta, { name: 'sdk lifecycle' });
  assert.equal(created.deleteRecordingAfterDays, 45);
  assert.equal(created.preferLowLatency, true);
  assert.equal(created.keysRotatedAt, null);
  assert.equal(created.status, null);
  assert.equal(created.enabled, true);
  assert.deepEqual(
    { ...created.recording, allowedOrigins: created.recording.allowedOrigins ?? null },
    { mode: 'automatic', timeoutSeconds: 10, requireSignedURLs: false, allowedOrigins: null,
      hideLiveViewerCount: true },
  );

  const got = await cf.stream.liveInputs.get(created.uid, { account_id });
  checkFull(got, 'get');
  assert.deepEqual(got, created, 'get answers what create did');

  // A second input, so the list has more than one.
  const other = await cf.stream.liveInputs.create({ account_id, meta: { name: 'other' } });
  const list = await cf.stream.liveInputs.list({ account_id, include_counts: true });
  assert.ok(Array.isArray(list.liveInputs), `list: ${JSON.stringify(list)}`);
  assert.equal(list.total, list.liveInputs.length);
  assert.equal(list.range, list.liveInputs.length);
  const item = list.liveInputs.find((i) => i.uid === created.uid);
  assert.deepEqual(item, {
    uid: created.uid,
    created: created.created,
    modified: created.modified,
    meta: { name: 'sdk lifecycle' },
    enabled: true,
    deleteRecordingAfterDays: 45,
  });
  const listed = JSON.stringify(list);
  for (const li of [created, other]) {
    for (const secret of [li.rtmps.streamKey, li.rtmpsPlayback.streamKey, li.srt.passphrase,
      li.srtPlayback.passphrase, li.webRTC.url.split('/').at(-3)]) {
      assert.ok(!listed.includes(secret), `the list shows a secret: ${listed}`);
    }
  }
  await cf.stream.liveInputs.delete(other.uid, { account_id });

  const updated = await cf.stream.liveInputs.update(created.uid, {
    account_id,
    meta: { name: 'renamed' },
    deleteRecordingAfterDays: 60,
    preferLowLatency: false,
    recording: { allowedOrigins: ['example.com'], hideLiveViewerCount: false },
  });
  checkFull(updated, 'update');
  assert.deepEqual(updated.meta, { name: 'renamed' });
  assert.equal(updated.deleteRecordingAfterDays, 60);
  assert.equal(updated.preferLowLatency, false);
  assert.equal(updated.recording.mode, 'automatic', 'fields not given are kept');
  assert.deepEqual(updated.recording.allowedOrigins, ['example.com']);
  assert.equal(updated.recording.hideLiveViewerCount, false);
  assert.ok(Date.parse(updated.modified) > Date.parse(created.modified), 'modified moves');
  assert.equal(updated.rtmps.streamKey, created.rtmps.streamKey, 'keys kept by update');

  // A value Banyan cannot honour is refused with its name, not dropped.
  await assert.rejects(
    cf.stream.liveInputs.update(created.uid, { account_id, deleteRecordingAfterDays: 7 }),
    (e) => e.status === 400 && /deleteRecordingAfterDays/.test(e.message),
  );

  // The SDK has no method for rotate_keys: its generic post.
  const rotatedEnv = await cf.post(
    `/accounts/${account_id}/stream/live_inputs/${created.uid}/rotate_keys`,
    { body: {} },
  );
  const rotated = rotatedEnv.result ?? rotatedEnv;
  checkFull(rotated, 'rotate');
  assert.notEqual(rotated.rtmps.streamKey, created.rtmps.streamKey);
  assert.notEqual(rotated.srt.passphrase, created.srt.passphrase);
  assert.notEqual(rotated.webRTC.url, created.webRTC.url, 'rotation replaces the WebRTC secret');
  assert.ok(isTime(rotated.keysRotatedAt), `keysRotatedAt ${rotated.keysRotatedAt}`);
  const again = await cf.stream.liveInputs.get(created.uid, { account_id });
  assert.equal(again.keysRotatedAt, rotated.keysRotatedAt, 'keysRotatedAt is stored');
  assert.equal(again.rtmps.streamKey, rotated.rtmps.streamKey);

  // Another account's token, or none, is refused the SDK's way.
  const stranger = new Cloudflare({ apiToken: 'x'.repeat(40), baseURL: `${api}/client/v4`, maxRetries: 0 });
  await assert.rejects(stranger.stream.liveInputs.get(created.uid, { account_id }), (e) => e.status === 401);

  const url = rotated.rtmp?.url ?? rotated.rtmps.url;
  console.log(JSON.stringify({ uid: created.uid, rtmpUrl: url, rtmpKey: rotated.rtmps.streamKey }));
}

async function remove(uid) {
  const live = await cf.stream.liveInputs.get(uid, { account_id });
  checkFull(live, 'get while live');
  assert.equal(live.status, 'connected', `status while live: ${live.status}`);
  await cf.stream.liveInputs.delete(uid, { account_id });
  await assert.rejects(cf.stream.liveInputs.get(uid, { account_id }), (e) => e.status === 404);
  const list = await cf.stream.liveInputs.list({ account_id });
  assert.ok(!list.liveInputs.some((i) => i.uid === uid), 'deleted input still listed');
  console.log(JSON.stringify({ deleted: uid }));
}

const [phase, uid] = process.argv.slice(2);
try {
  if (phase === 'manage') await manage();
  else if (phase === 'delete') await remove(uid);
  else throw new Error(`unknown phase ${phase}`);
} catch (e) {
  console.error(e?.stack ?? String(e));
  process.exit(1);
}
