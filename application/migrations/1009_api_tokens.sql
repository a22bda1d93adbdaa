-- Tokens of the operators' JSON API (/api/v1): only the SHA-256 of each
-- token is stored; `server admin create-api-token` prints the token once.
CREATE TABLE api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
