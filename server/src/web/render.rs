//! Templates (minijinja, embedded in the binary, HTML auto-escaped) and the
//! context every page gets: the caller, the CSRF token, the system time
//! (the rehearsal clock's when rehearsing).

use super::{AppState, Ctx, WebError};
use crate::accounts::Role;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use minijinja::{context, Environment, Value};

pub struct Templates {
    env: Environment<'static>,
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = &templates![
    "base.html",
    "macros.html",
    "login.html",
    "register.html",
    "registered.html",
    "password.html",
    "home.html",
    "sites.html",
    "staff.html",
    "person.html",
    "import.html",
    "records.html",
    "record.html",
    "warnings.html",
    "warning.html",
    "district.html",
    "notices.html",
    "directory.html",
    "ops.html",
    "admin.html",
    "admin_done.html",
    "admin_import.html",
    "admin_window.html",
    "admin_audit.html",
    "explain.html",
    "ops_instances.html",
    "ops_instance.html",
    "ops_definition.html",
    "policy_versions.html",
    "policy.html",
    "policy_backtest.html",
    "policy_result.html",
];

pub use crate::console::local_time as local;

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        // Printing or iterating a misspelled or missing variable is an
        // error (the page fails, the cause is logged), never a blank on the
        // page; `{% if x %}` on an absent optional value stays allowed.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env.add_filter("dt", |ms: Option<i64>| ms.map(local).unwrap_or_default());
        // One path segment of a URL: unlike `urlencode`, `/` is encoded
        // too, so an id such as `address/day` stays one segment.
        env.add_filter("segment", |s: String| urlencoding::encode(&s).into_owned());
        Templates { env }
    }

    /// Render `name` with the page context and `extra`.
    pub fn page(
        &self,
        app: &AppState,
        ctx: &Ctx,
        name: &str,
        extra: Value,
    ) -> Result<Html<String>, WebError> {
        let me = ctx.account.as_ref().map(|a| {
            let (role, label) = match &a.role {
                Role::Enterprise { .. } => ("enterprise", "企业用户"),
                Role::District { .. } => ("district", "区（市）县住建主管部门"),
                Role::City => ("city", "市住建局"),
                Role::Operator => ("operator", "运维"),
                Role::Admin => ("admin", "系统管理员"),
            };
            context! { username => a.username, role => role, role_label => label }
        });
        let now = app.sys.clock.now();
        // When comparisons run, as workflows/schedules.yaml has it (pages
        // that promise the numbers say when they come).
        let comparison_times = app
            .sys
            .bundle
            .schedules
            .iter()
            .filter(|s| s.workflow == "comparison")
            .flat_map(|s| s.times.iter().map(|t| t.format("%H:%M").to_string()))
            .collect::<Vec<_>>()
            .join("、");
        let base = context! {
            me => me,
            comparison_times => comparison_times,
            csrf => ctx.csrf,
            now => local(now.timestamp_millis()),
            rehearsal => app.sys.adjustable.is_some(),
        };
        let t = self.env.get_template(name).map_err(WebError::internal)?;
        t.render(context! { ..extra, ..base })
            .map(Html)
            .map_err(|e| WebError::internal(format!("{e:#}")))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/app.css"),
    )
}

/// Pages of a list: numbers to link to.
pub fn pages(total: i64, page: i64) -> Value {
    pages_of(total, page, crate::sites::PAGE_SIZE).1
}

/// The page asked for, brought within range, and its pager, for lists of
/// `size` rows a page.
pub fn pages_of(total: i64, page: i64, size: i64) -> (i64, Value) {
    let last = ((total + size - 1) / size).max(1);
    let page = page.clamp(1, last);
    (
        page,
        context! { page => page, last => last, total => total,
        prev => (page > 1).then_some(page - 1), next => (page < last).then_some(page + 1) },
    )
}

/// The 23 districts as `<select>` options (code, 区（市）县).
pub fn district_options(districts: &crate::domain::Districts) -> Vec<Value> {
    districts
        .all()
        .iter()
        .map(|d| context! { code => d.code.as_str(), label => d.area.as_str() })
        .collect()
}
