//! `rocm-fix kb list|show`: the knowledge base as text and JSON.
//!
//! The data and its lookups are `rocm_fix_shared::kb` (the engine's side of
//! the workspace has no serde); how the command presents them is here. The
//! JSON views are also what `run --show --json` prints for the retry ladder.

use crate::json;
use rocm_fix_shared::kb::{self, Issue, Mitigation, Rung};
use serde::Serialize;
use std::fmt::Write as _;

/// [`Mitigation`] as JSON.
#[derive(Serialize)]
pub struct MitigationJson<'a> {
    text: &'a str,
    evidence: &'static str,
    #[serde(serialize_with = "json::pairs")]
    env: &'a [(String, String)],
    kernel_params: &'a [String],
    sources: &'a [String],
    notes: &'a [String],
    validation_reports: &'a [String],
}

impl<'a> From<&'a Mitigation> for MitigationJson<'a> {
    fn from(m: &'a Mitigation) -> Self {
        MitigationJson {
            text: &m.text,
            evidence: m.evidence.as_str(),
            env: &m.env,
            kernel_params: &m.kernel_params,
            sources: &m.sources,
            notes: &m.notes,
            validation_reports: &m.validation_reports,
        }
    }
}

/// [`Issue`] as JSON.
#[derive(Serialize)]
pub struct IssueJson<'a> {
    id: &'a str,
    title: &'a str,
    symptoms: &'a [String],
    chips: &'a [String],
    rocm: Option<&'a str>,
    kernel: Option<&'a str>,
    firmware: Option<&'a str>,
    cause: &'a str,
    hypothesis: bool,
    requires_override: bool,
    severity: &'static str,
    mitigations: Vec<MitigationJson<'a>>,
    sources: &'a [String],
    validation_reports: &'a [String],
}

impl<'a> From<&'a Issue> for IssueJson<'a> {
    fn from(i: &'a Issue) -> Self {
        IssueJson {
            id: &i.id,
            title: &i.title,
            symptoms: &i.symptoms,
            chips: &i.chips,
            rocm: i.rocm.as_deref(),
            kernel: i.kernel.as_deref(),
            firmware: i.firmware.as_deref(),
            cause: &i.cause,
            hypothesis: i.hypothesis,
            requires_override: i.requires_override,
            severity: i.severity.as_str(),
            mitigations: i.mitigations.iter().map(MitigationJson::from).collect(),
            sources: &i.sources,
            validation_reports: &i.validation_reports,
        }
    }
}

/// [`Rung`] as JSON.
#[derive(Serialize)]
pub struct RungJson<'a> {
    id: &'a str,
    title: &'a str,
    when: &'a str,
    evidence: &'static str,
    #[serde(serialize_with = "json::pairs")]
    env: &'a [(String, String)],
    unset: &'a [String],
    issues: &'a [String],
    notes: &'a [String],
    sources: &'a [String],
}

impl<'a> From<&'a Rung> for RungJson<'a> {
    fn from(r: &'a Rung) -> Self {
        RungJson {
            id: &r.id,
            title: &r.title,
            when: &r.when,
            evidence: r.evidence.as_str(),
            env: &r.env,
            unset: &r.unset,
            issues: &r.issues,
            notes: &r.notes,
            sources: &r.sources,
        }
    }
}

/// One issue as one line of JSON.
pub fn issue_json(i: &Issue) -> String {
    json::inline(&IssueJson::from(i))
}

/// All issues as a JSON array, one issue a line (`[]` if the data does not
/// parse).
pub fn list_json() -> String {
    let items: Vec<String> = kb::issues()
        .unwrap_or_default()
        .iter()
        .map(issue_json)
        .collect();
    format!("[{}]", items.join(",\n"))
}

/// One line per issue: id, severity, chips and title.
pub fn list_text() -> String {
    let list = match kb::issues() {
        Ok(l) => l,
        Err(e) => return format!("knowledge base does not parse: {e}\n"),
    };
    let mut out = String::new();
    for i in &list {
        let _ = writeln!(
            out,
            "{:<34} {:<7} {:<24} {}{}",
            i.id,
            i.severity.as_str(),
            i.chips.join(","),
            i.title,
            if i.hypothesis { " [unconfirmed]" } else { "" }
        );
    }
    let _ = writeln!(out, "{} issues; `show ID` for details", list.len());
    out
}

/// A readable page for one issue, or `None` for an unknown id.
pub fn show_text(id: &str) -> Option<String> {
    let i = kb::issue(id)?;
    let mut out = String::new();
    let _ = writeln!(out, "{} — {}", i.id, i.title);
    if i.hypothesis {
        let _ = writeln!(out, "status:   unconfirmed (hypothesis)");
    }
    let _ = writeln!(out, "chips:    {}", i.chips.join(", "));
    if i.requires_override {
        let _ = writeln!(out, "applies:  only while HSA_OVERRIDE_GFX_VERSION is set");
    }
    for (label, v) in [
        ("rocm", &i.rocm),
        ("kernel", &i.kernel),
        ("firmware", &i.firmware),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "{:<10}{v}", format!("{label}:"));
        }
    }
    if !i.symptoms.is_empty() {
        let _ = writeln!(out, "symptoms:");
        for s in &i.symptoms {
            let _ = writeln!(out, "  - {s}");
        }
    }
    let _ = writeln!(out, "cause:    {}", i.cause);
    if !i.mitigations.is_empty() {
        let _ = writeln!(out, "mitigations:");
        for m in &i.mitigations {
            let _ = writeln!(out, "  [{}] {}", m.evidence.as_str(), m.text);
            for (k, v) in &m.env {
                let _ = writeln!(out, "      env {k}={v}");
            }
            for p in &m.kernel_params {
                let _ = writeln!(out, "      kernel parameter {p}");
            }
            for n in &m.notes {
                let _ = writeln!(out, "      note: {n}");
            }
            for s in &m.sources {
                let _ = writeln!(out, "      source: {s}");
            }
        }
    }
    let _ = writeln!(out, "sources:");
    for s in &i.sources {
        let _ = writeln!(out, "  {s}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocm_fix_shared::kb::{issue, issues, ladder};

    #[test]
    fn json_is_escaped_and_well_formed() {
        let j = issue_json(&issue("override-leftover-supported").unwrap());
        assert!(
            j.starts_with("{\"id\": \"override-leftover-supported\""),
            "{j}"
        );
        assert!(j.contains("\"evidence\": \"confirmed\""), "{j}");
        assert!(j.contains("\"requires_override\": true"), "{j}");
        let all = list_json();
        assert!(all.starts_with('[') && all.ends_with(']'));
        assert_eq!(all.matches("{\"id\": ").count(), issues().unwrap().len());
        let rung = &ladder().unwrap()[4];
        assert!(json::inline(&RungJson::from(rung))
            .contains("\"env\": {\"HIP_VISIBLE_DEVICES\": \"\"}"));
        let parsed: serde_json::Value = serde_json::from_str(&all).unwrap();
        assert_eq!(
            parsed.as_array().map(Vec::len),
            Some(issues().unwrap().len())
        );
    }

    #[test]
    fn text_renderers_show_what_a_user_needs() {
        let list = list_text();
        assert!(list.contains("override-cross-family"));
        assert!(list.contains("[unconfirmed]"));
        let page = show_text("override-rdna1-as-rdna2").unwrap();
        assert!(page.contains("[mixed] HSA_OVERRIDE_GFX_VERSION=10.3.0 on gfx1010/gfx1012"));
        assert!(page.contains("env HSA_OVERRIDE_GFX_VERSION=10.1.0"));
        assert!(page.contains("https://github.com/ROCm/ROCm/issues/887"));
        assert!(page.contains("only while HSA_OVERRIDE_GFX_VERSION is set"));
        assert!(show_text("strix-halo-cwsr")
            .unwrap()
            .contains("kernel parameter amdgpu.cwsr_enable=0"));
        assert_eq!(show_text("no-such-issue"), None);
    }

    #[test]
    fn validation_reports_appear_in_json() {
        let text = "[issue a]\ntitle: t\ncause: c\nchip: rdna1\n\
                    validation-report: https://github.com/o/r/issues/1#report\n";
        let issues = rocm_fix_shared::kb::parse_issues("x.kb", text).unwrap();
        let v: serde_json::Value = serde_json::from_str(&issue_json(&issues[0])).unwrap();
        assert_eq!(
            v["validation_reports"][0],
            "https://github.com/o/r/issues/1#report"
        );
    }
}
