//! The gateway's own endpoints under `server.reserved_prefix` (spec §2): login, callback,
//! logout (with its confirmation), back-channel logout, userinfo and the assertion JWKS.
//! The pipeline says which one a request is for ([`Endpoint`]); the proxy front calls
//! [`serve`] with the request, and writes the [`Answer`]. Forward-auth (`/auth`) is a front
//! of its own ([`crate::front::forward_auth`]).

mod backchannel;
mod login;
mod logout;
mod userinfo;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::pipeline::{Answer, Endpoint, Judged, Pipeline};

/// The request an endpoint serves, as the front holds it.
#[async_trait]
pub trait EndpointRequest: Send {
    fn method(&self) -> &Method;
    fn query(&self) -> Option<&str>;
    /// The headers, without those hygiene dropped.
    fn headers(&self) -> &HeaderMap;
    /// The next piece of the body; None at its end; Err when it cannot be read.
    async fn body_chunk(&mut self) -> Result<Option<Bytes>, ()>;
}

/// Serves one of the gateway's endpoints. `judged` is what the pipeline made of the request
/// (its id and client, whether a browser navigates).
pub async fn serve(
    p: Pipeline<'_>,
    judged: &Judged,
    endpoint: Endpoint,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    let refuse = |status, reason| Answer::refused(status, reason, judged.html);
    match (endpoint, p.rt.login.as_deref()) {
        (Endpoint::Jwks, _) if get => match &p.rt.signer {
            Some(signer) => Answer::content(
                StatusCode::OK,
                Some((
                    "application/jwk-set+json",
                    signer.jwks().to_string().into_bytes(),
                )),
            ),
            None => refuse(404, "no_assertion_key"),
        },
        (Endpoint::Login, Some(login)) if get => login::start(p, judged, login, req).await,
        (Endpoint::Callback, Some(login)) if get => login::callback(p, judged, login, req).await,
        (Endpoint::Logout, Some(login)) if get || method == Method::POST => {
            logout::logout(p, judged, login, req).await
        }
        (Endpoint::BackchannelLogout, Some(login)) if method == Method::POST => {
            backchannel::logout(judged, login, req).await
        }
        (Endpoint::Userinfo, Some(login)) if get => userinfo::userinfo(p, judged, login, req).await,
        (
            Endpoint::Login
            | Endpoint::Callback
            | Endpoint::Logout
            | Endpoint::BackchannelLogout
            | Endpoint::Userinfo
            | Endpoint::Jwks,
            Some(_),
        ) => refuse(405, "method_not_allowed"),
        // (`ForwardAuth` and `ExtAuthz` are answered by their own fronts and never come here.)
        _ => refuse(404, "reserved_path"),
    }
}

/// The first value of a query parameter.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
