//! DPoP (RFC 9449): an access token bound to a key (its `cnf.jkt`, the key's RFC 7638
//! thumbprint) is accepted only with a proof, the `DPoP` header: a JWT the client signs with
//! that key for this one request (method, URL, a fresh `jti`, a recent `iat`, and `ath`, the
//! hash of the token). The replay check of `jti` is the caller's (it may be shared).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::signature::PublicKey;

/// How far a proof's `iat` may lie from now, on either side (before the configured leeway).
pub const IAT_WINDOW: u64 = 60;
/// The largest proof read.
const MAX_PROOF: usize = 8 * 1024;
/// Algorithms a proof may be signed with: asymmetric only (§4.2).
const ALGORITHMS: [(&str, Algorithm); 7] = [
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("EdDSA", Algorithm::EdDSA),
];

/// The algorithms a proof may use, as the `DPoP` challenge names them.
pub const ALGS: &str = "ES256 ES384 RS256 RS384 PS256 PS384 EdDSA";

/// The largest `leeway` a config accepts (config/lower/auth.rs refuses more).
const MAX_LEEWAY: u64 = 300;

/// How long a proof id must be remembered: as long as its `iat` could be accepted.
pub fn remember_for(leeway: u64) -> std::time::Duration {
    std::time::Duration::from_secs(2 * (IAT_WINDOW + leeway) + 1)
}

/// Proof ids seen by this process (when no shared store remembers them), each for as long
/// as any configured leeway could accept its proof.
pub struct SeenProofs {
    seen: moka::sync::Cache<String, ()>,
}

impl SeenProofs {
    /// The process's one memory of proof ids.
    pub fn here() -> &'static SeenProofs {
        static SEEN: std::sync::OnceLock<SeenProofs> = std::sync::OnceLock::new();
        SEEN.get_or_init(|| SeenProofs {
            seen: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(remember_for(MAX_LEEWAY))
                .build(),
        })
    }

    /// True the first time `key` is seen.
    pub fn remember_once(&self, key: String) -> bool {
        self.seen.entry(key).or_insert(()).is_fresh()
    }
}

/// How long a server nonce is current; it is accepted for this period and the next.
pub const NONCE_PERIOD: u64 = 60;

/// RFC 9449 §9: the nonces a route with `dpop_nonce` hands out (`DPoP-Nonce`) and takes
/// back in proofs. A nonce is its issue period and a MAC of it, so nothing is stored, and
/// every instance keyed alike accepts every other's nonces.
pub struct NonceKey {
    prk: [u8; 32],
}

impl NonceKey {
    /// Keyed by the session secret when there is one (shared by the instances that share
    /// sessions), else by a random key of this process.
    pub fn new(secret: Option<&[u8]>) -> NonceKey {
        let random: [u8; 32] = rand::random();
        let ikm = secret.unwrap_or(&random);
        let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(b"gatehouse dpop nonce"), ikm);
        NonceKey { prk: prk.into() }
    }

    fn mac(&self, period: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        // The PRK is a SHA-256 output and 16 bytes are far below HKDF's limit.
        if let Ok(h) = hkdf::Hkdf::<Sha256>::from_prk(&self.prk) {
            let _ = h.expand(&period.to_be_bytes(), &mut out);
        }
        out
    }

    /// The nonce current at `now` (Unix seconds).
    pub fn issue(&self, now: u64) -> String {
        let period = now / NONCE_PERIOD;
        let mut raw = [0u8; 24];
        raw[..8].copy_from_slice(&period.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(period));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued by this key in the current period or the one before.
    pub fn accepts(&self, nonce: &str, now: u64) -> bool {
        let mut raw = [0u8; 24];
        if nonce.len() != 32 || URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) != Ok(24) {
            return false;
        }
        let mut period = [0u8; 8];
        period.copy_from_slice(&raw[..8]);
        let period = u64::from_be_bytes(period);
        let current = now / NONCE_PERIOD;
        (period == current || period.checked_add(1) == Some(current))
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                &raw[8..],
                &self.mac(period)[..],
            ))
    }
}

/// A proof that passed every check but the replay check.
#[derive(Debug)]
pub struct Proof {
    pub jti: String,
    pub jkt: String,
}

/// The request a proof must be for.
pub struct Expected<'a> {
    pub method: &'a str,
    /// `scheme://host[:port]/path` of the request as its client reached it.
    pub url: &'a str,
    /// The access token presented with it.
    pub token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    pub now: u64,
    pub leeway: u64,
    /// The route's nonces, when its proofs must carry one.
    pub nonce: Option<&'a NonceKey>,
}

/// The token's `cnf.jkt`, when it is bound to a key.
pub fn bound_key(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("cnf")?.get("jkt")?.as_str()
}

/// Checks `proof` against the request; the error is a bounded reason (metrics, logs).
pub fn check(proof: &str, expected: &Expected<'_>) -> Result<Proof, &'static str> {
    if proof.len() > MAX_PROOF {
        return Err("malformed_proof");
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed_proof");
    };
    let json = |part: &str| -> Option<Map<String, Value>> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    let header = json(header_b64).ok_or("malformed_proof")?;
    let claims = json(claims_b64).ok_or("malformed_proof")?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err("bad_typ");
    }
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = ALGORITHMS
        .iter()
        .find(|(name, _)| *name == alg_name)
        .map(|(_, a)| *a)
        .ok_or("bad_alg")?;
    // The public key, and nothing private (§4.2).
    let jwk_value = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or("bad_jwk")?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk_value.contains_key(*m))
    {
        return Err("bad_jwk");
    }
    let jkt = thumbprint(jwk_value).ok_or("bad_jwk")?;
    if jkt != expected.jkt {
        return Err("wrong_key");
    }
    let jwk: Jwk =
        serde_json::from_value(Value::Object(jwk_value.clone())).map_err(|_| "bad_jwk")?;
    let key = PublicKey::from_jwk(&jwk).map_err(|_| "bad_jwk")?;
    let signing_input = &proof[..header_b64.len() + 1 + claims_b64.len()];
    if !key.verify(alg, signing_input.as_bytes(), signature) {
        return Err("bad_signature");
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("htm") != Some(expected.method) {
        return Err("wrong_method");
    }
    if !same_target(text("htu").unwrap_or(""), expected.url) {
        return Err("wrong_url");
    }
    let iat = claims.get("iat").and_then(Value::as_u64).ok_or("stale")?;
    let window = IAT_WINDOW + expected.leeway;
    if iat + window < expected.now || iat > expected.now + window {
        return Err("stale");
    }
    let ath = text("ath").ok_or("missing_ath")?;
    if ath != URL_SAFE_NO_PAD.encode(Sha256::digest(expected.token.as_bytes())) {
        return Err("wrong_ath");
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or("malformed_proof")?;
    if let Some(key) = expected.nonce {
        match text("nonce") {
            None => return Err("nonce_required"),
            Some(n) if !key.accepts(n, expected.now) => return Err("stale_nonce"),
            Some(_) => {}
        }
    }
    Ok(Proof {
        jti: jti.to_string(),
        jkt,
    })
}

/// The JWK thumbprint (RFC 7638): SHA-256 of the key's required members in lexical order,
/// base64url.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let canonical = match member("kty")? {
        "RSA" => serde_json::json!({"e": member("e")?, "kty": "RSA", "n": member("n")?}),
        "EC" => {
            serde_json::json!({"crv": member("crv")?, "kty": "EC", "x": member("x")?, "y": member("y")?})
        }
        "OKP" => serde_json::json!({"crv": member("crv")?, "kty": "OKP", "x": member("x")?}),
        _ => return None,
    };
    // serde_json writes an object's members in key order (no preserve_order here).
    let text = serde_json::to_string(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

/// Whether a proof's `htu` names the request's URL: scheme, host, port and path compared
/// after URL parsing (case, default port, dot segments), query and fragment ignored (§4.3).
fn same_target(htu: &str, expected: &str) -> bool {
    let parts = |u: &str| {
        url::Url::parse(u).ok().map(|u| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default(),
                u.path().to_string(),
            )
        })
    };
    match (parts(htu), parts(expected)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_nonces_last_two_periods_and_only_for_their_key() {
        let key = NonceKey::new(Some(b"a secret shared by the instances"));
        let same = NonceKey::new(Some(b"a secret shared by the instances"));
        let other = NonceKey::new(Some(b"another secret"));
        let t = 1_800_000_000;
        let n = key.issue(t);
        assert_eq!(n.len(), 32);
        assert_eq!(n, key.issue(t + 1), "one nonce per period");
        assert!(key.accepts(&n, t) && same.accepts(&n, t));
        assert!(
            key.accepts(&n, t + NONCE_PERIOD),
            "the next period still takes it"
        );
        assert!(
            !key.accepts(&n, t + 2 * NONCE_PERIOD),
            "two periods on it is stale"
        );
        assert!(
            !key.accepts(&n, t - NONCE_PERIOD),
            "not before it was issued"
        );
        assert!(!other.accepts(&n, t));
        // Random keys differ; a changed byte, a truncation or padding is refused.
        assert!(!NonceKey::new(None).accepts(&NonceKey::new(None).issue(t), t));
        let mut bytes = n.clone().into_bytes();
        bytes[31] = if bytes[31] == b'A' { b'B' } else { b'A' };
        assert!(!key.accepts(std::str::from_utf8(&bytes).unwrap(), t));
        assert!(!key.accepts(&n[..31], t) && !key.accepts(&format!("{n}="), t));
        assert!(!key.accepts("", t) && !key.accepts("ééééééééééééééé", t));
    }

    #[test]
    fn thumbprints_match_rfc_7638() {
        // RFC 7638 §3.1's example key and thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(
            thumbprint(json!({"kty": "oct", "k": "x"}).as_object().unwrap()),
            None
        );
    }

    #[test]
    fn targets_compare_as_urls() {
        let url = "https://api.example.com/orders/7";
        assert!(same_target(
            "https://API.example.com:443/orders/7?x=1#f",
            url
        ));
        assert!(same_target("https://api.example.com/orders/./7", url));
        assert!(!same_target("https://api.example.com/orders/8", url));
        assert!(!same_target("http://api.example.com/orders/7", url));
        assert!(!same_target("https://api.example.com:8443/orders/7", url));
        assert!(!same_target("https://evil.example/orders/7", url));
        assert!(!same_target("", url));
    }
}
