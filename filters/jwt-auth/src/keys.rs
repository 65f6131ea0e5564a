//! Verification keys: algorithms, key sets from a secret or a JWKS document, and signature checks.
//!
//! Each key is bound to exactly one algorithm when it is loaded (a JWK's `kty`/`crv`/`alg` must agree with an
//! algorithm the provider allows), so a token can never pick how a key is used: an HS256 token is only ever
//! checked against secrets, never against an RSA or EC public key (key confusion).

use jwt_simple::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most keys kept from one JWKS (bounds memory and the per-token work when the token has no `kid`).
pub const MAX_KEYS: usize = 64;
/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// A JWS signature algorithm Portcullis accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm named by a token's `alg` (exact, case-sensitive as RFC 7515 requires).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// RFC 7518 §3.2: an HMAC key at least as long as the hash output.
    pub fn min_secret_bytes(self) -> usize {
        match self {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        }
    }

    fn kty(self) -> &'static str {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "oct",
            Algorithm::ES256 | Algorithm::ES384 => "EC",
            Algorithm::EdDSA => "OKP",
            _ => "RSA",
        }
    }
}

/// Key material bound to one algorithm.
pub enum Material {
    HS256(HS256Key),
    HS384(HS384Key),
    HS512(HS512Key),
    RS256(RS256PublicKey),
    RS384(RS384PublicKey),
    RS512(RS512PublicKey),
    PS256(PS256PublicKey),
    PS384(PS384PublicKey),
    PS512(PS512PublicKey),
    ES256(ES256PublicKey),
    ES384(ES384PublicKey),
    EdDSA(Ed25519PublicKey),
}

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    material: Material,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print key material
        write!(f, "Key({:?}, {:?})", self.alg.name(), self.kid)
    }
}

/// The keys of one provider.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Why a signature check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature does not match (or the token is not a valid JWS for this key).
    BadSignature,
    /// The signature matched but the claims could not be read.
    Malformed,
}

impl KeySet {
    pub fn from_secret(secret: &[u8], algorithms: &[Algorithm]) -> KeySet {
        let keys = algorithms
            .iter()
            .filter_map(|alg| {
                let material = match alg {
                    Algorithm::HS256 => Material::HS256(HS256Key::from_bytes(secret)),
                    Algorithm::HS384 => Material::HS384(HS384Key::from_bytes(secret)),
                    Algorithm::HS512 => Material::HS512(HS512Key::from_bytes(secret)),
                    _ => return None,
                };
                Some(Key {
                    kid: None,
                    alg: *alg,
                    material,
                })
            })
            .collect();
        KeySet { keys }
    }

    /// Parses a JWKS, keeping keys usable with one of `algorithms`. `strict`: a key that cannot be loaded is
    /// an error (inline config); otherwise it is skipped (remote documents may hold keys for other uses).
    /// At least one usable key is required.
    pub fn parse_jwks(
        bytes: &[u8],
        algorithms: &[Algorithm],
        strict: bool,
    ) -> Result<KeySet, String> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("must be a JSON object with a \"keys\" array")?;
        let mut keys = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            match load_jwk(jwk, algorithms) {
                Ok(mut loaded) => keys.append(&mut loaded),
                Err(e) if strict => return Err(format!("keys[{i}]: {e}")),
                Err(e) => log::debug!("JWKS key {i} skipped: {e}"),
            }
            if keys.len() >= MAX_KEYS {
                keys.truncate(MAX_KEYS);
                break;
            }
        }
        if keys.is_empty() {
            let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
            return Err(format!("holds no key usable with {}", names.join(", ")));
        }
        Ok(KeySet { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may verify a token with `alg` and `kid`: same algorithm, and the same `kid` when the
    /// token names one (a key without `kid` matches any).
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> {
        self.keys.iter().filter(move |k| {
            k.alg == alg
                && match (kid, k.kid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    /// Whether a key with this `kid` exists at all (for the unknown-`kid` re-fetch decision).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Loads one JWK as a key per compatible allowed algorithm.
fn load_jwk(jwk: &serde_json::Value, algorithms: &[Algorithm]) -> Result<Vec<Key>, String> {
    let obj = jwk.as_object().ok_or("a key must be a JSON object")?;
    let kty = obj
        .get("kty")
        .and_then(|v| v.as_str())
        .ok_or("missing \"kty\"")?;
    let kid = match obj.get("kid") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("\"kid\" must be a string".into()),
    };
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err("\"use\" is not \"sig\"".into());
        }
    }
    let jwk_alg = match obj.get("alg") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(Algorithm::from_name)
                .ok_or_else(|| format!("unsupported \"alg\" {v}"))?,
        ),
    };
    let crv = obj.get("crv").and_then(|v| v.as_str());
    let text = jwk.to_string();
    let mut out = Vec::new();
    for alg in algorithms.iter().copied() {
        if alg.kty() != kty || jwk_alg.is_some_and(|a| a != alg) {
            continue;
        }
        let material = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let k = obj
                    .get("k")
                    .and_then(|v| v.as_str())
                    .and_then(|k| {
                        use base64::Engine;
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(k)
                            .ok()
                    })
                    .ok_or("an \"oct\" key needs a base64url \"k\"")?;
                if k.len() < alg.min_secret_bytes() {
                    return Err(format!(
                        "{} needs a key of at least {} bytes",
                        alg.name(),
                        alg.min_secret_bytes()
                    ));
                }
                match alg {
                    Algorithm::HS256 => Material::HS256(HS256Key::from_bytes(&k)),
                    Algorithm::HS384 => Material::HS384(HS384Key::from_bytes(&k)),
                    _ => Material::HS512(HS512Key::from_bytes(&k)),
                }
            }
            Algorithm::RS256 => Material::RS256(RS256PublicKey::from_jwk(&text).map_err(err)?),
            Algorithm::RS384 => Material::RS384(RS384PublicKey::from_jwk(&text).map_err(err)?),
            Algorithm::RS512 => Material::RS512(RS512PublicKey::from_jwk(&text).map_err(err)?),
            Algorithm::PS256 => Material::PS256(PS256PublicKey::from_jwk(&text).map_err(err)?),
            Algorithm::PS384 => Material::PS384(PS384PublicKey::from_jwk(&text).map_err(err)?),
            Algorithm::PS512 => Material::PS512(PS512PublicKey::from_jwk(&text).map_err(err)?),
            Algorithm::ES256 if crv == Some("P-256") => {
                Material::ES256(ES256PublicKey::from_jwk(&text).map_err(err)?)
            }
            Algorithm::ES384 if crv == Some("P-384") => {
                Material::ES384(ES384PublicKey::from_jwk(&text).map_err(err)?)
            }
            Algorithm::EdDSA if crv == Some("Ed25519") => {
                Material::EdDSA(Ed25519PublicKey::from_jwk(&text).map_err(err)?)
            }
            _ => continue,
        };
        out.push(Key {
            kid: kid.clone(),
            alg,
            material,
        });
    }
    if out.is_empty() {
        return Err(format!(
            "a {kty:?} key is not usable with the provider's algorithms"
        ));
    }
    Ok(out)
}

fn err(e: jwt_simple::Error) -> String {
    format!("invalid key: {e}")
}

/// Options that make jwt-simple check only the signature and the token's shape: claims (time, issuer,
/// audience) are checked by the policy, with its own reasons and clock.
fn signature_only(max_len: usize) -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        time_tolerance: Some(UnixTimeStamp::from_secs(0)),
        max_token_length: Some(max_len),
        ..VerificationOptions::default()
    }
}

impl Key {
    /// Checks the token's signature with this key.
    pub fn verify(&self, token: &str) -> Result<(), VerifyError> {
        let o = Some(signature_only(token.len()));
        let r = match &self.material {
            Material::HS256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::HS384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::HS512(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::RS256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::RS384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::RS512(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::PS256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::PS384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::PS512(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::ES256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::ES384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Material::EdDSA(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
        };
        // Claims are parsed only after the signature verified: a JSON error means a signed but unreadable
        // payload; every other failure (tag mismatch, bad signature encoding, wrong length) is a bad signature.
        r.map_err(|e| {
            if e.downcast_ref::<serde_json::Error>().is_some() {
                VerifyError::Malformed
            } else {
                VerifyError::BadSignature
            }
        })
    }
}
