//! `[redis]`: the Redis the session and rate-limit stores use unless their own `redis_url`
//! names another, with its TLS files, credentials and Sentinels.

use std::ops::Range;

use super::*;
use crate::redis_conn::{
    cluster_address, sentinel_address, tls_connector, Place, RedisTarget, TlsMaterial, CLUSTER_TLS,
};

/// `[redis]` lowered: its own target, and what a store's `redis_url` takes from it.
#[derive(Default)]
pub(super) struct RedisSettings {
    /// From `url` or `sentinels`; `None` without `[redis]` (or with errors in it).
    pub target: Option<RedisTarget>,
    /// Whether there is a `[redis]` table (its errors are reported where they are).
    pub given: bool,
    tls: Option<(TlsMaterial, Range<usize>)>,
    username: Option<(String, Range<usize>)>,
    password: Option<(String, Range<usize>)>,
    sentinel_password: Option<(String, Range<usize>)>,
}

impl Lowerer<'_> {
    pub(super) fn redis(&mut self, r: Option<&S<file::Redis>>) -> RedisSettings {
        let Some(r) = r else {
            return RedisSettings::default();
        };
        let c = r.get_ref();
        let url = self.secret(c.url.as_ref(), c.url_file.as_ref(), "url");
        let mut settings = RedisSettings {
            target: None,
            given: true,
            tls: self.tls_files(c),
            username: c
                .username
                .as_ref()
                .and_then(|v| Some((self.string(v)?, v.span()))),
            password: self.secret(c.password.as_ref(), c.password_file.as_ref(), "password"),
            sentinel_password: self.secret(
                c.sentinel_password.as_ref(),
                c.sentinel_password_file.as_ref(),
                "sentinel_password",
            ),
        };
        let target = match (url, &c.sentinels) {
            (url, sentinels) if c.cluster.is_some() && (url.is_some() || sentinels.is_some()) => {
                let at = c.cluster.as_ref().map_or(r.span(), S::span);
                self.r
                    .error(at, "[redis] takes one of url, sentinels or cluster");
                None
            }
            (None, None) if c.cluster.is_some() => c
                .cluster
                .as_ref()
                .and_then(|list| self.cluster_table(c, list)),
            (Some(_), Some(s)) => {
                self.r
                    .error(s.span(), "[redis] takes url or sentinels, not both");
                None
            }
            (None, None) => {
                self.r.error(
                    r.span(),
                    "[redis] needs url (or url_file), sentinels with master_name, or cluster",
                );
                None
            }
            (Some((url, at)), None) => {
                for (key, span) in [
                    ("master_name", c.master_name.as_ref().map(S::span)),
                    ("db", c.db.as_ref().map(S::span)),
                    ("tls", c.tls.as_ref().map(S::span)),
                ] {
                    if let Some(span) = span {
                        self.r.error(
                            span,
                            format!(
                                "[redis] {key} goes with sentinels; with url it is part of the URL"
                            ),
                        );
                    }
                }
                self.redis_url(&url, at, "url")
            }
            (None, Some(list)) => self.sentinel_table(c, list),
        };
        settings.target = target.and_then(|t| self.with_settings(t, &settings, true));
        settings
    }

    /// A store's `redis_url`, else `[redis]`.
    pub(super) fn store_redis(
        &mut self,
        url: Option<(String, Range<usize>)>,
        settings: &RedisSettings,
    ) -> Option<RedisTarget> {
        match url {
            None => settings.target.clone(),
            Some((url, at)) => {
                let t = self.redis_url(&url, at, "redis_url")?;
                self.with_settings(t, settings, false)
            }
        }
    }

    fn redis_url(&mut self, url: &str, at: Range<usize>, key: &str) -> Option<RedisTarget> {
        match RedisTarget::from_url(url) {
            Ok(t) => Some(t),
            Err(e) => {
                self.r.error(
                    at,
                    format!("invalid {key} {:?}: {e}", super::show::redact_url(url)),
                );
                None
            }
        }
    }

    fn sentinel_table(&mut self, c: &file::Redis, list: &S<Vec<S<String>>>) -> Option<RedisTarget> {
        let mut nodes = Vec::new();
        for s in list.get_ref() {
            let text = self.string(s)?;
            match sentinel_address(&text) {
                Ok(a) => nodes.push(a),
                Err(e) => self.r.error(s.span(), e),
            }
        }
        if nodes.is_empty() {
            self.r
                .error(list.span(), "sentinels lists at least one host:port");
            return None;
        }
        let Some(master) = c.master_name.as_ref().and_then(|m| self.string(m)) else {
            self.r
                .error(list.span(), "[redis] sentinels needs master_name");
            return None;
        };
        let db = match &c.db {
            None => 0,
            Some(v) if *v.get_ref() >= 0 => *v.get_ref(),
            Some(v) => {
                self.r.error(v.span(), "db must be 0 or more");
                0
            }
        };
        let tls = c.tls.as_ref().is_some_and(|t| *t.get_ref());
        let hosts: Vec<String> = nodes
            .iter()
            .map(|(h, p)| match h.contains(':') {
                true => format!("[{h}]:{p}"),
                false => format!("{h}:{p}"),
            })
            .collect();
        let scheme = if tls { "rediss" } else { "redis" };
        Some(RedisTarget {
            url: format!("{scheme}+sentinel://{}/{master}/{db}", hosts.join(",")),
            place: Place::Sentinel {
                nodes,
                master,
                password: None,
            },
            tls: tls.then(TlsMaterial::default),
            db,
            username: None,
            password: None,
        })
    }

    /// `cluster = ["host:port", ...]`: the seed nodes of a Redis Cluster (database 0, no TLS).
    fn cluster_table(&mut self, c: &file::Redis, list: &S<Vec<S<String>>>) -> Option<RedisTarget> {
        let mut nodes = Vec::new();
        for s in list.get_ref() {
            let text = self.string(s)?;
            match cluster_address(&text) {
                Ok(a) => nodes.push(a),
                Err(e) => self.r.error(s.span(), e),
            }
        }
        if nodes.is_empty() {
            self.r
                .error(list.span(), "cluster lists at least one host:port");
            return None;
        }
        let mut ok = true;
        if let Some(m) = &c.master_name {
            self.r.error(
                m.span(),
                "[redis] master_name goes with sentinels, not cluster",
            );
            ok = false;
        }
        if let Some(db) = c.db.as_ref().filter(|d| *d.get_ref() != 0) {
            self.r
                .error(db.span(), "a Redis Cluster has database 0 only");
            ok = false;
        }
        if let Some(tls) = c.tls.as_ref().filter(|t| *t.get_ref()) {
            self.r.error(tls.span(), CLUSTER_TLS);
            ok = false;
        }
        let hosts: Vec<String> = nodes
            .iter()
            .map(|(h, p)| match h.contains(':') {
                true => format!("[{h}]:{p}"),
                false => format!("{h}:{p}"),
            })
            .collect();
        ok.then(|| RedisTarget {
            url: format!("redis+cluster://{}/", hosts.join(",")),
            place: Place::Cluster { nodes },
            tls: None,
            db: 0,
            username: None,
            password: None,
        })
    }

    /// `ca_file`, `cert_file` and `key_file` as read now; `None` when none is set.
    fn tls_files(&mut self, c: &file::Redis) -> Option<(TlsMaterial, Range<usize>)> {
        let mut read = |v: &Option<S<String>>, what: &str| -> Option<Vec<u8>> {
            let path = self.readable_file(v.as_ref()?, what)?;
            std::fs::read(path).ok()
        };
        let material = TlsMaterial {
            ca: read(&c.ca_file, "ca_file"),
            cert: read(&c.cert_file, "cert_file"),
            key: read(&c.key_file, "key_file"),
        };
        let span = [&c.ca_file, &c.cert_file, &c.key_file]
            .into_iter()
            .flatten()
            .next()?
            .span();
        if let Err(e) = tls_connector(&material) {
            self.r.error(span.clone(), e);
        }
        Some((material, span))
    }

    /// `t` with the TLS files and credentials of `[redis]`. For `[redis]`'s `own` target, one
    /// that does not fit is an error; a store's `redis_url` takes those that fit it (TLS
    /// files when it is TLS, a password when it has none, `sentinel_password` with Sentinels).
    fn with_settings(
        &mut self,
        mut t: RedisTarget,
        s: &RedisSettings,
        own: bool,
    ) -> Option<RedisTarget> {
        let mut ok = true;
        if let Some((material, span)) = &s.tls {
            match &mut t.tls {
                Some(tls) => *tls = material.clone(),
                None if !own => {}
                None if matches!(t.place, Place::Cluster { .. }) => {
                    self.r.error(span.clone(), CLUSTER_TLS);
                    ok = false;
                }
                None => {
                    self.r.error(
                        span.clone(),
                        format!(
                            "ca_file, cert_file and key_file are for TLS, and {:?} is not: use rediss:// (or tls = true with sentinels)",
                            super::show::redact_url(&t.url)
                        ),
                    );
                    ok = false;
                }
            }
        }
        for (given, into, key) in [
            (&s.username, &mut t.username, "username"),
            (&s.password, &mut t.password, "password"),
        ] {
            if let Some((value, span)) = given {
                if into.is_some() {
                    if !own {
                        continue;
                    }
                    self.r.error(
                        span.clone(),
                        format!(
                            "{:?} has a {key} of its own: set it in one place",
                            super::show::redact_url(&t.url)
                        ),
                    );
                    ok = false;
                } else {
                    *into = Some(value.clone());
                }
            }
        }
        if let Some((value, span)) = &s.sentinel_password {
            match &mut t.place {
                Place::Sentinel { password, .. } => *password = Some(value.clone()),
                _ if !own => {}
                _ => {
                    self.r.error(
                        span.clone(),
                        "sentinel_password is used with Sentinels only",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, StoreKind};
    use crate::redis_conn::Place;

    /// Both stores on Redis, with `redis` as the `[redis]` table's lines (line 9 on).
    fn load(redis: &str, store_url: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\n\n[session]\nstore = \"redis\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n{store_url}\n\n[redis]\n{redis}\n\n[rate_limit_store]\nkind = \"redis\"\n"
        );
        Config::from_str(std::path::Path::new("/etc/gw/gateway.toml"), &text, &|_| {
            None
        })
        .map_err(|e| e.to_string())
    }

    fn self_signed() -> Vec<u8> {
        use openssl::{asn1::Asn1Time, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
        let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "test ca").unwrap();
        let name = name.build();
        let mut b = x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    fn error(redis: &str, store_url: &str) -> String {
        load(redis, store_url).expect_err("refused")
    }

    #[test]
    fn the_sentinel_table_is_both_stores_redis() {
        let c = load(
            "sentinels = [\"10.0.0.1:26379\", \"[::1]\"]\nmaster_name = \"main\"\ndb = 2\npassword = \"pw-s3cret\"\nsentinel_password = \"sentinel-s3cret\"",
            "",
        )
        .unwrap();
        let StoreKind::Redis(t) = &c.session.store else {
            panic!("{:?}", c.session.store)
        };
        assert_eq!(c.rate_limit_store.kind, c.session.store);
        assert_eq!(t.url, "redis+sentinel://10.0.0.1:26379,[::1]:26379/main/2");
        assert_eq!(t.password.as_deref(), Some("pw-s3cret"));
        assert!(
            matches!(&t.place, Place::Sentinel { password: Some(p), .. } if p == "sentinel-s3cret")
        );
        let shown = c.redacted_json().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn the_cluster_table_is_both_stores_redis() {
        let c = load(
            "cluster = [\"10.0.0.1:7000\", \"[::1]:7001\", \"n3\"]\nusername = \"gatehouse\"\npassword = \"pw-s3cret\"",
            "",
        )
        .unwrap();
        let StoreKind::Redis(t) = &c.session.store else {
            panic!("{:?}", c.session.store)
        };
        assert_eq!(c.rate_limit_store.kind, c.session.store);
        assert_eq!(t.url, "redis+cluster://10.0.0.1:7000,[::1]:7001,n3:6379/");
        assert!(matches!(&t.place, Place::Cluster { nodes } if nodes.len() == 3));
        assert_eq!(
            (t.username.as_deref(), t.password.as_deref()),
            (Some("gatehouse"), Some("pw-s3cret"))
        );
        let shown = c.redacted_json().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        let c = load("url = \"redis+cluster://u:pw-s3cret@n1:7000,n2:7000/\"", "");
        let shown = c.unwrap().redacted_json().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_stores_own_url_wins_and_takes_the_tls_files_of_redis() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, self_signed()).unwrap();
        let c = load(
            &format!(
                "url = \"rediss://shared:6380\"\nca_file = \"{}\"",
                ca.display()
            ),
            "redis_url = \"rediss://sessions:6380/1\"",
        )
        .unwrap();
        let (StoreKind::Redis(s), StoreKind::Redis(r)) =
            (&c.session.store, &c.rate_limit_store.kind)
        else {
            panic!()
        };
        assert!(matches!(&s.place, Place::Tcp { host, .. } if host == "sessions"));
        assert!(matches!(&r.place, Place::Tcp { host, .. } if host == "shared"));
        assert!(s.tls.as_ref().is_some_and(|t| t.ca.is_some()));
    }

    #[test]
    fn mistakes_are_reported_at_their_line() {
        for (redis, store_url, says) in [
            (
                "url = \"redis://h\"\nsentinels = [\"s:26379\"]",
                "",
                "gateway.toml:10:13: [redis] takes url or sentinels, not both",
            ),
            (
                "sentinels = [\"s:26379\"]",
                "",
                "gateway.toml:9:13: [redis] sentinels needs master_name",
            ),
            (
                "url = \"redis://u:pw-s3cret@h/0?ca_file=x\"",
                "",
                "gateway.toml:9:7: invalid url \"redis://REDACTED:REDACTED@h/0?ca_file=REDACTED\": unknown query parameter \"ca_file\"",
            ),
            (
                "url = \"redis://h\"\nca_file = \"/nonexistent/ca.pem\"",
                "",
                "gateway.toml:10:11: cannot read ca_file /nonexistent/ca.pem",
            ),
            (
                "url = \"redis://h\"\nmaster_name = \"m\"",
                "",
                "gateway.toml:10:15: [redis] master_name goes with sentinels",
            ),
            (
                "url = \"redis://:a@h\"\npassword = \"b\"",
                "",
                "gateway.toml:10:12: \"redis://:REDACTED@h\" has a password of its own",
            ),
            (
                "url = \"redis://h\"\nsentinel_password = \"x\"",
                "",
                "gateway.toml:10:21: sentinel_password is used with Sentinels only",
            ),
            (
                "sentinels = [\"s:0x\"]\nmaster_name = \"m\"",
                "",
                "gateway.toml:9:14: sentinel address \"s:0x\"",
            ),
            (
                "cluster = [\"n1:7000\"]\ndb = 1",
                "",
                "gateway.toml:10:6: a Redis Cluster has database 0 only",
            ),
            (
                "cluster = [\"n1:7000\"]\ntls = true",
                "",
                "gateway.toml:10:7: TLS to a Redis Cluster is not supported",
            ),
            (
                "cluster = [\"n1:7000\"]\nca_file = \"/etc/hostname\"",
                "",
                "TLS to a Redis Cluster is not supported",
            ),
            (
                "cluster = [\"n1:7000\"]\nsentinels = [\"s:26379\"]",
                "",
                "gateway.toml:9:11: [redis] takes one of url, sentinels or cluster",
            ),
            (
                "cluster = []",
                "",
                "gateway.toml:9:11: cluster lists at least one host:port",
            ),
            (
                "url = \"redis://h\"",
                "redis_url = \"redis+sentinel://s1\"",
                "gateway.toml:6:13: invalid redis_url \"redis+sentinel://s1\": a Sentinel URL names its master",
            ),
        ] {
            let e = error(redis, store_url);
            assert!(e.contains(says), "{redis}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = Config::from_str(
            std::path::Path::new("gateway.toml"),
            "[server]\n[rate_limit_store]\nkind = \"redis\"\n",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "gateway.toml:3:8: a redis rate_limit_store needs redis_url or a [redis] table"
            ),
            "{e}"
        );
    }
}
