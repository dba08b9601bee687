//! LL-HLS playback: fMP4/CMAF parts and segments straight from memory, our
//! own playlist writer, and the watch page.
//!
//! * [`fmp4`]: sans-IO init segment and `moof`/`mdat` writer (mp4-atom).
//! * [`segmenter`]: sans-IO per-stream LL-HLS state (parts, segments, window).
//! * [`playlist`]: multivariant, media and subtitles playlists.
//! * [`HlsService`]: the driver: one muxer task per watched stream, started
//!   lazily on the first request and stopped after [`HlsConfig::idle_stop`]
//!   without requests; the axum [`HlsService::router`].
//!
//! URLs (all under `/{uid}/`, or `/{token}/` where [`HlsConfig::access`]
//! understands tokens):
//! `manifest/video.m3u8` (multivariant), `manifest/media.m3u8?s=<signed session id>`
//! (media playlist; `_HLS_msn`/`_HLS_part` block), `manifest/init-<n>.mp4`,
//! `manifest/seg-<msn>.m4s`, `manifest/part-<n>.m4s` (global part numbers, so
//! a preload hint is always right), `manifest/subs.m3u8` and
//! `manifest/sub-<msn>.vtt` (only with a WebVTT caption writer), `watch`;
//! and `/watch-assets/hls.min.js` with its licence `/watch-assets/hls.js.LICENSE`
//! (embedded in the binary).

pub mod access;
mod captions;
pub mod fmp4;
pub mod playlist;
mod range;
pub mod segmenter;
mod server;
pub mod session;
mod web;

use std::sync::Arc;
use std::time::Duration;

pub use access::{AccessRequest, AllowOrigin, Grant, OpenAccess, PlaybackAccess};
pub use captions::{Cea608Vtt, RegistryCaptions};
pub use playlist::CaptionLines;
pub use server::HlsService;

/// Errors of the HLS egress.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HlsError {
    /// mp4-atom refused to encode or decode a box (e.g. a malformed avcC).
    #[error("mp4 box: {0}")]
    Mp4(String),
    /// The media info has neither video nor audio.
    #[error("no track to mux")]
    NoTracks,
    /// A fragment would exceed the 32-bit sizes of the format.
    #[error("fragment too large")]
    TooLarge,
}

/// Where the multivariant playlist's caption declarations come from. The
/// binary implements it with the captions crate (present channels, the
/// platform's names and languages).
pub trait CaptionSource: Send + Sync + 'static {
    /// The caption lines of `uid`'s multivariant playlist.
    /// `subtitles_uri` is the WebVTT rendition's playlist URI when one is
    /// served (a writer was returned by [`CaptionSource::webvtt`]); the
    /// implementation declares it as a `TYPE=SUBTITLES` rendition.
    fn caption_lines(&self, uid: &str, subtitles_uri: Option<&str>) -> CaptionLines;

    /// A WebVTT writer for a stream whose muxer starts now, or `None` for no
    /// WebVTT rendition.
    fn webvtt(&self, uid: &str) -> Option<Box<dyn WebVttWriter>> {
        let _ = uid;
        None
    }
}

/// Turns the stream's caption data into WebVTT segments.
///
/// Times are media times of the HLS timeline: 90 kHz ticks since the
/// muxer's origin, the same clock as the fMP4 decode times, so a segment
/// maps with `X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000` and cue times equal
/// to `ticks / 90000` seconds.
pub trait WebVttWriter: Send + 'static {
    /// `cc_data` triplets of one video frame (a [`banyan_relay::Track::Captions`] frame).
    fn push(&mut self, pts: i64, cc_data: &[u8]);
    /// The WebVTT document of the segment covering `[start, end)`.
    fn segment(&mut self, start: i64, end: i64) -> String;
}

/// Default caption lines: `CLOSED-CAPTIONS=NONE`.
pub struct NoCaptions;

impl CaptionSource for NoCaptions {
    fn caption_lines(&self, _uid: &str, _subtitles_uri: Option<&str>) -> CaptionLines {
        playlist::caption_lines_none()
    }
}

/// Answers whether an idle stream can be obtained on demand (see
/// [`HlsConfig::fetchable`]).
pub type Fetchable = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Configuration of the HLS service.
#[derive(Clone)]
pub struct HlsConfig {
    /// Target duration of a part (LL-HLS PART-TARGET), about 250-333 ms.
    pub part_target: Duration,
    /// A segment is cut at the first keyframe after 3/4 of this.
    pub segment_target: Duration,
    /// Complete segments kept per stream.
    pub window_segments: usize,
    /// A muxer stops after this long without requests.
    pub idle_stop: Duration,
    /// A viewer session ends after this long without a media playlist fetch.
    pub session_timeout: Duration,
    /// How long the first request waits for the first media of a stream.
    pub start_wait: Duration,
    /// Caption declarations and the WebVTT rendition.
    pub captions: Arc<dyn CaptionSource>,
    /// Upper bound of viewer sessions tracked per node.
    pub max_sessions: usize,
    /// Streams idle in the local hub that the node can obtain on demand
    /// (its subscribers make it fetch them): their playlists wait for media
    /// instead of answering 404. `None`: only local streams.
    pub fetchable: Option<Fetchable>,
    /// Who may play what: the first path segment (a uid or a token) is
    /// resolved to a stream here. Default: [`OpenAccess`].
    pub access: Arc<dyn PlaybackAccess>,
    /// The secret viewer session ids are signed with (shared by a
    /// cluster's nodes, so a session may move between them). `None`: a
    /// random secret of this process.
    pub session_secret: Option<Arc<[u8]>>,
    /// Counted viewer sessions per client address; beyond it a player is
    /// served but not counted.
    pub sessions_per_address: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            part_target: Duration::from_millis(333),
            segment_target: Duration::from_secs(1),
            window_segments: 6,
            idle_stop: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            start_wait: Duration::from_secs(5),
            captions: Arc::new(NoCaptions),
            max_sessions: 100_000,
            fetchable: None,
            access: Arc::new(OpenAccess),
            session_secret: None,
            sessions_per_address: 16,
        }
    }
}

impl std::fmt::Debug for HlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsConfig")
            .field("part_target", &self.part_target)
            .field("segment_target", &self.segment_target)
            .field("window_segments", &self.window_segments)
            .field("idle_stop", &self.idle_stop)
            .field("session_timeout", &self.session_timeout)
            .field("sessions_per_address", &self.sessions_per_address)
            .finish_non_exhaustive()
    }
}
