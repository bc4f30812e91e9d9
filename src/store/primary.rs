//! Several database hosts, as libpq takes them (`postgres://h1:5432,h2:5432/db?
//! target_session_attrs=read-write`): the service works on the one that takes writes, the
//! primary, finds it at start, watches it, and after a failover points its pools at the new
//! one without a restart. While no host is the primary, calls fail at once with UNAVAILABLE.
//!
//! sqlx reads one host per URL and a pool connects to one host, so the host list is read here:
//! each host becomes its own connection options, and [`Primary`] moves the pools between them
//! (`Pool::set_connect_options`). Connections to a former primary need no closing: a primary
//! that is lost takes its connections with it, and one that comes back is restarted as a
//! standby by the failover manager, which ends them too; the pool's test before each acquire
//! drops them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// Which server of the list the service may work on, as libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionAttrs {
    /// The first that takes a connection.
    Any,
    /// One whose sessions may write (`transaction_read_only` off).
    ReadWrite,
    /// One not in recovery (`pg_is_in_recovery()` false).
    Primary,
}

/// The hosts of a database URL, each with the URL's other settings, and what the service
/// needs of the one it works on.
pub(crate) struct HostList {
    pub hosts: Vec<PgConnectOptions>,
    pub attrs: SessionAttrs,
}

impl HostList {
    /// Whether this is one host taken as it is, which needs no watching.
    pub fn is_single(&self) -> bool {
        self.hosts.len() == 1 && self.attrs == SessionAttrs::Any
    }
}

/// Most hosts in one URL: a formation has a primary and a few standbys.
const MAX_HOSTS: usize = 16;

/// Reads DATABASE_URL's host list and `target_session_attrs`; `parse_one` reads each
/// single-host URL made from it (with its messages for a bad URL). A URL of several hosts
/// wants the writable one unless it says `target_session_attrs=any`: the service writes.
pub(crate) fn host_list(
    url: &str,
    parse_one: impl Fn(&str) -> anyhow::Result<PgConnectOptions>,
) -> anyhow::Result<HostList> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The user's part may hold an '@' only percent-encoded; the hosts follow the last one.
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut attrs = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => {
                attrs = Some(match value {
                    "any" => SessionAttrs::Any,
                    "read-write" => SessionAttrs::ReadWrite,
                    "primary" => SessionAttrs::Primary,
                    other => bail!(
                        "DATABASE_URL: target_session_attrs {other:?} is not one the service can \
                         work with: it writes, so it takes read-write (the default with several \
                         hosts), primary or any"
                    ),
                })
            }
            "host" | "hostaddr" | "port" if value.contains(',') => bail!(
                "DATABASE_URL: give several hosts in the URL itself \
                 (postgres://user@host1:5432,host2:5432/database), not in its {key} parameter"
            ),
            _ => kept.push(pair),
        }
    }
    let names: Vec<&str> = hosts.split(',').collect();
    if names.len() > MAX_HOSTS {
        bail!(
            "DATABASE_URL names {} hosts; at most {MAX_HOSTS}",
            names.len()
        );
    }
    if names.len() > 1 && names.iter().any(|name| name.is_empty()) {
        bail!("DATABASE_URL: an empty host in its host list {hosts:?}");
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let hosts = names
        .iter()
        .map(|name| parse_one(&format!("{scheme}://{userinfo}{name}{path}{query}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let several = hosts.len() > 1;
    Ok(HostList {
        hosts,
        attrs: attrs.unwrap_or(if several {
            SessionAttrs::ReadWrite
        } else {
            SessionAttrs::Any
        }),
    })
}

/// How often the primary is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Longest a host may take to take a connection and answer whether it is the primary.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one host answered.
enum Verdict {
    /// It takes writes: the connection that asked, kept to watch it.
    Primary(PgConnection),
    /// It answers, but is a standby (or read-only).
    NotPrimary,
    /// It refused the connection with an error of its own (too many connections, a wrong
    /// password): it is up, but could not tell.
    Refused(sqlx::Error),
    /// No connection (refused, unreachable, timed out, starting, shutting down).
    Unreachable(String),
}

/// What a pool adds to a host's connection options.
pub(crate) type Tune = fn(PgConnectOptions) -> PgConnectOptions;

/// The primary among the hosts, and the pools pointed at it.
pub(crate) struct Primary {
    list: HostList,
    /// The index of the host the pools connect to.
    current: AtomicUsize,
    /// False while no host is the primary: calls fail at once rather than wait.
    reachable: AtomicBool,
    /// Each pool, and what it adds to the host's connection options.
    pools: Mutex<Vec<(PgPool, Tune)>>,
}

impl std::fmt::Debug for Primary {
    /// Hosts only: the options hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("hosts", &self.names())
            .field("current", &self.current.load(Ordering::Relaxed))
            .finish()
    }
}

impl Primary {
    pub fn new(list: HostList) -> Primary {
        Primary {
            list,
            current: AtomicUsize::new(0),
            reachable: AtomicBool::new(true),
            pools: Mutex::new(Vec::new()),
        }
    }

    fn name(&self, index: usize) -> String {
        let host = &self.list.hosts[index];
        format!("{}:{}", host.get_host(), host.get_port())
    }

    fn names(&self) -> Vec<String> {
        (0..self.list.hosts.len()).map(|i| self.name(i)).collect()
    }

    /// The options of the host the pools connect to.
    pub fn options(&self) -> PgConnectOptions {
        self.list.hosts[self.current.load(Ordering::SeqCst)].clone()
    }

    /// Whether a host was the primary at the last check.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// Keeps `pool`, made with `tune(self.options())`, pointed at the primary.
    pub fn register(&self, pool: PgPool, tune: Tune) {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((pool, tune));
    }

    /// Whether the server of `conn` is what the service needs.
    async fn qualifies(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        Ok(match self.list.attrs {
            SessionAttrs::Any => true,
            SessionAttrs::ReadWrite => {
                let read_only: String = sqlx::query_scalar("show transaction_read_only")
                    .fetch_one(&mut *conn)
                    .await?;
                read_only == "off"
            }
            SessionAttrs::Primary => {
                let in_recovery: bool = sqlx::query_scalar("select pg_is_in_recovery()")
                    .fetch_one(&mut *conn)
                    .await?;
                !in_recovery
            }
        })
    }

    async fn probe(&self, index: usize) -> Verdict {
        let attempt = async {
            let mut conn = PgConnection::connect_with(&self.list.hosts[index]).await?;
            let primary = self.qualifies(&mut conn).await?;
            Ok::<_, sqlx::Error>((conn, primary))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Err(_) => {
                Verdict::Unreachable(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
            }
            Ok(Ok((conn, true))) => Verdict::Primary(conn),
            Ok(Ok((conn, false))) => {
                let _ = conn.close().await;
                Verdict::NotPrimary
            }
            Ok(Err(error)) if super::not_up_yet(&error) => Verdict::Unreachable(error.to_string()),
            Ok(Err(error)) => Verdict::Refused(error),
        }
    }

    /// Asks every host at once; the first primary in the URL's order wins.
    async fn probe_all(self: &Arc<Self>) -> Vec<Verdict> {
        let mut probes = tokio::task::JoinSet::new();
        for index in 0..self.list.hosts.len() {
            let primary = self.clone();
            probes.spawn(async move { (index, primary.probe(index).await) });
        }
        let mut verdicts: Vec<Option<Verdict>> = (0..self.list.hosts.len()).map(|_| None).collect();
        while let Some(Ok((index, verdict))) = probes.join_next().await {
            verdicts[index] = Some(verdict);
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or_else(|| Verdict::Unreachable("the probe failed".to_owned())))
            .collect()
    }

    /// Waits until a host is the primary, for up to `patience` (services and their databases
    /// start together; a failover may be under way), and points the service at it. When no
    /// host is the primary, a host that refuses the connection for a reason of its own (a
    /// wrong password, a database that does not exist) stops the wait at once.
    pub async fn wait(self: &Arc<Self>, patience: Duration) -> anyhow::Result<PgConnection> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut causes = Vec::new();
            let mut refused = None;
            for (index, verdict) in self.probe_all().await.into_iter().enumerate() {
                match verdict {
                    Verdict::Primary(conn) => {
                        self.current.store(index, Ordering::SeqCst);
                        tracing::info!(
                            host = %self.name(index), hosts = ?self.names(), attempt,
                            "working on the database primary"
                        );
                        return Ok(conn);
                    }
                    Verdict::NotPrimary => {
                        causes.push(format!("{} is a standby", self.name(index)))
                    }
                    Verdict::Unreachable(cause) => {
                        causes.push(format!("{}: {cause}", self.name(index)))
                    }
                    // Said only when no host is the primary: a host that refuses while
                    // another serves does not stop the service.
                    Verdict::Refused(error) => {
                        refused.get_or_insert((index, error));
                    }
                }
            }
            if let Some((index, error)) = refused {
                return Err(anyhow::Error::new(error))
                    .with_context(|| format!("cannot connect to {}", self.name(index)));
            }
            let waiting = started.elapsed();
            if waiting + delay > patience {
                bail!(
                    "no database host is a writable primary ({attempt} attempts in {} s; \
                     --db-startup-timeout is {} s): {}",
                    waiting.as_secs(),
                    patience.as_secs(),
                    causes.join("; ")
                );
            }
            tracing::warn!(attempt, retry_in = ?delay, "no database host is a writable primary yet: {}", causes.join("; "));
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Checks the primary every [`CHECK_EVERY`] through `probe`, a connection of its own;
    /// when it fails, asks every host and moves the pools to the one that is the primary now.
    /// Ends when the last store using it is gone.
    pub async fn watch(self: Arc<Self>, probe: PgConnection) {
        let mut probe = Some(probe);
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if Arc::strong_count(&self) == 1 {
                return;
            }
            if let Some(conn) = probe.as_mut() {
                let check = tokio::time::timeout(PROBE_TIMEOUT, self.qualifies(conn)).await;
                if let Ok(Ok(true)) = check {
                    continue;
                }
            }
            probe = None;
            let current = self.current.load(Ordering::SeqCst);
            let verdicts = self.probe_all().await;
            let refused_here = matches!(verdicts[current], Verdict::Refused(_));
            let found =
                verdicts
                    .into_iter()
                    .enumerate()
                    .find_map(|(index, verdict)| match verdict {
                        Verdict::Primary(conn) => Some((index, conn)),
                        _ => None,
                    });
            match found {
                Some((index, conn)) => {
                    probe = Some(conn);
                    if index != current {
                        self.switch(current, index);
                    }
                    if !self.reachable.swap(true, Ordering::SeqCst) {
                        tracing::info!(host = %self.name(index), "the database primary is reachable again");
                    }
                }
                // A primary that refuses a connection of its own (too many clients) is still
                // the primary: the pools keep their connections to it.
                None if refused_here => {}
                None => {
                    if self.reachable.swap(false, Ordering::SeqCst) {
                        tracing::warn!(
                            hosts = ?self.names(),
                            "no database host is a writable primary: calls fail with \
                             UNAVAILABLE until one is"
                        );
                    }
                }
            }
        }
    }

    fn switch(&self, from: usize, to: usize) {
        self.current.store(to, Ordering::SeqCst);
        let options = self.list.hosts[to].clone();
        for (pool, tune) in self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            pool.set_connect_options(tune(options.clone()));
        }
        tracing::warn!(
            from = %self.name(from), to = %self.name(to),
            "the database primary moved; new connections go to the new one"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn list(url: &str) -> anyhow::Result<HostList> {
        host_list(url, |one| Ok(PgConnectOptions::from_str(one)?))
    }

    fn hosts(list: &HostList) -> Vec<String> {
        list.hosts
            .iter()
            .map(|h| format!("{}:{}", h.get_host(), h.get_port()))
            .collect()
    }

    #[test]
    fn a_host_list_gives_each_host_the_urls_other_settings() {
        let parsed = list(
            "postgres://app:s%40cret@db1:5433,db2,[::1]:5434/jobs?sslmode=disable&target_session_attrs=read-write&application_name=x",
        )
        .unwrap();
        assert_eq!(hosts(&parsed), ["db1:5433", "db2:5432", "[::1]:5434"]);
        assert_eq!(parsed.attrs, SessionAttrs::ReadWrite);
        for host in &parsed.hosts {
            assert_eq!(host.get_username(), "app");
            assert_eq!(host.get_database(), Some("jobs"));
            assert_eq!(host.get_application_name(), Some("x"));
        }
    }

    #[test]
    fn several_hosts_want_the_writable_one_unless_told_otherwise() {
        assert_eq!(
            list("postgres://a,b/db").unwrap().attrs,
            SessionAttrs::ReadWrite
        );
        assert_eq!(
            list("postgres://a,b/db?target_session_attrs=any")
                .unwrap()
                .attrs,
            SessionAttrs::Any
        );
        assert_eq!(
            list("postgres://a,b/db?target_session_attrs=primary")
                .unwrap()
                .attrs,
            SessionAttrs::Primary
        );
        let single = list("postgres://a/db").unwrap();
        assert!(single.is_single());
        assert!(!list("postgres://a/db?target_session_attrs=read-write")
            .unwrap()
            .is_single());
    }

    #[test]
    fn what_the_service_cannot_work_with_is_refused_by_name() {
        let refused = |url: &str| format!("{:#}", list(url).err().unwrap());
        assert!(refused("postgres://a,b/db?target_session_attrs=standby").contains("standby"));
        assert!(refused("postgres://u@x/db?host=a,b").contains("in the URL itself"));
        assert!(refused("postgres://a,,b/db").contains("empty host"));
        let many = vec!["h"; 17].join(",");
        assert!(refused(&format!("postgres://{many}/db")).contains("at most 16"));
    }
}
