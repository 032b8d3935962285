//! What the session examples share: ID tokens shaped like Keycloak's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

pub fn random(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

pub fn random_b64(len: usize) -> String {
    URL_SAFE_NO_PAD.encode(random(len))
}

pub fn uuid() -> String {
    let h = hex::encode(random(16));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The 20 claims of a Keycloak ID token for user `i`, issued `now`, with a random subject,
/// session id, token id and access-token hash (about 620 bytes of JSON).
pub fn keycloak_id_claims(
    i: usize,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: u64,
) -> serde_json::Value {
    json!({
        "exp": now + 3600, "iat": now, "auth_time": now, "jti": uuid(), "iss": issuer,
        "aud": client_id, "sub": uuid(), "typ": "ID", "azp": client_id, "nonce": nonce,
        "sid": uuid(), "at_hash": random_b64(16), "acr": "1", "email_verified": true,
        "name": format!("User {i}"), "preferred_username": format!("user-{i}"),
        "given_name": "User", "family_name": format!("{i}"),
        "email": format!("user-{i}@example.com"), "groups": ["staff", "sales"],
    })
}
