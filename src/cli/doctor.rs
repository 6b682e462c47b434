//! `swiftgate doctor`: the checks of [`crate::gateway::doctor`], for a
//! person (one line each, the fix under each problem) or for a script
//! (`--json`). Exit status 1 when any check failed; warnings do not fail.

use crate::gateway::doctor::{self, Check, Status};
use anyhow::Result;
use std::path::Path;

pub fn run(config: &Path, json: bool) -> Result<i32> {
    let checks = doctor::run(config);
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", render(&checks));
    }
    Ok(if checks.iter().any(|c| c.status == Status::Fail) {
        1
    } else {
        0
    })
}

fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{tag}  {}: {}\n", c.check, c.message));
        if let Some(f) = &c.fix {
            out.push_str(&format!("      fix: {f}\n"));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&match (failed, warned) {
        (0, 0) => format!("all {} checks passed\n", checks.len()),
        (f, w) => format!("{} checks: {f} failed, {w} warnings\n", checks.len()),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_their_fix_and_the_summary_counts() {
        let checks = vec![
            Check {
                check: "fuse-device".into(),
                status: Status::Ok,
                message: "/dev/fuse".into(),
                fix: None,
            },
            Check {
                check: "cache".into(),
                status: Status::Fail,
                message: "/c is mode 0755".into(),
                fix: Some("chmod 700 /c".into()),
            },
        ];
        let t = render(&checks);
        assert_eq!(
            t,
            "ok    fuse-device: /dev/fuse\nFAIL  cache: /c is mode 0755\n      fix: chmod 700 /c\n2 checks: 1 failed, 0 warnings\n"
        );
        assert!(render(&checks[..1]).ends_with("all 1 checks passed\n"));
    }
}
