//! The CLI's side of the gateway: every command speaks the typed API, to
//! the daemon over its socket when it runs, else in process under the
//! state lock (the daemon is the single writer of the user map and the
//! share list; without it the CLI takes its place for one command).

use crate::gateway::api::{
    GatewayApi, GatewayApiExt, JobInfo, JobState, Request, Response, ShareSpec, UserQuery,
};
use crate::gateway::control::ControlClient;
use crate::gateway::lock::{lock_path, LockError, StateLock};
use anyhow::{bail, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a command waits for a daemon that is starting, or for another
/// command holding the state lock.
const LOCK_PATIENCE: Duration = Duration::from_secs(60);

/// The daemon's socket only (commands that need the running daemon).
pub fn client(config: &Path, timeout: Duration) -> Result<ControlClient> {
    let cfg = crate::gateway::GatewayConfig::load(config)?;
    Ok(ControlClient::new(&cfg.control.socket, timeout))
}

/// The daemon when it answers; else the service in process, holding the
/// state lock.
pub fn api(config: &Path) -> Result<Box<dyn GatewayApi>> {
    let cfg = crate::gateway::GatewayConfig::load(config)?;
    // Adding a user verifies credentials and may create a filesystem.
    let c = ControlClient::new(&cfg.control.socket, Duration::from_secs(3600));
    let lock = lock_path(&cfg.users.db);
    let until = Instant::now() + LOCK_PATIENCE;
    loop {
        match c.ping() {
            Ok(_) => return Ok(Box::new(c)),
            Err(e) if e.kind == crate::gateway::api::ErrorKind::NotRunning => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(l) = StateLock::try_acquire(&lock)? {
            crate::secure::new_dir(&cfg.cache.dir).ok();
            let gw = crate::gateway::Gateway::new(cfg, l)?;
            return Ok(Box::new(crate::gateway::service::Service::new(gw)));
        }
        if Instant::now() >= until {
            return Err(LockError::Held(lock).into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Follow a job to its end; its outcome as an exit code (0: succeeded).
pub fn wait_job(api: &dyn GatewayApi, mut j: JobInfo) -> Result<i32> {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    while j.state == JobState::Running {
        std::thread::sleep(Duration::from_millis(200));
        j = api.job(j.id)?;
        let now = if j.total > 0 {
            format!("{}: {}/{}", j.phase, j.done, j.total)
        } else {
            j.phase.clone()
        };
        if tty && now != last {
            eprint!("\r\x1b[K{now}");
            last = now;
        }
    }
    if tty && !last.is_empty() {
        eprintln!();
    }
    let msg = j.message.unwrap_or_default();
    if j.state == JobState::Succeeded {
        println!("{msg}");
        Ok(0)
    } else {
        eprintln!("swiftgate: {} failed: {msg}", j.kind);
        Ok(1)
    }
}

/// A request answered with Done or with a Job.
pub fn run_change(api: &dyn GatewayApi, req: Request) -> Result<i32> {
    match api.call(req)? {
        Response::Done { message } => {
            println!("{message}");
            Ok(0)
        }
        Response::Job(j) => wait_job(api, j),
        other => bail!("unexpected answer: {other:?}"),
    }
}

pub fn user_list(api: &dyn GatewayApi) -> Result<()> {
    println!(
        "{:<20} {:>6}  {:<9} {:<8} {:>5}  files",
        "user", "uid", "state", "mounted", "conns"
    );
    let mut offset = 0;
    loop {
        let page = api.users(UserQuery {
            search: String::new(),
            offset,
            limit: UserQuery::MAX_LIMIT,
        })?;
        for u in &page.users {
            println!(
                "{:<20} {:>6}  {:<9} {:<8} {:>5}  {}",
                u.name,
                u.uid,
                format!("{:?}", u.state).to_lowercase(),
                if u.mounted { "yes" } else { "no" },
                u.sessions,
                u.usage
                    .as_ref()
                    .map(|x| x.files.to_string())
                    .unwrap_or_else(|| "-".into())
            );
        }
        offset += page.users.len();
        if page.users.is_empty() || offset >= page.total {
            return Ok(());
        }
    }
}

pub fn user_show(api: &dyn GatewayApi, user: &str) -> Result<()> {
    let d = api.user(user)?;
    println!("user:        {}", d.summary.name);
    println!("uid/gid:     {}/{}", d.summary.uid, d.gid);
    println!("store:       {}", d.store);
    println!("mountpoint:  {}", d.mountpoint.display());
    println!(
        "state:       {}",
        format!("{:?}", d.summary.state).to_lowercase()
    );
    println!(
        "encrypted:   {}",
        if d.encrypted {
            "yes (passphrase in the user map)"
        } else {
            "no"
        }
    );
    match &d.keystone_user {
        Some(k) => println!(
            "keystone:    user {k} project {} (credentials kept encrypted, never shown)",
            d.keystone_project.as_deref().unwrap_or("(default)")
        ),
        None => println!("keystone:    the gateway's service identity"),
    }
    println!(
        "mounted:     {}",
        if d.summary.mounted {
            format!("yes, {} sessions", d.summary.sessions)
        } else {
            "no".into()
        }
    );
    println!("quota:       {}", d.summary.quota);
    if let Some(r) = &d.recycle {
        println!("recycle bin: {}", recycle_line(r));
    }
    Ok(())
}

/// A recycle bin in one line: its setting and, when measured, contents.
fn recycle_line(r: &crate::gateway::api::RecycleInfo) -> String {
    let setting = match (r.enabled, r.keep_days) {
        (false, _) => "off (a delete is final)".to_string(),
        (true, 0) => format!("on, {} kept until emptied", r.folder),
        (true, d) => format!("on, {} kept {d} days", r.folder),
    };
    match (r.files, r.bytes, &r.error) {
        (_, _, Some(e)) => format!("{setting}; cannot measure it: {e}"),
        (Some(f), Some(b), _) => format!("{setting}; {f} files, {b} bytes"),
        _ => format!("{setting}; contents measured while mounted"),
    }
}

pub fn share_list(api: &dyn GatewayApi) -> Result<()> {
    println!(
        "{:<20} {:<20} {:<8} {:<30} members",
        "share", "group", "mounted", "store"
    );
    for s in api.shares()? {
        println!(
            "{:<20} {:<20} {:<8} {:<30} {}",
            s.spec.name,
            s.group,
            if s.mounted { "yes" } else { "no" },
            s.store,
            s.members.join(",")
        );
    }
    Ok(())
}

pub fn share_show(api: &dyn GatewayApi, name: &str) -> Result<()> {
    let all = api.shares()?;
    let Some(s) = all.into_iter().find(|s| s.spec.name == name) else {
        bail!("there is no team share {name:?} (`swiftgate share list` shows them)");
    };
    println!("share:       {}", s.spec.name);
    println!("comment:     {}", s.spec.comment);
    println!("group:       {}", s.group);
    println!("members:     {}", s.members.join(", "));
    println!("read-only:   {}", s.spec.read_only.join(", "));
    println!("store:       {}", s.store);
    println!(
        "mountpoint:  {} ({})",
        s.mountpoint.display(),
        if s.mounted { "mounted" } else { "not mounted" }
    );
    println!("quota:       {}", s.quota);
    if let Some(r) = &s.recycle {
        println!("recycle bin: {}", recycle_line(r));
    }
    println!("testparm:    {}", s.testparm.unwrap_or_default());
    println!("smb.conf section:\n{}", s.smb_conf);
    Ok(())
}

/// `share update`: the current spec with the given changes.
pub fn share_update_spec(
    api: &dyn GatewayApi,
    name: &str,
    comment: Option<String>,
    members: Vec<String>,
    read_only: Option<Vec<String>>,
) -> Result<ShareSpec> {
    let cur = api
        .shares()?
        .into_iter()
        .find(|s| s.spec.name == name)
        .map(|s| s.spec);
    let Some(cur) = cur else {
        bail!("there is no team share {name:?} (`swiftgate share list` shows them)");
    };
    Ok(ShareSpec {
        name: name.into(),
        comment: comment.unwrap_or(cur.comment),
        group: cur.group,
        members: (!members.is_empty()).then_some(members),
        read_only: read_only.unwrap_or(cur.read_only),
        ..cur
    })
}
