//! TLS on both front doors (rustls with ring): the certificate chain and key from PEM files and,
//! with a client CA, mutual TLS (every client must present a certificate that CA signed).
//!
//! One acceptor serves both listeners: it accepts TCP connections (within the port's connection
//! cap, see [`crate::transport`]) and runs each handshake in a task of its own (with a
//! timeout), so a slow or silent client never holds up the others. Both servers take the
//! finished connections as [`Incoming`]; neither knows TLS is there.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::transport::{Connection, Incoming, Listener};

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings of both front doors.
#[derive(Clone)]
pub struct Tls {
    grpc: TlsAcceptor,
    http: TlsAcceptor,
}

impl Tls {
    /// TLS as configured, or `None` when no certificate is given. Errors name the setting and
    /// the file at fault.
    /// `listen` are the addresses the doors listen on, to which clients connect.
    pub fn from_config(config: &TlsConfig, listen: &[IpAddr]) -> anyhow::Result<Option<Tls>> {
        let (cert, key) = match (&config.cert, &config.key) {
            (None, None) if config.client_ca.is_some() => {
                bail!("--tls-client-ca needs --tls-cert and --tls-key")
            }
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        };
        let chain = read_certificates(cert, "--tls-cert")?;
        check_validity(&chain[0], cert, chrono::Utc::now(), listen);
        let key = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS library supports no protocol version")?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for certificate in read_certificates(path, "--tls-client-ca")? {
                    roots.add(certificate).with_context(|| {
                        format!("--tls-client-ca {}: not a CA certificate", path.display())
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .with_context(|| format!("--tls-client-ca {}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let server = builder.with_single_cert(chain, key).with_context(|| {
            format!(
                "--tls-key {} does not go with the certificate in --tls-cert {}",
                config.key.as_deref().unwrap_or(Path::new("")).display(),
                cert.display()
            )
        })?;
        // gRPC needs HTTP/2; the gateway speaks both.
        let mut grpc = server.clone();
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        let mut http = server;
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Tls {
            grpc: TlsAcceptor::from(Arc::new(grpc)),
            http: TlsAcceptor::from(Arc::new(http)),
        }))
    }

    /// The gRPC listener's connections, handshakes done.
    pub fn grpc_incoming(&self, listener: Listener) -> Incoming<TlsStream<TcpStream>> {
        spawn(listener, self.grpc.clone(), Door::Grpc)
    }

    /// The gateway's connections, handshakes done.
    pub fn http_incoming(&self, listener: Listener) -> Incoming<TlsStream<TcpStream>> {
        spawn(listener, self.http.clone(), Door::Http)
    }
}

fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
}

fn read_certificates(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path, flag)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} {}: malformed PEM", path.display()))?;
    if certificates.is_empty() {
        bail!("{flag} {}: no PEM certificate in it", path.display());
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_pem(path, "--tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "--tls-key {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// Connections that finish their TLS handshake. Dropping the [`Incoming`] (the server stops
/// accepting) stops the accept loop, closes the listener and abandons handshakes under way.
fn spawn(listener: Listener, acceptor: TlsAcceptor, door: Door) -> Incoming<TlsStream<TcpStream>> {
    let (sender, incoming) = Incoming::channel();
    tokio::spawn(accept_loop(listener, acceptor, sender, door));
    incoming
}

/// Warns when the certificate the service presents is not valid now or soon will not be, or
/// names neither this host nor the address the service listens on: clients would refuse every
/// handshake, which the service itself would never see fail. Its names are logged. Unreadable
/// validity is no error here: rustls has accepted the certificate.
fn check_validity(
    certificate: &CertificateDer<'_>,
    path: &Path,
    now: chrono::DateTime<chrono::Utc>,
    listen: &[IpAddr],
) {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return;
    };
    let validity = parsed.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let general_names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.as_slice())
        .unwrap_or_default();
    let names: Vec<String> = general_names.iter().map(|n| n.to_string()).collect();
    let file = path.display();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok());
    if let Some(reached_by) = uncovered(&CertNames::of(general_names), host.as_deref(), listen) {
        tracing::warn!(
            cert = %file, names = ?names,
            "--tls-cert names neither {reached_by}: clients reaching the service that way \
             will refuse its handshakes (no matter for clients that use one of the \
             certificate's names, through DNS or a load balancer)"
        );
    }
    let at = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0)
            .map_or_else(|| secs.to_string(), |t| t.to_rfc3339())
    };
    match validity_problem(from, until, now.timestamp()) {
        Some(problem) => tracing::warn!(
            cert = %file, not_before = %at(from), not_after = %at(until), names = ?names,
            "--tls-cert {problem}: clients will refuse the service's handshakes"
        ),
        None => tracing::info!(
            cert = %file, not_after = %at(until), names = ?names,
            "serving TLS with this certificate"
        ),
    }
}

/// The names a certificate is valid for (its subject alternative names).
#[derive(Default)]
struct CertNames {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl CertNames {
    fn of(names: &[x509_parser::extensions::GeneralName<'_>]) -> CertNames {
        use x509_parser::extensions::GeneralName;
        let mut out = CertNames::default();
        for name in names {
            match name {
                GeneralName::DNSName(dns) => out.dns.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => out.ips.push(IpAddr::from(
                        <[u8; 4]>::try_from(*bytes).unwrap_or_default(),
                    )),
                    16 => out.ips.push(IpAddr::from(
                        <[u8; 16]>::try_from(*bytes).unwrap_or_default(),
                    )),
                    _ => {}
                },
                _ => {}
            }
        }
        out
    }

    /// Whether `host` is among the DNS names, a wildcard (`*.example.com`) standing for one
    /// label, as clients match it (RFC 6125).
    fn covers_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns.iter().any(|name| match name.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *name == host,
        })
    }
}

/// The ways of reaching this service that the certificate covers none of, said for a warning
/// ("this host's name h nor 10.0.0.5"), or None when it covers one of them: this host's name,
/// the specific addresses the doors listen on, and `localhost` for a loopback one. Nothing to
/// compare with (no host name, listening on every address) is None too.
fn uncovered(names: &CertNames, host: Option<&str>, listen: &[IpAddr]) -> Option<String> {
    let mut specific: Vec<IpAddr> = listen
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    specific.sort();
    specific.dedup();
    let host = host.filter(|h| !h.is_empty());
    if host.is_none() && specific.is_empty() {
        return None;
    }
    let covered = host.is_some_and(|h| names.covers_host(h))
        || specific.iter().any(|ip| {
            names.ips.contains(ip) || (ip.is_loopback() && names.covers_host("localhost"))
        });
    if covered {
        return None;
    }
    let mut ways: Vec<String> = host
        .map(|h| format!("this host's name {h}"))
        .into_iter()
        .collect();
    ways.extend(
        specific
            .iter()
            .map(|ip| format!("the address {ip} it listens on")),
    );
    Some(ways.join(" nor "))
}

/// What is wrong with a certificate valid from `from` until `until` (epoch seconds) at `now`.
fn validity_problem(from: i64, until: i64, now: i64) -> Option<&'static str> {
    const SOON: i64 = 14 * 86_400;
    if now > until {
        Some("has expired")
    } else if now < from {
        Some("is not valid yet")
    } else if until - now < SOON {
        Some("expires within 14 days")
    } else {
        None
    }
}

/// Which front door a handshake was for.
#[derive(Debug, Clone, Copy)]
enum Door {
    Grpc,
    Http,
}

/// Handshakes that failed since the start, by door and cause: `/metrics` shows them. Counted
/// here, where the handshakes run, which knows nothing of the metrics registry.
static HANDSHAKES_FAILED: [[AtomicU64; 2]; 2] = [
    [AtomicU64::new(0), AtomicU64::new(0)],
    [AtomicU64::new(0), AtomicU64::new(0)],
];

/// Each (door, cause, failed handshakes so far): causes are `error` (the client or the
/// service refused: a certificate not trusted, no client certificate, no common protocol) and
/// `timeout`.
pub fn handshake_failures() -> Vec<(&'static str, &'static str, u64)> {
    let mut counts = Vec::with_capacity(4);
    for (d, door) in ["grpc", "http"].into_iter().enumerate() {
        for (c, cause) in ["error", "timeout"].into_iter().enumerate() {
            counts.push((door, cause, HANDSHAKES_FAILED[d][c].load(Ordering::Relaxed)));
        }
    }
    counts
}

/// When a failed handshake was last logged (seconds since the epoch), and how many failed
/// since without a line: a client that retries in a loop, or a scanner, must not flood the
/// logs.
static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
static UNLOGGED: AtomicU64 = AtomicU64::new(0);
const LOG_EVERY_SECS: u64 = 10;

fn handshake_failed(door: Door, cause: usize, peer: std::net::SocketAddr, error: &str) {
    HANDSHAKES_FAILED[door as usize][cause].fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    let due = now >= last + LOG_EVERY_SECS
        && LAST_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if due {
        let unlogged = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            door = ?door, %peer, error = %error.escape_debug(),
            failed_since_last_line = unlogged,
            "tls handshake failed"
        );
    } else {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    mut listener: Listener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<Connection<TlsStream<TcpStream>>>,
    door: Door,
) {
    let mut handshakes = JoinSet::new();
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sender.closed() => return,
            // Reap finished handshakes so the set does not grow.
            Some(_) = handshakes.join_next() => continue,
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        // The handshake holds the connection's slot, then the connection does.
        handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(connection)) => {
                    let _ = sender.send(slot.hold(connection)).await;
                }
                Ok(Err(error)) => handshake_failed(door, 0, peer, &error.to_string()),
                Err(_) => handshake_failed(door, 1, peer, "timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(cert: Option<&Path>, key: Option<&Path>, client_ca: Option<&Path>) -> TlsConfig {
        TlsConfig {
            cert: cert.map(Path::to_owned),
            key: key.map(Path::to_owned),
            client_ca: client_ca.map(Path::to_owned),
        }
    }

    fn error(config: &TlsConfig) -> String {
        format!(
            "{:#}",
            Tls::from_config(config, &[]).err().expect("an error")
        )
    }

    #[test]
    fn no_certificate_means_no_tls() {
        assert!(Tls::from_config(&TlsConfig::default(), &[])
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_missing_file_is_named_with_its_setting() {
        let missing = PathBuf::from("/nonexistent/server.pem");
        let text = error(&config(Some(&missing), Some(&missing), None));
        assert!(
            text.contains("--tls-cert /nonexistent/server.pem"),
            "{text}"
        );
    }

    #[test]
    fn a_file_without_pem_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.pem");
        std::fs::write(&file, "not pem").unwrap();
        let text = error(&config(Some(&file), Some(&file), None));
        assert!(
            text.contains("--tls-cert") && text.contains("no PEM certificate"),
            "{text}"
        );
    }

    #[test]
    fn a_certificate_out_of_its_validity_or_near_its_end_is_named() {
        let day = 86_400;
        assert_eq!(
            validity_problem(0, 100 * day, 200 * day),
            Some("has expired")
        );
        assert_eq!(
            validity_problem(10 * day, 100 * day, day),
            Some("is not valid yet")
        );
        assert_eq!(
            validity_problem(0, 100 * day, 90 * day),
            Some("expires within 14 days")
        );
        assert_eq!(validity_problem(0, 100 * day, 50 * day), None);
    }

    #[test]
    fn half_a_configuration_is_refused() {
        let path = PathBuf::from("x.pem");
        assert!(error(&config(Some(&path), None, None)).contains("--tls-key"));
        assert!(error(&config(None, Some(&path), None)).contains("--tls-cert"));
        assert!(error(&config(None, None, Some(&path))).contains("--tls-cert"));
    }

    #[test]
    fn a_certificate_for_another_host_is_told_apart_from_one_for_this_host() {
        let names = |dns: &[&str], ips: &[&str]| CertNames {
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        };
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let private: IpAddr = "10.0.0.5".parse().unwrap();
        // Covered: the host's name, a wildcard over it, the listening address, localhost.
        assert_eq!(
            uncovered(
                &names(&["api-1.example.com"], &[]),
                Some("API-1.example.com"),
                &[any]
            ),
            None
        );
        assert_eq!(
            uncovered(
                &names(&["*.example.com"], &[]),
                Some("api-1.example.com"),
                &[any]
            ),
            None
        );
        assert_eq!(
            uncovered(&names(&[], &["10.0.0.5"]), Some("h"), &[private]),
            None
        );
        assert_eq!(
            uncovered(&names(&["localhost"], &[]), Some("h"), &[loopback]),
            None
        );
        // Nothing to compare with.
        assert_eq!(uncovered(&names(&["other"], &[]), None, &[any]), None);
        // Not covered: another host, a wildcard one level off, another address.
        let told = uncovered(
            &names(&["db.example.org"], &["10.9.9.9"]),
            Some("api-1"),
            &[private, any],
        )
        .unwrap();
        assert_eq!(
            told,
            "this host's name api-1 nor the address 10.0.0.5 it listens on"
        );
        assert!(uncovered(
            &names(&["*.example.com"], &[]),
            Some("a.b.example.com"),
            &[any]
        )
        .is_some());
        assert!(uncovered(&names(&["*.example.com"], &[]), Some("example.com"), &[any]).is_some());
    }
}
