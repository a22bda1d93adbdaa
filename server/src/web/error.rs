//! The one HTTP error type. Internal errors are logged with their cause and
//! shown as a generic page; nothing internal reaches the browser. Refusals
//! (not found, not allowed, expired form) are 4xx pages in Chinese.
//!
//! `chinese_rejections` makes the same page of every other error answer:
//! axum's rejections of malformed query strings, forms and uploads (plain
//! English text), 405, 413 and whatever a layer refuses with.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("页面不存在，或您无权查看")]
    NotFound,
    #[error("您的账号无权进行此操作")]
    Forbidden,
    /// Not logged in (or the session ended): to the login page.
    #[error("请先登录")]
    Login,
    #[error("页面已过期或来源不明，请返回刷新后重试")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Throttled(String),
    #[error("提交的内容过大（不超过4MB），请减少后重新提交。")]
    TooLarge,
    #[error("internal: {0}")]
    Internal(String),
}

impl WebError {
    pub fn internal(e: impl std::fmt::Display) -> WebError {
        WebError::Internal(e.to_string())
    }

    /// A multipart upload that could not be read, said in Chinese (axum's
    /// reason, in English, goes to the debug log).
    pub fn upload(e: axum::extract::multipart::MultipartError) -> WebError {
        tracing::debug!(error = %e, "upload refused");
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebError::TooLarge
        } else {
            WebError::BadRequest("上传失败：文件内容不完整或格式不正确，请重新选择文件上传".into())
        }
    }
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError::internal(e)
    }
}

impl From<crate::accounts::Error> for WebError {
    fn from(e: crate::accounts::Error) -> Self {
        use crate::accounts::Error as E;
        match e {
            E::Throttled(_) => WebError::Throttled(e.to_string()),
            E::Invalid(_) | E::BadCredentials | E::BadCode | E::Sms(_) => {
                WebError::BadRequest(e.to_string())
            }
            E::Database(e) => WebError::internal(e),
            E::Hash(_) | E::Join(_) => WebError::internal(e),
            E::Internal(e) => WebError::Internal(e),
        }
    }
}

impl From<crate::sites::Error> for WebError {
    fn from(e: crate::sites::Error) -> Self {
        use crate::sites::Error as E;
        match e {
            E::NotFound => WebError::NotFound,
            E::Invalid(_) | E::Refused(_) => WebError::BadRequest(e.to_string()),
            E::Database(e) => WebError::internal(e),
        }
    }
}

impl From<crate::staff::Error> for WebError {
    fn from(e: crate::staff::Error) -> Self {
        use crate::staff::Error as E;
        match e {
            E::NotFound => WebError::NotFound,
            E::Invalid(_) | E::Rows(_) => WebError::BadRequest(e.to_string()),
            E::Database(e) => WebError::internal(e),
        }
    }
}

impl From<crate::warnings::Error> for WebError {
    fn from(e: crate::warnings::Error) -> Self {
        use crate::warnings::Error as E;
        match e {
            E::NotFound => WebError::NotFound,
            E::Invalid(_) | E::Refused(_) => WebError::BadRequest(e.to_string()),
            other => WebError::internal(other),
        }
    }
}

impl From<crate::records::Error> for WebError {
    fn from(e: crate::records::Error) -> Self {
        use crate::records::Error as E;
        match e {
            E::NotFound => WebError::NotFound,
            E::AlreadyFiled { .. } | E::Invalid(_) => WebError::BadRequest(e.to_string()),
            E::Database(e) => WebError::internal(e),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::Login => return Redirect::to("/login").into_response(),
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Forbidden | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            WebError::Internal(_) => BUSY.to_string(),
            other => other.to_string(),
        };
        (status, page(&message)).into_response()
    }
}

const BUSY: &str = "系统繁忙，请稍后再试。如问题持续，请联系运维人员。";

/// A self-contained page: no template, so it renders even when the
/// template engine is what failed.
fn page(message: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>提示</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main class=\"narrow\">\
         <h1>提示</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">返回首页</a></p></main></body></html>",
        minijinja::HtmlEscape(message)
    ))
}

/// What the page says for an error answer that came without one.
fn message_for(status: StatusCode, method: &Method) -> String {
    let reading = method == Method::GET || method == Method::HEAD;
    let said = match status.as_u16() {
        400 | 422 if reading => "网址中的参数格式不正确，请返回上一页重新操作。",
        400 | 422 => "提交的内容格式不正确或不完整，请返回检查后重新提交。",
        404 => return WebError::NotFound.to_string(),
        405 => "不支持此操作方式，请通过页面上的链接或按钮进入。",
        408 => "请求超时，请检查网络后重试。",
        411 | 415 => "提交的内容类型不正确，请通过页面上的表单提交。",
        413 => return WebError::TooLarge.to_string(),
        429 => "操作过于频繁，请稍后再试。",
        431 => "请求头过大，请清除浏览器缓存后重试。",
        s if s >= 500 => BUSY,
        _ => "请求无法处理，请返回上一页重新操作。",
    };
    said.to_string()
}

/// Middleware: an error answer (4xx, 5xx) that is not already an HTML page
/// becomes the Chinese page of `WebError`, keeping its status and headers
/// (`Allow`, `Retry-After`, cookies). What axum said is logged at debug.
pub async fn chinese_rejections(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_page {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    if tracing::enabled!(tracing::Level::DEBUG) {
        let said = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        tracing::debug!(%status, %method, said = %String::from_utf8_lossy(&said), "request refused");
    }
    let html = page(&message_for(status, &method)).0;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, Body::from(html))
}
