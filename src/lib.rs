//! gatehouse: an authentication and authorization reverse proxy on Pingora.
//!
//! `docs/architecture.md` draws the path of a request, says what each module owns and where
//! the state that changes at run time lives, and how to add a stage, an authentication method
//! or a front. In short: a front ([`front::proxy`], the Pingora `ProxyHttp`;
//! [`front::forward_auth`]) reads a request into [`pipeline::RequestFacts`];
//! [`pipeline::Pipeline::decide`] runs the stages in order (client, admit, route, strip,
//! preflight, lockout, authenticate, authorize, rate limit) and returns a
//! [`pipeline::Verdict`]: allow, answer, or one of the gateway's own [`endpoints`]. The
//! front applies it. [`config`] turns `gateway.toml` into one validated `Config`;
//! [`gateway`] compiles it into the `Runtime` that requests snapshot and a reload swaps.
//! [`identity`], [`diag`] and [`headers`] are leaves every other module may use; the module
//! graph has no loops (`tests/module_graph.rs`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod authn;
pub mod authz;
pub mod config;
pub mod cors;
pub mod demo;
pub mod diag;
pub mod endpoints;
pub mod forwarded;
pub mod front;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gateway;
pub mod headers;
pub mod hygiene;
pub mod identity;
pub mod inspect;
pub mod login;
pub mod metrics;
pub mod normalize;
pub mod otel;
pub mod pipeline;
pub mod random_keys;
pub mod ratelimit;
pub mod redis_conn;
pub mod respond;
pub mod route;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod upstream;
