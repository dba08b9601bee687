//! A throw-away PostgreSQL server for the end-to-end tests (Debian's
//! postgresql package, run as the postgres user in a temp dir).

use std::process::Command;

// The kit's port chooser; a test binary that also loads the kit holds two
// copies of this small module, which is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../common/ports.rs"]
pub mod ports;

/// A throw-away PostgreSQL server in a temp dir; stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        Command::new("chown")
            .args(["postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        run(&[
            &format!("{PG_BIN}/initdb"),
            "--no-sync",
            "-D",
            data,
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        let port = ports::free_port();
        let pg = Postgres { dir, port };
        pg.start_again();
        pg
    }

    /// `pg_ctl start` on the same data dir and port (after a stop).
    pub fn start_again(&self) {
        let opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.dir.path().display(),
            self.port
        );
        let log = self.dir.path().join("log");
        let out = self.pg_ctl(&["-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl stop -m immediate`: the server and its connections vanish
    /// at once (no checkpoint; the next start recovers from the WAL).
    #[allow(dead_code)]
    pub fn stop_immediate(&self) {
        let out = self.pg_ctl(&["-m", "immediate", "stop"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let data = self.dir.path().join("data");
        Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["-D", data.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
