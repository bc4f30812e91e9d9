//! Reading and checking the PEM key files that sign and verify tokens.
//!
//! jsonwebtoken's own PEM readers take a P-384 key for ES256 (every token then fails to
//! verify, without a word at startup), take a private key where a public one belongs, and read
//! EC private keys only as PKCS#8, not as the SEC1 `BEGIN EC PRIVATE KEY` that
//! `openssl ecparam -genkey` writes. So the files are parsed here with the RustCrypto crates
//! jsonwebtoken builds on (`p256`, `rsa`, `sec1`): each problem is named at startup, and the
//! keys reach jsonwebtoken in the one form it reads.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use rsa::pkcs8::PrivateKeyInfoRef;
use rsa::traits::PublicKeyParts;

/// RSA keys shorter than this are weak (NIST SP 800-131A): used, with a warning.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Key files are a few kilobytes; anything larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// A key that verifies tokens.
#[derive(Clone)]
pub(crate) enum PublicKey {
    Rsa(rsa::PublicKey),
    P256(p256::PublicKey),
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PublicKey::Rsa(a), PublicKey::Rsa(b)) => {
                a.n_bytes() == b.n_bytes() && a.e_bytes() == b.e_bytes()
            }
            (PublicKey::P256(a), PublicKey::P256(b)) => a == b,
            _ => false,
        }
    }
}

impl PublicKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Rsa(_) => Algorithm::RS256,
            PublicKey::P256(_) => Algorithm::ES256,
        }
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        match self {
            PublicKey::Rsa(key) => {
                DecodingKey::from_rsa_raw_components(&key.n_bytes(), &key.e_bytes())
            }
            // jsonwebtoken's ES256 verifier reads the SEC1 point.
            PublicKey::P256(key) => DecodingKey::from_ec_der(&key.to_sec1_bytes()),
        }
    }

    /// What is worth a warning about this key: an RSA key below [`MIN_RSA_BITS`].
    pub(crate) fn weakness(&self) -> Option<String> {
        match self {
            PublicKey::Rsa(key) => {
                let bits = rsa_bits(key);
                (bits < MIN_RSA_BITS).then(|| {
                    format!("the RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} considered safe")
                })
            }
            PublicKey::P256(_) => None,
        }
    }
}

fn rsa_bits(key: &rsa::PublicKey) -> usize {
    key.n().bit_width() as usize
}

/// A key that signs tokens (`job-service token`). Read once per command: the size of the RSA
/// variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PrivateKey {
    Rsa(rsa::PrivateKey),
    P256(p256::SecretKey),
}

impl PrivateKey {
    pub(crate) fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa(key) => PublicKey::Rsa(key.to_public_key()),
            PrivateKey::P256(key) => PublicKey::P256(key.public_key()),
        }
    }

    /// The key as jsonwebtoken reads it: PKCS#1 DER for RSA, PKCS#8 DER for P-256.
    pub(crate) fn encoding_key(&self) -> anyhow::Result<(EncodingKey, Algorithm)> {
        Ok(match self {
            PrivateKey::Rsa(key) => (
                EncodingKey::from_rsa_der(key.to_pkcs1_der()?.as_bytes()),
                Algorithm::RS256,
            ),
            PrivateKey::P256(key) => (
                EncodingKey::from_ec_der(key.to_pkcs8_der()?.as_bytes()),
                Algorithm::ES256,
            ),
        })
    }
}

/// The name of an elliptic curve, by its OID, for messages.
fn curve_name(oid: &ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => "P-256".to_owned(),
        "1.3.132.0.34" => "P-384".to_owned(),
        "1.3.132.0.35" => "P-521".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        other => format!("the curve with OID {other}"),
    }
}

fn wrong_curve(oid: Option<ObjectIdentifier>) -> anyhow::Error {
    let curve = oid.map_or_else(|| "an unnamed curve".to_owned(), |oid| curve_name(&oid));
    anyhow!("it is an EC key on {curve}; ES256 needs a P-256 key")
}

/// Reads a file that should hold a key, refusing what is too large to be one.
pub(crate) fn read_key_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{flag} {}: cannot read it", path.display()))?
        .len();
    if size > MAX_KEY_FILE_BYTES {
        bail!(
            "{flag} {}: {size} bytes is too large for a key file (at most {MAX_KEY_FILE_BYTES})",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))
}

/// The PEM blocks of a key file, with a message naming the flag and file when there are none.
fn pem_blocks(flag: &str, path: &Path, bytes: &[u8]) -> anyhow::Result<Vec<pem::Pem>> {
    let blocks = pem::parse_many(bytes).unwrap_or_default();
    if blocks.is_empty() {
        bail!(
            "{flag} {}: not a PEM file (expected a -----BEGIN ...----- block)",
            path.display()
        );
    }
    Ok(blocks)
}

/// The public key in `path`, given as `flag`: PEM `PUBLIC KEY` (RSA or P-256) or
/// `RSA PUBLIC KEY`. A private key or a certificate is refused with what to give instead.
pub(crate) fn read_public_key(flag: &str, path: &Path) -> anyhow::Result<PublicKey> {
    let bytes = read_key_file(flag, path)?;
    let blocks = pem_blocks(flag, path, &bytes)?;
    let at = |error: anyhow::Error| anyhow!("{flag} {}: {error:#}", path.display());
    for block in &blocks {
        match block.tag() {
            "PUBLIC KEY" => return public_key_from_spki(block.contents()).map_err(at),
            "RSA PUBLIC KEY" => {
                return rsa::PublicKey::from_pkcs1_der(block.contents())
                    .map(PublicKey::Rsa)
                    .map_err(|e| at(anyhow!("not a valid RSA public key ({e})")))
            }
            tag if tag.ends_with("PRIVATE KEY") => {
                return Err(at(anyhow!(
                    "this is a private key; give the public key (openssl pkey -in FILE -pubout) \
                     and keep the private key with whoever signs tokens"
                )))
            }
            "CERTIFICATE" => {
                return Err(at(anyhow!(
                "this is a certificate; give its public key (openssl x509 -in FILE -pubkey -noout)"
            )))
            }
            _ => {}
        }
    }
    Err(at(anyhow!("no PUBLIC KEY block (found {})", tags(&blocks))))
}

fn tags(blocks: &[pem::Pem]) -> String {
    blocks
        .iter()
        .map(|b| b.tag().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A DER SubjectPublicKeyInfo: RSA, or EC on P-256.
pub(crate) fn public_key_from_spki(der: &[u8]) -> anyhow::Result<PublicKey> {
    let info = SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|e| anyhow!("not a valid public key ({e})"))?;
    let (algorithm, parameters) = info
        .algorithm
        .oids()
        .map_err(|e| anyhow!("not a valid public key ({e})"))?;
    if algorithm == RSA_ENCRYPTION {
        return rsa::PublicKey::try_from(info)
            .map(PublicKey::Rsa)
            .map_err(|e| anyhow!("not a valid RSA public key ({e})"));
    }
    if algorithm == EC_PUBLIC_KEY {
        if parameters != Some(PRIME256V1) {
            return Err(wrong_curve(parameters));
        }
        return p256::PublicKey::from_public_key_der(der)
            .map(PublicKey::P256)
            .map_err(|e| anyhow!("not a valid P-256 public key ({e})"));
    }
    bail!("it is a key of algorithm {algorithm}; RS256 needs RSA and ES256 a P-256 EC key")
}

/// The private key in `path`, given as `flag`: PKCS#8 (`PRIVATE KEY`, RSA or P-256), SEC1
/// (`EC PRIVATE KEY`, after an optional `EC PARAMETERS` block) or PKCS#1 (`RSA PRIVATE KEY`).
pub(crate) fn read_private_key(flag: &str, path: &Path) -> anyhow::Result<PrivateKey> {
    let bytes = read_key_file(flag, path)?;
    let blocks = pem_blocks(flag, path, &bytes)?;
    let at = |error: anyhow::Error| anyhow!("{flag} {}: {error:#}", path.display());
    for block in &blocks {
        let der = block.contents();
        match block.tag() {
            "PRIVATE KEY" => return private_key_from_pkcs8(der).map_err(at),
            "EC PRIVATE KEY" => return p256_from_sec1(der).map_err(at),
            "RSA PRIVATE KEY" => {
                return rsa::PrivateKey::from_pkcs1_der(der)
                    .map(PrivateKey::Rsa)
                    .map_err(|e| at(anyhow!("not a valid RSA private key ({e})")))
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(at(anyhow!(
                    "the key is encrypted; give it unencrypted (openssl pkey -in FILE -out PLAIN), \
                     readable only by whoever signs tokens"
                )))
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                return Err(at(anyhow!(
                    "this is a public key; signing needs the private key"
                )))
            }
            // `openssl ecparam -genkey` writes the curve's parameters before the key.
            _ => {}
        }
    }
    Err(at(anyhow!(
        "no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block (found {})",
        tags(&blocks)
    )))
}

fn private_key_from_pkcs8(der: &[u8]) -> anyhow::Result<PrivateKey> {
    let info =
        PrivateKeyInfoRef::try_from(der).map_err(|e| anyhow!("not a valid private key ({e})"))?;
    let (algorithm, parameters) = info
        .algorithm
        .oids()
        .map_err(|e| anyhow!("not a valid private key ({e})"))?;
    if algorithm == RSA_ENCRYPTION {
        return rsa::PrivateKey::try_from(info)
            .map(PrivateKey::Rsa)
            .map_err(|e| anyhow!("not a valid RSA private key ({e})"));
    }
    if algorithm == EC_PUBLIC_KEY {
        if parameters != Some(PRIME256V1) {
            return Err(wrong_curve(parameters));
        }
        return p256::SecretKey::from_pkcs8_der(der)
            .map(PrivateKey::P256)
            .map_err(|e| anyhow!("not a valid P-256 private key ({e})"));
    }
    bail!("it is a key of algorithm {algorithm}; RS256 needs RSA and ES256 a P-256 EC key")
}

fn p256_from_sec1(der: &[u8]) -> anyhow::Result<PrivateKey> {
    let key = sec1::EcPrivateKey::try_from(der)
        .map_err(|e| anyhow!("not a valid EC private key ({e})"))?;
    // The curve is optional in SEC1 (RFC 5915); when it is named, it must be P-256.
    if let Some(curve) = key.parameters.and_then(|p| p.named_curve()) {
        if curve != PRIME256V1 {
            return Err(wrong_curve(Some(curve)));
        }
    }
    p256::SecretKey::from_sec1_der(der)
        .map(PrivateKey::P256)
        .map_err(|e| anyhow!("not a valid P-256 private key ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn key_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keys")
            .join(name)
    }

    const PUBLIC: &str = "--jwt-public-key-file";
    const PRIVATE: &str = "--jwt-private-key-file";

    #[test]
    fn private_keys_read_in_each_usual_encoding_match_their_public_keys() {
        for (public, privates) in [
            (
                "es256-public.pem",
                ["es256-private.pem", "es256-private-sec1.pem"],
            ),
            (
                "rs256-public.pem",
                ["rs256-private.pem", "rs256-private-pkcs1.pem"],
            ),
        ] {
            let public = read_public_key(PUBLIC, &key_file(public)).unwrap();
            assert!(public.weakness().is_none());
            for private in privates {
                let key = read_private_key(PRIVATE, &key_file(private)).unwrap();
                assert!(key.public_key() == public, "{private}");
                assert_eq!(key.encoding_key().unwrap().1, public.algorithm());
            }
        }
        let other = read_private_key(PRIVATE, &key_file("other-es256-private-sec1.pem")).unwrap();
        let es256 = read_public_key(PUBLIC, &key_file("es256-public.pem")).unwrap();
        assert!(other.public_key() != es256);
    }

    #[test]
    fn an_ec_key_on_another_curve_is_refused_naming_the_curve() {
        let path = key_file("es384-public.pem");
        let refused = read_public_key(PUBLIC, &path).err().unwrap().to_string();
        assert!(refused.contains("P-384"), "{refused}");
        assert!(refused.contains("ES256 needs a P-256 key"), "{refused}");
        assert!(refused.contains(PUBLIC), "{refused}");
        assert!(refused.contains(&path.display().to_string()), "{refused}");
    }

    #[test]
    fn a_private_key_given_as_the_public_key_is_refused() {
        for name in [
            "es256-private.pem",
            "es256-private-sec1.pem",
            "rs256-private-pkcs1.pem",
        ] {
            let refused = read_public_key(PUBLIC, &key_file(name))
                .err()
                .unwrap()
                .to_string();
            assert!(
                refused.contains("this is a private key; give the public key"),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_short_rsa_key_is_read_with_a_warning() {
        let key = read_public_key(PUBLIC, &key_file("rs1024-public.pem")).unwrap();
        let warning = key.weakness().unwrap();
        assert!(warning.contains("1024 bits"), "{warning}");
    }

    #[test]
    fn what_is_not_a_key_is_refused_naming_the_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "hello").unwrap();
        let refused = read_public_key(PUBLIC, &path).err().unwrap().to_string();
        assert!(
            refused.starts_with(&format!("{PUBLIC} {}", path.display())),
            "{refused}"
        );
        assert!(refused.contains("not a PEM file"), "{refused}");
        let refused = read_private_key(PRIVATE, &key_file("es256-public.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("this is a public key"), "{refused}");
        let missing = read_public_key(PUBLIC, &dir.path().join("nope.pem"))
            .err()
            .unwrap();
        assert!(format!("{missing:#}").contains("cannot read it"));
    }
}
