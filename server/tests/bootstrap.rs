//! From nothing to a working production, following README.md "Production"
//! with the built binary: a configuration file, `admin create-admin`,
//! `admin import-accounts` (twice: nothing changes the second time),
//! `admin import-enterprises` (a bad file imports nothing and names its
//! line), `serve`, and the administrator and a district logging in with the
//! printed passwords. On PostgreSQL when `DATABASE_URL_PG` is set (a fresh
//! database), on a SQLite file otherwise. The gateways are the simulator and
//! the SMS log: the steps are the README's, only the outside services are
//! stand-ins.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_server");

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn server(args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(root())
        .args(args)
        .output()
        .expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value after `label` on the line that has it.
fn after<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.split(label).nth(1))
        .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"))
        .split_whitespace()
        .next()
        .unwrap()
}

/// A cookie-keeping client of the running server.
struct Browser {
    http: reqwest::Client,
    url: String,
    cookies: std::collections::BTreeMap<String, String>,
    csrf: String,
}

impl Browser {
    fn new(url: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            url: url.to_string(),
            cookies: Default::default(),
            csrf: String::new(),
        }
    }

    fn cookie(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn take(&mut self, r: reqwest::Response) -> (u16, String, String) {
        for v in r.headers().get_all("set-cookie") {
            let s = v.to_str().unwrap();
            let kv = s.split(';').next().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.insert(k.to_string(), v.to_string());
        }
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = r.text().await.unwrap();
        let marker = "name=\"_csrf\" value=\"";
        if let Some(i) = body.find(marker) {
            self.csrf = body[i + marker.len()..i + marker.len() + 64].to_string();
        }
        (status, location, body)
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", self.cookie())
            .send()
            .await
            .unwrap();
        self.take(r).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let mut all = vec![("_csrf", self.csrf.clone())];
        all.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("cookie", self.cookie())
            .form(&all)
            .send()
            .await
            .unwrap();
        self.take(r).await
    }

    /// Log in with a printed password and change it as forced; lands on `home`.
    async fn first_login(&mut self, username: &str, password: &str, home: &str) -> String {
        self.get("/login").await;
        let (status, location, body) = self
            .post("/login", &[("username", username), ("password", password)])
            .await;
        assert_eq!((status, location.as_str()), (303, "/password"), "{body}");
        self.get("/password").await;
        let (status, location, body) = self
            .post(
                "/password",
                &[
                    ("current_password", password),
                    ("new_password", "Producti0nReady"),
                    ("confirm", "Producti0nReady"),
                ],
            )
            .await;
        assert_eq!((status, location.as_str()), (303, home), "{body}");
        let (status, _, body) = self.get(home).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

#[tokio::test]
async fn production_from_nothing_following_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    // 1. Database and configuration.
    let database_url = match engine::testing::fresh_postgres("bootstrap_readme").await {
        Some(url) => url,
        None => format!("sqlite://{}?mode=rwc", dir.path().join("epi.db").display()),
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "database_url: {database_url}\nlisten: 127.0.0.1:0\nhealth:\n  mode: sim\nsms:\n  mode: log\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // The deployment's migration job (`server migrate`), safe to run twice.
    for _ in 0..2 {
        let out = server(&["migrate", "--config", config]);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains("数据库已迁移"), "{out:?}");
    }

    // 2. The first administrator.
    let out = server(&[
        "admin",
        "create-admin",
        "--config",
        config,
        "--username",
        "admin",
        "--mobile",
        "13800000000",
    ]);
    assert!(out.status.success(), "{out:?}");
    let admin_password = after(&stdout(&out), "初始密码: ").to_string();
    // Not twice.
    let again = server(&[
        "admin",
        "create-admin",
        "--config",
        config,
        "--username",
        "admin",
    ]);
    assert!(!again.status.success());
    assert!(stdout(&again).contains("该账号已存在"), "{again:?}");

    // 3. District, city and operator accounts, as the README builds the file.
    let districts =
        server::domain::Districts::load(root().join("workflows/districts.yaml")).unwrap();
    let mut csv = String::from("账号,角色,区（市）县,手机号\n");
    for d in districts.all() {
        csv.push_str(&format!("{0},district,{0},\n", d.code.as_str()));
    }
    csv.push_str("city,city,,\nops,operator,,\n");
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(&accounts, csv).unwrap();
    let accounts = accounts.to_str().unwrap();
    let out = server(&["admin", "import-accounts", "--config", config, accounts]);
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    assert!(
        printed.contains("新建账号 25 个，已存在未改动 0 个"),
        "{printed}"
    );
    let jinjiang_password = printed
        .lines()
        .find(|l| l.contains("账号 jinjiang "))
        .and_then(|l| l.split("初始密码 ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    let out = server(&["admin", "import-accounts", "--config", config, accounts]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("新建账号 0 个，已存在未改动 25 个"));
    // A bad role: nothing imported, the line named.
    let bad = dir.path().join("bad-accounts.csv");
    std::fs::write(
        &bad,
        "账号,角色,区（市）县,手机号\nops2,boss,,\nwindow1,city,,\n",
    )
    .unwrap();
    let out = server(&[
        "admin",
        "import-accounts",
        "--config",
        config,
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("第2行：角色"), "{}", stdout(&out));
    // An operator who lost the password: a new one, printed once.
    let out = server(&[
        "admin",
        "reset-password",
        "--config",
        config,
        "--username",
        "ops",
    ]);
    assert!(out.status.success(), "{out:?}");
    let ops_password = after(&stdout(&out), "新密码: ").to_string();

    // 4. Enterprises with credit-system accounts: a bad file imports
    // nothing and names its line; the good one imports.
    let code = |n: u32| server::demo::credit_code(800 + n);
    let good = format!(
        "统一社会信用代码,企业名称,企业类型,所属区（市）县,注册地址,在蓉办公地址,联系人,联系人手机,登录方式,账号\n\
         {},成都丁建筑有限公司,施工企业,锦江区,锦江区丁路1号,锦江区丁路1号；锦江区丁路9号,张丁,13600000011,password、sms,cddj001\n\
         {},成都戊勘察有限公司,勘察企业,成华区,成华区戊路2号,,李戊,13600000012,usb_key,\n",
        code(1),
        code(2)
    );
    let enterprises = dir.path().join("enterprises.csv");
    std::fs::write(&enterprises, good.replace("勘察企业", "勘查公司")).unwrap();
    let out = server(&[
        "admin",
        "import-enterprises",
        "--config",
        config,
        enterprises.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = stdout(&out);
    assert!(printed.contains("第3行：企业类型"), "{printed}");
    assert!(printed.contains("未导入任何内容"), "{printed}");
    // UTF-8 with a byte order mark, as spreadsheet programs save it.
    std::fs::write(&enterprises, format!("\u{feff}{good}")).unwrap();
    let out = server(&[
        "admin",
        "import-enterprises",
        "--config",
        config,
        enterprises.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("新增企业 2 家，更新企业 0 家，新开账号 2 个"),
        "{}",
        stdout(&out)
    );

    // 5. Serve, and log in.
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .current_dir(root())
        .args(["serve", "--config", config])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = async {
        let url = loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .expect("the server printed its address within two minutes");
            assert!(!line.contains("演示账号"), "no demo data in production");
            assert!(!line.contains("尚无系统管理员"), "the administrator exists");
            if let Some(rest) = line.split("已启动: ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let mut a = Browser::new(&url);
        let page = a.first_login("admin", &admin_password, "/admin").await;
        assert!(page.contains("账号管理") && page.contains("jinjiang") && page.contains("ops"));
        let (status, _, page) = a.get("/admin/enterprises").await;
        assert_eq!(status, 200, "{page}");
        let (status, _, page) = a.get(&format!("/window?q={}", code(2))).await;
        assert_eq!(status, 200);
        assert!(
            page.contains("成都戊勘察有限公司") && page.contains("密码锁"),
            "{page}"
        );
        let mut d = Browser::new(&url);
        d.first_login("jinjiang", &jinjiang_password, "/district")
            .await;
        Browser::new(&url)
            .first_login("ops", &ops_password, "/ops")
            .await;
        // window1 of the bad file was not imported either.
        let mut w = Browser::new(&url);
        w.get("/login").await;
        let (status, _, _) = w
            .post("/login", &[("username", "window1"), ("password", "x")])
            .await;
        assert_eq!(status, 400);
    };
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
