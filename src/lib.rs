//! gatehouse: an authentication and authorization reverse proxy on Pingora.
//!
//! A request passes the modules in the order they are listed here. [`config`] turns
//! `gateway.toml` into one validated `Config`; [`gateway`] compiles it into the `Runtime`
//! that requests snapshot and SIGHUP swaps. [`proxy`] is the Pingora `ProxyHttp` impl and only
//! sequences the stages: [`identity`] strips forged identity headers, [`forwarded`] finds the
//! client and request id, [`normalize`] makes the one path everything judges, [`route`] picks
//! the `[[route]]`, [`cors`] answers preflights, [`upstream`] picks a healthy server, and
//! [`respond`] writes the gateway's own answers. [`admin`] serves metrics and health on a
//! separate listener; [`server`] assembles the Pingora server; [`demo`] is `gatehouse demo`.
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
pub mod pipeline;
pub mod ratelimit;
pub mod redis_conn;
pub mod respond;
pub mod route;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod upstream;
