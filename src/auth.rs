//! Bearer JWT authentication: the keys that sign and verify tokens, and the check every call
//! passes before it runs.
//!
//! Keys: an HS256 secret from a file, or an RS256/ES256 public key (tokens then come from an
//! identity provider, or from `job-service token` given the private key). With neither, `serve`
//! creates a random secret in the data dir on first start, and `job-service token` signs with
//! that secret: it never creates one, since the service would refuse a token signed with a
//! secret it does not hold.
//!
//! Or a JSON Web Key Set, from a file or from an identity provider's URL ([`jwks`]): a
//! token's `kid` picks the key, and keys rotate without a restart.

mod jwks;
mod keys;
mod verified;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

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
    /// Expiry, seconds since the epoch (a fraction is dropped: the token ends no later).
    #[serde(deserialize_with = "numeric_date_floor")]
    pub exp: u64,
    /// Not before, seconds since the epoch: the token is refused until then (a fraction
    /// rounds up: the token starts no earlier).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date_ceil"
    )]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch: a token issued in the future is refused (a
    /// fraction rounds up).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date_ceil"
    )]
    pub iat: Option<u64>,
    /// Audience, which `job-service token` writes for `--jwt-audience`. Only written: the
    /// service checks the claim as tokens carry it (a string or an array) with jsonwebtoken.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer, which `job-service token` writes for `--jwt-issuer`; only written, as `aud`.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A NumericDate (RFC 7519 section 2): seconds since the epoch, which may have a fraction.
/// Identity providers write `1767225600.5` as well as `1767225600`.
fn numeric_date(value: serde_json::Number, round: fn(f64) -> f64) -> Result<u64, String> {
    if let Some(whole) = value.as_u64() {
        return Ok(whole);
    }
    match value.as_f64() {
        // 2^53: past it, f64 holds no fraction, and no date is that far ahead.
        Some(seconds) if seconds.is_finite() && (0.0..9.0e15).contains(&seconds) => {
            Ok(round(seconds) as u64)
        }
        _ => Err(format!("{value} is not a date (seconds since 1970)")),
    }
}

fn numeric_date_floor<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    numeric_date(serde_json::Number::deserialize(deserializer)?, f64::floor)
        .map_err(serde::de::Error::custom)
}

fn optional_numeric_date_ceil<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|value| numeric_date(value, f64::ceil).map_err(serde::de::Error::custom))
        .transpose()
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
            aud: None,
            iss: None,
        }
    }
}

/// Checks bearer tokens.
pub struct Verifier {
    keys: VerifyingKeys,
    /// The checks for each accepted algorithm: jsonwebtoken takes only algorithms of the key's
    /// family in one `Validation`.
    validations: Vec<Validation>,
    /// The clock skew accepted on `exp`, `nbf` and `iat`, in seconds.
    leeway: u64,
    /// What `--jwt-audience` and `--jwt-issuer` expect, for messages.
    audience: Option<String>,
    issuer: Option<String>,
    /// Tokens verified already: a client's next call with the same token skips the check.
    verified: verified::VerifiedTokens,
    /// The task that keeps a fetched key set fresh; it stops with the verifier.
    _refresh: Option<AbortOnDrop>,
}

/// Where the keys that verify tokens come from.
enum VerifyingKeys {
    /// An HS256 secret or a PEM public key.
    One {
        key: DecodingKey,
        algorithm: Algorithm,
    },
    /// The keys of `--jwt-jwks-file`.
    Set(Vec<jwks::SetKey>),
    /// The keys fetched from `--jwt-jwks-url`.
    Remote(Arc<jwks::Remote>),
}

/// A token without `kid` is tried against at most this many keys of its algorithm: each try
/// is a signature check, and such tokens cost anyone nothing to send.
const MAX_KEYS_TRIED_WITHOUT_KID: usize = 4;

/// Aborts a spawned task when dropped, so the task lives exactly as long as its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Verifier {
    /// The verifier of `serve`: [`Verifier::from_config`], and with `--jwt-jwks-url`, the key
    /// set fetched (startup fails when it cannot be) and a task that keeps it fresh.
    pub async fn start(config: &KeyConfig) -> anyhow::Result<Self> {
        let Some(url) = &config.jwt_jwks_url else {
            return Self::from_config(config);
        };
        only_one_verifying_key(config)?;
        let remote =
            Arc::new(jwks::Remote::start(url.clone(), config.jwt_jwks_ca_file.as_deref()).await?);
        let refresh = tokio::spawn(remote.clone().refresh(config.jwt_jwks_refresh.into()));
        let mut verifier = Self::with_keys(config, VerifyingKeys::Remote(remote));
        verifier._refresh = Some(AbortOnDrop(refresh));
        Ok(verifier)
    }

    /// A verifier whose keys are read from files (or created, for the data dir's secret).
    /// A key set URL needs [`Verifier::start`].
    pub fn from_config(config: &KeyConfig) -> anyhow::Result<Self> {
        only_one_verifying_key(config)?;
        let keys = if config.jwt_jwks_url.is_some() {
            bail!(
                "--jwt-jwks-url: the key set is fetched when the service starts (Verifier::start)"
            );
        } else if let Some(path) = &config.jwt_jwks_file {
            VerifyingKeys::Set(jwks::read_file(path)?)
        } else if let Some(path) = &config.jwt_public_key_file {
            let key = keys::read_public_key("--jwt-public-key-file", path)?;
            if let Some(weakness) = key.weakness() {
                tracing::warn!(path = %path.display(), "--jwt-public-key-file: {weakness}");
            }
            VerifyingKeys::One {
                key: key.decoding_key(),
                algorithm: key.algorithm(),
            }
        } else {
            VerifyingKeys::One {
                key: DecodingKey::from_secret(&secret(config, MissingSecret::Create)?)?,
                algorithm: Algorithm::HS256,
            }
        };
        Ok(Self::with_keys(config, keys))
    }

    fn with_keys(config: &KeyConfig, keys: VerifyingKeys) -> Self {
        let leeway = Duration::from(config.jwt_leeway).as_secs();
        let algorithms = match &keys {
            VerifyingKeys::One { algorithm, .. } => vec![*algorithm],
            VerifyingKeys::Set(_) | VerifyingKeys::Remote(_) => {
                vec![Algorithm::RS256, Algorithm::ES256]
            }
        };
        let validation = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = leeway;
            let mut required = vec!["exp"];
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.validate_aud = false;
            if let Some(audience) = &config.jwt_audience {
                validation.validate_aud = true;
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            if let Some(issuer) = &config.jwt_issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        Verifier {
            keys,
            validations: algorithms.into_iter().map(validation).collect(),
            leeway,
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            verified: verified::VerifiedTokens::new(leeway),
            _refresh: None,
        }
    }

    /// The caller named by an `authorization` header or metadata value. A token naming a key
    /// that a fetched key set does not hold waits for the set to be fetched again (see
    /// [`jwks::Remote::fetch_for_unknown_key`]), so a key just published works at once.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Caller, Error> {
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
        // A token verified already, with the keys held now (a key set fetched again may have
        // dropped the key that verified it).
        let current_keys = match &self.keys {
            VerifyingKeys::Remote(remote) => remote.keys().generation,
            VerifyingKeys::One { .. } | VerifyingKeys::Set(_) => 0,
        };
        let now = now_seconds();
        if let Some(caller) = self.verified.get(token, current_keys, now) {
            return Ok(caller);
        }
        if header_alg(token).is_some_and(|alg| alg.eq_ignore_ascii_case("none")) {
            return Err(unauthenticated(
                "unsigned tokens (alg none) are not accepted".into(),
            ));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated("malformed token: not a JSON Web Token".into()))?;
        // The claims, and the generation of the keys that verified them.
        let (claims, keys) = match &self.keys {
            VerifyingKeys::One { .. } => (self.decode(token, &header, &[]), 0),
            VerifyingKeys::Set(keys) => (self.decode(token, &header, keys), 0),
            VerifyingKeys::Remote(remote) => {
                let fetched = remote.keys();
                match self.decode(token, &header, &fetched.keys) {
                    Err(Refusal::UnknownKey(_))
                        if remote.fetch_for_unknown_key(fetched.generation).await =>
                    {
                        let fetched = remote.keys();
                        (
                            self.decode(token, &header, &fetched.keys),
                            fetched.generation,
                        )
                    }
                    decoded => (decoded, fetched.generation),
                }
            }
        };
        let claims = claims.map_err(|refusal| unauthenticated(refusal.into()))?;
        // jsonwebtoken checks exp and nbf, not iat: a token issued in the future was made by a
        // clock that is wrong, or made to outlive a revocation by being dated ahead.
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway))
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
        let expires = claims.exp;
        let caller = Caller {
            username: claims.username.unwrap_or_else(|| claims.sub.clone()),
            sub: claims.sub,
            groups: claims.groups,
            roles: claims.roles,
        };
        self.verified.insert(token, &caller, expires, keys);
        Ok(caller)
    }
}

impl Verifier {
    /// The claims of `token`, checked with the one key, or with the key of `set` its header
    /// names: the refusal otherwise.
    fn decode(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        set: &[jwks::SetKey],
    ) -> Result<Claims, Refusal> {
        let Some(validation) = self
            .validations
            .iter()
            .find(|v| v.algorithms.contains(&header.alg))
        else {
            let accepted: Vec<String> = self
                .validations
                .iter()
                .flat_map(|v| &v.algorithms)
                .map(|alg| format!("{alg:?}"))
                .collect();
            return Err(Refusal::Other(format!(
                "token is signed with {:?}; this service accepts {}",
                header.alg,
                accepted.join(" and ")
            )));
        };
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(token, key, validation)
                .map(|data| data.claims)
                .map_err(|error| Refusal::Other(self.refusal(&error)))
        };
        if let VerifyingKeys::One { key, .. } = &self.keys {
            return decode(key);
        }
        let fits = |key: &&jwks::SetKey| key.algorithm == header.alg;
        if let Some(kid) = &header.kid {
            let Some(key) = set
                .iter()
                .filter(fits)
                .find(|key| key.kid.as_deref() == Some(kid))
            else {
                return Err(Refusal::UnknownKey(format!(
                    "token names key id (kid) {:?}, which is not among this service's {:?} keys",
                    kid.chars().take(100).collect::<String>(),
                    header.alg
                )));
            };
            return decode(&key.key);
        }
        // Without a kid, the keys of the token's algorithm in turn: a wrong key fails the
        // signature, any other refusal (expired, wrong audience) is the token's own.
        let mut refusal = format!(
            "token names no key id (kid) and this service has no {:?} key",
            header.alg
        );
        for key in set.iter().filter(fits).take(MAX_KEYS_TRIED_WITHOUT_KID) {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) if *error.kind() == ErrorKind::InvalidSignature => {
                    refusal = self.refusal(&error);
                }
                Err(error) => return Err(Refusal::Other(self.refusal(&error))),
            }
        }
        Err(Refusal::Other(refusal))
    }

    fn refusal(&self, error: &jsonwebtoken::errors::Error) -> String {
        let expected = |value: &Option<String>| value.as_deref().unwrap_or_default().to_owned();
        match error.kind() {
            ErrorKind::ExpiredSignature => "token expired".to_owned(),
            ErrorKind::ImmatureSignature => "token is not valid yet".to_owned(),
            ErrorKind::InvalidSignature => "token signature does not verify".to_owned(),
            ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".to_owned(),
            ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
            ErrorKind::InvalidAudience => format!(
                "token aud claim does not name {:?}, the audience this service accepts",
                expected(&self.audience)
            ),
            ErrorKind::InvalidIssuer => format!(
                "token iss claim is not {:?}, the issuer this service accepts",
                expected(&self.issuer)
            ),
            ErrorKind::InvalidClaimFormat(claim) => format!("malformed token claim {claim}"),
            ErrorKind::Json(_) => {
                "malformed token claims: expected sub, exp and optional username, groups, roles, nbf, iat".to_owned()
            }
            _ => "malformed token".to_owned(),
        }
    }
}

/// Why a token was refused, as its caller is told.
enum Refusal {
    /// It names a key id that none of the keys has (a fetched key set is fetched again).
    UnknownKey(String),
    Other(String),
}

impl From<Refusal> for String {
    fn from(refusal: Refusal) -> String {
        match refusal {
            Refusal::UnknownKey(message) | Refusal::Other(message) => message,
        }
    }
}

/// Each way of giving the verifying keys excludes the others (clap says so for flags; this
/// says so for a configuration built otherwise).
fn only_one_verifying_key(config: &KeyConfig) -> anyhow::Result<()> {
    let given: Vec<&str> = [
        ("--jwt-secret-file", config.jwt_secret_file.is_some()),
        (
            "--jwt-public-key-file",
            config.jwt_public_key_file.is_some(),
        ),
        ("--jwt-jwks-file", config.jwt_jwks_file.is_some()),
        ("--jwt-jwks-url", config.jwt_jwks_url.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if given.len() > 1 {
        bail!(
            "{} each give the keys that verify tokens; give one of them",
            given.join(" and ")
        );
    }
    Ok(())
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

/// Signs a token with the configured key: the HS256 secret, or the private key, which must
/// match the configured public key when there is one.
pub fn sign(config: &KeyConfig, claims: &Claims) -> anyhow::Result<String> {
    sign_naming(config, claims, None)
}

/// [`sign`], with `kid` in the token's header: the id of the key in the identity provider's
/// key set, which picks the key that verifies it.
pub fn sign_naming(
    config: &KeyConfig,
    claims: &Claims,
    kid: Option<&str>,
) -> anyhow::Result<String> {
    let (key, algorithm) = match (&config.jwt_public_key_file, &config.jwt_private_key_file) {
        (public, Some(path)) => {
            let private = keys::read_private_key("--jwt-private-key-file", path)?;
            if let Some(public_path) = public {
                let public = keys::read_public_key("--jwt-public-key-file", public_path)?;
                if private.public_key() != public {
                    bail!(
                        "--jwt-private-key-file {} does not match --jwt-public-key-file {}: the \
                         service would refuse every token it signs",
                        path.display(),
                        public_path.display()
                    );
                }
            }
            private.encoding_key()?
        }
        (Some(_), None) => bail!(
            "tokens are verified with a public key; signing one needs the private key: pass --jwt-private-key-file"
        ),
        (None, None) if config.jwt_jwks_file.is_some() || config.jwt_jwks_url.is_some() => bail!(
            "tokens are verified with a key set; signing one needs a private key of it: pass --jwt-private-key-file"
        ),
        (None, None) => (
            EncodingKey::from_secret(&secret(config, MissingSecret::Refuse)?)?,
            Algorithm::HS256,
        ),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    Ok(jsonwebtoken::encode(&header, claims, &key)?)
}

/// `job-service token`: the token for the command line's claims.
pub fn token_for(config: &TokenConfig) -> anyhow::Result<String> {
    if config.username.trim().is_empty() {
        bail!("--username must not be empty");
    }
    let mut claims = Claims::new(
        &config.username,
        config.sub.clone(),
        config.groups.clone(),
        config.roles.clone(),
        config.ttl.into(),
    );
    // With the options of `serve`, a token the service accepts.
    claims.aud = config.keys.jwt_audience.clone();
    claims.iss = config.keys.jwt_issuer.clone();
    sign_naming(&config.keys, &claims, config.key_id.as_deref())
}

/// The HS256 secret: from --jwt-secret-file, else the data dir's, which only the service
/// creates ([`MissingSecret`]).
fn secret(config: &KeyConfig, missing: MissingSecret) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &config.jwt_secret_file {
        let flag = "--jwt-secret-file";
        let bytes = keys::read_key_file(flag, path)?;
        // Editors and `echo` end files with a newline that is not part of the secret; the
        // token's signer must leave it out too, so it is said once.
        let secret = bytes.trim_ascii().to_vec();
        if secret.len() != bytes.len() {
            tracing::info!(
                path = %path.display(),
                "{flag}: the whitespace around the secret is not part of it"
            );
        }
        if secret.len() < 32 {
            bail!(
                "{flag} {}: the secret is shorter than 32 bytes",
                path.display()
            );
        }
        if let Some(warning) = readable_by_others(path) {
            tracing::warn!(path = %path.display(), "{flag}: {warning}");
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
    Ok(keys::read_key_file("the generated secret", &path)?
        .trim_ascii()
        .to_vec())
}

/// A warning when anyone on the machine may read the secret file: whoever reads it can sign
/// tokens for any account and role.
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "the secret file is readable by every user of this machine (mode {:o}), who can \
             then sign tokens for any account; chmod 600 it",
            mode & 0o777
        )
    })
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

    /// Runs a verification to its end: with keys from files, nothing in it waits.
    trait Now: std::future::Future + Sized {
        fn now(self) -> Self::Output {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(self)
        }
    }

    impl<F: std::future::Future> Now for F {}

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
            .now()
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
        assert!(verifier
            .verify(Some(&format!("Bearer {token}")))
            .now()
            .is_ok());
    }

    #[test]
    fn each_bad_credential_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let verifier = Verifier::from_config(&config).unwrap();
        expect_unauthenticated(verifier.verify(None).now(), "missing");
        expect_unauthenticated(verifier.verify(Some("Basic dXNlcjpwdw==")).now(), "Bearer");
        expect_unauthenticated(verifier.verify(Some("Bearer not.a.jwt")).now(), "malformed");

        let mut expired = Claims::new("pat", None, vec![], vec![], Duration::ZERO);
        expired.exp -= 60;
        expect_unauthenticated(
            verifier
                .verify(Some(&format!(
                    "Bearer {}",
                    sign(&config, &expired).unwrap()
                )))
                .now(),
            "expired",
        );

        let other = tempfile::tempdir().unwrap();
        let foreign = sign(
            &keys(other.path()),
            &Claims::new("pat", None, vec![], vec![], Duration::from_secs(60)),
        )
        .unwrap();
        expect_unauthenticated(
            verifier.verify(Some(&format!("Bearer {foreign}"))).now(),
            "signature",
        );

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"x","exp":99999999999}"#);
        expect_unauthenticated(
            verifier
                .verify(Some(&format!("Bearer {none_header}.{body}.")))
                .now(),
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
        expect_unauthenticated(
            verifier.verify(Some(&format!("Bearer {token}"))).now(),
            "exp",
        );
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
            .now()
            .is_ok());
    }

    fn verify_claims(config: &KeyConfig, claims: &Claims) -> Result<Caller, Error> {
        Verifier::from_config(config)
            .unwrap()
            .verify(Some(&format!("Bearer {}", sign(config, claims).unwrap())))
            .now()
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
                    .now()
                    .unwrap()
                    .roles,
                ["apiread"]
            );
            expect_unauthenticated(
                verifier.verify(Some(&format!("Bearer {hs_token}"))).now(),
                "accepts",
            );
        }
    }
    /// `claims` signed as a JSON object with `key`, `algorithm` and `kid`.
    fn encode_json(
        claims: &serde_json::Value,
        key: &EncodingKey,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, claims, key).unwrap()
        )
    }

    fn hs256_key(config: &KeyConfig) -> EncodingKey {
        EncodingKey::from_secret(&secret(config, MissingSecret::Refuse).unwrap()).unwrap()
    }

    #[test]
    fn audience_and_issuer_are_checked_only_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = keys(dir.path());
        let key = hs256_key(&config);
        let exp = now_seconds() + 60;
        let token = |claims: serde_json::Value| encode_json(&claims, &key, Algorithm::HS256, None);
        let plain = token(serde_json::json!({"sub": "x", "exp": exp}));
        let foreign = token(
            serde_json::json!({"sub": "x", "exp": exp, "aud": "other", "iss": "https://other/"}),
        );
        let unchecked = Verifier::from_config(&config).unwrap();
        assert!(unchecked.verify(Some(&plain)).now().is_ok());
        assert!(unchecked.verify(Some(&foreign)).now().is_ok());

        config.jwt_audience = Some("job-service".into());
        config.jwt_issuer = Some("https://idp.example/".into());
        let verifier = Verifier::from_config(&config).unwrap();
        for aud in [
            serde_json::json!("job-service"),
            serde_json::json!(["other", "job-service"]),
        ] {
            let good = token(
                serde_json::json!({"sub": "x", "exp": exp, "aud": aud, "iss": "https://idp.example/"}),
            );
            assert!(verifier.verify(Some(&good)).now().is_ok(), "{aud}");
        }
        let cases = [
            (
                serde_json::json!({"sub": "x", "exp": exp, "iss": "https://idp.example/"}),
                "token has no aud claim",
            ),
            (
                serde_json::json!({"sub": "x", "exp": exp, "aud": ["other"], "iss": "https://idp.example/"}),
                "token aud claim does not name \"job-service\"",
            ),
            (
                serde_json::json!({"sub": "x", "exp": exp, "aud": "job-service"}),
                "token has no iss claim",
            ),
            (
                serde_json::json!({"sub": "x", "exp": exp, "aud": "job-service", "iss": "https://other/"}),
                "token iss claim is not \"https://idp.example/\"",
            ),
        ];
        for (claims, needle) in cases {
            expect_unauthenticated(verifier.verify(Some(&token(claims))).now(), needle);
        }
    }

    #[test]
    fn token_writes_the_audience_and_issuer_the_service_expects() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        keys(dir.path());
        let options = [
            "--data-dir",
            data_dir,
            "--jwt-audience",
            "job-service",
            "--jwt-issuer",
            "https://idp.example/",
        ];
        let token = token_for(&crate::config::TokenConfig::parse_from(
            ["token", "--username", "pat"].iter().chain(&options),
        ))
        .unwrap();
        let serve = crate::config::ServeConfig::parse_from(["serve"].iter().chain(&options));
        let verifier = Verifier::from_config(&serve.keys).unwrap();
        assert!(verifier
            .verify(Some(&format!("Bearer {token}")))
            .now()
            .is_ok());
    }

    #[test]
    fn dates_with_a_fraction_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let config = keys(dir.path());
        let key = hs256_key(&config);
        let now = now_seconds() as f64;
        let claims =
            serde_json::json!({"sub": "x", "exp": now + 60.25, "nbf": now - 1.5, "iat": now - 1.5});
        let verifier = Verifier::from_config(&config).unwrap();
        assert!(verifier
            .verify(Some(&encode_json(&claims, &key, Algorithm::HS256, None)))
            .now()
            .is_ok());
        let expired = serde_json::json!({"sub": "x", "exp": now - 60.5});
        expect_unauthenticated(
            verifier
                .verify(Some(&encode_json(&expired, &key, Algorithm::HS256, None)))
                .now(),
            "expired",
        );
        let negative = serde_json::json!({"sub": "x", "exp": -1.5});
        expect_unauthenticated(
            verifier
                .verify(Some(&encode_json(&negative, &key, Algorithm::HS256, None)))
                .now(),
            "malformed token",
        );
    }

    fn key_file(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keys")
            .join(name)
    }

    /// The JWK of a public key, as an identity provider publishes it.
    fn jwk(public: &keys::PublicKey, kid: &str) -> serde_json::Value {
        use rsa::traits::PublicKeyParts;
        match public {
            keys::PublicKey::Rsa(key) => serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(key.n_bytes()), "e": URL_SAFE_NO_PAD.encode(key.e_bytes())}),
            keys::PublicKey::P256(key) => {
                let point = key.to_sec1_bytes();
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
            }
        }
    }

    #[test]
    fn a_key_set_file_verifies_tokens_of_each_of_its_keys_by_kid_or_by_trying() {
        let dir = tempfile::tempdir().unwrap();
        let es = keys::read_private_key("f", &key_file("es256-private-sec1.pem")).unwrap();
        let rs = keys::read_private_key("f", &key_file("rs256-private-pkcs1.pem")).unwrap();
        let other = keys::read_private_key("f", &key_file("other-es256-private-sec1.pem")).unwrap();
        let set =
            serde_json::json!({"keys": [jwk(&es.public_key(), "es"), jwk(&rs.public_key(), "rs")]});
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, set.to_string()).unwrap();
        let mut config = unserved_keys(dir.path());
        config.jwt_jwks_file = Some(path);
        let verifier = Verifier::from_config(&config).unwrap();
        let claims =
            serde_json::json!({"sub": "x", "exp": now_seconds() + 60, "roles": ["apiread"]});
        for (key, kid) in [(&es, "es"), (&rs, "rs")] {
            let (encoding, algorithm) = key.encoding_key().unwrap();
            for kid in [Some(kid), None] {
                let caller = verifier
                    .verify(Some(&encode_json(&claims, &encoding, algorithm, kid)))
                    .now()
                    .unwrap();
                assert_eq!(caller.roles, ["apiread"]);
            }
        }
        let (encoding, algorithm) = other.encoding_key().unwrap();
        expect_unauthenticated(
            verifier
                .verify(Some(&encode_json(
                    &claims,
                    &encoding,
                    algorithm,
                    Some("other"),
                )))
                .now(),
            "token names key id (kid) \"other\"",
        );
        expect_unauthenticated(
            verifier
                .verify(Some(&encode_json(&claims, &encoding, algorithm, None)))
                .now(),
            "signature does not verify",
        );
        // A key of the set under another key's kid does not verify either.
        expect_unauthenticated(
            verifier
                .verify(Some(&encode_json(
                    &claims,
                    &encoding,
                    algorithm,
                    Some("es"),
                )))
                .now(),
            "signature does not verify",
        );
        let hs = encode_json(
            &claims,
            &EncodingKey::from_secret(&[7; 32]).unwrap(),
            Algorithm::HS256,
            None,
        );
        expect_unauthenticated(verifier.verify(Some(&hs)).now(), "accepts RS256 and ES256");
    }

    #[test]
    fn token_signs_with_a_sec1_key_and_refuses_one_that_does_not_match_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = unserved_keys(dir.path());
        config.jwt_public_key_file = Some(key_file("es256-public.pem"));
        config.jwt_private_key_file = Some(key_file("es256-private-sec1.pem"));
        let claims = Claims::new("pat", None, vec![], vec![], Duration::from_secs(60));
        let token = sign(&config, &claims).unwrap();
        assert!(Verifier::from_config(&config)
            .unwrap()
            .verify(Some(&format!("Bearer {token}")))
            .now()
            .is_ok());
        config.jwt_private_key_file = Some(key_file("other-es256-private-sec1.pem"));
        let refused = sign(&config, &claims).unwrap_err().to_string();
        assert!(
            refused.contains("does not match --jwt-public-key-file"),
            "{refused}"
        );
        config.jwt_private_key_file = Some(key_file("rs256-private-pkcs1.pem"));
        let refused = sign(&config, &claims).unwrap_err().to_string();
        assert!(refused.contains("does not match"), "{refused}");
    }

    #[test]
    fn a_secret_file_readable_by_everyone_is_worth_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("  {}\n", "s".repeat(40))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&path).unwrap().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(readable_by_others(&path).is_none());
        let mut config = unserved_keys(dir.path());
        config.jwt_secret_file = Some(path);
        assert_eq!(
            secret(&config, MissingSecret::Refuse).unwrap(),
            "s".repeat(40).as_bytes()
        );
    }
}
