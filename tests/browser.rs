//! The headless Chromium harness (tasknode_tests::browser) against a tiny page served here:
//! typing, choosing, clicking, waiting on text, Enter, Tab, cookies, screenshots, and no
//! processes left behind. It checks the harness, not the product.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;
use tasknode_tests::browser::Browser;

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness</title></head>
<body style="font: 20px sans-serif; background: #eef">
<h1>Browser harness</h1>
<form id="f" onsubmit="event.preventDefault(); document.getElementById('out').textContent = 'submitted';">
  <input id="name" value="placeholder">
  <select id="color"><option value="red">Red</option><option value="blue">Blue</option></select>
  <button id="go" type="button">Go</button>
</form>
<div id="out"></div>
<script>
document.getElementById('go').onclick = async () => {
  await fetch('/login', { method: 'POST' });
  const name = document.getElementById('name').value;
  const color = document.getElementById('color').value;
  document.getElementById('out').textContent = 'Hello, ' + name + ' (' + color + ')';
};
</script>
</body></html>"#;

/// Serves PAGE at / and sets an HttpOnly, SameSite=Strict cookie on POST /login.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || respond(stream));
        }
    });
    url
}

fn respond(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        request.push_str(&line);
        line.clear();
    }
    let (status, headers, body) = if request.starts_with("GET / ") {
        ("200 OK", "Content-Type: text/html\r\n", PAGE)
    } else if request.starts_with("POST /login ") {
        (
            "200 OK",
            "Content-Type: text/plain\r\nSet-Cookie: s=1; HttpOnly; SameSite=Strict\r\n",
            "ok",
        )
    } else {
        ("404 Not Found", "", "")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = reader.get_mut().write_all(response.as_bytes());
}

/// Live processes whose process group is `pgid`, from /proc/<pid>/stat. Zombies do not count:
/// Chromium's helpers are reparented to init when it exits, and init reaps them in its own time.
fn group_members(pgid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields[0] != "Z" && fields[2] == pgid.to_string() {
            found.push(head.to_owned());
        }
    }
    found
}

#[test]
fn harness_drives_headless_chromium_and_leaves_nothing_behind() {
    let url = serve();
    let browser = Browser::start();
    browser.goto(&url);
    assert_eq!(browser.current_url(), url);

    browser.fill("#name", "Ada");
    assert_eq!(browser.value("#name"), "Ada", "fill clears first");
    browser.select("#color", "blue");
    assert_eq!(browser.value("#color"), "blue");
    assert_eq!(browser.attr("#go", "type").as_deref(), Some("button"));
    assert_eq!(browser.attr("#go", "data-missing"), None);
    assert!(browser.exists("#out") && !browser.exists("#nothing"));

    browser.click("#go");
    let text = browser.wait_text("#out", "Hello, Ada", Duration::from_secs(10));
    assert_eq!(text, "Hello, Ada (blue)");
    assert_eq!(browser.text("h1"), "Browser harness");

    let cookies = browser.cookies();
    let session = cookies.iter().find(|c| c.name == "s").expect("cookie s");
    assert_eq!(session.value, "1");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    assert_eq!(
        browser.eval("return document.cookie;"),
        json!(""),
        "HttpOnly hides it from JS"
    );

    // Keyboard: typing focuses the input, Tab walks the form in order, Enter submits it.
    browser.fill("#name", "Grace");
    assert_eq!(browser.focused_id().as_deref(), Some("name"));
    browser.tab();
    assert_eq!(browser.focused_id().as_deref(), Some("color"));
    browser.tab();
    assert_eq!(browser.focused_id().as_deref(), Some("go"));
    browser.press_enter("#name");
    browser.wait_text("#out", "submitted", Duration::from_secs(5));

    let shot = browser.screenshot("browser-harness");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    assert!(png.len() > 1000, "{} is suspiciously small", shot.display());

    let pgid = browser.driver_pid();
    assert!(
        group_members(pgid).len() > 1,
        "Chromium runs in chromedriver's process group"
    );
    drop(browser);
    assert_eq!(
        group_members(pgid),
        Vec::<String>::new(),
        "processes left behind"
    );
}
