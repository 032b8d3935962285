//! Signing keys and token minting for tests: real RSA, EC and Ed25519 keys made with
//! OpenSSL, published as a JWKS, and compact JWS tokens built by hand where a test needs a
//! token no honest library would produce.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One signing key: its private half for minting, its public JWK for the JWKS.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key PEM (for the HMAC-with-public-key confusion attack).
    pub public_pem: Vec<u8>,
}

impl TestKey {
    pub fn rsa(kid: &str, alg: Algorithm) -> TestKey {
        let rsa = Rsa::generate(2048).unwrap();
        let jwk = json!({
            "kty": "RSA", "kid": kid, "use": "sig",
            "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
        });
        let public_pem = rsa.public_key_to_pem().unwrap();
        let encoding = EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().unwrap()).unwrap();
        TestKey {
            kid: kid.into(),
            alg,
            encoding,
            jwk,
            public_pem,
        }
    }

    pub fn ec(kid: &str, alg: Algorithm) -> TestKey {
        let (nid, crv, size) = match alg {
            Algorithm::ES384 => (Nid::SECP384R1, "P-384", 48),
            _ => (Nid::X9_62_PRIME256V1, "P-256", 32),
        };
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().unwrap(),
            openssl::bn::BigNum::new().unwrap(),
        );
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let jwk = json!({
            "kty": "EC", "kid": kid, "use": "sig", "crv": crv,
            "x": b64(&x.to_vec_padded(size).unwrap()), "y": b64(&y.to_vec_padded(size).unwrap()),
        });
        let pkey = PKey::from_ec_key(key.clone()).unwrap();
        let encoding = EncodingKey::from_ec_pem(&pkey.private_key_to_pem_pkcs8().unwrap()).unwrap();
        TestKey {
            kid: kid.into(),
            alg,
            encoding,
            jwk,
            public_pem: key.public_key_to_pem().unwrap(),
        }
    }

    pub fn ed25519(kid: &str) -> TestKey {
        let pkey = PKey::generate_ed25519().unwrap();
        let jwk = json!({
            "kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519",
            "x": b64(&pkey.raw_public_key().unwrap()),
        });
        let encoding = EncodingKey::from_ed_pem(&pkey.private_key_to_pem_pkcs8().unwrap()).unwrap();
        TestKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding,
            jwk,
            public_pem: pkey.public_key_to_pem().unwrap(),
        }
    }

    /// A token with this key's `kid` and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A token with a hand-written header, signed by this key with `alg`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let alg = header["alg"]
            .as_str()
            .and_then(|a| a.parse::<Algorithm>().ok())
            .unwrap_or(self.alg);
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, alg).unwrap();
        format!("{input}.{sig}")
    }
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// Header and payload as given, with any signature text.
pub fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}
