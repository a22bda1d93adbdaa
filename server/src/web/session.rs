//! Sessions, CSRF and the authorization layer.
//!
//! The middleware reads the session cookie once per request and puts a
//! `Ctx` in the request: who is calling (or nobody), their CSRF token and
//! the client's address. Every state-changing request (anything but GET and
//! HEAD) must carry that token (form field `_csrf`, or the query string for
//! file uploads, or the `x-csrf-token` header); logged-in callers' token is
//! the session's, anonymous callers' is a random cookie. Handlers ask `Ctx`
//! for the scope they need (`enterprise()`, `district()`, …), which refuses
//! every other role: there is no other way to get an enterprise id or a
//! district code to query with.

use super::{Shared, WebError};
use crate::accounts::{self, Account, Role};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;

pub const SESSION_COOKIE: &str = "epi_session";
pub const CSRF_COOKIE: &str = "epi_csrf";

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub account: Option<Account>,
    /// The session cookie's token (to end or keep the session).
    pub token: Option<String>,
    pub csrf: String,
    /// The client's address, for throttling.
    pub client: String,
    /// The session was started by a proven SMS code a short while ago
    /// (`accounts::Session::sms_proven`): it may set a new password without
    /// the old one.
    pub sms_proven: bool,
}

impl Ctx {
    /// Who is asking, as the access audit records it.
    pub fn who(&self) -> crate::audit::Who<'_> {
        crate::audit::Who {
            account: self.account.as_ref(),
            client: &self.client,
        }
    }

    pub fn account(&self) -> Result<&Account, WebError> {
        self.account.as_ref().ok_or(WebError::Login)
    }

    /// (enterprise id, its district) for enterprise accounts only.
    pub fn enterprise(&self) -> Result<(&str, &str), WebError> {
        match &self.account()?.role {
            Role::Enterprise { id, district } => Ok((id, district)),
            _ => Err(WebError::Forbidden),
        }
    }

    /// The district code for district accounts only.
    pub fn district(&self) -> Result<&str, WebError> {
        match &self.account()?.role {
            Role::District { code } => Ok(code),
            _ => Err(WebError::Forbidden),
        }
    }

    /// Operators only: comparison runs, the rehearsal clock, incidents
    /// (the city has its own home, `policy()`).
    pub fn operator(&self) -> Result<(), WebError> {
        match &self.account()?.role {
            Role::Operator => Ok(()),
            _ => Err(WebError::Forbidden),
        }
    }

    /// Policy staff (市住建局): definitions, validation, back-tests.
    pub fn policy(&self) -> Result<(), WebError> {
        match &self.account()?.role {
            Role::City => Ok(()),
            _ => Err(WebError::Forbidden),
        }
    }

    /// The operator console (instances, histories, definitions): operators
    /// only — policy staff have their own pages.
    pub fn console(&self) -> Result<(), WebError> {
        match &self.account()?.role {
            Role::Operator => Ok(()),
            _ => Err(WebError::Forbidden),
        }
    }

    /// Who may ask why a person was warned: operators (everyone), a
    /// district (its own enterprises' staff).
    pub fn explain_scope(&self) -> Result<crate::explain::Scope, WebError> {
        match &self.account()?.role {
            Role::Operator => Ok(crate::explain::Scope::All),
            Role::District { code } => Ok(crate::explain::Scope::District(code.clone())),
            _ => Err(WebError::Forbidden),
        }
    }

    /// Administrators only (R1.7): account administration, enterprise import.
    pub fn admin(&self) -> Result<&Account, WebError> {
        let a = self.account()?;
        match a.role {
            Role::Admin => Ok(a),
            _ => Err(WebError::Forbidden),
        }
    }

    /// The city window's staff (R1.6): city accounts and administrators.
    pub fn window(&self) -> Result<&Account, WebError> {
        let a = self.account()?;
        match a.role {
            Role::City | Role::Admin => Ok(a),
            _ => Err(WebError::Forbidden),
        }
    }

    /// The warnings this caller may see.
    pub fn warning_scope(&self) -> Result<crate::warnings::Scope, WebError> {
        use crate::warnings::Scope;
        Ok(match &self.account()?.role {
            Role::Enterprise { id, .. } => Scope::Enterprise(id.clone()),
            Role::District { code } => Scope::District(code.clone()),
            Role::City | Role::Operator => Scope::City,
            Role::Admin => return Err(WebError::Forbidden),
        })
    }

    /// (kind, id) of the caller's notice inbox.
    pub fn inbox(&self) -> Result<(&'static str, String), WebError> {
        Ok(match &self.account()?.role {
            Role::Enterprise { id, .. } => ("enterprise", id.clone()),
            Role::District { code } => ("district", code.clone()),
            Role::City => ("city", "city".to_string()),
            // Incidents (steps failed, activities spent) come here.
            Role::Operator => ("operator", "operators".to_string()),
            Role::Admin => return Err(WebError::Forbidden),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| WebError::internal("session layer missing"))
    }
}

/// The token a state-changing request carries, from wherever it was put.
async fn provided_token(req: Request) -> Result<(Request, Option<String>), WebError> {
    if let Some(v) = req.headers().get("x-csrf-token") {
        let v = v.to_str().ok().map(str::to_string);
        return Ok((req, v));
    }
    if let Some(q) = req.uri().query() {
        if let Some(v) = form_urlencoded_value(q.as_bytes(), "_csrf") {
            return Ok((req, Some(v)));
        }
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((req, None));
    }
    // Read the form body, take the token, and hand the same bytes on.
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .map_err(|_| WebError::TooLarge)?;
    let token = form_urlencoded_value(&bytes, "_csrf");
    Ok((Request::from_parts(parts, Body::from(bytes)), token))
}

fn form_urlencoded_value(input: &[u8], key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(input).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The address throttling counts by: the peer's, or with a trusted proxy
/// in front the last entry of `X-Forwarded-For` (the one the proxy added;
/// entries before it are whatever the client sent).
pub(super) fn client_address(
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    trust_forwarded_for: bool,
) -> String {
    let forwarded = trust_forwarded_for
        .then(|| headers.get_all("x-forwarded-for").iter().next_back())
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok());
    forwarded
        .or(peer)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "local".to_string())
}

/// Constant-time comparison of two tokens (`subtle`).
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A `Set-Cookie` value, built by the `cookie` crate: HttpOnly,
/// SameSite=Lax, whole site, `Max-Age` (0 removes it), `Secure` on HTTPS
/// deployments. Values are hex tokens, so nothing needs escaping.
pub fn cookie(name: &'static str, value: String, secure: bool, max_age_s: i64) -> HeaderValue {
    let c = cookie::Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age_s))
        .secure(secure)
        .build();
    HeaderValue::from_str(&c.to_string()).expect("cookie is a valid header")
}

/// The middleware: load the session, check CSRF on state-changing
/// requests, send a password-change-pending account to /password, and set
/// the anonymous CSRF cookie when it is new.
pub async fn layer(State(app): State<Shared>, req: Request, next: Next) -> Response {
    match run(app, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(app: Shared, req: Request, next: Next) -> Result<Response, WebError> {
    let jar = CookieJar::from_headers(req.headers());
    let now = app.sys.clock.now().timestamp_millis();
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client = client_address(req.headers(), peer, app.options.trust_forwarded_for);
    let token = jar.get(SESSION_COOKIE).map(|c| c.value().to_string());
    let session = match &token {
        Some(t) if t.len() == 64 => {
            accounts::session(&app.sys.reader, &app.sys.pool, &app.sessions, t, now).await?
        }
        _ => None,
    };
    let anon = jar.get(CSRF_COOKIE).map(|c| c.value().to_string());
    let mut new_anon = None;
    let csrf = match (&session, &anon) {
        (Some(s), _) => s.csrf.clone(),
        (None, Some(a)) if a.len() == 64 => a.clone(),
        (None, _) => {
            let t = accounts::new_token();
            new_anon = Some(t.clone());
            t
        }
    };
    let mut req = req;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let (r, provided) = provided_token(req).await?;
        req = r;
        match provided {
            Some(p) if new_anon.is_none() && same(&p, &csrf) => {}
            _ => return Err(WebError::Csrf),
        }
    }
    let sms_proven = session.as_ref().is_some_and(|s| s.sms_proven(now));
    let account = session.map(|s| s.account);
    if let Some(a) = &account {
        let path = req.uri().path();
        if a.must_change_password && !matches!(path, "/password" | "/logout" | "/static/app.css") {
            return Ok(Redirect::to("/password").into_response());
        }
    }
    let ctx = Ctx {
        account,
        token,
        csrf,
        client,
        sms_proven,
    };
    req.extensions_mut().insert(ctx);
    let mut response = next.run(req).await;
    if let Some(t) = new_anon {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookie(CSRF_COOKIE, t, app.options.cookie_secure, 24 * 3600),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::{client_address, cookie, same};
    use axum::http::HeaderMap;

    /// The attributes, in any order.
    fn attributes(v: axum::http::HeaderValue) -> Vec<String> {
        let mut a: Vec<String> = v.to_str().unwrap().split("; ").map(String::from).collect();
        a.sort();
        a
    }

    #[test]
    fn cookies_are_http_only_same_site_lax_with_their_lifetime_and_secure_when_configured() {
        assert_eq!(
            attributes(cookie("epi_session", "ab12".into(), true, 43_200)),
            [
                "HttpOnly",
                "Max-Age=43200",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "epi_session=ab12"
            ]
        );
        assert_eq!(
            attributes(cookie("epi_csrf", "cd34".into(), false, 86_400)),
            [
                "HttpOnly",
                "Max-Age=86400",
                "Path=/",
                "SameSite=Lax",
                "epi_csrf=cd34"
            ]
        );
        // Logout: an empty value that expires at once.
        assert_eq!(
            attributes(cookie("epi_session", String::new(), false, 0)),
            [
                "HttpOnly",
                "Max-Age=0",
                "Path=/",
                "SameSite=Lax",
                "epi_session="
            ]
        );
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc") && !same("abcd", "abc") && !same("", "abc"));
    }

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let peer = Some("10.0.0.2".parse().unwrap());
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        assert_eq!(client_address(&h, peer, false), "10.0.0.2");
        assert_eq!(client_address(&h, peer, true), "203.0.113.9");
        // A second header line: the proxy's is the last.
        h.append("x-forwarded-for", "198.51.100.7".parse().unwrap());
        assert_eq!(client_address(&h, peer, true), "198.51.100.7");
        // Garbage falls back to the peer.
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(client_address(&bad, peer, true), "10.0.0.2");
        assert_eq!(client_address(&HeaderMap::new(), None, true), "local");
    }
}
