//! Secrets written inline or kept in files (`*_file`), as Kubernetes secrets and systemd
//! credentials are mounted.

use super::*;

impl Lowerer<'_> {
    /// A secret written inline (`key = "..."`) or kept in a file (`key_file = "/run/secrets/x"`,
    /// as Kubernetes secrets and systemd credentials are mounted), never both. The file is
    /// read now (at load and at every reload), its trailing newline dropped; its contents are
    /// taken as they are, without `${ENV}` interpolation. Returns the value with the span of
    /// the key that gave it, for later checks to point at.
    pub(super) fn secret(
        &mut self,
        inline: Option<&S<String>>,
        file: Option<&S<String>>,
        key: &str,
    ) -> Option<(String, std::ops::Range<usize>)> {
        match (inline, file) {
            (None, None) => None,
            (Some(v), None) => Some((self.string(v)?, v.span())),
            (Some(_), Some(f)) => {
                self.r
                    .error(f.span(), format!("set {key} or {key}_file, not both"));
                None
            }
            (None, Some(f)) => {
                let name = self.string(f)?;
                let path = self.base_dir.join(&name);
                let text = match std::fs::read(&path) {
                    Ok(bytes) => {
                        String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                match text {
                    Ok(text) => {
                        // `echo secret > file` and most editors end the file with a newline.
                        let value = text.trim_end_matches(['\n', '\r']);
                        if value.is_empty() {
                            self.r
                                .error(f.span(), format!("{key}_file {} is empty", path.display()));
                            return None;
                        }
                        Some((value.to_string(), f.span()))
                    }
                    Err(e) => {
                        self.r.error(
                            f.span(),
                            format!("cannot read {key}_file {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// A config with `[session]`, one `[[idp]]` and one `[[bearer]]`, each with the lines given.
    fn load(dir: &Path, session: &str, idp: &str, bearer: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\npublic_url = \"https://gw.example.com\"\n\n[session]\n{session}\n\n[[idp]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"gw\"\n{idp}\n\n[[bearer]]\nissuer = \"https://login.example.com\"\naudiences = [\"api\"]\n{bearer}\n"
        );
        let path = dir.join("gateway.toml");
        Config::from_str(&path, &text, &|name| {
            (name == "SECRETS").then(|| dir.display().to_string())
        })
        .map_err(|e| e.to_string().replace(&format!("{}/", dir.display()), ""))
    }

    const SECRET_A: &str = "session-secret-a-0123456789abcdef0123";
    const SECRET_B: &str = "session-secret-b-0123456789abcdef0123";

    #[test]
    fn secrets_are_read_from_files_without_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("session"), format!("{SECRET_B}\n")).unwrap();
        std::fs::write(d.join("previous"), format!("{SECRET_A}\r\n")).unwrap();
        std::fs::write(d.join("client"), "client-s3cret\n").unwrap();
        std::fs::write(d.join("introspection"), "intro-s3cret").unwrap();
        let c = load(
            d,
            // Relative to the config's folder, or through an environment variable
            // (`${CREDENTIALS_DIRECTORY}` under systemd).
            "secret_file = \"session\"\nsecret_previous_file = \"${SECRETS}/previous\"",
            "client_secret_file = \"client\"",
            "introspection_endpoint = \"https://login.example.com/introspect\"\nintrospection_client_id = \"gw\"\nintrospection_client_secret_file = \"introspection\"",
        )
        .unwrap();
        assert_eq!(c.session.secret.as_deref(), Some(SECRET_B.as_bytes()));
        assert_eq!(
            c.session.secret_previous.as_deref(),
            Some(SECRET_A.as_bytes())
        );
        assert_eq!(c.idps[0].client_secret.as_deref(), Some("client-s3cret"));
        assert_eq!(
            c.bearer[0]
                .introspection
                .as_ref()
                .map(|i| i.client_secret.as_str()),
            Some("intro-s3cret")
        );
        // None of them shows in the effective config.
        let shown = c.redacted_json().to_string();
        for secret in [SECRET_A, SECRET_B, "client-s3cret", "intro-s3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn a_secret_file_that_is_missing_empty_or_doubled_is_refused_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("empty"), "\n").unwrap();
        std::fs::write(d.join("client"), "client-s3cret\n").unwrap();
        std::fs::write(d.join("short"), "too short\n").unwrap();
        for (session, idp, bearer, expected) in [
            (
                "secret_file = \"missing\"",
                "",
                "",
                "gateway.toml:5:15: cannot read secret_file missing:",
            ),
            (
                "secret_file = \"empty\"",
                "",
                "",
                "gateway.toml:5:15: secret_file empty is empty",
            ),
            (
                "secret_file = \"short\"",
                "",
                "",
                "gateway.toml:5:15: session.secret must be at least 32 characters",
            ),
            (
                &format!("secret = \"{SECRET_B}\"\nsecret_file = \"client\""),
                "",
                "",
                "gateway.toml:6:15: set secret or secret_file, not both",
            ),
            (
                &format!("secret_previous = \"{SECRET_A}\""),
                "",
                "",
                "gateway.toml:5:19: session.secret_previous is the secret before a rotation",
            ),
            (
                "",
                "client_secret = \"x\"\nclient_secret_file = \"client\"",
                "",
                "gateway.toml:12:22: set client_secret or client_secret_file, not both",
            ),
            (
                "",
                "client_secret_file = \"/nonexistent/gatehouse/secret\"",
                "",
                "gateway.toml:11:22: cannot read client_secret_file /nonexistent/gatehouse/secret:",
            ),
            (
                "",
                "",
                "introspection_endpoint = \"https://login.example.com/introspect\"\nintrospection_client_id = \"gw\"\nintrospection_client_secret_file = \"empty\"",
                "gateway.toml:18:36: introspection_client_secret_file empty is empty",
            ),
        ] {
            let err = load(d, session, idp, bearer).expect_err(expected);
            assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn api_key_hashes_and_redis_urls_may_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let hash = format!("sha256:{}", "ab".repeat(32));
        std::fs::write(d.join("hash"), format!("{hash}\n")).unwrap();
        std::fs::write(d.join("redis"), "redis://:pw-s3cret@127.0.0.1:6379/0\n").unwrap();
        let text = String::from(
            "[server]\n\n[[api_key]]\nname = \"ci\"\nhash_file = \"hash\"\nsubject = \"ci\"\n\n[rate_limit_store]\nkind = \"redis\"\nredis_url_file = \"redis\"\n\n[[api_key]]\nname = \"none\"\nsubject = \"x\"\n"
        );
        let err = Config::from_str(&d.join("gateway.toml"), &text, &|_| None)
            .expect_err("the second key has no hash")
            .to_string();
        assert!(
            err.contains("gateway.toml:13:8: api_key needs hash (or hash_file)"),
            "{err}"
        );
        let text = text.replace("[[api_key]]\nname = \"none\"\nsubject = \"x\"\n", "");
        let c = Config::from_str(&d.join("gateway.toml"), &text, &|_| None).unwrap();
        assert_eq!(hex::encode(c.api_keys[0].hash), "ab".repeat(32));
        assert_eq!(
            c.rate_limit_store.kind,
            crate::config::StoreKind::Redis(Box::new(
                crate::redis_conn::RedisTarget::from_url("redis://:pw-s3cret@127.0.0.1:6379/0")
                    .unwrap()
            ))
        );
        assert!(!c.redacted_json().to_string().contains("pw-s3cret"));
    }
}
