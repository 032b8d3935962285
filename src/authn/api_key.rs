//! API keys: config holds only SHA-256 hashes; a presented key is hashed and compared with
//! every configured hash in constant time.

use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthFailure, Identity};
use crate::config::ApiKeyConfig;
use crate::identity::AuthMethod;

pub struct ApiKeys {
    keys: Vec<(ApiKeyConfig, Arc<Identity>)>,
}

/// `sha256:<hex>`, the form `[[api_key]] hash` takes.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

impl ApiKeys {
    pub fn new(configs: &[ApiKeyConfig]) -> Self {
        let keys = configs
            .iter()
            .map(|c| {
                let identity = Identity {
                    method: AuthMethod::ApiKey,
                    subject: c.subject.clone(),
                    email: None,
                    username: None,
                    groups: c.groups.clone(),
                    scopes: Vec::new(),
                    issuer: Some(c.name.clone()),
                    qualified: false,
                    claims: serde_json::Map::new(),
                    expires_at: None,
                    header_values: Default::default(),
                };
                (c.clone(), Arc::new(identity))
            })
            .collect();
        ApiKeys { keys }
    }

    pub fn authenticate(&self, key: &str) -> Result<Arc<Identity>, AuthFailure> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every hash is compared, whatever matched, so timing says nothing about which key
        // came close.
        let mut found = None;
        for (config, identity) in &self.keys {
            if bool::from(config.hash.ct_eq(&presented)) {
                found = Some((config, identity));
            }
        }
        let (config, identity) = found.ok_or(AuthFailure::Invalid("unknown_api_key"))?;
        if config.expires.is_some_and(|t| t <= SystemTime::now()) {
            return Err(AuthFailure::Invalid("expired_api_key"));
        }
        Ok(identity.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str, secret: &str, expires: Option<SystemTime>) -> ApiKeyConfig {
        let hash = hex::decode(&hash_key(secret)[7..])
            .unwrap()
            .try_into()
            .unwrap();
        ApiKeyConfig {
            name: name.into(),
            hash,
            subject: format!("svc-{name}"),
            groups: vec!["batch".into()],
            expires,
        }
    }

    #[test]
    fn right_wrong_and_expired_keys() {
        let past = SystemTime::now() - Duration::from_secs(60);
        let keys = ApiKeys::new(&[
            key("a", "alpha-secret", None),
            key("old", "old-secret", Some(past)),
        ]);
        let id = keys.authenticate("alpha-secret").unwrap();
        assert_eq!(id.subject, "svc-a");
        assert_eq!(id.groups, vec!["batch"]);
        assert_eq!(
            keys.authenticate("alpha-secreT"),
            Err(AuthFailure::Invalid("unknown_api_key"))
        );
        assert_eq!(
            keys.authenticate("old-secret"),
            Err(AuthFailure::Invalid("expired_api_key"))
        );
    }

    #[test]
    fn hash_format() {
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
