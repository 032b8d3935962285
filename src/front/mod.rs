//! The fronts over the [pipeline](crate::pipeline): each reads the facts of a request its
//! own way and applies the decision its own way. [`proxy`] is the reverse proxy (Pingora);
//! [`forward_auth`] answers nginx `auth_request`, Traefik and Caddy about the requests they
//! proxy; [`ext_authz_http`] answers Envoy's HTTP `ext_authz` filter, [`ext_authz_grpc`] its
//! gRPC one.

pub mod edit;
pub mod ext_authz_grpc;
pub mod ext_authz_http;
pub mod forward_auth;
pub mod proxy;

#[cfg(test)]
mod tests;
