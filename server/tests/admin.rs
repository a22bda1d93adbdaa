//! Accounts administration (DOMAIN.md R1.5–R1.7) through `app()`: the
//! administrator's pages (create, disable, enable, reset; every other role
//! refused), the bulk import of 已有账号的企业 (a bad row saves nothing and
//! is shown with its line; a good file imports and its enterprises log in;
//! importing again creates nothing), and the city window's switch to SMS
//! login (recorded with who, when, documents and mobile; the enterprise is
//! texted and then logs in by SMS code). SMS are captured by a gateway of
//! the test's own, so nothing depends on how the log gateway stores them.

#[path = "support/web.rs"]
mod web;

use axum::http::StatusCode;
use axum::Router;
use server::adapters::sms::{Error as SmsError, Message, SmsGateway};
use server::adapters::BoxFuture;
use std::sync::{Arc, Mutex};
use web::{Client, NowMs, World};

/// A Tuesday morning: the window is open.
const START: &str = "2026-12-01T09:30:00+08:00";

on_both_databases!("admin":
    administrators_create_disable_enable_and_reset_accounts_and_no_one_else_can,
    enterprise_import_saves_nothing_on_a_bad_row_and_imports_a_good_file_once,
    the_city_window_switches_an_enterprise_to_sms_login_and_records_it,
    an_accounts_import_larger_than_one_statement_saves_each_account_once,
);

/// The SMS handed to the gateway, in order.
#[derive(Default)]
struct Captured(Mutex<Vec<Message>>);

impl SmsGateway for Captured {
    fn send(&self, m: Message) -> BoxFuture<Result<(), SmsError>> {
        self.0.lock().unwrap().push(m);
        Box::pin(async { Ok(()) })
    }
}

impl Captured {
    fn all(&self) -> Vec<Message> {
        self.0.lock().unwrap().clone()
    }
    /// The latest message of `template` to `phone`.
    fn last(&self, template: &str, phone: &str) -> Message {
        self.all()
            .into_iter()
            .rev()
            .find(|m| m.template == template && m.phone == phone)
            .unwrap_or_else(|| panic!("no {template} SMS to {phone}: {:?}", self.all()))
    }
}

/// The app on the world's system with SMS captured.
fn app_with_capture(w: &World) -> (Router, Arc<Captured>) {
    let sms = Arc::new(Captured::default());
    let mut sys = w.sys.clone();
    sys.sms = sms.clone();
    (server::web::app(sys, Default::default()), sms)
}

const ADMIN_PASSWORD: &str = "Adm1nPassw0rd";

/// An administrator (made directly, no forced change) logged in.
async fn admin_client(w: &World, app: &Router) -> Client {
    server::accounts::upsert_account(
        &w.sys.pool,
        "root",
        &server::accounts::Role::Admin,
        None,
        ADMIN_PASSWORD,
        false,
        w.clock.now_ms(),
    )
    .await
    .unwrap();
    let mut c = Client::new(app.clone());
    c.login("root", ADMIN_PASSWORD, "/admin").await;
    c
}

/// The password a one-time page shows.
fn shown_password(body: &str) -> String {
    let start = body
        .find("id=\"done-password\"><code>")
        .unwrap_or_else(|| panic!("no password shown: {body}"))
        + "id=\"done-password\"><code>".len();
    body[start..start + body[start..].find("</code>").unwrap()].to_string()
}

/// Log in with a generated password, change it as forced, land on `home`.
async fn first_login(app: &Router, username: &str, password: &str, home: &str) -> Client {
    let mut c = Client::new(app.clone());
    c.get("/login").await.assert_ok();
    c.post("/login", &[("username", username), ("password", password)])
        .await
        .assert_redirect("/password");
    c.get("/password").await.assert_ok();
    c.post(
        "/password",
        &[
            ("current_password", password),
            ("new_password", "Chang3dPassword"),
            ("confirm", "Chang3dPassword"),
        ],
    )
    .await
    .assert_redirect(home);
    c.get(home).await.assert_ok();
    c
}

async fn login_refused(app: &Router, username: &str, password: &str) {
    let mut c = Client::new(app.clone());
    c.get("/login").await.assert_ok();
    let r = c
        .post("/login", &[("username", username), ("password", password)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.contains("账号或密码错误"), "{}", r.body);
}

/// Every `<input id>` and `<select id>` of a page has a `<label for>`.
fn assert_labelled(path: &str, body: &str) {
    for tag in [
        "<input id=\"",
        "<select id=\"",
        "<input type=\"checkbox\" id=\"",
    ] {
        for (i, _) in body.match_indices(tag) {
            let rest = &body[i + tag.len()..];
            let id = &rest[..rest.find('"').unwrap()];
            assert!(
                body.contains(&format!("for=\"{id}\"")),
                "{path}: {id} has no label"
            );
        }
    }
}

async fn administrators_create_disable_enable_and_reset_accounts_and_no_one_else_can(w: World) {
    let (app, sms) = app_with_capture(&w);
    // The first administrator as `server admin create-admin` makes it:
    // generated password, changed at first login.
    let first = server::admin::create_account(
        &w.sys.pool,
        &w.sys.districts,
        &server::admin::NewAccount {
            username: "chief".into(),
            role: "admin".into(),
            ..Default::default()
        },
        "test",
        w.clock.now_ms(),
    )
    .await
    .unwrap();
    let mut a = first_login(&app, "chief", &first, "/admin").await;
    let r = a.get("/admin").await;
    r.assert_ok();
    assert!(r.contains("账号管理") && r.contains("新建账号") && r.contains("jinjiang"));
    assert_labelled("/admin", &r.body);

    // Bad input: errors at the fields, nothing saved.
    let before = w.count("SELECT COUNT(*) FROM accounts").await;
    let r = a
        .post(
            "/admin/accounts",
            &[
                ("username", "a b"),
                ("role", "district"),
                ("district", "nowhere"),
                ("mobile", "12345"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for field in ["username", "district", "mobile"] {
        assert!(
            r.contains(&format!("id=\"{field}-error\"")),
            "{field}: {}",
            r.body
        );
    }
    assert!(r.contains("value=\"a b\""), "the form keeps what was typed");
    let r = a
        .post(
            "/admin/accounts",
            &[("username", "jinjiang"), ("role", "city")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("该账号已存在"));
    assert_eq!(w.count("SELECT COUNT(*) FROM accounts").await, before);

    // A district account: password shown once, forced change at first login.
    let r = a
        .post(
            "/admin/accounts",
            &[
                ("username", "wuhou2"),
                ("role", "district"),
                ("district", "wuhou"),
                ("mobile", "13912340000"),
            ],
        )
        .await;
    r.assert_ok();
    let password = shown_password(&r.body);
    let mut d = first_login(&app, "wuhou2", &password, "/district").await;
    assert_eq!(
        w.count("SELECT COUNT(*) FROM accounts WHERE username = 'wuhou2' AND role = 'district' AND district = 'wuhou'")
            .await,
        1
    );

    // Nobody else reaches the administrator's pages.
    assert_eq!(d.get("/admin").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        d.post(
            "/admin/accounts",
            &[("username", "x123"), ("role", "admin")]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        d.post("/admin/accounts/disable", &[("username", "chief")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(d.get("/window").await.status, StatusCode::FORBIDDEN);
    for (user, home) in [
        ("operator", "/ops"),
        ("city", "/policy"),
        (server::demo::ENTERPRISE_USER, "/home"),
    ] {
        let mut c = Client::new(app.clone());
        c.login(user, &w.passwords[user], home).await;
        assert_eq!(
            c.get("/admin").await.status,
            StatusCode::FORBIDDEN,
            "{user}"
        );
        assert_eq!(
            c.get("/admin/enterprises").await.status,
            StatusCode::FORBIDDEN,
            "{user}"
        );
    }
    Client::new(app.clone())
        .get("/admin")
        .await
        .assert_redirect("/login");
    // Without the CSRF token even the administrator is refused.
    let r = a
        .post_raw("/admin/accounts/disable", &[("username", "wuhou2")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Disabled: the open session ends and the account cannot log in.
    a.get("/admin").await;
    a.post("/admin/accounts/disable", &[("username", "wuhou2")])
        .await
        .assert_redirect("/admin");
    d.get("/district").await.assert_redirect("/login");
    login_refused(&app, "wuhou2", "Chang3dPassword").await;
    let r = a.get("/admin").await;
    assert!(r.contains("已停用"));
    // Nor by SMS code: no code is sent to a disabled account.
    let mut s = Client::new(app.clone());
    s.get("/login").await;
    s.post("/login/code", &[("username", "wuhou2")]).await;
    assert!(sms.all().iter().all(|m| m.template != "login_code"));
    // An administrator cannot disable themselves.
    let r = a
        .post("/admin/accounts/disable", &[("username", "chief")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Enabled again: logs in.
    a.get("/admin").await;
    a.post("/admin/accounts/enable", &[("username", "wuhou2")])
        .await
        .assert_redirect("/admin");
    let mut d = Client::new(app.clone());
    d.login("wuhou2", "Chang3dPassword", "/district").await;

    // Reset, shown once: the old password stops working, the session ends,
    // the new one must be changed.
    a.get("/admin").await;
    let r = a
        .post(
            "/admin/accounts/reset",
            &[("username", "wuhou2"), ("delivery", "show")],
        )
        .await;
    r.assert_ok();
    let reset = shown_password(&r.body);
    d.get("/district").await.assert_redirect("/login");
    login_refused(&app, "wuhou2", "Chang3dPassword").await;
    first_login(&app, "wuhou2", &reset, "/district").await;

    // Reset by SMS to the bound mobile.
    a.get("/admin").await;
    let r = a
        .post(
            "/admin/accounts/reset",
            &[("username", "wuhou2"), ("delivery", "sms")],
        )
        .await;
    r.assert_ok();
    assert!(r.contains("已通过短信发送") && !r.contains("done-password"));
    let m = sms.last("password_reset", "13912340000");
    let texted = m.params["password"].as_str().unwrap().to_string();
    first_login(&app, "wuhou2", &texted, "/district").await;
    // No mobile bound: SMS refused.
    a.get("/admin").await;
    let r = a
        .post(
            "/admin/accounts/reset",
            &[("username", "operator"), ("delivery", "sms")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Every change is in the audit, never a password.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM account_audit WHERE username = 'wuhou2' ORDER BY at, action",
    )
    .fetch_all(&w.sys.pool)
    .await
    .unwrap();
    for a in ["create", "disable", "enable", "reset"] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }
    let details: Vec<Option<String>> = sqlx::query_scalar("SELECT detail FROM account_audit")
        .fetch_all(&w.sys.pool)
        .await
        .unwrap();
    assert!(details
        .iter()
        .flatten()
        .all(|d| !d.contains(&texted) && !d.contains(&reset)));
}

fn code(n: u32) -> String {
    server::demo::credit_code(500 + n)
}

/// Three enterprises: by password with its own account name, by SMS with a
/// generated one, by USB key and CA only with two office addresses.
fn good_file() -> String {
    format!(
        "统一社会信用代码,企业名称,企业类型,所属区（市）县,注册地址,在蓉办公地址,联系人,联系人手机,登录方式,账号\n\
         {},成都甲建设有限公司,施工企业,锦江区,锦江区甲路1号,,张甲,13600000001,password,cdjs001\n\
         {},成都乙监理有限公司,监理企业,wuhou,武侯区乙路2号,武侯区乙路2号,李乙,13600000002,短信,\n\
         \u{feff}{},成都丙设计院,设计企业,青羊区,青羊区丙路3号,青羊区丙路3号；青羊区丙路4号,王丙,13600000003,usb_key、ca,cdbs003\n",
        code(1),
        code(2),
        code(3)
    )
    .replace('\u{feff}', "")
}

async fn import(c: &mut Client, csv: &str) -> web::Response {
    c.get("/admin/enterprises").await.assert_ok();
    c.upload("/admin/enterprises", "file", csv).await
}

async fn enterprise_import_saves_nothing_on_a_bad_row_and_imports_a_good_file_once(w: World) {
    let (app, sms) = app_with_capture(&w);
    let mut a = admin_client(&w, &app).await;
    let r = a.get("/admin/enterprises").await;
    r.assert_ok();
    assert!(r.contains("批量导入已有账号的企业"));
    assert_labelled("/admin/enterprises", &r.body);
    let enterprises = w.count("SELECT COUNT(*) FROM enterprises").await;
    let accounts = w.count("SELECT COUNT(*) FROM accounts").await;
    let addresses = w.count("SELECT COUNT(*) FROM addresses").await;

    // One bad credit code (line 3) and one bad login method (line 4):
    // nothing at all is imported, each problem shown with its line.
    let bad_code = {
        let c = code(2);
        format!("{}{}", &c[..17], if c.ends_with('0') { '1' } else { '0' })
    };
    let bad = good_file()
        .replace(&code(2), &bad_code)
        .replace("usb_key、ca", "fingerprint");
    let r = import(&mut a, &bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.contains("第3行：统一社会信用代码"), "{}", r.body);
    assert!(
        r.contains("第4行：登录方式“fingerprint”无法识别"),
        "{}",
        r.body
    );
    assert!(r.contains("未导入任何内容"));
    assert_eq!(
        w.count("SELECT COUNT(*) FROM enterprises").await,
        enterprises
    );
    assert_eq!(w.count("SELECT COUNT(*) FROM accounts").await, accounts);
    assert_eq!(w.count("SELECT COUNT(*) FROM addresses").await, addresses);
    assert!(sms.all().is_empty());
    // An account name another user has is a row error too.
    let r = import(&mut a, &good_file().replace("cdjs001", "jinjiang")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.contains("第2行：账号“jinjiang”已被其他用户使用"),
        "{}",
        r.body
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM enterprises").await,
        enterprises
    );
    // A huge bad file gives a bounded list.
    let mut many = String::from(
        "统一社会信用代码,企业名称,企业类型,所属区（市）县,注册地址,联系人手机,登录方式\n",
    );
    for i in 0..150 {
        many.push_str(&format!(
            "X{i},公司{i},施工企业,锦江区,某路,13600000001,sms\n"
        ));
    }
    let r = import(&mut a, &many).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.contains("共150处问题") && r.contains("另有50处问题未列出"),
        "{}",
        r.body
    );
    assert_eq!(
        r.body.matches("<li>第").count(),
        server::admin::MAX_ROW_ERRORS
    );

    // The good file.
    let r = import(&mut a, &good_file()).await;
    r.assert_ok();
    assert!(
        r.contains("新增企业 3 家，更新企业 0 家，新开账号 3 个"),
        "{}",
        r.body
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM enterprises").await,
        enterprises + 3
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM addresses a JOIN enterprises e ON e.id = a.enterprise_id WHERE e.name = '成都丙设计院'")
            .await,
        2
    );
    // By password, under its existing account name: credentials texted to
    // the contact, changed at first login.
    let m = sms.last("account_imported", "13600000001");
    assert_eq!(m.params["username"], "cdjs001");
    let password = m.params["password"].as_str().unwrap().to_string();
    let mut e = first_login(&app, "cdjs001", &password, "/home").await;
    assert!(e.get("/home").await.contains("成都甲建设有限公司"));
    // By SMS, generated account name: logs in with a code and is not sent
    // to change a password it never had.
    let m = sms.last("account_imported", "13600000002");
    assert!(m.params.get("password").is_none());
    let generated = m.params["username"].as_str().unwrap().to_string();
    assert!(generated.starts_with("qy"));
    let mut s = Client::new(app.clone());
    s.get("/login").await;
    s.post("/login/code", &[("username", &generated)]).await;
    let code_sms = sms.last("login_code", "13600000002");
    s.post(
        "/login/sms",
        &[
            ("username", &generated),
            ("code", code_sms.params["code"].as_str().unwrap()),
        ],
    )
    .await
    .assert_redirect("/home");
    // USB key / CA only: no password, no bound mobile, until the window.
    login_refused(&app, "cdbs003", "").await;
    assert_eq!(
        w.count("SELECT COUNT(*) FROM accounts WHERE username = 'cdbs003' AND mobile IS NULL AND login_methods = 'usb_key,ca'")
            .await,
        1
    );

    // The same file again: updated, nothing new, no SMS.
    let texts = sms.all().len();
    let accounts = w.count("SELECT COUNT(*) FROM accounts").await;
    let addresses = w.count("SELECT COUNT(*) FROM addresses").await;
    let r = import(
        &mut a,
        &good_file().replace("成都乙监理有限公司", "成都乙监理咨询有限公司"),
    )
    .await;
    r.assert_ok();
    assert!(
        r.contains("新增企业 0 家，更新企业 3 家，新开账号 0 个"),
        "{}",
        r.body
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM enterprises").await,
        enterprises + 3
    );
    assert_eq!(w.count("SELECT COUNT(*) FROM accounts").await, accounts);
    assert_eq!(w.count("SELECT COUNT(*) FROM addresses").await, addresses);
    assert_eq!(
        w.count("SELECT COUNT(*) FROM enterprises WHERE name = '成都乙监理咨询有限公司'")
            .await,
        1
    );
    assert_eq!(sms.all().len(), texts);
    // The first enterprise's password was not reset by the re-import.
    let mut again = Client::new(app.clone());
    again.login("cdjs001", "Chang3dPassword", "/home").await;
}

async fn the_city_window_switches_an_enterprise_to_sms_login_and_records_it(w: World) {
    let (app, sms) = app_with_capture(&w);
    server::admin::import_enterprises(
        &w.sys.pool,
        &*sms,
        &w.sys.districts,
        &good_file(),
        "test",
        w.clock.now_ms(),
    )
    .await
    .unwrap();
    let mut c = Client::new(app.clone());
    c.login("city", &w.passwords["city"], "/policy").await;
    let r = c.get("/policy").await;
    assert!(
        r.contains("href=\"/window\""),
        "the city's menu links the window"
    );
    let r = c.get(&format!("/window?q={}", code(3))).await;
    r.assert_ok();
    assert!(r.contains("成都丙设计院") && r.contains("密码锁、CA证书") && r.contains("未绑定"));
    assert_labelled("/window", &r.body);
    // By account name too.
    assert!(c.get("/window?q=cdbs003").await.contains("成都丙设计院"));
    assert!(c.get("/window?q=nobody").await.contains("未找到该企业"));

    // A document not checked and a bad mobile: refused at the fields,
    // nothing recorded or changed.
    let r = c
        .post(
            "/window/switch",
            &[
                ("credit_code", &code(3)),
                ("documents", "licence"),
                ("documents", "id_card"),
                ("mobile", "1370000"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.contains("id=\"documents-error\"") && r.contains("办理事项情况说明"));
    assert!(r.contains("id=\"mobile-error\""));
    assert!(r.contains("id=\"doc-licence\" name=\"documents\" value=\"licence\" checked"));
    assert_eq!(
        w.count("SELECT COUNT(*) FROM login_method_switches").await,
        0
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM accounts WHERE username = 'cdbs003' AND mobile IS NULL")
            .await,
        1
    );

    // All three checked: switched, recorded, texted.
    let r = c
        .post(
            "/window/switch",
            &[
                ("credit_code", &code(3)),
                ("documents", "licence"),
                ("documents", "id_card"),
                ("documents", "statement"),
                ("mobile", "13700001111"),
                ("agent_name", "赵经办"),
            ],
        )
        .await;
    r.assert_ok();
    assert!(
        r.contains("已短信通知企业") && r.contains("短信验证码"),
        "{}",
        r.body
    );
    assert!(r.contains("办理记录") && r.contains("赵经办"));
    let row = sqlx::query(
        "SELECT s.handled_by, s.handled_at, s.documents, s.mobile, s.username, s.previous_methods \
         FROM login_method_switches s JOIN enterprises e ON e.id = s.enterprise_id WHERE e.credit_code = $1",
    )
    .bind(code(3))
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    use sqlx::Row as _;
    assert_eq!(row.get::<String, _>("handled_by"), "city");
    assert_eq!(row.get::<i64, _>("handled_at"), w.clock.now_ms());
    assert_eq!(
        row.get::<String, _>("documents"),
        r#"["licence","id_card","statement"]"#
    );
    assert_eq!(row.get::<String, _>("mobile"), "13700001111");
    assert_eq!(row.get::<String, _>("username"), "cdbs003");
    assert_eq!(row.get::<String, _>("previous_methods"), "usb_key,ca");
    let told = sms.last("login_method_switched", "13700001111");
    assert_eq!(told.params["username"], "cdbs003");

    // The enterprise now logs in by SMS code on the bound mobile.
    let mut e = Client::new(app.clone());
    e.get("/login").await;
    e.post("/login/code", &[("username", "cdbs003")]).await;
    let m = sms.last("login_code", "13700001111");
    e.post(
        "/login/sms",
        &[
            ("username", "cdbs003"),
            ("code", m.params["code"].as_str().unwrap()),
        ],
    )
    .await
    .assert_redirect("/home");
    assert!(e.get("/home").await.contains("成都丙设计院"));
    // Enterprises and districts have no window.
    assert_eq!(e.get("/window").await.status, StatusCode::FORBIDDEN);
    let mut d = Client::new(app.clone());
    d.login("jinjiang", &w.passwords["jinjiang"], "/district")
        .await;
    assert_eq!(d.get("/window").await.status, StatusCode::FORBIDDEN);
    // Administrators do.
    let mut a = admin_client(&w, &app).await;
    assert!(a.get("/window").await.contains("成都丙设计院"));
}

/// An accounts import of more rows than one multi-row statement takes:
/// every account saved with its audit row, each once, with a generated
/// password that logs in; importing the file again creates nothing.
async fn an_accounts_import_larger_than_one_statement_saves_each_account_once(w: World) {
    let mut csv = String::from("账号,角色,区（市）县,手机号\n");
    for i in 0..401 {
        csv.push_str(&format!("ops{i:03},运维,,\n"));
    }
    csv.push_str("jj-import,district,锦江区,13600000009\n");
    let import = || {
        server::admin::import_accounts(
            &w.sys.pool,
            &w.sys.districts,
            &csv,
            "test",
            w.clock.now_ms(),
        )
    };
    let done = import().await.unwrap();
    assert_eq!((done.created.len(), done.skipped.len()), (402, 0));
    let pool = &w.sys.pool;
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let saved = || async {
        (
            count("SELECT COUNT(*) FROM accounts WHERE username LIKE 'ops%' AND role = 'operator'").await,
            count("SELECT COUNT(*) FROM account_audit WHERE action = 'import' AND actor = 'test'").await,
            count("SELECT COUNT(*) FROM accounts WHERE username = 'jj-import' AND district = 'jinjiang' AND mobile = '13600000009'").await,
        )
    };
    assert_eq!(saved().await, (401, 402, 1));
    assert_eq!(
        count("SELECT COUNT(*) FROM accounts WHERE (username LIKE 'ops%' OR username = 'jj-import') AND must_change_password = 1").await,
        402
    );
    let (app, _) = app_with_capture(&w);
    let (_, _, password) = &done.created[400];
    first_login(&app, "ops400", password, "/ops").await;
    let again = import().await.unwrap();
    assert_eq!((again.created.len(), again.skipped.len()), (0, 402));
    assert_eq!(saved().await, (401, 402, 1));
}

/// An account whose stored role this version does not know is refused at
/// login (an internal error, logged), never treated as some other role.
#[tokio::test]
async fn an_account_with_an_unknown_role_is_refused_not_made_an_operator() {
    let w = World::new(START).await;
    sqlx::query("UPDATE accounts SET role = 'root' WHERE username = 'operator'")
        .execute(&w.sys.pool)
        .await
        .unwrap();
    let mut c = w.client();
    c.get("/login").await.assert_ok();
    let r = c
        .post(
            "/login",
            &[
                ("username", "operator"),
                ("password", &w.passwords["operator"]),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(
        !r.contains("root"),
        "the cause is logged, not shown: {}",
        r.body
    );
    let r = c.get("/ops").await;
    assert!(r.status != StatusCode::OK, "{}", r.body);
}
