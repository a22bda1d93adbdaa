//! The one HTTP error type. Internal errors are logged with their cause and
//! shown as a generic page; nothing internal reaches the browser. Refusals
//! (not found, not allowed, expired form) are 4xx pages in Chinese.

use axum::http::StatusCode;
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
    #[error("internal: {0}")]
    Internal(String),
}

impl WebError {
    pub fn internal(e: impl std::fmt::Display) -> WebError {
        WebError::Internal(e.to_string())
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
            WebError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            WebError::Internal(_) => {
                "系统繁忙，请稍后再试。如问题持续，请联系运维人员。".to_string()
            }
            other => other.to_string(),
        };
        // A self-contained page: no template, so it renders even when the
        // template engine is what failed.
        let body = format!(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>提示</title>\
             <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main class=\"narrow\">\
             <h1>提示</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">返回首页</a></p></main></body></html>",
            minijinja::HtmlEscape(&message)
        );
        (status, Html(body)).into_response()
    }
}
