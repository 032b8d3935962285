//! An answer of the gateway's own, as data: the stages and the endpoints say what to send,
//! the front writes it (with the request id, `Cache-Control: no-store` and the security
//! headers every answer carries).

use http::{HeaderName, StatusCode};

/// What the gateway sends instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Body,
    /// Headers of fixed names, in order. A `content-security-policy` replaces the default.
    pub headers: Vec<(&'static str, String)>,
    /// Headers named by the config: forward-auth's identity headers.
    pub named: Vec<(HeaderName, String)>,
    /// Why the gateway refused the request, for the access log.
    pub refusal: Option<&'static str>,
    /// The request's body was not read: the connection is not reused.
    pub close: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The generic error page with the request id: HTML for a browser, JSON otherwise.
    Error { html: bool },
    /// A document of the gateway's own (content type, bytes), or nothing (a redirect, a
    /// preflight's 204, forward-auth's 200).
    Content(Option<(&'static str, Vec<u8>)>),
}

impl Answer {
    /// The generic error page.
    pub fn error(status: StatusCode, html: bool) -> Answer {
        Answer {
            status,
            body: Body::Error { html },
            headers: Vec::new(),
            named: Vec::new(),
            refusal: None,
            close: false,
        }
    }

    /// An error page for a request the gateway refuses, without reading its body.
    pub fn refused(status: u16, reason: &'static str, html: bool) -> Answer {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        Answer::error(status, html).refusing(reason).closing()
    }

    /// A document, or (`None`) headers only.
    pub fn content(status: StatusCode, body: Option<(&'static str, Vec<u8>)>) -> Answer {
        Answer {
            body: Body::Content(body),
            ..Answer::error(status, false)
        }
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
        Answer::content(
            status,
            Some(("application/json", value.to_string().into_bytes())),
        )
    }

    /// A redirect that sets cookies (302; 303 after a POST).
    pub fn redirect(status: StatusCode, location: &str, cookies: Vec<String>) -> Answer {
        let mut answer = Answer::content(status, None).header("location", location.to_string());
        answer
            .headers
            .extend(cookies.into_iter().map(|c| ("set-cookie", c)));
        answer
    }

    pub fn header(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }

    pub fn refusing(mut self, reason: &'static str) -> Answer {
        self.refusal = Some(reason);
        self
    }

    pub fn closing(mut self) -> Answer {
        self.close = true;
        self
    }
}
