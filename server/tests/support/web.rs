//! A browser-like client over `web::app()` (no socket): keeps cookies,
//! picks up the CSRF token from the last page, follows nothing
//! automatically. And the system the web tests run on: in-memory SQLite,
//! simulated health commission, SMS to the log, a manual clock.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use engine::clock::ManualClock;
use server::system::{ClockChoice, Paths, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

pub struct Response {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Response {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self
    }
    pub fn assert_redirect(&self, to: &str) -> &Self {
        assert!(
            self.status.is_redirection(),
            "expected a redirect to {to}, got {}: {}",
            self.status,
            self.body
        );
        assert_eq!(self.location.as_deref(), Some(to));
        self
    }
    pub fn contains(&self, s: &str) -> bool {
        self.body.contains(s)
    }
}

#[derive(Clone)]
pub struct Client {
    app: Router,
    pub cookies: BTreeMap<String, String>,
    pub csrf: Option<String>,
}

fn csrf_in(body: &str) -> Option<String> {
    let i = body.find("name=\"_csrf\" value=\"")? + "name=\"_csrf\" value=\"".len();
    Some(body[i..i + 64].to_string())
}

impl Client {
    pub fn new(app: Router) -> Client {
        Client {
            app,
            cookies: BTreeMap::new(),
            csrf: None,
        }
    }

    async fn send(&mut self, req: Request<Body>) -> Response {
        let res = self.app.clone().oneshot(req).await.unwrap();
        for v in res.headers().get_all(header::SET_COOKIE) {
            let s = v.to_str().unwrap();
            let (kv, attrs) = s.split_once(';').unwrap_or((s, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
        let status = res.status();
        let location = res
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        if let Some(t) = csrf_in(&body) {
            self.csrf = Some(t);
        }
        Response {
            status,
            location,
            body,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, path: &str) -> Response {
        let req = Request::get(path)
            .header(header::COOKIE, self.cookie_header())
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    /// POST a form with the current CSRF token added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        let token = self.csrf.clone().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &token)];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// POST exactly these fields (no token added).
    pub async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let req = Request::post(path)
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// POST a multipart file upload, token in the query string as the page does.
    pub async fn upload(&mut self, path: &str, field: &str, file: &str) -> Response {
        let boundary = "XBOUNDARYX";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"staff.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n{file}\r\n--{boundary}--\r\n"
        );
        let token = self.csrf.clone().unwrap_or_default();
        let req = Request::post(format!("{path}?_csrf={token}"))
            .header(header::COOKIE, self.cookie_header())
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// Log in through the form; panics unless it lands on `home`.
    pub async fn login(&mut self, username: &str, password: &str, home: &str) {
        self.get("/login").await.assert_ok();
        self.post("/login", &[("username", username), ("password", password)])
            .await
            .assert_redirect(home);
        // The page after login carries the session's CSRF token.
        self.get(home).await.assert_ok();
    }
}

pub struct World {
    pub sys: System,
    pub clock: Arc<ManualClock>,
    pub app: Router,
    /// username → password of the demo accounts.
    pub passwords: BTreeMap<String, String>,
    pub sim_rates: server::adapters::health_sim::SimRates,
    /// The SQLite file's directory, removed with the world.
    _dir: Option<tempfile::TempDir>,
}

impl World {
    /// The system at `start` (Chengdu time, e.g. "2026-12-01T04:59:00+08:00")
    /// with the demo data, on a SQLite file in a temporary directory (the
    /// embedded default: one writer connection, a pool of readers).
    pub async fn new(start: &str) -> World {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
        let mut w = World::open(&url, start).await;
        w._dir = Some(dir);
        w
    }

    /// The same on a fresh PostgreSQL database named `db` on the server of
    /// `DATABASE_URL_PG`; None (skipped) when that is not set.
    pub async fn postgres(db: &str, start: &str) -> Option<World> {
        let url = engine::testing::fresh_postgres(db).await?;
        Some(World::open(&url, start).await)
    }

    /// `new` with the configuration changed first (gateways, say).
    pub async fn with_config(
        start: &str,
        change: impl FnOnce(&mut server::config::Config),
    ) -> World {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
        let mut w = World::open_with(&url, start, change, Paths::repository()).await;
        w._dir = Some(dir);
        w
    }

    /// `new` on other definitions (a copy of `workflows/` and `rules/`
    /// changed by the test, say).
    pub async fn with_paths(start: &str, paths: Paths) -> World {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display());
        let mut w = World::open_with(&url, start, |_| {}, paths).await;
        w._dir = Some(dir);
        w
    }

    async fn open(database_url: &str, start: &str) -> World {
        World::open_with(database_url, start, |_| {}, Paths::repository()).await
    }

    pub async fn open_with(
        database_url: &str,
        start: &str,
        change: impl FnOnce(&mut server::config::Config),
        paths: Paths,
    ) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
            .with_test_writer()
            .try_init();
        let clock = Arc::new(ManualClock::new(start.parse().unwrap()));
        let mut config = server::config::Config {
            database_url: database_url.into(),
            ..Default::default()
        };
        config.health.sim_rates.positive = 0.05;
        config.health.sim_rates.red = 0.03;
        config.health.sim_rates.yellow = 0.03;
        change(&mut config);
        let sys = System::open(
            &config,
            &paths,
            ClockChoice::Adjustable(clock.clone()),
            engine::runtime::Options::default(),
        )
        .await
        .unwrap();
        let now = clock.now_ms();
        let creds = server::demo::seed(&sys.pool, &sys.districts, now)
            .await
            .unwrap();
        let passwords = creds
            .into_iter()
            .map(|c| (c.username, c.password))
            .collect();
        // The runtime's first round: schedules start counting from here.
        sys.runtime.run_until_idle().await.unwrap();
        let app = server::web::app(sys.clone(), Default::default());
        World {
            sys,
            clock,
            app,
            passwords,
            sim_rates: config.health.sim_rates,
            _dir: None,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.app.clone())
    }

    pub async fn logged_in(&self, username: &str, home: &str) -> Client {
        let mut c = self.client();
        c.login(username, &self.passwords[username], home).await;
        c
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.sys.pool)
            .await
            .unwrap()
    }

    pub async fn settle(&self) {
        self.sys.runtime.run_until_idle().await.unwrap();
    }

    /// A second enterprise in 青羊区 with one address, one person and an
    /// account; returns (enterprise id, address id, staff id, username, password).
    pub async fn other_enterprise(&self) -> (String, String, String, String, String) {
        let pool = &self.sys.pool;
        let now = self.clock.now_ms();
        for sql in [
            format!("INSERT INTO enterprises (id, credit_code, name, kind, district, registered_address, contact_name, contact_mobile, liaison_name, liaison_mobile, created_at, updated_at) \
                     VALUES ('ent-b', '{}', '青羊乙公司', 'design', 'qingyang', '青羊区某路1号', '赵六', '13800000002', '钱七', '13900000002', {now}, {now})", server::demo::credit_code(2)),
            format!("INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ('addr-b', 'ent-b', '青羊区某路1号', 'qingyang', {now})"),
            format!("INSERT INTO staff (id, enterprise_id, address_id, name, id_number, created_at, updated_at) VALUES ('staff-b', 'ent-b', 'addr-b', '孙八', '{}', {now}, {now})", server::demo::id_number(900)),
        ] {
            sqlx::query(&sql).execute(pool).await.unwrap();
        }
        server::accounts::upsert_account(
            pool,
            "qyb",
            &server::accounts::Role::Enterprise {
                id: "ent-b".into(),
                district: "qingyang".into(),
            },
            Some("13800000002"),
            "Passw0rdB",
            false,
            now,
        )
        .await
        .unwrap();
        (
            "ent-b".into(),
            "addr-b".into(),
            "staff-b".into(),
            "qyb".into(),
            "Passw0rdB".into(),
        )
    }
}

pub trait NowMs {
    fn now_ms(&self) -> i64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> i64 {
        use engine::clock::Clock;
        self.now().timestamp_millis()
    }
}

/// Each named `async fn(World)` of the including test file on a SQLite file
/// and, when DATABASE_URL_PG is set, on a fresh PostgreSQL database named
/// `{prefix}_{name}`; the file defines `START` (Chengdu time).
#[macro_export]
macro_rules! on_both_databases {
    ($prefix:literal: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::World::new(super::START).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(w) = super::World::postgres(concat!($prefix, "_", stringify!($name)), super::START).await {
                        super::$name(w).await;
                    }
                }
            )*
        }
    };
}
