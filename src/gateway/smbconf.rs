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

/// Where Debian's samba-common keeps the pristine smb.conf it installs.
pub const DISTRIBUTION_SMB_CONF: &str = "/usr/share/samba/smb.conf";

const STOCK_NOTE: &str = "# swiftgate setup disabled the distribution's [homes] share below: \\\\gateway\\home replaces it (a gateway user's Unix home is not their Swift home).";

/// The lines of section `name` (header excluded, comments and blank lines
/// dropped, whitespace trimmed): what decides whether two are the same.
fn section_body<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| section_name(l).is_some_and(|n| n.eq_ignore_ascii_case(name)))?;
    Some(
        lines
            .take_while(|l| section_name(l).is_none())
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .collect(),
    )
}

fn section_name(line: &str) -> Option<&str> {
    line.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

/// A fresh Debian install's smb.conf shares every Unix home as [homes];
/// on a gateway that would compete with the home share. A [homes] section
/// exactly as the distribution ships it (same settings as in `stock`, the
/// pristine copy) is commented out with a note; an admin's own [homes] is
/// left for `merge` to refuse. Same input, same output.
pub fn disable_stock_homes(existing: &str, stock: &str) -> String {
    let Some(theirs) = section_body(stock, "homes") else {
        return existing.to_string();
    };
    let lines: Vec<&str> = existing.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let is_homes =
            section_name(lines[i].trim()).is_some_and(|n| n.eq_ignore_ascii_case("homes"));
        let end = (i + 1..lines.len())
            .find(|&j| section_name(lines[j].trim()).is_some())
            .unwrap_or(lines.len());
        let section = lines[i..end].join("\n");
        if is_homes && section_body(&section, "homes").as_ref() == Some(&theirs) {
            out.push(STOCK_NOTE.to_string());
            for l in &lines[i..end] {
                let t = l.trim();
                if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                    out.push(l.to_string());
                } else {
                    out.push(format!(";{l}"));
                }
            }
            i = end;
        } else {
            out.push(lines[i].to_string());
            i += 1;
        }
    }
    let mut text = out.join("\n");
    if existing.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK: &str = "[global]\n   workgroup = WORKGROUP\n\n#======================= Share Definitions =======================\n\n[homes]\n   comment = Home Directories\n   browseable = no\n\n# By default, the home directories are exported read-only.\n   read only = yes\n   valid users = %S\n\n[printers]\n   comment = All Printers\n";

    #[test]
    fn the_distributions_homes_is_disabled_an_admins_is_not() {
        // The admin's global change does not matter; [homes] as shipped.
        let fresh = STOCK.replace("WORKGROUP", "OFFICE");
        let once = disable_stock_homes(&fresh, STOCK);
        assert!(once.contains(";[homes]") && once.contains(";   valid users = %S"));
        assert!(once.contains("[printers]\n   comment = All Printers"));
        assert!(once.contains("workgroup = OFFICE"));
        // Then setup's merge accepts it, and a second pass changes nothing.
        assert!(merge(&once, "[home]\n", "home").is_ok());
        assert_eq!(disable_stock_homes(&once, STOCK), once);
        // An admin's own [homes] (one setting changed) stays, and is refused.
        let admin = STOCK.replace("read only = yes", "read only = no");
        assert_eq!(disable_stock_homes(&admin, STOCK), admin);
        assert!(matches!(
            merge(&admin, "[home]\n", "home"),
            Err(SmbConfError::Conflict(..))
        ));
        // The stock [homes] and the admin's own: only the stock one goes.
        let both = format!("{STOCK}\n[homes]\n   path = /srv/%S\n");
        let once = disable_stock_homes(&both, STOCK);
        assert!(once.contains(";[homes]") && once.contains("\n[homes]\n   path = /srv/%S"));
        assert!(matches!(
            merge(&once, "[home]\n", "home"),
            Err(SmbConfError::Conflict(..))
        ));
        // No pristine copy to compare with: nothing is touched.
        assert_eq!(disable_stock_homes(&fresh, ""), fresh);
    }

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
