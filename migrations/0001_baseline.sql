-- The schema as the last release before migrations created it (every
-- module's tables). Every statement is IF NOT EXISTS: a database made by
-- an older node, without `_sqlx_migrations`, is adopted by running this
-- on it (after the columns an even older node lacked are added, see
-- src/store/migrate.rs), which creates what it lacks and keeps every row.
--
-- Portable SQL, the same on SQLite and PostgreSQL: TEXT and BIGINT columns
-- only (booleans are 0/1, times are microseconds since the Unix epoch,
-- JSON is TEXT).

-- Accounts and their API tokens (stored as hashes).
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (
    hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    admin BIGINT NOT NULL,
    created BIGINT NOT NULL,
    id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_by_id ON api_tokens (id);
CREATE INDEX IF NOT EXISTS api_tokens_by_account ON api_tokens (account_id, created);

-- Live inputs; `meta`, `captions`, `recording` and `options` are JSON.
CREATE TABLE IF NOT EXISTS live_inputs (
    uid TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    meta TEXT NOT NULL,
    default_creator TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    stream_key TEXT NOT NULL,
    playback_key TEXT NOT NULL,
    srt_passphrase TEXT NOT NULL,
    srt_play_passphrase TEXT NOT NULL,
    captions TEXT NOT NULL,
    recording TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS live_inputs_by_account ON live_inputs (account_id, created);
-- The key refresh of a shared store reads inputs changed since it last
-- looked, and deletions from the tombstones.
CREATE INDEX IF NOT EXISTS live_inputs_by_modified ON live_inputs (modified);
CREATE TABLE IF NOT EXISTS live_input_deletions (
    uid TEXT PRIMARY KEY,
    deleted BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS live_input_deletions_by_time ON live_input_deletions (deleted);
-- The last connection status of each input (Cloudflare's `status`).
CREATE TABLE IF NOT EXISTS live_input_status (
    uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated BIGINT NOT NULL);

-- Simulcast outputs of live inputs.
CREATE TABLE IF NOT EXISTS live_input_outputs (
    uid TEXT PRIMARY KEY,
    input_uid TEXT NOT NULL,
    account_id TEXT NOT NULL,
    url TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS live_input_outputs_by_input ON live_input_outputs (input_uid, created);

-- Custom ingest domains (uploaded certificates).
CREATE TABLE IF NOT EXISTS ingest_domains (
    domain TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    created BIGINT NOT NULL);

-- Playback signing keys: the private key (PKCS#1 PEM, a secret) and the
-- public modulus and exponent (base64url). `internal` keys are the node's
-- own per-account keys for the token endpoint.
CREATE TABLE IF NOT EXISTS stream_signing_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    private_pem TEXT NOT NULL,
    n TEXT NOT NULL,
    e TEXT NOT NULL,
    internal BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_signing_keys_by_account
    ON stream_signing_keys (account_id, created);

-- Secrets of the whole cluster, created once by whichever node is first.
CREATE TABLE IF NOT EXISTS node_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created BIGINT NOT NULL);

-- Account webhooks and the queue of their events.
CREATE TABLE IF NOT EXISTS webhooks (
    account_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    modified BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    claim TEXT NOT NULL,
    claim_until BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_events_by_account ON webhook_events (account_id, seq);

-- Viewing time: per Unix minute (UTC) and per day since 1970-01-01 (UTC),
-- milliseconds of media delivered.
CREATE TABLE IF NOT EXISTS view_minutes (
    account_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    uid TEXT NOT NULL,
    creator TEXT NOT NULL,
    protocol TEXT NOT NULL,
    millis BIGINT NOT NULL,
    PRIMARY KEY (account_id, minute, uid, creator, protocol));
CREATE TABLE IF NOT EXISTS view_days (
    account_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    uid TEXT NOT NULL,
    creator TEXT NOT NULL,
    protocol TEXT NOT NULL,
    millis BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, uid, creator, protocol));
-- Per-creator totals over a range scan this index in creator order
-- without touching the table.
CREATE INDEX IF NOT EXISTS view_days_by_creator
    ON view_days (account_id, creator, day, millis);

-- The cluster's shared state (used by a cluster on PostgreSQL; empty on a
-- single node): nodes and their heartbeats, stream origins and their
-- leases, the relay tree's edges, link round-trip times, cluster facts.
CREATE TABLE IF NOT EXISTS cluster_nodes (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    link_addr TEXT NOT NULL,
    http_addr TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS stream_origins (
    uid TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    live BIGINT NOT NULL,
    lease_until BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS stream_tree (
    uid TEXT NOT NULL,
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (uid, child));
CREATE TABLE IF NOT EXISTS cluster_rtt (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    rtt_us BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS cluster_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL);
