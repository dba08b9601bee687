//! The media core of a Banyan node.
//!
//! * [`Frame`]: the one representation of media inside the node. Timestamps
//!   are in one media clock ([`CLOCK_HZ`], 90 kHz), the payload is shared
//!   [`bytes::Bytes`] and is never copied per viewer.
//! * [`MediaInfo`]: codec configuration (avcC, AudioSpecificConfig), versioned,
//!   so a publisher may change resolution mid-stream.
//! * [`Hub`]: one publisher and any number of subscribers per stream. A
//!   subscriber is a cursor into the stream's shared, bounded buffer; a slow
//!   one skips ahead to a newer keyframe, it never slows the publisher or
//!   another subscriber.
//! * [`access`]: the in-memory snapshot of stream keys that ingest and egress
//!   consult, compared in constant time.
//! * [`views`]: live viewer counts and delivered media time per stream and
//!   protocol, drained by the analytics flusher.
//!
//! The hub never parses a codec: it looks only at [`Frame::keyframe`],
//! [`Frame::track`] and timestamps.

pub mod access;
mod frame;
mod hub;
pub mod link;
pub mod views;

pub use frame::{AudioConfig, Frame, MediaInfo, Track, VideoConfig, CLOCK_HZ};
pub use hub::{
    Hub, HubConfig, Item, Publisher, StreamEnd, StreamState, SubscribeOptions, Subscriber,
};

/// Errors of the relay crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// Another publisher is already live on this stream.
    #[error("stream {0} already has a live publisher")]
    AlreadyPublishing(String),
}
