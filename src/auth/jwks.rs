//! JSON Web Key Sets (RFC 7517): the keys of an identity provider, from a file or fetched over
//! HTTPS and kept fresh, so keys rotate without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::keys::PublicKey;

/// Most bytes of a key set: real ones hold a few keys in a few kilobytes.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys in a key set; a larger one is refused rather than searched.
pub(crate) const MAX_KEYS: usize = 100;
/// Longest a fetch of the key set may take, connection included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two fetches asked for by tokens naming an unknown key id: such tokens
/// cost anyone nothing to make, and must not turn the service into a load on the provider.
pub(crate) const MIN_ON_DEMAND_INTERVAL: Duration = Duration::from_secs(30);

/// One key of a set: what verifies the signature, and how tokens name it.
pub(crate) struct SetKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a key set, read from `bytes` fetched from `source`. Keys of other types,
/// curves or uses are skipped with a warning; a set with no usable key is an error.
pub(crate) fn parse(source: &str, bytes: &[u8]) -> anyhow::Result<Vec<SetKey>> {
    if bytes.len() > MAX_JWKS_BYTES {
        bail!("{source}: larger than {MAX_JWKS_BYTES} bytes, too large for a key set");
    }
    let document: Document = serde_json::from_slice(bytes).map_err(|e| {
        anyhow!("{source}: not a JSON Web Key Set (expected {{\"keys\": [...]}}): {e}")
    })?;
    if document.keys.len() > MAX_KEYS {
        bail!(
            "{source}: {} keys; at most {MAX_KEYS} are accepted",
            document.keys.len()
        );
    }
    let mut keys = Vec::new();
    for (index, jwk) in document.keys.iter().enumerate() {
        let kid = jwk.get("kid").and_then(|k| k.as_str());
        let name = match kid {
            Some(kid) => format!("keys[{index}] (kid {kid:?})"),
            None => format!("keys[{index}]"),
        };
        match parse_key(jwk) {
            Ok(Some(key)) => {
                if let PublicKey::Rsa(_) = key {
                    if let Some(weakness) = key.weakness() {
                        tracing::warn!(source, key = %name, "{weakness}");
                    }
                }
                keys.push(SetKey {
                    kid: kid.map(str::to_owned),
                    algorithm: key.algorithm(),
                    key: key.decoding_key(),
                })
            }
            Ok(None) => {}
            Err(reason) => tracing::warn!(source, key = %name, "skipping a key: {reason:#}"),
        }
    }
    if keys.is_empty() {
        bail!("{source}: no usable key (RS256 keys of kty RSA, ES256 keys of kty EC on P-256)");
    }
    Ok(keys)
}

/// A key of the set, `None` for one meant for encryption, an error for one this service
/// cannot use (with the reason).
fn parse_key(jwk: &serde_json::Value) -> anyhow::Result<Option<PublicKey>> {
    let text = |name: &str| -> anyhow::Result<&str> {
        jwk.get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("no {name}"))
    };
    let bytes = |name: &str| -> anyhow::Result<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text(name)?.trim_end_matches('='))
            .map_err(|_| anyhow!("{name} is not base64url"))?;
        if bytes.is_empty() {
            bail!("{name} is empty");
        }
        Ok(bytes)
    };
    if jwk.get("use").and_then(|u| u.as_str()) == Some("enc") {
        return Ok(None);
    }
    let kty = text("kty")?;
    let key = match kty {
        "RSA" => {
            let n = rsa::BoxedUint::from_be_slice_vartime(&bytes("n")?);
            let e = rsa::BoxedUint::from_be_slice_vartime(&bytes("e")?);
            PublicKey::Rsa(
                rsa::PublicKey::new(n, e).map_err(|e| anyhow!("not a valid RSA key ({e})"))?,
            )
        }
        "EC" => {
            let crv = text("crv")?;
            if crv != "P-256" {
                bail!("it is an EC key on {crv}; ES256 needs P-256");
            }
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                bail!("x and y of a P-256 key are 32 bytes each");
            }
            let point = [&[0x04][..], &x, &y].concat();
            PublicKey::P256(
                p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| anyhow!("x and y are not a point of P-256"))?,
            )
        }
        other => bail!("kty {other:?}: only RSA (RS256) and EC (ES256) keys are used"),
    };
    if let Some(alg) = jwk.get("alg").and_then(|a| a.as_str()) {
        let expected = match key.algorithm() {
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        };
        if alg != expected {
            bail!("alg {alg:?}: only RS256 and ES256 are accepted");
        }
    }
    Ok(Some(key))
}

/// The key set of `--jwt-jwks-file`.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Vec<SetKey>> {
    let source = format!("--jwt-jwks-file {}", path.display());
    let size = std::fs::metadata(path)
        .with_context(|| format!("{source}: cannot read it"))?
        .len();
    if size > MAX_JWKS_BYTES as u64 {
        bail!("{source}: larger than {MAX_JWKS_BYTES} bytes, too large for a key set");
    }
    let bytes = std::fs::read(path).with_context(|| format!("{source}: cannot read it"))?;
    parse(&source, &bytes)
}

/// The key set of `--jwt-jwks-url`, the fetcher that keeps it fresh, and the fetch a token
/// naming an unknown key waits for.
pub(crate) struct Remote {
    url: reqwest::Url,
    client: reqwest::Client,
    keys: RwLock<Arc<Fetched>>,
    /// When a token last made the service fetch; held during that fetch, so tokens arriving
    /// meanwhile wait for it rather than fetching again.
    on_demand: Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
}

/// The keys of one fetch, numbered so that a caller can tell whether the set changed since it
/// looked.
pub(crate) struct Fetched {
    pub generation: u64,
    pub keys: Vec<SetKey>,
}

impl Remote {
    /// Fetches the key set once: a service that cannot reach its identity provider at start
    /// stops then, rather than refusing every token later.
    pub(crate) async fn start(url: reqwest::Url, ca_file: Option<&Path>) -> anyhow::Result<Remote> {
        let mut client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .https_only(true)
            // A redirect could lead anywhere; the provider's URL is configured as it is.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("job-service/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            // A CA bundle may be as large as a system's; no larger than a key set, though.
            let source = format!("--jwt-jwks-ca-file {}", path.display());
            let size = std::fs::metadata(path)
                .with_context(|| format!("{source}: cannot read it"))?
                .len();
            if size > MAX_JWKS_BYTES as u64 {
                bail!(
                    "{source}: larger than {MAX_JWKS_BYTES} bytes, too large for CA certificates"
                );
            }
            let pem = std::fs::read(path).with_context(|| format!("{source}: cannot read it"))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow!(
                    "--jwt-jwks-ca-file {}: not PEM certificates ({e})",
                    path.display()
                )
            })?;
            if certificates.is_empty() {
                bail!(
                    "--jwt-jwks-ca-file {}: holds no certificate",
                    path.display()
                );
            }
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build().context("cannot set up the key set client")?;
        let remote = Remote {
            url,
            client,
            keys: RwLock::new(Arc::new(Fetched {
                generation: 0,
                keys: Vec::new(),
            })),
            on_demand: Arc::new(tokio::sync::Mutex::new(None)),
        };
        let keys = remote.fetch().await?;
        tracing::info!(url = %remote.url, keys = keys.len(), "fetched the JSON Web Key Set");
        remote.store(keys);
        Ok(remote)
    }

    pub(crate) fn keys(&self) -> Arc<Fetched> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, keys: Vec<SetKey>) {
        let mut current = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(Fetched {
            generation: current.generation + 1,
            keys,
        });
    }

    /// Fetches the key set now for a token naming a key id that the set of `generation` does
    /// not hold, so that a key the provider has just published is accepted on its first use.
    /// True when the set changed since `generation` (by this fetch or one that ran meanwhile):
    /// the token is worth checking again. At most one such fetch per
    /// [`MIN_ON_DEMAND_INTERVAL`]; tokens arriving during a fetch wait for it (at most
    /// [`FETCH_TIMEOUT`]) instead of fetching again.
    pub(crate) async fn fetch_for_unknown_key(self: &Arc<Self>, generation: u64) -> bool {
        let mut last = self.on_demand.clone().lock_owned().await;
        if self.keys().generation != generation {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < MIN_ON_DEMAND_INTERVAL) {
            return false;
        }
        *last = Some(tokio::time::Instant::now());
        // The fetch runs on its own: a caller that goes away must not cancel it, or tokens
        // naming a new key would be refused until the next fetch is allowed.
        let remote = self.clone();
        let fetch = tokio::spawn(async move {
            let _fetching = last;
            match remote.fetch().await {
                Ok(keys) => {
                    tracing::info!(url = %remote.url, keys = keys.len(), "fetched the JSON Web Key Set for a token naming a key it did not hold");
                    remote.store(keys);
                    true
                }
                Err(error) => {
                    tracing::warn!("{error:#}; keeping the key set fetched before");
                    false
                }
            }
        });
        fetch.await.unwrap_or(false)
    }

    async fn fetch(&self) -> anyhow::Result<Vec<SetKey>> {
        let source = format!("--jwt-jwks-url {}", self.url);
        let mut response = self
            .client
            .get(self.url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| anyhow!("{source}: cannot fetch it: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            bail!("{source}: answered {}", response.status());
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            bail!("{source}: larger than {MAX_JWKS_BYTES} bytes, too large for a key set");
        }
        // Read in chunks so that a body without a length cannot grow past the bound.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow!("{source}: cannot read it: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                bail!("{source}: larger than {MAX_JWKS_BYTES} bytes, too large for a key set");
            }
            body.extend_from_slice(&chunk);
        }
        parse(&source, &body)
    }

    /// Fetches the key set every `every`. A failed fetch keeps the keys there were. Runs until
    /// the task is aborted (see `Verifier`).
    pub(crate) async fn refresh(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(url = %self.url, keys = keys.len(), "fetched the JSON Web Key Set");
                    self.store(keys);
                }
                Err(error) => tracing::warn!(
                    "{error:#}; keeping the key set fetched before, trying again in {}",
                    humantime::format_duration(every)
                ),
            }
        }
    }
}

/// An error and its causes on one line: reqwest's own message hides the reason (a certificate
/// not trusted, a refused connection) in its source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        let public = super::super::keys::read_public_key(
            "test",
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys/rs256-public.pem"),
        )
        .unwrap();
        let PublicKey::Rsa(key) = public else {
            panic!("rsa")
        };
        use rsa::traits::PublicKeyParts;
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
               "n": URL_SAFE_NO_PAD.encode(key.n_bytes()), "e": URL_SAFE_NO_PAD.encode(key.e_bytes())})
    }

    #[test]
    fn keys_of_other_types_curves_and_uses_are_skipped() {
        let set = json!({"keys": [
            rsa_jwk("r1"),
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "r384", "alg": "RS384", "n": rsa_jwk("x")["n"], "e": "AQAB"},
        ]});
        let keys = parse("test", set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        assert_eq!(keys[0].algorithm, Algorithm::RS256);
    }

    #[test]
    fn a_set_without_a_usable_key_or_too_large_is_refused() {
        let refused = parse("src", br#"{"keys": [{"kty": "oct", "k": "AA"}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("no usable key"), "{refused}");
        let refused = parse("src", b"[]").err().unwrap().to_string();
        assert!(refused.contains("not a JSON Web Key Set"), "{refused}");
        let many = json!({ "keys": vec![rsa_jwk("k"); MAX_KEYS + 1] });
        let refused = parse("src", many.to_string().as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("at most 100"), "{refused}");
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        let refused = parse("src", &huge).err().unwrap().to_string();
        assert!(refused.contains("too large"), "{refused}");
    }
}
