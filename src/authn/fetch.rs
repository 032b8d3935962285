//! Outbound HTTP to identity providers: short timeouts, a size cap, no redirects, JSON only.

use std::time::Duration;

use serde_json::Value;

const MAX_BODY: usize = 1024 * 1024;

pub fn client() -> reqwest::Client {
    builder().build().unwrap_or_else(|_| reqwest::Client::new())
}

/// [`client`] for one IdP: its own CA beside the system's, and the client certificate it
/// authenticates the gateway by (`tls_client_auth`) on every connection.
pub fn idp_client(tls: &crate::config::IdpTls) -> Result<reqwest::Client, String> {
    let mut b = builder();
    if let Some(ca) = &tls.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(ca).map_err(|e| e.to_string())? {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some((chain, key)) = &tls.client {
        b = b.identity(reqwest::Identity::from_pkcs8_pem(chain, key).map_err(|e| e.to_string())?);
    }
    b.build().map_err(|e| e.to_string())
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        // A key set or discovery document that redirects elsewhere is not trusted.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
}

/// A fetched JSON document and its `Cache-Control: max-age`, if any.
pub struct Fetched {
    pub body: Value,
    pub max_age: Option<Duration>,
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<Fetched, String> {
    let resp = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {}: {}", loggable(url), without_url(&e)))?;
    read_json(resp, url).await
}

/// A URL as it may be logged: without userinfo, query or fragment, which can hold secrets
/// (an API key in a JWKS URL).
pub(crate) fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_string(),
    }
}

pub async fn read_json(resp: reqwest::Response, url: &str) -> Result<Fetched, String> {
    let url = loggable(url);
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let body = read_capped(resp, MAX_BODY)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
    Ok(Fetched { body, max_age })
}

/// Why an answer's body was not read whole.
#[derive(Debug)]
pub enum ReadError {
    /// Longer than the cap: reading stopped there.
    TooLarge(usize),
    /// The connection failed while reading ([`without_url`]).
    Failed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(max) => write!(f, "response larger than {max} bytes"),
            ReadError::Failed(e) => f.write_str(e),
        }
    }
}

/// The body of `response`, refused once it grows past `max` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Failed(without_url(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What went wrong, without the URL reqwest puts in its message (the caller names the URL,
/// made [`loggable`]).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(src) => format!("{kind}: {src}"),
        None => kind.to_string(),
    }
}

fn parse_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, v) = directive.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_hold_no_secrets() {
        assert_eq!(
            loggable("https://u:pw@idp.example.com/jwks?key=s3cret#x"),
            "https://idp.example.com/jwks"
        );
        assert_eq!(loggable("not a url"), "(unparsable URL)");
    }

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_max_age("Max-Age=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
