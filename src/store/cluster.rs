//! A PostgreSQL cluster of the service's own, for when no `DATABASE_URL` is given.
//!
//! The cluster lives under the data dir and keeps its data across restarts. It listens on a
//! Unix socket only (no TCP port), in a directory only its owner can enter, and trusts local
//! connections: nothing else on the machine can reach it. PostgreSQL refuses to run as root,
//! so when the service runs as root the cluster runs as the unprivileged `postgres` user.
//!
//! One service process owns a data dir at a time (a lock on `job-service.lock` in it): a
//! second one started on the same dir is refused at once, before it could adopt the first
//! one's cluster or stop it on its way out. A cluster left running by a service that was
//! killed is adopted by the next one, which then owns it.
//!
//! The service supervises the cluster while it serves ([`ManagedPostgres::supervise`]): a
//! postmaster that dies (killed, or stopped by hand) is started again.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use std::fs::File;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::{Gid, Pid, Uid, User};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DATABASE: &str = "job_service";
const SUPERUSER: &str = "postgres";
/// Longest path of a Unix socket on Linux, less the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// How often the supervisor looks at the postmaster.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a start waits for a postmaster that does not answer (it is starting, or going
/// away after a crash) and retries starts that fail, before giving up.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How often a start looks again at a postmaster that does not answer yet.
const START_POLL: Duration = Duration::from_millis(250);
/// How long one connection may take to tell whether the postmaster answers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct ManagedPostgres {
    bin_dir: PathBuf,
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<User>,
    /// This process's hold on the data dir, for as long as it lives: only the holder starts,
    /// adopts or stops the cluster.
    _owner: Flock<File>,
}

/// The file whose lock says which service process owns a data dir (its pid is written in it).
const OWNER_FILE: &str = "job-service.lock";

/// Takes the data dir for this process, or says which process has it. An advisory lock
/// (`flock`), which the kernel releases when its holder exits however it exits, so a service
/// that was killed leaves nothing to clean up; the file is opened close-on-exec, so the
/// PostgreSQL processes the service starts do not inherit the lock.
fn own_data_dir(data_dir: &Path) -> anyhow::Result<Flock<File>> {
    use std::io::Write;
    let path = data_dir.join(OWNER_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut owned) => {
            owned.set_len(0)?;
            writeln!(owned, "{}", std::process::id())?;
            Ok(owned)
        }
        Err((_, Errno::EWOULDBLOCK)) => {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let owner = owner.trim();
            bail!(
                "the data dir {} is in use by another job-service process (pid {}): run one                  service per data dir, or give this one its own --data-dir or a DATABASE_URL",
                data_dir.display(),
                if owner.is_empty() { "unknown" } else { owner }
            )
        }
        Err((_, errno)) => Err(errno).with_context(|| format!("cannot lock {}", path.display())),
    }
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
        let owner = own_data_dir(&data_dir)?;
        let cluster_dir = data_dir.join("postgres");
        let socket_dir = socket_dir_for(&cluster_dir)?;
        let cluster = ManagedPostgres {
            bin_dir,
            cluster_dir,
            socket_dir,
            run_as,
            _owner: owner,
        };
        cluster.prepare_dirs()?;
        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            cluster.initdb().await?;
        }
        cluster.write_settings()?;
        cluster.ensure_running().await?;
        cluster.create_database().await?;
        Ok(cluster)
    }

    /// Makes sure a postmaster that answers runs the cluster. One that already answers is
    /// adopted. One that does not (it is starting up, or going away: killed with the service,
    /// it lives on for a moment) is waited for until it answers or is gone. With none, the
    /// cluster is started; a start fails while the processes of a killed postmaster still
    /// hold its lock files or shared memory, so such starts are retried with [`Backoff`].
    /// Gives up after [`START_PATIENCE`], and at once on any other failure.
    pub async fn ensure_running(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_PATIENCE;
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        let mut waited_for = None;
        loop {
            match self.postmaster() {
                Postmaster::Alive(pid) => {
                    if self.answers().await {
                        tracing::info!(dir = %self.cluster_dir.display(), "adopting the running postgresql cluster");
                        return Ok(());
                    }
                    if waited_for != Some(pid) {
                        tracing::info!(
                            pid,
                            "a postgresql server holds the cluster but does not answer; \
                             waiting for it to answer or exit"
                        );
                        waited_for = Some(pid);
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "a postgresql server (pid {}) holds the cluster in {} but did not answer \
                             within {} s; stop it, or wait for it to exit, and start the service again",
                            pid.map_or("unknown".to_owned(), |pid| pid.to_string()),
                            self.cluster_dir.display(),
                            START_PATIENCE.as_secs()
                        );
                    }
                    tokio::time::sleep(START_POLL).await;
                }
                Postmaster::Stopped | Postmaster::Gone(_) => {
                    attempt += 1;
                    let error = match self.pg_ctl_start().await {
                        Ok(()) => return Ok(()),
                        Err(error) => error,
                    };
                    if !error.is::<OldServerInTheWay>() {
                        return Err(self.explain(error));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.explain(error.context(format!(
                            "cannot start the postgresql cluster in {} ({attempt} attempts in {} s)",
                            self.cluster_dir.display(),
                            START_PATIENCE.as_secs()
                        ))));
                    }
                    let delay = backoff.next_delay().min(left);
                    tracing::warn!(
                        attempt,
                        error = %format!("{error:#}"),
                        retry_in = ?delay,
                        "cannot start the postgresql cluster; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Watches the postmaster every [`CHECK_INTERVAL`] and starts the cluster again when it is
    /// not running, with [`Backoff`] between failed attempts, until `stop` turns true (or its
    /// sender is dropped). A start under way then is finished first, so that stopping the
    /// cluster after this task ends also stops what it started.
    pub fn supervise(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            let mut attempt = 0u32;
            let mut wait = CHECK_INTERVAL;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                if *stop.borrow() {
                    return;
                }
                let reason = match self.postmaster() {
                    Postmaster::Alive(_) => {
                        attempt = 0;
                        backoff = Backoff::default();
                        wait = CHECK_INTERVAL;
                        continue;
                    }
                    Postmaster::Stopped => "it was stopped".to_owned(),
                    Postmaster::Gone(pid) => format!("its postmaster (pid {pid}) died"),
                };
                attempt += 1;
                tracing::warn!(
                    attempt,
                    reason,
                    "postgresql cluster is not running; restarting it"
                );
                match self.pg_ctl_start().await {
                    Ok(()) => {
                        tracing::info!(attempt, "postgresql cluster is back");
                        attempt = 0;
                        backoff = Backoff::default();
                        wait = CHECK_INTERVAL;
                    }
                    Err(error) => {
                        wait = backoff.next_delay();
                        tracing::warn!(
                            attempt,
                            error = %format!("{error:#}"),
                            retry_in = ?wait,
                            "cannot restart the postgresql cluster"
                        );
                    }
                }
            }
        })
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
        // A postmaster that died while the service drained (or as it was told to stop) left
        // nothing to stop; the next start recovers its data.
        if !matches!(self.postmaster(), Postmaster::Alive(_)) {
            tracing::warn!("postgresql cluster was not running at shutdown");
            return Ok(());
        }
        let output = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "-w"])
            .output()
            .await?;
        if let Err(error) = check(output, "pg_ctl stop") {
            if matches!(self.postmaster(), Postmaster::Alive(_)) {
                return Err(error);
            }
            tracing::warn!(error = %format!("{error:#}"), "postgresql cluster died as it was being stopped");
            return Ok(());
        }
        tracing::info!("postgresql cluster stopped");
        Ok(())
    }

    /// Stops the cluster when the service fails to start; a failure to stop is logged, so that
    /// the caller reports why the service did not start.
    pub async fn stop_after_failure(&self) {
        if let Err(stop_error) = self.stop().await {
            tracing::error!(error = ?stop_error, "failed to stop the postgresql cluster");
        }
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

    /// What the lock file says of the postmaster. PostgreSQL writes `postmaster.pid` (the pid
    /// on its first line) as it starts and removes it when it stops; a postmaster that is
    /// killed leaves it behind.
    fn postmaster(&self) -> Postmaster {
        match std::fs::read_to_string(self.cluster_dir.join("postmaster.pid")) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Postmaster::Stopped,
            // Unreadable or still being written: a postmaster is starting.
            Err(_) => Postmaster::Alive(None),
            Ok(text) => match lock_file_pid(&text) {
                None => Postmaster::Alive(None),
                Some(pid) => match process_state(pid) {
                    ProcessState::Running => Postmaster::Alive(Some(pid)),
                    ProcessState::Zombie | ProcessState::Gone => Postmaster::Gone(pid),
                },
            },
        }
    }

    /// Whether the postmaster accepts connections: one that is starting up or shutting down
    /// refuses them.
    async fn answers(&self) -> bool {
        let options = self.connect_options().database("postgres");
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                true
            }
            _ => false,
        }
    }

    /// One `pg_ctl start`. A lock file left by a dead postmaster is no obstacle once its
    /// process is gone, but PostgreSQL refuses to start while that process is a zombie its
    /// parent has not collected yet, or while the old postmaster's backends still hold its
    /// shared memory: that failure is an [`OldServerInTheWay`], worth retrying.
    async fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let log = self.cluster_dir.join("server.log");
        let log_start = std::fs::metadata(&log).map_or(0, |meta| meta.len());
        let output = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.cluster_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60"])
            .output()
            .await?;
        if !output.status.success() {
            // pg_ctl only says to look at the log, which says why.
            let said = one_line(&[&output.stderr, &output.stdout]);
            let Some(logged) = log_since(&log, log_start) else {
                bail!("pg_ctl start failed ({}): {said}", output.status);
            };
            let message = format!(
                "pg_ctl start failed ({}): {said}; the server log says: {logged}",
                output.status
            );
            if old_server_in_the_way(&logged) {
                return Err(OldServerInTheWay(message).into());
            }
            bail!(message);
        }
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

/// The postmaster of the cluster, as its lock file tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Postmaster {
    /// No lock file: the cluster is stopped.
    Stopped,
    /// The lock file names a process that has exited: the postmaster died.
    Gone(i32),
    /// The lock file names a live process, or is being written (no pid yet).
    Alive(Option<i32>),
}

/// The postmaster's pid: the first line of its lock file (negative for a single-user backend).
fn lock_file_pid(lock_file: &str) -> Option<i32> {
    let pid: i32 = lock_file.lines().next()?.trim().parse().ok()?;
    (pid != 0).then(|| pid.abs())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessState {
    Running,
    /// Exited, and waiting for its parent to collect it.
    Zombie,
    Gone,
}

/// The state of process `pid`. A zombie whose parent is the service (as when the service is
/// the first process of a container, which inherits the postmaster when `pg_ctl` exits) is
/// collected here, since nothing else would.
fn process_state(pid: i32) -> ProcessState {
    // Another user's process (EPERM) is not the postmaster either: the pid was reused.
    if let Err(Errno::ESRCH | Errno::EPERM) = kill(Pid::from_raw(pid), None) {
        return ProcessState::Gone;
    }
    let Some((state, parent)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| state_and_parent(&stat))
    else {
        return ProcessState::Running;
    };
    if state != 'Z' {
        return ProcessState::Running;
    }
    if parent == std::process::id() {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        return ProcessState::Gone;
    }
    ProcessState::Zombie
}

/// The state letter and parent pid from a `/proc/<pid>/stat` line: `pid (comm) state ppid ...`,
/// where `comm` may hold spaces and parentheses.
fn state_and_parent(stat: &str) -> Option<(char, u32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Delays between failed attempts to start the cluster: 1 s, doubling up to 30 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// PostgreSQL refused to start because processes of an earlier postmaster still hold the
/// cluster's lock files or shared memory; they go away by themselves.
#[derive(Debug)]
struct OldServerInTheWay(String);

impl std::fmt::Display for OldServerInTheWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OldServerInTheWay {}

/// Whether the server log tells of an earlier postmaster in the way (PostgreSQL's messages:
/// `lock file "..." already exists`, `pre-existing shared memory block (...) is still in use`).
fn old_server_in_the_way(logged: &str) -> bool {
    (logged.contains("lock file") && logged.contains("already exists"))
        || (logged.contains("shared memory block") && logged.contains("still in use"))
}

/// What the server wrote to its log since the log was `start` bytes long, on one line: its
/// errors and hints if it wrote any, else its last lines.
fn log_since(log: &Path, start: u64) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let written = String::from_utf8_lossy(text.get(start as usize..)?).into_owned();
    Some(server_log_summary(&written)).filter(|summary| !summary.is_empty())
}

fn server_log_summary(written: &str) -> String {
    let lines: Vec<&str> = written
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let telling: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| {
            ["FATAL:", "PANIC:", "ERROR:", "DETAIL:", "HINT:"]
                .iter()
                .any(|level| line.contains(level))
        })
        .collect();
    if telling.is_empty() {
        lines[lines.len().saturating_sub(3)..].join(" | ")
    } else {
        telling.join(" | ")
    }
}

/// A program's output on one line, for a log field or an error message.
fn one_line(outputs: &[&[u8]]) -> String {
    let text: Vec<String> = outputs
        .iter()
        .map(|output| String::from_utf8_lossy(output).into_owned())
        .collect();
    text.iter()
        .flat_map(|text| text.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
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
    fn failed_starts_are_retried_after_delays_doubling_from_one_second_up_to_thirty() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn the_postmaster_pid_is_the_first_line_of_its_lock_file() {
        assert_eq!(lock_file_pid("4242\n/var/lib/pg\n1700000000\n"), Some(4242));
        assert_eq!(lock_file_pid("-4242\n/var/lib/pg\n"), Some(4242));
        assert_eq!(lock_file_pid(""), None);
        assert_eq!(lock_file_pid("42"), Some(42));
        assert_eq!(lock_file_pid("4x\n"), None);
    }

    #[test]
    fn process_state_and_parent_are_read_past_a_command_name_with_spaces() {
        let stat = "1234 (postgres: a) b) Z 1 1234 1234 0 -1 4194560";
        assert_eq!(state_and_parent(stat), Some(('Z', 1)));
        assert_eq!(state_and_parent("1 (init) S 0 1 1"), Some(('S', 0)));
        assert_eq!(state_and_parent("garbage"), None);
    }

    #[test]
    fn a_process_that_exited_and_was_collected_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(process_state(pid), ProcessState::Gone);
        assert_eq!(
            process_state(std::process::id() as i32),
            ProcessState::Running
        );
    }

    #[test]
    fn a_zombie_child_of_the_service_is_collected_and_gone() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if state_and_parent(&stat).unwrap().0 == 'Z' {
                break;
            }
            assert!(Instant::now() < deadline, "the child never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(process_state(pid), ProcessState::Gone);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the zombie is collected"
        );
        drop(child);
    }

    #[test]
    fn a_failed_start_is_explained_by_the_errors_in_the_server_log() {
        let written = "2026-01-01 00:00:00.000 UTC [7] LOG:  starting PostgreSQL 15\n\
                       2026-01-01 00:00:00.001 UTC [7] FATAL:  pre-existing shared memory block is still in use\n\
                       2026-01-01 00:00:00.001 UTC [7] HINT:  Terminate any old server processes\n\
                       2026-01-01 00:00:00.002 UTC [7] LOG:  database system is shut down\n";
        let summary = server_log_summary(written);
        assert!(summary.contains("FATAL:  pre-existing shared memory block is still in use"));
        assert!(summary.contains("HINT:  Terminate any old server processes"));
        assert!(!summary.contains("starting PostgreSQL"), "{summary}");
        assert!(old_server_in_the_way(&summary));
        assert!(old_server_in_the_way(
            r#"FATAL:  lock file "/srv/postgres/.s.PGSQL.5432.lock" already exists"#
        ));
        assert!(!old_server_in_the_way(
            r#"FATAL:  could not open lock file "postmaster.pid": Permission denied"#
        ));
        assert_eq!(server_log_summary("a\nb\n\nc\nd\n"), "b | c | d");
        assert_eq!(
            one_line(&[
                b"pg_ctl: could not start server\nExamine the log output.\n",
                b"waiting... stopped\n"
            ]),
            "pg_ctl: could not start server Examine the log output. waiting... stopped"
        );
    }

    #[test]
    fn long_cluster_dirs_move_the_socket_to_the_temp_dir() {
        let dir = PathBuf::from(format!("/{}/postgres", "d".repeat(120)));
        let socket_dir = socket_dir_for(&dir).unwrap();
        assert!(socket_dir.starts_with(std::env::temp_dir()));
        assert!(socket_dir.join(".s.PGSQL.5432").as_os_str().len() <= MAX_SOCKET_PATH);
    }
}
