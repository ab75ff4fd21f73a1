//! A headless Chromium for end-to-end browser tests, driven over WebDriver through chromedriver.
//!
//! [`Browser::start`] runs chromedriver on a free loopback port and opens one Chromium session with
//! a throwaway profile; dropping the `Browser` closes the session, shuts chromedriver down and
//! kills whatever is left of its process group, Chromium included. The API is blocking: every call
//! runs the async `fantoccini` client on a current-thread tokio runtime the `Browser` owns.
//! Lookups poll every 100 ms up to [`TIMEOUT`]; failures panic at the test's line with the
//! selector and the page's URL.

use std::fmt::Display;
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long the helpers wait for an element or a condition unless told otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);
/// The longest a single WebDriver command may take before the harness gives up on chromedriver.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";
const MISSING: &str =
    "install the Debian packages `chromium chromium-driver` (scripts/test.sh does)";

/// One cookie as the browser holds it, with the attributes tests assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    /// "Strict", "Lax" or "None" when the browser reports it.
    pub same_site: Option<String>,
    pub path: Option<String>,
}

/// A headless Chromium session; see the module docs.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    port: u16,
    /// Chromium's --user-data-dir and chromedriver's log; removed after both are gone.
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or panics saying what is missing.
    pub fn start() -> Browser {
        let chromedriver = find_program("chromedriver");
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: {MISSING}"
        );
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A free port can be taken between probing and chromedriver's bind: try a few.
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                // Its own process group, so Drop can kill Chromium with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
            if wait_driver_ready(&mut driver, port) {
                break (driver, port);
            }
            kill_group(&mut driver);
            assert!(
                attempt < 3,
                "chromedriver did not come up on 127.0.0.1:{port}; its log:\n{}",
                read_log(&log)
            );
        };
        let mut browser = Browser {
            rt,
            client: None,
            driver,
            port,
            _dir: dir,
        };
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        match within(&browser.rt, COMMAND_TIMEOUT, builder.connect(&url)) {
            Some(Ok(client)) => browser.client = Some(client),
            Some(Err(e)) => panic!(
                "chromedriver could not start Chromium: {e}; its log:\n{}",
                read_log(&log)
            ),
            None => panic!(
                "chromedriver did not open a session within {COMMAND_TIMEOUT:?}; its log:\n{}",
                read_log(&log)
            ),
        }
        browser
    }

    /// Navigates to `url` and waits for the page to load.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        let r = self.run("goto", self.client().goto(url));
        self.ok(r, &format!("go to {url} from"), "");
    }

    /// The URL of the current page.
    #[track_caller]
    pub fn current_url(&self) -> String {
        match self.run("current_url", self.client().current_url()) {
            Ok(url) => url.to_string(),
            Err(e) => panic!("browser: cannot read the current URL: {e}"),
        }
    }

    /// Clears the input at `css` and types `text` into it.
    #[track_caller]
    pub fn fill(&self, css: &str, text: &str) {
        let el = self.find(css, TIMEOUT);
        self.ok(self.run("clear", el.clear()), "clear", css);
        self.ok(self.run("type", el.send_keys(text)), "type into", css);
    }

    /// Chooses the option with value `value` in the `<select>` at `css`.
    #[track_caller]
    pub fn select(&self, css: &str, value: &str) {
        let el = self.find(css, TIMEOUT);
        let r = self.run("select", el.select_by_value(value));
        self.ok(r, &format!("select option {value:?} of"), css);
    }

    /// Clicks the element at `css`, retrying while it is present but not yet clickable.
    #[track_caller]
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let el = self.find(css, deadline.saturating_duration_since(Instant::now()));
            match self.run("click", el.click()) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => self.fail("click", css, e),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Sends the Enter key to the element at `css` (submits a form from its input).
    #[track_caller]
    pub fn press_enter(&self, css: &str) {
        let el = self.find(css, TIMEOUT);
        let r = self.run("send Enter", el.send_keys(&Key::Enter.to_string()));
        self.ok(r, "press Enter in", css);
    }

    /// The rendered text of the element at `css`.
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css, TIMEOUT);
        self.ok(self.run("text", el.text()), "read the text of", css)
    }

    /// Polls until the text of the element at `css` contains `substring`; returns that text.
    #[track_caller]
    pub fn wait_text(&self, css: &str, substring: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(el) = self.run("find", self.client().find(Locator::Css(css)))
                && let Ok(text) = self.run("text", el.text())
            {
                if text.contains(substring) {
                    return text;
                }
                last = Some(text);
            }
            if Instant::now() >= deadline {
                let seen = last.map_or_else(|| "no such element".to_owned(), |t| format!("{t:?}"));
                self.fail(
                    &format!("wait {timeout:.1?} for text {substring:?} in"),
                    css,
                    format!("last seen: {seen}"),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls until an element matches `css`.
    #[track_caller]
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        self.find(css, timeout);
    }

    /// Whether an element matches `css` right now (no waiting).
    #[track_caller]
    pub fn exists(&self, css: &str) -> bool {
        let r = self.run("find_all", self.client().find_all(Locator::Css(css)));
        !self.ok(r, "look for", css).is_empty()
    }

    /// The attribute `name` of the element at `css`, if it has it.
    #[track_caller]
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css, TIMEOUT);
        let r = self.run("attr", el.attr(name));
        self.ok(r, &format!("read attribute {name:?} of"), css)
    }

    /// The current value of the input, textarea or select at `css` (the property, not the attribute).
    #[track_caller]
    pub fn value(&self, css: &str) -> String {
        let el = self.find(css, TIMEOUT);
        let r = self.run("value", el.prop("value"));
        self.ok(r, "read the value of", css).unwrap_or_default()
    }

    /// Runs `js` as a function body in the page (use `return` for a result) and returns its result.
    #[track_caller]
    pub fn eval(&self, js: &str) -> Value {
        let r = self.run("execute_script", self.client().execute(js, Vec::new()));
        self.ok(r, &format!("run script {js:?}"), "")
    }

    /// Saves a PNG of the viewport as `name.png` in `$TASKNODE_SCREENSHOTS`, else
    /// `target/screenshots/`, and returns its path.
    #[track_caller]
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run("screenshot", self.client().screenshot());
        let png = self.ok(png, "take a screenshot", "");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Every cookie the browser holds for the current page, HttpOnly ones included.
    #[track_caller]
    pub fn cookies(&self) -> Vec<BrowserCookie> {
        let cookies = self.run("get cookies", self.client().get_all_cookies());
        let cookies = self.ok(cookies, "read cookies", "");
        cookies
            .iter()
            .map(|c| BrowserCookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                path: c.path().map(str::to_owned),
            })
            .collect()
    }

    /// The id of the focused element (`document.activeElement.id`), if it has a non-empty one.
    #[track_caller]
    pub fn focused_id(&self) -> Option<String> {
        let id = self.eval("return document.activeElement ? document.activeElement.id : null;");
        id.as_str().filter(|id| !id.is_empty()).map(str::to_owned)
    }

    /// Presses and releases Tab as a keyboard would, moving focus from the active element.
    #[track_caller]
    pub fn tab(&self) {
        let tab: char = Key::Tab.into();
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: tab })
            .then(KeyAction::Up { value: tab });
        let r = self.run("press Tab", self.client().perform_actions(keys));
        self.ok(r, "press Tab", "");
    }

    /// chromedriver's pid, which is also the process group of the Chromium it runs (for leak checks).
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser session is open")
    }

    /// Runs one WebDriver command to completion, giving up on a hung chromedriver.
    #[track_caller]
    fn run<T>(&self, what: &str, fut: impl Future<Output = T>) -> T {
        match within(&self.rt, COMMAND_TIMEOUT, fut) {
            Some(out) => out,
            None => panic!("browser: WebDriver command {what} took over {COMMAND_TIMEOUT:?}"),
        }
    }

    /// The element at `css`, polled for until `timeout`.
    #[track_caller]
    fn find(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            match self.run("find", self.client().find(Locator::Css(css))) {
                Ok(el) => return el,
                Err(e) if Instant::now() >= deadline => {
                    self.fail(&format!("find (waited {timeout:.1?})"), css, e)
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// The value of a WebDriver result, or a panic about `action` on `css`.
    #[track_caller]
    fn ok<T>(&self, result: Result<T, CmdError>, action: &str, css: &str) -> T {
        match result {
            Ok(value) => value,
            Err(e) => self.fail(action, css, e),
        }
    }

    /// Panics about `action` on `css` with the current URL.
    #[track_caller]
    fn fail(&self, action: &str, css: &str, detail: impl Display) -> ! {
        let url = within(
            &self.rt,
            Duration::from_secs(5),
            self.client().current_url(),
        )
        .and_then(Result::ok)
        .map_or_else(|| "<unknown>".to_owned(), |u| u.to_string());
        let target = if css.is_empty() {
            String::new()
        } else {
            format!(" `{css}`")
        };
        panic!("browser: could not {action}{target} on {url}: {detail}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session: chromedriver quits Chromium. Errors are moot, the kill follows.
            let _ = within(&self.rt, Duration::from_secs(10), client.close());
        }
        // A clean exit lets chromedriver reap Chromium's processes itself; whatever is left (a hung
        // session, a helper) then dies with the group, and the profile directory goes after.
        if http_get(self.port, "/shutdown", "") {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_group(&mut self.driver);
    }
}

/// Runs `fut` on `rt` for at most `limit`; None if it took longer.
fn within<T>(
    rt: &tokio::runtime::Runtime,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    rt.block_on(async { tokio::time::timeout(limit, fut).await.ok() })
}

/// SIGKILLs the process group led by `child` (chromedriver and the Chromium it started) and reaps it.
fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls chromedriver's /status until it says ready; false if it exits or stays silent 10 s.
fn wait_driver_ready(driver: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if matches!(driver.try_wait(), Ok(Some(_))) {
            return false;
        }
        if status_ready(port) {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

/// Whether chromedriver's /status answers `"ready": true`.
fn status_ready(port: u16) -> bool {
    http_get(port, "/status", "\"ready\":true")
}

/// GETs `path` from chromedriver on `port`: whether the answer (spaces removed) contains `expect`.
/// chromedriver keeps connections open, so this reads until `expect` shows up, not to the end.
fn http_get(port: u16, path: &str, expect: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let mut chunk = [0; 4096];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        response.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&response)
            .replace(' ', "")
            .contains(expect)
        {
            return true;
        }
    }
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: {MISSING}"))
}

/// The last 40 lines of chromedriver's log, for panics.
fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `$TASKNODE_SCREENSHOTS`, else `screenshots/` in the target directory the test runs from.
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TASKNODE_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test> -> target/screenshots
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("screenshots")
}
