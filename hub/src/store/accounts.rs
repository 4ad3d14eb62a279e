//! Users, browser sessions and API tokens. Passwords arrive here already hashed; tokens
//! arrive as SHA-256 digests. Nothing secret is stored in a recoverable form.

use sqlx::Row;

use super::{Store, StoreError};

/// A person who can log in.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
}

pub use hearth_model::Role;

/// A live session or API token, resolved to its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    /// A tenant's tenancy.
    pub tenancy_id: Option<i64>,
    /// Who invited a guest.
    pub invited_by: Option<i64>,
}

/// Columns a session query selects.
macro_rules! session_columns {
    () => {
        "u.id, u.username, u.role, u.tenancy_id, u.invited_by"
    };
}
/// Users of a shredded tenancy no longer exist for logins and sessions.
macro_rules! live_user {
    () => {
        "NOT EXISTS (SELECT 1 FROM tenancies t WHERE t.id = u.tenancy_id AND t.shredded_ms IS NOT NULL)"
    };
}

fn session(r: sqlx::sqlite::SqliteRow) -> Result<Session, StoreError> {
    Ok(Session {
        user_id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: r.try_get::<String, _>("role")?.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
        tenancy_id: r.try_get("tenancy_id")?,
        invited_by: r.try_get("invited_by")?,
    })
}

fn user(row: sqlx::sqlite::SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: row.try_get("role")?,
    })
}

impl Store {
    /// Whether any owner exists (if not, the hub is waiting for its setup code).
    pub async fn has_owner(&self) -> Result<bool, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'owner'").fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    /// Creates the owner, unless one exists already (then `Ok(None)`): the check and the
    /// insert are one statement, so two racing setups cannot both succeed.
    pub async fn create_first_owner(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_ms)
             SELECT ?, ?, 'owner', ? WHERE NOT EXISTS (SELECT 1 FROM users WHERE role = 'owner')
             RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(id)
    }

    /// The owner's user id, once setup is done.
    pub async fn owner_id(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM users WHERE role = 'owner' ORDER BY id LIMIT 1")
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT u.id, u.username, u.password_hash, u.role FROM users u WHERE u.username = ? AND ",
            live_user!()
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(user).transpose()
    }

    /// A user as a session would see them (for guests: whose data they see).
    pub async fn user_session(&self, id: i64) -> Result<Option<Session>, StoreError> {
        let row =
            sqlx::query(concat!("SELECT ", session_columns!(), " FROM users u WHERE u.id = ? AND ", live_user!()))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(session).transpose()
    }

    pub async fn create_session(&self, token_hash: &[u8], user_id: i64, expires: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_ms) VALUES (?, ?, ?)")
            .bind(token_hash)
            .bind(user_id)
            .bind(expires)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The session for a cookie digest, if it exists and has not expired at `now`.
    pub async fn session(&self, token_hash: &[u8], now: i64) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_ms > ? AND ",
            live_user!()
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(session).transpose()
    }

    pub async fn delete_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?").bind(token_hash).execute(&self.pool).await?;
        Ok(())
    }

    /// Removes sessions that expired before `now`.
    pub async fn prune_sessions(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_ms <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub async fn create_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8],
        (now, expires): (i64, i64),
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)
             RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .bind(expires)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The user behind an API token digest, if the token has not expired at `now`.
    pub async fn api_token(&self, token_hash: &[u8], now: i64) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM api_tokens k JOIN users u ON u.id = k.user_id WHERE k.token_hash = ? AND k.expires_ms > ? AND ",
            live_user!()
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(session).transpose()
    }

    /// A user's API tokens that have not expired: (id, name, created, expires), newest first.
    pub async fn api_tokens(&self, user_id: i64, now: i64) -> Result<Vec<(i64, String, i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, created_ms, expires_ms FROM api_tokens WHERE user_id = ? AND expires_ms > ?
             ORDER BY id DESC",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes one of a user's tokens. `false` if they have no such token.
    pub async fn delete_api_token(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
