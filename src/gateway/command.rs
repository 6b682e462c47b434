//! Running a system tool (useradd, gpasswd, pdbedit, systemctl, ...) to
//! completion: its stdout on success, or an error in the tool's own words.

use std::process::{Command, ExitStatus};

/// A tool that could not be started (`status` None) or did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed: {stderr}")]
pub struct CommandFailed {
    pub what: String,
    pub status: Option<ExitStatus>,
    /// What it said (trimmed), or why it could not be started.
    pub stderr: String,
}

/// Run `cmd` (stdin closed, output captured); its stdout on success. The
/// error holds its stderr.
pub fn run(what: &str, cmd: &mut Command) -> Result<String, CommandFailed> {
    output(what, cmd, false)
}

/// As [`run`], for tools that may say why they failed on stdout (pdbedit,
/// gpasswd): the error holds stderr followed by stdout.
pub fn run_stdout_too(what: &str, cmd: &mut Command) -> Result<String, CommandFailed> {
    output(what, cmd, true)
}

/// As [`run`], with `input` on the tool's stdin (a secret a tool must not
/// see in argv: `chpasswd -e`, `smbpasswd -s`).
pub fn run_with_stdin(
    what: &str,
    cmd: &mut Command,
    input: &[u8],
) -> Result<String, CommandFailed> {
    use std::io::Write as _;
    use std::process::Stdio;
    let failed = |e: std::io::Error| CommandFailed {
        what: what.into(),
        status: None,
        stderr: e.to_string(),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed)?;
    if let Some(mut pipe) = child.stdin.take() {
        // A tool that fails early closes its stdin first: the broken pipe is
        // not the failure, its exit status and words are.
        match pipe.write_all(input) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(e));
            }
            _ => {}
        }
    }
    let out = child.wait_with_output().map_err(failed)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(CommandFailed {
        what: what.into(),
        status: Some(out.status),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn output(what: &str, cmd: &mut Command, stdout_too: bool) -> Result<String, CommandFailed> {
    let out = cmd.output().map_err(|e| CommandFailed {
        what: what.into(),
        status: None,
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stdout_too {
        said.push_str(String::from_utf8_lossy(&out.stdout).trim());
    }
    Err(CommandFailed {
        what: what.into(),
        status: Some(out.status),
        stderr: said,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_reaches_the_tool() {
        let out = run_with_stdin("cat", &mut Command::new("cat"), b"secret\n").unwrap();
        assert_eq!(out, "secret\n");
        let e = run_with_stdin("false", &mut Command::new("false"), b"x").unwrap_err();
        assert!(e.status.is_some());
        // A tool that exits before reading a large input: its status and
        // words are reported, not the broken pipe.
        let big = vec![b'x'; 1 << 20];
        let e = run_with_stdin(
            "early",
            Command::new("sh").args(["-c", "echo refused >&2; exit 4"]),
            &big,
        )
        .unwrap_err();
        assert_eq!(e.status.and_then(|s| s.code()), Some(4));
        assert_eq!(e.to_string(), "early failed: refused");
    }

    #[test]
    fn stdout_on_success_and_the_tools_words_on_failure() {
        let ok = run("echo", Command::new("sh").args(["-c", "echo hi"])).unwrap();
        assert_eq!(ok, "hi\n");
        let e = run(
            "x",
            Command::new("sh").args(["-c", "echo out; echo bad >&2; exit 3"]),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "x failed: bad");
        assert_eq!(e.status.and_then(|s| s.code()), Some(3));
        let e = run_stdout_too(
            "x",
            Command::new("sh").args(["-c", "echo out; echo bad >&2; exit 1"]),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "x failed: badout");
        let e = run("nosuch", &mut Command::new("/nonexistent/swiftgate-tool")).unwrap_err();
        assert!(e.status.is_none());
        assert!(e.to_string().starts_with("nosuch failed: "), "{e}");
    }
}
