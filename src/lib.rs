//! The node's library: everything `banyan` (src/main.rs) runs, in modules.
//!
//! Module map: `serve` (the composition root: builds every part, wires
//! each subsystem's context, runs the node; start-up helpers), `node`
//! (addresses, URLs, credentials), `inputs` (the key table and statuses of
//! live inputs), `auth` (the one token check), `config` (flags, env, TOML), `store` (SQLite/PostgreSQL), `api` (HTTP), `httpd` (the HTTP
//! server: limits, timeouts), `tls` (certificates, SNI), `secret` (ids,
//! secrets, token hashes), `client` (the client subcommands), `analytics`
//! (viewing time, GraphQL), `captions` (the caption registry of the node), `exposition`
//! (the Prometheus text, per-stream series, the metrics listener),
//! `cluster` (membership, origins and per-stream trees over node links),
//! `playback` (signed playback: signing keys, tokens, the HLS gate), `doctor`
//! (`banyan doctor`: a running node checked as an operator would),
//! `openapi` (the API's OpenAPI document, served), `welcome` (the ready message: credentials, URLs for publishers and players).
//!
//! The binary is the only user; the library exists so that the fuzz targets
//! (fuzz/, whose bodies are [`fuzzing`]) reach the parsers of API bodies that
//! live here.

pub mod acme;
pub mod analytics;
pub mod api;
pub mod auth;
pub mod captions;
pub mod client;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod direct;
pub mod doctor;
pub mod exposition;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
pub mod httpd;
pub mod inputs;
pub mod keepalive;
pub mod node;
pub mod openapi;
pub mod outputs;
pub mod playback;
pub mod quota;
pub mod secret;
pub mod serve;
pub mod store;
pub mod tls;
pub mod webhooks;
pub mod webrtc;
pub mod welcome;
