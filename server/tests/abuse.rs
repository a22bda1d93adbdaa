//! Abuse resistance (issue 10): a bound on concurrent password hashing,
//! login limits that hold under concurrency, lock-out that a stranger
//! cannot turn against the real user, registration and SMS floods, slow
//! clients against `serve_with`, the CSV error list, and the SMS-code
//! login that may set a password without the old one.
//!
//! Client addresses: the application trusts `X-Forwarded-For` here, and
//! each simulated client is the app with that header set, so one test can
//! play many addresses. The clock is the manual one; the only waits on the
//! wall are bounded waits for the server to cut slow connections.

#[path = "support/web.rs"]
mod web;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::Router;
use server::accounts::Hashing;
use std::time::Duration;
use web::{Client, NowMs, World};

const START: &str = "2026-12-01T09:00:00+08:00";

/// Each test on SQLite and, when DATABASE_URL_PG is set, on a fresh
/// PostgreSQL database.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::World::new(super::START).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(w) = super::World::postgres(concat!("abuse_", stringify!($name)), super::START).await {
                        super::$name(w).await;
                    }
                }
            )*
        }
    };
}

on_both_databases!(
    concurrent_logins_stay_within_the_hashing_bound,
    a_full_hashing_bound_refuses_quickly_with_a_chinese_message,
    parallel_wrong_passwords_are_checked_at_most_the_limit,
    a_stranger_cannot_lock_the_real_user_out_and_the_sms_path_stays_open,
    registration_floods_are_refused_per_mobile_and_per_client,
    sms_code_floods_and_parallel_code_guesses_are_refused,
    an_sms_login_sets_a_new_password_without_the_old_one,
    the_csv_error_list_is_bounded,
);

const USER: &str = server::demo::ENTERPRISE_USER;

/// The application as the web tests build it, but trusting the proxy
/// header and hashing under `hashing`.
fn app(w: &World, hashing: &Hashing) -> Router {
    server::web::app_with_hashing(
        w.sys.clone(),
        server::web::Options {
            trust_forwarded_for: true,
            ..Default::default()
        },
        hashing.clone(),
    )
}

/// A browser at client address `ip`.
fn at(app: &Router, ip: &str) -> Client {
    let ip = HeaderValue::from_str(ip).unwrap();
    Client::new(app.clone().layer(tower::util::MapRequestLayer::new(
        move |mut r: Request<Body>| {
            r.headers_mut().insert("x-forwarded-for", ip.clone());
            r
        },
    )))
}

/// A browser at `ip` with the login page loaded (so it has a CSRF token).
async fn at_login(app: &Router, ip: &str) -> Client {
    let mut c = at(app, ip);
    c.get("/login").await.assert_ok();
    c
}

/// Run `n` copies of `f(i)` at once and collect their results in order.
async fn together<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Log out (with the session's token, from its home page) and load the
/// login page again.
async fn log_out(c: &mut Client) {
    c.get("/home").await.assert_ok();
    c.post("/logout", &[]).await.assert_redirect("/login");
    c.get("/login").await.assert_ok();
}

/// The page of a successful registration.
fn registered(r: &web::Response) -> bool {
    r.status == StatusCode::OK && r.contains("id=\"new-username\"")
}

/// The code of the last login-code SMS (send each at a later clock time).
async fn latest_code(w: &World) -> String {
    // The phone's copy: sms_log keeps the code as ******.
    w.sys.sms_inbox.last_param("login_code", "code").unwrap()
}

async fn concurrent_logins_stay_within_the_hashing_bound(w: World) {
    let hashing = Hashing::new(2, Duration::from_secs(600));
    let app = app(&w, &hashing);
    // 24 logins at once, from 24 addresses, to 12 accounts: one right and
    // one wrong password each.
    let accounts: Vec<(String, String)> = w
        .passwords
        .iter()
        .take(12)
        .map(|(u, p)| (u.clone(), p.clone()))
        .collect();
    assert_eq!(accounts.len(), 12);
    let mut clients = Vec::new();
    for i in 0..24 {
        clients.push(at_login(&app, &format!("10.1.0.{i}")).await);
    }
    let results = together(24, |i| {
        let mut c = clients[i].clone();
        let (user, pw) = accounts[i / 2].clone();
        let pw = if i % 2 == 0 { pw } else { "wrong-1".into() };
        async move {
            c.post("/login", &[("username", &user), ("password", &pw)])
                .await
                .status
        }
    })
    .await;
    for (i, status) in results.iter().enumerate() {
        if i % 2 == 0 {
            assert!(status.is_redirection(), "login {i}: {status}");
        } else {
            assert_eq!(*status, StatusCode::BAD_REQUEST, "login {i}");
        }
    }
    // Every one was checked, never more than two at a time.
    assert_eq!(hashing.runs(), 24);
    assert!(hashing.peak() <= 2, "peak {}", hashing.peak());
    assert!(hashing.peak() >= 1);
}

async fn a_full_hashing_bound_refuses_quickly_with_a_chinese_message(w: World) {
    // One slot, no waiting; the test holds the slot itself.
    let hashing = Hashing::new(1, Duration::ZERO);
    let app = app(&w, &hashing);
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let hashing = hashing.clone();
        async move {
            hashing
                .run(move || {
                    let _ = started_tx.send(());
                    held.recv().ok();
                })
                .await
                .unwrap();
        }
    });
    started.await.unwrap();
    let pw = w.passwords[USER].clone();
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(at_login(&app, &format!("10.2.0.{i}")).await);
    }
    let results = together(10, |i| {
        let mut c = clients[i].clone();
        let pw = pw.clone();
        async move {
            c.post("/login", &[("username", USER), ("password", &pw)])
                .await
        }
    })
    .await;
    for r in &results {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.contains("系统繁忙，请稍后再试"), "{}", r.body);
    }
    // Registration and the password form answer the same way.
    let mut reg = at(&app, "10.2.1.1");
    reg.get("/register").await.assert_ok();
    let r = reg
        .post(
            "/register",
            &[
                ("name", "成都繁忙测试有限公司"),
                ("credit_code", &server::demo::credit_code(501)),
                ("kind", "construction"),
                ("district", "wuhou"),
                ("registered_address", "武侯区测试路1号"),
                ("contact_name", "测试人"),
                ("contact_mobile", "13912340001"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.contains("系统繁忙，请稍后再试"));
    assert_eq!(hashing.runs(), 0, "nothing ran beside the held slot");
    release.send(()).unwrap();
    holder.await.unwrap();
    assert_eq!(hashing.runs(), 1);
    // Refused attempts were not counted: the same address logs in now.
    let mut c = clients[0].clone();
    c.post("/login", &[("username", USER), ("password", &pw)])
        .await
        .assert_redirect("/home");
    assert!(hashing.peak() <= 1);
}

async fn parallel_wrong_passwords_are_checked_at_most_the_limit(w: World) {
    let hashing = Hashing::new(2, Duration::from_secs(600));
    let app = app(&w, &hashing);
    // 100 guesses at once from one address: five are checked.
    let c = at_login(&app, "10.3.0.1").await;
    let results = together(100, |i| {
        let mut c = c.clone();
        async move {
            c.post(
                "/login",
                &[("username", USER), ("password", &format!("guess-{i}"))],
            )
            .await
        }
    })
    .await;
    let checked = results
        .iter()
        .filter(|r| r.contains("账号或密码错误"))
        .count();
    let refused = results
        .iter()
        .filter(|r| r.contains("尝试次数过多"))
        .count();
    assert_eq!((checked, refused), (5, 95));
    assert_eq!(hashing.runs(), 5);

    // 100 guesses at once from 100 addresses against another account: the
    // account's free failures, then back-off.
    let before = hashing.runs();
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(at_login(&app, &format!("10.4.{}.{}", i / 200, i % 200)).await);
    }
    let results = together(100, |i| {
        let mut c = clients[i].clone();
        async move {
            c.post(
                "/login",
                &[
                    ("username", "jinjiang"),
                    ("password", &format!("guess-{i}")),
                ],
            )
            .await
        }
    })
    .await;
    let checked = results
        .iter()
        .filter(|r| r.contains("账号或密码错误"))
        .count();
    assert_eq!(checked, 10);
    assert_eq!(hashing.runs() - before, 10);
    assert!(results
        .iter()
        .all(|r| r.contains("账号或密码错误") || r.contains("尝试次数过多")));
}

async fn a_stranger_cannot_lock_the_real_user_out_and_the_sms_path_stays_open(w: World) {
    let hashing = Hashing::new(2, Duration::from_secs(600));
    let app = app(&w, &hashing);
    let pw = w.passwords[USER].clone();
    // A stranger guesses from one address until refused.
    let mut stranger = at_login(&app, "198.51.100.66").await;
    for _ in 0..5 {
        let r = stranger
            .post("/login", &[("username", USER), ("password", "wrong")])
            .await;
        assert!(r.contains("账号或密码错误"));
    }
    let r = stranger
        .post("/login", &[("username", USER), ("password", "wrong")])
        .await;
    assert!(r.contains("尝试次数过多"));
    // The real user, from their own address, is not affected.
    let mut user = at_login(&app, "203.0.113.7").await;
    user.post("/login", &[("username", USER), ("password", &pw)])
        .await
        .assert_redirect("/home");
    log_out(&mut user).await;

    // A botnet: guesses from 40 addresses push the account into back-off.
    for i in 0..40 {
        let mut bot = at_login(&app, &format!("192.0.2.{i}")).await;
        bot.post("/login", &[("username", USER), ("password", "wrong")])
            .await;
    }
    let r = at_login(&app, "192.0.2.200")
        .await
        .post("/login", &[("username", USER), ("password", "wrong")])
        .await;
    assert!(r.contains("尝试次数过多"), "{}", r.body);
    // Still the real user logs in by password from the address they used
    // before.
    user.post("/login", &[("username", USER), ("password", &pw)])
        .await
        .assert_redirect("/home");
    log_out(&mut user).await;
    // From a new address (a hotel) the password waits out the back-off ...
    let mut away = at_login(&app, "203.0.113.99").await;
    let r = away
        .post("/login", &[("username", USER), ("password", &pw)])
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.contains("尝试次数过多"), "{}", r.body);
    // ... but the SMS path stays open.
    let r = away.post("/login/code", &[("username", USER)]).await;
    assert!(r.contains("验证码已发送"), "{}", r.body);
    let code = latest_code(&w).await;
    away.post("/login/sms", &[("username", USER), ("code", &code)])
        .await
        .assert_redirect("/home");
    // That address is known now; and the back-off is bounded anyway: for
    // another new address the password works again after it.
    log_out(&mut away).await;
    away.post("/login", &[("username", USER), ("password", &pw)])
        .await
        .assert_redirect("/home");
    let mut other = at_login(&app, "203.0.113.100").await;
    assert!(other
        .post("/login", &[("username", USER), ("password", &pw)])
        .await
        .contains("尝试次数过多"));
    w.clock.advance(Duration::from_secs(16 * 60));
    other
        .post("/login", &[("username", USER), ("password", &pw)])
        .await
        .assert_redirect("/home");
}

fn registration(n: u32, mobile: &str) -> Vec<(&'static str, String)> {
    vec![
        ("name", format!("成都洪水测试{n}有限公司")),
        ("credit_code", server::demo::credit_code(1000 + n)),
        ("kind", "construction".into()),
        ("district", "wuhou".into()),
        ("registered_address", format!("武侯区测试路{n}号")),
        ("contact_name", "测试人".into()),
        ("contact_mobile", mobile.into()),
    ]
}

async fn credentials_sent(w: &World, mobile: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM sms_log WHERE template = 'account_created' AND phone = $1",
    )
    .bind(mobile)
    .fetch_one(&w.sys.pool)
    .await
    .unwrap()
}

async fn registration_floods_are_refused_per_mobile_and_per_client(w: World) {
    let hashing = Hashing::new(2, Duration::from_secs(600));
    let app = app(&w, &hashing);
    // 15 registrations at once, from 15 addresses, all to one mobile.
    let mut clients = Vec::new();
    for i in 0..15 {
        let mut c = at(&app, &format!("10.5.0.{i}"));
        c.get("/register").await.assert_ok();
        clients.push(c);
    }
    let victim = "13912345000";
    let results = together(15, |i| {
        let mut c = clients[i].clone();
        async move {
            let f = registration(i as u32, victim);
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.post("/register", &f).await
        }
    })
    .await;
    let ok = results.iter().filter(|r| registered(r)).count();
    let refused = results
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS && r.contains("尝试次数过多"))
        .count();
    assert_eq!((ok, refused), (3, 12));
    assert_eq!(credentials_sent(&w, victim).await, 3);
    assert_eq!(hashing.runs(), 3);

    // 15 from one address, each to a different mobile: ten an hour.
    let mut c = at(&app, "10.6.0.1");
    c.get("/register").await.assert_ok();
    let results = together(15, |i| {
        let mut c = c.clone();
        async move {
            let f = registration(100 + i as u32, &format!("139123451{i:02}"));
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.post("/register", &f).await
        }
    })
    .await;
    let ok = results.iter().filter(|r| registered(r)).count();
    assert_eq!(ok, 10);
    // Bad input is answered at its field and does not count.
    let mut f = registration(200, "12345");
    f[1].1 = server::demo::credit_code(1200);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = c.post("/register", &f).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("手机号"));
    // An hour later the address may register again.
    w.clock.advance(Duration::from_secs(3601));
    let f = registration(201, "13912345201");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(registered(&c.post("/register", &f).await));
}

async fn sms_code_floods_and_parallel_code_guesses_are_refused(w: World) {
    let hashing = Hashing::new(2, Duration::from_secs(600));
    let app = app(&w, &hashing);
    let sent = |w: &World| {
        let pool = w.sys.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM sms_log WHERE template = 'login_code'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // 20 code requests at once for one account from 20 addresses: one SMS.
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(at_login(&app, &format!("10.7.0.{i}")).await);
    }
    let results = together(20, |i| {
        let mut c = clients[i].clone();
        async move { c.post("/login/code", &[("username", USER)]).await }
    })
    .await;
    assert_eq!(
        results
            .iter()
            .filter(|r| r.contains("验证码已发送"))
            .count(),
        1
    );
    assert_eq!(sent(&w).await, 1);
    // Ten an hour per mobile, one a minute.
    for _ in 0..12 {
        w.clock.advance(Duration::from_secs(61));
        let mut c = at_login(&app, "10.7.1.1").await;
        c.post("/login/code", &[("username", USER)]).await;
    }
    assert_eq!(sent(&w).await, 10);
    // Twenty an hour per client, whatever the accounts.
    let c = at_login(&app, "10.7.2.1").await;
    let results = together(30, |i| {
        let mut c = c.clone();
        async move {
            c.post("/login/code", &[("username", &format!("nobody{i}"))])
                .await
        }
    })
    .await;
    assert_eq!(
        results.iter().filter(|r| r.contains("如账号存在")).count(),
        20
    );
    // 30 guesses at once at a fresh code from 30 addresses: five counted.
    w.clock.advance(Duration::from_secs(3601));
    let mut owner = at_login(&app, "10.7.3.1").await;
    assert!(owner
        .post("/login/code", &[("username", USER)])
        .await
        .contains("验证码已发送"));
    let code = latest_code(&w).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let mut clients = Vec::new();
    for i in 0..30 {
        clients.push(at_login(&app, &format!("10.8.0.{i}")).await);
    }
    let results = together(30, |i| {
        let mut c = clients[i].clone();
        async move {
            c.post("/login/sms", &[("username", USER), ("code", wrong)])
                .await
        }
    })
    .await;
    assert!(results.iter().all(|r| r.contains("验证码错误或已过期")));
    let attempts: i64 = sqlx::query_scalar(
        "SELECT attempts FROM sms_codes WHERE username = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(USER)
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 5);
    // Per address, wrong codes are limited too (a stranger spoils few codes).
    let mut guesser = at_login(&app, "10.9.0.1").await;
    for _ in 0..10 {
        guesser
            .post("/login/sms", &[("username", USER), ("code", wrong)])
            .await;
    }
    let r = guesser
        .post("/login/sms", &[("username", USER), ("code", wrong)])
        .await;
    assert!(r.contains("尝试次数过多"), "{}", r.body);
}

async fn an_sms_login_sets_a_new_password_without_the_old_one(w: World) {
    let hashing = Hashing::new(2, Duration::from_secs(600));
    let app = app(&w, &hashing);
    // An account switched to SMS login: a password nobody was told.
    let now = w.clock.now_ms();
    server::accounts::upsert_account(
        &w.sys.pool,
        "qysms",
        &server::accounts::Role::Enterprise {
            id: server::demo::ENTERPRISE_ID.into(),
            district: "jinjiang".into(),
        },
        Some("13800000077"),
        &server::accounts::generate_password(),
        true,
        now,
    )
    .await
    .unwrap();
    let mut c = at_login(&app, "10.10.0.1").await;
    assert!(c
        .post("/login/code", &[("username", "qysms")])
        .await
        .contains("验证码已发送"));
    let code = latest_code(&w).await;
    c.post("/login/sms", &[("username", "qysms"), ("code", &code)])
        .await
        .assert_redirect("/password");
    let r = c.get("/password").await;
    r.assert_ok();
    assert!(r.contains("无需填写原密码"));
    assert!(!r.contains("current_password"));
    // A new password that breaks the rules is still refused.
    let r = c
        .post(
            "/password",
            &[("new_password", "short"), ("confirm", "short")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("密码至少8位") && !r.contains("原密码不正确"));
    c.post(
        "/password",
        &[("new_password", "SmsNewPass9"), ("confirm", "SmsNewPass9")],
    )
    .await
    .assert_redirect("/home");
    c.get("/home").await.assert_ok();
    // The new password logs in.
    let mut p = at_login(&app, "10.10.0.2").await;
    p.post(
        "/login",
        &[("username", "qysms"), ("password", "SmsNewPass9")],
    )
    .await
    .assert_redirect("/home");
    // A session started by password must still give the old one.
    let r = p.get("/password").await;
    assert!(r.contains("current_password"));
    let r = p
        .post(
            "/password",
            &[("new_password", "Another9x"), ("confirm", "Another9x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("原密码不正确"));
    // A user who forgot the password: SMS code with "忘记密码", straight to
    // the form, no old password.
    w.clock.advance(Duration::from_secs(1));
    let mut f = at_login(&app, "10.10.0.3").await;
    assert!(f.get("/login").await.contains("忘记密码"));
    assert!(f
        .post("/login/code", &[("username", USER)])
        .await
        .contains("验证码已发送"));
    let code = latest_code(&w).await;
    f.post(
        "/login/sms",
        &[("username", USER), ("code", &code), ("reset", "1")],
    )
    .await
    .assert_redirect("/password");
    let r = f.get("/password").await;
    assert!(r.contains("无需填写原密码") && !r.contains("current_password"));
    f.post(
        "/password",
        &[("new_password", "Forgot2026x"), ("confirm", "Forgot2026x")],
    )
    .await
    .assert_redirect("/home");
    let mut g = at_login(&app, "10.10.0.4").await;
    g.post("/login", &[("username", USER), ("password", "Forgot2026x")])
        .await
        .assert_redirect("/home");
    // The SMS proof lasts a while, not the whole session.
    w.clock.advance(Duration::from_secs(16 * 60));
    let r = c.get("/password").await;
    r.assert_ok();
    assert!(r.contains("current_password"));
    let r = c
        .post(
            "/password",
            &[("new_password", "Another9x"), ("confirm", "Another9x")],
        )
        .await;
    assert!(r.contains("原密码不正确"));
}

async fn the_csv_error_list_is_bounded(w: World) {
    let mut e = w.logged_in(USER, "/home").await;
    e.get("/staff/import").await.assert_ok();
    // 100,000 lines, each with one error (a bad id number; the address is
    // one of the enterprise's, short so the file stays under the limit).
    let address = "锦江区1号";
    sqlx::query(
        "INSERT INTO addresses (id, enterprise_id, address, district, created_at) VALUES ('addr-short', $1, $2, 'jinjiang', $3)",
    )
    .bind(server::demo::ENTERPRISE_ID)
    .bind(address)
    .bind(w.clock.now_ms())
    .execute(&w.sys.pool)
    .await
    .unwrap();
    let mut csv = String::from("姓名,身份证号,手机号,办公地址\n");
    for _ in 0..100_000 {
        csv.push_str("张三,1,,");
        csv.push_str(address);
        csv.push('\n');
    }
    assert!(csv.len() < server::web::MAX_BODY - 1000, "{}", csv.len());
    let r = e.upload("/staff/import", "file", &csv).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.contains("共100000处问题"),
        "{}",
        &r.body[..2000.min(r.body.len())]
    );
    assert_eq!(r.body.matches("<li>第").count(), 100);
    assert!(r.contains("以及另外 99,900 处错误"));
    assert!(r.body.len() < 64 * 1024, "page of {} bytes", r.body.len());
    assert_eq!(
        w.count("SELECT COUNT(*) FROM staff WHERE name = '张三'")
            .await,
        0
    );
}

/// Slow clients against the real server: a head sent in part and never
/// finished, and a body that never arrives, are cut off by the timeouts
/// while `/healthz` keeps answering, and never more connections are open
/// than the cap. Not a database test: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_while_healthz_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new(START).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = server::web::ServeLimits {
        header_read: Duration::from_millis(300),
        request: Duration::from_millis(500),
        max_connections: 8,
    };
    let server = tokio::spawn(server::web::serve_with(listener, w.app.clone(), limits));
    // Bounded: every wait below ends within this, or the test fails.
    const BOUND: Duration = Duration::from_secs(20);

    // 20 clients send a request head byte by byte and stop half way: more
    // than the server will hold at once.
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for b in head {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
        }
        slow.push(s);
    }
    // /healthz answers meanwhile.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(BOUND, http.get(format!("http://{addr}/healthz")).send())
        .await
        .expect("/healthz answered in time")
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    assert!(started.elapsed() < BOUND);
    // Every slow client was cut off: its read ends (closed or reset)
    // without an answer.
    for mut s in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(BOUND, s.read_to_end(&mut buf))
            .await
            .expect("slow connection closed in time");
        assert!(
            read.is_err() || buf.is_empty() || String::from_utf8_lossy(&buf).contains(" 408 "),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }

    // A body that never comes: the request times out with 408.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n_csrf=",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut buf))
        .await
        .expect("slow body cut off in time");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("请求超时"), "{answer}");

    // An idle keep-alive connection ends too.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut buf))
        .await
        .expect("idle connection closed in time");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));

    // And the server still answers.
    let r = tokio::time::timeout(BOUND, http.get(format!("http://{addr}/healthz")).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    server.abort();
}

/// The cap on open connections holds: with two slow clients holding both
/// places, a third connection is not served until the header-read timeout
/// cuts one of them, and then it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_connection_cap_holds_and_frees_as_slow_clients_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new(START).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let header_read = Duration::from_millis(800);
    let limits = server::web::ServeLimits {
        header_read,
        request: Duration::from_secs(5),
        max_connections: 2,
    };
    let server = tokio::spawn(server::web::serve_with(listener, w.app.clone(), limits));
    const BOUND: Duration = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut buf))
        .await
        .expect("answered once a place was free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    // Not before a slow client was cut: the cap held meanwhile (with no
    // cap it is answered at once).
    assert!(
        started.elapsed() >= header_read,
        "answered after {:?}",
        started.elapsed()
    );
    drop(slow);
    server.abort();
}

/// The default cap leaves descriptors for the database: half the open-file
/// limit, within bounds.
#[test]
fn the_default_connection_cap_is_bounded() {
    let n = server::web::default_max_connections();
    assert!((64..=10_000).contains(&n), "{n}");
    let d = server::web::ServeLimits::default();
    assert_eq!(d.max_connections, n);
    assert!(d.header_read < d.request);
}
