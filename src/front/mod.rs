//! The fronts over the [pipeline](crate::pipeline): each reads the facts of a request its
//! own way and applies the decision its own way. [`proxy`] is the reverse proxy (Pingora);
//! [`forward_auth`] answers nginx `auth_request`, Traefik and Caddy about the requests they
//! proxy. An Envoy `ext_authz` front would be a third.

pub mod edit;
pub mod forward_auth;
pub mod proxy;

#[cfg(test)]
mod tests;
