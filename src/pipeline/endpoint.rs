//! The gateway's own endpoints under `server.reserved_prefix` (spec §2): which one a
//! request is for, and the per-client-IP limit on those a client could flood. The protected
//! resource metadata (`/.well-known/oauth-protected-resource`) is answered here too.

use super::{rate_limit, resource_metadata, Pipeline, Request, Verdict};
use crate::normalize::NormalizedTarget;

/// One of the gateway's own endpoints ([`crate::endpoints`] serves them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/auth`: a front of its own ([`crate::front::forward_auth`]).
    ForwardAuth,
    /// `/ext-authz` + the original path: Envoy's HTTP ext_authz, a front of its own
    /// ([`crate::front::ext_authz_http`]).
    ExtAuthz,
    Jwks,
    Login,
    Callback,
    Logout,
    BackchannelLogout,
    Userinfo,
    /// Anything else under the prefix: 404.
    Unknown,
}

impl Endpoint {
    /// The endpoint at `path` (what follows the prefix).
    pub fn at(path: &str) -> Endpoint {
        match path {
            "/auth" => Endpoint::ForwardAuth,
            EXT_AUTHZ => Endpoint::ExtAuthz,
            "/jwks.json" => Endpoint::Jwks,
            "/login" => Endpoint::Login,
            "/callback" => Endpoint::Callback,
            "/logout" => Endpoint::Logout,
            "/backchannel-logout" => Endpoint::BackchannelLogout,
            "/userinfo" => Endpoint::Userinfo,
            _ => Endpoint::Unknown,
        }
    }

    /// Forward-auth is asked by the proxy for every request, userinfo and the JWKS are
    /// cheap reads, back-channel logouts come from the IdP in bursts (and are signed); the
    /// others (login, callback, logout) are limited per client IP.
    fn limited(self) -> bool {
        !matches!(
            self,
            Endpoint::ForwardAuth
                | Endpoint::ExtAuthz
                | Endpoint::Userinfo
                | Endpoint::Jwks
                | Endpoint::BackchannelLogout
        )
    }
}

/// Where Envoy asks, under the prefix; the original path follows.
const EXT_AUTHZ: &str = "/ext-authz";

/// The original path-and-query of a raw target `{prefix}/ext-authz<original>` as Envoy's
/// `path_prefix` makes it, byte for byte (judged as the proxy judges a target, never
/// normalized before); None for any other target, other spellings of the prefix included.
pub fn ext_authz_target<'a>(raw: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    let rest = raw
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(EXT_AUTHZ.as_bytes())?;
    match rest.first() {
        None => Some(b"/"),
        Some(b'/') => Some(rest),
        Some(_) => None,
    }
}

/// The endpoint a request under the prefix is for, unless its client is over the limit.
pub(super) async fn dispatch(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    target: NormalizedTarget,
) -> Verdict {
    if target.path.starts_with(resource_metadata::WELL_KNOWN) {
        // The route stage leads here only the metadata of a host with bearer routes.
        r.judged.path = target.path;
        return Verdict::Answer(resource_metadata::answer(p, r, &r.judged.path));
    }
    let prefix = p.rt.config.server.reserved_prefix.as_str();
    let endpoint = match target.path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => Endpoint::at(rest),
        _ => {
            let refused = p.refuse_early(r, 404, "reserved_path", "no_route");
            return Verdict::Answer(rate_limit::reserved(p, r, true).await.unwrap_or(refused));
        }
    };
    r.judged.path = target.path;
    if endpoint.limited() {
        if let Some(answer) = rate_limit::reserved(p, r, false).await {
            return Verdict::Answer(answer);
        }
    }
    Verdict::Endpoint(endpoint)
}
