//! MPEG-TS to hub frames: a sans-IO demuxer.
//!
//! [`Demuxer::push`] takes bytes as they arrive (any split, garbage allowed),
//! [`Demuxer::poll`] hands out [`DemuxEvent`]s. It never reads a clock or a
//! socket and never panics on input.
//!
//! We use our own demuxer rather than mpeg2ts-reader because what matters
//! here is the damage handling: resync on lost sync bytes, continuity errors
//! that drop exactly the unit they hit, early completion of a video PES that
//! ends with stuffing (so a relay does not hold every frame until the next
//! one starts), and a timeline that unwraps 33-bit timestamps and survives
//! discontinuities. Each of these would have to be rebuilt around
//! mpeg2ts-reader's callbacks anyway.
//!
//! * PAT/PMT select the first H.264 (stream type 0x1B) and AAC ADTS (0x0F)
//!   elementary streams.
//! * H.264: Annex B access units become AVCC (4-byte lengths), access unit
//!   delimiters are dropped, SPS/PPS stay in band and also build the avcC of
//!   [`VideoConfig`]. A keyframe is an access unit with an IDR slice.
//! * AAC: each ADTS frame becomes one raw frame; the AudioSpecificConfig is
//!   built from the ADTS header.
//! * Damage (garbage, continuity errors, oversized or broken PES) drops the
//!   unit it hits; video then waits for the next keyframe. Each kind is
//!   counted in `banyan_ts_errors_total{kind}` and in [`Demuxer::errors`].

mod demux;
pub mod h264;

pub use demux::{DemuxEvent, Demuxer, ErrorCounts};
