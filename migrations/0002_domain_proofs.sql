-- Custom domains: ownership proofs (`upload`: an HTTP token; `acme`: a
-- certificate the node orders), their state, and the lease of the node
-- working on a domain. Rows of an older node were uploads and stay
-- `active`. ACME challenge answers live in `acme_challenges`, so whichever
-- node the CA reaches can answer.
ALTER TABLE ingest_domains ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE ingest_domains ADD COLUMN method TEXT NOT NULL DEFAULT 'upload';
ALTER TABLE ingest_domains ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE ingest_domains ADD COLUMN verify_token TEXT NOT NULL DEFAULT '';
ALTER TABLE ingest_domains ADD COLUMN verify_value TEXT NOT NULL DEFAULT '';
ALTER TABLE ingest_domains ADD COLUMN expires BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ingest_domains ADD COLUMN renewed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ingest_domains ADD COLUMN modified BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ingest_domains ADD COLUMN next_attempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ingest_domains ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ingest_domains ADD COLUMN lease_holder TEXT NOT NULL DEFAULT '';
ALTER TABLE ingest_domains ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
CREATE TABLE acme_challenges (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    value TEXT NOT NULL,
    created BIGINT NOT NULL);
