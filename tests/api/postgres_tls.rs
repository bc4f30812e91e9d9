//! The service reaches PostgreSQL over TLS: a real server with `ssl = on` that takes TLS
//! connections only (`hostssl`), its certificate signed by a CA made for the test, and
//! `sslmode`, `sslrootcert` and client certificates as libpq means them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use sqlx::{Connection, PgConnection};

use crate::serve::{data_dir, listening, serve_command};
use crate::tls::{issue, test_ca};

/// A PostgreSQL cluster of the test's own on 127.0.0.1, TLS only, stopped when dropped.
struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

pub(crate) fn as_postgres(program: &str) -> Command {
    let bin = std::env::var("JOB_SERVICE_POSTGRES_BIN_DIR")
        .expect("scripts/test sets JOB_SERVICE_POSTGRES_BIN_DIR");
    if nix::unistd::Uid::effective().is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(format!("{bin}/{program}"));
        command
    } else {
        Command::new(format!("{bin}/{program}"))
    }
}

/// An empty directory `name` in `parent` for a cluster, owned by the cluster's user.
pub(crate) fn cluster_dir(parent: &Path, name: &str) -> PathBuf {
    let cluster = parent.join(name);
    std::fs::create_dir(&cluster).unwrap();
    std::fs::set_permissions(&cluster, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(&cluster, Some(user.uid), Some(user.gid)).unwrap();
    }
    cluster
}

/// A new cluster in `cluster`, whose user `postgres` is trusted.
pub(crate) fn initdb(cluster: &Path) {
    let status = as_postgres("initdb")
        .args(["-U", "postgres", "--auth=trust", "-D"])
        .arg(cluster)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "initdb");
}

/// Writes `text` to `path`, readable by the cluster's user only (PostgreSQL refuses a key
/// file others can read).
fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
}

impl TlsPostgres {
    fn start(server_cert: &str, server_key: &str, client_ca: &str) -> TlsPostgres {
        let dir = data_dir();
        let cluster = cluster_dir(dir.path(), "pg");
        initdb(&cluster);
        private_file(&cluster.join("server.crt"), server_cert);
        private_file(&cluster.join("server.key"), server_key);
        private_file(&cluster.join("client-ca.crt"), client_ca);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'client-ca.crt'\nfsync = off\n",
            cluster.display()
        );
        let conf = cluster.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap();
        // TLS only over TCP; database `certified` also needs a client certificate naming the
        // user.
        std::fs::write(
            cluster.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl certified all 127.0.0.1/32 trust clientcert=verify-full\n\
             hostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let status = as_postgres("pg_ctl")
            .arg("start")
            .arg("-w")
            .arg("-D")
            .arg(&cluster)
            .arg("-l")
            .arg(cluster.join("server.log"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start");
        let created = as_postgres("createdb")
            .args(["-h"])
            .arg(&cluster)
            .args(["-p", &port.to_string(), "-U", "postgres", "certified"])
            .status()
            .unwrap();
        assert!(created.success(), "createdb");
        TlsPostgres { dir, port }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self, database: &str, query: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?{query}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("pg"))
            .stdout(Stdio::null())
            .status();
    }
}

/// A client certificate for database user `user`, signed by `ca`.
fn client_certificate(
    ca: &rcgen::CertifiedIssuer<'static, KeyPair>,
    user: &str,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Whether the service starts on `url` (and stops cleanly); its log when it does not.
fn service_starts(url: &str) -> Result<(), String> {
    let mut command = serve_command();
    command.env("DATABASE_URL", url).env("NO_COLOR", "1");
    let server = std::thread::spawn(move || listening(command).terminate_with_log());
    match server.join() {
        Ok((status, _)) if status.success() => Ok(()),
        Ok((status, log)) => Err(format!("{status}: {log:#?}")),
        Err(_) => Err(format!("the service did not start on {url}")),
    }
}

/// Runs the service on `url`, which must fail to start; what it said.
fn refused(url: &str) -> String {
    let output = serve_command()
        .env("DATABASE_URL", url)
        .env("JOB_SERVICE_DB_STARTUP_TIMEOUT", "1s")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "the service must not start on {url}"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_reaches_postgresql_over_tls_as_libpq_sslmode_says() {
    let ca = test_ca("postgres test CA");
    let server = issue(
        &ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let postgres = TlsPostgres::start(&server.cert, &server.key, &ca.pem());
    std::fs::write(postgres.file("ca.pem"), ca.pem()).unwrap();
    let ca_file = postgres.file("ca.pem");
    let ca_file = ca_file.display();

    // verify-full: the server's certificate checked against sslrootcert and its host name.
    let verified = postgres.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    );
    service_starts(&verified).unwrap();
    let mut conn = PgConnection::connect(&verified).await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(ssl, "the connection is encrypted");

    // The default (prefer) takes TLS when the server offers it: this server takes nothing else.
    service_starts(&postgres.url("postgres", "")).unwrap();

    // Without TLS, the server refuses the service.
    let plaintext = refused(&postgres.url("postgres", "sslmode=disable"));
    assert!(plaintext.contains("no pg_hba.conf entry"), "{plaintext}");

    // A certificate from another CA is not trusted.
    let other = test_ca("someone else's CA");
    std::fs::write(postgres.file("other-ca.pem"), other.pem()).unwrap();
    let untrusted = refused(&postgres.url(
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            postgres.file("other-ca.pem").display()
        ),
    ));
    assert!(
        untrusted.to_lowercase().contains("certificate"),
        "{untrusted}"
    );

    // A database that wants a client certificate gets one from sslcert and sslkey.
    let (cert, key) = client_certificate(&ca, "postgres");
    std::fs::write(postgres.file("client.pem"), cert).unwrap();
    std::fs::write(postgres.file("client.key"), key).unwrap();
    let without = refused(&postgres.url(
        "certified",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    ));
    assert!(without.to_lowercase().contains("certificate"), "{without}");
    service_starts(&postgres.url(
        "certified",
        &format!(
            "sslmode=verify-full&sslrootcert={ca_file}&sslcert={}&sslkey={}",
            postgres.file("client.pem").display(),
            postgres.file("client.key").display()
        ),
    ))
    .unwrap();
}
