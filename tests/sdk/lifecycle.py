"""A live input's lifecycle through Cloudflare's official Python SDK (PyPI
`cloudflare`), with only its base URL pointed at a Banyan node.

    python3 tests/sdk/lifecycle.py manage      create, get, list, update, rotate
                                               keys; prints {"uid", "rtmpUrl", "rtmpKey"}
    python3 tests/sdk/lifecycle.py delete UID  get (expects "connected"), delete,
                                               then get answers 404

Environment: BANYAN_API (http://host:port), BANYAN_ACCOUNT, BANYAN_TOKEN.
Every check raises with what arrived; the exit status is 0 only if all pass.
"""

import json
import os
import re
import sys

import cloudflare
from cloudflare import Cloudflare

API = os.environ["BANYAN_API"]
ACCOUNT = os.environ["BANYAN_ACCOUNT"]
cf = Cloudflare(api_token=os.environ["BANYAN_TOKEN"], base_url=f"{API}/client/v4", max_retries=0)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_full(li, what):
    check(re.fullmatch(r"[0-9a-f]{32}", li.uid or ""), f"{what}: uid {li!r}")
    check(li.created is not None and li.modified is not None, f"{what}: times {li!r}")
    check(li.rtmps.url.startswith("rtmps://") and len(li.rtmps.stream_key) >= 32, f"{what}: rtmps")
    check(li.srt.url.startswith("srt://") and len(li.srt.passphrase) >= 10, f"{what}: srt")
    check(li.srt_playback.stream_id == f"play{li.uid}", f"{what}: srtPlayback")
    m = re.fullmatch(re.escape(API) + r"/([0-9a-f]{64})/webRTC/publish", li.web_rtc.url or "")
    check(m and m.group(1) not in (li.rtmps.stream_key, li.srt.passphrase), f"{what}: webRTC")
    check(li.web_rtc_playback.url == f"{API}/{li.uid}/webRTC/play", f"{what}: webRTCPlayback")


def manage():
    created = cf.stream.live_inputs.create(
        account_id=ACCOUNT,
        meta={"name": "sdk lifecycle"},
        default_creator="creator-py",
        delete_recording_after_days=45,
        recording={"mode": "automatic", "timeout_seconds": 10, "hide_live_viewer_count": True},
        extra_body={"preferLowLatency": True},
    )
    check_full(created, "create")
    check(created.meta == {"name": "sdk lifecycle"}, f"meta {created.meta!r}")
    check(created.delete_recording_after_days == 45, "deleteRecordingAfterDays")
    check(created.recording.mode == "automatic", f"recording {created.recording!r}")
    check(created.recording.timeout_seconds == 10, f"recording {created.recording!r}")
    check(created.recording.hide_live_viewer_count is True, f"recording {created.recording!r}")
    check(created.recording.require_signed_urls is False, f"recording {created.recording!r}")
    check(created.status is None, f"status {created.status!r}")
    check(created.enabled is True, "enabled")
    check(created.to_dict().get("preferLowLatency") is True, f"preferLowLatency {created.to_dict()}")

    got = cf.stream.live_inputs.get(created.uid, account_id=ACCOUNT)
    check(got.to_dict() == created.to_dict(), f"get differs: {got!r}")

    other = cf.stream.live_inputs.create(account_id=ACCOUNT, meta={"name": "other"})
    listed = cf.stream.live_inputs.list(account_id=ACCOUNT, include_counts=True)
    check(listed.total == len(listed.live_inputs) == listed.range, f"counts {listed!r}")
    item = next(i for i in listed.live_inputs if i.uid == created.uid)
    check(item.delete_recording_after_days == 45 and item.enabled is True, f"item {item!r}")
    check(set(item.to_dict()) == {"uid", "created", "modified", "meta", "enabled",
                                  "deleteRecordingAfterDays"}, f"item fields {item.to_dict()}")
    text = listed.to_json()
    for li in (created, other):
        for secret in (li.rtmps.stream_key, li.rtmps_playback.stream_key, li.srt.passphrase,
                       li.srt_playback.passphrase, li.web_rtc.url.split("/")[-3]):
            check(secret not in text, "the list shows a secret")
    cf.stream.live_inputs.delete(other.uid, account_id=ACCOUNT)

    updated = cf.stream.live_inputs.update(
        created.uid,
        account_id=ACCOUNT,
        meta={"name": "renamed"},
        delete_recording_after_days=60,
        recording={"allowed_origins": ["example.com"], "hide_live_viewer_count": False},
    )
    check_full(updated, "update")
    check(updated.meta == {"name": "renamed"}, "meta updated")
    check(updated.delete_recording_after_days == 60, "deleteRecordingAfterDays updated")
    check(updated.recording.mode == "automatic", "fields not given are kept")
    check(updated.recording.allowed_origins == ["example.com"], "allowedOrigins")
    check(updated.rtmps.stream_key == created.rtmps.stream_key, "keys kept by update")

    try:
        cf.stream.live_inputs.update(created.uid, account_id=ACCOUNT, delete_recording_after_days=7)
        raise AssertionError("deleteRecordingAfterDays 7 was accepted")
    except cloudflare.BadRequestError as e:
        check("deleteRecordingAfterDays" in str(e), f"400 names the field: {e}")

    # No SDK method for rotate_keys: the client's generic post.
    env = cf.post(
        f"/accounts/{ACCOUNT}/stream/live_inputs/{created.uid}/rotate_keys",
        body={},
        cast_to=object,
    )
    rotated = env["result"]
    check(rotated["rtmps"]["streamKey"] != created.rtmps.stream_key, "rotated key")
    check(rotated["webRTC"]["url"] != created.web_rtc.url, "rotated WebRTC secret")
    check(isinstance(rotated["keysRotatedAt"], str), f"keysRotatedAt {rotated['keysRotatedAt']!r}")
    again = cf.stream.live_inputs.get(created.uid, account_id=ACCOUNT)
    check(again.rtmps.stream_key == rotated["rtmps"]["streamKey"], "rotation stored")
    check(again.to_dict().get("keysRotatedAt") == rotated["keysRotatedAt"], "keysRotatedAt stored")

    stranger = Cloudflare(api_token="x" * 40, base_url=f"{API}/client/v4", max_retries=0)
    try:
        stranger.stream.live_inputs.get(created.uid, account_id=ACCOUNT)
        raise AssertionError("a bad token was accepted")
    except cloudflare.AuthenticationError:
        pass

    url = (rotated.get("rtmp") or rotated["rtmps"])["url"]
    print(json.dumps({"uid": created.uid, "rtmpUrl": url, "rtmpKey": rotated["rtmps"]["streamKey"]}))


def delete(uid):
    live = cf.stream.live_inputs.get(uid, account_id=ACCOUNT)
    check_full(live, "get while live")
    check(live.status == "connected", f"status while live: {live.status!r}")
    cf.stream.live_inputs.delete(uid, account_id=ACCOUNT)
    try:
        cf.stream.live_inputs.get(uid, account_id=ACCOUNT)
        raise AssertionError("a deleted input still answers")
    except cloudflare.NotFoundError:
        pass
    listed = cf.stream.live_inputs.list(account_id=ACCOUNT)
    check(all(i.uid != uid for i in listed.live_inputs), "deleted input still listed")
    print(json.dumps({"deleted": uid}))


if __name__ == "__main__":
    if sys.argv[1] == "manage":
        manage()
    elif sys.argv[1] == "delete":
        delete(sys.argv[2])
    else:
        raise SystemExit(f"unknown phase {sys.argv[1]}")
