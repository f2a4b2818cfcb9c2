//! Reading the Prometheus text exposition back into typed families, so that
//! other renderings of the registry (the expvar JSON of `/debug/vars`)
//! enumerate exactly the families and samples `/metrics` shows, whichever
//! source wrote them (some sources write whole families as text, see
//! [`PromText::raw`](super::PromText::raw)).
//!
//! The reader accepts the text format version 0.0.4 as our sources write
//! it: `# HELP` / `# TYPE` lines, then samples `name{label="value",...}
//! value`. It never fails: a line it cannot read is skipped, a sample
//! without a `# TYPE` before it starts a gauge family of its own.

use super::MetricKind;

/// Which series of a family a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleSeries {
    /// The value of a counter or gauge (sample name = family name).
    Value,
    /// A histogram bucket (`_bucket`, with an `le` label; cumulative).
    Bucket,
    /// A histogram's or summary's sum (`_sum`).
    Sum,
    /// A histogram's or summary's count (`_count`).
    Count,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Which series.
    pub series: SampleSeries,
    /// Labels in the order written (`le` included for buckets), unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One metric family with its samples in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The family name (`vtorc_recoveries_count`).
    pub name: String,
    /// Its type (`# TYPE`).
    pub kind: MetricKind,
    /// Its help text (`# HELP`, unescaped; empty if none).
    pub help: String,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// Reads an exposition into families, in the order they first appear.
pub fn parse_exposition(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    let mut helps: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let help = unescape_help(help);
            match families.iter_mut().find(|f| f.name == name) {
                Some(f) => f.help = help,
                None => helps.push((name.to_string(), help)),
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else {
                continue;
            };
            let kind = match kind.trim() {
                "counter" => MetricKind::Counter,
                "histogram" => MetricKind::Histogram,
                "summary" => MetricKind::Summary,
                _ => MetricKind::Gauge,
            };
            if families.iter().any(|f| f.name == name) {
                continue;
            }
            let help = helps
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| helps.swap_remove(i).1)
                .unwrap_or_default();
            families.push(Family {
                name: name.to_string(),
                kind,
                help,
                samples: Vec::new(),
            });
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        let (index, series) = match find_family(&families, name) {
            Some(found) => found,
            None => {
                families.push(Family {
                    name: name.to_string(),
                    kind: MetricKind::Gauge,
                    help: String::new(),
                    samples: Vec::new(),
                });
                (families.len() - 1, SampleSeries::Value)
            }
        };
        families[index].samples.push(Sample {
            series,
            labels,
            value,
        });
    }
    families
}

/// The family a sample name belongs to, and which of its series.
fn find_family(families: &[Family], name: &str) -> Option<(usize, SampleSeries)> {
    if let Some(i) = families.iter().position(|f| f.name == name) {
        return Some((i, SampleSeries::Value));
    }
    for (suffix, series) in [
        ("_bucket", SampleSeries::Bucket),
        ("_sum", SampleSeries::Sum),
        ("_count", SampleSeries::Count),
    ] {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        let found = families.iter().position(|f| {
            f.name == base
                && match series {
                    SampleSeries::Bucket => f.kind == MetricKind::Histogram,
                    _ => matches!(f.kind, MetricKind::Histogram | MetricKind::Summary),
                }
        });
        if let Some(i) = found {
            return Some((i, series));
        }
    }
    None
}

/// A sample line read: name, labels, value.
type SampleLine<'a> = (&'a str, Vec<(String, String)>, f64);

/// `name{labels} value [timestamp]`; `None` if the line is malformed.
fn parse_sample(line: &str) -> Option<SampleLine<'_>> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest.split_whitespace().next()?;
    let value: f64 = value.parse().ok()?;
    Some((name, labels, value))
}

/// Labels after the `{` up to and including the `}`; returns them and the rest.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, after) = s.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &after[end + 1..];
    }
}

/// Help text escapes: `\\` and `\n`.
fn unescape_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::PromText;
    use super::*;

    #[test]
    fn families_samples_and_labels_read_back_what_prom_text_writes() {
        let mut t = PromText::default();
        t.single("vtorc_a", MetricKind::Counter, "plain \\ help\nline", 3);
        t.family("vtorc_b", MetricKind::Gauge, "labelled");
        t.sample("vtorc_b", &[("k", "x\"y\\z\nw"), ("s", "0")], 1.5);
        t.raw(
            "# HELP vtorc_h hist\n# TYPE vtorc_h histogram\n\
             vtorc_h_bucket{action=\"Lock\",le=\"0.5\"} 1\n\
             vtorc_h_bucket{action=\"Lock\",le=\"+Inf\"} 2\n\
             vtorc_h_sum{action=\"Lock\"} 1.25\n\
             vtorc_h_count{action=\"Lock\"} 2\n",
        );
        let families = parse_exposition(&t.finish());
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["vtorc_a", "vtorc_b", "vtorc_h"]);
        assert_eq!(families[0].kind, MetricKind::Counter);
        assert_eq!(families[0].help, "plain \\ help\nline");
        assert_eq!(families[0].samples[0].value, 3.0);
        assert!(families[0].samples[0].labels.is_empty());
        let b = &families[1].samples[0];
        assert_eq!(b.label("k"), Some("x\"y\\z\nw"));
        assert_eq!(b.label("s"), Some("0"));
        assert_eq!(b.value, 1.5);
        let h = &families[2];
        assert_eq!(h.kind, MetricKind::Histogram);
        let series: Vec<SampleSeries> = h.samples.iter().map(|s| s.series).collect();
        assert_eq!(
            series,
            [
                SampleSeries::Bucket,
                SampleSeries::Bucket,
                SampleSeries::Sum,
                SampleSeries::Count
            ]
        );
        assert_eq!(h.samples[1].label("le"), Some("+Inf"));
        assert_eq!(h.samples[1].value, 2.0);
    }

    #[test]
    fn malformed_lines_are_skipped_without_panicking() {
        let text = "# TYPE\n# TYPE x\nno_value\nx{a=\"unterminated} 1\nx{a} 1\n{} 1\n\
                    y{a=\"1\"} notanumber\nz 7 1700000000\n# TYPE w_count counter\nw_count 2\n\
                    \u{e9}\u{e8}{a=\"\u{e9}\"} 1\n";
        let families = parse_exposition(text);
        let z = families.iter().find(|f| f.name == "z").expect("z read");
        assert_eq!(z.kind, MetricKind::Gauge, "untyped sample starts a gauge");
        assert_eq!(z.samples[0].value, 7.0, "timestamp ignored");
        let w = families.iter().find(|f| f.name == "w_count").expect("w_count");
        assert_eq!(w.samples[0].series, SampleSeries::Value);
        assert!(families.iter().all(|f| f.name != "y" && f.name != "x"));
        let accented = families.iter().find(|f| f.name == "\u{e9}\u{e8}").expect("read");
        assert_eq!(accented.samples[0].label("a"), Some("\u{e9}"));
    }
}
