//! Fresh PostgreSQL databases on the server `scripts/test.sh` starts and
//! names in `GLAGENT_TEST_POSTGRES_URL`.

use sqlx::Connection;

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = std::env::var("GLAGENT_TEST_POSTGRES_URL")
        .expect("GLAGENT_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
    let name = crate::unique("glagent_test").replace('-', "_");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {admin}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("the admin URL names a database");
    format!("{base}/{name}")
}
