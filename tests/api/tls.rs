//! TLS on both front doors, and mutual TLS: certificates made at test time by a test CA.

use std::net::SocketAddr;
use std::path::PathBuf;

use job_service::grpc::pb;
use job_service::grpc::JobServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{Bearer, TestApp};

/// A certificate and its key, in PEM.
pub(crate) struct Issued {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// A CA made for one test, the server certificate it signed (for localhost and 127.0.0.1), and
/// a client certificate it signed; written to files for the service.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    pub(crate) client: Issued,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let ca = test_ca("job-service test CA");
        let server = issue(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = issue(&ca, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            ca: ca.pem(),
            client,
        }
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The service over TLS, with mutual TLS when `mutual`.
    pub(crate) async fn spawn(&self, mutual: bool) -> TestApp {
        TestApp::spawn_with(|config| {
            config.tls.cert = Some(self.file("server.pem"));
            config.tls.key = Some(self.file("server.key"));
            if mutual {
                config.tls.client_ca = Some(self.file("ca.pem"));
            }
        })
        .await
    }

    pub(crate) fn grpc_tls(&self, identity: Option<&Issued>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name("localhost");
        match identity {
            Some(issued) => tls.identity(Identity::from_pem(&issued.cert, &issued.key)),
            None => tls,
        }
    }

    fn http_client(&self, addr: SocketAddr, identity: Option<&Issued>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.as_bytes()).unwrap())
            .resolve("localhost", addr);
        if let Some(issued) = identity {
            let pem = format!("{}{}", issued.cert, issued.key);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

pub(crate) fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

pub(crate) fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).unwrap();
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn http_addr(app: &TestApp) -> SocketAddr {
    let port = app.http_url.rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A ListJobs call as the admin over `channel`.
async fn list_jobs(app: &TestApp, channel: Channel) -> Result<(), tonic::Status> {
    JobServiceClient::with_interceptor(channel, Bearer::new(&app.admin_token))
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .map(|_| ())
}

pub(crate) async fn tls_channel(
    app: &TestApp,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

#[tokio::test]
async fn both_front_doors_serve_tls_and_refuse_plaintext() {
    let pki = Pki::new();
    let app = pki.spawn(false).await;

    let channel = tls_channel(&app, pki.grpc_tls(None)).await.unwrap();
    list_jobs(&app, channel).await.unwrap();
    let plaintext = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    assert!(list_jobs(&app, plaintext).await.is_err());

    let https = pki.http_client(http_addr(&app), None);
    let answer = https
        .get(format!("{}/operations-manager/jobs", app.http_url))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    let http1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap())
        .resolve("localhost", http_addr(&app))
        .http1_only()
        .build()
        .unwrap();
    let answer = http1
        .get(format!("{}/health/live", app.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_11);

    let plaintext = reqwest::Client::new()
        .get(format!("http://{}/health/live", http_addr(&app)))
        .send()
        .await;
    assert!(plaintext.is_err(), "{plaintext:?}");
    // A client that does not trust the service's CA refuses it.
    let untrusting = reqwest::Client::new()
        .get(format!("https://{}/health/live", http_addr(&app)))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_signed_by_the_client_ca() {
    let pki = Pki::new();
    let app = pki.spawn(true).await;
    let stranger_ca = test_ca("another CA");
    let stranger = issue(&stranger_ca, &[], ExtendedKeyUsagePurpose::ClientAuth);

    // gRPC: no certificate, or one of another CA, is refused; the CA's is served.
    for identity in [None, Some(&stranger)] {
        let refused = match tls_channel(&app, pki.grpc_tls(identity)).await {
            Ok(channel) => list_jobs(&app, channel).await.is_err(),
            Err(_) => true,
        };
        assert!(
            refused,
            "served with {:?}",
            identity.map(|_| "a stranger's")
        );
    }
    let channel = tls_channel(&app, pki.grpc_tls(Some(&pki.client)))
        .await
        .unwrap();
    list_jobs(&app, channel).await.unwrap();

    // HTTP, likewise.
    let url = format!("{}/health/live", app.http_url);
    for identity in [None, Some(&stranger)] {
        let answer = pki
            .http_client(http_addr(&app), identity)
            .get(&url)
            .send()
            .await;
        assert!(answer.is_err(), "{answer:?}");
    }
    let answer = pki
        .http_client(http_addr(&app), Some(&pki.client))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // The refused handshakes are counted for each door. (The counters are the process's:
    // other tests' services add to them, never take away.)
    let metrics = pki
        .http_client(http_addr(&app), Some(&pki.client))
        .get(format!("{}/metrics", app.http_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for door in ["grpc", "http"] {
        let line = metrics
            .lines()
            .find(|line| {
                line.starts_with("job_service_tls_handshake_failures_total")
                    && line.contains(&format!("door=\"{door}\""))
                    && line.contains("cause=\"error\"")
            })
            .unwrap_or_else(|| panic!("no {door} handshake failures in {metrics}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 2.0, "{line}");
    }
}
