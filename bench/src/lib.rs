//! Banyan's benchmark tools.
//!
//! The `rtmp-load` binary publishes an FLV file in real time to an RTMP server and plays it
//! back on many connections from the same process, so that one clock measures the
//! publish-to-receive time of every video frame. This library holds its sans-IO parts: a tiny
//! FLV reader ([`flv`]), a fixed-bucket latency histogram ([`hist`]) and `/proc` sampling of a
//! server's CPU time and memory ([`procfs`]).

pub mod flv;
pub mod hist;
pub mod procfs;

/// Everything that can go wrong in the benchmark tools.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file, a socket or `/proc` failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The FLV input is not a well-formed FLV file.
    #[error("bad FLV at byte {offset}: {what}")]
    Flv {
        /// Byte offset in the file where the problem was found.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// The RTMP handshake with the server failed.
    #[error("rtmp handshake: {0}")]
    Handshake(String),
    /// The RTMP session reported an error (bad chunk, bad state, ...).
    #[error("rtmp session: {0}")]
    Session(String),
    /// The server refused the connect, play or publish request.
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// A step did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A command-line argument is missing or malformed.
    #[error("usage: {0}")]
    Usage(String),
}
