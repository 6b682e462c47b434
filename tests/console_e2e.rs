//! The console end to end, in a real headless Chromium against the real
//! daemon, smbd and PAM: an admin logs in, adds a user through the form,
//! the user connects with smbclient (a session held open) and the home
//! shows mounted with its session; a flush runs as a job with progress; a
//! team share made in the browser is writable by its member and refused to
//! a non-member; a `<script>` comment stays text; the page switches to
//! Japanese; logout closes the pages. Every page is saved as a screenshot
//! under target/console-screenshots/ (e2e-*.png) to be looked at.
//!
//! Everything made here (accounts, groups, shares, the daemon, smbd,
//! smbclient, mounts, Chromium) goes away on drop, also on failure.

mod common;

use common::accounts::{PamService, TestAccount, TestGroup};
use common::browser::Browser;
use common::gw::*;
use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// An smbclient session held open: commands go in through its stdin, its
/// output into a file. Killed on drop.
struct SmbSession {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl SmbSession {
    fn open(gw: &Gw, share: &str, user: &str, password: &str, cwd: &Path) -> SmbSession {
        let log = cwd.join(format!("smbclient-{share}.log"));
        let mut child = Command::new("smbclient")
            .arg(format!("//127.0.0.1/{share}"))
            .args(["-p", &gw.port.to_string(), "-U", user])
            .arg("--option=client min protocol=SMB2")
            // The password through the environment, not argv.
            .env("PASSWD", password)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("smbclient (apt install smbclient)");
        let stdin = child.stdin.take();
        SmbSession { child, stdin, log }
    }

    fn send(&mut self, cmd: &str) {
        let s = self.stdin.as_mut().expect("session open");
        writeln!(s, "{cmd}").unwrap();
        s.flush().unwrap();
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SmbSession {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 200 ms until it holds; panics with `what()` after
/// `timeout`.
#[track_caller]
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn shot(b: &Browser, n: &mut u32, name: &str) {
    *n += 1;
    let p = b.screenshot(&format!("e2e-{n:02}-{name}"));
    eprintln!("screenshot: {}", p.display());
}

/// Whether two elements sit on one line (their vertical centres within
/// 8 px): the layout checks behind the screenshots.
#[track_caller]
fn same_line(b: &Browser, a: &str, c: &str) -> bool {
    let js = format!(
        "var r = function (s) {{ var e = document.querySelector(s); if (!e) return null; \
         var b = e.getBoundingClientRect(); return (b.top + b.bottom) / 2; }}; \
         var a = r({a:?}), c = r({c:?}); return a !== null && c !== null && Math.abs(a - c) < 8"
    );
    b.exec(&js) == true
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn smb_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_admin_runs_the_gateway_from_the_browser() {
    // Declared first, dropped last: the PAM service and accounts outlive
    // the daemon that uses them.
    let svc = PamService::swiftgate();
    let group = TestGroup::new();
    let admin = TestAccount::with_groups(&[&group.name]);
    let store_dir = unique_dir("e2estore");
    let store = format!("local://{}/homes/{{user}}", store_dir.display());
    let mut gw = Gw::with_console(
        &store,
        "",
        &[],
        "service",
        &format!(
            "pam_service = \"{}\"\nadmin_group = \"{}\"",
            svc.name, group.name
        ),
    );
    let url = gw.console_url();
    let work = unique_dir("e2ework");
    // smbd runs as the users: they read what they upload from here.
    Command::new("chmod")
        .arg("755")
        .arg(&work)
        .status()
        .unwrap();
    let b = Browser::start();
    let mut n = 0;

    // ---- Login: a protected page sends to the login form first.
    b.goto(&format!("{url}/users"));
    b.wait_for("#login-form", T);
    assert!(b.url().contains("/login?next="), "{}", b.url());
    shot(&b, &mut n, "login");
    b.fill("#login-user", &admin.name);
    b.fill("#login-password", &admin.password);
    b.click("#login-submit");
    b.wait_for("#users-table", T);
    assert_eq!(b.text("#current-user"), admin.name);
    assert!(
        same_line(&b, "#current-user", "#logout") && same_line(&b, "#logout", "#nav-users"),
        "the user and the logout button sit in the nav bar's line"
    );
    assert!(b.url().ends_with("/users"), "back where asked: {}", b.url());

    // ---- Add a user: first a validation error next to the field.
    b.click("#add-user");
    b.wait_for("#user-add-form", T);
    let user = unique_user("e");
    let password = "E2e-samba-pw-1";
    b.fill("#add-user", &user);
    b.fill("#add-password", password);
    b.fill("#add-password2", "a different one");
    b.click("#user-add-submit");
    b.wait_for("#error-password2", T);
    assert!(
        !b.text("#error-password2").is_empty(),
        "the error says what is wrong"
    );
    assert_eq!(
        b.attr("#add-user", "value").as_deref(),
        Some(user.as_str()),
        "the form keeps what was typed"
    );
    assert!(
        same_line(&b, "#add-adopt", "label[for=add-adopt]"),
        "a checkbox and its label on one line"
    );
    shot(&b, &mut n, "user-add-error");
    // Nothing was made.
    assert!(nix::unistd::User::from_name(&user).unwrap().is_none());
    gw.users.push(user.clone()); // removed on drop from here on
    b.fill("#add-password", password);
    b.fill("#add-password2", password);
    b.click("#user-add-submit");
    b.wait_for("#user-live", T);
    assert_eq!(b.text("#user-name"), user);
    assert!(
        b.exists("[data-test=banner-ok]"),
        "a banner says it is done"
    );
    assert!(
        nix::unistd::User::from_name(&user).unwrap().is_some(),
        "a Unix account"
    );

    // ---- The user connects with smbclient and keeps the session open.
    // Random: neither dedup nor compression shrinks it.
    let mut big = vec![0u8; 6 << 20];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut big).unwrap();
    fs::write(work.join("big.bin"), &big).unwrap();
    let mut sess = SmbSession::open(&gw, "home", &user, password, &work);
    sess.send("put big.bin big.bin");
    let home = gw.home(&user);
    eventually(
        T,
        || fs::metadata(home.join("big.bin")).is_ok_and(|m| m.len() == big.len() as u64),
        || {
            format!(
                "the upload through Samba did not arrive\nsmbclient: {}\ndaemon: {}",
                sess.output(),
                gw.daemon_log()
            )
        },
    );
    assert!(is_mounted(&home));

    // The dashboard shows the home mounted with one session (live area,
    // refreshed every 5 s: the page is not reloaded).
    b.goto(&format!("{url}/"));
    b.wait_for("#dashboard-live", T);
    let row = format!("tr[data-test=home-row][data-user={user}]");
    b.wait_for(&row, T);
    b.wait_for_text(&format!("{row} [data-test=home-sessions]"), "1", T);
    assert!(b.text("[data-test=homes-mounted]").trim() != "0");
    assert!(b.text("[data-test=sessions]").trim() != "0");
    assert!(
        same_line(
            &b,
            "[data-test=chart-throughput]",
            "[data-test=chart-cache]"
        ),
        "charts two a row (drawn for half-width cards)"
    );
    shot(&b, &mut n, "dashboard");

    // The users list and the user's page say the same.
    b.goto(&format!("{url}/users"));
    b.wait_for("#users-table", T);
    let urow = format!("tr[data-test=user-row][data-user={user}]");
    assert!(b.exists(&urow), "the new user is listed");
    shot(&b, &mut n, "users");
    b.goto(&format!("{url}/users?q={user}"));
    b.wait_for("#users-table", T);
    assert_eq!(
        b.exec("return document.querySelectorAll('tr[data-test=user-row]').length"),
        1,
        "the search finds exactly the user"
    );
    b.click(&format!("{urow} a"));
    b.wait_for("#user-mounted", T);
    assert_eq!(
        b.attr("#user-mounted", "data-mounted").as_deref(),
        Some("true")
    );
    assert_eq!(b.text("#user-sessions").trim(), "1");
    assert!(
        same_line(&b, "#action-unmount", "#action-flush")
            && same_line(&b, "#action-flush", "#action-fsck"),
        "the actions in a row"
    );
    shot(&b, &mut n, "user-detail");

    // ---- Flush: a job with progress, which finishes.
    b.click("#action-flush");
    b.wait_for("#job", T);
    assert!(b.url().contains("/jobs/"), "{}", b.url());
    b.wait_for("#job[data-state=succeeded]", Duration::from_secs(120));
    let msg = b.text("#job-message");
    assert!(msg.contains("flushed"), "{msg}");
    assert_eq!(
        b.attr("#job-progress", "value").as_deref(),
        Some("100"),
        "progress shown complete"
    );
    shot(&b, &mut n, "job-flush");
    b.goto(&format!("{url}/users/{user}"));
    b.wait_for("[data-test=user-dirty]", T);
    assert_eq!(b.text("[data-test=user-dirty]").trim(), "0 B");
    // The 6 MiB are in the store now.
    let stored: u64 = walk(&store_dir.join("homes").join(&user))
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(stored >= 6 << 20, "only {stored} bytes in the store");
    b.goto(&format!("{url}/jobs"));
    b.wait_for("#jobs-live", T);
    shot(&b, &mut n, "jobs");

    // ---- A team share with the user as member, and a script as comment.
    let other = unique_user("x");
    ok(gw.add_user(&other, "E2e-other-pw-1", &[]));
    let share = format!("t{:06x}", rand_u32() & 0xffffff);
    gw.shares.push(share.clone());
    let payload = "<script>window.__pwned=1;document.title='pwned'</script><b>Team</b>";
    b.goto(&format!("{url}/shares"));
    b.wait_for("#add-share", T);
    b.click("#add-share");
    b.wait_for("#share-form", T);
    b.fill("#share-name-input", &share);
    b.fill("#share-comment", payload);
    b.fill("#share-members", &user);
    b.click("#share-submit");
    b.wait_for("#share-smb-conf", T);
    assert!(b.exists("[data-test=banner-ok]"), "{}", b.source());
    let title = b.exec("return document.title");
    assert_eq!(
        b.attr("#share-comment", "value").as_deref(),
        Some(payload),
        "the comment is kept as text"
    );
    let conf = b.text("#share-smb-conf");
    assert!(
        conf.contains(&format!("[{share}]")) && conf.contains("valid users = @"),
        "{conf}"
    );
    shot(&b, &mut n, "share-detail");
    b.goto(&format!("{url}/shares"));
    b.wait_for("#shares-table", T);
    let cell = format!("tr[data-share={share}] [data-test=share-comment]");
    assert_eq!(b.text(&cell), payload, "shown as text, tags and all");
    assert_eq!(
        b.exec(&format!(
            "return document.querySelectorAll('{cell} script, {cell} b').length"
        )),
        0,
        "no element made from the comment"
    );
    assert_eq!(b.exec("return window.__pwned === undefined"), true);
    for t in [title, b.exec("return document.title")] {
        let t = t.as_str().unwrap_or_default().to_string();
        assert!(t.ends_with(" · swiftgate") && !t.contains("pwned"), "{t}");
    }
    shot(&b, &mut n, "shares");

    // The member writes to it; a non-member is refused.
    fs::write(work.join("plan.txt"), b"team plan").unwrap();
    smb_ok(gw.smbclient_on(&share, &user, password, "put plan.txt plan.txt", &work));
    let mp = gw.root.join("shares").join(&share);
    assert_eq!(fs::read(mp.join("plan.txt")).unwrap(), b"team plan");
    let o = gw.smbclient_on(&share, &other, "E2e-other-pw-1", "ls", &work);
    let text = smb_text(&o);
    assert!(
        !o.status.success() && text.contains("NT_STATUS_ACCESS_DENIED"),
        "a non-member: {text}"
    );
    let o = gw.smbclient_on(
        &share,
        &other,
        "E2e-other-pw-1",
        "put plan.txt x.txt",
        &work,
    );
    assert!(!o.status.success(), "{}", smb_text(&o));
    assert!(!mp.join("x.txt").exists());

    // ---- The other pages.
    b.goto(&format!("{url}/cache"));
    b.wait_for("#cache-used-bar", T);
    assert!(
        !same_line(&b, "#cache-used-bar", "#cache-dirty-bar"),
        "one meter a line"
    );
    shot(&b, &mut n, "cache");
    b.goto(&format!("{url}/audit"));
    b.wait_for("nav#nav", T);
    let audit = b.source();
    for action in ["login", "user_add", "flush", "share_add"] {
        assert!(
            audit.contains(&format!(r#"data-action="{action}""#)),
            "the audit log shows {action}"
        );
    }
    shot(&b, &mut n, "audit");
    // A form whose CSRF token was tampered with: a clear page, nothing done.
    b.goto(&format!("{url}/cache"));
    b.wait_for("#cache-evict-all-form button", T);
    b.exec(
        "document.querySelector('#cache-evict-all-form input[name=csrf]').value = 'forged'; return 0",
    );
    // The evict button may ask for a confirmation: accept it.
    b.exec("window.confirm = function () { return true; }; return 0");
    b.click("#cache-evict-all-form button");
    b.wait_for("#message", T);
    assert!(
        b.text("#message")
            .contains("This form could not be accepted"),
        "{}",
        b.text("#message")
    );
    shot(&b, &mut n, "error-csrf");
    b.goto(&format!("{url}/no/such/page"));
    b.wait_for("#message", T);
    shot(&b, &mut n, "error-not-found");

    // ---- Japanese.
    b.goto(&format!("{url}/"));
    b.wait_for("#lang-ja", T);
    b.click("#lang-ja");
    b.wait_for("#lang-en", T);
    assert_eq!(b.text("#nav-dashboard"), "ダッシュボード");
    assert_eq!(b.exec("return document.documentElement.lang"), "ja");
    b.wait_for(&row, T);
    shot(&b, &mut n, "dashboard-ja");

    // ---- Logout: the pages need a login again.
    b.click("#logout");
    b.wait_for("#login-form", T);
    b.goto(&format!("{url}/users"));
    b.wait_for("#login-form", T);
    assert!(b.url().contains("/login?next="), "{}", b.url());
    assert!(
        !b.exists("#login-notice"),
        "a plain logout: no expiry notice"
    );
    // A session the console does not know (expired, or forged) says so.
    b.block_on("delete cookie", b.client().delete_cookie("sg_session"));
    b.exec(&format!(
        "document.cookie = 'sg_session={}; path=/; SameSite=Strict'; return 0",
        "0".repeat(64)
    ));
    b.goto(&format!("{url}/users"));
    b.wait_for("#login-notice", T);
    assert!(b.url().contains("expired=1"), "{}", b.url());
    shot(&b, &mut n, "error-expired");

    drop(sess);
    drop(b);
    drop(gw);
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(&store_dir);
}
