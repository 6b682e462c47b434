//! Figures in words for the pages: sizes, durations, ratios, times.

use super::i18n::Lang;

/// A count as templates hand it over (by value or by reference).
pub trait Count {
    fn n(&self) -> u64;
}
impl Count for u64 {
    fn n(&self) -> u64 {
        *self
    }
}
impl Count for usize {
    fn n(&self) -> u64 {
        *self as u64
    }
}
impl<T: Count + ?Sized> Count for &T {
    fn n(&self) -> u64 {
        (**self).n()
    }
}

/// A quota and its use: "1.2 GiB of 50 GiB (2 %)", plus files when
/// limited; "–" without a quota.
pub fn quota_use(q: &crate::gateway::api::Quota, u: Option<&crate::gateway::api::Usage>) -> String {
    let mut parts = Vec::new();
    if let Some(limit) = q.bytes {
        parts.push(match u {
            Some(u) => format!(
                "{} / {} ({} %)",
                bytes(u.logical_bytes),
                bytes(limit),
                percent(u.logical_bytes, limit)
            ),
            None => bytes(limit),
        });
    }
    if let Some(limit) = q.files {
        parts.push(match u {
            Some(u) => format!("{} / {limit} ({} %)", u.files, percent(u.files, limit)),
            None => limit.to_string(),
        });
    }
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(" · ")
    }
}

/// Whether a quota is 90 % used or more.
pub fn quota_warn(q: &crate::gateway::api::Quota, u: Option<&crate::gateway::api::Usage>) -> bool {
    let Some(u) = u else { return false };
    let over = |used: u64, limit: Option<u64>| {
        limit.is_some_and(|l| used as f64 >= l as f64 * crate::gateway::api::QUOTA_WARN_FILL)
    };
    over(u.logical_bytes, q.bytes) || over(u.files, q.files)
}

pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", U[i])
    } else {
        format!("{v:.0} {}", U[i])
    }
}

/// "3 min", "2 h 5 min", "45 s" (ja: "3分", ...).
pub fn duration(secs: u64, lang: Lang) -> String {
    let (s, m, h, d) = match lang {
        Lang::En => (" s", " min", " h", " d"),
        Lang::Ja => ("秒", "分", "時間", "日"),
    };
    let sep = if lang == Lang::En { " " } else { "" };
    if secs < 60 {
        format!("{secs}{s}")
    } else if secs < 3600 {
        format!("{}{m}", secs / 60)
    } else if secs < 86400 {
        let mm = (secs % 3600) / 60;
        if mm == 0 {
            format!("{}{h}", secs / 3600)
        } else {
            format!("{}{h}{sep}{mm}{m}", secs / 3600)
        }
    } else {
        format!("{}{d}", secs / 86400)
    }
}

pub fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into())
}

pub fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        ((part as f64 / whole as f64) * 100.0).round().min(100.0) as u64
    }
}

/// A Unix time as UTC "2025-01-31 12:34:56".
pub fn time(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let rem = unix % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_in_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 << 20), "200 MiB");
        assert_eq!(duration(45, Lang::En), "45 s");
        assert_eq!(duration(7500, Lang::En), "2 h 5 min");
        assert_eq!(duration(180, Lang::Ja), "3分");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(ratio(Some(2.0)), "2.00×");
    }
}
