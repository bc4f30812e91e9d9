//! Bearer JWT authentication: the keys that sign and verify tokens, and the check every call
//! passes before it runs.
//!
//! Keys: an HS256 secret from a file, or an RS256/ES256 public key (tokens then come from an
//! identity provider, or from `job-service token` given the private key). With neither, `serve`
//! creates a random secret in the data dir on first start, and `job-service token` signs with
//! that secret: it never creates one, since the service would refuse a token signed with a
//! secret it does not hold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{KeyConfig, TokenConfig};
use crate::domain::ids::account_id_for_username;
use crate::domain::storable;
use crate::domain::{Caller, Error};

/// The name of the generated secret in the data dir.
const GENERATED_SECRET: &str = "jwt-secret";

/// What to do when no key is configured and the data dir holds no generated secret yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingSecret {
    /// The service on its first start: create the secret it will verify with.
    Create,
    /// Signing: a new secret would sign tokens the service refuses, so say where to find its.
    Refuse,
}

/// The claims this service reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Account id.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch: the token is refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch: a token issued in the future is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    /// Claims for `username`, valid for `ttl` from now.
    pub fn new(
        username: &str,
        sub: Option<String>,
        groups: Vec<String>,
        roles: Vec<String>,
        ttl: Duration,
    ) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Claims {
            sub: sub.unwrap_or_else(|| account_id_for_username(username)),
            username: Some(username.to_owned()),
            groups,
            roles,
            exp: (now + ttl).as_secs(),
            nbf: None,
            iat: Some(now.as_secs()),
        }
    }
}

/// Checks bearer tokens.
pub struct Verifier {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    /// The clock skew accepted on `exp`, `nbf` and `iat`, in seconds.
    leeway: u64,
}

impl Verifier {
    pub fn from_config(config: &KeyConfig) -> anyhow::Result<Self> {
        let (key, algorithm) = match &config.jwt_public_key_file {
            Some(path) => {
                let pem = read_key_file(path)?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, Algorithm::ES256)
                } else {
                    bail!("{} is not a PEM RSA or P-256 public key", path.display());
                }
            }
            None => (
                DecodingKey::from_secret(&secret(config, MissingSecret::Create)?)?,
                Algorithm::HS256,
            ),
        };
        let leeway = Duration::from(config.jwt_leeway).as_secs();
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Ok(Verifier {
            key,
            algorithm,
            validation,
            leeway,
        })
    }

    /// The caller named by an `authorization` header or metadata value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        let unauthenticated = |message: String| Error::Unauthenticated(message);
        let Some(authorization) = authorization else {
            return Err(unauthenticated(
                "missing credentials: send 'authorization: Bearer <token>'".into(),
            ));
        };
        let token = match authorization.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                token.trim()
            }
            _ => {
                return Err(unauthenticated(
                    "malformed authorization: expected 'Bearer <token>'".into(),
                ))
            }
        };
        if header_alg(token).is_some_and(|alg| alg.eq_ignore_ascii_case("none")) {
            return Err(unauthenticated(
                "unsigned tokens (alg none) are not accepted".into(),
            ));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated("malformed token: not a JSON Web Token".into()))?;
        if header.alg != self.algorithm {
            return Err(unauthenticated(format!(
                "token is signed with {:?}; this service accepts {:?}",
                header.alg, self.algorithm
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|error| {
            unauthenticated(match error.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_owned(),
                ErrorKind::ImmatureSignature => "token is not valid yet".to_owned(),
                ErrorKind::InvalidSignature => "token signature does not verify".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
                ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                    "malformed token claims: expected sub, exp and optional username, groups, roles, nbf, iat".to_owned()
                }
                _ => "malformed token".to_owned(),
            })
        })?;
        let claims = data.claims;
        // jsonwebtoken checks exp and nbf, not iat: a token issued in the future was made by a
        // clock that is wrong, or made to outlive a revocation by being dated ahead.
        if claims
            .iat
            .is_some_and(|iat| iat > now_seconds().saturating_add(self.leeway))
        {
            return Err(unauthenticated("token was issued in the future".into()));
        }
        // The caller's identity is stored and compared in the database, which cannot hold
        // U+0000: such a token names no caller the service can serve.
        if let Some(claim) = claim_with_nul(&claims) {
            return Err(unauthenticated(format!(
                "token claim {claim} must not contain the character U+0000"
            )));
        }
        Ok(Caller {
            username: claims.username.unwrap_or_else(|| claims.sub.clone()),
            sub: claims.sub,
            groups: claims.groups,
            roles: claims.roles,
        })
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The name of the first identity claim holding U+0000, if any.
fn claim_with_nul(claims: &Claims) -> Option<&'static str> {
    let has_nul = |s: &str| storable::check_text(s).is_err();
    if has_nul(&claims.sub) {
        Some("sub")
    } else if claims.username.as_deref().is_some_and(has_nul) {
        Some("username")
    } else if claims.groups.iter().any(|g| has_nul(g)) {
        Some("groups")
    } else if claims.roles.iter().any(|r| has_nul(r)) {
        Some("roles")
    } else {
        None
    }
}

/// The `alg` of a token's header, read without trusting anything else in it.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// Signs a token with the configured key: the HS256 secret, or the private key matching the
/// configured public key.
pub fn sign(config: &KeyConfig, claims: &Claims) -> anyhow::Result<String> {
    let (key, algorithm) = match (&config.jwt_public_key_file, &config.jwt_private_key_file) {
        (_, Some(path)) => {
            let pem = read_key_file(path)?;
            if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
                (key, Algorithm::ES256)
            } else {
                bail!("{} is not a PEM RSA or P-256 private key", path.display());
            }
        }
        (Some(_), None) => bail!(
            "tokens are verified with a public key; signing one needs the private key: pass --jwt-private-key-file"
        ),
        (None, None) => (
            EncodingKey::from_secret(&secret(config, MissingSecret::Refuse)?)?,
            Algorithm::HS256,
        ),
    };
    Ok(jsonwebtoken::encode(&Header::new(algorithm), claims, &key)?)
}

/// `job-service token`: the token for the command line's claims.
pub fn token_for(config: &TokenConfig) -> anyhow::Result<String> {
    if config.username.trim().is_empty() {
        bail!("--username must not be empty");
    }
    let claims = Claims::new(
        &config.username,
        config.sub.clone(),
        config.groups.clone(),
        config.roles.clone(),
        config.ttl.into(),
    );
    sign(&config.keys, &claims)
}

/// The HS256 secret: from --jwt-secret-file, else the data dir's, which only the service
/// creates ([`MissingSecret`]).
fn secret(config: &KeyConfig, missing: MissingSecret) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &config.jwt_secret_file {
        let secret = read_key_file(path)?;
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 32 {
            bail!("the secret in {} is shorter than 32 bytes", path.display());
        }
        return Ok(secret);
    }
    let path = config.data_dir.join(GENERATED_SECRET);
    if !path.exists() {
        match missing {
            MissingSecret::Create => create_secret(&path)?,
            MissingSecret::Refuse => bail!(
                "no token-signing key: {} does not exist. The service creates it in its data dir \
                 on first start; pass that data dir (--data-dir DIR of the serving process, or \
                 JOB_SERVICE_DATA_DIR), or the service's key (--jwt-secret-file FILE, or \
                 --jwt-private-key-file FILE with a public key)",
                std::path::absolute(&path).unwrap_or(path).display()
            ),
        }
    }
    Ok(read_key_file(&path)?.trim_ascii().to_vec())
}

fn create_secret(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            tracing::info!(path = %path.display(), "created a random token-signing secret");
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot create {}", path.display())),
    }
}

fn read_key_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// No key configured, and `dir` as the data dir, before the service has started on it.
    fn unserved_keys(dir: &Path) -> KeyConfig {
        let mut config = crate::config::ServeConfig::parse_from(["serve"]).keys;
        config.data_dir = dir.to_owned();
        config
    }

    /// [`unserved_keys`] after the service's first start, which created the secret.
    fn keys(dir: &Path) -> KeyConfig {
        let config = unserved_keys(dir);
        Verifier::from_config(&config).unwrap();
        config
    }

    fn expect_unauthenticated(result: Result<Caller, Error>, needle: &str) {
        match result {
            Err(Error::Unauthenticated(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected unauthenticated, got {other:?}"),
        }
    }

    #[test]
    fn a_signed_token_names_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let claims = Claims::new(
            "pat",
            None,
            vec!["aaaaaaaaaaaaaaaaaaaaaaaa".into()],
            vec!["operations".into()],
            Duration::from_secs(60),
        );
        let token = sign(&config, &claims).unwrap();
        let caller = Verifier::from_config(&config)
            .unwrap()
            .verify(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.username, "pat");
        assert_eq!(caller.sub, account_id_for_username("pat"));
        assert_eq!(caller.groups, ["aaaaaaaaaaaaaaaaaaaaaaaa"]);
        assert_eq!(caller.roles, ["operations"]);
    }

    #[test]
    fn signing_never_creates_a_secret_only_the_service_does() {
        let dir = tempfile::tempdir().unwrap();
        let config = unserved_keys(dir.path());
        let claims = Claims::new("pat", None, vec![], vec![], Duration::from_secs(60));
        let refused = sign(&config, &claims).unwrap_err().to_string();
        let path = dir.path().join(GENERATED_SECRET);
        assert!(refused.contains(&path.display().to_string()), "{refused}");
        for hint in ["--data-dir", "JOB_SERVICE_DATA_DIR", "--jwt-secret-file"] {
            assert!(refused.contains(hint), "{hint} missing from: {refused}");
        }
        assert!(!path.exists(), "signing created {}", path.display());

        let verifier = Verifier::from_config(&config).unwrap();
        assert!(
            path.exists(),
            "the service creates the secret on first start"
        );
        let token = sign(&config, &claims).unwrap();
        assert!(verifier.verify(Some(&format!("Bearer {token}"))).is_ok());
    }

    #[test]
    fn each_bad_credential_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let verifier = Verifier::from_config(&config).unwrap();
        expect_unauthenticated(verifier.verify(None), "missing");
        expect_unauthenticated(verifier.verify(Some("Basic dXNlcjpwdw==")), "Bearer");
        expect_unauthenticated(verifier.verify(Some("Bearer not.a.jwt")), "malformed");

        let mut expired = Claims::new("pat", None, vec![], vec![], Duration::ZERO);
        expired.exp -= 60;
        expect_unauthenticated(
            verifier.verify(Some(&format!(
                "Bearer {}",
                sign(&config, &expired).unwrap()
            ))),
            "expired",
        );

        let other = tempfile::tempdir().unwrap();
        let foreign = sign(
            &keys(other.path()),
            &Claims::new("pat", None, vec![], vec![], Duration::from_secs(60)),
        )
        .unwrap();
        expect_unauthenticated(
            verifier.verify(Some(&format!("Bearer {foreign}"))),
            "signature",
        );

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"x","exp":99999999999}"#);
        expect_unauthenticated(
            verifier.verify(Some(&format!("Bearer {none_header}.{body}."))),
            "alg none",
        );
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let key =
            EncodingKey::from_secret(&secret(&config, MissingSecret::Refuse).unwrap()).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x"}),
            &key,
        )
        .unwrap();
        let verifier = Verifier::from_config(&config).unwrap();
        expect_unauthenticated(verifier.verify(Some(&format!("Bearer {token}"))), "exp");
    }

    #[test]
    fn the_clock_skew_is_accepted_up_to_the_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let mut claims = Claims::new("pat", None, vec![], vec![], Duration::ZERO);
        claims.exp -= 2;
        let token = sign(&config, &claims).unwrap();
        assert!(Verifier::from_config(&config)
            .unwrap()
            .verify(Some(&format!("Bearer {token}")))
            .is_ok());
    }

    fn verify_claims(config: &KeyConfig, claims: &Claims) -> Result<Caller, Error> {
        Verifier::from_config(config)
            .unwrap()
            .verify(Some(&format!("Bearer {}", sign(config, claims).unwrap())))
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_beyond_the_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let mut claims = Claims::new("pat", None, vec![], vec![], Duration::from_secs(3600));
        claims.nbf = Some(now_seconds() + 600);
        expect_unauthenticated(verify_claims(&config, &claims), "token is not valid yet");
        // Within the default leeway of 5 seconds, and in the past: accepted.
        claims.nbf = Some(now_seconds() + 2);
        assert!(verify_claims(&config, &claims).is_ok());
        claims.nbf = Some(now_seconds() - 60);
        assert!(verify_claims(&config, &claims).is_ok());
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused_beyond_the_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let mut claims = Claims::new("pat", None, vec![], vec![], Duration::from_secs(3600));
        claims.iat = Some(now_seconds() + 600);
        expect_unauthenticated(
            verify_claims(&config, &claims),
            "token was issued in the future",
        );
        claims.iat = Some(now_seconds() + 2);
        assert!(verify_claims(&config, &claims).is_ok());
        claims.iat = None;
        assert!(verify_claims(&config, &claims).is_ok());
    }

    #[test]
    fn the_leeway_flag_widens_nbf_and_iat_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = keys(dir.path());
        config.jwt_leeway = Duration::from_secs(900).into();
        let mut claims = Claims::new("pat", None, vec![], vec![], Duration::from_secs(3600));
        claims.nbf = Some(now_seconds() + 600);
        claims.iat = Some(now_seconds() + 600);
        assert!(verify_claims(&config, &claims).is_ok());
    }

    /// A change made to a token's claims.
    type ClaimChange = fn(&mut Claims);

    #[test]
    fn identity_claims_holding_nul_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let base = Claims::new("pat", None, vec![], vec![], Duration::from_secs(60));
        let cases: [(&str, ClaimChange); 4] = [
            ("sub", |c| c.sub = "a\0b".into()),
            ("username", |c| c.username = Some("pat\0".into())),
            ("groups", |c| {
                c.groups = vec!["aaaaaaaaaaaaaaaaaaaaaaaa".into(), "\0".into()]
            }),
            ("roles", |c| c.roles = vec!["admin\0".into()]),
        ];
        for (claim, change) in cases {
            let mut claims = base.clone();
            change(&mut claims);
            expect_unauthenticated(
                verify_claims(&config, &claims),
                &format!("token claim {claim} must not contain the character U+0000"),
            );
        }
    }

    #[test]
    fn public_key_pairs_sign_and_verify_and_refuse_other_algorithms() {
        let keys_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys");
        let dir = tempfile::tempdir().unwrap();
        let hs_token = sign(
            &keys(dir.path()),
            &Claims::new("pat", None, vec![], vec![], Duration::from_secs(60)),
        )
        .unwrap();
        for (kind, alg) in [("es256", Algorithm::ES256), ("rs256", Algorithm::RS256)] {
            let mut config = keys(dir.path());
            config.jwt_public_key_file = Some(keys_dir.join(format!("{kind}-public.pem")));
            let claims = Claims::new(
                "pat",
                None,
                vec![],
                vec!["apiread".into()],
                Duration::from_secs(60),
            );
            assert!(sign(&config, &claims)
                .unwrap_err()
                .to_string()
                .contains("--jwt-private-key-file"));
            config.jwt_private_key_file = Some(keys_dir.join(format!("{kind}-private.pem")));
            let token = sign(&config, &claims).unwrap();
            assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, alg);
            let verifier = Verifier::from_config(&config).unwrap();
            assert_eq!(
                verifier
                    .verify(Some(&format!("Bearer {token}")))
                    .unwrap()
                    .roles,
                ["apiread"]
            );
            expect_unauthenticated(
                verifier.verify(Some(&format!("Bearer {hs_token}"))),
                "accepts",
            );
        }
    }
}
