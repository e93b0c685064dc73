//! The status page in a real browser: Debian's headless Chromium, driven through ChromeDriver
//! (the W3C WebDriver protocol, spoken here with reqwest: six commands do not earn a WebDriver
//! crate's dependency tree), against a running `spice-hf serve` of the real SmolLM2 with an API
//! key. The page shows the model and its backend, asks for the key and keeps it, plots samples
//! once requests ran, and streams the model's answer to a typed prompt. A screenshot is written
//! to the target directory (`tmp/status-page.png`) for people to look at.

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::serve::launch;
use super::*;

/// The element key of W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session, deleted (and the driver killed) on drop.
struct Browser {
    http: reqwest::Client,
    session: String,
    base: String,
    driver: std::process::Child,
}

/// ChromeDriver runs in a process group of its own with the browser it starts; a test that
/// fails before [`Browser::quit`] still takes the whole group down.
impl Drop for Browser {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods)] // Reason: signalling the processes under test.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -9 -{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session with a fresh profile.
    async fn start(profile: &Path) -> Browser {
        for tool in ["chromium", "chromedriver"] {
            require(
                tool,
                "apt-get install chromium chromium-driver (.ci/run does)",
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        #[allow(clippy::disallowed_methods)] // Reason: the test drives the real browser.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut up = false;
        for _ in 0..200 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "chromedriver did not start");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // As the machine's own probe runs it: no sandbox as root, and none of the
                // background connections a closed network refuses.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            http,
            session,
            base,
            driver,
        }
    }

    /// Ends the session: Chromium exits, then the driver.
    async fn quit(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let v: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(
            v["value"]["error"].is_null(),
            "WebDriver {method} {path}: {v}"
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Runs `script` in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits (up to a minute) until `script` returns something truthy, and returns it.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        for _ in 0..600 {
            let v = self.eval(script).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.eval("return document.body.innerText").await;
        panic!("timed out waiting for {what}; the page shows:\n{page}");
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_model_plots_requests_and_answers_a_prompt() {
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let key = "status-page-key";
    let mut c = spice("http://127.0.0.1:9", home.path());
    c.arg("serve")
        .arg(&gguf)
        .args([
            "--name",
            "smol",
            "--addr",
            "127.0.0.1:0",
            "--backend",
            "cpu",
        ])
        .args(["--api-key", key])
        .arg("--task-history")
        .arg(home.path().join("th.db"));
    let served = launch(c).await;
    served.wait_ready().await;

    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::start(profile.path()).await;
    browser.goto(&format!("{}/", served.base)).await;
    // The model and its backend, from /health (no key needed for that).
    let backend = browser
        .wait_for(
            "the model row",
            r#"const r = document.querySelector('#models tr[data-model="smol"]');
               return r && r.querySelector('[data-backend]').dataset.backend;"#,
        )
        .await;
    assert_eq!(backend, "cpu");
    browser
        .wait_for(
            "the model to be ready",
            r#"return document.querySelector('#models [data-state]').dataset.state === 'ready';"#,
        )
        .await;
    // The rest needs the key: the page asks for it.
    browser
        .wait_for(
            "the key form",
            "return document.getElementById('key-form').classList.contains('shown');",
        )
        .await;
    browser.type_into("#key", key).await;
    browser.click("#key-save").await;

    // A few requests from outside; the plot's samples show their tokens.
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = client
            .post(format!("{}/v1/chat/completions", served.base))
            .bearer_auth(key)
            .json(&json!({"model": "smol", "max_tokens": 24,
                          "messages": [{"role": "user", "content": format!("Count to {}", i + 3)}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let points = browser
        .wait_for(
            "a plot with tokens in it",
            r#"const p = document.getElementById('plot');
               return Number(p.dataset.maxTokensPerS) > 0 && Number(p.dataset.points);"#,
        )
        .await;
    assert!(points.as_u64().unwrap() >= 2, "{points}");
    let polyline = browser
        .eval("return document.getElementById('tps').getAttribute('points').split(' ').length")
        .await;
    assert_eq!(polyline, points);
    // The recent requests, read with the key.
    browser
        .wait_for(
            "task-history rows",
            "return document.querySelectorAll('#tasks tbody tr').length >= 3;",
        )
        .await;

    // A prompt typed in the box gets the model's answer, streamed.
    browser
        .type_into("#prompt", "What is the capital of France?")
        .await;
    browser.click("#send").await;
    let answer = browser
        .wait_for(
            "the answer",
            r#"const a = document.getElementById('answer');
               return a.dataset.done === 'true' && a.textContent;"#,
        )
        .await;
    let answer = answer.as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"));
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, &png).unwrap();
    println!("status page screenshot: {}", path.display());
    // The key stayed in the page: nothing in the browser's storage.
    let stored = browser
        .eval("return localStorage.length + sessionStorage.length + document.cookie.length")
        .await;
    assert_eq!(stored, 0);
    browser.quit().await;
}
