//! `/login` starts a browser login at an IdP (or shows the sign-in page that chooses one); `/callback` is where the IdP sends the
//! browser back (the OIDC redirect URI). The flow itself is [`crate::login`]'s.

use http::StatusCode;

use super::{query_param, EndpointRequest};
use crate::config::IdpConfig;
use crate::login::{cookie_value, csrf, Hints, Login};
use crate::pipeline::{Answer, Judged, Pipeline};
use crate::respond;
use crate::session::LoginClient;

/// `/login?rd=<return target>&idp=<name>`: the redirect to the IdP. Without `idp` and with
/// several providers, the sign-in page: the providers of `route=<name>` (or all), unless
/// `login_hint`/`domain_hint` names an email domain one of them claims in `idp_domains`.
pub(super) async fn start(
    p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let query = req.query();
    let rd = login.return_target(query_param(query, "rd").as_deref());
    let hints = Hints::from_query(query);
    let several = login.providers.len() > 1;
    let chosen = query_param(query, "idp");
    let provider = match &chosen {
        Some(name) => login.provider(name),
        None if !several => login.providers.first(),
        None => {
            let candidates = candidates(&p, login, query_param(query, "route").as_deref());
            match login.provider_for_hints(&candidates, &hints) {
                Some(p) => Some(p),
                None => {
                    let last = cookie_value(req.headers(), &login.cookies.choice);
                    return sign_in_page(&p, login, &candidates, &rd, &hints, last);
                }
            }
        }
    };
    let Some(provider) = provider.cloned() else {
        return Answer::refused(404, "unknown_idp", judged.html);
    };
    let binding = cookie_value(req.headers(), &login.cookies.binding).map(str::to_string);
    match login
        .start(&provider, &rd, binding.as_deref(), None, &hints)
        .await
    {
        Ok((url, cookie)) => {
            let mut cookies: Vec<String> = cookie.into_iter().collect();
            if several && chosen.is_some() {
                // Remembered to order the page next time, never to skip it.
                cookies.push(login.cookies.set_choice(&provider.config.name));
            }
            Answer::redirect(StatusCode::FOUND, &url, cookies)
        }
        Err(f) => {
            tracing::warn!(request_id = %judged.request_id, idp = %f.idp, reason = f.reason, detail = %f.detail, "cannot start login");
            Answer::refused(f.status, f.reason, judged.html)
        }
    }
}

/// The providers the sign-in page offers: the named route's (when it lists several), else
/// every one configured.
fn candidates(p: &Pipeline<'_>, login: &Login, route: Option<&str>) -> Vec<usize> {
    let listed = route
        .and_then(|name| p.rt.config.routes.iter().find(|r| r.name == name))
        .map(|r| r.idps.as_slice())
        .filter(|l| l.len() > 1);
    match listed {
        Some(l) => l.to_vec(),
        None => (0..login.providers.len()).collect(),
    }
}

/// The sign-in page: one button per provider in a GET form back to `/login` (no script
/// needed), the last choice first and focused.
fn sign_in_page(
    p: &Pipeline<'_>,
    login: &Login,
    candidates: &[usize],
    rd: &str,
    hints: &Hints,
    last: Option<&str>,
) -> Answer {
    let mut order: Vec<&IdpConfig> = candidates
        .iter()
        .filter_map(|i| login.idp_config(*i))
        .collect();
    let last = last.filter(|l| order.iter().any(|c| c.name == *l));
    if let Some(pos) = last.and_then(|l| order.iter().position(|c| c.name == l)) {
        let remembered = order.remove(pos);
        order.insert(0, remembered);
    }
    let esc = respond::html_escape;
    let mut hidden = format!("<input type=\"hidden\" name=\"rd\" value=\"{}\">", esc(rd));
    for (name, value) in [
        ("login_hint", &hints.login_hint),
        ("domain_hint", &hints.domain_hint),
    ] {
        if let Some(v) = value {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                esc(v)
            ));
        }
    }
    let mut items = String::new();
    let mut logo_origins: Vec<String> = Vec::new();
    for c in &order {
        let remembered = last == Some(c.name.as_str());
        let logo = match &c.logo_url {
            Some(url) => {
                let origin = csrf::origin_of(url);
                if !logo_origins.contains(&origin) {
                    logo_origins.push(origin);
                }
                format!(
                    "<img src=\"{}\" alt=\"\" width=\"24\" height=\"24\">",
                    esc(url)
                )
            }
            None => String::new(),
        };
        items.push_str(&format!(
            "<li><button type=\"submit\" name=\"idp\" value=\"{name}\"{focus}>{logo}<span>{label}</span></button>{note}</li>\n",
            name = esc(&c.name),
            focus = if remembered { " autofocus" } else { "" },
            label = esc(&c.display_name),
            note = if remembered { "<small>Last used</small>" } else { "" },
        ));
    }
    let html = respond::html_page(
        "Sign in",
        &format!(
            "<h1 id=\"sign-in\">Sign in</h1>\n<p>Choose where you have an account.</p>\n\
             <form method=\"get\" action=\"{action}\">{hidden}\n\
             <ul class=\"choices\" aria-labelledby=\"sign-in\">\n{items}</ul></form>",
            action = esc(&format!("{}/login", p.rt.config.server.reserved_prefix)),
        ),
    );
    // The form's GET is answered with a redirect to the chosen provider, and browsers apply
    // `form-action` to that redirect too.
    let mut csp = respond::csp_with_image_sources(
        &p.rt.config.security_headers.content_security_policy,
        &logo_origins,
    );
    let mut form_targets: Vec<String> = Vec::new();
    for i in candidates {
        let Some(provider) = login.providers.get(*i) else {
            continue;
        };
        let endpoint = provider
            .metadata()
            .map(|m| csrf::origin_of(&m.authorization_endpoint))
            .unwrap_or_else(|| csrf::origin_of(&provider.config.issuer));
        if !form_targets.contains(&endpoint) {
            csp = respond::csp_with_form_target(&csp, &endpoint);
            form_targets.push(endpoint);
        }
    }
    Answer::content(
        StatusCode::OK,
        Some(("text/html; charset=utf-8", html.into_bytes())),
    )
    .header("content-security-policy", csp)
}

/// `/callback`: the login finishes, the browser gets its (new) session cookie and goes back
/// where it started.
pub(super) async fn callback(
    p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let query = req.query().unwrap_or("").to_string();
    let headers = req.headers();
    let binding = cookie_value(headers, &login.cookies.binding).map(str::to_string);
    let previous = cookie_value(headers, &login.cookies.session).map(str::to_string);
    let client_ip = judged.client_ip.map(|i| i.to_string()).unwrap_or_default();
    // Where the login came from, kept only for the session admin API: personal data (and
    // 20-odd bytes a session) that a gateway without the API has no reader for.
    let client = match p.rt.config.admin.token {
        Some(_) => LoginClient::new(
            judged.client_ip,
            headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        ),
        None => LoginClient::default(),
    };
    let metrics = p.metrics;
    match login.finish(&query, binding.as_deref(), &client).await {
        Ok(done) => {
            metrics
                .logins_total
                .with_label_values(&[&done.idp, "success"])
                .inc();
            if let Some(old) = previous {
                // The browser's earlier session (if any) ends: one browser, one session.
                let _ = login.store.delete(&old).await;
            }
            tracing::info!(
                target: "gatehouse::audit",
                request_id = %judged.request_id,
                idp = %done.idp,
                subject = %done.subject,
                client_ip = %client_ip,
                "login"
            );
            let cookie = login.cookies.set_session(&done.session_id);
            Answer::redirect(StatusCode::FOUND, &done.return_to, vec![cookie])
        }
        Err(f) => {
            metrics
                .logins_total
                .with_label_values(&[&f.idp, f.reason])
                .inc();
            tracing::warn!(
                target: "gatehouse::audit",
                request_id = %judged.request_id,
                idp = %f.idp,
                reason = f.reason,
                detail = %f.detail,
                client_ip = %client_ip,
                "login failed"
            );
            Answer::refused(f.status, f.reason, judged.html)
        }
    }
}
