//! End to end in headless Chromium (Debian `chromium` + `chromium-driver`,
//! driven over WebDriver with fantoccini): register, log in and change the
//! first password, maintain addresses and staff, fill the daily record, run
//! a comparison as the operator, dispose the warning, the district returns
//! it with a comment, the enterprise disposes again, the district closes it:
//! 销号办结. A screenshot of each step goes to target/e2e-screenshots/, and
//! every link on each page shot is followed (with the browser's session) and
//! must not answer 404.
//!
//! `scripts/test` installs Chromium and sets EPI_BROWSER_TESTS=1, which makes
//! a missing browser a failure; a plain `cargo test` without Chromium skips.

#[path = "support/web.rs"]
mod web;

use fantoccini::{Client, ClientBuilder, Locator};
use server::adapters::health_sim::Simulator;
use server::comparison::HealthCode;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use web::World;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.exists())
    })
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("e2e-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    step: u32,
    /// Links already followed (each once, with the session that saw it first).
    followed: std::collections::BTreeSet<String>,
}

impl Browser {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }
    async fn fill(&self, id: &str, text: &str) {
        let e = self.c.find(Locator::Id(id)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }
    async fn select(&self, id: &str, value: &str) {
        self.c
            .find(Locator::Id(id))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }
    async fn click(&self, id: &str) {
        self.c
            .find(Locator::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    /// Click something that submits a form, and wait for the next page.
    async fn submit(&self, css: &str) {
        self.c
            .execute("document.documentElement.dataset.stale = '1'", vec![])
            .await
            .unwrap();
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        for _ in 0..200 {
            let done = self
                .c
                .execute(
                    "return document.documentElement.dataset.stale === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .map(|v| v.as_bool() == Some(true))
                .unwrap_or(false);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no new page after clicking {css}");
    }
    async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }
    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.step)), png).unwrap();
        self.follow_links(name).await;
    }
    /// GET every same-site link of the page with the browser's cookies
    /// (outside the browser, so the walk's page stays as it is): none 404.
    async fn follow_links(&mut self, page: &str) {
        let mut hrefs = Vec::new();
        for a in self.c.find_all(Locator::Css("a[href]")).await.unwrap() {
            if let Some(h) = a.attr("href").await.unwrap() {
                if h.starts_with('/') && !h.starts_with("//") && self.followed.insert(h.clone()) {
                    hrefs.push(h);
                }
            }
        }
        if hrefs.is_empty() {
            return;
        }
        let cookies: Vec<String> = self
            .c
            .get_all_cookies()
            .await
            .unwrap()
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for h in hrefs {
            let r = http
                .get(format!("{}{h}", self.base))
                .header("cookie", cookies.join("; "))
                .send()
                .await
                .unwrap();
            assert!(
                r.status() != reqwest::StatusCode::NOT_FOUND && !r.status().is_server_error(),
                "link {h} on page {page}: {}",
                r.status()
            );
        }
    }
    async fn login(&self, user: &str, password: &str) {
        self.go("/login").await;
        self.fill("username", user).await;
        self.fill("password", password).await;
        self.submit("#login-submit").await;
    }
    async fn logout(&self) {
        self.submit("form.logout button").await;
        assert_eq!(self.path().await, "/login");
    }
}

/// An ID number the simulator reports with a red health code.
fn red_code_person(w: &World) -> String {
    let sim = Simulator::new(
        server::config::HealthConfig::default().sim_seed,
        w.sim_rates,
    );
    let now = chrono::Utc::now();
    (2000..3000)
        .map(server::demo::id_number)
        .find(|id| {
            sim.record(id, now, 24)
                .is_some_and(|r| r.health_code == HealthCode::Red)
        })
        .expect("a red-code person among 1000")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_maintain_record_dispose_return_dispose_close_in_chromium() {
    let (Some(chromedriver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
        if std::env::var("EPI_BROWSER_TESTS").as_deref() == Ok("1") {
            panic!("chromium and chromedriver are required (Debian packages chromium, chromium-driver; scripts/test installs them)");
        }
        eprintln!("skipped: chromium/chromedriver not installed (scripts/test installs them)");
        return;
    };
    let w = World::new("2026-12-01T09:00:00+08:00").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::web::serve(listener, w.app.clone()));
    tokio::spawn(w.sys.runtime.clone().run());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = std::env::temp_dir().join(format!("epi-chromium-{}", std::process::id()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.display())]
        }),
    );
    let mut client = None;
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            // chromedriver is still starting.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut b = Browser {
        c: client.expect("chromedriver did not start within 10 s"),
        base,
        shots: screenshots_dir(),
        step: 0,
        followed: Default::default(),
    };

    // Register as 疫情防控用户.
    b.go("/register").await;
    b.shot("register-form").await;
    b.fill("name", "成都浏览器测试建设有限公司").await;
    b.fill("credit_code", &server::demo::credit_code(4242))
        .await;
    b.select("kind", "construction").await;
    b.select("district", "jinjiang").await;
    b.fill("registered_address", "成都市锦江区浏览器路1号")
        .await;
    b.fill("contact_name", "测试员").await;
    b.fill("contact_mobile", "13812340000").await;
    b.submit("#register-submit").await;
    b.shot("registered").await;
    let username = b.text("#new-username").await;
    // The password went to the phone only (sms_log holds ******).
    let password = w
        .sys
        .sms_inbox
        .last_param("account_created", "password")
        .unwrap();

    // First login: change the password.
    b.login(&username, &password).await;
    assert_eq!(b.path().await, "/password");
    b.shot("first-login-change-password").await;
    b.fill("current_password", &password).await;
    b.fill("new_password", "Browser2026").await;
    b.fill("confirm", "Browser2026").await;
    b.submit("#password-submit").await;
    assert_eq!(b.path().await, "/home");
    b.shot("home").await;

    // Sites: a second address and the liaison officer.
    b.go("/sites").await;
    b.fill("address", "成都市锦江区浏览器路2号").await;
    b.submit("#add-address").await;
    b.fill("liaison_name", "联络官").await;
    b.fill("liaison_mobile", "13912340000").await;
    b.submit("#save-liaison").await;
    let page = b.c.source().await.unwrap();
    assert!(page.contains("成都市锦江区浏览器路2号") && page.contains("卫生联络官已保存"));
    b.shot("sites").await;

    // Staff: one bad ID number refused at the field, then two persons.
    b.go("/staff").await;
    b.fill("name", "错号人").await;
    b.fill("id_number", "510104198501010000").await;
    b.submit("#add-person").await;
    assert!(b
        .text(".field.invalid .field-error")
        .await
        .contains("身份证"));
    b.shot("staff-invalid-id").await;
    let red = red_code_person(&w);
    for (name, id) in [
        ("红码人", red.as_str()),
        ("正常人", &server::demo::id_number(3001)),
    ] {
        b.go("/staff").await;
        b.fill("name", name).await;
        b.fill("id_number", id).await;
        let address: String = sqlx::query_scalar(
            "SELECT a.id FROM addresses a JOIN enterprises e ON e.id = a.enterprise_id WHERE e.name = '成都浏览器测试建设有限公司' ORDER BY a.created_at LIMIT 1",
        )
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
        b.select("address_id", &address).await;
        b.submit("#add-person").await;
        assert_eq!(b.path().await, "/staff");
    }
    assert!(b.c.source().await.unwrap().contains("红码人"));
    b.shot("staff").await;

    // Daily record.
    b.go("/records").await;
    b.fill("f-on_duty", "2").await;
    b.fill("f-visitors_registered", "0").await;
    b.select("f-disinfection_done", "是").await;
    b.select("f-temperature_checked", "是").await;
    b.submit("#record-submit").await;
    assert!(b.path().await.starts_with("/records/"));
    b.shot("daily-record").await;
    // The list with today's record (its links are followed).
    b.go("/records").await;
    b.shot("records").await;
    b.logout().await;

    // The city publishes a shorter disposal deadline on its page (a
    // candidate warning.yaml pasted as a new version); the warning the
    // next run opens follows it, without a restart.
    b.login("city", &w.passwords["city"]).await;
    assert_eq!(b.path().await, "/policy");
    b.go("/policy/versions").await;
    let current = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/warning.yaml"),
    )
    .unwrap();
    let version: u32 = current
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let at = current.find("      disposal_deadline:").unwrap();
    let candidate = format!(
        "{}{}",
        &current[..at],
        current[at..].replacen("after: 8h", "after: 4h", 1)
    )
    .replacen(
        &format!("\nversion: {version}\n"),
        &format!("\nversion: {}\n", version + 1),
        1,
    );
    b.c.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("处置期限缩短为4小时")
        .await
        .unwrap();
    b.c.find(Locator::Css("input[name=file]"))
        .await
        .unwrap()
        .send_keys("warning.yaml")
        .await
        .unwrap();
    b.c.execute(
        "document.querySelector('textarea[name=text]').value = arguments[0]",
        vec![serde_json::Value::String(candidate)],
    )
    .await
    .unwrap();
    b.shot("city-publish").await;
    b.submit("form[action='/policy/versions/publish'] button[type=submit]")
        .await;
    let published = b.text("body").await;
    assert!(published.contains("处置期限缩短为4小时"), "{published}");
    b.shot("city-published").await;
    b.logout().await;

    // The operator runs a comparison now.
    b.login("operator", &w.passwords["operator"]).await;
    b.submit("#run-comparison").await;
    b.shot("operator-run-comparison").await;
    let mut warning = None;
    for _ in 0..200 {
        warning = sqlx::query_scalar::<_, String>(
            "SELECT w.id FROM warnings w JOIN enterprises e ON e.id = w.enterprise_id \
             WHERE e.name = '成都浏览器测试建设有限公司' AND w.reason = '红码'",
        )
        .fetch_optional(&w.sys.pool)
        .await
        .unwrap();
        if warning.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warning = warning.expect("the run opened a warning for the red-code person");
    b.logout().await;

    // The enterprise disposes.
    b.login(&username, "Browser2026").await;
    b.go("/notices").await;
    let notices = b.text("body").await;
    assert!(notices.contains("请在预警产生4小时内"), "{notices}");
    b.go("/warnings").await;
    b.shot("warnings-list").await;
    b.go(&format!("/warnings/{warning}")).await;
    // Opened at 09:00 on the published version: due 4 hours later.
    let page = b.text("body").await;
    assert!(
        page.contains("当前期限") && page.contains("2026-12-01 13:00"),
        "{page}"
    );
    assert!(b.text("#attachment-1").await.contains("处置要求及防疫措施"));
    b.select("f-reported_to_community", "是").await;
    b.fill("f-community", "红星路社区").await;
    b.select("f-person_situation", "居家隔离").await;
    b.click("f-measures-1").await;
    b.shot("disposal-form").await;
    b.submit("#dispose-submit").await;
    assert!(b.text("#warning-state").await.contains("待审核"));
    b.shot("disposed").await;
    b.logout().await;

    // The district returns it with a comment.
    b.login("jinjiang", &w.passwords["jinjiang"]).await;
    assert_eq!(b.path().await, "/district");
    b.shot("district-list").await;
    b.go(&format!("/warnings/{warning}")).await;
    b.click("decision-return").await;
    b.submit("#review-submit").await;
    assert!(b
        .text(".field.invalid .field-error")
        .await
        .contains("处理意见"));
    b.click("decision-return").await;
    b.fill("comment", "请补充居家隔离地址").await;
    b.shot("district-return").await;
    b.submit("#review-submit").await;
    assert!(b.text("#warning-state").await.contains("退回整改"));
    b.logout().await;

    // The enterprise reads the comment and disposes again.
    b.login(&username, "Browser2026").await;
    b.go(&format!("/warnings/{warning}")).await;
    assert!(b.text("#timeline").await.contains("请补充居家隔离地址"));
    b.select("f-reported_to_community", "是").await;
    b.fill("f-community", "红星路社区").await;
    b.select("f-person_situation", "居家隔离").await;
    b.fill("f-remarks", "隔离地址：锦江区某小区").await;
    b.shot("dispose-again").await;
    b.submit("#dispose-submit").await;
    assert!(b.text("#warning-state").await.contains("待审核"));
    b.logout().await;

    // The district closes it.
    b.login("jinjiang", &w.passwords["jinjiang"]).await;
    b.go(&format!("/warnings/{warning}")).await;
    b.click("decision-approve").await;
    b.submit("#review-submit").await;
    assert!(b.text("#warning-state").await.contains("销号办结"));
    b.shot("closed").await;
    b.logout().await;

    // The operator finds a spent activity among the incidents (the first
    // reminder, made to have used up its attempts), runs it once more with
    // a reason, and sees it complete.
    sqlx::query(
        "UPDATE tasks SET status = 'failed', last_error = '短信网关 HTTP 503 (after 8 attempt(s))' \
         WHERE id = (SELECT id FROM tasks WHERE instance_id = $1 AND name = 'notify_enterprise' \
                     ORDER BY created_at, id LIMIT 1)",
    )
    .bind(&warning)
    .execute(&w.sys.pool)
    .await
    .unwrap();
    b.login("operator", &w.passwords["operator"]).await;
    b.go("/ops").await;
    assert!(b
        .text("#incident-counts")
        .await
        .contains("已用尽重试的活动 1"));
    b.shot("operator-incidents").await;
    b.go(&format!("/ops/instances/{}", urlencoding::encode(&warning)))
        .await;
    let reason =
        b.c.find(Locator::Css("tr.task-failed input[name=reason]"))
            .await
            .unwrap();
    reason.send_keys("短信网关已恢复").await.unwrap();
    b.shot("operator-retry-task").await;
    b.submit("tr.task-failed button.retry-task").await;
    let mut done = false;
    for _ in 0..200 {
        let failed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE instance_id = $1 AND status <> 'succeeded'",
        )
        .bind(&warning)
        .fetch_one(&w.sys.pool)
        .await
        .unwrap();
        if failed == 0 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the retried activity completed");
    b.go(&format!("/ops/instances/{}", urlencoding::encode(&warning)))
        .await;
    let page = b.text("body").await;
    assert!(page.contains("运维操作：重试活动"), "{page}");
    assert!(!page.contains("再执行一次"), "nothing spent any more");
    b.shot("operator-retried").await;
    b.c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}
