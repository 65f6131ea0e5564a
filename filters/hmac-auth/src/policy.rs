//! The `hmac-auth` policy. Request headers, in order: parse `Authorization` (or `Proxy-Authorization`),
//! check the algorithm is enabled, that every required name is signed, that the `x-date`/`date` header is
//! signed and within `clock_skew`, that the nonce is present and signed, then verify the HMAC in constant
//! time. Only then is the nonce recorded (so unauthenticated traffic cannot fill the nonce table); a nonce
//! seen before within its window is a replay (401). With `validate_request_body`, the body is buffered (at
//! most `max_body_bytes`) and its digest compared at the end.

use crate::config::{HmacAuthConfig, Signer};
use crate::signature::{
    ct_eq, parse_authorization, parse_digest, parse_http_date, signing_string, Algorithm,
    DigestAlgorithm, ParseError,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use portcullis_common::http::sanitize_header_value;
use portcullis_common::metrics::Metric;
use portcullis_common::props::decode_string;
use portcullis_common::store::{BoundedKeys, StoreError};
use portcullis_common::{ConfigError, Decision, Exchange, LocalResponse, Policy};

/// Shared-data namespace of the nonce table (`portcullis/hmac-auth/nonce/<slot>`).
pub const NONCE_NAMESPACE: &str = "hmac-auth/nonce";
/// Nonce length bounds.
pub const MIN_NONCE_LEN: usize = 8;
pub const MAX_NONCE_LEN: usize = 128;

/// Why a request was refused; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    Algorithm,
    UnsignedHeader,
    MissingHeader,
    Date,
    ClockSkew,
    Nonce,
    Replay,
    NonceStore,
    Signature,
    Digest,
    BodyTooLarge,
}

const REASONS: [Reason; 13] = [
    Reason::Missing,
    Reason::Malformed,
    Reason::Algorithm,
    Reason::UnsignedHeader,
    Reason::MissingHeader,
    Reason::Date,
    Reason::ClockSkew,
    Reason::Nonce,
    Reason::Replay,
    Reason::NonceStore,
    Reason::Signature,
    Reason::Digest,
    Reason::BodyTooLarge,
];

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Algorithm => "algorithm",
            Reason::UnsignedHeader => "unsigned_header",
            Reason::MissingHeader => "missing_header",
            Reason::Date => "date",
            Reason::ClockSkew => "clock_skew",
            Reason::Nonce => "nonce",
            Reason::Replay => "replay",
            Reason::NonceStore => "nonce_store",
            Reason::Signature => "signature",
            Reason::Digest => "digest",
            Reason::BodyTooLarge => "body_too_large",
        }
    }
}

pub struct HmacAuthPolicy {
    config: HmacAuthConfig,
    signers: Vec<Signer>,
    required: Vec<String>,
    challenge: String,
    nonces: BoundedKeys,
    denied: Vec<Metric>,
    allowed: Metric,
}

/// The body digest still to verify once the whole body has arrived.
#[derive(Debug, Default)]
pub struct HmacState {
    pending_digest: Option<(DigestAlgorithm, Vec<u8>)>,
}

impl Policy for HmacAuthPolicy {
    const NAME: &'static str = "hmac-auth";
    type State = HmacState;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let (config, signers) = HmacAuthConfig::parse(config)?;
        Ok(HmacAuthPolicy::new(config, signers))
    }

    fn on_request_headers(&self, state: &mut HmacState, ex: &mut Exchange) -> Decision {
        // A client must never be able to name its own consumer.
        ex.set_request_header(self.config.consumer_header.as_str(), None);
        match self.authenticate(state, ex) {
            Ok(username) => {
                if self.config.hide_credentials {
                    ex.set_request_header("authorization", None);
                    ex.set_request_header("proxy-authorization", None);
                }
                let value = sanitize_header_value(&username, 256);
                ex.set_request_header(self.config.consumer_header.as_str(), Some(&value));
                if state.pending_digest.is_none() {
                    self.allowed.inc();
                }
                Decision::Continue
            }
            Err((reason, message)) => self.deny(reason, message),
        }
    }

    fn wants_request_body(&self) -> bool {
        self.config.validate_request_body
    }

    fn on_request_body(
        &self,
        state: &mut HmacState,
        ex: &mut Exchange,
        body_size: usize,
        end_of_stream: bool,
    ) -> Decision {
        let Some((algorithm, expected)) = state.pending_digest.as_ref() else {
            return Decision::Continue;
        };
        if u64::try_from(body_size).unwrap_or(u64::MAX) > self.config.max_body_bytes.0 {
            state.pending_digest = None;
            return self.deny(Reason::BodyTooLarge, "request body too large to verify");
        }
        if !end_of_stream {
            return Decision::Pause; // buffer (bounded by max_body_bytes) until the digest can be checked
        }
        let body = ex.host().request_body(0, body_size).unwrap_or_default();
        let ok = ct_eq(&algorithm.digest(&body), expected);
        state.pending_digest = None;
        if ok {
            self.allowed.inc();
            Decision::Continue
        } else {
            self.deny(
                Reason::Digest,
                "HMAC signature cannot be verified: body digest mismatch",
            )
        }
    }
}

type Denial = (Reason, &'static str);

impl HmacAuthPolicy {
    pub fn new(config: HmacAuthConfig, signers: Vec<Signer>) -> Self {
        let required = config.required_headers();
        let mut advertised = required.clone();
        if !advertised.iter().any(|n| n == "date" || n == "x-date") {
            advertised.insert(0, "date".to_string());
        }
        let challenge = format!(
            "hmac realm=\"{}\", headers=\"{}\"",
            config.realm,
            advertised.join(" ")
        );
        let nonces = BoundedKeys::new(NONCE_NAMESPACE, config.max_nonces);
        let denied = REASONS
            .iter()
            .map(|r| Metric::counter(&format!("portcullis_hmac_auth_denied_{}_total", r.name())))
            .collect();
        HmacAuthPolicy {
            config,
            signers,
            required,
            challenge,
            nonces,
            denied,
            allowed: Metric::counter("portcullis_hmac_auth_allowed_total"),
        }
    }

    fn deny(&self, reason: Reason, message: &str) -> Decision {
        if let Some(m) = self.denied.get(reason as usize) {
            m.inc();
        }
        log::info!("denied: {}", reason.name());
        let response = match reason {
            Reason::NonceStore => {
                LocalResponse::json_error(503, message).with_header("retry-after", "1")
            }
            Reason::BodyTooLarge => LocalResponse::json_error(413, message),
            _ => LocalResponse::json_error(401, message)
                .with_header("www-authenticate", self.challenge.clone()),
        };
        Decision::Respond(response)
    }

    /// Verifies the request; returns the authenticated username.
    fn authenticate(&self, state: &mut HmacState, ex: &mut Exchange) -> Result<String, Denial> {
        let cfg = &self.config;
        let header = ex
            .request_header("authorization")
            .map(str::to_owned)
            .or_else(|| ex.request_header("proxy-authorization").map(str::to_owned))
            .ok_or((Reason::Missing, "Unauthorized"))?;
        let creds = parse_authorization(&header).map_err(|e| match e {
            ParseError::NotHmac => (Reason::Missing, "Unauthorized"),
            ParseError::Malformed => (
                Reason::Malformed,
                "HMAC signature cannot be verified: malformed authorization header",
            ),
        })?;
        let algorithm = Algorithm::from_name(&creds.algorithm)
            .filter(|a| cfg.algorithms.contains(a))
            .ok_or((
                Reason::Algorithm,
                "HMAC signature cannot be verified: algorithm not allowed",
            ))?;
        if !self.required.iter().all(|r| creds.headers.contains(r)) {
            return Err((
                Reason::UnsignedHeader,
                "HMAC signature cannot be verified: a required header is not signed",
            ));
        }

        // The date: x-date wins over date (browsers cannot set Date); it must be signed and recent.
        let (date_name, date) = match ex.request_header("x-date").map(str::to_owned) {
            Some(d) => ("x-date", d),
            None => (
                "date",
                ex.request_header("date").map(str::to_owned).ok_or((
                    Reason::Date,
                    "HMAC signature cannot be verified: a valid date or x-date header is required",
                ))?,
            ),
        };
        if !creds.headers.iter().any(|h| h == date_name) {
            return Err((
                Reason::UnsignedHeader,
                "HMAC signature cannot be verified: the date header must be signed",
            ));
        }
        let date_secs = parse_http_date(&date).ok_or((
            Reason::Date,
            "HMAC signature cannot be verified: a valid date or x-date header is required",
        ))?;
        let now_secs = ex.now().as_secs();
        let skew = cfg.clock_skew.as_duration().as_secs();
        if date_secs.abs_diff(now_secs) > skew {
            return Err((
                Reason::ClockSkew,
                "HMAC signature cannot be verified: clock skew exceeded",
            ));
        }

        let nonce = if cfg.replay_protection {
            let nonce = ex
                .request_header(cfg.nonce_header.as_str())
                .map(str::to_owned)
                .unwrap_or_default();
            let valid = (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
                && nonce.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err((
                    Reason::Nonce,
                    "HMAC signature cannot be verified: a signed nonce of 8 to 128 visible characters is required",
                ));
            }
            Some(nonce)
        } else {
            None
        };

        // The signature itself.
        let signer = self.signers.iter().find(|s| s.username == creds.username);
        let method = ex.method().unwrap_or("").to_owned();
        let path = ex.path_and_query().unwrap_or("").to_owned();
        let protocol = if creds.headers.iter().any(|h| h == "request-line") {
            request_protocol(ex)
        } else {
            String::new()
        };
        let string = signing_string(&creds.headers, &method, &path, &protocol, |name| {
            let name = if name == "host" { ":authority" } else { name };
            ex.request_header(name).map(str::to_owned)
        })
        .map_err(|_| {
            (
                Reason::MissingHeader,
                "HMAC signature cannot be verified: a signed header is missing",
            )
        })?;
        let signature = STANDARD.decode(creds.signature.trim()).unwrap_or_default();
        // Unknown users are checked against a dummy key so their timing matches a bad signature.
        let (key, known) = match signer {
            Some(s) => (s.secret.as_slice(), true),
            None => (&b"portcullis-unknown-user"[..], false),
        };
        let valid = algorithm.verify(key, string.as_bytes(), &signature);
        if !(valid && known) {
            return Err((Reason::Signature, "HMAC signature cannot be verified"));
        }

        // The body digest: the header is signed (required above); the body is checked when it arrives.
        if cfg.validate_request_body {
            let digest = ex.request_header("digest").and_then(parse_digest).ok_or((
                Reason::Digest,
                "HMAC signature cannot be verified: invalid digest header",
            ))?;
            if !expects_body(ex) {
                // No body callback will come; an unexpected body (HTTP/2 without length) is still checked.
                if !ct_eq(&digest.0.digest(b""), &digest.1) {
                    return Err((
                        Reason::Digest,
                        "HMAC signature cannot be verified: body digest mismatch",
                    ));
                }
            }
            state.pending_digest = Some(digest);
        }

        if let Some(nonce) = nonce {
            self.remember_nonce(ex, &creds.username, &nonce, date_secs, skew)?;
        }
        Ok(creds.username)
    }

    /// Records a nonce until its date can no longer pass the skew check; a live record means replay.
    fn remember_nonce(
        &self,
        ex: &mut Exchange,
        username: &str,
        nonce: &str,
        date_secs: u64,
        skew: u64,
    ) -> Result<(), Denial> {
        let now_us = ex.now_us();
        // date + skew is the last second a request with this date is accepted; keep one more.
        let expires_us = date_secs
            .saturating_add(skew)
            .saturating_add(1)
            .saturating_mul(1_000_000);
        let key = format!("{username}\n{nonce}");
        let fresh =
            self.nonces.update(
                ex.host().shared_data(),
                &key,
                now_us,
                |current| match current {
                    Some(_) => (None, false),
                    None => (Some((Vec::new(), expires_us)), true),
                },
            );
        match fresh {
            Ok(true) => Ok(()),
            Ok(false) => Err((
                Reason::Replay,
                "HMAC signature cannot be verified: nonce already used",
            )),
            Err(
                e @ (StoreError::Full
                | StoreError::Contended
                | StoreError::Host
                | StoreError::CasMismatch),
            ) => {
                log::warn!("nonce store unavailable ({e}): refusing the request");
                Err((
                    Reason::NonceStore,
                    "replay protection unavailable, retry later",
                ))
            }
        }
    }
}

/// Whether a body follows the headers: `content-length` decides when present, then a
/// `transfer-encoding` header (Kong keeps it), then the host's end-of-stream flag (Envoy strips
/// `transfer-encoding`; HTTP/2 needs neither header). Without any of them, HTTP/1.1 has no body.
fn expects_body(ex: &mut Exchange) -> bool {
    if let Some(len) = ex.request_header("content-length") {
        return len.trim() != "0";
    }
    if ex.request_header("transfer-encoding").is_some() {
        return true;
    }
    ex.request_has_body().unwrap_or(false)
}

/// `HTTP/1.1`, `HTTP/2.0` — as Kong's `request-line` item spells the version.
fn request_protocol(ex: &mut Exchange) -> String {
    let p = ex
        .host()
        .property(&["request", "protocol"])
        .and_then(|b| decode_string(&b))
        .unwrap_or_else(|| "HTTP/1.1".to_string());
    match p.as_str() {
        "HTTP/2" => "HTTP/2.0".to_string(),
        "HTTP/3" => "HTTP/3.0".to_string(),
        _ => p,
    }
}

#[cfg(test)]
mod tests;
