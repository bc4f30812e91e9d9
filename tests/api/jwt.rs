//! Tokens from an identity provider: audience and issuer, keys from a JSON Web Key Set (a file,
//! or a URL served over HTTPS by a test CA and rotated while the service runs), key files
//! checked at startup, and `job-service token` with the usual private key encodings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::{json, Value};

use crate::helpers::{send, TestApp};
use crate::tls::{issue, test_ca};

fn key_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/keys")
        .join(name)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An admin's claims, valid for an hour, with `extra` added.
fn admin_claims(extra: Value) -> Value {
    let mut claims = json!({"sub": "0123456789abcdef01234567", "username": "pat",
        "roles": ["admin"], "exp": now() + 3600});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

fn encode(claims: &Value, key: &EncodingKey, algorithm: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// The HS256 key of a test app (its secret file, without surrounding whitespace).
fn secret_of(app: &TestApp) -> EncodingKey {
    let secret = std::fs::read(app.keys().jwt_secret_file.as_ref().unwrap()).unwrap();
    EncodingKey::from_secret(secret.trim_ascii()).unwrap()
}

/// The gateway's answer to a job search with `token`: its status and message.
async fn search_with(app: &TestApp, token: &str) -> (u16, String) {
    let (status, body) = send(
        app.http
            .get(format!("{}/operations-manager/jobs", app.http_url))
            .bearer_auth(token),
    )
    .await;
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A P-256 key pair made for one test: the private key as jsonwebtoken reads it, in PEM, and
/// its public key as a JWK named `kid`.
struct TestKey {
    pem: String,
    jwk: Value,
}

impl TestKey {
    fn new(kid: &str) -> TestKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let point = pair.public_key_raw();
        TestKey {
            pem: pair.serialize_pem(),
            jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
        }
    }

    fn token(&self, claims: &Value, kid: Option<&str>) -> String {
        let key = EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap();
        encode(claims, &key, Algorithm::ES256, kid)
    }
}

fn key_set(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

#[tokio::test]
async fn audience_and_issuer_must_match_when_configured() {
    let app = TestApp::spawn_with(|config| {
        config.keys.jwt_audience = Some("job-service".into());
        config.keys.jwt_issuer = Some("https://idp.example/".into());
    })
    .await;
    let key = secret_of(&app);
    let iss = "https://idp.example/";
    for aud in [json!("job-service"), json!(["portal", "job-service"])] {
        let token = encode(
            &admin_claims(json!({"aud": aud, "iss": iss})),
            &key,
            Algorithm::HS256,
            None,
        );
        assert_eq!(search_with(&app, &token).await.0, 200, "{aud}");
    }
    let refusals = [
        (json!({"iss": iss}), "token has no aud claim"),
        (
            json!({"aud": "portal", "iss": iss}),
            "token aud claim does not name \"job-service\"",
        ),
        (json!({"aud": "job-service"}), "token has no iss claim"),
        (
            json!({"aud": "job-service", "iss": "https://evil.example/"}),
            "token iss claim is not \"https://idp.example/\"",
        ),
    ];
    for (extra, needle) in refusals {
        let token = encode(&admin_claims(extra), &key, Algorithm::HS256, None);
        let (status, message) = search_with(&app, &token).await;
        assert_eq!(status, 401, "{needle}: {message}");
        assert!(message.contains(needle), "{needle}: {message}");
    }
}

#[tokio::test]
async fn a_token_whose_dates_have_a_fraction_is_accepted() {
    let app = TestApp::spawn().await;
    let now = now() as f64;
    let token = encode(
        &admin_claims(json!({"exp": now + 600.5, "iat": now - 0.25, "nbf": now - 0.25})),
        &secret_of(&app),
        Algorithm::HS256,
        None,
    );
    let (status, message) = search_with(&app, &token).await;
    assert_eq!(status, 200, "{message}");
}

#[tokio::test]
async fn a_key_set_file_accepts_tokens_of_each_of_its_keys_and_refuses_others() {
    let (first, second, third) = (TestKey::new("k1"), TestKey::new("k2"), TestKey::new("k3"));
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("jwks.json");
    std::fs::write(&set, key_set(&[&first, &second])).unwrap();
    let private = dir.path().join("k1.pem");
    std::fs::write(&private, &first.pem).unwrap();
    let app = TestApp::spawn_with(|config| {
        config.keys.jwt_secret_file = None;
        config.keys.jwt_jwks_file = Some(set.clone());
        // The test app's own admin token: signed with k1, without a kid.
        config.keys.jwt_private_key_file = Some(private.clone());
    })
    .await;
    assert_eq!(search_with(&app, &app.admin_token).await.0, 200);
    let claims = admin_claims(json!({}));
    for (key, kid) in [(&first, "k1"), (&second, "k2")] {
        for kid in [Some(kid), None] {
            let (status, message) = search_with(&app, &key.token(&claims, kid)).await;
            assert_eq!(status, 200, "{kid:?}: {message}");
        }
    }
    let (status, message) = search_with(&app, &third.token(&claims, Some("k3"))).await;
    assert_eq!(status, 401);
    assert!(message.contains("key id (kid) \"k3\""), "{message}");
    let (status, message) = search_with(&app, &third.token(&claims, None)).await;
    assert_eq!(status, 401);
    assert!(message.contains("signature does not verify"), "{message}");
    // Claiming another key's kid helps nothing.
    let (status, message) = search_with(&app, &third.token(&claims, Some("k1"))).await;
    assert_eq!(status, 401);
    assert!(message.contains("signature does not verify"), "{message}");
}

/// A key set served over HTTPS (a certificate for 127.0.0.1 from a test CA), which the test
/// may replace, counting the fetches.
struct KeySetServer {
    url: String,
    ca_file: PathBuf,
    served: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

impl KeySetServer {
    async fn start(set: String) -> KeySetServer {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let ca = test_ca("key set test CA");
        let server = issue(&ca, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let certs = CertificateDer::pem_slice_iter(server.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/jwks.json", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(set));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = {
            let (served, fetches) = (served.clone(), fetches.clone());
            axum::Router::new().route(
                "/jwks.json",
                axum::routing::get(move || {
                    let (served, fetches) = (served.clone(), fetches.clone());
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let body = served.lock().unwrap().clone();
                        ([("content-type", "application/json")], body)
                    }
                }),
            )
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(router),
                    )
                    .await;
                });
            }
        });
        KeySetServer {
            url,
            ca_file,
            served,
            fetches,
            _dir: dir,
            _task: task,
        }
    }
}

#[tokio::test]
async fn a_key_set_fetched_over_https_rotates_without_a_restart() {
    let (old, new) = (TestKey::new("2026-old"), TestKey::new("2026-new"));
    let server = KeySetServer::start(key_set(&[&old])).await;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("old.pem");
    std::fs::write(&private, &old.pem).unwrap();
    let app = TestApp::spawn_with(|config| {
        config.keys.jwt_secret_file = None;
        config.keys.jwt_jwks_url = Some(server.url.parse().unwrap());
        config.keys.jwt_jwks_ca_file = Some(server.ca_file.clone());
        config.keys.jwt_private_key_file = Some(private.clone());
    })
    .await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched at start");
    let claims = admin_claims(json!({}));
    let old_token = old.token(&claims, Some("2026-old"));
    assert_eq!(search_with(&app, &old_token).await.0, 200);

    // The provider rotates: the new key replaces the old one. The first calls signed with it,
    // over gRPC and over HTTP at once, pass: they wait for one fetch of the set.
    *server.served.lock().unwrap() = key_set(&[&new]);
    let token = new.token(&claims, Some("2026-new"));
    let mut jobs = app.jobs_as(&token);
    let (grpc, (status, message)) = tokio::join!(
        jobs.list_jobs(job_service::grpc::pb::ListJobsRequest::default()),
        search_with(&app, &token)
    );
    assert!(grpc.is_ok(), "{grpc:?}");
    assert_eq!(status, 200, "{message}");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
    // The old key is gone from the set, so its tokens are refused now: the very token that
    // passed before too, although the service had verified it already.
    let (status, _) = search_with(&app, &old_token).await;
    assert_eq!(status, 401);
    let mut refused = app.jobs_as(&old_token);
    let grpc = refused
        .list_jobs(job_service::grpc::pb::ListJobsRequest::default())
        .await;
    assert_eq!(grpc.unwrap_err().code(), tonic::Code::Unauthenticated);

    // Tokens naming unknown keys do not make the service fetch again and again.
    for attempt in 0..20 {
        let kid = format!("made-up-{attempt}");
        assert_eq!(
            search_with(&app, &new.token(&claims, Some(&kid))).await.0,
            401
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        server.fetches.load(Ordering::SeqCst) <= 3,
        "fetched {} times",
        server.fetches.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn startup_fails_when_the_key_set_cannot_be_fetched() {
    let server = KeySetServer::start("not json".into()).await;
    let mut config = job_service::config::ServeConfig::defaults();
    let dir = tempfile::tempdir().unwrap();
    config.keys.data_dir = dir.path().to_owned();
    config.keys.jwt_jwks_url = Some(server.url.parse().unwrap());
    config.keys.jwt_jwks_ca_file = Some(server.ca_file.clone());
    let error = format!(
        "{:#}",
        job_service::app::App::build(&config).await.err().unwrap()
    );
    assert!(error.contains("--jwt-jwks-url"), "{error}");
    assert!(error.contains("not a JSON Web Key Set"), "{error}");

    // Without the test CA, the provider's certificate is not trusted.
    config.keys.jwt_jwks_ca_file = None;
    let error = format!(
        "{:#}",
        job_service::app::App::build(&config).await.err().unwrap()
    );
    assert!(error.contains("cannot fetch it"), "{error}");
}

/// `job-service serve` with `args`, which must stop at startup: its stderr.
fn refused_at_startup(args: &[&std::ffi::OsStr]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = crate::serve::serve_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("JOB_SERVICE_JWT_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_key_material_stops_the_service_at_startup_naming_flag_and_file() {
    let flag = std::ffi::OsStr::new("--jwt-public-key-file");
    let p384 = key_file("es384-public.pem");
    let stderr = refused_at_startup(&[flag, p384.as_os_str()]);
    assert!(stderr.contains("--jwt-public-key-file"), "{stderr}");
    assert!(stderr.contains("es384-public.pem"), "{stderr}");
    assert!(stderr.contains("P-384"), "{stderr}");

    let private = key_file("es256-private-sec1.pem");
    let stderr = refused_at_startup(&[flag, private.as_os_str()]);
    assert!(
        stderr.contains("this is a private key; give the public key"),
        "{stderr}"
    );

    let stderr = refused_at_startup(&[
        std::ffi::OsStr::new("--jwt-jwks-url"),
        std::ffi::OsStr::new("https://127.0.0.1:1/jwks.json"),
    ]);
    assert!(stderr.contains("--jwt-jwks-url"), "{stderr}");
    assert!(stderr.contains("cannot fetch it"), "{stderr}");
}

/// `job-service token` for an admin with `keys` options: its output.
fn token_command(keys: &[(&str, PathBuf)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_job-service"));
    command.args(["token", "--username", "pat", "--roles", "admin"]);
    for (flag, path) in keys {
        command.arg(flag).arg(path);
    }
    command.env_remove("JOB_SERVICE_JWT_SECRET_FILE");
    command.output().unwrap()
}

#[tokio::test]
async fn token_signs_with_a_sec1_key_and_refuses_a_key_that_does_not_match() {
    let app = TestApp::spawn_with(|config| {
        config.keys.jwt_secret_file = None;
        config.keys.jwt_public_key_file = Some(key_file("es256-public.pem"));
        config.keys.jwt_private_key_file = Some(key_file("es256-private.pem"));
    })
    .await;
    for private in ["es256-private-sec1.pem", "es256-private.pem"] {
        let output = token_command(&[
            ("--jwt-public-key-file", key_file("es256-public.pem")),
            ("--jwt-private-key-file", key_file(private)),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout).unwrap();
        let (status, message) = search_with(&app, token.trim()).await;
        assert_eq!(status, 200, "{private}: {message}");
    }

    let output = token_command(&[
        ("--jwt-public-key-file", key_file("es256-public.pem")),
        (
            "--jwt-private-key-file",
            key_file("other-es256-private-sec1.pem"),
        ),
    ]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not match --jwt-public-key-file"),
        "{stderr}"
    );
    assert!(stderr.contains("other-es256-private-sec1.pem"), "{stderr}");

    // A PKCS#1 RSA key signs RS256 tokens.
    let output = token_command(&[(
        "--jwt-private-key-file",
        key_file("rs256-private-pkcs1.pem"),
    )]);
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(token.trim()).unwrap().alg,
        Algorithm::RS256
    );
}

#[tokio::test]
async fn token_names_its_key_with_key_id_so_a_large_key_set_finds_it() {
    let keys: Vec<TestKey> = (0..6).map(|i| TestKey::new(&format!("k{i}"))).collect();
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("jwks.json");
    std::fs::write(&set, key_set(&keys.iter().collect::<Vec<_>>())).unwrap();
    let private = dir.path().join("k5.pem");
    std::fs::write(&private, &keys[5].pem).unwrap();
    let app = TestApp::spawn_with(|config| {
        config.keys.jwt_secret_file = None;
        config.keys.jwt_jwks_file = Some(set.clone());
        config.keys.jwt_private_key_file = Some(private.clone());
    })
    .await;
    let signed = |key_id: Option<&str>| {
        let mut flags = vec![
            ("--jwt-jwks-file", set.clone()),
            ("--jwt-private-key-file", private.clone()),
        ];
        if let Some(key_id) = key_id {
            flags.push(("--key-id", PathBuf::from(key_id)));
        }
        let output = token_command(&flags);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };

    // Without a kid the service tries at most 4 keys of the algorithm: the sixth is not one.
    let (status, message) = search_with(&app, &signed(None)).await;
    assert_eq!(status, 401);
    assert!(message.contains("signature does not verify"), "{message}");

    let token = signed(Some("k5"));
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k5"));
    let (status, message) = search_with(&app, &token).await;
    assert_eq!(status, 200, "{message}");
}
