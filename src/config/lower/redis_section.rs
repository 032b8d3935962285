//! `[redis]`: the Redis the session and rate-limit stores use unless their own `redis_url`
//! names another, with its TLS files, credentials and Sentinels.

use std::ops::Range;

use super::*;
use crate::redis_conn::{sentinel_address, tls_connector, Place, RedisTarget, TlsMaterial};

/// `[redis]` lowered: its own target, and what a store's `redis_url` takes from it.
#[derive(Default)]
pub(super) struct RedisSettings {
    /// From `url` or `sentinels`; `None` without `[redis]` (or with errors in it).
    pub target: Option<RedisTarget>,
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
            (Some(_), Some(s)) => {
                self.r
                    .error(s.span(), "[redis] takes url or sentinels, not both");
                None
            }
            (None, None) => {
                self.r.error(
                    r.span(),
                    "[redis] needs url (or url_file), or sentinels with master_name",
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
        settings.target = target.and_then(|t| self.with_settings(t, &settings));
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
                self.with_settings(t, settings)
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

    /// `t` with the TLS files and credentials of `[redis]`; an error when they do not fit it.
    fn with_settings(&mut self, mut t: RedisTarget, s: &RedisSettings) -> Option<RedisTarget> {
        let mut ok = true;
        if let Some((material, span)) = &s.tls {
            match &mut t.tls {
                Some(tls) => *tls = material.clone(),
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
