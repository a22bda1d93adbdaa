//! Faults and small defects of the pages (issue 10): every refusal is a
//! Chinese page, moving the rehearsal clock keeps sessions, and every link
//! on every page a role can reach leads somewhere (no 404).

#[path = "support/web.rs"]
mod web;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use std::collections::{BTreeSet, VecDeque};
use tower::ServiceExt;
use web::{Client, NowMs, World};

const START: &str = "2026-12-01T04:59:00+08:00";

on_both_databases!("faults":
    a_gbk_csv_from_excel_is_imported,
    every_rejection_is_a_chinese_page,
    moving_the_rehearsal_clock_keeps_sessions_but_idle_time_still_counts,
    every_link_on_every_page_leads_somewhere,
);

/// A request `web::Client` cannot make (any method, headers, body), with
/// the client's cookies; the answer's headers too.
async fn raw(
    w: &World,
    c: &Client,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, String) {
    let cookies: Vec<String> = c.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookies.join("; "));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = w
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The refusal page: Chinese HTML, none of axum's English.
fn assert_chinese_page(what: &str, headers: &HeaderMap, body: &str, says: &str) {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(kind.starts_with("text/html"), "{what}: {kind} {body}");
    assert!(body.contains("<html lang=\"zh-CN\""), "{what}: {body}");
    assert!(body.contains(says), "{what}: {body}");
    for english in [
        "Failed",
        "deserialize",
        "limit",
        "Content-Type",
        "Method Not Allowed",
        "Expected",
        "multipart",
    ] {
        assert!(!body.contains(english), "{what}: {english} in {body}");
    }
    // The security headers are on refusals too.
    assert!(
        headers.contains_key(header::CONTENT_SECURITY_POLICY),
        "{what}"
    );
}

async fn every_rejection_is_a_chinese_page(w: World) {
    let e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let token = e.csrf.clone().unwrap();
    let csrf = [("x-csrf-token", token.as_str())];

    // A malformed query string.
    let (status, h, body) = raw(&w, &e, Method::GET, "/staff?page=abc", &[], vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_chinese_page("query", &h, &body, "网址中的参数格式不正确");

    // A path parameter that is not text.
    let (status, h, body) = raw(&w, &e, Method::GET, "/staff/%FF%FE", &[], vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_chinese_page("path", &h, &body, "网址中的参数格式不正确");

    // No such page.
    let (status, h, body) = raw(&w, &e, Method::GET, "/no/such/page", &[], vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_chinese_page("404", &h, &body, "页面不存在");

    // A method the route does not take: 405, its Allow header kept.
    let (status, h, body) = raw(&w, &e, Method::PUT, "/home", &csrf, vec![]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.contains_key(header::ALLOW));
    assert_chinese_page("405", &h, &body, "不支持此操作方式");

    // A form sent as something else than a form.
    let (status, h, body) = raw(
        &w,
        &e,
        Method::POST,
        "/sites/liaison",
        &[csrf[0], ("content-type", "text/plain")],
        b"liaison_name=x".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_chinese_page("415", &h, &body, "提交的内容类型不正确");

    // A form whose values do not fit its fields (page is a number).
    let (status, h, body) = raw(&w, &e, Method::GET, "/records?page=%FF%FE", &[], vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_chinese_page("query bytes", &h, &body, "网址中的参数格式不正确");

    // An upload larger than the limit.
    let boundary = "XBOUNDARYX";
    let mut big = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"staff.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    big.extend(std::iter::repeat_n(b'a', server::web::MAX_BODY + 1024));
    big.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let multipart = format!("multipart/form-data; boundary={boundary}");
    let uri = format!("/staff/import?_csrf={token}");
    let (status, h, body) = raw(
        &w,
        &e,
        Method::POST,
        &uri,
        &[("content-type", multipart.as_str())],
        big,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_chinese_page("413", &h, &body, "提交的内容过大");

    // A form larger than the limit.
    let mut form = format!("_csrf={token}&remarks=").into_bytes();
    form.extend(std::iter::repeat_n(b'a', server::web::MAX_BODY + 1024));
    let (status, h, body) = raw(
        &w,
        &e,
        Method::POST,
        "/sites/liaison",
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_chinese_page("413 form", &h, &body, "提交的内容过大");

    // A broken upload.
    let (status, h, body) = raw(
        &w,
        &e,
        Method::POST,
        &uri,
        &[("content-type", multipart.as_str())],
        b"--XBOUNDARYX\r\nnonsense".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_chinese_page("multipart", &h, &body, "上传失败");

    // A refusal that already was a page stays as it was.
    let mut anon = w.client();
    anon.get("/login").await;
    let r = anon.post_raw("/login", &[("username", "x")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.contains("页面已过期或来源不明"));
}

async fn moving_the_rehearsal_clock_keeps_sessions_but_idle_time_still_counts(w: World) {
    let mut op = w.logged_in("operator", "/ops").await;
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    // Half an hour at a time, past the 30-minute idle limit and beyond the
    // 12-hour session limit.
    for _ in 0..4 {
        op.post("/ops/clock", &[("minutes", "30")])
            .await
            .assert_redirect("/ops");
    }
    op.post("/ops/clock", &[("minutes", "780")])
        .await
        .assert_redirect("/ops");
    op.get("/ops").await.assert_ok();
    e.get("/home").await.assert_ok();
    // Time that passes on the wall still ends an idle session.
    w.clock.advance(std::time::Duration::from_secs(31 * 60));
    e.get("/home").await.assert_redirect("/login");
    op.get("/ops").await.assert_redirect("/login");
}

/// The same-site links of a page (`href="/…"`), HTML entities undone.
fn links(body: &str) -> Vec<String> {
    body.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| h.starts_with('/') && !h.starts_with("//"))
        .map(|h| h.replace("&amp;", "&").replace("&#x2f;", "/"))
        .collect()
}

/// Visit every page reachable by links from `home` (at most `limit`) and
/// check each link answers something other than 404 (or a server error).
/// Returns the pages visited.
async fn follow_every_link(c: &mut Client, home: &str, limit: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([home.to_string()]);
    let mut queue = VecDeque::from([home.to_string()]);
    while let Some(page) = queue.pop_front() {
        let r = c.get(&page).await;
        assert!(
            r.status != StatusCode::NOT_FOUND && !r.status.is_server_error(),
            "{page}: {} {}",
            r.status,
            r.body
        );
        if !r.status.is_success() {
            continue;
        }
        for link in links(&r.body) {
            if seen.len() < limit && seen.insert(link.clone()) {
                queue.push_back(link);
            }
        }
    }
    seen
}

async fn every_link_on_every_page_leads_somewhere(w: World) {
    let mut e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    // Today's record, then the refusal of a second one and its link.
    e.get("/records").await.assert_ok();
    let fields = [
        ("address_id", "demo-addr-1"),
        ("on_duty", "25"),
        ("visitors_registered", "3"),
        ("disinfection_done", "是"),
        ("temperature_checked", "是"),
        ("remarks", "正常"),
    ];
    let first = e.post("/records", &fields).await.location.unwrap();
    let r = e.post("/records", &fields).await;
    assert!(r.contains("同一个企业每天只能填报一次信息"), "{}", r.body);
    let i = r.body.find("查看已有登记").unwrap();
    let existing = links(&r.body[..i]).pop().unwrap();
    assert_eq!(existing, first, "the link is the record's own page");
    e.get(&existing).await.assert_ok();

    // The 05:00 run: warnings, notices to the enterprise and the district
    // digest (its link was /district/warnings, a 404; the district's list
    // is /district).
    w.clock.set("2026-12-01T05:00:00+08:00".parse().unwrap());
    w.settle().await;
    assert!(w.count("SELECT COUNT(*) FROM warnings").await > 0);
    let digest: String = sqlx::query_scalar(
        "SELECT link FROM notices WHERE recipient_kind = 'district' AND title = '新增疫情预警' LIMIT 1",
    )
    .fetch_one(&w.sys.pool)
    .await
    .unwrap();
    assert_eq!(digest, "/district");
    let mut d = w.logged_in(server::demo::DISTRICT, "/district").await;
    d.get(&digest).await.assert_ok();

    // An administrator (made by `server admin create-admin` in production).
    server::accounts::upsert_account(
        &w.sys.pool,
        "admin1",
        &server::accounts::Role::Admin,
        None,
        "Adm1n-Passw0rd",
        false,
        w.clock.now_ms(),
    )
    .await
    .unwrap();
    let mut admin = w.client();
    admin.login("admin1", "Adm1n-Passw0rd", "/admin").await;

    let mut visited = 0;
    for (mut c, home) in [
        (e, "/home"),
        (d, "/district"),
        (w.logged_in("operator", "/ops").await, "/ops"),
        (w.logged_in("city", "/policy").await, "/policy"),
        (admin, "/admin"),
        (w.client(), "/login"),
    ] {
        let seen = follow_every_link(&mut c, home, 150).await;
        assert!(seen.len() > 3, "{home}: {seen:?}");
        visited += seen.len();
    }
    assert!(visited > 30, "{visited}");
}

/// A CSV file as Excel saves it on Chinese Windows (GBK), and one saved as
/// "CSV UTF-8" (with a BOM), both imported through the page.
async fn a_gbk_csv_from_excel_is_imported(w: World) {
    let e = w.logged_in(server::demo::ENTERPRISE_USER, "/home").await;
    let token = e.csrf.clone().unwrap();
    let upload = |bytes: Vec<u8>| {
        let boundary = "XBOUNDARYX";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"人员.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n"
        )
        .into_bytes();
        body.extend(bytes);
        body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        body
    };
    let multipart = "multipart/form-data; boundary=XBOUNDARYX";
    let uri = format!("/staff/import?_csrf={token}");
    let count =
        "SELECT COUNT(*) FROM staff WHERE name IN ('李四', '王小五') AND deleted_at IS NULL";
    assert_eq!(w.count(count).await, 0);
    let csv = format!(
        "姓名,身份证号,手机号,办公地址\r\n李四,{},13700000000,成都市锦江区红星路三段1号\r\n",
        server::demo::id_number(902)
    );
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&csv);
    assert!(!unmappable && std::str::from_utf8(&gbk).is_err());
    let (status, _, body) = raw(
        &w,
        &e,
        Method::POST,
        &uri,
        &[("content-type", multipart)],
        upload(gbk.into_owned()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let name: String = sqlx::query_scalar("SELECT name FROM staff WHERE id_number = $1")
        .bind(server::demo::id_number(902))
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
    assert_eq!(name, "李四", "decoded, not mojibake");
    let csv = format!(
        "\u{feff}姓名,身份证号,手机号,办公地址\n王小五,{},,成都市锦江区红星路三段1号\n",
        server::demo::id_number(903)
    );
    let (status, _, body) = raw(
        &w,
        &e,
        Method::POST,
        &uri,
        &[("content-type", multipart)],
        upload(csv.into_bytes()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(w.count(count).await, 2);
    // Bytes that are no text at all: a Chinese refusal, nothing imported.
    let (status, _, body) = raw(
        &w,
        &e,
        Method::POST,
        &uri,
        &[("content-type", multipart)],
        upload(b"\x81\x20\xff\xfe\x00".to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("无法识别文件的编码"), "{body}");
}
