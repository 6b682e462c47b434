//! The console's style guide: every component of `web/app.css` on one page
//! (with real charts from `web::charts` over a `web::history`), loaded in
//! the real headless Chromium with `web/app.js` running against a small
//! local server. Saves `target/console-screenshots/styleguide.png` (and
//! `styleguide-login.png`, and the page itself as `styleguide.html`) to
//! look at; checks that the script's live areas, job progress and
//! confirmations work in a browser.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::browser::{screenshot_dir, Browser};
use swiftgate::web::charts::{self, BarPart, ChartText, Line, TimeChart, Unit};
use swiftgate::web::history::{History, Range, Sample};

const CSS: &str = include_str!("../web/app.css");
const JS: &str = include_str!("../web/app.js");
const ICON: &str = include_str!("../web/favicon.svg");

const MIB: f64 = 1024.0 * 1024.0;
const GIB: u64 = 1 << 30;

/// A history as the sampler would have filled it over the last day.
fn history(now: u64) -> History {
    let h = History::new();
    let (mut up, mut down) = (0u64, 0u64);
    let start = now - 86_400;
    for i in 0..=8640u64 {
        let t = start + i * 10;
        let x = i as f64 / 8640.0 * std::f64::consts::TAU;
        // Office hours: a busy bump in the middle, bursts of upload.
        let busy = (x / 2.0).sin().max(0.0);
        up += (busy * 4.0 * MIB * (1.0 + (i as f64 * 0.37).sin().abs())) as u64;
        down += (busy * 1.5 * MIB * (1.0 + (i as f64 * 0.11).cos().abs())) as u64;
        h.record(Sample {
            at_ms: t * 1000,
            uploaded_bytes: up,
            downloaded_bytes: down,
            cache_used_bytes: (20.0 * GIB as f64 + busy * 12.0 * GIB as f64) as u64,
            sessions: (busy * 14.0).round() as u64,
        });
    }
    h
}

fn throughput(h: &History, range: Range, text: &ChartText) -> String {
    let s = h.series(range);
    charts::time_chart(&TimeChart {
        title: "Throughput",
        unit: Unit::BytesPerSec,
        times: &s.times,
        lines: vec![
            Line {
                name: "Upload",
                values: &s.upload_bps,
            },
            Line {
                name: "Download",
                values: &s.download_bps,
            },
        ],
        end_unix: s.end_unix,
        span_secs: s.span_secs,
        area: true,
        text: text.clone(),
    })
}

fn page(h: &History) -> String {
    let en = ChartText::default();
    let hour = throughput(h, Range::Hour, &en);
    let day = throughput(h, Range::Day, &en);
    let s = h.series(Range::Hour);
    let sessions = charts::time_chart(&TimeChart {
        title: "SMB sessions",
        unit: Unit::Count,
        times: &s.times,
        lines: vec![Line {
            name: "<script>sessions</script>",
            values: &s.sessions,
        }],
        end_unix: s.end_unix,
        span_secs: s.span_secs,
        area: false,
        text: en.clone(),
    });
    let ja = ChartText {
        now: "現在",
        no_data: "まだデータがありません",
        minutes: "分",
        hours: "時間",
    };
    let empty = charts::time_chart(&TimeChart {
        title: "キャッシュ使用量",
        unit: Unit::Bytes,
        times: &[],
        lines: vec![Line {
            name: "キャッシュ",
            values: &[],
        }],
        end_unix: s.end_unix,
        span_secs: 3600,
        area: true,
        text: ja,
    });
    let stacked = charts::stacked_bar(
        "Cache",
        &[
            BarPart {
                name: "clean",
                value: 21.0 * GIB as f64,
                color: "used",
            },
            BarPart {
                name: "dirty",
                value: 6.5 * GIB as f64,
                color: "dirty",
            },
        ],
        40.0 * GIB as f64,
        Some(("dirty limit", 10.0 * GIB as f64)),
    );
    let mut rows = String::new();
    for (i, (user, state, badge)) in [
        ("alice", "mounted", "ok"),
        ("bob", "mounted", "ok"),
        ("carol", "idle", "muted"),
        ("dave", "mount failed", "crit"),
        ("eve", "dirty 8.9 GiB", "warn"),
        ("山田太郎", "mounted", "ok"),
        ("<script>x</script>", "disabled", "muted"),
    ]
    .iter()
    .enumerate()
    {
        let user = charts::esc(user);
        rows.push_str(&format!(
            r#"<tr><td><a href="/users/{i}">{user}</a></td><td><span class="badge {badge}">{state}</span></td><td class="num">{}</td><td class="num">{}</td><td class="num">{:.2}×</td><td><div class="bar{}"><span style="width:{}%"></span></div></td><td class="num">{} s</td><td class="actions"><button class="btn-small">Flush</button> <button class="btn-small btn-danger" data-confirm="Remove {user}?">Remove</button></td></tr>"#,
            i % 3,
            charts::fmt_bytes((i as f64 + 1.0) * 3.7 * GIB as f64),
            1.0 + i as f64 * 0.31,
            if i == 4 { " warn" } else if i == 3 { " crit" } else { "" },
            10 + i * 13,
            12 + i * 7,
        ));
    }
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Style guide · swiftgate</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head><body>
<nav class="top">
  <a class="brand" href="/">swiftgate</a>
  <a href="/" class="current">Dashboard</a><a href="/users">Users</a><a href="/shares">Shares</a><a href="/cache">Cache</a><a href="/jobs">Jobs</a><a href="/audit">Audit</a>
  <span class="who">admin</span>
  <form method="post" action="/logout"><button>Log out</button></form>
</nav>
<main>
<div class="page-head"><div><h1>Dashboard</h1><p class="subtitle">gateway-01 · up 3 d 4 h · version 0.1.0</p></div>
<div class="actions"><a class="btn" href="#">Refresh</a><button class="btn-primary">Add user</button></div></div>

<div class="alert critical"><div><strong>Swift is unreachable.</strong> Uploads wait in the cache; 6.5 GiB not yet in the store. <span class="muted">connect timeout to swift.example:443</span></div></div>
<div class="alert warning"><div><strong>Dirty data near the limit:</strong> 9.1 GiB of 10 GiB. Writes will slow down.</div></div>
<div class="alert info"><div>メタデータは 60 秒ごとにストアへ送信されます。日本語の表示テスト。</div></div>

<div class="tiles">
  <div class="tile ok"><div class="value">42 ms</div><div class="label">Swift latency</div><div class="sub"><span class="badge ok">reachable</span></div></div>
  <div class="tile"><div class="value">27.5 GiB</div><div class="label">Cache used of 40 GiB</div></div>
  <div class="tile warn"><div class="value">6.5 GiB</div><div class="label">Dirty (not yet uploaded)</div></div>
  <div class="tile"><div class="value">93.4 %</div><div class="label">Cache hit ratio</div></div>
  <div class="tile"><div class="value">14</div><div class="label">SMB sessions · 接続数</div></div>
  <div class="tile crit"><div class="value">1</div><div class="label">Homes failed to mount</div></div>
</div>

<div class="grid two">
  <div class="card"><h2>Throughput, last hour <span class="badge muted">live</span></h2><div class="chart-box">{hour}</div></div>
  <div class="card"><h2>Throughput, last day</h2><div class="chart-box">{day}</div></div>
  <div class="card"><h2>SMB sessions</h2><div class="chart-box">{sessions}</div></div>
  <div class="card"><h2>キャッシュ使用量 (no data)</h2><div class="chart-box">{empty}</div></div>
</div>

<div class="grid">
  <div class="card"><h2>Cache</h2>
    {stacked}
    <div class="bar-label"><span>Used (HTML stacked bar)</span><span>27.5 GiB / 40 GiB</span></div>
    <div class="bar stacked"><span class="used" style="width:52%"></span><span class="dirty" style="width:16%"></span><i class="limit" style="left:25%"></i></div>
    <div class="bar-label"><span>Cache disk</span><span>61 %</span></div><div class="bar"><span style="width:61%"></span></div>
    <div class="bar-label"><span>Dirty of limit</span><span>82 %</span></div><div class="bar warn"><span style="width:82%"></span></div>
    <div class="bar-label"><span>Cache disk free</span><span>97 %</span></div><div class="bar crit"><span style="width:97%"></span></div>
  </div>
  <div class="card"><h2>Live area and job</h2>
    <div id="live" data-live="/live" data-interval="1000"><p>waiting for the first refresh…</p></div>
    <div id="stale" data-live="/live-fail" data-interval="1000"><p>this one fails to refresh: it turns stale</p></div>
    <div id="job" data-job="7"><div class="bar-label"><span>fsck alice</span><span class="badge info">running</span></div><div class="progress"><span></span></div><div class="job-text">starting…</div></div>
    <dl class="kv"><dt>Keystone token</dt><dd>expires in 11 h</dd><dt>Metadata shipped</dt><dd>24 s ago</dd><dt>Upload queue</dt><dd>128 blocks</dd></dl>
  </div>
</div>

<div class="card"><h2>Users <span class="muted" style="font-weight:400">1,000 users</span><span class="card-actions"><button class="btn-primary btn-small">Add user</button></span></h2>
<form class="search"><input type="search" placeholder="Search users"><button>Search</button></form>
<div class="table-wrap"><table class="list">
<thead><tr><th>User</th><th>State</th><th class="num">Sessions</th><th class="num">Stored</th><th class="num">Dedup</th><th>Cache</th><th class="num">Metadata age</th><th></th></tr></thead>
<tbody>{rows}</tbody></table></div>
<div class="pager"><a href="#">‹ Prev</a><a href="#">1</a><span class="current">2</span><a href="#">3</a><span class="gap">…</span><a href="#">40</a><a href="#">Next ›</a><span class="info">26–50 of 1,000</span></div>
</div>

<div class="grid two">
  <div class="card"><h2>Add a user</h2>
    <form id="confirm-form" method="post" action="/nowhere" data-confirm="Really add?">
    <div class="form-row"><label for="u">Unix user name</label><input id="u" value="alice"><div class="hint">Lower case letters, digits, - and _.</div></div>
    <div class="form-row invalid"><label for="p">Samba password</label><input id="p" type="password" value="x" aria-invalid="true"><div class="field-error">At least 8 characters.</div></div>
    <div class="form-row"><label for="m">Mode</label><select id="m"><option>Keystone credentials</option><option>Service identity</option></select></div>
    <div class="form-row"><label class="check"><input type="checkbox" checked> Read-only members</label></div>
    <div class="form-actions"><button class="btn-primary" id="confirm-submit">Add user</button><button class="btn-secondary" type="button">Cancel</button><button class="btn-danger" type="button">Remove</button><button disabled>Disabled</button></div>
    </form>
  </div>
  <div class="card"><h2>Team share <code>finance</code> <span class="badge ok">testparm OK</span></h2>
<pre class="code">[finance]
    path = /srv/swiftgate/shares/finance
    valid users = @finance
    read only = no
    comment = &lt;script&gt;alert(1)&lt;/script&gt;
</pre>
    <div class="empty"><strong>No team shares yet</strong>Create one to give a Unix group a shared folder.</div>
  </div>
</div>
</main>
</body></html>"##
    )
}

const LOGIN: &str = r##"<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>ログイン · swiftgate</title>
<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>
<body class="login"><div class="login-box">
<h1>swiftgate</h1><p class="subtitle">ゲートウェイ管理コンソール</p>
<div class="alert critical"><div>ユーザー名またはパスワードが違います。</div></div>
<form method="post" action="/login">
<div class="form-row"><label for="user">ユーザー名</label><input id="user" name="user" value="admin"></div>
<div class="form-row"><label for="pw">パスワード</label><input id="pw" name="password" type="password"></div>
<button class="btn-primary">ログイン</button>
</form></div></body></html>"##;

/// Serves the style guide, the assets, a live fragment that counts, one
/// that fails, and a job that advances by a quarter per poll.
fn serve(pages: Arc<(String, String)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, ct, body) = match path.as_str() {
                "/" => ("200 OK", "text/html", pages.0.clone()),
                "/login" => ("200 OK", "text/html", pages.1.clone()),
                "/static/app.css" => ("200 OK", "text/css", CSS.to_string()),
                "/static/app.js" => ("200 OK", "text/javascript", JS.to_string()),
                "/static/favicon.svg" => ("200 OK", "image/svg+xml", ICON.to_string()),
                "/live" => {
                    let n = ticks.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        "200 OK",
                        "text/html",
                        format!(
                            r#"<p>refreshed <span id="live-n">{n}</span> times <span class="badge ok">live</span></p>"#
                        ),
                    )
                }
                "/api/v1/jobs/7" => {
                    let n = polls.fetch_add(1, Ordering::SeqCst).min(4);
                    let state = if n == 4 { "succeeded" } else { "running" };
                    (
                        "200 OK",
                        "application/json",
                        format!(
                            r#"{{"id":7,"kind":"fsck","subject":"alice","state":"{state}","started_unix":1,"phase":"checking inodes","done":{},"total":100,"message":{}}}"#,
                            n * 25,
                            if n == 4 {
                                r#""no problems found""#
                            } else {
                                "null"
                            }
                        ),
                    )
                }
                _ => ("500 Internal Server Error", "text/plain", "broken".into()),
            };
            let mut s = r.into_inner();
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ct}; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn the_style_guide_renders_and_its_script_works() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let h = history(now);
    assert_eq!(h.series(Range::Hour).times.len(), 360);
    let html = page(&h);
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("styleguide.html"), &html).unwrap();
    let base = serve(Arc::new((html, LOGIN.to_string())));

    let b = Browser::start();
    b.goto(&format!("{base}/"));
    b.wait_for("svg.chart", Duration::from_secs(10));
    // The stylesheet applied (the nav bar is dark, the page is not white).
    let nav_bg =
        b.exec("return getComputedStyle(document.querySelector('nav.top')).backgroundColor");
    assert_eq!(nav_bg, "rgb(29, 43, 58)", "app.css not applied");
    // Escaped names show as text.
    assert!(b.source().contains("&lt;script&gt;sessions"));
    assert_eq!(
        b.exec("return document.querySelectorAll('script').length"),
        1,
        "only app.js: no injected script"
    );

    // Live area: refreshed in place, repeatedly; a failing one turns stale
    // and keeps its content.
    b.wait_for("#live-n", Duration::from_secs(10));
    b.wait_for_text("#live-n", "2", Duration::from_secs(10));
    b.wait_for("#stale.stale", Duration::from_secs(10));
    assert!(b.text("#stale").contains("fails to refresh"));

    // The job's bar fills and says it is done.
    b.wait_for("#job[data-state=succeeded]", Duration::from_secs(20));
    assert!(b.text("#job .job-text").contains("no problems found"));
    assert_eq!(
        b.exec("return document.querySelector('#job .progress > span').style.width"),
        "100%"
    );
    assert!(b.exists("#job .progress.done"));

    // Confirmations: refused, nothing is submitted; accepted, it is.
    b.exec("window.confirm = function(t) { window.asked = t; return false; }");
    b.click("#confirm-submit");
    assert_eq!(b.exec("return window.asked"), "Really add?");
    assert!(b.url().starts_with(&base) && b.exists("#confirm-form"));
    b.exec("window.asked = null; window.confirm = function(t) { window.asked = t; return false; }");
    b.click("td.actions .btn-danger");
    assert_eq!(b.exec("return window.asked"), "Remove alice?");

    b.exec("window.scrollTo(0, 0)");
    let shot = b.screenshot("styleguide");
    assert!(std::fs::metadata(&shot).unwrap().len() > 50_000);

    b.exec("window.confirm = function() { return true; }");
    b.click("#confirm-submit");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !b.url().ends_with("/nowhere") {
        assert!(
            std::time::Instant::now() < deadline,
            "an accepted confirmation did not submit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    b.goto(&format!("{base}/login"));
    b.wait_for(".login-box", Duration::from_secs(10));
    b.screenshot("styleguide-login");
}
