//! A PostgreSQL cluster of the service's own, for when no `DATABASE_URL` is given.
//!
//! The cluster lives under the data dir and keeps its data across restarts. It listens on a
//! Unix socket only (no TCP port), in a directory only its owner can enter, and trusts local
//! connections: nothing else on the machine can reach it. PostgreSQL refuses to run as root,
//! so when the service runs as root the cluster runs as the unprivileged `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

const DATABASE: &str = "job_service";
const SUPERUSER: &str = "postgres";
/// Longest path of a Unix socket on Linux, less the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug)]
pub struct ManagedPostgres {
    bin_dir: PathBuf,
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<User>,
}

impl ManagedPostgres {
    /// Starts (initialising it first if needed) or adopts the cluster under `data_dir`.
    pub async fn start(data_dir: &Path, bin_dir: Option<&Path>) -> anyhow::Result<Self> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.to_owned(),
            None => find_bin_dir().context(
                "no DATABASE_URL is set, so the service runs its own PostgreSQL, but the PostgreSQL \
                 server programs (initdb, pg_ctl, postgres) were not found. Install them \
                 (Debian/Ubuntu: apt-get install postgresql), point --postgres-bin-dir at them, or \
                 set DATABASE_URL to use an existing database",
            )?,
        };
        for program in ["initdb", "pg_ctl", "postgres"] {
            if !bin_dir.join(program).is_file() {
                bail!(
                    "{} has no {program}: point --postgres-bin-dir at PostgreSQL's server programs, \
                     or set DATABASE_URL",
                    bin_dir.display()
                );
            }
        }
        let run_as = if Uid::effective().is_root() {
            let user = User::from_name(SUPERUSER)?.with_context(|| {
                format!(
                    "PostgreSQL refuses to run as root and there is no user {SUPERUSER:?} to run it as: \
                     create one, start the service as an unprivileged user, or set DATABASE_URL"
                )
            })?;
            Some(user)
        } else {
            None
        };

        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        let cluster_dir = data_dir.join("postgres");
        let socket_dir = socket_dir_for(&cluster_dir)?;
        let cluster = ManagedPostgres {
            bin_dir,
            cluster_dir,
            socket_dir,
            run_as,
        };
        cluster.prepare_dirs()?;
        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            cluster.initdb().await?;
        }
        cluster.write_settings()?;
        if cluster.is_running().await? {
            tracing::info!(dir = %cluster.cluster_dir.display(), "adopting the running postgresql cluster");
        } else {
            cluster.pg_ctl_start().await?;
        }
        cluster.create_database().await?;
        Ok(cluster)
    }

    /// How to connect to the service's database in this cluster.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .username(SUPERUSER)
            .database(DATABASE)
    }

    /// Stops the cluster (fast shutdown: sessions are closed, committed data is kept).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let output = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "-w"])
            .output()
            .await?;
        check(output, "pg_ctl stop")?;
        tracing::info!("postgresql cluster stopped");
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        // The caller's working directory may be closed to the cluster's user.
        command
            .current_dir("/")
            .env("LC_ALL", "C.UTF-8")
            .kill_on_drop(false);
        if let Some(user) = &self.run_as {
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .env("USER", &user.name);
        }
        command
    }

    fn prepare_dirs(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for dir in [&self.cluster_dir, &self.socket_dir] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            if let Some(user) = &self.run_as {
                chown(dir, user.uid, user.gid)?;
            }
        }
        Ok(())
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        tracing::info!(dir = %self.cluster_dir.display(), "initialising a postgresql cluster");
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .await?;
        check(output, "initdb").map_err(|e| self.explain(e))?;
        // Our settings live in a file of their own, rewritten at each start.
        let conf = self.cluster_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("\ninclude_if_exists = 'job-service.conf'\n");
        std::fs::write(&conf, text)?;
        Ok(())
    }

    fn write_settings(&self) -> anyhow::Result<()> {
        let socket_dir = self.socket_dir.display().to_string().replace('\'', "''");
        let path = self.cluster_dir.join("job-service.conf");
        std::fs::write(
            &path,
            format!(
                "# Written by job-service at each start.\n\
                 listen_addresses = ''\n\
                 unix_socket_directories = '{socket_dir}'\n"
            ),
        )?;
        if let Some(user) = &self.run_as {
            chown(&path, user.uid, user.gid)?;
        }
        Ok(())
    }

    async fn is_running(&self) -> anyhow::Result<bool> {
        let status = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.cluster_dir)
            .output()
            .await?
            .status;
        Ok(status.success())
    }

    async fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let output = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.cluster_dir)
            .arg("-l")
            .arg(self.cluster_dir.join("server.log"))
            .args(["-w", "-t", "60"])
            .output()
            .await?;
        check(output, "pg_ctl start").map_err(|e| self.explain(e))?;
        tracing::info!(dir = %self.cluster_dir.display(), "postgresql cluster started");
        Ok(())
    }

    async fn create_database(&self) -> anyhow::Result<()> {
        let options = self.connect_options().database("postgres");
        let mut conn = PgConnection::connect_with(&options)
            .await
            .context("cannot connect to the service's own postgresql cluster")?;
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::query(&format!("create database {DATABASE}"))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        Ok(())
    }

    fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        match &self.run_as {
            Some(user) => error.context(format!(
                "the service runs as root, so its PostgreSQL runs as user {:?}, which must be able \
                 to reach {}; choose a --data-dir that user can reach, or set DATABASE_URL",
                user.name,
                self.cluster_dir.display()
            )),
            None => error,
        }
    }
}

/// PostgreSQL's server programs: the newest under /usr/lib/postgresql (Debian's layout), else
/// wherever `initdb` is on the PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = u32::from_str(entry.file_name().to_str()?).ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    })
}

/// The cluster directory when its socket path fits, else a directory under the system's temp
/// dir named after it.
fn socket_dir_for(cluster_dir: &Path) -> anyhow::Result<PathBuf> {
    let socket = cluster_dir.join(".s.PGSQL.5432");
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(cluster_dir.to_owned());
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cluster_dir.as_os_str().as_encoded_bytes());
    let name = hex::encode(&digest[..6]);
    Ok(std::env::temp_dir().join(format!("job-service-pg-{name}")))
}

fn chown(path: &Path, uid: Uid, gid: Gid) -> anyhow::Result<()> {
    nix::unistd::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot hand {} to the postgresql user", path.display()))
}

fn check(output: Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cluster_dirs_hold_their_own_socket() {
        let dir = Path::new("/var/lib/job-service/postgres");
        assert_eq!(socket_dir_for(dir).unwrap(), dir);
    }

    #[test]
    fn long_cluster_dirs_move_the_socket_to_the_temp_dir() {
        let dir = PathBuf::from(format!("/{}/postgres", "d".repeat(120)));
        let socket_dir = socket_dir_for(&dir).unwrap();
        assert!(socket_dir.starts_with(std::env::temp_dir()));
        assert!(socket_dir.join(".s.PGSQL.5432").as_os_str().len() <= MAX_SOCKET_PATH);
    }
}
