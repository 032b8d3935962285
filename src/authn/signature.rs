//! JWS signatures (RFC 7518 §3) checked by OpenSSL, which Pingora links already. A JWK is
//! parsed once, when a key set is installed, into a native key; checking a token's signature
//! is then one hash and one native verify, with no allocation on the way.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::Algorithm;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};

/// What kind of public key a JWK holds; decides which algorithms may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyFamily {
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyFamily::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::P256 => alg == ES256,
            KeyFamily::P384 => alg == ES384,
            KeyFamily::Ed25519 => alg == EdDSA,
        }
    }
}

/// Why a JWK cannot be used to check signatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a signature key type gatehouse checks (RSA, EC P-256/P-384, OKP Ed25519)")]
    Unsupported,
    #[error("a key parameter is not base64url")]
    Encoding,
    #[error("RSA modulus of {0} bits (2048 to 4096 accepted)")]
    RsaSize(u32),
    #[error("RSA public exponent out of range")]
    RsaExponent,
    #[error("a coordinate is not the curve's size, or the point is not on the curve")]
    BadPoint,
    #[error("OpenSSL refused the key")]
    Native,
}

/// RFC 7518 §3.3: keys of 2048 bits or more; 4096 bounds the cost an issuer's key may put on
/// every first-seen token (and was the limit before).
const RSA_MIN_BITS: u32 = 2048;
const RSA_MAX_BITS: u32 = 4096;
/// The largest signature of an accepted key: RSA-4096.
const MAX_SIGNATURE: usize = RSA_MAX_BITS as usize / 8;

/// A public key in OpenSSL's form, ready to check signatures.
pub struct PublicKey {
    family: KeyFamily,
    native: Native,
}

enum Native {
    /// `RSA` for PKCS#1 v1.5 (no algorithm fetch per call), `PKey` for PSS.
    Rsa {
        rsa: Rsa<Public>,
        pkey: PKey<Public>,
    },
    Ec(EcKey<Public>),
    Ed25519(PKey<Public>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

fn decode(text: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| KeyError::Encoding)
}

impl PublicKey {
    /// The key a JWK describes; `use`, `alg` and `kid` are the key store's business.
    pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey, KeyError> {
        match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let n = BigNum::from_slice(&decode(&p.n)?).map_err(|_| KeyError::Native)?;
                let e = BigNum::from_slice(&decode(&p.e)?).map_err(|_| KeyError::Native)?;
                let bits = n.num_bits().max(0) as u32;
                if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                    return Err(KeyError::RsaSize(bits));
                }
                // The bounds RustCrypto enforced before: 2 <= e < 2^33.
                if e.num_bits() > 33 || e.num_bits() < 2 {
                    return Err(KeyError::RsaExponent);
                }
                let rsa = Rsa::from_public_components(n, e).map_err(|_| KeyError::Native)?;
                let pkey = PKey::from_rsa(rsa.clone()).map_err(|_| KeyError::Native)?;
                Ok(PublicKey {
                    family: KeyFamily::Rsa,
                    native: Native::Rsa { rsa, pkey },
                })
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let (family, nid, size) = match p.curve {
                    EllipticCurve::P256 => (KeyFamily::P256, Nid::X9_62_PRIME256V1, 32),
                    EllipticCurve::P384 => (KeyFamily::P384, Nid::SECP384R1, 48),
                    _ => return Err(KeyError::Unsupported),
                };
                let (x, y) = (decode(&p.x)?, decode(&p.y)?);
                // RFC 7518 §6.2.1.2: each coordinate is the full size of the curve's field.
                if x.len() != size || y.len() != size {
                    return Err(KeyError::BadPoint);
                }
                let group = EcGroup::from_curve_name(nid).map_err(|_| KeyError::Native)?;
                let bn = |b: &[u8]| BigNum::from_slice(b).map_err(|_| KeyError::Native);
                // Checks that the point is on the curve.
                let key = EcKey::from_public_key_affine_coordinates(&group, &*bn(&x)?, &*bn(&y)?)
                    .map_err(|_| KeyError::BadPoint)?;
                Ok(PublicKey {
                    family,
                    native: Native::Ec(key),
                })
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                let x = decode(&p.x)?;
                if x.len() != 32 {
                    return Err(KeyError::BadPoint);
                }
                let key = PKey::public_key_from_raw_bytes(&x, Id::ED25519)
                    .map_err(|_| KeyError::BadPoint)?;
                Ok(PublicKey {
                    family: KeyFamily::Ed25519,
                    native: Native::Ed25519(key),
                })
            }
            _ => Err(KeyError::Unsupported),
        }
    }

    pub fn family(&self) -> KeyFamily {
        self.family
    }

    /// Whether `signature` (base64url, as in a compact JWS) is this key's signature of
    /// `signing_input` under `alg`. An algorithm the key's family does not allow is `false`.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &str) -> bool {
        if !self.family.allows(alg) {
            return false;
        }
        let mut buffer = [0u8; MAX_SIGNATURE];
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(signature, &mut buffer) else {
            return false;
        };
        let signature = &buffer[..len];
        match &self.native {
            Native::Rsa { rsa, pkey } => match alg {
                Algorithm::RS256 => rsa_pkcs1(rsa, &SHA256_INFO, &sha256(signing_input), signature),
                Algorithm::RS384 => rsa_pkcs1(rsa, &SHA384_INFO, &sha384(signing_input), signature),
                Algorithm::RS512 => rsa_pkcs1(rsa, &SHA512_INFO, &sha512(signing_input), signature),
                Algorithm::PS256 => rsa_pss(pkey, Md::sha256(), &sha256(signing_input), signature),
                Algorithm::PS384 => rsa_pss(pkey, Md::sha384(), &sha384(signing_input), signature),
                Algorithm::PS512 => rsa_pss(pkey, Md::sha512(), &sha512(signing_input), signature),
                _ => false,
            },
            Native::Ec(key) => match alg {
                Algorithm::ES256 => ecdsa(key, 32, &sha256(signing_input), signature),
                Algorithm::ES384 => ecdsa(key, 48, &sha384(signing_input), signature),
                _ => false,
            },
            Native::Ed25519(key) => Verifier::new_without_digest(key)
                .and_then(|mut v| v.verify_oneshot(signature, signing_input))
                .unwrap_or(false),
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

fn sha384(data: &[u8]) -> [u8; 48] {
    openssl::sha::sha384(data)
}

fn sha512(data: &[u8]) -> [u8; 64] {
    openssl::sha::sha512(data)
}

/// The DER `DigestInfo` prefix of each hash (RFC 8017 §9.2, note 1).
const SHA256_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_INFO: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2) as OpenSSL's `RSA_verify` does it: the RSA public
/// operation with the type-1 padding checked (00 01 FF..FF 00), then the rest compared with
/// the expected `DigestInfo` whole. Called directly, it skips EVP's per-call algorithm fetch.
fn rsa_pkcs1(rsa: &Rsa<Public>, info: &[u8; 19], digest: &[u8], signature: &[u8]) -> bool {
    // Step 1: the signature is exactly as long as the modulus (no shorter spellings).
    if signature.len() != rsa.size() as usize {
        return false;
    }
    let mut decoded = [0u8; MAX_SIGNATURE];
    let Ok(len) = rsa.public_decrypt(signature, &mut decoded, Padding::PKCS1) else {
        return false;
    };
    let decoded = &decoded[..len];
    len == info.len() + digest.len()
        && decoded[..info.len()] == info[..]
        && decoded[info.len()..] == *digest
}

/// RSASSA-PSS with MGF1 over the same hash and a salt as long as the hash (RFC 7518 §3.5).
fn rsa_pss(pkey: &PKey<Public>, md: &openssl::md::MdRef, digest: &[u8], signature: &[u8]) -> bool {
    if signature.len() != pkey.size() {
        return false;
    }
    let check = || -> Result<bool, openssl::error::ErrorStack> {
        let mut ctx = PkeyCtx::new(pkey)?;
        ctx.verify_init()?;
        ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
        ctx.set_signature_md(md)?;
        ctx.set_rsa_mgf1_md(md)?;
        ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        ctx.verify(digest, signature)
    };
    check().unwrap_or(false)
}

/// ECDSA with the JWS signature form: `r || s`, each exactly the curve's size (RFC 7518 §3.4).
/// OpenSSL refuses `r` or `s` that is zero or not below the group order.
fn ecdsa(key: &EcKey<Public>, size: usize, digest: &[u8], signature: &[u8]) -> bool {
    if signature.len() != 2 * size {
        return false;
    }
    let (r, s) = signature.split_at(size);
    let check = || -> Result<bool, openssl::error::ErrorStack> {
        let sig =
            EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?;
        sig.verify(digest, key)
    };
    check().unwrap_or(false)
}

/// Signs `signing_input` with a P-256 key as ES256 (the gateway's own assertion): the JWS
/// form `r || s` of a signature over its SHA-256, base64url.
pub fn sign_es256(key: &EcKey<openssl::pkey::Private>, signing_input: &[u8]) -> Option<String> {
    let sig = EcdsaSig::sign(&sha256(signing_input), key).ok()?;
    let mut raw = [0u8; 64];
    raw[..32].copy_from_slice(&sig.r().to_vec_padded(32).ok()?);
    raw[32..].copy_from_slice(&sig.s().to_vec_padded(32).ok()?);
    Some(URL_SAFE_NO_PAD.encode(raw))
}

/// Signs `signing_input` as `alg` (RS256, PS256 with a salt as long as the digest, or
/// ES256), base64url; `None` for another algorithm or a key of another family.
pub fn sign(
    key: &PKey<openssl::pkey::Private>,
    alg: Algorithm,
    signing_input: &[u8],
) -> Option<String> {
    let signature = match alg {
        Algorithm::ES256 => return sign_es256(&key.ec_key().ok()?, signing_input),
        Algorithm::RS256 | Algorithm::PS256 => {
            key.rsa().ok()?;
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).ok()?;
            if alg == Algorithm::PS256 {
                signer.set_rsa_padding(Padding::PKCS1_PSS).ok()?;
                signer
                    .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                    .ok()?;
                signer
                    .set_rsa_mgf1_md(openssl::hash::MessageDigest::sha256())
                    .ok()?;
            }
            signer.sign_oneshot_to_vec(signing_input).ok()?
        }
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::Private;
    use openssl::sign::Signer;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    fn rsa_pair(bits: u32) -> (PKey<Private>, Jwk) {
        let rsa = Rsa::generate(bits).unwrap();
        let public = jwk(
            serde_json::json!({"kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())}),
        );
        (PKey::from_rsa(rsa).unwrap(), public)
    }

    #[test]
    fn what_sign_makes_verifies_and_a_changed_bit_does_not() {
        let (rsa, rsa_jwk) = rsa_pair(2048);
        let (ec, ec_jwk) = ec_pair(Nid::X9_62_PRIME256V1, "P-256", 32);
        let ec = PKey::from_ec_key(ec).unwrap();
        let input = b"eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJnaCJ9";
        for (key, public, alg) in [
            (&rsa, &rsa_jwk, Algorithm::RS256),
            (&rsa, &rsa_jwk, Algorithm::PS256),
            (&ec, &ec_jwk, Algorithm::ES256),
        ] {
            let public = PublicKey::from_jwk(public).unwrap();
            let signature = sign(key, alg, input).unwrap();
            assert!(public.verify(alg, input, &signature), "{alg:?}");
            let mut changed = input.to_vec();
            changed[10] ^= 1;
            assert!(!public.verify(alg, &changed, &signature), "{alg:?}");
        }
        // A key of the other family, or an algorithm it does not sign, signs nothing.
        assert!(sign(&rsa, Algorithm::ES256, input).is_none());
        assert!(sign(&ec, Algorithm::RS256, input).is_none());
        assert!(sign(&rsa, Algorithm::HS256, input).is_none());
    }

    fn ec_pair(nid: Nid, crv: &str, size: i32) -> (EcKey<Private>, Jwk) {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let public = jwk(serde_json::json!({"kty": "EC", "crv": crv,
            "x": b64(&x.to_vec_padded(size).unwrap()), "y": b64(&y.to_vec_padded(size).unwrap())}));
        (key, public)
    }

    /// A signature made by OpenSSL's own signing API, in JWS form.
    fn openssl_sign(
        key: &PKey<Private>,
        md: Option<MessageDigest>,
        pss: bool,
        input: &[u8],
    ) -> Vec<u8> {
        let mut signer = match md {
            Some(md) => Signer::new(md, key).unwrap(),
            None => Signer::new_without_digest(key).unwrap(),
        };
        if pss {
            signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            signer
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            signer.set_rsa_mgf1_md(md.unwrap()).unwrap();
        }
        signer.sign_oneshot_to_vec(input).unwrap()
    }

    fn ecdsa_jws(key: &EcKey<Private>, md: MessageDigest, size: i32, input: &[u8]) -> Vec<u8> {
        let digest = openssl::hash::hash(md, input).unwrap();
        let sig = EcdsaSig::sign(&digest, key).unwrap();
        let mut raw = sig.r().to_vec_padded(size).unwrap();
        raw.extend(sig.s().to_vec_padded(size).unwrap());
        raw
    }

    /// The signature verifies; with any one bit of it, or of the signed input, flipped it
    /// does not; nor under another algorithm of the same family.
    fn holds(
        key: &PublicKey,
        alg: Algorithm,
        other: Option<Algorithm>,
        input: &str,
        signature: &[u8],
    ) {
        assert!(
            key.verify(alg, input.as_bytes(), &b64(signature)),
            "{alg:?} valid"
        );
        for bit in [0, 7, signature.len() * 4, signature.len() * 8 - 1] {
            let mut bad = signature.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !key.verify(alg, input.as_bytes(), &b64(&bad)),
                "{alg:?} signature bit {bit}"
            );
        }
        let mut edited = input.as_bytes().to_vec();
        edited[5] ^= 0x01;
        assert!(
            !key.verify(alg, &edited, &b64(signature)),
            "{alg:?} input edited"
        );
        assert!(
            !key.verify(alg, input.as_bytes(), &b64(&signature[1..])),
            "{alg:?} shortened"
        );
        let mut longer = signature.to_vec();
        longer.insert(0, 0);
        assert!(
            !key.verify(alg, input.as_bytes(), &b64(&longer)),
            "{alg:?} lengthened"
        );
        if let Some(other) = other {
            assert!(
                !key.verify(other, input.as_bytes(), &b64(signature)),
                "{alg:?} as {other:?}"
            );
        }
        assert!(
            !key.verify(Algorithm::HS256, input.as_bytes(), &b64(signature)),
            "{alg:?} as HS256"
        );
    }

    const INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0";

    #[test]
    fn rs256_rs384_rs512_by_openssl() {
        let (private, jwk) = rsa_pair(2048);
        let key = PublicKey::from_jwk(&jwk).unwrap();
        for (alg, md, other) in [
            (Algorithm::RS256, MessageDigest::sha256(), Algorithm::RS384),
            (Algorithm::RS384, MessageDigest::sha384(), Algorithm::RS512),
            (Algorithm::RS512, MessageDigest::sha512(), Algorithm::PS512),
        ] {
            let sig = openssl_sign(&private, Some(md), false, INPUT.as_bytes());
            holds(&key, alg, Some(other), INPUT, &sig);
        }
    }

    #[test]
    fn ps256_ps384_ps512_by_openssl() {
        let (private, jwk) = rsa_pair(2048);
        let key = PublicKey::from_jwk(&jwk).unwrap();
        for (alg, md, other) in [
            (Algorithm::PS256, MessageDigest::sha256(), Algorithm::RS256),
            (Algorithm::PS384, MessageDigest::sha384(), Algorithm::PS256),
            (Algorithm::PS512, MessageDigest::sha512(), Algorithm::PS384),
        ] {
            let sig = openssl_sign(&private, Some(md), true, INPUT.as_bytes());
            holds(&key, alg, Some(other), INPUT, &sig);
        }
    }

    #[test]
    fn es256_by_openssl_and_by_the_assertion_signer() {
        let (private, jwk) = ec_pair(Nid::X9_62_PRIME256V1, "P-256", 32);
        let key = PublicKey::from_jwk(&jwk).unwrap();
        let sig = ecdsa_jws(&private, MessageDigest::sha256(), 32, INPUT.as_bytes());
        holds(&key, Algorithm::ES256, Some(Algorithm::ES384), INPUT, &sig);
        let ours = sign_es256(&private, INPUT.as_bytes()).unwrap();
        let ours = URL_SAFE_NO_PAD.decode(ours).unwrap();
        holds(&key, Algorithm::ES256, None, INPUT, &ours);
        // r = 0, s = 0 and r, s at or above the group order are refused.
        for bad in [[0u8; 64], [0xff; 64]] {
            assert!(!key.verify(Algorithm::ES256, INPUT.as_bytes(), &b64(&bad)));
        }
    }

    #[test]
    fn es384_by_openssl() {
        let (private, jwk) = ec_pair(Nid::SECP384R1, "P-384", 48);
        let key = PublicKey::from_jwk(&jwk).unwrap();
        let sig = ecdsa_jws(&private, MessageDigest::sha384(), 48, INPUT.as_bytes());
        holds(&key, Algorithm::ES384, Some(Algorithm::ES256), INPUT, &sig);
    }

    #[test]
    fn eddsa_by_openssl() {
        let private = PKey::generate_ed25519().unwrap();
        let jwk = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": b64(&private.raw_public_key().unwrap())}));
        let key = PublicKey::from_jwk(&jwk).unwrap();
        let sig = openssl_sign(&private, None, false, INPUT.as_bytes());
        holds(&key, Algorithm::EdDSA, None, INPUT, &sig);
    }

    #[test]
    fn a_signature_is_checked_only_under_its_family() {
        let (private, jwk) = rsa_pair(2048);
        let key = PublicKey::from_jwk(&jwk).unwrap();
        let sig = b64(&openssl_sign(
            &private,
            Some(MessageDigest::sha256()),
            false,
            INPUT.as_bytes(),
        ));
        for alg in [
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::HS256,
            Algorithm::HS512,
        ] {
            assert!(!key.verify(alg, INPUT.as_bytes(), &sig), "{alg:?}");
        }
        // Not base64url, padded, or longer than any key's signature.
        for bad in [
            format!("{sig}="),
            format!("{sig}!"),
            "A".repeat(1000),
            String::new(),
        ] {
            assert!(!key.verify(Algorithm::RS256, INPUT.as_bytes(), &bad));
        }
    }

    #[test]
    fn unusable_keys_are_refused_at_install() {
        let small = Rsa::generate(1024).unwrap();
        let jwk_small =
            jwk(serde_json::json!({"kty": "RSA", "n": b64(&small.n().to_vec()), "e": "AQAB"}));
        assert_eq!(
            PublicKey::from_jwk(&jwk_small).unwrap_err(),
            KeyError::RsaSize(1024)
        );
        let (_, good) = rsa_pair(2048);
        let mut v = serde_json::to_value(&good).unwrap();
        v["e"] = "AQ".into(); // e = 1
        assert_eq!(
            PublicKey::from_jwk(&jwk(v.clone())).unwrap_err(),
            KeyError::RsaExponent
        );
        v["e"] = b64(&[1, 0, 0, 0, 0, 1]).into(); // 2^40 + 1
        assert_eq!(
            PublicKey::from_jwk(&jwk(v)).unwrap_err(),
            KeyError::RsaExponent
        );
        let (_, ec) = ec_pair(Nid::X9_62_PRIME256V1, "P-256", 32);
        let mut v = serde_json::to_value(&ec).unwrap();
        v["y"] = v["x"].clone(); // almost surely off the curve
        assert_eq!(
            PublicKey::from_jwk(&jwk(v.clone())).unwrap_err(),
            KeyError::BadPoint
        );
        v["y"] = b64(&[1u8; 31]).into();
        assert_eq!(
            PublicKey::from_jwk(&jwk(v)).unwrap_err(),
            KeyError::BadPoint
        );
        let short = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[9u8; 31])}));
        assert_eq!(PublicKey::from_jwk(&short).unwrap_err(), KeyError::BadPoint);
        let hmac = jwk(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}));
        assert_eq!(
            PublicKey::from_jwk(&hmac).unwrap_err(),
            KeyError::Unsupported
        );
    }
}
