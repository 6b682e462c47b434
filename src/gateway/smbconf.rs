//! The gateway's part of an existing smb.conf: one marked block, replaced
//! whole on every `swiftgate setup`, the admin's other shares kept.

pub const BEGIN: &str =
    "# BEGIN swiftgate (written by `swiftgate setup`: edits inside are replaced)";
pub const END: &str = "# END swiftgate";

#[derive(Debug, thiserror::Error)]
pub enum SmbConfError {
    #[error("smb.conf has its own [{0}] section outside the swiftgate block: {1}. Remove or rename it, then run setup again")]
    Conflict(String, &'static str),
    #[error("smb.conf has a `{BEGIN}` line without its `{END}`: fix the file by hand")]
    Unclosed,
}

/// The smb.conf with `block` as the gateway's marked section (at the end,
/// so its [global] lines win). Same input, same output: a second setup
/// writes nothing.
pub fn merge(existing: &str, block: &str, share: &str) -> Result<String, SmbConfError> {
    let mut kept = Vec::new();
    let mut inside = false;
    for line in existing.lines() {
        let t = line.trim();
        if t == BEGIN || t.starts_with("# BEGIN swiftgate") {
            inside = true;
        } else if inside && t == END {
            inside = false;
        } else if !inside {
            kept.push(line);
        }
    }
    if inside {
        return Err(SmbConfError::Unclosed);
    }
    for line in &kept {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let n = name.trim().to_ascii_lowercase();
            if n == "homes" {
                return Err(SmbConfError::Conflict(
                    name.into(),
                    "it would offer each user's mountpoint without mounting it first",
                ));
            }
            if n == share.to_ascii_lowercase() {
                return Err(SmbConfError::Conflict(
                    name.into(),
                    "the gateway's home share has that name ([samba] share)",
                ));
            }
        }
    }
    let mut out = kept.join("\n").trim_end().to_string();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(block.trim_end());
    out.push('\n');
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_and_the_admins_shares_kept() {
        let admin = "[global]\n   workgroup = OFFICE\n\n[public]\n   path = /srv/public\n";
        let once = merge(admin, "[home]\n   path = /x/%U\n", "home").unwrap();
        assert!(once.starts_with(admin.trim_end()) && once.contains("[public]"));
        assert_eq!(
            merge(&once, "[home]\n   path = /x/%U\n", "home").unwrap(),
            once
        );
        let changed = merge(&once, "[home]\n   path = /y/%U\n", "home").unwrap();
        assert!(changed.contains("/y/%U") && !changed.contains("/x/%U"));
        assert_eq!(changed.matches(BEGIN).count(), 1);
        assert!(matches!(
            merge("[Homes]\n   path = %H\n", "b", "home"),
            Err(SmbConfError::Conflict(..))
        ));
        assert!(matches!(
            merge("[HOME]\n", "b", "home"),
            Err(SmbConfError::Conflict(..))
        ));
        assert!(matches!(
            merge(&format!("{BEGIN}\n[home]\n"), "b", "home"),
            Err(SmbConfError::Unclosed)
        ));
    }
}
