//! kas storage.
//!
//! One [`Store`] over an sqlx `Any` pool: SQLite (the embedded default, in
//! WAL mode) or PostgreSQL (shared by several kas replicas). Queries are
//! written once in the SQL both accept (`$1` placeholders, `RETURNING`);
//! only the migrations differ, because the id column types do.
//!
//! Invariant: no secret is stored in usable form. Tokens arrive here only
//! as digests (see `glagent_core::secret`).

mod models;
mod timestamp;

use std::str::FromStr;

use glagent_core::access::AccessLevel;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use thiserror::Error;

pub use models::*;
pub use timestamp::{BadTimestamp, Timestamp};

/// The most active agent tokens one agent may have, as in GitLab.
pub const MAX_ACTIVE_AGENT_TOKENS: i64 = 2;

/// How long a statement waits for a PostgreSQL connection.
const POSTGRES_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Limit(String),
    #[error("unsupported database url {0:?}: use sqlite://<path> or postgres://...")]
    UnsupportedUrl(String),
    /// The database cannot be reached (down, restarting, refusing
    /// connections, no connection free in time): worth trying again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full: the statement wrote nothing.
    #[error("the database's disk is full: {0}")]
    DiskFull(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
                StoreError::Unavailable(error.to_string())
            }
            E::Database(db) => match db.code().as_deref() {
                // PostgreSQL: 53100 disk_full; SQLite: SQLITE_FULL (13).
                Some("53100" | "13") => StoreError::DiskFull(error.to_string()),
                // PostgreSQL: connection exceptions, shutting down, starting up.
                Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                    StoreError::Unavailable(error.to_string())
                }
                _ => StoreError::Database(error),
            },
            _ => StoreError::Database(error),
        }
    }
}

impl StoreError {
    /// Whether the database, not the request, is at fault and trying again
    /// later may work: callers answer 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::DiskFull(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A page request: 1-based page number and page size.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub page: i64,
    pub per_page: i64,
}

impl Page {
    fn offset(self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

impl Default for Page {
    fn default() -> Self {
        Page { page: 1, per_page: 20 }
    }
}

/// One page of results and the total count.
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// The current time as stored.
fn now() -> String {
    Timestamp::now().to_string()
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// `INSERT`/`UPDATE`/`DELETE ... RETURNING` of one row outside a
/// transaction. SQLite commits such a statement when it is stepped to its
/// end; sqlx's `fetch_one` stops at the first row and loses an error of
/// that commit (a full disk), answering with a row that was never stored
/// (launchbadge/sqlx#2099). Reading every row steps it to its end.
trait ReturningOne<T> {
    async fn returning_optional(self, pool: &AnyPool) -> sqlx::Result<Option<T>>;

    async fn returning_one(self, pool: &AnyPool) -> sqlx::Result<T>
    where
        Self: Sized,
    {
        self.returning_optional(pool).await?.ok_or(sqlx::Error::RowNotFound)
    }
}

impl<'q, T> ReturningOne<T> for sqlx::query::QueryAs<'q, sqlx::Any, T, sqlx::any::AnyArguments>
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    async fn returning_optional(self, pool: &AnyPool) -> sqlx::Result<Option<T>> {
        Ok(self.fetch_all(pool).await?.into_iter().next())
    }
}

/// `NotFound` when a statement that must touch a row touched none.
fn found(done: sqlx::any::AnyQueryResult) -> Result<()> {
    if done.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn conflict_on_unique(error: sqlx::Error, message: impl Into<String>) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message.into()),
        _ => error.into(),
    }
}

impl Store {
    /// Connects to `sqlite://<path>` (created if missing) or `postgres://...`
    /// and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let mut pool_options = AnyPoolOptions::new().max_connections(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        });
        if backend == Backend::Postgres {
            // While the server is down, each statement waits this long for
            // a connection (sqlx keeps dialing) before kas answers 503:
            // callers get an answer, not a hang.
            pool_options = pool_options.acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT);
        }
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL;").await?;
        }
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// A transaction that writes: on SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`), so concurrent writers wait their turn
    /// (busy timeout) instead of failing when a read lock cannot be
    /// upgraded.
    async fn write_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- users and personal access tokens ----

    pub async fn create_user(&self, new: &NewUser) -> Result<User> {
        sqlx::query_as::<_, User>(
            "INSERT INTO users (username, name, email, is_admin, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(&new.username)
        .bind(&new.name)
        .bind(&new.email)
        .bind(i64::from(new.is_admin))
        .bind(now())
        .returning_one(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, "Username has already been taken"))
    }

    pub async fn user(&self, id: i64) -> Result<User> {
        sqlx::query_as::<_, User>("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn user_by_username(&self, username: &str) -> Result<User> {
        sqlx::query_as::<_, User>("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_users(&self, page: Page) -> Result<Paged<User>> {
        let total = self.count("SELECT COUNT(*) FROM users", None).await?;
        let items = sqlx::query_as::<_, User>("SELECT * FROM users ORDER BY id LIMIT $1 OFFSET $2")
            .bind(page.per_page)
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await?;
        Ok(Paged { items, total })
    }

    pub async fn create_personal_access_token(&self, new: &NewPersonalAccessToken) -> Result<PersonalAccessToken> {
        Ok(sqlx::query_as::<_, PersonalAccessToken>(
            "INSERT INTO personal_access_tokens (user_id, name, scopes, token_digest, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(new.user_id)
        .bind(&new.name)
        .bind(new.scopes.join(","))
        .bind(&new.token_digest)
        .bind(&new.expires_at)
        .bind(now())
        .returning_one(&self.pool)
        .await?)
    }

    /// The token with this digest, if it exists at all (revoked or not).
    pub async fn personal_access_token_by_digest(&self, digest: &str) -> Result<PersonalAccessToken> {
        sqlx::query_as::<_, PersonalAccessToken>("SELECT * FROM personal_access_tokens WHERE token_digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A user's tokens, newest first (revoked ones included, as GitLab lists them).
    pub async fn personal_access_tokens(&self, user_id: i64) -> Result<Vec<PersonalAccessToken>> {
        Ok(sqlx::query_as::<_, PersonalAccessToken>(
            "SELECT * FROM personal_access_tokens WHERE user_id = $1 ORDER BY id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn personal_access_token(&self, id: i64) -> Result<PersonalAccessToken> {
        sqlx::query_as::<_, PersonalAccessToken>("SELECT * FROM personal_access_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Revokes a token; it stays listed, marked revoked.
    pub async fn revoke_personal_access_token(&self, id: i64) -> Result<()> {
        let done = sqlx::query("UPDATE personal_access_tokens SET revoked = 1 WHERE id = $1 AND revoked = 0")
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done)
    }

    pub async fn touch_personal_access_token(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE personal_access_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- namespaces (groups and personal namespaces) ----

    pub async fn create_namespace(&self, new: &NewNamespace) -> Result<Namespace> {
        sqlx::query_as::<_, Namespace>(
            "INSERT INTO namespaces (kind, name, path, full_path, parent_id, owner_id, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(&new.path)
        .bind(&new.full_path)
        .bind(new.parent_id)
        .bind(new.owner_id)
        .bind(&new.description)
        .bind(now())
        .returning_one(&self.pool)
        .await
        .map_err(|e| {
            conflict_on_unique(
                e,
                format!(
                    "Failed to save group {{:path=>[\"{} has already been taken\"]}}",
                    new.full_path
                ),
            )
        })
    }

    pub async fn namespace(&self, id: i64) -> Result<Namespace> {
        sqlx::query_as::<_, Namespace>("SELECT * FROM namespaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn namespace_by_full_path(&self, full_path: &str) -> Result<Namespace> {
        sqlx::query_as::<_, Namespace>("SELECT * FROM namespaces WHERE full_path = $1")
            .bind(full_path)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn user_namespace(&self, user_id: i64) -> Result<Namespace> {
        sqlx::query_as::<_, Namespace>("SELECT * FROM namespaces WHERE kind = 'user' AND owner_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// All groups, for the caller to filter by visibility.
    pub async fn groups(&self) -> Result<Vec<Namespace>> {
        Ok(
            sqlx::query_as::<_, Namespace>("SELECT * FROM namespaces WHERE kind = 'group' ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Deletes a namespace; subgroups, projects, agents and tokens go with it.
    pub async fn delete_namespace(&self, id: i64) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        // Members are keyed by (kind, id) without a foreign key.
        let ids = descendants(&mut tx, id).await?;
        for ns in &ids {
            sqlx::query("DELETE FROM members WHERE source_kind = 'project' AND source_id IN (SELECT id FROM projects WHERE namespace_id = $1)")
                .bind(ns)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM members WHERE source_kind = 'namespace' AND source_id = $1")
                .bind(ns)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM namespaces WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- projects ----

    pub async fn create_project(&self, new: &NewProject) -> Result<Project> {
        sqlx::query_as::<_, Project>(
            "INSERT INTO projects (namespace_id, name, path, full_path, description, default_branch, creator_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(new.namespace_id)
        .bind(&new.name)
        .bind(&new.path)
        .bind(&new.full_path)
        .bind(&new.description)
        .bind(&new.default_branch)
        .bind(new.creator_id)
        .bind(now())
        .returning_one(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, "path has already been taken"))
    }

    pub async fn project(&self, id: i64) -> Result<Project> {
        sqlx::query_as::<_, Project>("SELECT * FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn project_by_full_path(&self, full_path: &str) -> Result<Project> {
        sqlx::query_as::<_, Project>("SELECT * FROM projects WHERE full_path = $1")
            .bind(full_path)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// All projects, for the caller to filter by visibility.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        Ok(sqlx::query_as::<_, Project>("SELECT * FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The projects of `ids` that exist, by id (read in batches of 500).
    pub async fn projects_by_ids(&self, ids: &[i64]) -> Result<Vec<Project>> {
        let mut projects = Vec::new();
        for chunk in ids.chunks(500) {
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            // Ids are integers the caller holds, never text from a request.
            let found = sqlx::query_as::<_, Project>(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM projects WHERE id IN ({list}) ORDER BY id"
            )))
            .fetch_all(&self.pool)
            .await?;
            projects.extend(found);
        }
        Ok(projects)
    }

    pub async fn projects_in_namespace(&self, namespace_id: i64) -> Result<Vec<Project>> {
        Ok(
            sqlx::query_as::<_, Project>("SELECT * FROM projects WHERE namespace_id = $1 ORDER BY id")
                .bind(namespace_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn delete_project(&self, id: i64) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        sqlx::query("DELETE FROM members WHERE source_kind = 'project' AND source_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- members ----

    /// Adds a member, or changes the role of an existing one.
    pub async fn upsert_member(&self, source: MemberSource, user_id: i64, access_level: AccessLevel) -> Result<Member> {
        let (kind, id) = source.key();
        Ok(sqlx::query_as::<_, Member>(
            "INSERT INTO members (source_kind, source_id, user_id, access_level, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (source_kind, source_id, user_id) DO UPDATE SET access_level = excluded.access_level \
             RETURNING *",
        )
        .bind(kind)
        .bind(id)
        .bind(user_id)
        .bind(access_level as i64)
        .bind(now())
        .returning_one(&self.pool)
        .await?)
    }

    pub async fn member(&self, source: MemberSource, user_id: i64) -> Result<Option<Member>> {
        let (kind, id) = source.key();
        Ok(sqlx::query_as::<_, Member>(
            "SELECT * FROM members WHERE source_kind = $1 AND source_id = $2 AND user_id = $3",
        )
        .bind(kind)
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn members(&self, source: MemberSource) -> Result<Vec<Member>> {
        let (kind, id) = source.key();
        Ok(sqlx::query_as::<_, Member>(
            "SELECT * FROM members WHERE source_kind = $1 AND source_id = $2 ORDER BY user_id",
        )
        .bind(kind)
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn remove_member(&self, source: MemberSource, user_id: i64) -> Result<()> {
        let (kind, id) = source.key();
        let done = sqlx::query("DELETE FROM members WHERE source_kind = $1 AND source_id = $2 AND user_id = $3")
            .bind(kind)
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        found(done)
    }

    // ---- cluster agents ----

    pub async fn create_agent(&self, project_id: i64, name: &str, created_by: i64) -> Result<Agent> {
        sqlx::query_as::<_, Agent>(
            "INSERT INTO cluster_agents (project_id, name, created_by_user_id, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING *",
        )
        .bind(project_id)
        .bind(name)
        .bind(created_by)
        .bind(now())
        .returning_one(&self.pool)
        .await
        .map_err(|e| {
            conflict_on_unique(
                e,
                format!("name has already been taken: this project already has an agent named {name:?}"),
            )
        })
    }

    pub async fn agent(&self, project_id: i64, agent_id: i64) -> Result<Agent> {
        sqlx::query_as::<_, Agent>("SELECT * FROM cluster_agents WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A project's agent by name.
    pub async fn agent_by_name(&self, project_id: i64, name: &str) -> Result<Agent> {
        sqlx::query_as::<_, Agent>("SELECT * FROM cluster_agents WHERE project_id = $1 AND name = $2")
            .bind(project_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// An agent by id alone (the proxy knows no project).
    pub async fn agent_by_id(&self, agent_id: i64) -> Result<Agent> {
        sqlx::query_as::<_, Agent>("SELECT * FROM cluster_agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn agents(&self, project_id: i64, page: Page) -> Result<Paged<Agent>> {
        let total = self
            .count(
                "SELECT COUNT(*) FROM cluster_agents WHERE project_id = $1",
                Some(project_id),
            )
            .await?;
        let items = sqlx::query_as::<_, Agent>(
            "SELECT * FROM cluster_agents WHERE project_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
        )
        .bind(project_id)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Paged { items, total })
    }

    /// Deletes an agent (its tokens go with it), and records it for the
    /// replicas holding its connections ([`Store::revocations_after`]).
    pub async fn delete_agent(&self, project_id: i64, agent_id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM cluster_agents WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        found(done)?;
        self.record_revocation(None, Some(agent_id)).await
    }

    // ---- agent tokens ----

    /// Creates a token unless the agent already has the maximum number of
    /// active ones. The count and the insert happen in one transaction
    /// that holds the agent (SQLite's write lock, PostgreSQL's row lock),
    /// so concurrent creations cannot pass the limit together. The token
    /// starts undelivered ([`Store::agent_token_delivered`]) and counts
    /// towards the limit from the start.
    pub async fn create_agent_token(&self, new: &NewAgentToken) -> Result<AgentToken> {
        let mut tx = self.write_transaction().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM cluster_agents WHERE id = $1 FOR UPDATE")
                .bind(new.agent_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM cluster_agent_tokens WHERE agent_id = $1 AND status = 0")
                .bind(new.agent_id)
                .fetch_one(&mut *tx)
                .await?;
        if active >= MAX_ACTIVE_AGENT_TOKENS {
            return Err(StoreError::Limit(format!(
                "An agent can have only {MAX_ACTIVE_AGENT_TOKENS} active tokens at a time: revoke one first"
            )));
        }
        let token = sqlx::query_as::<_, AgentToken>(
            "INSERT INTO cluster_agent_tokens (agent_id, name, description, token_digest, created_by_user_id, created_at, delivered) \
             VALUES ($1, $2, $3, $4, $5, $6, 0) RETURNING *",
        )
        .bind(new.agent_id)
        .bind(&new.name)
        .bind(&new.description)
        .bind(&new.token_digest)
        .bind(new.created_by)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Records that the token reached whoever created it.
    pub async fn agent_token_delivered(&self, token_id: i64) -> Result<()> {
        sqlx::query("UPDATE cluster_agent_tokens SET delivered = 1 WHERE id = $1 AND delivered = 0")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the tokens created before `cutoff` that never reached
    /// anyone: kas stopped between storing one and finishing its answer,
    /// and nobody has used it since. Returns them.
    pub async fn forget_undelivered_agent_tokens(&self, cutoff: Timestamp) -> Result<Vec<AgentToken>> {
        Ok(sqlx::query_as::<_, AgentToken>(
            "DELETE FROM cluster_agent_tokens WHERE delivered = 0 AND created_at < $1 RETURNING *",
        )
        .bind(cutoff.to_string())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn active_agent_tokens(&self, agent_id: i64, page: Page) -> Result<Paged<AgentToken>> {
        let total = self
            .count(
                "SELECT COUNT(*) FROM cluster_agent_tokens WHERE agent_id = $1 AND status = 0",
                Some(agent_id),
            )
            .await?;
        let items = sqlx::query_as::<_, AgentToken>(
            "SELECT * FROM cluster_agent_tokens WHERE agent_id = $1 AND status = 0 ORDER BY id LIMIT $2 OFFSET $3",
        )
        .bind(agent_id)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Paged { items, total })
    }

    /// An active token of the agent.
    pub async fn active_agent_token(&self, agent_id: i64, token_id: i64) -> Result<AgentToken> {
        sqlx::query_as::<_, AgentToken>(
            "SELECT * FROM cluster_agent_tokens WHERE agent_id = $1 AND id = $2 AND status = 0",
        )
        .bind(agent_id)
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Revokes an active token. Revoked tokens stay as records.
    /// Revokes a token, and records the revocation for the replicas
    /// holding its connections ([`Store::revocations_after`]).
    pub async fn revoke_agent_token(&self, agent_id: i64, token_id: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE cluster_agent_tokens SET status = 1, revoked_at = $1 WHERE agent_id = $2 AND id = $3 AND status = 0",
        )
        .bind(now())
        .bind(agent_id)
        .bind(token_id)
        .execute(&self.pool)
        .await?;
        found(done)?;
        self.record_revocation(Some(token_id), None).await
    }

    /// The active token with this digest and its agent: how an agent is
    /// recognised when it connects.
    pub async fn agent_by_token_digest(&self, digest: &str) -> Result<(AgentToken, Agent)> {
        let token = sqlx::query_as::<_, AgentToken>(
            "SELECT * FROM cluster_agent_tokens WHERE token_digest = $1 AND status = 0",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        if !token.delivered {
            // Whoever uses it has it: kas stopped after sending it and
            // before recording that.
            self.agent_token_delivered(token.id).await?;
        }
        let agent = sqlx::query_as::<_, Agent>("SELECT * FROM cluster_agents WHERE id = $1")
            .bind(token.agent_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok((token, agent))
    }

    /// Whether the token is still active (it exists and is not revoked).
    /// Records (or refreshes) that `replica_id` holds a connection of the
    /// agent, reachable at `private_url`, until `expires_at`.
    pub async fn put_agent_route(
        &self,
        agent_id: i64,
        replica_id: &str,
        private_url: &str,
        expires_at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_routes (agent_id, replica_id, private_url, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (agent_id, replica_id) DO UPDATE SET private_url = excluded.private_url, expires_at = excluded.expires_at",
        )
        .bind(agent_id)
        .bind(replica_id)
        .bind(private_url)
        .bind(expires_at.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Extends every route of `replica_id` to `expires_at` and deletes routes
    /// of any replica that expired before `forget_before` (replicas that
    /// died). Returns how many of this replica's routes were extended.
    pub async fn refresh_agent_routes(
        &self,
        replica_id: &str,
        expires_at: Timestamp,
        forget_before: Timestamp,
    ) -> Result<u64> {
        let refreshed = sqlx::query("UPDATE agent_routes SET expires_at = $1 WHERE replica_id = $2")
            .bind(expires_at.to_string())
            .bind(replica_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM agent_routes WHERE expires_at < $1")
            .bind(forget_before.to_string())
            .execute(&self.pool)
            .await?;
        Ok(refreshed)
    }

    /// Forgets one agent's route through a replica, or all of a replica's
    /// routes when `agent_id` is `None`.
    pub async fn delete_agent_routes(&self, replica_id: &str, agent_id: Option<i64>) -> Result<()> {
        match agent_id {
            Some(agent_id) => {
                sqlx::query("DELETE FROM agent_routes WHERE replica_id = $1 AND agent_id = $2")
                    .bind(replica_id)
                    .bind(agent_id)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM agent_routes WHERE replica_id = $1")
                    .bind(replica_id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// The private URLs of other replicas holding the agent, unexpired.
    pub async fn agent_routes(&self, agent_id: i64, except_replica: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT private_url FROM agent_routes WHERE agent_id = $1 AND replica_id <> $2 AND expires_at > $3 \
             ORDER BY replica_id",
        )
        .bind(agent_id)
        .bind(except_replica)
        .bind(now())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The last contact (see [`Store::agent_last_contact`]) of every agent
    /// of a project that has one, by agent id: one query for a whole page.
    pub async fn project_agents_last_contact(&self, project_id: i64) -> Result<Vec<(i64, Timestamp)>> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT t.agent_id, MAX(t.last_used_at) FROM cluster_agent_tokens t \
             JOIN cluster_agents a ON a.id = t.agent_id WHERE a.project_id = $1 GROUP BY t.agent_id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, last)| Some((id, Timestamp::try_from(last?).ok()?)))
            .collect())
    }

    /// When any token of the agent, revoked ones included, was last used:
    /// the agent's last contact with kas.
    pub async fn agent_last_contact(&self, agent_id: i64) -> Result<Option<Timestamp>> {
        let last: Option<String> =
            sqlx::query_scalar("SELECT MAX(last_used_at) FROM cluster_agent_tokens WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(last.and_then(|t| Timestamp::try_from(t).ok()))
    }

    pub async fn touch_agent_token(&self, token_id: i64) -> Result<()> {
        sqlx::query("UPDATE cluster_agent_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- CI jobs ----

    pub async fn create_ci_job(&self, job: &NewCiJob) -> Result<CiJob> {
        sqlx::query_as::<_, CiJob>(
            "INSERT INTO ci_jobs (job_id, project_id, pipeline_id, user_id, ref_name, ref_protected, environment_slug, \
             environment_tier, token_digest, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
        )
        .bind(job.job_id)
        .bind(job.project_id)
        .bind(job.pipeline_id)
        .bind(job.user_id)
        .bind(&job.ref_name)
        .bind(i64::from(job.ref_protected))
        .bind(&job.environment_slug)
        .bind(&job.environment_tier)
        .bind(&job.token_digest)
        .bind(job.expires_at.to_string())
        .bind(now())
        .returning_one(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, format!("job {} is already registered", job.job_id)))
    }

    pub async fn ci_job_by_token_digest(&self, digest: &str) -> Result<CiJob> {
        sqlx::query_as::<_, CiJob>("SELECT * FROM ci_jobs WHERE token_digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn ci_job(&self, job_id: i64) -> Result<CiJob> {
        sqlx::query_as::<_, CiJob>("SELECT * FROM ci_jobs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Ends a job: its token stops working.
    pub async fn finish_ci_job(&self, job_id: i64) -> Result<()> {
        let done = sqlx::query("UPDATE ci_jobs SET finished = 1 WHERE job_id = $1")
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        found(done)
    }

    /// Every agent of the instance, for CI access decisions.
    pub async fn all_agents(&self) -> Result<Vec<Agent>> {
        Ok(sqlx::query_as::<_, Agent>("SELECT * FROM cluster_agents ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    // ---- pushes ----

    pub async fn record_push(&self, push: &NewPushEvent) -> Result<PushEvent> {
        Ok(sqlx::query_as::<_, PushEvent>(
            "INSERT INTO push_events (project_id, ref_name, before_sha, after_sha, user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(push.project_id)
        .bind(&push.ref_name)
        .bind(&push.before_sha)
        .bind(&push.after_sha)
        .bind(push.user_id)
        .bind(now())
        .returning_one(&self.pool)
        .await?)
    }

    /// Pushes recorded after push `id`, oldest first, at most `limit`.
    pub async fn push_events_after(&self, id: i64, limit: i64) -> Result<Vec<PushEvent>> {
        Ok(
            sqlx::query_as::<_, PushEvent>("SELECT * FROM push_events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The id of the newest push, or 0.
    pub async fn last_push_event_id(&self) -> Result<i64> {
        self.count("SELECT COALESCE(MAX(id), 0) FROM push_events", None).await
    }

    pub async fn push_events(&self, project_id: i64) -> Result<Vec<PushEvent>> {
        Ok(
            sqlx::query_as::<_, PushEvent>("SELECT * FROM push_events WHERE project_id = $1 ORDER BY id")
                .bind(project_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn count(&self, sql: &'static str, arg: Option<i64>) -> Result<i64> {
        let mut query = sqlx::query_scalar::<_, i64>(sql);
        if let Some(arg) = arg {
            query = query.bind(arg);
        }
        Ok(query.fetch_one(&self.pool).await?)
    }
}

/// The ids of a namespace and all namespaces below it.
async fn descendants(tx: &mut sqlx::Transaction<'_, sqlx::Any>, root: i64) -> Result<Vec<i64>> {
    let mut all = vec![root];
    let mut next = 0;
    while next < all.len() {
        let children: Vec<i64> = sqlx::query_scalar("SELECT id FROM namespaces WHERE parent_id = $1")
            .bind(all[next])
            .fetch_all(&mut **tx)
            .await?;
        all.extend(children);
        next += 1;
    }
    Ok(all)
}

/// Environments.
impl Store {
    pub async fn create_environment(&self, new: &NewEnvironment) -> Result<Environment> {
        let now = now();
        sqlx::query_as::<_, Environment>(
            "INSERT INTO environments (project_id, name, slug, external_url, description, tier, state, \
             auto_stop_setting, cluster_agent_id, kubernetes_namespace, flux_resource_path, created_at, updated_at, \
             more_namespaces) \
             VALUES ($1, $2, $3, $4, $5, $6, 'available', $7, $8, $9, $10, $11, $12, $13) RETURNING *",
        )
        .bind(new.project_id)
        .bind(&new.name)
        .bind(&new.slug)
        .bind(&new.external_url)
        .bind(&new.description)
        .bind(new.tier.name())
        .bind(&new.auto_stop_setting)
        .bind(new.cluster_agent_id)
        .bind(&new.kubernetes_namespace)
        .bind(&new.flux_resource_path)
        .bind(&now)
        .bind(&now)
        .bind(new.more_namespaces.join(","))
        .returning_one(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, "name has already been taken"))
    }

    pub async fn environment(&self, project_id: i64, id: i64) -> Result<Environment> {
        sqlx::query_as::<_, Environment>("SELECT * FROM environments WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A project's environments, oldest first.
    pub async fn environments(&self, project_id: i64) -> Result<Vec<Environment>> {
        Ok(
            sqlx::query_as::<_, Environment>("SELECT * FROM environments WHERE project_id = $1 ORDER BY id")
                .bind(project_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Writes every field an environment may change (not its name or slug).
    pub async fn save_environment(&self, environment: &Environment) -> Result<Environment> {
        sqlx::query_as::<_, Environment>(
            "UPDATE environments SET external_url = $1, description = $2, tier = $3, state = $4, \
             auto_stop_setting = $5, cluster_agent_id = $6, kubernetes_namespace = $7, flux_resource_path = $8, \
             updated_at = $9, more_namespaces = $12 WHERE project_id = $10 AND id = $11 RETURNING *",
        )
        .bind(&environment.external_url)
        .bind(&environment.description)
        .bind(environment.tier.name())
        .bind(environment.state.name())
        .bind(&environment.auto_stop_setting)
        .bind(environment.cluster_agent_id)
        .bind(&environment.kubernetes_namespace)
        .bind(&environment.flux_resource_path)
        .bind(now())
        .bind(environment.project_id)
        .bind(environment.id)
        .bind(environment.more_namespaces.join(","))
        .returning_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    pub async fn delete_environment(&self, project_id: i64, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM environments WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done)
    }
}

/// Web sign-in: password digests and browser sessions.
impl Store {
    /// Sets (or, with `None`, removes) a user's password digest.
    pub async fn set_password_digest(&self, user_id: i64, digest: Option<&str>) -> Result<()> {
        let done = sqlx::query("UPDATE users SET password_digest = $1 WHERE id = $2")
            .bind(digest)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        found(done)
    }

    /// The user called `username` and their password digest, if they have one.
    pub async fn user_with_password_digest(&self, username: &str) -> Result<(User, Option<String>)> {
        let user = self.user_by_username(username).await?;
        let digest: Option<String> = sqlx::query_scalar("SELECT password_digest FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(&self.pool)
            .await?;
        Ok((user, digest))
    }

    pub async fn create_web_session(&self, token_digest: &str, user_id: i64, expires_at: Timestamp) -> Result<()> {
        sqlx::query("INSERT INTO web_sessions (token_digest, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_digest)
            .bind(user_id)
            .bind(now())
            .bind(expires_at.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user of an unexpired session.
    pub async fn web_session_user(&self, token_digest: &str) -> Result<User> {
        let user_id: i64 =
            sqlx::query_scalar("SELECT user_id FROM web_sessions WHERE token_digest = $1 AND expires_at > $2")
                .bind(token_digest)
                .bind(now())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound)?;
        self.user(user_id).await
    }

    /// Ends a session; also forgets every expired one.
    pub async fn delete_web_session(&self, token_digest: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE token_digest = $1 OR expires_at < $2")
            .bind(token_digest)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Revocations for the replicas (tokens revoked, agents deleted).
impl Store {
    async fn record_revocation(&self, token_id: Option<i64>, agent_id: Option<i64>) -> Result<()> {
        sqlx::query("INSERT INTO revocations (token_id, agent_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_id)
            .bind(agent_id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest revocation's id (0 when there is none): where a replica
    /// starts reading.
    pub async fn latest_revocation(&self) -> Result<i64> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM revocations")
            .fetch_one(&self.pool)
            .await?;
        Ok(latest.unwrap_or(0))
    }

    /// The revocations after `after`, oldest first.
    pub async fn revocations_after(&self, after: i64) -> Result<Vec<Revocation>> {
        let rows: Vec<(i64, Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT id, token_id, agent_id FROM revocations WHERE id > $1 ORDER BY id")
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, token_id, agent_id)| Revocation { id, token_id, agent_id })
            .collect())
    }

    /// Forgets revocations older than `age`.
    pub async fn forget_revocations_older_than(&self, age: std::time::Duration) -> Result<()> {
        sqlx::query("DELETE FROM revocations WHERE created_at < $1")
            .bind(Timestamp::before_now(age).to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Which of `token_ids` are active tokens, sorted (checked in batches
    /// of 500).
    pub async fn active_agent_token_ids(&self, token_ids: &[i64]) -> Result<Vec<i64>> {
        let mut active = Vec::new();
        for chunk in token_ids.chunks(500) {
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            // Ids are integers this kas holds, never input.
            let found: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM cluster_agent_tokens WHERE status = 0 AND id IN ({list})"
            )))
            .fetch_all(&self.pool)
            .await?;
            active.extend(found);
        }
        active.sort_unstable();
        Ok(active)
    }

    /// Records the use of many agent tokens at once (the connections a
    /// replica holds), in batches of 500.
    pub async fn touch_agent_tokens(&self, token_ids: &[i64]) -> Result<()> {
        let now = now();
        for chunk in token_ids.chunks(500) {
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            // Ids are integers this kas holds, never input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE cluster_agent_tokens SET last_used_at = $1 WHERE id IN ({list})"
            )))
            .bind(&now)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// Agents' activity lists.
impl Store {
    /// How many events the store keeps per agent (the newest).
    pub const AGENT_EVENTS_KEPT: i64 = 200;

    /// Records an event and forgets the agent's oldest beyond the
    /// [`Self::AGENT_EVENTS_KEPT`] newest. An agent deleted meanwhile
    /// records nothing.
    pub async fn record_agent_event(&self, agent_id: i64, kind: AgentEventKind, detail: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_events (agent_id, kind, detail, created_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM cluster_agents WHERE id = $1)",
        )
        .bind(agent_id)
        .bind(kind.as_str())
        .bind(detail)
        .bind(now())
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM agent_events WHERE agent_id = $1 AND id < \
             (SELECT MIN(id) FROM (SELECT id FROM agent_events WHERE agent_id = $1 ORDER BY id DESC LIMIT $2) AS kept)",
        )
        .bind(agent_id)
        .bind(Self::AGENT_EVENTS_KEPT)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an event unless the agent's newest event of that kind says
    /// the same (a broken configuration is reported once, not once per
    /// connection and push).
    pub async fn record_agent_event_once(&self, agent_id: i64, kind: AgentEventKind, detail: &str) -> Result<()> {
        let latest: Option<String> = sqlx::query_scalar(
            "SELECT detail FROM agent_events WHERE agent_id = $1 AND kind = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(agent_id)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        if latest.as_deref() == Some(detail) {
            return Ok(());
        }
        self.record_agent_event(agent_id, kind, detail).await
    }

    /// The agent's newest events, newest first.
    pub async fn agent_events(&self, agent_id: i64, limit: i64) -> Result<Vec<AgentEvent>> {
        Ok(
            sqlx::query_as::<_, AgentEvent>("SELECT * FROM agent_events WHERE agent_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(agent_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// The audit log of proxied requests.
impl Store {
    /// Stores a batch of audit events: one transaction, a statement per
    /// ten events.
    pub async fn record_audit_events(&self, events: &[NewAuditEvent]) -> Result<()> {
        const COLUMNS: usize = 13;
        // Ten rows per statement. sqlx asks SQLite for each parameter's
        // name, and SQLite finds a numbered one (`$7`) by walking the
        // statement's list of them: binding costs grow with the square of
        // the parameters (100 rows, 1,300 parameters, was kas's busiest
        // function under proxy load; ten rows still 1.6 % of its CPU).
        // SQLite's anonymous `?` has no name to look up; PostgreSQL only
        // takes numbered ones.
        const ROWS: usize = 10;
        let anonymous = self.backend == Backend::Sqlite;
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let params: Vec<String> = (1..=COLUMNS)
                        .map(|c| {
                            if anonymous {
                                "?".to_string()
                            } else {
                                format!("${}", row * COLUMNS + c)
                            }
                        })
                        .collect();
                    format!("({})", params.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO proxy_audit_events (agent_id, started_at, credential, user_id, username, project_id, \
                 pipeline_id, job_id, impersonated, verb, path, status, duration_us) VALUES {}",
                rows.join(", ")
            );
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for event in chunk {
                query = query
                    .bind(event.agent_id)
                    .bind(event.started_at.to_string())
                    .bind(&event.credential)
                    .bind(event.user_id)
                    .bind(&event.username)
                    .bind(event.project_id)
                    .bind(event.pipeline_id)
                    .bind(event.job_id)
                    .bind(event.impersonated.as_deref())
                    .bind(&event.verb)
                    .bind(&event.path)
                    .bind(event.status)
                    .bind(event.duration_us);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An agent's audit events, newest first.
    pub async fn audit_events(&self, agent_id: i64, page: Page) -> Result<Paged<AuditEvent>> {
        let total = self
            .count(
                "SELECT COUNT(*) FROM proxy_audit_events WHERE agent_id = $1",
                Some(agent_id),
            )
            .await?;
        let items = sqlx::query_as::<_, AuditEvent>(
            "SELECT * FROM proxy_audit_events WHERE agent_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        )
        .bind(agent_id)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Paged { items, total })
    }

    /// Forgets the audit events of requests started before `cutoff`;
    /// returns how many.
    pub async fn forget_audit_events_before(&self, cutoff: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM proxy_audit_events WHERE started_at < $1")
            .bind(cutoff.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// URL configurations of receptive agents.
impl Store {
    /// Stores an agent's URL configuration; an agent has at most one.
    pub async fn create_url_configuration(&self, new: &NewUrlConfiguration) -> Result<UrlConfiguration> {
        sqlx::query_as::<_, UrlConfiguration>(
            "INSERT INTO url_configurations (agent_id, url, ca_cert, tls_host, client_cert, client_key_sealed, \
             public_key, private_key_sealed, created_by_user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        )
        .bind(new.agent_id)
        .bind(&new.url)
        .bind(&new.ca_cert)
        .bind(&new.tls_host)
        .bind(&new.client_cert)
        .bind(&new.client_key_sealed)
        .bind(&new.public_key)
        .bind(&new.private_key_sealed)
        .bind(new.created_by_user_id)
        .bind(now())
        .returning_one(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, "URL configuration already exists for this agent"))
    }

    /// The agent's URL configuration, if it is receptive.
    pub async fn url_configuration(&self, agent_id: i64) -> Result<Option<UrlConfiguration>> {
        Ok(
            sqlx::query_as::<_, UrlConfiguration>("SELECT * FROM url_configurations WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The receptive agents of a project (those with a URL configuration).
    pub async fn receptive_agent_ids(&self, project_id: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT u.agent_id FROM url_configurations u JOIN cluster_agents a ON a.id = u.agent_id \
             WHERE a.project_id = $1 ORDER BY u.agent_id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every URL configuration (the receptive agents kas dials).
    pub async fn url_configurations(&self) -> Result<Vec<UrlConfiguration>> {
        Ok(
            sqlx::query_as::<_, UrlConfiguration>("SELECT * FROM url_configurations ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Takes every receptive agent no live replica holds, renews those
    /// `replica_id` holds until `expires_at`, and returns the agents it
    /// holds now. One statement, so two replicas never both win an agent.
    pub async fn hold_receptive_agents(&self, replica_id: &str, expires_at: Timestamp) -> Result<Vec<i64>> {
        sqlx::query(
            "INSERT INTO receptive_holders (agent_id, replica_id, expires_at) \
             SELECT agent_id, $1, $2 FROM url_configurations WHERE true \
             ON CONFLICT (agent_id) DO UPDATE SET replica_id = excluded.replica_id, expires_at = excluded.expires_at \
             WHERE receptive_holders.replica_id = excluded.replica_id OR receptive_holders.expires_at < $3",
        )
        .bind(replica_id)
        .bind(expires_at.to_string())
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT agent_id FROM receptive_holders WHERE replica_id = $1 ORDER BY agent_id")
                .bind(replica_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Lets other replicas take `replica_id`'s receptive agents at once.
    pub async fn release_receptive_agents(&self, replica_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM receptive_holders WHERE replica_id = $1")
            .bind(replica_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_url_configuration(&self, agent_id: i64, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM url_configurations WHERE agent_id = $1 AND id = $2")
            .bind(agent_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done)
    }
}
