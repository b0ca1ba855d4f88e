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

/// A PostgreSQL server of one test's own, from Debian's binaries (as
/// `scripts/postgres.sh` starts the shared one), for tests that stop and
/// start it: the shared server carries every other test. Stopped and
/// removed when dropped.
pub struct PrivateServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl PrivateServer {
    /// `initdb` and start on a free loopback port.
    pub fn start() -> PrivateServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (Debian's postgresql package)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("glagent-pg-")
            .tempdir()
            .expect("temp dir");
        let server = PrivateServer {
            dir,
            bin,
            port: crate::free_port(),
        };
        if rustix::process::geteuid().is_root() {
            let chowned = std::process::Command::new("chown")
                .arg("postgres:")
                .arg(server.dir.path())
                .status()
                .expect("chown");
            assert!(chowned.success(), "chown the PostgreSQL directory to postgres");
        }
        let data = server.dir.path().join("data");
        server.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        server.start_again();
        server
    }

    /// `tool` of the server's binaries, run as `postgres` when we are root
    /// (PostgreSQL refuses to run as root).
    fn command(&self, tool: &str) -> std::process::Command {
        let binary = self.bin.join(tool);
        if rustix::process::geteuid().is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            std::process::Command::new(&binary)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `postgres://` URL of a new database on this server.
    pub async fn fresh_database(&self) -> String {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
        sqlx::raw_sql("CREATE DATABASE glagent")
            .execute(&mut conn)
            .await
            .expect("creating the database");
        let _ = conn.close().await;
        format!("postgres://postgres@127.0.0.1:{}/glagent", self.port)
    }

    /// Stops the server: `fast` (what a restart does: sessions are
    /// terminated), or `immediate` (as a crash).
    pub fn stop(&self, mode: &str) {
        let data = self.dir.path().join("data").display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"]);
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "start"]);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}
