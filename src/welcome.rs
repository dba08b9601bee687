//! The message a node logs when it is ready: where the credentials are,
//! which URLs publishers (OBS, ffmpeg) and players take, the watch page and
//! the API. The whole text on the first start (no credentials.json yet), a
//! short reminder on every later one.
//!
//! Placeholders in angle brackets name fields of a live input as the API
//! returns it (`<rtmps.streamKey>` is `result.rtmps.streamKey`), so a script
//! can fill them in from `banyan inputs create`.

use std::path::Path;

use crate::config::Settings;
use crate::node::Urls;

/// The text; `first` is true when this start made the credentials.
pub fn text(urls: &Urls, settings: &Settings, creds: &Path, first: bool) -> String {
    let a = &urls.addrs;
    let api = urls.api_url();
    let data = settings.general.data_dir.display();
    let rtmps = format!("rtmps://{}/live", urls.authority(a.rtmps));
    let srt = format!("srt://{}", urls.authority(a.srt));
    let doctor = match &settings.config {
        Some(c) => format!("banyan doctor --config {} --data-dir {data}", c.display()),
        None => format!("banyan doctor --data-dir {data}"),
    };
    if !first {
        return format!(
            "Banyan is ready. Credentials: {creds}. Publish to {rtmps}/<rtmps.streamKey> \
             or {srt}; watch at {api}/<uid>/watch; API {api}/client/v4 (OpenAPI: \
             {api}/openapi.json); `{doctor}` checks this node (with serve's other flags, if any).",
            creds = creds.display()
        );
    }
    let mut t = format!(
        "Banyan is ready (first start: new credentials in {data}).\n\
         \n\
         Credentials (account id, API token, admin token; mode 0600, keep secret):\n\
         \x20 {creds}\n\
         Create a live input (prints its uid, keys and URLs):\n\
         \x20 banyan inputs create --data-dir {data} --name NAME\n\
         \n\
         Publish (OBS: Settings > Stream > Custom; ffmpeg: the whole URL):\n\
         \x20 RTMPS  server {rtmps}/  stream key <rtmps.streamKey>\n\
         \x20        {rtmps}/<rtmps.streamKey>\n\
         \x20 SRT    {srt}?streamid=<srt.streamId>&passphrase=<srt.passphrase>\n\
         \n\
         Play (ffplay, VLC, ffprobe):\n\
         \x20 RTMPS  {rtmps}/<rtmpsPlayback.streamKey>\n\
         \x20 SRT    {srt}?streamid=<srtPlayback.streamId>&passphrase=<srtPlayback.passphrase>\n\
         \x20 HLS    {api}/<uid>/manifest/video.m3u8\n\
         Watch page (any browser): {api}/<uid>/watch\n\
         \n\
         API: {api}/client/v4 with `Authorization: Bearer <apiToken>` \
         (OpenAPI document: {api}/openapi.json).\n",
        creds = creds.display()
    );
    let everywhere = [Some(a.http), Some(a.rtmps), Some(a.srt), a.rtmp]
        .into_iter()
        .flatten()
        .any(|l| l.ip().is_unspecified());
    if everywhere && settings.general.public_host.is_none() {
        t.push_str(
            "Listening on every interface, but the URLs above name this machine as \
             127.0.0.1: set public_host to the name clients use.\n",
        );
    }
    if settings.tls.pair().is_none() {
        t.push_str(&format!(
            "The RTMPS certificate is self-signed ({data}/tls): clients that verify \
             need it, or give --tls-cert/--tls-key.\n"
        ));
    }
    t.push_str(&format!(
        "Check this node: {doctor} (with serve's other flags, if any)\n"
    ));
    t
}
