//! The browser harness itself: a real headless Chromium loads a page from
//! a tiny local server, fills a field, clicks, reads the result, sends the
//! Accept-Language asked for, and saves a full-page screenshot.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::browser::{screenshot_dir, Browser};

/// Serves one page on a free loopback port (forever, from a thread); the
/// page shows the request's Accept-Language.
fn serve_page() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut lang = String::from("(none)");
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                if line.to_ascii_lowercase().starts_with("accept-language:") {
                    lang = line["accept-language:".len()..].trim().to_string();
                }
                line.clear();
            }
            let body = PAGE.replace("{LANG}", &lang);
            let mut s = r.into_inner();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/")
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title>
<style>
 body { font-family: sans-serif; margin: 40px; background: #f4f6f8; color: #222 }
 .card { background: #fff; border-radius: 8px; padding: 24px; box-shadow: 0 1px 4px #0002; max-width: 600px }
 #out { font-size: 28px; color: #0a6 }
 .tall { height: 1400px; border-left: 6px solid #36c; margin-top: 20px; padding-left: 10px }
</style></head>
<body><div class="card">
 <h1>swiftgate browser smoke test</h1>
 <p id="lang">Accept-Language: {LANG}</p>
 <input id="name" placeholder="name">
 <button id="go" onclick="document.getElementById('out').textContent = 'Hello, ' + document.getElementById('name').value + '!'">Greet</button>
 <p id="out">not clicked</p>
 <p>日本語の表示テスト: ゲートウェイ</p>
</div>
<div class="tall">a tall page: the screenshot covers all of it</div>
<p id="end">end of page</p>
</body></html>"#;

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
fn fill_click_read_and_screenshot_a_page() {
    let url = serve_page();
    let b = Browser::start();
    b.goto(&url);
    b.wait_for("#go", Duration::from_secs(10));
    assert!(b.text("#lang").contains("en-US"), "{}", b.text("#lang"));
    assert_eq!(b.text("#out"), "not clicked");
    b.fill("#name", "Ada <b>");
    b.click("#go");
    assert_eq!(b.text("#out"), "Hello, Ada <b>!");
    assert_eq!(b.attr("#name", "value").as_deref(), Some("Ada <b>"));
    assert!(b.exists("#end") && !b.exists("#nothing-here"));

    let path = b.screenshot("smoke-browser");
    assert_eq!(path, screenshot_dir().join("smoke-browser.png"));
    let png = std::fs::read(&path).unwrap();
    let (w, h) = png_size(&png);
    assert_eq!(w, 1366);
    assert!(
        h >= 1500,
        "the screenshot is {h} px high: not the whole page"
    );
    assert!(png.len() > 20_000, "a {} byte PNG: blank?", png.len());
}

#[test]
fn the_browser_asks_for_the_language_it_was_given() {
    let url = serve_page();
    let b = Browser::with_lang("ja");
    b.goto(&url);
    let lang = b.wait_for_text("#lang", "ja", Duration::from_secs(10));
    assert!(!lang.contains("en"), "{lang}");
    b.screenshot("smoke-browser-ja");
}
