//! The web forms through `app()` (DOMAIN.md R1–R7): every page for its
//! role, bad input returning the form with field errors and nothing saved,
//! authorization across enterprises and districts, CSRF, sessions, login
//! throttling and SMS codes, and the whole warning loop.

#[path = "support/web.rs"]
mod web;

use axum::http::StatusCode;
use engine::clock::Clock;
use web::{NowMs, World};

const START: &str = "2026-12-01T04:59:00+08:00";

on_both_databases!("web":
    every_page_renders_for_its_role_with_labels_and_security_headers,
    registration_refuses_bad_input_at_the_field_and_saves_nothing,
    state_changing_requests_without_the_right_csrf_token_are_refused,
    enterprise_a_cannot_read_or_change_enterprise_b_by_changing_ids,
    district_x_cannot_see_or_review_district_y_warnings,
    staff_and_site_forms_reject_bad_input_and_save_nothing,
    daily_record_form_validates_and_refuses_a_second_record,
    the_warning_loop_through_the_pages_ends_in_closure,
    sessions_expire_and_logout_ends_them,
    failed_logins_and_code_requests_are_throttled_and_sms_codes_log_in_once,
    rehearsal_clock_moves_forward_from_the_operator_page_only
);

async fn comparison_now(w: &World) {
    let mut op = w.logged_in("operator", "/ops").await;
    op.post("/ops/run-comparison", &[])
        .await
        .assert_redirect("/ops");
    w.settle().await;
}

async fn first_open_warning(w: &World, enterprise: &str) -> String {
    sqlx::query_scalar(
        "SELECT id FROM warnings WHERE enterprise_id = $1 AND closed_at IS NULL ORDER BY id LIMIT 1",
    )
    .bind(enterprise)
    .fetch_one(&w.sys.pool)
    .await
    .unwrap()
}

async fn every_page_renders_for_its_role_with_labels_and_security_headers(w: World) {
    comparison_now(&w).await;
    let warning = first_open_warning(&w, server::demo::ENTERPRISE_ID).await;
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    for (path, label) in [
        ("/home", "疫情防控"),
        ("/home", "预警处置"),
        ("/sites", "在蓉办公地址"),
        ("/sites", "卫生联络官"),
        ("/staff", "企业人员"),
        ("/staff?q=王&page=2", "企业人员"),
        ("/staff/import", "批量导入"),
        ("/records", "登记疫情防控信息"),
        ("/warnings", "预警处置"),
        (&format!("/warnings/{warning}"), "处置要求及防疫措施"),
        ("/notices", "疫情预警提醒"),
        ("/directory", "卫生联络官"),
        ("/staff/demo-staff-1", "修改人员信息"),
    ] {
        let r = e.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert!(r.contains(label), "{path} lacks {label}");
        // Every input has a label (R: `<label for>`).
        for id in r.body.match_indices("<input id=\"").map(|(i, _)| {
            let rest = &r.body[i + 11..];
            rest[..rest.find('"').unwrap()].to_string()
        }) {
            assert!(
                r.body.contains(&format!("for=\"{id}\"")),
                "{path}: input {id} has no label"
            );
        }
    }
    let mut d = w.logged_in("jinjiang", "/district").await;
    for (path, label) in [
        ("/district", "预警审核"),
        (
            "/district?state=awaiting_disposal&overdue=disposal&enterprise=示范",
            "预警审核",
        ),
        (&format!("/warnings/{warning}"), "处理记录"),
        ("/notices", "新增疫情预警"),
        ("/directory", "锦江区"),
    ] {
        let r = d.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert!(r.contains(label), "{path} lacks {label}");
    }
    let mut op = w.logged_in("operator", "/ops").await;
    let r = op.get("/ops").await;
    assert!(r.contains("立即比对") && r.contains("前进"));
    // Headers on pages and error pages alike.
    let res = tower::ServiceExt::oneshot(
        w.app.clone(),
        axum::http::Request::get("/no-such-page")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for h in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert!(res.headers().contains_key(h), "missing {h}");
    }
}

async fn registration_refuses_bad_input_at_the_field_and_saves_nothing(w: World) {
    let mut c = w.client();
    c.get("/register").await.assert_ok();
    let before = w.count("SELECT COUNT(*) FROM enterprises").await;
    let good = [
        ("name", "成都测试建筑有限公司"),
        ("credit_code", &server::demo::credit_code(77)),
        ("kind", "construction"),
        ("district", "wuhou"),
        ("registered_address", "武侯区测试路8号"),
        ("contact_name", "测试人"),
        ("contact_mobile", "13912345678"),
    ]
    .map(|(k, v)| (k, v.to_string()));
    let long = "很长".repeat(200);
    let cases: Vec<(&str, &str, &str)> = vec![
        ("credit_code", "91510104MA0000077X", "统一社会信用代码"),
        ("contact_mobile", "12345", "手机号"),
        ("name", "", "企业名称"),
        ("kind", "", "企业类型"),
        ("district", "nowhere", "区（市）县"),
        ("registered_address", &long, "不能超过"),
    ];
    for (field, bad, message) in cases {
        let fields: Vec<(&str, &str)> = good
            .iter()
            .map(|(k, v)| (*k, if *k == field { bad } else { v.as_str() }))
            .collect();
        let r = c.post("/register", &fields).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}");
        assert!(r.contains(message), "{field}: no {message} in {}", r.body);
        assert!(r.contains("aria-invalid=\"true\""), "{field}");
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM enterprises").await, before);
    assert_eq!(
        w.count("SELECT COUNT(*) FROM accounts WHERE role = 'enterprise'")
            .await,
        1
    );

    let fields: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = c.post("/register", &fields).await;
    r.assert_ok();
    assert!(r.contains("注册成功") && r.contains("139****5678"));
    let i = r.body.find("id=\"new-username\">").unwrap() + 18;
    let username = r.body[i..i + 10].to_string();
    // The credentials went by SMS (the log, in the embedded default).
    let params = w.sys.sms_inbox.last("account_created").unwrap().params;
    assert_eq!(params["username"], username.as_str());
    let password = params["password"].as_str().unwrap().to_string();
    // Only a hash is stored.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM accounts WHERE username = $1")
        .bind(&username)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(&password));
    // The same credit code again is refused at its field.
    let r = c.post("/register", &fields).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("已注册"));
    // First login must change the password; every page sends there until done.
    c.get("/login").await;
    c.post(
        "/login",
        &[("username", &username), ("password", &password)],
    )
    .await
    .assert_redirect("/password");
    c.get("/home").await.assert_redirect("/password");
    c.get("/password").await.assert_ok();
    // A second session of the same account, which the change will end.
    let mut other = w.client();
    other.get("/login").await;
    other
        .post(
            "/login",
            &[("username", &username), ("password", &password)],
        )
        .await
        .assert_redirect("/password");
    other.get("/home").await.assert_redirect("/password");
    let r = c
        .post(
            "/password",
            &[
                ("current_password", &password),
                ("new_password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("密码至少8位"));
    c.post(
        "/password",
        &[
            ("current_password", &password),
            ("new_password", "NewPassw0rd"),
            ("confirm", "NewPassw0rd"),
        ],
    )
    .await
    .assert_redirect("/home");
    let r = c.get("/home").await;
    r.assert_ok();
    assert!(r.contains("成都测试建筑有限公司"));
    other.get("/home").await.assert_redirect("/login");
    // Its registered address became its first office address.
    assert!(c.get("/sites").await.contains("武侯区测试路8号"));
}

async fn state_changing_requests_without_the_right_csrf_token_are_refused(w: World) {
    let mut c = w.client();
    c.get("/login").await;
    // Login form without a token, and with a wrong one.
    let pw = w.passwords[server::demo::ENTERPRISE_USER].clone();
    let creds = [
        ("username", server::demo::ENTERPRISE_USER),
        ("password", pw.as_str()),
    ];
    assert_eq!(
        c.post_raw("/login", &creds).await.status,
        StatusCode::FORBIDDEN
    );
    let wrong = "0".repeat(64);
    let mut with_wrong = vec![("_csrf", wrong.as_str())];
    with_wrong.extend_from_slice(&creds);
    assert_eq!(
        c.post_raw("/login", &with_wrong).await.status,
        StatusCode::FORBIDDEN
    );
    // Logged in: the anonymous token no longer works, only the session's.
    let anon = c.cookies["epi_csrf"].clone();
    c.login(server::demo::ENTERPRISE_USER, &pw, "/home").await;
    let before = w.count("SELECT COUNT(*) FROM addresses").await;
    let fields = [
        ("_csrf", anon.as_str()),
        ("address", "锦江区新地址1号"),
        ("district", "jinjiang"),
    ];
    let r = c.post_raw("/sites/addresses", &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.contains("页面已过期"));
    let r = c.post_raw("/sites/addresses", &fields[1..]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Uploads carry it in the query string; without it, refused too.
    let mut no_token = c.clone();
    no_token.csrf = Some(String::new());
    let r = no_token
        .upload("/staff/import", "file", "姓名,身份证号,手机号,办公地址\n")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(w.count("SELECT COUNT(*) FROM addresses").await, before);
    // With the session's token it goes through.
    c.post(
        "/sites/addresses",
        &[("address", "锦江区新地址1号"), ("district", "jinjiang")],
    )
    .await
    .assert_redirect("/sites");
    assert_eq!(w.count("SELECT COUNT(*) FROM addresses").await, before + 1);
}

async fn enterprise_a_cannot_read_or_change_enterprise_b_by_changing_ids(w: World) {
    let (b, b_addr, b_staff, b_user, b_pw) = w.other_enterprise().await;
    comparison_now(&w).await;
    let now = w.clock.now_ms();
    // B files a record so there is one to try to reach.
    let record = server::records::create(
        &w.sys.pool,
        &w.sys.daily_record,
        &b,
        &b_addr,
        &server::domain::day_of(w.clock.now()),
        &serde_json::json!({"on_duty": 1, "visitors_registered": 0, "disinfection_done": "是", "temperature_checked": "是"}),
        now,
    )
    .await;
    let record = match record {
        Ok(id) => id,
        Err(server::records::Error::AlreadyFiled { existing }) => existing,
        Err(e) => panic!("{e}"),
    };
    let a_warning = first_open_warning(&w, server::demo::ENTERPRISE_ID).await;
    let mut a = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let staff_before: String = sqlx::query_scalar(
        "SELECT name || address_id || COALESCE(deleted_at, 0) FROM staff WHERE id = $1",
    )
    .bind(&b_staff)
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    for path in [
        format!("/staff/{b_staff}"),
        format!("/records/{}", urlencoding::encode(&record)),
    ] {
        assert_eq!(a.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = a
        .post(
            &format!("/staff/{b_staff}"),
            &[("name", "篡改"), ("address_id", "demo-addr-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.post(&format!("/staff/{b_staff}/delete"), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        a.post(&format!("/sites/addresses/{b_addr}/delete"), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = a
        .post(
            &format!("/records/{}", urlencoding::encode(&record)),
            &[
                ("on_duty", "9"),
                ("visitors_registered", "9"),
                ("disinfection_done", "是"),
                ("temperature_checked", "是"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Putting B's address into A's own forms.
    let r = a
        .post(
            "/staff",
            &[
                ("name", "新人"),
                ("id_number", &server::demo::id_number(950)),
                ("address_id", &b_addr),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("请选择本企业的办公地址"));
    let r = a
        .post(
            "/records",
            &[
                ("address_id", &b_addr),
                ("on_duty", "1"),
                ("visitors_registered", "0"),
                ("disinfection_done", "是"),
                ("temperature_checked", "是"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // B's warnings, if the run opened any, are out of A's reach; A's are out of B's.
    let mut b_client = w.client();
    b_client.login(&b_user, &b_pw, "/home").await;
    assert_eq!(
        b_client.get(&format!("/warnings/{a_warning}")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = b_client
        .post(
            &format!("/warnings/{a_warning}/dispose"),
            &[
                ("reported_to_community", "是"),
                ("community", "某社区"),
                ("person_situation", "居家隔离"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!b_client.get("/warnings").await.contains(&a_warning));
    // Nothing of B changed; A's warning is still awaiting disposal.
    let staff_after: String = sqlx::query_scalar(
        "SELECT name || address_id || COALESCE(deleted_at, 0) FROM staff WHERE id = $1",
    )
    .bind(&b_staff)
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    assert_eq!(staff_before, staff_after);
    let state: String = sqlx::query_scalar("SELECT state FROM warnings WHERE id = $1")
        .bind(&a_warning)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert_eq!(state, "awaiting_disposal");
    // Role pages: an enterprise cannot open district or operator pages.
    assert_eq!(a.get("/district").await.status, StatusCode::FORBIDDEN);
    assert_eq!(a.get("/ops").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        a.post("/ops/run-comparison", &[]).await.status,
        StatusCode::FORBIDDEN
    );
}

async fn district_x_cannot_see_or_review_district_y_warnings(w: World) {
    comparison_now(&w).await;
    let warning = first_open_warning(&w, server::demo::ENTERPRISE_ID).await;
    // The enterprise (锦江) disposes so the warning awaits review.
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    e.get(&format!("/warnings/{warning}")).await.assert_ok();
    e.post(
        &format!("/warnings/{warning}/dispose"),
        &[
            ("reported_to_community", "是"),
            ("community", "红星社区"),
            ("person_situation", "居家隔离"),
        ],
    )
    .await
    .assert_redirect(&format!("/warnings/{warning}"));
    w.settle().await;
    let mut other = w.logged_in("qingyang", "/district").await;
    assert!(!other.get("/district").await.contains(&warning));
    assert_eq!(
        other.get(&format!("/warnings/{warning}")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = other
        .post(
            &format!("/warnings/{warning}/review"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // An enterprise cannot review, even its own.
    assert_eq!(
        e.post(
            &format!("/warnings/{warning}/review"),
            &[("decision", "approve")]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    w.settle().await;
    let state: String = sqlx::query_scalar("SELECT state FROM warnings WHERE id = $1")
        .bind(&warning)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert_eq!(state, "under_review");
    // Its own district sees it.
    let mut own = w.logged_in("jinjiang", "/district").await;
    assert!(own
        .get("/district?state=under_review")
        .await
        .contains(&warning));
}

async fn staff_and_site_forms_reject_bad_input_and_save_nothing(w: World) {
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    e.get("/staff").await.assert_ok();
    let before = w.count("SELECT COUNT(*) FROM staff").await;
    let good_id = server::demo::id_number(901);
    let mut bad_check = good_id.clone();
    bad_check.pop();
    bad_check.push(if good_id.ends_with('0') { '1' } else { '0' });
    let long_name = "名".repeat(60);
    for (fields, message) in [
        (
            vec![
                ("name", "张三"),
                ("id_number", bad_check.as_str()),
                ("address_id", "demo-addr-1"),
            ],
            "校验",
        ),
        (
            vec![
                ("name", "张三"),
                ("id_number", "12345"),
                ("address_id", "demo-addr-1"),
            ],
            "身份证",
        ),
        (
            vec![
                ("name", "张三"),
                ("id_number", good_id.as_str()),
                ("mobile", "1380000"),
                ("address_id", "demo-addr-1"),
            ],
            "手机号",
        ),
        (
            vec![
                ("name", ""),
                ("id_number", good_id.as_str()),
                ("address_id", "demo-addr-1"),
            ],
            "请填写姓名",
        ),
        (
            vec![
                ("name", long_name.as_str()),
                ("id_number", good_id.as_str()),
                ("address_id", "demo-addr-1"),
            ],
            "姓名不能超过",
        ),
        (
            vec![("name", "张三"), ("id_number", good_id.as_str())],
            "请选择本企业的办公地址",
        ),
    ] {
        let r = e.post("/staff", &fields).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{fields:?}");
        assert!(r.contains(message), "{fields:?}: no {message}");
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM staff").await, before);
    // A person already registered (demo staff 1) cannot be added twice.
    let r = e
        .post(
            "/staff",
            &[
                ("name", "重复"),
                ("id_number", &server::demo::id_number(1)),
                ("address_id", "demo-addr-1"),
            ],
        )
        .await;
    assert!(r.contains("已在本企业登记"));
    // Good input: added, then moved to the other address, then deleted.
    e.post(
        "/staff",
        &[
            ("name", "张三"),
            ("id_number", &good_id),
            ("mobile", "13712345678"),
            ("address_id", "demo-addr-1"),
        ],
    )
    .await
    .assert_redirect("/staff");
    let id: String = sqlx::query_scalar("SELECT id FROM staff WHERE id_number = $1")
        .bind(&good_id)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert!(e.get("/staff?q=张三").await.contains("<td>张三</td>"));
    e.get(&format!("/staff/{id}")).await.assert_ok();
    e.post(
        &format!("/staff/{id}"),
        &[
            ("name", "张三丰"),
            ("mobile", ""),
            ("address_id", "demo-addr-2"),
        ],
    )
    .await
    .assert_redirect("/staff");
    assert!(e
        .get("/staff?address=demo-addr-2&q=张三丰")
        .await
        .contains("<td>张三丰</td>"));
    e.post(&format!("/staff/{id}/delete"), &[])
        .await
        .assert_redirect("/staff");
    assert!(!e.get("/staff?q=张三丰").await.contains("<td>张三丰</td>"));
    // Sites: a blank address and a liaison with a bad mobile are refused.
    e.get("/sites").await;
    let r = e
        .post(
            "/sites/addresses",
            &[("address", " "), ("district", "jinjiang")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = e
        .post(
            "/sites/liaison",
            &[("liaison_name", "王芳"), ("liaison_mobile", "23900000001")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("手机号"));
    // An address with staff cannot be removed.
    let r = e.post("/sites/addresses/demo-addr-1/delete", &[]).await;
    assert!(r.contains("请先将人员调整到其他地址"));
    // CSV import: per-line errors and nothing imported; then a good file.
    e.get("/staff/import").await.assert_ok();
    let bad = format!(
        "姓名,身份证号,手机号,办公地址\n李四,{},13700000000,成都市锦江区红星路三段1号\n王五,123,,不存在的地址\n",
        server::demo::id_number(902)
    );
    let r = e.upload("/staff/import", "file", &bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.contains("第3行") && r.contains("未导入任何人员"),
        "{}",
        r.body
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM staff WHERE deleted_at IS NULL")
            .await,
        before
    );
    let good = format!(
        "姓名,身份证号,手机号,办公地址\n李四,{},13700000000,成都市锦江区红星路三段1号\n",
        server::demo::id_number(902)
    );
    let r = e.upload("/staff/import", "file", &good).await;
    r.assert_ok();
    assert!(r.contains("已导入 1 人"));
}

async fn daily_record_form_validates_and_refuses_a_second_record(w: World) {
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    e.get("/records").await.assert_ok();
    let r = e
        .post(
            "/records",
            &[
                ("address_id", "demo-addr-1"),
                ("on_duty", "-3"),
                ("visitors_registered", "abc"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.contains("今日在岗人数不能小于0")
            && r.contains("外来人员登记人数须为数字")
            && r.contains("请确认")
    );
    assert_eq!(w.count("SELECT COUNT(*) FROM daily_records").await, 0);
    let fields = [
        ("address_id", "demo-addr-1"),
        ("on_duty", "25"),
        ("visitors_registered", "3"),
        ("disinfection_done", "是"),
        ("temperature_checked", "是"),
        ("remarks", "正常"),
    ];
    let r = e.post("/records", &fields).await;
    let to = r.location.clone().unwrap();
    assert!(to.starts_with("/records/"), "{to}");
    let page = e.get(&to).await;
    page.assert_ok();
    assert!(page.contains("尚未比对"));
    assert!(
        page.contains("系统每天05:00、10:00、15:00自动比对"),
        "the times of workflows/schedules.yaml"
    );
    // A second record for the same address and day (R3.1).
    let r = e.post("/records", &fields).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("同一个企业每天只能填报一次信息"));
    assert_eq!(w.count("SELECT COUNT(*) FROM daily_records").await, 1);
    // The 05:00 run fills the computed fields of that same record (R3.4).
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    let page = e.get(&to).await;
    assert!(
        page.contains("办公点总人数") && page.contains("2026-12-01 05:00"),
        "{}",
        page.body
    );
    assert!(page.contains("之前24小时内"));
    assert_eq!(
        w.count("SELECT COUNT(*) FROM daily_records WHERE address_id = 'demo-addr-1'")
            .await,
        1
    );
    // Editing today's record: validated; saved.
    let r = e
        .post(
            &to,
            &[
                ("on_duty", ""),
                ("visitors_registered", "1"),
                ("disinfection_done", "是"),
                ("temperature_checked", "是"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    e.post(
        &to,
        &[
            ("on_duty", "30"),
            ("visitors_registered", "1"),
            ("disinfection_done", "是"),
            ("temperature_checked", "否"),
        ],
    )
    .await
    .assert_redirect(&format!("{to}?saved=1"));
    // Next day it is history and read-only.
    w.clock.set("2026-12-02T09:00:00+08:00".parse().unwrap());
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    assert!(e.get("/records").await.contains("2026-12-01"));
    let page = e.get(&to).await;
    assert!(!page.contains("record-save"));
}

async fn the_warning_loop_through_the_pages_ends_in_closure(w: World) {
    comparison_now(&w).await;
    let warning = first_open_warning(&w, server::demo::ENTERPRISE_ID).await;
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let list = e.get("/warnings").await;
    assert!(list.contains(&warning) && list.contains("去处置"));
    let page = e.get(&format!("/warnings/{warning}")).await;
    assert!(page.contains("处置要求及防疫措施") && page.contains("预警生成"));
    // Missing required fields: errors at the fields, state unchanged.
    let r = e
        .post(
            &format!("/warnings/{warning}/dispose"),
            &[("remarks", "无")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.contains("请填写报备社区名称") && r.contains("请填写人员情况"),
        "{}",
        r.body
    );
    let dispose = [
        ("reported_to_community", "是"),
        ("community", "红星路社区"),
        ("person_situation", "集中隔离"),
        ("measures", "办公区域清洁消毒"),
        ("measures", "通风换气"),
    ];
    e.post(&format!("/warnings/{warning}/dispose"), &dispose)
        .await
        .assert_redirect(&format!("/warnings/{warning}"));
    w.settle().await;
    assert!(e
        .get(&format!("/warnings/{warning}"))
        .await
        .contains("待审核"));
    // The district returns it: a comment is required.
    let mut d = w.logged_in("jinjiang", "/district").await;
    let page = d.get(&format!("/warnings/{warning}")).await;
    assert!(
        page.contains("办公区域清洁消毒、通风换气"),
        "the disposal is shown"
    );
    let r = d
        .post(
            &format!("/warnings/{warning}/review"),
            &[("decision", "return"), ("comment", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("处理意见"));
    let r = d
        .post(&format!("/warnings/{warning}/review"), &[("comment", "x")])
        .await;
    assert!(r.contains("请选择审核结果"));
    d.post(
        &format!("/warnings/{warning}/review"),
        &[("decision", "return"), ("comment", "请补充隔离地点")],
    )
    .await
    .assert_redirect(&format!("/warnings/{warning}"));
    w.settle().await;
    // The enterprise sees the comment, disposes again.
    let page = e.get(&format!("/warnings/{warning}")).await;
    assert!(page.contains("退回整改") && page.contains("请补充隔离地点"));
    assert!(e.get("/notices").await.contains("请补充隔离地点"));
    e.post(&format!("/warnings/{warning}/dispose"), &dispose)
        .await
        .assert_redirect(&format!("/warnings/{warning}"));
    w.settle().await;
    d.get(&format!("/warnings/{warning}")).await;
    d.post(
        &format!("/warnings/{warning}/review"),
        &[("decision", "approve")],
    )
    .await
    .assert_redirect(&format!("/warnings/{warning}"));
    w.settle().await;
    let page = e.get(&format!("/warnings/{warning}")).await;
    assert!(page.contains("销号办结"), "{}", page.body);
    assert!(!page.contains("dispose-submit"));
    // Reviewing a closed warning again is refused with a message, not an error page.
    let r = d
        .post(
            &format!("/warnings/{warning}/review"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.contains("当前状态不能进行此操作"));
    // The counts the pages show were kept with every transition.
    assert_eq!(
        server::warnings::count_mismatches(&w.sys.pool)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

async fn sessions_expire_and_logout_ends_them(w: World) {
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    w.clock.advance(std::time::Duration::from_secs(29 * 60));
    e.get("/home").await.assert_ok();
    w.clock.advance(std::time::Duration::from_secs(31 * 60));
    e.get("/home").await.assert_redirect("/login");
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    e.post("/logout", &[]).await.assert_redirect("/login");
    e.get("/home").await.assert_redirect("/login");
    // A stolen cookie of the ended session does not work either.
    assert_eq!(
        w.count("SELECT COUNT(*) FROM sessions WHERE username = 'qy00000001'")
            .await,
        0
    );
}

async fn failed_logins_and_code_requests_are_throttled_and_sms_codes_log_in_once(w: World) {
    let mut c = w.client();
    c.get("/login").await;
    for _ in 0..5 {
        let r = c
            .post(
                "/login",
                &[("username", "qy00000001"), ("password", "wrong")],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.contains("账号或密码错误"));
    }
    // Locked for 15 minutes, even with the right password.
    let pw = w.passwords["qy00000001"].clone();
    let r = c
        .post("/login", &[("username", "qy00000001"), ("password", &pw)])
        .await;
    assert!(r.contains("尝试次数过多"));
    w.clock.advance(std::time::Duration::from_secs(16 * 60));
    c.post("/login", &[("username", "qy00000001"), ("password", &pw)])
        .await
        .assert_redirect("/home");

    let mut s = w.client();
    s.get("/login").await;
    let r = s.post("/login/code", &[("username", "qy00000001")]).await;
    assert!(r.contains("验证码已发送"));
    // A second code within a minute is refused.
    let r = s.post("/login/code", &[("username", "qy00000001")]).await;
    assert!(r.contains("尝试次数过多"));
    let code = w.sys.sms_inbox.last_param("login_code", "code").unwrap();
    let r = s
        .post(
            "/login/sms",
            &[("username", "qy00000001"), ("code", "000000")],
        )
        .await;
    assert!(r.contains("验证码错误或已过期") || code == "000000");
    s.post("/login/sms", &[("username", "qy00000001"), ("code", &code)])
        .await
        .assert_redirect("/home");
    // Used once.
    let mut t = w.client();
    t.get("/login").await;
    let r = t
        .post("/login/sms", &[("username", "qy00000001"), ("code", &code)])
        .await;
    assert!(r.contains("验证码错误或已过期"));
    // Unknown accounts get the same answer (no account discovery).
    let r = t.post("/login/code", &[("username", "nobody")]).await;
    assert!(r.contains("如账号存在"));
    // Expired after 5 minutes.
    w.clock.advance(std::time::Duration::from_secs(2 * 60));
    let r = t.post("/login/code", &[("username", "qy00000001")]).await;
    assert!(r.contains("验证码已发送"));
    w.clock.advance(std::time::Duration::from_secs(6 * 60));
    let code = w.sys.sms_inbox.last_param("login_code", "code").unwrap();
    let r = t
        .post("/login/sms", &[("username", "qy00000001"), ("code", &code)])
        .await;
    assert!(r.contains("验证码错误或已过期"));
}

async fn rehearsal_clock_moves_forward_from_the_operator_page_only(w: World) {
    let mut op = w.logged_in("operator", "/ops").await;
    let before = w.sys.clock.now();
    let r = op.post("/ops/clock", &[("minutes", "0")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    op.post("/ops/clock", &[("minutes", "61")])
        .await
        .assert_redirect("/ops");
    assert_eq!((w.sys.clock.now() - before).num_minutes(), 61);
    // 06:00 now: the 05:00 run is due and runs.
    w.settle().await;
    assert!(w.count("SELECT COUNT(*) FROM comparison_runs").await >= 1);
    let mut d = w.logged_in("jinjiang", "/district").await;
    assert_eq!(
        d.post("/ops/clock", &[("minutes", "60")]).await.status,
        StatusCode::FORBIDDEN
    );
}
