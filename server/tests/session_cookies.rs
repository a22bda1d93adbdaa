//! The cookies the web server sets, as a browser receives them: the
//! anonymous CSRF cookie, the session cookie at login and its removal at
//! logout — HttpOnly, SameSite=Lax, the whole site, their lifetimes, and
//! Secure exactly when the deployment says so (`cookie_secure`).

#[path = "support/web.rs"]
mod web;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;
use web::World;

/// The `Set-Cookie` of `name` in `res`: (value, attributes sorted).
fn set_cookie(res: &axum::response::Response, name: &str) -> (String, Vec<String>) {
    let line = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"));
    let mut parts = line.split("; ").map(String::from);
    let value = parts.next().unwrap()[name.len() + 1..].to_string();
    let mut attributes: Vec<String> = parts.collect();
    attributes.sort();
    (value, attributes)
}

fn expected(max_age_s: i64, secure: bool) -> Vec<String> {
    let mut a = vec![
        "HttpOnly".to_string(),
        format!("Max-Age={max_age_s}"),
        "Path=/".into(),
        "SameSite=Lax".into(),
    ];
    if secure {
        a.push("Secure".into());
    }
    a
}

fn request(method: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

async fn body(res: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn login_and_logout_cookies_keep_their_attributes() {
    let w = World::new("2026-12-01T09:00:00+08:00").await;
    let password = w.passwords["operator"].clone();
    let session_s = server::accounts::SESSION_MAX_MS / 1000;
    for secure in [false, true] {
        let app = server::web::app(
            w.sys.clone(),
            server::web::Options {
                cookie_secure: secure,
                ..Default::default()
            },
        );
        let res = app
            .clone()
            .oneshot(request("GET", "/login", "", &[]))
            .await
            .unwrap();
        let (anon, attributes) = set_cookie(&res, "epi_csrf");
        assert_eq!(attributes, expected(24 * 3600, secure));
        assert_eq!(anon.len(), 64);

        let res = app
            .clone()
            .oneshot(request(
                "POST",
                "/login",
                &format!("epi_csrf={anon}"),
                &[
                    ("_csrf", &anon),
                    ("username", "operator"),
                    ("password", &password),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let (session, attributes) = set_cookie(&res, "epi_session");
        assert_eq!(attributes, expected(session_s, secure));
        assert_eq!(session.len(), 64);

        let cookie = format!("epi_session={session}");
        let page = app
            .clone()
            .oneshot(request("GET", "/ops", &cookie, &[]))
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = body(page).await;
        let at = page.find("name=\"_csrf\" value=\"").unwrap() + 20;
        let csrf = &page[at..at + 64];
        let res = app
            .clone()
            .oneshot(request("POST", "/logout", &cookie, &[("_csrf", csrf)]))
            .await
            .unwrap();
        let (gone, attributes) = set_cookie(&res, "epi_session");
        assert_eq!(gone, "");
        assert_eq!(attributes, expected(0, secure));
    }
}
