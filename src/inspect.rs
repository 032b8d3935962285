//! `gatehouse token inspect`: validates one token against the configured issuers and says
//! exactly why it is accepted or refused.

use std::sync::Arc;

use serde_json::Value;

use crate::authn::bearer::{parse, BearerAuth};
use crate::authn::AuthFailure;
use crate::config::Config;
use crate::metrics::Metrics;

/// What each refusal reason means, for a person reading the output.
pub fn explain(reason: &str) -> &'static str {
    match reason {
        "malformed_token" => "the token is not a well-formed compact JWS (three base64url parts of JSON)",
        "token_too_large" => "the token is larger than 16 KiB",
        "unknown_issuer" => "its `iss` claim names no configured [[bearer]] issuer (compared exactly, trailing slash included)",
        "alg_not_allowed" => "its `alg` header is not in the issuer's `algorithms` allowlist (`none` and HMAC never are)",
        "unknown_crit" => "its `crit` header lists extensions gatehouse does not understand",
        "wrong_type" => "its `typ` header is not the issuer's required `token_type`",
        "unknown_kid" => "its `kid` is not in the issuer's JWKS, even after a refetch",
        "key_mismatch" => "the key named by `kid` is of another type than `alg` needs, or pins another algorithm",
        "bad_signature" => "the signature does not verify with the issuer's key",
        "expired" => "`exp` is in the past (beyond the leeway)",
        "not_yet_valid" => "`nbf` is in the future (beyond the leeway)",
        "issued_in_future" => "`iat` is in the future (beyond the leeway)",
        "invalid_claims" => "`exp` is missing, or a time claim is not a number",
        "wrong_audience" => "`aud` names none of the issuer's configured audiences",
        "missing_subject" => "the subject claim is missing or empty",
        "jwks_unavailable" => "the issuer's keys could not be fetched",
        "introspection_inactive" => "the introspection endpoint says the token is not active",
        "introspection_error" => "the introspection endpoint could not be asked",
        _ => "refused",
    }
}

fn decode_part(part: Option<&str>) -> Option<Value> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part?)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Prints the analysis; Ok(true) when the token is accepted.
pub fn inspect(config: &Config, token: &str) -> Result<bool, String> {
    let token = token.trim();
    let mut parts = token.split('.');
    let header = decode_part(parts.next());
    let claims = decode_part(parts.next());
    let pretty = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| serde_json::to_string_pretty(v).ok())
            .unwrap_or_else(|| "(not decodable)".into())
    };
    println!("header (unverified):\n{}", pretty(&header));
    println!("claims (unverified):\n{}", pretty(&claims));
    if config.bearer.is_empty() {
        return Err("the config has no [[bearer]] issuer to validate against".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let verdict = runtime.block_on(async {
        let auth = BearerAuth::new(config.bearer.clone(), Arc::new(Metrics::new())).await;
        if token.len() > crate::authn::MAX_CREDENTIAL_LEN {
            return Err(AuthFailure::Invalid("token_too_large"));
        }
        if let Ok(parsed) = parse(token) {
            if let Ok(checked) = auth.check_header(&parsed) {
                let store = &auth.issuers[checked.issuer];
                println!(
                    "issuer: {} (JWKS: {} keys)",
                    store.config.issuer,
                    store.keys().len()
                );
            }
        }
        auth.authenticate(token).await
    });
    match verdict {
        Ok(identity) => {
            println!(
                "accepted: subject {:?} from {}, groups {:?}, expires at {}",
                identity.subject,
                identity.issuer.as_deref().unwrap_or("?"),
                identity.groups,
                identity
                    .expires_at
                    .map_or("?".to_string(), |t| t.to_string()),
            );
            Ok(true)
        }
        Err(f) => {
            println!("refused: {}: {}", f.reason(), explain(f.reason()));
            Ok(false)
        }
    }
}
