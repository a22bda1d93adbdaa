//! Tokens of the operators' JSON API (`/api/v1`): created by the CLI
//! (`server admin create-api-token`), shown once, stored as their SHA-256;
//! a request's bearer token is looked up by that hash.

use sqlx::AnyPool;

/// Create a token named `name`; returns it (shown once, stored hashed).
pub async fn create(pool: &AnyPool, name: &str, now_ms: i64) -> Result<String, sqlx::Error> {
    let token = crate::accounts::new_token();
    sqlx::query("INSERT INTO api_tokens (token_sha256, name, created_at) VALUES ($1, $2, $3)")
        .bind(crate::accounts::sha256_hex(&token))
        .bind(name)
        .bind(now_ms)
        .execute(pool)
        .await?;
    Ok(token)
}

/// The name of the live (not revoked) token `token`, None when there is none.
pub async fn name_of(reader: &AnyPool, token: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL")
        .bind(crate::accounts::sha256_hex(token))
        .fetch_optional(reader)
        .await
}
