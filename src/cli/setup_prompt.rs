//! `swiftgate setup` on a terminal: what the flags left out is asked for,
//! and the answers become the flags they stand for (the checks and the
//! writes are setup's own, unchanged). Off a terminal nothing is asked.

use super::setup::{read_openrc, SetupArgs, DEFAULT_CACHE_DIR};
use crate::store::swift::Secret;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Where questions go and answers come from (a test scripts it).
pub(super) trait Ask {
    /// One answer; None at EOF (Ctrl-D).
    fn line(&mut self, prompt: &str) -> Result<Option<String>>;
    /// One answer, not echoed.
    fn hidden(&mut self, prompt: &str) -> Result<Option<Secret>>;
    fn say(&mut self, text: &str);
    /// The cache size offered, and why when it is below the default
    /// (the cache disk's free space; a test fixes it).
    fn cache_fit(&self, a: &SetupArgs) -> (String, Option<String>) {
        super::setup::fitted_cache_size(a)
    }
}

struct Terminal;

impl Ask for Terminal {
    fn line(&mut self, prompt: &str) -> Result<Option<String>> {
        use std::io::{BufRead, Write};
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let mut l = String::new();
        if std::io::stdin().lock().read_line(&mut l)? == 0 {
            eprintln!();
            return Ok(None);
        }
        Ok(Some(l.trim_end_matches(['\n', '\r']).to_string()))
    }
    fn hidden(&mut self, prompt: &str) -> Result<Option<Secret>> {
        Ok(super::read_hidden(prompt)?.map(|p| Secret::new(p.as_str())))
    }
    fn say(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// On a terminal (stdin and stdout), asks for what is missing. False:
/// the person ended the input (Ctrl-D), nothing is to be done.
pub(super) fn ask_missing(a: &mut SetupArgs) -> Result<bool> {
    use std::io::IsTerminal;
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if terminal && missing(a) {
        return ask(a, &mut Terminal);
    }
    Ok(true)
}

fn given(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| !v.is_empty())
}

fn store_given(a: &SetupArgs) -> bool {
    a.demo
        || a.store_url.is_some()
        || a.openrc.is_some()
        || given(&a.os_auth_url)
        || given(&a.os_cloud)
}

/// Keystone from an openrc, a Swift store, and no password anywhere.
fn password_missing(a: &SetupArgs) -> bool {
    let swift = a
        .store_url
        .as_deref()
        .is_none_or(|u| u.starts_with("swift://"));
    let Some(rc) = &a.openrc else { return false };
    swift
        && a.os_password_file.is_none()
        && a.keystone_password.is_none()
        && read_openrc(rc).is_ok_and(|env| !env.iter().any(|(k, _)| k == "OS_PASSWORD"))
}

fn missing(a: &SetupArgs) -> bool {
    !store_given(a)
        || password_missing(a)
        || a.cache_dir.is_none()
        || a.cache_size.is_none()
        || a.admin_user.is_none()
}

/// Asks until `check` takes the answer (an empty one is `default`);
/// a refused answer is asked again with the reason. None at EOF.
fn until<T>(
    io: &mut dyn Ask,
    prompt: &str,
    default: &str,
    check: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    loop {
        let Some(l) = io.line(&format!("{prompt} [{default}] "))? else {
            return Ok(None);
        };
        let l = l.trim();
        match check(if l.is_empty() { default } else { l }) {
            Ok(v) => return Ok(Some(v)),
            Err(why) => io.say(&format!("  {why}")),
        }
    }
}

pub(super) fn ask(a: &mut SetupArgs, io: &mut dyn Ask) -> Result<bool> {
    io.say("setup: answering a few questions (or give them as flags: swiftgate setup --help)");
    if !store_given(a) {
        let q = "Object store: 1) OpenStack Swift (an openrc file from Horizon/ConoHa)  2) the local demo store";
        let Some(swift) = until(io, q, "1", |s| match s {
            "1" => Ok(true),
            "2" => Ok(false),
            _ => Err(format!("{s:?}: answer 1 or 2")),
        })?
        else {
            return Ok(false);
        };
        if !swift {
            a.demo = true;
        } else {
            let Some(rc) = until(io, "Path of the openrc file", "", openrc_answer)? else {
                return Ok(false);
            };
            a.openrc = Some(rc);
        }
    }
    if password_missing(a) {
        let user = a
            .openrc
            .as_deref()
            .and_then(|rc| read_openrc(rc).ok())
            .and_then(|env| env.into_iter().find(|(k, _)| k == "OS_USERNAME"))
            .map(|(_, u)| format!(" of {u}"))
            .unwrap_or_default();
        loop {
            let prompt = format!("Keystone password{user} (the openrc has none; not shown): ");
            let Some(pw) = io.hidden(&prompt)? else {
                return Ok(false);
            };
            if !pw.expose().is_empty() {
                a.keystone_password = Some(pw);
                break;
            }
            io.say("  the password is empty: type the one you log in to Horizon/ConoHa with");
        }
    }
    if a.cache_dir.is_none() {
        let Some(d) = until(io, "Cache directory", DEFAULT_CACHE_DIR, |s| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(format!(
                    "{s}: give an absolute path (e.g. {DEFAULT_CACHE_DIR})"
                ))
            }
        })?
        else {
            return Ok(false);
        };
        a.cache_dir = Some(d);
    }
    if a.cache_size.is_none() {
        let (fit, why) = io.cache_fit(a);
        if let Some(why) = why {
            io.say(&format!("  {why}"));
        }
        let Some(s) = until(
            io,
            "Cache size",
            &fit,
            |s| match crate::gateway::config::parse_size(s) {
                Ok(0) => Err("the cache needs room: give e.g. 20G".into()),
                Ok(_) => Ok(s.to_string()),
                Err(e) => Err(e),
            },
        )?
        else {
            return Ok(false);
        };
        a.cache_size = Some(s);
    }
    if a.admin_user.is_none() {
        let q = "Unix account to make a console admin (empty: none)";
        let Some(u) = until(io, q, "", |s| match s {
            "" => Ok(None),
            u => match nix::unistd::User::from_name(u) {
                Ok(Some(_)) => Ok(Some(u.to_string())),
                _ => Err(format!(
                    "{u} is not a Unix account here: create it first (adduser {u}), or answer empty"
                )),
            },
        })?
        else {
            return Ok(false);
        };
        a.admin_user = u;
    }
    Ok(true)
}

fn openrc_answer(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err(
            "give the openrc file's path (Horizon: API Access > Download OpenStack RC File)".into(),
        );
    }
    let p = std::path::absolute(Path::new(s)).map_err(|e| format!("{s}: {e}"))?;
    if !p.is_file() {
        return Err(format!("{} does not exist (or is not a file)", p.display()));
    }
    read_openrc(&p).map_err(|e| format!("{e:#}"))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::setup::default_cache_size;

    /// Answers in order (None: EOF); what was asked and said, recorded.
    #[derive(Default)]
    struct Script {
        answers: Vec<Option<String>>,
        asked: Vec<String>,
        said: Vec<String>,
        hidden: Vec<String>,
        fit: Option<(String, Option<String>)>,
    }

    impl Script {
        fn next(&mut self) -> Option<String> {
            assert!(!self.answers.is_empty(), "asked too much: {:?}", self.asked);
            self.answers.remove(0)
        }
    }

    impl Ask for Script {
        fn line(&mut self, prompt: &str) -> Result<Option<String>> {
            self.asked.push(prompt.to_string());
            Ok(self.next())
        }
        fn hidden(&mut self, prompt: &str) -> Result<Option<Secret>> {
            self.hidden.push(prompt.to_string());
            Ok(self.next().map(Secret::new))
        }
        fn say(&mut self, text: &str) {
            self.said.push(text.to_string());
        }
        fn cache_fit(&self, _: &SetupArgs) -> (String, Option<String>) {
            self.fit.clone().unwrap_or((default_cache_size(), None))
        }
    }

    fn answers(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    fn args(v: &[&str]) -> SetupArgs {
        super::super::setup::test_args(v)
    }

    #[test]
    fn openrc_without_password_asks_it_hidden_and_wrong_answers_are_asked_again() {
        let d = tempfile::tempdir().unwrap();
        let rc = d.path().join("openrc.sh");
        // Horizon's openrc: the password is read at `source` time.
        std::fs::write(&rc, "export OS_AUTH_URL=https://k.example/v3\nexport OS_USERNAME=alice\nread -sr OS_PASSWORD_INPUT\nexport OS_PASSWORD=$OS_PASSWORD_INPUT\n").unwrap();
        let not_rc = d.path().join("notes.txt");
        std::fs::write(&not_rc, "hello\n").unwrap();
        let mut a = args(&[]);
        assert!(missing(&a));
        let mut s = Script {
            answers: answers(&[
                "3",
                "",
                "/nonexistent/openrc",
                not_rc.to_str().unwrap(),
                rc.to_str().unwrap(),
                "",
                "s3cret",
                "cache",
                "",
                "lots",
                "0",
                "4G",
                "no-such-user-sg",
                "root",
            ]),
            ..Default::default()
        };
        assert!(ask(&mut a, &mut s).unwrap());
        assert!(s.answers.is_empty());
        assert_eq!(a.openrc.as_deref(), Some(rc.as_path()));
        assert!(!a.demo);
        assert_eq!(a.keystone_password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(a.cache_dir.as_deref(), Some(Path::new(DEFAULT_CACHE_DIR)));
        assert_eq!(a.cache_size.as_deref(), Some("4G"));
        assert_eq!(a.admin_user.as_deref(), Some("root"));
        assert!(!missing(&a));
        assert!(s.said[0].contains("swiftgate setup --help"));
        assert!(s.asked[0].contains("2) the local demo store [1]"));
        assert!(s
            .asked
            .iter()
            .any(|q| q == "Cache directory [/var/cache/swiftgate] "));
        assert!(s.asked.iter().any(|q| q == "Cache size [20G] "));
        assert!(s
            .asked
            .iter()
            .any(|q| q.contains("console admin (empty: none) []")));
        assert_eq!(s.hidden.len(), 2, "{:?}", s.hidden);
        assert!(s.hidden[0].contains("Keystone password of alice"));
        let said = s.said.join("\n");
        for why in [
            "answer 1 or 2",
            "API Access",
            "does not exist",
            "has no OS_AUTH_URL",
            "password is empty",
            "absolute path",
            "not a size",
            "the cache needs room",
            "no-such-user-sg is not a Unix account",
        ] {
            assert!(said.contains(why), "{why}: {said}");
        }
    }

    #[test]
    fn a_cache_size_fitted_to_a_small_disk_is_offered_with_its_reason() {
        let mut a = args(&[
            "--demo",
            "--cache-dir",
            "/var/cache/sg-t",
            "--admin-user",
            "",
        ]);
        let mut s = Script {
            answers: answers(&[""]),
            fit: Some(("7G".into(), Some("the cache gets 7G, because".into()))),
            ..Default::default()
        };
        assert!(ask(&mut a, &mut s).unwrap());
        assert_eq!(s.asked, ["Cache size [7G] "]);
        assert!(s
            .said
            .iter()
            .any(|l| l.contains("the cache gets 7G, because")));
        assert_eq!(a.cache_size.as_deref(), Some("7G"));
    }

    #[test]
    fn demo_choice_defaults_and_eof_abort() {
        let mut a = args(&[]);
        let mut s = Script {
            answers: answers(&["2", "", "", ""]),
            ..Default::default()
        };
        assert!(ask(&mut a, &mut s).unwrap());
        assert!(a.demo && a.openrc.is_none() && a.keystone_password.is_none());
        assert_eq!(a.cache_size.as_deref(), Some(default_cache_size().as_str()));
        assert_eq!(a.admin_user, None);
        // Ctrl-D at any question: aborted.
        for at in 0..4 {
            let mut a = args(&[]);
            let mut answers = answers(&["2", "", "", ""]);
            answers[at] = None;
            let mut s = Script {
                answers,
                ..Default::default()
            };
            assert!(!ask(&mut a, &mut s).unwrap(), "EOF at {at}");
        }
        // Everything on the command line: nothing to ask.
        let a = args(&[
            "--store-url",
            "local:///s/{user}",
            "--cache-dir",
            "/c",
            "--cache-size",
            "1G",
            "--admin-user",
            "root",
        ]);
        assert!(!missing(&a));
    }
}
